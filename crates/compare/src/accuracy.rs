//! Next-token accuracy on the validation split, beside loss: top-1 accuracy over the same
//! sequential windows the final evaluation uses ([`moe_data::dataset::eval_batches`]), per domain
//! when the corpus has domain tags, and — on the built-in synthetic corpus with byte tokens —
//! exact match of the checkable answers, teacher-forced: an answer counts as right when the
//! model's greedy prediction is right at every one of its bytes.
//!
//! - arithmetic: the bytes after `=` up to and including the newline (`12+34=46\n` → `46\n`);
//! - key–value recall: the bytes after `->` up to and including the newline of a query line
//!   (`?k3->v17\n` → `v17\n`), which the model can only get right by recalling the `k3=v17` line
//!   earlier in the document.
//!
//! An answer that does not end inside its window is not counted. The domain of a position is the
//! domain of its input token.

use crate::error::Result;
use moe_data::dataset::{eval_batches, window_domains};
use moe_infer::argmax;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};

/// Top-1 accuracy of one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainAccuracy {
    /// domain name
    pub domain: String,
    /// positions whose greedy prediction equals the next token
    pub correct: u64,
    /// positions of this domain
    pub tokens: u64,
    /// `correct / tokens` (NaN when no tokens)
    pub top1: f64,
}

/// Exact match of one kind of checkable answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactMatch {
    /// `"arithmetic answers"` or `"key–value recall"`
    pub task: String,
    /// answers right at every byte
    pub correct: u64,
    /// answers counted
    pub total: u64,
    /// `correct / total` (NaN when none)
    pub rate: f64,
}

/// Accuracy of one model on the validation split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// positions whose greedy prediction equals the next token
    pub correct: u64,
    /// positions evaluated
    pub tokens: u64,
    /// `correct / tokens`
    pub top1: f64,
    /// per domain (empty without domain tags)
    pub per_domain: Vec<DomainAccuracy>,
    /// exact-match answers (empty unless byte tokens and the synthetic domains)
    pub exact: Vec<ExactMatch>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Which answer a position starts: 0 = arithmetic (`=` in an arithmetic document), 1 = recall
/// (`->` in a recall document).
fn answer_start(inputs: &[u32], i: usize, domain: Option<&str>) -> Option<usize> {
    match domain {
        Some("arithmetic") if inputs[i] == u32::from(b'=') => Some(0),
        Some("recall") if inputs[i] == u32::from(b'>') && i > 0 && inputs[i - 1] == u32::from(b'-') => Some(1),
        _ => None,
    }
}

/// Accuracy of `model` on `tokens` (the validation split) in windows of `seq_len`, `batch_size`
/// windows at a time, at most `max_batches` batches. `domains`/`names` tag each token (optional);
/// `byte_tokens` enables the exact-match answers (token id = byte).
pub fn accuracy(
    model: &Transformer<f32>,
    tokens: &[u32],
    domains: Option<(&[u8], &[String])>,
    byte_tokens: bool,
    batch_size: usize,
    seq_len: usize,
    max_batches: Option<usize>,
) -> Result<Accuracy> {
    let nv = model.cfg.n_vocab;
    let names: &[String] = domains.map_or(&[], |d| d.1);
    let mut dom_ok = vec![0u64; names.len()];
    let mut dom_n = vec![0u64; names.len()];
    let mut ex_ok = [0u64; 2];
    let mut ex_n = [0u64; 2];
    let (mut ok, mut n) = (0u64, 0u64);
    let n_windows = if tokens.len() > seq_len { (tokens.len() - 1) / seq_len } else { 0 };
    let offsets: Vec<usize> = (0..n_windows).map(|i| i * seq_len).collect();
    for (bi, b) in eval_batches(tokens, batch_size, seq_len, max_batches).iter().enumerate() {
        let out = model.forward(&b.inputs, b.batch_size, seq_len)?;
        let pred: Vec<u32> = out.logits.chunks(nv).map(argmax).collect();
        let tags = domains.map(|(d, _)| window_domains(d, &offsets[bi * batch_size..bi * batch_size + b.batch_size], seq_len));
        for w in 0..b.batch_size {
            let r = w * seq_len..(w + 1) * seq_len;
            let (inp, tgt, prd) = (&b.inputs[r.clone()], &b.targets[r.clone()], &pred[r.clone()]);
            let tg = tags.as_ref().map(|t| &t[r.clone()]);
            let mut open: Option<(usize, bool)> = None; // (task, all right so far)
            for i in 0..seq_len {
                let right = prd[i] == tgt[i];
                ok += right as u64;
                n += 1;
                let dname = tg.and_then(|t| names.get(t[i] as usize)).map(|s| s.as_str());
                if let Some(t) = tg {
                    if let Some(d) = dom_n.get_mut(t[i] as usize) {
                        *d += 1;
                        dom_ok[t[i] as usize] += right as u64;
                    }
                }
                if !byte_tokens {
                    continue;
                }
                if open.is_none() {
                    if let Some(task) = answer_start(inp, i, dname) {
                        open = Some((task, true));
                    }
                }
                if let Some((task, all)) = open.as_mut() {
                    *all &= right;
                    if tgt[i] == u32::from(b'\n') {
                        ex_n[*task] += 1;
                        ex_ok[*task] += *all as u64;
                        open = None;
                    }
                }
            }
        }
    }
    let per_domain = names
        .iter()
        .enumerate()
        .map(|(i, d)| DomainAccuracy { domain: d.clone(), correct: dom_ok[i], tokens: dom_n[i], top1: ratio(dom_ok[i], dom_n[i]) })
        .collect();
    let has = |d: &str| names.iter().any(|n| n == d);
    let mut exact = Vec::new();
    if byte_tokens {
        for (i, (task, dom)) in [("arithmetic answers", "arithmetic"), ("key–value recall", "recall")].into_iter().enumerate() {
            if has(dom) {
                exact.push(ExactMatch { task: task.into(), correct: ex_ok[i], total: ex_n[i], rate: ratio(ex_ok[i], ex_n[i]) });
            }
        }
    }
    Ok(Accuracy { correct: ok, tokens: n, top1: ratio(ok, n), per_domain, exact })
}
