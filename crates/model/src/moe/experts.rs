//! Routed experts: a stack of SwiGLU MLPs run as grouped GEMMs over rows grouped by expert, experts
//! in parallel on the rayon pool (each expert's GEMMs stay on one thread when there are enough
//! experts to keep every core busy; otherwise each GEMM uses the whole pool).
//!
//! The rows arrive already gathered ([`gather_rows`] in one process; from the expert-parallel
//! exchange in several), as `offsets`: rows of this process's expert `j` (`lay.first_expert + j`)
//! are `offsets[j]..offsets[j + 1]`.

use super::dispatch::Dispatch;
use crate::config::ClampedSwiglu;
use crate::params::MoeLayout;
use moe_kernels::act::{swiglu_backward, swiglu_forward};
use moe_kernels::linear::{linear_backward, linear_forward};
use moe_kernels::{Par, Real};
use rayon::prelude::*;

/// Activations kept for the backward, rows in dispatch order.
#[derive(Debug, Default)]
pub struct ExpertsSaved<T> {
    /// gathered inputs `[n_rows, d_model]`
    pub x: Vec<T>,
    gate: Vec<T>, // [n_rows, d_expert]
    up: Vec<T>,   // [n_rows, d_expert]
    act: Vec<T>,  // [n_rows, d_expert]
    /// expert outputs before the combine weights `[n_rows, d_model]`
    pub y: Vec<T>,
}

/// Split a row buffer of width `w` into one mutable slice per expert.
fn split_rows<'a, T>(mut buf: &'a mut [T], offsets: &[usize], w: usize) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(offsets.len() - 1);
    for e in 0..offsets.len() - 1 {
        let (a, b) = buf.split_at_mut((offsets[e + 1] - offsets[e]) * w);
        out.push(a);
        buf = b;
    }
    out
}

/// How to spread experts over threads: (`true` = one task per expert, per-GEMM threading).
fn plan(offsets: &[usize]) -> (bool, Par) {
    let busy = offsets.windows(2).filter(|w| w[1] > w[0]).count();
    if busy >= 2 * rayon::current_num_threads() {
        (true, Par::Seq)
    } else {
        (false, Par::Pool)
    }
}

/// `(clamp(up, ±limit) + 1) · g · σ(alpha · g)`, `g = min(gate, limit)` (GPT-OSS; inference only).
fn clamped_swiglu_forward<T: Real>(a: &mut [T], gate: &[T], up: &[T], c: ClampedSwiglu) {
    let (alpha, limit) = (T::from_f64(c.alpha), T::from_f64(c.limit));
    for ((o, &g), &u) in a.iter_mut().zip(gate).zip(up) {
        *o = moe_kernels::act::clamped_swiglu(g, u, alpha, limit);
    }
}

fn add_rows<T: Real>(x: &mut [T], b: &[T]) {
    for row in x.chunks_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(a, &c)| *a += c);
    }
}

/// The dispatched rows of `h [n_tok, d_model]` in dispatch order `[n_rows, d_model]`;
/// `in_scale [n_rows]`, when given, multiplies each row (Llama 4 scales the expert input by the
/// combine weight).
pub fn gather_rows<T: Real>(h: &[T], d: &Dispatch, d_model: usize, in_scale: Option<&[T]>) -> Vec<T> {
    let mut x = vec![T::ZERO; d.n_rows() * d_model];
    x.par_chunks_mut(d_model).zip(d.token.par_iter()).for_each(|(xr, &t)| {
        xr.copy_from_slice(&h[t as usize * d_model..(t as usize + 1) * d_model]);
    });
    if let Some(sc) = in_scale {
        x.par_chunks_mut(d_model).zip(sc.par_iter()).for_each(|(xr, &w)| xr.iter_mut().for_each(|v| *v *= w));
    }
    x
}

/// Run this process's experts over their rows of `x [n_rows, d_model]` (grouped by `offsets`,
/// `[n_local + 1]`); `clamp` replaces SwiGLU by the clamped variant. Expert biases
/// (`lay.expert_bias`) are added after each projection.
#[allow(clippy::too_many_arguments)]
pub fn experts_forward<T: Real>(
    p: &[T],
    lay: &MoeLayout,
    x: Vec<T>,
    offsets: &[usize],
    d_model: usize,
    d_expert: usize,
    clamp: Option<ClampedSwiglu>,
) -> ExpertsSaved<T> {
    assert_eq!(offsets.len(), lay.n_local + 1, "one row group per local expert");
    let n_rows = offsets[lay.n_local];
    let (wsz_in, wsz_out) = (d_expert * d_model, d_model * d_expert);
    let mut gate = vec![T::ZERO; n_rows * d_expert];
    let mut up = vec![T::ZERO; n_rows * d_expert];
    let mut act = vec![T::ZERO; n_rows * d_expert];
    let mut y = vec![T::ZERO; n_rows * d_model];
    let (per_expert, par) = plan(offsets);
    let wg = &p[lay.w_gate.clone()];
    let wu = &p[lay.w_up.clone()];
    let wd = &p[lay.w_down.clone()];
    let jobs: Vec<_> = split_rows(&mut gate, offsets, d_expert)
        .into_iter()
        .zip(split_rows(&mut up, offsets, d_expert))
        .zip(split_rows(&mut act, offsets, d_expert))
        .zip(split_rows(&mut y, offsets, d_model))
        .enumerate()
        .collect();
    let run = |(e, (((g, u), a), yy)): (usize, (((&mut [T], &mut [T]), &mut [T]), &mut [T]))| {
        let n = offsets[e + 1] - offsets[e];
        if n == 0 {
            return;
        }
        let xe = &x[offsets[e] * d_model..offsets[e + 1] * d_model]; // [n, d_model]
        linear_forward(g, xe, &wg[e * wsz_in..(e + 1) * wsz_in], n, d_model, d_expert, par); // [n, d_expert]
        linear_forward(u, xe, &wu[e * wsz_in..(e + 1) * wsz_in], n, d_model, d_expert, par); // [n, d_expert]
        if let Some(b) = &lay.expert_bias {
            add_rows(g, &p[b[0].start + e * d_expert..b[0].start + (e + 1) * d_expert]);
            add_rows(u, &p[b[1].start + e * d_expert..b[1].start + (e + 1) * d_expert]);
        }
        match clamp {
            None => swiglu_forward(a, g, u),
            Some(c) => clamped_swiglu_forward(a, g, u, c),
        }
        linear_forward(yy, a, &wd[e * wsz_out..(e + 1) * wsz_out], n, d_expert, d_model, par); // [n, d_model]
        if let Some(b) = &lay.expert_bias {
            add_rows(yy, &p[b[2].start + e * d_model..b[2].start + (e + 1) * d_model]);
        }
    };
    if per_expert {
        jobs.into_par_iter().for_each(run);
    } else {
        jobs.into_iter().for_each(run);
    }
    ExpertsSaved { x, gate, up, act, y }
}

/// Backward of [`experts_forward`] given `d_y [n_rows, d_model]` (rows as in the forward);
/// **accumulates** the expert weight gradients in `g` and returns `d_x [n_rows, d_model]`.
#[allow(clippy::too_many_arguments)]
pub fn experts_backward<T: Real>(
    g: &mut [T],
    d_y: &[T],
    s: &ExpertsSaved<T>,
    p: &[T],
    lay: &MoeLayout,
    offsets: &[usize],
    d_model: usize,
    d_expert: usize,
) -> Vec<T> {
    let n_rows = offsets[lay.n_local];
    let wsz = d_expert * d_model;
    assert!(lay.w_gate.end == lay.w_up.start && lay.w_up.end == lay.w_down.start, "expert stacks are contiguous");
    let (g_gate, rest) = g[lay.w_gate.start..lay.w_down.end].split_at_mut(wsz * lay.n_local);
    let (g_up, g_down) = rest.split_at_mut(wsz * lay.n_local);
    let wg = &p[lay.w_gate.clone()];
    let wu = &p[lay.w_up.clone()];
    let wd = &p[lay.w_down.clone()];
    let mut d_x = vec![T::ZERO; n_rows * d_model];
    let (per_expert, par) = plan(offsets);
    let jobs: Vec<_> = split_rows(&mut d_x, offsets, d_model)
        .into_iter()
        .zip(g_gate.chunks_mut(wsz).zip(g_up.chunks_mut(wsz)).zip(g_down.chunks_mut(wsz)))
        .enumerate()
        .collect();
    let run = |(e, (dx, ((gg, gu), gd))): (usize, (&mut [T], ((&mut [T], &mut [T]), &mut [T])))| {
        let r = offsets[e]..offsets[e + 1];
        let n = r.len();
        if n == 0 {
            return;
        }
        let xe = &s.x[r.start * d_model..r.end * d_model]; // [n, d_model]
        let dye = &d_y[r.start * d_model..r.end * d_model]; // [n, d_model]
        let ge = &s.gate[r.start * d_expert..r.end * d_expert]; // [n, d_expert]
        let ue = &s.up[r.start * d_expert..r.end * d_expert];
        let ae = &s.act[r.start * d_expert..r.end * d_expert];
        let mut d_act = vec![T::ZERO; n * d_expert];
        linear_backward(Some(&mut d_act), false, gd, dye, ae, &wd[e * wsz..(e + 1) * wsz], n, d_expert, d_model, par);
        let mut d_gate = vec![T::ZERO; n * d_expert];
        let mut d_up = vec![T::ZERO; n * d_expert];
        swiglu_backward(&mut d_gate, &mut d_up, &d_act, ge, ue);
        linear_backward(Some(&mut *dx), false, gg, &d_gate, xe, &wg[e * wsz..(e + 1) * wsz], n, d_model, d_expert, par);
        linear_backward(Some(dx), true, gu, &d_up, xe, &wu[e * wsz..(e + 1) * wsz], n, d_model, d_expert, par);
    };
    if per_expert {
        jobs.into_par_iter().for_each(run);
    } else {
        jobs.into_iter().for_each(run);
    }
    d_x
}
