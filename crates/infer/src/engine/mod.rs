//! The fast inference engine, shared by dense and MoE models: a batch of sequences, each with its
//! own [`KvCache`], prefill and decode in the same call, sequences joining and leaving between
//! calls (every cache is independent; pass whichever sequences take part in a step).
//!
//! [`Engine::step`] computes what [`crate::decode::forward_step`] computes (the slow twin, kept
//! as the reference and compared in `tests/engine.rs`), faster:
//!
//! * weights converted once to the chosen [`WeightDtype`] (f32, bf16, int8 per-row), q/k/v stacked
//!   and gate/up interleaved ([`weights`]) so each is one pass over memory;
//! * skinny products (decode) through the GEMV kernels, which stream each weight once for all
//!   rows, and wide products (prefill) through the `gemm` crate ([`linear`]);
//! * MoE: counting sort of the assignments by expert, each touched expert run once over its
//!   tokens, gate/up/SiLU fused, one parallel domain over (expert × output tile) per projection
//!   ([`ffn`], [`moe`]);
//! * decode attention as plain dot products over the cache, one task per (sequence, KV head)
//!   ([`attention`]);
//! * the inference-only attention of imported models (`attn_ext`): the reference path's
//!   projection post-processing (`attention_ext::finish_qkv`: biases, q/k norms, partial /
//!   interleaved / scaled RoPE, NoPE temperature, L2 norms) on the engine's products, windows,
//!   chunks and sinks as masks of the same attention ([`attention::AttnDims`]), an output bias, and
//!   latent attention in the absorbed form over the compressed cache ([`mla`]);
//! * every activation buffer kept in the engine (or per thread) and reused once the largest batch
//!   has been seen; what is still allocated per step is bookkeeping of a few words per layer (task
//!   lists, per-group inputs) and, for bf16 weights, the rearranged copy of `x` per product.
//!
//! Each step also counts the weight bytes it read and the FLOPs it did ([`StepStats`]), for the
//! roofline report of `moe bench infer`.

pub mod attention;
pub mod bench;
pub mod ffn;
pub mod generate;
pub mod linear;
pub mod mla;
pub mod moe;
pub mod quality;
pub mod weights;

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use attention::{cached_attention, AttnDims};
use ffn::{grouped_mlp_forward, FfnScratch, Group};
use linear::linear;
use moe::{moe_forward, MoeScratch};
use moe_kernels::embedding::embedding_forward;
use moe_kernels::gemv::Kernel;
use moe_kernels::norm::rmsnorm_forward;
use moe_kernels::quant::{WeightDtype, WeightsRef};
use moe_model::layers::attention::{qk_norm_forward, qkv_bias_forward};
use moe_model::layers::attention_ext::{self, LayerSpec, Rope};
use moe_model::{MoeConfig, Transformer};
use weights::{EngineWeights, FfnWeights, MlpWeights};

/// What one [`Engine::step`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepStats {
    /// new tokens processed (all sequences)
    pub n_tok: usize,
    /// bytes of weight matrices read: every matrix used once, only the experts the step touched
    /// (with their biases, if any; other vectors — norms, attention, router and selection biases —
    /// and the embedding rows gathered are not counted)
    pub weight_bytes: u64,
    /// multiply-add FLOPs (2 per multiply-add) of the matrix products and attention
    pub flops: u64,
    /// per MoE layer in order: assignments per expert `[n_expert]`
    pub expert_counts: Vec<Vec<usize>>,
}

impl StepStats {
    fn clear(&mut self) {
        self.n_tok = 0;
        self.weight_bytes = 0;
        self.flops = 0;
        self.expert_counts.clear();
    }

    /// One product `[m, k] · [n, k]ᵀ` reading `bytes` of weights.
    pub(crate) fn add_matmul(&mut self, m: usize, n: usize, k: usize, bytes: usize) {
        self.flops += 2 * (m * n * k) as u64;
        self.weight_bytes += bytes as u64;
    }

    /// One MLP over `m` rows.
    pub(crate) fn add_mlp(&mut self, mlp: &MlpWeights, m: usize, d_model: usize) {
        self.flops += 2 * (m * d_model * (mlp.gate_up.n() + mlp.d_ff)) as u64;
        self.weight_bytes += mlp.bytes() as u64;
    }

    pub(crate) fn record_routing(&mut self, counts: &[usize]) {
        self.expert_counts.push(counts.to_vec());
    }

    /// Distinct experts touched, per MoE layer.
    pub fn distinct_experts(&self) -> Vec<usize> {
        self.expert_counts.iter().map(|c| c.iter().filter(|&&n| n > 0).count()).collect()
    }
}

/// `out [ids.len(), k]` = rows `ids` of the embedding `w [n_vocab, k]` (f32 or bf16), as f32.
fn gather_rows(out: &mut [f32], w: WeightsRef<'_>, ids: &[u32]) {
    let k = w.k();
    for (o, &id) in out.chunks_mut(k).zip(ids) {
        let r = id as usize * k..(id as usize + 1) * k;
        match w {
            WeightsRef::F32 { w, .. } => o.copy_from_slice(&w[r]),
            WeightsRef::Bf16 { bits, .. } => o.iter_mut().zip(&bits[r]).for_each(|(x, &b)| *x = f32::from_bits((b as u32) << 16)),
            WeightsRef::I8 { q, scale, .. } => o.iter_mut().zip(&q[r]).for_each(|(x, &v)| *x = v as f32 * scale[id as usize]),
            WeightsRef::Q4 { .. } | WeightsRef::Q4K { .. } => w.rows(id as usize, id as usize + 1).dequantize_into(o),
        }
    }
}

/// Activation buffers, reused across steps.
#[derive(Default, Debug)]
struct Scratch {
    flat: Vec<u32>,
    positions: Vec<usize>,
    offs: Vec<usize>,
    len0: Vec<usize>,
    x: Vec<f32>,    // [n_tok, d_model]
    h: Vec<f32>,    // [n_tok, d_model]
    rstd: Vec<f32>, // [n_tok]
    qkv: Vec<f32>,  // [n_tok, n_head·d_head + 2·n_head_kv·d_head] (latent attention: [n_tok, wqkv rows])
    q: Vec<f32>,    // [n_tok, n_head·d_head]
    k: Vec<f32>,    // [n_tok, n_head_kv·d_head]
    v: Vec<f32>,    // [n_tok, n_head_kv·d_head]
    o: Vec<f32>,    // [n_tok, n_head·d_head_v]
    qa: Vec<f32>,   // latent attention: [n_tok, q_lora_rank or n_head·d_head]
    lat: Vec<f32>,  // latent attention: [n_tok, kv_lora_rank + d_rope]
    qf: Vec<f32>,   // latent attention: absorbed queries [n_tok, n_head, kv_lora_rank + d_rope]
    ol: Vec<f32>,   // latent attention: weighted latent rows [n_tok, n_head, kv_lora_rank]
    a: Vec<f32>,    // [n_tok, d_model]
    rows: Vec<usize>,
    xs: Vec<f32>,     // [n_out, d_model]
    xf: Vec<f32>,     // [n_out, d_model]
    logits: Vec<f32>, // [n_out, n_vocab]
    tasks: Vec<(usize, usize)>,
    ffn: FfnScratch,
    moe: MoeScratch,
}

/// Per-layer settings of the inference-only attention (`attn_ext`), resolved once.
struct ExtAttn {
    /// the model's RoPE (partial, interleaved, scaled)
    rope: Rope,
    /// per layer: shapes, scale, window, chunk
    dims: Vec<AttnDims>,
    /// per layer: sink logits `[n_head]` (empty = none)
    sinks: Vec<Vec<f32>>,
}

impl ExtAttn {
    fn new(model: &Transformer<f32>) -> Option<Self> {
        let cfg = &model.cfg;
        cfg.attn_ext.as_ref()?;
        let specs: Vec<LayerSpec<f32>> =
            model.layout.blocks.iter().enumerate().map(|(i, b)| LayerSpec::new(&model.params, &b.attn, cfg, i)).collect();
        Some(ExtAttn {
            rope: Rope::new(cfg),
            dims: specs
                .iter()
                .map(|l| AttnDims {
                    n_head: l.n_head,
                    n_head_kv: l.n_head_kv,
                    d_head: l.d_head,
                    scale: l.scale,
                    window: l.window,
                    chunk: l.chunk,
                })
                .collect(),
            sinks: specs.into_iter().map(|l| l.sinks).collect(),
        })
    }
}

/// The fast engine over a borrowed model (its norms, embedding, RoPE tables and selection biases
/// are read in place; its matrices are converted once).
pub struct Engine<'m> {
    model: &'m Transformer<f32>,
    w: EngineWeights,
    dropless: Option<MoeConfig>,
    ext: Option<ExtAttn>,
    kernel: Kernel,
    s: Scratch,
    stats: StepStats,
    /// expert-parallel serving: the ranks sharing the experts (see [`Engine::with_expert_parallel`])
    ep: Option<std::sync::Arc<dyn moe_dist::Comm>>,
}

impl<'m> Engine<'m> {
    /// An engine for `model` with every matrix stored as `dtype` (the MoE router stays f32), on
    /// the exact GEMV kernels (activations stay f32). Every architecture the model crate loads
    /// runs here, the inference-only attention (`attn_ext`: latent attention, sinks, sliding
    /// windows, chunked or NoPE layers; [`attention`], [`mla`]) and MoE variants (`moe.ext`:
    /// grouped, biased or input-scaled routing, biased or clamped experts; [`moe`], [`ffn`])
    /// included.
    pub fn new(model: &'m Transformer<f32>, dtype: WeightDtype) -> Result<Self> {
        Self::with_kernel(model, dtype, Kernel::Auto)
    }

    /// [`Engine::new`] with an explicit GEMV kernel: [`Kernel::Avx512Vnni`] (int8 weights: the
    /// activations are quantised to int8 per row, as llama.cpp's q8_0 does) or
    /// [`Kernel::Avx512Bf16Dot`] (bf16 weights: activations rounded to bf16) trade accuracy for
    /// speed; other formats fall back to the exact kernel. Errors when this CPU lacks the kernel.
    pub fn with_kernel(model: &'m Transformer<f32>, dtype: WeightDtype, kernel: Kernel) -> Result<Self> {
        Self::check(model, kernel)?;
        if model.stored.taken() > 0 {
            return Err(Error::BadInput(
                "this model's matrices were already moved into another engine (`EngineWeights::new_taking`)".into(),
            ));
        }
        Self::with_weights(model, EngineWeights::new(model, dtype), kernel)
    }

    /// An engine over `model` with matrices converted beforehand, e.g. by
    /// [`EngineWeights::new_taking`], which releases a kept bf16 checkpoint's matrices as it goes.
    pub fn with_weights(model: &'m Transformer<f32>, w: EngineWeights, kernel: Kernel) -> Result<Self> {
        Self::check(model, kernel)?;
        let dropless = model.cfg.moe.clone().map(|mut m| {
            m.capacity_factor = 0.0;
            m
        });
        Ok(Engine { model, w, dropless, ext: ExtAttn::new(model), kernel, s: Scratch::default(), stats: StepStats::default(), ep: None })
    }

    /// Expert-parallel decoding: this engine's model holds rank `comm.rank()`'s share of every
    /// MoE layer's experts (`Transformer::shard` over `comm`), every rank steps the same batch
    /// with the same caches, and each MoE layer sums the ranks' contributions with one all-reduce.
    /// Every [`Engine::step`] is then collective over `comm`.
    pub fn with_expert_parallel(mut self, comm: std::sync::Arc<dyn moe_dist::Comm>) -> Result<Self> {
        for (i, b) in self.model.layout.blocks.iter().enumerate() {
            if let moe_model::params::FfnLayout::Moe(l) = &b.ffn {
                if l.n_local * comm.size() != l.n_expert || l.first_expert != comm.rank() * l.n_local {
                    return Err(Error::BadInput(format!(
                        "layer {i}: this model holds experts {}..{} of {}, not rank {}'s share of {} ranks; shard it over the same ranks",
                        l.first_expert,
                        l.first_expert + l.n_local,
                        l.n_expert,
                        comm.rank(),
                        comm.size()
                    )));
                }
            }
        }
        self.ep = Some(comm);
        Ok(self)
    }

    fn check(model: &Transformer<f32>, kernel: Kernel) -> Result<()> {
        if !kernel.available() {
            return Err(Error::BadInput(format!("the {} GEMV kernel is not supported by this CPU", kernel.name())));
        }
        // NaN/Inf weights would be quantised to garbage (or panic in int8): refuse, naming the tensor
        for e in &model.table.entries {
            if let Some((i, v)) = model.params.get(e.range()).and_then(moe_kernels::quant::non_finite_at) {
                return Err(Error::BadInput(format!("weight `{}` has a non-finite value {v} at element {i}", e.name)));
            }
        }
        Ok(())
    }

    /// The GEMV kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The model this engine runs.
    pub fn model(&self) -> &'m Transformer<f32> {
        self.model
    }

    /// Storage format of the matrices.
    pub fn dtype(&self) -> WeightDtype {
        self.w.dtype
    }

    /// The converted weights.
    pub fn weights(&self) -> &EngineWeights {
        &self.w
    }

    /// What the last step did.
    pub fn last_stats(&self) -> &StepStats {
        &self.stats
    }

    /// Append `tokens[i]` to sequence `i` (cache `caches[i]`) and return the logits of each
    /// sequence's last new token, `[n_seq, n_vocab]` (valid until the next call).
    ///
    /// Errors (leaving every cache unchanged) as [`crate::decode::forward_step`].
    pub fn step<S: AsRef<[u32]>>(&mut self, caches: &mut [&mut KvCache<f32>], tokens: &[S]) -> Result<&[f32]> {
        self.forward(caches, tokens, false)
    }

    /// [`Engine::step`] returning the logits of every new position, `[n_tok, n_vocab]` in
    /// sequence order.
    pub fn step_all_logits<S: AsRef<[u32]>>(&mut self, caches: &mut [&mut KvCache<f32>], tokens: &[S]) -> Result<&[f32]> {
        self.forward(caches, tokens, true)
    }

    fn forward<S: AsRef<[u32]>>(&mut self, caches: &mut [&mut KvCache<f32>], tokens: &[S], all_logits: bool) -> Result<&[f32]> {
        let model = self.model;
        let cfg = &model.cfg;
        crate::decode::validate(cfg, caches, tokens)?;
        for (c, t) in caches.iter_mut().zip(tokens) {
            c.reserve(t.as_ref().len())?;
        }
        let p = &model.params;
        let d = cfg.d_model;
        let (n_head, n_kv, dh) = (cfg.n_head, cfg.n_head_kv, cfg.d_head());
        let (dq, dkv) = (n_head * dh, n_kv * dh);
        let plain = AttnDims::plain(n_head, n_kv, dh);
        let dov = n_head * cfg.d_head_v();
        let eps = cfg.norm_eps;
        let kernel = self.kernel;
        let ext = self.ext.as_ref();
        let s = &mut self.s;
        let st = &mut self.stats;
        st.clear();

        s.flat.clear();
        s.positions.clear();
        s.offs.clear();
        s.offs.push(0);
        s.len0.clear();
        for (c, t) in caches.iter().zip(tokens) {
            let t = t.as_ref();
            s.flat.extend_from_slice(t);
            s.positions.extend(c.len()..c.len() + t.len());
            s.offs.push(s.flat.len());
            s.len0.push(c.len());
        }
        let n = s.flat.len();
        st.n_tok = n;
        for (buf, w) in [
            (&mut s.x, d),
            (&mut s.h, d),
            (&mut s.a, d),
            (&mut s.q, dq),
            (&mut s.o, dov),
            (&mut s.k, dkv),
            (&mut s.v, dkv),
            (&mut s.qkv, dq + 2 * dkv),
        ] {
            buf.resize(n * w, 0.0);
        }
        s.rstd.resize(n, 0.0);

        match &self.w.embed {
            Some(w) => gather_rows(&mut s.x, w.view(), &s.flat), // [n_tok, d_model]
            None => embedding_forward(&mut s.x, &p[model.layout.tok_embeddings.clone()], &s.flat, d), // [n_tok, d_model]
        }
        for (i, (b, lw)) in model.layout.blocks.iter().zip(&self.w.layers).enumerate() {
            // ---- attention
            rmsnorm_forward(&mut s.h, &mut s.rstd, &s.x, &p[b.attn_norm.clone()], n, d, eps); // [n_tok, d_model]
            let (dims, sinks) = ext.map_or((plain, &[][..]), |e| (e.dims[i], &e.sinks[i][..]));
            if let (Some(ml), Some(mw), Some(e), Some(m)) = (&b.attn.mla, &lw.mla, ext, cfg.attn_ext.as_ref().and_then(|a| a.mla.as_ref()))
            {
                mla::mla_layer(s, st, caches, model, i, lw, (ml, mw, m), &e.rope, dims, sinks, kernel);
            // s.o [n_tok, n_head·d_v]
            } else {
                s.qkv.resize(n * (dq + 2 * dkv), 0.0);
                // q, k and v from one product, or q alone and k, v from their own, finer matrix
                let kv_at = match &lw.wkv {
                    None => {
                        linear(&mut s.qkv, &s.h, &lw.wqkv, n, kernel); // [n_tok, dq + 2·dkv]
                        st.add_matmul(n, dq + 2 * dkv, d, lw.wqkv.bytes());
                        dq
                    }
                    Some(wkv) => {
                        linear(&mut s.q, &s.h, &lw.wqkv, n, kernel); // [n_tok, dq]
                        st.add_matmul(n, dq, d, lw.wqkv.bytes());
                        linear(&mut s.qkv[..n * 2 * dkv], &s.h, wkv, n, kernel); // [n_tok, 2·dkv]
                        st.add_matmul(n, 2 * dkv, d, wkv.bytes());
                        0
                    }
                };
                let width = kv_at + 2 * dkv;
                for r in 0..n {
                    let row = &s.qkv[r * width..(r + 1) * width];
                    if kv_at > 0 {
                        s.q[r * dq..(r + 1) * dq].copy_from_slice(&row[..dq]); // [n_head·d_head]
                    }
                    s.k[r * dkv..(r + 1) * dkv].copy_from_slice(&row[kv_at..kv_at + dkv]); // [n_head_kv·d_head]
                    s.v[r * dkv..(r + 1) * dkv].copy_from_slice(&row[kv_at + dkv..]);
                    // [n_head_kv·d_head]
                }
                match ext {
                    Some(e) => attention_ext::finish_qkv(p, &b.attn, cfg, i, &e.rope, &mut s.q, &mut s.k, &mut s.v, &s.positions),
                    None => {
                        qkv_bias_forward(p, &b.attn, &mut s.q, &mut s.k, &mut s.v);
                        qk_norm_forward(p, &b.attn, &mut s.q, &mut s.k, eps);
                        model.rope.apply_at(&mut s.q, &s.positions, n_head);
                        model.rope.apply_at(&mut s.k, &s.positions, n_kv);
                    }
                }
                for (si, c) in caches.iter_mut().enumerate() {
                    let (r0, r1) = (s.offs[si], s.offs[si + 1]);
                    c.write(i, &s.k[r0 * dkv..r1 * dkv], &s.v[r0 * dkv..r1 * dkv]);
                }
                {
                    let views: Vec<&KvCache<f32>> = caches.iter().map(|c| &**c).collect();
                    cached_attention(&mut s.o, &views, i, &s.q, &s.offs, &s.len0, dims, sinks, &mut s.tasks);
                    // [n_tok, dq]
                }
                for (si, &l0) in s.len0.iter().enumerate() {
                    // 4·d_head FLOPs per (query head, visible key): exact over windows and chunks
                    let keys = dims.visible_keys(l0, s.offs[si + 1] - s.offs[si]);
                    st.flops += (4 * dh * n_head * keys) as u64;
                }
            }
            linear(&mut s.a, &s.o, &lw.wo, n, kernel); // [n_tok, d_model]
            st.add_matmul(n, d, dov, lw.wo.bytes());
            if let Some(r) = &b.attn.out_bias {
                let bias = &p[r.clone()]; // [d_model]
                s.a.chunks_mut(d).for_each(|row| row.iter_mut().zip(bias).for_each(|(a, &c)| *a += c));
            }
            s.x.iter_mut().zip(&s.a).for_each(|(x, &v)| *x += v);
            // ---- FFN
            rmsnorm_forward(&mut s.h, &mut s.rstd, &s.x, &p[b.ffn_norm.clone()], n, d, eps); // [n_tok, d_model]
            match &lw.ffn {
                FfnWeights::Dense(mlp) => {
                    grouped_mlp_forward(&mut s.a, &[Group { mlp, x: &s.h, m: n, row0: 0 }], d, kernel, &mut s.ffn); // [n_tok, d_model]
                    st.add_mlp(mlp, n, d);
                }
                FfnWeights::Moe(mw) => {
                    let mc = self.dropless.as_ref().ok_or_else(|| Error::BadInput("MoE layer without a moe config".into()))?;
                    moe_forward(&mut s.a, &s.h, mw, mc, &model.selection_bias[i], n, d, kernel, &mut s.moe, st, self.ep.as_deref());
                    // [n_tok, d_model]
                }
            }
            s.x.iter_mut().zip(&s.a).for_each(|(x, &v)| *x += v);
        }
        for (c, t) in caches.iter_mut().zip(tokens) {
            c.advance(t.as_ref().len());
        }

        // ---- final norm + LM head on the rows whose logits are wanted
        s.rows.clear();
        if all_logits {
            s.rows.extend(0..n);
        } else {
            s.rows.extend(s.offs[1..].iter().map(|&e| e - 1));
        }
        let m = s.rows.len();
        s.xs.resize(m * d, 0.0);
        for (j, &r) in s.rows.iter().enumerate() {
            s.xs[j * d..(j + 1) * d].copy_from_slice(&s.x[r * d..(r + 1) * d]);
        }
        s.xf.resize(m * d, 0.0);
        s.rstd.resize(m, 0.0);
        rmsnorm_forward(&mut s.xf, &mut s.rstd, &s.xs, &p[model.layout.norm.clone()], m, d, eps); // [n_out, d_model]
        let nv = cfg.n_vocab;
        s.logits.resize(m * nv, 0.0);
        linear(&mut s.logits, &s.xf, &self.w.lm_head, m, kernel); // [n_out, n_vocab]
        st.add_matmul(m, nv, d, self.w.lm_head.bytes());
        Ok(&s.logits)
    }
}
