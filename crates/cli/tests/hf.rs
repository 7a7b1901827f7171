//! End-to-end tests of the Hugging Face commands of the `moe` binary on the tiny checkpoints of
//! `tests/golden_hf/`: `moe info/logits/generate/bench infer --model` and `moe export`.

mod common;

use common::{fails, ok, repo, s};
use moe_model::checkpoint::tensor_f32;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn golden(case: &str) -> PathBuf {
    repo().join("tests/golden_hf").join(case)
}

fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    st.tensor(name).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
}

fn cases() -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/golden_hf/MANIFEST.json")).unwrap()).unwrap();
    m["cases"].as_object().unwrap().keys().cloned().collect()
}

/// (first sequence's tokens, its logits [seq_len · n_vocab], greedy continuation)
fn expected(case: &str) -> (Vec<u32>, Vec<f32>, Vec<u32>) {
    let path = golden(case).join("expected.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, logits) = tensor_f32(&st, "logits", &path).unwrap();
    let (seq_len, v) = (shape[1], shape[2]);
    (i64s(&st, "tokens")[..seq_len].to_vec(), logits[..seq_len * v].to_vec(), i64s(&st, "greedy"))
}

fn read_logits(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    tensor_f32(&st, "logits", path).unwrap()
}

#[track_caller]
fn max_abs_rel(a: &[f32], b: &[f32]) -> f64 {
    moe_testutil::max_abs_rel("logits", a, b)
}

#[test]
fn cli_logits_of_every_golden_model_equal_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    assert!(cases.len() >= 7);
    for case in cases {
        let (tokens, want, _) = expected(&case);
        let list = tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
        let out = dir.path().join(format!("{case}.safetensors"));
        let msg = ok(&["logits", "--model", s(&golden(&case)), "--tokens", &list, "--out", s(&out)]);
        assert!(msg.contains("wrote") && msg.contains(&format!("[{}, 128]", tokens.len())), "{msg}");
        let (shape, got) = read_logits(&out);
        assert_eq!(shape, vec![tokens.len(), 128], "{case}");
        let rel = max_abs_rel(&got, &want);
        assert!(rel <= 1e-4, "{case}: moe logits vs transformers: max-abs-rel {rel:e}");
        eprintln!("{case}: moe logits max-abs-rel {rel:.2e}");
    }
    // no temp file is left next to the output
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.ends_with(".safetensors") && !n.starts_with('.')), "{names:?}");
}

#[test]
fn cli_logits_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.safetensors");
    fails(&["logits", "--model", s(&golden("llama")), "--tokens", "1,2,500", "--out", s(&out)], &["500", "vocabulary"]);
    fails(&["logits", "--model", s(dir.path()), "--tokens", "1", "--out", s(&out)], &["config.json"]);
    assert!(!out.exists());
}

#[test]
fn cli_info_model_reads_config_json_only() {
    let out = ok(&["info", "--model", s(&golden("qwen2_moe"))]);
    for needle in ["Qwen2MoeForCausalLM", "q/k/v bias", "1 shared (sigmoid-gated)", "active per token", "FLOPs per token", "at seq_len 64"]
    {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let js: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--model", s(&golden("mixtral")), "--json", "--seq-len", "16"])).unwrap();
    assert_eq!(js["architecture"], "MixtralForCausalLM");
    assert_eq!(js["account"]["seq_len"], 16);
    assert!(js["account"]["params_active"].as_u64().unwrap() < js["account"]["params_total"].as_u64().unwrap());
    let dense: serde_json::Value = serde_json::from_str(&ok(&["info", "--model", s(&golden("llama")), "--json"])).unwrap();
    assert_eq!(dense["account"]["params_active"], dense["account"]["params_total"]);
    fails(&["info", "--model", s(&golden("llama")), "--config", "configs/tiny/dense.toml"], &["cannot be used with"]);
}

/// `moe info --model FILE.gguf` reads the file's metadata (and a `rope_freqs` vector), not its weights.
#[test]
fn cli_info_model_reads_gguf_metadata() {
    let gguf = |case: &str| repo().join("tests/golden_gguf").join(case).join(format!("{case}-f32.gguf"));
    let out = ok(&["info", "--model", s(&gguf("llama4"))]);
    for needle in ["Llama4ForCausalLM", "RoPE per-pair factors", "active per token"] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let js: serde_json::Value = serde_json::from_str(&ok(&["info", "--model", s(&gguf("mixtral")), "--json"])).unwrap();
    assert_eq!(js["architecture"], "MixtralForCausalLM");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    fails(&["info", "--model", s(&bad)], &["bad.gguf"]);
}

/// A WordLevel tokenizer.json whose token `i` is the word `w{i}` (so any token sequence is text).
fn word_tokenizer(n_vocab: usize) -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..n_vocab).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": { "type": "WhitespaceSplit" }, "post_processor": null, "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "w0" }
    })
    .to_string()
}

#[test]
fn cli_generate_model_is_greedy_kv_cached_and_needs_a_tokenizer() {
    fails(&["generate", "--model", s(&golden("llama")), "--prompt", "hi"], &["tokenizer.json"]);
    for case in ["llama", "qwen2_moe"] {
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(golden(case)).unwrap() {
            let p = f.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join("tokenizer.json"), word_tokenizer(128)).unwrap();
        let (tokens, _, greedy) = expected(case);
        let prompt = tokens.iter().map(|t| format!("w{t}")).collect::<Vec<_>>().join(" ");
        let out = ok(&[
            "generate",
            "--model",
            s(dir.path()),
            "--prompt",
            &prompt,
            "--max-tokens",
            &greedy.len().to_string(),
            "--temperature",
            "0",
        ]);
        // the continuation streams token by token and reads as decode(prompt ++ ids): the
        // WordLevel decoder joins words with spaces, so each new word keeps its separator
        // (eos 2 would stop it early and is not printed)
        let n = greedy.iter().position(|&t| t == 2).unwrap_or(greedy.len());
        let want: String = greedy[..n].iter().map(|t| format!(" w{t}")).collect();
        assert_eq!(out.trim_end(), format!("{prompt}{want}"), "{case}");
    }
}

#[test]
fn cli_generate_chat_applies_the_checkpoint_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(golden("gpt_oss")).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("tokenizer.json"), word_tokenizer(128)).unwrap();
    let d = s(dir.path());
    let base = ["generate", "--model", d, "--max-tokens", "5", "--temperature", "0"];
    fails(&[&base[..], &["--prompt", "w9", "--chat"]].concat(), &["no chat template", "tokenizer_config.json"]);
    let template = "{% for m in messages %}{{ m['content'].strip() }} {% endfor %}{% if add_generation_prompt %}w7{% endif %}";
    std::fs::write(dir.path().join("tokenizer_config.json"), serde_json::json!({ "chat_template": template }).to_string()).unwrap();
    // the reply alone, equal to generating after the rendered conversation
    let chat = ok(&[&base[..], &["--prompt", " w9 w10 ", "--chat", "--system", "w4"]].concat());
    let plain = ok(&[&base[..], &["--prompt", "w4 w9 w10 w7"]].concat());
    assert_eq!(format!("w4 w9 w10 w7{}", chat.trim_end()), plain.trim_end());
}

#[test]
fn cli_info_names_the_inference_only_options() {
    let out = ok(&["info", "--model", s(&golden("deepseek_v3"))]);
    for needle in
        ["latent attention (q_lora 24, kv_lora 16, rope 8, d_v 12)", "top-2 of 4 expert groups", "fixed selection bias", "(inference only)"]
    {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let out = ok(&["info", "--model", s(&golden("gpt_oss"))]);
    for needle in
        ["RoPE yarn ×4 from 16", "attention sinks", "sliding window 4 on 2 of 3 layers", "clamped SwiGLU (alpha 1.702, limit 1.5)"]
    {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let out = ok(&["info", "--model", s(&golden("llama_rope_llama3"))]);
    assert!(out.contains("RoPE llama3 ×8 from 16") && !out.contains("inference only"), "{out}");
    let out = ok(&["info", "--model", s(&golden("llama4"))]);
    assert!(
        out.contains("1 NoPE layers") && out.contains("chunks of 5 on 3 layers") && out.contains("weights scale the expert input"),
        "{out}"
    );
}

#[test]
fn cli_bench_infer_reports_throughput_and_experts() {
    let out = ok(&["bench", "infer", "--model", s(&golden("mixtral")), "--batch", "1,3", "--prompt-len", "6", "--n-decode", "3"]);
    for needle in ["prefill tok/s", "decode tok/s", "latency ms/tok", "distinct experts/step", "(uniform"] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let rows: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with(['1', '3'])).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let dense = ok(&["bench", "infer", "--model", s(&golden("llama")), "--batch", "2", "--prompt-len", "4", "--n-decode", "2"]);
    assert!(dense.contains("(dense)"), "{dense}");
    fails(&["bench", "infer", "--model", s(&golden("llama")), "--prompt-len", "60", "--n-decode", "10"], &["context"]);
}

#[test]
fn cli_export_mixtral_and_llama_runs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (preset, arch) in [("mixtral", "MixtralForCausalLM"), ("dense", "LlamaForCausalLM")] {
        let run = dir.path().join(preset);
        ok(&["train", "--config", &format!("configs/tiny/{preset}.toml"), "--set", "train.steps=2", "--out", s(&run), "--quiet"]);
        let hf = dir.path().join(format!("{preset}-hf"));
        let out = ok(&["export", "--run", s(&run), "--out", s(&hf)]);
        assert!(out.contains(arch) && out.contains("tokenizer.json"), "{out}");
        for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"] {
            assert!(hf.join(f).is_file(), "{preset}: {f} missing");
        }
        let info = ok(&["info", "--model", s(&hf)]);
        assert!(info.contains(arch), "{info}");
        // the exported checkpoint generates exactly what the run generates (byte tokenizer.json)
        let prompt = "12+3=";
        let a = ok(&["generate", "--run", s(&run), "--prompt", prompt, "--max-tokens", "12", "--temperature", "0"]);
        let b = ok(&["generate", "--model", s(&hf), "--prompt", prompt, "--max-tokens", "12", "--temperature", "0"]);
        assert_eq!(a, b, "{preset}: run vs exported generation");
        assert!(a.starts_with(prompt));
    }
    // configs that do not map are errors naming the field
    let run = dir.path().join("deepseek");
    ok(&["train", "--config", "configs/tiny/deepseek.toml", "--set", "train.steps=1", "--out", s(&run), "--quiet"]);
    fails(&["export", "--run", s(&run), "--out", s(&dir.path().join("x"))], &["model.moe.first_dense", "Mixtral"]);
    assert!(!dir.path().join("x").exists(), "nothing written for a config that does not map");
}
