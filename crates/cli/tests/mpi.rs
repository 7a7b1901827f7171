//! `moe` under `mpirun`: the MPI backend, data- and expert-parallel training equal to one process,
//! resharding on resume, failure handling.
//!
//! These need an MPI build of `moe` — this test built with `--features mpi`
//! (`cargo test -p moe-cli --features mpi --test mpi`, as `.ci/run` does), or one named by
//! `MOE_MPI_BIN` — and `mpirun` on the PATH; without them each test says SKIPPED (recorded for
//! `.ci/run`, which fails when a skipped one did not also run). Every launch has its own `TMPDIR`, a timeout,
//! `--oversubscribe --allow-run-as-root --bind-to none`: the ranks share this machine's cores.

use std::path::{Path, PathBuf};
mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The MPI-enabled binary, or `None` (after recording the skip).
fn mpi_moe(test: &str) -> Option<PathBuf> {
    let bin = if cfg!(feature = "mpi") {
        Some(PathBuf::from(env!("CARGO_BIN_EXE_moe")))
    } else {
        std::env::var_os("MOE_MPI_BIN").map(PathBuf::from)
    };
    let mpirun = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    let ok = bin.as_ref().is_some_and(|b| b.exists()) && mpirun;
    if !ok {
        eprintln!("SKIPPED: {test}: needs `--features mpi` (or MOE_MPI_BIN naming such an `moe`) and mpirun");
    }
    moe_testutil::needs_cpu("mpi", test, ok).then(|| bin.unwrap())
}

/// Open MPI settings for containers: no cross-memory attach (it needs ptrace rights a container
/// may not grant), oversubscription allowed.
fn quiet_mpi(c: &mut Command) {
    c.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none").env("OMPI_MCA_rmaps_base_oversubscribe", "1");
}

/// `mpirun -np <np> <bin> <args>` with a fresh TMPDIR and a time limit.
fn mpirun(bin: &Path, np: usize, args: &[&str], env: &[(&str, &str)], limit_s: u64) -> (Output, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Command::new("timeout");
    c.arg(limit_s.to_string())
        .arg("mpirun")
        .args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np"])
        .arg(np.to_string());
    for (k, _) in env {
        c.args(["-x", k]);
    }
    c.arg(bin).args(args).env("TMPDIR", tmp.path());
    quiet_mpi(&mut c);
    for (k, v) in env {
        c.env(k, v);
    }
    let t0 = Instant::now();
    let out = c.output().expect("run mpirun");
    (out, t0.elapsed())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const EXP: &str = r#"
[model]
n_vocab = 256
n_ctx = 16
n_layer = 2
d_model = 16
n_head = 2
n_head_kv = 1
d_ff = 32

[model.moe]
n_expert = 4
n_expert_active = 2
d_expert = 8
aux_loss_coef = 0.01
z_loss_coef = 0.001
bias_update_rate = 0.01

[train]
steps = 8
batch_size = 4
seq_len = 16
lr = 3e-3
warmup_steps = 2
eval_every = 4
eval_batches = 2
checkpoint_every = 4

[data]
synthetic_bytes = 40000
"#;

fn metric(run: &Path, kind: &str, key: &str) -> Vec<f64> {
    let s = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    s.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == kind)
        .map(|r| r[key].as_f64().unwrap())
        .collect()
}

fn close(what: &str, a: &[f64], b: &[f64], rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= rtol * y.abs(), "{what}[{i}]: {x} vs {y}");
    }
}

fn train(bin: &Path, np: usize, ep: usize, cfg: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["train", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    let eps = ep.to_string();
    args.extend(["--expert-parallel", &eps]);
    args.extend(extra);
    let (o, _) = if np == 1 {
        let t0 = Instant::now();
        (Command::new(bin).args(&args).output().unwrap(), t0.elapsed())
    } else {
        mpirun(bin, np, &args, &[], 120)
    };
    assert!(o.status.success(), "np {np}, EP {ep}: {}", text(&o));
}

#[test]
fn mpi_collectives_and_token_exchange_are_exact_on_1_to_4_ranks() {
    let Some(bin) = mpi_moe("mpi::collectives_and_token_exchange") else { return };
    for np in 1..=4 {
        let (o, _) = mpirun(&bin, np, &["debug-dist"], &[], 60);
        let t = text(&o);
        assert!(o.status.success(), "np {np}: {t}");
        for r in 0..np {
            assert!(t.contains(&format!("rank {r} of {np} (mpi):")), "np {np}: rank {r} did not report: {t}");
        }
    }
}

#[test]
fn mpirun_training_equals_one_process_and_reshards_on_resume() {
    let Some(bin) = mpi_moe("mpi::training_equals_one_process") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(&cfg, EXP).unwrap();
    let one = tmp.path().join("one");
    train(&bin, 1, 1, &cfg, &one, &[]);
    let (l1, v1) = (metric(&one, "train", "loss"), metric(&one, "eval", "val_loss"));
    assert_eq!(l1.len(), 8);
    // EP only, DP only, DP × EP
    for (np, ep) in [(2, 2), (2, 1), (4, 2)] {
        let out = tmp.path().join(format!("np{np}_ep{ep}"));
        train(&bin, np, ep, &cfg, &out, &[]);
        close(&format!("np {np}, EP {ep}: train loss"), &metric(&out, "train", "loss"), &l1, 1e-5);
        close(&format!("np {np}, EP {ep}: validation loss"), &metric(&out, "eval", "val_loss"), &v1, 1e-5);
    }
    // the EP=2 run's checkpoint holds the whole model: one process evaluates it
    let ep2 = tmp.path().join("np2_ep2");
    let o = Command::new(&bin).args(["eval", "--run", ep2.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // saved at EP=2 after 4 steps, resumed at EP=1 (one process) and EP=4: the next steps are the
    // uninterrupted run's
    let l2 = metric(&ep2, "train", "loss");
    for (np, ep) in [(1, 1), (4, 4)] {
        let out = tmp.path().join(format!("resume_np{np}"));
        copy_dir(&ep2, &out);
        std::fs::write(out.join("checkpoints/latest"), "step_000004").unwrap();
        std::fs::remove_dir_all(out.join("checkpoints/step_000008")).unwrap();
        train(&bin, np, ep, &cfg, &out, &["--resume"]);
        close(&format!("resumed at np {np}, EP {ep}"), &metric(&out, "train", "loss"), &l2, 1e-5);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), p).unwrap();
        }
    }
}

#[test]
fn mpirun_a_failing_rank_ends_the_job_with_an_error() {
    let Some(bin) = mpi_moe("mpi::failing_rank_ends_the_job") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(&cfg, EXP).unwrap();
    let out = tmp.path().join("run");
    let args = ["train", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--expert-parallel", "2"];
    // a panic on rank 1 while rank 0 waits in a collective
    let (o, took) = mpirun(&bin, 2, &args, &[("MOE_DEBUG_PANIC_RANK", "1")], 60);
    let t = text(&o);
    assert!(!o.status.success() && o.status.code() != Some(124), "the job did not fail by itself: {:?} {t}", o.status);
    assert!(t.contains("MOE_DEBUG_PANIC_RANK=1: this rank panics on purpose"), "{t}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // an error on every rank: 4 sequences cannot be shared by 3 ranks
    let (o, took) = mpirun(&bin, 3, &args[..6], &[], 60);
    let t = text(&o);
    assert!(!o.status.success() && o.status.code() != Some(124), "{t}");
    assert!(t.contains("train.batch_size") && t.contains("3 ranks"), "{t}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// Greedy completions of `prompts`, sent at once (so they share engine steps).
fn complete_all(addr: &str, prompts: &[&str]) -> Vec<String> {
    std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let body = serde_json::json!({"prompt": p, "max_tokens": 8, "temperature": 0}).to_string();
                    let (st, b) = common::http(addr, "POST", "/v1/completions", &body);
                    assert_eq!(st, 200, "{b}");
                    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
                    v["choices"][0]["text"].as_str().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// CPU seconds (user + system) a process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// An `mpirun` job started by the test: stopped on drop, whatever happened (SIGTERM, which mpirun
/// forwards to its ranks, then SIGKILL to it and to any rank left after 10 s).
struct MpiJob {
    guard: common::Guard,
    bin: PathBuf,
    /// a string only this job's ranks have on their command line
    run: String,
}

impl Drop for MpiJob {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.guard.0.id().to_string()]).status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if matches!(self.guard.0.try_wait(), Ok(Some(_))) && ranks_of(&self.bin, &self.run).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in ranks_of(&self.bin, &self.run) {
            let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
        }
        // the guard kills mpirun itself
    }
}

/// Processes running `bin` whose command line contains `needle`.
fn ranks_of(bin: &Path, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| Path::new(a) == bin) && args.iter().any(|a| a.contains(needle)) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn mpirun_expert_parallel_serving_equals_one_process_and_idles_quietly() {
    let Some(bin) = mpi_moe("mpi::expert_parallel_serving") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("exp.toml");
    std::fs::write(&cfg, EXP).unwrap();
    let run = tmp.path().join("served");
    train(&bin, 1, 1, &cfg, &run, &[]);
    let prompts = ["the cat", "hello", "1234567", "zq", "x"]; // at most 8 bytes: n_ctx is 16
    let mut one = Command::new(&bin);
    one.args(["serve", "--run", run.to_str().unwrap(), "--port", "0"]);
    let (g1, addr) = common::start_server(one);
    let want = complete_all(&addr, &prompts);
    drop(g1);
    let sock = tempfile::tempdir().unwrap();
    let mut ep = Command::new("mpirun");
    ep.args(["--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", "2"])
        .arg(&bin)
        .args(["serve", "--run", run.to_str().unwrap(), "--port", "0", "--expert-parallel", "2"])
        .env("TMPDIR", sock.path());
    quiet_mpi(&mut ep);
    // mpirun itself, not a `timeout` around it: killing a wrapper would orphan the ranks
    let (g2, addr) = common::start_server(ep);
    let g2 = MpiJob { guard: g2, bin: bin.clone(), run: run.to_str().unwrap().to_string() };
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(complete_all(&addr, &prompts), want, "expert-parallel greedy completions differ from one process");
    // idle: the ranks sleep instead of spinning in MPI
    std::thread::sleep(Duration::from_millis(500));
    let pids = ranks_of(&bin, &g2.run);
    assert_eq!(pids.len(), 2, "two ranks: {pids:?}");
    let before: Vec<f64> = pids.iter().map(|&p| cpu_s(p)).collect();
    std::thread::sleep(Duration::from_secs(2));
    for (&p, b) in pids.iter().zip(before) {
        let used = cpu_s(p) - b;
        assert!(used < 0.5, "an idle rank (pid {p}) used {used:.2} CPU seconds in 2 s");
    }
    drop(g2);
}
