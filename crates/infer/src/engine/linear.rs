//! One weight matrix applied to a batch of rows, and the small helpers the engine's parallel tasks
//! share (per-thread tile buffers, disjoint writes into one output).
//!
//! [`linear`] picks the kernel by the number of rows `m`: below [`gemm_min_rows`] the GEMV kernels
//! (weights streamed once, bandwidth-bound), from there the `gemm` crate (compute-bound), on f32
//! weights directly and on bf16/int8 weights one row tile at a time converted to f32 in a
//! per-thread buffer.

use moe_kernels::gemv::{gemv_ref, Kernel};
use moe_kernels::quant::{WeightDtype, Weights};
use moe_kernels::tile::tile_gemm;
use moe_kernels::{matmul, MatmulShape, Par};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of `x` from which a product uses the wide path ([`linear_wide`]: the `gemm` crate, or f32
/// tiles of bf16/int8 weights) instead of the GEMV kernels. `examples/crossover.rs` measured it:
///
/// - with AVX-512 (the AVX-512 GEMV kernels, 2-core Xeon): the GEMV kernels ahead of the `gemm`
///   crate, which packs the whole weight matrix per call, up to about **256** rows on every engine
///   shape;
/// - without (the AVX2 or portable kernels, 2-core AMD EPYC, 2026-12-07): the GEMV kernels stay at
///   ≈ 19 GFLOP/s whatever the rows, and the wide path is ahead from **8** rows in every format
///   (f32, bf16, int8; 1.06–2.0× at 8 rows, 3–4.5× at 64–256) on all three shapes.
///
/// `MOE_GEMM_MIN_ROWS` overrides it, for measurements and tests.
pub fn gemm_min_rows() -> usize {
    static V: OnceLock<usize> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("MOE_GEMM_MIN_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(if Kernel::Avx512.available() { 256 } else { 8 })
    })
}

/// Rows from which the wide path takes over from the int8-activation GEMV kernel
/// ([`Kernel::Avx2Q8`]: q4, and int8 on AVX2 without AVX-512), which is 2–3× faster than the exact
/// AVX2 kernels. `examples/crossover.rs` (2-core AMD EPYC, AVX2, 2026-12-07, int8 and q4 on the
/// three engine shapes): the GEMV kernel ahead up to 16 rows (wide/gemv 0.22–0.91), about level
/// at 32 (0.95–1.13), the wide path ahead from 64 (1.25–1.36).
const Q8_GEMM_MIN_ROWS: usize = 32;

/// [`gemm_min_rows`] for products on `dtype` weights with `kernel`: [`Q8_GEMM_MIN_ROWS`] where
/// that resolves to [`Kernel::Avx2Q8`] (unless `MOE_GEMM_MIN_ROWS` is set).
pub fn gemm_min_rows_for(dtype: WeightDtype, kernel: Kernel) -> usize {
    static SET: OnceLock<bool> = OnceLock::new();
    let set = *SET.get_or_init(|| std::env::var_os("MOE_GEMM_MIN_ROWS").is_some());
    if !set && kernel.available() && kernel.resolved(dtype) == Kernel::Avx2Q8 {
        Q8_GEMM_MIN_ROWS
    } else {
        gemm_min_rows()
    }
}

thread_local! {
    /// (tile output, dequantised weight tile) per thread, grown on demand and kept.
    static TILE: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Run `f` with this thread's tile buffer (resized to `n`, contents unspecified) and its
/// dequantisation scratch. No allocation once the buffers have grown to the largest tile.
pub fn with_tile_scratch<R>(n: usize, f: impl FnOnce(&mut [f32], &mut Vec<f32>) -> R) -> R {
    TILE.with(|c| {
        let mut c = c.borrow_mut();
        let (tile, deq) = &mut *c;
        if tile.len() < n {
            tile.resize(n, 0.0);
        }
        f(&mut tile[..n], deq)
    })
}

/// A mutable buffer that parallel tasks write in disjoint pieces.
#[derive(Clone, Copy)]
pub struct SharedOut {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: only hands out disjoint sub-slices (the caller's contract on `slice`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Wrap `buf` for the duration of a parallel region (the borrow is not tracked: the region
    /// must end before `buf` is used again).
    pub fn new(buf: &mut [f32]) -> Self {
        SharedOut { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// `buf[start..start + n]`.
    ///
    /// # Safety
    /// No other task reads or writes any element of that range while the slice lives, and the
    /// buffer outlives it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, n: usize) -> &mut [f32] {
        assert!(start + n <= self.len, "SharedOut: {start}+{n} past {}", self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(start), n)
    }
}

/// Rows of a weight tile in the wide (gemm) path of [`linear`].
const GEMM_TILE_ROWS: usize = 128;

/// `y[m, n] = x[m, k] · Wᵀ` (**overwrites** `y`), `W [n, k]` in any format, on the rayon pool;
/// `kernel` picks the GEMV kernel (see [`moe_kernels::gemv::Kernel`]).
pub fn linear(y: &mut [f32], x: &[f32], w: &Weights, m: usize, kernel: Kernel) {
    let (n, k) = (w.n(), w.k());
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(y.len(), m * n);
    if m < gemm_min_rows_for(w.dtype(), kernel) {
        gemv_ref(y, x, w.view(), m, Par::Pool, kernel); // [m, n]
        return;
    }
    linear_wide(y, x, w, m);
}

/// The wide path of [`linear`] at any `m`: the `gemm` crate on f32 weights, else row tiles of `W`
/// converted to f32 per thread (**overwrites** `y`).
pub fn linear_wide(y: &mut [f32], x: &[f32], w: &Weights, m: usize) {
    let (n, k) = (w.n(), w.k());
    match w {
        Weights::F32(f) => matmul(y, x, &f.w, MatmulShape::nt(m, k, n), 0.0, Par::Pool), // [m, n]
        _ => {
            debug_assert_ne!(w.dtype(), WeightDtype::F32);
            let out = SharedOut::new(y);
            let n_tiles = n.div_ceil(GEMM_TILE_ROWS);
            (0..n_tiles).into_par_iter().for_each(|t| {
                let (j0, j1) = (t * GEMM_TILE_ROWS, ((t + 1) * GEMM_TILE_ROWS).min(n));
                let nt = j1 - j0;
                with_tile_scratch(m * nt, |tile, deq| {
                    tile_gemm(tile, x, m, w.view().rows(j0, j1), deq); // [m, nt]
                    for i in 0..m {
                        // SAFETY: this task alone writes columns j0..j1 of y.
                        unsafe { out.slice(i * n + j0, nt) }.copy_from_slice(&tile[i * nt..(i + 1) * nt]);
                    }
                });
            });
        }
    }
}
