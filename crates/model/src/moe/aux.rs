//! Auxiliary router losses, returned as values: the Switch/GShard load-balancing loss
//! `α · E · Σ_e f_e · P_e` and the router z-loss `β · mean_t logsumexp(z_t)²`.

use super::router::Routing;
use moe_kernels::cross_entropy::logsumexp;
use moe_kernels::Real;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Weighted auxiliary losses of one MoE layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuxLosses {
    /// load-balancing loss, already multiplied by its coefficient
    pub aux: f64,
    /// z-loss, already multiplied by its coefficient
    pub z: f64,
}

/// `f_e`: fraction of assignments per expert (before dropping, over every process) — a constant
/// in the backward.
fn fractions<T>(r: &Routing<T>) -> Vec<f64> {
    let tot = (r.n_tok_global * r.settings.k).max(1) as f64;
    r.counts_global.iter().map(|&c| c as f64 / tot).collect()
}

/// Row `t` of the normalised gate values `q = p / Σ p`.
fn q_row<T: Real>(p: &[T]) -> (T, impl Iterator<Item = T> + '_) {
    let s: T = p.iter().copied().sum();
    (s, p.iter().map(move |&v| v / s))
}

/// Both losses for one layer. With several processes each returns its tokens' share (normalised
/// by the global token count, with the global expert fractions): the sum over processes is the
/// loss of the whole batch.
pub fn aux_forward<T: Real>(r: &Routing<T>, aux_coef: f64, z_coef: f64) -> AuxLosses {
    let e = r.settings.n_expert;
    let n = r.n_tok_global.max(1) as f64;
    let f = fractions(r);
    let mut aux = 0.0;
    if aux_coef > 0.0 {
        let mut p_mean = vec![0.0f64; e];
        for p in r.probs.chunks(e) {
            let (_, q) = q_row(p);
            for (m, v) in p_mean.iter_mut().zip(q) {
                *m += v.to_f64();
            }
        }
        aux = aux_coef * e as f64 * f.iter().zip(&p_mean).map(|(f, p)| f * p / n).sum::<f64>();
    }
    let mut z = 0.0;
    if z_coef > 0.0 {
        let s: f64 = r.logits.par_chunks(e).map(|row| logsumexp(row).to_f64().powi(2)).sum();
        z = z_coef * s / n;
    }
    AuxLosses { aux, z }
}

/// Gradient of `scale · aux` with respect to the gate values: **accumulates** into `d_probs`.
pub fn aux_backward_probs<T: Real>(d_probs: &mut [T], r: &Routing<T>, aux_coef: f64, scale: f64) {
    if aux_coef == 0.0 {
        return;
    }
    let e = r.settings.n_expert;
    let f = fractions(r);
    // dL/dq_te = α·E·f_e / N
    let dq: Vec<T> = f.iter().map(|&fe| T::from_f64(scale * aux_coef * e as f64 * fe / r.n_tok_global as f64)).collect();
    d_probs.par_chunks_mut(e).zip(r.probs.par_chunks(e)).for_each(|(dp, p)| {
        let (s, q) = q_row(p);
        // q_j = p_j / S  ⇒  dp_j = (dq_j − Σ_e dq_e q_e) / S
        let dot: T = dq.iter().zip(q).map(|(&a, b)| a * b).sum();
        for (d, &g) in dp.iter_mut().zip(&dq) {
            *d += (g - dot) / s;
        }
    });
}

/// Gradient of `scale · z` with respect to the router logits: **accumulates** into `d_logits`.
pub fn z_backward_logits<T: Real>(d_logits: &mut [T], r: &Routing<T>, z_coef: f64, scale: f64) {
    if z_coef == 0.0 {
        return;
    }
    let e = r.settings.n_expert;
    let c = T::from_f64(scale * z_coef * 2.0 / r.n_tok_global as f64);
    d_logits.par_chunks_mut(e).zip(r.logits.par_chunks(e)).for_each(|(dz, z)| {
        let lse = logsumexp(z);
        for (d, &v) in dz.iter_mut().zip(z) {
            *d += c * lse * (v - lse).exp();
        }
    });
}

/// Entropy (nats) of the normalised gate values, summed over tokens.
pub fn entropy_sum<T: Real>(r: &Routing<T>) -> f64 {
    let e = r.settings.n_expert;
    r.probs
        .par_chunks(e)
        .map(|p| {
            let (_, q) = q_row(p);
            q.map(|v| {
                let v = v.to_f64();
                if v > 0.0 {
                    -v * v.ln()
                } else {
                    0.0
                }
            })
            .sum::<f64>()
        })
        .sum()
}
