//! Data- and expert-parallel training equals one process: ranks are threads here (the MPI
//! backend runs the same code; `crates/cli/tests/mpi.rs` launches it with `mpirun`).
//!
//! - 20 AdamW steps at (world, expert-parallel) = (2, 2), (2, 1), (4, 2), (4, 4): losses and
//!   parameters within 1e-5 relative of one process, and the replicas of every tensor bitwise
//!   identical across the ranks that hold it;
//! - full runs through `train`: loss curves and evaluations as in one process, checkpoints
//!   holding the whole model;
//! - resharding: a run saved at EP=2 resumes at EP=1 and EP=4 with the next losses of the
//!   uninterrupted run.

use moe_data::{Batch, Batcher};
use moe_dist::{threads, Groups};
use moe_model::Transformer;
use moe_train::run_dir::MODEL_FILE;
use moe_train::{
    parse_experiment, read_metrics, train, train_step, train_until, AdamW, AdamWConfig, ExperimentConfig, RunDir, TrainOptions,
};
use std::path::Path;

const EXP: &str = r#"
[model]
n_vocab = 256
n_ctx = 16
n_layer = 2
d_model = 16
n_head = 2
n_head_kv = 1
d_ff = 32

[model.moe]
n_expert = 4
n_expert_active = 2
d_expert = 8
aux_loss_coef = 0.01
z_loss_coef = 0.001
bias_update_rate = 0.01

[train]
steps = 20
batch_size = 4
seq_len = 16
lr = 3e-3
warmup_steps = 3
eval_every = 10
eval_batches = 3
checkpoint_every = 0

[data]
synthetic_bytes = 60000
"#;

fn cfg(ov: &[&str]) -> ExperimentConfig {
    let ov: Vec<String> = ov.iter().map(|s| s.to_string()).collect();
    parse_experiment(EXP, Path::new("test.toml"), &ov).unwrap().0
}

/// The whole model within `rtol` of `b` relative to its norm, `‖a − b‖ ≤ rtol · ‖b‖`, and each
/// tensor within `10 · rtol` of its own norm. Summation orders differ between layouts, so the
/// gradients agree to about 1e-7 of their norm; AdamW's normalised step `m / (√v + ε)` turns that
/// noise on gradient elements near ε into larger relative changes of a tensor's small-gradient
/// entries (measured: about 2e-5 of the norm of a 512-element expert stack after one step).
fn close(what: &str, c: &ExperimentConfig, a: &[f32], b: &[f32], rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let dist = |x: &[f32], y: &[f32]| {
        let d = x.iter().zip(y).map(|(&p, &q)| ((p - q) as f64).powi(2)).sum::<f64>().sqrt();
        let n = y.iter().map(|&q| (q as f64).powi(2)).sum::<f64>().sqrt();
        assert!(x.iter().all(|v| v.is_finite()), "{what}: not finite");
        d / n
    };
    let all = dist(a, b);
    assert!(all <= rtol, "{what}: the parameters differ by {all:e} of their norm");
    let table = Transformer::<f32>::zeros(c.model.clone()).unwrap().table;
    for e in &table.entries {
        let r = dist(&a[e.range()], &b[e.range()]);
        assert!(r <= 10.0 * rtol, "{what}: `{}` differs by {r:e} of its norm", e.name);
    }
}

/// The batches of `steps` steps of the experiment (every rank draws the same global batches).
fn batches(c: &ExperimentConfig, steps: usize) -> Vec<Batch> {
    let ids: Vec<u32> = (0..20000u32).map(|i| (i * 31 + i / 7 + (i * i) % 13) % 256).collect();
    let mut b = Batcher::new(ids.len(), c.train.batch_size, c.train.seq_len, c.train.seed).unwrap();
    (0..steps).map(|_| b.next_batch(&ids)).collect()
}

/// `steps` AdamW steps; returns (losses, the whole model's parameters, this rank's parameters).
fn run_steps(c: &ExperimentConfig, data: &[Batch], dist: Option<Groups>) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    let mut m = Transformer::<f32>::new(c.model.clone(), c.train.seed).unwrap();
    if let Some(g) = dist {
        m = m.shard(g).unwrap();
    }
    let mut opt = AdamW::new(&m.table, AdamWConfig::from_train(&c.train));
    let mut grads = vec![0.0; m.params.len()];
    let losses = data.iter().map(|b| train_step(&mut m, &mut opt, &mut grads, std::slice::from_ref(b), 3e-3).unwrap().loss).collect();
    (losses, m.gather_full(&m.params), m.params.clone())
}

#[test]
fn parallel_steps_equal_one_process_and_replicas_stay_identical() {
    let c = cfg(&[]);
    let data = batches(&c, 20);
    let (l1, p1, _) = run_steps(&c, &data, None);
    for (world, ep) in [(2, 2), (2, 1), (4, 2), (4, 4)] {
        let ranks = threads::spawn(world, |w| run_steps(&c, &data, Some(Groups::new(w, ep).unwrap())));
        let what = format!("world {world}, expert-parallel {ep}");
        for (r, (l, full, mine)) in ranks.iter().enumerate() {
            for (s, (&a, &b)) in l.iter().zip(&l1).enumerate() {
                assert!((a - b).abs() <= 1e-5 * b.abs(), "{what}, rank {r}: loss of step {} {a} vs {b}", s + 1);
            }
            close(&format!("{what}, rank {r}: parameters after 20 steps"), &c, full, &p1, 1e-5);
            // replicas: every rank's whole model is the same, and ranks holding the same experts
            // hold the same bits
            assert!(full == &ranks[0].1, "{what}: rank {r}'s model differs from rank 0's");
            assert!(mine == &ranks[r % ep].2, "{what}: rank {r} differs from rank {} holding the same experts", r % ep);
            assert_eq!(l, &ranks[0].0, "{what}: ranks report different losses");
        }
    }
}

fn losses(out: &Path) -> Vec<f64> {
    read_metrics(&RunDir::new(out).metrics_path())
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == "train")
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

fn val_losses(out: &Path) -> Vec<f64> {
    read_metrics(&RunDir::new(out).metrics_path())
        .unwrap()
        .into_iter()
        .filter(|r| r["type"] == "eval")
        .map(|r| r["val_loss"].as_f64().unwrap())
        .collect()
}

fn run(c: &ExperimentConfig, out: &Path, world: usize, ep: usize, resume: bool, stop_at: Option<usize>) {
    if world == 1 {
        train_until(c, out, &TrainOptions { resume, ..Default::default() }, stop_at).unwrap();
        return;
    }
    threads::spawn(world, |w| {
        let opts = TrainOptions { resume, dist: Some(Groups::new(w, ep).unwrap()), ..Default::default() };
        train_until(c, out, &opts, stop_at).unwrap()
    });
}

fn close64(what: &str, a: &[f64], b: &[f64], rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= rtol * y.abs(), "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn parallel_runs_write_one_process_checkpoints_and_reshard_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(&["train.checkpoint_every=10"]);
    let one = tmp.path().join("one");
    run(&c, &one, 1, 1, false, None);
    // an uninterrupted run at EP=2, and its checkpoint holding the whole model
    let ep2 = tmp.path().join("ep2");
    run(&c, &ep2, 2, 2, false, None);
    close64("EP=2 losses vs one process", &losses(&ep2), &losses(&one), 1e-5);
    close64("EP=2 validation vs one process", &val_losses(&ep2), &val_losses(&one), 1e-5);
    let dir = RunDir::new(&ep2).latest().unwrap().unwrap();
    let m: Transformer<f32> = Transformer::load(c.model.clone(), &dir.join(MODEL_FILE)).unwrap();
    assert_eq!(m.params.len(), Transformer::<f32>::zeros(c.model.clone()).unwrap().params.len());
    // saved at EP=2 after 10 steps, resumed at EP=1 (one process), EP=4 and EP=2 × DP=2
    for (world, ep) in [(1, 1), (4, 4), (4, 2)] {
        let out = tmp.path().join(format!("resume{world}_{ep}"));
        run(&c, &out, 2, 2, false, Some(10));
        assert_eq!(losses(&out), losses(&ep2)[..10], "the first 10 steps of the same layout");
        run(&c, &out, world, ep, true, None);
        close64(&format!("resumed at world {world}, EP {ep}"), &losses(&out), &losses(&ep2), 1e-5);
    }
}

#[test]
fn parallel_run_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 sequences cannot be shared by 3 ranks; 4 experts cannot be shared by 3 ranks
    let out = tmp.path().join("a");
    let errs = threads::spawn(3, |w| {
        let opts = TrainOptions { dist: Some(Groups::new(w, 1).unwrap()), ..Default::default() };
        train(&cfg(&[]), &out, &opts).unwrap_err().to_string()
    });
    assert!(errs[0].contains("train.batch_size") && errs[0].contains("3 ranks"), "{}", errs[0]);
    let errs = threads::spawn(3, |w| {
        let opts = TrainOptions { dist: Some(Groups::new(w, 3).unwrap()), ..Default::default() };
        train(&cfg(&["train.batch_size=6"]), &tmp.path().join("b"), &opts).unwrap_err().to_string()
    });
    assert!(errs[1].contains("4 routed experts") && errs[1].contains("3 expert-parallel ranks"), "{}", errs[1]);
}
