//! Manual measurements and demos (all ignored): trio/rung throughput, the default comparison,
//! the tiny sweep. `cargo test -p moe-compare --test manual -- --ignored --nocapture NAME`.
use moe_compare::plan::{base_experiment, default_trio, Scale};
use moe_compare::probe::probe;

/// Throughput of the default trio on this machine.
#[test]
#[ignore]
fn probe_default_trio() {
    let dense = base_experiment(Scale::Default);
    for p in default_trio(&dense) {
        let t = probe(&p.cfg, 3).unwrap();
        eprintln!(
            "{:12} total {:>9} active {:>9} flops/tok {:.3e}  step {:.3}s  {:.0} tok/s  {:.1} GFLOP/s",
            p.name,
            p.account.params_total,
            p.account.params_active,
            p.account.flops_train,
            t.step_s,
            t.tokens_per_s,
            t.flops_per_s / 1e9
        );
    }
}

/// Manual (ignored): the default comparison, into `$MOE_COMPARE_OUT` (default /tmp/moe-compare-default).
#[test]
#[ignore]
fn run_default_compare() {
    let out = std::env::var("MOE_COMPARE_OUT").unwrap_or_else(|_| "/tmp/moe-compare-default".into());
    let t0 = std::time::Instant::now();
    let rep = moe_compare::compare(&moe_compare::CompareOptions { out: out.into(), progress: true, ..Default::default() }).unwrap();
    eprintln!("default compare took {:.0} s: {:?}", t0.elapsed().as_secs_f64(), rep.summary.timing);
}

/// Manual (ignored): throughput of the default sweep's MoE rungs (for the time estimate in the docs).
#[test]
#[ignore]
fn probe_sweep_rungs() {
    let dense = base_experiment(Scale::Default);
    for n in [1, 2, 4, 8, 16, 32] {
        let cfg = moe_train::ExperimentConfig { model: moe_compare::plan::moe_twin(&dense.model, n, 1), ..dense.clone() };
        let t = probe(&cfg, 3).unwrap();
        eprintln!("moe-{n}x1: step {:.3}s  {:.0} tok/s  {:.1} GFLOP/s", t.step_s, t.tokens_per_s, t.flops_per_s / 1e9);
    }
}

/// Manual (ignored): the tiny sweep into `$MOE_SWEEP_OUT` (default /tmp/moe-sweep-tiny), to look at.
#[test]
#[ignore]
fn run_tiny_sweep() {
    let out = std::env::var("MOE_SWEEP_OUT").unwrap_or_else(|_| "/tmp/moe-sweep-tiny".into());
    let rep =
        moe_compare::sweep(&moe_compare::SweepOptions { out: out.into(), scale: Scale::Tiny, seeds: 2, ..Default::default() }).unwrap();
    eprintln!("{}", rep.summary.verdict.join("\n"));
}
