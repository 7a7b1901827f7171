//! Per-sequence key/value cache.
//!
//! One [`KvCache`] holds the post-RoPE keys and the values of every layer for **one** sequence.
//! Storage is head-major, `[n_head_kv, capacity, d_head]` per layer and per K/V, so that the keys
//! (or values) of one KV head for positions `0..len` are a single contiguous `[len, d_head]`
//! slice — attention reads them without a gather. (Logically this is the `[n_ctx, n_head_kv·d_head]`
//! cache of the spec, transposed per head.) The capacity grows by doubling up to `n_ctx`, or can be
//! allocated up front with [`KvCache::with_capacity`]. Appending past `n_ctx` is an
//! [`Error::ContextOverflow`], never a panic.

use crate::error::{Error, Result};
use moe_kernels::Real;
use moe_model::ModelConfig;

/// Keys and values of all layers for one sequence.
#[derive(Clone, Debug)]
pub struct KvCache<T> {
    n_layer: usize,
    n_head_kv: usize,
    d_head: usize,
    d_head_v: usize,
    n_ctx: usize,
    len: usize,
    cap: usize,
    k: Vec<Vec<T>>, // per layer [n_head_kv, cap, d_head]
    v: Vec<Vec<T>>, // per layer [n_head_kv, cap, d_head_v]
}

impl<T: Real> KvCache<T> {
    /// An empty cache for a model with this config; memory is allocated as tokens arrive.
    pub fn new(cfg: &ModelConfig) -> Self {
        Self::with_capacity(cfg, 0)
    }

    /// An empty cache with room for `capacity` tokens (clamped to `n_ctx`) allocated up front.
    pub fn with_capacity(cfg: &ModelConfig, capacity: usize) -> Self {
        let (n_head_kv, d_head, d_head_v) = cfg.kv_cache_shape();
        let mut c = KvCache {
            n_layer: cfg.n_layer,
            n_head_kv,
            d_head,
            d_head_v,
            n_ctx: cfg.n_ctx,
            len: 0,
            cap: 0,
            k: vec![Vec::new(); cfg.n_layer],
            v: vec![Vec::new(); cfg.n_layer],
        };
        c.grow_to(capacity.min(cfg.n_ctx));
        c
    }

    /// Tokens currently cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// No token cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The model's context length: the most tokens this cache can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens that can still be appended.
    pub fn remaining(&self) -> usize {
        self.n_ctx - self.len
    }

    /// Tokens that fit without reallocating.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Layers covered.
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// Forget all tokens (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keep only the first `len` tokens (no-op when `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by the K and V buffers.
    pub fn memory_bytes(&self) -> usize {
        self.n_layer * self.n_head_kv * self.cap * (self.d_head + self.d_head_v) * std::mem::size_of::<T>()
    }

    /// Keys of layer `layer`, KV head `g`, positions `0..len`: `[len, d_head]`.
    pub fn keys(&self, layer: usize, g: usize) -> &[T] {
        let base = g * self.cap * self.d_head;
        &self.k[layer][base..base + self.len * self.d_head]
    }

    /// Values of layer `layer`, KV head `g`, positions `0..len`: `[len, d_head_v]`. With latent
    /// attention (`ModelConfig::kv_cache_shape`) there is one "head" whose keys are the compressed
    /// rows `[len, kv_lora_rank + d_rope]` and no values.
    pub fn values(&self, layer: usize, g: usize) -> &[T] {
        let base = g * self.cap * self.d_head_v;
        &self.v[layer][base..base + self.len * self.d_head_v]
    }

    /// Keys of positions `0..n` (which may run past `len` into rows already written by
    /// [`KvCache::write`] during the current step).
    pub(crate) fn keys_upto(&self, layer: usize, g: usize, n: usize) -> &[T] {
        let base = g * self.cap * self.d_head;
        &self.k[layer][base..base + n * self.d_head]
    }

    pub(crate) fn values_upto(&self, layer: usize, g: usize, n: usize) -> &[T] {
        let base = g * self.cap * self.d_head_v;
        &self.v[layer][base..base + n * self.d_head_v]
    }

    /// Check that this cache was made for a model with `cfg`.
    pub fn check_model(&self, cfg: &ModelConfig) -> Result<()> {
        if self.n_layer != cfg.n_layer || (self.n_head_kv, self.d_head, self.d_head_v) != cfg.kv_cache_shape() || self.n_ctx != cfg.n_ctx {
            return Err(Error::BadInput(format!(
                "KV cache (n_layer {}, n_head_kv {}, d_head {}, n_ctx {}) does not match the model (n_layer {}, n_head_kv {}, d_head {}, n_ctx {})",
                self.n_layer,
                self.n_head_kv,
                self.d_head,
                self.n_ctx,
                cfg.n_layer,
                cfg.n_head_kv,
                cfg.d_head(),
                cfg.n_ctx
            )));
        }
        Ok(())
    }

    /// Make room for `n_new` more tokens; errors (leaving the cache unchanged) past `n_ctx`.
    pub fn reserve(&mut self, n_new: usize) -> Result<()> {
        let need = self.len + n_new;
        if need > self.n_ctx {
            return Err(Error::ContextOverflow { seq: 0, len: self.len, n_new, n_ctx: self.n_ctx });
        }
        if need > self.cap {
            self.grow_to(need.max(2 * self.cap).max(16).min(self.n_ctx));
        }
        Ok(())
    }

    fn grow_to(&mut self, new_cap: usize) {
        if new_cap <= self.cap {
            return;
        }
        let (nk, old) = (self.n_head_kv, self.cap);
        let (dk, dv) = (self.d_head, self.d_head_v);
        for (buf, dh) in self.k.iter_mut().map(|b| (b, dk)).chain(self.v.iter_mut().map(|b| (b, dv))) {
            let mut nb = vec![T::ZERO; nk * new_cap * dh];
            for g in 0..nk {
                let used = self.len * dh;
                nb[g * new_cap * dh..g * new_cap * dh + used].copy_from_slice(&buf[g * old * dh..g * old * dh + used]);
            }
            *buf = nb;
        }
        self.cap = new_cap;
    }

    /// Write the new rows `k_new [n_new, n_head_kv·d_head]`, `v_new [n_new, n_head_kv·d_head_v]` of layer `layer` at positions
    /// `len..len + n_new` (after [`KvCache::reserve`]). `len` itself moves on with [`KvCache::advance`]
    /// once every layer is written.
    pub(crate) fn write(&mut self, layer: usize, k_new: &[T], v_new: &[T]) {
        let (nk, cap) = (self.n_head_kv, self.cap);
        let n_new = k_new.len() / (nk * self.d_head);
        debug_assert!(self.len + n_new <= cap);
        for (dst, src, dh) in [(&mut self.k[layer], k_new, self.d_head), (&mut self.v[layer], v_new, self.d_head_v)] {
            let w = nk * dh;
            for r in 0..n_new {
                let pos = self.len + r;
                for g in 0..nk {
                    let d0 = (g * cap + pos) * dh;
                    dst[d0..d0 + dh].copy_from_slice(&src[r * w + g * dh..r * w + (g + 1) * dh]);
                }
            }
        }
    }

    pub(crate) fn advance(&mut self, n_new: usize) {
        self.len += n_new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        toml::from_str("n_vocab = 16\nn_ctx = 40\nn_layer = 2\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 16\n").unwrap()
    }

    #[test]
    fn kv_cache_grows_keeps_rows_and_refuses_past_n_ctx() {
        let c = cfg();
        let mut kv = KvCache::<f32>::new(&c);
        assert_eq!(kv.capacity(), 0);
        let w = c.n_head_kv * c.d_head();
        for step in 0..40usize {
            kv.reserve(1).unwrap();
            for l in 0..2 {
                let row: Vec<f32> = (0..w).map(|j| (step * 100 + l * 10 + j) as f32).collect();
                let vrow: Vec<f32> = row.iter().map(|x| -x).collect();
                kv.write(l, &row, &vrow);
            }
            kv.advance(1);
        }
        assert_eq!(kv.len(), 40);
        assert_eq!(kv.capacity(), 40);
        for step in 0..40 {
            assert_eq!(kv.keys(1, 0)[step * w + 3], (step * 100 + 13) as f32);
            assert_eq!(kv.values(0, 0)[step * w + 2], -((step * 100 + 2) as f32));
        }
        let e = kv.reserve(1).unwrap_err();
        assert!(matches!(e, Error::ContextOverflow { len: 40, n_new: 1, n_ctx: 40, .. }), "{e}");
        kv.truncate(10);
        assert_eq!(kv.remaining(), 30);
        kv.clear();
        assert!(kv.is_empty());
        assert!(KvCache::<f32>::with_capacity(&c, 1000).capacity() == 40);
    }
}
