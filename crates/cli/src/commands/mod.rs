//! One file per subcommand; each resolves its inputs and calls a library.

mod bench;
mod compare;
mod debug_dist;
mod eval;
mod export;
mod generate;
mod info;
mod logits;
mod plan;
mod serve;
mod tokenizer;
mod train;

use crate::args::{Cli, Command};

/// Dispatch a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Info(a) => info::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Generate(a) => generate::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Export(a) => export::run(a),
        Command::Compare(a) => compare::run_compare(a),
        Command::Sweep(a) => compare::run_sweep(a),
        Command::Serve(a) => serve::run(a),
        Command::Plan(a) => plan::run(a),
        Command::DebugDist => debug_dist::run(),
    }
}
