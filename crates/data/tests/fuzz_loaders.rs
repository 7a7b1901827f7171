//! Mutation fuzzing of the data loaders on stable Rust (`moe_testutil::mutate`): chat templates
//! from `tests/chat_templates/cases.json` and text/JSONL corpora, thousands of mutants with a fixed
//! seed; each must render/load or give a clean `Err`, never panic.

use moe_data::{read_corpus, ChatMessage, ChatTemplate, TextEncoding};
use moe_testutil::mutate::{mutants, survive};
use std::path::Path;

#[test]
fn fuzz_chat_templates() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/chat_templates/cases.json")).unwrap(),
    )
    .unwrap();
    let msgs = [ChatMessage::new("user", "hello"), ChatMessage::new("assistant", "hi"), ChatMessage::new("user", "and?")];
    let mut n = 0;
    for (i, c) in cases.as_array().unwrap().iter().enumerate() {
        let t = c["template"].as_str().unwrap().as_bytes();
        let inputs = mutants(t, t.len(), 0xC4A7 + i as u64, 300);
        n += inputs.len();
        survive(&format!("chat template {}", c["name"]), &inputs, |b| {
            let src = String::from_utf8_lossy(b);
            let tpl = ChatTemplate::new(&src, Path::new("tokenizer_config.json"), "<s>", "</s>")?;
            tpl.render(&msgs, true).map(|_| ())
        });
    }
    assert!(n >= 1000, "{n}");
}

#[test]
fn fuzz_text_and_jsonl_corpora() {
    let tmp = tempfile::tempdir().unwrap();
    let text = b"The quick brown fox\njumps over the lazy dog.\n\nA second paragraph, with \xc3\xa9 and digits 12345.\n".repeat(4);
    let jsonl = b"{\"text\": \"first document\", \"domain\": \"a\"}\n{\"text\": \"second \\u00e9 document\"}\n{\"text\": \"third\", \"domain\": null}\n".to_vec();
    for (name, base) in [("corpus.txt", text), ("corpus.jsonl", jsonl)] {
        let path = tmp.path().join(name);
        let inputs = mutants(&base, base.len(), 0xD0C5 ^ name.len() as u64, 1000);
        survive(name, &inputs, |b| {
            std::fs::write(&path, b).unwrap();
            // every encoding: the strict one errs, the others never fail on bytes
            for enc in [TextEncoding::Utf8Lossy, TextEncoding::Latin1, TextEncoding::Cp1252, TextEncoding::Bytes] {
                read_corpus(&path, enc).map(|_| ())?;
            }
            read_corpus(&path, TextEncoding::Utf8).map(|_| ())
        });
    }
}
