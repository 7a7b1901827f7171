//! Row-tile products for schedulers that spread one parallel domain over many small pieces of
//! work, e.g. the (expert × output tile) tasks of a grouped MoE forward.
//!
//! A task computes `y[m, nt] = x[m, k] · W[j0..j1, k]ᵀ` for one tile of rows `j0..j1` of a weight
//! matrix, on the calling thread, into a contiguous `[m, nt]` buffer (`nt = j1 − j0`):
//!
//! * [`TileInput`] / [`tile_gemv`]: the skinny path (few rows of `x`): the [`crate::gemv`]
//!   kernels, with `x` rearranged once per matrix format ([`TileInput::new`]) and shared by every
//!   tile that reads it, so that one token's input is prepared once for all its experts' tiles.
//! * [`tile_gemm`]: the wide path (many rows of `x`, e.g. a prefill): the `gemm` crate on the
//!   tile, after converting bf16/int8/q4 tiles to f32 in a caller-provided scratch buffer.
//!
//! Both compute the same `y` up to f32 rounding; [`crate::gemv::naive::gemv`] on the
//! [`WeightsRef::rows`] sub-matrix is the twin (tested in `tests/tile.rs`).

use crate::gemv::{prepare_x, resolve, run_rows, Kernel, PreparedX};
use crate::matmul::{matmul, MatmulShape, Par};
use crate::quant::{bf16_bits_to_f32, dequantize_q4_row, WeightDtype, WeightsRef, QK};

/// `x [m, k]` prepared for one weight format and kernel, shared by all tiles that read it.
pub struct TileInput<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    dtype: WeightDtype,
    kernel: Kernel,
    prep: PreparedX,
}

impl<'a> TileInput<'a> {
    /// Prepare `x [m, k]` for weights of `dtype` with `kernel` (`Kernel::Auto`: the best exact one).
    ///
    /// # Panics
    /// If `x.len() != m·k` or this CPU cannot run `kernel`.
    pub fn new(x: &'a [f32], m: usize, k: usize, dtype: WeightDtype, kernel: Kernel) -> Self {
        assert_eq!(x.len(), m * k, "TileInput: x has {} elements, expected m·k = {m}·{k}", x.len());
        assert!(kernel.available(), "TileInput: kernel {kernel:?} is not supported by this CPU");
        let kernel = resolve(kernel, dtype);
        let prep = prepare_x(kernel, dtype, x, m, k);
        TileInput { x, m, k, dtype, kernel, prep }
    }

    /// Rows of `x`.
    pub fn m(&self) -> usize {
        self.m
    }
}

/// `y[m, nt] = x · wᵀ` (**overwrites** `y`) for a tile `w [nt, k]` (typically
/// [`WeightsRef::rows`] of a larger matrix), on the calling thread, with the GEMV kernels.
///
/// # Panics
/// If `w` is not of the format and width `inp` was prepared for, or `y.len() != m·nt`.
pub fn tile_gemv(y: &mut [f32], inp: &TileInput<'_>, w: WeightsRef<'_>) {
    let (nt, k) = (w.n(), w.k());
    assert_eq!(w.dtype(), inp.dtype, "tile_gemv: weights are {:?}, input prepared for {:?}", w.dtype(), inp.dtype);
    assert_eq!(k, inp.k, "tile_gemv: weights have k = {k}, input has k = {}", inp.k);
    assert_eq!(y.len(), inp.m * nt, "tile_gemv: y has {} elements, expected m·nt = {}·{nt}", y.len(), inp.m);
    if inp.m == 0 || nt == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    // SAFETY: y holds m·nt f32 (checked) and is exclusively borrowed; the kernel was resolved and
    // checked available in `TileInput::new`, and `prep` was made for it and this format.
    unsafe { run_rows(inp.kernel, y.as_mut_ptr(), inp.x, &inp.prep, w, inp.m, 0, nt) }
}

/// `y[m, nt] = x[m, k] · wᵀ` (**overwrites** `y`) for a tile `w [nt, k]` with the `gemm` crate
/// on the calling thread. bf16, int8 and q4 tiles are first converted to f32 in `scratch` (grown as
/// needed, so a caller that keeps it allocates once).
///
/// # Panics
/// If `x.len() != m·k` or `y.len() != m·nt`.
pub fn tile_gemm(y: &mut [f32], x: &[f32], m: usize, w: WeightsRef<'_>, scratch: &mut Vec<f32>) {
    let (nt, k) = (w.n(), w.k());
    let wf: &[f32] = match w {
        WeightsRef::F32 { w, .. } => w,
        _ => {
            scratch.resize(nt * k, 0.0);
            w.dequantize_into(scratch);
            scratch
        }
    };
    matmul(y, x, wf, MatmulShape::nt(m, k, nt), 0.0, Par::Seq); // [m, nt]
}

impl<'a> WeightsRef<'a> {
    /// Rows `j0..j1` of this matrix as a `[j1 − j0, k]` matrix (no copy).
    ///
    /// # Panics
    /// If `j0 > j1` or `j1 > n`.
    pub fn rows(&self, j0: usize, j1: usize) -> WeightsRef<'a> {
        assert!(j0 <= j1 && j1 <= self.n(), "WeightsRef::rows: {j0}..{j1} out of 0..{}", self.n());
        match *self {
            WeightsRef::F32 { w, k, .. } => WeightsRef::F32 { w: &w[j0 * k..j1 * k], n: j1 - j0, k },
            WeightsRef::Bf16 { bits, k, .. } => WeightsRef::Bf16 { bits: &bits[j0 * k..j1 * k], n: j1 - j0, k },
            WeightsRef::I8 { q, scale, k, .. } => WeightsRef::I8 { q: &q[j0 * k..j1 * k], scale: &scale[j0..j1], n: j1 - j0, k },
            WeightsRef::Q4 { blocks, k, .. } => {
                let kb = k.div_ceil(QK);
                WeightsRef::Q4 { blocks: &blocks[j0 * kb..j1 * kb], n: j1 - j0, k }
            }
            WeightsRef::Q4K { blocks, k, .. } => {
                let kb = k.div_ceil(crate::quant::QK_K);
                WeightsRef::Q4K { blocks: &blocks[j0 * kb..j1 * kb], n: j1 - j0, k }
            }
        }
    }

    /// Write the f32 matrix `[n, k]` these weights stand for into `out` (`scale · q` for int8).
    ///
    /// # Panics
    /// If `out.len() != n·k`.
    pub fn dequantize_into(&self, out: &mut [f32]) {
        let (n, k) = (self.n(), self.k());
        assert_eq!(out.len(), n * k, "dequantize_into: out has {} elements, expected {}", out.len(), n * k);
        match *self {
            WeightsRef::F32 { w, .. } => out.copy_from_slice(w),
            WeightsRef::Bf16 { bits, .. } => out.iter_mut().zip(bits).for_each(|(o, &b)| *o = bf16_bits_to_f32(b)),
            WeightsRef::I8 { q, scale, .. } => {
                if k == 0 {
                    return;
                }
                for ((orow, qrow), &s) in out.chunks_exact_mut(k).zip(q.chunks_exact(k)).zip(scale) {
                    orow.iter_mut().zip(qrow).for_each(|(o, &v)| *o = v as f32 * s);
                }
            }
            WeightsRef::Q4 { blocks, .. } => {
                if k == 0 {
                    return;
                }
                for (orow, brow) in out.chunks_exact_mut(k).zip(blocks.chunks_exact(k.div_ceil(QK))) {
                    dequantize_q4_row(brow, orow);
                }
            }
            WeightsRef::Q4K { blocks, .. } => {
                if k == 0 {
                    return;
                }
                for (orow, brow) in out.chunks_exact_mut(k).zip(blocks.chunks_exact(k.div_ceil(crate::quant::QK_K))) {
                    crate::quant::dequantize_q4k_row(brow, orow);
                }
            }
        }
    }
}
