//! `moe eval`

use crate::args::EvalArgs;
use moe_train::evaluate_run;

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let r = evaluate_run(&a.run, a.data.as_deref(), a.max_batches)?;
    println!("step {}: val loss {:.4}, perplexity {:.3} over {} tokens", r.step, r.val_loss, r.val_ppl, r.n_tokens);
    Ok(())
}
