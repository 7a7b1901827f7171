//! Softmax cross-entropy over rows of logits, and row softmax.

use crate::Real;
use rayon::prelude::*;

/// Numerically stable log-sum-exp of a row.
pub fn logsumexp<T: Real>(row: &[T]) -> T {
    let m = row.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), T::max);
    let s: T = row.iter().map(|&v| (v - m).exp()).sum();
    m + s.ln()
}

/// In-place softmax of each row of width `d`.
pub fn softmax_rows<T: Real>(x: &mut [T], d: usize) {
    x.par_chunks_mut(d).with_min_len(16).for_each(|row| {
        let m = row.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), T::max);
        let mut s = T::ZERO;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        let inv = T::ONE / s;
        for v in row.iter_mut() {
            *v *= inv;
        }
    });
}

/// Per-row losses `-log softmax(logits)[target]` for `logits [n, n_vocab]`.
pub fn cross_entropy_forward<T: Real>(losses: &mut [T], logits: &[T], targets: &[u32], n_vocab: usize) {
    assert_eq!(logits.len(), targets.len() * n_vocab, "cross_entropy_forward: logits length");
    losses.par_iter_mut().zip(logits.par_chunks(n_vocab).zip(targets.par_iter())).for_each(|(l, (row, &t))| {
        *l = logsumexp(row) - row[t as usize];
    });
}

/// Turns `logits` **in place** into `d_logits = scale · (softmax(logits) − onehot(target))`,
/// the gradient of `scale · Σ losses`.
pub fn cross_entropy_backward_inplace<T: Real>(logits: &mut [T], targets: &[u32], n_vocab: usize, scale: T) {
    assert_eq!(logits.len(), targets.len() * n_vocab, "cross_entropy_backward: logits length");
    logits.par_chunks_mut(n_vocab).zip(targets.par_iter()).for_each(|(row, &t)| {
        let lse = logsumexp(row);
        for v in row.iter_mut() {
            *v = (*v - lse).exp() * scale;
        }
        row[t as usize] -= scale;
    });
}
