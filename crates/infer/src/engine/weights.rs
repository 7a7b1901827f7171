//! The engine's copy of a model's matrices, in the storage format chosen for inference and laid
//! out for one pass per matrix group:
//!
//! * `wqkv [n_head·d_head + 2·n_head_kv·d_head, d_model]`: q, k and v projections stacked, so that
//!   one GEMV reads all three (one parallel region instead of three); for latent attention
//!   (`attn_ext.mla`) the two products of `h` instead: `wq_a` (or `wq` without a q latent) stacked
//!   on `wkv_a`, and [`MlaWeights`] holds the rest, `wkv_b` split per head with its key half
//!   transposed for the absorbed attention; a 4-bit engine of a MoE model holds q alone in
//!   `wqkv` and k, v stacked in int8 in `wkv` (two products);
//! * each SwiGLU MLP's gate and up projections **interleaved in tiles** of [`FF_TILE`] features:
//!   rows `2·f0 .. 2·f0 + t` are gate rows `f0 .. f0 + t` and the next `t` rows the matching up rows
//!   (`t = min(FF_TILE, d_ff − f0)`), so that a task owning features `f0..f1` (multiples of
//!   `FF_TILE`) reads one contiguous block of rows and applies `silu(gate) · up` in its epilogue;
//! * the router stays f32 (it is `n_expert × d_model`, noise next to the experts).
//!
//! Each MLP carries its activation as an [`MlpAct`] (SwiGLU, the clamped SwiGLU of GPT-OSS, or
//! GELU) and, for experts with biases (`moe.ext.expert_bias`), its f32 bias vectors ([`MlpBias`]),
//! copied once here so that a step never reads the parameter vector for an expert. The other small
//! MoE vectors of the inference-only variants (router bias, fixed selection bias) are copied into
//! [`MoeWeights`] the same way.
//!
//! Norm weights and the embedding table are read from the model's own parameter vector.

use moe_kernels::quant::{BlockQ4, BlockQ4K, WeightBf16, WeightDtype, WeightQ4, WeightQ4K, Weights, QK, QK_K};
use moe_model::config::{Activation, ClampedSwiglu, Mla};
use moe_model::params::{AttnLayout, FfnLayout, MlaLayout, MlpLayout, MoeLayout};
use moe_model::stored::{MatrixStore, StoredData};
use moe_model::{ModelConfig, Transformer};
use std::borrow::Cow;
use std::ops::Range;

/// Features per gate/up tile (the unit of the interleaved layout).
pub const FF_TILE: usize = 16;

/// The activation of one MLP, applied in the epilogue of its gate/up tiles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MlpAct {
    /// `silu(gate) · up`
    Swiglu,
    /// GPT-OSS: `(clamp(up, ±limit) + 1) · g · σ(alpha·g)`, `g = min(gate, limit)` (the values of
    /// the config converted to f32, as the reference path does)
    ClampedSwiglu {
        /// sigmoid slope
        alpha: f32,
        /// clamp bound
        limit: f32,
    },
    /// `gelu(up)` (no gate)
    Gelu,
}

impl MlpAct {
    fn new(activation: Activation, clamp: Option<ClampedSwiglu>) -> Self {
        match (activation, clamp) {
            (Activation::Gelu, _) => MlpAct::Gelu,
            (Activation::Swiglu, None) => MlpAct::Swiglu,
            (Activation::Swiglu, Some(c)) => MlpAct::ClampedSwiglu { alpha: c.alpha as f32, limit: c.limit as f32 },
        }
    }

    /// Whether the MLP has a gate projection (interleaved with up, see the module doc).
    pub fn gated(self) -> bool {
        !matches!(self, MlpAct::Gelu)
    }
}

/// Biases of one routed expert (`moe.ext.expert_bias`), f32.
#[derive(Clone, Debug)]
pub struct MlpBias {
    /// `[d_ff]`, added to the gate projection before the activation
    pub gate: Vec<f32>,
    /// `[d_ff]`, added to the up projection before the activation
    pub up: Vec<f32>,
    /// `[d_model]`, added to the output
    pub down: Vec<f32>,
}

/// One MLP (dense FFN, routed expert or shared experts).
#[derive(Clone, Debug)]
pub struct MlpWeights {
    /// gated: interleaved gate/up `[2·d_ff, d_model]`; GELU: up `[d_ff, d_model]`
    pub gate_up: Weights,
    /// `[d_model, d_ff]`
    pub down: Weights,
    /// hidden width
    pub d_ff: usize,
    /// the activation
    pub act: MlpAct,
    /// biases (routed experts of `moe.ext.expert_bias` only)
    pub bias: Option<MlpBias>,
}

impl MlpWeights {
    /// Bytes read by one pass over this MLP (its f32 biases included).
    pub fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes() + self.bias.as_ref().map_or(0, |b| 4 * (b.gate.len() + b.up.len() + b.down.len()))
    }

    /// Rows of `gate_up` holding features `f0..f1` (`f0` a multiple of [`FF_TILE`]).
    pub fn gate_up_rows(&self, f0: usize, f1: usize) -> Range<usize> {
        if self.act.gated() {
            2 * f0..2 * f1
        } else {
            f0..f1
        }
    }
}

/// A MoE FFN.
#[derive(Clone, Debug)]
pub struct MoeWeights {
    /// routed experts
    pub n_expert: usize,
    /// `[n_expert, d_model]` f32
    pub router: Vec<f32>,
    /// global id of `experts[0]`: 0, unless the model holds a shard of the experts
    /// (`Transformer::shard`, expert-parallel serving)
    pub first_expert: usize,
    /// one MLP per routed expert this process holds (every expert unless sharded)
    pub experts: Vec<MlpWeights>,
    /// shared experts as one MLP
    pub shared: Option<MlpWeights>,
    /// `[d_model]` f32 shared-expert gate
    pub shared_gate: Option<Vec<f32>>,
    /// `[n_expert]` f32 router bias, added to the logits before gating (`moe.ext.router_bias`)
    pub router_bias: Option<Vec<f32>>,
    /// `[n_expert]` f32 fixed selection bias (`moe.ext.selection_bias`); replaces the model's
    /// balancing selection bias, as in `moe_model::moe::moe_forward`
    pub selection_bias: Option<Vec<f32>>,
    /// the combine weight scales each expert's input, the outputs join unweighted
    /// (`moe.ext.scale_input`)
    pub scale_input: bool,
}

impl MoeWeights {
    /// Bytes held (router, vectors, every expert).
    pub fn bytes(&self) -> usize {
        let vecs = [&self.shared_gate, &self.router_bias, &self.selection_bias]
            .iter()
            .map(|v| v.as_ref().map_or(0, |v| 4 * v.len()))
            .sum::<usize>();
        4 * self.router.len() + vecs + self.experts.iter().map(|e| e.bytes()).sum::<usize>() + self.shared.as_ref().map_or(0, |s| s.bytes())
    }
}

/// The FFN slot of one layer.
#[derive(Clone, Debug)]
pub enum FfnWeights {
    /// dense MLP
    Dense(MlpWeights),
    /// mixture of experts
    Moe(MoeWeights),
}

/// The latent-attention matrices of one block besides `wqkv` (the products of `h`) and `wo`.
#[derive(Clone, Debug)]
pub struct MlaWeights {
    /// rows of `wqkv` that make the q input: `q_lora_rank`, or `n_head·d_head` without a q latent
    pub q_width: usize,
    /// `[n_head·d_head, q_lora_rank]`, `None` without a q latent
    pub wq_b: Option<Weights>,
    /// per head: the key half of `wkv_b` **transposed**, `[kv_lora_rank, d_nope]`, so that the
    /// absorbed query `q_lat = W_kᵀ·q_nope` is a GEMV
    pub wk_t: Vec<Weights>,
    /// per head: the value half of `wkv_b`, `[d_v, kv_lora_rank]`
    pub wv: Vec<Weights>,
}

impl MlaWeights {
    /// Bytes of `wq_b` and `wkv_b`.
    pub fn bytes(&self) -> usize {
        self.wq_b.as_ref().map_or(0, |w| w.bytes()) + self.wk_t.iter().chain(&self.wv).map(|w| w.bytes()).sum::<usize>()
    }
}

/// The matrices of one block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// `[n_head·d_head + n_head_kv·(d_head + d_head_v), d_model]`; with latent attention
    /// `[q_width + kv_lora_rank + d_rope, d_model]` (`wq_a` or `wq`, then `wkv_a`)
    pub wqkv: Weights,
    /// k and v `[2·n_head_kv·d_head, d_model]` in a finer format than q, `wqkv` then holding only
    /// the q rows: a 4-bit engine keeps a MoE model's k and v in int8 (see `attention`)
    pub wkv: Option<Weights>,
    /// `[d_model, n_head·d_head_v]`
    pub wo: Weights,
    /// latent attention's other matrices
    pub mla: Option<MlaWeights>,
    /// dense or MoE
    pub ffn: FfnWeights,
}

/// All matrices of a model in one storage format.
#[derive(Clone, Debug)]
pub struct EngineWeights {
    /// format of every matrix but the router (and, under q4/q4k, the LM head and a MoE model's k and
    /// v, kept int8)
    pub dtype: WeightDtype,
    /// per block
    pub layers: Vec<LayerWeights>,
    /// `[n_vocab, d_model]`
    pub lm_head: Weights,
    /// the token embedding `[n_vocab, d_model]` when the model keeps it in its checkpoint's format
    /// (bf16 for a bf16 checkpoint, else f32: exact either way); `None`: rows are gathered from
    /// the model's f32 parameters
    pub embed: Option<Weights>,
}

/// Where the conversion reads a model's matrices: its parameter buffer or the matrices it keeps in
/// the checkpoint's format (`Transformer::matrix_f32`) — or, when `take` holds that store, taken
/// out of it one matrix at a time, so that each 2-byte copy is released as soon as it is converted.
struct MatrixSource<'a> {
    model: &'a Transformer<f32>,
    take: Option<&'a mut MatrixStore>,
}

impl<'a> MatrixSource<'a> {
    /// Parameters `r` as f32.
    fn get(&mut self, r: Range<usize>) -> Cow<'a, [f32]> {
        if let Some(v) = self.take.as_deref_mut().and_then(|st| st.take_f32(r.clone())) {
            return Cow::Owned(v);
        }
        self.model.matrix_f32(r)
    }

    /// Format of the kept matrix starting at parameter `start`, if that matrix is kept.
    fn kept_dtype(&self, start: usize) -> Option<&'static str> {
        self.take.as_deref().and_then(|st| st.dtype_at(start)).or_else(|| self.model.stored.dtype_at(start))
    }

    /// Matrix `r` (`[n, k]`) as `dtype`. A kept matrix already in that format moves as it is (no
    /// conversion, no copy of values): bf16 into bf16, a GGUF file's `Q4_0` blocks into q4 and
    /// `Q4_K` blocks into q4k.
    ///
    /// A 4-bit format asked for a kept matrix the file stores at 5 to 8 bits (the `Q6_K` and `Q8_0`
    /// matrices of a `Q4_K_M` file, which llama.cpp keeps finer on purpose: v, down, the head) gives
    /// int8 instead, so that the file's mix of precisions survives.
    fn mat(&mut self, r: Range<usize>, n: usize, k: usize, dtype: WeightDtype) -> Weights {
        let finer = matches!(self.kept_dtype(r.start), Some("q5_0" | "q5_1" | "q5_K" | "q6_K" | "q8_0"));
        let dtype = if finer && matches!(dtype, WeightDtype::Q4 | WeightDtype::Q4K) { WeightDtype::I8 } else { dtype };
        let same = matches!(
            (dtype, self.kept_dtype(r.start)),
            (WeightDtype::Bf16, Some("bf16")) | (WeightDtype::Q4, Some("q4_0")) | (WeightDtype::Q4K, Some("q4_K"))
        );
        if same {
            match self.take.as_deref_mut().and_then(|st| st.take_exact(r.clone())) {
                Some(StoredData::Bf16(bits)) => return Weights::Bf16(WeightBf16 { n, k, bits }),
                Some(StoredData::Ggml { bytes, .. }) if dtype == WeightDtype::Q4 && k.is_multiple_of(QK) => {
                    let blocks =
                        bytes.chunks_exact(18).map(|b| BlockQ4 { d: [b[0], b[1]], qs: b[2..18].try_into().expect("16 bytes") }).collect();
                    return Weights::Q4(WeightQ4 { n, k, blocks });
                }
                Some(StoredData::Ggml { bytes, .. }) if dtype == WeightDtype::Q4K && k.is_multiple_of(QK_K) => {
                    let blocks = bytes
                        .chunks_exact(144)
                        .map(|b| BlockQ4K {
                            d: [b[0], b[1]],
                            dmin: [b[2], b[3]],
                            scales: b[4..16].try_into().expect("12 bytes"),
                            qs: b[16..144].try_into().expect("128 bytes"),
                        })
                        .collect();
                    return Weights::Q4K(WeightQ4K { n, k, blocks });
                }
                Some(other) => return Weights::from_f32(&other.to_f32(0..other.len()), n, k, dtype),
                None => {}
            }
        }
        Weights::from_f32(&self.get(r), n, k, dtype)
    }
}

/// `parts` in one format: as they are when they share one, else each in the finest of theirs
/// (a part of another format goes through f32).
fn unify(parts: Vec<Weights>) -> Vec<Weights> {
    let finest = |d: WeightDtype| match d {
        WeightDtype::F32 => 0,
        WeightDtype::Bf16 => 1,
        WeightDtype::I8 => 2,
        WeightDtype::Q4K => 3,
        WeightDtype::Q4 => 4,
    };
    let to = parts.iter().map(|w| w.dtype()).min_by_key(|&d| finest(d)).expect("parts");
    parts.into_iter().map(|w| if w.dtype() == to { w } else { Weights::from_f32(&w.dequantize(), w.n(), w.k(), to) }).collect()
}

/// Gate and up `[d_ff, d_model]` each → the interleaved `[2·d_ff, d_model]` (see the module doc).
fn interleave_gate_up(gate: Weights, up: Weights, d_ff: usize) -> Weights {
    let [gate, up]: [Weights; 2] = unify(vec![gate, up]).try_into().expect("two");
    let (gate, up) = (&gate, &up);
    let mut parts = Vec::new();
    let mut f0 = 0;
    while f0 < d_ff {
        let f1 = (f0 + FF_TILE).min(d_ff);
        parts.push((gate, f0..f1));
        parts.push((up, f0..f1));
        f0 = f1;
    }
    Weights::stack_rows(&parts)
}

fn mlp(gate: Option<Weights>, up: Weights, down: Weights, d_ff: usize, act: MlpAct) -> MlpWeights {
    let gate_up = match (act.gated(), gate) {
        (true, Some(g)) => interleave_gate_up(g, up, d_ff),
        _ => up,
    };
    MlpWeights { gate_up, down, d_ff, act, bias: None }
}

fn dense_mlp(src: &mut MatrixSource<'_>, l: &MlpLayout, d_model: usize, dtype: WeightDtype) -> MlpWeights {
    let f = l.d_ff;
    let gate = l.w_gate.clone().map(|r| src.mat(r, f, d_model, dtype));
    let up = src.mat(l.w_up.clone(), f, d_model, dtype);
    mlp(gate, up, src.mat(l.w_down.clone(), d_model, f, dtype), f, MlpAct::new(l.activation, None))
}

/// The routed experts, router and vectors of one MoE layer.
fn moe_layer(src: &mut MatrixSource<'_>, l: &MoeLayout, mc: &moe_model::MoeConfig, d: usize, dtype: WeightDtype) -> MoeWeights {
    let p = &src.model.params;
    let de = mc.d_expert;
    let sz = de * d;
    let ext = mc.ext.clone().unwrap_or_default();
    let act = MlpAct::new(Activation::Swiglu, ext.clamped_swiglu);
    let mut experts = Vec::with_capacity(l.n_local);
    for e in 0..l.n_local {
        // one expert at a time: a kept stack is converted (and released) an expert at a time
        let part = |r: &Range<usize>| r.start + e * sz..r.start + (e + 1) * sz;
        let (wg, wu) = (src.mat(part(&l.w_gate), de, d, dtype), src.mat(part(&l.w_up), de, d, dtype));
        let wd = src.mat(part(&l.w_down), d, de, dtype);
        let mut m = mlp(Some(wg), wu, wd, de, act);
        m.bias = l.expert_bias.as_ref().map(|[bg, bu, bd]| MlpBias {
            gate: p[bg.start + e * de..bg.start + (e + 1) * de].to_vec(), // [d_expert]
            up: p[bu.start + e * de..bu.start + (e + 1) * de].to_vec(),   // [d_expert]
            down: p[bd.start + e * d..bd.start + (e + 1) * d].to_vec(),   // [d_model]
        });
        experts.push(m);
    }
    MoeWeights {
        n_expert: l.n_expert,
        router: p[l.router.clone()].to_vec(),
        first_expert: l.first_expert,
        experts,
        shared: l.shared.as_ref().map(|s| dense_mlp(src, s, d, dtype)),
        shared_gate: l.shared_gate.clone().map(|r| p[r].to_vec()),
        router_bias: l.router_bias.clone().map(|r| p[r].to_vec()),
        selection_bias: l.selection_bias.clone().map(|r| p[r].to_vec()),
        scale_input: ext.scale_input,
    }
}

/// The attention matrices of one block.
struct Attention {
    wqkv: Weights,
    wkv: Option<Weights>,
    wo: Weights,
    mla: Option<MlaWeights>,
}

/// `wqkv` (and `wkv`), `wo` and the latent-attention matrices of one block (see the module doc).
///
/// A 4-bit engine (q4, q4k) keeps the k and v projections of a MoE model in int8, as llama.cpp's
/// 4-bit files of MoE models keep `attn_k`/`attn_v` in Q8_0: in a MoE they are a few percent of the
/// bytes a token reads, and on a trained model they carried much of the 4-bit formats' error
/// (`docs/inference.md`). Not where the checkpoint already stores them in 4 bits (a GGUF file's
/// Q4_0/Q4_K blocks stay as they are).
fn attention(src: &mut MatrixSource<'_>, a: &AttnLayout, cfg: &ModelConfig, dtype: WeightDtype) -> Attention {
    let d = cfg.d_model;
    let (nh, dh, dv) = (cfg.n_head, cfg.d_head(), cfg.d_head_v());
    let wo = src.mat(a.wo.clone(), d, nh * dv, dtype);
    if let (Some(ml), Some(m)) = (&a.mla, cfg.attn_ext.as_ref().and_then(|x| x.mla.as_ref())) {
        let (wqkv, mw) = mla(src, ml, m, cfg, dtype);
        return Attention { wqkv, wkv: None, wo, mla: Some(mw) };
    }
    let (dq, dk, dvv) = (nh * dh, cfg.n_head_kv * dh, cfg.n_head_kv * dv);
    let four_bit = matches!(dtype, WeightDtype::Q4 | WeightDtype::Q4K);
    let stored_4bit = |src: &MatrixSource<'_>, at: usize| matches!(src.kept_dtype(at), Some("q4_0" | "q4_1" | "q4_K"));
    if four_bit && cfg.moe.is_some() && !stored_4bit(src, a.wk.start) && !stored_4bit(src, a.wv.start) {
        let wq = src.mat(a.wq.clone(), dq, d, dtype);
        let kv = vec![src.mat(a.wk.clone(), dk, d, WeightDtype::I8), src.mat(a.wv.clone(), dvv, d, WeightDtype::I8)];
        let [k, v]: [Weights; 2] = unify(kv).try_into().expect("two");
        return Attention { wqkv: wq, wkv: Some(Weights::stack_rows(&[(&k, 0..dk), (&v, 0..dvv)])), wo, mla: None };
    }
    let qkv = vec![src.mat(a.wq.clone(), dq, d, dtype), src.mat(a.wk.clone(), dk, d, dtype), src.mat(a.wv.clone(), dvv, d, dtype)];
    let [q, k, v]: [Weights; 3] = unify(qkv).try_into().expect("three");
    Attention { wqkv: Weights::stack_rows(&[(&q, 0..dq), (&k, 0..dk), (&v, 0..dvv)]), wkv: None, wo, mla: None }
}

fn mla(src: &mut MatrixSource<'_>, ml: &MlaLayout, m: &Mla, cfg: &ModelConfig, dtype: WeightDtype) -> (Weights, MlaWeights) {
    let d = cfg.d_model;
    let (nh, dh) = (cfg.n_head, cfg.d_head());
    let (kvr, dr, dn, dv) = (m.kv_lora_rank, m.d_rope, m.d_nope, m.d_v);
    let (first, q_width, wq_b) = match (&ml.wq_a, m.q_lora_rank) {
        (Some(wa), Some(r)) => (src.get(wa.clone()), r, Some(src.mat(ml.wq_b.clone(), nh * dh, r, dtype))),
        _ => (src.get(ml.wq_b.clone()), nh * dh, None),
    };
    let mut a = Vec::with_capacity((q_width + kvr + dr) * d);
    a.extend_from_slice(&first);
    a.extend_from_slice(&src.get(ml.wkv_a.clone()));
    let wb = src.get(ml.wkv_b.clone()); // [n_head·(d_nope + d_v), kv_lora_rank]
    let (mut wk_t, mut wv) = (Vec::with_capacity(nh), Vec::with_capacity(nh));
    for hd in 0..nh {
        let r0 = hd * (dn + dv);
        let mut t = vec![0.0f32; kvr * dn]; // [kv_lora_rank, d_nope]
        for i in 0..dn {
            for (c, &w) in wb[(r0 + i) * kvr..(r0 + i + 1) * kvr].iter().enumerate() {
                t[c * dn + i] = w;
            }
        }
        wk_t.push(Weights::from_f32(&t, kvr, dn, dtype));
        wv.push(Weights::from_f32(&wb[(r0 + dn) * kvr..(r0 + dn + dv) * kvr], dv, kvr, dtype));
    }
    (Weights::from_f32(&a, q_width + kvr + dr, d, dtype), MlaWeights { q_width, wq_b, wk_t, wv })
}

/// The engine format a model's checkpoint suggests when none is asked for: the one its kept
/// matrices already have (bf16), the nearest the engine runs for a GGUF file's quantised blocks
/// (q4k for Q4_K and q4 for Q4_0/Q4_1 — both convert exactly: their blocks are ours —, int8 for 5- to
/// 8-bit types), else exact f32.
pub fn default_dtype(model: &Transformer<f32>) -> WeightDtype {
    match model.stored.main_dtype() {
        // MXFP4 (GPT-OSS experts) is exact in bf16: a 2-bit exponent and 1-bit mantissa per value
        Some("bf16" | "mxfp4") => WeightDtype::Bf16,
        Some("q4_K") => WeightDtype::Q4K,
        Some("q4_0" | "q4_1") => WeightDtype::Q4,
        Some("q5_0" | "q5_1" | "q5_K" | "q6_K" | "q8_0") => WeightDtype::I8,
        _ => WeightDtype::F32,
    }
}

impl EngineWeights {
    /// Convert every matrix of `model` to `dtype` (f32 copies the values).
    pub fn new(model: &Transformer<f32>, dtype: WeightDtype) -> Self {
        Self::build(MatrixSource { model, take: None }, dtype)
    }

    /// Bits per weight over the matrices a token streams — attention, MLA, experts (routed and
    /// shared), dense MLPs and the LM head, scales and mins included; not the f32 router, biases or
    /// the embedding — so that formats and GGUF files compare on the same matrices.
    pub fn matrix_bits_per_weight(&self) -> f64 {
        let mut mats: Vec<&Weights> = vec![&self.lm_head];
        for l in &self.layers {
            mats.push(&l.wqkv);
            mats.extend(&l.wkv);
            mats.push(&l.wo);
            if let Some(m) = &l.mla {
                mats.extend(m.wq_b.iter().chain(&m.wk_t).chain(&m.wv));
            }
            let mlps: Vec<&MlpWeights> = match &l.ffn {
                FfnWeights::Dense(m) => vec![m],
                FfnWeights::Moe(m) => m.experts.iter().chain(&m.shared).collect(),
            };
            for m in mlps {
                mats.push(&m.gate_up);
                mats.push(&m.down);
            }
        }
        let bytes: usize = mats.iter().map(|w| w.bytes()).sum();
        let n: usize = mats.iter().map(|w| w.n() * w.k()).sum();
        8.0 * bytes as f64 / n.max(1) as f64
    }

    /// [`EngineWeights::new`] for a model that keeps matrices in its checkpoint's format
    /// (`HfOptions::keep_dtype`), releasing each kept matrix once converted: memory stays near one
    /// copy of the weights. The kept matrices are gone afterwards (`model.stored` empties and
    /// remembers it), so a second engine for the same model, or its reference path, would find
    /// zeros in their place: both refuse such a model (`Transformer::check_materialized`).
    pub fn new_taking(model: &mut Transformer<f32>, dtype: WeightDtype) -> Self {
        let mut store = std::mem::take(&mut model.stored);
        let w = Self::build(MatrixSource { model, take: Some(&mut store) }, dtype);
        debug_assert!(store.is_empty(), "every kept matrix is one the engine converts");
        model.stored = store;
        w
    }

    fn build(mut src: MatrixSource<'_>, dtype: WeightDtype) -> Self {
        let model = src.model;
        let cfg = &model.cfg;
        let d = cfg.d_model;
        // the head and embedding first, their transient f32 copies (if any) freed before the layers
        let (emb, head) = (model.layout.tok_embeddings.clone(), model.layout.lm_head.clone());
        let nv = cfg.n_vocab;
        // q4 keeps the LM head in int8, as llama.cpp keeps `output.weight` at 6+ bits in its 4-bit
        // files: the logits are what every sampled token depends on, and the head is one matrix
        let hd = if matches!(dtype, WeightDtype::Q4 | WeightDtype::Q4K) { WeightDtype::I8 } else { dtype };
        let (embed, lm_head) = match src.kept_dtype(emb.start) {
            // a kept embedding: the engine gathers rows from its own copy, in bf16 for a bf16
            // checkpoint (else f32: exact either way); a tied head is made from the same values
            Some(fmt) => {
                let own = if fmt == "bf16" { WeightDtype::Bf16 } else { WeightDtype::F32 };
                if head == emb {
                    let vals = src.get(emb.clone());
                    (Some(Weights::from_f32(&vals, nv, d, own)), Weights::from_f32(&vals, nv, d, hd))
                } else {
                    (Some(src.mat(emb.clone(), nv, d, own)), src.mat(head, nv, d, hd))
                }
            }
            None => (None, src.mat(head, nv, d, hd)),
        };
        let layers = model
            .layout
            .blocks
            .iter()
            .map(|b| {
                let Attention { wqkv, wkv, wo, mla } = attention(&mut src, &b.attn, cfg, dtype);
                let ffn = match &b.ffn {
                    FfnLayout::Dense(l) => FfnWeights::Dense(dense_mlp(&mut src, l, d, dtype)),
                    FfnLayout::Moe(l) => {
                        FfnWeights::Moe(moe_layer(&mut src, l, cfg.moe.as_ref().expect("MoE layer implies a moe config"), d, dtype))
                    }
                };
                LayerWeights { wqkv, wkv, wo, mla, ffn }
            })
            .collect();
        EngineWeights { dtype, layers, lm_head, embed }
    }

    /// Bytes of every matrix held (all experts included; not a kept embedding, whose rows are
    /// gathered, not multiplied).
    pub fn total_bytes(&self) -> usize {
        let mut b = self.lm_head.bytes();
        for l in &self.layers {
            b += l.wqkv.bytes() + l.wkv.as_ref().map_or(0, |w| w.bytes()) + l.wo.bytes() + l.mla.as_ref().map_or(0, |m| m.bytes());
            b += match &l.ffn {
                FfnWeights::Dense(m) => m.bytes(),
                FfnWeights::Moe(m) => m.bytes(),
            };
        }
        b
    }
}
