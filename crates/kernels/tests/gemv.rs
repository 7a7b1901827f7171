//! GEMV kernels (every kernel this CPU can run, the portable one always) against their naive twins
//! on awkward shapes, and the weight formats' round-trip error bounds.
//!
//! Tolerance of an output `y[i, j]`: `(k + 16) · 2⁻²³ · S` with `S = Σ_p |x_ip · w_jp|` over the
//! stored (dequantised) weights — twice the classical worst-case bound `k·u·S` (u = 2⁻²⁴) of f32
//! summation in any order, plus the reduction of 16 lanes. The kernels only differ from the f64
//! twin by that f32 accumulation (weight conversion is exact).

mod common;

use common::*;
use moe_kernels::gemv::{gemv, gemv_f32, gemv_ref, gemv_with, naive, portable, Kernel};
use moe_kernels::quant::{quantize_bf16, quantize_i8, WeightDtype, Weights, WeightsRef};
use moe_kernels::rng::Rng;
use moe_kernels::Par;

const NK: [(usize, usize); 17] = [
    (1, 1),
    (1, 17),
    (5, 1),
    (7, 15),
    (13, 16),
    (9, 33),
    (4, 64),
    (3, 100),
    (6, 31),
    (37, 257),
    (130, 31),
    (2, 1000),
    // every q4/q8 block boundary: one block exactly, whole blocks, one past, one short
    (11, 32),
    (5, 96),
    (3, 95),
    (6, 97),
    (10, 128),
];

/// `Σ_p |x_ip · w_jp|` for every output (the rounding scale), from the dequantised weights.
fn abs_scale(x: &[f32], w: &Weights, m: usize) -> Vec<f64> {
    let (n, k) = (w.n(), w.k());
    let wd = w.dequantize();
    let mut s = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            s[i * n + j] = (0..k).map(|p| (x[i * k + p] as f64 * wd[j * k + p] as f64).abs()).sum();
        }
    }
    s
}

fn check_close(got: &[f32], want: &[f32], scale: &[f64], k: usize, extra_rel: f64, what: &str) {
    for (idx, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = ((k as f64 + 16.0) * 2f64.powi(-23) + extra_rel) * s + 1e-30;
        assert!(((g as f64) - (w as f64)).abs() <= tol, "{what}: y[{idx}] = {g}, twin {w}, |diff| {} > tol {tol}", (g - w).abs());
    }
}

/// The naive twin of what `kernel` runs on weights of `dtype`: the exact product, or the product
/// with `x` quantised / rounded as the activation-quantising kernels do.
fn twin(y: &mut [f32], x: &[f32], w: &Weights, m: usize, kernel: Kernel) {
    match (kernel.resolved(w.dtype()), w.dtype()) {
        (Kernel::Avx512Bf16Dot, WeightDtype::Bf16) => naive::gemv_x_bf16(y, x, w, m),
        (Kernel::Avx512Vnni, WeightDtype::I8) => naive::gemv_x_i8(y, x, w, m),
        (Kernel::Avx2Q8, _) => naive::gemv_x_q8(y, x, w, m),
        _ => naive::gemv(y, x, w, m),
    }
}

/// One kernel on every awkward shape, dtype, m = 1..=9 and both threading modes.
fn check_kernel(kernel: Kernel, seed: u64) {
    let mut g = Rng::new(seed);
    for &(n, k) in &NK {
        for dtype in WeightDtype::ALL {
            let w = Weights::from_f32(&randn_f32(&mut g, n * k), n, k, dtype);
            for m in 1..=9 {
                let x = randn_f32(&mut g, m * k);
                let mut want = vec![0.0f32; m * n];
                twin(&mut want, &x, &w, m, kernel);
                let scale = abs_scale(&x, &w, m);
                for par in [Par::Seq, Par::Pool] {
                    let mut y = vec![f32::NAN; m * n]; // overwritten, never read
                    gemv_with(&mut y, &x, &w, m, par, kernel);
                    check_close(&y, &want, &scale, k, 0.0, &format!("{kernel:?} {dtype:?} m={m} n={n} k={k} {par:?}"));
                }
            }
        }
    }
}

#[test]
fn portable_kernel_matches_naive() {
    // The fallback every CPU runs: tested on every machine, AVX-512 or not.
    check_kernel(Kernel::Portable, 11);
}

#[test]
fn avx2_kernel_matches_naive_and_is_bit_identical_to_portable() {
    if !moe_testutil::needs_cpu("avx2", "gemv::avx2_kernel_matches_naive_and_is_bit_identical_to_portable", Kernel::Avx2.available()) {
        return;
    }
    check_kernel(Kernel::Avx2, 12);
    // the portable code compiled for AVX2: the same operations in the same order
    let mut g = Rng::new(13);
    for &(n, k) in &NK {
        for dtype in WeightDtype::ALL {
            let w = Weights::from_f32(&randn_f32(&mut g, n * k), n, k, dtype);
            for m in [1, 3, 4, 9] {
                let x = randn_f32(&mut g, m * k);
                let (mut a, mut b) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                gemv_with(&mut a, &x, &w, m, Par::Pool, Kernel::Avx2);
                gemv_with(&mut b, &x, &w, m, Par::Seq, Kernel::Portable);
                let (a, b): (Vec<u32>, Vec<u32>) = (a.iter().map(|v| v.to_bits()).collect(), b.iter().map(|v| v.to_bits()).collect());
                assert_eq!(a, b, "{dtype:?} m={m} n={n} k={k}");
            }
        }
    }
    assert_eq!(Kernel::Auto.resolved(WeightDtype::F32), if Kernel::Avx512.available() { Kernel::Avx512 } else { Kernel::Avx2 });
}

#[test]
fn portable_entry_point_is_the_fallback() {
    let mut g = Rng::new(5);
    let (m, n, k) = (3, 21, 45);
    let w = Weights::from_f32(&randn_f32(&mut g, n * k), n, k, WeightDtype::I8);
    let x = randn_f32(&mut g, m * k);
    let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
    portable::gemv(&mut a, &x, &w, m, Par::Pool);
    gemv_with(&mut b, &x, &w, m, Par::Seq, Kernel::Portable);
    assert_eq!(a, b, "same kernel, same summation order, whatever the threading");
}

/// Every kernel computes each row of `x` the same way whichever micro-kernel path (four rows, one
/// row, ...) and thread chunk it lands in, so a sequence's output is bit-identical whatever batch
/// it decodes in (a property `matmul` does not promise).
#[test]
fn rows_do_not_depend_on_batch() {
    let mut g = Rng::new(6);
    let (m, n, k) = (7, 1001, 83);
    for kernel in Kernel::available_kernels() {
        for dtype in WeightDtype::ALL {
            let w = Weights::from_f32(&randn_f32(&mut g, n * k), n, k, dtype);
            let x = randn_f32(&mut g, m * k);
            let mut all = vec![0.0; m * n];
            gemv_with(&mut all, &x, &w, m, Par::Pool, kernel);
            for i in 0..m {
                let mut one = vec![0.0; n];
                gemv_with(&mut one, &x[i * k..(i + 1) * k], &w, 1, Par::Seq, kernel);
                assert_eq!(&all[i * n..(i + 1) * n], &one[..], "{kernel:?} {dtype:?} row {i}");
            }
        }
    }
}

#[test]
fn avx512_kernel_matches_naive() {
    if !moe_testutil::needs_cpu("avx512", "gemv::avx512_kernel_matches_naive", Kernel::Avx512.available()) {
        return;
    }
    check_kernel(Kernel::Avx512, 12);
}

#[test]
fn avx512_bf16_dot_kernel_matches_its_twin() {
    if !moe_testutil::needs_cpu("avx512_bf16", "gemv::avx512_bf16_dot_kernel_matches_its_twin", Kernel::Avx512Bf16Dot.available()) {
        return;
    }
    check_kernel(Kernel::Avx512Bf16Dot, 13);
}

#[test]
fn avx512_vnni_kernel_matches_its_twin() {
    if !moe_testutil::needs_cpu("avx512_vnni", "gemv::avx512_vnni_kernel_matches_its_twin", Kernel::Avx512Vnni.available()) {
        return;
    }
    check_kernel(Kernel::Avx512Vnni, 16);
}

/// What quantising `x` to int8 costs: each output within `max|x_i|/254 · Σ_p |w_jp|` of the
/// exact-`x` result (checked), and the integer arithmetic itself is exact: the kernel agrees with
/// its twin to a few f32 ulps of `Σ|x̂·w|` (the twin rounds `x̂ = sx·xq` to f32 per element),
/// even for k at the 2¹⁷ limit with extreme values.
#[test]
fn avx512_vnni_error_from_quantising_x() {
    if !moe_testutil::needs_cpu("avx512_vnni", "gemv::avx512_vnni_error_from_quantising_x", Kernel::Avx512Vnni.available()) {
        return;
    }
    let mut g = Rng::new(17);
    for &(m, n, k) in &[(1, 64, 1024), (8, 33, 4097), (3, 5, 7), (2, 3, 1 << 17)] {
        let mut x = randn_f32(&mut g, m * k);
        let mut wf = randn_f32(&mut g, n * k);
        if k == 1 << 17 {
            // x = ±1 and every weight row = x's first row: Σ xq·q = 127²·k, the largest value the
            // i32 arithmetic must hold exactly (Σ u·q = 255·127·k wraps on the way).
            x.iter_mut().for_each(|v| *v = if *v < 0.0 { -1.0 } else { 1.0 });
            for row in wf.chunks_exact_mut(k) {
                row.copy_from_slice(&x[..k]);
            }
        }
        let w = Weights::from_f32(&wf, n, k, WeightDtype::I8);
        let (mut exact, mut twin, mut y) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
        naive::gemv(&mut exact, &x, &w, m);
        naive::gemv_x_i8(&mut twin, &x, &w, m);
        gemv_with(&mut y, &x, &w, m, Par::Pool, Kernel::Avx512Vnni);
        let wd = w.dequantize();
        let xr = quantize_i8(&x, m, k).dequantize();
        for i in 0..m {
            let xmax = x[i * k..(i + 1) * k].iter().fold(0.0f64, |a, v| a.max(v.abs() as f64));
            for j in 0..n {
                let (got, e, t) = (y[i * n + j] as f64, exact[i * n + j] as f64, twin[i * n + j] as f64);
                let s: f64 = (0..k).map(|p| (xr[i * k + p] as f64 * wd[j * k + p] as f64).abs()).sum();
                assert!((got - t).abs() <= 2f64.powi(-22) * (s + t.abs()) + 1e-30, "vnni vs twin m={m} n={n} k={k}: {got} vs {t}");
                let wabs: f64 = wd[j * k..(j + 1) * k].iter().map(|v| v.abs() as f64).sum();
                let bound = xmax / 254.0 * wabs * (1.0 + 1e-5) + 1e-6 * (e.abs() + 1.0);
                assert!((got - e).abs() <= bound, "vnni vs exact x: {got} vs {e}, bound {bound}");
            }
        }
    }
}

/// What rounding `x` to bf16 costs: within `2⁻⁸ · Σ|x·w|` of the exact-`x` result.
#[test]
fn avx512_bf16_dot_error_from_rounding_x() {
    if !moe_testutil::needs_cpu("avx512_bf16", "gemv::avx512_bf16_dot_error_from_rounding_x", Kernel::Avx512Bf16Dot.available()) {
        return;
    }
    let mut g = Rng::new(14);
    for &(m, n, k) in &[(1, 64, 1024), (8, 33, 4097), (3, 5, 7)] {
        let w = Weights::from_f32(&randn_f32(&mut g, n * k), n, k, WeightDtype::Bf16);
        let x = randn_f32(&mut g, m * k);
        let (mut exact, mut y) = (vec![0.0; m * n], vec![0.0; m * n]);
        naive::gemv(&mut exact, &x, &w, m);
        gemv_with(&mut y, &x, &w, m, Par::Pool, Kernel::Avx512Bf16Dot);
        check_close(&y, &exact, &abs_scale(&x, &w, m), k, 2f64.powi(-8), &format!("dpbf16 vs exact x, m={m} n={n} k={k}"));
    }
}

#[test]
fn auto_dispatch_matches_naive_on_many_chunks() {
    // n large enough for several rayon tasks, with a ragged last chunk.
    let mut g = Rng::new(15);
    let (n, k) = (1001, 70);
    for dtype in WeightDtype::ALL {
        let w = Weights::from_f32(&randn_f32(&mut g, n * k), n, k, dtype);
        for m in [1, 4, 8] {
            let x = randn_f32(&mut g, m * k);
            let (mut want, mut y) = (vec![0.0; m * n], vec![0.0; m * n]);
            twin(&mut want, &x, &w, m, Kernel::Auto);
            gemv(&mut y, &x, &w, m, Par::Pool);
            check_close(&y, &want, &abs_scale(&x, &w, m), k, 0.0, &format!("auto {dtype:?} m={m}"));
        }
    }
}

/// The borrowed entry points run the same kernels: bit-identical to the owned ones.
#[test]
fn borrowed_entry_points_match_owned() {
    let mut g = Rng::new(18);
    let (m, n, k) = (5, 77, 130);
    let wf = randn_f32(&mut g, n * k);
    let x = randn_f32(&mut g, m * k);
    let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
    gemv(&mut a, &x, &Weights::from_f32(&wf, n, k, WeightDtype::F32), m, Par::Pool);
    gemv_f32(&mut b, &x, &wf, n, k, m, Par::Pool);
    assert_eq!(a, b);
    for kernel in Kernel::available_kernels() {
        for dtype in WeightDtype::ALL {
            let w = Weights::from_f32(&wf, n, k, dtype);
            gemv_with(&mut a, &x, &w, m, Par::Seq, kernel);
            gemv_ref(&mut b, &x, w.view(), m, Par::Pool, kernel);
            assert_eq!(a, b, "{kernel:?} {dtype:?}");
            assert_eq!((w.view().n(), w.view().k(), w.view().dtype(), w.view().bytes()), (n, k, dtype, w.bytes()));
        }
    }
}

#[test]
#[should_panic(expected = "WeightsRef::f32")]
fn borrowed_f32_wrong_length_panics() {
    let _ = WeightsRef::f32(&[1.0; 5], 2, 3);
}

#[test]
fn degenerate_shapes() {
    for kernel in Kernel::available_kernels() {
        for dtype in WeightDtype::ALL {
            // k = 0: y = 0 (overwritten).
            let w = Weights::from_f32(&[], 3, 0, dtype);
            let mut y = vec![7.0f32; 6];
            gemv_with(&mut y, &[], &w, 2, Par::Pool, kernel);
            assert_eq!(y, vec![0.0; 6]);
            // m = 0 and n = 0: nothing to do.
            let w = Weights::from_f32(&[1.0; 4], 2, 2, dtype);
            gemv_with(&mut [], &[], &w, 0, Par::Pool, kernel);
            let w = Weights::from_f32(&[], 0, 2, dtype);
            gemv_with(&mut [], &[1.0, 2.0], &w, 1, Par::Pool, kernel);
        }
    }
}

#[test]
#[should_panic(expected = "gemv: x has")]
fn wrong_x_length_panics() {
    let w = Weights::from_f32(&[1.0; 6], 2, 3, WeightDtype::F32);
    gemv(&mut [0.0; 2], &[1.0; 2], &w, 1, Par::Seq);
}

/// bf16 keeps 8 significant bits with round-to-nearest: relative error ≤ 2⁻⁸ (in fact ≤ 2⁻⁹
/// except at exact ties' neighbours), over many binades.
#[test]
fn bf16_round_trip_relative_error() {
    let mut g = Rng::new(21);
    let (n, k) = (17, 301);
    let w: Vec<f32> = (0..n * k).map(|_| (g.normal() * (g.normal() * 20.0).exp2()) as f32).collect();
    let q = quantize_bf16(&w, n, k);
    let back = Weights::Bf16(q).dequantize();
    let mut worst = 0.0f64;
    for (&a, &b) in w.iter().zip(&back) {
        if a != 0.0 && a.is_normal() {
            worst = worst.max(((a - b) as f64 / a as f64).abs());
        }
    }
    assert!(worst <= 2f64.powi(-8), "bf16 relative error {worst}");
    assert!(worst > 0.0);
}

/// Symmetric per-row int8: absolute error ≤ max|row| / 254 (half a step of `max/127`).
#[test]
fn i8_round_trip_error_within_half_step() {
    let mut g = Rng::new(22);
    for &(n, k) in &[(1, 1), (9, 63), (40, 257)] {
        let mut w = randn_f32(&mut g, n * k);
        for (j, row) in w.chunks_exact_mut(k).enumerate() {
            let s = 10f32.powi(j as i32 % 7 - 3); // rows of very different magnitude
            row.iter_mut().for_each(|v| *v *= s);
        }
        let q = quantize_i8(&w, n, k);
        assert!(q.q.iter().all(|&v| (-127..=127).contains(&v)));
        let back = q.dequantize();
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64;
            assert!(((q.scale[j] as f64) - max / 127.0).abs() <= 1e-6 * max);
            for p in 0..k {
                let err = (row[p] as f64 - back[j * k + p] as f64).abs();
                assert!(err <= max / 254.0 * (1.0 + 1e-5), "row {j}: err {err} > max/254 = {}", max / 254.0);
            }
        }
    }
}

#[test]
fn weights_bytes_and_shape() {
    let w = vec![0.5f32; 6 * 10];
    for (dtype, bytes) in [
        (WeightDtype::F32, 240),
        (WeightDtype::Bf16, 120),
        (WeightDtype::I8, 60 + 24),
        (WeightDtype::Q4, 6 * 18),
        (WeightDtype::Q4K, 6 * 144),
    ] {
        let wt = Weights::from_f32(&w, 6, 10, dtype);
        assert_eq!((wt.n(), wt.k(), wt.dtype(), wt.bytes()), (6, 10, dtype, bytes));
    }
}

#[test]
fn avx2_q8_kernel_matches_its_twin() {
    if !moe_testutil::needs_cpu("avx2+f16c", "gemv::avx2_q8_kernel_matches_its_twin", Kernel::Avx2Q8.available()) {
        return;
    }
    check_kernel(Kernel::Avx2Q8, 19);
    // f32/bf16 weights fall back to the exact AVX2 kernel, q4 under AVX-512 kernels to AVX2 ones
    assert_eq!(Kernel::Avx2Q8.resolved(WeightDtype::F32), Kernel::Avx2);
    assert_eq!(Kernel::Avx2Q8.resolved(WeightDtype::I8), Kernel::Avx2Q8);
    assert_eq!(Kernel::Auto.resolved(WeightDtype::Q4), Kernel::Avx2Q8);
    assert_eq!(Kernel::Avx512.resolved(WeightDtype::Q4), Kernel::Avx2);
    assert_eq!(Kernel::Auto.resolved(WeightDtype::Q4K), Kernel::Avx2Q8);
}

/// What quantising `x` per 32-block costs, for int8 and q4 weights: each output within
/// `Σ_b max|x_b|/254 · Σ_{p∈b} |w_p|` of the exact-`x` result (checked), extreme block scales and
/// a NaN included (NaN in, NaN out).
#[test]
fn avx2_q8_error_from_quantising_x() {
    if !moe_testutil::needs_cpu("avx2+f16c", "gemv::avx2_q8_error_from_quantising_x", Kernel::Avx2Q8.available()) {
        return;
    }
    let mut g = Rng::new(23);
    for &(m, n, k) in &[(1, 64, 1024), (8, 33, 4097), (3, 5, 7), (2, 9, 320)] {
        let mut x = randn_f32(&mut g, m * k);
        // blocks of very different magnitude
        for (p, v) in x.iter_mut().enumerate() {
            *v *= 10f32.powi((p / 32) as i32 % 5 - 2);
        }
        let wf = randn_f32(&mut g, n * k);
        for dtype in [WeightDtype::I8, WeightDtype::Q4, WeightDtype::Q4K] {
            let w = Weights::from_f32(&wf, n, k, dtype);
            let (mut exact, mut y) = (vec![0.0; m * n], vec![0.0; m * n]);
            naive::gemv(&mut exact, &x, &w, m);
            gemv_with(&mut y, &x, &w, m, Par::Pool, Kernel::Avx2Q8);
            let wd = w.dequantize();
            for i in 0..m {
                for j in 0..n {
                    let mut bound = 0.0f64;
                    for b in 0..k.div_ceil(32) {
                        let ps = b * 32..((b + 1) * 32).min(k);
                        let xmax = x[i * k..][ps.clone()].iter().fold(0.0f64, |a, v| a.max(v.abs() as f64));
                        bound += xmax / 254.0 * ps.map(|p| wd[j * k + p].abs() as f64).sum::<f64>();
                    }
                    let e = exact[i * n + j] as f64;
                    let bound = bound * (1.0 + 1e-5) + 1e-6 * (e.abs() + 1.0);
                    let got = y[i * n + j] as f64;
                    assert!((got - e).abs() <= bound, "{dtype:?} m={m} n={n} k={k}: {got} vs exact {e}, bound {bound}");
                }
            }
            let mut xn = x.clone();
            xn[k / 2] = f32::NAN;
            gemv_with(&mut y, &xn, &w, m, Par::Seq, Kernel::Avx2Q8);
            assert!(y[..n].iter().all(|v| v.is_nan()), "{dtype:?}: a NaN in x must reach every output of its row");
        }
    }
}

/// 4-bit blocks: every weight within `|d| = max|block|/8` of its value (half a step but for values
/// near the opposite extreme, which the clamp at q = 15 holds a step short), plus the f16 rounding of
/// `d`; the extreme value itself round-trips exactly up to that rounding; all-zero blocks give 0;
/// rows of every length around the block size are zero-padded.
#[test]
fn q4_round_trip_error_bounds() {
    use moe_kernels::quant::{quantize_q4, BlockQ4};
    let mut g = Rng::new(24);
    for &(n, k) in &[(1, 1), (3, 31), (2, 32), (4, 33), (5, 64), (2, 95), (3, 96), (2, 97), (9, 257)] {
        let mut w = randn_f32(&mut g, n * k);
        for (j, row) in w.chunks_exact_mut(k).enumerate() {
            let s = 10f32.powi(j as i32 % 5 - 2);
            row.iter_mut().for_each(|v| *v *= s);
        }
        if n > 1 && k >= 32 {
            w[k..k + 32].fill(0.0); // an all-zero block
        }
        let q = quantize_q4(&w, n, k);
        assert_eq!(q.blocks.len(), n * k.div_ceil(32));
        let back = q.dequantize();
        let mut worst_half_steps = 0.0f64;
        for j in 0..n {
            for b in 0..k.div_ceil(32) {
                let ps = b * 32..((b + 1) * 32).min(k);
                let blk = &w[j * k..][ps.clone()];
                let amax = blk.iter().fold(0.0f64, |a, v| a.max(v.abs() as f64));
                let d = amax / 8.0;
                assert!((q.blocks[j * k.div_ceil(32) + b].scale().abs() as f64 - d).abs() <= d * 2f64.powi(-11));
                for p in ps {
                    let err = (w[j * k + p] as f64 - back[j * k + p] as f64).abs();
                    assert!(err <= d * (1.0 + 8.0 * 2f64.powi(-10)), "row {j} block {b}: err {err} > |d| = {d}");
                    if d > 0.0 {
                        worst_half_steps = worst_half_steps.max(err / (d / 2.0));
                    }
                }
            }
        }
        assert!(worst_half_steps > 0.0 && worst_half_steps.is_finite());
    }
    // llama.cpp's rounding on a hand-made block: the extreme −2 sets d = 0.25 and is q = 0
    let mut v = [0.0f32; 32];
    v[0] = -2.0;
    v[1] = 1.875; // 7.5 steps: rounds up to 16, clamped to 15 → 1.75
    v[16] = 0.3; // 1.2 steps → q = 9 → 0.25
    let b = BlockQ4::quantize(&v);
    assert_eq!(b.scale(), 0.25);
    assert_eq!((b.qs[0] & 15, b.qs[1] & 15, b.qs[0] >> 4, b.qs[2]), (0, 15, 9, 8 | (8 << 4)));
    assert!(std::panic::catch_unwind(|| quantize_q4(&[1.0, f32::NAN], 1, 2)).is_err(), "NaN must not quantise");
}
