//! `moe bench train`

use crate::args::BenchCommand;
use moe_train::bench::bench_train;
use moe_train::load_experiment;

pub fn run(c: BenchCommand) -> anyhow::Result<()> {
    match c {
        BenchCommand::Train { cfg, steps } => {
            let (exp, _) = load_experiment(&cfg.config, &cfg.set)?;
            let r = bench_train(&exp, steps)?;
            println!("config                {}", cfg.config.display());
            println!("threads               {}", r.threads);
            println!("batch                 {} × {} = {} tokens/step", exp.train.batch_size, exp.train.seq_len, r.tokens_per_step);
            println!("parameters            {:.1}M total, {:.1}M active", r.params_total as f64 / 1e6, r.params_active as f64 / 1e6);
            println!("step time             {:.3} s (mean of {} steps; forward+backward+AdamW)", r.step_s, r.steps);
            println!("training tokens/s     {:.0}", r.tokens_per_s);
            println!("achieved GFLOP/s      {:.1} (model FLOPs / time)", r.gflops);
            println!("f32 GEMM peak GFLOP/s {:.1} (measured now, 2048³)", r.gemm_peak_gflops);
            println!("ratio                 {:.1}% of GEMM peak", 100.0 * r.gflops / r.gemm_peak_gflops);
            Ok(())
        }
    }
}
