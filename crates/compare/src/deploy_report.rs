//! The charts and report section of the deployment-scale measurement ([`crate::deploy`]).

use crate::deploy::{DeployResult, ROOFLINE_TOLERANCE};
use crate::error::Result;
use crate::plan::Role;
use crate::plot::{line_chart, Figure, LineChart, Series};
use crate::report::Doc;
use crate::results::fmt_count;
use moe_infer::expected_distinct;
use std::path::Path;

/// Throughput (measured and roofline), latency, and distinct experts against batch size.
pub fn deploy_figures(dir: &Path, d: &DeployResult) -> Result<Vec<Figure>> {
    let dt = d.setup.dtypes.first().cloned().unwrap_or_else(|| "f32".into());
    let mut tput = Vec::new();
    for (i, m) in d.models.iter().enumerate() {
        // a model's measured line and its roofline share a color
        tput.push(Series {
            name: format!("{} measured", m.name),
            points: m.rows.iter().map(|r| (r.batch as f64, r.tokens_per_s.median)).collect(),
            color: Some(i),
            ..Default::default()
        });
        tput.push(Series {
            name: format!("{} roofline", m.name),
            points: m.predicted.iter().map(|p| (p.batch as f64, p.tokens_per_s)).collect(),
            thin: true,
            color: Some(i),
            ..Default::default()
        });
    }
    let throughput = line_chart(
        dir,
        "deploy_throughput",
        &LineChart {
            title: format!("Deployment scale: decode throughput vs batch (engine, {dt}; thin: roofline)"),
            x_desc: "batch size".into(),
            y_desc: "tokens / s".into(),
            log_x: true,
            int_x: true,
            series: tput,
        },
    )?;
    let latency = line_chart(
        dir,
        "deploy_latency",
        &LineChart {
            title: format!("Deployment scale: latency per token vs batch (engine, {dt}, median of rounds)"),
            x_desc: "batch size".into(),
            y_desc: "ms per decode step".into(),
            log_x: true,
            int_x: true,
            series: d
                .models
                .iter()
                .map(|m| Series {
                    name: m.name.clone(),
                    points: m.rows.iter().map(|r| (r.batch as f64, r.latency_ms.median)).collect(),
                    ..Default::default()
                })
                .collect(),
        },
    )?;
    let mut figs = vec![throughput, latency];
    let mut dist = Vec::new();
    for m in d.models.iter().filter(|m| m.role == Role::Moe) {
        let pts: Vec<(f64, f64)> = m.rows.iter().filter_map(|r| r.distinct_experts.map(|v| (r.batch as f64, v))).collect();
        if pts.is_empty() {
            continue;
        }
        dist.push(Series { name: format!("{} measured", m.name), points: pts, markers_only: true, ..Default::default() });
    }
    if let Some(moe) = d.models.iter().find(|m| m.role == Role::Moe) {
        if let Some((n, k)) = moe.experts {
            let max_b = d.shape.batches.iter().copied().max().unwrap_or(1);
            let mut b = 1usize;
            let mut pts = Vec::new();
            while b <= max_b {
                pts.push((b as f64, expected_distinct(n, k, b)));
                b *= 2;
            }
            dist.push(Series { name: format!("D(B) = {n}·(1 − (1 − {k}/{n})^B)"), points: pts, thin: true, ..Default::default() });
        }
    }
    if !dist.is_empty() {
        figs.push(line_chart(
            dir,
            "deploy_distinct_experts",
            &LineChart {
                title: "Deployment scale: distinct experts per MoE layer and step vs batch".into(),
                x_desc: "batch size".into(),
                y_desc: "distinct experts".into(),
                log_x: true,
                int_x: true,
                series: dist,
            },
        )?);
    }
    Ok(figs)
}

/// The report section.
pub fn deploy_section(doc: &mut Doc, d: Option<&DeployResult>, note: Option<&str>, figs: &[Figure]) {
    doc.h2("Deployment scale: the seeds' latency claims");
    let Some(d) = d else {
        doc.p(format!("The architectures were not measured at deployment scale: {}.", note.unwrap_or("no measurement")));
        return;
    };
    let m = &d.setup.machine;
    doc.p(format!(
        "The trained models fit in the CPU cache, so they cannot show memory-bound decoding. Here the same architectures are scaled up with random weights ({}) and decoded on the fast engine in {} with {} threads, prompts of {} token, {} timed steps, the models interleaved over {} rounds (median and min–max; ratios are medians of per-round paired ratios). This machine: read bandwidth {:.1} GB/s, f32 GEMM peak {:.0} GFLOP/s, last-level cache {}. The roofline is `moe plan`'s model for this machine: step time = max(bytes / bandwidth, FLOPs / peak), bytes with the expected distinct experts D(B). Took {:.0} s.",
        d.shape.why,
        d.setup.dtypes.join(", "),
        m.threads,
        d.setup.prompt_len,
        d.setup.n_decode,
        d.setup.rounds,
        m.bandwidth_gbs,
        m.peak_gflops,
        d.shape.llc_bytes.map_or("unknown".into(), |b| crate::results::fmt_bytes(b as f64)),
        d.seconds
    ));
    let rows: Vec<Vec<String>> = d
        .claims
        .iter()
        .map(|c| vec![c.what.clone(), c.ratio.fmt(2), c.goal.clone(), if c.met { "met".into() } else { "not met".into() }])
        .collect();
    doc.table(&["claim at batch 1", "ratio: median (min–max)", "goal", "here"], rows);
    let rows: Vec<Vec<String>> = d
        .models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.description.clone(),
                fmt_count(m.params_total),
                fmt_count(m.params_active),
                format!("{:.0}", m.weight_bytes / 1e6),
            ]
        })
        .collect();
    doc.table(&["model", "architecture", "params total", "params active", "f32 weights (MB)"], rows);
    let mut head: Vec<String> = vec!["model".into(), "latency ms @1 (min–max)".into()];
    head.extend(d.shape.batches.iter().map(|b| format!("tokens/s @{b}: measured (roofline)")));
    let rows: Vec<Vec<String>> = d
        .models
        .iter()
        .map(|m| {
            let mut r = vec![m.name.clone(), m.rows.first().map_or("–".into(), |x| x.latency_ms.fmt(2))];
            r.extend(
                m.rows.iter().zip(&m.predicted).map(|(x, p)| format!("{:.0} ({:.0}, {})", x.tokens_per_s.median, p.tokens_per_s, p.bound)),
            );
            r
        })
        .collect();
    let head_ref: Vec<&str> = head.iter().map(|s| s.as_str()).collect();
    doc.table(&head_ref, rows);
    if !d.batching.is_empty() {
        doc.p("The MoE against both dense models as the batch grows (throughput ratios, median and min–max over rounds):");
        doc.bullets(d.batching.clone());
    }
    if d.roofline.is_empty() {
        doc.p(format!("Every measured throughput is within {:.0} % of the roofline.", 100.0 * ROOFLINE_TOLERANCE));
    } else {
        doc.p(format!("Where the measurement is more than {:.0} % off the roofline, and why:", 100.0 * ROOFLINE_TOLERANCE));
        doc.bullets(d.roofline.clone());
    }
    for f in figs {
        doc.figure(f);
    }
}
