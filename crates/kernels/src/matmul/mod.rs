//! Matrix multiplication: `C = beta·C + op(A)·op(B)` on row-major slices.
//!
//! The fast path goes through the `gemm` crate (compiled with its `x86-v4` feature); [`naive`] is the
//! plainly correct twin the tests compare it with. `Par` says whether one call may spread over the
//! rayon pool (`Par::Pool`) or must stay on the calling thread (`Par::Seq`, used when the caller
//! already runs many matmuls in parallel, e.g. one per expert).

pub mod naive;

use crate::Real;

/// Threading of one matmul call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Run on the calling thread only.
    Seq,
    /// Use the current rayon pool.
    Pool,
}

/// Operand layout of [`matmul`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Rows of C.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
    /// A is stored `[k, m]` and used transposed.
    pub trans_a: bool,
    /// B is stored `[n, k]` and used transposed.
    pub trans_b: bool,
}

impl MatmulShape {
    /// `C[m,n] = A[m,k] · B[k,n]`
    pub fn nn(m: usize, k: usize, n: usize) -> Self {
        MatmulShape { m, k, n, trans_a: false, trans_b: false }
    }
    /// `C[m,n] = A[m,k] · B[n,k]ᵀ` (a linear layer with PyTorch-layout weight B)
    pub fn nt(m: usize, k: usize, n: usize) -> Self {
        MatmulShape { m, k, n, trans_a: false, trans_b: true }
    }
    /// `C[m,n] = A[k,m]ᵀ · B[k,n]` (a weight gradient)
    pub fn tn(m: usize, k: usize, n: usize) -> Self {
        MatmulShape { m, k, n, trans_a: true, trans_b: false }
    }
}

fn check<T>(c: &[T], a: &[T], b: &[T], s: MatmulShape) {
    assert_eq!(c.len(), s.m * s.n, "matmul: C has {} elements, expected m·n = {}", c.len(), s.m * s.n);
    assert_eq!(a.len(), s.m * s.k, "matmul: A has {} elements, expected m·k = {}", a.len(), s.m * s.k);
    assert_eq!(b.len(), s.k * s.n, "matmul: B has {} elements, expected k·n = {}", b.len(), s.k * s.n);
}

/// `C = beta·C + op(A)·op(B)`; `beta` is 0 (overwrite, C may hold garbage) or 1 (accumulate).
///
/// # Panics
/// If slice lengths do not match the shape (a programming error).
pub fn matmul<T: Real>(c: &mut [T], a: &[T], b: &[T], s: MatmulShape, beta: T, par: Par) {
    check(c, a, b, s);
    if s.m == 0 || s.n == 0 {
        return;
    }
    if s.k == 0 {
        if beta == T::ZERO {
            c.fill(T::ZERO);
        }
        return;
    }
    // Row-major A[m,k]: row stride k, col stride 1. Transposed storage [k,m]: row stride 1, col stride m.
    let (a_rs, a_cs) = if s.trans_a { (1, s.m as isize) } else { (s.k as isize, 1) };
    let (b_rs, b_cs) = if s.trans_b { (1, s.k as isize) } else { (s.n as isize, 1) };
    let threads = match par {
        Par::Seq => 1,
        Par::Pool => rayon::current_num_threads(),
    };
    let parallelism =
        if threads > 1 && s.m * s.n * s.k >= 64 * 64 * 64 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers come from slices whose lengths were checked against the shape above,
    // the strides describe exactly those row-major layouts, and C does not alias A or B (distinct
    // borrows). T is f32 or f64, both supported by gemm.
    unsafe {
        gemm::gemm(
            s.m,
            s.n,
            s.k,
            c.as_mut_ptr(),
            1,
            s.n as isize,
            beta != T::ZERO,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn rand_vec(r: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.normal() as f32).collect()
    }

    #[test]
    fn matmul_matches_naive_on_awkward_shapes() {
        let mut r = Rng::new(1);
        for &(m, k, n) in &[(1, 1, 1), (1, 17, 5), (7, 3, 1), (33, 65, 17), (64, 64, 64), (129, 70, 3), (0, 4, 4), (3, 0, 2)] {
            for &(ta, tb) in &[(false, false), (false, true), (true, false), (true, true)] {
                for &beta in &[0.0f32, 1.0] {
                    let s = MatmulShape { m, k, n, trans_a: ta, trans_b: tb };
                    let a = rand_vec(&mut r, m * k);
                    let b = rand_vec(&mut r, k * n);
                    let c0 = rand_vec(&mut r, m * n);
                    let mut c_fast = c0.clone();
                    let mut c_ref = c0.clone();
                    matmul(&mut c_fast, &a, &b, s, beta, Par::Pool);
                    naive::matmul(&mut c_ref, &a, &b, s, beta);
                    for (x, y) in c_fast.iter().zip(&c_ref) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()) * (k as f32).sqrt(), "{m}x{k}x{n} ta={ta} tb={tb}: {x} vs {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_f64_seq_matches_naive() {
        let mut r = Rng::new(2);
        let s = MatmulShape::nt(9, 13, 11);
        let a: Vec<f64> = (0..9 * 13).map(|_| r.normal()).collect();
        let b: Vec<f64> = (0..13 * 11).map(|_| r.normal()).collect();
        let mut c1 = vec![0.0; 99];
        let mut c2 = vec![0.0; 99];
        matmul(&mut c1, &a, &b, s, 0.0, Par::Seq);
        naive::matmul(&mut c2, &a, &b, s, 0.0);
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() < 1e-12);
        }
    }
}
