//! `moe export`: a run's latest checkpoint as a Hugging Face directory.

use crate::args::ExportArgs;
use anyhow::Context;
use moe_data::Tokenizer;
use moe_model::checkpoint::write_atomic;
use moe_model::hf::export::export_hf_dir;
use moe_train::load_run;

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let run = load_run(&a.run)?;
    let eos = run.tokenizer.eos_token();
    let r = export_hf_dir(&run.model, &a.out, eos).with_context(|| format!("exporting {} to {}", a.run.display(), a.out.display()))?;
    let tok_path = a.out.join("tokenizer.json");
    let tok_note = match &run.tokenizer {
        Tokenizer::Bpe(_) => {
            run.tokenizer.save(&tok_path)?;
            "the run's BPE tokenizer.json"
        }
        Tokenizer::Byte => {
            write_atomic(&tok_path, byte_tokenizer_json().as_bytes())?;
            "a tokenizer.json equivalent to the byte tokenizer (id = byte value)"
        }
    };
    println!(
        "exported step {} of {} as {} to {} ({} tensors; {tok_note})",
        run.step,
        a.run.display(),
        r.architecture,
        a.out.display(),
        r.n_tensors
    );
    Ok(())
}

/// GPT-2's byte → printable character map (what the ByteLevel pre-tokenizer and decoder use).
fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("latin-1")
            } else {
                n += 1;
                char::from_u32(255 + n).expect("valid code point")
            }
        })
        .collect()
}

/// A Hugging Face tokenizer.json that encodes and decodes exactly like the byte tokenizer: a
/// ByteLevel pre-tokenizer (no regex split, no prefix space) and decoder around a BPE model whose
/// vocabulary is the 256 byte symbols at their byte values, with no merges.
pub fn byte_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        bytes_to_unicode().into_iter().enumerate().map(|(i, c)| (c.to_string(), serde_json::json!(i))).collect();
    let t = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false },
        "post_processor": null,
        "decoder": { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false },
        "model": { "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                   "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": [] }
    });
    serde_json::to_string_pretty(&t).expect("JSON values serialise") + "\n"
}
