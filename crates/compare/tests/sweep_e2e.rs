//! The whole `moe sweep` pipeline on tiny models.

use moe_compare::results::fmt_loss;
use moe_compare::run::RunStatus;
use moe_compare::{sweep, Scale, SweepOptions};

#[test]
fn sweep_tiny_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SweepOptions {
        out: tmp.path().join("sw"),
        scale: Scale::Tiny,
        top_k: 1,
        n_experts: vec![1, 2, 4],
        dense_multipliers: vec![0.5, 1.0, 2.0],
        seeds: 2,
        ..Default::default()
    };
    let rep = sweep(&opts).unwrap();
    let s = &rep.summary;
    assert_eq!(s.moe.iter().map(|r| r.n_expert).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert_eq!(s.dense.len(), 3);
    // fixed active compute: FLOPs/token equal up to the router
    let f1 = s.moe[0].result.flops_per_token;
    for r in &s.moe {
        assert!((r.result.flops_per_token / f1 - 1.0).abs() < 0.02, "{} vs {f1}", r.result.flops_per_token);
        assert_eq!(r.multiplier_per_seed.len(), 2);
        assert_eq!(r.result.balance.len(), 2);
    }
    // the dense ladder spends multiples of the budget
    let c1 = s.dense[1].result.seeds[0].flops;
    assert!((s.dense[2].result.seeds[0].flops / c1 - 2.0).abs() < 0.3);
    assert!(s.fit_method.starts_with("power law"));
    let md = std::fs::read_to_string(&rep.report_md).unwrap();
    let html = std::fs::read_to_string(&rep.report_html).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rep.summary_json).unwrap()).unwrap();
    for r in json["moe"].as_array().unwrap() {
        let l = &r["result"]["val_loss"];
        let printed = format!("{} ± {:.4}", fmt_loss(l["mean"].as_f64().unwrap()), l["std"].as_f64().unwrap());
        assert!(md.contains(&printed) && html.contains(&printed), "{printed}");
    }
    for l in json["verdict"].as_array().unwrap() {
        assert!(md.contains(l.as_str().unwrap()));
    }
    assert_eq!(json["figures"].as_array().unwrap().len(), 2);
    for f in json["figures"].as_array().unwrap() {
        assert!(opts.out.join(f["png"].as_str().unwrap()).is_file());
        assert!(opts.out.join(f["svg"].as_str().unwrap()).is_file());
    }
    // rerun: everything reused
    let again = sweep(&opts).unwrap();
    assert!(again
        .summary
        .moe
        .iter()
        .flat_map(|r| &r.result.seeds)
        .chain(again.summary.dense.iter().flat_map(|r| &r.result.seeds))
        .all(|x| x.status == RunStatus::Reused));

    // top-2 skips the 1-expert rung; bad options are named
    let e = sweep(&SweepOptions { top_k: 2, n_experts: vec![1], ..opts.clone() }).unwrap_err().to_string();
    assert!(e.starts_with("--n-experts"), "{e}");
    let e = sweep(&SweepOptions { dense_multipliers: vec![], ..opts }).unwrap_err().to_string();
    assert!(e.starts_with("--dense-multipliers"), "{e}");
}
