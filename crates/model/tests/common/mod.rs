//! Helpers shared by the model's integration tests (not a test target itself).
#![allow(dead_code)]

pub mod fd;

use moe_kernels::Real;
use moe_model::params::Init;
use moe_model::{ModelConfig, Transformer};

/// SplitMix64: a tiny deterministic generator so tests do not depend on the kernels' RNG API.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// uniform in [0, 1)
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// uniform in [-1, 1)
    pub fn sym(&mut self) -> f64 {
        2.0 * self.uniform() - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn tokens(&mut self, n: usize, n_vocab: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(n_vocab) as u32).collect()
    }
}

/// Parse the contents of a `[model]` table and validate it.
pub fn cfg(text: &str) -> ModelConfig {
    let v: toml::Value = toml::from_str(text).expect("test config parses as TOML");
    ModelConfig::from_toml_value(v).expect("test config is valid")
}

/// Scale every matrix by `scale` and perturb every norm weight to `1 ± 0.25` so every path of the
/// model carries a gradient of a useful size.
pub fn perturb<T: Real>(m: &mut Transformer<T>, scale: f64, seed: u64) {
    let mut rng = Rng(seed);
    for e in m.table.entries.clone() {
        for p in &mut m.params[e.range()] {
            *p = match e.init {
                Init::Ones => T::from_f64(1.0 + 0.25 * rng.sym()),
                Init::Normal(_) => T::from_f64(p.to_f64() * scale),
                Init::Zeros => T::from_f64(0.3 * rng.sym()),
            };
        }
    }
}

/// Per-token cross-entropy of `logits [n, n_vocab]` in f64.
pub fn ce_per_token<T: Real>(logits: &[T], targets: &[u32], n_vocab: usize) -> Vec<f64> {
    logits
        .chunks(n_vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let m = row.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v.to_f64() - m).exp()).sum();
            m + s.ln() - row[t as usize].to_f64()
        })
        .collect()
}

fn f64s<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// `max |v|`; a non-finite value fails (`moe_testutil::max_abs`).
#[track_caller]
pub fn max_abs<T: Real>(v: &[T]) -> f64 {
    moe_testutil::max_abs("max_abs", &f64s(v))
}

/// `|a_i − b_i| ≤ atol + rtol·|b_i|` for every `i`; a non-finite value fails (`moe_testutil::assert_close_elem`).
#[track_caller]
pub fn assert_close<A: Real, B: Real>(what: &str, a: &[A], b: &[B], atol: f64, rtol: f64) {
    moe_testutil::assert_close_elem(what, &f64s(a), &f64s(b), atol, rtol);
}
