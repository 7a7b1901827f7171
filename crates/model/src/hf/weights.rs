//! Hugging Face safetensors weights (one file or shards + `model.safetensors.index.json`) →
//! the flat parameter buffer of a [`Transformer`], renaming tensors onto ours.
//!
//! Files are memory-mapped (read-only): the checkpoint's pages come from the page cache as tensors
//! are converted, so loading needs about the f32 parameters in memory, not the checkpoint's size on
//! top. [`check_memory`] refuses, before anything is allocated, a model whose parameters exceed
//! `MemAvailable` of `/proc/meminfo`. bf16/f16/f32 are converted to f32 — except, with
//! `HfOptions::keep_dtype`, the matrices the fast engine converts ([`crate::stored`]) of a checkpoint
//! whose matrices are all bf16 (or all f16): those stay in that format, 2 bytes per value, in
//! `Transformer::stored`. A missing tensor, a tensor of the wrong shape and a tensor that nothing
//! uses are errors naming the tensor and file.

use super::config::HfConfig;
use super::{Family, HfOptions};
use crate::checkpoint::tensor_f32_range;
use crate::error::{Error, Result};
use crate::params::FfnLayout;
use crate::stored::{is_engine_matrix, StoredData};
use crate::transformer::Transformer;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The safetensors files of a checkpoint directory, in load order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io { path: index.clone(), source })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path: index.clone(), message: format!("not valid JSON: {e}") })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Checkpoint { path: index.clone(), message: "field `weight_map` is missing".into() })?;
        let files: BTreeSet<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        if files.is_empty() {
            return Err(Error::Checkpoint { path: index, message: "`weight_map` names no files".into() });
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io { path: dir.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Checkpoint { path: dir.to_path_buf(), message: "no *.safetensors weights in the directory".into() });
    }
    Ok(files)
}

/// Where [`load_tensors`] reads a checkpoint's tensors, by their Hugging Face names (a GGUF file
/// presents its tensors under those names too: `crate::gguf`).
pub(crate) trait TensorSource {
    /// Whether the checkpoint has tensor `name`.
    fn has(&self, name: &str) -> bool;

    /// Elements `range` (all when `None`) of tensor `name`, which must have `shape`, as f32.
    fn take_range(&mut self, name: &str, shape: &[usize], range: Option<std::ops::Range<usize>>) -> Result<Vec<f32>>;

    /// The tensor `name` (which must have `shape`) as it is stored, when that is the format of
    /// `like`; `None` (nothing taken) otherwise.
    fn take_kept(&mut self, name: &str, shape: &[usize], like: &StoredData) -> Result<Option<StoredData>>;

    /// Part `e` along the first dimension of tensor `name` (which must have `shape`) as it is
    /// stored, when the source keeps such parts in the format of `like`; `None` (nothing taken)
    /// otherwise.
    fn take_kept_part(&mut self, _name: &str, _shape: &[usize], _e: usize, _like: &StoredData) -> Result<Option<StoredData>> {
        Ok(None)
    }

    /// Whether GPT-OSS's and Llama 4's expert stacks come in the fused layout of the other families —
    /// `gate_up_proj [E, 2·d_expert, d]` with the gate rows first, `down_proj [E, d, d_expert]`,
    /// `gate_up_proj_bias [E, 2·d_expert]` gate then up — rather than transformers' x·W layouts
    /// (a GGUF file stores them so; its blocks can then stay as stored).
    fn experts_rows_first(&self) -> bool {
        false
    }

    /// The format every matrix of the checkpoint is stored in, when the engine can keep it.
    fn kept_format(&self) -> Option<StoredData>;

    /// (values, bytes) of the matrices kept as stored, when the source knows better than "every
    /// engine matrix at 2 bytes".
    fn kept_size(&self) -> Option<(usize, u64)> {
        None
    }

    /// Every tensor not consumed must be one that is safe to ignore.
    fn check_all_used(&self, ignorable: &dyn Fn(&str) -> bool) -> Result<()>;

    /// The tensor `name` as f32, which must have `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.take_range(name, shape, None)
    }

    /// Part `e` of the tensor `name` (which must have `shape`) along its first dimension, as f32:
    /// one expert of a stack `[n_expert, ·, ·]`, without converting the others.
    fn take_part(&mut self, name: &str, shape: &[usize], e: usize) -> Result<Vec<f32>> {
        let part: usize = shape[1..].iter().product();
        self.take_range(name, shape, Some(e * part..(e + 1) * part))
    }
}

/// Tensors of all shards by name, tracking which ones were consumed.
struct Source<'a> {
    dir: PathBuf,
    arch: String,
    files: Vec<(PathBuf, SafeTensors<'a>)>,
    loc: HashMap<String, usize>,
    /// canonical name → the name in the file, where a prefix was stripped
    stored: HashMap<String, String>,
    used: HashSet<String>,
    /// bf16 or f16 when every matrix (tensor of two or more dimensions) of the checkpoint has that format
    half: Option<StoredData>,
}

impl<'a> Source<'a> {
    /// `strip`: a prefix the file puts before the canonical names (`language_model.` of Llama 4's
    /// multimodal checkpoints).
    fn new<B: AsRef<[u8]>>(dir: &Path, arch: &str, bytes: &'a [(PathBuf, B)], strip: Option<&str>) -> Result<Self> {
        let mut files = Vec::with_capacity(bytes.len());
        let mut loc = HashMap::new();
        let mut stored = HashMap::new();
        for (i, (p, b)) in bytes.iter().enumerate() {
            let st = SafeTensors::deserialize(b.as_ref())
                .map_err(|e| Error::Checkpoint { path: p.clone(), message: format!("not a valid safetensors file: {e}") })?;
            for name in st.names() {
                let canon = strip.and_then(|s| name.strip_prefix(s)).unwrap_or(name);
                if canon != name {
                    stored.insert(canon.to_string(), name.to_string());
                }
                if let Some(j) = loc.insert(canon.to_string(), i) {
                    return Err(Error::Checkpoint {
                        path: p.clone(),
                        message: format!("tensor `{name}` is also in {}", bytes[j].0.display()),
                    });
                }
            }
            files.push((p.clone(), st));
        }
        let mut formats = files
            .iter()
            .flat_map(|(_, st)| st.tensors().into_iter().filter(|(_, t)| t.shape().len() >= 2).map(|(_, t)| t.dtype()).collect::<Vec<_>>());
        let first = formats.next();
        let half = match first {
            Some(Dtype::BF16) if formats.all(|d| d == Dtype::BF16) => Some(StoredData::Bf16(Vec::new())),
            Some(Dtype::F16) if formats.all(|d| d == Dtype::F16) => Some(StoredData::F16(Vec::new())),
            _ => None,
        };
        Ok(Source { dir: dir.to_path_buf(), arch: arch.to_string(), files, loc, stored, used: HashSet::new(), half })
    }

    /// The name of canonical tensor `name` in its file.
    fn file_name<'n>(&'n self, name: &'n str) -> &'n str {
        self.stored.get(name).map_or(name, |s| s.as_str())
    }

    /// The file index, the name in that file and the view of canonical tensor `name`, which must
    /// exist and have `shape`.
    fn locate<'s>(&'s self, name: &'s str, shape: &[usize]) -> Result<(usize, &'s str, safetensors::tensor::TensorView<'s>)> {
        let Some(&i) = self.loc.get(name) else {
            return Err(Error::Checkpoint {
                path: self.dir.clone(),
                message: format!("tensor `{name}` is missing ({} needs it)", self.arch),
            });
        };
        let (path, st) = &self.files[i];
        let stored = self.file_name(name);
        let t = st.tensor(stored).map_err(|e| Error::Checkpoint { path: path.clone(), message: format!("tensor `{stored}`: {e}") })?;
        if t.shape() != shape {
            return Err(Error::Checkpoint {
                path: path.clone(),
                message: format!("tensor `{stored}` has shape {:?}; config.json needs {shape:?}", t.shape()),
            });
        }
        Ok((i, stored, t))
    }
}

impl TensorSource for Source<'_> {
    fn has(&self, name: &str) -> bool {
        self.loc.contains_key(name)
    }

    /// The tensor `name` (which must have `shape`) as it is stored, when that is the 2-byte format
    /// of `like`; `None` (nothing taken) otherwise.
    fn take_kept(&mut self, name: &str, shape: &[usize], like: &StoredData) -> Result<Option<StoredData>> {
        let (_, _, t) = self.locate(name, shape)?;
        let bits = || t.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        let data = match (t.dtype(), like) {
            (Dtype::BF16, StoredData::Bf16(_)) => StoredData::Bf16(bits()),
            (Dtype::F16, StoredData::F16(_)) => StoredData::F16(bits()),
            _ => return Ok(None),
        };
        self.used.insert(name.to_string());
        Ok(Some(data))
    }

    fn take_range(&mut self, name: &str, shape: &[usize], range: Option<std::ops::Range<usize>>) -> Result<Vec<f32>> {
        let (i, stored, _) = self.locate(name, shape)?;
        let (path, st) = &self.files[i];
        let (_, vals) = tensor_f32_range(st, stored, path, range)?;
        self.used.insert(name.to_string());
        Ok(vals)
    }

    fn kept_format(&self) -> Option<StoredData> {
        self.half.clone()
    }

    /// Every tensor not consumed must be one that is safe to ignore.
    fn check_all_used(&self, ignorable: &dyn Fn(&str) -> bool) -> Result<()> {
        let mut unused: Vec<(&String, &usize)> = self.loc.iter().filter(|(n, _)| !self.used.contains(*n) && !ignorable(n)).collect();
        unused.sort();
        if let Some((name, &i)) = unused.first() {
            let name = self.file_name(name);
            return Err(Error::Checkpoint {
                path: self.files[i].0.clone(),
                message: format!(
                    "tensor `{name}` (and {} more) is not used by {} with this config.json; the checkpoint has a feature the loader does not support",
                    unused.len() - 1,
                    self.arch
                ),
            });
        }
        Ok(())
    }
}

/// Map `path` read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    // SAFETY: the map is read-only and lives only while the weights are copied out; like every
    // mmap-based loader this assumes nobody truncates or rewrites the file meanwhile.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut it = line.split_whitespace().skip(1);
    let v: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(v * 1024),
        Some(_) => None,
    }
}

/// Error (naming `dir`) when `need` bytes exceed the `available` ones.
pub fn check_memory(dir: &Path, need: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(avail) if need > avail => Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            message: format!(
                "the model needs {:.2} GiB for its parameters but only {:.2} GiB of memory is available (MemAvailable in /proc/meminfo); \
                 free memory or set HfOptions::skip_memory_check",
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            ),
        }),
        _ => Ok(()),
    }
}

/// Copy `vals` into our tensor `ours`, or keep it in the checkpoint's format `keep` when it is a
/// matrix the engine converts (its range of `params` then stays untouched zeros).
fn put(m: &mut Transformer<f32>, keep: Option<&StoredData>, ours: &str, vals: &[f32]) {
    let e = m.table.get(ours).unwrap_or_else(|| panic!("tensor {ours} is in the layout"));
    match keep.filter(|_| is_engine_matrix(ours)).and_then(|fmt| fmt.like(vals)) {
        Some(data) => m.stored.insert(e.range(), data),
        None => m.params[e.range()].copy_from_slice(vals),
    }
}

/// The checkpoint's tensor `name` (of `shape`) as our tensor `ours`, unchanged: [`put`], except
/// that a kept matrix already in the kept format is copied bit for bit, without an f32 detour.
fn put_tensor(
    m: &mut Transformer<f32>,
    src: &mut dyn TensorSource,
    keep: Option<&StoredData>,
    name: &str,
    shape: &[usize],
    ours: &str,
) -> Result<()> {
    if let Some(fmt) = keep.filter(|_| is_engine_matrix(ours)) {
        if let Some(data) = src.take_kept(name, shape, fmt)? {
            let e = m.table.get(ours).unwrap_or_else(|| panic!("tensor {ours} is in the layout"));
            m.stored.insert(e.range(), data);
            return Ok(());
        }
    }
    let v = src.take(name, shape)?;
    put(m, keep, ours, &v);
    Ok(())
}

/// Part `e` (`vals`) of our stacked tensor `ours` `[n, ·, ·]`: [`put`] one expert at a time, so
/// that a layer's stack never exists whole in f32.
fn put_part(m: &mut Transformer<f32>, keep: Option<&StoredData>, ours: &str, e: usize, vals: &[f32]) {
    let ent = m.table.get(ours).unwrap_or_else(|| panic!("tensor {ours} is in the layout"));
    let r = ent.offset + e * vals.len()..ent.offset + (e + 1) * vals.len();
    assert!(r.end <= ent.offset + ent.len, "part {e} of {ours}");
    match keep.filter(|_| is_engine_matrix(ours)).and_then(|fmt| fmt.like(vals)) {
        Some(data) => m.stored.insert(r, data),
        None => m.params[r].copy_from_slice(vals),
    }
}

/// Elements `r` (relative to its start) of our tensor `ours`, kept as `data`.
fn put_stored(m: &mut Transformer<f32>, ours: &str, r: std::ops::Range<usize>, data: StoredData) {
    let ent = m.table.get(ours).unwrap_or_else(|| panic!("tensor {ours} is in the layout"));
    assert!(r.end <= ent.len, "{r:?} of {ours}");
    m.stored.insert(ent.offset + r.start..ent.offset + r.end, data);
}

/// `w [rows, cols]` → `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| w[r * cols + c])).collect()
}

/// Bytes the loaded parameters of `hc.cfg` take: 4 per value, except the matrices kept as
/// stored: `kept` = (values, bytes) when the source knows them, else 2 bytes per value of every
/// engine matrix (bf16/f16).
fn param_bytes(hc: &HfConfig, keep: bool, kept: Option<(usize, u64)>) -> u64 {
    let (table, _) = crate::params::build_layout(&hc.cfg);
    let (n, bytes) = match (keep, kept) {
        (false, _) => (0, 0),
        (true, Some((n, b))) => (n.min(table.total), b),
        (true, None) => {
            let n: usize = table.entries.iter().filter(|e| is_engine_matrix(&e.name)).map(|e| e.len).sum();
            (n, 2 * n as u64)
        }
    };
    4 * (table.total - n) as u64 + bytes
}

/// Load `files` into a zero-initialised model of `hc.cfg`, after checking (unless
/// `opts.skip_memory_check`) that the parameters fit in the memory available.
pub fn load_weights(dir: &Path, files: &[PathBuf], hc: &HfConfig, opts: &HfOptions) -> Result<Transformer<f32>> {
    let bytes: Vec<(PathBuf, memmap2::Mmap)> = files.iter().map(|p| map_file(p).map(|m| (p.clone(), m))).collect::<Result<_>>()?;
    // Llama 4 as released (multimodal): the text model under `language_model.`, the vision tower unused
    let multimodal = hc.arch == "Llama4ForConditionalGeneration";
    let mut src = Source::new(dir, &hc.arch, &bytes, multimodal.then_some("language_model."))?;
    let vision = |n: &str| multimodal && (n.starts_with("vision_model.") || n.starts_with("multi_modal_projector."));
    load_tensors(&mut src, dir, hc, opts, &vision)
}

/// The model of `hc.cfg` with the tensors of `src` (named as in Hugging Face checkpoints), after
/// checking (unless `opts.skip_memory_check`) that the parameters fit in the memory available.
/// `origin` names the checkpoint in errors; tensors `ignorable` accepts may stay unused.
pub(crate) fn load_tensors(
    src: &mut dyn TensorSource,
    origin: &Path,
    hc: &HfConfig,
    opts: &HfOptions,
    ignorable: &dyn Fn(&str) -> bool,
) -> Result<Transformer<f32>> {
    let keep = if opts.keep_dtype { src.kept_format() } else { None };
    let keep = keep.as_ref();
    if !opts.skip_memory_check {
        // a memory-mapped checkpoint itself is page cache
        let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_available(&t));
        check_memory(origin, param_bytes(hc, keep.is_some(), src.kept_size()), avail)?;
    }
    // zeroed allocation: the ranges of kept matrices are never written, so never paged in
    let mut m = Transformer::<f32>::zeros(hc.cfg.clone())?;
    let cfg = hc.cfg.clone();
    let (d, dh) = (cfg.d_model, cfg.d_head());
    let (dq, dkv) = (cfg.n_head * dh, cfg.n_head_kv * dh);

    put_tensor(&mut m, src, keep, "model.embed_tokens.weight", &[cfg.n_vocab, d], "tok_embeddings.weight")?;
    for i in 0..cfg.n_layer {
        let hf = format!("model.layers.{i}");
        let ours = format!("layers.{i}");
        let direct = |src: &mut dyn TensorSource, m: &mut Transformer<f32>, h: &str, o: &str, shape: &[usize]| -> Result<()> {
            put_tensor(m, src, keep, &format!("{hf}.{h}"), shape, &format!("{ours}.{o}"))?;
            Ok(())
        };
        direct(src, &mut m, "input_layernorm.weight", "attn_norm.weight", &[d])?;
        let block = m.layout.blocks[i].clone();
        match cfg.attn_ext.as_ref().and_then(|a| a.mla.as_ref()) {
            Some(ml) => {
                // DeepSeek-V3 latent attention
                let (kvr, dv) = (ml.kv_lora_rank, ml.d_v);
                match ml.q_lora_rank {
                    Some(r) => {
                        direct(src, &mut m, "self_attn.q_a_proj.weight", "attn.wq_a.weight", &[r, d])?;
                        direct(src, &mut m, "self_attn.q_a_layernorm.weight", "attn.q_a_norm.weight", &[r])?;
                        direct(src, &mut m, "self_attn.q_b_proj.weight", "attn.wq_b.weight", &[dq, r])?;
                    }
                    None => direct(src, &mut m, "self_attn.q_proj.weight", "attn.wq_b.weight", &[dq, d])?,
                }
                direct(src, &mut m, "self_attn.kv_a_proj_with_mqa.weight", "attn.wkv_a.weight", &[kvr + ml.d_rope, d])?;
                direct(src, &mut m, "self_attn.kv_a_layernorm.weight", "attn.kv_a_norm.weight", &[kvr])?;
                direct(src, &mut m, "self_attn.kv_b_proj.weight", "attn.wkv_b.weight", &[cfg.n_head * (ml.d_nope + dv), kvr])?;
                direct(src, &mut m, "self_attn.o_proj.weight", "attn.wo.weight", &[d, cfg.n_head * dv])?;
            }
            None => {
                direct(src, &mut m, "self_attn.q_proj.weight", "attn.wq.weight", &[dq, d])?;
                direct(src, &mut m, "self_attn.k_proj.weight", "attn.wk.weight", &[dkv, d])?;
                direct(src, &mut m, "self_attn.v_proj.weight", "attn.wv.weight", &[dkv, d])?;
                direct(src, &mut m, "self_attn.o_proj.weight", "attn.wo.weight", &[d, dq])?;
            }
        }
        if block.attn.sinks.is_some() {
            direct(src, &mut m, "self_attn.sinks", "attn.sinks", &[cfg.n_head])?;
        }
        if block.attn.out_bias.is_some() {
            direct(src, &mut m, "self_attn.o_proj.bias", "attn.wo.bias", &[d])?;
        }
        if let (Some(qn), Some(kn)) = (&block.attn.q_norm, &block.attn.k_norm) {
            direct(src, &mut m, "self_attn.q_norm.weight", "attn.q_norm.weight", &[qn.len()])?;
            direct(src, &mut m, "self_attn.k_norm.weight", "attn.k_norm.weight", &[kn.len()])?;
        }
        if block.attn.bias.is_some() {
            direct(src, &mut m, "self_attn.q_proj.bias", "attn.wq.bias", &[dq])?;
            direct(src, &mut m, "self_attn.k_proj.bias", "attn.wk.bias", &[dkv])?;
            direct(src, &mut m, "self_attn.v_proj.bias", "attn.wv.bias", &[dkv])?;
        }
        direct(src, &mut m, "post_attention_layernorm.weight", "ffn_norm.weight", &[d])?;
        match &block.ffn {
            FfnLayout::Dense(ml) => {
                let f = ml.d_ff;
                let fp = if hc.family == Family::Llama4 { "feed_forward" } else { "mlp" };
                direct(src, &mut m, &format!("{fp}.gate_proj.weight"), "ffn.w_gate.weight", &[f, d])?;
                direct(src, &mut m, &format!("{fp}.up_proj.weight"), "ffn.w_up.weight", &[f, d])?;
                direct(src, &mut m, &format!("{fp}.down_proj.weight"), "ffn.w_down.weight", &[d, f])?;
            }
            FfnLayout::Moe(ml) => {
                let (ne, de) = (ml.n_expert, cfg.moe.as_ref().expect("moe layer").d_expert);
                // Mixtral checkpoints say `block_sparse_moe`; transformers 5 in memory says `mlp`
                let prefix = match hc.family {
                    Family::Mixtral if !src.has(&format!("{hf}.mlp.gate.weight")) => "block_sparse_moe",
                    Family::Llama4 => "feed_forward",
                    _ => "mlp",
                };
                let router = if matches!(hc.family, Family::GptOss | Family::Llama4) { "router" } else { "gate" };
                direct(src, &mut m, &format!("{prefix}.{router}.weight"), "ffn.router.weight", &[ne, d])?;
                if ml.router_bias.is_some() {
                    direct(src, &mut m, &format!("{prefix}.{router}.bias"), "ffn.router.bias", &[ne])?;
                }
                if ml.selection_bias.is_some() {
                    direct(src, &mut m, &format!("{prefix}.{router}.e_score_correction_bias"), "ffn.router.fixed_selection_bias", &[ne])?;
                }
                let fused = format!("{hf}.{prefix}.experts.gate_up_proj");
                let down_name = format!("{hf}.{prefix}.experts.down_proj");
                let ours_w =
                    [format!("{ours}.ffn.experts.w_gate"), format!("{ours}.ffn.experts.w_up"), format!("{ours}.ffn.experts.w_down")];
                // one expert at a time: gate [d_expert, d_model], up [d_expert, d_model], down [d_model, d_expert]
                let emit = |m: &mut Transformer<f32>, e: usize, parts: [Vec<f32>; 3]| {
                    for (name, v) in ours_w.iter().zip(&parts) {
                        put_part(m, keep, name, e, v);
                    }
                };
                // transformers ≥ 5 fused layout: gate_up [E, 2·d_expert, d_model] (gate rows first),
                // down [E, d_model, d_expert]; GPT-OSS's own checkpoints are x·W with gate and up
                // interleaved, below
                let rows_first = match hc.family {
                    Family::GptOss | Family::Llama4 => src.experts_rows_first(),
                    _ => src.has(&fused),
                };
                if hc.family == Family::GptOss {
                    // biases [E, 2·d_expert]: gate and up interleaved, or gate then up; down [E, d_model]
                    let gub = src.take(&format!("{fused}_bias"), &[ne, 2 * de])?;
                    let dnb = src.take(&format!("{down_name}_bias"), &[ne, d])?;
                    let at = |j: usize| if rows_first { (j, de + j) } else { (2 * j, 2 * j + 1) }; // gate j, up j
                    let (mut bg, mut bu) = (Vec::with_capacity(ne * de), Vec::with_capacity(ne * de));
                    for row in gub.chunks_exact(2 * de) {
                        for (g, u) in (0..de).map(at) {
                            bg.push(row[g]);
                            bu.push(row[u]);
                        }
                    }
                    put(&mut m, keep, &format!("{ours}.ffn.experts.b_gate"), &bg);
                    put(&mut m, keep, &format!("{ours}.ffn.experts.b_up"), &bu);
                    put(&mut m, keep, &format!("{ours}.ffn.experts.b_down"), &dnb);
                }
                if rows_first {
                    // (a GGUF file's experts may stay as its blocks: `take_kept_part`)
                    let sz = de * d;
                    for e in 0..ne {
                        match keep.map(|fmt| src.take_kept_part(&fused, &[ne, 2 * de, d], e, fmt)).transpose()?.flatten() {
                            Some(gu) => {
                                let (gate, up) = gu.split_at(sz);
                                put_stored(&mut m, &ours_w[0], e * sz..(e + 1) * sz, gate);
                                put_stored(&mut m, &ours_w[1], e * sz..(e + 1) * sz, up);
                            }
                            None => {
                                let gu = src.take_part(&fused, &[ne, 2 * de, d], e)?;
                                put_part(&mut m, keep, &ours_w[0], e, &gu[..sz]);
                                put_part(&mut m, keep, &ours_w[1], e, &gu[sz..]);
                            }
                        }
                        match keep.map(|fmt| src.take_kept_part(&down_name, &[ne, d, de], e, fmt)).transpose()?.flatten() {
                            Some(dn) => put_stored(&mut m, &ours_w[2], e * sz..(e + 1) * sz, dn),
                            None => put_part(&mut m, keep, &ours_w[2], e, &src.take_part(&down_name, &[ne, d, de], e)?),
                        }
                    }
                } else if hc.family == Family::GptOss {
                    // GPT-OSS: x·W layout, gate_up [E, d_model, 2·d_expert] with gate and up
                    // interleaved column by column; down [E, d_expert, d_model]
                    for e in 0..ne {
                        let w = src.take_part(&fused, &[ne, d, 2 * de], e)?; // [d_model, 2·d_expert]
                        let (mut gate, mut up) = (Vec::with_capacity(de * d), Vec::with_capacity(de * d));
                        for j in 0..de {
                            gate.extend((0..d).map(|c| w[c * 2 * de + 2 * j]));
                            up.extend((0..d).map(|c| w[c * 2 * de + 2 * j + 1]));
                        }
                        let down = transpose(&src.take_part(&down_name, &[ne, de, d], e)?, de, d);
                        emit(&mut m, e, [gate, up, down]);
                    }
                } else if hc.family == Family::Llama4 {
                    // Llama 4: x·W layout, gate_up [E, d_model, 2·d_expert] (gate columns first), down [E, d_expert, d_model]
                    for e in 0..ne {
                        let gu = transpose(&src.take_part(&fused, &[ne, d, 2 * de], e)?, d, 2 * de); // [2·d_expert, d_model]
                        let (gate, up) = gu.split_at(de * d);
                        let down = transpose(&src.take_part(&down_name, &[ne, de, d], e)?, de, d);
                        emit(&mut m, e, [gate.to_vec(), up.to_vec(), down]);
                    }
                } else {
                    let (g, u, dn) = if hc.family == Family::Mixtral { ("w1", "w3", "w2") } else { ("gate_proj", "up_proj", "down_proj") };
                    for e in 0..ne {
                        let x = format!("{hf}.{prefix}.experts.{e}");
                        let parts = [
                            src.take(&format!("{x}.{g}.weight"), &[de, d])?,
                            src.take(&format!("{x}.{u}.weight"), &[de, d])?,
                            src.take(&format!("{x}.{dn}.weight"), &[d, de])?,
                        ];
                        emit(&mut m, e, parts);
                    }
                }
                if let Some(sl) = &ml.shared {
                    // Qwen2-MoE: mlp.shared_expert.{gate,up,down}_proj + mlp.shared_expert_gate [1, d];
                    // DeepSeek-V3: mlp.shared_experts.* (all shared experts as one MLP)
                    let f = sl.d_ff;
                    let sh = if hc.family == Family::DeepseekV3 { "shared_experts" } else { "shared_expert" };
                    direct(src, &mut m, &format!("{prefix}.{sh}.gate_proj.weight"), "ffn.shared.w_gate.weight", &[f, d])?;
                    direct(src, &mut m, &format!("{prefix}.{sh}.up_proj.weight"), "ffn.shared.w_up.weight", &[f, d])?;
                    direct(src, &mut m, &format!("{prefix}.{sh}.down_proj.weight"), "ffn.shared.w_down.weight", &[d, f])?;
                    if ml.shared_gate.is_some() {
                        direct(src, &mut m, &format!("{prefix}.shared_expert_gate.weight"), "ffn.shared_gate.weight", &[1, d])?;
                    }
                }
            }
        }
    }
    let norm = src.take("model.norm.weight", &[d])?;
    put(&mut m, keep, "norm.weight", &norm);
    if !cfg.tie_embeddings {
        put_tensor(&mut m, src, keep, "lm_head.weight", &[cfg.n_vocab, d], "lm_head.weight")?;
    }
    let tied = cfg.tie_embeddings;
    // a tied checkpoint may still carry a copy of the head; transformers ties over it
    // DeepSeek-V3 checkpoints carry multi-token-prediction layers after the last one; transformers skips them
    let mtp = |n: &str| {
        hc.family == Family::DeepseekV3
            && n.strip_prefix("model.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|x| x.parse::<usize>().ok())
                .is_some_and(|l| l >= cfg.n_layer)
    };
    src.check_all_used(&|n| n.ends_with("rotary_emb.inv_freq") || (tied && n == "lm_head.weight") || mtp(n) || ignorable(n))?;
    Ok(m)
}
