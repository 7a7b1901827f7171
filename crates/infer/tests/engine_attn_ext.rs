//! The fast engine on the inference-only attention of imported architectures (`attn_ext`) against
//! the reference path (`forward_step_with`, which runs `moe_model::layers::attention_ext`): sinks,
//! sliding windows, chunked attention, NoPE layers with temperature, L2 q/k norms, interleaved and
//! scaled RoPE, softmax scale, output bias, and latent attention with and without a q latent — on
//! random models (prefill chunks on both the dot and the GEMM paths, windows and chunks shorter
//! than the sequences, two sequences in uneven chunks). The golden Hugging Face models, these
//! features included, run on the engine in `hf_greedy.rs`.

mod common;
use common::*;

use moe_infer::*;
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_kernels::rng::Rng;
use moe_model::{ModelConfig, Transformer};

const BASE: &str = "n_vocab = 48\nn_ctx = 96\nn_layer = 3\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 48\n";

/// GPT-OSS-like: sinks, a sliding window (5) in layers 0 and 2, q/k/v and output biases, per-head
/// q/k norm, interleaved RoPE, explicit softmax scale.
fn window_sinks_cfg() -> ModelConfig {
    cfg(&format!(
        "{BASE}attn_bias = true\nqk_norm = \"head\"\n[attn_ext]\nsinks = true\nout_bias = true\nsliding_window = 5\n\
         window_layers = [true, false, true]\nrope_interleave = true\nsoftmax_scale = 0.3\n"
    ))
}

/// Llama-4-like: chunked attention (6) in layers 0 and 2, a NoPE layer 1 with temperature, L2 q/k
/// norm in the RoPE layers, llama3 RoPE scaling, a plain MoE FFN.
fn chunk_nope_cfg() -> ModelConfig {
    cfg(&format!(
        "{BASE}[rope_scaling]\ntype = \"llama3\"\nfactor = 8.0\nlow_freq_factor = 1.0\nhigh_freq_factor = 4.0\n\
         original_max_position_embeddings = 16\n\
         [attn_ext]\nattention_chunk = 6\nchunk_layers = [true, false, true]\nrope_layers = [true, false, true]\n\
         qk_l2_norm = true\n[attn_ext.temperature]\nfloor_scale = 4.0\nattn_scale = 0.5\n\
         [moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 24\n"
    ))
}

const MLA_BASE: &str = "n_vocab = 48\nn_ctx = 96\nn_layer = 3\nd_model = 32\nn_head = 4\nn_head_kv = 4\nd_head = 16\nd_ff = 48\n";
const YARN: &str = "[rope_scaling]\ntype = \"yarn\"\nfactor = 4.0\nbeta_fast = 32.0\nbeta_slow = 1.0\n\
                    original_max_position_embeddings = 16\ntruncate = true\nattention_factor = 1.2\n";

/// DeepSeek-V3-like latent attention with a q latent, interleaved YaRN RoPE, softmax scale, and a
/// sliding window with sinks in layer 1 (the masks of the latent path).
fn mla_cfg() -> ModelConfig {
    cfg(&format!(
        "{MLA_BASE}{YARN}[attn_ext]\nrope_interleave = true\nsoftmax_scale = 0.25\nsinks = true\nsliding_window = 5\n\
         window_layers = [false, true, false]\n[attn_ext.mla]\nq_lora_rank = 16\nkv_lora_rank = 24\nd_nope = 12\nd_rope = 4\n\
         d_v = 10\nnorm_eps = 1e-6\n"
    ))
}

/// Latent attention without a q latent, chunked attention (7) in layers 0 and 2, an output bias.
fn mla_noq_cfg() -> ModelConfig {
    cfg(&format!(
        "{MLA_BASE}[attn_ext]\nout_bias = true\nattention_chunk = 7\nchunk_layers = [true, false, true]\n[attn_ext.mla]\n\
         kv_lora_rank = 12\nd_nope = 12\nd_rope = 4\nd_v = 6\nnorm_eps = 1e-6\n"
    ))
}

/// A random model scaled ×4 with every norm weight, bias and sink moved away from its default.
fn model(c: ModelConfig, seed: u64) -> Transformer<f32> {
    let mut m = Transformer::<f32>::new(c, seed).unwrap();
    m.params.iter_mut().for_each(|p| *p *= 4.0);
    let mut rng = Rng::new(seed ^ 77);
    for e in m.table.entries.clone() {
        let n = &e.name;
        let base = if n.ends_with(".bias") || n.ends_with("sinks") {
            0.0
        } else if n.contains("norm") {
            1.0
        } else {
            continue;
        };
        for v in &mut m.params[e.range()] {
            *v = base + 0.3 * rng.normal() as f32;
        }
    }
    m
}

fn ext_models() -> Vec<(&'static str, Transformer<f32>)> {
    vec![
        ("window+sinks", model(window_sinks_cfg(), 1)),
        ("chunk+nope", model(chunk_nope_cfg(), 2)),
        ("mla", model(mla_cfg(), 3)),
        ("mla-noq", model(mla_noq_cfg(), 4)),
    ]
}

/// Two sequences advance together in uneven chunks (prefills of 20 and 18 rows on the GEMM path,
/// short chunks and single tokens on the dot path, well past every window and chunk): every
/// position's engine logits equal the reference path's, step by step.
#[test]
fn engine_equals_reference_on_every_attention_extension() {
    for (name, m) in ext_models() {
        let nv = m.cfg.n_vocab;
        let seqs = [tokens(60, nv, 5), tokens(50, nv, 6)];
        let chunks = [[20, 2], [1, 5], [3, 1], [1, 18], [17, 1], [1, 3], [1, 1], [2, 1]];
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut ce = [KvCache::new(&m.cfg), KvCache::new(&m.cfg)];
        let mut cr = [KvCache::new(&m.cfg), KvCache::new(&m.cfg)];
        let mut pos = [0usize; 2];
        for (it, ch) in chunks.iter().enumerate() {
            let toks: Vec<&[u32]> = (0..2).map(|s| &seqs[s][pos[s]..pos[s] + ch[s]]).collect();
            let le = {
                let [a, b] = &mut ce;
                eng.step_all_logits(&mut [a, b], &toks).unwrap().to_vec()
            };
            let [a, b] = &mut cr;
            let lr = forward_step_with(&m, &mut [a, b], &toks, StepOptions { all_logits: true, routing: false }).unwrap().logits;
            assert_close(&le[..ch[0] * nv], &lr[0], 1e-4, &format!("{name} step {it} seq 0 at {}", pos[0]));
            assert_close(&le[ch[0] * nv..], &lr[1], 1e-4, &format!("{name} step {it} seq 1 at {}", pos[1]));
            pos[0] += ch[0];
            pos[1] += ch[1];
        }
        assert_eq!(ce.iter().map(|c| c.len()).collect::<Vec<_>>(), pos.to_vec(), "{name}");
    }
}

/// Token-by-token decoding equals one full prefill (all logits) on the engine itself; the 60-row
/// prefill is big enough for the parallel regions of the attention (and of latent attention's
/// per-head products, `mla`).
#[test]
fn engine_kv_cached_decoding_equals_its_full_prefill() {
    for (name, m) in ext_models() {
        let nv = m.cfg.n_vocab;
        let seq = tokens(60, nv, 11);
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let full = eng.step_all_logits(&mut [&mut KvCache::new(&m.cfg)], &[&seq]).unwrap().to_vec();
        let mut cache = KvCache::new(&m.cfg);
        for p in 0..seq.len() {
            let l = eng.step(&mut [&mut cache], &[&seq[p..p + 1]]).unwrap();
            assert_close(l, &full[p * nv..(p + 1) * nv], 1e-4, &format!("{name}: position {p}"));
        }
    }
}

/// A decode step of a dense model reads every matrix once: its byte count is the engine's whole
/// weight footprint (latent attention's per-head halves of `wkv_b` included), and its FLOPs grow
/// only with the visible keys once the sequence is past its windows.
#[test]
fn decode_step_counts_every_attention_matrix_once() {
    for (name, c) in [("window+sinks", window_sinks_cfg()), ("mla", mla_cfg()), ("mla-noq", mla_noq_cfg())] {
        let m = model(c, 8);
        let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
        let mut cache = KvCache::new(&m.cfg);
        eng.step(&mut [&mut cache], &[tokens(10, m.cfg.n_vocab, 3)]).unwrap();
        eng.step(&mut [&mut cache], &[[1u32]]).unwrap();
        let st = eng.last_stats().clone();
        assert_eq!(st.weight_bytes as usize, eng.weights().total_bytes(), "{name}");
        assert!(st.flops > 0 && st.n_tok == 1, "{name}");
    }
    // window 5 in layers 0 and 2: at positions ≥ 5 those layers see 5 keys, layer 1 all of them
    let m = model(window_sinks_cfg(), 8);
    let mut eng = Engine::new(&m, WeightDtype::F32).unwrap();
    let mut cache = KvCache::new(&m.cfg);
    eng.step(&mut [&mut cache], &[tokens(10, m.cfg.n_vocab, 3)]).unwrap();
    let f = |eng: &mut Engine, cache: &mut KvCache<f32>| {
        eng.step(&mut [cache], &[[1u32]]).unwrap();
        eng.last_stats().flops
    };
    let (f10, f11) = (f(&mut eng, &mut cache), f(&mut eng, &mut cache));
    let dh = m.cfg.d_head() as u64;
    assert_eq!(f11 - f10, 4 * dh * m.cfg.n_head as u64, "one more visible key in the unwindowed layer only");
}

/// bf16 and int8 weights (every attention matrix included) stay within 0.4% and 1.6% of max |logit|
/// of the f32 engine on the extension models at their initial scale (about 2× the measured error;
/// measured on an AVX2-only CPU, whose exact kernels differ from AVX-512's only in summation order).
#[test]
fn bf16_and_int8_within_tolerance_of_f32_on_extensions() {
    for (name, c) in [("window+sinks", window_sinks_cfg()), ("mla", mla_cfg())] {
        let m = Transformer::<f32>::new(c, 9).unwrap();
        let seq = tokens(24, m.cfg.n_vocab, 31);
        let l32 = engine_prompt_logits(&m, WeightDtype::F32, Kernel::Auto, &seq);
        for (dtype, tol) in [
            // measured 1.84e-3 (mla; window+sinks 1.64e-3) on 2026-12-07; bound ≈ 2×
            (WeightDtype::Bf16, 4e-3f32),
            // measured 7.76e-3 (mla; window+sinks 5.76e-3) on 2026-12-07; bound ≈ 2×
            (WeightDtype::I8, 1.6e-2),
        ] {
            let l = engine_prompt_logits(&m, dtype, Kernel::Auto, &seq);
            let d = moe_testutil::checked_diff("engine_attn_ext.rs", &l, &l32);
            let (err, scale) = (d.max_abs as f32, d.scale as f32);
            eprintln!("{name} {dtype:?}: max |Δlogit| / max |logit| = {:.2e}", err / scale);
            assert_close(&l, &l32, tol, &format!("{name} {dtype:?}"));
        }
    }
}

/// The activation-quantising dot kernels (where this CPU has them) on every attention matrix,
/// latent attention's per-head halves of `wkv_b` included: int8 (VNNI) within 5% of max |logit|,
/// bf16 within 2%; a CPU without them is refused with an error.
#[test]
fn fast_dot_kernels_within_tolerance_of_f32_on_extensions() {
    for (name, c) in [("window+sinks", window_sinks_cfg()), ("mla", mla_cfg()), ("mla-noq", mla_noq_cfg())] {
        let m = Transformer::<f32>::new(c, 9).unwrap();
        check_fast_dot_kernels(name, &m, &tokens(24, m.cfg.n_vocab, 33));
    }
}
