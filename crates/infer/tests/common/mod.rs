//! Helpers shared by the integration tests of `moe-infer` (each test binary uses a subset).
#![allow(dead_code)]

use moe_infer::{Engine, KvCache};
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_kernels::rng::Rng;
use moe_model::hf::{load_hf_dir, HfModel};
use moe_model::{ModelConfig, Transformer};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// A validated model config from TOML.
pub fn cfg(s: &str) -> ModelConfig {
    let c: ModelConfig = toml::from_str(s).unwrap();
    c.validate().unwrap();
    c
}

/// `n` random token ids below `n_vocab`.
pub fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(n_vocab as u64) as u32).collect()
}

/// max |a − b| ≤ tol · max |b|; a non-finite value fails (`moe_testutil::assert_close_rel`).
#[track_caller]
pub fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    moe_testutil::assert_close_rel(what, a, b, tol as f64);
}

/// The golden Hugging Face models (`tests/golden_hf/`).
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden_hf")
}

/// An int64 tensor of a golden `expected.safetensors` as token ids.
pub fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    st.tensor(name).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
}

/// One golden Hugging Face case: the loaded model, the first prompt, transformers' greedy
/// continuation of it and transformers' logits of its positions `[seq_len, n_vocab]`.
pub struct GoldenCase {
    pub name: String,
    pub m: HfModel,
    pub prompt: Vec<u32>,
    pub greedy: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Every case of `tests/golden_hf/MANIFEST.json`.
pub fn golden_cases() -> Vec<GoldenCase> {
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden_dir().join("MANIFEST.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_object().unwrap();
    assert!(cases.len() >= 10, "every golden case, deepseek_v3 and gpt_oss included");
    cases
        .iter()
        .map(|(name, case)| {
            let dir = golden_dir().join(name);
            let m = load_hf_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
            let seq_len = case["seq_len"].as_u64().unwrap() as usize;
            let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let prompt = i64s(&st, "tokens")[..seq_len].to_vec();
            let greedy = i64s(&st, "greedy");
            let all: Vec<f32> =
                st.tensor("logits").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let logits = all[..seq_len * m.cfg.n_vocab].to_vec();
            GoldenCase { name: name.clone(), m, prompt, greedy, logits }
        })
        .collect()
}

/// Logits of every position of `seq` `[seq.len(), n_vocab]`, one prefill on the engine.
pub fn engine_prompt_logits(m: &Transformer<f32>, dtype: WeightDtype, kernel: Kernel, seq: &[u32]) -> Vec<f32> {
    let mut e = Engine::with_kernel(m, dtype, kernel).unwrap();
    e.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[seq]).unwrap().to_vec()
}

/// The activation-quantising kernels, where this CPU has them, stay within 5% (int8 activations,
/// VNNI) and 2% (bf16 activations) of max |logit| of the exact f32 engine; where it lacks them,
/// asking for them is an error.
pub fn check_fast_dot_kernels(name: &str, m: &Transformer<f32>, seq: &[u32]) {
    let l32 = engine_prompt_logits(m, WeightDtype::F32, Kernel::Auto, seq);
    for (dtype, kernel, tol) in [(WeightDtype::I8, Kernel::Avx512Vnni, 0.05f32), (WeightDtype::Bf16, Kernel::Avx512Bf16Dot, 0.02)] {
        let feature = if kernel == Kernel::Avx512Vnni { "avx512_vnni" } else { "avx512_bf16" };
        if !moe_testutil::needs_cpu(feature, &format!("check_fast_dot_kernels::{name}"), kernel.available()) {
            assert!(Engine::with_kernel(m, dtype, kernel).is_err());
            continue;
        }
        assert_close(&engine_prompt_logits(m, dtype, kernel, seq), &l32, tol, &format!("{name} {dtype:?} {kernel:?}"));
    }
}
