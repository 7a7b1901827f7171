//! Shared helpers for the kernel integration tests: random inputs, finite differences, comparisons.
#![allow(dead_code)] // each test binary uses a different subset

use moe_kernels::rng::Rng;

/// Step of the central finite differences (f64 only).
pub const FD_EPS: f64 = 1e-6;
/// Allowed error of an analytic gradient, relative to the max-abs of the numeric one.
pub const FD_RTOL: f64 = 1e-6;

/// `n` standard-normal f64 samples.
pub fn randn(r: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| r.normal()).collect()
}

/// `n` standard-normal f32 samples.
pub fn randn_f32(r: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.normal() as f32).collect()
}

/// `Σ a_i b_i`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `max |a|`; a non-finite value fails (`moe_testutil::max_abs`).
#[track_caller]
pub fn max_abs(a: &[f64]) -> f64 {
    moe_testutil::max_abs("max_abs", a)
}

/// Central-difference gradient of the scalar `f` at `x`.
pub fn numeric_grad(x: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + FD_EPS;
            let up = f(&xp);
            xp[i] = orig - FD_EPS;
            let down = f(&xp);
            xp[i] = orig;
            (up - down) / (2.0 * FD_EPS)
        })
        .collect()
}

/// Asserts `analytic ≈ numeric` within `FD_RTOL · max|numeric|` (floored at 1e-3 so that an
/// exactly-zero gradient is compared against FD noise, not against zero).
pub fn assert_grad_close(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths");
    let tol = FD_RTOL * max_abs(numeric).max(1e-3);
    moe_testutil::assert_close_elem(what, analytic, numeric, tol, 0.0);
}

/// `out - base`, elementwise (to recover what an accumulating kernel added).
pub fn minus(out: &[f64], base: &[f64]) -> Vec<f64> {
    out.iter().zip(base).map(|(a, b)| a - b).collect()
}

/// Asserts `|a_i − b_i| ≤ atol + rtol·|b_i|` for all i.
/// A non-finite value fails (`moe_testutil::assert_close_elem`).
#[track_caller]
pub fn assert_close<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, a: &[A], b: &[B], atol: f64, rtol: f64) {
    moe_testutil::assert_close_elem(what, a, b, atol, rtol);
}
