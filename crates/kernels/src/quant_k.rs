//! [`WeightQ4K`]: 4-bit weights in super-blocks of [`QK_K`] = 256 values with a scale and a min
//! per 32-value sub-block — byte for byte GGUF's `Q4_K` ([`BlockQ4K`], 144 bytes, 4.5 bits per
//! weight), so a llama.cpp `Q4_K_M` file's 4-bit matrices run as stored.
//!
//! Sub-block `j` (values `32j..32j+32`) holds `w = d·sc_j·q − dmin·m_j` with `q ∈ 0..=15` and
//! 6-bit `sc_j`, `m_j`; `d` and `dmin` are f16 per super-block. Unlike `Q4_0`'s symmetric
//! `d·(q − 8)`, each sub-block's range `[−dmin·m_j, −dmin·m_j + 15·d·sc_j]` follows its own
//! values, which suits the skewed rows of trained weights.
//!
//! Quantisation (ours, [`BlockQ4K::quantize`]): per sub-block an affine fit `x ≈ s·q − o` (`o ≥ 0`)
//! starting from the sub-block's range and refined by alternating least squares (assign `q`, then
//! solve for `s`, `o`), keeping the fit of least squared error; then the eight `s` and `o` are
//! quantised to 6 bits against the super-block's `d = max s / 63`, `dmin = max o / 63` (rounded
//! to f16 first), and `q` is assigned once more with the scales as stored. Rows whose length is not
//! a multiple of 256 are zero-padded in their last super-block.

use crate::quant::QK;

/// Values per super-block.
pub const QK_K: usize = 256;

/// One super-block of [`WeightQ4K`]: GGUF's `block_q4_K` byte for byte (alignment 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4K {
    /// super-block scale `d`, f16 little-endian
    pub d: [u8; 2],
    /// super-block min scale `dmin`, f16 little-endian
    pub dmin: [u8; 2],
    /// eight 6-bit scales and eight 6-bit mins, packed ([`scale_min_k4`])
    pub scales: [u8; 12],
    /// byte `32g + l`: value `64g + l` in the low nibble, `64g + 32 + l` in the high nibble
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144 && std::mem::align_of::<BlockQ4K>() == 1);

impl Default for BlockQ4K {
    fn default() -> Self {
        BlockQ4K { d: [0; 2], dmin: [0; 2], scales: [0; 12], qs: [0; 128] }
    }
}

/// Scale and min `j` (0..8) of the 12 packed bytes `s` of a `Q4_K`/`Q5_K` super-block: 6 bits
/// each; `j < 4` in the low six bits of bytes `j` and `j + 4`, `j ≥ 4` in the nibbles of byte
/// `j + 4` with their top two bits in the top bits of bytes `j − 4` and `j`.
#[inline(always)]
pub fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// The inverse of [`scale_min_k4`]: pack eight 6-bit scales and mins.
fn pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4);
    }
    s
}

fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// The best affine fit `x ≈ s·q − o` (`q ∈ 0..=15`, `o ≥ 0`, `s ≥ 0`) of one sub-block: (s, o).
fn fit_sub_block(x: &[f32]) -> (f32, f32) {
    let lo = x.iter().fold(0.0f32, |a, &v| a.min(v)); // the range includes 0: o ≥ 0
    let hi = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    let err = |s: f32, o: f32| -> f32 {
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        x.iter()
            .map(|&v| {
                let q = ((v + o) * inv).round().clamp(0.0, 15.0);
                let e = s * q - o - v;
                e * e
            })
            .sum()
    };
    let (mut s, mut o) = ((hi - lo) / 15.0, -lo);
    let mut best = (s, o, err(s, o));
    for _ in 0..4 {
        // assign q, then least squares for (s, o) in x = s·q − o
        let inv = 1.0 / s;
        let (mut sq, mut sqq, mut sx, mut sqx) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for &v in x {
            let q = ((v + o) * inv).round().clamp(0.0, 15.0) as f64;
            sq += q;
            sqq += q * q;
            sx += v as f64;
            sqx += q * v as f64;
        }
        let n = x.len() as f64;
        let det = n * sqq - sq * sq;
        if det <= 0.0 {
            break;
        }
        let ns = (n * sqx - sq * sx) / det;
        let no = -(sx - ns * sq) / n;
        if !(ns > 0.0) || !ns.is_finite() {
            break;
        }
        // o < 0 cannot be stored: clamp, and refit s alone
        let (ns, no) = if no < 0.0 { ((sqx / sqq).max(0.0), 0.0) } else { (ns, no) };
        s = ns as f32;
        o = no as f32;
        let e = err(s, o);
        if e < best.2 {
            best = (s, o, e);
        }
    }
    (best.0, best.1)
}

impl BlockQ4K {
    /// The scale `d` and min scale `dmin` as f32.
    #[inline]
    pub fn d_dmin(&self) -> (f32, f32) {
        (half::f16::from_bits(u16::from_le_bytes(self.d)).to_f32(), half::f16::from_bits(u16::from_le_bytes(self.dmin)).to_f32())
    }

    /// The 256 values `d·sc_j·q − dmin·m_j` this block stands for (fixed-size chunks, so the
    /// compiler vectorises it: the wide path dequantises whole tiles with it).
    #[inline]
    pub fn dequantize_into(&self, out: &mut [f32; QK_K]) {
        let (d, dmin) = self.d_dmin();
        for (g, (o, qs)) in out.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)).enumerate() {
            let (s1, m1) = scale_min_k4(2 * g, &self.scales);
            let (s2, m2) = scale_min_k4(2 * g + 1, &self.scales);
            let (d1, o1, d2, o2) = (d * s1 as f32, dmin * m1 as f32, d * s2 as f32, dmin * m2 as f32);
            let (lo, hi) = o.split_at_mut(32);
            for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
                *l = d1 * (q & 15) as f32 - o1;
                *h = d2 * (q >> 4) as f32 - o2;
            }
        }
    }

    /// `v` (≤ 256 finite values, zero-padded) quantised (module doc).
    pub fn quantize(v: &[f32]) -> BlockQ4K {
        debug_assert!(v.len() <= QK_K);
        let mut x = [0.0f32; QK_K];
        x[..v.len()].copy_from_slice(v);
        let fits: Vec<(f32, f32)> = x.chunks_exact(QK).map(fit_sub_block).collect();
        let smax = fits.iter().fold(0.0f32, |a, f| a.max(f.0));
        let omax = fits.iter().fold(0.0f32, |a, f| a.max(f.1));
        let d = f16_round(smax / 63.0);
        let dmin = f16_round(omax / 63.0);
        let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
        for (j, &(s, o)) in fits.iter().enumerate() {
            sc[j] = if d > 0.0 { (s / d).round().clamp(0.0, 63.0) as u8 } else { 0 };
            m[j] = if dmin > 0.0 { (o / dmin).round().clamp(0.0, 63.0) as u8 } else { 0 };
        }
        let mut qs = [0u8; 128];
        for j in 0..8 {
            let (s, o) = (d * sc[j] as f32, dmin * m[j] as f32);
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            for l in 0..32 {
                let q = ((x[32 * j + l] + o) * inv).round().clamp(0.0, 15.0) as u8;
                // sub-block j = 2g (+1): low (high) nibbles of bytes 32g..32g + 32
                qs[32 * (j / 2) + l] |= if j % 2 == 0 { q } else { q << 4 };
            }
        }
        BlockQ4K {
            d: half::f16::from_f32(d).to_bits().to_le_bytes(),
            dmin: half::f16::from_f32(dmin).to_bits().to_le_bytes(),
            scales: pack_scales(&sc, &m),
            qs,
        }
    }
}

/// 4-bit super-block weights (module doc), row-major `[n, k]` as `n · ⌈k/256⌉` blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightQ4K {
    /// rows (output features)
    pub n: usize,
    /// columns (input features)
    pub k: usize,
    /// `[n, ⌈k/256⌉]` blocks
    pub blocks: Vec<BlockQ4K>,
}

/// Row `blocks` (`⌈k/256⌉` of them) as `k` f32 values into `out`.
pub fn dequantize_q4k_row(blocks: &[BlockQ4K], out: &mut [f32]) {
    debug_assert_eq!(blocks.len(), out.len().div_ceil(QK_K));
    let mut tmp = [0.0f32; QK_K];
    for (b, o) in blocks.iter().zip(out.chunks_mut(QK_K)) {
        if let Ok(full) = <&mut [f32; QK_K]>::try_from(&mut *o) {
            b.dequantize_into(full);
        } else {
            b.dequantize_into(&mut tmp);
            o.copy_from_slice(&tmp[..o.len()]);
        }
    }
}

impl WeightQ4K {
    /// The f32 values these blocks stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.n * self.k];
        if self.k > 0 {
            let kb = self.k.div_ceil(QK_K);
            for (o, b) in out.chunks_exact_mut(self.k).zip(self.blocks.chunks_exact(kb)) {
                dequantize_q4k_row(b, o);
            }
        }
        out
    }
}

/// `w` (`[n, k]`) quantised to 4-bit super-blocks (module doc).
///
/// # Panics
/// If a weight is not finite.
pub fn quantize_q4k(w: &[f32], n: usize, k: usize) -> WeightQ4K {
    assert_eq!(w.len(), n * k, "quantize_q4k: {} weights for {n}·{k}", w.len());
    assert!(w.iter().all(|v| v.is_finite()), "quantize_q4k: non-finite weight (callers check user data first: `non_finite_at`)");
    let mut blocks = Vec::with_capacity(n * k.div_ceil(QK_K));
    if k > 0 {
        for row in w.chunks_exact(k) {
            blocks.extend(row.chunks(QK_K).map(BlockQ4K::quantize));
        }
    }
    WeightQ4K { n, k, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_q4;

    fn rows(n: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        // skewed rows (a per-row offset and scale), as trained weights often are
        let mut out = Vec::with_capacity(n * k);
        for i in 0..n {
            let (a, b) = (0.02 * (1 + i % 5) as f32, 0.01 * (i % 3) as f32);
            out.extend((0..k).map(|_| a * r.normal() as f32 + b));
        }
        out
    }

    #[test]
    fn scales_pack_and_unpack() {
        let sc = [0, 1, 17, 63, 32, 5, 48, 62];
        let m = [63, 0, 33, 2, 15, 16, 31, 47];
        let s = pack_scales(&sc, &m);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &s), (sc[j], m[j]), "{j}");
        }
    }

    #[test]
    fn round_trip_error_is_bounded_on_every_block_boundary() {
        for k in [1, 31, 32, 33, 255, 256, 257, 511, 512, 600] {
            let w = rows(5, k, k as u64);
            let q = quantize_q4k(&w, 5, k);
            assert_eq!(q.blocks.len(), 5 * k.div_ceil(QK_K));
            let back = q.dequantize();
            for (row, (a, b)) in w.chunks(k).zip(back.chunks(k)).enumerate() {
                for (sb, (xa, xb)) in a.chunks(QK_K).zip(b.chunks(QK_K)).enumerate() {
                    // one 4-bit step of the widest sub-block's range (0 included) of the super-block
                    let step = xa
                        .chunks(QK)
                        .map(|c| c.iter().fold(0.0f32, |m, &v| m.max(v)) - c.iter().fold(0.0f32, |m, &v| m.min(v)))
                        .fold(0.0f32, f32::max)
                        / 15.0;
                    let (mut worst, mut sq) = (0.0f32, 0.0f64);
                    for (va, vb) in xa.iter().zip(xb) {
                        assert!(vb.is_finite(), "k {k} row {row}: {vb}");
                        worst = worst.max((va - vb).abs());
                        sq += ((va - vb) as f64).powi(2);
                    }
                    let rms = (sq / xa.len() as f64).sqrt() as f32;
                    // uniform rounding alone: max step/2, rms step/√12 ≈ 0.29·step; the 6-bit scales add a little
                    // (plus the f16 rounding of the scales, relative 2⁻¹¹ of the values)
                    let tiny = 15.0 * step * 2f32.powi(-11) + 1e-7;
                    assert!(worst <= 1.0 * step + tiny, "k {k} row {row} super-block {sb}: max error {worst} vs step {step}");
                    assert!(rms <= 0.4 * step + tiny, "k {k} row {row} super-block {sb}: rms {rms} vs step {step}");
                }
            }
        }
    }

    #[test]
    fn beats_q4_0_on_skewed_rows_at_the_same_size() {
        let (n, k) = (16, 1024);
        let w = rows(n, k, 7);
        let mse = |b: &[f32]| w.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / w.len() as f64;
        let e_k = mse(&quantize_q4k(&w, n, k).dequantize());
        let e_0 = mse(&quantize_q4(&w, n, k).dequantize());
        // same 4.5 bits per weight (144 bytes per 256, 18 per 32)
        assert_eq!(std::mem::size_of::<BlockQ4K>() * 8, 256 * 9 / 2);
        assert!(e_k < 0.8 * e_0, "q4k mse {e_k:e} vs q4_0 {e_0:e}");
    }
}
