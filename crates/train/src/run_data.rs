//! The data side of a run: tokenizer, corpus and train/validation split from a `[data]` table.
//!
//! Everything is deterministic: the synthetic corpus and the train/validation split come from
//! `data.seed`, the training batcher from `train.seed`. Two runs with the same seeds and data (a
//! dense and an MoE model, say) train on exactly the same token stream, and runs that differ only
//! in `train.seed` are evaluated on the same validation tokens.

use crate::config::ExperimentConfig;
use crate::error::{Error, Result};
use moe_data::{load_documents, synthetic, Document, TokenDataset, Tokenizer};
use std::path::Path;

/// The tokenizer named by `data.tokenizer` ("byte" or a path to `tokenizer.json`).
pub fn load_tokenizer(cfg: &ExperimentConfig) -> Result<Tokenizer> {
    if cfg.data.is_byte_tokenizer() {
        Ok(Tokenizer::byte())
    } else {
        Ok(Tokenizer::from_file(Path::new(&cfg.data.tokenizer))?)
    }
}

/// Error unless every token id of `tok` fits the model's embedding. `tok_name` names the
/// tokenizer (its file, or "byte") and `model_source` the config or checkpoint naming the model.
pub fn check_tokenizer_fits(tok: &Tokenizer, tok_name: &str, n_vocab: usize, model_source: &Path) -> Result<()> {
    if tok.n_vocab() > n_vocab {
        return Err(Error::TokenizerMismatch {
            tokenizer: tok_name.to_string(),
            n_tokenizer: tok.n_vocab(),
            config: model_source.display().to_string(),
            n_vocab,
        });
    }
    Ok(())
}

/// The documents of `data.source`: the synthetic corpus (seeded by `data.seed`) or the
/// documents under a path, read with `data.encoding` (`auto`: the bytes as they are for the byte
/// tokenizer, lossy UTF-8 with a warning for BPE).
pub fn load_corpus(cfg: &ExperimentConfig) -> Result<Vec<Document>> {
    if cfg.data.is_synthetic() {
        Ok(synthetic::generate(cfg.data.seed, cfg.data.synthetic_bytes))
    } else {
        Ok(load_documents(Path::new(&cfg.data.source), cfg.data.text_encoding())?)
    }
}

/// Tokenise the corpus and split it with `data.val_fraction` (shuffled by `data.seed`).
pub fn build_dataset(cfg: &ExperimentConfig, tok: &Tokenizer) -> Result<TokenDataset> {
    let docs = load_corpus(cfg)?;
    Ok(TokenDataset::from_documents(&docs, tok, cfg.data.val_fraction, cfg.data.seed)?)
}

/// All documents as one token stream, each followed by the tokenizer's EOS token (or the
/// encoding of `"\n"` when it has none) — the layout of [`TokenDataset`].
pub fn encode_documents(docs: &[Document], tok: &Tokenizer) -> Result<Vec<u32>> {
    let sep = match tok.eos_token() {
        Some(e) => vec![e],
        None => tok.encode("\n")?,
    };
    let mut out = Vec::new();
    for ids in tok.encode_documents(docs)? {
        out.extend_from_slice(&ids);
        out.extend_from_slice(&sep);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_experiment;

    fn cfg(extra: &[&str]) -> ExperimentConfig {
        let base = "[model]\nn_vocab = 256\nn_ctx = 16\nn_layer = 1\nd_model = 16\nn_head = 2\nn_head_kv = 1\nd_ff = 16\n[train]\nseq_len = 16\n[data]\nsynthetic_bytes = 20000\nval_fraction = 0.1\n";
        let ov: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        parse_experiment(base, Path::new("x.toml"), &ov).unwrap().0
    }

    #[test]
    fn run_data_synthetic_split_follows_data_seed_not_train_seed() {
        let tok = load_tokenizer(&cfg(&[])).unwrap();
        let a = build_dataset(&cfg(&[]), &tok).unwrap();
        let b = build_dataset(&cfg(&[]), &tok).unwrap();
        assert_eq!(a, b);
        // another training seed keeps the corpus and the validation tokens
        let c = build_dataset(&cfg(&["train.seed=2"]), &tok).unwrap();
        assert_eq!(a, c);
        let d = build_dataset(&cfg(&["data.seed=2"]), &tok).unwrap();
        assert_ne!(a.train, d.train);
        assert_ne!(a.val, d.val);
        let frac = a.val.len() as f64 / (a.train.len() + a.val.len()) as f64;
        assert!(frac > 0.05 && frac < 0.15, "{frac}");
    }

    #[test]
    fn run_data_errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let c = cfg(&[&format!("data.source={}", empty.display())]);
        let e = build_dataset(&c, &Tokenizer::byte()).unwrap_err().to_string();
        assert!(e.contains(&empty.display().to_string()), "{e}");
        let c = cfg(&["data.tokenizer=/nonexistent/tokenizer.json"]);
        let e = load_tokenizer(&c).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
        let e = check_tokenizer_fits(&Tokenizer::byte(), "byte", 64, Path::new("run/config.resolved.toml")).unwrap_err().to_string();
        assert!(e.contains("run/config.resolved.toml") && e.contains("model.n_vocab is 64") && e.contains("256"), "{e}");
    }

    #[test]
    fn run_data_encode_documents_appends_separator() {
        let docs = vec![Document::new("ab", None), Document::new("c", None)];
        assert_eq!(encode_documents(&docs, &Tokenizer::byte()).unwrap(), vec![97, 98, 10, 99, 10]);
    }

    /// A corpus file with one Windows-1252 apostrophe (0x92) in otherwise UTF-8 text.
    fn stray_byte_corpus(dir: &Path) -> (std::path::PathBuf, usize) {
        let mut b = "The dictionary of 1913 has many words in it. ".repeat(200).into_bytes();
        let at = b.len() + 7;
        b.extend_from_slice(b"Webster\x92s entry.\n");
        b.extend("More words follow here. ".repeat(200).bytes());
        let p = dir.join("webster.txt");
        std::fs::write(&p, b).unwrap();
        (p, at)
    }

    #[test]
    fn run_data_stray_byte_is_kept_by_the_byte_tokenizer_replaced_for_bpe_and_refused_when_strict() {
        let tmp = tempfile::tempdir().unwrap();
        let (corpus, at) = stray_byte_corpus(tmp.path());
        let src = format!("data.source={}", corpus.display());
        // byte tokenizer (auto): the byte is a token of its own, nothing replaced
        let c = cfg(&[&src]);
        let ds = build_dataset(&c, &Tokenizer::byte()).unwrap();
        let all: Vec<u32> = ds.train.iter().chain(&ds.val).copied().collect();
        assert_eq!(all.iter().filter(|&&t| t == 0x92).count(), 1, "the stray byte is kept");
        assert!(!all.windows(3).any(|w| w == [0xEF, 0xBF, 0xBD]), "no U+FFFD in the byte tokens");
        // and a model trains on it
        let model = moe_model::Transformer::<f32>::new(c.model.clone(), 0).unwrap();
        let mut grads = vec![0.0f32; model.params.len()];
        let b = moe_data::Batcher::new(ds.train.len(), 2, 16, 0).unwrap().next_batch(&ds.train);
        let rep = model.forward_backward(&b.inputs, &b.targets, 2, 16, &mut grads, 1.0).unwrap();
        assert!(rep.loss.is_finite() && grads.iter().any(|&g| g != 0.0));
        // BPE (auto = lossy UTF-8): one byte replaced, counted, the file named
        let r = moe_data::read_corpus(&corpus, cfg(&[&src, "data.tokenizer=t.json"]).data.text_encoding()).unwrap();
        assert_eq!(r.replaced.len(), 1);
        assert_eq!((r.replaced[0].bytes, r.replaced[0].first_offset), (1, at));
        assert!(r.replaced[0].to_string().contains("webster.txt"), "{}", r.replaced[0]);
        assert!(r.docs[0].text.contains("Webster\u{FFFD}s"));
        // strict: an error naming the file and the offset
        let e = build_dataset(&cfg(&[&src, "data.encoding=\"utf-8\""]), &Tokenizer::byte()).unwrap_err().to_string();
        assert!(e.contains("webster.txt") && e.contains(&format!("offset {at}")), "{e}");
        // cp1252 decodes it to ’ (three UTF-8 bytes for the byte tokenizer)
        let ds = build_dataset(&cfg(&[&src, "data.encoding=\"cp1252\""]), &Tokenizer::byte()).unwrap();
        let all: Vec<u32> = ds.train.iter().chain(&ds.val).copied().collect();
        assert!(all.windows(3).any(|w| w == [0xE2, 0x80, 0x99]) && !all.contains(&0x92));
    }
}
