//! `moe train`

use crate::args::TrainArgs;
use anyhow::Context;
use moe_train::{load_experiment, train, TrainOptions};
use std::path::PathBuf;

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let (cfg, _) = load_experiment(&a.cfg.config, &a.cfg.set)?;
    let out = a.out.unwrap_or_else(|| {
        let stem = a.cfg.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(stem)
    });
    let s = train(&cfg, &out, &TrainOptions { resume: a.resume, progress: !a.quiet })
        .with_context(|| format!("training into {}", out.display()))?;
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
