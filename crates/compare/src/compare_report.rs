//! The charts and the report document of `moe compare`.

use crate::balance::load_matrix;
use crate::compare_summary::CompareSummary;
use crate::error::Result;
use crate::metrics::RunMetrics;
use crate::plot::{heatmap, line_chart, Figure, Heatmap, LineChart, Series};
use crate::report::Doc;
use crate::results::{fmt_count, fmt_flops, fmt_loss, ModelResult};
use std::path::Path;

/// The charts of a comparison.
#[derive(Clone, Debug)]
pub struct CompareFigures {
    /// validation loss vs training FLOPs, every model
    pub loss: Figure,
    /// paired Δ validation loss (MoE − dense) vs training FLOPs, with the seed band
    pub delta: Figure,
    /// decode latency per token vs batch size
    pub latency: Figure,
    /// decode throughput vs batch size
    pub throughput: Figure,
    /// expert load over training: (model, layer, figure)
    pub load: Vec<(String, usize, Figure)>,
    /// domain × expert routing: (model, layer, figure)
    pub domains: Vec<(String, usize, Figure)>,
    /// deployment scale: throughput with roofline, latency, distinct experts
    pub deploy: Vec<Figure>,
}

impl CompareFigures {
    /// Every figure.
    pub fn all(&self) -> Vec<Figure> {
        let mut v = vec![self.loss.clone(), self.delta.clone(), self.latency.clone(), self.throughput.clone()];
        v.extend(self.load.iter().map(|x| x.2.clone()));
        v.extend(self.domains.iter().map(|x| x.2.clone()));
        v.extend(self.deploy.iter().cloned());
        v
    }
}

/// Mean validation curve over seeds (points by index; seeds share the eval schedule) with the
/// standard deviation as error bars.
pub fn mean_curve(r: &ModelResult) -> Series {
    let n = r.seeds.iter().map(|s| s.curve.len()).min().unwrap_or(0);
    let mut points = Vec::with_capacity(n);
    let mut err = Vec::with_capacity(n);
    for i in 0..n {
        let ys: Vec<f64> = r.seeds.iter().map(|s| s.curve[i].1).collect();
        let m = crate::stats::MeanStd::of(&ys);
        points.push((r.seeds[0].curve[i].0, m.mean));
        err.push(m.std);
    }
    Series { name: r.name.clone(), points, err, ..Default::default() }
}

/// Paired Δ curve of `m` against `dense`: per evaluation index the mean over seeds of
/// `m − dense` (seeds paired by index, points at the MoE's FLOPs) with the std as the band.
pub fn delta_curve(m: &ModelResult, dense: &ModelResult) -> Series {
    let ns = m.seeds.len().min(dense.seeds.len());
    let n = (0..ns).map(|i| m.seeds[i].curve.len().min(dense.seeds[i].curve.len())).min().unwrap_or(0);
    let mut points = Vec::with_capacity(n);
    let mut err = Vec::with_capacity(n);
    for j in 0..n {
        let d: Vec<f64> = (0..ns).map(|i| m.seeds[i].curve[j].1 - dense.seeds[i].curve[j].1).collect();
        let st = crate::stats::MeanStd::of(&d);
        points.push((m.seeds[0].curve[j].0, st.mean));
        err.push(st.std);
    }
    Series { name: format!("{} − {}", m.name, dense.name), points, err, ..Default::default() }
}

/// Draw every chart into `dir`; `seed0` holds each model's seed-0 metrics in model order.
pub fn make_figures(dir: &Path, s: &CompareSummary, seed0: &[RunMetrics]) -> Result<CompareFigures> {
    let loss = line_chart(
        dir,
        "val_loss_vs_flops",
        &LineChart {
            title: "Validation loss vs training compute".into(),
            x_desc: "training FLOPs".into(),
            y_desc: "validation loss (nats/token)".into(),
            log_x: true,
            series: s.models.iter().map(mean_curve).collect(),
            ..Default::default()
        },
    )?;
    // the MoE models only: the wide dense model's gap (often 10× larger) would flatten theirs
    let mut dseries: Vec<Series> =
        s.models.iter().skip(1).filter(|m| m.role == crate::plan::Role::Moe).map(|m| delta_curve(m, &s.models[0])).collect();
    if let Some(first) = dseries.first() {
        let xs: Vec<f64> = first.points.iter().map(|p| p.0).collect();
        dseries.push(Series {
            name: "no difference".into(),
            points: xs.iter().map(|&x| (x, 0.0)).collect(),
            thin: true,
            ..Default::default()
        });
    }
    let delta = line_chart(
        dir,
        "delta_loss_vs_flops",
        &LineChart {
            title: "Paired Δ validation loss vs dense (error bars: std over seeds)".into(),
            x_desc: "training FLOPs".into(),
            y_desc: "Δ val loss (nats/token), < 0: better than dense".into(),
            log_x: true,
            series: dseries,
            ..Default::default()
        },
    )?;
    let per_batch = |f: fn(&crate::decode::DecodeRow) -> f64| -> Vec<Series> {
        s.models
            .iter()
            .map(|m| Series {
                name: m.name.clone(),
                points: m.decode.iter().filter(|d| d.dtype == "f32").map(|d| (d.batch as f64, f(d))).collect(),
                ..Default::default()
            })
            .collect()
    };
    let latency = line_chart(
        dir,
        "decode_latency",
        &LineChart {
            title: "Decode latency per token (engine, f32, median of rounds)".into(),
            x_desc: "batch size".into(),
            y_desc: "ms per decode step".into(),
            log_x: true,
            int_x: true,
            series: per_batch(|d| d.latency_ms.median),
        },
    )?;
    let throughput = line_chart(
        dir,
        "decode_throughput",
        &LineChart {
            title: "Decode throughput (engine, f32, median of rounds)".into(),
            x_desc: "batch size".into(),
            y_desc: "tokens / s".into(),
            log_x: true,
            int_x: true,
            series: per_batch(|d| d.tokens_per_s.median),
        },
    )?;
    let mut load = Vec::new();
    let mut domains = Vec::new();
    for (m, metrics) in s.models.iter().zip(seed0) {
        for (i, b) in m.balance.iter().enumerate() {
            let (mat, steps) = load_matrix(metrics, i, 120);
            if mat.is_empty() {
                continue;
            }
            let map = Heatmap {
                title: format!("{}: expert load, layer {}", m.name, b.layer),
                x_desc: "training step".into(),
                y_desc: "expert".into(),
                rows: (0..mat.len()).map(|e| format!("expert {e}")).collect(),
                cols: steps.iter().map(|s| s.to_string()).collect(),
                values: mat,
                annotate: false,
            };
            load.push((m.name.clone(), b.layer, heatmap(dir, &format!("expert_load_{}_layer{}", m.name, b.layer), &map)?));
        }
        for d in &m.domains {
            let map = Heatmap {
                title: format!("{}: share of each domain's tokens per expert (%), layer {}", m.name, d.layer),
                x_desc: "expert".into(),
                y_desc: "domain".into(),
                rows: d.domains.clone(),
                cols: (0..d.n_expert).map(|e| e.to_string()).collect(),
                values: d.fraction.clone(),
                annotate: d.n_expert <= 16,
            };
            domains.push((m.name.clone(), d.layer, heatmap(dir, &format!("expert_domains_{}_layer{}", m.name, d.layer), &map)?));
        }
    }
    let deploy = match &s.deploy {
        Some(d) => crate::deploy_report::deploy_figures(dir, d)?,
        None => Vec::new(),
    };
    Ok(CompareFigures { loss, delta, latency, throughput, load, domains, deploy })
}

fn gap_cell(g: &crate::stats::PairedGap) -> String {
    match (g.p_value, g.beyond_noise) {
        (None, _) => "n/a (1 seed)".into(),
        (Some(p), None) => format!("p = {p:.3}: more seeds needed"),
        (Some(p), Some(true)) => format!("p = {p:.3}: yes"),
        (Some(p), Some(false)) => format!("p = {p:.3}: no"),
    }
}

/// Next-token accuracy: overall is in the models table; here per domain and exact-match answers
/// (mean over seeds).
fn accuracy_section(d: &mut Doc, s: &CompareSummary) {
    let mean_of = |m: &ModelResult, f: &dyn Fn(&crate::accuracy::Accuracy) -> Option<f64>| {
        crate::stats::MeanStd::of(&m.seeds.iter().filter_map(|r| r.accuracy.as_ref().and_then(f)).collect::<Vec<_>>())
    };
    d.h2("Next-token accuracy");
    d.p("Greedy (top-1) next-token accuracy on the validation split, over the same windows as the final validation loss, mean ± std over seeds. On the built-in corpus also per domain, and exact match of the checkable answers (teacher-forced: every byte of the answer predicted right): arithmetic results after `=`, and key–value recall queries `?key->value`.");
    let Some(first) = s.models.iter().find_map(|m| m.seeds.first().and_then(|r| r.accuracy.as_ref())) else { return };
    if first.per_domain.is_empty() && first.exact.is_empty() {
        return;
    }
    let mut head: Vec<String> = vec!["model".into()];
    head.extend(first.per_domain.iter().map(|x| format!("top-1 {}", x.domain)));
    head.extend(first.exact.iter().map(|x| format!("exact match: {}", x.task)));
    let rows = s
        .models
        .iter()
        .map(|m| {
            let mut r = vec![m.name.clone()];
            for (i, _) in first.per_domain.iter().enumerate() {
                r.push(mean_of(m, &|a| a.per_domain.get(i).map(|x| x.top1)).fmt(3));
            }
            for (i, _) in first.exact.iter().enumerate() {
                let tot = m.seeds.first().and_then(|r| r.accuracy.as_ref()).and_then(|a| a.exact.get(i)).map_or(0, |x| x.total);
                r.push(format!("{} (n = {tot})", mean_of(m, &|a| a.exact.get(i).map(|x| x.rate)).fmt(3)));
            }
            r
        })
        .collect();
    let head_ref: Vec<&str> = head.iter().map(|s| s.as_str()).collect();
    d.table(&head_ref, rows);
}

fn opt_f(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.prec$}"))
}

/// The report document.
pub fn build_doc(s: &CompareSummary, f: &CompareFigures) -> Doc {
    let mut d = Doc::new("moe compare: dense vs Mixture-of-Experts at equal training compute");
    d.h2("Verdict");
    for l in &s.verdict {
        d.p(format!("**{l}**"));
    }

    d.h2("Setup");
    let runs: usize = s.models.iter().map(|m| m.seeds.len()).sum();
    let reused = s.models.iter().flat_map(|m| &m.seeds).filter(|r| r.status == crate::run::RunStatus::Reused).count();
    d.bullets(vec![
        format!("Budget: {} training FLOPs per run ({}).", fmt_flops(s.budget_flops), s.budget_from),
        format!("Data: `{}`; every model of a seed trains on the same batches (same `train.seed`, batch shape and data) and starts from the same values of the tensors it shares with the others (embeddings, attention, norms, head).", s.data),
        "Validation loss: each run's final evaluation (on `train.final_eval_batches` batches where set, else `train.eval_batches`); the curves and the compute multiplier use the `train.eval_batches` batches of every evaluation.".to_string(),
        format!("Seeds: {} per model ({} runs; {} reused from an earlier call).", s.seeds, runs, reused),
        format!(
            "Time: {:.0} s in all ({:.0} s training in this call, {:.0} s decode benchmarks and routing analysis, {:.0} s probe).",
            s.timing.total_s, s.timing.training_s, s.timing.analysis_s, s.timing.probe_s
        ),
    ]);

    d.h2("Models");
    let rows = s
        .models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.description.clone(),
                fmt_count(m.params_total),
                fmt_count(m.params_active),
                format!("{:.3e}", m.flops_per_token),
                m.steps.to_string(),
                fmt_count(m.seeds.first().map_or(0, |r| r.tokens)),
                m.tokens_per_s.fmt(0),
                m.val_loss.fmt(4),
                m.val_ppl.fmt(3),
                m.val_top1.fmt(4),
            ]
        })
        .collect();
    d.table(
        &[
            "model",
            "architecture",
            "params total",
            "params active",
            "train FLOPs/token",
            "steps",
            "tokens",
            "train tokens/s",
            "val loss",
            "val ppl",
            "val top-1 acc",
        ],
        rows,
    );
    if let Some(mm) = &s.matching {
        d.p(format!(
            "Parameter matching: the MoE's active parameters are {:.4}× the dense model's (the difference is the {} router parameters); the wide dense model's total parameters are {:.4}× the MoE's (d_ff rounded to a multiple of 8).",
            mm.active_ratio, mm.router_params, mm.total_ratio
        ));
    }
    if s.seeds > 1 {
        let rows = s
            .models
            .iter()
            .flat_map(|m| {
                m.seeds.iter().map(move |r| {
                    vec![
                        m.name.clone(),
                        r.seed.to_string(),
                        r.train_seed.to_string(),
                        fmt_loss(r.val_loss),
                        format!("{:.0}", r.tokens_per_s),
                        format!("{:?}", r.status).to_lowercase(),
                    ]
                })
            })
            .collect();
        d.h3("Every run");
        d.table(&["model", "seed", "train.seed", "val loss", "train tokens/s", "this call"], rows);
    }

    d.h2("Validation loss vs training compute");
    d.figure(&f.loss);
    d.figure(&f.delta);
    let vrows = s
        .verdicts
        .iter()
        .map(|v| {
            let mult = v.multiplier.map_or_else(|| "> 1 (unreachable)".to_string(), |m| m.fmt(2));
            vec![
                v.moe.clone(),
                fmt_loss(v.moe_loss.mean),
                fmt_loss(v.dense_loss.mean),
                format!("{:+.4}", v.gap.diff.mean),
                format!("{:+.2}%", 100.0 * v.rel_gap),
                mult,
                format!("{:?}", v.method).to_lowercase(),
                gap_cell(&v.gap),
            ]
        })
        .collect();
    d.table(
        &["MoE", "MoE val loss", "dense val loss", "Δ", "Δ %", "dense compute multiplier", "method", "paired t-test (gap vs seed noise)"],
        vrows,
    );
    d.p("The dense compute multiplier is read off the dense run's own validation curve: interpolated in log-FLOPs within the budget, or extrapolated beyond it with a least-squares power-law fit L(C) = a + b·C^−c of the curve's tail (method column). Seed noise: a paired Student's t-test over seeds (df = seeds − 1) with its two-sided p-value and 95% confidence interval of the gap; below 3 seeds the report says \"more seeds needed\" instead of a verdict.");

    accuracy_section(&mut d, s);

    d.h2("Decode speed (KV-cached, greedy, fast engine)");
    if let Some(ds) = &s.decode_setup {
        d.p(format!(
            "Measured on the fast engine (`moe_infer::Engine`, as `moe bench infer` and `moe generate`), weights in {}, {} threads; this machine's measured read bandwidth {:.1} GB/s and f32 GEMM peak {:.0} GFLOP/s. Prompts of {} random tokens, {} timed greedy decode steps; the models are measured interleaved (each round times every model and format once, each pass after an untimed warm-up) over {} rounds: median (min–max).",
            ds.dtypes.join(" and "), ds.machine.threads, ds.machine.bandwidth_gbs, ds.machine.peak_gflops, ds.prompt_len, ds.n_decode, ds.rounds
        ));
    }
    let batches: Vec<usize> =
        s.models.first().map(|m| m.decode.iter().filter(|x| x.dtype == "f32").map(|x| x.batch).collect()).unwrap_or_default();
    let dtypes: Vec<String> = s.decode_setup.as_ref().map(|d| d.dtypes.clone()).unwrap_or_else(|| vec!["f32".into()]);
    let mut head: Vec<String> = vec!["model".into(), "dtype".into(), "latency ms/token @1 (min–max)".into()];
    head.extend(batches.iter().map(|b| format!("tokens/s @{b} (min–max)")));
    head.push("roofline fraction @1".into());
    head.push("distinct experts/step (D(B))".into());
    let mut rows = Vec::new();
    for dt in &dtypes {
        for m in &s.models {
            let mut r = vec![m.name.clone(), dt.clone(), m.decode_at_dtype(dt, 1).map_or("–".into(), |x| x.latency_ms.fmt(3))];
            r.extend(batches.iter().map(|&b| m.decode_at_dtype(dt, b).map_or("–".into(), |x| x.tokens_per_s.fmt(0))));
            r.push(opt_f(m.decode_at_dtype(dt, 1).and_then(|x| x.roofline_fraction), 3));
            let de: Vec<String> = m
                .decode
                .iter()
                .filter(|x| &x.dtype == dt && x.distinct_experts.is_some())
                .map(|x| format!("{} ({})", opt_f(x.distinct_experts, 1), opt_f(x.expected_distinct, 1)))
                .collect();
            r.push(if de.is_empty() { "– (dense)".into() } else { de.join(" / ") });
            rows.push(r);
        }
    }
    let head_ref: Vec<&str> = head.iter().map(|s| s.as_str()).collect();
    d.table(&head_ref, rows);
    if !s.decode_ranking.is_empty() {
        d.p("Rank order against the dense model (a difference whose min–max ranges overlap is not a result):");
        d.bullets(s.decode_ranking.clone());
    }
    d.figure(&f.latency);
    d.figure(&f.throughput);

    crate::deploy_report::deploy_section(&mut d, s.deploy.as_ref(), s.deploy_note.as_deref(), &f.deploy);

    d.h2("Expert balance");
    d.p("Averaged over the last 10% of training steps of seed 0. max/mean = largest expert load ÷ mean load (1 = perfectly balanced); entropy = mean router entropy in nats (a uniform router has ln E).");
    let rows: Vec<Vec<String>> = s
        .models
        .iter()
        .flat_map(|m| {
            m.balance.iter().map(move |b| {
                vec![
                    m.name.clone(),
                    b.layer.to_string(),
                    b.n_expert.to_string(),
                    format!("{:.3}", b.max_over_mean),
                    format!("{:.3} / {:.3}", b.entropy, b.entropy_uniform),
                    format!("{:.4}", b.drop_rate),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        d.p("No MoE layers.");
    } else {
        d.table(&["model", "layer", "experts", "max/mean load", "entropy / uniform", "drop rate"], rows);
    }
    for (_, _, fig) in &f.load {
        d.figure(fig);
    }

    if !f.domains.is_empty() {
        d.h2("Which domain each expert serves");
        d.p("A forward pass over validation windows of the synthetic corpus (seed-0 model). Each row of a heatmap is one domain: the percentage of its tokens' top-k assignments that went to each expert. Specialisation = mean over experts of the largest domain share of its tokens, relative to routing blind to domains (1 = none).");
        let rows: Vec<Vec<String>> = s
            .models
            .iter()
            .flat_map(|m| {
                m.domains.iter().map(move |l| {
                    let tops: Vec<String> =
                        l.top_domain.iter().enumerate().map(|(e, (name, share))| format!("{e}:{name} {:.0}%", 100.0 * share)).collect();
                    vec![m.name.clone(), l.layer.to_string(), format!("{:.2}", l.specialisation), tops.join(", ")]
                })
            })
            .collect();
        d.table(&["model", "layer", "specialisation", "top domain of each expert (share of its tokens)"], rows);
        for (_, _, fig) in &f.domains {
            d.figure(fig);
        }
    }

    d.h2("Caveats");
    d.bullets(s.caveats.clone());
    d.h2("Files");
    d.bullets(vec![
        "`summary.json`: every number of this report.".into(),
        "`runs/<model>-s<seed>/`: ordinary `moe train` run directories (config.resolved.toml, metrics.jsonl, checkpoints); `moe compare` with the same options reuses finished runs and resumes unfinished ones.".into(),
        "`plots/`: every chart as PNG and SVG.".into(),
    ]);
    d
}
