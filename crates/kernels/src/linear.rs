//! Linear layer without bias, PyTorch weight layout: `out = inp · Wᵀ`.

use crate::matmul::{matmul, MatmulShape, Par};
use crate::Real;

/// `out[n, d_out] = inp[n, d_in] · w[d_out, d_in]ᵀ` (overwrites `out`).
pub fn linear_forward<T: Real>(out: &mut [T], inp: &[T], w: &[T], n: usize, d_in: usize, d_out: usize, par: Par) {
    matmul(out, inp, w, MatmulShape::nt(n, d_in, d_out), T::ZERO, par);
}

/// Backward of [`linear_forward`].
///
/// `d_inp` (if given) is **overwritten** with `d_out · w` (or accumulated when `accumulate_inp`);
/// `d_w` is **accumulated** with `d_outᵀ · inp`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Real>(
    d_inp: Option<&mut [T]>,
    accumulate_inp: bool,
    d_w: &mut [T],
    d_out: &[T],
    inp: &[T],
    w: &[T],
    n: usize,
    d_in: usize,
    d_out_dim: usize,
    par: Par,
) {
    if let Some(d_inp) = d_inp {
        let beta = if accumulate_inp { T::ONE } else { T::ZERO };
        matmul(d_inp, d_out, w, MatmulShape::nn(n, d_out_dim, d_in), beta, par);
        // [n, d_in]
    }
    matmul(d_w, d_out, inp, MatmulShape::tn(d_out_dim, n, d_in), T::ONE, par); // [d_out, d_in]
}
