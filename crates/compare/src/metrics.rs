//! Reading a run's `metrics.jsonl` into typed training and evaluation points.
//!
//! Records (written by `moe-train`):
//! `{"type":"train","step","tokens","flops","loss","ce","tokens_per_s","elapsed_s","moe":[{"layer","load","entropy","drop_rate","max_over_mean"}],...}`
//! and `{"type":"eval","step","tokens","flops","val_loss","val_ppl",...}`. Unknown fields and
//! record types are ignored; a torn last line (a crash mid-write) is skipped; any other line that
//! is not JSON is an error naming the file and line.

use crate::error::{io, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Balance of one MoE layer at one training step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerStep {
    /// layer index in the model
    pub layer: usize,
    /// fraction of (token, slot) assignments per expert
    pub load: Vec<f64>,
    /// mean router entropy (nats)
    pub entropy: f64,
    /// fraction of assignments dropped by the capacity limit
    pub drop_rate: f64,
    /// largest expert load ÷ mean load
    pub max_over_mean: f64,
}

/// One `"type":"train"` record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainPoint {
    /// 1-based step
    pub step: usize,
    /// training tokens so far
    pub tokens: u64,
    /// training FLOPs so far
    pub flops: f64,
    /// total loss of the step
    pub loss: f64,
    /// cross-entropy of the step
    pub ce: f64,
    /// throughput of the session so far
    pub tokens_per_s: f64,
    /// wall-clock seconds over all sessions
    pub elapsed_s: f64,
    /// per MoE layer
    pub moe: Vec<LayerStep>,
}

/// One `"type":"eval"` record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalPoint {
    /// step of the evaluation
    pub step: usize,
    /// training tokens so far
    pub tokens: u64,
    /// training FLOPs so far
    pub flops: f64,
    /// validation cross-entropy (nats)
    pub val_loss: f64,
    /// `exp(val_loss)`
    pub val_ppl: f64,
    /// the larger evaluation after the last step (`train.final_eval_batches`), if any
    pub final_val_loss: Option<f64>,
}

/// All records of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// training steps in order
    pub train: Vec<TrainPoint>,
    /// evaluations in order
    pub eval: Vec<EvalPoint>,
}

impl RunMetrics {
    /// The evaluation at `step`, if any.
    pub fn eval_at(&self, step: usize) -> Option<&EvalPoint> {
        self.eval.iter().rev().find(|e| e.step == step)
    }
    /// The last evaluation.
    pub fn last_eval(&self) -> Option<&EvalPoint> {
        self.eval.last()
    }
    /// Validation loss against cumulative training FLOPs.
    pub fn loss_curve(&self) -> Vec<(f64, f64)> {
        self.eval.iter().map(|e| (e.flops, e.val_loss)).collect()
    }
    /// Training throughput of the last session (tokens/s of step time), 0 when unknown.
    pub fn tokens_per_s(&self) -> f64 {
        self.train.last().map_or(0.0, |t| t.tokens_per_s)
    }
}

/// Parse `metrics.jsonl` text; `path` names the file in errors.
pub fn parse_metrics(text: &str, path: &Path) -> Result<RunMetrics> {
    let lines: Vec<&str> = text.lines().collect();
    let mut m = RunMetrics::default();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => continue, // torn last line
            Err(e) => return Err(Error::Json { path: path.to_path_buf(), line: i + 1, message: e.to_string() }),
        };
        let bad = |e: serde_json::Error| Error::Json { path: path.to_path_buf(), line: i + 1, message: e.to_string() };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("train") => m.train.push(serde_json::from_value(v).map_err(bad)?),
            Some("eval") => m.eval.push(serde_json::from_value(v).map_err(bad)?),
            _ => {}
        }
    }
    Ok(m)
}

/// Read and parse a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<RunMetrics> {
    let text = std::fs::read_to_string(path).map_err(io(path, "cannot read metrics"))?;
    parse_metrics(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"type":"train","step":1,"loss":5.0,"ce":4.9,"tokens":64,"flops":1e9,"tokens_per_s":100.0,"elapsed_s":0.5,"moe":[{"layer":0,"load":[0.5,0.25,0.25,0.0],"entropy":1.2,"drop_rate":0.0,"max_over_mean":2.0}],"lr":1e-3}
{"type":"eval","step":1,"tokens":64,"flops":1e9,"val_loss":4.5,"val_ppl":90.0}
{"type":"other"}
{"type":"train","step":2,"loss":4.0,"ce":3.9,"tokens":128,"flops":2e9,"tokens_per_s":120.0,"elapsed_s":1.0,"moe":[]}
{"type":"eval","st"#;

    #[test]
    fn metrics_parse_typed_records_and_skip_torn_line() {
        let m = parse_metrics(TEXT, Path::new("m.jsonl")).unwrap();
        assert_eq!(m.train.len(), 2);
        assert_eq!(m.eval.len(), 1);
        assert_eq!(m.train[0].moe[0].load, vec![0.5, 0.25, 0.25, 0.0]);
        assert_eq!(m.eval_at(1).unwrap().val_loss, 4.5);
        assert_eq!(m.loss_curve(), vec![(1e9, 4.5)]);
        assert_eq!(m.tokens_per_s(), 120.0);
    }

    #[test]
    fn metrics_bad_interior_line_names_file_and_line() {
        let e = parse_metrics("{\"type\":\"train\"}\nnot json\n{}\n", Path::new("runs/x/metrics.jsonl")).unwrap_err().to_string();
        assert!(e.starts_with("runs/x/metrics.jsonl:2: "), "{e}");
    }
}
