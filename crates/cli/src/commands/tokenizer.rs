//! `moe tokenizer train`

use crate::args::TokenizerCommand;
use anyhow::Context;
use std::path::PathBuf;

pub fn run(c: TokenizerCommand) -> anyhow::Result<()> {
    match c {
        TokenizerCommand::Train { data, data_encoding, vocab, out } => {
            let files: Vec<PathBuf> = vec![data.clone()];
            let tok = moe_data::train_bpe(&files, vocab, &out, data_encoding)
                .with_context(|| format!("training a BPE tokenizer on {}", data.display()))?;
            println!("wrote {} ({} tokens)", out.display(), tok.n_vocab());
            Ok(())
        }
    }
}
