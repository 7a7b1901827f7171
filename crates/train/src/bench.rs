//! `moe bench train`: training throughput of a config's model against this machine's f32 GEMM peak
//! measured in the same run (the ratio is the number to compare across machines).

use crate::config::ExperimentConfig;
use crate::error::Result;
use crate::optimizer::{AdamW, AdamWConfig};
use crate::trainer::train_step;
use moe_data::Batch;
use moe_kernels::rng::Rng;
use moe_model::accounting::account;
use moe_model::Transformer;
use serde::Serialize;
use std::time::Instant;

/// Result of [`bench_train`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    /// rayon threads
    pub threads: usize,
    /// timed steps
    pub steps: usize,
    /// tokens per optimizer step
    pub tokens_per_step: usize,
    /// all parameters
    pub params_total: u64,
    /// parameters per token
    pub params_active: u64,
    /// mean seconds per step (forward + backward + AdamW)
    pub step_s: f64,
    /// training tokens per second
    pub tokens_per_s: f64,
    /// model FLOPs (accounting's training FLOPs per token × tokens) per second / 1e9
    pub gflops: f64,
    /// best-of-3 GFLOP/s of a 2048³ f32 matmul, measured just before
    pub gemm_peak_gflops: f64,
}

/// Time `steps` training steps ([`train_step`]: forward, backward, clipping, AdamW, bias update;
/// after one warm-up step) on random tokens.
pub fn bench_train(cfg: &ExperimentConfig, steps: usize) -> Result<TrainBench> {
    let t = &cfg.train;
    let (b, s) = (t.batch_size, t.seq_len);
    let n = b * s * t.grad_accum.max(1);
    let mut model: Transformer = Transformer::new(cfg.model.clone(), t.seed)?;
    let mut opt = AdamW::new(&model.table, AdamWConfig::from_train(t));
    let mut rng = Rng::new(t.seed);
    let v = cfg.model.n_vocab as u64;
    let micro: Vec<Batch> = (0..t.grad_accum.max(1))
        .map(|_| {
            let tokens: Vec<u32> = (0..b * s + 1).map(|_| rng.below(v) as u32).collect();
            Batch { inputs: tokens[..b * s].to_vec(), targets: tokens[1..].to_vec(), batch_size: b, seq_len: s }
        })
        .collect();
    let mut grads = vec![0.0f32; model.params.len()];
    let gemm_peak_gflops = moe_kernels::peak::gemm_peak_gflops(2048, 3);
    // a small learning rate keeps the random-token model from drifting far during the timing
    let step = |model: &mut Transformer, opt: &mut AdamW, grads: &mut Vec<f32>| -> Result<()> {
        train_step(model, opt, grads, &micro, t.lr * 0.1)?;
        Ok(())
    };
    step(&mut model, &mut opt, &mut grads)?; // warm-up
    let steps = steps.max(1);
    let t0 = Instant::now();
    for _ in 0..steps {
        step(&mut model, &mut opt, &mut grads)?;
    }
    let step_s = t0.elapsed().as_secs_f64() / steps as f64;
    let acc = account(&cfg.model, s);
    let tokens_per_s = n as f64 / step_s;
    Ok(TrainBench {
        threads: rayon::current_num_threads(),
        steps,
        tokens_per_step: n,
        params_total: acc.params_total,
        params_active: acc.params_active,
        step_s,
        tokens_per_s,
        gflops: acc.flops_train * tokens_per_s / 1e9,
        gemm_peak_gflops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_experiment;

    #[test]
    fn bench_train_reports_consistent_numbers() {
        let text = "[model]\nn_vocab = 256\nn_ctx = 8\nn_layer = 1\nd_model = 16\nn_head = 2\nn_head_kv = 1\nd_ff = 16\n[model.moe]\nn_expert = 2\nn_expert_active = 1\nd_expert = 8\nbias_update_rate = 0.01\n[train]\nbatch_size = 2\nseq_len = 8\ngrad_accum = 2\n";
        let (cfg, _) = parse_experiment(text, std::path::Path::new("b.toml"), &[]).unwrap();
        let r = bench_train(&cfg, 2).unwrap();
        assert_eq!((r.steps, r.tokens_per_step), (2, 32));
        assert!(r.step_s > 0.0 && r.tokens_per_s > 0.0 && r.gflops > 0.0 && r.gemm_peak_gflops > 0.0);
    }
}
