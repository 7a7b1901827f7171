//! The engine's copy of a model's matrices, in the storage format chosen for inference and laid
//! out for one pass per matrix group:
//!
//! * `wqkv [n_head·d_head + 2·n_head_kv·d_head, d_model]`: q, k and v projections stacked, so that
//!   one GEMV reads all three (one parallel region instead of three); for latent attention
//!   (`attn_ext.mla`) the two products of `h` instead: `wq_a` (or `wq` without a q latent) stacked
//!   on `wkv_a`, and [`MlaWeights`] holds the rest, `wkv_b` split per head with its key half
//!   transposed for the absorbed attention;
//! * each SwiGLU MLP's gate and up projections **interleaved in tiles** of [`FF_TILE`] features:
//!   rows `2·f0 .. 2·f0 + t` are gate rows `f0 .. f0 + t` and the next `t` rows the matching up rows
//!   (`t = min(FF_TILE, d_ff − f0)`), so that a task owning features `f0..f1` (multiples of
//!   `FF_TILE`) reads one contiguous block of rows and applies `silu(gate) · up` in its epilogue;
//! * the router stays f32 (it is `n_expert × d_model`, noise next to the experts).
//!
//! Norm weights and the embedding table are read from the model's own parameter vector.

use moe_kernels::quant::{WeightDtype, Weights};
use moe_model::config::Activation;
use moe_model::config::Mla;
use moe_model::params::{AttnLayout, FfnLayout, MlaLayout, MlpLayout};
use moe_model::{ModelConfig, Transformer};
use std::ops::Range;

/// Features per gate/up tile (the unit of the interleaved layout).
pub const FF_TILE: usize = 16;

/// One MLP (dense FFN, routed expert or shared experts).
#[derive(Clone, Debug)]
pub struct MlpWeights {
    /// SwiGLU: interleaved gate/up `[2·d_ff, d_model]`; GELU: up `[d_ff, d_model]`
    pub gate_up: Weights,
    /// `[d_model, d_ff]`
    pub down: Weights,
    /// hidden width
    pub d_ff: usize,
    /// SwiGLU or GELU
    pub activation: Activation,
}

impl MlpWeights {
    /// Bytes read by one pass over this MLP.
    pub fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes()
    }

    /// Rows of `gate_up` holding features `f0..f1` (`f0` a multiple of [`FF_TILE`]).
    pub fn gate_up_rows(&self, f0: usize, f1: usize) -> Range<usize> {
        match self.activation {
            Activation::Swiglu => 2 * f0..2 * f1,
            Activation::Gelu => f0..f1,
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
    /// one MLP per routed expert
    pub experts: Vec<MlpWeights>,
    /// shared experts as one MLP
    pub shared: Option<MlpWeights>,
    /// `[d_model]` f32 shared-expert gate
    pub shared_gate: Option<Vec<f32>>,
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
    /// format of every matrix but the router
    pub dtype: WeightDtype,
    /// per block
    pub layers: Vec<LayerWeights>,
    /// `[n_vocab, d_model]`
    pub lm_head: Weights,
}

fn mat(p: &[f32], r: Range<usize>, n: usize, k: usize, dtype: WeightDtype) -> Weights {
    Weights::from_f32(&p[r], n, k, dtype)
}

/// Gate and up `[d_ff, d_model]` each → the interleaved `[2·d_ff, d_model]` (see the module doc).
fn interleave_gate_up(gate: &[f32], up: &[f32], d_ff: usize, d_model: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * d_ff * d_model);
    let mut f0 = 0;
    while f0 < d_ff {
        let f1 = (f0 + FF_TILE).min(d_ff);
        out.extend_from_slice(&gate[f0 * d_model..f1 * d_model]);
        out.extend_from_slice(&up[f0 * d_model..f1 * d_model]);
        f0 = f1;
    }
    out
}

fn mlp(gate: Option<&[f32]>, up: &[f32], down: &[f32], d_ff: usize, d_model: usize, activation: Activation, dtype: WeightDtype) -> MlpWeights {
    let gate_up = match (activation, gate) {
        (Activation::Swiglu, Some(g)) => Weights::from_f32(&interleave_gate_up(g, up, d_ff, d_model), 2 * d_ff, d_model, dtype),
        _ => Weights::from_f32(up, d_ff, d_model, dtype),
    };
    MlpWeights { gate_up, down: Weights::from_f32(down, d_model, d_ff, dtype), d_ff, activation }
}

fn dense_mlp(p: &[f32], l: &MlpLayout, d_model: usize, dtype: WeightDtype) -> MlpWeights {
    let gate = l.w_gate.clone().map(|r| &p[r]);
    mlp(gate, &p[l.w_up.clone()], &p[l.w_down.clone()], l.d_ff, d_model, l.activation, dtype)
}

/// `wqkv`, `wo` and the latent-attention matrices of one block (see the module doc).
fn attention(p: &[f32], a: &AttnLayout, cfg: &ModelConfig, dtype: WeightDtype) -> (Weights, Weights, Option<MlaWeights>) {
    let d = cfg.d_model;
    let (nh, dh, dv) = (cfg.n_head, cfg.d_head(), cfg.d_head_v());
    let wo = mat(p, a.wo.clone(), d, nh * dv, dtype);
    if let (Some(ml), Some(m)) = (&a.mla, cfg.attn_ext.as_ref().and_then(|x| x.mla.as_ref())) {
        let (wqkv, mw) = mla(p, ml, m, cfg, dtype);
        return (wqkv, wo, Some(mw));
    }
    let (dq, dk, dvv) = (nh * dh, cfg.n_head_kv * dh, cfg.n_head_kv * dv);
    let mut qkv = Vec::with_capacity((dq + dk + dvv) * d);
    qkv.extend_from_slice(&p[a.wq.clone()]);
    qkv.extend_from_slice(&p[a.wk.clone()]);
    qkv.extend_from_slice(&p[a.wv.clone()]);
    (Weights::from_f32(&qkv, dq + dk + dvv, d, dtype), wo, None)
}

fn mla(p: &[f32], ml: &MlaLayout, m: &Mla, cfg: &ModelConfig, dtype: WeightDtype) -> (Weights, MlaWeights) {
    let d = cfg.d_model;
    let (nh, dh) = (cfg.n_head, cfg.d_head());
    let (kvr, dr, dn, dv) = (m.kv_lora_rank, m.d_rope, m.d_nope, m.d_v);
    let (first, q_width, wq_b) = match (&ml.wq_a, m.q_lora_rank) {
        (Some(wa), Some(r)) => (&p[wa.clone()], r, Some(mat(p, ml.wq_b.clone(), nh * dh, r, dtype))),
        _ => (&p[ml.wq_b.clone()], nh * dh, None),
    };
    let mut a = Vec::with_capacity((q_width + kvr + dr) * d);
    a.extend_from_slice(first);
    a.extend_from_slice(&p[ml.wkv_a.clone()]);
    let wb = &p[ml.wkv_b.clone()]; // [n_head·(d_nope + d_v), kv_lora_rank]
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

impl EngineWeights {
    /// Convert every matrix of `model` to `dtype` (f32 copies the values).
    pub fn new(model: &Transformer<f32>, dtype: WeightDtype) -> Self {
        let cfg = &model.cfg;
        let p = &model.params;
        let d = cfg.d_model;
        let layers = model
            .layout
            .blocks
            .iter()
            .map(|b| {
                let (wqkv, wo, mla) = attention(p, &b.attn, cfg, dtype);
                let ffn = match &b.ffn {
                    FfnLayout::Dense(l) => FfnWeights::Dense(dense_mlp(p, l, d, dtype)),
                    FfnLayout::Moe(l) => {
                        let de = cfg.moe.as_ref().map_or(0, |m| m.d_expert);
                        let sz = de * d;
                        let (wg, wu, wd) = (&p[l.w_gate.clone()], &p[l.w_up.clone()], &p[l.w_down.clone()]);
                        let experts = (0..l.n_expert)
                            .map(|e| {
                                let r = e * sz..(e + 1) * sz;
                                mlp(Some(&wg[r.clone()]), &wu[r.clone()], &wd[r], de, d, Activation::Swiglu, dtype)
                            })
                            .collect();
                        FfnWeights::Moe(MoeWeights {
                            n_expert: l.n_expert,
                            router: p[l.router.clone()].to_vec(),
                            experts,
                            shared: l.shared.as_ref().map(|s| dense_mlp(p, s, d, dtype)),
                            shared_gate: l.shared_gate.clone().map(|r| p[r].to_vec()),
                        })
                    }
                };
                LayerWeights { wqkv, wo, mla, ffn }
            })
            .collect();
        EngineWeights { dtype, layers, lm_head: mat(p, model.layout.lm_head.clone(), cfg.n_vocab, d, dtype) }
    }

    /// Bytes of every matrix held (all experts included).
    pub fn total_bytes(&self) -> usize {
        let mut b = self.lm_head.bytes();
        for l in &self.layers {
            b += l.wqkv.bytes() + l.wo.bytes() + l.mla.as_ref().map_or(0, |m| m.bytes());
            b += match &l.ffn {
                FfnWeights::Dense(m) => m.bytes(),
                FfnWeights::Moe(m) => {
                    4 * m.router.len() + m.experts.iter().map(|e| e.bytes()).sum::<usize>() + m.shared.as_ref().map_or(0, |s| s.bytes()) + m.shared_gate.as_ref().map_or(0, |g| 4 * g.len())
                }
            };
        }
        b
    }
}
