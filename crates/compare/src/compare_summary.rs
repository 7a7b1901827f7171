//! The numbers of a comparison (`summary.json`): the types `compare` fills in and
//! `compare_report` writes up, kept apart from both so that neither depends on the other.

use crate::plan::{Matching, Scale};
use crate::plot::Figure;
use crate::results::ModelResult;
use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};

/// Wall-clock seconds of a comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// the whole call
    pub total_s: f64,
    /// training in this call (0 when every run was reused)
    pub training_s: f64,
    /// throughput probe (budget_minutes only)
    pub probe_s: f64,
    /// decode benchmarks and domain analysis
    pub analysis_s: f64,
    /// the deployment-scale measurement
    #[serde(default)]
    pub deploy_s: f64,
}

/// Everything a comparison measured; written as `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareSummary {
    /// built-in model size
    pub scale: Scale,
    /// the corpus (`"synthetic"` or its path)
    pub data: String,
    /// training FLOPs per run
    pub budget_flops: f64,
    /// where the budget came from (`default`, `--budget-flops`, `--budget-minutes …`)
    pub budget_from: String,
    /// runs per model
    pub seeds: usize,
    /// every model
    pub models: Vec<ModelResult>,
    /// active/total parameter matching of dense, first MoE and wide dense
    pub matching: Option<Matching>,
    /// one per MoE model, against the dense baseline
    pub verdicts: Vec<Verdict>,
    /// the verdict lines, as printed
    pub verdict: Vec<String>,
    /// limits of the comparison
    pub caveats: Vec<String>,
    /// how the decode rows were measured (engine, formats, threads, bandwidth, GEMM peak, rounds)
    #[serde(default)]
    pub decode_setup: Option<crate::decode::DecodeSetup>,
    /// per batch size and format: each model against the dense model, or "within noise"
    #[serde(default)]
    pub decode_ranking: Vec<String>,
    /// the architectures scaled up to deployment size: the seeds' latency claims and the roofline
    #[serde(default)]
    pub deploy: Option<crate::deploy::DeployResult>,
    /// why there is no deployment-scale measurement (`--no-deploy`, or the error)
    #[serde(default)]
    pub deploy_note: Option<String>,
    /// charts, paths relative to the output directory
    pub figures: Vec<Figure>,
    /// where the time went
    pub timing: Timing,
}
