//! `moe compare` and `moe sweep`

use crate::args::{CompareArgs, SweepArgs};
use moe_compare::{compare, sweep, CompareOptions, SweepOptions};

pub fn run_compare(a: CompareArgs) -> anyhow::Result<()> {
    let opts = CompareOptions {
        data: a.data,
        data_encoding: a.data_encoding,
        budget_flops: a.budget_flops,
        budget_minutes: a.budget_minutes,
        dense: a.dense,
        moe: a.moe,
        seeds: a.seeds,
        out: a.out,
        progress: !a.quiet,
        scale: a.scale,
        no_wide: a.no_wide,
        dtype: a.dtype.map(crate::commands::bench::dtype_of),
        no_deploy: a.no_deploy,
    };
    let r = compare(&opts)?;
    for line in &r.summary.verdict {
        println!("{line}");
    }
    println!("report: {} ({})", r.report_html.display(), r.report_md.display());
    Ok(())
}

pub fn run_sweep(a: SweepArgs) -> anyhow::Result<()> {
    let d = SweepOptions::default();
    let opts = SweepOptions {
        data: a.data,
        data_encoding: a.data_encoding,
        budget_flops: a.budget_flops,
        budget_minutes: a.budget_minutes,
        dense: a.dense,
        top_k: a.top_k,
        n_experts: if a.n_experts.is_empty() { d.n_experts } else { a.n_experts },
        seeds: a.seeds,
        out: a.out,
        progress: !a.quiet,
        scale: a.scale,
        ..d
    };
    let r = sweep(&opts)?;
    for line in &r.summary.verdict {
        println!("{line}");
    }
    println!("report: {} ({})", r.report_html.display(), r.report_md.display());
    Ok(())
}
