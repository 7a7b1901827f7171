//! Deployment scale: the compared architectures **scaled up** (random weights) until their weights
//! are many times the last-level cache, so that decoding is memory-bound at small batch as it is
//! in deployment, and the seeds' three latency claims can show:
//!
//! 1. an MoE's batch-1 latency is close to the dense model with its **active** parameters
//!    (goal: MoE ÷ dense-active ≤ 1.2);
//! 2. and far below the dense model with its **total** parameters (goal: dense-total ÷ MoE ≥ 2);
//! 3. with batch size the MoE touches more experts — expected distinct experts per layer
//!    `D(B) = n·(1 − (1 − k/n)^B)` — and its step reads more bytes, until compute dominates: the
//!    measured throughput curve is set beside the bytes-and-FLOPs roofline of [`crate::roofline`]
//!    for this machine (measured bandwidth and GEMM peak), and every batch where the measurement is
//!    more than 15 % off the model is named with the reason.
//!
//! Sizing ([`deploy_size`]): `d_model` 1024 (heads of 64), the trained models' shapes scaled by
//! `1024 / d_model` (FFN and expert widths, heads; expert counts, top-k and layer pattern kept),
//! and as many layers as make the MoE's f32 weights about 100 × the last-level cache (read from
//! sysfs; 32 MiB when unknown), between 512 MB and 4 GB, so that batch-1 decoding streams from
//! DRAM yet the whole measurement takes a few minutes. Decoding is measured on the fast engine as
//! the trained models are ([`crate::decode::decode_interleaved`]): prompts of one token, a few timed
//! steps, models interleaved over rounds; ratios are medians of per-round paired ratios.

use crate::decode::{decode_interleaved, DecodeRow, DecodeSetup, Spread};
use crate::error::{Error, Result};
use crate::plan::{widen_to_total, ModelPlan, Role, Scale};
use crate::roofline::{predict, Hardware, Layout, Prediction, StepShape};
use moe_infer::Machine;
use moe_kernels::quant::WeightDtype;
use moe_model::accounting::account;
use moe_model::{ModelConfig, Transformer};
use serde::{Deserialize, Serialize};

/// How far (relative) a measured throughput may be from the roofline before the report names it.
pub const ROOFLINE_TOLERANCE: f64 = 0.15;

/// The measurement's shape at a scale: d_model, batch sizes, prompt tokens, timed steps, rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployShape {
    /// width of the scaled models
    pub d_model: usize,
    /// layers of the scaled models
    pub n_layer: usize,
    /// batch sizes of the throughput curve
    pub batches: Vec<usize>,
    /// tokens per prompt
    pub prompt_len: usize,
    /// timed decode steps per round
    pub n_decode: usize,
    /// interleaved rounds
    pub rounds: usize,
    /// last-level cache the size was chosen from (bytes; `None`: unknown, 32 MiB assumed)
    pub llc_bytes: Option<u64>,
    /// how the size was chosen, in words
    pub why: String,
}

/// Size of the last-level cache of CPU 0 from sysfs (`/sys/devices/system/cpu/cpu0/cache`).
pub fn llc_bytes() -> Option<u64> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut best: Option<(u32, u64)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok().map(|s| s.trim().to_string());
        let (Some(level), Some(size)) = (read("level").and_then(|l| l.parse::<u32>().ok()), read("size")) else { continue };
        if read("type").is_some_and(|t| t == "Instruction") {
            continue;
        }
        let bytes = match size.strip_suffix('K') {
            Some(k) => k.parse::<u64>().ok().map(|v| v << 10),
            None => match size.strip_suffix('M') {
                Some(m) => m.parse::<u64>().ok().map(|v| v << 20),
                None => size.parse::<u64>().ok(),
            },
        };
        if let Some(b) = bytes {
            if best.is_none_or(|(l, _)| level > l) {
                best = Some((level, b));
            }
        }
    }
    best.map(|(_, b)| b)
}

/// f32 weight bytes of `cfg` (every parameter).
fn f32_bytes(cfg: &ModelConfig) -> f64 {
    4.0 * account(cfg, 1).params_total as f64
}

/// `cfg` at width `d_model` and `n_layer` layers: FFN/expert widths and heads scaled by
/// `d_model / cfg.d_model` (heads of 64 where the width allows), the rest kept; `n_ctx` as given.
pub fn scale_config(cfg: &ModelConfig, d_model: usize, n_layer: usize, n_ctx: usize) -> ModelConfig {
    let f = d_model as f64 / cfg.d_model as f64;
    let widen = |w: usize| ((w as f64 * f / 8.0).round() as usize).max(1) * 8;
    let mut c = cfg.clone();
    c.d_model = d_model;
    c.n_layer = n_layer;
    c.n_ctx = n_ctx;
    c.d_ff = widen(cfg.d_ff);
    let n_head = (d_model / 64).max(1);
    let kv_share = cfg.n_head_kv as f64 / cfg.n_head.max(1) as f64;
    c.n_head = n_head;
    c.n_head_kv = ((n_head as f64 * kv_share).round() as usize).clamp(1, n_head);
    while !n_head.is_multiple_of(c.n_head_kv) {
        c.n_head_kv -= 1;
    }
    c.d_head = None;
    if let Some(m) = c.moe.as_mut() {
        m.d_expert = widen(m.d_expert);
        m.d_expert_shared = m.d_expert_shared.map(widen);
        if !m.n_expert_per_layer.is_empty() {
            m.n_expert_per_layer = (0..n_layer).map(|l| m.n_expert_per_layer[l % m.n_expert_per_layer.len()]).collect();
        }
    }
    c
}

/// The measurement's shape: at `Scale::Tiny` a fixed small one (tests); at the default scale
/// `d_model` 1024 and layers for ≈ 100 × the last-level cache of MoE weights (see the module docs).
pub fn deploy_size(scale: Scale, moe: &ModelConfig, llc: Option<u64>) -> DeployShape {
    match scale {
        Scale::Tiny => DeployShape {
            d_model: 64,
            n_layer: 2,
            batches: vec![1, 4],
            prompt_len: 1,
            n_decode: 2,
            rounds: 2,
            llc_bytes: llc,
            why: "tiny scale (tests): d_model 64, 2 layers".into(),
        },
        Scale::Default => {
            let d_model = 1024;
            let cache = llc.unwrap_or(32 << 20) as f64;
            let target = (100.0 * cache).clamp(512e6, 4e9);
            let per_layer = f32_bytes(&scale_config(moe, d_model, 2, 64)) - f32_bytes(&scale_config(moe, d_model, 1, 64));
            let n_layer = ((target / per_layer).ceil() as usize).clamp(2, 48);
            let bytes = f32_bytes(&scale_config(moe, d_model, n_layer, 64));
            DeployShape {
                d_model,
                n_layer,
                batches: vec![1, 4, 16, 64, 256],
                prompt_len: 1,
                n_decode: 4,
                rounds: 3,
                llc_bytes: llc,
                why: format!(
                    "d_model {d_model}, {n_layer} layers: the MoE's f32 weights are {:.0} MB, {:.0} × the {} last-level cache{} (target ≈ 100 ×, between 512 MB and 4 GB)",
                    bytes / 1e6,
                    bytes / cache,
                    crate::results::fmt_bytes(cache),
                    if llc.is_none() { " (unknown: 32 MiB assumed)" } else { "" }
                ),
            }
        }
    }
}

/// A paired ratio between two models over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// what is divided by what
    pub what: String,
    /// median (min–max) over rounds of the per-round ratio
    pub ratio: Spread,
    /// the seed's goal, in words (`≤ 1.2`)
    pub goal: String,
    /// whether the median meets the goal
    pub met: bool,
}

/// One scaled model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployModel {
    /// `<trained model>` name
    pub name: String,
    /// what it stands for
    pub role: Role,
    /// architecture in words
    pub description: String,
    /// parameters
    pub params_total: u64,
    /// parameters a token uses
    pub params_active: u64,
    /// f32 weight bytes
    pub weight_bytes: f64,
    /// `(experts, top-k)` of its MoE layers (`None`: dense)
    pub experts: Option<(usize, usize)>,
    /// measured rows (one per batch size)
    pub rows: Vec<DecodeRow>,
    /// the roofline's prediction for each row
    pub predicted: Vec<Prediction>,
}

/// What [`deploy`] measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployResult {
    /// sizes and schedule
    pub shape: DeployShape,
    /// engine, format, machine, rounds
    pub setup: DecodeSetup,
    /// the hardware the roofline used (this machine, as measured)
    pub hardware: Hardware,
    /// dense (active), each MoE, dense (total)
    pub models: Vec<DeployModel>,
    /// the seeds' claims at batch 1, per MoE
    pub claims: Vec<Claim>,
    /// per model and batch: measured ÷ roofline throughput, and why when off by more than 15 %
    pub roofline: Vec<String>,
    /// per MoE and batch size: MoE throughput ÷ dense-active and ÷ dense-total (paired medians)
    pub batching: Vec<String>,
    /// seconds spent
    pub seconds: f64,
}

/// The scaled models: dense with the active parameters, every MoE, dense with the first MoE's
/// total parameters (`d_ff` widened).
pub fn deploy_configs(plans: &[ModelPlan], shape: &DeployShape) -> Result<Vec<(String, Role, ModelConfig)>> {
    let n_ctx = (shape.prompt_len + shape.n_decode + 2).max(8);
    let dense = plans.iter().find(|p| p.role == Role::Dense).ok_or_else(|| Error::Invalid("deployment scale: no dense model".into()))?;
    let dense_cfg = scale_config(&dense.cfg.model, shape.d_model, shape.n_layer, n_ctx);
    let mut out = vec![(dense.name.clone(), Role::Dense, dense_cfg.clone())];
    for p in plans.iter().filter(|p| p.role == Role::Moe) {
        out.push((p.name.clone(), Role::Moe, scale_config(&p.cfg.model, shape.d_model, shape.n_layer, n_ctx)));
    }
    let Some(first_moe) = out.get(1).map(|m| m.2.clone()) else {
        return Err(Error::Invalid("deployment scale: no MoE model".into()));
    };
    let wide = widen_to_total(&dense_cfg, account(&first_moe, 1).params_total);
    out.push((format!("{}-total", dense.name), Role::DenseWide, wide));
    for (name, _, c) in &out {
        c.validate().map_err(|e| Error::Invalid(format!("deployment-scale {name}: {e}")))?;
    }
    Ok(out)
}

/// Per-round ratio `num / den` of a statistic of two rows measured in the same rounds.
fn paired(num: &DecodeRow, den: &DecodeRow, f: fn(&moe_infer::EngineBench) -> f64) -> Spread {
    let v: Vec<f64> = num.rounds.iter().zip(&den.rounds).map(|(a, b)| f(a) / f(b)).collect();
    Spread::of(&v)
}

/// Build the scaled models of `plans`, measure them on the engine in `dtype` and set the roofline
/// beside them. `progress` prints a line per phase on stderr.
pub fn deploy(plans: &[ModelPlan], scale: Scale, dtype: WeightDtype, machine: Machine, seed: u64, progress: bool) -> Result<DeployResult> {
    let t0 = std::time::Instant::now();
    let moe = plans.iter().find(|p| p.role == Role::Moe).ok_or_else(|| Error::Invalid("deployment scale: no MoE model".into()))?;
    let shape = deploy_size(scale, &moe.cfg.model, llc_bytes());
    let cfgs = deploy_configs(plans, &shape)?;
    if progress {
        eprintln!("deployment scale: {}; building {} models with random weights", shape.why, cfgs.len());
    }
    let mut models = Vec::with_capacity(cfgs.len());
    for (i, (name, _, c)) in cfgs.iter().enumerate() {
        models.push(
            Transformer::<f32>::new(c.clone(), seed ^ (0xdeb1 + i as u64))
                .map_err(|e| Error::Invalid(format!("deployment-scale {name}: {e}")))?,
        );
    }
    if progress {
        eprintln!(
            "deployment scale: decoding at batch {:?} ({}), {} models interleaved, {} rounds",
            shape.batches,
            dtype.name(),
            models.len(),
            shape.rounds
        );
    }
    let named: Vec<(&str, &Transformer<f32>)> = cfgs.iter().map(|c| c.0.as_str()).zip(models.iter()).collect();
    let (setup, rows) =
        decode_interleaved(&named, &[dtype], &shape.batches, shape.prompt_len, shape.n_decode, shape.rounds, seed, machine)?;
    drop(named);
    drop(models);
    // no bf16/int8 peaks: `peak_gflops` falls back to the measured f32 peak for them
    let hardware = Hardware::from_machine(&machine, "this machine", "measured at the start of this comparison");
    let context = setup.prompt_len + setup.n_decode / 2;
    let mut out_models = Vec::with_capacity(cfgs.len());
    for ((name, role, cfg), rows) in cfgs.into_iter().zip(rows) {
        let step = StepShape::of(&cfg, context);
        let predicted = rows
            .iter()
            .map(|r| predict(&step, &hardware, dtype, r.batch, context, Layout { nodes: 1, expert_parallel: 1 }))
            .collect::<Result<Vec<_>>>()?;
        let acc = account(&cfg, 1);
        out_models.push(DeployModel {
            name: format!("{name} (scaled)"),
            role,
            description: describe(&cfg),
            params_total: acc.params_total,
            params_active: acc.params_active,
            weight_bytes: 4.0 * acc.params_total as f64,
            experts: cfg.moe.as_ref().map(|m| (m.n_expert, m.n_expert_active)),
            rows,
            predicted,
        });
    }
    let claims = claims(&out_models);
    let roofline = roofline_lines(&out_models, &machine);
    let batching = batching_lines(&out_models);
    Ok(DeployResult { shape, setup, hardware, models: out_models, claims, roofline, batching, seconds: t0.elapsed().as_secs_f64() })
}

fn describe(c: &ModelConfig) -> String {
    let base = format!("d_model {}, {} layers, {} heads ({} kv)", c.d_model, c.n_layer, c.n_head, c.n_head_kv);
    match &c.moe {
        Some(m) => format!("{base}, {} experts top-{} of width {}", m.n_expert, m.n_expert_active, m.d_expert),
        None => format!("{base}, dense FFN {}", c.d_ff),
    }
}

fn at(m: &DeployModel, b: usize) -> Option<&DecodeRow> {
    m.rows.iter().find(|r| r.batch == b)
}

/// The two batch-1 claims for every MoE.
pub fn claims(models: &[DeployModel]) -> Vec<Claim> {
    let find = |r: Role| models.iter().find(|m| m.role == r);
    let (Some(dense), Some(total)) = (find(Role::Dense), find(Role::DenseWide)) else { return Vec::new() };
    let (Some(d1), Some(t1)) = (at(dense, 1), at(total, 1)) else { return Vec::new() };
    let mut out = Vec::new();
    for m in models.iter().filter(|m| m.role == Role::Moe) {
        let Some(m1) = at(m, 1) else { continue };
        let a = paired(m1, d1, |r| r.latency_ms);
        out.push(Claim {
            what: format!("{} ÷ {} batch-1 latency (MoE vs dense with its active parameters)", m.name, dense.name),
            met: a.median <= 1.2,
            ratio: a,
            goal: "≤ 1.2".into(),
        });
        let b = paired(t1, m1, |r| r.latency_ms);
        out.push(Claim {
            what: format!("{} ÷ {} batch-1 latency (dense with the MoE's total parameters vs MoE)", total.name, m.name),
            met: b.median >= 2.0,
            ratio: b,
            goal: "≥ 2".into(),
        });
    }
    out
}

/// Measured ÷ predicted throughput for every model and batch; the rows off by more than
/// [`ROOFLINE_TOLERANCE`] with the reason.
pub fn roofline_lines(models: &[DeployModel], machine: &Machine) -> Vec<String> {
    let mut lines = Vec::new();
    for m in models {
        for (r, p) in m.rows.iter().zip(&m.predicted) {
            let frac = r.tokens_per_s.median / p.tokens_per_s;
            if (frac - 1.0).abs() <= ROOFLINE_TOLERANCE {
                continue;
            }
            let step_s = r.latency_ms.median / 1e3;
            let why = match p.bound.as_str() {
                "memory" => {
                    let gbs = r.bytes_per_step.unwrap_or(p.bytes_per_step) / step_s / 1e9;
                    let gf = r.flops_per_step.unwrap_or(p.flops_per_step) / step_s / 1e9;
                    format!(
                        "memory-bound in the model; the engine streamed {gbs:.1} GB/s of the measured {:.1} GB/s ({:.0} %){}",
                        machine.bandwidth_gbs,
                        100.0 * gbs / machine.bandwidth_gbs,
                        if r.batch == 1 {
                            ": at batch 1 the fixed per-step work (attention, norms, router, thread hand-offs per matrix) adds to the weight stream".to_string()
                        } else {
                            format!(
                                " at {gf:.0} GFLOP/s: with this few rows per matrix{} the engine's GEMV kernels are limited by their arithmetic rate (≈ 20 GFLOP/s on AVX2, `examples/crossover.rs`) before the weight stream",
                                if m.role == Role::Moe { " (B·k/D(B) per touched expert)" } else { "" }
                            )
                        }
                    )
                }
                _ => {
                    let gf = r.flops_per_step.unwrap_or(p.flops_per_step) / step_s / 1e9;
                    format!(
                        "compute-bound in the model; the engine ran {gf:.0} GFLOP/s of the measured {:.0} GFLOP/s GEMM peak ({:.0} %){}",
                        machine.peak_gflops,
                        100.0 * gf / machine.peak_gflops,
                        if m.role == Role::Moe {
                            ": each expert's GEMM has only its B·k/n routed rows, far from the 1024³ GEMM the peak is measured on"
                        } else {
                            ": a B-row GEMM against the 1024³ GEMM the peak is measured on"
                        }
                    )
                }
            };
            lines.push(format!("{} @batch {}: {:.2} × the roofline — {why}.", m.name, r.batch, frac));
        }
    }
    lines
}

/// Per MoE and batch: throughput ÷ dense-active and ÷ dense-total, paired over rounds.
pub fn batching_lines(models: &[DeployModel]) -> Vec<String> {
    let find = |r: Role| models.iter().find(|m| m.role == r);
    let (Some(dense), Some(total)) = (find(Role::Dense), find(Role::DenseWide)) else { return Vec::new() };
    let mut lines = Vec::new();
    for m in models.iter().filter(|m| m.role == Role::Moe) {
        for r in &m.rows {
            let (Some(d), Some(t)) = (at(dense, r.batch), at(total, r.batch)) else { continue };
            let a = paired(r, d, |x| x.decode_tokens_per_s);
            let b = paired(r, t, |x| x.decode_tokens_per_s);
            lines.push(format!(
                "batch {}: {} tokens/s = {:.2}× {} ({:.2}–{:.2}) and {:.2}× {} ({:.2}–{:.2}); {} distinct experts per layer and step (D(B) = {})",
                r.batch,
                m.name,
                a.median,
                dense.name,
                a.min,
                a.max,
                b.median,
                total.name,
                b.min,
                b.max,
                r.distinct_experts.map_or("–".into(), |v| format!("{v:.1}")),
                r.expected_distinct.map_or("–".into(), |v| format!("{v:.1}"))
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{base_experiment, default_trio};

    #[test]
    fn deploy_scaled_trio_keeps_the_matching() {
        let trio = default_trio(&base_experiment(Scale::Default));
        let shape = deploy_size(Scale::Default, &trio[1].cfg.model, Some(8 << 20));
        assert_eq!(shape.d_model, 1024);
        let cfgs = deploy_configs(&trio, &shape).unwrap();
        let names: Vec<&str> = cfgs.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["dense", "moe-8x2", "dense-total"]);
        let acc: Vec<_> = cfgs.iter().map(|c| account(&c.2, 1)).collect();
        // active parameters: the dense FFN equals k experts; the router is the only difference
        let router = (8 * 1024 * shape.n_layer) as u64;
        assert_eq!(acc[1].params_active, acc[0].params_active + router);
        // total: within one step of 8 FFN columns
        assert!(acc[2].params_total.abs_diff(acc[1].params_total) <= (3 * 8 * 1024 * shape.n_layer) as u64);
        // ≈ 100 × an 8 MiB cache of MoE weights, at least 512 MB
        let bytes = 4.0 * acc[1].params_total as f64;
        assert!((512e6..1.2e9).contains(&bytes), "{bytes}");
        assert!(bytes >= 60.0 * (8 << 20) as f64, "{bytes}");
        let c = &cfgs[1].2;
        assert_eq!((c.n_head, c.n_head_kv, c.d_head()), (16, 8, 64));
        assert_eq!(c.moe.as_ref().unwrap().d_expert, 2048);
    }

    #[test]
    fn deploy_llc_reads_a_size_or_none() {
        // whatever the machine, a size found is a plausible cache
        if let Some(b) = llc_bytes() {
            assert!((64 << 10..=4 << 30).contains(&b), "{b}");
        }
    }
}
