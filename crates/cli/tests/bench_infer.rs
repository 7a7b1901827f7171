//! `moe bench infer` (fast engine and reference, every weight format, CSV + plot),
//! `moe bench quality` and `moe generate --engine/--dtype` on a tiny trained run.

mod common;

use common::{fails, ok, s};

#[test]
fn cli_bench_infer_quality_and_engine_generate() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&["train", "--config", "configs/tiny/mixtral.toml", "--set", "train.steps=3", "--out", s(&run), "--quiet"]);

    let out_dir = dir.path().join("bench");
    let out = ok(&[
        "bench",
        "infer",
        "--run",
        s(&run),
        "--batch",
        "1,3",
        "--prompt-len",
        "5",
        "--n-decode",
        "3",
        "--dtype",
        "f32,bf16,int8,q4",
        "--reps",
        "1",
        "--out",
        s(&out_dir),
    ]);
    for needle in
        ["read bandwidth", "GEMM peak", "weights bf16", "weights i8", "weights q4", "MB/step", "GB/s", "GFLOP/s", "roofline", "(uniform"]
    {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let csv = std::fs::read_to_string(out_dir.join("bench_infer.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 2, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.starts_with("fast,")), "{csv}");
    assert!(out_dir.join("bench_infer.png").is_file() && out_dir.join("bench_infer.svg").is_file());

    let reference = ok(&[
        "bench",
        "infer",
        "--config",
        "configs/tiny/mixtral.toml",
        "--engine",
        "reference",
        "--batch",
        "2",
        "--prompt-len",
        "4",
        "--n-decode",
        "2",
        "--reps",
        "1",
    ]);
    assert!(reference.contains("engine reference"), "{reference}");
    fails(&["bench", "infer", "--config", "configs/tiny/mixtral.toml", "--prompt-len", "60", "--n-decode", "10"], &["context"]);
    fails(&["bench", "infer", "--batch", "1"], &["--run"]);

    let q = ok(&["bench", "quality", "--run", s(&run), "--windows", "2", "--seq-len", "16"]);
    assert!(q.contains("KL mean") && q.contains("bf16") && q.contains("i8") && q.contains("q4k"), "{q}");
    // a GGUF file of another model is an error naming both, not a panic
    let other = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden_gguf/mixtral/mixtral-f32.gguf");
    fails(
        &["bench", "quality", "--run", s(&run), "--dtype", "bf16", "--windows", "1", "--gguf", s(&other)],
        &["mixtral-f32.gguf", "differ in shape"],
    );

    let fast = ok(&["generate", "--run", s(&run), "--prompt", "12+3", "--max-tokens", "8", "--temperature", "0"]);
    let slow = ok(&["generate", "--run", s(&run), "--prompt", "12+3", "--max-tokens", "8", "--temperature", "0", "--engine", "reference"]);
    assert_eq!(fast, slow);
    let (want, tokens) = common::library_greedy(&run, "12+3", 8, None);
    assert_eq!(tokens.len(), 8, "{tokens:?}");
    assert_eq!(fast, want, "moe generate vs the library's greedy continuation {tokens:?}");
    let int8 = ok(&["generate", "--run", s(&run), "--prompt", "12+3", "--max-tokens", "8", "--temperature", "0", "--dtype", "int8"]);
    // the int8 engine's greedy continuation, computed in-process with the same weight format
    let (want, tokens) = common::library_greedy(&run, "12+3", 8, Some(moe_kernels::quant::WeightDtype::I8));
    assert_eq!(tokens.len(), 8, "{tokens:?}");
    assert_eq!(int8, want, "moe generate --dtype int8 vs the library's int8 greedy continuation {tokens:?}");
}
