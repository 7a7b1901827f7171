//! Loading what the server serves: a Hugging Face directory, a GGUF file or a `moe train` run.

use crate::ServeModel;
use anyhow::Context;
use moe_data::{ChatTemplate, GgufVocab, Tokenizer};
use moe_model::gguf::Value;
use moe_model::hf::{HfModel, HfOptions};
use std::path::Path;

/// A Hugging Face directory must have a `tokenizer.json` (checked before its weights are loaded);
/// a GGUF file carries its tokenizer.
pub fn check_has_tokenizer(path: &Path) -> anyhow::Result<()> {
    if !moe_model::gguf::is_gguf_path(path) && !path.join("tokenizer.json").is_file() {
        anyhow::bail!("{} has no tokenizer.json; the checkpoint's Hugging Face tokenizer is needed", path.display());
    }
    Ok(())
}

/// The tokenizer and chat template of checkpoint `path` (loaded as `m`): a Hugging Face
/// directory's `tokenizer.json` (required) and chat template, or a GGUF file's metadata
/// (`tokenizer.ggml.*`, `tokenizer.chat_template`).
pub fn checkpoint_tokenizer(path: &Path, m: &HfModel) -> anyhow::Result<(Tokenizer, Option<ChatTemplate>)> {
    let Some(g) = &m.gguf else {
        check_has_tokenizer(path)?;
        return Ok((Tokenizer::from_file(&path.join("tokenizer.json"))?, ChatTemplate::from_dir(path)?));
    };
    let meta = &g.meta;
    let s = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
    let strings = |k: &str| -> anyhow::Result<Option<Vec<String>>> {
        match meta.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
                .map(Some)
                .with_context(|| format!("{}: metadata `{k}` is not a list of strings", path.display())),
        }
    };
    let numbers = |k: &str| -> anyhow::Result<Option<Vec<f64>>> {
        match meta.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
                .map(Some)
                .with_context(|| format!("{}: metadata `{k}` is not a list of numbers", path.display())),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?
        .with_context(|| format!("{}: metadata `tokenizer.ggml.tokens` is missing: the file has no tokenizer", path.display()))?;
    let vocab = GgufVocab {
        model: s("tokenizer.ggml.model").with_context(|| format!("{}: metadata `tokenizer.ggml.model` is missing", path.display()))?,
        pre: s("tokenizer.ggml.pre"),
        scores: numbers("tokenizer.ggml.scores")?.map(|v| v.into_iter().map(|x| x as f32).collect()),
        token_types: numbers("tokenizer.ggml.token_type")?.map(|v| v.into_iter().map(|x| x as i64).collect()),
        merges: strings("tokenizer.ggml.merges")?.unwrap_or_default(),
        add_space_prefix: meta.get("tokenizer.ggml.add_space_prefix").and_then(Value::as_bool),
        unk: meta.get("tokenizer.ggml.unknown_token_id").and_then(Value::as_u64).map(|v| v as u32),
        tokens,
    };
    let tok = Tokenizer::from_gguf_vocab(&vocab, path)?;
    let name = |id: Option<u32>| id.and_then(|i| vocab.tokens.get(i as usize).cloned()).unwrap_or_default();
    let template = match s("tokenizer.chat_template") {
        Some(src) => Some(ChatTemplate::new(&src, path, &name(m.bos_token_id), &name(m.eos_token_ids.first().copied()))?),
        None => None,
    };
    Ok((tok, template))
}

impl ServeModel {
    /// A checkpoint ([`moe_model::hf::load`]: a Hugging Face directory or a GGUF file; a bf16/f16
    /// checkpoint's matrices stay 2-byte until the engine converts them), its tokenizer and chat
    /// template ([`checkpoint_tokenizer`]), and every end-of-sequence id the checkpoint declares
    /// (else the tokenizer's).
    pub fn from_checkpoint(path: &Path) -> anyhow::Result<ServeModel> {
        check_has_tokenizer(path)?;
        let m = moe_model::hf::load(path, &HfOptions { keep_dtype: true, ..Default::default() })
            .with_context(|| format!("loading {}", path.display()))?;
        let (tokenizer, chat_template) = checkpoint_tokenizer(path, &m)?;
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
