//! Rotary position embedding, Hugging Face "rotate_half" layout (pairs `i` and `i + d_head/2`).

use crate::Real;
use rayon::prelude::*;

/// Precomputed cos/sin for positions `0..n_pos`.
#[derive(Clone, Debug)]
pub struct RopeTable<T> {
    d_head: usize,
    cos: Vec<T>, // [n_pos, d_head/2]
    sin: Vec<T>, // [n_pos, d_head/2]
}

impl<T: Real> RopeTable<T> {
    /// Table for `n_pos` positions; `d_head` must be even.
    pub fn new(d_head: usize, theta: f64, n_pos: usize) -> Self {
        assert!(d_head.is_multiple_of(2), "RoPE needs an even d_head");
        let half = d_head / 2;
        let mut cos = Vec::with_capacity(n_pos * half);
        let mut sin = Vec::with_capacity(n_pos * half);
        for p in 0..n_pos {
            for i in 0..half {
                let f = theta.powf(-2.0 * i as f64 / d_head as f64);
                let a = p as f64 * f;
                cos.push(T::from_f64(a.cos()));
                sin.push(T::from_f64(a.sin()));
            }
        }
        RopeTable { d_head, cos, sin }
    }

    /// Table for `n_pos` positions from explicit inverse frequencies `[d_head / 2]` (scaled RoPE:
    /// linear, llama3, YaRN), with cos and sin multiplied by `factor` (YaRN's attention factor).
    /// The backward (`inverse`) then applies `factor · Rᵀ`, the exact gradient of `factor · R`.
    pub fn from_frequencies(inv_freq: &[f32], factor: f32, n_pos: usize) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(n_pos * half);
        let mut sin = Vec::with_capacity(n_pos * half);
        for p in 0..n_pos {
            for &f in inv_freq {
                let a = p as f64 * f as f64;
                cos.push(T::from_f64(a.cos() * factor as f64));
                sin.push(T::from_f64(a.sin() * factor as f64));
            }
        }
        RopeTable { d_head: 2 * half, cos, sin }
    }

    /// Number of positions covered.
    pub fn n_pos(&self) -> usize {
        self.cos.len() / (self.d_head / 2).max(1)
    }

    /// Rotate `x [n_seq, seq_len, n_head, d_head]` in place, position of row t = `pos0 + t`.
    /// `inverse` rotates by the negative angle (the backward of the forward rotation).
    pub fn apply(&self, x: &mut [T], n_seq: usize, seq_len: usize, n_head: usize, pos0: usize, inverse: bool) {
        let d = self.d_head;
        let half = d / 2;
        assert_eq!(x.len(), n_seq * seq_len * n_head * d, "rope: x length");
        assert!(pos0 + seq_len <= self.n_pos(), "rope: position {} beyond table ({})", pos0 + seq_len, self.n_pos());
        x.par_chunks_mut(n_head * d).enumerate().for_each(|(row, xr)| {
            let p = pos0 + row % seq_len;
            let cs = &self.cos[p * half..(p + 1) * half];
            let sn = &self.sin[p * half..(p + 1) * half];
            for h in xr.chunks_mut(d) {
                for i in 0..half {
                    let (x1, x2) = (h[i], h[i + half]);
                    let s = if inverse { -sn[i] } else { sn[i] };
                    h[i] = x1 * cs[i] - x2 * s;
                    h[i + half] = x2 * cs[i] + x1 * s;
                }
            }
        });
    }

    /// Like [`RopeTable::apply`] with an explicit position for every row of `x [n_rows, n_head, d_head]`.
    pub fn apply_at(&self, x: &mut [T], positions: &[usize], n_head: usize) {
        let d = self.d_head;
        let half = d / 2;
        assert_eq!(x.len(), positions.len() * n_head * d, "rope: x length");
        for (xr, &p) in x.chunks_mut(n_head * d).zip(positions) {
            assert!(p < self.n_pos(), "rope: position {p} beyond table");
            let cs = &self.cos[p * half..(p + 1) * half];
            let sn = &self.sin[p * half..(p + 1) * half];
            for h in xr.chunks_mut(d) {
                for i in 0..half {
                    let (x1, x2) = (h[i], h[i + half]);
                    h[i] = x1 * cs[i] - x2 * sn[i];
                    h[i + half] = x2 * cs[i] + x1 * sn[i];
                }
            }
        }
    }
}
