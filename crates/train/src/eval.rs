//! Validation: mean cross-entropy of a model over sequential windows of a token stream, and
//! evaluation of a finished (or running) run directory.

use crate::error::{Error, Result};
use crate::load::load_run;
use crate::parallel::share;
use crate::run_data::{build_dataset, encode_documents};
use moe_data::{eval_batches, load_documents};
use moe_model::Transformer;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Losses of a model over evaluation windows (token-weighted means).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    /// mean token cross-entropy (nats)
    pub ce: f64,
    /// mean total loss including the MoE aux and z losses
    pub loss: f64,
    /// tokens evaluated
    pub n_tokens: u64,
}

impl EvalStats {
    /// Perplexity, `exp(ce)`.
    pub fn ppl(&self) -> f64 {
        self.ce.exp()
    }
}

/// Evaluate `model` on sequential, non-overlapping windows of `seq_len` tokens of `tokens`,
/// `batch_size` windows at a time, at most `max_batches` batches. Errors when `tokens` cannot
/// fill one window. With `model.dist`, every process of the job calls it with the same tokens
/// and takes its share of each batch; all get the whole evaluation's result.
pub fn evaluate(
    model: &Transformer<f32>,
    tokens: &[u32],
    batch_size: usize,
    seq_len: usize,
    max_batches: Option<usize>,
) -> Result<EvalStats> {
    let batches = eval_batches(tokens, batch_size, seq_len, max_batches);
    if batches.is_empty() {
        return Err(Error::Model(moe_model::Error::BadInput(format!(
            "{} evaluation tokens cannot fill one window of {seq_len} tokens (+1 target)",
            tokens.len()
        ))));
    }
    let (mut ce, mut loss, mut n) = (0.0f64, 0.0f64, 0u64);
    match &model.dist {
        None => {
            for b in &batches {
                let rep = model.loss(&b.inputs, &b.targets, b.batch_size, b.seq_len)?;
                let k = b.inputs.len() as u64;
                ce += rep.ce * k as f64;
                loss += rep.loss * k as f64;
                n += k;
            }
        }
        Some(g) => {
            // each process its share of every batch (collective); a share's aux and z are its
            // part of the batch's, which is weighted by the whole batch's tokens
            let mut sums = [0.0f64; 3];
            for b in &batches {
                let mine = share(b, g.world.rank(), g.world.size());
                let rep = model.loss(&mine.inputs, &mine.targets, mine.batch_size, mine.seq_len)?;
                let k = mine.inputs.len() as f64;
                sums[0] += rep.ce * k;
                sums[1] += rep.ce * k + (rep.aux + rep.z) * b.inputs.len() as f64;
                sums[2] += k;
            }
            g.world.all_reduce_sum_f64(&mut sums);
            [ce, loss] = [sums[0], sums[1]];
            n = sums[2] as u64;
        }
    }
    Ok(EvalStats { ce: ce / n as f64, loss: loss / n as f64, n_tokens: n })
}

/// Result of [`evaluate_run`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// mean token cross-entropy (nats) — the language-modelling loss
    pub val_loss: f64,
    /// `exp(val_loss)`
    pub val_ppl: f64,
    /// tokens evaluated
    pub n_tokens: u64,
    /// optimizer steps of the evaluated checkpoint
    pub step: usize,
}

/// Evaluate the latest checkpoint of the run directory `run` on the run's validation split, or on
/// all documents under `data` when given (read with the run's `data.encoding`), with the run's `batch_size` and `seq_len`, at most
/// `max_batches` batches (all when `None`).
pub fn evaluate_run(run: &Path, data: Option<&Path>, max_batches: Option<usize>) -> Result<EvalReport> {
    let r = load_run(run)?;
    let tokens = match data {
        Some(p) => encode_documents(&load_documents(p, r.cfg.data.encoding.resolve(r.tokenizer.kind() == "byte"))?, &r.tokenizer)?,
        None => build_dataset(&r.cfg, &r.tokenizer)?.val,
    };
    let (bs, sl) = (r.cfg.train.batch_size, r.cfg.train.seq_len);
    if tokens.len() < sl + 1 {
        let what = data.map_or_else(|| "the run's validation split".to_string(), |p| p.display().to_string());
        return Err(Error::RunDir {
            path: run.to_path_buf(),
            message: format!("{what} has {} tokens, fewer than one window of seq_len {sl} + 1", tokens.len()),
        });
    }
    let s = evaluate(&r.model, &tokens, bs, sl, max_batches)?;
    Ok(EvalReport { val_loss: s.ce, val_ppl: s.ppl(), n_tokens: s.n_tokens, step: r.step })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_model::ModelConfig;

    #[test]
    fn eval_weights_batches_by_tokens_and_errors_on_short_input() {
        let cfg: ModelConfig =
            toml::from_str("n_vocab = 16\nn_ctx = 8\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 8\n").unwrap();
        let m = Transformer::new(cfg, 1).unwrap();
        let tokens: Vec<u32> = (0..41).map(|i| (i * 7 % 16) as u32).collect();
        // 5 windows of 8 tokens: batches of 2, 2, 1
        let s = evaluate(&m, &tokens, 2, 8, None).unwrap();
        assert_eq!(s.n_tokens, 40);
        let one = evaluate(&m, &tokens, 5, 8, None).unwrap();
        assert!((s.ce - one.ce).abs() < 1e-6, "{} vs {}", s.ce, one.ce);
        assert!((s.ce - (16f64).ln()).abs() < 0.1, "{}", s.ce);
        assert_eq!(s.ce, s.loss);
        assert_eq!(evaluate(&m, &tokens, 2, 8, Some(1)).unwrap().n_tokens, 16);
        assert!(evaluate(&m, &tokens[..8], 2, 8, None).is_err());
    }

    #[test]
    fn eval_run_missing_dir_or_checkpoint_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no_such_run");
        let e = evaluate_run(&missing, None, None).unwrap_err().to_string();
        assert!(e.contains("no_such_run") && e.contains("does not exist"), "{e}");
        let e = evaluate_run(tmp.path(), None, None).unwrap_err().to_string();
        assert!(e.contains("config.resolved.toml"), "{e}");
    }
}
