//! `moe serve` and `moe bench serve`

use crate::args::{BenchServeArgs, ModelSource, ServeArgs};
use crate::dist::Job;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use moe_compare::plot::{line_chart, LineChart, Series};
use moe_data::Tokenizer;
use moe_dist::{Groups, Meter, Metered};
use moe_infer::{bench_infer, Engine, EngineWeights, Machine, Runner};
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_model::checkpoint::write_atomic;
use moe_model::Transformer;
use moe_serve::bench::{run_level_blocking, LevelReport, LoadSpec};
use moe_serve::{ExpertParallel, ServeModel, ServeOptions, Server};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let api_key = match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => {
            let s = std::fs::read_to_string(f).with_context(|| format!("reading the API key file {}", f.display()))?;
            let k = s.lines().next().unwrap_or("").trim().to_string();
            if k.is_empty() {
                anyhow::bail!("the API key file {} is empty", f.display());
            }
            Some(k)
        }
        (None, None) => None,
    };
    let (dir, is_run) = match (&a.model, &a.run) {
        (Some(m), _) => (m.clone(), false),
        (None, Some(r)) => (r.clone(), true),
        (None, None) => anyhow::bail!("give --model HF_DIR or --run RUN_DIR"),
    };
    check_positive(&[
        ("--max-seqs", a.max_seqs),
        ("--max-queue", a.max_queue),
        ("--max-batch-tokens", a.max_batch_tokens),
        ("--max-tokens", a.max_tokens),
    ])?;
    let opts = ServeOptions {
        host: a.host.clone(),
        port: a.port,
        api_key,
        dtype: a.dtype.map(super::bench::dtype_of),
        max_seqs: a.max_seqs,
        max_queue: a.max_queue,
        max_batch_tokens: a.max_batch_tokens,
        kv_memory: a.kv_memory,
        max_tokens: a.max_tokens,
        served_model_name: a.served_model_name.clone().unwrap_or_else(|| dir_name(&dir)),
        ..Default::default()
    };
    let load = move || if is_run { ServeModel::from_run(&dir) } else { ServeModel::from_checkpoint(&dir) };
    let job = Job::join()?;
    if job.world.size() > 1 || a.expert_parallel > 1 {
        return job.run(|| serve_expert_parallel(&a, opts, &job, load));
    }
    serve_http(&a, opts, load, "")
}

/// Start the server, wait until the model is loaded, then serve until a signal. `ranks` is said
/// after "ready" (empty in one process).
fn serve_http(
    a: &ServeArgs,
    opts: ServeOptions,
    load: impl FnOnce() -> anyhow::Result<ServeModel> + Send + 'static,
    ranks: &str,
) -> anyhow::Result<()> {
    let name = opts.served_model_name.clone();
    let server = Server::start(opts, load)?;
    eprintln!("loading the model{ranks}; listening on {} (/health answers 503 until ready)", server.url());
    server.wait_ready()?;
    if a.host != "127.0.0.1" && a.host != "::1" && a.host != "localhost" {
        eprintln!(
            "warning: listening on {} — reachable from other machines{}",
            a.host,
            if a.api_key.is_none() && a.api_key_file.is_none() { " without an API key" } else { "" }
        );
    }
    let url = server.url();
    server.run_until_signal(|| {
        println!("moe serve: model `{name}` ready at {url}/v1{ranks} (Ctrl-C to stop)");
        let _ = std::io::Write::flush(&mut std::io::stdout());
    })
}

/// `mpirun -np N moe serve --expert-parallel N`: every rank loads the model and keeps its share of
/// the experts; rank 0 serves HTTP and schedules, the others step along ([`moe_serve::scheduler::worker`]).
fn serve_expert_parallel(
    a: &ServeArgs,
    mut opts: ServeOptions,
    job: &Job,
    load: impl FnOnce() -> anyhow::Result<ServeModel> + Send + 'static,
) -> anyhow::Result<()> {
    let n = job.world.size();
    if a.expert_parallel != n {
        anyhow::bail!(
            "--expert-parallel {} must equal the number of ranks ({n}): the server shards the experts over every rank",
            a.expert_parallel
        );
    }
    let meter = Arc::new(Meter::default());
    let groups = Groups::new(Metered::wrap(job.world.clone(), meter.clone()), n).map_err(anyhow::Error::msg)?;
    let comm = groups.ep.clone();
    let load_shard = move || -> anyhow::Result<ServeModel> {
        let mut m = load()?;
        m.model.materialize();
        m.model = m.model.shard(groups)?;
        Ok(m)
    };
    if !job.lead() {
        let mut m = load_shard()?;
        return moe_serve::scheduler::worker(&mut m.model, &opts, comm);
    }
    opts.expert_parallel = Some(ExpertParallel(comm.clone()));
    let t0 = std::time::Instant::now();
    // a load that fails on rank 0 would leave the other ranks waiting: end the job
    let load = move || {
        load_shard().map_err(|e| {
            eprintln!("rank 0 of {n}: error: loading the model: {e:#}");
            comm.abort(2)
        })
    };
    let r = serve_http(a, opts, load, &format!(" on {n} expert-parallel ranks"));
    let m = meter.read();
    eprintln!(
        "communication (rank 0 of {n}): all-reduce {:.2} MB in {:.2}s, step messages {:.2} MB in {:.2}s, over {:.1}s since the server started",
        m.reduce_bytes as f64 / 1e6,
        m.reduce_s,
        m.other_bytes as f64 / 1e6,
        m.other_s,
        t0.elapsed().as_secs_f64()
    );
    r
}

fn check_positive(xs: &[(&str, usize)]) -> anyhow::Result<()> {
    for (k, v) in xs {
        if *v == 0 {
            anyhow::bail!("{k} must be at least 1");
        }
    }
    Ok(())
}

fn dir_name(p: &Path) -> String {
    p.canonicalize().ok().and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "moe".into())
}

/// The in-process server's model and a second copy of the same weights for the engine run.
fn bench_models(a: &BenchServeArgs) -> anyhow::Result<(ServeModel, Transformer<f32>, String)> {
    let src = ModelSource { run: a.run.clone(), config: a.config.clone(), model: a.model.clone() };
    let (engine_model, desc) = super::bench::load_model(&src, &a.set, a.seed, true)?;
    let served = if let Some(m) = &a.model {
        ServeModel::from_checkpoint(m)?
    } else if let Some(r) = &a.run {
        ServeModel::from_run(r)?
    } else {
        let (model, _) = super::bench::load_model(&src, &a.set, a.seed, true)?;
        ServeModel { model, tokenizer: Tokenizer::byte(), eos_token_ids: Vec::new(), chat_template: None }
    };
    Ok((served, engine_model, desc))
}

fn progress(n: usize, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} requests {msg} [{elapsed_precise}]") {
        pb.set_style(style);
    }
    pb.set_message(msg);
    pb
}

fn ms(x: f64) -> f64 {
    x * 1e3
}

/// `p50,p90,p99` in milliseconds, for the CSV.
fn csv_ms(p: &moe_serve::bench::Pcts) -> String {
    format!("{:.3},{:.3},{:.3}", ms(p.p50), ms(p.p90), ms(p.p99))
}

pub fn bench(a: BenchServeArgs) -> anyhow::Result<()> {
    if a.concurrency.is_empty() || a.concurrency.contains(&0) {
        anyhow::bail!("--concurrency needs positive counts, e.g. 1,8,32");
    }
    check_positive(&[("--prompt-len", a.prompt_len), ("--max-tokens", a.max_tokens), ("--rounds", a.rounds)])?;
    let machine = Machine::measure();
    println!(
        "machine  read bandwidth {:.1} GB/s ({} threads); f32 GEMM peak {:.1} GFLOP/s (1024³)",
        machine.bandwidth_gbs, machine.threads, machine.peak_gflops
    );
    let max_c = *a.concurrency.iter().max().expect("non-empty");
    // in process: the server, and the engine over the same weights for the paired ratio
    let mut local: Option<(Server, Engine<'static>, WeightDtype)> = None;
    let url = match &a.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            if a.model.is_none() && a.run.is_none() && a.config.is_none() {
                anyhow::bail!("give --url URL of a running server, or --model/--run/--config to start one here");
            }
            let (served, engine_model, desc) = bench_models(&a)?;
            let n_ctx = engine_model.cfg.n_ctx;
            if a.prompt_len + a.max_tokens > n_ctx {
                anyhow::bail!("--prompt-len {} + --max-tokens {} exceed the model's context of {n_ctx}", a.prompt_len, a.max_tokens);
            }
            let dt = a.dtype.map(super::bench::dtype_of).unwrap_or_else(|| moe_infer::engine::weights::default_dtype(&engine_model));
            println!("model    {desc}; weights {}", dt.name());
            let opts = ServeOptions {
                port: 0,
                dtype: Some(dt),
                max_seqs: max_c.max(1),
                max_queue: max_c.max(1) * 4,
                kv_memory: usize::MAX / 4,
                max_tokens: a.max_tokens,
                served_model_name: "bench".into(),
                api_key: a.api_key.clone(),
                ..Default::default()
            };
            let server = Server::start(opts, move || Ok(served))?;
            server.wait_ready()?;
            // the engine borrows its model for its lifetime; the model lives as long as the run
            let model: &'static mut Transformer<f32> = Box::leak(Box::new(engine_model));
            let w = EngineWeights::new_taking(model, dt);
            let model: &'static Transformer<f32> = model;
            let engine = Engine::with_weights(model, w, Kernel::Auto)?;
            let url = server.url();
            local = Some((server, engine, dt));
            url
        }
    };
    println!("server   {url}");
    println!(
        "load     {} random prompt tokens, {} greedy tokens (ignore_eos) per request, {}; {} round(s) per level",
        a.prompt_len,
        a.max_tokens,
        if a.stream { "streamed" } else { "not streamed (--stream for TTFT/TPOT/ITL)" },
        a.rounds
    );
    let mut csv = String::from("concurrency,round,requests,ok,failures,stream,prompt_len,max_tokens,wall_s,requests_per_s,output_tokens_per_s,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,itl_p50_ms,itl_p90_ms,itl_p99_ms,e2e_p50_ms,e2e_p90_ms,e2e_p99_ms,engine_decode_tok_s,ratio\n");
    let mut jsonl = String::new();
    let mut thr = Vec::new();
    let mut eng_pts = Vec::new();
    let (mut ttft_pts, mut tpot_pts, mut e2e_pts) = (Vec::new(), Vec::new(), Vec::new());
    println!();
    println!(
        "{:>5} {:>9} {:>6} {:>10} {:>20} {:>20} {:>20} {:>12} {:>8}",
        "conc", "req/s", "fail", "out tok/s", "TTFT p50/90/99 ms", "TPOT p50/90/99 ms", "e2e p50/90/99 ms", "engine tok/s", "ratio"
    );
    for &c in &a.concurrency {
        let requests = a.requests.unwrap_or((2 * c).max(8));
        let mut spec = LoadSpec {
            url: url.clone(),
            api_key: a.api_key.clone(),
            concurrency: c,
            requests,
            prompt_len: a.prompt_len,
            max_tokens: a.max_tokens,
            stream: a.stream,
            seed: a.seed,
            timeout: Duration::from_secs(a.timeout_s),
        };
        let mut reports: Vec<LevelReport> = Vec::new();
        let mut ratios = Vec::new();
        let mut engine_tps = Vec::new();
        for round in 0..a.rounds {
            // prompts differ per level and round, so that no server answers from a cached prefix
            spec.seed = a.seed.wrapping_mul(0x9E37_79B9).wrapping_add(((c as u64) << 20) + round as u64);
            // A: the engine alone at batch c (in process only), B: the server at concurrency c
            let engine_tok_s = match &mut local {
                Some((_, engine, _)) => {
                    let mut runner = Runner::Engine(engine);
                    let rows = bench_infer(&mut runner, &machine, &[c], a.prompt_len, a.max_tokens, 1, a.seed + round as u64)?;
                    Some(rows[0].decode_tokens_per_s)
                }
                None => None,
            };
            let pb = progress(requests, format!("concurrency {c}, round {}/{}", round + 1, a.rounds));
            let pb2 = pb.clone();
            let (_, r) = run_level_blocking(&spec, Arc::new(move || pb2.inc(1)))?;
            pb.finish_and_clear();
            let ratio = engine_tok_s.map(|e| r.output_tokens_per_s / e);
            if let Some(e) = engine_tok_s {
                engine_tps.push(e);
            }
            if let Some(q) = ratio {
                ratios.push(q);
            }
            let opt = |v: Option<f64>, p: usize| v.map_or(String::new(), |x| format!("{x:.p$}"));
            let _ = writeln!(
                csv,
                "{c},{round},{},{},{},{},{},{},{:.4},{:.4},{:.3},{},{},{},{},{},{}",
                r.requests,
                r.ok,
                r.failures,
                r.stream,
                r.prompt_len,
                r.max_tokens,
                r.wall_s,
                r.requests_per_s,
                r.output_tokens_per_s,
                csv_ms(&r.ttft_s),
                csv_ms(&r.tpot_s),
                csv_ms(&r.itl_s),
                csv_ms(&r.e2e_s),
                opt(engine_tok_s, 3),
                opt(ratio, 4),
            );
            let mut j = serde_json::to_value(&r)?;
            j["round"] = round.into();
            j["engine_decode_tokens_per_s"] = engine_tok_s.into();
            j["ratio_to_engine"] = ratio.into();
            j["machine_bandwidth_gbs"] = machine.bandwidth_gbs.into();
            j["machine_peak_gflops"] = machine.peak_gflops.into();
            jsonl.push_str(&j.to_string());
            jsonl.push('\n');
            if let Some(e) = &r.first_error {
                eprintln!("concurrency {c}: {} of {} requests failed; the first: {e}", r.failures, r.requests);
            }
            reports.push(r);
        }
        // the median round by output throughput, and the median of the paired ratios
        reports.sort_by(|x, y| x.output_tokens_per_s.total_cmp(&y.output_tokens_per_s));
        let r = &reports[reports.len() / 2];
        let med = |v: &mut Vec<f64>| -> Option<f64> {
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| v[v.len() / 2])
        };
        let ratio = med(&mut ratios);
        let eng = med(&mut engine_tps);
        let triple = |p: &moe_serve::bench::Pcts| {
            if p.n == 0 {
                "-".to_string()
            } else {
                format!("{:.1}/{:.1}/{:.1}", ms(p.p50), ms(p.p90), ms(p.p99))
            }
        };
        println!(
            "{:>5} {:>9.2} {:>6} {:>10.1} {:>20} {:>20} {:>20} {:>12} {:>8}",
            c,
            r.requests_per_s,
            r.failures,
            r.output_tokens_per_s,
            triple(&r.ttft_s),
            triple(&r.tpot_s),
            triple(&r.e2e_s),
            eng.map_or("-".into(), |e| format!("{e:.1}")),
            ratio.map_or("-".into(), |q| format!("{:.1}%", 100.0 * q)),
        );
        thr.push((c as f64, r.output_tokens_per_s));
        if let Some(e) = eng {
            eng_pts.push((c as f64, e));
        }
        if r.ttft_s.n > 0 {
            ttft_pts.push((c as f64, ms(r.ttft_s.p50)));
            tpot_pts.push((c as f64, ms(r.tpot_s.p50)));
        }
        e2e_pts.push((c as f64, ms(r.e2e_s.p50)));
    }
    if local.is_some() {
        println!();
        println!("ratio    server output tokens/s ÷ engine decode tokens/s at the same batch, median of the paired rounds");
        println!("         (the server's figure includes prefill and queueing; the engine's is decode steps only)");
    }
    if let Some((server, _, _)) = local.take() {
        server.shutdown();
    }
    let Some(out) = &a.out else {
        println!();
        println!("(--out DIR writes bench_serve.csv, metrics.jsonl and the plots)");
        return Ok(());
    };
    write_outputs(out, &csv, &jsonl, thr, eng_pts, ttft_pts, tpot_pts, e2e_pts, machine.threads)
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    out: &PathBuf,
    csv: &str,
    jsonl: &str,
    thr: Vec<(f64, f64)>,
    eng: Vec<(f64, f64)>,
    ttft: Vec<(f64, f64)>,
    tpot: Vec<(f64, f64)>,
    e2e: Vec<(f64, f64)>,
    threads: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let csv_path = out.join("bench_serve.csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    write_atomic(&out.join("metrics.jsonl"), jsonl.as_bytes())?;
    let mut series = vec![Series { name: "server output tokens/s".into(), points: thr, ..Default::default() }];
    if !eng.is_empty() {
        series.push(Series { name: "engine decode tokens/s (same batch)".into(), points: eng, thin: true, ..Default::default() });
    }
    let chart = LineChart {
        title: format!("moe serve throughput, {threads} threads"),
        x_desc: "concurrent clients".into(),
        y_desc: "output tokens/s".into(),
        log_x: true,
        int_x: true,
        series,
    };
    let fig = line_chart(out, "bench_serve", &chart)?;
    let mut lat = Vec::new();
    if !ttft.is_empty() {
        lat.push(Series { name: "TTFT p50".into(), points: ttft, ..Default::default() });
        lat.push(Series { name: "TPOT p50".into(), points: tpot, ..Default::default() });
    }
    lat.push(Series { name: "e2e p50".into(), points: e2e, ..Default::default() });
    let chart = LineChart {
        title: "moe serve latency".into(),
        x_desc: "concurrent clients".into(),
        y_desc: "milliseconds".into(),
        log_x: true,
        int_x: true,
        series: lat,
    };
    let fig2 = line_chart(out, "bench_serve_latency", &chart)?;
    println!();
    println!("wrote {}, {}, {} and {}", csv_path.display(), out.join("metrics.jsonl").display(), fig.png.display(), fig2.png.display());
    Ok(())
}
