//! The one error type of `moe-train`.
//!
//! Every variant that concerns a file names it, and configuration errors also name the dotted
//! field (`train.seq_len`), so a message printed by the CLI is enough to find and fix the problem.

use std::path::PathBuf;

/// Everything that can go wrong configuring, running, checkpointing or evaluating training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model error (config, checkpoint, shapes); model checkpoint errors name the file.
    #[error(transparent)]
    Model(#[from] moe_model::Error),

    /// A data error (corpus, tokenizer, split); it names the file when one is involved.
    #[error(transparent)]
    Data(#[from] moe_data::Error),

    /// A config field has an impossible value.
    #[error("{}: {field}: {reason}", path.display())]
    Config {
        /// the experiment file
        path: PathBuf,
        /// dotted field name, e.g. `train.seq_len`
        field: String,
        /// what is wrong
        reason: String,
    },

    /// The config file is not valid TOML.
    #[error("{}: {message}", path.display())]
    ConfigParse {
        /// the experiment file
        path: PathBuf,
        /// the parser's message
        message: String,
    },

    /// A `--set key=value` override is malformed or cannot be applied.
    #[error("override `{item}`: {reason}")]
    Override {
        /// the override as given
        item: String,
        /// what is wrong
        reason: String,
    },

    /// I/O error on a named file.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// the file or directory
        path: PathBuf,
        /// what was being done ("cannot read", ...)
        action: &'static str,
        /// the cause
        #[source]
        source: std::io::Error,
    },

    /// An optimizer-state or training-state file is missing, corrupt or does not fit the model.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// the file
        path: PathBuf,
        /// what is wrong
        message: String,
    },

    /// The run directory is missing, incomplete, or already holds a run.
    #[error("run directory {}: {message}", path.display())]
    RunDir {
        /// the run directory (or the file in it)
        path: PathBuf,
        /// what is wrong and what to do
        message: String,
    },

    /// The tokenizer does not fit the model (more token ids than embedding rows).
    #[error("tokenizer {tokenizer} has {n_tokenizer} tokens but {config}: model.n_vocab is {n_vocab}; raise model.n_vocab to at least {n_tokenizer}")]
    TokenizerMismatch {
        /// the tokenizer (file, or "byte")
        tokenizer: String,
        /// tokenizer vocabulary size
        n_tokenizer: usize,
        /// the config file (or checkpoint) naming the model
        config: String,
        /// the model's vocabulary
        n_vocab: usize,
    },

    /// The loss, a gradient or a parameter became NaN or infinite. The step is not applied and
    /// no checkpoint is written for it, so the last checkpoint stays the last good one.
    #[error("training diverged at step {step}: {what}; stopped without saving this step (try a lower train.lr or train.grad_clip)")]
    Diverged {
        /// 1-based step
        step: usize,
        /// what became non-finite, and its value
        what: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// An [`Error::Io`] constructor for `map_err`.
pub(crate) fn io(path: &std::path::Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_config_names_file_and_field() {
        let e =
            Error::Config { path: "configs/x.toml".into(), field: "train.seq_len".into(), reason: "512 exceeds model.n_ctx 256".into() };
        assert_eq!(e.to_string(), "configs/x.toml: train.seq_len: 512 exceeds model.n_ctx 256");
    }
}
