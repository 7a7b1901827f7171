//! Decode speed of trained models on the fast engine ([`moe_infer::Engine`], the path `moe bench
//! infer` and `moe generate` use): KV-cached greedy decoding of random prompts at batch sizes 1, 8
//! and 64, per weight format, measured **interleaved** — round r times model A, then B, then C,
//! for every format, before round r + 1 starts — so that a slow phase of a shared machine hits
//! every model alike. Each timed pass is [`moe_infer::bench_infer`] with its own untimed warm-up
//! (prefill + 2 steps); the report gives the median over rounds with the min–max, and calls a
//! rank order between two models "within noise" when their min–max ranges overlap.

use crate::error::{Error, Result};
use moe_infer::{bench_infer, Engine, EngineBench, Machine, Runner};
use moe_kernels::quant::WeightDtype;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Median and range of some measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// median
    pub median: f64,
    /// smallest value
    pub min: f64,
    /// largest value
    pub max: f64,
    /// number of values
    pub n: usize,
}

impl Spread {
    /// Of `values` (NaN for none or when any is NaN).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 || values.iter().any(|v| v.is_nan()) {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN, n };
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
        Spread { median, min: v[0], max: v[n - 1], n }
    }

    /// `Some(Greater)` when every value of `self` exceeds every value of `other`, `Some(Less)`
    /// for the reverse, `None` when the ranges overlap ("within noise") or a value is NaN.
    pub fn rank(&self, other: &Spread) -> Option<Ordering> {
        if [self.min, self.max, other.min, other.max].iter().any(|v| v.is_nan()) {
            None
        } else if self.min > other.max {
            Some(Ordering::Greater)
        } else if self.max < other.min {
            Some(Ordering::Less)
        } else {
            None
        }
    }

    /// `"1234 (1100–1300)"` with `prec` decimals.
    pub fn fmt(&self, prec: usize) -> String {
        format!("{:.prec$} ({:.prec$}–{:.prec$})", self.median, self.min, self.max)
    }
}

/// One (weight format, batch size) of one model, over all rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeRow {
    /// `"engine"` (the fast engine)
    pub engine: String,
    /// weight format of the engine (`f32`, `bf16`, `i8`)
    pub dtype: String,
    /// sequences decoded together
    pub batch: usize,
    /// tokens per prompt
    pub prompt_len: usize,
    /// timed decode steps per round
    pub n_decode: usize,
    /// per-token latency (ms per decode step) over rounds
    pub latency_ms: Spread,
    /// decode tokens/s (all sequences) over rounds
    pub tokens_per_s: Spread,
    /// weight bytes read per decode step (engine counters)
    pub bytes_per_step: Option<f64>,
    /// FLOPs per decode step (engine counters)
    pub flops_per_step: Option<f64>,
    /// median over rounds of achieved steps/s ÷ roofline steps/s
    pub roofline_fraction: Option<f64>,
    /// mean distinct experts per MoE layer and step (`None`: dense)
    pub distinct_experts: Option<f64>,
    /// `D(B)` under uniform routing (`None`: dense)
    pub expected_distinct: Option<f64>,
    /// every round's raw engine row
    pub rounds: Vec<EngineBench>,
}

impl DecodeRow {
    fn from_rounds(dtype: WeightDtype, rounds: Vec<EngineBench>) -> Self {
        let f = |g: fn(&EngineBench) -> f64| Spread::of(&rounds.iter().map(g).collect::<Vec<_>>());
        let r0 = &rounds[0];
        let roof: Vec<f64> = rounds.iter().filter_map(|r| r.roofline_fraction).collect();
        DecodeRow {
            engine: "engine".into(),
            dtype: dtype.name().into(),
            batch: r0.batch,
            prompt_len: r0.prompt_len,
            n_decode: r0.n_decode,
            latency_ms: f(|r| r.latency_ms),
            tokens_per_s: f(|r| r.decode_tokens_per_s),
            bytes_per_step: r0.bytes_per_step,
            flops_per_step: r0.flops_per_step,
            roofline_fraction: (!roof.is_empty()).then(|| Spread::of(&roof).median),
            distinct_experts: r0.distinct_experts,
            expected_distinct: r0.expected_distinct,
            rounds,
        }
    }
}

/// How the decode rows were measured (the report's "engine, dtype, threads, machine" line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeSetup {
    /// `"engine"`
    pub engine: String,
    /// weight formats measured, f32 first
    pub dtypes: Vec<String>,
    /// the machine's threads, read bandwidth and f32 GEMM peak, measured before the rounds
    pub machine: Machine,
    /// interleaved rounds
    pub rounds: usize,
    /// tokens per prompt
    pub prompt_len: usize,
    /// timed decode steps per round
    pub n_decode: usize,
}

/// Measure every model of `models` at `batches` on the engine, in each of `dtypes`, interleaved
/// over `rounds` rounds. Returns the setup and, per model, its rows (dtype-major).
pub fn decode_interleaved(
    models: &[(&str, &Transformer<f32>)],
    dtypes: &[WeightDtype],
    batches: &[usize],
    prompt_len: usize,
    n_decode: usize,
    rounds: usize,
    seed: u64,
    machine: Machine,
) -> Result<(DecodeSetup, Vec<Vec<DecodeRow>>)> {
    let rounds = rounds.max(1);
    let mut engines: Vec<Vec<Engine<'_>>> = Vec::with_capacity(models.len());
    let mut shape = (prompt_len, n_decode);
    for (name, m) in models {
        let n_ctx = m.cfg.n_ctx;
        let pl = prompt_len.clamp(1, n_ctx.saturating_sub(1).max(1));
        shape = (pl, n_decode.min(n_ctx - pl).max(1));
        let mut per = Vec::with_capacity(dtypes.len());
        for &dt in dtypes {
            per.push(Engine::new(m, dt).map_err(|e| Error::Invalid(format!("decode benchmark of {name} ({}): {e}", dt.name())))?);
        }
        engines.push(per);
    }
    let (pl, nd) = shape;
    // raw[model][dtype][round] = rows per batch
    let mut raw: Vec<Vec<Vec<Vec<EngineBench>>>> = engines.iter().map(|e| vec![Vec::with_capacity(rounds); e.len()]).collect();
    for _ in 0..rounds {
        for (mi, per) in engines.iter_mut().enumerate() {
            for (di, eng) in per.iter_mut().enumerate() {
                let rows = bench_infer(&mut Runner::Engine(eng), &machine, batches, pl, nd, 1, seed)?;
                raw[mi][di].push(rows);
            }
        }
    }
    let out = raw
        .into_iter()
        .map(|per| {
            let mut rows = Vec::new();
            for (di, rs) in per.into_iter().enumerate() {
                for bi in 0..batches.len() {
                    rows.push(DecodeRow::from_rounds(dtypes[di], rs.iter().map(|r| r[bi].clone()).collect()));
                }
            }
            rows
        })
        .collect();
    let setup = DecodeSetup {
        engine: "engine".into(),
        dtypes: dtypes.iter().map(|d| d.name().to_string()).collect(),
        machine,
        rounds,
        prompt_len: pl,
        n_decode: nd,
    };
    Ok((setup, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_range_and_rank() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        let a = Spread::of(&[5.0, 6.0]);
        let b = Spread::of(&[1.0, 2.0]);
        assert_eq!(a.rank(&b), Some(Ordering::Greater));
        assert_eq!(b.rank(&a), Some(Ordering::Less));
        assert_eq!(a.rank(&Spread::of(&[4.0, 5.5])), None, "overlap is within noise");
        let nan = Spread::of(&[1.0, f64::NAN]);
        assert!(nan.median.is_nan());
        assert_eq!(nan.rank(&b), None);
    }
}
