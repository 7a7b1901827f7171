//! `moe bench train` and `moe bench infer`

use crate::args::BenchCommand;
use anyhow::Context;
use moe_infer::bench_decode;
use moe_model::hf::load_hf_dir;
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
        BenchCommand::Infer { model, batch, prompt_len, n_decode, seed } => {
            let m = load_hf_dir(&model).with_context(|| format!("loading {}", model.display()))?;
            let n_ctx = m.cfg.n_ctx;
            if prompt_len + n_decode > n_ctx {
                anyhow::bail!("--prompt-len {prompt_len} + --n-decode {n_decode} exceed the model's context of {n_ctx}");
            }
            let acc = moe_model::accounting::account(&m.cfg, prompt_len + n_decode);
            println!("model    {} ({})", model.display(), m.arch);
            println!("params   {:.2}M total, {:.2}M active; threads {}", acc.params_total as f64 / 1e6, acc.params_active as f64 / 1e6, rayon_threads());
            println!("prompt   {prompt_len} random tokens, then {n_decode} greedy KV-cached decode steps");
            println!();
            println!("{:>5} {:>14} {:>14} {:>14} {:>22}", "batch", "prefill tok/s", "decode tok/s", "latency ms/tok", "distinct experts/step");
            for r in bench_decode(&m.model, &batch, prompt_len, n_decode, seed)? {
                let experts = match (r.distinct_experts_per_step, r.expected_distinct_experts) {
                    (Some(d), Some(e)) => format!("{d:.2} (uniform {e:.2})"),
                    _ => "- (dense)".to_string(),
                };
                println!("{:>5} {:>14.1} {:>14.1} {:>14.2} {:>22}", r.batch, r.prefill_tokens_per_s, r.decode_tokens_per_s, r.latency_ms_per_token, experts);
            }
            Ok(())
        }
    }
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
