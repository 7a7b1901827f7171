//! Argument checks: mismatched lengths and out-of-range indices panic instead of silently
//! truncating (each of these was silently accepted before the checks were added).

use moe_kernels::adamw::{adamw_update, AdamWStep};
use moe_kernels::attention::{attention_backward, AttnShape};
use moe_kernels::cross_entropy::{cross_entropy_backward_inplace, cross_entropy_forward, softmax_rows};
use moe_kernels::embedding::{embedding_backward, embedding_forward};
use moe_kernels::norm::rmsnorm_backward;

#[test]
#[should_panic(expected = "losses length")]
fn cross_entropy_forward_short_losses_panics() {
    let mut losses = [0.0f32; 1];
    cross_entropy_forward(&mut losses, &[0.0; 6], &[0, 1, 0], 2);
}

#[test]
#[should_panic(expected = "target 3 >= n_vocab 3")]
fn cross_entropy_forward_target_out_of_range_panics() {
    let mut losses = [0.0f64; 2];
    cross_entropy_forward(&mut losses, &[0.0; 6], &[0, 3], 3);
}

#[test]
#[should_panic(expected = "target 2 >= n_vocab 2")]
fn cross_entropy_backward_target_out_of_range_panics() {
    let mut logits = [0.0f32; 4];
    cross_entropy_backward_inplace(&mut logits, &[2, 0], 2, 1.0);
}

#[test]
#[should_panic(expected = "not a multiple of row width")]
fn softmax_rows_ragged_length_panics() {
    let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    softmax_rows(&mut x, 2);
}

#[test]
#[should_panic(expected = "embedding_backward: d_out length")]
fn embedding_backward_short_d_out_panics() {
    let mut d_table = [0.0f32; 6];
    embedding_backward(&mut d_table, &[1.0; 2], &[0, 1, 2], 2);
}

#[test]
#[should_panic(expected = "token 3 >= n_vocab 3")]
fn embedding_backward_token_out_of_range_panics() {
    let mut d_table = [0.0f64; 6];
    embedding_backward(&mut d_table, &[1.0; 4], &[0, 3], 2);
}

#[test]
#[should_panic(expected = "token 5 >= n_vocab 2")]
fn embedding_forward_token_out_of_range_panics() {
    let mut out = [0.0f32; 2];
    embedding_forward(&mut out, &[0.0; 4], &[5], 2);
}

#[test]
#[should_panic(expected = "t is 1-based")]
fn adamw_update_t0_panics() {
    let (mut p, mut m, mut v) = ([1.0f32], [0.0f32], [0.0f32]);
    let s = AdamWStep { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0, t: 0 };
    adamw_update(&mut p, &[0.5], &mut m, &mut v, s);
}

#[test]
#[should_panic(expected = "rmsnorm_backward: d_out length")]
fn rmsnorm_backward_long_d_out_panics() {
    let (mut d_inp, mut d_w) = ([0.0f32; 4], [0.0f32; 2]);
    rmsnorm_backward(&mut d_inp, &mut d_w, &[0.0; 6], &[1.0; 4], &[1.0; 2], &[1.0; 2], 2, 2);
}

#[test]
#[should_panic(expected = "attention_backward: probs length")]
fn attention_backward_short_probs_panics() {
    let s = AttnShape { n_seq: 1, seq_len: 2, n_head: 2, n_head_kv: 1, d_head: 2 };
    let (q, kv) = (vec![0.0f32; 8], vec![0.0f32; 4]);
    let (mut d_q, mut d_k, mut d_v) = (vec![0.0f32; 8], vec![0.0f32; 4], vec![0.0f32; 4]);
    attention_backward(&mut d_q, &mut d_k, &mut d_v, &q, &q, &kv, &kv, &[0.0; 4], s);
}
