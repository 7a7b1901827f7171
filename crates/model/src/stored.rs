//! Matrices kept in their checkpoint's storage format instead of the f32 parameter buffer.
//!
//! A GGUF file's matrices stay here as the file stores them (bf16, f16, or GGML's quantised
//! blocks: `StoredData::Ggml`), so that a 4-bit file loads in about its own size.
//!
//! A Hugging Face checkpoint in bf16 or f16 loaded for the fast inference engine
//! (`HfOptions::keep_dtype`) keeps its projection and expert matrices here, 2 bytes per value, and
//! leaves their ranges of `Transformer::params` as untouched zero pages (the buffer is allocated
//! zeroed, so those pages are never written and take no memory). The engine converts each matrix
//! once into its own format (`Transformer::matrix_f32` gives it the values, or it takes them out
//! of the store: `EngineWeights::new_taking`); the f32 reference path refuses such a model until
//! `Transformer::materialize` has copied the matrices into the parameter buffer. ADR-0007.
//!
//! Which tensors are matrices kept here is decided by [`is_engine_matrix`]: the token embedding,
//! the attention and FFN projections, the expert stacks and the LM head — what the engine converts
//! (it keeps a kept embedding in bf16 and gathers its rows from there) — but never the router,
//! norms or biases.

use crate::gguf::{dequantize, GgmlType};
use std::collections::BTreeMap;
use std::ops::Range;

/// Values of one stored matrix.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredData {
    /// bfloat16 bit patterns
    Bf16(Vec<u16>),
    /// IEEE half bit patterns
    F16(Vec<u16>),
    /// GGML blocks as a GGUF file stores them (`n` values, rows of whole blocks); a quantised
    /// file's matrices stay here, in the file's size, until the engine converts them
    Ggml {
        /// the block type
        ty: GgmlType,
        /// values held
        n: usize,
        /// the blocks
        bytes: Vec<u8>,
    },
}

impl StoredData {
    /// Elements held.
    pub fn len(&self) -> usize {
        match self {
            StoredData::Bf16(v) | StoredData::F16(v) => v.len(),
            StoredData::Ggml { n, .. } => *n,
        }
    }

    /// No element held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            StoredData::Ggml { bytes, .. } => bytes.len(),
            _ => 2 * self.len(),
        }
    }

    /// Elements `r` as f32 (exact: every bf16, f16 and dequantised GGML value is an f32).
    pub fn to_f32(&self, r: Range<usize>) -> Vec<f32> {
        match self {
            StoredData::Bf16(v) => v[r].iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect(),
            StoredData::F16(v) => v[r].iter().map(|&b| half::f16::from_bits(b).to_f32()).collect(),
            StoredData::Ggml { ty, bytes, .. } => {
                // the whole blocks covering r
                let (bn, bb) = ty.block();
                let (b0, b1) = (r.start / bn, r.end.div_ceil(bn));
                let mut out = vec![0.0f32; (b1 - b0) * bn];
                dequantize(*ty, &bytes[b0 * bb..b1 * bb], &mut out);
                out.drain(..r.start - b0 * bn);
                out.truncate(r.len());
                out
            }
        }
    }

    /// `vals` rounded to the format of `self` (exact for values read from such a tensor);
    /// `None` for GGML blocks, which are kept only as the file stores them.
    pub fn like(&self, vals: &[f32]) -> Option<StoredData> {
        match self {
            StoredData::Bf16(_) => Some(StoredData::Bf16(vals.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect())),
            StoredData::F16(_) => Some(StoredData::F16(vals.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect())),
            StoredData::Ggml { .. } => None,
        }
    }

    /// Elements `..at` and `at..` as two stored matrices (`at` on a block boundary).
    pub fn split_at(self, at: usize) -> (StoredData, StoredData) {
        match self {
            StoredData::Bf16(mut v) => {
                let b = v.split_off(at);
                (StoredData::Bf16(v), StoredData::Bf16(b))
            }
            StoredData::F16(mut v) => {
                let b = v.split_off(at);
                (StoredData::F16(v), StoredData::F16(b))
            }
            StoredData::Ggml { ty, n, mut bytes } => {
                let (bn, bb) = ty.block();
                assert_eq!(at % bn, 0, "split of {} blocks inside a block", ty.name());
                let b = bytes.split_off(at / bn * bb);
                (StoredData::Ggml { ty, n: at, bytes }, StoredData::Ggml { ty, n: n - at, bytes: b })
            }
        }
    }

    /// Name of the format (`bf16`, `f16`, or GGML's type name such as `q4_K`).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            StoredData::Bf16(_) => "bf16",
            StoredData::F16(_) => "f16",
            StoredData::Ggml { ty, .. } => ty.name(),
        }
    }
}

/// Stored matrices by the start of their range in the parameter buffer (an expert stack is
/// stored one expert per entry, so that each can be released on its own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MatrixStore {
    by_start: BTreeMap<usize, (Range<usize>, StoredData)>,
    /// matrices removed by [`MatrixStore::take_f32`] (their values now live elsewhere)
    pub(crate) taken: usize,
}

impl MatrixStore {
    /// Keep `data` for the parameter range `range` (same length).
    pub fn insert(&mut self, range: Range<usize>, data: StoredData) {
        assert_eq!(range.len(), data.len(), "stored matrix length");
        self.by_start.insert(range.start, (range, data));
    }

    /// No matrix stored.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Matrices stored.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Matrices taken out by [`MatrixStore::take_f32`]: the model no longer has their values.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Bytes held by all stored matrices.
    pub fn bytes(&self) -> usize {
        self.by_start.values().map(|(_, d)| d.bytes()).sum()
    }

    /// Elements held by all stored matrices.
    pub fn elems(&self) -> usize {
        self.by_start.values().map(|(_, d)| d.len()).sum()
    }

    /// Format of the stored matrix starting at `start`, if one does.
    pub fn dtype_at(&self, start: usize) -> Option<&'static str> {
        self.by_start.get(&start).map(|(_, d)| d.dtype_name())
    }

    /// Elements `r` of the parameter buffer as f32 when stored matrices cover all of `r` (one
    /// matrix, part of one, or several adjacent ones such as the per-expert parts of a stack).
    pub fn get_f32(&self, r: Range<usize>) -> Option<Vec<f32>> {
        if r.is_empty() {
            return None;
        }
        // the entry holding r.start, then the adjacent ones up to r.end
        let first = *self.by_start.range(..=r.start).next_back()?.0;
        let mut out = Vec::with_capacity(r.len());
        let mut at = r.start;
        for (whole, data) in self.by_start.range(first..).map(|(_, v)| v) {
            if at >= r.end {
                break;
            }
            if whole.start > at || whole.end <= at {
                return None; // a gap: not (all) stored
            }
            let end = whole.end.min(r.end);
            out.extend(data.to_f32(at - whole.start..end - whole.start));
            at = end;
        }
        (at == r.end).then_some(out)
    }

    /// [`MatrixStore::get_f32`], removing every stored matrix that lies inside `r` (its memory is
    /// released once the caller has its own copy).
    pub fn take_f32(&mut self, r: Range<usize>) -> Option<Vec<f32>> {
        let v = self.get_f32(r.clone())?;
        let inside: Vec<usize> = self.by_start.range(r.clone()).filter(|(_, (w, _))| w.end <= r.end).map(|(&s, _)| s).collect();
        for s in inside {
            self.by_start.remove(&s);
            self.taken += 1;
        }
        Some(v)
    }

    /// The stored matrix of exactly the range `r`, removed from the store (its values as stored).
    pub fn take_exact(&mut self, r: Range<usize>) -> Option<StoredData> {
        match self.by_start.get(&r.start) {
            Some((whole, _)) if *whole == r => {
                self.taken += 1;
                self.by_start.remove(&r.start).map(|(_, d)| d)
            }
            _ => None,
        }
    }

    /// Whether any stored matrix has an element in `r`.
    pub fn overlaps(&self, r: &Range<usize>) -> bool {
        self.by_start.values().any(|(w, _)| w.start < r.end && r.start < w.end)
    }

    /// Every stored matrix: (range, data).
    pub fn iter(&self) -> impl Iterator<Item = (&Range<usize>, &StoredData)> {
        self.by_start.values().map(|(r, d)| (r, d))
    }

    /// The format holding most stored values, if any matrix is stored.
    pub fn main_dtype(&self) -> Option<&'static str> {
        let mut by: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (_, d) in self.by_start.values() {
            *by.entry(d.dtype_name()).or_default() += d.len();
        }
        by.into_iter().max_by_key(|&(name, n)| (n, name)).map(|(name, _)| name)
    }

    /// Format of the stored matrices (the first one's), if any.
    pub fn dtype_name(&self) -> Option<&'static str> {
        self.by_start.values().next().map(|(_, d)| d.dtype_name())
    }
}

/// Whether the parameter `name` is a matrix the fast engine converts (and so may be kept in its
/// checkpoint format): the token embedding, attention projections (incl. latent attention's),
/// dense and shared FFN projections, routed expert stacks and the untied LM head.
pub fn is_engine_matrix(name: &str) -> bool {
    const SUFFIXES: [&str; 16] = [
        "tok_embeddings.weight",
        "attn.wq.weight",
        "attn.wk.weight",
        "attn.wv.weight",
        "attn.wo.weight",
        "attn.wq_a.weight",
        "attn.wq_b.weight",
        "attn.wkv_a.weight",
        "attn.wkv_b.weight",
        "ffn.w_gate.weight",
        "ffn.w_up.weight",
        "ffn.w_down.weight",
        "ffn.experts.w_gate",
        "ffn.experts.w_up",
        "ffn.experts.w_down",
        "lm_head.weight",
    ];
    SUFFIXES.iter().any(|s| name.ends_with(s)) || (name.contains("ffn.shared.w_") && name.ends_with(".weight"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rows_come_back_exactly_and_only_from_inside_one_matrix() {
        let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.375 - 2.0).collect();
        let mut s = MatrixStore::default();
        let like = StoredData::Bf16(Vec::new());
        s.insert(10..22, like.like(&vals).unwrap());
        s.insert(30..34, StoredData::F16(vals[..4].iter().map(|&x| half::f16::from_f32(x).to_bits()).collect()));
        assert_eq!(s.get_f32(10..22).unwrap(), vals);
        assert_eq!(s.get_f32(14..18).unwrap(), vals[4..8]);
        assert_eq!(s.get_f32(31..33).unwrap(), vals[1..3]);
        assert_eq!(s.get_f32(20..24), None, "runs past the matrix");
        assert_eq!(s.get_f32(20..31), None, "spans a gap");
        assert_eq!(s.get_f32(0..4), None, "before every matrix");
        assert_eq!(s.get_f32(22..30), None, "between matrices");
        assert_eq!((s.len(), s.elems(), s.bytes()), (2, 16, 32));
        // adjacent parts read as one; taking removes only what lies inside the range
        s.insert(22..26, like.like(&vals[..4]).unwrap());
        let mut both = vals.clone();
        both.extend_from_slice(&vals[..4]);
        assert_eq!(s.get_f32(10..26).unwrap(), both);
        assert_eq!(s.take_f32(12..26).unwrap(), both[2..]);
        assert_eq!(s.len(), 2, "10..22 is only partly inside 12..26: kept");
        assert_eq!(s.take_f32(22..26), None, "22..26 was taken");
        assert_eq!(s.take_f32(10..22).unwrap(), vals);
        assert_eq!((s.len(), s.taken()), (1, 2));
        assert_eq!(s.take_exact(30..33), None, "only a whole matrix");
        assert_eq!(s.take_exact(30..34).map(|d| d.to_f32(0..4)), Some(vals[..4].to_vec()));
        assert_eq!((s.len(), s.taken()), (0, 3));
        assert!(is_engine_matrix("layers.3.ffn.experts.w_up") && is_engine_matrix("layers.0.ffn.shared.w_down.weight"));
        assert!(is_engine_matrix("tok_embeddings.weight"));
        assert!(!is_engine_matrix("layers.0.ffn.router.weight") && !is_engine_matrix("layers.0.attn.wq.bias"));
    }
}
