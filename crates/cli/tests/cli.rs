//! End-to-end tests of the `moe` binary: real processes, real files, exit codes and messages.

mod common;

use common::{fails, ok, repo, s};

#[test]
fn cli_train_eval_info_generate_on_a_tiny_moe() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = ok(&["train", "--config", "configs/tiny/mixtral.toml", "--set", "train.steps=4", "--out", s(&run), "--quiet"]);
    assert!(out.contains("trained 4 steps"), "{out}");
    for f in ["config.resolved.toml", "metrics.jsonl", "checkpoints/latest"] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let train_lines: Vec<serde_json::Value> =
        metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).filter(|v| v["type"] == "train").collect();
    assert_eq!(train_lines.len(), 4);
    for l in &train_lines {
        assert!(l["loss"].as_f64().unwrap().is_finite());
        assert!(!l["moe"].as_array().unwrap().is_empty(), "MoE stats per layer");
    }
    let ev = ok(&["eval", "--run", s(&run)]);
    assert!(ev.contains("val loss") && ev.contains("perplexity"), "{ev}");
    let info = ok(&["info", "--run", s(&run)]);
    assert!(info.contains("active per token") && info.contains("sparsity"), "{info}");
    let gen = ok(&["generate", "--run", s(&run), "--prompt", "12+3", "--max-tokens", "8", "--temperature", "0"]);
    // the fast engine's greedy text equals the reference engine's, computed in-process; the byte
    // tokenizer has no end-of-sequence id, so all 8 tokens are generated
    let (want, tokens) = common::library_greedy(&run, "12+3", 8, None);
    assert_eq!(tokens.len(), 8, "{tokens:?}");
    assert_eq!(gen, want, "moe generate vs the library's greedy continuation {tokens:?}");
    // an existing run is not overwritten without --resume
    fails(&["train", "--config", "configs/tiny/mixtral.toml", "--set", "train.steps=4", "--out", s(&run), "--quiet"], &["--resume"]);
    // --resume continues to a higher step count
    let out = ok(&["train", "--config", "configs/tiny/mixtral.toml", "--set", "train.steps=6", "--out", s(&run), "--quiet", "--resume"]);
    assert!(out.contains("trained 6 steps"), "{out}");
}

#[test]
fn cli_info_reports_bench_preset_parameters_and_flops() {
    let out = ok(&["info", "--config", "configs/bench-small-moe.toml"]);
    assert!(out.contains("139.76M total") && out.contains("64.27M active"), "{out}");
    assert!(out.contains("sparsity          4.00"), "{out}");
    let js: serde_json::Value = serde_json::from_str(&ok(&["info", "--config", "configs/bench-small-dense.toml", "--json"])).unwrap();
    assert_eq!(js["params_total"], js["params_active"]);
    assert_eq!(js["layers"].as_array().unwrap().len(), 8);
}

#[test]
fn cli_every_tiny_preset_trains() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("configs/tiny")).unwrap() {
        let p = e.unwrap().path();
        let run = dir.path().join(p.file_stem().unwrap());
        let out = ok(&["train", "--config", s(&p), "--set", "train.steps=2", "--set", "train.eval_every=0", "--out", s(&run), "--quiet"]);
        assert!(out.contains("trained 2 steps"), "{}: {out}", p.display());
        n += 1;
    }
    assert!(n >= 7, "expected the 7 tiny presets, found {n}");
}

#[test]
fn cli_bad_inputs_fail_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let base = std::fs::read_to_string(repo().join("configs/tiny/dense.toml")).unwrap();
    std::fs::write(&cfg, base.replace("[train]", "[train]\nlearning_rate = 1.0")).unwrap();
    fails(&["train", "--config", s(&cfg), "--out", s(&dir.path().join("r1"))], &["bad.toml", "learning_rate"]);
    fails(
        &["train", "--config", "configs/tiny/dense.toml", "--set", "model.n_head=5", "--out", s(&dir.path().join("r2"))],
        &["model.n_head", "divisible"],
    );
    fails(
        &["train", "--config", "configs/tiny/mixtral.toml", "--set", "model.moe.n_expert_active=9", "--out", s(&dir.path().join("r3"))],
        &["n_expert_active"],
    );
    fails(&["train", "--config", s(&dir.path().join("missing.toml"))], &["missing.toml"]);
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails(
        &[
            "train",
            "--config",
            "configs/tiny/dense.toml",
            "--set",
            &format!("data.source={}", s(&empty)),
            "--out",
            s(&dir.path().join("r4")),
        ],
        &["empty.txt"],
    );
    fails(&["eval", "--run", s(&dir.path().join("no-such-run"))], &["no-such-run"]);
    // corrupt checkpoint
    let run = dir.path().join("run");
    ok(&["train", "--config", "configs/tiny/dense.toml", "--set", "train.steps=2", "--out", s(&run), "--quiet"]);
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let model = run.join("checkpoints").join(latest.trim()).join("model.safetensors");
    std::fs::write(&model, b"not a safetensors file").unwrap();
    fails(&["eval", "--run", s(&run)], &["model.safetensors"]);
}

#[test]
fn cli_bpe_tokenizer_trains_and_is_used_for_training() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("book.txt");
    let para = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with one step.\n";
    std::fs::write(&text, para.repeat(300)).unwrap();
    let tok = dir.path().join("tokenizer.json");
    let out = ok(&["tokenizer", "train", "--data", s(&text), "--vocab", "300", "--out", s(&tok)]);
    assert!(out.contains("tokenizer.json"), "{out}");
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--config",
        "configs/tiny/dense.toml",
        "--set",
        &format!("data.source={}", s(&text)),
        "--set",
        &format!("data.tokenizer={}", s(&tok)),
        "--set",
        "model.n_vocab=300",
        "--set",
        "train.steps=2",
        "--out",
        s(&run),
        "--quiet",
    ]);
    assert!(run.join("tokenizer.json").exists(), "the run keeps its tokenizer");
    // a tokenizer larger than the model's vocabulary is refused, naming both
    fails(
        &[
            "train",
            "--config",
            "configs/tiny/dense.toml",
            "--set",
            &format!("data.source={}", s(&text)),
            "--set",
            &format!("data.tokenizer={}", s(&tok)),
            "--set",
            "model.n_vocab=256",
            "--out",
            s(&dir.path().join("r")),
        ],
        &["tokenizer.json", "n_vocab"],
    );
}

#[test]
fn cli_compare_and_sweep_tiny_write_reports_with_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let text = ok(&["compare", "--scale", "tiny", "--out", s(&out), "--quiet"]);
    assert!(text.contains("reached val loss") && text.contains("at equal compute"), "{text}");
    for f in ["report.md", "report.html", "summary.json"] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let first_verdict = text.lines().next().unwrap();
    assert!(md.contains(first_verdict), "report.md carries the printed verdict");
    let sw = dir.path().join("sweep");
    let text = ok(&["sweep", "--scale", "tiny", "--top-k", "1", "--n-experts", "1,2,4", "--out", s(&sw), "--quiet"]);
    assert!(sw.join("report.md").exists() && sw.join("summary.json").exists(), "{text}");
    fails(&["compare", "--scale", "tiny", "--seeds", "0", "--out", s(&dir.path().join("x"))], &["--seeds"]);
}
