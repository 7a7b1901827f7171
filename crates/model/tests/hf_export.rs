//! `hf::export::export_hf_dir` → `hf::load_hf_dir` is the identity on parameters and logits for
//! Llama-shaped dense and Mixtral-shaped MoE models; configs that do not map are errors naming the
//! field. (`reference/check_export.py` loads such exports in transformers.)

mod common;

use common::cfg;
use moe_model::hf::export::{export_architecture, export_hf_dir};
use moe_model::hf::load_hf_dir;
use moe_model::Transformer;

const BASE: &str =
    "n_vocab = 40\nn_ctx = 16\nn_layer = 2\nd_model = 16\nn_head = 4\nn_head_kv = 2\nd_ff = 24\nrope_theta = 5000.0\nnorm_eps = 1e-5\n";
const MIXTRAL: &str = "[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 12\naux_loss_coef = 0.02\n";

fn round_trip(text: &str, arch: &str, seed: u64) {
    let c = cfg(text);
    let mut m = Transformer::<f32>::new(c.clone(), seed).unwrap();
    // norms away from one so a swapped norm shows
    for (i, e) in m.table.entries.clone().iter().enumerate() {
        if e.name.ends_with("norm.weight") {
            m.params[e.range()].iter_mut().enumerate().for_each(|(j, v)| *v = 1.0 + 0.01 * ((i + j) % 7) as f32);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let r = export_hf_dir(&m, dir.path(), Some(3)).unwrap();
    assert_eq!(r.architecture, arch);
    let back = load_hf_dir(dir.path()).unwrap();
    assert_eq!(back.arch, arch);
    assert_eq!(back.eos_token_ids, vec![3]);
    let mut want = c.clone();
    if let Some(mc) = want.moe.as_mut() {
        // training-only settings: the loader maps them to zero
        mc.aux_loss_coef = 0.0;
        mc.z_loss_coef = 0.0;
        // unused without dense layers; Mixtral's intermediate_size is the expert width
        want.d_ff = mc.d_expert;
    }
    assert_eq!(back.cfg, want, "{arch}: config round trip");
    assert!(back.model.params == m.params, "{arch}: parameters round trip bit for bit");
    let toks: Vec<u32> = (0..24).map(|i| (i * 7 % 40) as u32).collect();
    let a = m.forward(&toks, 2, 12).unwrap().logits;
    let b = back.model.forward(&toks, 2, 12).unwrap().logits;
    assert!(a == b, "{arch}: logits");
    // and the config.json is transformers' (names a reader needs)
    let js: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(js["rope_parameters"]["rope_theta"], 5000.0);
    if arch == "MixtralForCausalLM" {
        assert_eq!((js["num_local_experts"].as_u64(), js["intermediate_size"].as_u64()), (Some(4), Some(12)));
        assert!((js["router_aux_loss_coef"].as_f64().unwrap() - 0.01).abs() < 1e-12, "ours / k");
    }
}

#[test]
fn export_llama_dense_round_trips() {
    round_trip(BASE, "LlamaForCausalLM", 1);
    round_trip(&format!("{BASE}tie_embeddings = true\n"), "LlamaForCausalLM", 2);
    // explicit head_dim ≠ d_model / n_head
    round_trip(&format!("{BASE}d_head = 6\n"), "LlamaForCausalLM", 3);
}

#[test]
fn export_with_rope_scaling_round_trips() {
    // a scaled RoPE is written as transformers 5 `rope_parameters` and read back unchanged
    for (seed, scaling) in [
        (6, "type = \"linear\"\nfactor = 2.0\n"),
        (7, "type = \"llama3\"\nfactor = 8.0\nlow_freq_factor = 1.0\nhigh_freq_factor = 4.0\noriginal_max_position_embeddings = 4\n"),
        (8, "type = \"yarn\"\nfactor = 4.0\nbeta_fast = 32.0\nbeta_slow = 1.0\noriginal_max_position_embeddings = 4\ntruncate = false\nattention_factor = 1.25\n"),
    ] {
        round_trip(&format!("{BASE}[rope_scaling]\n{scaling}"), "LlamaForCausalLM", seed);
        round_trip(&format!("{BASE}[rope_scaling]\n{scaling}{MIXTRAL}"), "MixtralForCausalLM", seed + 10);
    }
}

#[test]
fn export_mixtral_moe_round_trips() {
    round_trip(&format!("{BASE}{MIXTRAL}"), "MixtralForCausalLM", 4);
    round_trip(&format!("{BASE}tie_embeddings = true\nd_head = 6\n{MIXTRAL}"), "MixtralForCausalLM", 5);
}

#[test]
fn export_of_configs_that_do_not_map_names_the_field() {
    let cases = [
        (format!("{BASE}activation = \"gelu\"\n"), "model.activation"),
        (format!("{BASE}qk_norm = \"head\"\n"), "model.qk_norm"),
        (format!("{BASE}attn_bias = true\n"), "model.attn_bias"),
        (format!("{BASE}{MIXTRAL}first_dense = 1\n"), "model.moe.first_dense"),
        (format!("{BASE}{MIXTRAL}every = 2\n"), "model.moe.every"),
        (format!("{BASE}{MIXTRAL}n_expert_shared = 1\n"), "model.moe.n_expert_shared"),
        (format!("{BASE}{MIXTRAL}gating = \"sigmoid\"\n"), "model.moe.gating"),
        (format!("{BASE}{MIXTRAL}renormalize = false\n"), "model.moe.renormalize"),
        (format!("{BASE}{MIXTRAL}route_scale = 2.0\n"), "model.moe.route_scale"),
        (format!("{BASE}{MIXTRAL}bias_update_rate = 0.01\n"), "model.moe.bias_update_rate"),
        (format!("{BASE}{MIXTRAL}n_expert_per_layer = [4, 2]\n"), "model.moe.n_expert_per_layer"),
        (format!("{BASE}[attn_ext]\nsinks = true\n"), "model.attn_ext"),
    ];
    for (text, field) in cases {
        let c = cfg(&text);
        let e = export_architecture(&c).unwrap_err().to_string();
        assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hf");
        let m = Transformer::<f32>::new(c, 0).unwrap();
        assert!(export_hf_dir(&m, &out, None).is_err());
        assert!(!out.exists(), "{field}: nothing is written");
    }
}
