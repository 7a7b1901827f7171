//! AdamW over the flat parameter buffer, with global gradient-norm clipping.
//!
//! As `torch.optim.AdamW` (see `docs/model-spec.md`, "Optimizer"): `p ← p − lr·wd·p`, then Adam
//! with bias correction. Weight decay follows each [`ParamEntry::decay`] flag (matrices, routers
//! and expert stacks; never norms, never `tok_embeddings.weight` — which is also the LM head when
//! tied — unless `decay_embeddings`). Moments `m`, `v` share the parameter buffer's layout and are
//! saved as safetensors `m.<name>` / `v.<name>` with the step count in the metadata.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use moe_kernels::adamw::{adamw_update, AdamWStep};
use moe_model::checkpoint::{serialize_tensors, tensor_f32, write_atomic};
use moe_model::params::{ParamEntry, ParamTable};
use rayon::prelude::*;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Hyper-parameters of AdamW (the learning rate comes per step from the schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// first-moment decay
    pub beta1: f64,
    /// second-moment decay
    pub beta2: f64,
    /// denominator epsilon
    pub eps: f64,
    /// decoupled weight decay for entries that decay
    pub weight_decay: f64,
    /// global gradient-norm clip (0 = off)
    pub grad_clip: f64,
    /// also decay the token embedding
    pub decay_embeddings: bool,
}

impl AdamWConfig {
    /// The optimizer settings of a `[train]` table.
    pub fn from_train(t: &TrainConfig) -> Self {
        AdamWConfig {
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
            grad_clip: t.grad_clip,
            decay_embeddings: t.decay_embeddings,
        }
    }
}

/// AdamW state over one model's flat parameter buffer.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// hyper-parameters
    pub cfg: AdamWConfig,
    /// the parameter table the moments are laid out by
    pub table: ParamTable,
    /// first moments, same layout as the parameters
    pub m: Vec<f32>,
    /// second moments, same layout as the parameters
    pub v: Vec<f32>,
    /// optimizer steps taken so far
    pub t: u64,
}

/// Name of the token embedding (decayed only with `decay_embeddings`).
const EMBEDDING: &str = "tok_embeddings.weight";

/// Elements per partial sum of the gradient norm (fixed, so the norm is deterministic).
const NORM_CHUNK: usize = 1 << 15;

/// Global L2 norm of `grads`, accumulated in f64 in a fixed order.
pub fn grad_norm(grads: &[f32]) -> f64 {
    let partial: Vec<f64> = grads.par_chunks(NORM_CHUNK).map(|c| c.iter().map(|&g| g as f64 * g as f64).sum::<f64>()).collect();
    partial.iter().sum::<f64>().sqrt()
}

/// Clip `grads` to global norm `clip` (when `clip > 0` and the norm exceeds it) by scaling with
/// `clip / norm` (no epsilon). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], clip: f64) -> f64 {
    let norm = grad_norm(grads);
    clip_to(grads, norm, clip);
    norm
}

/// Scale `grads`, whose global norm is `norm`, down to `clip` when `clip > 0` and `norm > clip`.
fn clip_to(grads: &mut [f32], norm: f64, clip: f64) {
    if clip > 0.0 && norm > clip {
        let s = (clip / norm) as f32;
        grads.par_iter_mut().with_min_len(4096).for_each(|g| *g *= s);
    }
}

impl AdamW {
    /// Fresh state (zero moments, step 0) for the parameters of `table`.
    pub fn new(table: &ParamTable, cfg: AdamWConfig) -> Self {
        AdamW { cfg, table: table.clone(), m: vec![0.0; table.total], v: vec![0.0; table.total], t: 0 }
    }

    /// Whether `e` gets weight decay.
    pub fn decays(&self, e: &ParamEntry) -> bool {
        e.decay || (self.cfg.decay_embeddings && e.name == EMBEDDING)
    }

    /// One step: clip `grads` (in place) to the global norm, then update `params` with learning
    /// rate `lr`. Returns the gradient norm before clipping. A NaN or infinite gradient is
    /// [`Error::Diverged`] (naming the step, `t + 1`, and the first tensor holding one), with
    /// `params` and the state untouched.
    pub fn step(&mut self, params: &mut [f32], grads: &mut [f32], lr: f64) -> Result<f64> {
        let norm = grad_norm(grads); // sizes are checked by `step_with_norm`
        self.step_with_norm(params, grads, lr, norm)
    }

    /// [`AdamW::step`] with the global gradient norm given: with several processes it is the
    /// norm over every process's gradients, which this one cannot compute alone.
    pub fn step_with_norm(&mut self, params: &mut [f32], grads: &mut [f32], lr: f64, norm: f64) -> Result<f64> {
        if params.len() != self.table.total || grads.len() != self.table.total {
            return Err(Error::Model(moe_model::Error::BadInput(format!(
                "optimizer built for {} parameters, given {} parameters and {} gradients",
                self.table.total,
                params.len(),
                grads.len()
            ))));
        }
        if !norm.is_finite() {
            let bad = self.table.entries.iter().find_map(|e| {
                grads[e.range()]
                    .iter()
                    .position(|g| !g.is_finite())
                    .map(|i| format!(" (`{}` element {i} is {})", e.name, grads[e.offset + i]))
            });
            return Err(Error::Diverged {
                step: self.t as usize + 1,
                what: format!("the gradient norm is {norm}{}", bad.unwrap_or_default()),
            });
        }
        clip_to(grads, norm, self.cfg.grad_clip);
        self.t += 1;
        for e in &self.table.entries {
            let wd = if self.decays(e) { self.cfg.weight_decay } else { 0.0 };
            let s = AdamWStep {
                lr: lr as f32,
                beta1: self.cfg.beta1 as f32,
                beta2: self.cfg.beta2 as f32,
                eps: self.cfg.eps as f32,
                weight_decay: wd as f32,
                t: self.t,
            };
            let r = e.range();
            adamw_update(&mut params[r.clone()], &grads[r.clone()], &mut self.m[r.clone()], &mut self.v[r], s);
        }
        Ok(norm)
    }

    /// Safetensors bytes of the state; `path` only names the destination in errors.
    pub fn to_safetensors(&self, path: &Path) -> Result<Vec<u8>> {
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut tensors = Vec::with_capacity(2 * self.table.entries.len());
        for e in &self.table.entries {
            tensors.push((format!("m.{}", e.name), e.shape.clone(), bytes(&self.m[e.range()])));
            tensors.push((format!("v.{}", e.name), e.shape.clone(), bytes(&self.v[e.range()])));
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "moe-adamw".to_string());
        meta.insert("step".to_string(), self.t.to_string());
        Ok(serialize_tensors(&tensors, meta, path)?)
    }

    /// Save the state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let b = self.to_safetensors(path)?;
        Ok(write_atomic(path, &b)?)
    }

    /// Load state written by [`AdamW::save`] for the same parameter table; errors name the file
    /// and the tensor.
    pub fn load(table: &ParamTable, cfg: AdamWConfig, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io(path, "cannot read optimizer state"))?;
        let bad = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let t: u64 = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("step"))
            .ok_or_else(|| bad("metadata `step` is missing".into()))?
            .parse()
            .map_err(|e| bad(format!("metadata `step` is not an integer: {e}")))?;
        let mut opt = AdamW::new(table, cfg);
        opt.t = t;
        for e in &table.entries {
            for (prefix, dst) in [("m", &mut opt.m), ("v", &mut opt.v)] {
                let name = format!("{prefix}.{}", e.name);
                let (shape, vals) = tensor_f32(&st, &name, path)?;
                if shape != e.shape {
                    return Err(bad(format!("tensor `{name}` has shape {shape:?}, the model needs {:?}", e.shape)));
                }
                dst[e.range()].copy_from_slice(&vals);
            }
        }
        Ok(opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_model::{ModelConfig, Transformer};

    fn cfg() -> AdamWConfig {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0, decay_embeddings: false }
    }

    fn model(tied: bool) -> Transformer<f32> {
        model_with(tied, 4)
    }

    fn model_with(tied: bool, d_expert: usize) -> Transformer<f32> {
        let text = format!("n_vocab = 16\nn_ctx = 4\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 8\ntie_embeddings = {tied}\n[moe]\nn_expert = 2\nn_expert_active = 1\nd_expert = {d_expert}\n");
        Transformer::new(ModelConfig::from_toml_value(toml::from_str(&text).unwrap()).unwrap(), 3).unwrap()
    }

    #[test]
    fn optimizer_clip_scales_to_the_clip_norm() {
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-7 && (g[1] - 0.8).abs() < 1e-7);
        let mut g = vec![0.3f32, 0.4];
        assert!((clip_grad_norm(&mut g, 1.0) - 0.5).abs() < 1e-7);
        assert_eq!(g, vec![0.3, 0.4]);
        let mut g = vec![30.0f32, 40.0];
        assert_eq!(clip_grad_norm(&mut g, 0.0), 50.0);
        assert_eq!(g, vec![30.0, 40.0]);
    }

    #[test]
    fn optimizer_decay_follows_entries() {
        for tied in [false, true] {
            let m = model(tied);
            let opt = AdamW::new(&m.table, cfg());
            for e in &m.table.entries {
                let want = e.shape.len() >= 2 && e.name != EMBEDDING;
                assert_eq!(opt.decays(e), want, "{}", e.name);
            }
            assert!(m.table.entries.iter().any(|e| e.name == "layers.0.ffn.experts.w_up" && opt.decays(e)));
            let opt = AdamW::new(&m.table, AdamWConfig { decay_embeddings: true, ..cfg() });
            assert!(opt.decays(m.table.get(EMBEDDING).unwrap()));
            assert!(!opt.decays(m.table.get("norm.weight").unwrap()));
        }
    }

    #[test]
    fn optimizer_zero_grad_step_only_decays() {
        let m = model(false);
        let mut p = m.params.clone();
        let mut g = vec![0.0f32; p.len()];
        let mut opt = AdamW::new(&m.table, cfg());
        let n = opt.step(&mut p, &mut g, 0.5).unwrap();
        assert_eq!(n, 0.0);
        for e in &m.table.entries {
            let f = if opt.decays(e) { 1.0 - 0.5 * 0.1 } else { 1.0 };
            for (a, b) in p[e.range()].iter().zip(&m.params[e.range()]) {
                assert!((a - b * f).abs() <= 1e-6 * b.abs().max(1.0), "{}", e.name);
            }
        }
        assert_eq!(opt.t, 1);
    }

    #[test]
    fn optimizer_first_step_moves_by_lr_times_sign() {
        // With bias correction, step 1 moves each weight by lr·g/(|g| + eps') ≈ lr·sign(g).
        let m = model(false);
        let mut p = m.params.clone();
        let mut g: Vec<f32> = (0..p.len()).map(|i| if i % 2 == 0 { 1e-3 } else { -1e-3 }).collect();
        let mut opt = AdamW::new(&m.table, AdamWConfig { weight_decay: 0.0, ..cfg() });
        opt.step(&mut p, &mut g, 0.01).unwrap();
        for (i, (a, b)) in p.iter().zip(&m.params).enumerate() {
            let want = if i % 2 == 0 { -0.01 } else { 0.01 };
            assert!((a - b - want).abs() < 1e-5, "{i}: {} vs {want}", a - b);
        }
    }

    #[test]
    fn optimizer_refuses_a_non_finite_gradient_naming_step_and_tensor() {
        let m = model(false);
        let mut opt = AdamW::new(&m.table, cfg());
        let mut p = m.params.clone();
        let mut g = vec![1e-3f32; p.len()];
        opt.step(&mut p, &mut g, 1e-2).unwrap();
        let e = m.table.get("layers.0.ffn.experts.w_up").unwrap().clone();
        for bad in [f32::NAN, f32::INFINITY] {
            let (p0, m0, v0) = (p.clone(), opt.m.clone(), opt.v.clone());
            let mut g = vec![1e-3f32; p.len()];
            g[e.offset + 5] = bad;
            let err = opt.step(&mut p, &mut g, 1e-2).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Diverged { step: 2, .. }), "{msg}");
            assert!(msg.contains("step 2") && msg.contains("layers.0.ffn.experts.w_up") && msg.contains("element 5"), "{msg}");
            assert_eq!((p == p0, opt.m == m0, opt.v == v0, opt.t), (true, true, true, 1), "{bad}: nothing moved");
        }
    }

    #[test]
    fn optimizer_state_roundtrip_and_errors() {
        let m = model(false);
        let mut p = m.params.clone();
        let mut opt = AdamW::new(&m.table, cfg());
        for k in 0..3 {
            let mut g: Vec<f32> = (0..p.len()).map(|i| ((i * 7 + k) % 13) as f32 * 0.01 - 0.06).collect();
            opt.step(&mut p, &mut g, 1e-2).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        opt.save(&path).unwrap();
        let back = AdamW::load(&m.table, cfg(), &path).unwrap();
        assert_eq!((back.t, &back.m, &back.v), (3, &opt.m, &opt.v));
        // a different model does not fit
        let other = model_with(false, 6);
        let e = AdamW::load(&other.table, cfg(), &path).unwrap_err().to_string();
        assert!(e.contains("optimizer.safetensors") && e.contains("m.layers.0.ffn.experts.w_gate"), "{e}");
        std::fs::write(&path, b"garbage").unwrap();
        let e = AdamW::load(&m.table, cfg(), &path).unwrap_err().to_string();
        assert!(e.contains("optimizer.safetensors") && e.contains("safetensors"), "{e}");
        let e = AdamW::load(&m.table, cfg(), &dir.path().join("nope.safetensors")).unwrap_err().to_string();
        assert!(e.contains("nope.safetensors"), "{e}");
    }
}
