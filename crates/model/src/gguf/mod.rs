//! Load llama.cpp's GGUF files of the supported architectures.
//!
//! A GGUF file carries the model's hyper-parameters as metadata (`llama.block_count`, …), its
//! tokenizer (`tokenizer.ggml.*`) and its tensors under llama.cpp's names (`blk.0.attn_q.weight`),
//! each in one of GGML's types. Loading maps the metadata onto the Hugging Face `config.json` of
//! the same model and parses that with [`crate::hf::parse_config`], and presents the tensors under
//! their Hugging Face names to the one checkpoint loader ([`crate::hf::weights`]), undoing what
//! llama.cpp's converter changed on the way in: the row order of Llama's q/k projections (it
//! interleaves the two rotary halves), the expert stacks (one tensor per projection), the shapes of
//! vectors. With `HfOptions::keep_dtype` (what the fast engine's loaders ask for) every matrix
//! stays as the file stores it ([`crate::stored`]: f16, bf16 or the quantised blocks, the row moves
//! of the q/k fix-up and the expert split done on whole rows of blocks, so exactly), and the engine
//! converts one matrix at a time into the format it runs (`--dtype`); a 4-bit file loads in about
//! its own size. Without it, every tensor is dequantised to f32.
//!
//! Architectures (`general.architecture`): `llama` (Llama; Mixtral when it has experts),
//! `qwen3`, `qwen3moe`, `qwen2moe`, `olmoe`, `deepseek2` (DeepSeek-V3: latent attention, sigmoid
//! routing with a selection bias and groups, shared experts, leading dense layers). Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q4_K, Q5_K, Q6_K. Anything else is an error naming the file and the key or tensor.

pub mod file;
pub mod quants;

pub use file::{GgufFile, TensorInfo, Value};
pub use quants::{dequantize, GgmlType};

use crate::config::RopeScaling;
use crate::error::{Error, Result};
use crate::hf::weights::{load_tensors, TensorSource};
use crate::hf::{parse_config, HfConfig, HfModel, HfOptions};
use crate::stored::StoredData;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// What a GGUF file carries besides the model.
#[derive(Clone, Debug)]
pub struct GgufInfo {
    /// every metadata key/value of the file (the tokenizer is in `tokenizer.ggml.*`, the chat
    /// template in `tokenizer.chat_template`)
    pub meta: BTreeMap<String, Value>,
    /// the GGML type of most of the file's matrix values (what llama.cpp calls the file type)
    pub file_type: &'static str,
}

/// How one Hugging Face tensor is made from the file's tensors.
#[derive(Clone, Debug)]
enum Recipe {
    /// one tensor as it is (a vector's `[1, n]` and `[n]` are the same)
    Direct(usize),
    /// Llama's q or k projection: rows of each of `n_head` heads back from llama.cpp's interleaved
    /// rotary order (`2i + s`) to Hugging Face's halves (`s·d_head/2 + i`)
    Unpermute(usize, usize),
    /// a fused expert stack `[E, 2·d_expert, d]`: per expert the gate rows, then the up rows (also
    /// GPT-OSS's biases `[E, 2·d_expert]`, `d` = 1)
    GateUp(usize, usize),
    /// DeepSeek's kv up-projection `[H·(d_nope + d_v), kv_lora_rank]` from llama.cpp's per-head
    /// `k_b [H, kv_lora_rank, d_nope]` (transposed) and `v_b [H, d_v, kv_lora_rank]`
    KvB(usize, usize),
}

struct GgufSource<'f> {
    file: &'f GgufFile<memmap2::Mmap>,
    recipes: HashMap<String, Recipe>,
    used: HashSet<usize>,
}

impl GgufSource<'_> {
    fn info(&self, i: usize) -> &TensorInfo {
        &self.file.tensors[i]
    }

    /// Values `r` (whole rows) of tensor `i`, dequantised.
    fn values(&self, i: usize, r: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let t = self.info(i);
        if !t.ty.supported() {
            return Err(self.file.err(format!(
                "tensor `{}` is {}, a type this loader does not read (it reads f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K, mxfp4); \
                 requantize the file with llama-quantize, e.g. to Q4_K_M or Q8_0",
                t.name,
                t.ty.name()
            )));
        }
        let (bn, bb) = t.ty.block();
        debug_assert!(r.start.is_multiple_of(bn) && r.end.is_multiple_of(bn), "row-aligned range");
        let bytes = &self.file.data(t)[r.start / bn * bb..r.end / bn * bb];
        let mut out = vec![0.0f32; r.len()];
        dequantize(t.ty, bytes, &mut out);
        Ok(out)
    }

    fn check_shape(&self, i: usize, name: &str, want: &[usize]) -> Result<()> {
        let t = self.info(i);
        let strip = |s: &[usize]| s.iter().skip_while(|&&d| d == 1).copied().collect::<Vec<_>>();
        if strip(&t.shape()) != strip(want) {
            return Err(self.file.err(format!(
                "tensor `{}` has shape {:?} (GGML ne {:?}); the metadata needs {want:?} for {name}",
                t.name,
                t.shape(),
                t.ne
            )));
        }
        Ok(())
    }
}

impl TensorSource for GgufSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.recipes.contains_key(name)
    }

    fn take_range(&mut self, name: &str, shape: &[usize], range: Option<std::ops::Range<usize>>) -> Result<Vec<f32>> {
        let recipe =
            self.recipes.get(name).cloned().ok_or_else(|| self.file.err(format!("no tensor for `{name}` (the architecture needs it)")))?;
        let n: usize = shape.iter().product();
        let r = range.unwrap_or(0..n);
        let v = match recipe {
            Recipe::Direct(i) => {
                self.check_shape(i, name, shape)?;
                self.used.insert(i);
                self.values(i, r)?
            }
            Recipe::Unpermute(i, n_head) => {
                self.check_shape(i, name, shape)?;
                self.used.insert(i);
                let (rows, cols) = (shape[0], shape[1]);
                let dh = rows / n_head;
                let g = self.values(i, 0..n)?;
                let mut out = vec![0.0f32; n];
                for h in 0..n_head {
                    for s in 0..2 {
                        for j in 0..dh / 2 {
                            let (to, from) = (h * dh + s * dh / 2 + j, h * dh + 2 * j + s);
                            out[to * cols..(to + 1) * cols].copy_from_slice(&g[from * cols..(from + 1) * cols]);
                        }
                    }
                }
                out[r].to_vec()
            }
            Recipe::KvB(ki, vi) => {
                let (ks, vs) = (self.info(ki).shape(), self.info(vi).shape());
                let (h, kvr) = (ks[0], ks[1]);
                let (nope, dv) = (ks.get(2).copied().unwrap_or(0), vs.get(1).copied().unwrap_or(0));
                if ks.len() != 3 || vs.len() != 3 || vs != [h, dv, kvr] || shape != [h * (nope + dv), kvr] {
                    return Err(self.file.err(format!(
                        "tensors `{}` {ks:?} and `{}` {vs:?} do not make {name} {shape:?}",
                        self.info(ki).name,
                        self.info(vi).name
                    )));
                }
                self.used.extend([ki, vi]);
                let (k, v) = (self.values(ki, 0..h * kvr * nope)?, self.values(vi, 0..h * dv * kvr)?);
                let mut out = vec![0.0f32; n];
                for hd in 0..h {
                    let r0 = hd * (nope + dv);
                    for r in 0..nope {
                        for c in 0..kvr {
                            out[(r0 + r) * kvr + c] = k[(hd * kvr + c) * nope + r];
                        }
                    }
                    out[(r0 + nope) * kvr..(r0 + nope + dv) * kvr].copy_from_slice(&v[hd * dv * kvr..(hd + 1) * dv * kvr]);
                }
                out[r].to_vec()
            }
            Recipe::GateUp(gi, ui) => {
                // shape [E, 2·de, d] (or [E, 2·de]: d = 1); the parts are [E, de, d] ([E, de]) each
                let (ne, de, d) = (shape[0], shape[1] / 2, shape.get(2).copied().unwrap_or(1));
                let one = [ne, de, d];
                self.check_shape(gi, name, &one[..shape.len()])?;
                self.check_shape(ui, name, &one[..shape.len()])?;
                self.used.extend([gi, ui]);
                let part = de * d;
                assert!(r.start.is_multiple_of(2 * part) && r.end.is_multiple_of(2 * part), "whole experts of {name}");
                let mut out = Vec::with_capacity(r.len());
                for e in r.start / (2 * part)..r.end / (2 * part) {
                    out.extend(self.values(gi, e * part..(e + 1) * part)?);
                    out.extend(self.values(ui, e * part..(e + 1) * part)?);
                }
                out
            }
        };
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(self.file.err(format!("tensor for `{name}` holds a non-finite value ({}) at element {bad}", v[bad])));
        }
        Ok(v)
    }

    fn take_kept(&mut self, name: &str, shape: &[usize], _like: &StoredData) -> Result<Option<StoredData>> {
        let n: usize = shape.iter().product();
        let (i, bytes) = match self.recipes.get(name).cloned() {
            Some(Recipe::Direct(i)) => {
                self.check_shape(i, name, shape)?;
                (i, self.file.data(self.info(i)).to_vec())
            }
            Some(Recipe::Unpermute(i, n_head)) => {
                // whole rows of blocks move: exact in every type
                self.check_shape(i, name, shape)?;
                let g = self.file.data(self.info(i));
                let (rows, dh) = (shape[0], shape[0] / n_head);
                let rb = g.len() / rows;
                let mut out = vec![0u8; g.len()];
                for h in 0..n_head {
                    for s in 0..2 {
                        for j in 0..dh / 2 {
                            let (to, from) = (h * dh + s * dh / 2 + j, h * dh + 2 * j + s);
                            out[to * rb..(to + 1) * rb].copy_from_slice(&g[from * rb..(from + 1) * rb]);
                        }
                    }
                }
                (i, out)
            }
            _ => return Ok(None),
        };
        let kept = as_stored(self.info(i).ty, n, bytes);
        if kept.is_some() {
            self.used.insert(i);
        }
        Ok(kept)
    }

    fn take_kept_part(&mut self, name: &str, shape: &[usize], e: usize, _like: &StoredData) -> Result<Option<StoredData>> {
        let part: usize = shape[1..].iter().product();
        // bytes of part e of tensor i, whose parts hold `n` values each
        let slice = |me: &Self, i: usize, n: usize| {
            let t = me.info(i);
            let (bn, bb) = t.ty.block();
            me.file.data(t)[e * n / bn * bb..(e + 1) * n / bn * bb].to_vec()
        };
        let (ids, ty, bytes) = match self.recipes.get(name).cloned() {
            Some(Recipe::Direct(i)) => {
                self.check_shape(i, name, shape)?;
                (vec![i], self.info(i).ty, slice(self, i, part))
            }
            Some(Recipe::GateUp(gi, ui)) if self.info(gi).ty == self.info(ui).ty => {
                let one = [shape[0], shape[1] / 2, shape[2]];
                self.check_shape(gi, name, &one)?;
                self.check_shape(ui, name, &one)?;
                let mut b = slice(self, gi, part / 2);
                b.extend(slice(self, ui, part / 2));
                (vec![gi, ui], self.info(gi).ty, b)
            }
            _ => return Ok(None),
        };
        let kept = as_stored(ty, part, bytes);
        if kept.is_some() {
            self.used.extend(ids);
        }
        Ok(kept)
    }

    fn experts_rows_first(&self) -> bool {
        true
    }

    fn kept_size(&self) -> Option<(usize, u64)> {
        let kept = self.file.tensors.iter().filter(|t| t.ne.len() >= 2 && t.ty != GgmlType::F32);
        Some(kept.fold((0, 0), |(n, b), t| (n + t.n_elements(), b + t.len as u64)))
    }

    fn kept_format(&self) -> Option<StoredData> {
        // a marker: every matrix stays in its own type (f32 ones go to the parameter buffer)
        let all_f32 = self.file.tensors.iter().filter(|t| t.ne.len() >= 2).all(|t| t.ty == GgmlType::F32);
        (!all_f32).then(|| StoredData::Ggml { ty: GgmlType::F32, n: 0, bytes: Vec::new() })
    }

    fn check_all_used(&self, _ignorable: &dyn Fn(&str) -> bool) -> Result<()> {
        let unused: Vec<&str> =
            (0..self.file.tensors.len()).filter(|i| !self.used.contains(i)).map(|i| self.info(i).name.as_str()).collect();
        match unused.first() {
            None => Ok(()),
            Some(name) => Err(self.file.err(format!(
                "tensor `{name}` (and {} more) is not used by the model the metadata describes; the file has a feature the loader does not support",
                unused.len() - 1
            ))),
        }
    }
}

/// `n` values of type `ty` as the engine's store keeps them: f16 and bf16 as 2-byte values,
/// quantised blocks as they are; f32 (`None`) goes to the parameter buffer.
fn as_stored(ty: GgmlType, n: usize, bytes: Vec<u8>) -> Option<StoredData> {
    let bits = || bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    match ty {
        GgmlType::F32 | GgmlType::Other(..) => None,
        GgmlType::F16 => Some(StoredData::F16(bits())),
        GgmlType::Bf16 => Some(StoredData::Bf16(bits())),
        _ => Some(StoredData::Ggml { ty, n, bytes }),
    }
}

/// The architecture-specific reading of a file's metadata.
struct Arch<'f> {
    f: &'f GgufFile<memmap2::Mmap>,
    name: &'f str,
}

impl Arch<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.name)
    }
    fn u(&self, k: &str) -> Result<u64> {
        self.f.u64(&self.key(k))
    }
    fn ou(&self, k: &str) -> Result<Option<u64>> {
        self.f.opt_u64(&self.key(k))
    }
    fn of(&self, k: &str) -> Result<Option<f64>> {
        self.f.opt_f64(&self.key(k))
    }
}

/// Llama 4's attention settings, which llama.cpp builds in rather than reads from the file
/// (`llama_model_llama4::load_arch_hparams`), as the transformers config states them: chunked
/// attention (chunk 8192) on three layers of every four (or the file's
/// `attention.sliding_window_pattern`), no RoPE on every fourth layer, the attention temperature
/// (floor 8192, scale 0.1) on those, and the L2 q/k norm unless the model has 128 experts
/// (Maverick).
fn llama4_settings(a: &Arch<'_>, o: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
    const CHUNK: u64 = 8192;
    let f = a.f;
    let n_layer = a.u("block_count")? as usize;
    match a.ou("attention.sliding_window")? {
        None | Some(CHUNK) => {}
        Some(w) => {
            return Err(f.err(format!(
                "metadata `{}` is {w}: llama.cpp runs llama4 files with chunked attention of {CHUNK} only, and so does this loader",
                a.key("attention.sliding_window")
            )))
        }
    }
    if let Some(b) = a.of("rope.freq_base_swa")? {
        if Some(b) != a.of("rope.freq_base")? {
            return Err(f.err(format!("metadata `{}` {b} differs from the RoPE base (not supported)", a.key("rope.freq_base_swa"))));
        }
    }
    if let Some(s) = a.of("expert_weights_scale")? {
        if s != 0.0 && s != 1.0 {
            return Err(f.err(format!(
                "metadata `{}` is {s}: llama4 expert weights are not scaled (not supported)",
                a.key("expert_weights_scale")
            )));
        }
    }
    // which layers are chunked: a per-layer list, a period (the last layer of each is full), or 4
    let pattern_key = a.key("attention.sliding_window_pattern");
    let chunked: Vec<bool> = match f.get(&pattern_key) {
        None => (0..n_layer).map(|i| i % 4 < 3).collect(),
        Some(Value::Array(v)) if v.len() == n_layer && v.iter().all(|x| x.as_bool().is_some()) => {
            v.iter().map(|x| x.as_bool().unwrap_or(false)).collect()
        }
        Some(v) => match v.as_u64() {
            Some(0) => vec![true; n_layer],
            Some(n) => (0..n_layer as u64).map(|i| i % n < n - 1).collect(),
            None => return Err(f.err(format!("metadata `{pattern_key}` is {v:?}: expected a period or {n_layer} booleans"))),
        },
    };
    let rope: Vec<u8> = (0..n_layer).map(|i| u8::from((i + 1) % 4 != 0)).collect();
    let types: Vec<&str> = chunked.iter().map(|&c| if c { "chunked_attention" } else { "full_attention" }).collect();
    o.insert("attention_chunk_size".into(), json!(CHUNK));
    o.insert("layer_types".into(), json!(types));
    o.insert("no_rope_layers".into(), json!(rope));
    o.insert("use_qk_norm".into(), json!(a.u("expert_count")? != 128));
    o.insert("attn_temperature_tuning".into(), json!(true));
    o.insert("floor_scale".into(), json!(8192));
    o.insert("attn_scale".into(), json!(0.1));
    Ok(())
}

/// The `config.json` of the model `f` holds, its architecture name and the recipes of its tensors.
fn describe(f: &GgufFile<memmap2::Mmap>, opts: &HfOptions) -> Result<(serde_json::Value, HashMap<String, Recipe>)> {
    let name = f.str("general.architecture")?;
    let a = Arch { f, name };
    let n_expert = a.ou("expert_count")?.unwrap_or(0);
    let (arch, family_moe) = match (name, n_expert > 0) {
        ("llama", false) => ("LlamaForCausalLM", false),
        ("llama", true) => ("MixtralForCausalLM", true),
        ("qwen3", _) => ("Qwen3ForCausalLM", false),
        ("qwen3moe", _) => ("Qwen3MoeForCausalLM", true),
        ("qwen2moe", _) => ("Qwen2MoeForCausalLM", true),
        ("olmoe", _) => ("OlmoeForCausalLM", true),
        ("deepseek2", _) => ("DeepseekV3ForCausalLM", true),
        ("gpt-oss", _) => ("GptOssForCausalLM", true),
        ("llama4", true) => ("Llama4ForCausalLM", true),
        ("llama4", false) => {
            return Err(f.err(format!("metadata `{}` is 0: a llama4 model needs experts (llama.cpp refuses it too)", a.key("expert_count"))))
        }
        (other, _) => {
            return Err(f.err(format!(
                "metadata `general.architecture` is `{other}`; GGUF files of llama (Llama, Mixtral), qwen3, qwen3moe, qwen2moe, olmoe, \
                 deepseek2 (DeepSeek-V3), gpt-oss and llama4 load"
            )))
        }
    };
    let index: HashMap<&str, usize> = f.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    let emb = *index.get("token_embd.weight").ok_or_else(|| f.err("tensor `token_embd.weight` is missing"))?;
    let n_vocab = f.tensors[emb].shape()[0];
    if let Some(v) = a.ou("vocab_size")? {
        if v as usize != n_vocab {
            return Err(f.err(format!("metadata `{}` is {v} but `token_embd.weight` has {n_vocab} rows", a.key("vocab_size"))));
        }
    }
    let d = a.u("embedding_length")?;
    let n_head = a.u("attention.head_count")?;
    let n_head_kv = a.ou("attention.head_count_kv")?.unwrap_or(n_head);
    let n_layer = a.u("block_count")?;
    if n_head == 0 || n_head_kv == 0 || n_layer == 0 || d == 0 {
        return Err(f.err(format!(
            "metadata: embedding_length {d}, head_count {n_head}, head_count_kv {n_head_kv}, block_count {n_layer} must all be > 0"
        )));
    }
    let mla = name == "deepseek2";
    let head_dim = a.ou("attention.key_length")?.unwrap_or(d / n_head);
    if !mla {
        // (latent attention has its own head sizes, below)
        if let Some(v) = a.ou("attention.value_length")? {
            if v != head_dim {
                return Err(f.err(format!(
                    "metadata `{}` {v} differs from the key length {head_dim} (not supported)",
                    a.key("attention.value_length")
                )));
            }
        }
        if let Some(r) = a.ou("rope.dimension_count")? {
            if r != head_dim {
                return Err(f.err(format!(
                    "metadata `{}` is {r}: partial rotary embeddings (of {head_dim}) are not supported",
                    a.key("rope.dimension_count")
                )));
            }
        }
    }
    let mut c = json!({
        "architectures": [arch],
        "hidden_size": d,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "num_hidden_layers": n_layer,
        "head_dim": head_dim,
        "vocab_size": n_vocab,
        "max_position_embeddings": a.u("context_length")?,
        "rms_norm_eps": a.of("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        "rope_theta": a.of("rope.freq_base")?.unwrap_or(10000.0),
        "tie_word_embeddings": !index.contains_key("output.weight"),
        "hidden_act": "silu",
    });
    let o = c.as_object_mut().expect("object");
    match f.get(&a.key("rope.scaling.type")).map(|v| v.as_str().unwrap_or("?")) {
        None | Some("none") => {}
        Some("linear") => {
            let factor =
                a.of("rope.scaling.factor")?.ok_or_else(|| f.err(format!("metadata `{}` is missing", a.key("rope.scaling.factor"))))?;
            o.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": factor}));
        }
        Some("yarn") => {
            let need = |k: &str| a.of(k)?.ok_or_else(|| f.err(format!("metadata `{}` is missing", a.key(k))));
            // ggml rounds YaRN's correction range outward: transformers' `truncate`
            let mut y = json!({"rope_type": "yarn", "factor": need("rope.scaling.factor")?,
                "original_max_position_embeddings": need("rope.scaling.original_context_length")?,
                "beta_fast": a.of("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                "beta_slow": a.of("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0), "truncate": true});
            if let Some(m) = a.of("rope.scaling.yarn_log_multiplier")? {
                // DeepSeek: llama.cpp's multiplier is 0.1 · mscale_all_dim (mscale 1)
                y["mscale_all_dim"] = json!(m / 0.1);
                y["mscale"] = json!(1.0);
            }
            o.insert("rope_scaling".into(), y);
        }
        Some(t) => {
            return Err(
                f.err(format!("metadata `{}` is `{t}`: only linear and YaRN RoPE scaling load from GGUF", a.key("rope.scaling.type")))
            )
        }
    }
    if name == "llama4" {
        llama4_settings(&a, o)?;
    } else if let Some(w) = a.ou("attention.sliding_window")? {
        o.insert("sliding_window".into(), json!(w));
    }
    let ff = a.ou("feed_forward_length")?;
    let eff = a.ou("expert_feed_forward_length")?;
    if family_moe {
        let k = a.u("expert_used_count")?;
        o.insert("num_experts_per_tok".into(), json!(k));
        let de = eff.or(ff).ok_or_else(|| f.err(format!("metadata `{}` is missing", a.key("expert_feed_forward_length"))))?;
        match name {
            "deepseek2" => {
                if a.ou("expert_gating_func")? != Some(2) {
                    return Err(f.err(format!(
                        "metadata `{}` is {:?}: only sigmoid gating (2, DeepSeek-V3) is supported, not DeepSeek-V2's softmax",
                        a.key("expert_gating_func"),
                        a.ou("expert_gating_func")?
                    )));
                }
                let rope = a.u("rope.dimension_count")?;
                let kl = a.ou("attention.key_length_mla")?.unwrap_or(head_dim);
                let vl = match a.ou("attention.value_length_mla")? {
                    Some(v) => v,
                    None => a.u("attention.value_length")?,
                };
                if kl <= rope {
                    return Err(f.err(format!("metadata: key length {kl} must exceed the rotary part {rope}")));
                }
                o.remove("head_dim");
                o.insert("num_key_value_heads".into(), json!(n_head));
                o.insert("n_routed_experts".into(), json!(n_expert));
                o.insert("moe_intermediate_size".into(), json!(de));
                o.insert("n_shared_experts".into(), json!(a.ou("expert_shared_count")?.unwrap_or(0)));
                o.insert("first_k_dense_replace".into(), json!(a.ou("leading_dense_block_count")?.unwrap_or(0)));
                o.insert("routed_scaling_factor".into(), json!(a.of("expert_weights_scale")?.unwrap_or(1.0)));
                let norm = f.get(&a.key("expert_weights_norm")).and_then(Value::as_bool).unwrap_or(false);
                o.insert("norm_topk_prob".into(), json!(norm));
                o.insert("n_group".into(), json!(a.ou("expert_group_count")?.unwrap_or(1)));
                o.insert("topk_group".into(), json!(a.ou("expert_group_used_count")?.unwrap_or(1)));
                if let Some(q) = a.ou("attention.q_lora_rank")? {
                    o.insert("q_lora_rank".into(), json!(q));
                }
                o.insert("kv_lora_rank".into(), json!(a.u("attention.kv_lora_rank")?));
                o.insert("qk_rope_head_dim".into(), json!(rope));
                o.insert("qk_nope_head_dim".into(), json!(kl - rope));
                o.insert("v_head_dim".into(), json!(vl));
                o.insert("rope_interleave".into(), json!(true));
                if let Some(ff) = ff {
                    o.insert("intermediate_size".into(), json!(ff));
                }
            }
            "llama" => {
                o.insert("num_local_experts".into(), json!(n_expert));
                o.insert("intermediate_size".into(), json!(de));
            }
            "llama4" => {
                // experts and their one shared expert of `expert_feed_forward_length`, dense layers
                // of `feed_forward_length`
                o.insert("num_local_experts".into(), json!(n_expert));
                o.insert("intermediate_size".into(), json!(de));
                o.insert("interleave_moe_layer_step".into(), json!(a.u("interleave_moe_layer_step")?));
                if let Some(ff) = ff {
                    o.insert("intermediate_size_mlp".into(), json!(ff));
                }
            }
            "gpt-oss" => {
                // sliding-window attention on every other layer from the first (llama.cpp's SWA
                // pattern 2, transformers' default `layer_types`); clamped SwiGLU at its defaults
                o.insert("num_local_experts".into(), json!(n_expert));
                o.insert("intermediate_size".into(), json!(de));
                o.insert("attention_bias".into(), json!(true));
            }
            "olmoe" => {
                o.insert("num_experts".into(), json!(n_expert));
                o.insert("intermediate_size".into(), json!(de));
                o.insert("norm_topk_prob".into(), json!(false));
            }
            _ => {
                o.insert("num_experts".into(), json!(n_expert));
                o.insert("moe_intermediate_size".into(), json!(de));
                if let Some(ff) = ff {
                    o.insert("intermediate_size".into(), json!(ff));
                }
                // llama.cpp normalises the top-k weights of qwen3moe and not of qwen2moe
                let norm = f.get(&a.key("expert_weights_norm")).and_then(Value::as_bool).unwrap_or(name == "qwen3moe");
                o.insert("norm_topk_prob".into(), json!(norm));
                o.insert("decoder_sparse_step".into(), json!(1));
                o.insert("mlp_only_layers".into(), json!([]));
            }
        }
        if name == "qwen2moe" {
            let sh = a.u("expert_shared_feed_forward_length")?;
            o.insert("shared_expert_intermediate_size".into(), json!(sh));
        }
    } else {
        let ff = ff.ok_or_else(|| f.err(format!("metadata `{}` is missing", a.key("feed_forward_length"))))?;
        o.insert("intermediate_size".into(), json!(ff));
    }
    if opts.n_ctx.is_none() && a.u("context_length")? > 1 << 24 {
        return Err(f.err(format!("metadata `{}` is implausibly large", a.key("context_length"))));
    }

    // the tensors, by their Hugging Face names
    let mut recipes = HashMap::new();
    let direct = |recipes: &mut HashMap<String, Recipe>, hf: String, gg: &str| -> Result<()> {
        let i = *index.get(gg).ok_or_else(|| f.err(format!("tensor `{gg}` is missing ({arch} needs it)")))?;
        recipes.insert(hf, Recipe::Direct(i));
        Ok(())
    };
    direct(&mut recipes, "model.embed_tokens.weight".into(), "token_embd.weight")?;
    direct(&mut recipes, "model.norm.weight".into(), "output_norm.weight")?;
    if index.contains_key("output.weight") {
        direct(&mut recipes, "lm_head.weight".into(), "output.weight")?;
    }
    let has = |n: &str| index.contains_key(n);
    for i in 0..n_layer as usize {
        let (hf, b) = (format!("model.layers.{i}"), format!("blk.{i}"));
        direct(&mut recipes, format!("{hf}.input_layernorm.weight"), &format!("{b}.attn_norm.weight"))?;
        let post_norm = if name == "gpt-oss" { "post_attention_norm" } else { "ffn_norm" };
        direct(&mut recipes, format!("{hf}.post_attention_layernorm.weight"), &format!("{b}.{post_norm}.weight"))?;
        if has(&format!("{b}.attn_sinks.weight")) {
            direct(&mut recipes, format!("{hf}.self_attn.sinks"), &format!("{b}.attn_sinks.weight"))?;
        }
        let plain: &[(&str, &str)] = if mla {
            // latent attention: q through a low rank (or plain), the compressed kv, its up-projection
            // (llama.cpp splits it per head into k_b, transposed, and v_b)
            let names = [
                ("q_a_proj", "attn_q_a"),
                ("q_a_layernorm", "attn_q_a_norm"),
                ("q_b_proj", "attn_q_b"),
                ("q_proj", "attn_q"),
                ("kv_a_proj_with_mqa", "attn_kv_a_mqa"),
                ("kv_a_layernorm", "attn_kv_a_norm"),
                ("kv_b_proj", "attn_kv_b"),
            ];
            for (h, g) in names {
                if has(&format!("{b}.{g}.weight")) {
                    direct(&mut recipes, format!("{hf}.self_attn.{h}.weight"), &format!("{b}.{g}.weight"))?;
                }
            }
            if !has(&format!("{b}.attn_kv_b.weight")) {
                let kb = *index
                    .get(format!("{b}.attn_k_b.weight").as_str())
                    .ok_or_else(|| f.err(format!("tensor `{b}.attn_k_b.weight` is missing")))?;
                let vb = *index
                    .get(format!("{b}.attn_v_b.weight").as_str())
                    .ok_or_else(|| f.err(format!("tensor `{b}.attn_v_b.weight` is missing")))?;
                recipes.insert(format!("{hf}.self_attn.kv_b_proj.weight"), Recipe::KvB(kb, vb));
            }
            &[("o_proj", "attn_output")]
        } else {
            &[("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")]
        };
        for &(h, g) in plain {
            direct(&mut recipes, format!("{hf}.self_attn.{h}.weight"), &format!("{b}.{g}.weight"))?;
            if has(&format!("{b}.{g}.bias")) {
                direct(&mut recipes, format!("{hf}.self_attn.{h}.bias"), &format!("{b}.{g}.bias"))?;
            }
        }
        for (h, g) in [("q_norm", "attn_q_norm"), ("k_norm", "attn_k_norm")] {
            if has(&format!("{b}.{g}.weight")) {
                direct(&mut recipes, format!("{hf}.self_attn.{h}.weight"), &format!("{b}.{g}.weight"))?;
            }
        }
        if name == "llama" {
            // llama.cpp's converter reorders Llama's q/k rows for its interleaved rotary embedding
            for (h, heads) in [("q_proj", n_head), ("k_proj", n_head_kv)] {
                let key = format!("{hf}.self_attn.{h}.weight");
                if let Some(Recipe::Direct(t)) = recipes.get(&key).cloned() {
                    recipes.insert(key, Recipe::Unpermute(t, heads as usize));
                }
                if recipes.contains_key(&format!("{hf}.self_attn.{h}.bias")) {
                    return Err(f.err(format!("tensor `{b}.attn_q.bias`: attention biases of llama files are not supported")));
                }
            }
        }
        // Llama 4's FFN is `feed_forward` with a `router`; the others' `mlp` with a `gate`
        let fp = if name == "llama4" { "feed_forward" } else { "mlp" };
        if has(&format!("{b}.ffn_gate_inp.weight")) {
            let gate = *index.get(format!("{b}.ffn_gate_exps.weight").as_str()).ok_or_else(|| {
                f.err(format!("tensor `{b}.ffn_gate_exps.weight` is missing: experts stored one tensor each (older files) are not supported; convert the model again with a current llama.cpp"))
            })?;
            let up = *index
                .get(format!("{b}.ffn_up_exps.weight").as_str())
                .ok_or_else(|| f.err(format!("tensor `{b}.ffn_up_exps.weight` is missing")))?;
            // the experts as the file stacks them, gate rows first (`experts_rows_first`)
            recipes.insert(format!("{hf}.{fp}.experts.gate_up_proj"), Recipe::GateUp(gate, up));
            direct(&mut recipes, format!("{hf}.{fp}.experts.down_proj"), &format!("{b}.ffn_down_exps.weight"))?;
            if name == "gpt-oss" {
                // every expert matrix and the router with a bias
                let bias = |t: &str| -> Result<usize> {
                    index.get(format!("{b}.{t}.bias").as_str()).copied().ok_or_else(|| f.err(format!("tensor `{b}.{t}.bias` is missing")))
                };
                direct(&mut recipes, format!("{hf}.mlp.router.weight"), &format!("{b}.ffn_gate_inp.weight"))?;
                direct(&mut recipes, format!("{hf}.mlp.router.bias"), &format!("{b}.ffn_gate_inp.bias"))?;
                recipes.insert(format!("{hf}.mlp.experts.gate_up_proj_bias"), Recipe::GateUp(bias("ffn_gate_exps")?, bias("ffn_up_exps")?));
                direct(&mut recipes, format!("{hf}.mlp.experts.down_proj_bias"), &format!("{b}.ffn_down_exps.bias"))?;
            } else if name == "llama4" {
                direct(&mut recipes, format!("{hf}.{fp}.router.weight"), &format!("{b}.ffn_gate_inp.weight"))?;
            } else {
                direct(&mut recipes, format!("{hf}.mlp.gate.weight"), &format!("{b}.ffn_gate_inp.weight"))?;
            }
            if has(&format!("{b}.exp_probs_b.bias")) {
                direct(&mut recipes, format!("{hf}.mlp.gate.e_score_correction_bias"), &format!("{b}.exp_probs_b.bias"))?;
            }
            if has(&format!("{b}.ffn_gate_shexp.weight")) {
                // Qwen2-MoE's one gated shared expert; DeepSeek's shared experts as one MLP
                let sh = if mla { "shared_experts" } else { "shared_expert" };
                for (h, g) in [("gate_proj", "ffn_gate_shexp"), ("up_proj", "ffn_up_shexp"), ("down_proj", "ffn_down_shexp")] {
                    direct(&mut recipes, format!("{hf}.{fp}.{sh}.{h}.weight"), &format!("{b}.{g}.weight"))?;
                }
                if has(&format!("{b}.ffn_gate_inp_shexp.weight")) {
                    direct(&mut recipes, format!("{hf}.mlp.shared_expert_gate.weight"), &format!("{b}.ffn_gate_inp_shexp.weight"))?;
                }
            }
        } else {
            for (h, g) in [("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"), ("down_proj", "ffn_down")] {
                direct(&mut recipes, format!("{hf}.{fp}.{h}.weight"), &format!("{b}.{g}.weight"))?;
            }
        }
    }
    if name != "llama" {
        let qkv_bias = recipes.contains_key("model.layers.0.self_attn.q_proj.bias");
        if name == "qwen2moe" {
            o.insert("qkv_bias".into(), json!(qkv_bias));
        }
    }
    Ok((c, recipes))
}

/// The GGML type holding most matrix values of `f`.
fn file_type(f: &GgufFile<memmap2::Mmap>) -> &'static str {
    let mut by: HashMap<&'static str, usize> = HashMap::new();
    for t in f.tensors.iter().filter(|t| t.ne.len() >= 2) {
        *by.entry(t.ty.name()).or_default() += t.n_elements();
    }
    by.into_iter().max_by_key(|&(n, c)| (c, n)).map_or("f32", |(n, _)| n)
}

/// Token ids of metadata `key` (a number), if present.
fn token_id(f: &GgufFile<memmap2::Mmap>, key: &str) -> Result<Option<u32>> {
    Ok(f.opt_u64(key)?.map(|v| v as u32))
}

/// The model the file `f` (at `path`) describes — its config, RoPE factors included — and the
/// source of its tensors.
fn model_of<'f>(f: &'f GgufFile<memmap2::Mmap>, path: &Path, opts: &HfOptions) -> Result<(HfConfig, GgufSource<'f>)> {
    let (config, recipes) = describe(f, opts)?;
    let text = serde_json::to_string(&config).expect("json");
    let mut hc = parse_config(&text, path, opts).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("its metadata describes a model that cannot be loaded: {e}"),
    })?;
    let mut src = GgufSource { file: f, recipes, used: HashSet::new() };
    if let Some(i) = f.tensors.iter().position(|t| t.name == "rope_freqs.weight") {
        // Llama 3.1-style RoPE scaling as llama.cpp keeps it: one divisor per rotated pair
        let t = &f.tensors[i];
        if t.ne.iter().skip(1).any(|&n| n != 1) || hc.cfg.rope_scaling.is_some() {
            return Err(f.err(format!(
                "tensor `rope_freqs.weight` (GGML ne {:?}) must be one vector, and not beside another RoPE scaling ({:?})",
                t.ne, hc.cfg.rope_scaling
            )));
        }
        let factors = src.values(i, 0..t.n_elements())?.into_iter().map(f64::from).collect();
        src.used.insert(i);
        hc.cfg.rope_scaling = Some(RopeScaling::Factors { factors });
        hc.cfg.validate().map_err(|e| f.err(format!("tensor `rope_freqs.weight`: {e}")))?;
    }
    Ok((hc, src))
}

/// The config of the GGUF file `path` (as its Hugging Face `config.json` parses), without reading
/// its weights.
pub fn read_config(path: &Path, opts: &HfOptions) -> Result<HfConfig> {
    let f = GgufFile::open(path)?;
    Ok(model_of(&f, path, opts)?.0)
}

/// Load the GGUF file `path` (the model as its Hugging Face checkpoint loads; `arch` is the
/// Hugging Face architecture it maps onto).
pub fn load_gguf(path: &Path, opts: &HfOptions) -> Result<HfModel> {
    let f = GgufFile::open(path)?;
    let (hc, mut src) = model_of(&f, path, opts)?;
    let model = load_tensors(&mut src, path, &hc, opts, &|_| false)?;
    let bos = token_id(&f, "tokenizer.ggml.bos_token_id")?;
    let mut eos: Vec<u32> = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(t) = token_id(&f, key)? {
            if !eos.contains(&t) {
                eos.push(t);
            }
        }
    }
    let gguf = GgufInfo { file_type: file_type(&f), meta: f.meta.clone() };
    Ok(HfModel { cfg: hc.cfg, model, arch: hc.arch, bos_token_id: bos, eos_token_ids: eos, gguf: Some(gguf) })
}

/// Whether `path` looks like a GGUF file (by its name).
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}
