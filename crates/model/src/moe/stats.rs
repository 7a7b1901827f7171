//! Routing statistics of one MoE layer, returned as values (never kept in globals).

use serde::{Deserialize, Serialize};

/// Balance statistics of one layer over one or more batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStats {
    /// index of the layer in the model
    pub layer: usize,
    /// (token, slot) assignments per expert, before dropping
    pub counts: Vec<u64>,
    /// assignments dropped by the capacity limit
    pub n_dropped: u64,
    /// all assignments (`n_tok · k`)
    pub n_assign: u64,
    /// Σ over tokens of the entropy (nats) of the normalised gate values
    pub entropy_sum: f64,
    /// tokens seen
    pub n_tok: u64,
}

impl RoutingStats {
    /// Fraction of assignments that went to each expert.
    pub fn load_fraction(&self) -> Vec<f64> {
        let tot = self.n_assign.max(1) as f64;
        self.counts.iter().map(|&c| c as f64 / tot).collect()
    }
    /// Largest expert load divided by the mean load (1 = perfectly balanced).
    pub fn max_over_mean(&self) -> f64 {
        let n = self.counts.len().max(1) as f64;
        let mean = self.n_assign as f64 / n;
        if mean == 0.0 {
            return 0.0;
        }
        self.counts.iter().copied().max().unwrap_or(0) as f64 / mean
    }
    /// Fraction of assignments dropped.
    pub fn drop_rate(&self) -> f64 {
        self.n_dropped as f64 / self.n_assign.max(1) as f64
    }
    /// Mean router entropy per token (nats).
    pub fn entropy(&self) -> f64 {
        self.entropy_sum / self.n_tok.max(1) as f64
    }
    /// Add another batch's statistics of the same layer.
    pub fn merge(&mut self, o: &RoutingStats) {
        if self.counts.is_empty() {
            self.layer = o.layer;
            self.counts = vec![0; o.counts.len()];
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n_dropped += o.n_dropped;
        self.n_assign += o.n_assign;
        self.entropy_sum += o.entropy_sum;
        self.n_tok += o.n_tok;
    }
}
