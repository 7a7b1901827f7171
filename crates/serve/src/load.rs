//! Loading what the server serves: a Hugging Face directory or a `moe train` run.

use crate::ServeModel;
use anyhow::Context;
use moe_data::{ChatTemplate, Tokenizer};
use moe_model::hf::{load_hf_dir_with, HfOptions};
use std::path::Path;

impl ServeModel {
    /// `dir/config.json`, its safetensors weights (a bf16/f16 checkpoint's matrices stay 2-byte
    /// until the engine converts them), `tokenizer.json` (required), the chat template when the
    /// checkpoint has one, and every end-of-sequence id `generation_config.json` / `config.json`
    /// declare (else the tokenizer's).
    pub fn from_hf_dir(dir: &Path) -> anyhow::Result<ServeModel> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            anyhow::bail!("{} has no tokenizer.json; `moe serve --model` needs the checkpoint's Hugging Face tokenizer", dir.display());
        }
        let tokenizer = Tokenizer::from_file(&tok_path)?;
        let chat_template = ChatTemplate::from_dir(dir)?;
        let m = load_hf_dir_with(dir, &HfOptions { keep_dtype: true, ..Default::default() })
            .with_context(|| format!("loading {}", dir.display()))?;
        let eos_token_ids = if m.eos_token_ids.is_empty() { tokenizer.eos_token().into_iter().collect() } else { m.eos_token_ids };
        Ok(ServeModel { model: m.model, tokenizer, eos_token_ids, chat_template })
    }

    /// The latest checkpoint of a `moe train` run and the run's tokenizer (no chat template).
    pub fn from_run(dir: &Path) -> anyhow::Result<ServeModel> {
        let run = moe_train::load_run(dir)?;
        let eos_token_ids = run.tokenizer.eos_token().into_iter().collect();
        Ok(ServeModel { model: run.model, tokenizer: run.tokenizer, eos_token_ids, chat_template: None })
    }
}
