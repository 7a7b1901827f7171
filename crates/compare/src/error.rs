//! The one error type of `moe-compare`.
//!
//! Every variant that concerns a file names it; option errors name the option (`--seeds`,
//! `budget_flops`), so a message printed by the CLI is enough to find and fix the problem.

use std::path::{Path, PathBuf};

/// Everything that can go wrong planning, running, measuring or reporting a comparison or sweep.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A training error (config, run directory, checkpoint, divergence); it names the file.
    #[error(transparent)]
    Train(#[from] moe_train::Error),

    /// A model error (config, checkpoint, shapes).
    #[error(transparent)]
    Model(#[from] moe_model::Error),

    /// A data error (corpus, tokenizer, split).
    #[error(transparent)]
    Data(#[from] moe_data::Error),

    /// An inference / decode-benchmark error.
    #[error(transparent)]
    Infer(#[from] moe_infer::Error),

    /// An option has an impossible value or options contradict each other.
    #[error("{option}: {reason}")]
    Option {
        /// the option, as the CLI spells it (`--seeds`, `--budget-flops`, ...)
        option: String,
        /// what is wrong
        reason: String,
    },

    /// An experiment TOML cannot be used in a comparison (wrong kind of model, ...).
    #[error("{}: {field}: {reason}", path.display())]
    Config {
        /// the experiment file (or a pseudo-path for built-in models)
        path: PathBuf,
        /// dotted field name, e.g. `model.moe`
        field: String,
        /// what is wrong
        reason: String,
    },

    /// I/O error on a named file.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// the file or directory
        path: PathBuf,
        /// what was being done
        action: &'static str,
        /// the cause
        #[source]
        source: std::io::Error,
    },

    /// A line of `metrics.jsonl` (or another JSON file) cannot be parsed.
    #[error("{}:{line}: {message}", path.display())]
    Json {
        /// the file
        path: PathBuf,
        /// 1-based line (0 = whole file)
        line: usize,
        /// what is wrong
        message: String,
    },

    /// A run directory holds a different experiment than the one this comparison would train.
    #[error("run directory {}: {message}", path.display())]
    RunMismatch {
        /// the run directory
        path: PathBuf,
        /// what differs and what to do
        message: String,
    },

    /// A run finished but left no usable result (no eval line, no final checkpoint, ...).
    #[error("run directory {}: {message}", path.display())]
    RunIncomplete {
        /// the run directory (or the file in it)
        path: PathBuf,
        /// what is missing
        message: String,
    },

    /// A measurement cannot be made as asked (e.g. a model the engine does not run).
    #[error("{0}")]
    Invalid(String),

    /// Drawing or writing a plot failed.
    #[error("plot {}: {message}", path.display())]
    Plot {
        /// the image file
        path: PathBuf,
        /// the backend's message
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// An [`Error::Io`] constructor for `map_err`.
pub(crate) fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, action, source }
}

/// An [`Error::Option`].
pub(crate) fn option(option: &str, reason: impl Into<String>) -> Error {
    Error::Option { option: option.to_string(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_name_file_and_option() {
        let e = option("--seeds", "must be ≥ 1");
        assert_eq!(e.to_string(), "--seeds: must be ≥ 1");
        let e = Error::Json { path: "runs/dense-s0/metrics.jsonl".into(), line: 3, message: "expected value".into() };
        assert_eq!(e.to_string(), "runs/dense-s0/metrics.jsonl:3: expected value");
    }
}
