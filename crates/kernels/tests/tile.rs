//! Row-tile products (`moe_kernels::tile`) against the naive GEMV twin on the same sub-matrix,
//! for every weight format, every available kernel and both the GEMV and the GEMM path.

use moe_kernels::gemv::{naive, Kernel};
use moe_kernels::quant::{quantize_act_q8, WeightDtype, Weights};
use moe_kernels::rng::Rng;
use moe_kernels::tile::{tile_gemm, tile_gemv, TileInput};

fn check(got: &[f32], want: &[f32], x: &[f32], w: &[f32], m: usize, k: usize, what: &str) {
    let nt = got.len() / m.max(1);
    for i in 0..m {
        for j in 0..nt {
            let s: f64 = (0..k).map(|p| (x[i * k + p] as f64 * w[j * k + p] as f64).abs()).sum();
            let tol = (k as f64 + 16.0) * 2f64.powi(-23) * s + 1e-30;
            let (g, e) = (got[i * nt + j] as f64, want[i * nt + j] as f64);
            assert!((g - e).abs() <= tol, "{what}: y[{i},{j}] = {g}, twin {e}, tol {tol}");
        }
    }
}

#[test]
fn tiles_match_the_naive_twin_on_the_same_rows() {
    let mut g = Rng::new(7);
    for &(n, k) in &[(13usize, 37usize), (40, 64), (9, 300)] {
        let w0: Vec<f32> = (0..n * k).map(|_| g.normal() as f32 * 0.1).collect();
        for dtype in WeightDtype::ALL {
            let w = Weights::from_f32(&w0, n, k, dtype);
            let wd = w.dequantize();
            for &m in &[1usize, 3, 4, 9, 33] {
                let x: Vec<f32> = (0..m * k).map(|_| g.normal() as f32).collect();
                for &(j0, j1) in &[(0usize, n), (1, n - 2), (n / 2, n / 2 + 1)] {
                    let sub = Weights::from_f32(&wd[j0 * k..j1 * k], j1 - j0, k, WeightDtype::F32);
                    let mut want = vec![0.0f32; m * (j1 - j0)];
                    naive::gemv(&mut want, &x, &sub, m);
                    // the twin runs on the dequantised values; int8 applies its scale after the sum
                    let wsub = &wd[j0 * k..j1 * k];
                    for kernel in [Kernel::Auto, Kernel::Portable, Kernel::Avx512] {
                        if kernel == Kernel::Avx512 {
                            // visible as a skip; `.ci/run` fails when the CPU has AVX-512 and this did not run
                            if !moe_testutil::needs_cpu("avx512", "tile::tiles_match_the_naive_twin_on_the_same_rows", kernel.available()) {
                                continue;
                            }
                        } else if !kernel.available() {
                            continue;
                        }
                        let inp = TileInput::new(&x, m, k, dtype, kernel);
                        let mut got = vec![f32::NAN; m * (j1 - j0)];
                        tile_gemv(&mut got, &inp, w.view().rows(j0, j1));
                        let what = format!("gemv {dtype:?} {kernel:?} n{n} k{k} m{m} {j0}..{j1}");
                        if kernel.resolved(dtype) == Kernel::Avx2Q8 {
                            // the activation-quantising kernel: its twin multiplies the quantised x
                            let xq = quantize_act_q8(&x, m, k).dequantize();
                            let mut want_q = vec![0.0f32; m * (j1 - j0)];
                            naive::gemv(&mut want_q, &xq, &sub, m);
                            check(&got, &want_q, &xq, wsub, m, k, &what);
                        } else {
                            check(&got, &want, &x, wsub, m, k, &what);
                        }
                    }
                    let mut scratch = Vec::new();
                    let mut got = vec![f32::NAN; m * (j1 - j0)];
                    tile_gemm(&mut got, &x, m, w.view().rows(j0, j1), &mut scratch);
                    check(&got, &want, &x, wsub, m, k, &format!("gemm {dtype:?} n{n} k{k} m{m} {j0}..{j1}"));
                }
            }
        }
    }
}

#[test]
fn dequantize_into_equals_dequantize() {
    let mut g = Rng::new(3);
    let w0: Vec<f32> = (0..6 * 10).map(|_| g.normal() as f32).collect();
    for dtype in WeightDtype::ALL {
        let w = Weights::from_f32(&w0, 6, 10, dtype);
        let mut out = vec![0.0f32; 30];
        w.view().rows(2, 5).dequantize_into(&mut out);
        assert_eq!(out, w.dequantize()[20..50].to_vec(), "{dtype:?}");
    }
}
