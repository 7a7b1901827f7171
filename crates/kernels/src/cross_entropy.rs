//! Softmax cross-entropy over rows of logits, and row softmax.

use crate::exp::{exp_shifted_sum, row_max, sum_exp_shifted};
use crate::Real;
use rayon::prelude::*;

/// Numerically stable log-sum-exp of a row.
pub fn logsumexp<T: Real>(row: &[T]) -> T {
    let m = row_max(row);
    m + sum_exp_shifted(row, m).ln()
}

/// In-place softmax of each row of width `d` (`x.len()` must be a multiple of `d > 0`).
pub fn softmax_rows<T: Real>(x: &mut [T], d: usize) {
    assert!(d > 0 && x.len().is_multiple_of(d), "softmax_rows: length {} is not a multiple of row width {d}", x.len());
    x.par_chunks_mut(d).with_min_len(16).for_each(crate::act::softmax_in_place);
}

/// Per-row losses `-log softmax(logits)[target]` for `logits [n, n_vocab]`.
pub fn cross_entropy_forward<T: Real>(losses: &mut [T], logits: &[T], targets: &[u32], n_vocab: usize) {
    assert!(n_vocab > 0, "cross_entropy_forward: n_vocab is 0");
    assert_eq!(logits.len(), targets.len() * n_vocab, "cross_entropy_forward: logits length");
    assert_eq!(losses.len(), targets.len(), "cross_entropy_forward: losses length");
    losses.par_iter_mut().zip(logits.par_chunks(n_vocab).zip(targets.par_iter())).for_each(|(l, (row, &t))| {
        assert!((t as usize) < n_vocab, "cross_entropy_forward: target {t} >= n_vocab {n_vocab}");
        *l = logsumexp(row) - row[t as usize];
    });
}

/// Turns `logits` **in place** into `d_logits = scale · (softmax(logits) − onehot(target))`,
/// the gradient of `scale · Σ losses`.
pub fn cross_entropy_backward_inplace<T: Real>(logits: &mut [T], targets: &[u32], n_vocab: usize, scale: T) {
    assert!(n_vocab > 0, "cross_entropy_backward: n_vocab is 0");
    assert_eq!(logits.len(), targets.len() * n_vocab, "cross_entropy_backward: logits length");
    logits.par_chunks_mut(n_vocab).zip(targets.par_iter()).for_each(|(row, &t)| {
        assert!((t as usize) < n_vocab, "cross_entropy_backward: target {t} >= n_vocab {n_vocab}");
        let lse = logsumexp(row);
        for v in row.iter_mut() {
            *v = (*v - lse).exp_fast() * scale;
        }
        row[t as usize] -= scale;
    });
}

/// Forward and backward in one pass over each row (one `exp` per logit): writes
/// `losses[i] = −log softmax(row_i)[target_i]` and turns `logits` **in place** into
/// `scale · (softmax − onehot)`. Equals [`cross_entropy_forward`] followed by
/// [`cross_entropy_backward_inplace`].
pub fn cross_entropy_fused_inplace<T: Real>(losses: &mut [T], logits: &mut [T], targets: &[u32], n_vocab: usize, scale: T) {
    assert!(n_vocab > 0, "cross_entropy_fused: n_vocab is 0");
    assert_eq!(logits.len(), targets.len() * n_vocab, "cross_entropy_fused: logits length");
    assert_eq!(losses.len(), targets.len(), "cross_entropy_fused: losses length");
    logits.par_chunks_mut(n_vocab).zip(targets.par_iter().zip(losses.par_iter_mut())).for_each(|(row, (&t, loss))| {
        let t = t as usize;
        assert!(t < n_vocab, "cross_entropy_fused: target {t} >= n_vocab {n_vocab}");
        let m = row_max(row);
        let target_logit = row[t];
        let s = exp_shifted_sum(row, m);
        *loss = m + s.ln() - target_logit;
        let c = scale / s;
        for v in row.iter_mut() {
            *v *= c;
        }
        row[t] -= scale;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_fused_equals_forward_then_backward() {
        let mut r = crate::rng::Rng::new(5);
        let (n, v) = (7, 13);
        let logits: Vec<f64> = (0..n * v).map(|_| r.normal() * 3.0).collect();
        let targets: Vec<u32> = (0..n).map(|_| r.below(v as u64) as u32).collect();
        let mut l1 = vec![0.0; n];
        cross_entropy_forward(&mut l1, &logits, &targets, v);
        let mut g1 = logits.clone();
        cross_entropy_backward_inplace(&mut g1, &targets, v, 0.3);
        let mut l2 = vec![0.0; n];
        let mut g2 = logits.clone();
        cross_entropy_fused_inplace(&mut l2, &mut g2, &targets, v, 0.3);
        for (a, b) in l1.iter().zip(&l2).chain(g1.iter().zip(&g2)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}
