//! `moe train`

use crate::args::TrainArgs;
use crate::dist::Job;
use anyhow::Context;
use moe_dist::{Groups, Meter, Metered};
use moe_train::{load_experiment, train, TrainOptions};
use std::path::PathBuf;
use std::sync::Arc;

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let job = Job::join()?;
    job.run(|| train_job(a, &job))
}

fn train_job(a: TrainArgs, job: &Job) -> anyhow::Result<()> {
    let (cfg, _) = load_experiment(&a.cfg.config, &a.cfg.set)?;
    let out = a.out.unwrap_or_else(|| {
        let stem = a.cfg.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(stem)
    });
    let meter = Arc::new(Meter::default());
    let dist = if job.world.size() > 1 || a.expert_parallel > 1 {
        Some(Groups::new(Metered::wrap(job.world.clone(), meter.clone()), a.expert_parallel).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    if let Some(g) = &dist {
        tracing::info!(groups = ?g, "data- and expert-parallel training");
    }
    let s = train(&cfg, &out, &TrainOptions { resume: a.resume, progress: !a.quiet, dist })
        .with_context(|| format!("training into {}", out.display()))?;
    if !job.lead() {
        return Ok(());
    }
    if job.world.size() > 1 {
        let wall = t0.elapsed().as_secs_f64();
        let m = meter.read();
        let moe_layers = cfg.model.ffn_kinds().iter().filter(|k| matches!(k, moe_model::FfnKind::Moe { .. })).count().max(1);
        let steps = s.steps; // a resumed run: the steps of every session (only this one was metered)
        println!(
            "communication (rank 0 of {}): token exchange {:.2} MB ({:.1} KB per step per MoE layer) in {:.2}s, reductions {:.2} MB in {:.2}s, other {:.2}s: {:.1}% of {:.2}s",
            job.world.size(),
            m.a2a_bytes as f64 / 1e6,
            m.a2a_bytes as f64 / 1e3 / steps.max(1) as f64 / moe_layers as f64,
            m.a2a_s,
            m.reduce_bytes as f64 / 1e6,
            m.reduce_s,
            m.other_s,
            100.0 * m.seconds() / wall.max(1e-9),
            wall
        );
    }
    println!(
        "trained {} steps ({} tokens, {:.3e} FLOPs) in {:.1}s, {:.0} tokens/s; final train loss {:.4}{}",
        s.steps,
        s.tokens,
        s.flops,
        s.elapsed_s,
        s.tokens_per_s,
        s.final_train_loss,
        s.final_val_loss.map(|v| format!(", val loss {v:.4} (ppl {:.2})", v.exp())).unwrap_or_default()
    );
    println!("run directory: {}", out.display());
    Ok(())
}
