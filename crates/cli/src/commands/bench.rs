//! `moe bench train`, `moe bench infer` and `moe bench quality`

use crate::args::{BenchCommand, BenchInferArgs, DtypeArg, EngineArg, ModelSource};
use anyhow::Context;
use moe_compare::plot::{line_chart, LineChart, Series};
use moe_infer::{bench_infer, quality_against, weight_format_quality, Engine, EngineBench, EngineWeights, Machine, Runner};
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_model::hf::HfOptions;
use moe_model::Transformer;
use moe_train::bench::bench_train;
use moe_train::run_data::build_dataset;
use moe_train::{load_experiment, load_run};
use std::fmt::Write as _;

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
        BenchCommand::Infer(a) => infer(a),
        BenchCommand::Serve(a) => super::serve::bench(a),
        BenchCommand::Quality { run, dtype, gguf, seq_len, windows, fast_dot } => {
            let r = load_run(&run)?;
            let val = build_dataset(&r.cfg, &r.tokenizer)?.val;
            let sl = seq_len.unwrap_or(r.cfg.train.seq_len).min(r.model.cfg.n_ctx);
            println!("run      {} (step {}), {} validation tokens, windows of {sl}", run.display(), r.step, val.len());
            println!(
                "{:>16} {:>14} {:>6} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "weights", "kernel", "bits", "tokens", "ppl f32", "ppl", "KL mean", "KL median", "KL p99", "KL max", "top-1 ="
            );
            let row = |name: &str, q: &moe_infer::FormatQuality, bits: f64| {
                println!(
                    "{:>16} {:>14} {:>6.3} {:>8} {:>10.4} {:>10.4} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>9.2}%",
                    name,
                    q.kernel,
                    bits,
                    q.n_tok,
                    q.ppl_f32,
                    q.ppl,
                    q.kl_mean,
                    q.kl_median,
                    q.kl_p99,
                    q.kl_max,
                    100.0 * q.top1_agree
                )
            };
            let mut wide = false;
            for d in dtype {
                let q = weight_format_quality(&r.model, &val, dtype_of(d), kernel_of(fast_dot, dtype_of(d)), sl, windows)?;
                row(&q.dtype, &q, q.bits_per_weight);
                wide |= q.kernel.ends_with("+gemm");
            }
            for path in &gguf {
                let g = moe_model::hf::load(path, &HfOptions { n_ctx: Some(r.model.cfg.n_ctx), ..HfOptions::default() })
                    .with_context(|| format!("loading {}", path.display()))?;
                let bits = moe_model::gguf::GgufFile::open(path)?.matrix_bits_per_weight();
                let q = quality_against(&r.model, &g.model, &val, WeightDtype::F32, Kernel::Auto, sl, windows)
                    .with_context(|| format!("{} against run {}", path.display(), run.display()))?;
                let name = path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned());
                row(&name, &moe_infer::FormatQuality { kernel: "gguf→f32".into(), ..q }, bits);
            }
            if wide {
                println!("(+gemm: a window's products of {sl} rows dequantise the weights to f32 and run on the GEMM; only products of fewer rows, e.g. an expert's share, use the kernel named)");
            }
            Ok(())
        }
    }
}

/// The GEMV kernel for `dtype`: the default (`Kernel::Auto`: exact, but the AVX2 int8-activation
/// kernel for q4, and for int8 without AVX-512), or with `fast_dot` the activation-quantising one.
pub fn kernel_of(fast_dot: bool, dtype: WeightDtype) -> Kernel {
    match (fast_dot, dtype) {
        (true, WeightDtype::I8) if !Kernel::Avx512Vnni.available() && Kernel::Avx2Q8.available() => Kernel::Avx2Q8,
        (true, WeightDtype::I8) => Kernel::Avx512Vnni,
        (true, WeightDtype::Bf16) => Kernel::Avx512Bf16Dot,
        _ => Kernel::Auto,
    }
}

pub fn dtype_of(d: DtypeArg) -> WeightDtype {
    match d {
        DtypeArg::F32 => WeightDtype::F32,
        DtypeArg::Bf16 => WeightDtype::Bf16,
        DtypeArg::Int8 => WeightDtype::I8,
        DtypeArg::Q4 => WeightDtype::Q4,
        DtypeArg::Q4k => WeightDtype::Q4K,
    }
}

/// The model of `--run`, `--config` (random weights from `seed`) or `--model`, and a description.
/// With `keep_dtype`, a bf16/f16 checkpoint's matrices stay in that format (for the fast engine).
pub(super) fn load_model(src: &ModelSource, set: &[String], seed: u64, keep_dtype: bool) -> anyhow::Result<(Transformer<f32>, String)> {
    if let Some(run) = &src.run {
        let r = load_run(run)?;
        return Ok((r.model, format!("run {} (step {})", run.display(), r.step)));
    }
    if let Some(cfg) = &src.config {
        let (exp, _) = load_experiment(cfg, set)?;
        let m = Transformer::new(exp.model, seed)?;
        return Ok((m, format!("config {} (random weights, seed {seed})", cfg.display())));
    }
    let dir = src.model.as_ref().context("give --run, --config or --model")?;
    let m =
        moe_model::hf::load(dir, &HfOptions { keep_dtype, ..Default::default() }).with_context(|| format!("loading {}", dir.display()))?;
    let mut desc = format!("{} ({})", dir.display(), m.arch);
    if let Some(g) = &m.gguf {
        desc += &format!("; GGUF, mostly {}", g.file_type);
    }
    if let Some(dt) = m.model.stored.dtype_name() {
        desc += &format!("; {} matrices kept as {dt} at load ({:.1} MB)", m.model.stored.len(), m.model.stored.bytes() as f64 / 1e6);
    }
    Ok((m.model, desc))
}

fn opt(v: Option<f64>, scale: f64, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{:.*}", prec, x * scale))
}

fn infer(a: BenchInferArgs) -> anyhow::Result<()> {
    let (mut model, desc) = load_model(&a.source, &a.set, a.seed, a.engine == EngineArg::Fast)?;
    let n_ctx = model.cfg.n_ctx;
    if a.prompt_len + a.n_decode > n_ctx {
        anyhow::bail!("--prompt-len {} + --n-decode {} exceed the model's context of {n_ctx}", a.prompt_len, a.n_decode);
    }
    let acc = moe_model::accounting::account(&model.cfg, a.prompt_len + a.n_decode);
    let machine = Machine::measure();
    println!("model    {desc}");
    println!(
        "params   {:.2}M total, {:.2}M active; threads {}",
        acc.params_total as f64 / 1e6,
        acc.params_active as f64 / 1e6,
        machine.threads
    );
    println!(
        "machine  read bandwidth {:.1} GB/s (1.25 GiB, {} threads); f32 GEMM peak {:.1} GFLOP/s (1024³)",
        machine.bandwidth_gbs, machine.threads, machine.peak_gflops
    );
    println!(
        "prompt   {} random tokens per sequence, then {} greedy KV-cached decode steps (best of {})",
        a.prompt_len, a.n_decode, a.reps
    );
    let dtypes: Vec<WeightDtype> = match a.engine {
        EngineArg::Reference => vec![WeightDtype::F32],
        // default: the format the checkpoint suggests (a GGUF file's nearest, a bf16 one's, else f32)
        EngineArg::Fast if a.dtype.is_empty() => vec![moe_infer::engine::weights::default_dtype(&model)],
        EngineArg::Fast => a.dtype.iter().map(|&d| dtype_of(d)).collect(),
    };
    let mut csv = String::from("engine,dtype,batch,prompt_len,n_decode,prefill_tok_s,decode_tok_s,latency_ms,weight_bytes_per_step,gflop_per_step,achieved_gbs,achieved_gflops,roofline_fraction,distinct_experts,expected_distinct\n");
    let mut series = Vec::new();
    let single = dtypes.len() == 1;
    for dt in dtypes {
        let mut engine;
        let mut runner = match a.engine {
            EngineArg::Fast => {
                engine = if single {
                    // one format: convert while releasing a kept bf16 checkpoint's matrices
                    let w = EngineWeights::new_taking(&mut model, dt);
                    Engine::with_weights(&model, w, kernel_of(a.fast_dot, dt))?
                } else {
                    Engine::with_kernel(&model, dt, kernel_of(a.fast_dot, dt))?
                };
                Runner::Engine(&mut engine)
            }
            EngineArg::Reference => Runner::Reference(&model),
        };
        let eng = if a.engine == EngineArg::Fast { "fast" } else { "reference" };
        println!();
        let kname = match &runner {
            Runner::Engine(e) => e.kernel().resolved(dt).name(),
            Runner::Reference(_) => "gemm",
        };
        println!("engine {eng}, weights {}, kernel {kname}", dt.name());
        println!(
            "{:>5} {:>13} {:>12} {:>14} {:>8} {:>6} {:>7} {:>8} {:>22}",
            "batch", "prefill tok/s", "decode tok/s", "latency ms/tok", "MB/step", "GB/s", "GFLOP/s", "roofline", "distinct experts/step"
        );
        let rows: Vec<EngineBench> = bench_infer(&mut runner, &machine, &a.batch, a.prompt_len, a.n_decode, a.reps, a.seed)?;
        let mut pts = Vec::new();
        let mut roof = Vec::new();
        for r in &rows {
            let experts = match (r.distinct_experts, r.expected_distinct) {
                (Some(dd), Some(e)) => format!("{dd:.2} (uniform {e:.2})"),
                _ => "- (dense)".into(),
            };
            println!(
                "{:>5} {:>13.0} {:>12.1} {:>14.2} {:>8} {:>6} {:>7} {:>8} {:>22}",
                r.batch,
                r.prefill_tokens_per_s,
                r.decode_tokens_per_s,
                r.latency_ms,
                opt(r.bytes_per_step, 1e-6, 1),
                opt(r.achieved_gbs, 1.0, 1),
                opt(r.achieved_gflops, 1.0, 1),
                opt(r.roofline_fraction, 100.0, 0) + if r.roofline_fraction.is_some() { "%" } else { "" },
                experts
            );
            let _ = writeln!(
                csv,
                "{eng},{},{},{},{},{:.3},{:.3},{:.4},{},{},{},{},{},{},{}",
                dt.name(),
                r.batch,
                r.prompt_len,
                r.n_decode,
                r.prefill_tokens_per_s,
                r.decode_tokens_per_s,
                r.latency_ms,
                r.bytes_per_step.map_or(String::new(), |v| format!("{v:.0}")),
                r.flops_per_step.map_or(String::new(), |v| format!("{:.4}", v / 1e9)),
                r.achieved_gbs.map_or(String::new(), |v| format!("{v:.3}")),
                r.achieved_gflops.map_or(String::new(), |v| format!("{v:.3}")),
                r.roofline_fraction.map_or(String::new(), |v| format!("{v:.4}")),
                r.distinct_experts.map_or(String::new(), |v| format!("{v:.3}")),
                r.expected_distinct.map_or(String::new(), |v| format!("{v:.3}")),
            );
            pts.push((r.batch as f64, r.decode_tokens_per_s));
            if let (Some(b), Some(f)) = (r.bytes_per_step, r.flops_per_step) {
                let steps = (machine.bandwidth_gbs * 1e9 / b).min(machine.peak_gflops * 1e9 / f.max(1.0));
                roof.push((r.batch as f64, r.batch as f64 * steps));
            }
        }
        series.push(Series { name: format!("{eng} {}", dt.name()), points: pts, ..Default::default() });
        if !roof.is_empty() {
            series.push(Series { name: format!("roofline {}", dt.name()), points: roof, thin: true, ..Default::default() });
        }
    }
    let Some(out) = &a.out else {
        println!();
        println!("(--out DIR writes bench_infer.csv and the plot)");
        return Ok(());
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let csv_path = out.join("bench_infer.csv");
    moe_kernels::fsutil::write_atomic(&csv_path, csv.as_bytes()).with_context(|| format!("writing {}", csv_path.display()))?;
    let chart = LineChart {
        title: format!("decode throughput, {} threads", machine.threads),
        x_desc: "batch (sequences)".into(),
        y_desc: "decode tokens/s".into(),
        log_x: true,
        int_x: true,
        series,
    };
    let fig = line_chart(out, "bench_infer", &chart)?;
    println!();
    println!("wrote {} and {}", csv_path.display(), fig.png.display());
    Ok(())
}
