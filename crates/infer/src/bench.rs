//! Decode throughput benchmark: batched prefill then greedy batched decoding of random prompts,
//! with the number of distinct experts each decode step touches.

use crate::decode::{forward_step_with, StepOptions};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::sampler::argmax;
use moe_kernels::rng::Rng;
use moe_kernels::Real;
use moe_model::{FfnKind, Transformer};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Result of one batch size in [`bench_decode`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeBench {
    /// sequences decoded together
    pub batch: usize,
    /// tokens per prompt
    pub prompt_len: usize,
    /// decode steps (one new token per sequence each)
    pub n_decode: usize,
    /// seconds of the (batched) prefill forward
    pub prefill_s: f64,
    /// seconds of all decode steps
    pub decode_s: f64,
    /// `batch · prompt_len / prefill_s`
    pub prefill_tokens_per_s: f64,
    /// `batch · n_decode / decode_s`
    pub decode_tokens_per_s: f64,
    /// mean wall time of one decode step, i.e. the per-token latency each sequence sees
    pub latency_ms_per_token: f64,
    /// mean over MoE layers and decode steps of the number of distinct experts the batch touched
    /// (`None` for a dense model)
    pub distinct_experts_per_step: Option<f64>,
    /// mean over MoE layers of `D(B) = n·(1 − (1 − k/n)^B)`, the expectation under uniform,
    /// independent routing (`None` for a dense model)
    pub expected_distinct_experts: Option<f64>,
}

/// `D(B) = n·(1 − (1 − k/n)^B)`: expected distinct experts touched by `batch` tokens each picking
/// `k` of `n` experts uniformly at random.
pub fn expected_distinct(n_expert: usize, k: usize, batch: usize) -> f64 {
    let n = n_expert as f64;
    n * (1.0 - (1.0 - k as f64 / n).powi(batch as i32))
}

/// For each batch size `B`: `B` random prompts of `prompt_len` tokens (deterministic in `seed`) are
/// prefilled in one batched forward, then decoded greedily for `n_decode` steps, all `B` sequences
/// per step. Needs `prompt_len ≥ 1` and `prompt_len + n_decode ≤ n_ctx`.
pub fn bench_decode<T: Real>(
    model: &Transformer<T>,
    batch_sizes: &[usize],
    prompt_len: usize,
    n_decode: usize,
    seed: u64,
) -> Result<Vec<DecodeBench>> {
    let cfg = &model.cfg;
    if prompt_len == 0 {
        return Err(Error::BadInput("bench_decode: prompt_len must be ≥ 1".into()));
    }
    if prompt_len + n_decode > cfg.n_ctx {
        return Err(Error::ContextOverflow { seq: 0, len: prompt_len, n_new: n_decode, n_ctx: cfg.n_ctx });
    }
    if let Some(&0) = batch_sizes.iter().find(|&&b| b == 0) {
        return Err(Error::BadInput("bench_decode: batch sizes must be ≥ 1".into()));
    }
    let moe_layers: Vec<usize> =
        cfg.ffn_kinds().iter().filter_map(|k| if let FfnKind::Moe { n_expert } = k { Some(*n_expert) } else { None }).collect();
    let top_k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_active);
    let mut out = Vec::with_capacity(batch_sizes.len());
    for &batch in batch_sizes {
        let mut rng = Rng::derive(seed, batch as u64);
        let prompts: Vec<Vec<u32>> = (0..batch).map(|_| (0..prompt_len).map(|_| rng.below(cfg.n_vocab as u64) as u32).collect()).collect();
        let mut caches: Vec<KvCache<T>> = (0..batch).map(|_| KvCache::with_capacity(cfg, prompt_len + n_decode)).collect();
        let mut refs: Vec<&mut KvCache<T>> = caches.iter_mut().collect();
        let t0 = Instant::now();
        let pre = forward_step_with(model, &mut refs, &prompts, StepOptions::default())?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut next: Vec<[u32; 1]> = pre.logits.iter().map(|l| [argmax(l)]).collect();
        let opts = StepOptions { all_logits: false, routing: !moe_layers.is_empty() };
        let mut distinct_sum = 0usize;
        let mut distinct_n = 0usize;
        let t1 = Instant::now();
        for _ in 0..n_decode {
            let step = forward_step_with(model, &mut refs, &next, opts)?;
            for r in &step.routing {
                distinct_sum += r.distinct;
                distinct_n += 1;
            }
            next = step.logits.iter().map(|l| [argmax(l)]).collect();
        }
        let decode_s = t1.elapsed().as_secs_f64();
        let has_moe = !moe_layers.is_empty();
        out.push(DecodeBench {
            batch,
            prompt_len,
            n_decode,
            prefill_s,
            decode_s,
            prefill_tokens_per_s: (batch * prompt_len) as f64 / prefill_s.max(1e-12),
            decode_tokens_per_s: (batch * n_decode) as f64 / decode_s.max(1e-12),
            latency_ms_per_token: 1e3 * decode_s / n_decode.max(1) as f64,
            distinct_experts_per_step: (has_moe && distinct_n > 0).then(|| distinct_sum as f64 / distinct_n as f64),
            expected_distinct_experts: has_moe
                .then(|| moe_layers.iter().map(|&n| expected_distinct(n, top_k, batch)).sum::<f64>() / moe_layers.len() as f64),
        });
    }
    Ok(out)
}
