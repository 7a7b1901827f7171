//! Training for moe: experiment configs, AdamW, the learning-rate schedule, the training loop,
//! run directories with checkpoints and exact resume, and evaluation.
//!
//! The pieces, in the order a run uses them:
//! - [`config`] reads the experiment TOML (`[model]`, `[train]`, `[data]`) with `--set`
//!   overrides and validates it; errors name the file and the dotted field.
//! - [`run_data`] builds the tokenizer, corpus and train/validation split from `[data]`.
//! - [`schedule`] gives the learning rate of each step (linear warmup, cosine decay).
//! - [`optimizer`] is AdamW over the flat parameter buffer with global-norm clipping.
//! - [`trainer`] runs the steps ([`train_step`], [`train`]), logs metrics and checkpoints.
//! - [`run_dir`] lays out the run directory and writes everything atomically.
//! - [`eval`] measures validation loss, of a model or of a run directory; [`load`] loads a run's
//!   latest checkpoint and tokenizer (for evaluation and generation).
//! - [`bench`] times training steps against the machine's GEMM peak.
//!
//! ```no_run
//! use moe_train::{load_experiment, train, TrainOptions};
//! use std::path::Path;
//! let (cfg, _) = load_experiment(Path::new("configs/tiny.toml"), &["train.lr=1e-3".into()])?;
//! let summary = train(&cfg, Path::new("runs/tiny"), &TrainOptions { progress: true, ..Default::default() })?;
//! println!("final val loss {:?}", summary.final_val_loss);
//! # Ok::<(), moe_train::Error>(())
//! ```

#![warn(missing_docs)]

pub mod bench;
pub mod config;
pub mod error;
pub mod eval;
pub mod load;
pub mod optimizer;
pub mod parallel;
pub mod run_data;
pub mod run_dir;
pub mod schedule;
pub mod trainer;

pub use config::{apply_override, load_experiment, parse_experiment, DataConfig, ExperimentConfig, TrainConfig};
pub use error::{Error, Result};
pub use eval::{evaluate, evaluate_run, EvalReport, EvalStats};
pub use load::{load_run, LoadedRun};
pub use optimizer::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
pub use run_dir::{read_metrics, RunDir, TrainState};
pub use schedule::Schedule;
pub use trainer::{train, train_step, train_until, StepReport, TrainOptions, TrainSummary};
