//! Model checkpoints: safetensors files with the stable tensor names of [`crate::params`].
//!
//! Writes are atomic (temporary file + rename). Loading checks every tensor's presence, shape and
//! dtype against the config and names the offending tensor and file on mismatch.

use crate::error::{Error, Result};
use crate::params::FfnLayout;
use crate::transformer::Transformer;
use crate::ModelConfig;
use moe_kernels::Real;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Format version written into the safetensors metadata; bump it when a tensor name changes.
pub const FORMAT_VERSION: &str = "1";

/// Name of the selection-bias buffer of layer `i`.
pub fn selection_bias_name(i: usize) -> String {
    format!("layers.{i}.ffn.router.selection_bias")
}

/// Write `bytes` to `path` atomically ([`moe_kernels::fsutil::write_atomic`]), the error naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    moe_kernels::fsutil::write_atomic(path, bytes).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn f32_bytes(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialise named f32 tensors (name, shape, little-endian bytes) with metadata to safetensors bytes.
pub fn serialize_tensors(tensors: &[(String, Vec<usize>, Vec<u8>)], meta: HashMap<String, String>, path: &Path) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })
}

/// Read a tensor as f32 values (f32, f16 and bf16 accepted).
pub fn tensor_f32(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    tensor_f32_range(st, name, path, None)
}

/// [`tensor_f32`] of the elements `range` only (all when `None`), with the whole tensor's shape;
/// a range past the end is an error.
pub fn tensor_f32_range(
    st: &SafeTensors<'_>,
    name: &str,
    path: &Path,
    range: Option<std::ops::Range<usize>>,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st.tensor(name).map_err(|_| Error::Checkpoint { path: path.to_path_buf(), message: format!("tensor `{name}` is missing") })?;
    let width = match t.dtype() {
        Dtype::F32 => 4,
        _ => 2,
    };
    let data = match range {
        None => t.data(),
        Some(r) => t.data().get(r.start * width..r.end * width).ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("tensor `{name}` has no elements {}..{}", r.start, r.end),
        })?,
    };
    let vals: Vec<f32> = match t.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("tensor `{name}` has dtype {other:?}; expected F32, BF16 or F16"),
            })
        }
    };
    Ok((t.shape().to_vec(), vals))
}

impl<T: Real> Transformer<T> {
    /// Safetensors bytes of all parameters and buffers (f32), with the config in the metadata.
    pub fn to_safetensors(&self, path: &Path) -> Result<Vec<u8>> {
        // kept matrices are saved from the store (real values); taken ones refuse (ADR-0007)
        let what = format!("save {}", path.display());
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .table
            .entries
            .iter()
            .map(|e| Ok((e.name.clone(), e.shape.clone(), f32_bytes(self.param_values_f32(e.range(), &what)?.into_iter()))))
            .collect::<Result<_>>()?;
        for (i, b) in self.selection_bias.iter().enumerate() {
            if !b.is_empty() {
                tensors.push((selection_bias_name(i), vec![b.len()], f32_bytes(b.iter().copied())));
            }
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "moe".to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("config".to_string(), serde_json::to_string(&self.cfg).unwrap_or_default());
        serialize_tensors(&tensors, meta, path)
    }

    /// Save all parameters and buffers to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors(path)?;
        write_atomic(path, &bytes)
    }

    /// Load a checkpoint written by [`Transformer::save`] (or any safetensors file with the same
    /// names) for the architecture `cfg`.
    pub fn load(cfg: ModelConfig, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::load_bytes(cfg, &bytes, path)
    }

    /// Like [`Transformer::load`] from bytes; `path` only names the source in errors.
    pub fn load_bytes(cfg: ModelConfig, bytes: &[u8], path: &Path) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: format!("not a valid safetensors file: {e}") })?;
        let mut m = Self::zeros(cfg)?;
        for e in m.table.entries.clone() {
            let (shape, vals) = tensor_f32(&st, &e.name, path)?;
            if shape != e.shape {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("tensor `{}` has shape {:?}, the config needs {:?}", e.name, shape, e.shape),
                });
            }
            for (p, v) in m.params[e.range()].iter_mut().zip(vals) {
                *p = T::from_f32(v);
            }
        }
        for i in 0..m.cfg.n_layer {
            let FfnLayout::Moe(ml) = &m.layout.blocks[i].ffn else { continue };
            if m.selection_bias[i].is_empty() {
                continue;
            }
            let name = selection_bias_name(i);
            let (shape, vals) = tensor_f32(&st, &name, path)?;
            if shape != [ml.n_expert] {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("tensor `{name}` has shape {shape:?}, expected [{}]", ml.n_expert),
                });
            }
            m.selection_bias[i] = vals;
        }
        Ok(m)
    }
}
