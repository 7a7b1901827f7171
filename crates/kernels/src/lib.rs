//! Slice-level kernels for moe.
//!
//! Contract: tensors are plain row-major slices of a [`Real`] scalar (`f32` for speed, `f64` for
//! gradient checks), dimensions are passed explicitly, every `*_forward` has a matching
//! `*_backward` whose doc says whether it overwrites or accumulates, and each fast path has a
//! plainly correct twin (`naive`) that the tests compare it against. Nothing here depends on
//! another moe crate.

pub mod act;
pub mod adamw;
pub mod attention;
pub mod bandwidth;
pub mod cross_entropy;
pub mod embedding;
pub mod exp;
pub mod fsutil;
pub mod gemv;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod peak;
pub mod quant;
pub mod quant_k;
mod real;
pub mod rng;
pub mod rope;
pub mod tile;

pub use matmul::{matmul, MatmulShape, Par};
pub use real::Real;
