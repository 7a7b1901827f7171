//! `moe compare` and `moe sweep`

use crate::args::{CompareArgs, SweepArgs};

pub fn run_compare(_a: CompareArgs) -> anyhow::Result<()> {
    anyhow::bail!("compare: being wired")
}

pub fn run_sweep(_a: SweepArgs) -> anyhow::Result<()> {
    anyhow::bail!("sweep: being wired")
}
