//! The run directory: resolved config, metrics log, tokenizer copy and checkpoints.
//!
//! ```text
//! <out>/
//!   config.resolved.toml          the experiment with every default filled in
//!   metrics.jsonl                 one JSON object per line, appended and flushed per record
//!   tokenizer.json                copy of the BPE tokenizer (absent for the byte tokenizer)
//!   checkpoints/
//!     step_000500/{model.safetensors, optimizer.safetensors, state.json}
//!     latest                      names the newest complete step directory, e.g. "step_000500"
//! ```
//!
//! Every file is written atomically (temporary file + rename), and `latest` only after the
//! checkpoint it names is complete, so a crash at any moment leaves a resumable run.

use crate::config::ExperimentConfig;
use crate::error::{io, Error, Result};
use crate::optimizer::AdamW;
use moe_data::BatcherState;
use moe_model::checkpoint::write_atomic;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The resolved config file.
pub const CONFIG_FILE: &str = "config.resolved.toml";
/// The metrics log.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The BPE tokenizer copy.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The checkpoints folder.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The file naming the latest checkpoint, inside the checkpoints folder.
pub const LATEST_FILE: &str = "latest";
/// Model weights and buffers inside a checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimizer moments inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Training state inside a checkpoint.
pub const STATE_FILE: &str = "state.json";

/// Everything besides model and optimizer that a resumed run needs to continue exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// optimizer steps completed
    pub step: usize,
    /// the training batcher (its RNG is the only random state of training)
    pub batcher: BatcherState,
    /// training tokens seen
    pub tokens: u64,
    /// training FLOPs spent (tokens × FLOPs per token)
    pub flops: f64,
    /// wall-clock seconds spent so far, over all sessions
    pub elapsed_s: f64,
    /// per MoE layer, routing counts accumulated since the last selection-bias update (empty
    /// when the bias is updated every step, as now)
    #[serde(default)]
    pub pending_counts: Vec<(usize, Vec<u64>)>,
    /// train loss of the last step
    #[serde(default)]
    pub last_train_loss: Option<f64>,
    /// validation loss of the last evaluation
    #[serde(default)]
    pub last_val_loss: Option<f64>,
}

/// Paths and operations of one run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.resolved.toml`
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    /// `metrics.jsonl`
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }
    /// `tokenizer.json`
    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join(TOKENIZER_FILE)
    }
    /// `checkpoints/`
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join(CHECKPOINTS_DIR)
    }
    /// `checkpoints/step_{step:06}`
    pub fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.checkpoints_dir().join(format!("step_{step:06}"))
    }
    /// `checkpoints/latest`
    pub fn latest_path(&self) -> PathBuf {
        self.checkpoints_dir().join(LATEST_FILE)
    }

    /// True when the directory already holds (part of) a run: a config, metrics or checkpoint.
    pub fn has_run(&self) -> bool {
        self.config_path().exists() || self.metrics_path().exists() || self.latest_path().exists()
    }

    /// The newest complete checkpoint directory, or `None` when there is none yet. Errors when
    /// `latest` is unreadable or names a directory that does not exist.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let p = self.latest_path();
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(io(&p, "cannot read"))?;
        let name = text.trim();
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
            return Err(Error::Checkpoint { path: p, message: format!("does not name a checkpoint directory: {name:?}") });
        }
        let dir = self.checkpoints_dir().join(name);
        if !dir.is_dir() {
            return Err(Error::Checkpoint { path: p, message: format!("names {}, which does not exist", dir.display()) });
        }
        Ok(Some(dir))
    }

    /// Create the directory if needed and check that files can be written in it, so that a run
    /// into an unusable directory stops at once with an error naming it (not after loading the
    /// data, or at the first checkpoint).
    pub fn prepare(&self) -> Result<()> {
        let bad = |what: &str, e: std::io::Error| Error::RunDir { path: self.root.clone(), message: format!("{what}: {e}") };
        std::fs::create_dir_all(&self.root).map_err(|e| bad("cannot create the run directory", e))?;
        let probe = self.root.join(format!(".write-test.{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| bad("cannot write in the run directory", e))?;
        std::fs::remove_file(&probe).map_err(|e| bad("cannot remove a file from the run directory", e))
    }

    /// Write `config.resolved.toml`.
    pub fn write_config(&self, cfg: &ExperimentConfig) -> Result<()> {
        Ok(write_atomic(&self.config_path(), cfg.to_toml_string().as_bytes())?)
    }

    /// Write a complete checkpoint for `state.step` and then point `latest` at it.
    pub fn save_checkpoint(&self, model: &Transformer<f32>, opt: &AdamW, state: &TrainState) -> Result<PathBuf> {
        let dir = self.checkpoint_dir(state.step);
        std::fs::create_dir_all(&dir).map_err(io(&dir, "cannot create"))?;
        model.save(&dir.join(MODEL_FILE))?;
        opt.save(&dir.join(OPTIMIZER_FILE))?;
        let sp = dir.join(STATE_FILE);
        let json = serde_json::to_string_pretty(state).map_err(|e| Error::Checkpoint { path: sp.clone(), message: e.to_string() })?;
        write_atomic(&sp, json.as_bytes())?;
        let name = dir.file_name().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        write_atomic(&self.latest_path(), format!("{name}\n").as_bytes())?;
        Ok(dir)
    }

    /// Drop metrics records of steps after `max_step` (and any torn last line), so a resumed run
    /// appends to a log that matches its checkpoint.
    pub fn truncate_metrics(&self, max_step: usize) -> Result<()> {
        let p = self.metrics_path();
        if !p.exists() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&p).map_err(io(&p, "cannot read"))?;
        let mut kept = String::with_capacity(text.len());
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if v.get("step").and_then(|s| s.as_u64()).is_some_and(|s| s as usize <= max_step) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        Ok(write_atomic(&p, kept.as_bytes())?)
    }

    /// Open `metrics.jsonl` for appending.
    pub fn open_metrics(&self) -> Result<MetricsWriter> {
        MetricsWriter::open(&self.metrics_path())
    }
}

/// Read a checkpoint's `state.json`.
pub fn read_state(checkpoint_dir: &Path) -> Result<TrainState> {
    let p = checkpoint_dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).map_err(io(&p, "cannot read training state"))?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path: p, message: format!("not a valid training state: {e}") })
}

/// Appends JSON records to `metrics.jsonl`, one per line, written through at once.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Open (creating) `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(io(d, "cannot create"))?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io(path, "cannot open for appending"))?;
        Ok(MetricsWriter { path: path.to_path_buf(), file })
    }

    /// Append one record as a line and flush it.
    pub fn write(&mut self, record: &serde_json::Value) -> Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io(&self.path, "cannot write"))?;
        self.file.flush().map_err(io(&self.path, "cannot write"))
    }
}

/// Read every record of a `metrics.jsonl` (skipping a torn last line).
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(io(path, "cannot read"))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::AdamWConfig;
    use moe_model::ModelConfig;
    use serde_json::json;

    fn state(step: usize) -> TrainState {
        TrainState {
            step,
            batcher: BatcherState { rng: [1, 2, 3, u64::MAX], n_batches: 7 },
            tokens: 64,
            flops: 1.5e9,
            elapsed_s: 0.25,
            pending_counts: vec![(1, vec![3, 4])],
            last_train_loss: Some(2.5),
            last_val_loss: None,
        }
    }

    #[test]
    fn run_dir_checkpoint_roundtrip_and_latest() {
        let tmp = tempfile::tempdir().unwrap();
        let rd = RunDir::new(tmp.path().join("run"));
        assert!(!rd.has_run());
        assert_eq!(rd.latest().unwrap(), None);
        let cfg: ModelConfig =
            toml::from_str("n_vocab = 16\nn_ctx = 4\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 8\n").unwrap();
        let model = Transformer::new(cfg.clone(), 1).unwrap();
        let opt = AdamW::new(
            &model.table,
            AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, grad_clip: 0.0, decay_embeddings: false },
        );
        let d = rd.save_checkpoint(&model, &opt, &state(3)).unwrap();
        assert_eq!(d, rd.checkpoint_dir(3));
        assert!(d.ends_with("checkpoints/step_000003"));
        rd.save_checkpoint(&model, &opt, &state(12)).unwrap();
        assert_eq!(std::fs::read_to_string(rd.latest_path()).unwrap(), "step_000012\n");
        let latest = rd.latest().unwrap().unwrap();
        assert_eq!(read_state(&latest).unwrap(), state(12));
        let back: Transformer<f32> = Transformer::load(cfg, &latest.join(MODEL_FILE)).unwrap();
        assert_eq!(back.params, model.params);
        assert!(rd.has_run());
        // a latest pointing nowhere, and a corrupt state, are errors naming the file
        std::fs::write(rd.latest_path(), "step_000099\n").unwrap();
        let e = rd.latest().unwrap_err().to_string();
        assert!(e.contains("latest") && e.contains("step_000099"), "{e}");
        std::fs::write(latest.join(STATE_FILE), "{").unwrap();
        let e = read_state(&latest).unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }

    #[test]
    fn run_dir_metrics_append_and_truncate() {
        let tmp = tempfile::tempdir().unwrap();
        let rd = RunDir::new(tmp.path());
        let mut w = rd.open_metrics().unwrap();
        for s in 1..=5 {
            w.write(&json!({"type": "train", "step": s, "loss": 1.0 / s as f64})).unwrap();
        }
        w.write(&json!({"type": "eval", "step": 4, "val_loss": 0.5})).unwrap();
        drop(w);
        let mut f = std::fs::OpenOptions::new().append(true).open(rd.metrics_path()).unwrap();
        f.write_all(b"{\"type\":\"tra").unwrap();
        assert_eq!(read_metrics(&rd.metrics_path()).unwrap().len(), 6);
        rd.truncate_metrics(4).unwrap();
        let recs = read_metrics(&rd.metrics_path()).unwrap();
        let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 4]);
        let mut w = rd.open_metrics().unwrap();
        w.write(&json!({"type": "train", "step": 5})).unwrap();
        assert_eq!(read_metrics(&rd.metrics_path()).unwrap().len(), 6);
    }
}
