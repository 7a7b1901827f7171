//! Hugging Face checkpoints: `hf::load_hf_dir` against transformers (`reference/hf_goldens.py`).
//! Fixtures live in `tests/golden_hf/<case>/` (a `save_pretrained` directory + `expected.safetensors`)
//! with versions and tolerances in `tests/golden_hf/MANIFEST.json`.

use moe_model::checkpoint::tensor_f32;
use moe_model::hf::{load_hf_dir, load_hf_dir_with, HfOptions};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden_hf")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("MANIFEST.json")).unwrap()).unwrap()
}

fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
}

/// max |a − b| / max |b|; a non-finite value fails (`moe_testutil::max_abs_rel`).
#[track_caller]
fn max_abs_rel(a: &[f32], b: &[f32]) -> f64 {
    moe_testutil::max_abs_rel("logits", a, b)
}

fn softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn check_case(name: &str, tol: f64) {
    check_case_with(name, tol, &|_, z| softmax(z));
}

/// `choice(layer, router_logits_row)` gives the scores transformers selects the top-k experts by.
fn check_case_with(name: &str, tol: f64, choice: &dyn Fn(usize, &[f32]) -> Vec<f64>) {
    let dir = golden_dir().join(name);
    let m = load_hf_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let case = &manifest()["cases"][name];
    assert_eq!(m.arch, case["architecture"].as_str().unwrap());
    assert_eq!(m.bos_token_id, Some(1), "{name}: bos");
    assert_eq!(m.eos_token_ids, vec![2], "{name}: eos");
    let (n_seq, seq_len) = (case["n_seq"].as_u64().unwrap() as usize, case["seq_len"].as_u64().unwrap() as usize);
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let path = dir.join("expected.safetensors");
    let tokens = i64s(&st, "tokens");
    let (shape, want) = tensor_f32(&st, "logits", &path).unwrap();
    assert_eq!(shape, vec![n_seq, seq_len, m.cfg.n_vocab]);

    // logits of the whole batch
    let out = m.model.forward(&tokens, n_seq, seq_len).unwrap();
    let rel = max_abs_rel(&out.logits, &want);
    eprintln!("{name}: logits max-abs-rel {rel:.2e}");
    assert!(rel <= tol, "{name}: logits differ from transformers: max-abs-rel {rel:e} > {tol:e}");

    // router logits and top-k choices per MoE layer
    let moe_layers: Vec<usize> = case["moe_layers"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(out.routing.iter().map(|r| r.layer).collect::<Vec<_>>(), moe_layers, "{name}: MoE placement");
    for r in &out.routing {
        let (_, hz) = tensor_f32(&st, &format!("router_logits.{}", r.layer), &path).unwrap();
        let e = r.routing.settings.n_expert;
        let k = r.routing.settings.k;
        let rel = max_abs_rel(&r.routing.logits, &hz);
        assert!(rel <= tol, "{name}: layer {} router logits max-abs-rel {rel:e}", r.layer);
        let mut compared = 0;
        for t in 0..n_seq * seq_len {
            let p = choice(r.layer, &hz[t * e..(t + 1) * e]);
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            if p[order[k - 1]] - p[order[k]] < 1e-4 {
                continue; // a near-tie at the k-th place: either choice is right
            }
            let mut ours: Vec<u32> = r.routing.idx[t * k..(t + 1) * k].to_vec();
            let mut theirs: Vec<u32> = order[..k].iter().map(|&x| x as u32).collect();
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{name}: layer {} token {t}: top-{k} experts", r.layer);
            compared += 1;
        }
        assert!(compared * 10 >= 9 * n_seq * seq_len, "{name}: only {compared} tokens away from ties");
    }

    eprintln!("{name}: top-k experts match for every token away from ties");
    // greedy continuation of sequence 0 by full recomputation
    let greedy = i64s(&st, "greedy");
    let mut seq: Vec<u32> = tokens[..seq_len].to_vec();
    for (step, &want_tok) in greedy.iter().enumerate() {
        let out = m.model.forward(&seq, 1, seq.len()).unwrap();
        let v = m.cfg.n_vocab;
        let next = argmax(&out.logits[(seq.len() - 1) * v..]);
        assert_eq!(next, want_tok, "{name}: greedy step {step}");
        seq.push(next);
    }
}

fn logits_tol() -> f64 {
    manifest()["tolerances"]["logits"]["max_abs_rel"].as_f64().unwrap()
}

#[test]
fn hf_llama_logits_routing_and_greedy_match_transformers() {
    check_case("llama", logits_tol());
}

#[test]
fn hf_llama_tied_logits_match_transformers() {
    check_case("llama_tied", logits_tol());
    let m = load_hf_dir(&golden_dir().join("llama_tied")).unwrap();
    assert!(m.cfg.tie_embeddings && m.model.table.get("lm_head.weight").is_none());
}

#[test]
fn hf_mixtral_sharded_logits_routing_and_greedy_match_transformers() {
    assert!(golden_dir().join("mixtral/model.safetensors.index.json").exists());
    check_case("mixtral", logits_tol());
}

#[test]
fn hf_qwen3_head_dim_qk_norm_tied_match_transformers() {
    check_case("qwen3", logits_tol());
    let m = load_hf_dir(&golden_dir().join("qwen3")).unwrap();
    assert_eq!((m.cfg.d_head(), m.cfg.d_head), (16, Some(16)));
    assert_eq!(m.model.table.get("layers.0.attn.q_norm.weight").unwrap().shape, vec![16]);
}

#[test]
fn hf_qwen3_moe_logits_routing_and_greedy_match_transformers() {
    check_case("qwen3_moe", logits_tol());
    let m = load_hf_dir(&golden_dir().join("qwen3_moe")).unwrap();
    let mc = m.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.first_dense, mc.every, mc.renormalize, mc.d_expert), (1, 1, false, 32));
}

#[test]
fn hf_olmoe_logits_routing_and_greedy_match_transformers() {
    check_case("olmoe", logits_tol());
    let m = load_hf_dir(&golden_dir().join("olmoe")).unwrap();
    assert_eq!(m.model.table.get("layers.0.attn.k_norm.weight").unwrap().shape, vec![32]);
}

// ---------- other encodings of the same weights ----------

/// All tensors of one safetensors file: name → (dtype, shape, bytes).
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Tensors = st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write_tensors(path: &Path, t: &Tensors) {
    let views: Vec<(String, TensorView<'_>)> =
        t.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

fn f32_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A copy of golden case `name` in a temp dir with `model.safetensors` rewritten by `edit`
/// and `config.json` by `edit_cfg`.
fn variant(name: &str, edit: impl FnOnce(&mut Tensors), edit_cfg: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let src = golden_dir().join(name);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_cfg(&mut cfg);
    std::fs::write(dir.path().join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    if src.join("model.safetensors").exists() {
        let mut t = read_tensors(&src.join("model.safetensors"));
        edit(&mut t);
        write_tensors(&dir.path().join("model.safetensors"), &t);
    } else {
        // sharded: copied as is (`edit` is not applied)
        for f in std::fs::read_dir(&src).unwrap() {
            let p = f.unwrap().path();
            let n = p.file_name().unwrap().to_str().unwrap().to_string();
            if n.starts_with("model-") || n == "model.safetensors.index.json" {
                std::fs::copy(&p, dir.path().join(&n)).unwrap();
            }
        }
    }
    dir
}

#[test]
fn hf_bf16_and_f16_weights_load_as_their_f32_values() {
    let base = load_hf_dir(&golden_dir().join("llama")).unwrap();
    for dt in [Dtype::BF16, Dtype::F16] {
        let dir = variant(
            "llama",
            |t| {
                for (_, d, _, b) in t.iter_mut() {
                    let v = f32_of(b);
                    *b = match dt {
                        Dtype::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                        _ => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                    };
                    *d = dt;
                }
            },
            |_| {},
        );
        let m = load_hf_dir(dir.path()).unwrap();
        let want: Vec<f32> = base
            .model
            .params
            .iter()
            .map(|&x| match dt {
                Dtype::BF16 => half::bf16::from_f32(x).to_f32(),
                _ => half::f16::from_f32(x).to_f32(),
            })
            .collect();
        assert!(m.model.params == want, "{dt:?} weights are not their exact f32 values");
        // and the model still computes nearly the same logits
        let out = m.model.forward(&[5, 6, 7, 8], 1, 4).unwrap();
        let base_out = base.model.forward(&[5, 6, 7, 8], 1, 4).unwrap();
        assert!(max_abs_rel(&out.logits, &base_out.logits) < 0.05, "{dt:?}");
    }
}

#[test]
fn hf_fused_expert_layout_loads_like_per_expert_tensors() {
    // transformers ≥ 5 in memory: mlp.experts.gate_up_proj [E, 2·I, H] (gate first), down_proj [E, H, I]
    let base = load_hf_dir(&golden_dir().join("qwen3_moe")).unwrap();
    let dir = variant(
        "qwen3_moe",
        |t| {
            for layer in [1, 2] {
                let p = format!("model.layers.{layer}.mlp.experts.");
                let get = |t: &Tensors, n: String| t.iter().find(|x| x.0 == n).unwrap().3.clone();
                let (mut gu, mut down) = (Vec::new(), Vec::new());
                for e in 0..6 {
                    gu.extend(get(t, format!("{p}{e}.gate_proj.weight")));
                    gu.extend(get(t, format!("{p}{e}.up_proj.weight")));
                    down.extend(get(t, format!("{p}{e}.down_proj.weight")));
                }
                t.retain(|x| !x.0.starts_with(&p));
                t.push((format!("{p}gate_up_proj"), Dtype::F32, vec![6, 64, 48], gu));
                t.push((format!("{p}down_proj"), Dtype::F32, vec![6, 48, 32], down));
            }
        },
        |_| {},
    );
    let m = load_hf_dir(dir.path()).unwrap();
    assert!(m.model.params == base.model.params);
}

// ---------- errors name the file and the field or tensor ----------

fn load_err(dir: &Path) -> String {
    match load_hf_dir(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hf_unknown_architecture_is_an_error_naming_it() {
    let dir = variant("llama", |_| {}, |c| c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]));
    let e = load_err(dir.path());
    assert!(e.contains("GPTNeoXForCausalLM") && e.contains("architectures") && e.contains("config.json"), "{e}");
}

#[test]
fn hf_missing_tensor_is_an_error_naming_it() {
    let dir = variant("llama", |t| t.retain(|x| x.0 != "model.layers.1.self_attn.k_proj.weight"), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.1.self_attn.k_proj.weight") && e.contains("missing"), "{e}");
    let dir = variant("qwen3", |t| t.retain(|x| x.0 != "model.layers.0.self_attn.q_norm.weight"), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.0.self_attn.q_norm.weight"), "{e}");
    let dir = variant("olmoe", |t| t.retain(|x| x.0 != "model.layers.1.mlp.experts.3.up_proj.weight"), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.1.mlp.experts.3.up_proj.weight"), "{e}");
}

#[test]
fn hf_misshaped_tensor_is_an_error_naming_it_and_the_file() {
    let dir = variant(
        "llama",
        |t| {
            let x = t.iter_mut().find(|x| x.0 == "model.layers.0.mlp.up_proj.weight").unwrap();
            let v = f32_of(&x.3);
            x.2 = vec![x.2[0] - 1, x.2[1]];
            x.3 = bytes_of(&v[..x.2[0] * x.2[1]]);
        },
        |_| {},
    );
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("shape") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn hf_unused_tensor_is_an_error_naming_it() {
    // a bias the config does not announce: silently dropping it would change the math
    let dir =
        variant("llama", |t| t.push(("model.layers.0.self_attn.q_proj.bias".into(), Dtype::F32, vec![64], bytes_of(&[0.5; 64]))), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.0.self_attn.q_proj.bias") && e.contains("not used"), "{e}");
}

#[test]
fn hf_unsupported_options_are_errors_naming_the_field() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "llama",
            Box::new(|c| c["rope_parameters"] = serde_json::json!({"rope_type": "longrope", "rope_theta": 500000.0, "factor": 8.0})),
            "rope_parameters.rope_type",
        ),
        (
            "llama",
            Box::new(|c| {
                c["rope_parameters"] = Value::Null;
                c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0});
            }),
            "rope_scaling.type",
        ),
        (
            "llama",
            Box::new(|c| c["rope_parameters"] = serde_json::json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0})),
            "rope_parameters.low_freq_factor",
        ),
        (
            "llama",
            Box::new(|c| {
                c["rope_parameters"] = serde_json::json!({"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0, "beta_fast": 3.0})
            }),
            "rope_parameters.beta_fast",
        ),
        ("gpt_oss", Box::new(|c| c["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"])), "layer_types"),
        ("deepseek_v3", Box::new(|c| c["n_group"] = serde_json::json!(3)), "n_group"),
        ("deepseek_v3", Box::new(|c| c["num_key_value_heads"] = serde_json::json!(2)), "num_key_value_heads"),
        ("llama4", Box::new(|c| c["moe_layers"] = serde_json::json!([1, 2])), "moe_layers"),
        ("llama", Box::new(|c| c["attention_bias"] = Value::Bool(true)), "attention_bias"),
        ("llama", Box::new(|c| c["mlp_bias"] = Value::Bool(true)), "mlp_bias"),
        ("llama", Box::new(|c| c["hidden_act"] = Value::String("gelu".into())), "hidden_act"),
        ("olmoe", Box::new(|c| c["sliding_window"] = serde_json::json!(16)), "sliding_window"),
        (
            "qwen3",
            Box::new(|c| {
                c["use_sliding_window"] = Value::Bool(true);
                c["sliding_window"] = serde_json::json!(8);
                c["layer_types"] = serde_json::json!(["full_attention", "chunked_attention"]);
            }),
            "layer_types",
        ),
        (
            "qwen3_moe",
            Box::new(|c| {
                c["mlp_only_layers"] = serde_json::json!([1]);
            }),
            "mlp_only_layers",
        ),
        ("olmoe", Box::new(|c| c["clip_qkv"] = serde_json::json!(8.0)), "clip_qkv"),
    ];
    for (case, edit, field) in cases {
        let dir = variant(case, |_| {}, |c| edit(c));
        let e = load_err(dir.path());
        assert!(e.contains(&format!("`{field}`")) && e.contains("config.json"), "{case} / {field}: {e}");
    }
}

#[test]
fn hf_sliding_window_that_covers_the_context_is_accepted() {
    // a window ≥ the context masks nothing: Mixtral with window 16 loads with n_ctx 16
    let dir = variant("mixtral", |_| {}, |c| c["sliding_window"] = serde_json::json!(16));
    let m = load_hf_dir_with(dir.path(), &HfOptions { n_ctx: Some(16), ..Default::default() }).unwrap();
    assert_eq!(m.cfg.n_ctx, 16);
}

// ---------- config mapping of Hub-style configs (transformers 4 key names) ----------

#[test]
fn hf_hub_style_qwen3_moe_config_maps_placement_and_rope() {
    use moe_model::hf::parse_config;
    let base = serde_json::json!({
        "architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 128,
        "rope_theta": 1000000.0, "rope_scaling": null, "rms_norm_eps": 1e-6, "intermediate_size": 48,
        "moe_intermediate_size": 16, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true,
        "decoder_sparse_step": 2, "mlp_only_layers": [], "use_sliding_window": false, "sliding_window": 4096,
        "tie_word_embeddings": false, "eos_token_id": [5, 6], "bos_token_id": null
    });
    let p = Path::new("hub/config.json");
    let hc = parse_config(&base.to_string(), p, &HfOptions::default()).unwrap();
    let m = hc.cfg.moe.as_ref().unwrap();
    assert_eq!((m.every, m.first_dense, m.n_expert, m.d_expert, m.renormalize), (2, 0, 8, 16, true));
    assert_eq!(hc.cfg.ffn_kinds().iter().filter(|k| matches!(k, moe_model::FfnKind::Moe { .. })).count(), 2);
    assert_eq!((hc.cfg.rope_theta, hc.cfg.d_head(), hc.cfg.n_ctx), (1e6, 16, 128));
    assert_eq!((hc.bos_token_id, hc.eos_token_ids.clone()), (None, vec![5, 6]));
    // sparse step 2 with the first MoE layer made dense: only layer 3 is MoE
    let mut c = base.clone();
    c["mlp_only_layers"] = serde_json::json!([1]);
    let hc = parse_config(&c.to_string(), p, &HfOptions::default()).unwrap();
    let moe_at: Vec<bool> = hc.cfg.ffn_kinds().iter().map(|k| matches!(k, moe_model::FfnKind::Moe { .. })).collect();
    assert_eq!(moe_at, vec![false, false, false, true]);
    // no experts: a dense model
    let mut c = base.clone();
    c["num_experts"] = serde_json::json!(0);
    assert!(parse_config(&c.to_string(), p, &HfOptions::default()).unwrap().cfg.moe.is_none());
    // a context override within the sliding window makes an active window harmless
    let mut c = base.clone();
    c["use_sliding_window"] = Value::Bool(true);
    assert!(parse_config(&c.to_string(), p, &HfOptions::default()).is_ok(), "window 4096 ≥ context 128");
    c["sliding_window"] = serde_json::json!(64);
    // a window shorter than the context: every layer of Qwen3-MoE slides (inference-only path)
    let ext = parse_config(&c.to_string(), p, &HfOptions::default()).unwrap().cfg.attn_ext.unwrap();
    assert_eq!((ext.sliding_window, ext.window_layers), (64, vec![true; 4]));
    // and within the window nothing changes
    let hc = parse_config(&c.to_string(), p, &HfOptions { n_ctx: Some(64), ..Default::default() }).unwrap();
    assert_eq!((hc.cfg.n_ctx, hc.cfg.attn_ext.is_none()), (64, true));
}

#[test]
fn hf_qwen2_moe_qkv_bias_and_gated_shared_expert_match_transformers() {
    check_case("qwen2_moe", logits_tol());
    let m = load_hf_dir(&golden_dir().join("qwen2_moe")).unwrap();
    assert!(m.cfg.attn_bias);
    let mc = m.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.first_dense, mc.renormalize, mc.n_expert_shared, mc.d_expert_shared, mc.shared_gate), (1, true, 1, Some(40), true));
    assert_eq!(m.model.table.get("layers.0.attn.wq.bias").unwrap().shape, vec![48]);
    assert_eq!(m.model.table.get("layers.2.attn.wv.bias").unwrap().shape, vec![24]);
    assert_eq!(m.model.table.get("layers.1.ffn.shared_gate.weight").unwrap().shape, vec![1, 48]);
    assert!(m.model.table.get("layers.0.ffn.shared_gate.weight").is_none(), "layer 0 is dense");
    // a checkpoint without the gate or a bias is an error naming the tensor
    for missing in ["model.layers.1.mlp.shared_expert_gate.weight", "model.layers.0.self_attn.k_proj.bias"] {
        let dir = variant("qwen2_moe", |t| t.retain(|x| x.0 != missing), |_| {});
        let e = load_err(dir.path());
        assert!(e.contains(missing) && e.contains("missing"), "{e}");
    }
    // qkv_bias = false with biases in the file: unused tensors are an error
    let dir = variant("qwen2_moe", |_| {}, |c| c["qkv_bias"] = Value::Bool(false));
    let e = load_err(dir.path());
    assert!(e.contains("_proj.bias") && e.contains("not used"), "{e}");
    // and without the biases it loads as a bias-free model
    let dir = variant("qwen2_moe", |t| t.retain(|x| !x.0.ends_with("_proj.bias")), |c| c["qkv_bias"] = Value::Bool(false));
    let m = load_hf_dir(dir.path()).unwrap();
    assert!(!m.cfg.attn_bias && m.model.table.get("layers.0.attn.wq.bias").is_none());
}

// ---------- inference-only architectures ----------

fn model_tensor(name: &str, tensor: &str) -> Vec<f32> {
    let path = golden_dir().join(name).join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    tensor_f32(&st, tensor, &path).unwrap().1
}

/// DeepSeek-V3 selection scores: sigmoid + e_score_correction_bias, groups outside the `topk_group`
/// best (by the sum of their two best scores) at −∞ — written independently of the model crate.
fn deepseek_choice(name: &str, n_group: usize, topk_group: usize) -> impl Fn(usize, &[f32]) -> Vec<f64> {
    let name = name.to_string();
    move |layer, z| {
        let bias = model_tensor(&name, &format!("model.layers.{layer}.mlp.gate.e_score_correction_bias"));
        let mut s: Vec<f64> = z.iter().zip(&bias).map(|(&x, &b)| 1.0 / (1.0 + (-x as f64).exp()) + b as f64).collect();
        if n_group > 1 {
            let gs = s.len() / n_group;
            let mut groups: Vec<(f64, usize)> = s
                .chunks(gs)
                .enumerate()
                .map(|(g, c)| {
                    let mut c = c.to_vec();
                    c.sort_by(|a, b| b.total_cmp(a));
                    (c[0] + c[1], g)
                })
                .collect();
            groups.sort_by(|a, b| b.0.total_cmp(&a.0));
            for &(_, g) in &groups[topk_group..] {
                s[g * gs..(g + 1) * gs].iter_mut().for_each(|x| *x = f64::NEG_INFINITY);
            }
        }
        s
    }
}

#[test]
fn hf_deepseek_v3_mla_grouped_sigmoid_routing_and_greedy_match_transformers() {
    check_case_with("deepseek_v3", logits_tol(), &deepseek_choice("deepseek_v3", 4, 2));
    let m = load_hf_dir(&golden_dir().join("deepseek_v3")).unwrap();
    let mc = m.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.first_dense, mc.n_expert_shared, mc.route_scale, mc.renormalize), (1, 1, 2.5, true));
    let x = mc.ext.as_ref().unwrap();
    assert_eq!((x.n_group, x.topk_group, x.selection_bias), (4, 2, true));
    let mla = m.cfg.attn_ext.as_ref().unwrap().mla.as_ref().unwrap();
    assert_eq!((mla.q_lora_rank, mla.kv_lora_rank, m.cfg.d_head(), m.cfg.d_head_v()), (Some(24), 16, 16, 12));
    assert_eq!(m.model.table.get("layers.1.ffn.router.fixed_selection_bias").unwrap().shape, vec![8]);
    // the backward is not implemented for latent attention: a clear error, no panic
    let mut g = vec![0.0; m.model.params.len()];
    let e = m.model.forward_backward(&[3, 4, 5], &[4, 5, 6], 1, 3, &mut g, 1.0).unwrap_err().to_string();
    assert!(e.contains("model.attn_ext") && e.contains("inference-only"), "{e}");
}

#[test]
fn hf_deepseek_v3_without_q_latent_half_split_rope_matches_transformers() {
    check_case_with("deepseek_v3_noq", logits_tol(), &deepseek_choice("deepseek_v3_noq", 1, 1));
    let m = load_hf_dir(&golden_dir().join("deepseek_v3_noq")).unwrap();
    let ext = m.cfg.attn_ext.as_ref().unwrap();
    assert!(!ext.rope_interleave && ext.mla.as_ref().unwrap().q_lora_rank.is_none());
    let mc = m.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.first_dense, mc.n_expert_shared, mc.d_shared(), mc.renormalize), (0, 2, 32, false));
}

#[test]
fn hf_gpt_oss_sinks_sliding_window_biased_clamped_experts_and_yarn_match_transformers() {
    // router: top-k of the biased logits, softmax over those k = softmax order
    check_case("gpt_oss", logits_tol());
    let m = load_hf_dir(&golden_dir().join("gpt_oss")).unwrap();
    let ext = m.cfg.attn_ext.as_ref().unwrap();
    assert_eq!((ext.sliding_window, ext.window_layers.clone(), ext.sinks, ext.out_bias), (4, vec![true, false, true], true, true));
    assert!(matches!(m.cfg.rope_scaling, Some(moe_model::RopeScaling::Yarn { factor, .. }) if factor == 4.0));
    let mut g = vec![0.0; m.model.params.len()];
    assert!(m.model.forward_backward(&[3, 4], &[4, 5], 1, 2, &mut g, 1.0).is_err());
}

#[test]
fn hf_llama4_nope_chunked_attention_input_scaled_experts_and_llama3_rope_match_transformers() {
    // router: sigmoid of the top-k logits, so softmax order = logit order picks the same experts
    check_case("llama4", logits_tol());
    let m = load_hf_dir(&golden_dir().join("llama4")).unwrap();
    let ext = m.cfg.attn_ext.as_ref().unwrap();
    assert_eq!(
        (ext.rope_layers.clone(), ext.chunk_layers.clone(), ext.attention_chunk),
        (vec![true, true, false, true], vec![true, true, false, true], 5)
    );
    assert!(ext.qk_l2_norm && ext.rope_interleave && ext.temperature.is_some());
    assert!(matches!(m.cfg.rope_scaling, Some(moe_model::RopeScaling::Llama3 { original_max_position_embeddings: 8, .. })));
    let mc = m.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.every, mc.first_dense, mc.n_expert_shared, mc.d_expert, m.cfg.d_ff), (2, 0, 1, 16, 64));
    assert!(mc.ext.as_ref().unwrap().scale_input);
}

#[test]
fn hf_rope_scaling_llama3_linear_and_yarn_match_transformers() {
    for case in ["llama_rope_llama3", "llama_rope_linear", "qwen3_rope_yarn"] {
        check_case(case, logits_tol());
        let m = load_hf_dir(&golden_dir().join(case)).unwrap();
        // a scaled RoPE is only another rotation table: the plain (trainable) attention path
        assert!(m.cfg.attn_ext.is_none() && !m.cfg.inference_only(), "{case}");
        let r = &m.cfg.rope_scaling;
        let want = match case {
            "llama_rope_llama3" => matches!(r, Some(moe_model::RopeScaling::Llama3 { factor, .. }) if *factor == 8.0),
            "llama_rope_linear" => matches!(r, Some(moe_model::RopeScaling::Linear { factor }) if *factor == 3.0),
            _ => {
                matches!(r, Some(moe_model::RopeScaling::Yarn { truncate: true, attention_factor, .. }) if (attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12)
            }
        };
        assert!(want, "{case}: {r:?}");
    }
}

#[test]
fn hf_memory_check_refuses_a_model_larger_than_available_memory() {
    use moe_model::hf::weights::{check_memory, mem_available};
    let meminfo = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    2097152 kB\n";
    assert_eq!(mem_available(meminfo), Some(2 << 30));
    assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    let dir = Path::new("some/checkpoint");
    let e = check_memory(dir, 3 << 30, Some(2 << 30)).unwrap_err().to_string();
    assert!(e.contains("some/checkpoint") && e.contains("3.00 GiB") && e.contains("2.00 GiB") && e.contains("MemAvailable"), "{e}");
    assert!(check_memory(dir, 1 << 30, Some(2 << 30)).is_ok());
    assert!(check_memory(dir, 1 << 40, None).is_ok(), "no /proc/meminfo: no check");
    // the real loader runs the check (these tiny models fit) and can skip it
    assert!(load_hf_dir_with(&golden_dir().join("llama"), &HfOptions { skip_memory_check: true, ..Default::default() }).is_ok());
}

// ---------- Hub-style configs of the inference-only architectures (transformers 4 key names) ----------

fn parse_json(v: &Value) -> moe_model::Result<moe_model::hf::HfConfig> {
    moe_model::hf::parse_config(&v.to_string(), Path::new("hub/config.json"), &HfOptions::default())
}

#[test]
fn hf_hub_style_deepseek_v3_gpt_oss_and_llama4_configs_map() {
    // DeepSeek-V3 as published (sizes shrunk): yarn in `rope_scaling` with mscale, extra routing keys
    let ds = serde_json::json!({
        "architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 96,
        "moe_intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "n_shared_experts": 1, "n_routed_experts": 16, "routed_scaling_factor": 2.5, "kv_lora_rank": 32,
        "q_lora_rank": 48, "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 16, "topk_method": "noaux_tc",
        "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
        "norm_topk_prob": true, "scoring_func": "sigmoid", "aux_loss_alpha": 0.001, "seq_aux": true, "ep_size": 1,
        "num_nextn_predict_layers": 1, "hidden_act": "silu", "max_position_embeddings": 163840, "rms_norm_eps": 1e-6,
        "rope_theta": 10000, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
        "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
        "attention_bias": false, "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 1
    });
    let hc = parse_json(&ds).unwrap();
    let ext = hc.cfg.attn_ext.as_ref().unwrap();
    let m = 0.1 * 40f64.ln() + 1.0;
    assert!((ext.softmax_scale.unwrap() - m * m / 24f64.sqrt()).abs() < 1e-12);
    assert!(
        matches!(hc.cfg.rope_scaling, Some(moe_model::RopeScaling::Yarn { attention_factor, truncate: true, .. }) if attention_factor == 1.0)
    );
    let mc = hc.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.first_dense, mc.n_expert, mc.n_expert_active, mc.ext.as_ref().unwrap().n_group), (3, 16, 8, 8));
    // the FP8 release is refused by name
    let mut q = ds.clone();
    q["quantization_config"] = serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128]});
    let e = parse_json(&q).unwrap_err().to_string();
    assert!(e.contains("`quantization_config`") && e.contains("fp8"), "{e}");

    // GPT-OSS as published: yarn in `rope_scaling`, default layer types
    let oss = serde_json::json!({
        "architectures": ["GptOssForCausalLM"], "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 64,
        "head_dim": 16, "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 4,
        "num_local_experts": 8, "num_experts_per_tok": 4, "sliding_window": 128, "max_position_embeddings": 131072,
        "rope_theta": 150000, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
        "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
        "swiglu_limit": 7.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "attention_bias": true,
        "experts_per_token": 4, "initial_context_length": 4096
    });
    let hc = parse_json(&oss).unwrap();
    let ext = hc.cfg.attn_ext.as_ref().unwrap();
    assert_eq!((ext.sliding_window, ext.window_layers.clone()), (128, vec![true, false, true, false]));
    assert!(matches!(hc.cfg.rope_scaling, Some(moe_model::RopeScaling::Yarn { factor, truncate: false, .. }) if factor == 32.0));

    // Llama 4 Scout-like text config: llama3 RoPE, every layer MoE, NoPE every 4th layer
    let l4 = serde_json::json!({
        "architectures": ["Llama4ForCausalLM"], "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 32,
        "intermediate_size_mlp": 96, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "num_local_experts": 16, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1,
        "max_position_embeddings": 10485760, "rope_theta": 500000.0, "rope_scaling": {"factor": 16.0,
        "high_freq_factor": 1.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "attention_chunk_size": 8192, "use_qk_norm": true, "attn_temperature_tuning": 4, "floor_scale": 8192,
        "attn_scale": 0.1, "rms_norm_eps": 1e-5
    });
    // `attn_temperature_tuning: 4` (transformers 4) counts as true
    let hc = parse_json(&l4).unwrap();
    assert!(hc.cfg.attn_ext.as_ref().unwrap().temperature.is_some());
    let ext = hc.cfg.attn_ext.as_ref().unwrap();
    assert_eq!(ext.rope_layers, vec![true, true, true, false, true, true, true, false]);
    assert_eq!(ext.chunk_layers, ext.rope_layers);
    let mc = hc.cfg.moe.as_ref().unwrap();
    assert_eq!((mc.every, mc.first_dense, mc.n_expert_active), (1, 0, 1));
}

#[test]
fn hf_sliding_windows_of_mixtral_qwen3_and_qwen2_moe_match_transformers() {
    for (case, layers, unwindow) in [
        ("mixtral_window", vec![true, true], ("sliding_window", Value::Null)),
        ("qwen3_window", vec![false, true, true], ("use_sliding_window", Value::Bool(false))),
        ("qwen2_moe_window", vec![true, false, true], ("use_sliding_window", Value::Bool(false))),
    ] {
        check_case(case, logits_tol());
        let m = load_hf_dir(&golden_dir().join(case)).unwrap();
        assert_eq!(m.cfg.attn_ext.as_ref().unwrap().window_layers, layers, "{case}");
        // the window matters: without it the logits differ
        let (field, v) = unwindow;
        let dir = variant(case, |_| {}, |c| c[field] = v.clone());
        let full = load_hf_dir(dir.path()).unwrap();
        assert!(full.cfg.attn_ext.is_none(), "{case}");
        let toks: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 128).collect();
        let rel = max_abs_rel(&full.model.forward(&toks, 1, 20).unwrap().logits, &m.model.forward(&toks, 1, 20).unwrap().logits);
        assert!(rel > 1e-3, "{case}: the window changed nothing ({rel:e})");
    }
}

#[test]
fn hf_llama4_multimodal_checkpoint_loads_its_text_model_and_matches_transformers() {
    // `language_model.` prefix, `text_config`, an ignored vision tower, top-1 routing
    check_case("llama4_multimodal", logits_tol());
    let m = load_hf_dir(&golden_dir().join("llama4_multimodal")).unwrap();
    assert_eq!((m.cfg.moe.as_ref().unwrap().n_expert_active, m.cfg.attn_ext.as_ref().unwrap().attention_chunk), (1, 7));
    // a text-model tensor is still required, and errors name the field inside text_config
    let dir = variant("llama4_multimodal", |t| t.retain(|x| x.0 != "language_model.model.norm.weight"), |_| {});
    let e = load_err(dir.path());
    assert!(e.contains("model.norm.weight") && e.contains("missing"), "{e}");
    let dir = variant("llama4_multimodal", |_| {}, |c| c["text_config"]["hidden_act"] = Value::String("gelu".into()));
    let e = load_err(dir.path());
    assert!(e.contains("`text_config.hidden_act`"), "{e}");
}
