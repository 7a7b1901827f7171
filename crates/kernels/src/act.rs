//! Activations and softmax: SwiGLU (`silu(gate) ⊙ up`), GPT-OSS's clamped SwiGLU, tanh-approximated
//! GELU, the exact sigmoid of routing and gates, and the row softmax (plain and with a sink logit).
//! The slice kernels here and the model's and inference engine's fused loops call the same scalar
//! functions, so the arithmetic is written once.

use crate::exp::{exp_shifted_sum, row_max, sigmoid};
use crate::Real;
use rayon::prelude::*;

const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task (inner loops over slices vectorise).
const CHUNK: usize = 1 << 13;

/// `silu(g) · u = g · σ(g) · u` (σ on the vectorisable [`crate::exp::exp_f32`] for f32).
#[inline(always)]
pub fn silu_mul<T: Real>(g: T, u: T) -> T {
    g * sigmoid(g) * u
}

/// GPT-OSS's clamped SwiGLU: `(clamp(u, ±limit) + 1) · g · σ(alpha · g)`, `g = min(g, limit)`,
/// with the exact `exp`.
#[inline(always)]
pub fn clamped_swiglu<T: Real>(g: T, u: T, alpha: T, limit: T) -> T {
    let g = g.min(limit);
    let u = u.max(T::ZERO - limit).min(limit);
    (u + T::ONE) * g / (T::ONE + (T::ZERO - alpha * g).exp())
}

/// `1 / (1 + e^−z)` with the exact `exp`: sigmoid router scores and the shared-expert gate, where
/// the model and the inference engine must choose the same experts.
#[inline(always)]
pub fn sigmoid_exact<T: Real>(z: T) -> T {
    T::ONE / (T::ONE + (T::ZERO - z).exp())
}

/// `gelu_tanh(x) = x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
#[inline(always)]
pub fn gelu_tanh<T: Real>(x: T) -> T {
    let c = T::from_f64(GELU_C);
    let a = T::from_f64(0.044715);
    T::from_f64(0.5) * x * (T::ONE + (c * (x + a * x * x * x)).tanh())
}

/// In-place softmax of one row (max-shifted; the vectorisable exp of [`crate::exp`]). An empty
/// row is left alone. [`crate::cross_entropy::softmax_rows`] applies it to every row.
#[inline]
pub fn softmax_in_place<T: Real>(row: &mut [T]) {
    if row.is_empty() {
        return;
    }
    let m = row_max(row);
    let inv = T::ONE / exp_shifted_sum(row, m);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// In-place softmax of one row of attention logits where a `sink` logit (GPT-OSS) joins the
/// normalisation but gets no output; the exact `exp`, sequential sum. Always inlined, so the
/// engine's AVX-512 attention compiles it with its own target features.
#[inline(always)]
pub fn softmax_with_sink<T: Real>(row: &mut [T], sink: Option<T>) {
    let mut m = row.iter().fold(T::from_f64(f64::NEG_INFINITY), |a, &x| a.max(x));
    if let Some(z) = sink {
        m = m.max(z);
    }
    let mut sum = sink.map_or(T::ZERO, |z| (z - m).exp());
    for x in row.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    let inv = T::ONE / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

fn swiglu_forward_slice<T: Real>(out: &mut [T], gate: &[T], up: &[T]) {
    for (o, (&g, &u)) in out.iter_mut().zip(gate.iter().zip(up)) {
        *o = silu_mul(g, u);
    }
}

/// `out = silu(gate) ⊙ up`, elementwise.
pub fn swiglu_forward<T: Real>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(out.len() == gate.len() && gate.len() == up.len(), "swiglu_forward: lengths");
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| swiglu_forward_slice(o, g, u));
    } else {
        swiglu_forward_slice(out, gate, up);
    }
}

fn swiglu_backward_slice<T: Real>(d_gate: &mut [T], d_up: &mut [T], d_out: &[T], gate: &[T], up: &[T]) {
    for ((dg, du), ((&dy, &g), &u)) in d_gate.iter_mut().zip(d_up.iter_mut()).zip(d_out.iter().zip(gate).zip(up)) {
        let s = sigmoid(g);
        let silu = g * s;
        *du = dy * silu;
        *dg = dy * u * s * (T::ONE + g * (T::ONE - s));
    }
}

/// Backward of [`swiglu_forward`]: **overwrites** `d_gate` and `d_up`.
pub fn swiglu_backward<T: Real>(d_gate: &mut [T], d_up: &mut [T], d_out: &[T], gate: &[T], up: &[T]) {
    assert!(
        d_gate.len() == d_out.len() && d_up.len() == d_out.len() && gate.len() == d_out.len() && up.len() == d_out.len(),
        "swiglu_backward: lengths"
    );
    if d_out.len() >= PAR_MIN {
        d_gate
            .par_chunks_mut(CHUNK)
            .zip(d_up.par_chunks_mut(CHUNK))
            .zip(d_out.par_chunks(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)))
            .for_each(|((dg, du), ((dy, g), u))| swiglu_backward_slice(dg, du, dy, g, u));
    } else {
        swiglu_backward_slice(d_gate, d_up, d_out, gate, up);
    }
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)

/// `out = gelu_tanh(inp)`.
pub fn gelu_forward<T: Real>(out: &mut [T], inp: &[T]) {
    assert_eq!(out.len(), inp.len(), "gelu_forward: lengths");
    out.par_iter_mut().zip(inp.par_iter()).with_min_len(4096).for_each(|(o, &x)| *o = gelu_tanh(x));
}

/// Backward of [`gelu_forward`]: **overwrites** `d_inp`.
pub fn gelu_backward<T: Real>(d_inp: &mut [T], d_out: &[T], inp: &[T]) {
    assert!(d_inp.len() == inp.len() && d_out.len() == inp.len(), "gelu_backward: lengths");
    let c = T::from_f64(GELU_C);
    let a = T::from_f64(0.044715);
    let half = T::from_f64(0.5);
    let three = T::from_f64(3.0);
    d_inp.par_iter_mut().zip(d_out.par_iter().zip(inp.par_iter())).with_min_len(4096).for_each(|(dx, (&dy, &x))| {
        let u = c * (x + a * x * x * x);
        let t = u.tanh();
        let du = c * (T::ONE + three * a * x * x);
        *dx = dy * (half * (T::ONE + t) + half * x * (T::ONE - t * t) * du);
    });
}
