//! End-to-end training runs on tiny models: learning, overfitting, determinism, exact resume,
//! evaluation of run directories and clear errors on bad inputs.

use moe_data::{synthetic, Batch, Tokenizer};
use moe_model::Transformer;
use moe_train::run_dir::MODEL_FILE;
use moe_train::{
    evaluate_run, load_experiment, parse_experiment, read_metrics, train, train_step, train_until, AdamW, AdamWConfig, ExperimentConfig,
    RunDir, TrainOptions,
};
use serde_json::Value;
use std::path::Path;

const DENSE: &str = r#"
[model]
n_vocab = 256
n_ctx = 16
n_layer = 2
d_model = 32
n_head = 4
n_head_kv = 2
d_ff = 64

[train]
steps = 40
batch_size = 4
seq_len = 16
lr = 3e-3
warmup_steps = 5
eval_every = 20
eval_batches = 4
checkpoint_every = 0

[data]
synthetic_bytes = 200000
"#;

const MOE: &str = r#"
[model.moe]
n_expert = 4
n_expert_active = 2
d_expert = 16
aux_loss_coef = 0.01
z_loss_coef = 0.001
bias_update_rate = 0.01
"#;

fn cfg(text: &str, ov: &[&str]) -> ExperimentConfig {
    let ov: Vec<String> = ov.iter().map(|s| s.to_string()).collect();
    parse_experiment(text, Path::new("test.toml"), &ov).unwrap().0
}

fn moe(ov: &[&str]) -> ExperimentConfig {
    cfg(&format!("{DENSE}{MOE}"), ov)
}

fn records(out: &Path, kind: &str) -> Vec<Value> {
    read_metrics(&RunDir::new(out).metrics_path()).unwrap().into_iter().filter(|r| r["type"] == kind).collect()
}

fn losses(out: &Path) -> Vec<f64> {
    records(out, "train").iter().map(|r| r["loss"].as_f64().unwrap()).collect()
}

fn params(out: &Path, c: &ExperimentConfig) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dir = RunDir::new(out).latest().unwrap().unwrap();
    let m: Transformer<f32> = Transformer::load(c.model.clone(), &dir.join(MODEL_FILE)).unwrap();
    (m.params, m.selection_bias)
}

#[test]
fn train_loss_falls_on_synthetic_corpus_and_run_dir_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let c = cfg(DENSE, &[]);
    let s = train(&c, &out, &TrainOptions::default()).unwrap();
    let l = losses(&out);
    assert_eq!(l.len(), 40);
    let tail = l[35..].iter().sum::<f64>() / 5.0;
    eprintln!("train loss {:.4} → {tail:.4} (mean of last 5)", l[0]);
    assert!(tail < l[0] - 0.3, "loss did not fall: first {} last-5 mean {tail}; {l:?}", l[0]);
    assert_eq!(s.steps, 40);
    assert_eq!(s.tokens, 40 * 4 * 16);
    assert_eq!(s.final_train_loss, l[39]);
    let evals = records(&out, "eval");
    assert_eq!(evals.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![20, 40]);
    let last = &evals[1];
    assert_eq!(s.final_val_loss, last["val_loss"].as_f64());
    assert!((last["val_ppl"].as_f64().unwrap() - last["val_ce"].as_f64().unwrap().exp()).abs() < 1e-9);
    let fpt = moe_model::accounting::account(&c.model, 16).flops_train;
    assert!((last["flops"].as_f64().unwrap() - 2560.0 * fpt).abs() < 1e-6 * 2560.0 * fpt);
    let t0 = &records(&out, "train")[0];
    for k in ["step", "loss", "ce", "aux", "z", "lr", "grad_norm", "tokens", "flops", "tokens_per_s", "elapsed_s", "moe"] {
        assert!(!t0[k].is_null(), "train record lacks {k}: {t0}");
    }
    assert!((t0["lr"].as_f64().unwrap() - 3e-3 / 5.0).abs() < 1e-12);
    // run directory layout
    let rd = RunDir::new(&out);
    assert!(rd.config_path().is_file() && !rd.tokenizer_path().exists());
    let (back, _) = load_experiment(&rd.config_path(), &[]).unwrap();
    assert_eq!(back, c);
    let latest = rd.latest().unwrap().unwrap();
    assert!(latest.ends_with("checkpoints/step_000040"));
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(latest.join(f).is_file(), "{f}");
    }
    // evaluating the run with the training eval settings reproduces the logged number
    let r = evaluate_run(&out, None, Some(4)).unwrap();
    assert_eq!(r.step, 40);
    assert_eq!(Some(r.val_loss), s.final_val_loss);
    assert_eq!(r.n_tokens, 4 * 4 * 16);
    // on other data
    let text = tmp.path().join("other.txt");
    std::fs::write(&text, synthetic::generate(9, 3000).iter().map(|d| d.text.clone()).collect::<Vec<_>>().join("\n")).unwrap();
    let r2 = evaluate_run(&out, Some(&text), None).unwrap();
    assert!(r2.val_loss.is_finite() && r2.n_tokens > 0 && (r2.val_ppl - r2.val_loss.exp()).abs() < 1e-9);
    // a second fresh run into the same directory is refused
    let e = train(&c, &out, &TrainOptions::default()).unwrap_err().to_string();
    assert!(e.contains("--resume") && e.contains("--out") && e.contains("run"), "{e}");
    // resuming a finished run does nothing and reports the same numbers
    let s2 = train(&c, &out, &TrainOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!((s2.steps, s2.final_train_loss, s2.final_val_loss), (40, s.final_train_loss, s.final_val_loss));
    assert_eq!(losses(&out).len(), 40);
}

#[test]
fn train_tiny_model_overfits_one_batch() {
    let c = cfg(DENSE, &[]);
    let docs = synthetic::generate(3, 2000);
    let toks = Tokenizer::byte().encode(&docs[0].text).unwrap();
    let offsets: Vec<usize> = (0..4).map(|i| i * 17).collect();
    let batch = Batch::from_offsets(&toks, &offsets, 16);
    let mut model: Transformer<f32> = Transformer::new(c.model.clone(), 5).unwrap();
    let mut opt = AdamW::new(
        &model.table,
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, grad_clip: 1.0, decay_embeddings: false },
    );
    let mut grads = vec![0.0f32; model.params.len()];
    let mut l = Vec::new();
    for _ in 0..100 {
        l.push(train_step(&mut model, &mut opt, &mut grads, std::slice::from_ref(&batch), 3e-3).unwrap().loss);
    }
    eprintln!("overfit loss {:.4} → {:.4}", l[0], l[99]);
    assert!(l[99] < 0.5 * l[0], "did not overfit: {} → {}", l[0], l[99]);
}

#[test]
fn train_resume_is_bit_exact_and_runs_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    // MoE with aux-loss-free bias, gradient accumulation, a warmup+cosine schedule
    let c = moe(&[
        "train.steps=6",
        "train.grad_accum=2",
        "train.warmup_steps=2",
        "train.eval_every=2",
        "train.eval_batches=2",
        "train.checkpoint_every=0",
    ]);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let d = tmp.path().join("d");
    train(&c, &a, &TrainOptions::default()).unwrap();
    // interrupted after 3 steps, then resumed
    let s1 = train_until(&c, &b, &TrainOptions::default(), Some(3)).unwrap();
    assert_eq!(s1.steps, 3);
    assert_eq!(s1.final_val_loss.map(|_| ()), Some(()));
    assert!(RunDir::new(&b).latest().unwrap().unwrap().ends_with("step_000003"));
    let s2 = train(&c, &b, &TrainOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!(s2.steps, 6);
    assert_eq!(s2.tokens, 6 * 2 * 4 * 16);
    // a second fresh run
    train(&c, &d, &TrainOptions::default()).unwrap();

    let la = losses(&a);
    assert_eq!(la.len(), 6);
    assert_eq!(losses(&b), la, "resumed run differs");
    assert_eq!(losses(&d), la, "rerun differs");
    let va: Vec<f64> = records(&a, "eval").iter().map(|r| r["val_loss"].as_f64().unwrap()).collect();
    let vb: Vec<f64> = records(&b, "eval").iter().map(|r| r["val_loss"].as_f64().unwrap()).collect();
    assert_eq!(va.len(), 3);
    assert_eq!(va, vb);
    let (pa, ba) = params(&a, &c);
    let (pb, bb) = params(&b, &c);
    assert!(pa == pb && ba == bb, "final weights or selection biases differ after resume");
    assert!(ba.iter().any(|b| b.iter().any(|&x| x != 0.0)), "selection bias never moved: {ba:?}");
    // MoE stats are logged per layer
    let r = &records(&a, "train")[0];
    let m = r["moe"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    let load: f64 = m[0]["load"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((load - 1.0).abs() < 1e-9 && m[0]["max_over_mean"].as_f64().unwrap() >= 1.0);
    assert!(r["aux"].as_f64().unwrap() > 0.0);
}

#[test]
fn train_resume_with_corrupt_checkpoint_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let c = moe(&["train.steps=4", "train.eval_every=0", "train.eval_batches=1"]);
    let out = tmp.path().join("run");
    train_until(&c, &out, &TrainOptions::default(), Some(2)).unwrap();
    let dir = RunDir::new(&out).latest().unwrap().unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        let p = dir.join(f);
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, &good[..good.len() / 2]).unwrap();
        let e = train(&c, &out, &TrainOptions { resume: true, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{f}: {e}");
        std::fs::write(&p, good).unwrap();
    }
    std::fs::write(dir.join("model.safetensors"), b"not a checkpoint").unwrap();
    let e = evaluate_run(&out, None, None).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    // a checkpoint of another architecture does not fit
    let other = moe(&["train.steps=4", "model.moe.d_expert=8"]);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    Transformer::<f32>::new(cfg(DENSE, &[]).model, 1).unwrap().save(&dir.join("model.safetensors")).unwrap();
    let e = train(&other, &out, &TrainOptions { resume: true, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("tensor"), "{e}");
}

#[test]
fn train_bad_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // config errors name the file and the field
    let p = tmp.path().join("x.toml");
    std::fs::write(&p, DENSE).unwrap();
    let e = load_experiment(&p, &["train.seq_len=32".into()]).unwrap_err().to_string();
    assert_eq!(e, format!("{}: train.seq_len: 32 exceeds model.n_ctx 16", p.display()));
    let e = load_experiment(&p, &["train.sequence_len=8".into()]).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: train.sequence_len: unknown field", p.display())), "{e}");
    // an empty corpus directory
    let empty = tmp.path().join("empty_corpus");
    std::fs::create_dir(&empty).unwrap();
    let c = cfg(DENSE, &[&format!("data.source={}", empty.display())]);
    let e = train(&c, &tmp.path().join("r1"), &TrainOptions::default()).unwrap_err().to_string();
    assert!(e.contains("empty_corpus") && e.contains("no documents"), "{e}");
    // a corpus path that does not exist
    let c = cfg(DENSE, &["data.source=/nonexistent/corpus.jsonl"]);
    let e = train(&c, &tmp.path().join("r2"), &TrainOptions::default()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/corpus.jsonl"), "{e}");
    // a corpus too small for one window
    let small = tmp.path().join("small.txt");
    std::fs::write(&small, "tiny\n").unwrap();
    let c = cfg(DENSE, &[&format!("data.source={}", small.display())]);
    assert!(train(&c, &tmp.path().join("r3"), &TrainOptions::default()).is_err());
    // evaluating a missing run
    let e = evaluate_run(&tmp.path().join("no_run"), None, None).unwrap_err().to_string();
    assert!(e.contains("no_run"), "{e}");
}

#[test]
fn train_with_bpe_tokenizer_copies_it_and_checks_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.txt");
    std::fs::write(&corpus, synthetic::generate(4, 40_000).iter().map(|d| d.text.clone()).collect::<Vec<_>>().join("\n")).unwrap();
    let tok_path = tmp.path().join("tokenizer.json");
    let tok = moe_data::train_bpe(std::slice::from_ref(&corpus), 300, &tok_path, moe_data::TextEncoding::Auto).unwrap();
    let n = tok.n_vocab();
    let ov = [
        format!("data.source={}", corpus.display()),
        format!("data.tokenizer={}", tok_path.display()),
        "train.steps=2".into(),
        "train.eval_batches=1".into(),
    ];
    let ov: Vec<&str> = ov.iter().map(String::as_str).collect();
    // too small an embedding for the tokenizer
    let out = tmp.path().join("small_vocab");
    let e = train(&cfg(DENSE, &ov), &out, &TrainOptions::default()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("model.n_vocab is 256") && e.contains(&n.to_string()), "{e}");
    // a fitting model trains, keeps a copy of the tokenizer and evaluates with it
    let mut ov2 = ov.clone();
    let nv = format!("model.n_vocab={n}");
    ov2.push(&nv);
    let out = tmp.path().join("bpe_run");
    train(&cfg(DENSE, &ov2), &out, &TrainOptions::default()).unwrap();
    assert!(RunDir::new(&out).tokenizer_path().is_file());
    let r = evaluate_run(&out, None, Some(2)).unwrap();
    assert!(r.val_loss.is_finite() && r.step == 2);
}

#[test]
fn final_evaluation_uses_final_eval_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let c = cfg(DENSE, &["train.steps=4", "train.eval_every=2", "train.eval_batches=1", "train.final_eval_batches=3"]);
    train(&c, &out, &TrainOptions::default()).unwrap();
    let evals = records(&out, "eval");
    let toks: Vec<u64> = evals.iter().map(|r| r["val_tokens"].as_u64().unwrap()).collect();
    // batch 4 × seq 16 tokens per validation batch: the curve stays on 1 batch, the final
    // evaluation adds 3
    assert_eq!(toks, vec![64, 64], "{evals:?}");
    assert!(evals[0].get("final_val_loss").is_none());
    assert_eq!(evals[1]["final_val_tokens"].as_u64(), Some(192));
    let (curve, fin) = (evals[1]["val_loss"].as_f64().unwrap(), evals[1]["final_val_loss"].as_f64().unwrap());
    assert!(fin.is_finite() && fin != curve, "{curve} {fin}");
}
