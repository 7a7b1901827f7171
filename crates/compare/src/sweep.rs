//! `moe sweep`: a sparsity ladder at fixed active compute against a dense compute ladder.
//!
//! - **MoE ladder**: the dense model's twin with `n_expert ∈ {1, 2, 4, 8, 16, 32}` (those ≥ k),
//!   top-`k`, `d_expert = d_ff / k`: every rung has the dense model's active FFN width, so the
//!   training FLOPs per token are constant up to the router (`E · d_model` per layer). Each trains
//!   for the budget `B`.
//! - **Dense ladder**: the dense model trained for `m · B` FLOPs, `m ∈ {0.5, 1, 2, 4}` (more or
//!   fewer steps; each run has its own full warmup + cosine schedule, so every point is a properly
//!   annealed run).
//! - **Fit**: per seed, a power law `L(C) = a + b · (C / C_ref)^(−c)` through the dense ladder's
//!   final losses ([`crate::curve::PowerLaw`]; with fewer than 3 rungs, log-linear interpolation
//!   instead). A MoE's **compute multiplier** is the dense compute the fit needs to reach the MoE's
//!   loss divided by the MoE's compute; mean ± std over seeds (per-seed fit and MoE loss).

use crate::compare::{check_budget, relative_figure, shared_data};
use crate::curve::{interpolate, Method, PowerLaw};
use crate::error::{option, Result};
use crate::plan::{base_experiment, budgeted, load_config, moe_twin, ModelPlan, Role, Scale};
use crate::report::{write_json, write_reports};
use crate::results::{ModelResult, SeedResult};
use crate::run::{ensure_run, run_dir};
use crate::stats::MeanStd;
use crate::sweep_report::{build_doc, make_figures};
pub use crate::sweep_summary::{DenseRung, MoeRung, SweepSummary};
use moe_train::ExperimentConfig;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `moe sweep` (the CLI flags map one to one).
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// corpus; `None` = the built-in synthetic corpus
    pub data: Option<PathBuf>,
    /// how the corpus files' bytes become text; `None` = the dense experiment's `data.encoding`
    pub data_encoding: Option<moe_data::TextEncoding>,
    /// training FLOPs of each MoE rung (the dense rungs get multiples of it)
    pub budget_flops: Option<f64>,
    /// wall-clock minutes for all training of the sweep, converted with a throughput probe
    pub budget_minutes: Option<f64>,
    /// dense experiment TOML the ladders derive from; `None` = the built-in dense model
    pub dense: Option<PathBuf>,
    /// experts per token (1 or 2 are the usual choices)
    pub top_k: usize,
    /// the sparsity ladder; rungs below `top_k` are skipped
    pub n_experts: Vec<usize>,
    /// the dense compute ladder, as multiples of the budget
    pub dense_multipliers: Vec<f64>,
    /// runs per rung
    pub seeds: usize,
    /// output directory
    pub out: PathBuf,
    /// progress on stderr
    pub progress: bool,
    /// size of the built-in models and default budget
    pub scale: Scale,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            data: None,
            data_encoding: None,
            budget_flops: None,
            budget_minutes: None,
            dense: None,
            top_k: 2,
            n_experts: vec![1, 2, 4, 8, 16, 32],
            dense_multipliers: vec![0.5, 1.0, 2.0, 4.0],
            seeds: 1,
            out: PathBuf::from("sweep"),
            progress: false,
            scale: Scale::Default,
        }
    }
}

/// Training FLOPs of each MoE rung by default: at the default scale 2.5× `moe compare`'s budget
/// (1.5e13), because the MoE rungs overtake the dense model only after ≈ 6e12 FLOPs at this size
/// (on the built-in corpus and on KJV prose alike); the tiny scale keeps its budget.
pub fn default_sweep_budget(scale: Scale) -> f64 {
    match scale {
        Scale::Default => 2.5 * scale.default_budget_flops(),
        Scale::Tiny => scale.default_budget_flops(),
    }
}

/// What [`sweep`] returns.
#[derive(Clone, Debug)]
pub struct SweepReport {
    /// the numbers
    pub summary: SweepSummary,
    /// `report.md`
    pub report_md: PathBuf,
    /// `report.html`
    pub report_html: PathBuf,
    /// `summary.json`
    pub summary_json: PathBuf,
}

fn mult_name(m: f64) -> String {
    let s = format!("{m}");
    format!("dense-x{}", s.replace('.', "p"))
}

/// Dense compute needed to reach `target` on a ladder `(C, L)` (sorted by C), and how.
pub fn ladder_compute(ladder: &[(f64, f64)], fit: Option<&PowerLaw>, target: f64) -> (Option<f64>, Method) {
    let (lo, hi) = ladder.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let inside = target >= lo && target <= hi;
    match fit {
        Some(f) => match f.flops_for(target) {
            Some(c) if c.is_finite() => (Some(c), if inside { Method::PowerLaw } else { Method::Extrapolated }),
            _ => (None, Method::Unreachable),
        },
        None => match interpolate(ladder, target) {
            Some(c) if inside => (Some(c), Method::Interpolated),
            _ => (None, Method::Unreachable),
        },
    }
}

fn rank(m: Method) -> u8 {
    match m {
        Method::Interpolated => 0,
        Method::PowerLaw => 1,
        Method::Extrapolated => 2,
        Method::Unreachable => 3,
    }
}

/// Run the sweep described by `opts` (see the module docs).
pub fn sweep(opts: &SweepOptions) -> Result<SweepReport> {
    let t_start = Instant::now();
    check_budget(opts.budget_flops, opts.budget_minutes, opts.seeds)?;
    if opts.top_k == 0 {
        return Err(option("--top-k", "must be ≥ 1"));
    }
    let rungs: Vec<usize> = opts.n_experts.iter().copied().filter(|&n| n >= opts.top_k).collect();
    if rungs.is_empty() {
        return Err(option("--n-experts", format!("no rung has at least top-k = {} experts", opts.top_k)));
    }
    if opts.dense_multipliers.is_empty() || opts.dense_multipliers.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
        return Err(option("--dense-multipliers", "need at least one finite multiple > 0 of the budget"));
    }
    let out = &opts.out;
    std::fs::create_dir_all(out.join("plots")).map_err(crate::error::io(out, "cannot create output directory"))?;
    let dense_cfg = match &opts.dense {
        Some(p) => load_config(p, false)?,
        None => base_experiment(opts.scale),
    };
    let data = shared_data(&dense_cfg, opts.data.as_deref(), opts.data_encoding)?;
    let base_seed = dense_cfg.train.seed;
    let moe_plans: Vec<(usize, ModelPlan)> = rungs
        .iter()
        .map(|&n| {
            let cfg = ExperimentConfig { model: moe_twin(&dense_cfg.model, n, opts.top_k), ..dense_cfg.clone() };
            (n, ModelPlan::new(&format!("moe-{n}x{}", opts.top_k), Role::Moe, cfg, None))
        })
        .collect();
    let mut mults = opts.dense_multipliers.clone();
    mults.sort_by(f64::total_cmp);
    mults.dedup();
    let dense_plans: Vec<(f64, ModelPlan)> =
        mults.iter().map(|&m| (m, ModelPlan::new(&mult_name(m), Role::Dense, dense_cfg.clone(), opts.dense.clone()))).collect();

    // budget
    let (budget, budget_from) = match (opts.budget_flops, opts.budget_minutes) {
        (Some(f), _) => (f, "--budget-flops".to_string()),
        (None, Some(min)) => {
            let dense_rate = crate::probe::probe(&dense_cfg, 2)?.flops_per_s;
            let mut inv = mults.iter().sum::<f64>() / dense_rate;
            for (_, p) in &moe_plans {
                inv += 1.0 / crate::probe::probe(&p.cfg, 2)?.flops_per_s.max(1.0);
            }
            (min * 60.0 / (inv * opts.seeds as f64), format!("--budget-minutes {min} (probe)"))
        }
        (None, None) => (default_sweep_budget(opts.scale), format!("default for scale {:?}", opts.scale)),
    };
    if opts.progress {
        eprintln!(
            "moe sweep: {} MoE rungs (top-{}) + {} dense rungs × {} seeds, {:.2e} FLOPs per MoE rung ({budget_from})",
            moe_plans.len(),
            opts.top_k,
            dense_plans.len(),
            opts.seeds,
            budget
        );
    }

    let mut training_s = 0.0;
    let mut seed0_metrics = Vec::new();
    let mut train_plan = |p: &ModelPlan, b: f64| -> Result<ModelResult> {
        let mut seeds = Vec::with_capacity(opts.seeds);
        let mut steps = 0;
        for s in 0..opts.seeds {
            let cfg = budgeted(&p.cfg, b, base_seed + s as u64, &data, opts.scale.n_evals());
            steps = cfg.train.steps;
            let o = ensure_run(&cfg, &run_dir(out, &p.name, s), opts.progress)?;
            training_s += o.train_seconds;
            seeds.push(SeedResult::from_outcome(s, cfg.train.seed, &o, out));
            if s == 0 {
                seed0_metrics.push((p.name.clone(), o.metrics));
            }
        }
        let mut r = ModelResult::new(p, steps, seeds);
        if let Some((_, m)) = seed0_metrics.last() {
            r.balance = crate::balance::layer_balance(m);
        }
        Ok(r)
    };
    let mut dense = Vec::with_capacity(dense_plans.len());
    for (m, p) in &dense_plans {
        dense.push(DenseRung { multiplier: *m, result: train_plan(p, m * budget)? });
    }
    let mut moe_results = Vec::with_capacity(moe_plans.len());
    for (n, p) in &moe_plans {
        moe_results.push((*n, train_plan(p, budget)?));
    }

    // fits and multipliers
    let ladder_of = |s: Option<usize>| -> Vec<(f64, f64)> {
        let mut l: Vec<(f64, f64)> = dense
            .iter()
            .map(|r| match s {
                Some(i) => (r.result.seeds[i].flops, r.result.seeds[i].val_loss),
                None => (MeanStd::of(&r.result.seeds.iter().map(|x| x.flops).collect::<Vec<_>>()).mean, r.result.val_loss.mean),
            })
            .collect();
        l.sort_by(|a, b| a.0.total_cmp(&b.0));
        l
    };
    let use_fit = dense.len() >= 3;
    let fits_per_seed: Vec<Option<PowerLaw>> =
        (0..opts.seeds).map(|s| if use_fit { PowerLaw::fit(&ladder_of(Some(s))) } else { None }).collect();
    let fit = if use_fit { PowerLaw::fit(&ladder_of(None)) } else { None };
    let moe: Vec<MoeRung> = moe_results
        .into_iter()
        .map(|(n, result)| {
            let mut method = Method::Interpolated;
            let per_seed: Vec<Option<f64>> = (0..opts.seeds)
                .map(|s| {
                    let (c, m) = ladder_compute(&ladder_of(Some(s)), fits_per_seed[s].as_ref(), result.seeds[s].val_loss);
                    if rank(m) > rank(method) {
                        method = m;
                    }
                    c.map(|c| c / result.seeds[s].flops.max(1.0))
                })
                .collect();
            let defined: Vec<f64> = per_seed.iter().flatten().copied().collect();
            let multiplier = (!defined.is_empty()).then(|| MeanStd::of(&defined));
            MoeRung { n_expert: n, result, multiplier_per_seed: per_seed, multiplier, method }
        })
        .collect();
    let fit_method = if use_fit {
        "power law L(C) = a + b·(C/C_ref)^-c, least squares over the dense ladder's final losses".to_string()
    } else {
        "log-linear interpolation between the dense ladder's final losses (fewer than 3 rungs: no power-law fit)".to_string()
    };
    let verdict = crate::sweep_report::verdict_lines(&moe, opts.top_k, budget);
    let caveats = vec![
        "Active compute is constant across the MoE ladder up to the router (E · d_model multiply-adds per token per layer); tokens/s is not — more experts mean smaller per-expert matrix products.".to_string(),
        "The dense ladder varies training length at fixed width; a multiplier compares against this dense model trained longer, not against a larger dense model.".to_string(),
        "Multipliers outside the dense ladder's loss range are extrapolated with the fit and marked so; with few seeds the error bars (std over seeds) are themselves uncertain.".to_string(),
        "`train.seed` seeds initialisation, corpus sample, split and batch order together; seed i of every rung sees the same batches.".to_string(),
    ];
    let mut summary = SweepSummary {
        scale: opts.scale,
        data: data.source.clone(),
        budget_flops: budget,
        budget_from,
        top_k: opts.top_k,
        seeds: opts.seeds,
        fit_method,
        fit,
        fits_per_seed,
        dense,
        moe,
        verdict,
        caveats,
        figures: Vec::new(),
        total_s: 0.0,
        training_s,
    };
    let figs = make_figures(&out.join("plots"), &summary)?;
    summary.figures = figs.iter().map(|f| relative_figure(f, out)).collect();
    summary.total_s = t_start.elapsed().as_secs_f64();
    let doc = build_doc(&summary, &figs);
    let (report_md, report_html) = write_reports(&doc, out)?;
    let summary_json = out.join("summary.json");
    write_json(&summary, &summary_json)?;
    if opts.progress {
        for l in &summary.verdict {
            eprintln!("{l}");
        }
        eprintln!("report: {}", report_md.display());
    }
    Ok(SweepReport { summary, report_md, report_html, summary_json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_ladder_compute_labels_methods() {
        let ladder = [(1e9, 3.0), (2e9, 2.6), (4e9, 2.4), (8e9, 2.3)];
        let fit = PowerLaw::fit(&ladder).unwrap();
        let (c, m) = ladder_compute(&ladder, Some(&fit), 2.5);
        assert_eq!(m, Method::PowerLaw);
        assert!(c.unwrap() > 2e9 && c.unwrap() < 4e9);
        assert_eq!(ladder_compute(&ladder, Some(&fit), 2.25).1, Method::Extrapolated);
        let (c, m) = ladder_compute(&ladder[..2], None, 2.8);
        assert_eq!(m, Method::Interpolated);
        assert!(c.unwrap() > 1e9 && c.unwrap() < 2e9);
        assert_eq!(ladder_compute(&ladder[..2], None, 2.0).1, Method::Unreachable);
        assert_eq!(mult_name(0.5), "dense-x0p5");
        assert_eq!(mult_name(4.0), "dense-x4");
    }
}
