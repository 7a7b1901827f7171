//! `moe plan`: roofline predictions of decode on a described machine ([`moe_compare::roofline`]).

use crate::args::PlanArgs;
use crate::commands::bench::dtype_of;
use anyhow::{bail, Context};
use moe_compare::roofline::{crossover, predict, Hardware, Layout, Prediction, StepShape};
use moe_model::hf::{read_config, HfOptions};
use moe_model::ModelConfig;
use std::path::Path;

/// An experiment TOML's [model], an HF directory's config.json or a GGUF file's metadata.
fn load_model(path: &Path) -> anyhow::Result<ModelConfig> {
    if path.is_dir() || moe_model::gguf::is_gguf_path(path) {
        Ok(read_config(path, &HfOptions::default())?.cfg)
    } else {
        Ok(moe_train::load_experiment(path, &[])?.0.model)
    }
}

fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86400) as i64;
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn rows(cfg: &ModelConfig, hw: &Hardware, a: &PlanArgs) -> anyhow::Result<Vec<Prediction>> {
    if a.batch.is_empty() || a.batch.contains(&0) {
        bail!("--batch: batch sizes must be ≥ 1");
    }
    if a.nodes == 0 {
        bail!("--nodes: must be ≥ 1");
    }
    let shape = StepShape::of(cfg, a.context);
    let layout = Layout { nodes: a.nodes, expert_parallel: a.expert_parallel.unwrap_or(a.nodes) };
    let dt = dtype_of(a.dtype);
    a.batch.iter().map(|&b| Ok(predict(&shape, hw, dt, b, a.context, layout)?)).collect()
}

fn print(name: &str, cfg: &ModelConfig, p: &[Prediction]) {
    let acc = moe_model::accounting::account(cfg, 1);
    println!("{name}: {:.3}B parameters, {:.3}B active", acc.params_total as f64 / 1e9, acc.params_active as f64 / 1e9);
    println!(
        "{:>6} {:>11} {:>12} {:>14} {:>11} {:>5} {:>8} {:>10}",
        "batch", "latency ms", "tokens/s", "node·s/Mtok", "GB/node", "fits", "bound", "experts/L"
    );
    for r in p {
        println!(
            "{:>6} {:>11.3} {:>12.1} {:>14.2} {:>11.2} {:>5} {:>8} {:>10}",
            r.batch,
            r.latency_ms,
            r.tokens_per_s,
            r.node_s_per_mtok,
            r.memory_gb,
            if r.fits { "yes" } else { "NO" },
            r.bound,
            r.distinct_experts.map_or("–".into(), |d| format!("{d:.1}"))
        );
    }
}

/// This machine: bandwidth and GEMM peak, and the engine's own ceilings fitted on it.
fn measure_this_machine() -> anyhow::Result<Hardware> {
    let mut hw = Hardware::calibrate(&today());
    hw.engine = Some(hw.fit_engine()?);
    Ok(hw)
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    if a.calibrate {
        let hw = measure_this_machine()?;
        let text = format!("# This machine, measured by `moe plan --calibrate` on {}.\n{}", today(), hw.to_toml());
        match &a.out {
            Some(p) => {
                moe_model::checkpoint::write_atomic(p, text.as_bytes())?;
                eprintln!("wrote {}", p.display());
            }
            None => print!("{text}"),
        }
        return Ok(());
    }
    let hw = match &a.hardware {
        Some(p) => Hardware::load(p)?,
        None => {
            eprintln!("no --hardware: measuring this machine (moe plan --calibrate)");
            measure_this_machine()?
        }
    };
    let path = a.config.as_ref().or(a.model.as_ref()).context("--config or --model is required")?;
    let cfg = if a.model.is_some() { read_config(path, &HfOptions::default())?.cfg } else { load_model(path)? };
    println!(
        "hardware: {} ({}), {:.1} GB/s, {:.0} GFLOP/s ({}), {:.0} GB per node; {} node(s), context {}",
        hw.name,
        hw.source,
        hw.bandwidth_gbs,
        hw.peak_gflops(dtype_of(a.dtype)),
        dtype_of(a.dtype).name(),
        hw.memory_gb,
        a.nodes,
        a.context
    );
    let p = rows(&cfg, &hw, &a)?;
    print(&path.display().to_string(), &cfg, &p);
    let mut json = serde_json::json!({ "hardware": hw, "model": path, "nodes": a.nodes, "context": a.context, "dtype": dtype_of(a.dtype).name(), "predictions": p });
    if let Some(other) = &a.against {
        let ocfg = load_model(other)?;
        let q = rows(&ocfg, &hw, &a)?;
        println!();
        print(&other.display().to_string(), &ocfg, &q);
        let x = crossover(&p, &q);
        match x {
            Some(b) => println!("\n{} costs less per token than {} from batch {b} on (of {:?}).", path.display(), other.display(), a.batch),
            None => println!(
                "\n{} does not cost less per token than {} at the larger batches of {:?} (where either fits).",
                path.display(),
                other.display(),
                a.batch
            ),
        }
        json["against"] = serde_json::json!({ "model": other, "predictions": q, "crossover_batch": x });
    }
    if let Some(out) = &a.out {
        moe_model::checkpoint::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}
