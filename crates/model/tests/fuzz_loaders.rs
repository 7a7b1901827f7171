//! Mutation fuzzing of every model loader, on stable Rust: thousands of mutants of the committed
//! fixtures (golden configs and checkpoints, HF `config.json` and `model.safetensors`), fixed seed,
//! bounded count; each must give a clean `Err` or a valid load, never a panic
//! (`moe_testutil::mutate`). Counts are printed (`--nocapture`) and asserted non-trivial.

use moe_model::hf::load_hf_dir;
use moe_model::{ModelConfig, Transformer};
use moe_testutil::mutate::{mutants, survive};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_config(bytes: &[u8]) -> Result<ModelConfig, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let v: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
    let m = v.get("model").cloned().ok_or("no [model] table")?;
    ModelConfig::from_toml_value(m).map_err(|e| e.to_string())
}

#[test]
fn fuzz_model_config_toml() {
    let mut total = (0, 0);
    for case in ["dense_tiny", "moe_softmax_top2", "prmoe_pyramid", "switch_capacity", "moe_sigmoid_top1_shared_bias", "dense_gelu_tied"] {
        let base = std::fs::read(root().join("tests/golden").join(case).join("config.toml")).unwrap();
        let inputs = mutants(&base, base.len(), 0xC0F1 ^ case.len() as u64, 400);
        let (ok, err) = survive(&format!("config.toml ({case})"), &inputs, |b| {
            // a config that validates must also build (its memory need is checked first)
            let c = parse_config(b)?;
            Transformer::<f32>::zeros(c).map(|_| ()).map_err(|e| e.to_string())
        });
        total = (total.0 + ok, total.1 + err);
    }
    eprintln!("fuzz config.toml total: {} loaded, {} refused", total.0, total.1);
    assert!(total.1 > 100 && total.0 > 10, "mutants must both load and fail: {total:?}");
}

#[test]
fn fuzz_checkpoint_safetensors() {
    let dir = root().join("tests/golden/dense_tiny");
    let cfg = parse_config(&std::fs::read(dir.join("config.toml")).unwrap()).unwrap();
    let base = std::fs::read(dir.join("weights.safetensors")).unwrap();
    let hot = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize; // the JSON header
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("weights.safetensors");
    let inputs = mutants(&base, hot, 0x5AFE, 1500);
    let (_, err) = survive("checkpoint weights.safetensors", &inputs, |b| {
        std::fs::write(&path, b).unwrap();
        Transformer::<f32>::load(cfg.clone(), &path).map(|_| ())
    });
    assert!(err > 500, "most header mutants must be refused: {err}");
}

#[test]
fn fuzz_hf_config_json_and_weights() {
    let src = root().join("tests/golden_hf/llama");
    let (config, weights) = (std::fs::read(src.join("config.json")).unwrap(), std::fs::read(src.join("model.safetensors")).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let inputs = mutants(&config, config.len(), 0x4F, 800);
    let (_, err) = survive("hf config.json", &inputs, |b| {
        std::fs::write(dir.join("config.json"), b).unwrap();
        load_hf_dir(dir).map(|_| ())
    });
    assert!(err > 200, "{err}");
    std::fs::write(dir.join("config.json"), &config).unwrap();
    let hot = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let inputs = mutants(&weights, hot, 0x57, 800);
    let (_, err) = survive("hf model.safetensors", &inputs, |b| {
        std::fs::write(dir.join("model.safetensors"), b).unwrap();
        load_hf_dir(dir).map(|_| ())
    });
    assert!(err > 200, "{err}");
}
