//! The numbers of a sweep (`summary.json`): the types `sweep` fills in and `sweep_report` writes
//! up, kept apart from both so that neither module depends on the other's internals.

use crate::curve::{Method, PowerLaw};
use crate::plan::Scale;
use crate::plot::Figure;
use crate::results::ModelResult;
use crate::stats::MeanStd;
use serde::{Deserialize, Serialize};

/// One rung of the dense compute ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseRung {
    /// multiple of the budget
    pub multiplier: f64,
    /// the runs
    pub result: ModelResult,
}

/// One rung of the sparsity ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeRung {
    /// experts per MoE layer
    pub n_expert: usize,
    /// the runs
    pub result: ModelResult,
    /// dense compute to reach this loss ÷ this compute, per seed (`None`: unreachable)
    pub multiplier_per_seed: Vec<Option<f64>>,
    /// over the seeds where defined
    pub multiplier: Option<MeanStd>,
    /// how (the least reliable method over seeds)
    pub method: Method,
}

/// Everything a sweep measured; written as `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// built-in model size
    pub scale: Scale,
    /// corpus
    pub data: String,
    /// training FLOPs of each MoE rung
    pub budget_flops: f64,
    /// where the budget came from
    pub budget_from: String,
    /// experts per token
    pub top_k: usize,
    /// runs per rung
    pub seeds: usize,
    /// `"power law L(C) = a + b·(C/C_ref)^-c"` or `"log-linear interpolation"`
    pub fit_method: String,
    /// the fit through the seed-mean dense ladder (for the plot and the report)
    pub fit: Option<PowerLaw>,
    /// the fit of each seed's dense ladder
    pub fits_per_seed: Vec<Option<PowerLaw>>,
    /// dense compute ladder
    pub dense: Vec<DenseRung>,
    /// sparsity ladder
    pub moe: Vec<MoeRung>,
    /// the headline sentences
    pub verdict: Vec<String>,
    /// limits of the sweep
    pub caveats: Vec<String>,
    /// charts, relative to the output directory
    pub figures: Vec<Figure>,
    /// seconds: whole call, training in this call
    pub total_s: f64,
    /// training seconds in this call
    pub training_s: f64,
}
