//! Causal multi-head attention with grouped-query heads, over full sequences (training / prefill).
//!
//! Layout: `q [n_seq, seq_len, n_head, d_head]`, `k, v [n_seq, seq_len, n_head_kv, d_head]`,
//! `out [n_seq, seq_len, n_head, d_head]`, saved probabilities `probs [n_seq, n_head, seq_len, seq_len]`.
//! Query head `h` reads key/value head `h / (n_head / n_head_kv)`. Each (sequence, head) pair is one
//! rayon task running small sequential GEMMs.

use crate::exp::{exp_shifted_sum, row_max};
use crate::matmul::{matmul, MatmulShape, Par};
use crate::Real;
use rayon::prelude::*;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// sequences in the batch
    pub n_seq: usize,
    /// tokens per sequence
    pub seq_len: usize,
    /// query heads
    pub n_head: usize,
    /// key/value heads
    pub n_head_kv: usize,
    /// width of one head
    pub d_head: usize,
}

impl AttnShape {
    fn check<T>(&self, q: &[T], k: &[T], v: &[T]) {
        assert!(self.n_head_kv > 0 && self.n_head.is_multiple_of(self.n_head_kv), "attention: n_head % n_head_kv != 0");
        assert_eq!(q.len(), self.n_seq * self.seq_len * self.n_head * self.d_head, "attention: q length");
        assert_eq!(k.len(), self.n_seq * self.seq_len * self.n_head_kv * self.d_head, "attention: k length");
        assert_eq!(v.len(), k.len(), "attention: v length");
    }
    fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }
}

/// Copy head `h` of `x [n_seq, seq_len, n_h, d]` for sequence `b` into a contiguous `[seq_len, d]`.
fn gather_head<T: Real>(x: &[T], b: usize, h: usize, n_h: usize, s: &AttnShape) -> Vec<T> {
    let (t, d) = (s.seq_len, s.d_head);
    let mut out = Vec::with_capacity(t * d);
    for i in 0..t {
        let base = ((b * t + i) * n_h + h) * d;
        out.extend_from_slice(&x[base..base + d]);
    }
    out
}

fn scatter_head<T: Real>(x: &mut [T], src: &[T], b: usize, h: usize, n_h: usize, s: &AttnShape) {
    let (t, d) = (s.seq_len, s.d_head);
    for i in 0..t {
        let base = ((b * t + i) * n_h + h) * d;
        x[base..base + d].copy_from_slice(&src[i * d..(i + 1) * d]);
    }
}

/// Forward: writes `out` and `probs`.
pub fn attention_forward<T: Real>(out: &mut [T], probs: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape) {
    s.check(q, k, v);
    let (t, d) = (s.seq_len, s.d_head);
    assert_eq!(probs.len(), s.n_seq * s.n_head * t * t, "attention_forward: probs length");
    assert_eq!(out.len(), q.len(), "attention_forward: out length");
    let scale = T::from_f64(1.0 / (d as f64).sqrt());
    let heads: Vec<Vec<T>> = probs
        .par_chunks_mut(t * t)
        .enumerate()
        .map(|(bh, p)| {
            let (b, h) = (bh / s.n_head, bh % s.n_head);
            let g = h / s.group();
            let qh = gather_head(q, b, h, s.n_head, &s); // [t, d]
            let kg = gather_head(k, b, g, s.n_head_kv, &s); // [t, d]
            let vg = gather_head(v, b, g, s.n_head_kv, &s); // [t, d]
            matmul(p, &qh, &kg, MatmulShape::nt(t, d, t), T::ZERO, Par::Seq); // [t, t]
            for i in 0..t {
                let row = &mut p[i * t..(i + 1) * t];
                row[..=i].iter_mut().for_each(|x| *x *= scale);
                let m = row_max(&row[..=i]);
                let sum = exp_shifted_sum(&mut row[..=i], m);
                let inv = T::ONE / sum;
                for x in row[..=i].iter_mut() {
                    *x *= inv;
                }
                row[i + 1..].fill(T::ZERO);
            }
            let mut oh = vec![T::ZERO; t * d];
            matmul(&mut oh, p, &vg, MatmulShape::nn(t, t, d), T::ZERO, Par::Seq); // [t, d]
            oh
        })
        .collect();
    for (bh, oh) in heads.iter().enumerate() {
        scatter_head(out, oh, bh / s.n_head, bh % s.n_head, s.n_head, &s);
    }
}

/// Backward: **overwrites** `d_q`, `d_k`, `d_v`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Real>(
    d_q: &mut [T],
    d_k: &mut [T],
    d_v: &mut [T],
    d_out: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    probs: &[T],
    s: AttnShape,
) {
    s.check(q, k, v);
    let (t, d) = (s.seq_len, s.d_head);
    assert_eq!(probs.len(), s.n_seq * s.n_head * t * t, "attention_backward: probs length");
    assert_eq!(d_out.len(), q.len(), "attention_backward: d_out length");
    assert_eq!(d_q.len(), q.len(), "attention_backward: d_q length");
    assert!(d_k.len() == k.len() && d_v.len() == v.len(), "attention_backward: d_k/d_v length");
    let scale = T::from_f64(1.0 / (d as f64).sqrt());
    let grp = s.group();
    // One task per (sequence, kv head): it owns d_k/d_v of that head and d_q of its query heads.
    let results: Vec<(Vec<Vec<T>>, Vec<T>, Vec<T>)> = (0..s.n_seq * s.n_head_kv)
        .into_par_iter()
        .map(|bg| {
            let (b, g) = (bg / s.n_head_kv, bg % s.n_head_kv);
            let kg = gather_head(k, b, g, s.n_head_kv, &s);
            let vg = gather_head(v, b, g, s.n_head_kv, &s);
            let mut dk = vec![T::ZERO; t * d];
            let mut dv = vec![T::ZERO; t * d];
            let mut dqs = Vec::with_capacity(grp);
            let mut dp = vec![T::ZERO; t * t];
            for h in g * grp..(g + 1) * grp {
                let p = &probs[(b * s.n_head + h) * t * t..(b * s.n_head + h + 1) * t * t];
                let qh = gather_head(q, b, h, s.n_head, &s);
                let doh = gather_head(d_out, b, h, s.n_head, &s);
                matmul(&mut dv, p, &doh, MatmulShape::tn(t, t, d), T::ONE, Par::Seq); // dV += Pᵀ dO
                matmul(&mut dp, &doh, &vg, MatmulShape::nt(t, d, t), T::ZERO, Par::Seq); // dP = dO Vᵀ
                for i in 0..t {
                    let pr = &p[i * t..(i + 1) * t];
                    let dr = &mut dp[i * t..(i + 1) * t];
                    let dot: T = pr[..=i].iter().zip(&dr[..=i]).map(|(&a, &b)| a * b).sum();
                    for j in 0..=i {
                        dr[j] = pr[j] * (dr[j] - dot) * scale;
                    }
                    dr[i + 1..].fill(T::ZERO);
                }
                let mut dq = vec![T::ZERO; t * d];
                matmul(&mut dq, &dp, &kg, MatmulShape::nn(t, t, d), T::ZERO, Par::Seq); // dQ = dS K
                matmul(&mut dk, &dp, &qh, MatmulShape::tn(t, t, d), T::ONE, Par::Seq); // dK += dSᵀ Q
                dqs.push(dq);
            }
            (dqs, dk, dv)
        })
        .collect();
    for (bg, (dqs, dk, dv)) in results.iter().enumerate() {
        let (b, g) = (bg / s.n_head_kv, bg % s.n_head_kv);
        scatter_head(d_k, dk, b, g, s.n_head_kv, &s);
        scatter_head(d_v, dv, b, g, s.n_head_kv, &s);
        for (j, dq) in dqs.iter().enumerate() {
            scatter_head(d_q, dq, b, g * grp + j, s.n_head, &s);
        }
    }
}

/// The plainly correct twin of [`attention_forward`]: per-element loops, f64 accumulation.
pub fn attention_forward_naive<T: Real>(out: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape) {
    s.check(q, k, v);
    let (t, d) = (s.seq_len, s.d_head);
    let scale = 1.0 / (d as f64).sqrt();
    for b in 0..s.n_seq {
        for h in 0..s.n_head {
            let g = h / s.group();
            for i in 0..t {
                let qi = &q[((b * t + i) * s.n_head + h) * d..][..d];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[((b * t + j) * s.n_head_kv + g) * d..][..d];
                        qi.iter().zip(kj).map(|(a, b)| a.to_f64() * b.to_f64()).sum::<f64>() * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = w.iter().sum();
                let o = &mut out[((b * t + i) * s.n_head + h) * d..][..d];
                for (c, o) in o.iter_mut().enumerate() {
                    let acc: f64 = (0..=i).map(|j| w[j] / z * v[((b * t + j) * s.n_head_kv + g) * d + c].to_f64()).sum();
                    *o = T::from_f64(acc);
                }
            }
        }
    }
}
