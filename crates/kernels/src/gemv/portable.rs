//! The plain-Rust kernel (every CPU). Public so that tests on any machine check the same maths.

use super::*;

/// `Σ a_p·b_p` in 8 independent f32 lanes (vectorisable without fast-math), lanes summed
/// pairwise last.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dots::<1>([a], b)[0]
}

/// `[Σ_p x_r[p]·w[p]]` for `R` rows `x_r` sharing each load of `w`; every row's result is the
/// same (same lanes, same order) as [`dot`] of that row alone.
#[inline(always)]
pub fn dots<const R: usize>(xs: [&[f32]; R], w: &[f32]) -> [f32; R] {
    let k = w.len();
    debug_assert!(xs.iter().all(|x| x.len() == k));
    let mut acc = [[0.0f32; 8]; R];
    let full = k / 8 * 8;
    for (c, wc) in w[..full].chunks_exact(8).enumerate() {
        for (acc_r, x) in acc.iter_mut().zip(&xs) {
            let xc = &x[c * 8..c * 8 + 8];
            for l in 0..8 {
                acc_r[l] += xc[l] * wc[l];
            }
        }
    }
    for (acc_r, x) in acc.iter_mut().zip(&xs) {
        for (l, p) in (full..k).enumerate() {
            acc_r[l] += x[p] * w[p];
        }
    }
    acc.map(|a| ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])))
}

/// `y[i, j]` for `i < m`, `j0 ≤ j < j1`: each row of `W` is converted to f32 once (exactly) and
/// dotted with every row of `x` while it is in L1.
///
/// # Safety
/// As `run_rows`: `y` points to `m·n` f32, columns `j0..j1` exclusively ours.
pub(super) unsafe fn rows(y: *mut f32, x: &[f32], w: WeightsRef<'_>, m: usize, j0: usize, j1: usize) {
    rows_body(y, x, w, m, j0, j1)
}

/// [`rows`] compiled with AVX2 and FMA enabled ([`Kernel::Avx2`]): the same code inlined, so
/// the same operations in the same order, in 256-bit registers.
///
/// # Safety
/// As [`rows`], and the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_avx2(y: *mut f32, x: &[f32], w: WeightsRef<'_>, m: usize, j0: usize, j1: usize) {
    rows_body(y, x, w, m, j0, j1)
}

#[inline(always)]
unsafe fn rows_body(y: *mut f32, x: &[f32], w: WeightsRef<'_>, m: usize, j0: usize, j1: usize) {
    let (n, k) = (w.n(), w.k());
    let mut scratch = vec![0.0f32; if matches!(w, WeightsRef::F32 { .. }) { 0 } else { k }];
    for j in j0..j1 {
        let (row, scale): (&[f32], f32) = match w {
            WeightsRef::F32 { w, .. } => (&w[j * k..(j + 1) * k], 1.0),
            WeightsRef::Bf16 { bits, .. } => {
                for (s, &b) in scratch.iter_mut().zip(&bits[j * k..(j + 1) * k]) {
                    *s = bf16_bits_to_f32(b);
                }
                (&scratch, 1.0)
            }
            WeightsRef::I8 { q, scale, .. } => {
                for (s, &v) in scratch.iter_mut().zip(&q[j * k..(j + 1) * k]) {
                    *s = v as f32;
                }
                (&scratch, scale[j])
            }
            WeightsRef::Q4 { blocks, .. } => {
                let kb = k.div_ceil(crate::quant::QK);
                crate::quant::dequantize_q4_row(&blocks[j * kb..(j + 1) * kb], &mut scratch);
                (&scratch, 1.0)
            }
            WeightsRef::Q4K { blocks, .. } => {
                let kb = k.div_ceil(crate::quant::QK_K);
                crate::quant::dequantize_q4k_row(&blocks[j * kb..(j + 1) * kb], &mut scratch);
                (&scratch, 1.0)
            }
        };
        let is_i8 = matches!(w, WeightsRef::I8 { .. });
        let xr = |i: usize| &x[i * k..(i + 1) * k];
        let mut i = 0;
        while i < m {
            // four rows of x per pass over the row of W, then one at a time
            let r = if m - i >= 4 { 4 } else { 1 };
            let v = if r == 4 { dots::<4>([xr(i), xr(i + 1), xr(i + 2), xr(i + 3)], row) } else { [dot(xr(i), row), 0.0, 0.0, 0.0] };
            for (d, &v) in v[..r].iter().enumerate() {
                *y.add((i + d) * n + j) = if is_i8 { v * scale } else { v };
            }
            i += r;
        }
    }
}

/// [`super::gemv`] through this kernel only (same threading), for CPUs without AVX-512 and for
/// tests that must exercise the fallback everywhere.
pub fn gemv(y: &mut [f32], x: &[f32], w: &Weights, m: usize, par: Par) {
    super::gemv_with(y, x, w, m, par, Kernel::Portable);
}
