//! Token embedding lookup.

use crate::Real;

/// `out[i] = table[tokens[i]]`; tokens must be `< n_vocab` (checked).
pub fn embedding_forward<T: Real>(out: &mut [T], table: &[T], tokens: &[u32], d: usize) {
    assert_eq!(out.len(), tokens.len() * d, "embedding_forward: out length");
    let n_vocab = table.len() / d;
    for (o, &t) in out.chunks_mut(d).zip(tokens) {
        let t = t as usize;
        assert!(t < n_vocab, "embedding_forward: token {t} >= n_vocab {n_vocab}");
        o.copy_from_slice(&table[t * d..(t + 1) * d]);
    }
}

/// Backward of [`embedding_forward`]: **accumulates** `d_out` rows into `d_table` rows (a token
/// that occurs several times collects all its rows); tokens must be `< n_vocab` (checked).
pub fn embedding_backward<T: Real>(d_table: &mut [T], d_out: &[T], tokens: &[u32], d: usize) {
    assert_eq!(d_out.len(), tokens.len() * d, "embedding_backward: d_out length");
    let n_vocab = d_table.len().checked_div(d).unwrap_or(0);
    for (g, &t) in d_out.chunks(d.max(1)).zip(tokens) {
        let t = t as usize;
        assert!(t < n_vocab, "embedding_backward: token {t} >= n_vocab {n_vocab}");
        for (a, &b) in d_table[t * d..(t + 1) * d].iter_mut().zip(g) {
            *a += b;
        }
    }
}
