//! KV-cached and batched decoding against full recomputation, sampling, generation, benchmark.

mod common;
use common::*;

use moe_infer::*;
use moe_kernels::rng::Rng;
use moe_model::{ModelConfig, Transformer};

const DENSE: &str = "n_vocab = 48\nn_ctx = 24\nn_layer = 2\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 48\n";

/// MoE with a leading dense layer, a pyramid, a shared expert, sigmoid gating, selection bias.
fn moe_cfg() -> ModelConfig {
    cfg(&format!(
        "{}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 16\nn_expert_shared = 1\nd_expert_shared = 24\n\
         gating = \"sigmoid\"\nrenormalize = true\nroute_scale = 1.5\nbias_update_rate = 0.01\nfirst_dense = 1\n\
         n_expert_per_layer = [6, 4]\n",
        DENSE.replace("n_layer = 2", "n_layer = 3")
    ))
}

/// A model with larger-than-init weights (so attention and routing are far from uniform) and a
/// random selection bias.
fn model(c: ModelConfig, seed: u64) -> Transformer<f32> {
    let mut m = Transformer::<f32>::new(c, seed).unwrap();
    m.params.iter_mut().for_each(|p| *p *= 4.0);
    let mut rng = Rng::new(seed ^ 77);
    for b in m.selection_bias.iter_mut() {
        b.iter_mut().for_each(|v| *v = (rng.normal() * 0.1) as f32);
    }
    m
}

#[track_caller]
fn assert_close(a: &[f32], b: &[f32], what: &str) {
    moe_testutil::assert_close_rel(what, a, b, 1e-4);
}

/// Prefill `split` tokens with all logits, then decode the rest one at a time; compare every
/// position with one full forward over the whole sequence.
fn check_kv_equals_full(m: &Transformer<f32>, seq: &[u32], chunks: &[usize]) {
    let nv = m.cfg.n_vocab;
    let full = m.forward(seq, 1, seq.len()).unwrap().logits;
    let mut cache = KvCache::new(&m.cfg);
    let mut pos = 0;
    let opts = StepOptions { all_logits: true, routing: false };
    for &c in chunks.iter().chain(std::iter::repeat(&1)) {
        if pos == seq.len() {
            break;
        }
        let c = c.min(seq.len() - pos);
        let out = forward_step_with(m, &mut [&mut cache], &[&seq[pos..pos + c]], opts).unwrap();
        assert_close(&out.logits[0], &full[pos * nv..(pos + c) * nv], &format!("positions {pos}..{}", pos + c));
        pos += c;
        assert_eq!(cache.len(), pos);
    }
}

#[test]
fn kv_decode_equals_full_recompute_dense() {
    for (variant, extra) in [("swiglu", ""), ("gelu tied", "tie_embeddings = true\nactivation = \"gelu\"\n")] {
        let m = model(cfg(&format!("{DENSE}{extra}")), 1);
        let seq = tokens(24, 48, 2);
        check_kv_equals_full(&m, &seq, &[7]);
        check_kv_equals_full(&m, &seq, &[1]);
        check_kv_equals_full(&m, &seq, &[5, 3, 8, 2]);
        let _ = variant;
    }
}

#[test]
fn kv_decode_equals_full_recompute_moe() {
    let m = model(moe_cfg(), 3);
    let seq = tokens(24, 48, 4);
    check_kv_equals_full(&m, &seq, &[9]);
    check_kv_equals_full(&m, &seq, &[2, 6, 4]);
    // softmax gating, no renormalisation, MoE in every layer, MHA (n_head_kv = n_head)
    let c = cfg(&format!(
        "{}[moe]\nn_expert = 5\nn_expert_active = 2\nd_expert = 16\nrenormalize = false\n",
        DENSE.replace("n_head_kv = 2", "n_head_kv = 4")
    ));
    let m = model(c, 5);
    check_kv_equals_full(&m, &tokens(20, 48, 6), &[6]);
}

#[test]
fn decode_is_dropless_even_with_a_capacity_factor() {
    let mut c = moe_cfg();
    c.moe.as_mut().unwrap().capacity_factor = 0.5; // would drop many assignments in a full forward
    let m = model(c, 8);
    let mut dropless = m.clone();
    dropless.cfg.moe.as_mut().unwrap().capacity_factor = 0.0;
    let seq = tokens(16, 48, 9);
    check_kv_equals_full(&dropless, &seq, &[4]); // reference: dropless full forward
                                                 // and the capacity model decodes exactly like the dropless one
    let mut a = KvCache::new(&m.cfg);
    let mut b = KvCache::new(&m.cfg);
    let la = forward_one(&m, &mut a, &seq).unwrap();
    let lb = forward_one(&dropless, &mut b, &seq).unwrap();
    assert_eq!(la, lb);
}

/// Three sequences of different prompt lengths join at steps 0, 2, 4 (their prefill shares the step
/// with the others' decode tokens); the first leaves early. Each must match decoding it alone.
#[test]
fn batched_decode_equals_one_at_a_time() {
    for m in [model(moe_cfg(), 11), model(cfg(DENSE), 12)] {
        let prompts = [tokens(3, 48, 20), tokens(7, 48, 21), tokens(5, 48, 22)];
        let join = [0usize, 2, 4];
        let n_gen = [6usize, 9, 7];
        // alone
        let mut alone: Vec<Vec<(u32, Vec<f32>)>> = Vec::new();
        for s in 0..3 {
            let mut cache = KvCache::new(&m.cfg);
            let mut logits = forward_one(&m, &mut cache, &prompts[s]).unwrap();
            let mut v = Vec::new();
            for _ in 0..n_gen[s] {
                let t = argmax(&logits);
                v.push((t, logits.clone()));
                logits = forward_one(&m, &mut cache, &[t]).unwrap();
            }
            alone.push(v);
        }
        // batched
        let mut caches: Vec<KvCache<f32>> = (0..3).map(|_| KvCache::new(&m.cfg)).collect();
        let mut got: Vec<Vec<(u32, Vec<f32>)>> = vec![Vec::new(); 3];
        let mut pending: Vec<Option<u32>> = vec![None; 3];
        for step in 0..20 {
            let mut active = Vec::new();
            let mut toks: Vec<Vec<u32>> = Vec::new();
            for s in 0..3 {
                if step == join[s] {
                    active.push(s);
                    toks.push(prompts[s].clone());
                } else if let Some(t) = pending[s] {
                    active.push(s);
                    toks.push(vec![t]);
                }
            }
            if active.is_empty() {
                if step > 4 {
                    break;
                }
                continue;
            }
            let mut refs: Vec<&mut KvCache<f32>> =
                caches.iter_mut().enumerate().filter(|(s, _)| active.contains(s)).map(|(_, c)| c).collect();
            let logits = forward_step(&m, &mut refs, &toks).unwrap();
            for (j, &s) in active.iter().enumerate() {
                let t = argmax(&logits[j]);
                got[s].push((t, logits[j].clone()));
                pending[s] = (got[s].len() < n_gen[s]).then_some(t);
            }
        }
        for s in 0..3 {
            assert_eq!(got[s].len(), n_gen[s]);
            for (i, ((ta, la), (tb, lb))) in got[s].iter().zip(&alone[s]).enumerate() {
                assert_close(la, lb, &format!("sequence {s} token {i}"));
                assert_eq!(ta, tb, "sequence {s} token {i}");
            }
            assert_eq!(caches[s].len(), prompts[s].len() + n_gen[s] - 1);
        }
    }
}

#[test]
fn greedy_generation_is_deterministic_and_matches_recompute() {
    let m = model(moe_cfg(), 30);
    let prompt = tokens(4, 48, 31);
    let mut streamed = Vec::new();
    let a = generate(&m, &prompt, 12, &SamplerConfig::greedy(), None, |t| streamed.push(t)).unwrap();
    let b = generate(&m, &prompt, 12, &SamplerConfig::greedy(), None, |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens, streamed);
    assert_eq!(a.finish, FinishReason::Length);
    assert!(a.prefill_s >= 0.0 && a.decode_s > 0.0 && a.decode_tokens_per_s > 0.0);
    // naive: full forward over the growing sequence, argmax of the last row
    let mut seq = prompt.clone();
    for _ in 0..12 {
        let l = m.forward(&seq, 1, seq.len()).unwrap().logits;
        seq.push(argmax(&l[(seq.len() - 1) * 48..]));
    }
    assert_eq!(&seq[4..], &a.tokens[..]);
}

#[test]
fn sampling_is_reproducible_and_top_k_1_is_greedy() {
    let m = model(cfg(DENSE), 40);
    let prompt = tokens(3, 48, 41);
    let s = |seed| SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.95, seed };
    let a = generate(&m, &prompt, 16, &s(7), None, |_| {}).unwrap();
    let b = generate(&m, &prompt, 16, &s(7), None, |_| {}).unwrap();
    let c = generate(&m, &prompt, 16, &s(8), None, |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_ne!(a.tokens, c.tokens, "different seeds should give different samples");
    let greedy = generate(&m, &prompt, 16, &SamplerConfig::greedy(), None, |_| {}).unwrap();
    let k1 = generate(&m, &prompt, 16, &SamplerConfig { temperature: 1.3, top_k: 1, top_p: 1.0, seed: 5 }, None, |_| {}).unwrap();
    assert_eq!(greedy.tokens, k1.tokens);
    assert_ne!(greedy.tokens, a.tokens);
}

#[test]
fn generation_stops_at_the_stop_token() {
    let m = model(cfg(DENSE), 50);
    let prompt = tokens(3, 48, 51);
    let g = generate(&m, &prompt, 10, &SamplerConfig::greedy(), None, |_| {}).unwrap();
    let stop = g.tokens[3];
    let first = g.tokens.iter().position(|&t| t == stop).unwrap();
    let s = generate(&m, &prompt, 10, &SamplerConfig::greedy(), Some(stop), |_| {}).unwrap();
    assert_eq!(s.finish, FinishReason::Stop);
    assert_eq!(s.tokens, g.tokens[..=first]);
}

#[test]
fn exceeding_n_ctx_or_bad_input_is_an_error_not_a_panic() {
    let m = model(moe_cfg(), 60);
    let n_ctx = m.cfg.n_ctx;
    // generate: the whole sequence must fit
    assert!(generate(&m, &tokens(4, 48, 1), n_ctx - 4, &SamplerConfig::greedy(), None, |_| {}).is_ok());
    let e = generate(&m, &tokens(4, 48, 1), n_ctx - 3, &SamplerConfig::greedy(), None, |_| {}).unwrap_err();
    assert!(matches!(e, Error::ContextOverflow { .. }), "{e}");
    assert!(generate(&m, &tokens(n_ctx + 1, 48, 1), 0, &SamplerConfig::greedy(), None, |_| {}).is_err());
    assert!(matches!(generate(&m, &[], 3, &SamplerConfig::greedy(), None, |_| {}), Err(Error::BadInput(_))));
    assert!(generate(&m, &[48], 3, &SamplerConfig::greedy(), None, |_| {}).is_err());
    assert!(generate(&m, &[1], 3, &SamplerConfig { temperature: -1.0, ..Default::default() }, None, |_| {}).is_err());
    // forward_step: a full cache refuses more tokens and the batch is left untouched
    let mut full = KvCache::new(&m.cfg);
    forward_one(&m, &mut full, &tokens(n_ctx, 48, 2)).unwrap();
    let mut other = KvCache::new(&m.cfg);
    forward_one(&m, &mut other, &[1, 2]).unwrap();
    let e = forward_step(&m, &mut [&mut other, &mut full], &[vec![3], vec![4]]).unwrap_err();
    assert!(matches!(e, Error::ContextOverflow { seq: 1, len, n_new: 1, .. } if len == n_ctx), "{e}");
    assert_eq!((other.len(), full.len()), (2, n_ctx));
    // a prefill that does not fit
    let mut c = KvCache::new(&m.cfg);
    assert!(forward_one(&m, &mut c, &tokens(n_ctx + 1, 48, 3)).is_err());
    assert_eq!(c.len(), 0);
    // mismatched batch, empty token list, cache of another model
    assert!(forward_step(&m, &mut [&mut c], &[vec![1], vec![2]]).is_err());
    assert!(forward_step(&m, &mut [&mut c], &[Vec::<u32>::new()]).is_err());
    let mut wrong = KvCache::<f32>::new(&cfg(DENSE));
    assert!(forward_one(&m, &mut wrong, &[1]).is_err());
}

#[test]
fn bench_decode_returns_sane_numbers() {
    let m = model(moe_cfg(), 70);
    let r = bench_decode(&m, &[1, 4, 16], 6, 5, 0).unwrap();
    assert_eq!(r.len(), 3);
    for b in &r {
        assert!(b.prefill_tokens_per_s > 0.0 && b.decode_tokens_per_s > 0.0 && b.latency_ms_per_token > 0.0, "{b:?}");
        let d = b.distinct_experts_per_step.unwrap();
        let e = b.expected_distinct_experts.unwrap();
        // MoE layers have 6 and 4 experts, top-2
        assert!((2.0 - 1e-9..=5.0).contains(&d), "{b:?}");
        assert!((2.0 - 1e-9..=5.0).contains(&e), "{b:?}");
    }
    assert_eq!(r[0].distinct_experts_per_step, Some(2.0)); // one token touches exactly k experts
    assert!((r[0].expected_distinct_experts.unwrap() - 2.0).abs() < 1e-9);
    assert!(r[2].distinct_experts_per_step.unwrap() >= r[0].distinct_experts_per_step.unwrap());
    let dense = bench_decode(&model(cfg(DENSE), 71), &[2], 4, 3, 0).unwrap();
    assert!(dense[0].distinct_experts_per_step.is_none() && dense[0].expected_distinct_experts.is_none());
    assert!(bench_decode(&m, &[2], 20, 5, 0).is_err());
    assert!(bench_decode(&m, &[2], 0, 5, 0).is_err());
}

#[test]
fn kv_decode_equals_full_recompute_with_qk_norm_and_explicit_d_head() {
    for (qk, extra) in [("head", "d_head = 6\n"), ("full", "")] {
        let c = cfg(&format!("{DENSE}qk_norm = \"{qk}\"\n{extra}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 16\n"));
        let mut m = model(c, 70);
        // move the q/k norm weights away from one so a skipped norm cannot pass
        let mut r = Rng::new(71);
        for e in m.table.entries.clone() {
            if e.name.contains("q_norm") || e.name.contains("k_norm") {
                for v in &mut m.params[e.range()] {
                    *v = 1.0 + 0.3 * r.normal() as f32;
                }
            }
        }
        let seq = tokens(20, 48, 72);
        check_kv_equals_full(&m, &seq, &[7]);
        check_kv_equals_full(&m, &seq, &[3, 1, 5]);
    }
}

#[test]
fn kv_decode_equals_full_recompute_with_attn_bias_and_gated_shared_expert() {
    // Qwen2-MoE features: q/k/v biases (moved away from zero) and a sigmoid-gated shared expert,
    // with and without a q/k norm on top
    for extra in ["", "qk_norm = \"head\"\n"] {
        let c = cfg(&format!(
            "{}attn_bias = true\n{extra}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 16\nn_expert_shared = 1\nd_expert_shared = 20\n\
             shared_gate = true\nfirst_dense = 1\n",
            DENSE.replace("n_layer = 2", "n_layer = 3")
        ));
        let mut m = model(c, 80);
        let mut r = Rng::new(81);
        for e in m.table.entries.clone() {
            if e.name.ends_with(".bias") {
                for v in &mut m.params[e.range()] {
                    *v = 0.5 * r.normal() as f32;
                }
            }
        }
        assert!(m.table.get("layers.1.ffn.shared_gate.weight").is_some());
        let seq = tokens(20, 48, 82);
        check_kv_equals_full(&m, &seq, &[7]);
        check_kv_equals_full(&m, &seq, &[3, 1, 5]);
    }
}
