//! Every backward kernel against central finite differences, in f64, on tiny shapes.
//!
//! The scalar is a random linear functional `L = Σ r_i · out_i`, so the upstream gradient is `r`.

mod common;

use common::*;
use moe_kernels::act::{gelu_backward, gelu_forward, swiglu_backward, swiglu_forward};
use moe_kernels::attention::{attention_backward, attention_forward, AttnShape};
use moe_kernels::cross_entropy::{cross_entropy_backward_inplace, cross_entropy_forward, softmax_rows};
use moe_kernels::embedding::{embedding_backward, embedding_forward};
use moe_kernels::linear::{linear_backward, linear_forward};
use moe_kernels::norm::{rmsnorm_backward, rmsnorm_forward};
use moe_kernels::rng::Rng;
use moe_kernels::rope::RopeTable;
use moe_kernels::Par;

// ---------------------------------------------------------------- linear

struct LinearCase {
    n: usize,
    d_in: usize,
    d_out: usize,
    inp: Vec<f64>,
    w: Vec<f64>,
    r: Vec<f64>,
}

impl LinearCase {
    fn new(seed: u64) -> Self {
        let (n, d_in, d_out) = (3, 4, 5);
        let mut g = Rng::new(seed);
        LinearCase { n, d_in, d_out, inp: randn(&mut g, n * d_in), w: randn(&mut g, d_out * d_in), r: randn(&mut g, n * d_out) }
    }
    fn loss(&self, inp: &[f64], w: &[f64]) -> f64 {
        let mut out = vec![0.0; self.n * self.d_out];
        linear_forward(&mut out, inp, w, self.n, self.d_in, self.d_out, Par::Seq);
        dot(&self.r, &out)
    }
    fn numeric(&self) -> (Vec<f64>, Vec<f64>) {
        (numeric_grad(&self.inp, |x| self.loss(x, &self.w)), numeric_grad(&self.w, |w| self.loss(&self.inp, w)))
    }
}

#[test]
fn linear_backward_overwrite_mode_matches_fd_and_ignores_garbage() {
    let c = LinearCase::new(1);
    let (num_inp, num_w) = c.numeric();
    let mut d_inp = vec![f64::NAN; c.n * c.d_in]; // overwrite mode: previous contents must not leak
    let mut d_w = vec![0.0; c.d_out * c.d_in];
    linear_backward(Some(&mut d_inp), false, &mut d_w, &c.r, &c.inp, &c.w, c.n, c.d_in, c.d_out, Par::Seq);
    assert_grad_close("d_inp", &d_inp, &num_inp);
    assert_grad_close("d_w", &d_w, &num_w);
}

#[test]
fn linear_backward_accumulate_mode_adds_to_existing() {
    let c = LinearCase::new(2);
    let (num_inp, num_w) = c.numeric();
    let mut g = Rng::new(20);
    let base_inp = randn(&mut g, c.n * c.d_in);
    let base_w = randn(&mut g, c.d_out * c.d_in);
    let (mut d_inp, mut d_w) = (base_inp.clone(), base_w.clone());
    linear_backward(Some(&mut d_inp), true, &mut d_w, &c.r, &c.inp, &c.w, c.n, c.d_in, c.d_out, Par::Pool);
    assert_grad_close("d_inp - base", &minus(&d_inp, &base_inp), &num_inp);
    assert_grad_close("d_w - base", &minus(&d_w, &base_w), &num_w);
}

#[test]
fn linear_backward_without_d_inp_still_accumulates_d_w() {
    let c = LinearCase::new(3);
    let (_, num_w) = c.numeric();
    let base_w = randn(&mut Rng::new(30), c.d_out * c.d_in);
    let mut d_w = base_w.clone();
    linear_backward(None, false, &mut d_w, &c.r, &c.inp, &c.w, c.n, c.d_in, c.d_out, Par::Seq);
    assert_grad_close("d_w - base", &minus(&d_w, &base_w), &num_w);
}

// ---------------------------------------------------------------- rmsnorm

#[test]
fn rmsnorm_backward_accumulates_fd_gradient() {
    let (n, d, eps) = (3, 5, 1e-5);
    let mut g = Rng::new(4);
    let inp = randn(&mut g, n * d);
    let weight: Vec<f64> = randn(&mut g, d).iter().map(|v| 1.0 + 0.5 * v).collect();
    let r = randn(&mut g, n * d);
    let loss = |x: &[f64], w: &[f64]| {
        let (mut out, mut rstd) = (vec![0.0; n * d], vec![0.0; n]);
        rmsnorm_forward(&mut out, &mut rstd, x, w, n, d, eps);
        dot(&r, &out)
    };
    let num_inp = numeric_grad(&inp, |x| loss(x, &weight));
    let num_w = numeric_grad(&weight, |w| loss(&inp, w));

    let (mut out, mut rstd) = (vec![0.0; n * d], vec![0.0; n]);
    rmsnorm_forward(&mut out, &mut rstd, &inp, &weight, n, d, eps);
    let base_inp = randn(&mut g, n * d);
    let base_w = randn(&mut g, d);
    let (mut d_inp, mut d_w) = (base_inp.clone(), base_w.clone());
    rmsnorm_backward(&mut d_inp, &mut d_w, &r, &inp, &weight, &rstd, n, d);
    assert_grad_close("d_inp - base", &minus(&d_inp, &base_inp), &num_inp);
    assert_grad_close("d_weight - base", &minus(&d_w, &base_w), &num_w);
}

#[test]
fn rmsnorm_backward_many_rows_parallel_chunks_match_fd() {
    // 70 rows crosses the forward's parallel threshold and gives the backward several row chunks.
    let (n, d, eps) = (70, 3, 1e-6);
    let mut g = Rng::new(5);
    let inp = randn(&mut g, n * d);
    let weight = randn(&mut g, d);
    let r = randn(&mut g, n * d);
    let loss = |x: &[f64], w: &[f64]| {
        let (mut out, mut rstd) = (vec![0.0; n * d], vec![0.0; n]);
        rmsnorm_forward(&mut out, &mut rstd, x, w, n, d, eps);
        dot(&r, &out)
    };
    let num_inp = numeric_grad(&inp, |x| loss(x, &weight));
    let num_w = numeric_grad(&weight, |w| loss(&inp, w));
    let (mut out, mut rstd) = (vec![0.0; n * d], vec![0.0; n]);
    rmsnorm_forward(&mut out, &mut rstd, &inp, &weight, n, d, eps);
    let (mut d_inp, mut d_w) = (vec![0.0; n * d], vec![0.0; d]);
    rmsnorm_backward(&mut d_inp, &mut d_w, &r, &inp, &weight, &rstd, n, d);
    assert_grad_close("d_inp", &d_inp, &num_inp);
    assert_grad_close("d_weight", &d_w, &num_w);
}

// ---------------------------------------------------------------- rope

#[test]
fn rope_inverse_apply_is_fd_gradient_of_forward() {
    let (n_seq, seq_len, n_head, d_head, pos0) = (2, 3, 2, 6, 4);
    let table = RopeTable::<f64>::new(d_head, 10_000.0, pos0 + seq_len);
    let mut g = Rng::new(6);
    let x = randn(&mut g, n_seq * seq_len * n_head * d_head);
    let r = randn(&mut g, x.len());
    let num = numeric_grad(&x, |x| {
        let mut y = x.to_vec();
        table.apply(&mut y, n_seq, seq_len, n_head, pos0, false);
        dot(&r, &y)
    });
    let mut grad = r.clone();
    table.apply(&mut grad, n_seq, seq_len, n_head, pos0, true);
    assert_grad_close("d_x", &grad, &num);
}

// ---------------------------------------------------------------- activations

#[test]
fn swiglu_backward_overwrites_with_fd_gradient() {
    let n = 11;
    let mut g = Rng::new(7);
    let gate: Vec<f64> = randn(&mut g, n).iter().map(|v| 3.0 * v).collect();
    let up = randn(&mut g, n);
    let r = randn(&mut g, n);
    let loss = |gate: &[f64], up: &[f64]| {
        let mut out = vec![0.0; n];
        swiglu_forward(&mut out, gate, up);
        dot(&r, &out)
    };
    let num_gate = numeric_grad(&gate, |x| loss(x, &up));
    let num_up = numeric_grad(&up, |x| loss(&gate, x));
    let (mut d_gate, mut d_up) = (vec![f64::NAN; n], vec![f64::NAN; n]);
    swiglu_backward(&mut d_gate, &mut d_up, &r, &gate, &up);
    assert_grad_close("d_gate", &d_gate, &num_gate);
    assert_grad_close("d_up", &d_up, &num_up);
}

#[test]
fn gelu_backward_overwrites_with_fd_gradient() {
    let n = 13;
    let mut g = Rng::new(8);
    let inp: Vec<f64> = randn(&mut g, n).iter().map(|v| 2.5 * v).collect();
    let r = randn(&mut g, n);
    let num = numeric_grad(&inp, |x| {
        let mut out = vec![0.0; n];
        gelu_forward(&mut out, x);
        dot(&r, &out)
    });
    let mut d_inp = vec![f64::NAN; n];
    gelu_backward(&mut d_inp, &r, &inp);
    assert_grad_close("d_inp", &d_inp, &num);
}

// ---------------------------------------------------------------- embedding

#[test]
fn embedding_backward_repeated_tokens_accumulates_fd_gradient() {
    let (n_vocab, d) = (5, 3);
    let tokens = [2u32, 0, 2, 4, 2, 0];
    let mut g = Rng::new(9);
    let table = randn(&mut g, n_vocab * d);
    let r = randn(&mut g, tokens.len() * d);
    let num = numeric_grad(&table, |t| {
        let mut out = vec![0.0; tokens.len() * d];
        embedding_forward(&mut out, t, &tokens, d);
        dot(&r, &out)
    });
    // Row 2 collects three upstream rows, row 1 and row 3 none.
    assert!(num[d..2 * d].iter().chain(&num[3 * d..4 * d]).all(|&v| v.abs() < 1e-8));
    let base = randn(&mut g, n_vocab * d);
    let mut d_table = base.clone();
    embedding_backward(&mut d_table, &r, &tokens, d);
    assert_grad_close("d_table - base", &minus(&d_table, &base), &num);
}

// ---------------------------------------------------------------- cross-entropy

#[test]
fn cross_entropy_backward_is_fd_gradient_of_scaled_loss_sum() {
    let (n, n_vocab, scale) = (4, 6, 0.37);
    let targets = [1u32, 5, 1, 0];
    let mut g = Rng::new(10);
    let logits: Vec<f64> = randn(&mut g, n * n_vocab).iter().map(|v| 2.0 * v).collect();
    let num = numeric_grad(&logits, |l| {
        let mut losses = vec![0.0; n];
        cross_entropy_forward(&mut losses, l, &targets, n_vocab);
        scale * losses.iter().sum::<f64>()
    });
    let mut grad = logits.clone();
    cross_entropy_backward_inplace(&mut grad, &targets, n_vocab, scale);
    assert_grad_close("d_logits", &grad, &num);
}

// ---------------------------------------------------------------- attention

fn check_attention_grad(s: AttnShape, seed: u64) {
    let q_len = s.n_seq * s.seq_len * s.n_head * s.d_head;
    let kv_len = s.n_seq * s.seq_len * s.n_head_kv * s.d_head;
    let mut g = Rng::new(seed);
    let q = randn(&mut g, q_len);
    let k = randn(&mut g, kv_len);
    let v = randn(&mut g, kv_len);
    let r = randn(&mut g, q_len);
    let mut probs = vec![0.0; s.n_seq * s.n_head * s.seq_len * s.seq_len];
    let mut loss = |q: &[f64], k: &[f64], v: &[f64]| {
        let mut out = vec![0.0; q_len];
        attention_forward(&mut out, &mut probs, q, k, v, s);
        dot(&r, &out)
    };
    let num_q = numeric_grad(&q, |x| loss(x, &k, &v));
    let num_k = numeric_grad(&k, |x| loss(&q, x, &v));
    let num_v = numeric_grad(&v, |x| loss(&q, &k, x));

    let mut out = vec![0.0; q_len];
    attention_forward(&mut out, &mut probs, &q, &k, &v, s);
    let (mut d_q, mut d_k, mut d_v) = (vec![f64::NAN; q_len], vec![f64::NAN; kv_len], vec![f64::NAN; kv_len]);
    attention_backward(&mut d_q, &mut d_k, &mut d_v, &r, &q, &k, &v, &probs, s);
    assert_grad_close("d_q", &d_q, &num_q);
    assert_grad_close("d_k", &d_k, &num_k);
    assert_grad_close("d_v", &d_v, &num_v);
}

#[test]
fn attention_backward_gqa_4_heads_2_kv_matches_fd() {
    check_attention_grad(AttnShape { n_seq: 2, seq_len: 3, n_head: 4, n_head_kv: 2, d_head: 3 }, 11);
}

#[test]
fn attention_backward_single_kv_head_matches_fd() {
    check_attention_grad(AttnShape { n_seq: 1, seq_len: 4, n_head: 4, n_head_kv: 1, d_head: 2 }, 12);
}

#[test]
fn attention_backward_mha_n_head_kv_equals_n_head_matches_fd() {
    check_attention_grad(AttnShape { n_seq: 2, seq_len: 3, n_head: 4, n_head_kv: 4, d_head: 2 }, 13);
}

#[test]
fn attention_backward_seq_len_1_matches_fd() {
    check_attention_grad(AttnShape { n_seq: 2, seq_len: 1, n_head: 4, n_head_kv: 2, d_head: 3 }, 14);
}

#[test]
fn attention_backward_seq_len_5_d_head_4_matches_fd() {
    check_attention_grad(AttnShape { n_seq: 1, seq_len: 5, n_head: 4, n_head_kv: 2, d_head: 4 }, 15);
}

// ---------------------------------------------------------------- softmax (no backward kernel)

#[test]
fn softmax_rows_rows_sum_to_one_and_are_positive() {
    let d = 7;
    let mut x: Vec<f64> = randn(&mut Rng::new(16), 5 * d).iter().map(|v| 5.0 * v).collect();
    x[3] = 800.0; // would overflow exp() without max-subtraction
    softmax_rows(&mut x, d);
    for row in x.chunks(d) {
        assert!(row.iter().all(|&p| p.is_finite() && p >= 0.0), "{row:?}");
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{row:?}");
    }
    assert!((x[3] - 1.0).abs() < 1e-12);
}

#[test]
fn softmax_rows_adding_row_constant_leaves_output_unchanged() {
    let d = 6;
    let x = randn(&mut Rng::new(17), 4 * d);
    let mut a = x.clone();
    let mut b: Vec<f64> = x.iter().enumerate().map(|(i, v)| v + [3.5, -120.0, 0.25, 700.0][i / d]).collect();
    softmax_rows(&mut a, d);
    softmax_rows(&mut b, d);
    assert_close("shifted", &b, &a, 1e-12, 1e-9);
    // And it is really the softmax: ratio of outputs is exp of the input difference.
    for (row, xr) in a.chunks(d).zip(x.chunks(d)) {
        assert!((row[1] / row[0] - (xr[1] - xr[0]).exp()).abs() < 1e-12 * (xr[1] - xr[0]).exp().max(1.0));
    }
}
