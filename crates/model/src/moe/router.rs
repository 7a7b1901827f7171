//! Router: `z = h·Wrᵀ` → gating (softmax | sigmoid) → top-k on `p + selection_bias` → combine
//! weights (optionally renormalised and scaled) → capacity dropping. And its backward.

use crate::config::{Gating, MoeConfig};
use moe_kernels::linear::{linear_backward, linear_forward};
use moe_kernels::{Par, Real};
use rayon::prelude::*;

/// Router settings of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouterSettings {
    /// routed experts in this layer
    pub n_expert: usize,
    /// top-k
    pub k: usize,
    /// gating function
    pub gating: Gating,
    /// renormalise the k weights
    pub renormalize: bool,
    /// combine-weight multiplier
    pub route_scale: f64,
    /// 0 = dropless
    pub capacity_factor: f64,
    /// group-limited routing: expert groups (0 or 1 = off)
    pub n_group: usize,
    /// groups kept per token
    pub topk_group: usize,
}

impl RouterSettings {
    /// Settings of a layer with `n_expert` experts.
    pub fn new(cfg: &MoeConfig, n_expert: usize) -> Self {
        RouterSettings {
            n_expert,
            k: cfg.n_expert_active,
            gating: cfg.gating,
            renormalize: cfg.renormalize,
            route_scale: cfg.route_scale,
            capacity_factor: cfg.capacity_factor,
            n_group: cfg.ext.as_ref().map_or(0, |x| x.n_group),
            topk_group: cfg.ext.as_ref().map_or(0, |x| x.topk_group),
        }
    }

    /// Expert capacity for `n_tok` tokens, `None` when dropless.
    pub fn capacity(&self, n_tok: usize) -> Option<usize> {
        (self.capacity_factor > 0.0).then(|| (self.capacity_factor * (n_tok * self.k) as f64 / self.n_expert as f64).ceil() as usize)
    }
}

/// The routing decision for a batch of tokens.
#[derive(Clone, Debug)]
pub struct Routing<T> {
    /// tokens routed
    pub n_tok: usize,
    /// settings used
    pub settings: RouterSettings,
    /// router logits `[n_tok, n_expert]`
    pub logits: Vec<T>,
    /// gate values p `[n_tok, n_expert]`
    pub probs: Vec<T>,
    /// selected experts `[n_tok, k]`, by descending selection score
    pub idx: Vec<u32>,
    /// combine weights `[n_tok, k]`
    pub weight: Vec<T>,
    /// assignment survived the capacity limit `[n_tok, k]`
    pub kept: Vec<bool>,
    /// sum of the selected gate values (renormalisation denominator) `[n_tok]`
    pub sel_sum: Vec<T>,
    /// assignments per expert before dropping `[n_expert]`
    pub counts: Vec<u32>,
    /// tokens routed by every process of the job together (`n_tok` in one process); the aux and
    /// z losses are normalised by it
    pub n_tok_global: usize,
    /// assignments per expert before dropping, over every process (`counts` in one process)
    /// `[n_expert]`; the load-balancing loss uses them
    pub counts_global: Vec<u64>,
}

/// Top-k of `score` (descending; ties: lower index first) into `out`.
pub fn top_k<T: Real>(score: &[T], out: &mut [u32]) {
    let mut taken = 0u64;
    let mut taken_big: Vec<bool> = if score.len() > 64 { vec![false; score.len()] } else { Vec::new() };
    for o in out.iter_mut() {
        let mut best: Option<usize> = None;
        for (e, &s) in score.iter().enumerate() {
            let used = if taken_big.is_empty() { taken >> e & 1 == 1 } else { taken_big[e] };
            if used {
                continue;
            }
            if best.is_none_or(|b| s > score[b]) {
                best = Some(e);
            }
        }
        let b = best.expect("k <= n_expert");
        if taken_big.is_empty() {
            taken |= 1 << b;
        } else {
            taken_big[b] = true;
        }
        *o = b as u32;
    }
}

/// Group-limited selection (DeepSeek-V3): keep the `topk_group` groups of `choice` whose two best
/// scores sum highest, set every other expert to −∞.
pub fn limit_groups<T: Real>(choice: &mut [T], n_group: usize, topk_group: usize) {
    let gs = choice.len() / n_group;
    let score: Vec<T> = choice
        .chunks(gs)
        .map(|c| {
            let mut two = [0u32; 2];
            top_k(c, &mut two[..gs.min(2)]);
            two[..gs.min(2)].iter().map(|&j| c[j as usize]).sum()
        })
        .collect();
    let mut keep = vec![0u32; topk_group];
    top_k(&score, &mut keep);
    for (g, c) in choice.chunks_mut(gs).enumerate() {
        if !keep.contains(&(g as u32)) {
            c.fill(T::from_f64(f64::NEG_INFINITY));
        }
    }
}

/// One token's choice, shared by [`route`] and the inference engine: top-k of
/// `choice = p + selection_bias` (`selection_bias` empty or `[n_expert]`), restricted to the best
/// groups when group-limited ([`limit_groups`]), into `ix [k]`; the combine weights `w [k]` are the
/// selected gate values `p [n_expert]` (renormalised when asked) times `route_scale`. Returns the sum
/// of the selected gate values. `choice` is scratch (untouched when there is no bias and no group).
pub fn select_experts<T: Real>(p: &[T], selection_bias: &[f32], s: &RouterSettings, choice: &mut Vec<T>, ix: &mut [u32], w: &mut [T]) -> T {
    if selection_bias.is_empty() && s.n_group <= 1 {
        top_k(p, ix);
    } else {
        choice.clear();
        choice.extend_from_slice(p);
        choice.iter_mut().zip(selection_bias).for_each(|(v, &b)| *v += T::from_f32(b));
        if s.n_group > 1 {
            limit_groups(choice, s.n_group, s.topk_group);
        }
        top_k(choice, ix);
    }
    let sum: T = ix.iter().map(|&j| p[j as usize]).sum();
    let scale = T::from_f64(s.route_scale);
    for (wj, &j) in w.iter_mut().zip(ix.iter()) {
        let v = p[j as usize];
        *wj = if s.renormalize { v / sum } else { v } * scale;
    }
    sum
}

/// Route `h [n_tok, d_model]` with router weight `w_router [n_expert, d_model]` and optional bias
/// `[n_expert]`. `selection_bias` is empty or `[n_expert]`; it changes which experts are chosen,
/// never the weights.
pub fn route<T: Real>(
    w_router: &[T],
    router_bias: Option<&[T]>,
    h: &[T],
    n_tok: usize,
    d_model: usize,
    s: RouterSettings,
    selection_bias: &[f32],
) -> Routing<T> {
    let (e, k) = (s.n_expert, s.k);
    // one token at a time (a matrix-vector product each): a token's logits, and so its experts and
    // weights, do not depend on which other tokens share its batch, bit for bit, so a batch spread
    // over processes routes exactly as it does in one (`parallel`)
    let mut logits = vec![T::ZERO; n_tok * e];
    logits.par_chunks_mut(e).zip(h.par_chunks(d_model)).with_min_len(64).for_each(|(z, x)| {
        linear_forward(z, x, w_router, 1, d_model, e, Par::Seq); // [1, n_expert]
    });
    if let Some(b) = router_bias {
        logits.chunks_mut(e).for_each(|row| row.iter_mut().zip(b).for_each(|(z, &c)| *z += c));
    }
    let mut probs = logits.clone();
    match s.gating {
        Gating::Softmax => moe_kernels::cross_entropy::softmax_rows(&mut probs, e),
        Gating::Sigmoid => probs.iter_mut().for_each(|v| *v = moe_kernels::act::sigmoid_exact(*v)),
    }
    let mut idx = vec![0u32; n_tok * k];
    let mut weight = vec![T::ZERO; n_tok * k];
    let mut sel_sum = vec![T::ZERO; n_tok];
    idx.par_chunks_mut(k)
        .zip(weight.par_chunks_mut(k))
        .zip(sel_sum.par_iter_mut())
        .zip(probs.par_chunks(e))
        .for_each_init(Vec::new, |choice, (((ix, w), ss), p)| *ss = select_experts(p, selection_bias, &s, choice, ix, w));
    let mut counts = vec![0u32; e];
    for &j in &idx {
        counts[j as usize] += 1;
    }
    let kept = match s.capacity(n_tok) {
        None => vec![true; n_tok * k],
        Some(cap) => capacity_keep(&idx, &probs, n_tok, k, e, cap),
    };
    let counts_global = counts.iter().map(|&c| c as u64).collect();
    Routing { n_tok, settings: s, logits, probs, idx, weight, kept, sel_sum, counts, n_tok_global: n_tok, counts_global }
}

/// For each expert keep the `cap` assignments with the largest gate value
/// (ties: lower token index first); returns the kept mask `[n_tok, k]`. A total order
/// (`f64::total_cmp`), so even NaN gate values give a deterministic, well-defined sort; the
/// model's forward refuses non-finite gates before anything uses the result.
pub(crate) fn capacity_keep<T: Real>(idx: &[u32], probs: &[T], n_tok: usize, k: usize, e: usize, cap: usize) -> Vec<bool> {
    let mut per_expert: Vec<Vec<usize>> = vec![Vec::new(); e]; // assignment ids a = t·k + slot
    for (a, &j) in idx.iter().enumerate() {
        per_expert[j as usize].push(a);
    }
    let mut kept = vec![false; n_tok * k];
    for (j, list) in per_expert.iter_mut().enumerate() {
        if list.len() > cap {
            // stable sort keeps ascending assignment id (token, then slot) among equal gate values
            list.sort_by(|&a, &b| probs[(b / k) * e + j].to_f64().total_cmp(&probs[(a / k) * e + j].to_f64()));
            list.truncate(cap);
        }
        for &a in list.iter() {
            kept[a] = true;
        }
    }
    kept
}

/// Gradient of the gate values `p` from the gradient of the combine weights `d_weight [n_tok, k]`
/// (dropped slots must carry 0). **Accumulates** into `d_probs [n_tok, n_expert]`.
pub fn weights_backward<T: Real>(d_probs: &mut [T], d_weight: &[T], r: &Routing<T>) {
    let (e, k) = (r.settings.n_expert, r.settings.k);
    let scale = T::from_f64(r.settings.route_scale);
    d_probs.par_chunks_mut(e).enumerate().for_each(|(t, dp)| {
        let ix = &r.idx[t * k..(t + 1) * k];
        let dw = &d_weight[t * k..(t + 1) * k];
        if r.settings.renormalize {
            // w_s = scale · p_s / S, S = Σ_selected p
            let s = r.sel_sum[t];
            let dot: T = ix.iter().zip(dw).map(|(&j, &d)| d * r.probs[t * e + j as usize]).sum();
            for (&j, &d) in ix.iter().zip(dw) {
                dp[j as usize] += scale * (d / s - dot / (s * s));
            }
        } else {
            for (&j, &d) in ix.iter().zip(dw) {
                dp[j as usize] += scale * d;
            }
        }
    });
}

/// Gradient of the logits from the gradient of the gate values: **overwrites** `d_logits`.
pub fn gating_backward<T: Real>(d_logits: &mut [T], d_probs: &[T], r: &Routing<T>) {
    let e = r.settings.n_expert;
    d_logits.par_chunks_mut(e).zip(d_probs.par_chunks(e).zip(r.probs.par_chunks(e))).for_each(|(dz, (dp, p))| match r.settings.gating {
        Gating::Softmax => {
            let dot: T = dp.iter().zip(p).map(|(&a, &b)| a * b).sum();
            for ((z, &d), &pv) in dz.iter_mut().zip(dp).zip(p) {
                *z = pv * (d - dot);
            }
        }
        Gating::Sigmoid => {
            for ((z, &d), &pv) in dz.iter_mut().zip(dp).zip(p) {
                *z = d * pv * (T::ONE - pv);
            }
        }
    });
}

/// Router linear backward: **accumulates** into `d_h` and `d_w_router`.
#[allow(clippy::too_many_arguments)]
pub fn router_linear_backward<T: Real>(
    d_h: &mut [T],
    d_w_router: &mut [T],
    d_logits: &[T],
    h: &[T],
    w_router: &[T],
    n_tok: usize,
    d_model: usize,
    n_expert: usize,
) {
    linear_backward(Some(d_h), true, d_w_router, d_logits, h, w_router, n_tok, d_model, n_expert, Par::Pool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_ties_prefer_lower_index() {
        let mut out = [0u32; 3];
        top_k(&[0.5f32, 0.9, 0.5, 0.9], &mut out);
        assert_eq!(out, [1, 3, 0]);
        let big: Vec<f32> = (0..100).map(|i| (i % 7) as f32).collect();
        let mut out = [0u32; 2];
        top_k(&big, &mut out);
        assert_eq!(out, [6, 13]);
    }

    #[test]
    fn capacity_keeps_highest_probability_assignments() {
        // 4 tokens, 1 expert of 2 used by all, capacity 2: keeps the two largest p.
        let probs = [0.6f32, 0.4, 0.9, 0.1, 0.6, 0.4, 0.2, 0.8];
        let idx = [0u32, 0, 0, 0];
        let kept = capacity_keep(&idx, &probs, 4, 1, 2, 2);
        assert_eq!(kept, vec![true, true, false, false]);
    }
}
