//! Load Hugging Face checkpoints (`config.json` + safetensors) of the supported architectures into
//! a [`Transformer`] whose logits equal transformers' (see `docs/hf-support.md`); [`load`] also
//! takes llama.cpp's GGUF files ([`crate::gguf`]).
//!
//! ```no_run
//! let m = moe_model::hf::load_hf_dir(std::path::Path::new("path/to/checkpoint")).unwrap();
//! let out = m.model.forward(&[1, 2, 3], 1, 3).unwrap();
//! assert_eq!(out.logits.len(), 3 * m.cfg.n_vocab);
//! ```

pub mod config;
mod config_ext;
pub mod export;
mod fields;
pub mod weights;

pub use config::{parse_config, HfConfig, SUPPORTED};
pub use fields::{Family, HfOptions};

use crate::error::{Error, Result};
use crate::transformer::Transformer;
use crate::ModelConfig;
use std::path::Path;

/// A loaded Hugging Face checkpoint.
#[derive(Clone, Debug)]
pub struct HfModel {
    /// the mapped architecture (same as `model.cfg`)
    pub cfg: ModelConfig,
    /// the model, f32
    pub model: Transformer<f32>,
    /// `architectures[0]` of config.json
    pub arch: String,
    /// beginning-of-sequence token: generation_config.json if present, else config.json
    pub bos_token_id: Option<u32>,
    /// end-of-sequence token(s): generation_config.json if present, else config.json
    pub eos_token_ids: Vec<u32>,
    /// what a GGUF file adds (its tokenizer and chat template are metadata); `None` for a
    /// Hugging Face directory
    pub gguf: Option<crate::gguf::GgufInfo>,
}

/// Load a checkpoint: a GGUF file (`*.gguf`, [`crate::gguf::load_gguf`]) or a Hugging Face
/// directory ([`load_hf_dir_with`]).
pub fn load(path: &Path, opts: &HfOptions) -> Result<HfModel> {
    if crate::gguf::is_gguf_path(path) && !path.is_dir() {
        crate::gguf::load_gguf(path, opts)
    } else {
        load_hf_dir_with(path, opts)
    }
}

/// The config of a Hugging Face checkpoint directory (its `config.json`) or a GGUF file (its
/// metadata), without reading the weights.
pub fn read_config(path: &Path, opts: &HfOptions) -> Result<HfConfig> {
    if crate::gguf::is_gguf_path(path) && !path.is_dir() {
        crate::gguf::read_config(path, opts)
    } else {
        let cfg_path = path.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io { path: cfg_path.clone(), source })?;
        parse_config(&text, &cfg_path, opts)
    }
}

/// Load `dir/config.json` and its safetensors weights with default options.
pub fn load_hf_dir(dir: &Path) -> Result<HfModel> {
    load_hf_dir_with(dir, &HfOptions::default())
}

/// Load `dir/config.json` and its safetensors weights.
pub fn load_hf_dir_with(dir: &Path, opts: &HfOptions) -> Result<HfModel> {
    let hc = read_config(dir, opts)?;
    let files = weights::weight_files(dir)?;
    let model = weights::load_weights(dir, &files, &hc, opts)?;
    let (mut bos, mut eos) = (hc.bos_token_id, hc.eos_token_ids.clone());
    let gen_path = dir.join("generation_config.json");
    if gen_path.exists() {
        let text = std::fs::read_to_string(&gen_path).map_err(|source| Error::Io { path: gen_path.clone(), source })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::ConfigParse { path: Some(gen_path.clone()), message: format!("not valid JSON: {e}") })?;
        if let Some(b) = v.get("bos_token_id").filter(|x| !x.is_null()) {
            bos = fields::token_ids(Some(b)).first().copied();
        }
        if let Some(e) = v.get("eos_token_id").filter(|x| !x.is_null()) {
            eos = fields::token_ids(Some(e));
        }
    }
    Ok(HfModel { cfg: hc.cfg, model, arch: hc.arch, bos_token_id: bos, eos_token_ids: eos, gguf: None })
}
