//! The fast engine on the inference-only MoE variants of imported architectures (`moe.ext`),
//! against its slow twin (`forward_step_with`, which runs `moe_model::moe::moe_forward`), on
//! random models shaped like the three families that use them:
//!
//! * DeepSeek-V3-like: sigmoid gating, group-limited top-k, fixed selection bias, shared expert,
//!   route scale, a leading dense layer;
//! * GPT-OSS-like: router bias, expert biases, clamped SwiGLU, softmax top-k renormalised;
//! * Llama-4-like: sigmoid top-1 without renormalisation, the combine weight on the expert's
//!   input, a shared expert, MoE every other layer.
//!
//! Each is compared on prefills in uneven chunks of two sequences and on decode steps: logits
//! within 1e-4 of max |logit| and the same expert counts per layer (the routing is identical).
//! This binary sets `MOE_GEMM_MIN_ROWS = 16` before the first step, so that groups of ≥ 16 rows
//! take the `gemm` tile path and smaller ones the GEMV path; the tests check that both occurred.

mod common;
use common::*;

use moe_infer::*;
use moe_kernels::quant::WeightDtype;
use moe_kernels::rng::Rng;
use moe_model::params::FfnLayout;
use moe_model::{ModelConfig, Transformer};
use std::sync::Once;

/// Rows from which the engine's expert tiles use the `gemm` crate, in this test binary.
const GEMM_MIN_ROWS: usize = 16;

fn setup() {
    static ONCE: Once = Once::new();
    // before any engine step of this process reads it (every test calls this first)
    ONCE.call_once(|| std::env::set_var("MOE_GEMM_MIN_ROWS", GEMM_MIN_ROWS.to_string()));
}

const BASE: &str = "n_vocab = 48\nn_ctx = 128\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 40\n";

/// DeepSeek-V3-like: 8 experts in 4 groups, the 2 best groups kept, top-2 inside them.
fn deepseek_like() -> ModelConfig {
    cfg(&format!(
        "{BASE}n_layer = 3\n[moe]\nn_expert = 8\nn_expert_active = 2\nd_expert = 40\nn_expert_shared = 1\nd_expert_shared = 24\n\
         gating = \"sigmoid\"\nrenormalize = true\nroute_scale = 2.5\nfirst_dense = 1\n\
         [moe.ext]\nn_group = 4\ntopk_group = 2\nselection_bias = true\n"
    ))
}

/// GPT-OSS-like: a clamp bound small enough to bite on these activations.
fn gpt_oss_like() -> ModelConfig {
    cfg(&format!(
        "{BASE}n_layer = 2\n[moe]\nn_expert = 6\nn_expert_active = 2\nd_expert = 40\ngating = \"softmax\"\nrenormalize = true\n\
         [moe.ext]\nrouter_bias = true\nexpert_bias = true\nclamped_swiglu = {{ alpha = 1.702, limit = 0.5 }}\n"
    ))
}

/// Llama-4-like: MoE in layers 1 and 3.
fn llama4_like() -> ModelConfig {
    cfg(&format!(
        "{BASE}n_layer = 4\n[moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 24\nn_expert_shared = 1\n\
         gating = \"sigmoid\"\nrenormalize = false\nevery = 2\n[moe.ext]\nscale_input = true\n"
    ))
}

fn configs() -> Vec<(&'static str, ModelConfig)> {
    vec![("deepseek-like", deepseek_like()), ("gpt-oss-like", gpt_oss_like()), ("llama4-like", llama4_like())]
}

/// Every bias vector of the model (attention, router, fixed selection, expert) drawn away from 0
/// with standard deviation `bias_std`; `scale` multiplies every other parameter. Every MoE layer
/// also gets a balancing selection bias (std 0.1), which a fixed selection bias must override.
fn model(c: ModelConfig, seed: u64, scale: f32, bias_std: f64) -> Transformer<f32> {
    let mut m = Transformer::<f32>::new(c, seed).unwrap();
    m.params.iter_mut().for_each(|p| *p *= scale);
    let mut rng = Rng::new(seed ^ 77);
    for (b, sb) in m.layout.blocks.iter().zip(m.selection_bias.iter_mut()) {
        if let FfnLayout::Moe(l) = &b.ffn {
            *sb = (0..l.n_expert).map(|_| (0.1 * rng.normal()) as f32).collect();
        }
    }
    for e in m.table.entries.clone() {
        if e.name.ends_with("bias") || e.name.contains(".experts.b_") {
            m.params[e.range()].iter_mut().for_each(|v| *v = (bias_std * rng.normal()) as f32);
        }
    }
    m
}

fn argmax(l: &[f32]) -> u32 {
    l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// Two sequences prefilled in uneven chunks (44 + 36 then 20 + 4 tokens), then 5 decode steps of
/// both: every position's logits and every MoE layer's expert counts, engine vs reference.
#[test]
fn engine_equals_reference_on_inference_only_moe_variants() {
    setup();
    for (name, c) in configs() {
        let m = model(c, 3, 4.0, 0.3);
        let nv = m.cfg.n_vocab;
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let prompts = [tokens(64, nv, 5), tokens(40, nv, 6)];
        let mut steps: Vec<[Vec<u32>; 2]> =
            vec![[prompts[0][..44].to_vec(), prompts[1][..36].to_vec()], [prompts[0][44..].to_vec(), prompts[1][36..].to_vec()]];
        let mut ce = [KvCache::new(&m.cfg), KvCache::new(&m.cfg)];
        let mut cr = [KvCache::new(&m.cfg), KvCache::new(&m.cfg)];
        let (mut gemm_groups, mut gemv_groups) = (0, 0);
        let mut it = 0;
        while let Some(step) = steps.get(it).cloned() {
            let le = {
                let [a, b] = &mut ce;
                eng.step_all_logits(&mut [a, b], &step).unwrap().to_vec()
            };
            let counts = eng.last_stats().expert_counts.clone();
            let [a, b] = &mut cr;
            let r = forward_step_with(&m, &mut [a, b], &step, StepOptions { all_logits: true, routing: true }).unwrap();
            let lr: Vec<f32> = r.logits.concat();
            assert_close(&le, &lr, 1e-4, &format!("{name} step {it}"));
            let ref_counts: Vec<Vec<usize>> = r.routing.iter().map(|l| l.counts.iter().map(|&n| n as usize).collect()).collect();
            assert_eq!(counts, ref_counts, "{name} step {it}: expert counts");
            for &n in counts.iter().flatten() {
                gemm_groups += usize::from(n >= GEMM_MIN_ROWS);
                gemv_groups += usize::from(n > 0 && n < GEMM_MIN_ROWS);
            }
            if (1..6).contains(&it) {
                // decode: the reference's greedy token of each sequence's last position
                let last = |s: usize| &r.logits[s][r.logits[s].len() - nv..];
                steps.push([vec![argmax(last(0))], vec![argmax(last(1))]]);
            }
            it += 1;
        }
        assert_eq!(it, 7);
        assert_eq!([ce[0].len(), ce[1].len()], [69, 45], "{name}");
        assert!(gemm_groups > 0 && gemv_groups > 0, "{name}: {gemm_groups} experts ran as GEMM tiles, {gemv_groups} as GEMV");
    }
}

/// The same token through the engine alone and batched with another sequence: routing is per
/// token, so batching changes nothing (up to the order of the sums).
#[test]
fn batched_equals_alone_on_inference_only_moe_variants() {
    setup();
    for (name, c) in configs() {
        let m = model(c, 4, 4.0, 0.3);
        let nv = m.cfg.n_vocab;
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let (s0, s1) = (tokens(30, nv, 8), tokens(50, nv, 9));
        let alone = eng.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&s0]).unwrap().to_vec();
        let both = eng.step_all_logits(&mut [&mut KvCache::new(&m.cfg), &mut KvCache::new(&m.cfg)], &[&s0, &s1]).unwrap().to_vec();
        assert_close(&both[..30 * nv], &alone, 1e-5, name);
    }
}

/// bf16 and int8 experts stay close to f32 on the GPT-OSS-like model (the variant whose features
/// all live in the expert tiles: biases and the clamped SwiGLU), at its initial scale so that
/// routing is not chaotic: 0.25% (bf16) and 1% (int8) of max |logit|, about 2× the measured error
/// (on an AVX2-only CPU; AVX-512's exact kernels differ only in summation order), and the same
/// experts chosen.
#[test]
fn bf16_and_int8_within_tolerance_of_f32_on_gpt_oss_like() {
    setup();
    let m = model(gpt_oss_like(), 9, 1.0, 0.05);
    let seq = tokens(40, m.cfg.n_vocab, 31);
    let mut e32 = Engine::new(&m, WeightDtype::F32).unwrap();
    let l32 = e32.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
    let c32 = e32.last_stats().expert_counts.clone();
    for (dtype, tol) in [
        // measured 1.25e-3 on 2026-12-07; bound ≈ 2×
        (WeightDtype::Bf16, 2.5e-3f32),
        // measured 4.97e-3 on 2026-12-07; bound ≈ 2×
        (WeightDtype::I8, 1e-2),
    ] {
        let mut e = Engine::new(&m, dtype).unwrap();
        let l = e.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
        let d = moe_testutil::checked_diff("engine_moe_ext.rs", &l, &l32);
        let (err, scale) = (d.max_abs as f32, d.scale as f32);
        eprintln!("gpt-oss-like {dtype:?}: max |Δlogit| / max |logit| = {:.2e}", err / scale);
        assert_close(&l, &l32, tol, &format!("{dtype:?}"));
        assert_eq!(e.last_stats().expert_counts, c32, "{dtype:?}: expert counts");
    }
}

/// The byte counter of a decode step counts the touched experts' f32 biases along with their
/// matrices, and the router bias and fixed selection bias not at all (vectors, like the norms).
#[test]
fn byte_counter_counts_expert_biases() {
    setup();
    // d_model 8, 2 heads of 4, 1 KV head, vocab 10, 1 MoE layer of 4 experts of 6, top-2
    let c = cfg(
        "n_vocab = 10\nn_ctx = 16\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 12\n[moe]\nn_expert = 4\nn_expert_active = 2\n\
         d_expert = 6\n[moe.ext]\nrouter_bias = true\nexpert_bias = true\nselection_bias = true\nclamped_swiglu = { alpha = 1.702, limit = 7.0 }\n",
    );
    let m = model(c, 40, 4.0, 0.3);
    let mut e = Engine::new(&m, WeightDtype::F32).unwrap();
    let mut caches: Vec<KvCache<f32>> = (0..2).map(|_| KvCache::new(&m.cfg)).collect();
    let mut refs: Vec<&mut KvCache<f32>> = caches.iter_mut().collect();
    e.step(&mut refs, &[vec![1u32, 2, 3], vec![4u32]]).unwrap();
    e.step(&mut refs, &[[5u32], [6u32]]).unwrap();
    let st = e.last_stats();
    assert_eq!(st.expert_counts[0].iter().sum::<usize>(), 4);
    let distinct = st.distinct_experts()[0];
    // wqkv [16, 8], wo [8, 8], router [4, 8], lm_head [10, 8]; per expert gate+up [12, 8],
    // down [8, 6] and biases 6 + 6 + 8
    let bytes = 4 * (16 * 8 + 8 * 8 + 4 * 8 + 10 * 8) + distinct * 4 * (12 * 8 + 8 * 6 + 6 + 6 + 8);
    assert_eq!(st.weight_bytes, bytes as u64);
}

/// A GELU dense layer (the ungated [`MlpAct`]) next to clamped, biased experts: engine equals
/// reference on a prefill of ≥ 16 rows (GEMM tiles) and on decode steps (GEMV).
#[test]
fn gelu_dense_layer_beside_clamped_experts_equals_reference() {
    setup();
    let c = cfg(&format!(
        "{BASE}n_layer = 2\nactivation = \"gelu\"\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 24\nfirst_dense = 1\n\
         [moe.ext]\nexpert_bias = true\nclamped_swiglu = {{ alpha = 1.702, limit = 0.5 }}\n"
    ));
    let m = model(c, 12, 4.0, 0.3);
    let nv = m.cfg.n_vocab;
    let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
    let (mut ce, mut cr) = (KvCache::new(&m.cfg), KvCache::new(&m.cfg));
    let mut step = tokens(24, nv, 13);
    for it in 0..4 {
        let le = eng.step_all_logits(&mut [&mut ce], &[&step]).unwrap().to_vec();
        let lr = forward_step_with(&m, &mut [&mut cr], &[&step], StepOptions { all_logits: true, routing: false }).unwrap().logits.concat();
        assert_close(&le, &lr, 1e-4, &format!("step {it}"));
        step = vec![argmax(&lr[lr.len() - nv..])];
    }
}
