//! GGUF files made by llama.cpp's own converter and quantiser (`reference/gguf_goldens.py`):
//! `gguf::load_gguf` gives the logits llama.cpp gives on the same file, and the dequantisation of
//! every GGML type equals gguf-py's. Fixtures: `tests/golden_gguf/` (see its MANIFEST.json).

use moe_model::gguf::{dequantize, load_gguf, GgufFile};
use moe_model::hf::{load, HfOptions};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden_gguf")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden().join("MANIFEST.json")).unwrap()).unwrap()
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn tokens(st: &SafeTensors<'_>) -> Vec<u32> {
    let t = st.tensor("tokens").unwrap();
    assert_eq!(t.dtype(), Dtype::I32);
    t.data().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32).collect()
}

/// max |a − b| (a non-finite value or a length mismatch fails).
#[track_caller]
fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            assert!(x.is_finite() && y.is_finite(), "non-finite logit");
            (x as f64 - y as f64).abs()
        })
        .fold(0.0, f64::max)
}

/// Every case with a committed f32 file (MANIFEST.json).
fn f32_cases() -> Vec<String> {
    let m = manifest();
    let cases = m["cases"].as_object().unwrap();
    cases.iter().filter(|(name, c)| c["files"].get(format!("{name}-f32.gguf")).is_some()).map(|(name, _)| name.clone()).collect()
}

/// Our logits on `<case>-<ty>.gguf` (f32 reference path) and llama.cpp's on the same file.
fn ours_and_theirs(case: &str, ty: &str) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dir = golden().join(case);
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let toks = tokens(&st);
    let m = load_gguf(&dir.join(format!("{case}-{ty}.gguf")), &HfOptions::default()).unwrap_or_else(|e| panic!("{case} {ty}: {e}"));
    let c = &manifest()["cases"][case];
    assert_eq!(m.arch, c["architecture"].as_str().unwrap(), "{case}");
    let (n_seq, len) = (c["n_seq"].as_u64().unwrap() as usize, c["seq_len"].as_u64().unwrap() as usize);
    let ours = m.model.forward(&toks, n_seq, len).unwrap().logits;
    (ours, f32s(&st, &format!("logits.{ty}")), f32s(&st, "logits.f32"))
}

/// Every case's f32 file: our logits equal llama.cpp's (f32 weights, f32 activations and KV
/// cache there) to float rounding. Measured: ≤ 4e-6 on logits of magnitude 2–5.
#[test]
fn f32_files_match_llama_cpp() {
    let cases = f32_cases();
    assert!(cases.len() >= 12, "{cases:?}");
    for case in cases.iter().map(String::as_str) {
        let (ours, theirs, _) = ours_and_theirs(case, "f32");
        let d = max_abs(&ours, &theirs);
        eprintln!("{case} f32: max |ours − llama.cpp| = {d:.2e}");
        assert!(d < 2e-5, "{case}: {d}");
    }
}

/// Quantised files: we dequantise the weights exactly and keep f32 activations; llama.cpp
/// rounds the activations to Q8_0 (or f16/bf16) before each product. So our logits differ from
/// llama.cpp's on the same file by that activation rounding only — several times less than the
/// weight quantisation moves them (llama.cpp's file vs its f32 file). Bounds: 2× the measured.
#[test]
fn quantised_files_match_llama_cpp_within_its_activation_rounding() {
    // (case, type, bound on |ours − llama.cpp(file)|)
    let cases = [
        ("llama", "f16", 2.6e-3),
        ("llama", "bf16", 0.024),
        ("llama", "q8_0", 0.085),
        ("llama", "q4_0", 0.071),
        ("mixtral", "q8_0", 0.048),
        ("mixtral", "q4_0", 0.051),
        ("qwen3", "q4_0", 0.069),
        ("mixtral_k", "q4_k_m", 0.31),
        ("mixtral_k", "q6_k", 0.23),
        ("deepseek_v3", "q8_0", 0.12),
        // MXFP4 experts (Q8_0 attention): measured 2.4e-2, against the format's own 0.63
        ("gpt_oss", "mxfp4_moe", 0.048),
    ];
    for (case, ty, bound) in cases {
        let (ours, theirs, f32_theirs) = ours_and_theirs(case, ty);
        let d = max_abs(&ours, &theirs);
        let q = max_abs(&theirs, &f32_theirs);
        eprintln!("{case} {ty}: max |ours − llama.cpp| = {d:.3e}; llama.cpp {ty} vs its f32 = {q:.3e}");
        assert!(d < bound, "{case} {ty}: {d} ≥ {bound}");
        // the weights' own quantisation moves llama.cpp's logits more than our difference
        assert!(d < q, "{case} {ty}: {d} vs {q}");
    }
}

/// Kept as stored (what the engine's loaders ask for): the same values once materialised, and
/// about the file's size in memory.
#[test]
fn kept_matrices_are_the_files_blocks() {
    for (case, ty) in [("mixtral", "q4_0"), ("llama", "bf16"), ("mixtral_k", "q4_k_m"), ("gpt_oss", "mxfp4_moe"), ("llama", "f32")] {
        let p = golden().join(case).join(format!("{case}-{ty}.gguf"));
        let plain = load(&p, &HfOptions::default()).unwrap();
        let mut kept = load(&p, &HfOptions { keep_dtype: true, ..Default::default() }).unwrap();
        let file = std::fs::metadata(&p).unwrap().len() as usize;
        if ty == "f32" {
            assert!(kept.model.stored.is_empty(), "an f32 file keeps nothing");
        } else {
            assert!(!kept.model.stored.is_empty());
            assert!(kept.model.stored.bytes() < file, "{case} {ty}: {} kept bytes, file {file}", kept.model.stored.bytes());
            if case == "gpt_oss" {
                // every quantised matrix stays as stored, the MXFP4 experts included
                let f = GgufFile::open(&p).unwrap();
                let quantised: usize = f.tensors.iter().filter(|t| t.ne.len() >= 2 && t.ty.name() != "f32").map(|t| t.len).sum();
                assert_eq!(kept.model.stored.bytes(), quantised, "{case} {ty}");
            }
            assert!(kept.model.forward(&[1, 2], 1, 2).is_err(), "the reference path needs materialize");
            kept.model.materialize();
        }
        let toks = [3, 7, 11, 5];
        let a = plain.model.forward(&toks, 1, 4).unwrap().logits;
        let b = kept.model.forward(&toks, 1, 4).unwrap().logits;
        assert_eq!(a, b, "{case} {ty}");
    }
}

/// Every GGML type the loader reads: our dequantisation equals gguf-py's on the same bytes.
#[test]
fn dequantisation_equals_gguf_py() {
    let dir = golden().join("quants");
    let f = GgufFile::open(&dir.join("quants.gguf")).unwrap();
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let source = f32s(&st, "source");
    let names = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"];
    for name in names {
        let t = f.tensor(name).unwrap_or_else(|| panic!("{name}"));
        let mut out = vec![f32::NAN; t.n_elements()];
        dequantize(t.ty, f.data(t), &mut out);
        let want = f32s(&st, name);
        let d = max_abs(&out, &want);
        // and the quantisation is a real one: near the source, not equal to it (except f32)
        let q = max_abs(&out, &source);
        eprintln!("{name}: max |ours − gguf-py| = {d:e}; vs source {q:.3e}");
        assert!(d <= 1e-6 * want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64, "{name}: {d}");
        assert!(q < 0.5, "{name}: {q}");
        assert_eq!(q == 0.0, name == "f32", "{name}");
    }
    assert_eq!(f.tensors.len(), names.len());
}

/// Llama 4: what llama.cpp builds in for the architecture (chunked attention, NoPE every fourth
/// layer, attention temperature, L2 q/k norm) comes out as the transformers config says it, and
/// the file's `rope_freqs` (llama3 RoPE, factor 4 from 8 positions) as per-pair RoPE factors.
#[test]
fn llama4_files_load_llama_cpps_built_in_settings_and_rope_factors() {
    let m = load_gguf(&golden().join("llama4/llama4-f32.gguf"), &HfOptions::default()).unwrap();
    let a = m.cfg.attn_ext.as_ref().expect("attn_ext");
    assert_eq!(a.attention_chunk, 8192);
    assert_eq!(a.chunk_layers, [true, true, true, false]);
    assert_eq!(a.rope_layers, [true, true, true, false]);
    assert!(a.qk_l2_norm && a.temperature.is_some());
    let Some(moe_model::RopeScaling::Factors { factors }) = &m.cfg.rope_scaling else { panic!("{:?}", m.cfg.rope_scaling) };
    // llama3 scaling of 8 pairs: the slowest divided by the factor (4), the faster ones less
    assert_eq!(factors.len(), 8);
    assert_eq!(factors[7], 4.0, "{factors:?}");
    assert!(factors[0] >= 1.0 && factors.windows(2).all(|w| w[0] <= w[1]), "{factors:?}");
}

/// A Llama 3.1-style file (llama3 RoPE scaling, which the converter keeps only as `rope_freqs`):
/// its per-pair factors give the frequencies transformers' llama3 scaling gives.
#[test]
fn rope_freqs_are_llama3_scaling() {
    use moe_model::layers::attention_ext::rope_frequencies;
    let m = load_gguf(&golden().join("llama3_rope/llama3_rope-f32.gguf"), &HfOptions::default()).unwrap();
    let r = m.cfg.rope_scaling.clone().expect("rope factors");
    assert!(matches!(r, moe_model::RopeScaling::Factors { .. }), "{r:?}");
    let p = &manifest()["cases"]["llama3_rope"]["config"]["rope_parameters"];
    let llama3 = moe_model::RopeScaling::Llama3 {
        factor: p["factor"].as_f64().unwrap(),
        low_freq_factor: p["low_freq_factor"].as_f64().unwrap(),
        high_freq_factor: p["high_freq_factor"].as_f64().unwrap(),
        original_max_position_embeddings: p["original_max_position_embeddings"].as_u64().unwrap() as usize,
    };
    let (theta, dh) = (m.cfg.rope_theta, m.cfg.d_head());
    let (ours, _) = rope_frequencies(theta, dh, Some(&r));
    let (want, _) = rope_frequencies(theta, dh, Some(&llama3));
    let (plain, _) = rope_frequencies(theta, dh, None);
    for i in 0..dh / 2 {
        assert!((ours[i] - want[i]).abs() <= 1e-6 * want[i], "pair {i}: {} vs {}", ours[i], want[i]);
    }
    // and the scaling is real here: the slowest pairs are divided by the factor
    assert!(ours[dh / 2 - 1] < plain[dh / 2 - 1] / 7.9, "{ours:?} vs {plain:?}");
}

/// A `rope_freqs` vector of the wrong length, or not beside plain RoPE, is an error naming it.
#[test]
fn bad_rope_factors_are_errors() {
    let src = std::fs::read(golden().join("llama4/llama4-f32.gguf")).unwrap();
    let f = GgufFile::open(&golden().join("llama4/llama4-f32.gguf")).unwrap();
    let t = f.tensors.iter().find(|t| t.name == "rope_freqs.weight").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.gguf");
    // a negative factor
    let mut bytes = src.clone();
    let off = find(&src, f.data(t));
    bytes[off..off + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = load_gguf(&p, &HfOptions::default()).unwrap_err().to_string();
    assert!(e.contains("bad.gguf") && e.contains("rope_freqs") && e.contains("rope_scaling"), "{e}");
}

/// Offset of `needle` (a tensor's bytes) inside `hay` (the whole file).
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("the tensor's bytes are in the file")
}

/// Damaged files: errors that name the file, never a panic.
#[test]
fn damaged_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.gguf");
    for file in ["qwen3/qwen3-q4_0.gguf", "gpt_oss/gpt_oss-mxfp4_moe.gguf"] {
        damaged_copies_are_errors(&std::fs::read(golden().join(file)).unwrap(), &p);
    }
    let src = std::fs::read(golden().join("qwen3/qwen3-q4_0.gguf")).unwrap();
    // an architecture the loader does not map
    let f = GgufFile::open(&golden().join("qwen3/qwen3-q4_0.gguf")).unwrap();
    assert_eq!(f.str("general.architecture").unwrap(), "qwen3");
    let pos = src.windows(5).position(|w| w == b"qwen3").unwrap();
    let mut b = src.clone();
    b[pos..pos + 5].copy_from_slice(b"qwenX");
    std::fs::write(&p, &b).unwrap();
    let e = load_gguf(&p, &HfOptions::default()).unwrap_err().to_string();
    assert!(e.contains("bad.gguf"), "{e}");
}

/// `src` truncated anywhere and with a byte flipped at many places, written to `p`: each loads (a
/// weight changed) or fails with an error naming the file.
fn damaged_copies_are_errors(src: &[u8], p: &Path) {
    // truncated anywhere
    for cut in [0, 3, 8, 24, 100, 1000, src.len() / 2, src.len() - 1] {
        std::fs::write(p, &src[..cut]).unwrap();
        let e = load_gguf(p, &HfOptions::default()).unwrap_err().to_string();
        assert!(e.contains("bad.gguf"), "cut {cut}: {e}");
    }
    // a byte flipped at many places: loads (a weight changed) or fails cleanly
    for at in (0..src.len()).step_by(97) {
        let mut b = src.to_vec();
        b[at] ^= 0x5a;
        std::fs::write(p, &b).unwrap();
        if let Err(e) = load_gguf(p, &HfOptions::default()) {
            assert!(e.to_string().contains("bad.gguf"), "{at}: {e}");
        }
    }
}
