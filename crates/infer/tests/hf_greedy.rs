//! KV-cached greedy decoding of every Hugging Face golden model (`tests/golden_hf/`) reproduces
//! transformers' `generate(do_sample=False)` continuation, and its logits equal a full forward.

mod common;
use common::*;

use moe_infer::{argmax, forward_step_with, generate, KvCache, SamplerConfig, StepOptions};
use moe_model::hf::load_hf_dir;

#[test]
fn kv_cached_greedy_of_every_golden_hf_model_equals_transformers() {
    for GoldenCase { name, m, prompt, greedy: want, .. } in golden_cases() {
        // generate(): one prefill, then one KV-cached step per token
        let out = generate(&m.model, &prompt, want.len(), &SamplerConfig::greedy(), None, |_| {}).unwrap();
        assert_eq!(out.tokens, want, "{name}: KV-cached greedy continuation");
        // the same by hand, one token at a time, checking each step's logits against a full forward
        let mut cache = KvCache::new(&m.cfg);
        let mut seq = prompt.clone();
        let mut next = forward_step_with(&m.model, &mut [&mut cache], &[&prompt[..]], StepOptions::default()).unwrap().logits.remove(0);
        for (step, &w) in want.iter().enumerate() {
            let full = m.model.forward(&seq, 1, seq.len()).unwrap().logits;
            let v = m.cfg.n_vocab;
            let last = &full[(seq.len() - 1) * v..];
            let d = moe_testutil::checked_diff("hf_greedy.rs", &next, last);
            let (err, scale) = (d.max_abs as f32, d.scale as f32);
            assert!(err <= 1e-4 * scale, "{name}: step {step}: KV logits differ from full recompute by {err}");
            let t = argmax(&next);
            assert_eq!(t, w, "{name}: step {step}");
            seq.push(t);
            next = forward_step_with(&m.model, &mut [&mut cache], &[[t]], StepOptions::default()).unwrap().logits.remove(0);
        }
        eprintln!("{name}: {} greedy tokens match", want.len());
    }
}

/// Latent attention, sinks, sliding windows (4 < sequence length), YaRN, chunked attention (5) and
/// NoPE layers with temperature tuning through the cache: two
/// sequences of different lengths advance together in uneven chunks; every position's logits equal
/// one full forward of that sequence.
#[test]
fn kv_cached_batched_chunks_of_inference_only_models_equal_full_forward() {
    for name in ["deepseek_v3", "deepseek_v3_noq", "gpt_oss", "llama4", "mixtral_window", "qwen3_window", "qwen2_moe_window"] {
        let m = load_hf_dir(&golden_dir().join(name)).unwrap();
        let v = m.cfg.n_vocab;
        let seqs: [Vec<u32>; 2] = [(0..15).map(|i| (i * 37 + 5) % 128).collect(), (0..10).map(|i| (i * 11 + 60) % 128).collect()];
        let full: Vec<Vec<f32>> = seqs.iter().map(|s| m.model.forward(s, 1, s.len()).unwrap().logits).collect();
        let mut caches = [KvCache::new(&m.cfg), KvCache::new(&m.cfg)];
        let mut pos = [0usize; 2];
        let chunks = [[5, 3], [1, 2], [3, 1], [1, 1], [2, 3], [3, 0], [0, 0]];
        let mut max_rel = 0f32;
        for ch in chunks.iter().chain(std::iter::repeat(&[1, 1])) {
            let live: Vec<usize> = (0..2).filter(|&s| pos[s] < seqs[s].len()).collect();
            if live.is_empty() {
                break;
            }
            let take: Vec<usize> = live.iter().map(|&s| ch[s].max(1).min(seqs[s].len() - pos[s])).collect();
            let toks: Vec<&[u32]> = live.iter().zip(&take).map(|(&s, &t)| &seqs[s][pos[s]..pos[s] + t]).collect();
            let (c0, c1) = caches.split_at_mut(1);
            let mut refs: Vec<&mut KvCache<f32>> = Vec::new();
            if live.contains(&0) {
                refs.push(&mut c0[0]);
            }
            if live.contains(&1) {
                refs.push(&mut c1[0]);
            }
            let out = forward_step_with(&m.model, &mut refs, &toks, StepOptions { all_logits: true, routing: false }).unwrap();
            for ((&s, &t), got) in live.iter().zip(&take).zip(&out.logits) {
                let want = &full[s][pos[s] * v..(pos[s] + t) * v];
                let d = moe_testutil::checked_diff("hf_greedy.rs", got, want);
                let (err, scale) = (d.max_abs as f32, d.scale as f32);
                max_rel = max_rel.max(err / scale);
                assert!(err <= 1e-4 * scale, "{name}: sequence {s} positions {}..{}: {err}", pos[s], pos[s] + t);
                pos[s] += t;
            }
        }
        eprintln!("{name}: batched KV decode vs full forward max-abs-rel {max_rel:.2e}");
    }
}

/// DeepSeek-V3's cache holds the compressed latent rows (kv_lora_rank + d_rope = 24 floats per token
/// and layer instead of 4 heads × (16 + 12) = 112 expanded), and decoding from it equals the full
/// (expanded) forward — checked above; here the layout.
#[test]
fn latent_attention_caches_compressed_rows() {
    let m = load_hf_dir(&golden_dir().join("deepseek_v3")).unwrap();
    assert_eq!(m.cfg.kv_cache_shape(), (1, 24, 0));
    let mut c = KvCache::new(&m.cfg);
    moe_infer::forward_one(&m.model, &mut c, &[5, 6, 7]).unwrap();
    for layer in 0..m.cfg.n_layer {
        assert_eq!((c.keys(layer, 0).len(), c.values(layer, 0).len()), (3 * 24, 0));
    }
    assert_eq!(c.memory_bytes(), m.cfg.n_layer * c.capacity() * 24 * 4);
}

/// The fast engine on every golden Hugging Face model (latent attention, sinks, windows, chunked
/// and NoPE layers, grouped/biased/input-scaled routing, clamped experts included): transformers'
/// greedy continuation token for token (prefill, then one KV-cached step per token), the logits of
/// every prompt position equal to transformers' within 1e-4 of max |logit|, and every step's
/// logits equal to the reference path's.
#[test]
fn fast_engine_greedy_of_every_golden_hf_model_equals_transformers() {
    use moe_infer::Engine;
    use moe_kernels::quant::WeightDtype;
    for GoldenCase { name, m, prompt, greedy: want, logits: expected } in golden_cases() {
        let (v, seq_len) = (m.cfg.n_vocab, prompt.len());
        let mut engine = Engine::new(&m.model, WeightDtype::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut cache = KvCache::new(&m.cfg);
        let mut ref_cache = KvCache::new(&m.cfg);
        let all = engine.step_all_logits(&mut [&mut cache], &[&prompt[..]]).unwrap().to_vec();
        let d = moe_testutil::checked_diff("hf_greedy.rs", &all, &expected[..seq_len * v]);
        let (err, scale) = (d.max_abs as f32, d.scale as f32);
        assert!(err <= 1e-4 * scale, "{name}: prompt logits differ from transformers by {err} (max |logit| {scale})");
        let mut next = all[(seq_len - 1) * v..].to_vec();
        let mut want_next =
            forward_step_with(&m.model, &mut [&mut ref_cache], &[&prompt[..]], StepOptions::default()).unwrap().logits.remove(0);
        for (step, &w) in want.iter().enumerate() {
            let d = moe_testutil::checked_diff("hf_greedy.rs", &next, &want_next);
            let (err, scale) = (d.max_abs as f32, d.scale as f32);
            assert!(err <= 1e-4 * scale, "{name}: step {step}: engine logits differ from the reference path by {err}");
            let t = argmax(&next);
            assert_eq!(t, w, "{name}: step {step}");
            next = engine.step(&mut [&mut cache], &[[t]]).unwrap().to_vec();
            want_next = forward_step_with(&m.model, &mut [&mut ref_cache], &[[t]], StepOptions::default()).unwrap().logits.remove(0);
        }
        eprintln!("{name}: fast engine, {} greedy tokens match", want.len());
    }
}
