//! `moe compare`: train a dense model and MoE models (and a dense model widened to the MoE's
//! total parameters) on the same token stream for the same training FLOPs, then measure and
//! report everything.

use crate::compare_report::{build_doc, make_figures};
pub use crate::compare_summary::{CompareSummary, Timing};
use crate::decode::{decode_interleaved, DecodeRow};
use crate::domains::expert_domains;
use crate::error::{option, Result};
use crate::metrics::RunMetrics;
use crate::plan::{
    self, base_experiment, budgeted, default_trio, load_config, name_from_path, wide_plan, ModelPlan, Role, Scale, DECODE_BATCHES,
};
use crate::plot::Figure;
use crate::report::{write_json, write_reports};
use crate::results::{ModelResult, SeedResult};
use crate::run::{ensure_run, load_final_model, run_dir};
use crate::verdict::{verdict, Verdict};
use moe_train::config::DataConfig;
use moe_train::ExperimentConfig;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `moe compare` (the CLI flags map one to one).
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// corpus (text file, directory or `.jsonl`); `None` = the built-in synthetic corpus
    pub data: Option<PathBuf>,
    /// how the corpus files' bytes become text; `None` = the dense experiment's `data.encoding`
    pub data_encoding: Option<moe_data::TextEncoding>,
    /// training FLOPs per model (per run); exclusive with `budget_minutes`
    pub budget_flops: Option<f64>,
    /// wall-clock minutes for *all* training of the command (every model × seed), converted to a
    /// per-model FLOP budget with a short throughput probe; exclusive with `budget_flops`
    pub budget_minutes: Option<f64>,
    /// dense experiment TOML; `None` = the built-in dense model of `scale`
    pub dense: Option<PathBuf>,
    /// MoE experiment TOMLs; empty = the dense model's 8-expert top-2 twin
    pub moe: Vec<PathBuf>,
    /// runs per model (init seed `train.seed + i`; batches paired across models per seed)
    pub seeds: usize,
    /// output directory (`report.md`, `report.html`, `summary.json`, `plots/`, `runs/`)
    pub out: PathBuf,
    /// progress bars and status lines on stderr
    pub progress: bool,
    /// size of the built-in models and default budget (`Tiny` for tests)
    pub scale: Scale,
    /// leave out the dense model widened to the MoE's total parameters (saves its training time)
    pub no_wide: bool,
    /// a weight format to measure decode in besides f32 (`--dtype bf16` / `int8`); the
    /// deployment-scale models are measured in it instead of f32
    pub dtype: Option<moe_kernels::quant::WeightDtype>,
    /// leave out the deployment-scale measurement ([`crate::deploy`])
    pub no_deploy: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            data: None,
            data_encoding: None,
            budget_flops: None,
            budget_minutes: None,
            dense: None,
            moe: Vec::new(),
            seeds: 1,
            out: PathBuf::from("compare"),
            progress: false,
            scale: Scale::Default,
            no_wide: false,
            dtype: None,
            no_deploy: false,
        }
    }
}

/// What [`compare`] returns.
#[derive(Clone, Debug)]
pub struct CompareReport {
    /// the numbers
    pub summary: CompareSummary,
    /// `report.md`
    pub report_md: PathBuf,
    /// `report.html`
    pub report_html: PathBuf,
    /// `summary.json`
    pub summary_json: PathBuf,
}

/// Check option values and combinations.
pub(crate) fn check_budget(budget_flops: Option<f64>, budget_minutes: Option<f64>, seeds: usize) -> Result<()> {
    if seeds == 0 {
        return Err(option("--seeds", "must be ≥ 1"));
    }
    if budget_flops.is_some() && budget_minutes.is_some() {
        return Err(option("--budget-flops", "give either --budget-flops or --budget-minutes, not both"));
    }
    if let Some(f) = budget_flops {
        if !(f.is_finite() && f > 0.0) {
            return Err(option("--budget-flops", format!("{f} must be a finite number > 0")));
        }
    }
    if let Some(m) = budget_minutes {
        if !(m.is_finite() && m > 0.0) {
            return Err(option("--budget-minutes", format!("{m} must be a finite number > 0")));
        }
    }
    Ok(())
}

/// The shared `[data]` of all runs: the dense experiment's, with `data` as the source and
/// `encoding` as `data.encoding` if given.
pub(crate) fn shared_data(dense: &ExperimentConfig, data: Option<&Path>, encoding: Option<moe_data::TextEncoding>) -> Result<DataConfig> {
    let mut d = dense.data.clone();
    if let Some(p) = data {
        d.source = p.to_string_lossy().to_string();
    }
    if let Some(e) = encoding {
        if e == moe_data::TextEncoding::Bytes && !d.is_byte_tokenizer() {
            return Err(option("--data-encoding", format!("\"bytes\" needs the byte tokenizer; data.tokenizer is {}", d.tokenizer)));
        }
        d.encoding = e;
    }
    Ok(d)
}

/// Per-run FLOP budget and a note on where it came from; `probe_s` gets the probe time.
pub(crate) fn resolve_budget(
    budget_flops: Option<f64>,
    budget_minutes: Option<f64>,
    scale: Scale,
    cfgs: &[&ExperimentConfig],
    repeats: usize,
    probe_s: &mut f64,
) -> Result<(f64, String)> {
    if let Some(f) = budget_flops {
        return Ok((f, "--budget-flops".into()));
    }
    let Some(min) = budget_minutes else { return Ok((scale.default_budget_flops(), format!("default for scale {scale:?}"))) };
    let t0 = Instant::now();
    let mut rates = Vec::with_capacity(cfgs.len());
    for c in cfgs {
        rates.push(crate::probe::probe(c, 2)?.flops_per_s);
    }
    *probe_s = t0.elapsed().as_secs_f64();
    let b = crate::probe::budget_for_minutes(&rates, repeats, min);
    let rates_s: Vec<String> = rates.iter().map(|r| format!("{:.1}", r / 1e9)).collect();
    Ok((b, format!("--budget-minutes {min} (probe: {} GFLOP/s)", rates_s.join(", "))))
}

/// The models of a comparison.
fn build_plans(dense: &ExperimentConfig, opts: &CompareOptions) -> Result<Vec<ModelPlan>> {
    let mut plans = all_plans(dense, opts)?;
    if opts.no_wide {
        plans.retain(|p| p.role != Role::DenseWide);
    }
    Ok(plans)
}

fn all_plans(dense: &ExperimentConfig, opts: &CompareOptions) -> Result<Vec<ModelPlan>> {
    if opts.moe.is_empty() {
        let mut trio = default_trio(dense);
        if let Some(p) = &opts.dense {
            trio[0].source = Some(p.clone());
        }
        return Ok(trio);
    }
    let mut plans = vec![ModelPlan::new("dense", Role::Dense, dense.clone(), opts.dense.clone())];
    for p in &opts.moe {
        let taken: Vec<String> = plans.iter().map(|p| p.name.clone()).chain(["dense-wide".to_string()]).collect();
        let cfg = load_config(p, true)?;
        plans.push(ModelPlan::new(&name_from_path(p, &taken), Role::Moe, cfg, Some(p.clone())));
    }
    let wide = wide_plan(dense, &plans[1]);
    plans.push(wide);
    Ok(plans)
}

/// The experiment of a plan for seed index `s`.
fn seed_cfg(p: &ModelPlan, budget: f64, base_seed: u64, s: usize, data: &DataConfig, scale: Scale) -> ExperimentConfig {
    budgeted(&p.cfg, budget, base_seed + s as u64, data, scale.n_evals())
}

/// Run the comparison described by `opts` (see the crate docs).
pub fn compare(opts: &CompareOptions) -> Result<CompareReport> {
    let t_start = Instant::now();
    check_budget(opts.budget_flops, opts.budget_minutes, opts.seeds)?;
    let out = &opts.out;
    std::fs::create_dir_all(out.join("plots")).map_err(crate::error::io(out, "cannot create output directory"))?;
    let dense_cfg = match &opts.dense {
        Some(p) => load_config(p, false)?,
        None => base_experiment(opts.scale),
    };
    let data = shared_data(&dense_cfg, opts.data.as_deref(), opts.data_encoding)?;
    let plans = build_plans(&dense_cfg, opts)?;
    let mut timing = Timing::default();
    let cfgs: Vec<&ExperimentConfig> = plans.iter().map(|p| &p.cfg).collect();
    let (budget, budget_from) = resolve_budget(opts.budget_flops, opts.budget_minutes, opts.scale, &cfgs, opts.seeds, &mut timing.probe_s)?;
    let base_seed = dense_cfg.train.seed;
    if opts.progress {
        eprintln!("moe compare: {} models × {} seeds, {:.2e} training FLOPs each ({budget_from})", plans.len(), opts.seeds, budget);
    }

    // train (or reuse) every run
    let mut seed0_metrics: Vec<RunMetrics> = Vec::new();
    let mut results = Vec::with_capacity(plans.len());
    for p in &plans {
        let mut seeds = Vec::with_capacity(opts.seeds);
        for s in 0..opts.seeds {
            let cfg = seed_cfg(p, budget, base_seed, s, &data, opts.scale);
            let o = ensure_run(&cfg, &run_dir(out, &p.name, s), opts.progress)?;
            timing.training_s += o.train_seconds;
            seeds.push(SeedResult::from_outcome(s, cfg.train.seed, &o, out));
            if s == 0 {
                seed0_metrics.push(o.metrics);
            }
        }
        let steps = seed_cfg(p, budget, base_seed, 0, &data, opts.scale).train.steps;
        results.push(ModelResult::new(p, steps, seeds));
    }

    // analyses on the seed-0 models
    let t_an = Instant::now();
    let dense0 = seed_cfg(&plans[0], budget, base_seed, 0, &data, opts.scale);
    let ds = {
        let tok = moe_train::run_data::load_tokenizer(&dense0)?;
        moe_train::run_data::build_dataset(&dense0, &tok)?
    };
    let (prompt_len, n_decode) = opts.scale.decode_shape();
    let byte_tokens = matches!(moe_train::run_data::load_tokenizer(&dense0)?, moe_data::tokenizer::Tokenizer::Byte);
    let mut models0 = Vec::with_capacity(plans.len());
    for (p, (r, m)) in plans.iter().zip(results.iter_mut().zip(&seed0_metrics)) {
        if opts.progress {
            eprintln!("measuring {}: validation accuracy{}", p.name, if p.role == Role::Moe { ", expert balance and domains" } else { "" });
        }
        for s in 0..opts.seeds {
            let cfg = seed_cfg(p, budget, base_seed, s, &data, opts.scale);
            let model = load_final_model(&cfg, &run_dir(out, &p.name, s))?;
            let t = &cfg.train;
            let max_b = if t.final_eval_batches > 0 { t.final_eval_batches } else { t.eval_batches };
            let doms = ds.val_domains.as_deref().map(|d| (d, ds.domain_names.as_slice()));
            r.seeds[s].accuracy =
                Some(crate::accuracy::accuracy(&model, &ds.val, doms, byte_tokens, t.batch_size, t.seq_len, Some(max_b))?);
            if s == 0 {
                r.balance = crate::balance::layer_balance(m);
                if let Some(vd) = ds.val_domains.as_ref().filter(|_| cfg.model.moe.is_some()) {
                    r.domains =
                        expert_domains(&model, &ds.val, vd, &ds.domain_names, t.batch_size, t.seq_len, opts.scale.domain_batches())?;
                }
                models0.push(model);
            }
        }
        r.refresh_accuracy();
    }
    let mut dtypes = vec![moe_kernels::quant::WeightDtype::F32];
    if let Some(d) = opts.dtype.filter(|d| *d != moe_kernels::quant::WeightDtype::F32) {
        dtypes.push(d);
    }
    if opts.progress {
        eprintln!(
            "measuring decode speed on the engine ({}): {} models interleaved, {} rounds",
            dtypes.iter().map(|d| d.name()).collect::<Vec<_>>().join(", "),
            plans.len(),
            opts.scale.decode_rounds()
        );
    }
    let machine = moe_infer::Machine::measure();
    let named: Vec<(&str, &moe_model::Transformer<f32>)> = plans.iter().map(|p| p.name.as_str()).zip(models0.iter()).collect();
    let (decode_setup, rows) =
        decode_interleaved(&named, &dtypes, &DECODE_BATCHES, prompt_len, n_decode, opts.scale.decode_rounds(), base_seed, machine)?;
    for (r, d) in results.iter_mut().zip(rows) {
        r.decode = d;
    }
    let decode_ranking = decode_ranking(&results);
    timing.analysis_s = t_an.elapsed().as_secs_f64();

    // the same architectures at deployment scale (random weights)
    let (deploy, deploy_note) = if opts.no_deploy {
        (None, Some("not measured (--no-deploy)".to_string()))
    } else {
        let dt = opts.dtype.unwrap_or(moe_kernels::quant::WeightDtype::F32);
        match crate::deploy::deploy(&plans, opts.scale, dt, machine, base_seed, opts.progress) {
            Ok(d) => {
                timing.deploy_s = d.seconds;
                (Some(d), None)
            }
            Err(e) => {
                if opts.progress {
                    eprintln!("deployment scale not measured: {e}");
                }
                (None, Some(format!("not measured: {e}")))
            }
        }
    };

    // verdicts
    let dense_r = &results[0];
    let verdicts: Vec<Verdict> = results.iter().filter(|r| r.role == Role::Moe).map(|r| verdict(r, dense_r)).collect();
    let mut lines: Vec<String> = verdicts.iter().map(|v| v.text.clone()).collect();
    if let (Some(w), Some(m)) = (results.iter().find(|r| r.role == Role::DenseWide), results.iter().find(|r| r.role == Role::Moe)) {
        lines.push(format!(
            "{} (dense with the total parameters of {}: {} vs {}) reached val loss {} at the same compute (Δ vs {}: {:+.4}).",
            w.name,
            m.name,
            crate::results::fmt_count(w.params_total),
            crate::results::fmt_count(m.params_total),
            crate::results::fmt_loss(w.val_loss.mean),
            m.name,
            w.val_loss.mean - m.val_loss.mean
        ));
    }
    let matching = match (results.iter().position(|r| r.role == Role::Moe), results.iter().position(|r| r.role == Role::DenseWide)) {
        (Some(mi), Some(wi)) => Some(plan::matching(&plans[0].account, &plans[mi].account, &plans[wi].account, &plans[mi].cfg.model)),
        _ => None,
    };
    let caveats = caveats(&plans, opts);

    let mut summary = CompareSummary {
        scale: opts.scale,
        data: data.source.clone(),
        budget_flops: budget,
        budget_from,
        seeds: opts.seeds,
        models: results,
        matching,
        verdicts,
        verdict: lines,
        caveats,
        decode_setup: Some(decode_setup),
        decode_ranking,
        deploy,
        deploy_note,
        figures: Vec::new(),
        timing,
    };
    let figs = make_figures(&out.join("plots"), &summary, &seed0_metrics)?;
    summary.figures = figs.all().into_iter().map(|f| relative_figure(&f, out)).collect();
    summary.timing.total_s = t_start.elapsed().as_secs_f64();
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
    Ok(CompareReport { summary, report_md, report_html, summary_json })
}

/// A figure with paths relative to `out`.
pub(crate) fn relative_figure(f: &Figure, out: &Path) -> Figure {
    Figure {
        title: f.title.clone(),
        png: f.png.strip_prefix(out).unwrap_or(&f.png).to_path_buf(),
        svg: f.svg.strip_prefix(out).unwrap_or(&f.svg).to_path_buf(),
    }
}

/// For every format and batch size, each model's decode throughput against the first (dense)
/// model's: faster/slower only when their min–max ranges over the rounds do not overlap.
pub fn decode_ranking(results: &[ModelResult]) -> Vec<String> {
    let Some(base) = results.first() else { return Vec::new() };
    let mut lines = Vec::new();
    for b in &base.decode {
        for m in &results[1..] {
            let Some(o) = m.decode.iter().find(|x: &&DecodeRow| x.batch == b.batch && x.dtype == b.dtype) else { continue };
            let ratio = o.tokens_per_s.median / b.tokens_per_s.median;
            let what = match o.tokens_per_s.rank(&b.tokens_per_s) {
                Some(std::cmp::Ordering::Greater) => format!("faster than {} ({ratio:.2}×, ranges do not overlap)", base.name),
                Some(_) => format!("slower than {} ({ratio:.2}×, ranges do not overlap)", base.name),
                None => format!("within noise of {} (median ratio {ratio:.2}×, min–max ranges overlap)", base.name),
            };
            lines.push(format!(
                "{} {} @batch {}: {} tokens/s vs {}: {what}",
                m.name,
                o.dtype,
                o.batch,
                o.tokens_per_s.fmt(0),
                b.tokens_per_s.fmt(0)
            ));
        }
    }
    lines
}

/// What the reader should keep in mind.
fn caveats(plans: &[ModelPlan], opts: &CompareOptions) -> Vec<String> {
    let mut c = vec![
        "FLOPs are accounting FLOPs (2 × active matmul parameters + attention, ×3 for training), not wall time: the tokens/s column shows what routing and dispatch cost on this machine.".to_string(),
        "The compute multiplier reads the dense run's own evaluation curve. Its intermediate points come from a run whose learning rate had not yet decayed, so they overstate the loss a dense run *trained* to that compute would reach; multipliers above 1 are extrapolated beyond the budget with a power-law fit. `moe sweep` trains a separate dense ladder for a cleaner estimate.".to_string(),
        "`train.seed` seeds model initialisation and the batch order: seed i of every model sees the same batches (paired). The corpus and the train/validation split come from `data.seed`, which all seeds share, so every run is evaluated on the same validation tokens.".to_string(),
        format!("Decode timings run on the fast engine, models interleaved (A B C A B C …) over {} rounds, each pass after its own warm-up; the table gives the median and the min–max over rounds, and a rank order whose ranges overlap is reported as within noise. These trained models (a few MB of weights) fit in the CPU cache, so nothing here is memory-bound and per-step overhead dominates: the seeds' batch-size argument (memory-bound decode, experts loaded per step) needs the deployment-scale models of `moe plan` / `moe bench infer`.", opts.scale.decode_rounds()),
    ];
    let shape = |p: &ModelPlan| (p.cfg.train.batch_size, p.cfg.train.seq_len, p.cfg.train.grad_accum);
    if plans.iter().any(|p| shape(p) != shape(&plans[0])) {
        c.push("The configs use different batch_size/seq_len/grad_accum, so the models do not see identical token streams (only the same seed and data).".into());
    }
    if opts.data.is_some() {
        c.push("On a user corpus without domain tags there is no expert–domain analysis.".into());
    }
    if plans.iter().any(|p| p.role == Role::Moe && p.cfg.model.moe.as_ref().is_some_and(|m| m.capacity_factor > 0.0)) {
        c.push("Models with a capacity factor drop tokens in training; decoding is always dropless.".into());
    }
    c
}
