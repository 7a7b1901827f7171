//! Per-model results over seeds: what `summary.json` holds for each trained model.

use crate::accuracy::Accuracy;
use crate::balance::LayerBalance;
use crate::decode::DecodeRow;
use crate::domains::LayerDomains;
use crate::plan::{ModelPlan, Role};
use crate::run::{RunOutcome, RunStatus};
use crate::stats::MeanStd;
use moe_model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One run of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// seed index (0-based; the run directory suffix `-s<seed>`)
    pub seed: usize,
    /// `train.seed` of the run
    pub train_seed: u64,
    /// run directory relative to the output directory
    pub run_dir: PathBuf,
    /// trained, resumed or reused in this call
    pub status: RunStatus,
    /// optimizer steps
    pub steps: usize,
    /// training tokens
    pub tokens: u64,
    /// training FLOPs (accounting)
    pub flops: f64,
    /// final validation cross-entropy (nats): the run's larger final evaluation when it made one
    pub val_loss: f64,
    /// `exp(val_loss)`
    pub val_ppl: f64,
    /// final validation loss on the batches of the loss curve (what the compute multiplier is
    /// read against: the dense curve uses the same batches)
    #[serde(default)]
    pub curve_val_loss: f64,
    /// training throughput (tokens/s of step time, last session)
    pub tokens_per_s: f64,
    /// wall-clock seconds of training over all sessions
    pub elapsed_s: f64,
    /// validation loss against cumulative training FLOPs
    pub curve: Vec<(f64, f64)>,
    /// next-token accuracy of the final model on the validation split (filled in after training)
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
}

impl SeedResult {
    /// From a finished run; `out` makes the run directory relative.
    pub fn from_outcome(seed: usize, train_seed: u64, o: &RunOutcome, out: &Path) -> Self {
        let last = o.metrics.last_eval().cloned().unwrap_or_default();
        let elapsed_s = o.metrics.train.last().map_or(0.0, |t| t.elapsed_s);
        SeedResult {
            seed,
            train_seed,
            run_dir: o.dir.strip_prefix(out).unwrap_or(&o.dir).to_path_buf(),
            status: o.status,
            steps: last.step,
            tokens: last.tokens,
            flops: last.flops,
            val_loss: last.final_val_loss.unwrap_or(last.val_loss),
            val_ppl: last.final_val_loss.unwrap_or(last.val_loss).exp(),
            curve_val_loss: last.val_loss,
            tokens_per_s: o.metrics.tokens_per_s(),
            elapsed_s,
            curve: o.metrics.loss_curve(),
            accuracy: None,
        }
    }
}

/// Everything measured about one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// short name (run directories `runs/<name>-s<seed>`)
    pub name: String,
    /// role in the comparison
    pub role: Role,
    /// one-line architecture description
    pub description: String,
    /// experiment file, when not built in
    pub source: Option<PathBuf>,
    /// all parameters
    pub params_total: u64,
    /// parameters a token uses
    pub params_active: u64,
    /// training FLOPs per token (3 × forward, at `train.seq_len`)
    pub flops_per_token: f64,
    /// optimizer steps per run
    pub steps: usize,
    /// tokens per optimizer step
    pub tokens_per_step: usize,
    /// final validation loss over seeds
    pub val_loss: MeanStd,
    /// final validation perplexity over seeds
    pub val_ppl: MeanStd,
    /// training tokens/s over seeds
    pub tokens_per_s: MeanStd,
    /// next-token top-1 accuracy on the validation split over seeds
    #[serde(default)]
    pub val_top1: MeanStd,
    /// every run
    pub seeds: Vec<SeedResult>,
    /// decode latency/throughput per weight format and batch size on the engine (model of
    /// seed 0; median and min–max over interleaved rounds)
    pub decode: Vec<DecodeRow>,
    /// expert balance per MoE layer (run of seed 0)
    pub balance: Vec<LayerBalance>,
    /// domain × expert routing per MoE layer (model of seed 0; empty without domain tags)
    pub domains: Vec<LayerDomains>,
}

impl ModelResult {
    /// Aggregate the runs of `plan`; analyses are filled in later.
    pub fn new(plan: &ModelPlan, steps: usize, seeds: Vec<SeedResult>) -> Self {
        let vals = |f: fn(&SeedResult) -> f64| MeanStd::of(&seeds.iter().map(f).collect::<Vec<_>>());
        ModelResult {
            name: plan.name.clone(),
            role: plan.role,
            description: describe(&plan.cfg.model),
            source: plan.source.clone(),
            params_total: plan.account.params_total,
            params_active: plan.account.params_active,
            flops_per_token: plan.account.flops_train,
            steps,
            tokens_per_step: crate::plan::tokens_per_step(&plan.cfg.train),
            val_loss: vals(|s| s.val_loss),
            val_ppl: vals(|s| s.val_ppl),
            tokens_per_s: vals(|s| s.tokens_per_s),
            val_top1: vals(|s| s.accuracy.as_ref().map_or(f64::NAN, |a| a.top1)),
            seeds,
            decode: Vec::new(),
            balance: Vec::new(),
            domains: Vec::new(),
        }
    }

    /// Final validation losses in seed order.
    pub fn losses(&self) -> Vec<f64> {
        self.seeds.iter().map(|s| s.val_loss).collect()
    }

    /// The f32 decode row at batch size `b`.
    pub fn decode_at(&self, b: usize) -> Option<&DecodeRow> {
        self.decode_at_dtype("f32", b)
    }

    /// The decode row of weight format `dtype` at batch size `b`.
    pub fn decode_at_dtype(&self, dtype: &str, b: usize) -> Option<&DecodeRow> {
        self.decode.iter().find(|d| d.batch == b && d.dtype == dtype)
    }

    /// Recompute `val_top1` from the seeds' accuracies.
    pub fn refresh_accuracy(&mut self) {
        self.val_top1 = MeanStd::of(&self.seeds.iter().map(|s| s.accuracy.as_ref().map_or(f64::NAN, |a| a.top1)).collect::<Vec<_>>());
    }
}

/// `"4 layers, d_model 128, dense SwiGLU d_ff 512"` / `"..., 8 experts top-2 (d_expert 256)"`.
pub fn describe(m: &ModelConfig) -> String {
    let base = format!("{} layers, d_model {}", m.n_layer, m.d_model);
    match &m.moe {
        None => format!("{base}, dense d_ff {}", m.d_ff),
        Some(moe) => {
            let mut s = format!(
                "{base}, {} MoE layers: {} experts top-{} (d_expert {})",
                m.n_moe_layers(),
                moe.n_expert,
                moe.n_expert_active,
                moe.d_expert
            );
            if moe.n_expert_shared > 0 {
                s.push_str(&format!(" + {} shared", moe.n_expert_shared));
            }
            if moe.capacity_factor > 0.0 {
                s.push_str(&format!(", capacity {}", moe.capacity_factor));
            }
            s
        }
    }
}

/// Human-readable count: `1.05M`, `340k`, `512`.
pub fn fmt_count(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{n}")
    }
}

/// Bytes in binary units: `8 MiB`, `1.5 GiB`, `640 KiB`.
pub fn fmt_bytes(x: f64) -> String {
    let (v, u) = if x >= (1u64 << 30) as f64 {
        (x / (1u64 << 30) as f64, "GiB")
    } else if x >= (1u64 << 20) as f64 {
        (x / (1u64 << 20) as f64, "MiB")
    } else {
        (x / 1024.0, "KiB")
    };
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0} {u}")
    } else {
        format!("{v:.1} {u}")
    }
}

/// FLOPs in scientific notation: `2.50e12`.
pub fn fmt_flops(x: f64) -> String {
    format!("{x:.2e}")
}

/// A validation loss as every report prints it (4 decimals).
pub fn fmt_loss(x: f64) -> String {
    format!("{x:.4}")
}
