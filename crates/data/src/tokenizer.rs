//! Tokenizers: a trivial byte-level one and byte-level BPE (Hugging Face `tokenizer.json`).
//!
//! The byte tokenizer maps each byte (of the UTF-8 text, or of a file as it is) to its value (vocabulary 256) and needs no file. BPE
//! tokenizers are loaded from or saved to a `tokenizer.json`, and [`train_bpe`] trains a GPT-2
//! style one (ByteLevel pre-tokenizer and decoder, `<|endoftext|>` special token) on user files.

use std::fs;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::corpus::{load_documents, Document, TextEncoding};
use crate::error::{Error, Result};

/// The end-of-text special token added by [`train_bpe`].
pub const BPE_EOS: &str = "<|endoftext|>";

/// Token strings recognised as end-of-sequence in loaded BPE tokenizers, in order of preference.
const EOS_CANDIDATES: [&str; 5] = [BPE_EOS, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>"];

/// Smallest vocabulary [`train_bpe`] accepts: 256 byte symbols plus the end-of-text token.
pub const MIN_BPE_VOCAB: usize = 257;

/// A tokenizer: text to token ids and back.
#[derive(Clone)]
pub enum Tokenizer {
    /// One token per UTF-8 byte (ids 0..256); no special tokens.
    Byte,
    /// A Hugging Face tokenizer (normally byte-level BPE).
    Bpe(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer::{}(n_vocab={})", self.kind(), self.n_vocab())
    }
}

impl Tokenizer {
    /// The byte tokenizer: vocabulary 256, token = byte value.
    pub fn byte() -> Self {
        Tokenizer::Byte
    }

    /// Load a Hugging Face `tokenizer.json`; errors name `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), action: "cannot read tokenizer", source })?;
        let tok = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::TokenizerLoad { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Tokenizer::Bpe(Box::new(tok)))
    }

    /// Vocabulary size (for BPE including added/special tokens); the model's embedding rows.
    pub fn n_vocab(&self) -> usize {
        match self {
            Tokenizer::Byte => 256,
            Tokenizer::Bpe(t) => t.get_vocab_size(true),
        }
    }

    /// Encode text to ids (no special tokens are added; literal special tokens are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Byte => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Bpe(t) => {
                t.encode(text, false).map(|enc| enc.get_ids().to_vec()).map_err(|e| Error::Encode { message: e.to_string() })
            }
        }
    }

    /// Encode many texts (in parallel for BPE); same result as calling [`Tokenizer::encode`]
    /// on each.
    pub fn encode_many(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        match self {
            Tokenizer::Byte => texts.iter().map(|t| self.encode(t)).collect(),
            Tokenizer::Bpe(t) => t
                .encode_batch(texts.to_vec(), false)
                .map(|encs| encs.iter().map(|e| e.get_ids().to_vec()).collect())
                .map_err(|e| Error::Encode { message: e.to_string() }),
        }
    }

    /// Encode documents (in parallel for BPE): the byte tokenizer takes each document's bytes as
    /// they are ([`Document::bytes`], which keeps bytes that are not UTF-8), BPE its text.
    pub fn encode_documents(&self, docs: &[Document]) -> Result<Vec<Vec<u32>>> {
        match self {
            Tokenizer::Byte => Ok(docs.iter().map(|d| d.bytes().iter().map(|&b| u32::from(b)).collect()).collect()),
            Tokenizer::Bpe(_) => self.encode_many(&docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>()),
        }
    }

    /// Decode ids to text. Byte: invalid UTF-8 is replaced by U+FFFD (lossy); ids ≥ 256 are an
    /// error. BPE: special tokens are kept in the output; ids unknown to the vocabulary are
    /// skipped (the tokenizers library's behaviour).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Byte => {
                let mut bytes = Vec::with_capacity(ids.len());
                for &id in ids {
                    let b = u8::try_from(id).map_err(|_| Error::TokenOutOfRange { id, n_vocab: 256 })?;
                    bytes.push(b);
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Bpe(t) => t.decode(ids, false).map_err(|e| Error::Decode { message: e.to_string() }),
        }
    }

    /// `"byte"` or `"bpe"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Byte => "byte",
            Tokenizer::Bpe(_) => "bpe",
        }
    }

    /// Write the tokenizer as `tokenizer.json` at `path`, atomically (temporary file + rename);
    /// missing parent directories are created.
    ///
    /// The byte tokenizer has no file form: it returns [`Error::ByteTokenizerNotSavable`]
    /// (callers record [`Tokenizer::kind`] instead).
    pub fn save(&self, path: &Path) -> Result<()> {
        match self {
            Tokenizer::Byte => Err(Error::ByteTokenizerNotSavable { path: path.to_path_buf() }),
            Tokenizer::Bpe(t) => {
                let json = t.to_string(true).map_err(|e| Error::TokenizerSave { path: path.to_path_buf(), message: e.to_string() })?;
                moe_kernels::fsutil::write_atomic(path, json.as_bytes()).map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    action: "cannot write",
                    source,
                })
            }
        }
    }

    /// The end-of-sequence token, if the tokenizer has one (`<|endoftext|>`, `</s>`, ...).
    pub fn eos_token(&self) -> Option<u32> {
        match self {
            Tokenizer::Byte => None,
            Tokenizer::Bpe(t) => EOS_CANDIDATES.iter().find_map(|s| t.token_to_id(s)),
        }
    }
}

/// Train a byte-level BPE tokenizer (GPT-2 style) of at most `vocab` tokens on `files` (text
/// files, `.jsonl` files or directories, read as by [`load_documents`] with `encoding`, where
/// `auto` and `bytes` mean lossy UTF-8: BPE trains on text) and write it atomically
/// to `out`. The vocabulary always contains the 256 byte symbols and [`BPE_EOS`], so `vocab`
/// must be at least [`MIN_BPE_VOCAB`]; it may come out smaller than `vocab` on a small corpus.
pub fn train_bpe(files: &[PathBuf], vocab: usize, out: &Path, encoding: TextEncoding) -> Result<Tokenizer> {
    if vocab < MIN_BPE_VOCAB {
        return Err(Error::InvalidVocabSize {
            path: out.to_path_buf(),
            vocab,
            reason: format!("must be at least {MIN_BPE_VOCAB} (256 bytes + end-of-text)"),
        });
    }
    if files.is_empty() {
        return Err(Error::EmptyCorpus { path: out.to_path_buf() });
    }
    let mut texts = Vec::new();
    for f in files {
        let encoding = match encoding.resolve(false) {
            TextEncoding::Bytes => TextEncoding::Utf8Lossy,
            e => e,
        };
        texts.extend(load_documents(f, encoding)?.into_iter().map(|d| d.text));
    }
    let train_err = |message: String| Error::TokenizerTrain { path: out.to_path_buf(), message };

    let byte_level = ByteLevel::new(false, true, true);
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(BPE_EOS, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, PostProcessorWrapper, ByteLevel>::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(None)
        .with_decoder(Some(byte_level))
        .build()
        .map_err(|e| train_err(e.to_string()))?;
    tok.train(&mut trainer, texts.iter()).map_err(|e| train_err(e.to_string()))?;
    let tokenizer = Tokenizer::Bpe(Box::new(tokenizers::Tokenizer::from(tok)));
    tokenizer.save(out)?;
    Ok(tokenizer)
}

/// Incremental detokenisation: text of a growing token sequence, piece by piece, such that the
/// pieces concatenate to `decode(context ++ ids)` minus `decode(context)` — no lost spaces
/// (SentencePiece/metaspace decoders strip the first word's space, WordLevel joins with spaces),
/// no broken UTF-8 (byte-level BPE and byte-fallback tokens whose bytes are not yet a whole
/// character are held back until they are).
///
/// Each [`Detokenizer::push`] decodes a short window: the ids from `prefix` (a few tokens before
/// the last emitted one, for context) to the end, and emits what it adds to the window's text up
/// to the last emitted id (the offsets scheme of text-generation-inference and vLLM). When the
/// window's text is not an extension of the shorter text (a decoder that rewrites earlier
/// characters) it falls back to decoding everything and emitting the difference to what was
/// already emitted.
#[derive(Debug)]
pub struct Detokenizer<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    /// start of the decode window
    prefix: usize,
    /// ids before this were emitted
    read: usize,
    /// `decode(ids[..n_context])` length in bytes, and everything emitted since
    n_context: usize,
    context_text: String,
    emitted: String,
}

/// Context tokens kept before the first new one.
const DETOK_CONTEXT: usize = 6;

impl<'t> Detokenizer<'t> {
    /// A detokeniser whose text continues `context` (e.g. the prompt; may be empty).
    pub fn new(tok: &'t Tokenizer, context: &[u32]) -> Self {
        let ids = context[context.len().saturating_sub(DETOK_CONTEXT)..].to_vec();
        let context_text = tok.decode(&ids).unwrap_or_default();
        let n = ids.len();
        Detokenizer { tok, ids, prefix: 0, read: n, n_context: n, context_text, emitted: String::new() }
    }

    /// Add one id; returns the text it completes (possibly empty: bytes held back).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let after = self.tok.decode(&self.ids[self.prefix..])?;
        if after.ends_with('\u{FFFD}') {
            return Ok(String::new()); // an incomplete character: wait for its other bytes
        }
        let piece = match after.strip_prefix(before.as_str()) {
            Some(p) => p.to_string(),
            None => {
                // not an extension: diff the whole text against what was emitted
                let full = self.full_text()?;
                match full.strip_prefix(self.emitted.as_str()) {
                    Some(p) => p.to_string(),
                    None => return Ok(String::new()),
                }
            }
        };
        self.prefix = self.read;
        self.read = self.ids.len();
        self.emitted.push_str(&piece);
        Ok(piece)
    }

    /// What is still held back (incomplete bytes at the end, lossily decoded); call once at the end.
    pub fn finish(&mut self) -> Result<String> {
        let full = self.full_text()?;
        let rest = full.strip_prefix(self.emitted.as_str()).unwrap_or("").to_string();
        self.emitted.push_str(&rest);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(rest)
    }

    /// All text emitted so far.
    pub fn text(&self) -> &str {
        &self.emitted
    }

    /// The pushed ids (without the context).
    pub fn ids(&self) -> &[u32] {
        &self.ids[self.n_context..]
    }

    fn full_text(&self) -> Result<String> {
        let all = self.tok.decode(&self.ids)?;
        Ok(all.strip_prefix(self.context_text.as_str()).map(str::to_string).unwrap_or(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "The quick brown fox jumps over the lazy dog. The lazy dog sleeps.\n\
        A quick brown cat jumps over the sleeping dog; the dog wakes up.\n\
        Numbers: 417+2986=3403, 12*34=408. Unicode: café, naïve, 東京.\n";

    fn trained(vocab: usize) -> (tempfile::TempDir, PathBuf, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("train.txt");
        fs::write(&input, SAMPLE.repeat(20)).unwrap();
        let out = dir.path().join("tok").join("tokenizer.json");
        let tok = train_bpe(&[input], vocab, &out, TextEncoding::Auto).unwrap();
        (dir, out, tok)
    }

    #[test]
    fn byte_encode_decode_roundtrip_matches_input() {
        let t = Tokenizer::byte();
        let ids = t.encode("héllo\n").unwrap();
        assert_eq!(ids.len(), "héllo\n".len());
        assert_eq!(ids[0], b'h' as u32);
        assert_eq!(t.decode(&ids).unwrap(), "héllo\n");
        assert_eq!(t.n_vocab(), 256);
        assert_eq!(t.kind(), "byte");
        assert_eq!(t.eos_token(), None);
    }

    #[test]
    fn byte_decode_invalid_utf8_is_lossy() {
        let t = Tokenizer::byte();
        assert_eq!(t.decode(&[b'a' as u32, 0xff, b'b' as u32]).unwrap(), "a\u{fffd}b");
    }

    #[test]
    fn byte_decode_out_of_range_id_is_error() {
        let err = Tokenizer::byte().decode(&[65, 300]).unwrap_err();
        assert!(matches!(err, Error::TokenOutOfRange { id: 300, n_vocab: 256 }), "{err:?}");
    }

    #[test]
    fn byte_save_is_error_naming_path() {
        let err = Tokenizer::byte().save(Path::new("x/tokenizer.json")).unwrap_err();
        assert!(err.to_string().contains("x/tokenizer.json"), "{err}");
    }

    #[test]
    fn train_bpe_reload_roundtrip_matches_input() {
        let (_dir, out, tok) = trained(300);
        assert!(out.exists());
        assert!(tok.n_vocab() <= 300 && tok.n_vocab() > 256, "n_vocab {}", tok.n_vocab());
        let loaded = Tokenizer::from_file(&out).unwrap();
        assert_eq!(loaded.kind(), "bpe");
        assert_eq!(loaded.n_vocab(), tok.n_vocab());
        for text in [SAMPLE, "unseen words: zyxwv ǅ 🙂\ttab", " leading space", ""] {
            let ids = loaded.encode(text).unwrap();
            assert_eq!(ids, tok.encode(text).unwrap());
            assert_eq!(loaded.decode(&ids).unwrap(), text);
        }
        // Merges were learnt: the sample compresses below one token per byte.
        assert!(loaded.encode(SAMPLE).unwrap().len() < SAMPLE.len());
    }

    #[test]
    fn train_bpe_eos_token_is_special() {
        let (_dir, _out, tok) = trained(280);
        let eos = tok.eos_token().expect("eos");
        assert_eq!(tok.encode("a<|endoftext|>b").unwrap().iter().filter(|&&i| i == eos).count(), 1);
        assert_eq!(tok.decode(&[eos]).unwrap(), BPE_EOS);
    }

    #[test]
    fn train_bpe_encode_many_matches_encode() {
        let (_dir, _out, tok) = trained(300);
        let texts = ["the dog", "a cat jumps", ""];
        let many = tok.encode_many(&texts).unwrap();
        for (t, ids) in texts.iter().zip(&many) {
            assert_eq!(&tok.encode(t).unwrap(), ids);
        }
    }

    #[test]
    fn train_bpe_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.txt");
        let err = train_bpe(std::slice::from_ref(&missing), 300, &dir.path().join("t.json"), TextEncoding::Auto).unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path == &missing), "{err:?}");
        assert!(err.to_string().contains("missing.txt"), "{err}");
    }

    #[test]
    fn train_bpe_too_small_vocab_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = train_bpe(&[dir.path().to_path_buf()], 100, &dir.path().join("t.json"), TextEncoding::Auto).unwrap_err();
        assert!(matches!(err, Error::InvalidVocabSize { vocab: 100, .. }), "{err:?}");
    }

    #[test]
    fn from_file_invalid_json_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        fs::write(&p, "{ not a tokenizer").unwrap();
        let err = Tokenizer::from_file(&p).unwrap_err();
        assert!(matches!(&err, Error::TokenizerLoad { path, .. } if path == &p), "{err:?}");
    }

    #[test]
    fn save_overwrites_atomically_leaving_no_temp_file() {
        let (dir, out, tok) = trained(300);
        tok.save(&out).unwrap();
        let names: Vec<String> =
            fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["tokenizer.json".to_string()]);
        assert_eq!(Tokenizer::from_file(&out).unwrap().n_vocab(), tok.n_vocab());
        drop(dir);
    }

    /// A Llama-2 style tokenizer: metaspace pieces and byte-fallback tokens (WordLevel model,
    /// the decoder is what matters).
    fn metaspace_tokenizer() -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": { "type": "WhitespaceSplit" }, "post_processor": null,
            "decoder": { "type": "Sequence", "decoders": [
                { "type": "Replace", "pattern": { "String": "\u{2581}" }, "content": " " },
                { "type": "ByteFallback" }, { "type": "Fuse" },
                { "type": "Strip", "content": " ", "start": 1, "stop": 0 } ] },
            "model": { "type": "WordLevel", "unk_token": "!", "vocab": {
                "\u{2581}Hello": 0, "\u{2581}world": 1, "<0xE2>": 2, "<0x82>": 3, "<0xAC>": 4, "!": 5, "\u{2581}": 6 } }
        });
        Tokenizer::Bpe(Box::new(tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).unwrap()))
    }

    fn streamed(tok: &Tokenizer, context: &[u32], ids: &[u32]) -> (Vec<String>, String) {
        let mut d = Detokenizer::new(tok, context);
        let mut pieces: Vec<String> = ids.iter().map(|&i| d.push(i).unwrap()).collect();
        pieces.push(d.finish().unwrap());
        let text = d.text().to_string();
        (pieces, text)
    }

    #[test]
    fn detokenizer_keeps_metaspace_spaces_and_whole_characters() {
        let tok = metaspace_tokenizer();
        let ids = [0u32, 1, 6, 2, 3, 4, 1, 5, 0];
        let (pieces, text) = streamed(&tok, &[], &ids);
        assert_eq!(text, tok.decode(&ids).unwrap());
        assert_eq!(text, "Hello world \u{20AC} world! Hello");
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        // the euro sign comes out whole, at its last byte
        assert_eq!(pieces[3], "");
        assert_eq!(pieces[4], "");
        assert_eq!(pieces[5], "\u{20AC}");
        // after a context, the first word keeps its space: text = decode(context ++ ids) - decode(context)
        let (_, cont) = streamed(&tok, &[0, 1], &[1, 5]);
        assert_eq!(cont, " world!");
        let all = tok.decode(&[0, 1, 1, 5]).unwrap();
        assert_eq!(format!("{}{cont}", tok.decode(&[0, 1]).unwrap()), all);
    }

    #[test]
    fn detokenizer_byte_tokenizer_holds_partial_utf8_and_flushes_at_finish() {
        let tok = Tokenizer::byte();
        let text = "a\u{20AC}b\u{1F600}";
        let ids = tok.encode(text).unwrap();
        let (pieces, got) = streamed(&tok, &[], &ids);
        assert_eq!(got, text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        // an unfinished character is flushed (lossily) by finish
        let (pieces, got) = streamed(&tok, &[], &ids[..3]);
        assert_eq!(got, "a\u{FFFD}");
        assert_eq!(pieces.last().unwrap(), "\u{FFFD}");
    }
}
