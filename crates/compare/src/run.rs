//! Training runs inside a comparison: ordinary `moe train` run directories
//! (`<out>/runs/<model>-s<seed>/`), reused when complete and resumed when interrupted.
//!
//! A run is **complete** when its `config.resolved.toml` is the experiment we would train, its
//! latest checkpoint is at `train.steps` and `metrics.jsonl` has an evaluation at that step. Then
//! nothing is trained again. A run with a matching config but fewer steps is resumed from its
//! latest checkpoint (`moe_train::train` with `resume`). A run directory holding a *different*
//! experiment (another budget, seed or config) is an error naming it: pick another `--out` or
//! delete that directory.

use crate::error::{Error, Result};
use crate::metrics::{read_metrics, RunMetrics};
use moe_train::run_dir::{read_state, RunDir};
use moe_train::{parse_experiment, train, ExperimentConfig, TrainOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What [`ensure_run`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// trained from scratch in this call
    Trained,
    /// continued from a checkpoint in this call
    Resumed,
    /// already complete: nothing trained
    Reused,
}

/// A finished run: where it is, what happened, and its metrics.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// the run directory
    pub dir: PathBuf,
    /// what this call did
    pub status: RunStatus,
    /// all metrics records
    pub metrics: RunMetrics,
    /// seconds this call spent training (0 when reused)
    pub train_seconds: f64,
}

/// The run directory of model `name`, seed index `seed` under `out`: `out/runs/<name>-s<seed>`.
pub fn run_dir(out: &Path, name: &str, seed: usize) -> PathBuf {
    out.join("runs").join(format!("{name}-s{seed}"))
}

/// Sections of two experiments that differ, for error messages.
fn differing_sections(a: &ExperimentConfig, b: &ExperimentConfig) -> String {
    let mut out = Vec::new();
    if a.model != b.model {
        out.push("[model]");
    }
    if a.train != b.train {
        if a.train.steps != b.train.steps {
            out.push("[train] (steps: the budget changed)");
        } else if a.train.seed != b.train.seed {
            out.push("[train] (seed)");
        } else {
            out.push("[train]");
        }
    }
    if a.data != b.data {
        out.push("[data]");
    }
    out.join(", ")
}

/// True when the run at `dir` is a complete run of exactly `cfg`; errors when it holds another
/// experiment.
pub fn is_complete(cfg: &ExperimentConfig, dir: &Path) -> Result<bool> {
    let rd = RunDir::new(dir);
    let cfg_path = rd.config_path();
    if !cfg_path.is_file() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(crate::error::io(&cfg_path, "cannot read"))?;
    let (old, _) = parse_experiment(&text, &cfg_path, &[])?;
    if &old != cfg {
        return Err(Error::RunMismatch {
            path: dir.to_path_buf(),
            message: format!(
                "holds a different experiment (differs in {}); delete it or choose another --out",
                differing_sections(&old, cfg)
            ),
        });
    }
    let Some(ckpt) = rd.latest()? else { return Ok(false) };
    if read_state(&ckpt)?.step != cfg.train.steps {
        return Ok(false);
    }
    let m = rd.metrics_path();
    Ok(m.is_file() && read_metrics(&m)?.eval_at(cfg.train.steps).is_some())
}

/// Make sure `dir` holds a complete run of `cfg`: reuse, resume or train it.
pub fn ensure_run(cfg: &ExperimentConfig, dir: &Path, progress: bool) -> Result<RunOutcome> {
    let rd = RunDir::new(dir);
    let status = if is_complete(cfg, dir)? {
        RunStatus::Reused
    } else if rd.latest()?.is_some() {
        RunStatus::Resumed
    } else {
        RunStatus::Trained
    };
    let mut train_seconds = 0.0;
    if status != RunStatus::Reused {
        if progress {
            eprintln!(
                "{} {} ({} steps)",
                if status == RunStatus::Resumed { "resuming" } else { "training" },
                dir.display(),
                cfg.train.steps
            );
        }
        std::fs::create_dir_all(dir).map_err(crate::error::io(dir, "cannot create run directory"))?;
        let t0 = Instant::now();
        // `resume` with no checkpoint starts afresh (clearing any partial metrics).
        train(cfg, dir, &TrainOptions { resume: true, progress, dist: None })?;
        train_seconds = t0.elapsed().as_secs_f64();
    } else if progress {
        eprintln!("reusing {} (complete)", dir.display());
    }
    let metrics = read_metrics(&rd.metrics_path())?;
    if metrics.eval_at(cfg.train.steps).is_none() {
        return Err(Error::RunIncomplete {
            path: rd.metrics_path(),
            message: format!("has no evaluation at the final step {}", cfg.train.steps),
        });
    }
    Ok(RunOutcome { dir: dir.to_path_buf(), status, metrics, train_seconds })
}

/// The final model of a complete run.
pub fn load_final_model(cfg: &ExperimentConfig, dir: &Path) -> Result<moe_model::Transformer<f32>> {
    let rd = RunDir::new(dir);
    let ckpt = rd
        .latest()?
        .ok_or_else(|| Error::RunIncomplete { path: rd.latest_path(), message: "is missing: the run has no checkpoint".into() })?;
    Ok(moe_model::Transformer::load(cfg.model.clone(), &ckpt.join(moe_train::run_dir::MODEL_FILE))?)
}
