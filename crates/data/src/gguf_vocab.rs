//! Tokenizers of GGUF files: llama.cpp stores the vocabulary as metadata (`tokenizer.ggml.*`),
//! which this module turns into a Hugging Face tokenizer that splits text as llama.cpp does.
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE — the tokens (already in GPT-2's byte-to-
//!   character form), the ranked `merges`, and the pre-tokenizer regex that
//!   `tokenizer.ggml.pre` names (GPT-2's, Llama 3's, Qwen2's, …).
//! * `tokenizer.ggml.model = "llama"`: SentencePiece — pieces with `▁` for spaces, scores, and
//!   byte pieces `<0xAB>` as fallback. llama.cpp merges the adjacent pair whose merged piece has
//!   the highest score first; that is BPE with every split `a + b = piece` of a piece ranked by the
//!   piece's score, which is what is built here (spaces become `▁`, a `▁` is put before the text
//!   when `tokenizer.ggml.add_space_prefix` says so, unknown bytes fall back to byte pieces).
//!
//! Control tokens (type 3) become special added tokens, user-defined ones (type 4) added tokens.

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// The tokenizer metadata of a GGUF file.
#[derive(Clone, Debug, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`
    pub model: String,
    /// `tokenizer.ggml.pre`: which pre-tokenizer (gpt2 vocabularies)
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece)
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)
    pub token_types: Option<Vec<i64>>,
    /// `tokenizer.ggml.merges` (`"a b"`, highest priority first)
    pub merges: Vec<String>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece; default true)
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk: Option<u32>,
}

/// Pre-tokenizer regexes of the `tokenizer.ggml.pre` values supported, by name.
fn pre_regex(pre: &str) -> Option<&'static str> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const LLAMA3: &str =
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    // GPT-4o's (o200k), which Llama 4's tokenizer.json states; llama.cpp runs an equivalent
    // rewritten for its regex engine
    const GPT4O: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    Some(match pre {
        "gpt-2" | "gpt2" | "default" | "olmo" | "mpt" | "starcoder" | "refact" | "jais" => GPT2,
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => LLAMA3,
        "qwen2" | "deepseek-r1-qwen" => QWEN2,
        "gpt-4o" | "llama4" => GPT4O,
        _ => return None,
    })
}

fn added_tokens(v: &GgufVocab) -> Vec<Value> {
    let Some(types) = &v.token_types else { return Vec::new() };
    types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(id, &t)| {
            json!({"id": id, "content": v.tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": t == 3})
        })
        .collect()
}

/// SentencePiece merges: every split of every (normal) piece into two pieces of the vocabulary,
/// ranked by the merged piece's score (then id).
fn spm_merges(v: &GgufVocab, scores: &[f32]) -> Vec<String> {
    let index: HashMap<&str, usize> = v.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let normal = |i: usize| v.token_types.as_ref().is_none_or(|t| t[i] == 1);
    let mut merges: Vec<(f32, usize, usize, String)> = Vec::new();
    for (id, piece) in v.tokens.iter().enumerate() {
        if !normal(id) {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (index.get(a), index.get(b)) {
                if normal(ia) && normal(ib) {
                    merges.push((scores[id], id, ia, format!("{a} {b}")));
                }
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    merges.into_iter().map(|m| m.3).collect()
}

impl Tokenizer {
    /// The tokenizer a GGUF file's metadata describes; `path` (the file) names it in errors.
    pub fn from_gguf_vocab(v: &GgufVocab, path: &Path) -> Result<Self> {
        let err = |message: String| Error::TokenizerLoad { path: path.to_path_buf(), message };
        let n = v.tokens.len();
        if n == 0 {
            return Err(err("metadata `tokenizer.ggml.tokens` is missing or empty".into()));
        }
        for (key, len) in [("scores", v.scores.as_ref().map(Vec::len)), ("token_type", v.token_types.as_ref().map(Vec::len))] {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(err(format!("metadata `tokenizer.ggml.{key}` has {len} entries for {n} tokens")));
            }
        }
        let mut vocab = Map::new();
        for (i, t) in v.tokens.iter().enumerate() {
            // duplicate pieces (e.g. unused placeholders) keep their first id
            vocab.entry(t.clone()).or_insert(json!(i));
        }
        let added = added_tokens(v);
        let tj = match v.model.as_str() {
            "gpt2" => {
                let pre = v.pre.as_deref().unwrap_or("default");
                let regex = pre_regex(pre).ok_or_else(|| {
                    err(format!(
                        "metadata `tokenizer.ggml.pre` is `{pre}`, a pre-tokenizer this loader does not know \
                         (known: gpt-2, default, olmo, llama-bpe, qwen2, gpt-4o/llama4 and their aliases)"
                    ))
                })?;
                json!({
                    "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
                    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
                    "post_processor": null,
                    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                              "vocab": vocab, "merges": v.merges}
                })
            }
            "llama" => {
                let scores =
                    v.scores.as_ref().ok_or_else(|| err("metadata `tokenizer.ggml.scores` is missing (SentencePiece needs it)".into()))?;
                let unk = v.unk.map(|u| {
                    v.tokens.get(u as usize).cloned().ok_or_else(|| err(format!("`tokenizer.ggml.unknown_token_id` {u} is not a token")))
                });
                let mut norm = Vec::new();
                if v.add_space_prefix.unwrap_or(true) {
                    norm.push(json!({"type": "Prepend", "prepend": "▁"}));
                }
                norm.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
                let mut dec = vec![
                    json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                ];
                if v.add_space_prefix.unwrap_or(true) {
                    dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
                }
                json!({
                    "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                    "normalizer": {"type": "Sequence", "normalizers": norm},
                    "pre_tokenizer": null, "post_processor": null,
                    "decoder": {"type": "Sequence", "decoders": dec},
                    "model": {"type": "BPE", "dropout": null, "unk_token": unk.transpose()?, "continuing_subword_prefix": null,
                              "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                              "vocab": vocab, "merges": spm_merges(v, scores)}
                })
            }
            other => {
                return Err(err(format!(
                    "metadata `tokenizer.ggml.model` is `{other}`; gpt2 (byte-level BPE) and llama (SentencePiece) vocabularies load"
                )))
            }
        };
        let text = serde_json::to_string(&tj).expect("json");
        let tok = tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| err(format!("building its tokenizer: {e}")))?;
        Ok(Tokenizer::Bpe(Box::new(tok)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spm() -> GgufVocab {
        // pieces: <unk>, <s>, </s>, bytes <0x00>..<0xFF>, then a few pieces with scores
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (p, s) in [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -3.0),
            ("l", -4.0),
            ("o", -5.0),
            ("he", -6.0),
            ("ll", -7.0),
            ("▁he", -8.0),
            ("llo", -9.0),
            ("▁hello", -10.0),
        ] {
            tokens.push(p.into());
            types.push(1);
            scores.push(s);
        }
        GgufVocab { model: "llama".into(), tokens, scores: Some(scores), token_types: Some(types), unk: Some(0), ..Default::default() }
    }

    #[test]
    fn sentencepiece_merges_by_score_and_falls_back_to_bytes() {
        let v = spm();
        let t = Tokenizer::from_gguf_vocab(&v, Path::new("m.gguf")).unwrap();
        let id = |s: &str| v.tokens.iter().position(|t| t == s).unwrap() as u32;
        assert_eq!(t.encode("hello").unwrap(), vec![id("▁hello")]);
        // "x" is no piece: its byte piece
        assert_eq!(t.encode("hex").unwrap(), vec![id("▁he"), id("<0x78>")]);
        assert_eq!(t.decode(&t.encode("hello hex").unwrap()).unwrap(), "hello hex");
        // control tokens are special
        assert_eq!(t.encode("<s>").unwrap(), vec![1]);
    }

    #[test]
    fn bad_vocabularies_are_errors() {
        let mut v = spm();
        v.scores.as_mut().unwrap().pop();
        let e = Tokenizer::from_gguf_vocab(&v, Path::new("m.gguf")).unwrap_err().to_string();
        assert!(e.contains("m.gguf") && e.contains("scores"), "{e}");
        let v = GgufVocab { model: "gpt2".into(), tokens: vec!["a".into()], pre: Some("tekken".into()), ..Default::default() };
        let e = Tokenizer::from_gguf_vocab(&v, Path::new("m.gguf")).unwrap_err().to_string();
        assert!(e.contains("tekken"), "{e}");
        let v = GgufVocab { model: "rwkv".into(), tokens: vec!["a".into()], ..Default::default() };
        assert!(Tokenizer::from_gguf_vocab(&v, Path::new("m.gguf")).unwrap_err().to_string().contains("rwkv"));
    }
}
