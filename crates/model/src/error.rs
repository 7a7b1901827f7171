//! Errors of the model crate.

use std::path::PathBuf;

/// Everything that can go wrong building, loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config field has an impossible value.
    #[error("invalid config: field `{field}`: {reason}")]
    InvalidConfig {
        /// dotted field name, e.g. `model.moe.n_expert_active`
        field: String,
        /// what is wrong
        reason: String,
    },
    /// The config text could not be parsed.
    #[error("cannot parse config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    ConfigParse {
        /// file, when known
        path: Option<PathBuf>,
        /// parser message (names the key)
        message: String,
    },
    /// Input shapes or token ids that do not fit the model.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A checkpoint file is missing, unreadable or does not match the config.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// the file
        path: PathBuf,
        /// what is wrong (names the tensor)
        message: String,
    },
    /// The computation produced NaN/Inf where a decision needs finite values (e.g. router gates).
    #[error("numerical divergence: {what}")]
    Diverged {
        /// where, and the value
        what: String,
    },
    /// I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// the file
        path: PathBuf,
        /// the cause
        #[source]
        source: std::io::Error,
    },
}

/// Result with the model crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig { field: field.to_string(), reason: reason.into() }
}
