//! Activations: SwiGLU (`silu(gate) ⊙ up`) and tanh-approximated GELU.

use crate::exp::sigmoid;
use crate::Real;
use rayon::prelude::*;

const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task (inner loops over slices vectorise).
const CHUNK: usize = 1 << 13;

fn swiglu_forward_slice<T: Real>(out: &mut [T], gate: &[T], up: &[T]) {
    for (o, (&g, &u)) in out.iter_mut().zip(gate.iter().zip(up)) {
        *o = g * sigmoid(g) * u;
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
    let c = T::from_f64(GELU_C);
    let a = T::from_f64(0.044715);
    let half = T::from_f64(0.5);
    out.par_iter_mut().zip(inp.par_iter()).with_min_len(4096).for_each(|(o, &x)| {
        *o = half * x * (T::ONE + (c * (x + a * x * x * x)).tanh());
    });
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
