//! Loading a run directory's latest checkpoint for evaluation or generation.

use crate::config::{load_experiment, ExperimentConfig};
use crate::error::{Error, Result};
use crate::run_data::check_tokenizer_fits;
use crate::run_dir::{read_state, RunDir, MODEL_FILE};
use moe_data::Tokenizer;
use moe_model::Transformer;
use std::path::{Path, PathBuf};

/// The latest checkpoint of a run, ready to use.
#[derive(Clone, Debug)]
pub struct LoadedRun {
    /// the run's resolved experiment
    pub cfg: ExperimentConfig,
    /// the model with the checkpoint's weights and selection biases
    pub model: Transformer<f32>,
    /// the run's tokenizer (`tokenizer.json` of the run when present, else `data.tokenizer`)
    pub tokenizer: Tokenizer,
    /// optimizer steps of the checkpoint
    pub step: usize,
    /// the checkpoint directory
    pub checkpoint: PathBuf,
}

/// Load `config.resolved.toml`, the latest checkpoint and the tokenizer of the run directory
/// `run`. Errors name the missing or corrupt file, or the tokenizer that does not fit the model.
pub fn load_run(run: &Path) -> Result<LoadedRun> {
    if !run.is_dir() {
        return Err(Error::RunDir {
            path: run.to_path_buf(),
            message: "does not exist or is not a directory (expected the --out directory of `moe train`)".into(),
        });
    }
    let rd = RunDir::new(run);
    let cfg_path = rd.config_path();
    if !cfg_path.is_file() {
        return Err(Error::RunDir {
            path: cfg_path,
            message: "is missing; this does not look like a run directory written by `moe train`".into(),
        });
    }
    let (cfg, _) = load_experiment(&cfg_path, &[])?;
    let Some(checkpoint) = rd.latest()? else {
        return Err(Error::RunDir { path: rd.latest_path(), message: "is missing: the run has no checkpoint yet".into() });
    };
    let model_path = checkpoint.join(MODEL_FILE);
    let model: Transformer<f32> = Transformer::load(cfg.model.clone(), &model_path)?;
    let step = read_state(&checkpoint)?.step;
    let tok_path = rd.tokenizer_path();
    let (tokenizer, tok_name) = if tok_path.is_file() {
        (Tokenizer::from_file(&tok_path)?, tok_path.display().to_string())
    } else if cfg.data.is_byte_tokenizer() {
        (Tokenizer::byte(), "byte".to_string())
    } else {
        (Tokenizer::from_file(Path::new(&cfg.data.tokenizer))?, cfg.data.tokenizer.clone())
    };
    check_tokenizer_fits(&tokenizer, &tok_name, model.cfg.n_vocab, &model_path)?;
    Ok(LoadedRun { cfg, model, tokenizer, step, checkpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_run_missing_pieces_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_run(&tmp.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
        let e = load_run(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("config.resolved.toml"), "{e}");
        let cfg =
            "[model]\nn_vocab = 256\nn_ctx = 8\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 8\n[train]\nseq_len = 8\n";
        std::fs::write(tmp.path().join("config.resolved.toml"), cfg).unwrap();
        let e = load_run(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("latest") && e.contains("no checkpoint"), "{e}");
    }
}
