//! `moe train`

use crate::args::TrainArgs;
use crate::dist::Job;
use anyhow::Context;
use moe_dist::Groups;
use moe_train::{load_experiment, train, TrainOptions};
use std::path::PathBuf;

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
    let dist = if job.world.size() > 1 || a.expert_parallel > 1 {
        Some(Groups::new(job.world.clone(), a.expert_parallel).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    if let Some(g) = &dist {
        tracing::info!(groups = ?g, "data- and expert-parallel training");
    }
    let s = train(&cfg, &out, &TrainOptions { resume: a.resume, progress: !a.quiet, dist })
        .with_context(|| format!("training into {}", out.display()))?;
    if !job.lead() {
        return Ok(());
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
