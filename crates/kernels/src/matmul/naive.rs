//! The slow, plainly correct twin of [`super::matmul`].

use super::MatmulShape;
use crate::Real;

/// `C = beta·C + op(A)·op(B)`, triple loop, f64 accumulation.
pub fn matmul<T: Real>(c: &mut [T], a: &[T], b: &[T], s: MatmulShape, beta: T) {
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = 0.0f64;
            for p in 0..s.k {
                let av = if s.trans_a { a[p * s.m + i] } else { a[i * s.k + p] };
                let bv = if s.trans_b { b[j * s.k + p] } else { b[p * s.n + j] };
                acc += av.to_f64() * bv.to_f64();
            }
            let prev = if beta == T::ZERO { T::ZERO } else { beta * c[i * s.n + j] };
            c[i * s.n + j] = prev + T::from_f64(acc);
        }
    }
}
