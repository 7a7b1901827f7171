//! The MoE FFN at inference: route → counting sort by expert → grouped experts (+ shared experts,
//! in the same two parallel regions) → weighted combine.
//!
//! Routing follows `moe_model::moe::router::route` exactly (same gating, top-k with the selection
//! bias and the same tie rule, renormalisation and scale) and is always dropless, as in
//! [`crate::decode`]. The (token, slot) assignments are counting-sorted by expert, so each touched
//! expert sees its tokens as one contiguous block (rows in token order) and runs once.

use super::ffn::{grouped_mlp_forward, FfnScratch, Group};
use super::weights::MoeWeights;
use super::StepStats;
use moe_kernels::gemv::{gemv_ref, Kernel};
use moe_kernels::quant::WeightsRef;
use moe_kernels::Par;
use moe_model::moe::router::top_k;
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

/// In-place softmax of one row (the maths of `moe_kernels::cross_entropy::softmax_rows`).
fn softmax(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `out [n_tok, d_model]` (**overwritten**) = MoE FFN of `h [n_tok, d_model]`; `kernel` is the
/// experts' GEMV kernel (the router always uses the exact one).
#[allow(clippy::too_many_arguments)]
pub fn moe_forward(out: &mut [f32], h: &[f32], w: &MoeWeights, mc: &MoeConfig, selection_bias: &[f32], n_tok: usize, d_model: usize, kernel: Kernel, s: &mut MoeScratch, stats: &mut StepStats) {
    let (e, k) = (w.n_expert, mc.n_expert_active);
    let d = d_model;
    // ---- router: z = h·Wrᵀ → gate values p
    s.probs.resize(n_tok * e, 0.0);
    gemv_ref(&mut s.probs, h, WeightsRef::f32(&w.router, e, d), n_tok, Par::Seq, Kernel::Auto); // [n_tok, n_expert]
    stats.add_matmul(n_tok, e, d, 4 * e * d);
    match mc.gating {
        // on this thread: n_tok·n_expert values, less than one rayon round trip costs
        Gating::Softmax => s.probs.chunks_mut(e).for_each(softmax),
        Gating::Sigmoid => s.probs.iter_mut().for_each(|v| *v = sigmoid(*v)),
    }
    // ---- top-k and combine weights, as the model's router
    s.idx.resize(n_tok * k, 0);
    s.weight.resize(n_tok * k, 0.0);
    let scale = mc.route_scale as f32;
    for t in 0..n_tok {
        let p = &s.probs[t * e..(t + 1) * e];
        let ix = &mut s.idx[t * k..(t + 1) * k];
        if selection_bias.is_empty() {
            top_k(p, ix);
        } else {
            s.choice.clear();
            s.choice.extend(p.iter().zip(selection_bias).map(|(&v, &b)| v + b));
            top_k(&s.choice, ix);
        }
        let sum: f32 = ix.iter().map(|&j| p[j as usize]).sum();
        for (wj, &j) in s.weight[t * k..(t + 1) * k].iter_mut().zip(ix.iter()) {
            let v = p[j as usize];
            *wj = if mc.renormalize { v / sum } else { v } * scale;
        }
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
            s.xs[row * d..(row + 1) * d].copy_from_slice(&h[t * d..(t + 1) * d]);
        }
    }
    stats.record_routing(&s.counts);
    // ---- experts (+ shared experts) in one grouped forward
    let n_shared = if w.shared.is_some() { n_tok } else { 0 };
    s.ys.resize((n_rows + n_shared) * d, 0.0);
    let mut groups = Vec::with_capacity(e + 1);
    for j in 0..e {
        let (r0, m) = (s.offsets[j], s.counts[j]);
        if m > 0 {
            let mlp = &w.experts[j];
            groups.push(Group { mlp, x: &s.xs[r0 * d..(r0 + m) * d], m, row0: r0 });
            stats.add_mlp(mlp, m, d);
        }
    }
    if let Some(sh) = &w.shared {
        groups.push(Group { mlp: sh, x: h, m: n_tok, row0: n_rows });
        stats.add_mlp(sh, n_tok, d);
    }
    grouped_mlp_forward(&mut s.ys, &groups, d, kernel, &mut s.ffn);
    // ---- combine: out[t] = (gated) shared[t] + Σ_slots w · y[row]
    for t in 0..n_tok {
        let o = &mut out[t * d..(t + 1) * d];
        if w.shared.is_some() {
            o.copy_from_slice(&s.ys[(n_rows + t) * d..(n_rows + t + 1) * d]);
            if let Some(gw) = &w.shared_gate {
                let z: f32 = h[t * d..(t + 1) * d].iter().zip(gw).map(|(&a, &b)| a * b).sum();
                let sg = sigmoid(z);
                o.iter_mut().for_each(|v| *v *= sg);
            }
        } else {
            o.fill(0.0);
        }
        for slot in 0..k {
            let row = s.row_of[t * k + slot];
            let wt = s.weight[t * k + slot];
            for (a, &b) in o.iter_mut().zip(&s.ys[row * d..(row + 1) * d]) {
                *a += wt * b;
            }
        }
    }
}
