//! The charts, headline and report document of `moe sweep`.

use crate::curve::Method;
use crate::error::Result;
use crate::plot::{line_chart, Figure, LineChart, Series};
use crate::report::Doc;
use crate::results::{fmt_count, fmt_flops, fmt_loss};
use crate::sweep_summary::{MoeRung, SweepSummary};
use std::path::Path;

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Interpolated => "interpolated",
        Method::PowerLaw => "power-law fit",
        Method::Extrapolated => "extrapolated (fit)",
        Method::Unreachable => "unreachable",
    }
}

fn fmt_mult(r: &MoeRung) -> String {
    match (r.multiplier, r.method) {
        (None, _) | (_, Method::Unreachable) => "beyond the dense fit".to_string(),
        (Some(m), _) if m.n > 1 => format!("{:.2}× ± {:.2}", m.mean, m.std),
        (Some(m), _) => format!("{:.2}×", m.mean),
    }
}

/// The headline: the multiplier at each rung, and the best rung.
pub fn verdict_lines(moe: &[MoeRung], k: usize, budget: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let parts: Vec<String> =
        moe.iter().map(|r| format!("{} expert{}: {}", r.n_expert, if r.n_expert == 1 { "" } else { "s" }, fmt_mult(r))).collect();
    lines.push(format!(
        "Dense compute multiplier at fixed active compute (top-{k}, {} FLOPs per MoE run): {}.",
        fmt_flops(budget),
        parts.join("; ")
    ));
    if let Some(best) =
        moe.iter().filter(|r| r.multiplier.is_some()).max_by(|a, b| a.multiplier.unwrap().mean.total_cmp(&b.multiplier.unwrap().mean))
    {
        lines.push(format!(
            "Best: {} expert(s) reached val loss {}, which the dense model needs ≈ {} its compute to match ({}).",
            best.n_expert,
            fmt_loss(best.result.val_loss.mean),
            fmt_mult(best),
            method_name(best.method)
        ));
    }
    lines
}

/// Draw the sweep's charts into `dir`: multiplier vs experts, and loss vs compute.
pub fn make_figures(dir: &Path, s: &SweepSummary) -> Result<Vec<Figure>> {
    let pts: Vec<&MoeRung> = s.moe.iter().filter(|r| r.multiplier.is_some()).collect();
    let mult = line_chart(
        dir,
        "multiplier_vs_experts",
        &LineChart {
            title: format!("Dense compute multiplier vs number of experts (top-{})", s.top_k),
            x_desc: "experts per MoE layer".into(),
            y_desc: "dense compute to match ÷ MoE compute".into(),
            log_x: true,
            int_x: true,
            series: vec![Series {
                name: format!("MoE top-{} (± std over seeds)", s.top_k),
                points: pts.iter().map(|r| (r.n_expert as f64, r.multiplier.map_or(f64::NAN, |m| m.mean))).collect(),
                err: pts.iter().map(|r| r.multiplier.map_or(0.0, |m| m.std)).collect(),
                ..Default::default()
            }],
        },
    )?;
    let mut series = vec![Series {
        name: "dense ladder".into(),
        points: s.dense.iter().map(|r| (r.result.seeds.first().map_or(0.0, |x| x.flops), r.result.val_loss.mean)).collect(),
        err: s.dense.iter().map(|r| r.result.val_loss.std).collect(),
        markers_only: true,
        ..Default::default()
    }];
    if let Some(f) = &s.fit {
        let lo = s.dense.iter().filter_map(|r| r.result.seeds.first()).map(|x| x.flops).fold(f64::INFINITY, f64::min);
        let hi = s.dense.iter().filter_map(|r| r.result.seeds.first()).map(|x| x.flops).fold(0.0, f64::max);
        let (lo, hi) = (lo / 2.0, hi * 4.0);
        let points = (0..=40).map(|i| lo * (hi / lo).powf(i as f64 / 40.0)).map(|c| (c, f.loss_at(c))).collect();
        series.push(Series { name: format!("dense fit a={:.3} b={:.3} c={:.2}", f.a, f.b, f.c), points, thin: true, ..Default::default() });
    }
    for r in &s.moe {
        series.push(Series {
            name: format!("{} expert{}", r.n_expert, if r.n_expert == 1 { "" } else { "s" }),
            points: vec![(r.result.seeds.first().map_or(0.0, |x| x.flops), r.result.val_loss.mean)],
            err: vec![r.result.val_loss.std],
            markers_only: true,
            ..Default::default()
        });
    }
    let loss = line_chart(
        dir,
        "sweep_loss_vs_flops",
        &LineChart {
            title: "Final validation loss vs training compute".into(),
            x_desc: "training FLOPs".into(),
            y_desc: "validation loss (nats/token)".into(),
            log_x: true,
            series,
            ..Default::default()
        },
    )?;
    Ok(vec![mult, loss])
}

/// The report document.
pub fn build_doc(s: &SweepSummary, figs: &[Figure]) -> Doc {
    let mut d = Doc::new("moe sweep: sparsity at fixed active compute");
    d.h2("Verdict");
    for l in &s.verdict {
        d.p(format!("**{l}**"));
    }
    d.h2("Setup");
    let runs: usize =
        s.dense.iter().map(|r| r.result.seeds.len()).sum::<usize>() + s.moe.iter().map(|r| r.result.seeds.len()).sum::<usize>();
    d.bullets(vec![
        format!(
            "Budget: {} training FLOPs per MoE run ({}); dense rungs get {} of it.",
            fmt_flops(s.budget_flops),
            s.budget_from,
            s.dense.iter().map(|r| format!("{}×", r.multiplier)).collect::<Vec<_>>().join(", ")
        ),
        format!("Data: `{}`; seeds: {} ({runs} runs).", s.data, s.seeds),
        format!("Loss-vs-compute model: {}.", s.fit_method),
        format!("Time: {:.0} s in all, {:.0} s of it training in this call.", s.total_s, s.training_s),
    ]);
    d.h2("Sparsity ladder");
    let rows = s
        .moe
        .iter()
        .map(|r| {
            let mm = if r.result.balance.is_empty() {
                "–".to_string()
            } else {
                format!("{:.2}", r.result.balance.iter().map(|b| b.max_over_mean).sum::<f64>() / r.result.balance.len() as f64)
            };
            vec![
                r.n_expert.to_string(),
                fmt_count(r.result.params_total),
                fmt_count(r.result.params_active),
                format!("{:.3e}", r.result.flops_per_token),
                r.result.val_loss.fmt(4),
                fmt_mult(r),
                method_name(r.method).to_string(),
                r.result.tokens_per_s.fmt(0),
                mm,
            ]
        })
        .collect();
    d.table(
        &[
            "experts",
            "params total",
            "params active",
            "train FLOPs/token",
            "val loss",
            "dense compute multiplier",
            "method",
            "train tokens/s",
            "max/mean load",
        ],
        rows,
    );
    if let Some(f) = figs.first() {
        d.figure(f);
    }
    d.h2("Dense compute ladder");
    let rows = s
        .dense
        .iter()
        .map(|r| {
            vec![
                format!("{}×", r.multiplier),
                r.result.name.clone(),
                r.result.steps.to_string(),
                fmt_flops(r.result.seeds.first().map_or(0.0, |x| x.flops)),
                r.result.val_loss.fmt(4),
                r.result.tokens_per_s.fmt(0),
            ]
        })
        .collect();
    d.table(&["budget multiple", "run", "steps", "FLOPs", "val loss", "train tokens/s"], rows);
    if let Some(f) = &s.fit {
        d.p(format!(
            "Fit through the seed-mean ladder: L(C) = {:.4} + {:.4}·(C / {:.3e})^-{:.2} (rms residual {:.4}).",
            f.a, f.b, f.c_ref, f.c, f.rmse
        ));
    }
    if let Some(f) = figs.get(1) {
        d.figure(f);
    }
    d.h2("Caveats");
    d.bullets(s.caveats.clone());
    d.h2("Files");
    d.bullets(vec![
        "`summary.json`: every number of this report.".into(),
        "`runs/<rung>-s<seed>/`: ordinary run directories, reused when complete and resumed when interrupted.".into(),
        "`plots/`: PNG and SVG.".into(),
    ]);
    d
}
