//! Golden optimizer trajectories: 10 AdamW steps on one fixed batch against the PyTorch peer
//! (`reference/gen_golden.py`, `adamw_trajectory`). Each case in `tests/golden/` holds the initial
//! weights, the batch, the 10 losses seen before each step and, when aux-loss-free balancing is
//! on, the selection biases after the last step.

use moe_data::Batch;
use moe_model::checkpoint::{selection_bias_name, tensor_f32};
use moe_model::{ModelConfig, Transformer};
use moe_train::{train_step, AdamW, AdamWConfig};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn read_i64(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
    t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

fn num(v: &toml::Value, key: &str) -> f64 {
    let x = &v["golden"][key];
    x.as_float().or_else(|| x.as_integer().map(|i| i as f64)).unwrap_or_else(|| panic!("[golden] {key}"))
}

#[test]
fn golden_trajectory_matches_pytorch_adamw() {
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(golden_dir().join("MANIFEST.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 4, "expected at least 4 golden cases");
    let mut checked_bias = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let dir = golden_dir().join(name);
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        let cfg = ModelConfig::from_toml_value(v["model"].clone()).unwrap();
        let (batch, seq) = (num(&v, "batch_size") as usize, num(&v, "seq_len") as usize);
        let steps = num(&v, "steps") as usize;
        let lr = num(&v, "lr");
        let opt_cfg = AdamWConfig {
            beta1: num(&v, "beta1"),
            beta2: num(&v, "beta2"),
            eps: num(&v, "eps"),
            weight_decay: num(&v, "weight_decay"),
            grad_clip: num(&v, "grad_clip"),
            decay_embeddings: false,
        };

        let mut model: Transformer<f32> = Transformer::load(cfg, &dir.join("weights.safetensors")).unwrap();
        let ibytes = std::fs::read(dir.join("inputs.safetensors")).unwrap();
        let ist = SafeTensors::deserialize(&ibytes).unwrap();
        let inputs: Vec<u32> = read_i64(&ist, "inputs").iter().map(|&x| x as u32).collect();
        let targets: Vec<u32> = read_i64(&ist, "targets").iter().map(|&x| x as u32).collect();
        let micro = [Batch { inputs, targets, batch_size: batch, seq_len: seq }];

        let epath = dir.join("expected.safetensors");
        let ebytes = std::fs::read(&epath).unwrap();
        let est = SafeTensors::deserialize(&ebytes).unwrap();
        let (_, want) = tensor_f32(&est, "trajectory", &epath).unwrap();
        assert_eq!(want.len(), steps, "{name}: trajectory length");

        let mut opt = AdamW::new(&model.table, opt_cfg);
        let mut grads = vec![0.0f32; model.params.len()];
        let mut got = Vec::with_capacity(steps);
        for _ in 0..steps {
            got.push(train_step(&mut model, &mut opt, &mut grads, &micro, lr).unwrap().loss);
        }
        let atol = c["tolerances"]["trajectory"]["atol"].as_f64().unwrap();
        let worst = moe_testutil::checked_diff(name, &got, &want).max_abs;
        eprintln!("{name}: loss {:.5} → {:.5}, max |Δ| vs PyTorch {worst:.2e}", got[0], got[steps - 1]);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w as f64).abs() <= atol, "{name}: step {i}: loss {g} vs {w} (atol {atol}); all: {got:?} vs {want:?}");
        }

        let batol = c["tolerances"]["bias_after"]["atol"].as_f64().unwrap();
        for (i, b) in model.selection_bias.iter().enumerate() {
            if b.is_empty() {
                continue;
            }
            let key = format!("bias_after.{i}");
            let (_, want) = tensor_f32(&est, &key, &epath).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(b.len(), want.len(), "{name}: {key}: length");
            for (e, (&g, &w)) in b.iter().zip(&want).enumerate() {
                assert!((g - w).abs() as f64 <= batol, "{name}: {key}[{e}]: {g} vs {w}");
            }
            // the bias really moved (γ · ±1 per step)
            let (_, before) = tensor_f32(
                &SafeTensors::deserialize(&std::fs::read(dir.join("weights.safetensors")).unwrap()).unwrap(),
                &selection_bias_name(i),
                &dir,
            )
            .unwrap();
            assert_ne!(before, *b, "{name}: {key} did not change");
            checked_bias += 1;
        }
    }
    assert!(checked_bias > 0, "no golden case exercises aux-loss-free balancing");
}
