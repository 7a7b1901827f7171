//! The MoE FFN at inference: route → counting sort by expert → grouped experts (+ shared experts,
//! in the same two parallel regions) → weighted combine.
//!
//! Routing follows `moe_model::moe::router::route` exactly: the same router bias before gating,
//! the same gating, and the model crate's own per-token choice
//! ([`moe_model::moe::router::select_experts`]: top-k with the selection bias, group-limited when
//! asked, the same tie rule, renormalisation and scale); always dropless, as in [`crate::decode`].
//! A fixed selection bias of the layer (DeepSeek-V3) replaces the model's balancing one. The
//! (token, slot) assignments are counting-sorted by expert, so each touched expert sees its tokens
//! as one contiguous block (rows in token order) and runs once.
//!
//! The variants of imported architectures cost no extra pass: expert biases and the clamped
//! SwiGLU live in the tile epilogues of [`super::ffn`], and with `scale_input` (Llama 4) the
//! combine weight multiplies each row as it is gathered, the outputs then joining with weight 1.

use super::ffn::{grouped_mlp_forward, FfnScratch, Group};
use super::weights::MoeWeights;
use super::StepStats;
use moe_dist::Comm;
use moe_kernels::act::{sigmoid_exact, softmax_in_place};
use moe_kernels::gemv::{gemv_ref, Kernel};
use moe_kernels::quant::WeightsRef;
use moe_kernels::Par;
use moe_model::moe::router::{select_experts, RouterSettings};
use moe_model::{Gating, MoeConfig};

/// Reusable buffers of [`moe_forward`].
#[derive(Default, Debug)]
pub struct MoeScratch {
    probs: Vec<f32>,  // [n_tok, n_expert]
    choice: Vec<f32>, // [n_expert]
    idx: Vec<u32>,    // [n_tok, k]
    weight: Vec<f32>, // [n_tok, k]
    counts: Vec<usize>,
    offsets: Vec<usize>,
    row_of: Vec<usize>, // [n_tok, k]
    xs: Vec<f32>,       // [n_tok·k, d_model], rows sorted by expert
    ys: Vec<f32>,       // [n_tok·k (+ n_tok shared), d_model]
    ffn: FfnScratch,
}

/// `out [n_tok, d_model]` (**overwritten**) = MoE FFN of `h [n_tok, d_model]`; `kernel` is the
/// experts' GEMV kernel (the router always uses the exact one). `selection_bias` is the model's
/// balancing bias of this layer (empty or `[n_expert]`), unused when the layer has a fixed one.
///
/// With `ep` (expert-parallel serving; collective) every rank has the same batch and holds the
/// experts `w.first_expert..` of its rank: it routes every token, runs only its experts' rows
/// (rank 0 also the shared experts), and one all-reduce sums the ranks' weighted contributions.
#[allow(clippy::too_many_arguments)]
pub fn moe_forward(
    out: &mut [f32],
    h: &[f32],
    w: &MoeWeights,
    mc: &MoeConfig,
    selection_bias: &[f32],
    n_tok: usize,
    d_model: usize,
    kernel: Kernel,
    s: &mut MoeScratch,
    stats: &mut StepStats,
    ep: Option<&dyn Comm>,
) {
    let (e, k) = (w.n_expert, mc.n_expert_active);
    let local = w.first_expert..w.first_expert + w.experts.len();
    let with_shared = w.shared.is_some() && ep.is_none_or(|c| c.rank() == 0);
    let d = d_model;
    // ---- router: z = h·Wrᵀ → gate values p
    s.probs.resize(n_tok * e, 0.0);
    gemv_ref(&mut s.probs, h, WeightsRef::f32(&w.router, e, d), n_tok, Par::Seq, Kernel::Auto); // [n_tok, n_expert]
    stats.add_matmul(n_tok, e, d, 4 * e * d);
    if let Some(b) = &w.router_bias {
        s.probs.chunks_mut(e).for_each(|z| z.iter_mut().zip(b).for_each(|(z, &c)| *z += c));
    }
    match mc.gating {
        // on this thread: n_tok·n_expert values, less than one rayon round trip costs
        Gating::Softmax => s.probs.chunks_mut(e).for_each(softmax_in_place),
        Gating::Sigmoid => s.probs.iter_mut().for_each(|v| *v = sigmoid_exact(*v)),
    }
    // ---- top-k and combine weights, as the model's router
    s.idx.resize(n_tok * k, 0);
    s.weight.resize(n_tok * k, 0.0);
    let settings = RouterSettings::new(mc, e);
    let selection_bias = w.selection_bias.as_deref().unwrap_or(selection_bias);
    for t in 0..n_tok {
        let (ix, wt) = (&mut s.idx[t * k..(t + 1) * k], &mut s.weight[t * k..(t + 1) * k]);
        select_experts(&s.probs[t * e..(t + 1) * e], selection_bias, &settings, &mut s.choice, ix, wt);
    }
    // ---- counting sort of the (token, slot) assignments by expert
    s.counts.clear();
    s.counts.resize(e, 0);
    for &j in &s.idx {
        s.counts[j as usize] += 1;
    }
    s.offsets.clear();
    s.offsets.push(0);
    for j in 0..e {
        let last = s.offsets[j];
        s.offsets.push(last + s.counts[j]);
    }
    s.row_of.resize(n_tok * k, 0);
    let n_rows = n_tok * k;
    s.xs.resize(n_rows * d, 0.0);
    {
        let mut fill = s.offsets[..e].to_vec();
        for (a, &j) in s.idx.iter().enumerate() {
            let row = fill[j as usize];
            fill[j as usize] += 1;
            s.row_of[a] = row;
            let t = a / k;
            let (x, ht) = (&mut s.xs[row * d..(row + 1) * d], &h[t * d..(t + 1) * d]); // [d_model] each
            if w.scale_input {
                x.iter_mut().zip(ht).for_each(|(x, &v)| *x = v * s.weight[a]);
            } else {
                x.copy_from_slice(ht);
            }
        }
    }
    stats.record_routing(&s.counts);
    // ---- experts (+ shared experts) in one grouped forward
    let n_shared = if with_shared { n_tok } else { 0 };
    s.ys.resize((n_rows + n_shared) * d, 0.0);
    let mut groups = Vec::with_capacity(e + 1);
    for j in 0..e {
        let (r0, m) = (s.offsets[j], s.counts[j]);
        if m > 0 && local.contains(&j) {
            let mlp = &w.experts[j - w.first_expert];
            groups.push(Group { mlp, x: &s.xs[r0 * d..(r0 + m) * d], m, row0: r0 });
            stats.add_mlp(mlp, m, d);
        }
    }
    if let Some(sh) = w.shared.as_ref().filter(|_| with_shared) {
        groups.push(Group { mlp: sh, x: h, m: n_tok, row0: n_rows });
        stats.add_mlp(sh, n_tok, d);
    }
    grouped_mlp_forward(&mut s.ys, &groups, d, kernel, &mut s.ffn);
    // ---- combine: out[t] = (gated) shared[t] + Σ_slots w · y[row] (w = 1 with scale_input)
    for t in 0..n_tok {
        let o = &mut out[t * d..(t + 1) * d];
        if with_shared {
            o.copy_from_slice(&s.ys[(n_rows + t) * d..(n_rows + t + 1) * d]);
            if let Some(gw) = &w.shared_gate {
                let z: f32 = h[t * d..(t + 1) * d].iter().zip(gw).map(|(&a, &b)| a * b).sum();
                let sg = sigmoid_exact(z);
                o.iter_mut().for_each(|v| *v *= sg);
            }
        } else {
            o.fill(0.0);
        }
        for slot in 0..k {
            if !local.contains(&(s.idx[t * k + slot] as usize)) {
                continue; // another rank's expert
            }
            let row = s.row_of[t * k + slot];
            let y = &s.ys[row * d..(row + 1) * d]; // [d_model]
            if w.scale_input {
                o.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
            } else {
                let wt = s.weight[t * k + slot];
                o.iter_mut().zip(y).for_each(|(a, &b)| *a += wt * b);
            }
        }
    }
    if let Some(c) = ep {
        c.all_reduce_sum_f32(&mut out[..n_tok * d]);
    }
}
