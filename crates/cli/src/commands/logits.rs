//! `moe logits`: full logits of a token sequence under a Hugging Face checkpoint or a GGUF file.

use crate::args::LogitsArgs;
use anyhow::Context;
use moe_model::checkpoint::{serialize_tensors, write_atomic};
use moe_model::hf::HfOptions;
use std::collections::HashMap;

pub fn run(a: LogitsArgs) -> anyhow::Result<()> {
    let n = a.tokens.len();
    if n == 0 {
        anyhow::bail!("--tokens is empty");
    }
    let m = moe_model::hf::load(&a.model, &HfOptions::default()).with_context(|| format!("loading {}", a.model.display()))?;
    if n > m.cfg.n_ctx {
        anyhow::bail!("{n} tokens exceed the model's context of {}", m.cfg.n_ctx);
    }
    let out = m.model.forward(&a.tokens, 1, n)?;
    let v = m.cfg.n_vocab;
    let bytes: Vec<u8> = out.logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let meta: HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        ("architecture".to_string(), m.arch.clone()),
        ("tokens".to_string(), a.tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",")),
    ]
    .into();
    let st = serialize_tensors(&[("logits".to_string(), vec![n, v], bytes)], meta, &a.out)?;
    write_atomic(&a.out, &st)?;
    let last = &out.logits[(n - 1) * v..];
    let top = moe_infer::argmax(last);
    println!(
        "wrote {} (logits [{n}, {v}] f32, {}); next token after the last: {top} (logit {:.4})",
        a.out.display(),
        m.arch,
        last[top as usize]
    );
    Ok(())
}
