//! Inference benchmark of the [`Engine`] (or of the reference path, for comparison): per batch
//! size, a batched prefill of random prompts then greedy batched decoding, with the weight bytes
//! and FLOPs of every decode step and the machine's measured read bandwidth and GEMM peak, so
//! that each row says how close it runs to the roofline `min(bandwidth / bytes, peak / FLOPs)`
//! steps per second.

use super::{Engine, StepStats};
use crate::bench::expected_distinct;
use crate::decode::{forward_step_with, StepOptions};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::sampler::argmax;
use moe_kernels::bandwidth::{read_bandwidth_gbs, DEFAULT_BYTES};
use moe_kernels::peak::gemm_peak_gflops;
use moe_kernels::rng::Rng;
use moe_model::{FfnKind, Transformer};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The machine's ceilings, measured when the benchmark starts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// rayon threads
    pub threads: usize,
    /// streaming read bandwidth (GB/s, 10⁹ B/s) of a 1.25 GiB buffer with `threads` threads
    pub bandwidth_gbs: f64,
    /// f32 GEMM GFLOP/s (1024³ on the rayon pool, best of 3)
    pub peak_gflops: f64,
}

impl Machine {
    /// Measure this machine (takes about a second).
    pub fn measure() -> Self {
        let threads = rayon::current_num_threads();
        Machine { threads, bandwidth_gbs: read_bandwidth_gbs(DEFAULT_BYTES, threads), peak_gflops: gemm_peak_gflops(1024, 3) }
    }
}

/// One batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineBench {
    /// sequences decoded together
    pub batch: usize,
    /// tokens per prompt
    pub prompt_len: usize,
    /// timed decode steps
    pub n_decode: usize,
    /// batch·prompt_len / seconds of the batched prefill
    pub prefill_tokens_per_s: f64,
    /// batch·n_decode / seconds of decoding
    pub decode_tokens_per_s: f64,
    /// mean wall time of one decode step (ms): the per-token latency each sequence sees
    pub latency_ms: f64,
    /// mean weight bytes read per decode step (engine only)
    pub bytes_per_step: Option<f64>,
    /// mean FLOPs per decode step (engine only)
    pub flops_per_step: Option<f64>,
    /// bytes_per_step · steps / s, in GB/s
    pub achieved_gbs: Option<f64>,
    /// flops_per_step · steps / s, in GFLOP/s
    pub achieved_gflops: Option<f64>,
    /// achieved steps/s ÷ min(bandwidth / bytes, peak / FLOPs)
    pub roofline_fraction: Option<f64>,
    /// mean distinct experts per MoE layer and decode step (`None`: dense)
    pub distinct_experts: Option<f64>,
    /// `D(B) = n·(1 − (1 − k/n)^B)` averaged over MoE layers (`None`: dense)
    pub expected_distinct: Option<f64>,
}

/// Which forward the benchmark runs.
pub enum Runner<'a, 'm> {
    /// the fast engine
    Engine(&'a mut Engine<'m>),
    /// [`crate::decode::forward_step_with`] (the slow twin)
    Reference(&'m Transformer<f32>),
}

impl Runner<'_, '_> {
    fn model(&self) -> &Transformer<f32> {
        match self {
            Runner::Engine(e) => e.model(),
            Runner::Reference(m) => m,
        }
    }

    /// One step; the greedy next token of each sequence and, for the engine, the step's counters;
    /// the distinct experts per MoE layer.
    fn step(&mut self, caches: &mut [&mut KvCache<f32>], tokens: &[Vec<u32>]) -> Result<(Vec<u32>, Option<StepStats>, Vec<usize>)> {
        match self {
            Runner::Engine(e) => {
                let nv = e.model().cfg.n_vocab;
                let next = e.step(caches, tokens)?.chunks(nv).map(argmax).collect();
                let st = e.last_stats().clone();
                let distinct = st.distinct_experts();
                Ok((next, Some(st), distinct))
            }
            Runner::Reference(m) => {
                let out = forward_step_with(*m, caches, tokens, StepOptions { all_logits: false, routing: true })?;
                let next = out.logits.iter().map(|l| argmax(l)).collect();
                Ok((next, None, out.routing.iter().map(|r| r.distinct).collect()))
            }
        }
    }
}

/// For each batch size `B`: `B` random prompts of `prompt_len` tokens (deterministic in `seed`)
/// prefilled in one step, then `n_decode` greedy decode steps of all `B` sequences. One untimed
/// warm-up pass (prefill + 2 steps) first; then `reps` timed passes, the fastest prefill and the
/// fastest decode kept. Needs `prompt_len ≥ 1` and `prompt_len + n_decode ≤ n_ctx`.
pub fn bench_infer(
    runner: &mut Runner<'_, '_>,
    machine: &Machine,
    batch_sizes: &[usize],
    prompt_len: usize,
    n_decode: usize,
    reps: usize,
    seed: u64,
) -> Result<Vec<EngineBench>> {
    let cfg = runner.model().cfg.clone();
    if prompt_len == 0 || n_decode == 0 {
        return Err(Error::BadInput("bench: prompt_len and n_decode must be ≥ 1".into()));
    }
    if prompt_len + n_decode > cfg.n_ctx {
        return Err(Error::ContextOverflow { seq: 0, len: prompt_len, n_new: n_decode, n_ctx: cfg.n_ctx });
    }
    if batch_sizes.contains(&0) {
        return Err(Error::BadInput("bench: batch sizes must be ≥ 1".into()));
    }
    let moe_layers: Vec<usize> =
        cfg.ffn_kinds().iter().filter_map(|k| if let FfnKind::Moe { n_expert } = k { Some(*n_expert) } else { None }).collect();
    let top_k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_active);
    let mut out = Vec::with_capacity(batch_sizes.len());
    for &batch in batch_sizes {
        let mut rng = Rng::derive(seed, batch as u64);
        let prompts: Vec<Vec<u32>> = (0..batch).map(|_| (0..prompt_len).map(|_| rng.below(cfg.n_vocab as u64) as u32).collect()).collect();
        let mut caches: Vec<KvCache<f32>> = (0..batch).map(|_| KvCache::with_capacity(&cfg, prompt_len + n_decode)).collect();
        let (mut best_pre, mut best_dec) = (f64::INFINITY, f64::INFINITY);
        let (mut bytes, mut flops, mut distinct, mut n_distinct) = (0.0f64, 0.0f64, 0usize, 0usize);
        for rep in 0..=reps.max(1) {
            let warm = rep == 0;
            caches.iter_mut().for_each(|c| c.clear());
            let mut refs: Vec<&mut KvCache<f32>> = caches.iter_mut().collect();
            let t0 = Instant::now();
            let (first, _, _) = runner.step(&mut refs, &prompts)?;
            let pre = t0.elapsed().as_secs_f64();
            let mut next: Vec<Vec<u32>> = first.iter().map(|&t| vec![t]).collect();
            let steps = if warm { 2.min(n_decode) } else { n_decode };
            let (mut b_sum, mut f_sum, mut d_sum, mut d_n) = (0.0f64, 0.0f64, 0usize, 0usize);
            let t1 = Instant::now();
            for _ in 0..steps {
                let (nx, st, dist) = runner.step(&mut refs, &next)?;
                if let Some(st) = st {
                    b_sum += st.weight_bytes as f64;
                    f_sum += st.flops as f64;
                }
                d_sum += dist.iter().sum::<usize>();
                d_n += dist.len();
                for (v, t) in next.iter_mut().zip(nx) {
                    v[0] = t;
                }
            }
            let dec = t1.elapsed().as_secs_f64();
            if !warm {
                best_pre = best_pre.min(pre);
                if dec < best_dec {
                    best_dec = dec;
                    (bytes, flops, distinct, n_distinct) = (b_sum / steps as f64, f_sum / steps as f64, d_sum, d_n);
                }
            }
        }
        let steps_per_s = n_decode as f64 / best_dec.max(1e-12);
        let is_engine = matches!(runner, Runner::Engine(_));
        let roof = (bytes > 0.0).then(|| {
            let roof_steps = (machine.bandwidth_gbs * 1e9 / bytes).min(machine.peak_gflops * 1e9 / flops.max(1.0));
            steps_per_s / roof_steps
        });
        out.push(EngineBench {
            batch,
            prompt_len,
            n_decode,
            prefill_tokens_per_s: (batch * prompt_len) as f64 / best_pre.max(1e-12),
            decode_tokens_per_s: batch as f64 * steps_per_s,
            latency_ms: 1e3 / steps_per_s,
            bytes_per_step: is_engine.then_some(bytes),
            flops_per_step: is_engine.then_some(flops),
            achieved_gbs: is_engine.then(|| bytes * steps_per_s / 1e9),
            achieved_gflops: is_engine.then(|| flops * steps_per_s / 1e9),
            roofline_fraction: if is_engine { roof } else { None },
            distinct_experts: (n_distinct > 0).then(|| distinct as f64 / n_distinct as f64),
            expected_distinct: (!moe_layers.is_empty())
                .then(|| moe_layers.iter().map(|&n| expected_distinct(n, top_k, batch)).sum::<f64>() / moe_layers.len() as f64),
        });
    }
    Ok(out)
}
