//! Activations: SwiGLU (`silu(gate) ⊙ up`) and tanh-approximated GELU.

use crate::Real;
use rayon::prelude::*;

const PAR_MIN: usize = 1 << 15;

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

/// `out = silu(gate) ⊙ up`, elementwise.
pub fn swiglu_forward<T: Real>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(out.len() == gate.len() && gate.len() == up.len(), "swiglu_forward: lengths");
    let f = |(o, (&g, &u)): (&mut T, (&T, &T))| *o = g * sigmoid(g) * u;
    if out.len() >= PAR_MIN {
        out.par_iter_mut().zip(gate.par_iter().zip(up.par_iter())).for_each(f);
    } else {
        out.iter_mut().zip(gate.iter().zip(up.iter())).for_each(f);
    }
}

/// Backward of [`swiglu_forward`]: **overwrites** `d_gate` and `d_up`.
pub fn swiglu_backward<T: Real>(d_gate: &mut [T], d_up: &mut [T], d_out: &[T], gate: &[T], up: &[T]) {
    assert!(d_gate.len() == d_out.len() && d_up.len() == d_out.len(), "swiglu_backward: lengths");
    let f = |((dg, du), ((&dy, &g), &u)): ((&mut T, &mut T), ((&T, &T), &T))| {
        let s = sigmoid(g);
        let silu = g * s;
        *du = dy * silu;
        *dg = dy * u * s * (T::ONE + g * (T::ONE - s));
    };
    if d_out.len() >= PAR_MIN {
        d_gate.par_iter_mut().zip(d_up.par_iter_mut()).zip(d_out.par_iter().zip(gate.par_iter()).zip(up.par_iter())).for_each(f);
    } else {
        d_gate.iter_mut().zip(d_up.iter_mut()).zip(d_out.iter().zip(gate.iter()).zip(up.iter())).for_each(f);
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
