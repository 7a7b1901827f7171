//! `moe plan`: the roofline model of a decode step, as a planning tool for machines we do not
//! have. Per batch size `B` (sequences decoding together, each with `context` tokens in its KV
//! cache) it predicts the time of one decode step from
//!
//! - **bytes** read per step and node: every non-expert weight matrix once (attention, dense
//!   FFNs, routers, shared experts, LM head; the embedding rows gathered are not counted, as in
//!   the engine's counters), the routed experts the step touches — expected distinct experts
//!   `D(B) = n·(1 − (1 − k/n)^B)` ([`moe_infer::expected_distinct`]) — and the KV cache of the
//!   node's sequences (`B · context · kv_per_token`, f32 cache for f32 weights, 2 bytes else);
//! - **FLOPs** per step and node: `B ×` the forward FLOPs per token of
//!   [`moe_model::accounting::account`] at the context length (2 × active matmul parameters +
//!   attention `4 · n_head · d_head · context` per layer);
//! - the hardware's read bandwidth, compute peak and memory ([`Hardware`]);
//! - on several nodes, the network: an MoE runs expert-parallel over `P` nodes (the experts
//!   sharded, the rest replicated, the batch split over the nodes) with an all-to-all of the
//!   token activations to their experts and back in every MoE layer, the exchange the MPI
//!   expert-parallel work performs: per node `2 · (B/N) · k · d_model · act_bytes · (P − 1)/P`
//!   bytes plus `2 ×` the network latency per layer; a dense model runs tensor-parallel over all
//!   `N` nodes with two ring all-reduces of `B · d_model · act_bytes` per layer
//!   (`2 (N − 1)/N` of it over the wire, `2 (N − 1)` latencies each).
//!
//! Step time = `max(bytes / bandwidth, FLOPs / peak) + network` (no overlap of communication and
//! computation is assumed). A hardware file measured by `moe plan --calibrate` also holds the
//! engine's own ceilings on that machine ([`EngineFit`]: the GEMV kernels' streaming rate and
//! arithmetic rate below the rows where the engine switches to GEMM, and the rows at which the GEMM
//! path reaches half the peak); then the non-expert products (at `B` rows) and the routed experts
//! (at `B·k/D(B)` rows per touched expert) each take the time their kernels need, summed; latency per token = step time; throughput = `B / step`; cost per
//! token = node-seconds per token = `N · step / B`. The network term is not calibrated yet: the
//! MPI expert-parallel runs it should be checked against do not exist at the time of writing.

use crate::error::{Error, Result};
use moe_infer::expected_distinct;
use moe_kernels::quant::WeightDtype;
use moe_model::accounting::account;
use moe_model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One machine (or one node of a cluster), as a hardware TOML file describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    /// short name
    pub name: String,
    /// where the figures come from (datasheets, or `moe plan --calibrate` with its date)
    pub source: String,
    /// per-field source notes (`bandwidth_gbs = "AMD EPYC 9654 spec: 12 × DDR5-4800 …"`)
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// streaming read bandwidth of the node, GB/s (10⁹ B/s)
    pub bandwidth_gbs: f64,
    /// dense f32 matmul peak of the node, GFLOP/s
    pub peak_gflops_f32: f64,
    /// dense bf16 matmul peak (default: the f32 peak)
    #[serde(default)]
    pub peak_gflops_bf16: Option<f64>,
    /// int8 matmul peak in GOP/s (default: the bf16 peak)
    #[serde(default)]
    pub peak_gops_int8: Option<f64>,
    /// memory for weights and KV cache per node, GB
    pub memory_gb: f64,
    /// network bandwidth per node and direction between nodes, GB/s
    #[serde(default)]
    pub network_gbs: Option<f64>,
    /// network latency per message, µs
    #[serde(default)]
    pub network_latency_us: Option<f64>,
    /// threads the measurement used (calibrated files)
    #[serde(default)]
    pub threads: Option<usize>,
    /// how this project's engine runs on the machine (`moe plan --calibrate`); without it the plan
    /// is the plain roofline of the bandwidth and peak above
    #[serde(default)]
    pub engine: Option<EngineFit>,
}

/// The engine's own ceilings on a machine, fitted by `moe plan --calibrate` from decode steps of a
/// dense model on the engine. A product of `W [n, k]` with `m` rows takes
/// `max(bytes / gemv_gbs, FLOPs / gemv_gflops)` below `gemv_max_rows` rows (the GEMV kernels) and
/// `max(bytes / bandwidth, FLOPs / (gemm_gflops · m / (m + gemm_half_rows)))` from there (the GEMM
/// path, which reaches half its rate at `gemm_half_rows` rows). For bf16/int8 weights the GEMM
/// rate scales with the file's peak for that format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFit {
    /// weight bytes per second the GEMV kernels stream at one row, GB/s (batch-1 decode)
    pub gemv_gbs: f64,
    /// FLOPs per second of the GEMV kernels when their arithmetic, not the stream, limits them
    pub gemv_gflops: f64,
    /// rows from which the engine uses the GEMM path
    pub gemv_max_rows: usize,
    /// the GEMM path's f32 rate at many rows, GFLOP/s
    pub gemm_gflops: f64,
    /// rows per product at which the GEMM path runs at half `gemm_gflops`
    pub gemm_half_rows: f64,
}

impl EngineFit {
    /// Seconds of products over `rows` rows each that read `bytes` and do `flops` in all.
    pub fn seconds(&self, hw: &Hardware, dtype: WeightDtype, bytes: f64, flops: f64, rows: f64) -> f64 {
        if rows < self.gemv_max_rows as f64 {
            (bytes / (self.gemv_gbs * 1e9)).max(flops / (self.gemv_gflops * 1e9))
        } else {
            let scale = hw.peak_gflops(dtype) / hw.peak_gflops_f32;
            let peak = self.gemm_gflops * scale * 1e9 * rows / (rows + self.gemm_half_rows);
            (bytes / (hw.bandwidth_gbs * 1e9)).max(flops / peak)
        }
    }
}

impl Hardware {
    /// Parse a hardware TOML; errors name the file and the field.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let hw: Hardware = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            field: "hardware".into(),
            reason: e.message().to_string() + &e.span().map(|s| format!(" (bytes {}..{})", s.start, s.end)).unwrap_or_default(),
        })?;
        hw.check(path)?;
        Ok(hw)
    }

    /// Read and parse a hardware TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path, "cannot read hardware file"))?;
        Self::parse(&text, path)
    }

    /// Every figure finite and > 0.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, v: f64| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::Config { path: path.to_path_buf(), field: field.into(), reason: format!("{v} must be a finite number > 0") })
            }
        };
        bad("bandwidth_gbs", self.bandwidth_gbs)?;
        bad("peak_gflops_f32", self.peak_gflops_f32)?;
        bad("memory_gb", self.memory_gb)?;
        if let Some(e) = &self.engine {
            bad("engine.gemv_gbs", e.gemv_gbs)?;
            bad("engine.gemv_gflops", e.gemv_gflops)?;
            bad("engine.gemm_gflops", e.gemm_gflops)?;
            if !(e.gemm_half_rows.is_finite() && e.gemm_half_rows >= 0.0) {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    field: "engine.gemm_half_rows".into(),
                    reason: format!("{} must be a finite number ≥ 0", e.gemm_half_rows),
                });
            }
        }
        for (f, v) in [
            ("peak_gflops_bf16", self.peak_gflops_bf16),
            ("peak_gops_int8", self.peak_gops_int8),
            ("network_gbs", self.network_gbs),
            ("network_latency_us", self.network_latency_us),
        ] {
            if let Some(v) = v {
                bad(f, v)?;
            }
        }
        Ok(())
    }

    /// TOML text of this file (round-trips through [`Hardware::parse`]).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("hardware serialises")
    }

    /// The compute peak for weights in `dtype` (GFLOP/s).
    pub fn peak_gflops(&self, dtype: WeightDtype) -> f64 {
        let bf16 = self.peak_gflops_bf16.unwrap_or(self.peak_gflops_f32);
        match dtype {
            WeightDtype::F32 => self.peak_gflops_f32,
            WeightDtype::Bf16 => bf16,
            WeightDtype::I8 | WeightDtype::Q4 | WeightDtype::Q4K => self.peak_gops_int8.unwrap_or(bf16),
        }
    }

    /// This machine, measured with [`moe_infer::Machine::measure`] (read bandwidth of a 1.25 GiB
    /// buffer and the f32 GEMM peak, on the rayon pool); `memory_gb` from `/proc/meminfo`.
    pub fn calibrate(date: &str) -> Self {
        Self::from_machine(&moe_infer::Machine::measure(), "this machine", &format!("measured by `moe plan --calibrate` on {date}"))
    }

    /// The hardware file of a measured [`moe_infer::Machine`]; `memory_gb` from `/proc/meminfo`
    /// (16 GB when unreadable), no network.
    pub fn from_machine(m: &moe_infer::Machine, name: &str, source: &str) -> Self {
        let memory_gb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok())
            })
            .map_or(16.0, |kb| kb * 1024.0 / 1e9);
        let mut sources = BTreeMap::new();
        sources.insert("bandwidth_gbs".into(), format!("{source}: streaming read of 1.25 GiB with {} threads", m.threads));
        sources.insert("peak_gflops_f32".into(), format!("{source}: f32 GEMM 1024³, best of 3"));
        sources.insert("memory_gb".into(), "MemTotal of /proc/meminfo".into());
        sources.insert(
            "engine".into(),
            "fitted by moe plan --calibrate from f32 decode steps of a random dense model (d_model 1024, 4 layers, vocabulary 32000, ≈ 380 MB) on the engine at four batch sizes (Hardware::fit_engine)".into(),
        );
        Hardware {
            name: name.into(),
            source: source.into(),
            sources,
            bandwidth_gbs: m.bandwidth_gbs,
            peak_gflops_f32: m.peak_gflops,
            peak_gflops_bf16: None,
            peak_gops_int8: None,
            memory_gb,
            network_gbs: None,
            network_latency_us: None,
            threads: Some(m.threads),
            engine: None,
        }
    }

    /// Fit [`EngineFit`] on this machine (≈ 10 s): a random dense model of ≈ 380 MB (d_model 1024, 4 layers, vocabulary 32000) decoded on the
    /// engine in f32 at batch 1 (→ `gemv_gbs`), at the most rows the GEMV kernels take, up to 16
    /// (→ `gemv_gflops`: compute-limited there), and on the GEMM path at the fewest rows it takes
    /// and at 16 × that (→ `gemm_gflops` and `gemm_half_rows` of `r · m / (m + h)` through both).
    pub fn fit_engine(&self) -> Result<EngineFit> {
        let mut cfg = crate::plan::base_experiment(crate::plan::Scale::Default).model;
        cfg = crate::deploy::scale_config(&cfg, 1024, 4, 16);
        // a vocabulary of the usual size: its head is a tall product, as in real checkpoints
        cfg.n_vocab = 32000;
        let model = moe_model::Transformer::<f32>::new(cfg, 7).map_err(|e| Error::Invalid(format!("calibration model: {e}")))?;
        let mut eng = moe_infer::Engine::new(&model, WeightDtype::F32).map_err(|e| Error::Invalid(format!("calibration engine: {e}")))?;
        let machine =
            moe_infer::Machine { threads: self.threads.unwrap_or(1), bandwidth_gbs: self.bandwidth_gbs, peak_gflops: self.peak_gflops_f32 };
        let max_rows = moe_infer::engine::linear::gemm_min_rows().max(2);
        let (lo, hi) = (max_rows.max(8), 16 * max_rows.max(8));
        let batches = [1usize, (max_rows - 1).clamp(1, 16), lo, hi];
        let rows = moe_infer::bench_infer(&mut moe_infer::Runner::Engine(&mut eng), &machine, &batches, 1, 8, 3, 1)?;
        let rate = |r: &moe_infer::EngineBench, f: Option<f64>| f.unwrap_or(f64::NAN) / (r.latency_ms / 1e3) / 1e9;
        let gemv_gbs = rate(&rows[0], rows[0].bytes_per_step);
        let gemv_gflops = rate(&rows[1], rows[1].flops_per_step);
        let (g_lo, g_hi) = (rate(&rows[2], rows[2].flops_per_step), rate(&rows[3], rows[3].flops_per_step));
        // g = r · m / (m + h) at m = lo and hi: g_lo (lo + h) / lo = g_hi (hi + h) / hi
        let (l, h) = (lo as f64, hi as f64);
        let gemm_half_rows = ((g_hi - g_lo) / (g_lo / l - g_hi / h)).max(0.0);
        let gemm_gflops = g_hi * (h + gemm_half_rows) / h;
        let fit = EngineFit { gemv_gbs, gemv_gflops, gemv_max_rows: max_rows, gemm_gflops, gemm_half_rows };
        if [fit.gemv_gbs, fit.gemv_gflops, fit.gemm_gflops, fit.gemm_half_rows].iter().any(|v| !v.is_finite()) || fit.gemm_gflops <= 0.0 {
            return Err(Error::Invalid(format!("calibration gave an unusable figure: {fit:?}")));
        }
        Ok(fit)
    }
}

/// What a decode step of a model reads and computes, per token and per expert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepShape {
    /// weight-matrix parameters every step reads once (non-routed parts of every block + head)
    pub shared_params: f64,
    /// per MoE layer: (routed experts n, top-k, parameters of one routed expert)
    pub moe_layers: Vec<(usize, usize, f64)>,
    /// parameters held in memory but not read per step (embedding table when untied, norms)
    pub resident_only_params: f64,
    /// all parameters
    pub params_total: f64,
    /// KV-cache elements per token of context, all layers
    pub kv_per_token: f64,
    /// forward FLOPs per token at the context length
    pub flops_per_token: f64,
    /// routed-expert FLOPs per token (part of `flops_per_token`)
    pub expert_flops_per_token: f64,
    /// layers
    pub n_layer: usize,
    /// hidden size
    pub d_model: usize,
    /// of `shared_params`, those the 4-bit engines keep in int8 (1 byte per weight): the LM head,
    /// and a MoE model's k and v projections (`moe_infer::EngineWeights`)
    #[serde(default)]
    pub int8_in_4bit_params: f64,
}

impl StepShape {
    /// Bytes per step of the shared matrices with weights in `dtype`.
    fn shared_bytes(&self, dtype: WeightDtype) -> f64 {
        match dtype {
            WeightDtype::Q4 | WeightDtype::Q4K => {
                weight_bytes(dtype) * (self.shared_params - self.int8_in_4bit_params) + self.int8_in_4bit_params
            }
            _ => weight_bytes(dtype) * self.shared_params,
        }
    }

    /// Of `cfg` with `context` tokens of KV cache per sequence.
    pub fn of(cfg: &ModelConfig, context: usize) -> Self {
        let acc = account(cfg, context);
        let k = cfg.moe.as_ref().map_or(1, |m| m.n_expert_active);
        let d = cfg.d_model as f64;
        let head = cfg.n_vocab as f64 * d;
        let mut shared = head;
        let mut moe_layers = Vec::new();
        let mut expert_flops = 0.0;
        for l in &acc.layers {
            let (tot, act) = (l.params_total as f64, l.params_active as f64);
            if l.n_expert > k {
                let n = l.n_expert as f64;
                let routed = (tot - act) * n / (n - k as f64);
                let per_expert = routed / n;
                shared += tot - routed;
                moe_layers.push((l.n_expert, k, per_expert));
                expert_flops += 2.0 * k as f64 * per_expert;
            } else {
                shared += tot;
            }
        }
        let kv_layer = match cfg.attn_ext.as_ref().and_then(|a| a.mla.as_ref()) {
            Some(m) => (m.kv_lora_rank + m.d_rope) as f64,
            None => 2.0 * (cfg.n_head_kv * cfg.d_head()) as f64,
        };
        let params_total = acc.params_total as f64;
        let read = shared + moe_layers.iter().map(|(n, _, p)| *n as f64 * p).sum::<f64>();
        let plain_attn = cfg.attn_ext.as_ref().and_then(|a| a.mla.as_ref()).is_none();
        let kv_proj =
            if cfg.moe.is_some() && plain_attn { 2.0 * (cfg.n_head_kv * cfg.d_head()) as f64 * d * cfg.n_layer as f64 } else { 0.0 };
        StepShape {
            shared_params: shared,
            moe_layers,
            resident_only_params: (params_total - read).max(0.0),
            params_total,
            kv_per_token: kv_layer * cfg.n_layer as f64,
            flops_per_token: acc.flops_fwd,
            expert_flops_per_token: expert_flops,
            n_layer: cfg.n_layer,
            d_model: cfg.d_model,
            int8_in_4bit_params: head + kv_proj,
        }
    }
}

/// How a plan runs on several nodes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// nodes
    pub nodes: usize,
    /// expert-parallel degree of an MoE (nodes sharing one copy of the experts); ignored for a
    /// dense model, which runs tensor-parallel over all nodes
    pub expert_parallel: usize,
}

/// The prediction at one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// sequences decoding together (all nodes)
    pub batch: usize,
    /// nodes
    pub nodes: usize,
    /// expert-parallel degree used (1 for dense or one node)
    pub expert_parallel: usize,
    /// distinct experts touched per MoE layer and node (None: dense)
    pub distinct_experts: Option<f64>,
    /// bytes read per step and node
    pub bytes_per_step: f64,
    /// FLOPs per step and node
    pub flops_per_step: f64,
    /// network bytes sent per step and node
    pub network_bytes: f64,
    /// bytes / bandwidth (s)
    pub t_memory_s: f64,
    /// FLOPs / peak (s)
    pub t_compute_s: f64,
    /// network time per step (s)
    pub t_network_s: f64,
    /// predicted step time = per-token latency (ms)
    pub latency_ms: f64,
    /// tokens/s over all nodes
    pub tokens_per_s: f64,
    /// node-seconds per million tokens
    pub node_s_per_mtok: f64,
    /// weights + KV cache per node (GB)
    pub memory_gb: f64,
    /// fits in the node's memory
    pub fits: bool,
    /// `"memory"`, `"compute"` or `"network"`: the largest term
    pub bound: String,
}

/// Bytes per weight of `dtype`.
pub fn weight_bytes(dtype: WeightDtype) -> f64 {
    match dtype {
        WeightDtype::F32 => 4.0,
        WeightDtype::Bf16 => 2.0,
        WeightDtype::I8 => 1.0,
        // 18 bytes per block of 32
        WeightDtype::Q4 => 18.0 / 32.0,
        // 144 bytes per super-block of 256
        WeightDtype::Q4K => 144.0 / 256.0,
    }
}

/// Bytes per KV-cache and activation element: 4 with f32 weights (the engine's cache), else 2.
pub fn act_bytes(dtype: WeightDtype) -> f64 {
    if dtype == WeightDtype::F32 {
        4.0
    } else {
        2.0
    }
}

/// Predict one decode step of `shape` at `batch` on `hw` with weights in `dtype`.
pub fn predict(shape: &StepShape, hw: &Hardware, dtype: WeightDtype, batch: usize, context: usize, layout: Layout) -> Result<Prediction> {
    let n = layout.nodes.max(1);
    let is_moe = !shape.moe_layers.is_empty();
    let p = if is_moe { layout.expert_parallel.clamp(1, n) } else { 1 };
    if is_moe && !n.is_multiple_of(p) {
        return Err(Error::Option { option: "--expert-parallel".into(), reason: format!("{p} must divide --nodes {n}") });
    }
    if n > 1 && (hw.network_gbs.is_none() || hw.network_latency_us.is_none()) {
        return Err(Error::Config {
            path: hw.name.clone().into(),
            field: "network_gbs".into(),
            reason: "several nodes need network_gbs and network_latency_us in the hardware file".into(),
        });
    }
    let (w, a) = (weight_bytes(dtype), act_bytes(dtype));
    let b = batch as f64;
    let (net_bw, lat) = (hw.network_gbs.unwrap_or(1.0) * 1e9, hw.network_latency_us.unwrap_or(0.0) * 1e-6);
    let d = shape.d_model as f64;
    let kv = |seqs: f64| a * seqs * context as f64 * shape.kv_per_token;
    // (bytes, FLOPs, rows per product) of the non-expert products and of the routed experts
    let mut parts: [(f64, f64, f64); 2] = [(0.0, 0.0, 1.0), (0.0, 0.0, 1.0)];
    let (bytes, flops, net_bytes, t_net, mem, distinct) = if is_moe {
        // groups of p nodes each serve b·p/n sequences with the experts sharded p ways
        let groups = (n / p) as f64;
        let b_node = b / n as f64;
        let b_group = b / groups;
        let mut expert_bytes = 0.0;
        let mut expert_resident = 0.0;
        let mut dist_sum = 0.0;
        let mut rows_sum = 0.0;
        for &(ne, k, per) in &shape.moe_layers {
            let local = ne as f64 / p as f64;
            // each expert is touched with probability D(B)/n; this node holds n/p of them
            let dist = expected_distinct(ne, k, b_group.round().max(1.0) as usize);
            let dd = dist / p as f64;
            dist_sum += dd;
            rows_sum += b_group * k as f64 / dist;
            expert_bytes += w * dd * per;
            expert_resident += w * local * per;
        }
        let shared_flops = b_node * (shape.flops_per_token - shape.expert_flops_per_token);
        let expert_flops = b_group * shape.expert_flops_per_token / p as f64;
        let bytes = shape.shared_bytes(dtype) + expert_bytes + kv(b_node);
        let flops = shared_flops + expert_flops;
        let k = shape.moe_layers[0].1 as f64;
        let nl = shape.moe_layers.len() as f64;
        parts = [(bytes - expert_bytes, shared_flops, b_node), (expert_bytes, expert_flops, rows_sum / nl)];
        let per_layer = 2.0 * b_node * k * d * a * (p as f64 - 1.0) / p as f64;
        let (nb, tn) = if p > 1 { (nl * per_layer, nl * (2.0 * lat + per_layer / net_bw)) } else { (0.0, 0.0) };
        let mem = shape.shared_bytes(dtype) + w * shape.resident_only_params + expert_resident + kv(b_node);
        (bytes, flops, nb, tn, mem, Some(dist_sum / nl))
    } else {
        let nf = n as f64;
        let bytes = (shape.shared_bytes(dtype) + kv(b)) / nf;
        let flops = b * shape.flops_per_token / nf;
        parts[0] = (bytes, flops, b);
        let size = b * d * a;
        let per_allreduce = 2.0 * (nf - 1.0) / nf * size;
        let layers = shape.n_layer as f64;
        let (nb, tn) = if n > 1 {
            (2.0 * layers * per_allreduce, 2.0 * layers * (2.0 * (nf - 1.0) * lat + per_allreduce / net_bw))
        } else {
            (0.0, 0.0)
        };
        let mem = (shape.shared_bytes(dtype) + w * shape.resident_only_params + kv(b)) / nf;
        (bytes, flops, nb, tn, mem, None)
    };
    let t_mem = bytes / (hw.bandwidth_gbs * 1e9);
    let t_comp = flops / (hw.peak_gflops(dtype) * 1e9);
    // the engine's own ceilings, when the hardware file has them: each part at its rows per product
    let step = match &hw.engine {
        Some(e) => {
            parts.iter().filter(|x| x.0 > 0.0 || x.1 > 0.0).map(|&(by, fl, rows)| e.seconds(hw, dtype, by, fl, rows)).sum::<f64>() + t_net
        }
        None => t_mem.max(t_comp) + t_net,
    };
    let bound = if t_net > t_mem.max(t_comp) {
        "network"
    } else if t_comp > t_mem {
        "compute"
    } else {
        "memory"
    };
    Ok(Prediction {
        batch,
        nodes: n,
        expert_parallel: p,
        distinct_experts: distinct,
        bytes_per_step: bytes,
        flops_per_step: flops,
        network_bytes: net_bytes,
        t_memory_s: t_mem,
        t_compute_s: t_comp,
        t_network_s: t_net,
        latency_ms: step * 1e3,
        tokens_per_s: b / step,
        node_s_per_mtok: n as f64 * step / b * 1e6,
        memory_gb: mem / 1e9,
        fits: mem / 1e9 <= hw.memory_gb,
        bound: bound.into(),
    })
}

/// The smallest batch from which on `a` costs less per token than `b` (or fits where `b` does
/// not), or `None`. Batches where neither fits in memory are left out: no one runs them.
pub fn crossover(a: &[Prediction], b: &[Prediction]) -> Option<usize> {
    let wins: Vec<(usize, bool)> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.fits || y.fits)
        .map(|(x, y)| (x.batch, x.fits && (!y.fits || x.node_s_per_mtok < y.node_s_per_mtok)))
        .collect();
    (0..wins.len()).find(|&i| wins[i..].iter().all(|w| w.1)).map(|i| wins[i].0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_model::MoeConfig;

    fn tiny(moe: bool) -> ModelConfig {
        let mut c = crate::plan::base_experiment(crate::plan::Scale::Tiny).model;
        c.n_vocab = 100;
        c.n_layer = 2;
        c.d_model = 16;
        c.n_head = 2;
        c.n_head_kv = 1;
        c.d_head = None;
        c.d_ff = 32;
        c.tie_embeddings = false;
        c.moe = None;
        if moe {
            let base = crate::plan::moe_twin(&c, 4, 2);
            c = ModelConfig { moe: Some(MoeConfig { d_expert: 8, ..base.moe.unwrap() }), ..c };
        }
        c
    }

    fn hw() -> Hardware {
        Hardware {
            name: "t".into(),
            source: "test".into(),
            sources: BTreeMap::new(),
            bandwidth_gbs: 10.0,
            peak_gflops_f32: 100.0,
            peak_gflops_bf16: None,
            peak_gops_int8: None,
            memory_gb: 1.0,
            network_gbs: Some(1.0),
            network_latency_us: Some(10.0),
            threads: None,
            engine: None,
        }
    }

    #[test]
    fn plan_engine_fit_by_hand() {
        let fit = EngineFit { gemv_gbs: 5.0, gemv_gflops: 2.0, gemv_max_rows: 8, gemm_gflops: 100.0, gemm_half_rows: 8.0 };
        let h = Hardware { engine: Some(fit), ..hw() };
        // dense: one part, at B rows
        let s = StepShape::of(&tiny(false), 10);
        let plain = |b: usize| predict(&s, &hw(), WeightDtype::F32, b, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
        for (b, gemv) in [(3usize, true), (16, false)] {
            let q = predict(&s, &h, WeightDtype::F32, b, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
            let p = plain(b);
            assert_eq!((q.bytes_per_step, q.flops_per_step), (p.bytes_per_step, p.flops_per_step));
            let want = if gemv {
                (p.bytes_per_step / 5e9).max(p.flops_per_step / 2e9)
            } else {
                (p.bytes_per_step / 10e9).max(p.flops_per_step / (100e9 * 16.0 / 24.0))
            };
            assert!((q.latency_ms - want * 1e3).abs() < 1e-12, "batch {b}: {} vs {}", q.latency_ms, want * 1e3);
        }
        // MoE at batch 4: non-expert products at 4 rows, experts at 4·2/D(4) = 8/3.75 rows, summed
        let s = StepShape::of(&tiny(true), 10);
        let q = predict(&s, &h, WeightDtype::F32, 4, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
        let expert_bytes = 4.0 * 2.0 * 3.75 * 384.0;
        let expert_flops = 4.0 * s.expert_flops_per_token;
        let shared = ((q.bytes_per_step - expert_bytes) / 5e9).max((q.flops_per_step - expert_flops) / 2e9);
        let experts = (expert_bytes / 5e9).max(expert_flops / 2e9);
        assert!((q.latency_ms - (shared + experts) * 1e3).abs() < 1e-12, "{} vs {}", q.latency_ms, (shared + experts) * 1e3);
        // the file round-trips with its engine table; a bad figure is named
        let p = Path::new("hw.toml");
        assert_eq!(Hardware::parse(&h.to_toml(), p).unwrap(), h);
        let e = Hardware::parse(&h.to_toml().replace("gemv_gbs = 5.0", "gemv_gbs = 0.0"), p).unwrap_err().to_string();
        assert!(e.contains("engine.gemv_gbs"), "{e}");
    }

    /// Hand count: d 16, 2 layers, 2 heads (d_head 8), 1 KV head, vocab 100, d_ff 32 SwiGLU.
    /// attention per layer: wq 16·16 + wk 8·16 + wv 8·16 + wo 16·16 = 768 matmul weights;
    /// FFN 3·16·32 = 1536; norms 2·16 per layer + final 16; head 100·16 = 1600 (read per step);
    /// embedding 1600 (resident only).
    #[test]
    fn plan_dense_bytes_and_flops_by_hand() {
        let s = StepShape::of(&tiny(false), 10);
        assert_eq!(s.int8_in_4bit_params, 1600.0, "a dense model's k and v stay 4-bit");
        let matmul = 2.0 * (768.0 + 1536.0) + 1600.0;
        // norms are counted with the blocks' parameters (2·16 per layer)
        assert!((s.shared_params - (matmul + 64.0)).abs() < 1e-9, "{}", s.shared_params);
        assert_eq!(s.kv_per_token, 2.0 * 2.0 * 8.0);
        let flops_tok = 2.0 * matmul + 2.0 * 4.0 * 16.0 * 10.0;
        assert!((s.flops_per_token - flops_tok).abs() < 1e-6, "{} vs {flops_tok}", s.flops_per_token);
        let p = predict(&s, &hw(), WeightDtype::F32, 3, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
        let bytes = 4.0 * (matmul + 64.0) + 4.0 * 3.0 * 10.0 * 32.0;
        assert!((p.bytes_per_step - bytes).abs() < 1e-6, "{} vs {bytes}", p.bytes_per_step);
        assert!((p.flops_per_step - 3.0 * flops_tok).abs() < 1e-6);
        let step = (bytes / 10e9).max(3.0 * flops_tok / 100e9);
        assert!((p.latency_ms - step * 1e3).abs() < 1e-12 && (p.tokens_per_s - 3.0 / step).abs() < 1e-6 * p.tokens_per_s);
        assert_eq!(p.bound, "memory");
        // two nodes, tensor-parallel: half the bytes, two all-reduces of 3·16·4 B per layer
        let q = predict(&s, &hw(), WeightDtype::F32, 3, 10, Layout { nodes: 2, expert_parallel: 1 }).unwrap();
        assert!((q.bytes_per_step - bytes / 2.0).abs() < 1e-6);
        let ar = 2.0 * 0.5 * 3.0 * 16.0 * 4.0;
        assert!((q.network_bytes - 2.0 * 2.0 * ar).abs() < 1e-9, "{}", q.network_bytes);
        let tn = 2.0 * 2.0 * (2.0 * 10e-6 + ar / 1e9);
        assert!((q.t_network_s - tn).abs() < 1e-15, "{} vs {tn}", q.t_network_s);
        assert!((q.node_s_per_mtok - 2.0 * (q.latency_ms / 1e3) / 3.0 * 1e6).abs() < 1e-6);
    }

    /// MoE twin: 4 experts top-2 of d_expert 8 (3·16·8 = 384 weights each) + router 4·16.
    #[test]
    fn plan_moe_bytes_flops_and_all_to_all_by_hand() {
        let s = StepShape::of(&tiny(true), 10);
        assert_eq!(s.moe_layers, vec![(4, 2, 384.0), (4, 2, 384.0)]);
        let shared = 2.0 * (768.0 + 64.0 + 32.0) + 1600.0;
        assert!((s.shared_params - shared).abs() < 1e-9, "{}", s.shared_params);
        assert!((s.expert_flops_per_token - 2.0 * 2.0 * 2.0 * 384.0).abs() < 1e-9);
        // batch 1 on one node: D(1) = k = 2 experts per layer
        let p = predict(&s, &hw(), WeightDtype::Bf16, 1, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
        assert!((p.distinct_experts.unwrap() - 2.0).abs() < 1e-12);
        let bytes = 2.0 * shared + 2.0 * 2.0 * 2.0 * 384.0 + 2.0 * 10.0 * 32.0;
        assert!((p.bytes_per_step - bytes).abs() < 1e-6, "{} vs {bytes}", p.bytes_per_step);
        // q4 (18 bytes per 32 weights), but the LM head (1600) and k, v (2 layers × 2 × 8·16) int8
        let int8 = 1600.0 + 2.0 * 2.0 * 8.0 * 16.0;
        assert_eq!(s.int8_in_4bit_params, int8);
        let p = predict(&s, &hw(), WeightDtype::Q4, 1, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
        let q4 = 18.0 / 32.0;
        let bytes = q4 * (shared - int8) + int8 + q4 * 2.0 * 2.0 * 384.0 + 2.0 * 10.0 * 32.0;
        assert!((p.bytes_per_step - bytes).abs() < 1e-6, "{} vs {bytes}", p.bytes_per_step);
        // batch 4: D(4) = 4·(1 − 0.5⁴) = 3.75
        let p = predict(&s, &hw(), WeightDtype::Bf16, 4, 10, Layout { nodes: 1, expert_parallel: 1 }).unwrap();
        assert!((p.distinct_experts.unwrap() - 3.75).abs() < 1e-12);
        // 2 nodes expert-parallel, batch 4: each node 2 experts, D = 2·(1 − 0.5⁴) = 1.875; its
        // 2 sequences send 2·2·16·2 B × ½ remote each way per layer
        let q = predict(&s, &hw(), WeightDtype::Bf16, 4, 10, Layout { nodes: 2, expert_parallel: 2 }).unwrap();
        assert!((q.distinct_experts.unwrap() - 1.875).abs() < 1e-12);
        let per_layer = 2.0 * 2.0 * 2.0 * 16.0 * 2.0 * 0.5;
        assert!((q.network_bytes - 2.0 * per_layer).abs() < 1e-9, "{}", q.network_bytes);
        let bytes = 2.0 * shared + 2.0 * 2.0 * 1.875 * 384.0 + 2.0 * 2.0 * 10.0 * 32.0;
        assert!((q.bytes_per_step - bytes).abs() < 1e-6, "{} vs {bytes}", q.bytes_per_step);
        let flops = 2.0 * (s.flops_per_token - s.expert_flops_per_token) + 4.0 * s.expert_flops_per_token / 2.0;
        assert!((q.flops_per_step - flops).abs() < 1e-6);
        assert!(predict(&s, &hw(), WeightDtype::Bf16, 4, 10, Layout { nodes: 3, expert_parallel: 2 }).is_err());
        let mut no_net = hw();
        no_net.network_gbs = None;
        let e = predict(&s, &no_net, WeightDtype::Bf16, 4, 10, Layout { nodes: 2, expert_parallel: 2 }).unwrap_err().to_string();
        assert!(e.contains("network_gbs"), "{e}");
    }

    #[test]
    fn plan_hardware_file_round_trips_and_bad_fields_are_named() {
        let mut h = hw();
        h.sources.insert("bandwidth_gbs".into(), "measured".into());
        let p = Path::new("hw.toml");
        assert_eq!(Hardware::parse(&h.to_toml(), p).unwrap(), h);
        let e = Hardware::parse(&h.to_toml().replace("bandwidth_gbs = 10.0", "bandwidth_gbs = -1.0"), p).unwrap_err().to_string();
        assert!(e.contains("hw.toml") && e.contains("bandwidth_gbs"), "{e}");
        let e = Hardware::parse(
            "name = \"x\"\nsource = \"y\"\nbandwidth_gbs = 1.0\npeak_gflops_f32 = 1.0\nmemory_gb = 1.0\nbandwith = 2.0\n",
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hw.toml") && e.contains("bandwith"), "{e}");
        let e = Hardware::parse("name = \"x\"\nsource = \"y\"\npeak_gflops_f32 = 1.0\nmemory_gb = 1.0\n", p).unwrap_err().to_string();
        assert!(e.contains("bandwidth_gbs"), "{e}");
        let e = Hardware::parse(&h.to_toml().replace("peak_gflops_f32 = 100.0", "peak_gflops_f32 = nan"), p).unwrap_err().to_string();
        assert!(e.contains("peak_gflops_f32"), "{e}");
    }

    #[test]
    fn plan_crossover_is_the_first_batch_from_which_on_a_wins() {
        let mk = |b: usize, c: f64, fits: bool| Prediction {
            batch: b,
            nodes: 1,
            expert_parallel: 1,
            distinct_experts: None,
            bytes_per_step: 0.0,
            flops_per_step: 0.0,
            network_bytes: 0.0,
            t_memory_s: 0.0,
            t_compute_s: 0.0,
            t_network_s: 0.0,
            latency_ms: 0.0,
            tokens_per_s: 0.0,
            node_s_per_mtok: c,
            memory_gb: 0.0,
            fits,
            bound: "memory".into(),
        };
        let a = vec![mk(1, 5.0, true), mk(8, 3.0, true), mk(64, 1.0, true)];
        let b = vec![mk(1, 4.0, true), mk(8, 3.5, true), mk(64, 2.0, true)];
        assert_eq!(crossover(&a, &b), Some(8));
        let nan = vec![mk(1, f64::NAN, true), mk(8, f64::NAN, true), mk(64, f64::NAN, true)];
        assert_eq!(crossover(&nan, &b), None);
        // a batch neither model fits is no one's loss; one only `a` fits is a win
        let a = vec![mk(1, 5.0, true), mk(8, 3.0, true), mk(64, 1.0, false)];
        let b = vec![mk(1, 4.0, true), mk(8, 3.5, false), mk(64, 2.0, false)];
        assert_eq!(crossover(&a, &b), Some(8));
        let b = vec![mk(1, 6.0, true), mk(8, 3.5, true), mk(64, 2.0, false)];
        assert_eq!(crossover(&a, &b), Some(1));
        let a = vec![mk(1, 5.0, true), mk(8, 3.0, false), mk(64, 1.0, false)];
        assert_eq!(crossover(&a, &b), None, "b fits at 8 where a does not");
    }
}
