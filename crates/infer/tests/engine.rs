//! The fast engine against its slow twin (`forward_step`, the reference path) and against itself:
//! KV-cached decoding equals full recomputation, batched equals one at a time, sequences joining
//! and leaving, the grouped expert path equals the per-token reference (small and large groups,
//! i.e. both the GEMV and the GEMM tile paths), bf16/int8 within stated tolerances of f32, and the
//! byte/FLOP counters equal hand-computed values.

mod common;
use common::*;

use moe_infer::*;
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_kernels::rng::Rng;
use moe_model::{ModelConfig, Transformer};

// q4 vs f32, measured 2026-12-07 on an AVX2-only CPU (decode through `Kernel::Avx2Q8`), max over
// the dense / moe / qwen-like models: prefill max |Δlogit| / max |logit| 4.84e-2, decode 6.79e-2,
// KL 7.73e-6 (the per-row 4-bit rounding: 1.30–1.34e-4, 17–32× more); bounds ≈ 2×
const Q4_PREFILL_TOL: f32 = 0.1;
const Q4_DECODE_TOL: f32 = 0.14;
const Q4_KL: f64 = 1.6e-5;

const DENSE: &str = "n_vocab = 48\nn_ctx = 64\nn_layer = 2\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 48\n";

/// Every feature the engine handles: leading dense layer, pyramid, shared expert, sigmoid gating,
/// route scale, selection bias.
fn moe_cfg() -> ModelConfig {
    cfg(&format!(
        "{}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 40\nn_expert_shared = 1\nd_expert_shared = 24\n\
         gating = \"sigmoid\"\nrenormalize = true\nroute_scale = 1.5\nbias_update_rate = 0.01\nfirst_dense = 1\n\
         n_expert_per_layer = [6, 4]\n",
        DENSE.replace("n_layer = 2", "n_layer = 3")
    ))
}

/// Softmax gating, gated shared expert, attention biases, per-head q/k norm.
fn qwen_like_cfg() -> ModelConfig {
    cfg(&format!(
        "{DENSE}attn_bias = true\nqk_norm = \"head\"\n[moe]\nn_expert = 8\nn_expert_active = 2\nd_expert = 24\nn_expert_shared = 1\n\
         d_expert_shared = 20\nshared_gate = true\n"
    ))
}

fn model(c: ModelConfig, seed: u64) -> Transformer<f32> {
    let mut m = Transformer::<f32>::new(c, seed).unwrap();
    m.params.iter_mut().for_each(|p| *p *= 4.0);
    let mut rng = Rng::new(seed ^ 77);
    for b in m.selection_bias.iter_mut() {
        b.iter_mut().for_each(|v| *v = (rng.normal() * 0.1) as f32);
    }
    for e in m.table.entries.clone() {
        if e.name.ends_with(".bias") || e.name.contains("q_norm") || e.name.contains("k_norm") {
            let base = if e.name.ends_with(".bias") { 0.0 } else { 1.0 };
            for v in &mut m.params[e.range()] {
                *v = base + 0.3 * rng.normal() as f32;
            }
        }
    }
    m
}

fn models() -> Vec<(&'static str, Transformer<f32>)> {
    vec![("dense", model(cfg(DENSE), 1)), ("moe", model(moe_cfg(), 2)), ("qwen-like", model(qwen_like_cfg(), 3))]
}

/// Prompts of different lengths (some ≥ 16 rows per expert, so the GEMM tile path runs too), then
/// decode steps, engine vs reference on separate caches, every step compared.
#[test]
fn engine_equals_reference_prefill_and_decode() {
    for (name, m) in models() {
        let nv = m.cfg.n_vocab;
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let prompts = [tokens(40, nv, 5), tokens(3, nv, 6), tokens(17, nv, 7)];
        let mut ce: Vec<KvCache<f32>> = (0..3).map(|_| KvCache::new(&m.cfg)).collect();
        let mut cr: Vec<KvCache<f32>> = (0..3).map(|_| KvCache::new(&m.cfg)).collect();
        let mut step: Vec<Vec<u32>> = prompts.to_vec();
        for it in 0..6 {
            let le = {
                let mut refs: Vec<&mut KvCache<f32>> = ce.iter_mut().collect();
                eng.step(&mut refs, &step).unwrap().to_vec()
            };
            let mut refs: Vec<&mut KvCache<f32>> = cr.iter_mut().collect();
            let lr = forward_step(&m, &mut refs, &step).unwrap();
            for (s, l) in lr.iter().enumerate() {
                assert_close(&le[s * nv..(s + 1) * nv], l, 1e-4, &format!("{name} step {it} seq {s}"));
            }
            step = lr.iter().map(|l| vec![argmax(l)]).collect();
        }
        assert_eq!(ce.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![45, 8, 22]);
    }
}

/// Decoding token by token (after chunked prefills) equals one full prefill with all logits.
#[test]
fn kv_cached_decoding_equals_full_recomputation() {
    for (name, m) in models() {
        let nv = m.cfg.n_vocab;
        let seq = tokens(30, nv, 11);
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let full = eng.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
        let reference =
            forward_step_with(&m, &mut [&mut KvCache::new(&m.cfg)], &[&seq], StepOptions { all_logits: true, routing: false }).unwrap();
        assert_close(&full, &reference.logits[0], 1e-4, &format!("{name}: full prefill vs reference"));
        let mut cache = KvCache::new(&m.cfg);
        let mut pos = 0;
        for c in [7usize, 1, 4].into_iter().chain(std::iter::repeat(1)) {
            if pos == seq.len() {
                break;
            }
            let c = c.min(seq.len() - pos);
            let l = eng.step_all_logits(&mut [&mut cache], &[&seq[pos..pos + c]]).unwrap();
            assert_close(l, &full[pos * nv..(pos + c) * nv], 1e-4, &format!("{name}: positions {pos}..{}", pos + c));
            pos += c;
        }
    }
}

/// A batch of sequences at different positions equals decoding each alone; sequences join and
/// leave between steps.
#[test]
fn batched_equals_one_at_a_time_with_joins_and_leaves() {
    for (name, m) in models() {
        let nv = m.cfg.n_vocab;
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let seqs: Vec<Vec<u32>> = (0..4).map(|i| tokens(20, nv, 20 + i)).collect();
        // alone: each sequence prefilled with 5 + i tokens then decoded one token at a time
        let mut alone: Vec<Vec<Vec<f32>>> = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            let mut c = KvCache::new(&m.cfg);
            let mut out = vec![eng.step(&mut [&mut c], &[&s[..5 + i]]).unwrap().to_vec()];
            for p in 5 + i..s.len() {
                out.push(eng.step(&mut [&mut c], &[&s[p..p + 1]]).unwrap().to_vec());
            }
            alone.push(out);
        }
        // together: seq 3 joins late, seq 1 leaves early; each step lists the live sequences
        let mut caches: Vec<KvCache<f32>> = (0..4).map(|_| KvCache::new(&m.cfg)).collect();
        let mut pos = [0usize; 4];
        let mut n_out = [0usize; 4];
        for t in 0..20 {
            let live: Vec<usize> = (0..4).filter(|&i| (i != 3 || t >= 3) && (i != 1 || t <= 8) && pos[i] < seqs[i].len()).collect();
            if live.is_empty() {
                break;
            }
            let toks: Vec<&[u32]> =
                live.iter().map(|&i| if pos[i] == 0 { &seqs[i][..5 + i] } else { &seqs[i][pos[i]..pos[i] + 1] }).collect();
            let mut refs: Vec<&mut KvCache<f32>> =
                caches.iter_mut().enumerate().filter(|(i, _)| live.contains(i)).map(|(_, c)| c).collect();
            let l = eng.step(&mut refs, &toks).unwrap().to_vec();
            for (j, &i) in live.iter().enumerate() {
                pos[i] += toks[j].len();
                assert_close(&l[j * nv..(j + 1) * nv], &alone[i][n_out[i]], 1e-5, &format!("{name}: step {t} seq {i}"));
                n_out[i] += 1;
            }
        }
        assert!(n_out[1] < alone[1].len() && n_out[3] > 0, "{name}: the schedule exercised joins and leaves");
    }
}

/// bf16 and int8 weights stay close to f32: max |Δlogit| over a 24-token prefill, as a fraction of
/// max |logit|, and [`weight_format_quality`]'s KL and perplexity, each bound at about 2× what the
/// correct code measures (each weight moves by ≤ 2⁻⁸ relative (bf16) or ≤ max|row|/254 (int8), and
/// these errors add up over the layers). A random model at its initial scale has near-uniform
/// logits, so the KL is tiny for any format; what makes the KL bound meaningful is the comparison with
/// a deliberately wrong quantisation (every matrix rounded to 4 bits per row), which the real
/// formats must beat by a wide margin.
///
/// Measured on 2026-12-07 on an AVX2-only CPU (`Kernel::Auto` = the exact AVX2 GEMV for bf16, the
/// int8-activation `Avx2Q8` for int8). The AVX-512 exact kernels differ from the exact AVX2 one only
/// in summation order (≈1e-6 relative), far inside the margins.
#[test]
fn bf16_and_int8_within_tolerance_of_f32() {
    // the models at their initial scale (the ×4 models of the other tests route chaotically: a
    // 2⁻⁸ nudge flips near-tied top-k choices)
    for (name, c) in [("dense", cfg(DENSE)), ("moe", moe_cfg()), ("qwen-like", qwen_like_cfg())] {
        let m = Transformer::<f32>::new(c, 9).unwrap();
        let nv = m.cfg.n_vocab;
        let seq = tokens(24, nv, 31);
        let mut e32 = Engine::new(&m, WeightDtype::F32).unwrap();
        let l32 = e32.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
        let stream = tokens(200, nv, 32);
        let kl_4bit = kl_of_4bit_rounding(&m, &stream, 24, 4);
        eprintln!("{name} 4-bit: KL {kl_4bit:.3e}");
        for (dtype, tol, kl_bound, ppl_bound) in [
            // measured 1.93e-3 (max |Δlogit|/max |logit|), KL 2.04e-8, |ppl ratio − 1| 4.24e-5 on 2026-12-07; bound ≈ 2×
            (WeightDtype::Bf16, 4e-3f32, 4e-8, 9e-5),
            // measured 7.14e-3 (max |Δlogit|/max |logit|), KL 2.24e-7, |ppl ratio − 1| 1.33e-4 on 2026-12-07
            // with the exact kernel; since issue 13 `Kernel::Auto` on AVX2 without AVX-512 quantises
            // the activations per 32-block (`Avx2Q8`, up to 32 rows): measured 1.17e-2, KL 4.36e-7,
            // 1.40e-4 (2026-12-07); bound ≈ 2× the larger
            (WeightDtype::I8, 2.4e-2, 9e-7, 2.8e-4),
        ] {
            let mut e = Engine::new(&m, dtype).unwrap();
            let l = e.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
            let d = moe_testutil::checked_diff("engine.rs", &l, &l32);
            let (err, scale) = (d.max_abs as f32, d.scale as f32);
            eprintln!("{name} {dtype:?}: max |Δlogit| / max |logit| = {:.2e}", err / scale);
            assert_close(&l, &l32, tol, &format!("{name} {dtype:?}"));
            let q = weight_format_quality(&m, &stream, dtype, Kernel::Auto, 24, 4).unwrap();
            let ppl_dev = (q.ppl / q.ppl_f32 - 1.0).abs();
            eprintln!("{name} {dtype:?}: KL {:.3e}, |ppl ratio − 1| {ppl_dev:.3e}, top-1 agree {}", q.kl_mean, q.top1_agree);
            assert!(q.kl_mean.is_finite() && q.kl_mean >= 0.0 && q.kl_mean < kl_bound, "{name} {dtype:?}: KL {}", q.kl_mean);
            assert!(q.ppl > 0.0 && ppl_dev < ppl_bound, "{name} {dtype:?}: ppl {} vs {}", q.ppl, q.ppl_f32);
            // the real format is far closer to f32 than a wrong one: int8's KL measured ≈ 1/600 of the
            // 4-bit rounding's (1.3e-4; its error per weight is 127/7 ≈ 18× smaller, KL goes with its square)
            assert!(q.kl_mean < kl_4bit / 50.0, "{name} {dtype:?}: KL {} is not well below 4-bit rounding's {kl_4bit}", q.kl_mean);
        }
    }
}

/// q4 weights (32-weight blocks, f16 scales; LM head int8) stay close to f32, on both paths: a
/// 40-token prefill (the wide path from 32 rows on AVX2: weights dequantised, exact `x`) and
/// a 5-token prompt then decode steps (the GEMV kernels: on AVX2 the int8-activation kernel, `x`
/// quantised per 32-block). Bounds ≈ 2× the measured max |Δlogit| / max |logit| and KL; q4 must
/// also beat the deliberately wrong per-row 4-bit rounding by a clear margin (measured 17–32× lower
/// KL: steps local to 32 weights and 16 levels instead of 15). The MoE model keeps k and v in int8
/// (measured KL 2.6e-6 / 2.1e-6 for q4 / q4k, the lowest of the three), the others do not.
#[test]
fn q4_within_tolerance_of_f32() {
    for (name, c, dtype) in [
        ("dense", cfg(DENSE), WeightDtype::Q4),
        ("moe", moe_cfg(), WeightDtype::Q4),
        ("qwen-like", qwen_like_cfg(), WeightDtype::Q4),
        ("dense", cfg(DENSE), WeightDtype::Q4K),
        ("moe", moe_cfg(), WeightDtype::Q4K),
        ("qwen-like", qwen_like_cfg(), WeightDtype::Q4K),
    ] {
        let m = Transformer::<f32>::new(c, 9).unwrap();
        let nv = m.cfg.n_vocab;
        let seq = tokens(40, nv, 31);
        let mut e32 = Engine::new(&m, WeightDtype::F32).unwrap();
        let mut e4 = Engine::new(&m, dtype).unwrap();
        let kv: Vec<_> = e4.weights().layers.iter().map(|l| l.wkv.as_ref().map(|w| w.dtype())).collect();
        let want = m.cfg.moe.as_ref().map(|_| WeightDtype::I8);
        assert!(kv.iter().all(|&k| k == want), "{name} {dtype:?}: k/v formats {kv:?}, want {want:?} in every layer");
        let l32 = e32.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
        let l4 = e4.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
        let d = moe_testutil::checked_diff("engine.rs", &l4, &l32);
        eprintln!("{name} {dtype:?} prefill: max |Δlogit| / max |logit| = {:.3e}", d.max_abs / d.scale);
        // measured (see the constants' comments): bound ≈ 2×
        assert_close(&l4, &l32, Q4_PREFILL_TOL, &format!("{name} {dtype:?} prefill"));
        // decode: the same tokens fed to both engines, every step compared
        let (mut c32, mut c4) = (KvCache::new(&m.cfg), KvCache::new(&m.cfg));
        let mut step: Vec<u32> = seq[..5].to_vec();
        let mut worst = 0.0f64;
        for it in 0..8 {
            let a = e32.step(&mut [&mut c32], &[&step]).unwrap().to_vec();
            let b = e4.step(&mut [&mut c4], &[&step]).unwrap().to_vec();
            let d = moe_testutil::checked_diff("engine.rs", &b, &a);
            worst = worst.max(d.max_abs / d.scale);
            assert_close(&b, &a, Q4_DECODE_TOL, &format!("{name} {dtype:?} decode step {it} ({:?})", e4.kernel().resolved(dtype)));
            step = vec![argmax(&a)];
        }
        eprintln!("{name} {dtype:?} decode ({:?}): max |Δlogit| / max |logit| = {worst:.3e}", e4.kernel().resolved(dtype));
        let stream = tokens(200, nv, 32);
        let kl_4bit = kl_of_4bit_rounding(&m, &stream, 24, 4);
        let q = weight_format_quality(&m, &stream, dtype, Kernel::Auto, 24, 4).unwrap();
        let ppl_dev = (q.ppl / q.ppl_f32 - 1.0).abs();
        eprintln!("{name} {dtype:?}: KL {:.3e} (per-row 4-bit {kl_4bit:.3e}), |ppl ratio − 1| {ppl_dev:.3e}", q.kl_mean);
        assert!(q.kl_mean.is_finite() && q.kl_mean >= 0.0 && q.kl_mean < Q4_KL, "{name} {dtype:?}: KL {}", q.kl_mean);
        assert!(q.kl_mean < kl_4bit / 8.0, "{name} {dtype:?}: KL {} is not well below per-row 4-bit rounding's {kl_4bit}", q.kl_mean);
    }
}

/// Mean KL(p_f32 ‖ p_4bit) on the windows [`weight_format_quality`] reads, where the 4-bit model
/// has every matrix rounded per row to 4 bits (`scale = max|row| / 7`): the deliberately wrong
/// quantisation the real formats are compared with, measured by [`quality_against`] (the path
/// `moe bench quality --gguf` takes) with the rounded copy run in f32.
fn kl_of_4bit_rounding(m: &Transformer<f32>, stream: &[u32], seq_len: usize, n_win: usize) -> f64 {
    let q = rounded_4bit(m);
    let r = quality_against(m, &q, stream, WeightDtype::F32, Kernel::Auto, seq_len, n_win).unwrap();
    assert_eq!(r.n_tok, seq_len * n_win);
    assert_eq!(r.bits_per_weight, 32.0, "an f32 engine holds 32 bits per weight");
    r.kl_mean
}

/// `m` with every matrix rounded per row to 4 bits.
fn rounded_4bit(m: &Transformer<f32>) -> Transformer<f32> {
    let mut q = m.clone();
    for e in m.table.entries.iter().filter(|e| e.shape.len() == 2) {
        let cols = e.shape[1];
        for row in q.params[e.range()].chunks_mut(cols) {
            let s = row.iter().fold(0.0f32, |a, &v| a.max(v.abs())) / 7.0;
            if s > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v / s).round() * s);
            }
        }
    }
    q
}

/// [`quality_against`] a copy of the model itself is [`weight_format_quality`] (the same numbers,
/// KL 0 in f32); against a model of another shape it is an error, not a panic; the bits per weight
/// it reports follow the format (bf16 16, q4 between its blocks' 4.5 and the int8 LM head's 8+).
#[test]
fn quality_against_another_copy() {
    let m = Transformer::<f32>::new(moe_cfg(), 9).unwrap();
    let stream = tokens(200, m.cfg.n_vocab, 32);
    for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::Q4] {
        let a = weight_format_quality(&m, &stream, dtype, Kernel::Auto, 24, 3).unwrap();
        let b = quality_against(&m, &m.clone(), &stream, dtype, Kernel::Auto, 24, 3).unwrap();
        assert_eq!(a, b, "{dtype:?}");
        match dtype {
            WeightDtype::F32 => assert!(a.kl_mean.abs() < 1e-12 && a.top1_agree == 1.0 && a.bits_per_weight == 32.0, "{a:?}"),
            WeightDtype::Bf16 => assert_eq!(a.bits_per_weight, 16.0),
            _ => assert!(a.bits_per_weight > 4.5 && a.bits_per_weight < 8.5, "{a:?}"),
        }
    }
    let q = rounded_4bit(&m);
    let r = quality_against(&m, &q, &stream, WeightDtype::F32, Kernel::Auto, 24, 3).unwrap();
    assert!(r.kl_median <= r.kl_p99 && r.kl_p99 <= r.kl_max && r.kl_mean <= r.kl_max && r.kl_median > 0.0, "{r:?}");
    assert!(
        r.kl_mean > 1e-9
            && r.kl_mean.is_finite()
            && r.ppl_f32 == weight_format_quality(&m, &stream, WeightDtype::F32, Kernel::Auto, 24, 3).unwrap().ppl_f32,
        "{r:?}"
    );
    let other = Transformer::<f32>::new(cfg(DENSE), 9).unwrap();
    let e = quality_against(&m, &other, &stream, WeightDtype::F32, Kernel::Auto, 24, 3).unwrap_err().to_string();
    assert!(e.contains("differ in shape"), "{e}");
}

/// The activation-quantising kernels (where this CPU has them) stay close too: int8 activations
/// (VNNI) within 5% of max |logit|, bf16 activations within 2%.
#[test]
fn fast_dot_kernels_within_tolerance_of_f32() {
    for (name, c) in [("dense", cfg(DENSE)), ("moe", moe_cfg()), ("qwen-like", qwen_like_cfg())] {
        let m = Transformer::<f32>::new(c, 9).unwrap();
        check_fast_dot_kernels(name, &m, &tokens(24, m.cfg.n_vocab, 33));
    }
}

/// Bytes and FLOPs of a decode step of a tiny model, written out by hand.
#[test]
fn byte_and_flop_counters_match_hand_computed_values() {
    // d_model 8, 2 heads of 4, 1 KV head, vocab 10, 1 layer MoE with 4 experts of 6, top-2,
    // softmax, no shared expert
    let c = cfg("n_vocab = 10\nn_ctx = 16\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 12\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\n");
    let m = model(c, 40);
    for (dtype, bpw, row_extra) in [(WeightDtype::F32, 4usize, 0usize), (WeightDtype::Bf16, 2, 0), (WeightDtype::I8, 1, 4)] {
        let mut e = Engine::new(&m, dtype).unwrap();
        let mut caches: Vec<KvCache<f32>> = (0..2).map(|_| KvCache::new(&m.cfg)).collect();
        let mut refs: Vec<&mut KvCache<f32>> = caches.iter_mut().collect();
        e.step(&mut refs, &[vec![1u32, 2, 3], vec![4u32]]).unwrap();
        // decode: 2 sequences at positions 3 and 1, one token each
        e.step(&mut refs, &[[5u32], [6u32]]).unwrap();
        let st = e.last_stats().clone();
        let distinct = st.distinct_experts()[0];
        assert_eq!(st.expert_counts[0].iter().sum::<usize>(), 4);
        // matrices: wqkv [8+4+4, 8], wo [8, 8], router [4, 8] f32, per expert gate+up [12, 8] and
        // down [8, 6], lm_head [10, 8]; int8 adds 4 bytes of scale per row
        let mat = |n: usize, k: usize| n * k * bpw + n * row_extra;
        let bytes = mat(16, 8) + mat(8, 8) + 4 * 4 * 8 + distinct * (mat(12, 8) + mat(8, 6)) + mat(10, 8);
        assert_eq!(st.weight_bytes, bytes as u64, "{dtype:?}");
        // FLOPs: 2·m·n·k per product with m = 2 tokens (experts: 4 assignments of 2 tokens);
        // attention: 4·d_head per (query head, visible key): keys 4 and 2 for the two sequences
        let flops = 2 * 2 * (16 * 8 + 8 * 8 + 4 * 8 + 10 * 8) + 2 * 4 * (12 * 8 + 8 * 6) + 4 * 4 * 2 * (4 + 2);
        assert_eq!(st.flops, flops as u64, "{dtype:?}");
        assert_eq!(st.n_tok, 2);
    }
}

#[test]
fn engine_errors_instead_of_panicking() {
    let m = model(moe_cfg(), 50);
    let mut e = Engine::new(&m, WeightDtype::F32).unwrap();
    let mut c = KvCache::new(&m.cfg);
    assert!(e.step(&mut [&mut c], &[vec![99u32]]).is_err());
    assert!(e.step(&mut [&mut c], &[Vec::<u32>::new()]).is_err());
    assert!(e.step(&mut [], &[vec![1u32]]).is_err());
    assert!(matches!(e.step(&mut [&mut c], &[vec![1u32; 65]]), Err(Error::ContextOverflow { .. })));
    assert_eq!(c.len(), 0);
    let out = generate_with_engine(&mut e, &[1, 2, 3], 5, &SamplerConfig::greedy(), &[], |_| {}).unwrap();
    let reference = generate(&m, &[1, 2, 3], 5, &SamplerConfig::greedy(), None, |_| {}).unwrap();
    assert_eq!(out.tokens, reference.tokens);
}

#[test]
fn bench_infer_reports_bytes_and_expected_experts() {
    let m = model(moe_cfg(), 60);
    let mut e = Engine::new(&m, WeightDtype::F32).unwrap();
    let machine = Machine { threads: 1, bandwidth_gbs: 10.0, peak_gflops: 10.0 };
    let rows = bench_infer(&mut Runner::Engine(&mut e), &machine, &[1, 3], 4, 3, 1, 0).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(r.decode_tokens_per_s > 0.0 && r.bytes_per_step.unwrap() > 0.0 && r.roofline_fraction.unwrap() > 0.0);
        assert!(r.distinct_experts.unwrap() <= 6.0 && r.expected_distinct.unwrap() > 0.0);
    }
    let rows = bench_infer(&mut Runner::Reference(&m), &machine, &[2], 4, 3, 1, 0).unwrap();
    assert!(rows[0].bytes_per_step.is_none() && rows[0].distinct_experts.is_some());
}

/// A NaN or Inf weight is an error naming the tensor, for every format (int8 used to map NaN to 0
/// and panic on Inf), never a panic or silently quantised garbage.
#[test]
fn non_finite_weights_are_an_error_naming_the_tensor() {
    for bad in [f32::NAN, f32::INFINITY] {
        let mut m = Transformer::<f32>::new(cfg(DENSE), 9).unwrap();
        let e = m.table.entries.iter().find(|e| e.name.contains("layers.0") && e.shape.len() == 2).unwrap().clone();
        m.params[e.range().start + 3] = bad;
        for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::I8] {
            let err = Engine::new(&m, dtype).err().unwrap_or_else(|| panic!("{bad} weight accepted in {dtype:?}")).to_string();
            assert!(err.contains(&e.name) && err.contains("non-finite"), "{dtype:?}: {err}");
        }
    }
}
