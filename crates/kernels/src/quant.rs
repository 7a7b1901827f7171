//! Weight storage formats for inference matrices stored row-major `[n, k]` (PyTorch layout: one
//! row per output feature), read by [`crate::gemv`].
//!
//! * [`WeightF32`]: the f32 values as they are (4 bytes per weight).
//! * [`WeightBf16`]: bfloat16 bit patterns (2 bytes per weight), rounded to nearest-even by the
//!   `half` crate. Relative error of each weight ≤ 2⁻⁸ (bf16 keeps 8 significant bits), for
//!   every normal f32 in bf16 range.
//! * [`WeightI8`]: symmetric per-row int8 (1 byte per weight + 4 bytes per row):
//!   `w[j, p] ≈ scale[j] · q[j, p]` with `scale[j] = max_p |w[j, p]| / 127` and
//!   `q = round(w / scale)` in `[-127, 127]`. Absolute error of each weight ≤ `scale/2 = max/254`.
//! * [`WeightQ4`]: 4-bit blocks of [`QK`] = 32 weights along a row with an f16 scale each
//!   (18 bytes per 32 weights, 4.5 bits per weight), byte for byte GGUF's `Q4_0` ([`BlockQ4`]), so
//!   llama.cpp's blocks can be run as stored: `w = d · (q − 8)` with `q ∈ 0..=15`, the low nibbles
//!   of the 16 bytes holding weights 0..15 of the block and the high nibbles weights 16..31.
//!   Quantised as llama.cpp's `quantize_row_q4_0`: the value of largest magnitude `v` sets
//!   `d = v / −8` (so it is stored exactly as `q = 0`), `q = min(15, ⌊w/d + 8.5⌋)`. Absolute error of
//!   each weight ≤ `|d| = max|block|/8` (half a step, `|d|/2`, except values near `−v` that the
//!   clamp at 15 holds one step short), plus the f16 rounding of `d` (relative 2⁻¹¹, times `|q−8| ≤ 8`).
//!   A row whose length is not a multiple of 32 is padded with zero weights in its last block.
//!   Scales must stay within f16 range: `max|block| ≤ 8 · 65504`.
//!
//! * [`WeightQ4K`]: 4-bit super-blocks of 256 weights with a 6-bit scale and min per 32
//!   (144 bytes per 256, 4.5 bits per weight), byte for byte GGUF's `Q4_K`: see [`crate::quant_k`].
//!
//! [`Weights`] is the enum the GEMV kernel dispatches on. Every format can be turned back into f32
//! with `dequantize` (what the naive twins and the round-trip tests use).

use half::bf16;

pub use crate::quant_k::{dequantize_q4k_row, quantize_q4k, BlockQ4K, WeightQ4K, QK_K};

/// Storage type of a [`Weights`] matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// 4 bytes per weight
    F32,
    /// 2 bytes per weight
    Bf16,
    /// 1 byte per weight + one f32 scale per row
    I8,
    /// 4 bits per weight + one f16 scale per 32 weights (GGUF `Q4_0` blocks)
    Q4,
    /// 4 bits per weight in super-blocks of 256 with a 6-bit scale and min per 32 (GGUF `Q4_K`)
    Q4K,
}

impl WeightDtype {
    /// All formats, in decreasing size.
    pub const ALL: [WeightDtype; 5] = [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::I8, WeightDtype::Q4, WeightDtype::Q4K];

    /// Short lowercase name (`f32`, `bf16`, `i8`, `q4`, `q4k`).
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::I8 => "i8",
            WeightDtype::Q4 => "q4",
            WeightDtype::Q4K => "q4k",
        }
    }
}

fn check_len(len: usize, n: usize, k: usize, what: &str) {
    assert_eq!(len, n * k, "{what}: {len} weights, expected n·k = {n}·{k} = {}", n * k);
}

/// f32 weights, row-major `[n, k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightF32 {
    /// rows (output features)
    pub n: usize,
    /// columns (input features)
    pub k: usize,
    /// `[n, k]` values
    pub w: Vec<f32>,
}

impl WeightF32 {
    /// Wrap `w` (`[n, k]`, length checked).
    pub fn new(w: Vec<f32>, n: usize, k: usize) -> Self {
        check_len(w.len(), n, k, "WeightF32::new");
        WeightF32 { n, k, w }
    }
    /// A copy of the values.
    pub fn dequantize(&self) -> Vec<f32> {
        self.w.clone()
    }
}

/// bfloat16 weights (bit patterns), row-major `[n, k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightBf16 {
    /// rows (output features)
    pub n: usize,
    /// columns (input features)
    pub k: usize,
    /// `[n, k]` bf16 bit patterns (the upper 16 bits of the f32 they stand for)
    pub bits: Vec<u16>,
}

impl WeightBf16 {
    /// The f32 values these bits stand for (exact).
    pub fn dequantize(&self) -> Vec<f32> {
        self.bits.iter().map(|&b| bf16_bits_to_f32(b)).collect()
    }
}

/// Symmetric per-row int8 weights: `w[j, p] ≈ scale[j] · q[j, p]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightI8 {
    /// rows (output features)
    pub n: usize,
    /// columns (input features)
    pub k: usize,
    /// `[n, k]` quantised values in `[-127, 127]`
    pub q: Vec<i8>,
    /// `[n]` per-row scale `max|w_row| / 127` (0 for an all-zero row)
    pub scale: Vec<f32>,
}

impl WeightI8 {
    /// `scale[j] · q[j, p]` as f32.
    pub fn dequantize(&self) -> Vec<f32> {
        if self.k == 0 {
            return Vec::new();
        }
        self.q.chunks_exact(self.k).zip(&self.scale).flat_map(|(row, &s)| row.iter().map(move |&q| q as f32 * s)).collect()
    }
}

/// Weights per block of [`WeightQ4`] (and of the activation blocks of [`ActQ8`]).
pub const QK: usize = 32;

/// One block of [`WeightQ4`]: GGUF's `block_q4_0` byte for byte (18 bytes, alignment 1, so a
/// memory-mapped GGUF tensor can be viewed as `[BlockQ4]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockQ4 {
    /// the scale `d`, an IEEE f16, little-endian
    pub d: [u8; 2],
    /// byte `j`: weight `j` in the low nibble, weight `j + 16` in the high nibble (`q ∈ 0..=15`)
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4>() == 18 && std::mem::align_of::<BlockQ4>() == 1);

impl BlockQ4 {
    /// The scale `d` as f32 (exact).
    #[inline]
    pub fn scale(&self) -> f32 {
        half::f16::from_bits(u16::from_le_bytes(self.d)).to_f32()
    }

    /// The 32 values `d · (q − 8)` this block stands for.
    #[inline]
    pub fn dequantize_into(&self, out: &mut [f32; QK]) {
        let d = self.scale();
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = d * ((b & 15) as i32 - 8) as f32;
            out[j + 16] = d * ((b >> 4) as i32 - 8) as f32;
        }
    }

    /// `v` (≤ 32 values, zero-padded) quantised as llama.cpp's `quantize_row_q4_0` (module doc).
    pub fn quantize(v: &[f32]) -> BlockQ4 {
        debug_assert!(v.len() <= QK);
        let mut x = [0.0f32; QK];
        x[..v.len()].copy_from_slice(v);
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &w in &x {
            if w.abs() > amax {
                amax = w.abs();
                max = w;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            // x·id ∈ [−8, 8]: + 8.5 and truncation round to nearest, the clamp keeps q ≤ 15
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            qs[j] = q0 | (q1 << 4);
        }
        BlockQ4 { d: half::f16::from_f32(d).to_bits().to_le_bytes(), qs }
    }
}

/// 4-bit block-quantised weights (see the module doc), row-major `[n, k]` as `n · ⌈k/32⌉` blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightQ4 {
    /// rows (output features)
    pub n: usize,
    /// columns (input features)
    pub k: usize,
    /// `[n, ⌈k/32⌉]` blocks
    pub blocks: Vec<BlockQ4>,
}

/// Row `blocks` (`⌈k/32⌉` of them) as `k` f32 values into `out`.
pub fn dequantize_q4_row(blocks: &[BlockQ4], out: &mut [f32]) {
    let k = out.len();
    debug_assert_eq!(blocks.len(), k.div_ceil(QK));
    let mut tmp = [0.0f32; QK];
    for (b, o) in blocks.iter().zip(out.chunks_mut(QK)) {
        if let Ok(full) = <&mut [f32; QK]>::try_from(&mut *o) {
            b.dequantize_into(full);
        } else {
            b.dequantize_into(&mut tmp);
            o.copy_from_slice(&tmp[..o.len()]);
        }
    }
}

impl WeightQ4 {
    /// The f32 values these blocks stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.n * self.k];
        if self.k > 0 {
            let kb = self.k.div_ceil(QK);
            for (o, b) in out.chunks_exact_mut(self.k).zip(self.blocks.chunks_exact(kb)) {
                dequantize_q4_row(b, o);
            }
        }
        out
    }
}

/// `w` (`[n, k]`) quantised to 4-bit blocks (see the module doc).
///
/// # Panics
/// If a weight is not finite.
pub fn quantize_q4(w: &[f32], n: usize, k: usize) -> WeightQ4 {
    check_len(w.len(), n, k, "quantize_q4");
    assert!(w.iter().all(|v| v.is_finite()), "quantize_q4: non-finite weight (callers check user data first: `non_finite_at`)");
    let mut blocks = Vec::with_capacity(n * k.div_ceil(QK));
    if k > 0 {
        for row in w.chunks_exact(k) {
            blocks.extend(row.chunks(QK).map(BlockQ4::quantize));
        }
    }
    WeightQ4 { n, k, blocks }
}

/// Rows of activations quantised to int8 per block of [`QK`] values, as llama.cpp's `Q8_0`
/// (with an f32 scale instead of f16): `x ≈ d_b · q` with `d_b = max|block|/127`, `q = round(x/d_b)`
/// in `[-127, 127]`; each value moves by at most `d_b/2 = max|block|/254`. A block holding a
/// non-finite value gets `d = NaN`, so that the products it enters are NaN, as with exact `x`.
#[derive(Clone, Debug, PartialEq)]
pub struct ActQ8 {
    /// rows
    pub m: usize,
    /// values per row
    pub k: usize,
    /// `[m, ⌈k/32⌉·32]` quantised values, each row zero-padded to whole blocks
    pub q: Vec<i8>,
    /// `[m, ⌈k/32⌉]` block scales
    pub d: Vec<f32>,
    /// `[m, ⌈k/32⌉]` block sums `Σ q` (exact; what undoes q4's offset of 8)
    pub qsum: Vec<i32>,
}

/// `x` (`[m, k]`) quantised per 32-value block (see [`ActQ8`]).
pub fn quantize_act_q8(x: &[f32], m: usize, k: usize) -> ActQ8 {
    check_len(x.len(), m, k, "quantize_act_q8");
    let kb = k.div_ceil(QK);
    let mut q = vec![0i8; m * kb * QK];
    let mut d = vec![0.0f32; m * kb];
    let mut qsum = vec![0i32; m * kb];
    if k > 0 {
        for (i, row) in x.chunks_exact(k).enumerate() {
            for (b, blk) in row.chunks(QK).enumerate() {
                let at = i * kb + b;
                if !blk.iter().all(|v| v.is_finite()) {
                    d[at] = f32::NAN;
                    continue;
                }
                let amax = blk.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                if amax == 0.0 {
                    continue;
                }
                d[at] = amax / 127.0;
                let id = 127.0 / amax;
                for (o, &v) in q[at * QK..].iter_mut().zip(blk) {
                    *o = (v * id).round().clamp(-127.0, 127.0) as i8;
                }
                qsum[at] = q[at * QK..(at + 1) * QK].iter().map(|&v| v as i32).sum();
            }
        }
    }
    ActQ8 { m, k, q, d, qsum }
}

impl ActQ8 {
    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        self.k.div_ceil(QK)
    }

    /// The f32 values `d_b · q` (`[m, k]`): what the naive twin multiplies.
    pub fn dequantize(&self) -> Vec<f32> {
        let kb = self.blocks_per_row();
        let mut out = vec![0.0f32; self.m * self.k];
        for i in 0..self.m {
            for p in 0..self.k {
                out[i * self.k + p] = self.d[i * kb + p / QK] * self.q[i * kb * QK + p] as f32;
            }
        }
        out
    }
}

/// The f32 value of a bf16 bit pattern (exact: a 16-bit shift).
#[inline(always)]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `w` (`[n, k]`) rounded to bf16, nearest-even (NaN stays NaN, overflow past bf16::MAX → ±inf).
pub fn quantize_bf16(w: &[f32], n: usize, k: usize) -> WeightBf16 {
    check_len(w.len(), n, k, "quantize_bf16");
    WeightBf16 { n, k, bits: w.iter().map(|&v| bf16::from_f32(v).to_bits()).collect() }
}

/// `w` (`[n, k]`) quantised to symmetric per-row int8 (see the module doc).
///
/// # Panics
/// If a weight is not finite (it would poison its row's scale).
pub fn quantize_i8(w: &[f32], n: usize, k: usize) -> WeightI8 {
    check_len(w.len(), n, k, "quantize_i8");
    let mut q = vec![0i8; n * k];
    let mut scale = vec![0.0f32; n];
    if k == 0 {
        return WeightI8 { n, k, q, scale };
    }
    for ((row, qrow), s) in w.chunks_exact(k).zip(q.chunks_exact_mut(k)).zip(scale.iter_mut()) {
        // `f32::max` skips NaN: check every value, so a NaN is not quantised to 0 silently
        assert!(
            row.iter().all(|v| v.is_finite()),
            "quantize_i8: non-finite weight in a row (callers check user data first: `non_finite_at`)"
        );
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if max == 0.0 {
            continue; // scale 0, q 0
        }
        *s = max / 127.0;
        let inv = 127.0 / max;
        for (qv, &v) in qrow.iter_mut().zip(row) {
            *qv = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
    WeightI8 { n, k, q, scale }
}

/// Index and value of the first non-finite element of `v`, if any: what callers check before
/// [`quantize_i8`] / [`Weights::from_f32`] on user data, to refuse it with an error naming the tensor.
pub fn non_finite_at(v: &[f32]) -> Option<(usize, f32)> {
    v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i]))
}

/// A weight matrix `[n, k]` in one of the storage formats.
#[derive(Clone, Debug, PartialEq)]
pub enum Weights {
    /// f32
    F32(WeightF32),
    /// bfloat16
    Bf16(WeightBf16),
    /// per-row symmetric int8
    I8(WeightI8),
    /// 4-bit blocks
    Q4(WeightQ4),
    /// 4-bit super-blocks with per-sub-block scales and mins
    Q4K(WeightQ4K),
}

impl Weights {
    /// `w` (`[n, k]` f32) stored as `dtype`.
    pub fn from_f32(w: &[f32], n: usize, k: usize, dtype: WeightDtype) -> Self {
        match dtype {
            WeightDtype::F32 => Weights::F32(WeightF32::new(w.to_vec(), n, k)),
            WeightDtype::Bf16 => Weights::Bf16(quantize_bf16(w, n, k)),
            WeightDtype::I8 => Weights::I8(quantize_i8(w, n, k)),
            WeightDtype::Q4 => Weights::Q4(quantize_q4(w, n, k)),
            WeightDtype::Q4K => Weights::Q4K(quantize_q4k(w, n, k)),
        }
    }
    /// Rows (output features).
    pub fn n(&self) -> usize {
        match self {
            Weights::F32(w) => w.n,
            Weights::Bf16(w) => w.n,
            Weights::I8(w) => w.n,
            Weights::Q4(w) => w.n,
            Weights::Q4K(w) => w.n,
        }
    }
    /// Columns (input features).
    pub fn k(&self) -> usize {
        match self {
            Weights::F32(w) => w.k,
            Weights::Bf16(w) => w.k,
            Weights::I8(w) => w.k,
            Weights::Q4(w) => w.k,
            Weights::Q4K(w) => w.k,
        }
    }
    /// Storage format.
    pub fn dtype(&self) -> WeightDtype {
        match self {
            Weights::F32(_) => WeightDtype::F32,
            Weights::Bf16(_) => WeightDtype::Bf16,
            Weights::I8(_) => WeightDtype::I8,
            Weights::Q4(_) => WeightDtype::Q4,
            Weights::Q4K(_) => WeightDtype::Q4K,
        }
    }
    /// Bytes of storage (what one GEMV reads): values plus, for int8, the per-row scales (q4:
    /// 18 bytes per block).
    pub fn bytes(&self) -> usize {
        self.view().bytes()
    }
    /// The f32 matrix `[n, k]` these weights stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Weights::F32(w) => w.dequantize(),
            Weights::Bf16(w) => w.dequantize(),
            Weights::I8(w) => w.dequantize(),
            Weights::Q4(w) => w.dequantize(),
            Weights::Q4K(w) => w.dequantize(),
        }
    }
}

impl Weights {
    /// The rows `r` of each of `parts`, in order, as one matrix (all parts of one format and
    /// width). Every format stores its rows independently (int8: a scale per row; q4/q4k: whole
    /// blocks per row), so stacking converted parts equals converting the stacked f32 rows.
    ///
    /// # Panics
    /// If the parts differ in format or width, or a range is out of bounds.
    pub fn stack_rows(parts: &[(&Weights, std::ops::Range<usize>)]) -> Weights {
        let (first, _) = parts.first().expect("stack_rows: no parts");
        let (k, dtype) = (first.k(), first.dtype());
        let n: usize = parts.iter().map(|(_, r)| r.len()).sum();
        for (w, r) in parts {
            assert!(w.k() == k && w.dtype() == dtype, "stack_rows: parts of different width or format");
            assert!(r.end <= w.n(), "stack_rows: rows {r:?} of {}", w.n());
        }
        fn cat<T: Copy>(parts: &[(&Weights, std::ops::Range<usize>)], per_row: usize, get: impl Fn(&Weights) -> &[T]) -> Vec<T> {
            let mut out = Vec::new();
            for (w, r) in parts {
                out.extend_from_slice(&get(w)[r.start * per_row..r.end * per_row]);
            }
            out
        }
        match first {
            Weights::F32(_) => {
                Weights::F32(WeightF32::new(cat(parts, k, |w| if let Weights::F32(x) = w { &x.w[..] } else { unreachable!() }), n, k))
            }
            Weights::Bf16(_) => Weights::Bf16(WeightBf16 {
                n,
                k,
                bits: cat(parts, k, |w| if let Weights::Bf16(x) = w { &x.bits[..] } else { unreachable!() }),
            }),
            Weights::I8(_) => Weights::I8(WeightI8 {
                n,
                k,
                q: cat(parts, k, |w| if let Weights::I8(x) = w { &x.q[..] } else { unreachable!() }),
                scale: cat(parts, 1, |w| if let Weights::I8(x) = w { &x.scale[..] } else { unreachable!() }),
            }),
            Weights::Q4(_) => Weights::Q4(WeightQ4 {
                n,
                k,
                blocks: cat(parts, k.div_ceil(QK), |w| if let Weights::Q4(x) = w { &x.blocks[..] } else { unreachable!() }),
            }),
            Weights::Q4K(_) => Weights::Q4K(WeightQ4K {
                n,
                k,
                blocks: cat(parts, k.div_ceil(QK_K), |w| if let Weights::Q4K(x) = w { &x.blocks[..] } else { unreachable!() }),
            }),
        }
    }
}

/// A borrowed weight matrix `[n, k]` in one of the storage formats: what the GEMV kernels read.
/// Lets callers run [`crate::gemv`] on weights they already hold as slices (e.g. a model's f32
/// parameter vector) without copying them into a [`Weights`].
#[derive(Clone, Copy, Debug)]
pub enum WeightsRef<'a> {
    /// f32 `[n, k]`
    F32 {
        /// values
        w: &'a [f32],
        /// rows
        n: usize,
        /// columns
        k: usize,
    },
    /// bf16 bit patterns `[n, k]`
    Bf16 {
        /// bits
        bits: &'a [u16],
        /// rows
        n: usize,
        /// columns
        k: usize,
    },
    /// per-row symmetric int8 `[n, k]` with scales `[n]`
    I8 {
        /// quantised values
        q: &'a [i8],
        /// per-row scales
        scale: &'a [f32],
        /// rows
        n: usize,
        /// columns
        k: usize,
    },
    /// 4-bit blocks `[n, ⌈k/32⌉]`
    Q4 {
        /// blocks
        blocks: &'a [BlockQ4],
        /// rows
        n: usize,
        /// columns
        k: usize,
    },
    /// 4-bit super-blocks `[n, ⌈k/256⌉]`
    Q4K {
        /// blocks
        blocks: &'a [BlockQ4K],
        /// rows
        n: usize,
        /// columns
        k: usize,
    },
}

impl<'a> WeightsRef<'a> {
    /// f32 weights `w` (`[n, k]`, length checked).
    pub fn f32(w: &'a [f32], n: usize, k: usize) -> Self {
        check_len(w.len(), n, k, "WeightsRef::f32");
        WeightsRef::F32 { w, n, k }
    }
    /// Rows (output features).
    pub fn n(&self) -> usize {
        match *self {
            WeightsRef::F32 { n, .. }
            | WeightsRef::Bf16 { n, .. }
            | WeightsRef::I8 { n, .. }
            | WeightsRef::Q4 { n, .. }
            | WeightsRef::Q4K { n, .. } => n,
        }
    }
    /// Columns (input features).
    pub fn k(&self) -> usize {
        match *self {
            WeightsRef::F32 { k, .. }
            | WeightsRef::Bf16 { k, .. }
            | WeightsRef::I8 { k, .. }
            | WeightsRef::Q4 { k, .. }
            | WeightsRef::Q4K { k, .. } => k,
        }
    }
    /// Storage format.
    pub fn dtype(&self) -> WeightDtype {
        match self {
            WeightsRef::F32 { .. } => WeightDtype::F32,
            WeightsRef::Bf16 { .. } => WeightDtype::Bf16,
            WeightsRef::I8 { .. } => WeightDtype::I8,
            WeightsRef::Q4 { .. } => WeightDtype::Q4,
            WeightsRef::Q4K { .. } => WeightDtype::Q4K,
        }
    }
    /// Bytes of storage, as [`Weights::bytes`].
    pub fn bytes(&self) -> usize {
        match self {
            WeightsRef::F32 { w, .. } => 4 * w.len(),
            WeightsRef::Bf16 { bits, .. } => 2 * bits.len(),
            WeightsRef::I8 { q, scale, .. } => q.len() + 4 * scale.len(),
            WeightsRef::Q4 { blocks, .. } => std::mem::size_of_val(*blocks),
            WeightsRef::Q4K { blocks, .. } => std::mem::size_of_val(*blocks),
        }
    }
}

impl Weights {
    /// A borrowed view for the GEMV kernels.
    pub fn view(&self) -> WeightsRef<'_> {
        match self {
            Weights::F32(w) => WeightsRef::F32 { w: &w.w, n: w.n, k: w.k },
            Weights::Bf16(w) => WeightsRef::Bf16 { bits: &w.bits, n: w.n, k: w.k },
            Weights::I8(w) => WeightsRef::I8 { q: &w.q, scale: &w.scale, n: w.n, k: w.k },
            Weights::Q4(w) => WeightsRef::Q4 { blocks: &w.blocks, n: w.n, k: w.k },
            Weights::Q4K(w) => WeightsRef::Q4K { blocks: &w.blocks, n: w.n, k: w.k },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
        let w = quantize_bf16(&[1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), -2.5], 1, 3);
        assert_eq!(w.dequantize(), vec![1.0, 1.0 + 2f32.powi(-6), -2.5]);
    }

    #[test]
    fn i8_zero_row_and_extremes() {
        let w = quantize_i8(&[0.0, 0.0, 0.0, 2.0, -2.0, 1.0], 2, 3);
        assert_eq!(w.scale[0], 0.0);
        assert_eq!(&w.q[..3], &[0, 0, 0]);
        assert_eq!(&w.q[3..], &[127, -127, 64]); // 63.5 rounds away from zero
        let wt = Weights::I8(w);
        assert_eq!(wt.bytes(), 6 + 8);
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(std::panic::catch_unwind(|| quantize_i8(&[1.0, bad, 0.5], 1, 3)).is_err(), "{bad} must not quantise");
            assert_eq!(non_finite_at(&[1.0, 2.0, bad]).map(|(i, _)| i), Some(2));
        }
        assert_eq!(non_finite_at(&[1.0, 2.0]), None);
        assert_eq!((wt.n(), wt.k()), (2, 3));
    }
}
