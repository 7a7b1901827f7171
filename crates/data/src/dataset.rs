//! Tokenised train/validation split, random training windows and sequential evaluation windows.

use serde::{Deserialize, Serialize};

use moe_kernels::rng::Rng;

use crate::corpus::Document;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Domain name given to documents without one when other documents do have one.
pub const UNKNOWN_DOMAIN: &str = "(none)";

/// Fewest tokens either split side may have: one input and its target.
const MIN_SPLIT_TOKENS: usize = 2;

/// Smallest piece (in tokens) a long document is cut into for the split.
const MIN_UNIT_TOKENS: usize = 256;

/// Token streams for training and validation, with optional per-token domain tags.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenDataset {
    /// Training tokens, documents concatenated (each followed by EOS or `"\n"`).
    pub train: Vec<u32>,
    /// Validation tokens, same layout.
    pub val: Vec<u32>,
    /// For each training token, the index into `domain_names` of its document's domain.
    pub train_domains: Option<Vec<u8>>,
    /// For each validation token, the index into `domain_names` of its document's domain.
    pub val_domains: Option<Vec<u8>>,
    /// Sorted distinct domain names (documents without one get [`UNKNOWN_DOMAIN`]); empty when
    /// no document has a domain.
    pub domain_names: Vec<String>,
}

/// A contiguous piece of one document's tokens: the unit the split assigns to a side.
struct Unit {
    doc: usize,
    start: usize,
    end: usize,
}

impl TokenDataset {
    /// Tokenise `docs` (each followed by the tokenizer's EOS token if it has one, else by the
    /// encoding of `"\n"`) and split them deterministically into train and validation.
    ///
    /// Documents are the units of the split, except that a document longer than
    /// `max(256, val_fraction·total/8)` tokens is cut into pieces of that size (so that a single
    /// large text file still splits). The units are shuffled with a [`Rng`] seeded by `seed` and
    /// taken into validation, in that order, while doing so brings the validation size closer to
    /// `val_fraction` of all tokens; both sides keep the original document order. Errors if
    /// `val_fraction` is not in (0, 1) or a side ends up with fewer than 2 tokens.
    pub fn from_documents(docs: &[Document], tok: &Tokenizer, val_fraction: f64, seed: u64) -> Result<Self> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(Error::InvalidValFraction { value: val_fraction });
        }
        let (domain_names, doc_domain) = domain_table(docs)?;
        let mut encoded = tok.encode_documents(docs)?;
        let separator = match tok.eos_token() {
            Some(eos) => vec![eos],
            None => tok.encode("\n")?,
        };
        for ids in &mut encoded {
            ids.extend_from_slice(&separator);
        }
        let total: usize = encoded.iter().map(Vec::len).sum();
        let target = val_fraction * total as f64;
        let max_unit = MIN_UNIT_TOKENS.max((target / 8.0).ceil() as usize);
        let mut units = Vec::new();
        for (doc, ids) in encoded.iter().enumerate() {
            let mut start = 0;
            while start < ids.len() {
                let end = (start + max_unit).min(ids.len());
                units.push(Unit { doc, start, end });
                start = end;
            }
        }

        let mut order: Vec<usize> = (0..units.len()).collect();
        let mut rng = Rng::new(seed);
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut is_val = vec![false; units.len()];
        let mut n_val = 0usize;
        for &u in &order {
            let len = units[u].end - units[u].start;
            if n_val == 0 || (n_val as f64 + len as f64 / 2.0) < target {
                is_val[u] = true;
                n_val += len;
            }
        }

        let mut out = TokenDataset {
            train: Vec::with_capacity(total - n_val),
            val: Vec::with_capacity(n_val),
            train_domains: doc_domain.as_ref().map(|_| Vec::with_capacity(total - n_val)),
            val_domains: doc_domain.as_ref().map(|_| Vec::with_capacity(n_val)),
            domain_names,
        };
        for (unit, &val) in units.iter().zip(&is_val) {
            let ids = &encoded[unit.doc][unit.start..unit.end];
            let (tokens, domains) = if val { (&mut out.val, &mut out.val_domains) } else { (&mut out.train, &mut out.train_domains) };
            tokens.extend_from_slice(ids);
            if let (Some(domains), Some(doc_domain)) = (domains.as_mut(), doc_domain.as_ref()) {
                domains.extend(std::iter::repeat_n(doc_domain[unit.doc], ids.len()));
            }
        }
        for (side, n) in [("train", out.train.len()), ("validation", out.val.len())] {
            if n < MIN_SPLIT_TOKENS {
                return Err(Error::SplitTooSmall { side, n_tokens: n, needed: MIN_SPLIT_TOKENS });
            }
        }
        Ok(out)
    }
}

/// Sorted distinct domain names and each document's index into them (None if no domains).
fn domain_table(docs: &[Document]) -> Result<(Vec<String>, Option<Vec<u8>>)> {
    if docs.iter().all(|d| d.domain.is_none()) {
        return Ok((Vec::new(), None));
    }
    let name = |d: &Document| d.domain.clone().unwrap_or_else(|| UNKNOWN_DOMAIN.to_string());
    let mut names: Vec<String> = docs.iter().map(name).collect();
    names.sort();
    names.dedup();
    if names.len() > 256 {
        return Err(Error::TooManyDomains { count: names.len() });
    }
    let index: Vec<u8> = docs.iter().map(|d| names.binary_search(&name(d)).map_or(0, |i| i as u8)).collect();
    Ok((names, Some(index)))
}

/// A batch of training or evaluation windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Input tokens, `[batch_size * seq_len]`, row-major by window.
    pub inputs: Vec<u32>,
    /// Next-token targets: `targets[i]` is the token after `inputs[i]` in the stream.
    pub targets: Vec<u32>,
    /// Number of windows.
    pub batch_size: usize,
    /// Tokens per window.
    pub seq_len: usize,
}

impl Batch {
    /// The batch of windows of `seq_len` tokens starting at `offsets`; each offset must satisfy
    /// `offset + seq_len < tokens.len()` (as those from [`Batcher::next_offsets`] do).
    pub fn from_offsets(tokens: &[u32], offsets: &[usize], seq_len: usize) -> Batch {
        let mut inputs = Vec::with_capacity(offsets.len() * seq_len);
        let mut targets = Vec::with_capacity(offsets.len() * seq_len);
        for &o in offsets {
            inputs.extend_from_slice(&tokens[o..o + seq_len]);
            targets.extend_from_slice(&tokens[o + 1..o + seq_len + 1]);
        }
        Batch { inputs, targets, batch_size: offsets.len(), seq_len }
    }
}

/// Per-token domain tags of the input positions of the windows at `offsets`, laid out like
/// [`Batch::inputs`]; `domains` is a [`TokenDataset`] `train_domains`/`val_domains`.
pub fn window_domains(domains: &[u8], offsets: &[usize], seq_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(offsets.len() * seq_len);
    for &o in offsets {
        out.extend_from_slice(&domains[o..o + seq_len]);
    }
    out
}

/// The checkpointable state of a [`Batcher`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatcherState {
    /// The random generator's state.
    pub rng: [u64; 4],
    /// Batches drawn so far.
    pub n_batches: u64,
}

/// Draws random training windows (nanoGPT style) from a token stream of fixed length.
///
/// The sequence of windows depends only on the seed and the shape, so two runs with the same
/// seed (a dense and an MoE model, say) train on exactly the same tokens.
#[derive(Clone, Debug)]
pub struct Batcher {
    n_tokens: usize,
    batch_size: usize,
    seq_len: usize,
    rng: Rng,
    n_batches: u64,
}

/// Stream label for the batcher's generator, so it differs from other users of the same seed.
const BATCHER_STREAM: u64 = 0xBA7C;

impl Batcher {
    /// A batcher over a stream of `n_tokens` tokens; errors unless `batch_size ≥ 1`,
    /// `seq_len ≥ 1` and `n_tokens ≥ seq_len + 1`.
    pub fn new(n_tokens: usize, batch_size: usize, seq_len: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 || seq_len == 0 || n_tokens < seq_len + 1 {
            return Err(Error::InvalidBatchShape { n_tokens, batch_size, seq_len });
        }
        Ok(Batcher { n_tokens, batch_size, seq_len, rng: Rng::derive(seed, BATCHER_STREAM), n_batches: 0 })
    }

    /// The next batch of windows from `tokens`.
    ///
    /// # Panics
    /// If `tokens.len()` differs from the `n_tokens` given to [`Batcher::new`] (a programming
    /// error: the batcher belongs to one token stream).
    pub fn next_batch(&mut self, tokens: &[u32]) -> Batch {
        assert_eq!(tokens.len(), self.n_tokens, "Batcher built for {} tokens, given {}", self.n_tokens, tokens.len());
        let offsets = self.next_offsets();
        Batch::from_offsets(tokens, &offsets, self.seq_len)
    }

    /// The start positions of the next batch's windows (advancing the batcher exactly as
    /// [`Batcher::next_batch`] does); build the batch with [`Batch::from_offsets`] and the domain
    /// tags with [`window_domains`].
    pub fn next_offsets(&mut self) -> Vec<usize> {
        let n_starts = (self.n_tokens - self.seq_len) as u64;
        let offsets = (0..self.batch_size).map(|_| self.rng.below(n_starts) as usize).collect();
        self.n_batches += 1;
        offsets
    }

    /// Batches drawn so far.
    pub fn n_batches(&self) -> u64 {
        self.n_batches
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> BatcherState {
        BatcherState { rng: self.rng.state(), n_batches: self.n_batches }
    }

    /// Continue from a saved [`BatcherState`] (same shape as when it was saved).
    pub fn restore(&mut self, s: &BatcherState) {
        self.rng = Rng::from_state(s.rng);
        self.n_batches = s.n_batches;
    }
}

/// Sequential, non-overlapping evaluation windows covering the validation tokens: window `i`
/// starts at `i * seq_len`; windows are grouped `batch_size` at a time (the last batch may be
/// smaller), up to `max_batches` batches. Empty if fewer than `seq_len + 1` tokens, or if
/// `batch_size` or `seq_len` is 0.
pub fn eval_batches(tokens: &[u32], batch_size: usize, seq_len: usize, max_batches: Option<usize>) -> Vec<Batch> {
    if batch_size == 0 || seq_len == 0 || tokens.len() < seq_len + 1 {
        return Vec::new();
    }
    let n_windows = (tokens.len() - 1) / seq_len;
    let offsets: Vec<usize> = (0..n_windows).map(|i| i * seq_len).collect();
    offsets.chunks(batch_size).take(max_batches.unwrap_or(usize::MAX)).map(|chunk| Batch::from_offsets(tokens, chunk, seq_len)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, domain: Option<&str>) -> Document {
        Document::new(text, domain.map(str::to_string))
    }

    fn many_docs(n: usize) -> Vec<Document> {
        (0..n).map(|i| doc(&format!("document {i} {}", "x".repeat(i % 50)), Some(["a", "b"][i % 2]))).collect()
    }

    #[test]
    fn from_documents_same_seed_same_split_and_fraction_close() {
        let docs = many_docs(400);
        let tok = Tokenizer::byte();
        let a = TokenDataset::from_documents(&docs, &tok, 0.1, 5).unwrap();
        let b = TokenDataset::from_documents(&docs, &tok, 0.1, 5).unwrap();
        assert_eq!(a, b);
        let c = TokenDataset::from_documents(&docs, &tok, 0.1, 6).unwrap();
        assert_ne!(a.val, c.val);
        let total = a.train.len() + a.val.len();
        let expected_total: usize = docs.iter().map(|d| d.text.len() + 1).sum();
        assert_eq!(total, expected_total);
        let frac = a.val.len() as f64 / total as f64;
        assert!((frac - 0.1).abs() < 0.02, "val fraction {frac}");
    }

    #[test]
    fn from_documents_separator_and_domains_align_with_tokens() {
        let docs = many_docs(50);
        let ds = TokenDataset::from_documents(&docs, &Tokenizer::byte(), 0.2, 1).unwrap();
        assert_eq!(ds.domain_names, vec!["a".to_string(), "b".to_string()]);
        let (td, vd) = (ds.train_domains.as_ref().unwrap(), ds.val_domains.as_ref().unwrap());
        assert_eq!(td.len(), ds.train.len());
        assert_eq!(vd.len(), ds.val.len());
        // Every document is "document <i> ..." followed by '\n'; domain = i % 2.
        let text = String::from_utf8(ds.train.iter().map(|&t| t as u8).collect()).unwrap();
        let mut pos = 0;
        for line in text.split_terminator('\n') {
            let i: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
            assert!(td[pos..pos + line.len() + 1].iter().all(|&d| d as usize == i % 2));
            pos += line.len() + 1;
        }
        assert_eq!(pos, ds.train.len());
    }

    #[test]
    fn from_documents_without_domains_has_no_tags() {
        let docs: Vec<Document> = (0..20).map(|i| doc(&format!("text {i}"), None)).collect();
        let ds = TokenDataset::from_documents(&docs, &Tokenizer::byte(), 0.25, 0).unwrap();
        assert!(ds.train_domains.is_none() && ds.val_domains.is_none() && ds.domain_names.is_empty());
    }

    #[test]
    fn from_documents_mixed_domains_get_unknown_name() {
        let docs = vec![doc("aaaa", Some("z")), doc("bbbb", None), doc("cccc", Some("z")), doc("dddd", None)];
        let ds = TokenDataset::from_documents(&docs, &Tokenizer::byte(), 0.3, 0).unwrap();
        assert_eq!(ds.domain_names, vec![UNKNOWN_DOMAIN.to_string(), "z".to_string()]);
    }

    #[test]
    fn from_documents_single_large_document_is_split() {
        let docs = vec![doc(&"abcdefgh".repeat(2000), None)];
        let ds = TokenDataset::from_documents(&docs, &Tokenizer::byte(), 0.1, 3).unwrap();
        let frac = ds.val.len() as f64 / 16001.0;
        assert!(frac > 0.05 && frac < 0.2, "val fraction {frac}");
    }

    #[test]
    fn from_documents_single_tiny_document_is_error() {
        let err = TokenDataset::from_documents(&[doc("hi", None)], &Tokenizer::byte(), 0.1, 0).unwrap_err();
        assert!(matches!(err, Error::SplitTooSmall { side: "train", .. }), "{err:?}");
    }

    #[test]
    fn from_documents_bad_fraction_is_error() {
        for f in [0.0, 1.0, -0.5, f64::NAN] {
            let err = TokenDataset::from_documents(&many_docs(10), &Tokenizer::byte(), f, 0).unwrap_err();
            assert!(matches!(err, Error::InvalidValFraction { .. }), "{err:?}");
        }
    }

    #[test]
    fn batcher_same_seed_same_batches_and_targets_shifted() {
        let tokens: Vec<u32> = (0..1000).collect();
        let mut a = Batcher::new(tokens.len(), 4, 16, 9).unwrap();
        let mut b = Batcher::new(tokens.len(), 4, 16, 9).unwrap();
        let mut c = Batcher::new(tokens.len(), 4, 16, 10).unwrap();
        let mut differs = false;
        for _ in 0..20 {
            let (x, y, z) = (a.next_batch(&tokens), b.next_batch(&tokens), c.next_batch(&tokens));
            assert_eq!(x, y);
            differs |= x != z;
            assert_eq!(x.inputs.len(), 64);
            for (i, t) in x.inputs.iter().zip(&x.targets) {
                assert_eq!(*t, i + 1);
            }
            // Each window is contiguous.
            for w in x.inputs.chunks(16) {
                assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
            }
        }
        assert!(differs);
        assert_eq!(a.n_batches(), 20);
    }

    #[test]
    fn batcher_offsets_cover_full_range_within_bounds() {
        let mut b = Batcher::new(20, 8, 10, 1).unwrap();
        let mut seen = [false; 10];
        for _ in 0..100 {
            for o in b.next_offsets() {
                assert!(o + 10 < 20, "offset {o}");
                seen[o] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn batcher_restore_continues_same_sequence() {
        let tokens: Vec<u32> = (0..500).collect();
        let mut a = Batcher::new(tokens.len(), 3, 8, 2).unwrap();
        for _ in 0..7 {
            a.next_batch(&tokens);
        }
        let saved = a.state();
        let json = serde_json::to_string(&saved).unwrap();
        let expected: Vec<Batch> = (0..5).map(|_| a.next_batch(&tokens)).collect();
        let mut b = Batcher::new(tokens.len(), 3, 8, 2).unwrap();
        b.restore(&serde_json::from_str(&json).unwrap());
        assert_eq!(b.state(), saved);
        let got: Vec<Batch> = (0..5).map(|_| b.next_batch(&tokens)).collect();
        assert_eq!(got, expected);
        assert_eq!(b.n_batches(), 12);
    }

    #[test]
    fn batcher_new_too_few_tokens_is_error() {
        assert!(matches!(Batcher::new(16, 2, 16, 0), Err(Error::InvalidBatchShape { .. })));
        assert!(matches!(Batcher::new(100, 0, 16, 0), Err(Error::InvalidBatchShape { .. })));
        assert!(matches!(Batcher::new(100, 2, 0, 0), Err(Error::InvalidBatchShape { .. })));
        assert!(Batcher::new(17, 2, 16, 0).is_ok());
    }

    #[test]
    fn window_domains_match_offsets() {
        let domains: Vec<u8> = (0..30).map(|i| (i / 10) as u8).collect();
        assert_eq!(window_domains(&domains, &[8, 20], 3), vec![0, 0, 1, 2, 2, 2]);
    }

    #[test]
    fn eval_batches_sequential_non_overlapping_and_limited() {
        let tokens: Vec<u32> = (0..101).collect();
        let all = eval_batches(&tokens, 3, 10, None);
        // 10 windows of 10: batches of 3, 3, 3, 1.
        assert_eq!(all.iter().map(|b| b.batch_size).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        let inputs: Vec<u32> = all.iter().flat_map(|b| b.inputs.clone()).collect();
        assert_eq!(inputs, (0..100).collect::<Vec<u32>>());
        let targets: Vec<u32> = all.iter().flat_map(|b| b.targets.clone()).collect();
        assert_eq!(targets, (1..101).collect::<Vec<u32>>());
        assert_eq!(eval_batches(&tokens, 3, 10, Some(2)).len(), 2);
        assert!(eval_batches(&tokens[..10], 3, 10, None).is_empty());
        assert!(eval_batches(&tokens, 0, 10, None).is_empty());
    }
}
