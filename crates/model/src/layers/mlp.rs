//! Dense MLP: SwiGLU `w_down(silu(w_gate h) ⊙ w_up h)` or GELU `w_down(gelu(w_up h))`.
//! Also used for the shared experts of a MoE layer.

use crate::config::Activation;
use crate::params::MlpLayout;
use moe_kernels::act::{gelu_backward, gelu_forward, swiglu_backward, swiglu_forward};
use moe_kernels::linear::{linear_backward, linear_forward};
use moe_kernels::{Par, Real};

/// Activations kept for the backward.
#[derive(Debug, Default)]
pub struct MlpSaved<T> {
    gate: Vec<T>, // [n, d_ff] (empty for GELU)
    up: Vec<T>,   // [n, d_ff]
    act: Vec<T>,  // [n, d_ff]
}

/// Forward over `h [n, d_model]`; returns `out [n, d_model]`.
pub fn mlp_forward<T: Real>(p: &[T], lay: &MlpLayout, h: &[T], n: usize, d_model: usize, par: Par) -> (Vec<T>, MlpSaved<T>) {
    let f = lay.d_ff;
    let mut up = vec![T::ZERO; n * f];
    linear_forward(&mut up, h, &p[lay.w_up.clone()], n, d_model, f, par); // [n, d_ff]
    let mut act = vec![T::ZERO; n * f];
    let gate = match lay.activation {
        Activation::Swiglu => {
            let mut gate = vec![T::ZERO; n * f];
            linear_forward(&mut gate, h, &p[lay.w_gate.clone().expect("swiglu has w_gate")], n, d_model, f, par); // [n, d_ff]
            swiglu_forward(&mut act, &gate, &up);
            gate
        }
        Activation::Gelu => {
            gelu_forward(&mut act, &up);
            Vec::new()
        }
    };
    let mut out = vec![T::ZERO; n * d_model];
    linear_forward(&mut out, &act, &p[lay.w_down.clone()], n, f, d_model, par); // [n, d_model]
    (out, MlpSaved { gate, up, act })
}

/// Backward: **accumulates** into `d_h` and the weight gradients in `g`.
#[allow(clippy::too_many_arguments)]
pub fn mlp_backward<T: Real>(
    d_h: &mut [T],
    g: &mut [T],
    d_out: &[T],
    h: &[T],
    s: &MlpSaved<T>,
    p: &[T],
    lay: &MlpLayout,
    n: usize,
    d_model: usize,
    par: Par,
) {
    let f = lay.d_ff;
    let mut d_act = vec![T::ZERO; n * f];
    linear_backward(Some(&mut d_act), false, &mut g[lay.w_down.clone()], d_out, &s.act, &p[lay.w_down.clone()], n, f, d_model, par);
    let mut d_up = vec![T::ZERO; n * f];
    match lay.activation {
        Activation::Swiglu => {
            let wg = lay.w_gate.clone().expect("swiglu has w_gate");
            let mut d_gate = vec![T::ZERO; n * f];
            swiglu_backward(&mut d_gate, &mut d_up, &d_act, &s.gate, &s.up);
            linear_backward(Some(&mut *d_h), true, &mut g[wg.clone()], &d_gate, h, &p[wg], n, d_model, f, par);
        }
        Activation::Gelu => gelu_backward(&mut d_up, &d_act, &s.up),
    }
    linear_backward(Some(d_h), true, &mut g[lay.w_up.clone()], &d_up, h, &p[lay.w_up.clone()], n, d_model, f, par);
}
