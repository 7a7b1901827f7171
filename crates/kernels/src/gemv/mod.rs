//! Skinny matrix products for decoding: `y[m, n] = x[m, k] · W[n, k]ᵀ` with few rows `m`.
//!
//! At batch 1–32 a decode step reads every weight row once for a handful of tokens, so the work is
//! bound by memory bandwidth, not FLOPs: what matters is streaming `W` exactly once per call (all
//! `m` rows of `x` are applied to a block of `W` rows while it sits in L1/L2) and keeping every core
//! streaming. The `gemm` crate is fine at `m = 1` (within ~20% of these kernels with f32 weights)
//! but its packed path for `m ≥ 2` ran 8–10× slower than these kernels in `tests/gemv_roofline.rs`.
//!
//! Layout: `W` row-major `[n, k]` (PyTorch layout, one row per output feature) in any
//! [`Weights`] format; `x` row-major `[m, k]` f32; `y` row-major `[m, n]` f32, **overwritten**.
//! Work is split over output rows `n` in chunks (rayon, [`Par::Pool`]); every `m` is accepted but
//! the kernels are tuned for `m ≤ 8` (rows of `x` go four at a time through the micro-kernel, each
//! against four rows of `W`, so `m = 8` re-reads each `W` block once from L1/L2, never from DRAM).
//!
//! Entry points: [`gemv`] (owned [`Weights`], best exact kernel), [`gemv_with`] (explicit
//! [`Kernel`]), [`gemv_ref`] (borrowed [`WeightsRef`]) and [`gemv_f32`] (f32 weights held as a
//! slice, e.g. a model's parameter vector, no copy). [`naive`] holds the twins.
//!
//! Kernels ([`Kernel`]), chosen at run time:
//! * [`Kernel::Avx512`] (x86-64 with AVX-512 F/BW/VL): 16-lane FMAs, 4 rows of `W` × up to 4 rows
//!   of `x` per micro-kernel (4–16 accumulators), masked loads for the `k % 16` tail, and a
//!   software prefetch of the next four-row block (rows of 1–2 KiB, typical for int8/bf16, are too
//!   short for the hardware prefetcher: adding it made int8 `m = 1` about 2× faster).
//!   - f32: plain loads.
//!   - bf16: one 64-byte load = 32 weights; `<< 16` gives the even ones as f32, `& 0xFFFF0000` the
//!     odd ones (both exact, no cross-lane conversion); `x` is split into even/odd columns per
//!     32-block once per call to match. Products are exact, so the result is as accurate as f32.
//!   - int8: 16 i8 → i32 → f32 (exact), FMA against f32 `x`, the row's scale applied once at the
//!     end (`y = scale · Σ q·x`). Only the f32 accumulation rounds, as for f32 weights.
//! * [`Kernel::Avx512Bf16Dot`] (bf16 weights only; needs AVX512_BF16): `x` is first rounded to
//!   bf16 and `_mm512_dpbf16_ps` does 32 products per instruction. **Costs accuracy**: rounding `x`
//!   adds an error up to `2⁻⁸ · Σ_p |x_p · w_p|` per output (about 2⁻⁸·√k·rms in practice), on top
//!   of the weights' own bf16 rounding. Never chosen by [`Kernel::Auto`].
//! * [`Kernel::Avx512Vnni`] (int8 weights only; needs AVX512_VNNI): each row of `x` is quantised
//!   to symmetric int8 (`sx_i = max|x_i|/127`) and `vpdpbusd` does 64 exact integer
//!   multiply-adds per instruction; `y = sx_i · scale_j · Σ xq·q`. **Costs accuracy**: each `x`
//!   value moves by up to `max|x_i|/254`, so an output moves by up to
//!   `max|x_i|/254 · Σ_p |w_jp|` (typically `≈ max|x_i|·rms(w)·√k / 440`), which is large when
//!   activations have outliers. Never chosen by [`Kernel::Auto`].
//! * [`Kernel::Avx2Q8`] (int8 and q4 weights; needs AVX2, FMA, F16C): each row of `x` is quantised
//!   to int8 per block of 32 values as llama.cpp's `Q8_0` does ([`crate::quant::ActQ8`]), and each
//!   32-block of weights (q4: nibbles unpacked in registers to `q − 8`) is dotted with it exactly in
//!   integers (`vpsignb` + `vpmaddubsw` + `vpmaddwd`), converted to f32 and scaled by the block's
//!   scales (`y = Σ_b d_x · d_w · Σ q_x·q_w`; int8 applies its row scale once at the end). **Costs
//!   accuracy**: each `x` value moves by up to `max|block|/254`. The default ([`Kernel::Auto`]) for
//!   q4 weights on AVX2 machines and for int8 weights on AVX2 machines without AVX-512: there the
//!   exact kernels convert every weight to f32 and reach only 5–18% of the read bandwidth, this one
//!   3.3–5× more (`tests/gemv_roofline.rs`), and its error is small beside the weights' own rounding
//!   (`moe bench quality`; see `docs/inference.md` for both measurements). There is no AVX-512 q4 kernel (not written: the
//!   machine it was built on had none to test it): AVX-512 machines run this one.
//! * [`Kernel::Portable`]: the same maths in plain Rust written for auto-vectorisation (8-lane
//!   accumulator arrays, four rows of `x` per pass over a row of `W`), for every CPU; the tests call it directly so machines without AVX-512
//!   still check it.
//! * [`Kernel::Avx2`] (x86-64 with AVX2 and FMA, no AVX-512): the portable code compiled a second
//!   time with those target features, so one 8-lane accumulator is one 256-bit register and the
//!   bf16/int8 → f32 conversions vectorise. Rust never fuses `a·b + c` on its own, so the
//!   operations and their order are the portable kernel's: the results are **bit-identical** to
//!   [`Kernel::Portable`] (tested), only faster (the baseline x86-64 target has only SSE2).
//!
//! Batch invariance: every kernel computes `y[i, ·]` from `x[i, ·]` alone with a fixed operation
//! order, whatever `m`, the row's position in the batch or the thread chunking, so a sequence's
//! output is bit-identical whichever batch it is decoded in (tested).
//!
//! Error (all exact-`x` kernels): each output differs from the exact dot product of `x` with the
//! stored weights by at most about `(k/L + L) · 2⁻²⁴ · Σ_p |x_p · w_p|` (f32 accumulation in
//! `L` lanes: 16 for AVX-512, 8 portable); the tests use the looser `(k + 16) · 2⁻²³ · Σ|x·w|`. [`naive::gemv`] is the twin
//! (f64 accumulation over the dequantised weights).

use crate::matmul::Par;
use crate::quant::{bf16_bits_to_f32, quantize_act_q8, quantize_i8, ActQ8, WeightDtype, Weights, WeightsRef};
use rayon::prelude::*;

/// Which implementation [`gemv_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The fastest exact-`x` kernel this CPU supports ([`Kernel::Avx512`], [`Kernel::Avx2`] or
    /// [`Kernel::Portable`]), except for q4 weights (any AVX2 CPU) and int8 weights (AVX2 without
    /// AVX-512): [`Kernel::Avx2Q8`], which quantises `x` per 32-block as llama.cpp does and is 3–5×
    /// faster there.
    Auto,
    /// Plain Rust, any CPU.
    Portable,
    /// The portable kernel compiled for AVX2 + FMA (bit-identical results; x86-64 only).
    Avx2,
    /// AVX-512 F/BW/VL intrinsics (x86-64 only).
    Avx512,
    /// bf16 weights with `x` rounded to bf16 and `vdpbf16ps` (AVX512_BF16); other formats fall
    /// back to [`Kernel::Avx512`].
    Avx512Bf16Dot,
    /// int8 weights with each row of `x` quantised to int8 (symmetric, `max|x_i|/127`) and
    /// `vpdpbusd` (AVX512_VNNI, 64 multiply-adds per instruction); other formats fall back to
    /// [`Kernel::Avx512`]. `x` must be finite and `k ≤ 2¹⁷` (panics otherwise).
    Avx512Vnni,
    /// int8 and q4 weights with each row of `x` quantised to int8 per 32-value block (llama.cpp's
    /// `Q8_0`) and AVX2 integer dot products (x86-64 with AVX2, FMA and F16C); f32/bf16 weights
    /// fall back to [`Kernel::Avx2`].
    Avx2Q8,
}

impl Kernel {
    /// Every kernel, `Auto` excluded.
    pub const ALL: [Kernel; 6] =
        [Kernel::Portable, Kernel::Avx2, Kernel::Avx512, Kernel::Avx512Bf16Dot, Kernel::Avx512Vnni, Kernel::Avx2Q8];

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Auto | Kernel::Portable => true,
            Kernel::Avx2 => has_avx2(),
            Kernel::Avx512 => has_avx512(),
            Kernel::Avx512Bf16Dot => has_avx512() && has_avx512bf16(),
            Kernel::Avx512Vnni => has_avx512() && has_avx512vnni(),
            Kernel::Avx2Q8 => has_avx2() && has_f16c(),
        }
    }

    /// The concrete kernel this one runs on weights of `dtype` (see `resolve`).
    pub fn resolved(self, dtype: WeightDtype) -> Kernel {
        resolve(self, dtype)
    }

    /// The kernels this CPU can run, `Auto` excluded.
    pub fn available_kernels() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.available()).collect()
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Auto => "auto",
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Avx512Bf16Dot => "avx512-dpbf16",
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Avx2Q8 => "avx2-q8",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    is_x86_feature_detected!("f16c")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_f16c() -> bool {
    false
}
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}
#[cfg(target_arch = "x86_64")]
fn has_avx512bf16() -> bool {
    is_x86_feature_detected!("avx512bf16")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512bf16() -> bool {
    false
}
#[cfg(target_arch = "x86_64")]
fn has_avx512vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512vnni() -> bool {
    false
}

/// `y[m, n] = x[m, k] · W[n, k]ᵀ` (**overwrites** `y`) with the best kernel for this CPU.
///
/// # Panics
/// If `x.len() != m·k` or `y.len() != m·n` (with `n, k` from `w`).
pub fn gemv(y: &mut [f32], x: &[f32], w: &Weights, m: usize, par: Par) {
    gemv_with(y, x, w, m, par, Kernel::Auto);
}

/// [`gemv`] with an explicit kernel (tests and benchmarks).
///
/// # Panics
/// On mismatched lengths, or if this CPU cannot run `kernel` (see [`Kernel::available`]).
pub fn gemv_with(y: &mut [f32], x: &[f32], w: &Weights, m: usize, par: Par, kernel: Kernel) {
    gemv_ref(y, x, w.view(), m, par, kernel);
}

/// [`gemv`] on f32 weights the caller holds as a slice `w` (`[n, k]`), without copying them.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != m·k` or `y.len() != m·n`.
#[allow(clippy::too_many_arguments)]
pub fn gemv_f32(y: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize, par: Par) {
    gemv_ref(y, x, WeightsRef::f32(w, n, k), m, par, Kernel::Auto);
}

/// [`gemv_with`] on borrowed weights (any format).
///
/// # Panics
/// As [`gemv_with`].
pub fn gemv_ref(y: &mut [f32], x: &[f32], w: WeightsRef<'_>, m: usize, par: Par, kernel: Kernel) {
    let (n, k) = (w.n(), w.k());
    assert_eq!(x.len(), m * k, "gemv: x has {} elements, expected m·k = {m}·{k}", x.len());
    assert_eq!(y.len(), m * n, "gemv: y has {} elements, expected m·n = {m}·{n}", y.len());
    assert!(kernel.available(), "gemv: kernel {kernel:?} is not supported by this CPU");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let kernel = resolve(kernel, w.dtype());
    let prep = prepare_x(kernel, w.dtype(), x, m, k);

    let threads = match par {
        Par::Seq => 1,
        Par::Pool => rayon::current_num_threads().max(1),
    };
    let chunk = rows_per_task(n, w.bytes() / n, threads);
    let n_chunks = n.div_ceil(chunk);
    let out = SyncPtr(y.as_mut_ptr());
    let task = |c: usize| {
        let (j0, j1) = (c * chunk, ((c + 1) * chunk).min(n));
        // SAFETY: y has m·n elements (checked); tasks own disjoint column ranges j0..j1 of y, so no
        // element is written by two tasks, and `y` stays mutably borrowed for the whole call.
        unsafe { run_rows(kernel, out.get(), x, &prep, w, m, j0, j1) }
    };
    if threads == 1 || n_chunks == 1 {
        (0..n_chunks).for_each(task);
    } else {
        (0..n_chunks).into_par_iter().for_each(task);
    }
}

/// The concrete kernel `kernel` stands for on weights of `dtype` (`Auto` → best exact kernel, but
/// [`Kernel::Avx2Q8`] for q4 weights where the CPU has it, and for int8 weights where it has no
/// AVX-512; the dot-product kernels fall back to
/// the exact kernel of their instruction set on formats they do not handle; q4 has no AVX-512
/// kernel, so AVX-512 kernels run the AVX2 ones on it).
pub(crate) fn resolve(kernel: Kernel, dtype: WeightDtype) -> Kernel {
    match (kernel, dtype) {
        // int8 on AVX2 without AVX-512: the exact kernel converts each weight to f32 and reaches
        // 18% of the read bandwidth; the int8 dot products 3–4× that (`tests/gemv_roofline.rs`)
        (Kernel::Auto, WeightDtype::I8) if !has_avx512() && Kernel::Avx2Q8.available() => Kernel::Avx2Q8,
        (Kernel::Auto, WeightDtype::Q4 | WeightDtype::Q4K) => {
            if Kernel::Avx2Q8.available() {
                Kernel::Avx2Q8
            } else if has_avx2() {
                Kernel::Avx2
            } else {
                Kernel::Portable
            }
        }
        (Kernel::Avx512, WeightDtype::Q4 | WeightDtype::Q4K) => Kernel::Avx2,
        (Kernel::Avx512Bf16Dot | Kernel::Avx512Vnni, WeightDtype::Q4 | WeightDtype::Q4K) => Kernel::Avx2Q8,
        (Kernel::Avx2Q8, WeightDtype::F32 | WeightDtype::Bf16) => Kernel::Avx2,
        (Kernel::Auto, _) => {
            if has_avx512() {
                Kernel::Avx512
            } else if has_avx2() {
                Kernel::Avx2
            } else {
                Kernel::Portable
            }
        }
        (Kernel::Avx512Bf16Dot, WeightDtype::F32 | WeightDtype::I8) => Kernel::Avx512,
        (Kernel::Avx512Vnni, WeightDtype::F32 | WeightDtype::Bf16) => Kernel::Avx512,
        (kr, _) => kr,
    }
}

/// `x [m, k]` rearranged once per call for a resolved `kernel` (m·k values, negligible next to
/// the n·k weights).
pub(crate) fn prepare_x(kernel: Kernel, dtype: WeightDtype, x: &[f32], m: usize, k: usize) -> PreparedX {
    match (kernel, dtype) {
        (Kernel::Avx512Bf16Dot, _) => PreparedX::Bf16(x.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()),
        (Kernel::Avx2Q8, _) => PreparedX::Q8(quantize_act_q8(x, m, k)),
        (Kernel::Avx512Vnni, _) => {
            assert!(k <= 1 << 17, "gemv: the VNNI kernel's i32 dot products could overflow for k > 2^17");
            let xq = quantize_i8(x, m, k);
            // u = q + 128 ∈ [1, 255]: vpdpbusd wants one unsigned operand.
            PreparedX::U8(xq.q.iter().map(|&v| (v as i16 + 128) as u8).collect(), xq.scale)
        }
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, WeightDtype::Bf16) => {
            let (xs, kp) = x86::split_even_odd(x, m, k);
            PreparedX::EvenOdd(xs, kp)
        }
        _ => PreparedX::None,
    }
}

/// Rows of `W` per task: at least 64 KiB of weights (so scheduling is noise), otherwise about
/// four tasks per thread for load balance; a multiple of 4 (the micro-kernel's row block).
fn rows_per_task(n: usize, row_bytes: usize, threads: usize) -> usize {
    let min_rows = (64 * 1024usize).div_ceil(row_bytes.max(1));
    let balanced = n.div_ceil(4 * threads);
    min_rows.max(balanced).next_multiple_of(4).min(n.next_multiple_of(4))
}

/// `x` in the form a kernel wants it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum PreparedX {
    /// as given
    None,
    /// rounded to bf16 (for `vdpbf16ps`)
    Bf16(Vec<u16>),
    /// even/odd split per 32-column block, row stride `kp` (for the AVX-512 bf16 kernel)
    EvenOdd(Vec<f32>, usize),
    /// per-row int8 quantised, offset by 128 to u8, and the per-row scales (for VNNI)
    U8(Vec<u8>, Vec<f32>),
    /// int8 per 32-value block (for [`Kernel::Avx2Q8`])
    Q8(ActQ8),
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used to hand disjoint parts of one `&mut [f32]` to rayon tasks (see `gemv_with`).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Computes `y[i, j]` for all `i < m`, `j0 ≤ j < j1`.
///
/// # Safety
/// `y` points to `m·n` writable f32 (n = w.n()) that nothing else touches in columns `j0..j1`;
/// `kernel` is resolved (not `Auto`) and available; `prep` is what `gemv_with` prepared for it.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_rows(kernel: Kernel, y: *mut f32, x: &[f32], prep: &PreparedX, w: WeightsRef<'_>, m: usize, j0: usize, j1: usize) {
    match (kernel, prep) {
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, _) => match (w, prep) {
            (WeightsRef::F32 { w, n, k }, _) => x86::rows::<x86::F32>(y, x, w, None, m, n, k, j0, j1),
            (WeightsRef::Bf16 { bits, n, k }, PreparedX::EvenOdd(xs, kp)) => x86::rows_bf16(y, xs, *kp, bits, m, n, k, j0, j1),
            (WeightsRef::I8 { q, scale, n, k }, _) => x86::rows::<x86::I8>(y, x, q, Some(scale), m, n, k, j0, j1),
            (WeightsRef::Q4 { .. } | WeightsRef::Q4K { .. }, _) => unreachable!("q4 and q4k resolve to an AVX2 kernel"),
            _ => unreachable!("bf16 weights need the even/odd x"),
        },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512Bf16Dot, PreparedX::Bf16(xb)) => match w {
            WeightsRef::Bf16 { bits, n, k } => x86::rows_dpbf16(y, xb, bits, m, n, k, j0, j1),
            _ => unreachable!("resolved to Avx512"),
        },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512Vnni, PreparedX::U8(xu, sx)) => match w {
            WeightsRef::I8 { q, scale, n, k } => x86::rows_vnni(y, xu, sx, q, scale, m, n, k, j0, j1),
            _ => unreachable!("resolved to Avx512"),
        },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2Q8, PreparedX::Q8(xq)) => avx2q8::rows(y, xq, w, m, j0, j1),
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2, _) => portable::rows_avx2(y, x, w, m, j0, j1),
        _ => portable::rows(y, x, w, m, j0, j1),
    }
}

pub mod portable;

#[cfg(target_arch = "x86_64")]
mod avx2q8;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// How one weight format turns 16 consecutive stored values into 16 f32 lanes.
    pub(super) trait Load {
        type T: Copy;
        /// 16 values at `p`.
        unsafe fn load(p: *const Self::T) -> __m512;
        /// The first `count(mask)` values at `p` (others 0, never read).
        unsafe fn load_mask(p: *const Self::T, mask: __mmask16) -> __m512;
    }

    pub(super) struct F32;
    pub(super) struct I8;

    impl Load for F32 {
        type T = f32;
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load_mask(p: *const f32, mask: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    impl Load for I8 {
        type T = i8;
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load(p: *const i8) -> __m512 {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load_mask(p: *const i8, mask: __mmask16) -> __m512 {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)))
        }
    }

    /// Prefetch, in each of the four rows, the cache line at element offset `at`. Called with
    /// `at = p + 4k`: the same columns of the next four-row block (rows are contiguous, so that is
    /// where the stream goes next). Short rows (1–2 KiB for int8/bf16) are too short for the
    /// hardware prefetcher to ramp up on its own. `wrapping_add`: the address may lie past the
    /// slice; a prefetch never faults.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn prefetch4<T>(w: [*const T; 4], at: usize) {
        for r in w {
            _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(at) as *const i8);
        }
    }

    /// The four horizontal sums of `a` at once (halve to 256 bits, then three `hadd`s and one
    /// 128-bit add): about half the shuffles of four separate reductions.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn reduce4(a: [__m512; 4]) -> [f32; 4] {
        let half = |v: __m512| _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
        let h01 = _mm256_hadd_ps(half(a[0]), half(a[1])); // [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, …]
        let h23 = _mm256_hadd_ps(half(a[2]), half(a[3]));
        let h = _mm256_hadd_ps(h01, h23); // [Σa lo, Σb lo, Σc lo, Σd lo | Σa hi, …]
        let r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut out = [0.0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), r);
        out
    }

    /// `MR × 4` dot products of length `k`: rows `x[i]` against weight rows `w[r]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn block<L: Load, const MR: usize>(x: [*const f32; MR], w: [*const L::T; 4], k: usize) -> [[f32; 4]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 4]; MR];
        let mut p = 0;
        // one prefetch per 64-byte line (int8: every fourth step); rows of narrow types are short,
        // so they prefetch two blocks ahead
        let line = 64 / std::mem::size_of::<L::T>();
        let ahead = if std::mem::size_of::<L::T>() < 4 { 8 * k } else { 4 * k };
        while p + 16 <= k {
            if p % line == 0 {
                prefetch4(w, p + ahead);
            }
            let wv = [L::load(w[0].add(p)), L::load(w[1].add(p)), L::load(w[2].add(p)), L::load(w[3].add(p))];
            for i in 0..MR {
                let xv = _mm512_loadu_ps(x[i].add(p));
                for r in 0..4 {
                    acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
                }
            }
            p += 16;
        }
        if p < k {
            let mask: __mmask16 = ((1u32 << (k - p)) - 1) as __mmask16;
            let wv = [
                L::load_mask(w[0].add(p), mask),
                L::load_mask(w[1].add(p), mask),
                L::load_mask(w[2].add(p), mask),
                L::load_mask(w[3].add(p), mask),
            ];
            for i in 0..MR {
                let xv = _mm512_maskz_loadu_ps(mask, x[i].add(p));
                for r in 0..4 {
                    acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
                }
            }
        }
        let mut out = [[0.0f32; 4]; MR];
        for i in 0..MR {
            out[i] = reduce4(acc[i]);
        }
        out
    }

    /// Writes a `MR × 4` block (skipping weight rows at or past `j1`), scaled per row for int8.
    #[inline]
    unsafe fn store<const MR: usize>(y: *mut f32, n: usize, i0: usize, j: usize, j1: usize, scale: Option<&[f32]>, v: [[f32; 4]; MR]) {
        for (i, vi) in v.iter().enumerate() {
            for (r, &val) in vi.iter().enumerate() {
                if j + r < j1 {
                    let s = scale.map_or(1.0, |s| s[j + r]);
                    *y.add((i0 + i) * n + j + r) = if scale.is_some() { val * s } else { val };
                }
            }
        }
    }

    /// `y[i, j]` for all `i < m` and `j0 ≤ j < j1`, four weight rows at a time (the last block
    /// repeats row `j1 − 1` and discards the copies), up to four `x` rows per micro-kernel.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL available; `y` as in `run_rows`; `w.len() = n·k`, `x.len() = m·k`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn rows<L: Load>(
        y: *mut f32,
        x: &[f32],
        w: &[L::T],
        scale: Option<&[f32]>,
        m: usize,
        n: usize,
        k: usize,
        j0: usize,
        j1: usize,
    ) {
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for_blocks(m, j0, j1, |ib, ie, _, je, j| {
            let wr = [0, 1, 2, 3].map(|r| wp.add((j + r).min(je - 1) * k));
            let mut i = ib;
            while i < ie {
                let xr = |d: usize| xp.add((i + d) * k);
                match ie - i {
                    1 => store::<1>(y, n, i, j, je, scale, block::<L, 1>([xr(0)], wr, k)),
                    2 => store::<2>(y, n, i, j, je, scale, block::<L, 2>([xr(0), xr(1)], wr, k)),
                    3 => store::<3>(y, n, i, j, je, scale, block::<L, 3>([xr(0), xr(1), xr(2)], wr, k)),
                    _ => store::<4>(y, n, i, j, je, scale, block::<L, 4>([xr(0), xr(1), xr(2), xr(3)], wr, k)),
                }
                i += 4;
            }
        });
    }

    /// Rows of `x` per pass over a chunk (16 KiB of f32 at k = 512: stays in L1).
    const I_BLOCK: usize = 8;
    /// Weight rows per chunk (128 KiB of f32 at k = 512: stays in L2, read from DRAM once).
    const J_CHUNK: usize = 64;

    /// Visit the four-row weight blocks `j` of `j0..j1` chunk by chunk (`jc..je`), inside a chunk
    /// per block of ≤ [`I_BLOCK`] rows `ib..ie` of `x`: `f(ib, ie, jc, je, j)`. Every output still
    /// comes from the same block call on the same data (batch invariance).
    #[inline(always)]
    fn for_blocks(m: usize, j0: usize, j1: usize, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let mut jc = j0;
        while jc < j1 {
            let je = (jc + J_CHUNK).min(j1);
            let mut ib = 0;
            while ib < m {
                let ie = (ib + I_BLOCK).min(m);
                let mut j = jc;
                while j < je {
                    f(ib, ie, jc, je, j);
                    j += 4;
                }
                ib = ie;
            }
            jc = je;
        }
    }

    /// `x` (`[m, k]`) rearranged for [`rows_bf16`]: each 32-column block `p..p+32` becomes its 16
    /// even columns then its 16 odd columns; rows padded with zeros to `kp = k` rounded up to 32.
    pub(super) fn split_even_odd(x: &[f32], m: usize, k: usize) -> (Vec<f32>, usize) {
        let kp = k.next_multiple_of(32);
        let mut out = vec![0.0f32; m * kp];
        for i in 0..m {
            for p in 0..k {
                let (blk, off) = (p / 32, p % 32);
                out[i * kp + blk * 32 + (off % 2) * 16 + off / 2] = x[i * k + p];
            }
        }
        (out, kp)
    }

    /// `MR × 4` dot products of f32 `x` (even/odd split, see [`split_even_odd`]) with bf16 rows:
    /// one 64-byte load gives 32 weights; a 16-bit left shift yields the even ones as f32 and a
    /// mask of the high halves the odd ones (both exact), so no cross-lane conversion is needed.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn block_bf16<const MR: usize>(x: [*const f32; MR], w: [*const u16; 4], k: usize) -> [[f32; 4]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 4]; MR];
        let hi = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        let mut p = 0;
        while p < k {
            prefetch4(w, p + 4 * k);
            let v = if p + 32 <= k {
                [0, 1, 2, 3].map(|r| _mm512_loadu_si512(w[r].add(p) as *const _))
            } else {
                let mask: __mmask32 = ((1u64 << (k - p)) - 1) as __mmask32;
                [0, 1, 2, 3].map(|r| _mm512_maskz_loadu_epi16(mask, w[r].add(p) as *const i16))
            };
            let even = v.map(|v| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)));
            let odd = v.map(|v| _mm512_castsi512_ps(_mm512_and_si512(v, hi)));
            for i in 0..MR {
                let xe = _mm512_loadu_ps(x[i].add(p));
                let xo = _mm512_loadu_ps(x[i].add(p + 16));
                for r in 0..4 {
                    acc[i][r] = _mm512_fmadd_ps(xo, odd[r], _mm512_fmadd_ps(xe, even[r], acc[i][r]));
                }
            }
            p += 32;
        }
        let mut out = [[0.0f32; 4]; MR];
        for i in 0..MR {
            out[i] = reduce4(acc[i]);
        }
        out
    }

    /// [`rows`] for bf16 weights; `xs` is `x` after [`split_even_odd`] (row stride `kp`).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL available; `xs.len() = m·kp`, `w.len() = n·k`; `y` as in `run_rows`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn rows_bf16(y: *mut f32, xs: &[f32], kp: usize, w: &[u16], m: usize, n: usize, k: usize, j0: usize, j1: usize) {
        let (xp, wp) = (xs.as_ptr(), w.as_ptr());
        for_blocks(m, j0, j1, |ib, ie, _, je, j| {
            let wr = [0, 1, 2, 3].map(|r| wp.add((j + r).min(je - 1) * k));
            let mut i = ib;
            while i < ie {
                let xr = |d: usize| xp.add((i + d) * kp);
                match ie - i {
                    1 => store::<1>(y, n, i, j, je, None, block_bf16::<1>([xr(0)], wr, k)),
                    2 => store::<2>(y, n, i, j, je, None, block_bf16::<2>([xr(0), xr(1)], wr, k)),
                    3 => store::<3>(y, n, i, j, je, None, block_bf16::<3>([xr(0), xr(1), xr(2)], wr, k)),
                    _ => store::<4>(y, n, i, j, je, None, block_bf16::<4>([xr(0), xr(1), xr(2), xr(3)], wr, k)),
                }
                i += 4;
            }
        });
    }

    /// `MR × 4` exact integer dot products `Σ u·q` (u8 × i8, `vpdpbusd`, 64 per step) and the four
    /// weight rows' sums `Σ q` (to undo the +128 offset of `u`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn block_vnni<const MR: usize>(x: [*const u8; MR], w: [*const i8; 4], k: usize) -> ([[i32; 4]; MR], [i32; 4]) {
        let mut acc = [[_mm512_setzero_si512(); 4]; MR];
        let mut sum = [_mm512_setzero_si512(); 4];
        let ones = _mm512_set1_epi8(1);
        let mut p = 0;
        while p < k {
            prefetch4(w, p + 4 * k);
            let mask: __mmask64 = if p + 64 <= k { !0 } else { (1u64 << (k - p)) - 1 };
            let wv = [0, 1, 2, 3].map(|r| _mm512_maskz_loadu_epi8(mask, w[r].add(p)));
            for r in 0..4 {
                sum[r] = _mm512_dpbusd_epi32(sum[r], ones, wv[r]);
            }
            for i in 0..MR {
                let xv = _mm512_maskz_loadu_epi8(mask, x[i].add(p) as *const i8);
                for r in 0..4 {
                    acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], xv, wv[r]);
                }
            }
            p += 64;
        }
        let mut out = [[0i32; 4]; MR];
        for i in 0..MR {
            for r in 0..4 {
                out[i][r] = _mm512_reduce_add_epi32(acc[i][r]);
            }
        }
        (out, sum.map(|s| _mm512_reduce_add_epi32(s)))
    }

    /// `y[i, j] = sx[i] · scale[j] · Σ_p xq[i,p] · q[j,p]` for all `i < m`, `j0 ≤ j < j1`, with
    /// `xu = xq + 128` as u8 (`[m, k]`).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and AVX512_VNNI available; `k ≤ 2¹⁷`; otherwise as [`rows`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn rows_vnni(
        y: *mut f32,
        xu: &[u8],
        sx: &[f32],
        w: &[i8],
        scale: &[f32],
        m: usize,
        n: usize,
        k: usize,
        j0: usize,
        j1: usize,
    ) {
        let (xp, wp) = (xu.as_ptr(), w.as_ptr());
        let mut j = j0;
        while j < j1 {
            let wr = [0, 1, 2, 3].map(|r| wp.add((j + r).min(j1 - 1) * k));
            let mut i = 0;
            while i < m {
                let xr = |d: usize| xp.add((i + d) * k);
                let put = |d: usize, acc: [i32; 4], sum: [i32; 4]| {
                    for r in 0..4 {
                        if j + r < j1 {
                            // Σ xq·q = Σ u·q − 128·Σ q. Intermediates may wrap (vpdpbusd and the lane
                            // reduction wrap too); the result is exact because |Σ xq·q| ≤ 127²·k < 2³¹.
                            let dot = acc[r].wrapping_sub(sum[r].wrapping_mul(128));
                            *y.add((i + d) * n + j + r) = dot as f32 * (sx[i + d] * scale[j + r]);
                        }
                    }
                };
                match m - i {
                    1 => {
                        let (a, s) = block_vnni::<1>([xr(0)], wr, k);
                        put(0, a[0], s);
                    }
                    2 => {
                        let (a, s) = block_vnni::<2>([xr(0), xr(1)], wr, k);
                        (0..2).for_each(|d| put(d, a[d], s));
                    }
                    3 => {
                        let (a, s) = block_vnni::<3>([xr(0), xr(1), xr(2)], wr, k);
                        (0..3).for_each(|d| put(d, a[d], s));
                    }
                    _ => {
                        let (a, s) = block_vnni::<4>([xr(0), xr(1), xr(2), xr(3)], wr, k);
                        (0..4).for_each(|d| put(d, a[d], s));
                    }
                }
                i += 4;
            }
            j += 4;
        }
    }

    /// `MR × 4` bf16 dot products with `vdpbf16ps` (32 bf16 pairs per step).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn block_dp<const MR: usize>(x: [*const u16; MR], w: [*const u16; 4], k: usize) -> [[f32; 4]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 4]; MR];
        let mut p = 0;
        let bh = |v: __m512i| -> __m512bh { std::mem::transmute(v) };
        while p + 32 <= k {
            prefetch4(w, p + 4 * k);
            let wv = [0, 1, 2, 3].map(|r| bh(_mm512_loadu_si512(w[r].add(p) as *const _)));
            for i in 0..MR {
                let xv = bh(_mm512_loadu_si512(x[i].add(p) as *const _));
                for r in 0..4 {
                    acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv, wv[r]);
                }
            }
            p += 32;
        }
        if p < k {
            let mask: __mmask32 = ((1u64 << (k - p)) - 1) as __mmask32;
            let wv = [0, 1, 2, 3].map(|r| bh(_mm512_maskz_loadu_epi16(mask, w[r].add(p) as *const i16)));
            for i in 0..MR {
                let xv = bh(_mm512_maskz_loadu_epi16(mask, x[i].add(p) as *const i16));
                for r in 0..4 {
                    acc[i][r] = _mm512_dpbf16_ps(acc[i][r], xv, wv[r]);
                }
            }
        }
        let mut out = [[0.0f32; 4]; MR];
        for i in 0..MR {
            for r in 0..4 {
                out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
            }
        }
        out
    }

    /// [`rows`] for bf16 weights with `x` already in bf16 (`xb`, `[m, k]`).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and AVX512_BF16 available; otherwise as [`rows`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn rows_dpbf16(y: *mut f32, xb: &[u16], w: &[u16], m: usize, n: usize, k: usize, j0: usize, j1: usize) {
        let (xp, wp) = (xb.as_ptr(), w.as_ptr());
        let mut j = j0;
        while j < j1 {
            let wr = [0, 1, 2, 3].map(|r| wp.add((j + r).min(j1 - 1) * k));
            let mut i = 0;
            while i < m {
                let xr = |d: usize| xp.add((i + d) * k);
                match m - i {
                    1 => store::<1>(y, n, i, j, j1, None, block_dp::<1>([xr(0)], wr, k)),
                    2 => store::<2>(y, n, i, j, j1, None, block_dp::<2>([xr(0), xr(1)], wr, k)),
                    3 => store::<3>(y, n, i, j, j1, None, block_dp::<3>([xr(0), xr(1), xr(2)], wr, k)),
                    _ => store::<4>(y, n, i, j, j1, None, block_dp::<4>([xr(0), xr(1), xr(2), xr(3)], wr, k)),
                }
                i += 4;
            }
            j += 4;
        }
    }
}

/// The slow, plainly correct twins.
pub mod naive;
