//! `moe serve` and `moe bench serve` as real processes: the server binds loopback by default,
//! prints its URL when ready, answers HTTP, and exits 0 on SIGTERM; bad options exit non-zero
//! with a message. Every wait is bounded; traffic goes to 127.0.0.1 only.

mod common;

use common::{fails, http, ok, repo, s, Guard};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A copy of the tiny golden Llama checkpoint with a WordLevel tokenizer (`w0` … `w127`).
fn checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("tests/golden_hf/llama");
    for f in std::fs::read_dir(&src).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let vocab: serde_json::Map<String, serde_json::Value> = (0..128).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": { "type": "WhitespaceSplit" }, "post_processor": null, "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "w0" }
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

#[test]
fn serve_binds_loopback_answers_and_exits_cleanly_on_sigterm() {
    let dir = checkpoint();
    let child = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(["serve", "--model", s(dir.path()), "--port", "0", "--served-model-name", "tiny"])
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run moe serve");
    let mut g = Guard(child);
    // the ready line: `moe serve: model `tiny` ready at http://127.0.0.1:PORT/v1 (Ctrl-C to stop)`
    let mut line = String::new();
    BufReader::new(g.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no URL in {line:?}"));
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "binds loopback by default: {line}");
    assert_eq!(http(&addr, "GET", "/health", "").0, 200);
    let (st, body) =
        http(&addr, "POST", "/v1/completions", r#"{"model": "tiny", "prompt": "w5 w6 w7", "max_tokens": 3, "temperature": 0}"#);
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"].as_u64().unwrap() + v["usage"]["prompt_tokens"].as_u64().unwrap(), 6, "{v}");
    let (st, body) = http(&addr, "POST", "/v1/completions", r#"{"prompt": "w5", "temperature": -1}"#);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\"param\":\"temperature\""), "{body}");
    // SIGTERM: a clean exit, without waiting for anything
    let pid = g.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = g.0.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "moe serve did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    g.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "exit {status:?}; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn serve_refuses_bad_options_and_checkpoints() {
    let empty = tempfile::tempdir().unwrap();
    let o = common::moe(&["serve", "--model", s(empty.path()), "--port", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("tokenizer.json"), "names what is missing: {err}");
    fails(&["serve", "--model", s(empty.path()), "--kv-memory", "lots"], &["kv-memory"]);
    let dir = checkpoint();
    let o = common::moe(&["serve", "--model", s(dir.path()), "--port", "0", "--max-seqs", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--max-seqs"), "{err}");
}

#[test]
fn bench_serve_runs_in_process_and_writes_csv_and_plots() {
    let out = tempfile::tempdir().unwrap();
    let cfg = repo().join("configs/tiny/mixtral.toml");
    let msg = ok(&[
        "bench",
        "serve",
        "--config",
        s(&cfg),
        "--concurrency",
        "1,3",
        "--requests",
        "6",
        "--prompt-len",
        "5",
        "--max-tokens",
        "4",
        "--rounds",
        "1",
        "--stream",
        "--out",
        s(out.path()),
    ]);
    assert!(msg.contains("read bandwidth") && msg.contains("GEMM peak"), "prints the machine: {msg}");
    let csv = std::fs::read_to_string(out.path().join("bench_serve.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for r in rows {
        let f: Vec<&str> = r.split(',').collect();
        // requests, ok, failures
        assert_eq!((f[2], f[3], f[4]), ("6", "6", "0"), "{r}");
    }
    assert!(out.path().join("bench_serve.png").is_file() && out.path().join("bench_serve_latency.png").is_file());
    assert_eq!(std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap().lines().count(), 2);
}
