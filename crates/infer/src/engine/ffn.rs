//! Grouped MLP forward: many MLPs (the touched experts of a MoE layer, its shared experts, or one
//! dense FFN), each over its own block of rows, in **two parallel regions in all**:
//!
//! 1. tasks over (group × feature tile): `act[rows, f0..f1] = silu(x·W_gateᵀ) ⊙ (x·W_upᵀ)` from one
//!    contiguous block of the interleaved gate/up matrix (see [`super::weights`]), SiLU·up fused
//!    into the tile's epilogue — or whichever [`MlpAct`] the MLP has (clamped SwiGLU, GELU), with
//!    the gate/up biases of biased experts added in the same epilogue, before the activation;
//! 2. tasks over (group × output tile): `y[rows, r0..r1] = act · W_down[r0..r1]ᵀ (+ b_down[r0..r1])`.
//!
//! No barrier per expert: a thread that finishes one expert's tile takes the next task, whatever
//! expert it belongs to. Each tile uses the GEMV kernels when its group has few rows
//! ([`super::linear::gemm_min_rows_for`]), else the `gemm` crate on the tile. The slow twin is the
//! model crate's per-expert `linear_forward` path (`decode.rs`), compared in `tests/engine.rs`.

use super::linear::{gemm_min_rows_for, with_tile_scratch, SharedOut};
use super::weights::{MlpAct, MlpWeights, FF_TILE};
use moe_kernels::act::{clamped_swiglu, gelu_tanh, silu_mul};
use moe_kernels::gemv::Kernel;
use moe_kernels::tile::{tile_gemm, tile_gemv, TileInput};
use rayon::prelude::*;

/// One MLP over a block of rows.
pub struct Group<'a> {
    /// the weights
    pub mlp: &'a MlpWeights,
    /// inputs `[m, d_model]`
    pub x: &'a [f32],
    /// rows
    pub m: usize,
    /// first row of this group's output in `out`
    pub row0: usize,
}

/// Reusable buffers of [`grouped_mlp_forward`].
#[derive(Default, Debug)]
pub struct FfnScratch {
    act: Vec<f32>,
    act_off: Vec<usize>,
    tasks: Vec<(usize, usize, usize)>,
}

/// `a[f] = act(gate[f] (+ b_gate[f]), up[f] (+ b_up[f]))` over one gate/up tile of a gated MLP;
/// `bias` is `(b_gate, b_up)` for these features. One loop per case, so the plain SwiGLU stays
/// the loop it always was.
#[inline(always)]
fn gated_epilogue(a: &mut [f32], gate: &[f32], up: &[f32], act: MlpAct, bias: Option<(&[f32], &[f32])>) {
    let it = a.iter_mut().zip(gate).zip(up);
    match (act, bias) {
        (MlpAct::Swiglu, None) => it.for_each(|((a, &g), &u)| *a = silu_mul(g, u)),
        (MlpAct::Swiglu, Some((bg, bu))) => it.zip(bg.iter().zip(bu)).for_each(|(((a, &g), &u), (&cg, &cu))| *a = silu_mul(g + cg, u + cu)),
        (MlpAct::ClampedSwiglu { alpha, limit }, None) => it.for_each(|((a, &g), &u)| *a = clamped_swiglu(g, u, alpha, limit)),
        (MlpAct::ClampedSwiglu { alpha, limit }, Some((bg, bu))) => {
            it.zip(bg.iter().zip(bu)).for_each(|(((a, &g), &u), (&cg, &cu))| *a = clamped_swiglu(g + cg, u + cu, alpha, limit))
        }
        (MlpAct::Gelu, _) => unreachable!("GELU has no gate"),
    }
}

/// Tasks of about `total / (8·threads)` units, in multiples of `unit`.
fn chunk(total: usize, unit: usize) -> usize {
    let t = rayon::current_num_threads().max(1);
    total.div_ceil(8 * t).next_multiple_of(unit).max(unit)
}

/// `out[row0 + i, ·] = mlp(x[i, ·])` for every group (**overwrites** those rows of `out`,
/// `[·, d_model]`); rows of `out` not covered by a group are left alone.
pub fn grouped_mlp_forward(out: &mut [f32], groups: &[Group<'_>], d_model: usize, kernel: Kernel, s: &mut FfnScratch) {
    if groups.is_empty() {
        return;
    }
    let min_gemm = |dtype| gemm_min_rows_for(dtype, kernel);
    // ---- phase 1: act = silu(gate) ⊙ up, tasks over (group × feature tile)
    s.act_off.clear();
    let mut n_act = 0;
    for g in groups {
        s.act_off.push(n_act);
        n_act += g.m * g.mlp.d_ff;
    }
    s.act.resize(n_act, 0.0);
    let total_f: usize = groups.iter().map(|g| g.mlp.d_ff).sum();
    let fc = chunk(total_f, FF_TILE);
    s.tasks.clear();
    for (gi, g) in groups.iter().enumerate() {
        let mut f0 = 0;
        while f0 < g.mlp.d_ff {
            let f1 = (f0 + fc).min(g.mlp.d_ff);
            s.tasks.push((gi, f0, f1));
            f0 = f1;
        }
    }
    let inputs: Vec<Option<TileInput<'_>>> = groups
        .iter()
        .map(|g| (g.m < min_gemm(g.mlp.gate_up.dtype())).then(|| TileInput::new(g.x, g.m, d_model, g.mlp.gate_up.dtype(), kernel)))
        .collect();
    let act = SharedOut::new(&mut s.act);
    let act_off = &s.act_off;
    s.tasks.par_iter().for_each(|&(gi, f0, f1)| {
        let g = &groups[gi];
        let (m, dff) = (g.m, g.mlp.d_ff);
        let rows = g.mlp.gate_up_rows(f0, f1);
        let nr = rows.len();
        let w = g.mlp.gate_up.view().rows(rows.start, rows.end);
        with_tile_scratch(m * nr, |tile, deq| {
            match &inputs[gi] {
                Some(inp) => tile_gemv(tile, inp, w),    // [m, nr]
                None => tile_gemm(tile, g.x, m, w, deq), // [m, nr]
            }
            let base = act_off[gi];
            for i in 0..m {
                let trow = &tile[i * nr..(i + 1) * nr];
                // SAFETY: this task alone writes act[group gi][row i][f0..f1].
                let arow = unsafe { act.slice(base + i * dff + f0, f1 - f0) };
                if g.mlp.act.gated() {
                    let mut t0 = f0;
                    while t0 < f1 {
                        let tl = (t0 + FF_TILE).min(f1) - t0;
                        let c = 2 * (t0 - f0);
                        let (gate, up) = (&trow[c..c + tl], &trow[c + tl..c + 2 * tl]); // [tl] each
                        let bias = g.mlp.bias.as_ref().map(|b| (&b.gate[t0..t0 + tl], &b.up[t0..t0 + tl]));
                        gated_epilogue(&mut arow[t0 - f0..t0 - f0 + tl], gate, up, g.mlp.act, bias);
                        t0 += tl;
                    }
                } else {
                    arow.iter_mut().zip(trow).for_each(|(a, &u)| *a = gelu_tanh(u));
                }
            }
        });
    });
    // ---- phase 2: out = act · W_downᵀ, tasks over (group × output tile)
    let rc = chunk(groups.len() * d_model, 4);
    s.tasks.clear();
    for gi in 0..groups.len() {
        let mut r0 = 0;
        while r0 < d_model {
            let r1 = (r0 + rc).min(d_model);
            s.tasks.push((gi, r0, r1));
            r0 = r1;
        }
    }
    let acts: Vec<&[f32]> = groups.iter().enumerate().map(|(gi, g)| &s.act[s.act_off[gi]..s.act_off[gi] + g.m * g.mlp.d_ff]).collect();
    let inputs: Vec<Option<TileInput<'_>>> = groups
        .iter()
        .zip(&acts)
        .map(|(g, a)| (g.m < min_gemm(g.mlp.down.dtype())).then(|| TileInput::new(a, g.m, g.mlp.d_ff, g.mlp.down.dtype(), kernel)))
        .collect();
    let o = SharedOut::new(out);
    s.tasks.par_iter().for_each(|&(gi, r0, r1)| {
        let g = &groups[gi];
        let m = g.m;
        let nr = r1 - r0;
        let w = g.mlp.down.view().rows(r0, r1);
        with_tile_scratch(m * nr, |tile, deq| {
            match &inputs[gi] {
                Some(inp) => tile_gemv(tile, inp, w),         // [m, nr]
                None => tile_gemm(tile, acts[gi], m, w, deq), // [m, nr]
            }
            let bias = g.mlp.bias.as_ref().map(|b| &b.down[r0..r1]); // [nr]
            for i in 0..m {
                // SAFETY: this task alone writes out[row0 + i][r0..r1].
                let orow = unsafe { o.slice((g.row0 + i) * d_model + r0, nr) };
                let trow = &tile[i * nr..(i + 1) * nr];
                match bias {
                    None => orow.copy_from_slice(trow),
                    Some(b) => orow.iter_mut().zip(trow).zip(b).for_each(|((o, &y), &c)| *o = y + c),
                }
            }
        });
    });
}
