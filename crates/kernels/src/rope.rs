//! Rotary position embedding, Hugging Face "rotate_half" layout (pairs `i` and `i + d_head/2`).

use crate::Real;
use rayon::prelude::*;

/// cos/sin for positions `0..n_pos`: the first [`RopeTable::CACHED_POSITIONS`] precomputed, any
/// later one computed when a row at that position is rotated, with the same arithmetic (so the
/// values are bit-identical to a full table). A checkpoint with a context of millions of positions
/// therefore costs no memory for positions it never reaches.
#[derive(Clone, Debug)]
pub struct RopeTable<T> {
    d_head: usize,
    /// positions the table answers for
    n_pos: usize,
    /// inverse frequencies `[d_head / 2]` and the factor cos and sin are multiplied by
    freq: Vec<f64>,
    factor: f64,
    cos: Vec<T>, // [min(n_pos, CACHED_POSITIONS), d_head/2]
    sin: Vec<T>, // [min(n_pos, CACHED_POSITIONS), d_head/2]
}

impl<T: Real> RopeTable<T> {
    /// Positions whose cos/sin are precomputed (at most); later ones are computed on use.
    pub const CACHED_POSITIONS: usize = 1 << 14;

    /// Table for `n_pos` positions; `d_head` must be even.
    pub fn new(d_head: usize, theta: f64, n_pos: usize) -> Self {
        assert!(d_head.is_multiple_of(2), "RoPE needs an even d_head");
        let freq: Vec<f64> = (0..d_head / 2).map(|i| theta.powf(-2.0 * i as f64 / d_head as f64)).collect();
        Self::build(freq, 1.0, n_pos)
    }

    /// Table for `n_pos` positions from explicit inverse frequencies `[d_head / 2]` (scaled RoPE:
    /// linear, llama3, YaRN), with cos and sin multiplied by `factor` (YaRN's attention factor).
    /// The backward (`inverse`) then applies `factor · Rᵀ`, the exact gradient of `factor · R`.
    pub fn from_frequencies(inv_freq: &[f32], factor: f32, n_pos: usize) -> Self {
        Self::build(inv_freq.iter().map(|&f| f as f64).collect(), factor as f64, n_pos)
    }

    fn build(freq: Vec<f64>, factor: f64, n_pos: usize) -> Self {
        let half = freq.len();
        let cached = n_pos.min(Self::CACHED_POSITIONS);
        let (mut cos, mut sin) = (Vec::with_capacity(cached * half), Vec::with_capacity(cached * half));
        for p in 0..cached {
            for &f in &freq {
                let a = p as f64 * f;
                cos.push(T::from_f64(a.cos() * factor));
                sin.push(T::from_f64(a.sin() * factor));
            }
        }
        RopeTable { d_head: 2 * half, n_pos, freq, factor, cos, sin }
    }

    /// Number of positions covered.
    pub fn n_pos(&self) -> usize {
        self.n_pos
    }

    /// Number of positions whose cos/sin are held in memory (≤ [`Self::CACHED_POSITIONS`]).
    pub fn cached_positions(&self) -> usize {
        self.cos.len() / (self.d_head / 2).max(1)
    }

    /// `f(cos, sin)` of position `p` (`[d_head / 2]` each): the cached row, or one computed now.
    #[inline]
    fn with_row<R>(&self, p: usize, f: impl FnOnce(&[T], &[T]) -> R) -> R {
        let half = self.d_head / 2;
        if p < self.cached_positions() {
            f(&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half])
        } else {
            let a = |fr: f64| p as f64 * fr;
            let cos: Vec<T> = self.freq.iter().map(|&fr| T::from_f64(a(fr).cos() * self.factor)).collect();
            let sin: Vec<T> = self.freq.iter().map(|&fr| T::from_f64(a(fr).sin() * self.factor)).collect();
            f(&cos, &sin)
        }
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
            self.with_row(p, |cs, sn| {
                for h in xr.chunks_mut(d) {
                    for i in 0..half {
                        let (x1, x2) = (h[i], h[i + half]);
                        let s = if inverse { -sn[i] } else { sn[i] };
                        h[i] = x1 * cs[i] - x2 * s;
                        h[i + half] = x2 * cs[i] + x1 * s;
                    }
                }
            })
        });
    }

    /// Like [`RopeTable::apply`] with an explicit position for every row of `x [n_rows, n_head, d_head]`.
    pub fn apply_at(&self, x: &mut [T], positions: &[usize], n_head: usize) {
        let d = self.d_head;
        let half = d / 2;
        assert_eq!(x.len(), positions.len() * n_head * d, "rope: x length");
        for (xr, &p) in x.chunks_mut(n_head * d).zip(positions) {
            assert!(p < self.n_pos(), "rope: position {p} beyond table");
            self.with_row(p, |cs, sn| {
                for h in xr.chunks_mut(d) {
                    for i in 0..half {
                        let (x1, x2) = (h[i], h[i + half]);
                        h[i] = x1 * cs[i] - x2 * sn[i];
                        h[i + half] = x2 * cs[i] + x1 * sn[i];
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rotation of `x` at position `p`, written out (the table's arithmetic, in the same order).
    fn rotated(x: &[f32], p: usize, freq: &[f64], factor: f64) -> Vec<f32> {
        let half = freq.len();
        let mut y = x.to_vec();
        for (i, &f) in freq.iter().enumerate() {
            let a = p as f64 * f;
            let (c, s) = ((a.cos() * factor) as f32, (a.sin() * factor) as f32);
            y[i] = x[i] * c - x[i + half] * s;
            y[i + half] = x[i + half] * c + x[i] * s;
        }
        y
    }

    #[test]
    fn positions_past_the_cached_prefix_are_computed_bit_identically() {
        let (d, theta, n_pos) = (8, 10_000.0, 1usize << 30);
        let t = RopeTable::<f32>::new(d, theta, n_pos);
        assert_eq!((t.n_pos(), t.cached_positions()), (n_pos, RopeTable::<f32>::CACHED_POSITIONS));
        let freq: Vec<f64> = (0..d / 2).map(|i| theta.powf(-2.0 * i as f64 / d as f64)).collect();
        let x: Vec<f32> = (0..d).map(|i| 0.25 * i as f32 - 0.8).collect();
        let c = RopeTable::<f32>::CACHED_POSITIONS;
        for p in [0, 5, c - 1, c, c + 1, 1 << 20, n_pos - 1] {
            let mut y = x.clone();
            t.apply_at(&mut y, &[p], 1);
            assert_eq!(y, rotated(&x, p, &freq, 1.0), "apply_at, position {p}");
            // `apply` over rows at consecutive positions, forward then inverse
            let mut z = x.repeat(2);
            let p0 = p.min(n_pos - 2);
            t.apply(&mut z, 1, 2, 1, p0, false);
            assert_eq!(z[..d], rotated(&x, p0, &freq, 1.0), "apply, position {p0}");
            assert_eq!(z[d..], rotated(&x, p0 + 1, &freq, 1.0), "apply, position {}", p0 + 1);
        }
        // scaled frequencies and a factor (YaRN) past the prefix too
        let inv = [1.0f32, 0.1, 0.01, 0.001];
        let t = RopeTable::<f32>::from_frequencies(&inv, 1.25, 1 << 20);
        let freq: Vec<f64> = inv.iter().map(|&f| f as f64).collect();
        for p in [3, c + 7] {
            let mut y = x.clone();
            t.apply_at(&mut y, &[p], 1);
            assert_eq!(y, rotated(&x, p, &freq, 1.25), "scaled, position {p}");
        }
    }
}
