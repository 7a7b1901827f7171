//! A bf16 (or f16) Hugging Face checkpoint loaded for the fast engine keeps its matrices 2-byte
//! (`HfOptions::keep_dtype`): the f32 parameter buffer holds zeros in their place, the engine's
//! logits are bit-identical to those of the same checkpoint converted to f32 at load, the reference
//! path refuses the model until `materialize`, and then equals the f32 load exactly.

mod common;
use common::*;

use moe_infer::{Engine, EngineWeights, KvCache};
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_model::hf::{load_hf_dir_with, HfOptions};
use moe_model::stored::is_engine_matrix;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Copy the golden checkpoint `name` into `out` with every f32 tensor but `keep_f32` rounded to
/// `half` (BF16 or F16).
fn convert(name: &str, out: &Path, half: Dtype, keep_f32: Option<&str>) {
    for entry in std::fs::read_dir(golden_dir().join(name)).unwrap() {
        let p = entry.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        if file == "expected.safetensors" {
            continue;
        }
        if !file.ends_with(".safetensors") {
            std::fs::copy(&p, out.join(&file)).unwrap();
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (n, t) in st.tensors() {
            assert_eq!(t.dtype(), Dtype::F32, "{name}/{n}: golden models are f32");
            if keep_f32 == Some(n.as_str()) {
                tensors.push((n.to_string(), t.shape().to_vec(), t.data().to_vec()));
                continue;
            }
            let data: Vec<u8> = t
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    match half {
                        Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes(),
                        _ => half::f16::from_f32(x).to_le_bytes(),
                    }
                })
                .collect();
            tensors.push((n.to_string(), t.shape().to_vec(), data));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s, d)| {
                let dt = if keep_f32 == Some(n.as_str()) { Dtype::F32 } else { half };
                (n.clone(), safetensors::tensor::TensorView::new(dt, s.clone(), d).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &out.join(&file)).unwrap();
    }
}

fn engine_logits(model: &moe_model::Transformer<f32>, dtype: WeightDtype, prompt: &[u32]) -> Vec<f32> {
    run(Engine::new(model, dtype).unwrap(), prompt)
}

fn run(mut e: Engine<'_>, prompt: &[u32]) -> Vec<f32> {
    let model = e.model();
    let mut cache = KvCache::new(&model.cfg);
    let mut out = e.step_all_logits(&mut [&mut cache], &[prompt]).unwrap().to_vec();
    out.extend_from_slice(e.step(&mut [&mut cache], &[[7u32]]).unwrap());
    out
}

#[test]
fn half_checkpoints_keep_their_matrices_two_byte_and_give_the_same_logits() {
    let prompt: Vec<u32> = (0..9).map(|i| (i * 13 + 3) % 100).collect();
    // mixtral: four shards; qwen2_moe: shared expert with its gate; llama_tied: tied head;
    // deepseek_v3: latent attention; gpt_oss: expert biases; llama4: NoPE/chunked layers
    for (name, half) in [
        ("mixtral", Dtype::BF16),
        ("qwen2_moe", Dtype::BF16),
        ("llama_tied", Dtype::F16),
        ("deepseek_v3", Dtype::BF16),
        ("gpt_oss", Dtype::BF16),
        ("llama4", Dtype::F16),
    ] {
        let dir = tempfile::tempdir().unwrap();
        convert(name, dir.path(), half, None);
        let kept = load_hf_dir_with(dir.path(), &HfOptions { keep_dtype: true, ..Default::default() }).unwrap().model;
        let full = load_hf_dir_with(dir.path(), &HfOptions::default()).unwrap().model;
        assert!(full.stored.is_empty(), "{name}: without keep_dtype everything is f32");
        let want = if half == Dtype::BF16 { "bf16" } else { "f16" };
        assert_eq!(kept.stored.dtype_name(), Some(want), "{name}");
        // exactly the engine's matrices are kept, 2 bytes per value, and their f32 ranges stay zero
        let matrices: Vec<_> = kept.table.entries.iter().filter(|e| is_engine_matrix(&e.name)).collect();
        // an expert stack [n_expert, ·, ·] is kept one expert per entry
        let parts: usize = matrices.iter().map(|e| if e.shape.len() == 3 { e.shape[0] } else { 1 }).sum();
        assert_eq!(kept.stored.len(), parts, "{name}");
        assert_eq!(kept.stored.bytes(), 2 * matrices.iter().map(|e| e.len).sum::<usize>(), "{name}");
        for e in &kept.table.entries {
            let zeros = kept.params[e.range()].iter().all(|&v| v == 0.0);
            if is_engine_matrix(&e.name) {
                assert!(zeros, "{name}: {} was written to the f32 buffer", e.name);
                assert_eq!(kept.matrix_f32(e.range()).as_ref(), &full.params[e.range()], "{name}: {}", e.name);
            } else {
                assert_eq!(kept.params[e.range()], full.params[e.range()], "{name}: {}", e.name);
            }
        }
        for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
            assert_eq!(engine_logits(&kept, dtype, &prompt), engine_logits(&full, dtype, &prompt), "{name} {dtype:?}: engine logits");
        }
        // the reference path refuses, then after materialize equals the f32 load exactly
        let e = kept.forward(&prompt, 1, prompt.len()).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("materialize"), "{name}: {e}");
        let mut cache = KvCache::new(&kept.cfg);
        assert!(moe_infer::forward_one(&kept, &mut cache, &prompt).is_err(), "{name}: KV decode on the reference path");
        let mut m = kept.clone();
        m.materialize();
        assert!(m.stored.is_empty());
        assert_eq!(m.forward(&prompt, 1, prompt.len()).unwrap().logits, full.forward(&prompt, 1, prompt.len()).unwrap().logits, "{name}");
        // converting while releasing the kept matrices: same logits, and the model says they are gone
        let mut moved = kept.clone();
        let w = EngineWeights::new_taking(&mut moved, WeightDtype::Bf16);
        // the kept embedding is gathered from the engine's own copy, in the checkpoint's bf16 (f16: exact f32)
        let embed = w.embed.as_ref().map(|e| e.dtype());
        assert_eq!(embed, Some(if half == Dtype::BF16 { WeightDtype::Bf16 } else { WeightDtype::F32 }), "{name}");
        assert!(EngineWeights::new(&full, WeightDtype::Bf16).embed.is_none(), "{name}: an f32 model's embedding is read in place");
        assert!(moved.stored.is_empty() && moved.stored.taken() == parts, "{name}");
        let logits = run(Engine::with_weights(&moved, w, Kernel::Auto).unwrap(), &prompt);
        assert_eq!(logits, engine_logits(&full, WeightDtype::Bf16, &prompt), "{name}: new_taking");
        let e = Engine::new(&moved, WeightDtype::F32).err().expect("a second engine from moved-out weights").to_string();
        assert!(e.contains("new_taking"), "{name}: {e}");
        let e = moved.forward(&prompt, 1, prompt.len()).unwrap_err().to_string();
        assert!(e.contains("moved into a fast engine"), "{name}: {e}");
    }
}

#[test]
fn f32_and_mixed_checkpoints_keep_nothing() {
    let opts = HfOptions { keep_dtype: true, ..Default::default() };
    let kept = load_hf_dir_with(&golden_dir().join("qwen2_moe"), &opts).unwrap().model;
    assert!(kept.stored.is_empty(), "an f32 checkpoint is already f32");
    assert!(kept.forward(&[1, 2, 3], 1, 3).is_ok());
    // one f32 matrix among bf16 ones: no single format to keep, everything is converted to f32
    let dir = tempfile::tempdir().unwrap();
    convert("qwen2_moe", dir.path(), Dtype::BF16, Some("model.layers.0.self_attn.q_proj.weight"));
    let mixed = load_hf_dir_with(dir.path(), &opts).unwrap().model;
    assert!(mixed.stored.is_empty(), "a mixed checkpoint keeps nothing");
    assert!(mixed.forward(&[1, 2, 3], 1, 3).is_ok());
}

/// Saving (`Transformer::save`) and exporting (`export_hf_dir`) read every parameter: a matrix kept
/// 2-byte is written with its real values, and a model whose matrices were moved into an engine
/// (`new_taking`) refuses — even after `materialize`, which cannot bring them back — and writes
/// nothing, never the zeros left in `params`.
#[test]
fn saving_or_exporting_a_kept_or_taken_model_writes_real_values_or_refuses() {
    use moe_model::hf::export::{export_hf_dir, export_tensors};
    use moe_model::Transformer;
    let dir = tempfile::tempdir().unwrap();
    convert("mixtral", dir.path(), Dtype::BF16, None);
    let kept = load_hf_dir_with(dir.path(), &HfOptions { keep_dtype: true, ..Default::default() }).unwrap().model;
    let full = load_hf_dir_with(dir.path(), &HfOptions::default()).unwrap().model;
    assert!(!kept.stored.is_empty());
    let out = tempfile::tempdir().unwrap();

    // kept: the saved checkpoint and the export hold the real (bf16-exact) values
    let saved = out.path().join("kept.safetensors");
    kept.save(&saved).unwrap();
    let back = Transformer::<f32>::load(kept.cfg.clone(), &saved).unwrap();
    assert!(full.params.iter().any(|&v| v != 0.0));
    assert_eq!(back.params, full.params, "a kept model saves its matrices' values");
    assert_eq!(export_tensors(&kept).unwrap(), export_tensors(&full).unwrap(), "a kept model exports its matrices' values");

    // taken, then materialized: still refused everywhere, nothing written
    let mut moved = kept.clone();
    let _w = EngineWeights::new_taking(&mut moved, WeightDtype::F32);
    moved.materialize();
    let e = moved.check_materialized().unwrap_err().to_string();
    assert!(e.contains("moved into a fast engine"), "materialize cannot bring taken matrices back: {e}");
    let e = moved.forward(&[1, 2, 3], 1, 3).unwrap_err().to_string();
    assert!(e.contains("moved into a fast engine"), "{e}");
    let path = out.path().join("moved.safetensors");
    let e = moved.save(&path).unwrap_err().to_string();
    assert!(e.contains("cannot save") && e.contains("moved.safetensors") && e.contains("new_taking"), "{e}");
    assert!(!path.exists(), "a refused save writes no file");
    let exp = out.path().join("export");
    let e = export_hf_dir(&moved, &exp, None).unwrap_err().to_string();
    assert!(e.contains("cannot export") && e.contains("new_taking"), "{e}");
    assert!(!exp.join("model.safetensors").exists(), "a refused export writes no weights");
    // a cast copy keeps the refusal
    assert!(moved.cast::<f64>().save(&path).is_err() && !path.exists());
}
