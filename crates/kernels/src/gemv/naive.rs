//! The slow, plainly correct twins of the GEMV kernels.

use crate::quant::Weights;

/// `y[m, n] = x[m, k] · W[n, k]ᵀ` (**overwrites** `y`), f64 accumulation over the exact values
/// the weights stand for (`scale · q` for int8, applied after the sum as the fast kernels do).
pub fn gemv(y: &mut [f32], x: &[f32], w: &Weights, m: usize) {
    let (n, k) = (w.n(), w.k());
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    let (wd, scale): (Vec<f64>, Option<&[f32]>) = match w {
        Weights::I8(q) => (q.q.iter().map(|&v| v as f64).collect(), Some(&q.scale)),
        _ => (w.dequantize().into_iter().map(|v| v as f64).collect(), None),
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += x[i * k + p] as f64 * wd[j * k + p];
            }
            y[i * n + j] = (acc * scale.map_or(1.0, |s| s[j] as f64)) as f32;
        }
    }
}

/// Twin of [`super::Kernel::Avx512Vnni`]: [`gemv`] with each row of `x` first quantised to
/// symmetric int8 and back (`quantize_i8(x, m, k)`).
pub fn gemv_x_i8(y: &mut [f32], x: &[f32], w: &Weights, m: usize) {
    let xr = crate::quant::quantize_i8(x, m, w.k()).dequantize();
    gemv(y, &xr, w, m);
}

/// Twin of [`super::Kernel::Avx512Bf16Dot`]: [`gemv`] with `x` first rounded to bf16.
pub fn gemv_x_bf16(y: &mut [f32], x: &[f32], w: &Weights, m: usize) {
    let xr: Vec<f32> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    gemv(y, &xr, w, m);
}

/// Twin of [`super::Kernel::Avx2Q8`]: [`gemv`] with each row of `x` first quantised to int8 per
/// 32-value block and back ([`crate::quant::quantize_act_q8`]).
pub fn gemv_x_q8(y: &mut [f32], x: &[f32], w: &Weights, m: usize) {
    let xr = crate::quant::quantize_act_q8(x, m, w.k()).dequantize();
    gemv(y, &xr, w, m);
}
