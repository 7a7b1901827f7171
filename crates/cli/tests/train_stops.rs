//! `moe train` stops cleanly: a diverging run (NaN/Inf loss or gradient) exits non-zero naming the
//! step and leaves the last good checkpoint as it was; an unusable run directory is an error naming
//! it, before any work.

mod common;

use common::{fails, moe, ok, s};
use std::path::Path;

fn latest(run: &Path) -> String {
    std::fs::read_to_string(run.join("checkpoints/latest")).unwrap().trim().to_string()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn cli_train_stops_at_a_diverging_step_keeping_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let base = ["train", "--config", "configs/tiny/switch.toml", "--out", s(&run), "--quiet", "--set", "train.checkpoint_every=2"];
    ok(&[&base[..], &["--set", "train.steps=2"]].concat());
    assert_eq!(latest(&run), "step_000002");
    let good = files(&run.join("checkpoints/step_000002"));

    // the same run continued with an absurd learning rate and no clipping: the weights blow up
    let o = moe(&[&base[..], &["--resume", "--set", "train.steps=12", "--set", "train.lr=1e30", "--set", "train.grad_clip=0"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "a diverged run exits 2; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let at = err.find("training diverged at step ").unwrap_or_else(|| panic!("the error names the step:\n{err}"));
    let step: usize = err[at + "training diverged at step ".len()..].split(':').next().unwrap().parse().unwrap();
    assert!(step > 2 && step <= 12, "diverged at step {step}");
    assert!(err.contains("NaN") || err.contains("inf"), "the error says what became non-finite:\n{err}");

    // no checkpoint of the diverged step (or after); the last good one is untouched and loads
    let last = latest(&run);
    let last_step: usize = last.trim_start_matches("step_").parse().unwrap();
    assert!(last_step < step, "latest {last} is not before the diverged step {step}");
    assert!(!run.join(format!("checkpoints/step_{step:06}")).exists());
    assert_eq!(files(&run.join("checkpoints/step_000002")), good, "the good checkpoint was rewritten");
    let st = safetensors::SafeTensors::deserialize(&std::fs::read(run.join("checkpoints").join(&last).join("model.safetensors")).unwrap())
        .map(|st| {
            st.tensors().iter().all(|(_, t)| t.data().chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()))
        })
        .unwrap();
    assert!(st, "the kept checkpoint holds only finite weights");
    // nothing was logged for the diverged step
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for l in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["step"].as_u64().unwrap() < step as u64, "a record of the diverged step or later: {l}");
        if let Some(x) = v.get("loss") {
            assert!(x.as_f64().is_some_and(f64::is_finite), "{l}");
        }
    }
    // the kept checkpoint still loads and the run continues from it with a sane learning rate
    let ev = ok(&["eval", "--run", s(&run)]);
    assert!(ev.contains("val loss"), "{ev}");
    let out = ok(&[&base[..], &["--resume", "--set", "train.steps=4"]].concat());
    assert!(out.contains("trained 4 steps"), "{out}");
}

#[test]
fn cli_train_into_an_unusable_run_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    // the run directory is a file, or lies below one
    for out in [file.clone(), file.join("run")] {
        fails(
            &["train", "--config", "configs/tiny/dense.toml", "--set", "train.steps=2", "--out", s(&out), "--quiet"],
            &[s(&out), "run directory"],
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}
