//! [`super::Kernel::Avx2Q8`]: int8, q4 or q4k weights against `x` quantised to int8 per 32-value block
//! ([`ActQ8`]), with exact integer dot products per block in AVX2 registers.
//!
//! Per 32-block and weight row, exact integer products in registers, `vpmaddubsw` (unsigned ×
//! signed bytes, adjacent pairs summed to i16) then `vpmaddwd` with ones (to eight i32 lanes):
//! * q4: the 16 bytes of nibbles split into low and high halves are the unsigned operand as
//!   stored (`q ∈ 0..=15`, pair sums `≤ 2·15·127`); the offset is undone per block with the
//!   precomputed `Σ q_x` ([`ActQ8::qsum`]): `Σ (q − 8)·x = Σ q·x − 8·Σ x`;
//! * q4k: the sub-block's 32 nibbles (low or high halves of 32 bytes of its super-block) likewise,
//!   scaled by `d·sc_j`; its min `dmin·m_j` is undone per block with `Σ q_x` as q4's offset is;
//! * int8: `vpsignb` moves the weights' signs onto `x` so that `|w|` is the unsigned operand
//!   (pair sums `≤ 2·127·127 < 2¹⁵`: weights and `x` stay in `[-127, 127]`, nothing saturates).
//!
//! Four weight rows share each load of an `x` block and up to four rows of `x` each weight block;
//! the f32 conversion and scaling happen once per block for all four rows (see `block4`).

use crate::quant::{ActQ8, BlockQ4, BlockQ4K, WeightsRef, QK, QK_K};
use std::arch::x86_64::*;

/// How one weight format multiplies a 32-block of four weight rows with a block of `x`.
trait Rows {
    /// The four rows' block `b` as loaded and prepared once for every row of `x`.
    type W: Copy;
    /// Load block `b` of rows `rows`.
    unsafe fn load4(&self, rows: [usize; 4], b: usize) -> Self::W;
    /// The four rows' `Σ q·x` over the block in eight i32 lanes each (pairs of products summed).
    unsafe fn dot4(w: Self::W, x: __m256i) -> [__m256i; 4];
    /// The four rows' scales of block `b` (1 when the row scale applies at the end).
    unsafe fn scales(&self, rows: [usize; 4], b: usize) -> __m128;
    /// Whether the stored values carry an offset (q4: 8, q4k: the sub-block's min), undone with
    /// the blocks' `Σ q_x`.
    const OFFSET: bool;
    /// The four rows' offsets of block `b`, in units of `x`: `c` with `w = scale·q − c` (zero
    /// when not [`Rows::OFFSET`]).
    unsafe fn offsets(&self, rows: [usize; 4], b: usize, scales: __m128) -> __m128;
    /// The row's scale, applied to its sum (1 for q4).
    fn row_scale(&self, r: usize) -> f32;
    /// Start address of row `r` (for prefetching) and bytes per row.
    fn row_ptr(&self, r: usize) -> (*const u8, usize);
}

struct I8Rows<'a> {
    q: &'a [i8],
    scale: &'a [f32],
    k: usize,
}

impl Rows for I8Rows<'_> {
    /// (|w|, w) per row: `vpmaddubsw` wants its first operand unsigned, so `w`'s signs move to `x`
    type W = [(__m256i, __m256i); 4];
    #[inline(always)]
    unsafe fn load4(&self, rows: [usize; 4], b: usize) -> Self::W {
        // (no closures here: they would not inherit the caller's target features)
        let mut out = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 4];
        for j in 0..4 {
            let p = rows[j] * self.k + b * QK;
            let w = if (b + 1) * QK <= self.k {
                _mm256_loadu_si256(self.q.as_ptr().add(p) as *const __m256i)
            } else {
                // the row's last, partial block: zero-padded copy (x is zero-padded to match)
                let mut t = [0i8; QK];
                let len = self.k - b * QK;
                t[..len].copy_from_slice(&self.q[p..p + len]);
                _mm256_loadu_si256(t.as_ptr() as *const __m256i)
            };
            out[j] = (_mm256_sign_epi8(w, w), w);
        }
        out
    }
    #[inline(always)]
    unsafe fn dot4(w: Self::W, x: __m256i) -> [__m256i; 4] {
        // |w| · (x · sign w) = w · x; each pair sum ≤ 2·127·127 < 2¹⁵ (no saturation)
        let mut out = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let (aw, w) = w[j];
            out[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
        }
        out
    }
    #[inline(always)]
    unsafe fn scales(&self, _rows: [usize; 4], _b: usize) -> __m128 {
        _mm_set1_ps(1.0)
    }
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn offsets(&self, _rows: [usize; 4], _b: usize, _scales: __m128) -> __m128 {
        _mm_setzero_ps()
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
    /// the stored `q ∈ 0..=15` as unsigned bytes, in weight order
    type W = [__m256i; 4];
    #[inline(always)]
    unsafe fn load4(&self, rows: [usize; 4], b: usize) -> Self::W {
        let m = _mm_set1_epi8(0x0F);
        let mut out = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let blk = self.blocks.as_ptr().add(rows[j] * self.kb + b);
            let qs = _mm_loadu_si128((*blk).qs.as_ptr() as *const __m128i);
            let lo = _mm_and_si128(qs, m); // weights 0..15
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), m); // weights 16..31
            out[j] = _mm256_set_m128i(hi, lo);
        }
        out
    }
    #[inline(always)]
    unsafe fn dot4(w: Self::W, x: __m256i) -> [__m256i; 4] {
        // q unsigned, x signed: each pair sum ≤ 2·15·127 (no saturation); Σ (q − 8)·x = Σ q·x − 8·Σ x
        let mut out = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            out[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(w[j], x), _mm256_set1_epi16(1));
        }
        out
    }
    #[inline(always)]
    unsafe fn scales(&self, rows: [usize; 4], b: usize) -> __m128 {
        let d = |j: usize| u16::from_le_bytes((*self.blocks.as_ptr().add(rows[j] * self.kb + b)).d) as i16;
        let d = [d(0), d(1), d(2), d(3)];
        _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, d[3], d[2], d[1], d[0]))
    }
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn offsets(&self, _rows: [usize; 4], _b: usize, scales: __m128) -> __m128 {
        // w = d·(q − 8) = d·q − 8·d
        _mm_mul_ps(scales, _mm_set1_ps(8.0))
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

struct Q4KRows<'a> {
    blocks: &'a [BlockQ4K],
    /// super-blocks per row
    kb: usize,
}

impl Q4KRows<'_> {
    /// Start address of row `r` (for prefetching) and bytes per row.
    #[inline(always)]
    fn row_ptr(&self, r: usize) -> (*const u8, usize) {
        (self.blocks.as_ptr().wrapping_add(r * self.kb) as *const u8, self.kb * std::mem::size_of::<BlockQ4K>())
    }
}

/// `MR × 4` output sums of one weight format (see [`block4`] and [`block4_q4k`]).
trait Block {
    /// `x` rows `xi` against weight rows `wr`, over all `kb` 32-blocks.
    unsafe fn block<const MR: usize>(&self, xq: &ActQ8, xi: [usize; MR], wr: [usize; 4], kb: usize) -> [[f32; 4]; MR];
    /// The row's scale, applied to its sum.
    fn scale_of(&self, r: usize) -> f32;
}

impl<R: Rows> Block for R {
    #[inline(always)]
    unsafe fn block<const MR: usize>(&self, xq: &ActQ8, xi: [usize; MR], wr: [usize; 4], kb: usize) -> [[f32; 4]; MR] {
        block4::<R, MR>(self, xq, xi, wr, kb)
    }
    #[inline(always)]
    fn scale_of(&self, r: usize) -> f32 {
        self.row_scale(r)
    }
}

impl Block for Q4KRows<'_> {
    #[inline(always)]
    unsafe fn block<const MR: usize>(&self, xq: &ActQ8, xi: [usize; MR], wr: [usize; 4], kb: usize) -> [[f32; 4]; MR] {
        block4_q4k::<MR>(self, xq, xi, wr, kb)
    }
    #[inline(always)]
    fn scale_of(&self, _r: usize) -> f32 {
        1.0
    }
}

/// `MR × 4` sums over all blocks: `x` rows `xi` (indices into `xq`) against weight rows `wr`.
///
/// Per block the four rows' eight-lane i32 sums are folded by two rounds of `vphaddd` into one
/// vector `[r0 r1 r2 r3 | r0 r1 r2 r3]` (low and high halves of each row's lanes), converted once
/// and accumulated with one FMA by `[s0 s1 s2 s3 | s0 s1 s2 s3]` (`s_r = d_w,r · d_x`); the offset
/// of q4 and q4k goes into a separate four-lane accumulator, `Σ_b c_w · d_x·Σ q_x`, subtracted at
/// the end.
#[inline(always)]
unsafe fn block4<R: Rows, const MR: usize>(w: &R, xq: &ActQ8, xi: [usize; MR], wr: [usize; 4], kb: usize) -> [[f32; 4]; MR] {
    let mut acc = [_mm256_setzero_ps(); MR];
    let mut corr = [_mm_setzero_ps(); MR];
    let (xp, xd, xs) = (xq.q.as_ptr(), xq.d.as_ptr(), xq.qsum.as_ptr());
    let row_bytes = w.row_ptr(wr[0]).1;
    let pre = [0, 1, 2, 3].map(|j| w.row_ptr(wr[j]).0.wrapping_add(8 * row_bytes));
    for b in 0..kb {
        if b % 2 == 0 {
            // the rows eight ahead (the next-but-one block of four): rows are too short for the
            // hardware prefetcher to find the four interleaved streams in time
            let off = b * row_bytes / kb;
            for p in pre {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8);
            }
        }
        let wv = w.load4(wr, b);
        let ws = w.scales(wr, b);
        let wo = w.offsets(wr, b, ws);
        for i in 0..MR {
            let at = xi[i] * kb + b;
            let xv = _mm256_loadu_si256(xp.add(at * QK) as *const __m256i);
            add_block(&mut acc[i], &mut corr[i], R::dot4(wv, xv), ws, R::OFFSET.then_some(wo), *xd.add(at), *xs.add(at));
        }
    }
    finish(acc, corr)
}

/// One 32-block of four weight rows against one row of `x`: the rows' sums `p` folded by two
/// rounds of `vphaddd`, converted and scaled by `d_w · d_x` into `acc` in one FMA; with an offset,
/// `wo · d_x · Σ q_x` into `corr` (subtracted in [`finish`]).
#[inline(always)]
unsafe fn add_block(acc: &mut __m256, corr: &mut __m128, p: [__m256i; 4], ws: __m128, wo: Option<__m128>, dx: f32, xsum: i32) {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    let s = _mm_mul_ps(ws, _mm_set1_ps(dx));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_set_m128(s, s), *acc);
    if let Some(wo) = wo {
        *corr = _mm_fmadd_ps(wo, _mm_set1_ps(dx * xsum as f32), *corr);
    }
}

/// The four rows' sums per row of `x`: the two halves of each accumulator added, less the
/// offsets gathered in `corr`.
#[inline(always)]
unsafe fn finish<const MR: usize>(acc: [__m256; MR], corr: [__m128; MR]) -> [[f32; 4]; MR] {
    let mut out = [[0.0f32; 4]; MR];
    for i in 0..MR {
        let v = _mm_sub_ps(_mm_add_ps(_mm256_castps256_ps128(acc[i]), _mm256_extractf128_ps::<1>(acc[i])), corr[i]);
        _mm_storeu_ps(out[i].as_mut_ptr(), v);
    }
    out
}

/// The eight 6-bit scales (bytes 0..8) and mins (bytes 8..16) of a Q4_K super-block's packed
/// 12 bytes, unpacked with 32-bit words (as [`crate::quant_k::scale_min_k4`] one at a time).
#[inline(always)]
fn unpack_scales_mins(s: &[u8; 12]) -> [u8; 16] {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a, b, c) = (w(0), w(1), w(2));
    // scales 0..4: a & 63; 4..8: low nibbles of c, top bits from a. mins 0..4: b & 63; 4..8:
    // high nibbles of c, top bits from b
    let words = [a & LOW6, (c & LOW4) | (((a >> 6) & LOW2) << 4), b & LOW6, ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4)];
    let mut out = [0u8; 16];
    for (o, v) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// `v[j]` = row j's eight per-sub-block values; returns, per sub-block `s`, the four rows' values
/// `[v0[s], v1[s], v2[s], v3[s]]` (a 4×8 transpose in registers).
#[inline(always)]
unsafe fn transpose_4x8(v: [__m256; 4]) -> [__m128; 8] {
    let (t0, t1) = (_mm256_unpacklo_ps(v[0], v[1]), _mm256_unpackhi_ps(v[0], v[1]));
    let (t2, t3) = (_mm256_unpacklo_ps(v[2], v[3]), _mm256_unpackhi_ps(v[2], v[3]));
    // u_s = [s | s + 4] for s < 4
    let u = [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xEE>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xEE>(t1, t3),
    ];
    let mut out = [_mm_setzero_ps(); 8];
    for s in 0..4 {
        out[s] = _mm256_castps256_ps128(u[s]);
        out[s + 4] = _mm256_extractf128_ps::<1>(u[s]);
    }
    out
}

/// q4k's [`block4`]: a super-block at a time. The four rows' `d·sc_j` and `dmin·m_j` of its eight
/// sub-blocks are decoded once (vectorised, transposed in registers), and each 32 bytes of nibbles
/// are loaded once for the two sub-blocks they hold (low and high halves).
#[inline(always)]
unsafe fn block4_q4k<const MR: usize>(w: &Q4KRows<'_>, xq: &ActQ8, xi: [usize; MR], wr: [usize; 4], kb: usize) -> [[f32; 4]; MR] {
    let mut acc = [_mm256_setzero_ps(); MR];
    let mut corr = [_mm_setzero_ps(); MR];
    let (xp, xd, xs) = (xq.q.as_ptr(), xq.d.as_ptr(), xq.qsum.as_ptr());
    let mask = _mm256_set1_epi8(0x0F);
    let sb_bytes = std::mem::size_of::<BlockQ4K>();
    let row_bytes = w.row_ptr(wr[0]).1;
    let pre = [0, 1, 2, 3].map(|j| w.row_ptr(wr[j]).0.wrapping_add(8 * row_bytes));
    for sb in 0..kb.div_ceil(8) {
        // the rows eight ahead, at this super-block (144 bytes: three lines)
        for p in pre {
            for line in 0..3 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(sb * sb_bytes + 64 * line) as *const i8);
            }
        }
        let mut blk = [std::ptr::null::<BlockQ4K>(); 4];
        let (mut sc, mut mn) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
        for j in 0..4 {
            blk[j] = w.blocks.as_ptr().add(wr[j] * w.kb + sb);
            let b = &*blk[j];
            let sm = unpack_scales_mins(&b.scales);
            let (d, dmin) = b.d_dmin();
            let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(sm.as_ptr() as *const __m128i)));
            sc[j] = _mm256_mul_ps(v, _mm256_set1_ps(d));
            let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i)));
            mn[j] = _mm256_mul_ps(v, _mm256_set1_ps(dmin));
        }
        let (ws, wo) = (transpose_4x8(sc), transpose_4x8(mn));
        let nsub = (kb - 8 * sb).min(8);
        let mut s = 0;
        while s < nsub {
            // sub-blocks s (low nibbles) and s + 1 (high nibbles) of bytes 16·s..16·s + 32
            let mut qs = [_mm256_setzero_si256(); 4];
            for j in 0..4 {
                qs[j] = _mm256_loadu_si256((*blk[j]).qs.as_ptr().add(16 * s) as *const __m256i);
            }
            for half in 0..2 {
                let sub = s + half;
                if sub >= nsub {
                    break;
                }
                let mut wv = [_mm256_setzero_si256(); 4];
                for j in 0..4 {
                    wv[j] = if half == 0 { _mm256_and_si256(qs[j], mask) } else { _mm256_and_si256(_mm256_srli_epi16::<4>(qs[j]), mask) };
                }
                let b = 8 * sb + sub;
                for i in 0..MR {
                    let at = xi[i] * kb + b;
                    let xv = _mm256_loadu_si256(xp.add(at * QK) as *const __m256i);
                    add_block(&mut acc[i], &mut corr[i], Q4Rows::dot4(wv, xv), ws[sub], Some(wo[sub]), *xd.add(at), *xs.add(at));
                }
            }
            s += 2;
        }
    }
    finish(acc, corr)
}

#[inline(always)]
unsafe fn rows_impl<R: Block>(y: *mut f32, xq: &ActQ8, w: &R, n: usize, m: usize, j0: usize, j1: usize) {
    let kb = xq.blocks_per_row();
    let mut j = j0;
    while j < j1 {
        // the last block of four repeats row j1 − 1 and discards the copies
        let wr = [0, 1, 2, 3].map(|r| (j + r).min(j1 - 1));
        let put = |i: usize, v: [f32; 4]| {
            for (r, &val) in v.iter().enumerate() {
                if j + r < j1 {
                    *y.add(i * n + j + r) = val * w.scale_of(j + r);
                }
            }
        };
        let mut i = 0;
        while i < m {
            if m - i >= 4 {
                // four rows of x share each unpacked weight block (batch ≥ 4, prefill tiles)
                let v = w.block::<4>(xq, [i, i + 1, i + 2, i + 3], wr, kb);
                for (r, v) in v.into_iter().enumerate() {
                    put(i + r, v);
                }
                i += 4;
            } else if m - i >= 2 {
                let v = w.block::<2>(xq, [i, i + 1], wr, kb);
                put(i, v[0]);
                put(i + 1, v[1]);
                i += 2;
            } else {
                put(i, w.block::<1>(xq, [i], wr, kb)[0]);
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
        WeightsRef::Q4K { blocks, n, k } => rows_impl(y, xq, &Q4KRows { blocks, kb: k.div_ceil(QK_K) }, n, m, j0, j1),
        _ => unreachable!("Avx2Q8 resolves to Avx2 on f32/bf16 weights"),
    }
}

#[cfg(test)]
mod tests {
    use super::unpack_scales_mins;
    use crate::quant_k::scale_min_k4;
    use crate::rng::Rng;

    #[test]
    fn scales_and_mins_unpack_as_one_at_a_time() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let s: [u8; 12] = std::array::from_fn(|_| (r.next_u64() & 0xff) as u8);
            let v = unpack_scales_mins(&s);
            for j in 0..8 {
                assert_eq!((v[j], v[8 + j]), scale_min_k4(j, &s), "{s:?} sub-block {j}");
            }
        }
    }
}
