//! Throughput probe: a few real training steps (forward, backward, AdamW) on random tokens, to
//! turn a wall-clock budget into FLOPs and to estimate how long a plan will take.

use crate::error::Result;
use moe_data::Batch;
use moe_kernels::rng::Rng;
use moe_model::accounting::account;
use moe_model::Transformer;
use moe_train::optimizer::{AdamW, AdamWConfig};
use moe_train::{train_step, ExperimentConfig};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Measured training speed of one experiment on this machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// seconds per optimizer step
    pub step_s: f64,
    /// training tokens per second
    pub tokens_per_s: f64,
    /// model training FLOPs per second (accounting convention)
    pub flops_per_s: f64,
}

/// Time `steps` optimizer steps of `cfg` (after one warm-up step) on random tokens.
pub fn probe(cfg: &ExperimentConfig, steps: usize) -> Result<Throughput> {
    let t = &cfg.train;
    let mut model: Transformer<f32> = Transformer::new(cfg.model.clone(), t.seed)?;
    let mut opt = AdamW::new(&model.table, AdamWConfig::from_train(t));
    let mut rng = Rng::derive(t.seed, 0x9E0B);
    let v = cfg.model.n_vocab as u64;
    let (b, s) = (t.batch_size, t.seq_len);
    let micro: Vec<Batch> = (0..t.grad_accum.max(1))
        .map(|_| {
            let tokens: Vec<u32> = (0..b * s + 1).map(|_| rng.below(v) as u32).collect();
            Batch { inputs: tokens[..b * s].to_vec(), targets: tokens[1..].to_vec(), batch_size: b, seq_len: s }
        })
        .collect();
    let mut grads = vec![0.0f32; model.params.len()];
    train_step(&mut model, &mut opt, &mut grads, &micro, t.lr * 0.1)?; // warm-up
    let steps = steps.max(1);
    let t0 = Instant::now();
    for _ in 0..steps {
        train_step(&mut model, &mut opt, &mut grads, &micro, t.lr * 0.1)?;
    }
    let step_s = t0.elapsed().as_secs_f64().max(1e-9) / steps as f64;
    let tokens = (b * s * t.grad_accum.max(1)) as f64;
    let flops_tok = account(&cfg.model, s).flops_train;
    Ok(Throughput { step_s, tokens_per_s: tokens / step_s, flops_per_s: tokens * flops_tok / step_s })
}

/// The per-model FLOP budget that makes training all `cfgs` (each `repeats` times) take
/// `minutes` of wall-clock time at the measured FLOP rates: `budget = T / Σ_i repeats/rate_i`.
pub fn budget_for_minutes(rates: &[f64], repeats: usize, minutes: f64) -> f64 {
    let inv: f64 = rates.iter().map(|r| repeats as f64 / r.max(1.0)).sum();
    minutes * 60.0 / inv.max(1e-30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_budget_for_minutes_splits_time_by_rate() {
        // two models at 1 and 3 FLOP/s, 1 minute: budget B with B/1 + B/3 = 60 → B = 45
        assert!((budget_for_minutes(&[1.0, 3.0], 1, 1.0) - 45.0).abs() < 1e-9);
        assert!((budget_for_minutes(&[1.0, 3.0], 3, 1.0) - 15.0).abs() < 1e-9);
    }
}
