//! GGML tensor types: their block layouts and dequantisation to f32, written from the block
//! definitions of ggml (`ggml-common.h`) and checked against gguf-py's own dequantisation on
//! fixtures (`tests/golden_gguf/quants`).
//!
//! Blocks hold `QK` = 32 values (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, `MXFP4`) or `QK_K` = 256
//! values in super-blocks of 8 or 16 sub-blocks with 6- or 8-bit scales (`Q4_K`, `Q5_K`, `Q6_K`).
//! Every multi-byte field is little-endian; scales are IEEE f16, except MXFP4's power-of-two
//! exponent byte (E8M0).

use half::f16;
use moe_kernels::quant_k::{scale_min_k4, BlockQ4K};

/// Values per super-block of the k-quants.
pub use moe_kernels::quant_k::QK_K;

/// A GGML element type the loader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 4-byte float
    F32,
    /// IEEE half
    F16,
    /// bfloat16
    Bf16,
    /// 32 values: f16 scale, 4-bit `q`: `d·(q − 8)`
    Q4_0,
    /// 32 values: f16 scale and min, 4-bit `q`: `d·q + m`
    Q4_1,
    /// 32 values: f16 scale, 5-bit `q`: `d·(q − 16)`
    Q5_0,
    /// 32 values: f16 scale and min, 5-bit `q`: `d·q + m`
    Q5_1,
    /// 32 values: f16 scale, int8 `q`: `d·q`
    Q8_0,
    /// 256 values: f16 `d`, `dmin`, 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit `q`
    Q4K,
    /// 256 values: as `Q4_K` with a fifth bit per value
    Q5K,
    /// 256 values: f16 `d`, 16 sub-blocks of 16 with int8 scales, 6-bit `q − 32`
    Q6K,
    /// 32 values (OCP microscaling FP4): an E8M0 exponent byte and 4-bit E2M1 codes (GPT-OSS experts)
    Mxfp4,
    /// A type the file may hold but this loader does not read (its GGML id and name).
    Other(u32, &'static str),
}

impl GgmlType {
    /// The type of GGML id `id` (`ggml_type`), `None` for an id GGML does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            39 => GgmlType::Mxfp4,
            _ => {
                let name = match id {
                    9 => "q8_1",
                    10 => "q2_K",
                    11 => "q3_K",
                    15 => "q8_K",
                    16 => "iq2_xxs",
                    17 => "iq2_xs",
                    18 => "iq3_xxs",
                    19 => "iq1_s",
                    20 => "iq4_nl",
                    21 => "iq3_s",
                    22 => "iq2_s",
                    23 => "iq4_xs",
                    24 => "i8",
                    25 => "i16",
                    26 => "i32",
                    27 => "i64",
                    28 => "f64",
                    29 => "iq1_m",
                    34 => "tq1_0",
                    35 => "tq2_0",
                    _ => return None,
                };
                GgmlType::Other(id, name)
            }
        })
    }

    /// GGML's name of the type (`q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Bf16 => "bf16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q4K => "q4_K",
            GgmlType::Q5K => "q5_K",
            GgmlType::Q6K => "q6_K",
            GgmlType::Mxfp4 => "mxfp4",
            GgmlType::Other(_, n) => n,
        }
    }

    /// (values, bytes) per block. `Other` types report their real layout where it is simple and
    /// (1, 1) otherwise; they are refused before any data is read.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
            GgmlType::Mxfp4 => (32, 17),
            GgmlType::Other(id, _) => match id {
                9 => (32, 36),
                10 => (QK_K, 84),
                11 => (QK_K, 110),
                15 => (QK_K, 292),
                24 => (1, 1),
                25 => (1, 2),
                26 => (1, 4),
                27 | 28 => (1, 8),
                _ => (1, 1),
            },
        }
    }

    /// Whether [`dequantize`] reads this type.
    pub fn supported(self) -> bool {
        !matches!(self, GgmlType::Other(..))
    }

    /// Bits per value.
    pub fn bits_per_value(self) -> f64 {
        let (n, b) = self.block();
        8.0 * b as f64 / n as f64
    }
}

#[inline]
fn h(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Dequantise `bytes` (whole blocks of `ty`) into `out` (the values they hold, in order).
///
/// # Panics
/// If `ty` is not [`GgmlType::supported`] or the lengths disagree (callers check both).
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (bn, bb) = ty.block();
    assert!(ty.supported(), "dequantize: {} is not supported", ty.name());
    assert_eq!(bytes.len() / bb * bn, out.len(), "dequantize {}: {} bytes for {} values", ty.name(), bytes.len(), out.len());
    assert_eq!(bytes.len() % bb, 0, "dequantize {}: partial block", ty.name());
    for (b, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bn)) {
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => y[0] = h(b, 0),
            GgmlType::Bf16 => y[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
            GgmlType::Q4_0 => {
                let d = h(b, 0);
                for j in 0..16 {
                    y[j] = d * ((b[2 + j] & 15) as i32 - 8) as f32;
                    y[j + 16] = d * ((b[2 + j] >> 4) as i32 - 8) as f32;
                }
            }
            GgmlType::Q4_1 => {
                let (d, m) = (h(b, 0), h(b, 2));
                for j in 0..16 {
                    y[j] = d * (b[4 + j] & 15) as f32 + m;
                    y[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
                }
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, off) = match ty {
                    GgmlType::Q5_0 => (h(b, 0), 0.0, 2),
                    _ => (h(b, 0), h(b, 2), 4),
                };
                let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
                let qs = &b[off + 4..off + 20];
                let bias = if ty == GgmlType::Q5_0 { 16 } else { 0 };
                for j in 0..16 {
                    let hi0 = ((qh >> j) & 1) << 4;
                    let hi1 = ((qh >> (j + 16)) & 1) << 4;
                    y[j] = d * (((qs[j] & 15) as u32 | hi0) as i32 - bias) as f32 + m;
                    y[j + 16] = d * (((qs[j] >> 4) as u32 | hi1) as i32 - bias) as f32 + m;
                }
            }
            GgmlType::Q8_0 => {
                let d = h(b, 0);
                for j in 0..32 {
                    y[j] = d * (b[2 + j] as i8) as f32;
                }
            }
            GgmlType::Q4K => {
                // the engine's q4k blocks are Q4_K's: one dequantisation for both
                BlockQ4K {
                    d: [b[0], b[1]],
                    dmin: [b[2], b[3]],
                    scales: b[4..16].try_into().expect("12 bytes"),
                    qs: b[16..144].try_into().expect("128 bytes"),
                }
                .dequantize_into(y.try_into().expect("256 values"));
            }
            GgmlType::Q5K => {
                let (d, dmin) = (h(b, 0), h(b, 2));
                let sc: &[u8; 12] = b[4..16].try_into().expect("12 bytes");
                let (qh, ql) = (&b[16..48], &b[48..176]);
                // 4 groups of 64 values: 32 low nibbles then 32 high nibbles of 32 bytes, the fifth
                // bits in bits 2g and 2g + 1 of qh
                for g in 0..4 {
                    let (s1, m1) = scale_min_k4(2 * g, sc);
                    let (s2, m2) = scale_min_k4(2 * g + 1, sc);
                    let (d1, o1, d2, o2) = (d * s1 as f32, dmin * m1 as f32, d * s2 as f32, dmin * m2 as f32);
                    let q = &ql[32 * g..32 * g + 32];
                    for l in 0..32 {
                        let (h1, h2) = (((qh[l] >> (2 * g)) & 1) << 4, ((qh[l] >> (2 * g + 1)) & 1) << 4);
                        y[64 * g + l] = d1 * ((q[l] & 15) | h1) as f32 - o1;
                        y[64 * g + 32 + l] = d2 * ((q[l] >> 4) | h2) as f32 - o2;
                    }
                }
            }
            GgmlType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = h(b, 208);
                // 2 halves of 128 values; in each, 32 positions l give 4 values 32 apart
                for n in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let y = &mut y[128 * n..];
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
            GgmlType::Mxfp4 => {
                // E2M1 codes: sign bit, then 0, 0.5, 1, 1.5, 2, 3, 4, 6 — here doubled, and the
                // block scale 2^(e − 127) halved to match (2^(e − 128)), as ggml writes it
                const KV: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];
                let e = b[0] as u32;
                let d = f32::from_bits(if e < 2 { 0x0020_0000 << e } else { (e - 1) << 23 });
                for j in 0..16 {
                    y[j] = d * KV[(b[1 + j] & 15) as usize] as f32;
                    y[j + 16] = d * KV[(b[1 + j] >> 4) as usize] as f32;
                }
            }
            GgmlType::Other(..) => unreachable!("checked above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_kernels::quant::BlockQ4;

    #[test]
    fn q4_0_matches_the_engine_blocks() {
        // the engine's q4 blocks are GGUF Q4_0 byte for byte: both readings agree
        let v: Vec<f32> = (0..64).map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.11).collect();
        let blocks: Vec<BlockQ4> = v.chunks(32).map(BlockQ4::quantize).collect();
        let bytes: Vec<u8> = blocks.iter().flat_map(|b| b.d.iter().chain(b.qs.iter()).copied()).collect();
        let mut out = vec![0.0; 64];
        dequantize(GgmlType::Q4_0, &bytes, &mut out);
        let mut want = [0.0f32; 32];
        for (b, o) in blocks.iter().zip(out.chunks(32)) {
            b.dequantize_into(&mut want);
            assert_eq!(o, &want[..]);
        }
    }

    #[test]
    fn mxfp4_scales_are_powers_of_two() {
        // exponent byte e scales the E2M1 values (0.5 for code 1, 6 for code 7) by 2^(e − 127):
        // code 1 is 2^(e − 128), code 7 is 12·2^(e − 128); e = 0 and 1 give the subnormal 2^-128
        // and 2^-127
        let mut b = [0u8; 17];
        b[1] = 0x71; // values 0 (code 1) and 16 (code 7)
        b[2] = 0xF9; // values 1 (code 9: −1) and 17 (code 15: −12)
        for (e, scale) in [(128u8, 1.0f32), (130, 4.0), (127, 0.5), (1, 2f32.powi(-127)), (0, 2f32.powi(-128))] {
            b[0] = e;
            let mut y = [0.0f32; 32];
            dequantize(GgmlType::Mxfp4, &b, &mut y);
            assert_eq!((y[0], y[16], y[1], y[17]), (scale, 12.0 * scale, -scale, -12.0 * scale), "e {e}");
            assert!(y[2..16].iter().chain(&y[18..]).all(|&v| v == 0.0));
        }
    }

    #[test]
    fn block_sizes_are_ggmls() {
        for (t, bpw) in [
            (GgmlType::Q4_0, 4.5),
            (GgmlType::Q8_0, 8.5),
            (GgmlType::Q4K, 4.5),
            (GgmlType::Q5K, 5.5),
            (GgmlType::Q6K, 6.5625),
            (GgmlType::Mxfp4, 4.25),
        ] {
            assert_eq!(t.bits_per_value(), bpw, "{}", t.name());
        }
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert!(t.block().0 > 0 && t.block().1 > 0);
            }
        }
    }
}
