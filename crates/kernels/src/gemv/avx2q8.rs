//! [`super::Kernel::Avx2Q8`]: int8 or q4 weights against `x` quantised to int8 per 32-value block
//! ([`ActQ8`]), with exact integer dot products per block in AVX2 registers.
//!
//! Per 32-block and weight row: the 32 weights as signed i8 (q4: the 16 bytes of nibbles split
//! into low and high halves and `8` subtracted, in registers), `vpsignb` moves the weights' signs
//! onto `x` so that `vpmaddubsw(|w|, ±x)` multiplies unsigned by signed (each pair sum
//! `≤ 2·127·127 < 2¹⁵`, so it never saturates: weights and `x` stay in `[-127, 127]`), `vpmaddwd`
//! with ones sums pairs to eight i32 lanes, exact; those are converted to f32 (exact, `|v| < 2²⁴`)
//! and accumulated with one FMA by the block's scale product. Four weight rows share each load of
//! an `x` block, up to two rows of `x` share each weight block.

use crate::quant::{ActQ8, BlockQ4, WeightsRef, QK};
use std::arch::x86_64::*;

/// How one weight format yields a 32-block of one row as signed i8 and its scale.
trait Rows {
    /// block `b` of row `r`: its 32 weights as i8 (zero past the row's end)
    unsafe fn block(&self, r: usize, b: usize) -> __m256i;
    /// scales of blocks `b` of the four rows (`[1; 4]` when the row scale applies at the end)
    unsafe fn scales(&self, rows: [usize; 4], b: usize) -> [f32; 4];
    /// the row's scale, applied to its sum (1 for q4)
    fn row_scale(&self, r: usize) -> f32;
    /// start address of row `r` (for prefetching) and bytes per row
    fn row_ptr(&self, r: usize) -> (*const u8, usize);
}

struct I8Rows<'a> {
    q: &'a [i8],
    scale: &'a [f32],
    k: usize,
}

impl Rows for I8Rows<'_> {
    #[inline(always)]
    unsafe fn block(&self, r: usize, b: usize) -> __m256i {
        let p = r * self.k + b * QK;
        if (b + 1) * QK <= self.k {
            _mm256_loadu_si256(self.q.as_ptr().add(p) as *const __m256i)
        } else {
            // the row's last, partial block: zero-padded copy (x is zero-padded to match)
            let mut t = [0i8; QK];
            let len = self.k - b * QK;
            t[..len].copy_from_slice(&self.q[p..p + len]);
            _mm256_loadu_si256(t.as_ptr() as *const __m256i)
        }
    }
    #[inline(always)]
    unsafe fn scales(&self, _rows: [usize; 4], _b: usize) -> [f32; 4] {
        [1.0; 4]
    }
    #[inline(always)]
    fn row_scale(&self, r: usize) -> f32 {
        self.scale[r]
    }
    #[inline(always)]
    fn row_ptr(&self, r: usize) -> (*const u8, usize) {
        (self.q.as_ptr().wrapping_add(r * self.k) as *const u8, self.k)
    }
}

struct Q4Rows<'a> {
    blocks: &'a [BlockQ4],
    kb: usize,
}

impl Rows for Q4Rows<'_> {
    #[inline(always)]
    unsafe fn block(&self, r: usize, b: usize) -> __m256i {
        let blk = self.blocks.as_ptr().add(r * self.kb + b);
        let qs = _mm_loadu_si128((*blk).qs.as_ptr() as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(qs, m); // weights 0..15
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), m); // weights 16..31
        _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
    }
    #[inline(always)]
    unsafe fn scales(&self, rows: [usize; 4], b: usize) -> [f32; 4] {
        let d = rows.map(|r| u16::from_le_bytes((*self.blocks.as_ptr().add(r * self.kb + b)).d) as i16);
        let v = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, d[3], d[2], d[1], d[0]));
        let mut out = [0.0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), v);
        out
    }
    #[inline(always)]
    fn row_scale(&self, _r: usize) -> f32 {
        1.0
    }
    #[inline(always)]
    fn row_ptr(&self, r: usize) -> (*const u8, usize) {
        (self.blocks.as_ptr().wrapping_add(r * self.kb) as *const u8, self.kb * std::mem::size_of::<BlockQ4>())
    }
}

/// Eight i32 lanes holding `Σ w·x` over pairs of the 32-block, as f32 (exact).
#[inline(always)]
unsafe fn dot_block(w: __m256i, aw: __m256i, x: __m256i) -> __m256 {
    let sx = _mm256_sign_epi8(x, w); // x · sign(w): |w| · sx = w · x
    let p16 = _mm256_maddubs_epi16(aw, sx);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `MR × 4` sums over all blocks: `x` rows `xi` (indices into `xq`) against weight rows `wr`.
#[inline(always)]
unsafe fn block4<R: Rows, const MR: usize>(w: &R, xq: &ActQ8, xi: [usize; MR], wr: [usize; 4], kb: usize) -> [[f32; 4]; MR] {
    let mut acc = [[_mm256_setzero_ps(); 4]; MR];
    let (xp, xd) = (xq.q.as_ptr(), xq.d.as_ptr());
    let row_bytes = w.row_ptr(wr[0]).1;
    let pre = wr.map(|r| w.row_ptr(r).0.wrapping_add(8 * row_bytes));
    for b in 0..kb {
        if b % 2 == 0 {
            // the rows eight ahead (the next-but-one block of four): rows are too short for the
            // hardware prefetcher to find the four interleaved streams in time
            let off = b * row_bytes / kb;
            for p in pre {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8);
            }
        }
        let wv = [w.block(wr[0], b), w.block(wr[1], b), w.block(wr[2], b), w.block(wr[3], b)];
        let aw = wv.map(|v| _mm256_sign_epi8(v, v));
        let ws = w.scales(wr, b);
        for i in 0..MR {
            let xv = _mm256_loadu_si256(xp.add((xi[i] * kb + b) * QK) as *const __m256i);
            let dx = *xd.add(xi[i] * kb + b);
            for r in 0..4 {
                let s = _mm256_set1_ps(ws[r] * dx);
                acc[i][r] = _mm256_fmadd_ps(dot_block(wv[r], aw[r], xv), s, acc[i][r]);
            }
        }
    }
    let mut out = [[0.0f32; 4]; MR];
    for i in 0..MR {
        for r in 0..4 {
            out[i][r] = hsum(acc[i][r]);
        }
    }
    out
}

#[inline(always)]
unsafe fn rows_impl<R: Rows>(y: *mut f32, xq: &ActQ8, w: &R, n: usize, m: usize, j0: usize, j1: usize) {
    let kb = xq.blocks_per_row();
    let mut j = j0;
    while j < j1 {
        // the last block of four repeats row j1 − 1 and discards the copies
        let wr = [0, 1, 2, 3].map(|r| (j + r).min(j1 - 1));
        let put = |i: usize, v: [f32; 4]| {
            for (r, &val) in v.iter().enumerate() {
                if j + r < j1 {
                    *y.add(i * n + j + r) = val * w.row_scale(j + r);
                }
            }
        };
        let mut i = 0;
        while i < m {
            if m - i >= 2 {
                let v = block4::<R, 2>(w, xq, [i, i + 1], wr, kb);
                put(i, v[0]);
                put(i + 1, v[1]);
                i += 2;
            } else {
                put(i, block4::<R, 1>(w, xq, [i], wr, kb)[0]);
                i += 1;
            }
        }
        j += 4;
    }
}

/// `y[i, j]` for all `i < m`, `j0 ≤ j < j1` (int8 or q4 weights; other formats never resolve here).
///
/// # Safety
/// AVX2, FMA and F16C available; `y` points to `m·n` f32 (n = w.n()) of which columns `j0..j1`
/// are exclusively ours; `xq` is `x [m, k]` quantised with `k = w.k()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows(y: *mut f32, xq: &ActQ8, w: WeightsRef<'_>, m: usize, j0: usize, j1: usize) {
    debug_assert_eq!((xq.m, xq.k), (m, w.k()));
    match w {
        WeightsRef::I8 { q, scale, n, k } => rows_impl(y, xq, &I8Rows { q, scale, k }, n, m, j0, j1),
        WeightsRef::Q4 { blocks, n, k } => rows_impl(y, xq, &Q4Rows { blocks, kb: k.div_ceil(QK) }, n, m, j0, j1),
        _ => unreachable!("Avx2Q8 resolves to Avx2 on f32/bf16 weights"),
    }
}
