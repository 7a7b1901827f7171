//! Nothing is lost on a crash: real `moe train` processes on a tiny config, killed with SIGKILL
//! while a checkpoint is being written (a temporary file seen in the run directory), while a step
//! runs (just after a step's record appears), and at seeded random delays, then `--resume`d to the
//! end, give a `metrics.jsonl` equal record for record, bit for bit, to an uninterrupted run's —
//! no duplicated or torn lines — and the same final weights; and after every kill the checkpoint
//! `latest` names is complete.

mod common;

use common::{repo, s};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 48;

/// `moe train` on the tiny Switch config: 48 steps, a checkpoint every 3, an evaluation every 5
/// (so evaluations and checkpoints interleave), every step logged.
fn train_cmd(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moe"));
    c.args(["train", "--config", "configs/tiny/switch.toml", "--out", s(out), "--quiet", "--resume"]);
    for set in
        [&format!("train.steps={STEPS}"), "train.checkpoint_every=3", "train.eval_every=5", "train.log_every=1", "train.warmup_steps=4"]
    {
        c.args(["--set", set]);
    }
    c.current_dir(repo()).env("RAYON_NUM_THREADS", "2").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Wait for `child` at most `limit`; kill it and fail past that.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Run to the end (resuming whatever is there) and expect success.
fn finish(out: &Path) {
    let mut child = train_cmd(out).spawn().expect("spawn moe");
    let st = wait_bounded(&mut child, Duration::from_secs(60), "moe train --resume");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(st.success(), "moe train --resume failed ({st:?}):\n{err}");
}

/// Every record of `metrics.jsonl`; every line must be a complete JSON object.
fn records(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line in metrics.jsonl");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn metrics line {l:?}: {e}"))).collect()
}

/// The values a resumed run must reproduce exactly, as bit patterns: per record its type, step and
/// every loss-like number (wall-clock fields such as `elapsed_s` and `tokens_per_s` differ).
/// (record type, step, (field, value bits) per field)
type Record = (String, u64, Vec<(&'static str, u64)>);

fn curve(recs: &[serde_json::Value]) -> Vec<Record> {
    recs.iter()
        .map(|r| {
            let keys: &[&'static str] = match r["type"].as_str() {
                Some("train") => &["loss", "ce", "aux", "z", "lr", "grad_norm", "tokens", "flops"],
                Some("eval") => &["val_loss", "val_total_loss", "val_tokens"],
                other => panic!("unknown record type {other:?}"),
            };
            let vals = keys
                .iter()
                .map(|&k| {
                    let v = r[k].as_f64().unwrap_or_else(|| panic!("record {r}: `{k}` is not a number"));
                    assert!(v.is_finite(), "record {r}: `{k}` is {v}");
                    (k, v.to_bits())
                })
                .collect();
            (r["type"].as_str().unwrap().to_string(), r["step"].as_u64().unwrap(), vals)
        })
        .collect()
}

/// Checks after a kill: `latest`, when present, names a complete checkpoint (files that parse in
/// full, a state at the step of its directory). Returns that step (0 without one) and whether a
/// checkpoint's temporary file was left behind (the kill landed inside a write).
fn check_after_kill(run: &Path) -> (u64, bool) {
    let ck = run.join("checkpoints");
    let torn_tmp = std::fs::read_dir(&ck)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .any(|f| f.file_name().to_string_lossy().ends_with(".tmp"));
    let Ok(name) = std::fs::read_to_string(ck.join("latest")) else { return (0, torn_tmp) };
    assert!(name.ends_with('\n'), "latest is torn: {name:?}");
    let dir = ck.join(name.trim());
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let bytes = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()));
        safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}/{f} is incomplete: {e}", dir.display()));
    }
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    assert_eq!(name.trim(), format!("step_{step:06}"), "latest names the directory of its state's step");
    (step, torn_tmp)
}

/// A checkpoint temporary file (`.model.safetensors.tmp`, …) exists under `checkpoints/`.
fn tmp_present(ck: &Path) -> bool {
    let Ok(dirs) = std::fs::read_dir(ck) else { return false };
    dirs.flatten().any(|d| {
        std::fs::read_dir(d.path()).map(|fs| fs.flatten().any(|f| f.file_name().to_string_lossy().ends_with(".tmp"))).unwrap_or(false)
    })
}

/// Steps of the train records in `metrics.jsonl` (complete lines only: the file is live).
fn logged_steps(run: &Path) -> u64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|r| r["type"] == "train").count() as u64
}

/// splitmix64: the seeded delays and targets.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// as soon as a checkpoint temporary file is seen (inside a checkpoint write), or else once
    /// this many train records are logged
    CheckpointWrite(u64),
    /// as soon as this many train records are logged (the next step, an evaluation or a
    /// checkpoint is running)
    AfterStep(u64),
    /// this long after the start
    Delay(Duration),
}

#[test]
fn sigkilled_training_resumes_to_the_uninterrupted_curve_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    finish(&reference);
    let t_full = t0.elapsed();
    let want = records(&reference);
    assert_eq!(want.iter().filter(|r| r["type"] == "train").count() as u64, STEPS);

    let run: PathBuf = tmp.path().join("crashed");
    let ck = run.join("checkpoints");
    let mut rng = 0x5EED_u64;
    let (mut kills, mut inside_write, mut resumed_from) = (0, 0, Vec::new());
    for round in 0..60 {
        let mut logged = logged_steps(&run);
        if kills >= 8 && inside_write >= 1 {
            break;
        }
        if logged + 4 >= STEPS {
            // near the end without every kind of kill yet: start the crashed run over
            std::fs::remove_dir_all(&run).unwrap();
            (kills, inside_write, logged) = (0, 0, 0);
            resumed_from.clear();
        }
        let at = match round % 3 {
            1 => KillAt::AfterStep(logged + 1 + next(&mut rng) % 5),
            // up to a third of the time the whole reference run took (start-up included); until a
            // kill has landed inside a checkpoint write, aim for one instead
            2 if inside_write > 0 => KillAt::Delay(Duration::from_micros(next(&mut rng) % (t_full.as_micros() as u64 / 3).max(1))),
            _ => KillAt::CheckpointWrite(logged + 7),
        };
        let t0 = Instant::now();
        let mut child = train_cmd(&run).spawn().expect("spawn moe");
        let killed = loop {
            if child.try_wait().unwrap().is_some() {
                break false; // finished before the kill point: nothing to test this round
            }
            let now = match at {
                KillAt::CheckpointWrite(n) => tmp_present(&ck) || logged_steps(&run) >= n,
                KillAt::AfterStep(n) => logged_steps(&run) >= n,
                KillAt::Delay(d) => t0.elapsed() >= d,
            };
            if now {
                child.kill().expect("SIGKILL");
                break true;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "round {round}: no kill point {at:?} within 60 s");
            if matches!(at, KillAt::Delay(_)) {
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        let st = wait_bounded(&mut child, Duration::from_secs(30), "killed moe train");
        if !killed {
            assert!(st.success(), "round {round}: moe train failed before the kill point ({st:?})");
            // completed: start the crashed run over, so later rounds still have steps to kill
            std::fs::remove_dir_all(&run).unwrap();
            (kills, inside_write) = (0, 0);
            resumed_from.clear();
            continue;
        }
        kills += 1;
        let (step, torn) = check_after_kill(&run);
        eprintln!("round {round}: killed at {at:?} after {:?}: latest checkpoint {step}, inside a write: {torn}", t0.elapsed());
        inside_write += torn as usize;
        resumed_from.push(step);
    }
    // the run must actually have been interrupted, a checkpoint write included
    assert!(kills >= 6, "only {kills} kills landed");
    assert!(inside_write >= 1, "no kill landed inside a checkpoint write ({kills} kills, resumed from {resumed_from:?})");
    finish(&run);

    let got = records(&run);
    assert_eq!(curve(&got), curve(&want), "resumed after {kills} kills (checkpoints {resumed_from:?}): the metrics differ");
    // no record twice
    let mut keys: Vec<(String, u64)> = got.iter().map(|r| (r["type"].as_str().unwrap().to_string(), r["step"].as_u64().unwrap())).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicated metrics records");
    // and the same final weights and optimizer state
    // (tensor by tensor, bit for bit: the header's metadata order may differ between processes)
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let p = format!("checkpoints/step_{STEPS:06}/{f}");
        let (a, b) = (std::fs::read(run.join(&p)).unwrap(), std::fs::read(reference.join(&p)).unwrap());
        let (a, b) = (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
        let (mut na, mut nb) = (a.names(), b.names());
        na.sort();
        nb.sort();
        assert_eq!(na, nb, "{p}: tensor names");
        for n in na {
            let (ta, tb) = (a.tensor(n).unwrap(), b.tensor(n).unwrap());
            assert!(ta.shape() == tb.shape() && ta.data() == tb.data(), "{p}: tensor `{n}` differs from the uninterrupted run's");
        }
    }
}
