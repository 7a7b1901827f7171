//! What to train: the built-in model sizes, the default dense / MoE / wide-dense trio, and how a
//! FLOP budget becomes a number of steps and an evaluation schedule.
//!
//! The trio (no configs given):
//! - `dense`: SwiGLU FFN of width `d_ff`;
//! - `moe-8x2`: the same model with every FFN an MoE of 8 experts, top-2, `d_expert = d_ff / 2`,
//!   so a token touches exactly the dense FFN's parameters (plus the router's `8 · d_model` per
//!   layer): **active** parameters match;
//! - `dense-wide`: the dense model with `d_ff` solved (rounded to a multiple of 8) so its
//!   **total** parameters match the MoE's.
//!
//! Every model then trains for `steps = round(budget / (flops_train_per_token · tokens_per_step))`
//! (at least 1), so all see (nearly) the same training FLOPs; with the same `train.seed`,
//! `batch_size` and `seq_len` they see the same batches (the first `steps` of one stream).

use crate::error::{Error, Result};
use moe_model::accounting::{account, ModelAccount};
use moe_model::{ModelConfig, MoeConfig};
use moe_train::config::{DataConfig, TrainConfig};
use moe_train::ExperimentConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Size of the built-in models and of the default budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// d_model 128, 4 layers, seq 128, batch 16: the default comparison takes ≈ 9 minutes on the
    /// 2-core reference machine.
    #[default]
    Default,
    /// d_model 32, 2 layers, seq 32, batch 4, a few steps: the whole pipeline in seconds (tests).
    Tiny,
}

impl std::str::FromStr for Scale {
    type Err = Error;
    /// `"default"` or `"tiny"` (for a `--scale` flag).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(Scale::Default),
            "tiny" => Ok(Scale::Tiny),
            _ => Err(crate::error::option("--scale", format!("`{s}` is not a scale (default, tiny)"))),
        }
    }
}

impl Scale {
    /// Default training budget in FLOPs when neither `budget_flops` nor `budget_minutes` is given.
    ///
    /// Default: [`DEFAULT_BUDGET_FLOPS`] (≈ 85 s of training per model on the reference
    /// machine). Tiny: ≈ 8 steps of the tiny dense model.
    pub fn default_budget_flops(self) -> f64 {
        match self {
            Scale::Default => DEFAULT_BUDGET_FLOPS,
            Scale::Tiny => {
                let cfg = base_experiment(Scale::Tiny);
                8.0 * per_step_flops(&cfg)
            }
        }
    }

    /// Evaluations per run (the points of the loss-vs-compute curves).
    pub fn n_evals(self) -> usize {
        match self {
            Scale::Default => 12,
            Scale::Tiny => 3,
        }
    }

    /// (prompt_len, n_decode) of the decode benchmark.
    pub fn decode_shape(self) -> (usize, usize) {
        match self {
            Scale::Default => (32, 32),
            Scale::Tiny => (4, 4),
        }
    }

    /// Interleaved rounds of the decode benchmark (median and min–max over them).
    pub fn decode_rounds(self) -> usize {
        match self {
            Scale::Default => 5,
            Scale::Tiny => 2,
        }
    }

    /// Validation batches of the expert–domain analysis.
    pub fn domain_batches(self) -> usize {
        match self {
            Scale::Default => 8,
            Scale::Tiny => 2,
        }
    }
}

/// Default budget of the built-in comparison (FLOPs per run), tuned so that the default
/// comparison's training (three models, one seed) takes about 6.5 minutes on the 2-core reference
/// machine (measured 2026-12-07: 392 s of a 548 s comparison; see the crate docs).
pub const DEFAULT_BUDGET_FLOPS: f64 = 6e12;

/// Batch sizes of the decode benchmark.
pub const DECODE_BATCHES: [usize; 3] = [1, 8, 64];

/// The built-in dense experiment of a scale (byte tokenizer, synthetic corpus).
pub fn base_experiment(scale: Scale) -> ExperimentConfig {
    let (model, train, data) = match scale {
        Scale::Default => (
            ModelConfig {
                n_vocab: 256,
                n_ctx: 128,
                n_layer: 4,
                d_model: 128,
                n_head: 4,
                n_head_kv: 2,
                d_head: None,
                qk_norm: Default::default(),
                attn_bias: false,
                rope_theta: 10000.0,
                norm_eps: 1e-5,
                tie_embeddings: false,
                d_ff: 512,
                activation: moe_model::Activation::Swiglu,
                moe: None,
                attn_ext: None,
                rope_scaling: None,
            },
            TrainConfig {
                steps: 200,
                batch_size: 16,
                seq_len: 128,
                lr: 2e-3,
                min_lr_ratio: 0.1,
                warmup_steps: 20,
                eval_batches: 8,
                final_eval_batches: 64,
                ..TrainConfig::default()
            },
            DataConfig {
                source: "synthetic".into(),
                synthetic_bytes: 3_000_000,
                tokenizer: "byte".into(),
                val_fraction: 0.02,
                seed: 0,
                ..DataConfig::default()
            },
        ),
        Scale::Tiny => (
            ModelConfig {
                n_vocab: 256,
                n_ctx: 32,
                n_layer: 2,
                d_model: 32,
                n_head: 4,
                n_head_kv: 2,
                d_head: None,
                qk_norm: Default::default(),
                attn_bias: false,
                rope_theta: 10000.0,
                norm_eps: 1e-5,
                tie_embeddings: false,
                d_ff: 64,
                activation: moe_model::Activation::Swiglu,
                moe: None,
                attn_ext: None,
                rope_scaling: None,
            },
            TrainConfig {
                steps: 8,
                batch_size: 4,
                seq_len: 32,
                lr: 3e-3,
                min_lr_ratio: 0.1,
                warmup_steps: 2,
                eval_batches: 2,
                ..TrainConfig::default()
            },
            DataConfig {
                source: "synthetic".into(),
                synthetic_bytes: 60_000,
                tokenizer: "byte".into(),
                val_fraction: 0.1,
                seed: 0,
                ..DataConfig::default()
            },
        ),
    };
    ExperimentConfig { model, train, data }
}

/// Training FLOPs of one optimizer step of `cfg` (per-token FLOPs at `train.seq_len`).
pub fn per_step_flops(cfg: &ExperimentConfig) -> f64 {
    account(&cfg.model, cfg.train.seq_len).flops_train * tokens_per_step(&cfg.train) as f64
}

/// Tokens of one optimizer step.
pub fn tokens_per_step(t: &TrainConfig) -> usize {
    t.batch_size * t.grad_accum * t.seq_len
}

/// `round(budget / per_step_flops)`, at least 1.
pub fn steps_for_budget(cfg: &ExperimentConfig, budget_flops: f64) -> usize {
    ((budget_flops / per_step_flops(cfg)).round() as usize).max(1)
}

/// The MoE twin of a dense config: every FFN an MoE of `n_expert` experts, top-`k`, expert width
/// `d_ff / k` (so the active FFN width is `d_ff`), softmax gating (renormalised over the top-k when
/// k > 1; a top-1 token is weighted by its probability, as in Switch), dropless, load-balancing loss 0.01 and z-loss 0.001.
pub fn moe_twin(dense: &ModelConfig, n_expert: usize, k: usize) -> ModelConfig {
    let mut m = dense.clone();
    m.moe = Some(MoeConfig {
        n_expert,
        n_expert_active: k,
        d_expert: (dense.d_ff / k.max(1)).max(1),
        n_expert_shared: 0,
        d_expert_shared: None,
        shared_gate: false,
        gating: moe_model::Gating::Softmax,
        // top-1 keeps the softmax probability as its weight (Switch): renormalising a single
        // weight makes it exactly 1, and the router would get no gradient from the loss
        renormalize: k > 1,
        route_scale: 1.0,
        capacity_factor: 0.0,
        aux_loss_coef: 0.01,
        z_loss_coef: 0.001,
        bias_update_rate: 0.0,
        every: 1,
        first_dense: 0,
        n_expert_per_layer: Vec::new(),
        ext: None,
    });
    m
}

/// The dense config widened (only `d_ff`, a multiple of 8) so that its total parameters are as
/// close as possible to `target_total`. Parameters are affine in `d_ff`, so this is exact up to
/// the rounding.
pub fn widen_to_total(dense: &ModelConfig, target_total: u64) -> ModelConfig {
    let mut base = dense.clone();
    base.moe = None;
    let at = |d_ff: usize| {
        let mut c = base.clone();
        c.d_ff = d_ff;
        account(&c, 1).params_total as f64
    };
    let (p8, p16) = (at(8), at(16));
    let per = (p16 - p8) / 8.0;
    let fixed = p8 - 8.0 * per;
    let d = ((target_total as f64 - fixed) / per / 8.0).round().max(1.0) as usize * 8;
    base.d_ff = d;
    base
}

/// The role of a model in a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// the dense baseline (same active parameters as the MoE)
    Dense,
    /// a Mixture-of-Experts model
    Moe,
    /// the dense baseline widened to the MoE's total parameters
    DenseWide,
}

/// One model to train: its name (run directory `runs/<name>-s<seed>`), role and experiment.
#[derive(Clone, Debug)]
pub struct ModelPlan {
    /// unique short name, e.g. `dense`, `moe-8x2`, `mixtral`
    pub name: String,
    /// what it is in the comparison
    pub role: Role,
    /// the experiment (before the budget and seed are applied)
    pub cfg: ExperimentConfig,
    /// the experiment file, `None` for built-in models
    pub source: Option<PathBuf>,
    /// parameter and FLOP accounting at `train.seq_len`
    pub account: ModelAccount,
}

impl ModelPlan {
    /// A plan entry with its accounting.
    pub fn new(name: &str, role: Role, cfg: ExperimentConfig, source: Option<PathBuf>) -> Self {
        let account = account(&cfg.model, cfg.train.seq_len);
        ModelPlan { name: name.to_string(), role, cfg, source, account }
    }
}

/// The default trio of a scale, from a dense experiment: dense, `moe-8x2`, `dense-wide`.
pub fn default_trio(dense: &ExperimentConfig) -> Vec<ModelPlan> {
    let moe = ExperimentConfig { model: moe_twin(&dense.model, 8, 2), ..dense.clone() };
    let moe_plan = ModelPlan::new("moe-8x2", Role::Moe, moe, None);
    let wide = wide_plan(dense, &moe_plan);
    vec![ModelPlan::new("dense", Role::Dense, dense.clone(), None), moe_plan, wide]
}

/// The wide dense model matching `moe`'s total parameters.
pub fn wide_plan(dense: &ExperimentConfig, moe: &ModelPlan) -> ModelPlan {
    let wide = ExperimentConfig { model: widen_to_total(&dense.model, moe.account.params_total), ..dense.clone() };
    ModelPlan::new("dense-wide", Role::DenseWide, wide, None)
}

/// Load an experiment TOML for a comparison; `want_moe` checks that it has (or lacks) `[model.moe]`.
pub fn load_config(path: &Path, want_moe: bool) -> Result<ExperimentConfig> {
    let (cfg, _) = moe_train::config::load_experiment(path, &[])?;
    if cfg.model.moe.is_some() != want_moe {
        let reason = if want_moe {
            "this is a dense model; --moe needs a [model.moe] table"
        } else {
            "this is an MoE model; --dense needs a config without [model.moe]"
        };
        return Err(Error::Config { path: path.to_path_buf(), field: "model.moe".into(), reason: reason.into() });
    }
    Ok(cfg)
}

/// A short, unique, file-name-safe name from a config path (`configs/mixtral.toml` → `mixtral`).
pub fn name_from_path(path: &Path, taken: &[String]) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let clean: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    let clean = if clean.is_empty() { "model".to_string() } else { clean };
    let mut name = clean.clone();
    let mut i = 2;
    while taken.contains(&name) {
        name = format!("{clean}-{i}");
        i += 1;
    }
    name
}

/// The experiment actually trained for one model and seed: `budget_flops` of training, data and
/// seed of the comparison, `n_evals` evaluations spread over the run and a few checkpoints (so an
/// interrupted comparison resumes).
pub fn budgeted(cfg: &ExperimentConfig, budget_flops: f64, seed: u64, data: &DataConfig, n_evals: usize) -> ExperimentConfig {
    let mut c = cfg.clone();
    c.data = data.clone();
    c.train.seed = seed;
    let steps = steps_for_budget(&c, budget_flops);
    c.train.steps = steps;
    c.train.warmup_steps = c.train.warmup_steps.min(steps / 5);
    c.train.eval_every = steps.div_ceil(n_evals.max(1)).max(1);
    c.train.checkpoint_every = steps.div_ceil(4).max(1);
    c.train.log_every = 1;
    c
}

/// How well the trio's parameter counts match (for the report and tests).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matching {
    /// MoE active ÷ dense active (1 + router share)
    pub active_ratio: f64,
    /// router parameters of the MoE (the only active parameters the dense model lacks)
    pub router_params: u64,
    /// wide-dense total ÷ MoE total
    pub total_ratio: f64,
}

/// Active/total matching of a dense, MoE and wide-dense accounting.
pub fn matching(dense: &ModelAccount, moe: &ModelAccount, wide: &ModelAccount, moe_cfg: &ModelConfig) -> Matching {
    let router_params: u64 = moe_cfg
        .ffn_kinds()
        .iter()
        .map(|k| match k {
            moe_model::FfnKind::Moe { n_expert } => (*n_expert * moe_cfg.d_model) as u64,
            moe_model::FfnKind::Dense => 0,
        })
        .sum();
    Matching {
        active_ratio: moe.params_active as f64 / dense.params_active as f64,
        router_params,
        total_ratio: wide.params_total as f64 / moe.params_total as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_trio_matches_active_and_total_parameters() {
        for scale in [Scale::Default, Scale::Tiny] {
            let dense = base_experiment(scale);
            dense.validate(Path::new("builtin")).unwrap();
            let trio = default_trio(&dense);
            let names: Vec<&str> = trio.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["dense", "moe-8x2", "dense-wide"]);
            let (d, m, w) = (&trio[0].account, &trio[1].account, &trio[2].account);
            let mm = matching(d, m, w, &trio[1].cfg.model);
            // active: exactly the dense FFN plus the router
            assert_eq!(m.params_active, d.params_active + mm.router_params, "{scale:?}");
            assert!(mm.active_ratio < 1.02);
            // total: within the rounding of d_ff to a multiple of 8 (one step of 8 columns)
            let step = 3 * 8 * dense.model.d_model as u64 * dense.model.n_layer as u64;
            assert!(w.params_total.abs_diff(m.params_total) <= step / 2, "{scale:?}: {} vs {}", w.params_total, m.params_total);
            assert!(m.params_total > 3 * d.params_total / 2);
            for p in &trio {
                p.cfg.validate(Path::new("builtin")).unwrap();
            }
        }
    }

    #[test]
    fn plan_steps_follow_the_budget() {
        let cfg = base_experiment(Scale::Default);
        let per = per_step_flops(&cfg);
        assert_eq!(steps_for_budget(&cfg, 100.0 * per), 100);
        assert_eq!(steps_for_budget(&cfg, 0.1 * per), 1);
        let data = cfg.data.clone();
        let b = budgeted(&cfg, 120.0 * per, 7, &data, 12);
        assert_eq!((b.train.steps, b.train.seed, b.train.eval_every), (120, 7, 10));
        b.validate(Path::new("builtin")).unwrap();
    }

    #[test]
    fn plan_names_from_paths_are_unique() {
        let taken = vec!["mixtral".to_string()];
        assert_eq!(name_from_path(Path::new("configs/mixtral.toml"), &taken), "mixtral-2");
        assert_eq!(name_from_path(Path::new("a b.toml"), &[]), "a-b");
        assert_eq!("tiny".parse::<Scale>().unwrap(), Scale::Tiny);
        assert!("huge".parse::<Scale>().unwrap_err().to_string().starts_with("--scale"));
    }
}
