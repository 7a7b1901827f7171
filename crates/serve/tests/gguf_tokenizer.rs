//! The tokenizer of a GGUF file, built from its metadata (`tokenizer.ggml.*`), splits text as
//! llama.cpp's `llama_tokenize` does on the same file (fixtures: `tests/golden_gguf/<case>/
//! tokenize.json`, made by `reference/gguf_goldens.py`), for byte-level BPE (`gpt2`) and
//! SentencePiece (`llama`) vocabularies, and decodes back to the text.

use moe_serve::load::checkpoint_tokenizer;
use moe_serve::ServeModel;
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden_gguf")
}

#[test]
fn gguf_tokenizers_split_text_as_llama_cpp() {
    // every case with a committed f32 file
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden().join("MANIFEST.json")).unwrap()).unwrap();
    let cases: Vec<&String> = manifest["cases"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(n, c)| c["files"].get(format!("{n}-f32.gguf")).is_some())
        .map(|(n, _)| n)
        .collect();
    assert!(cases.len() >= 12, "{cases:?}");
    for case in cases {
        let path = golden().join(case).join(format!("{case}-f32.gguf"));
        let m = moe_model::hf::load(&path, &Default::default()).unwrap();
        let (tok, template) = checkpoint_tokenizer(&path, &m).unwrap();
        assert!(template.is_none(), "{case}: the fixtures carry no chat template");
        assert_eq!(tok.n_vocab(), m.cfg.n_vocab, "{case}");
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(golden().join(case).join("tokenize.json")).unwrap()).unwrap();
        let texts = want["texts"].as_array().unwrap();
        assert!(texts.len() >= 8);
        for (text, ids) in texts.iter().zip(want["ids"].as_array().unwrap()) {
            let text = text.as_str().unwrap();
            let ids: Vec<u32> = ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(text).unwrap(), ids, "{case}: {text:?}");
            assert_eq!(tok.decode(&ids).unwrap(), text, "{case}: decode {text:?}");
        }
        // the ids the model stops at come from the metadata
        assert_eq!(m.bos_token_id, Some(1), "{case}");
        assert_eq!(m.eos_token_ids, vec![2], "{case}");
    }
}

#[test]
fn a_gguf_file_serves_with_its_own_tokenizer() {
    let path = golden().join("mixtral/mixtral-q4_0.gguf");
    let s = ServeModel::from_checkpoint(&path).unwrap();
    assert_eq!(s.eos_token_ids, vec![2]);
    assert_eq!(s.tokenizer.encode("Hello world").unwrap(), vec![42, 71, 78, 78, 81, 296, 272, 78, 70]);
    // kept as the file's blocks until the engine converts them
    assert_eq!(s.model.stored.main_dtype(), Some("q4_0"));
    // not a checkpoint at all
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("x.gguf");
    std::fs::write(&bad, b"not a gguf").unwrap();
    let e = ServeModel::from_checkpoint(&bad).err().unwrap();
    assert!(format!("{e:#}").contains("x.gguf"), "{e:#}");
}
