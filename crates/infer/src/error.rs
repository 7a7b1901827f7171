//! Errors of the inference crate.

/// Everything that can go wrong decoding, sampling or benchmarking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the model crate (config, shapes, checkpoints).
    #[error(transparent)]
    Model(#[from] moe_model::Error),
    /// Appending the new tokens would make a sequence longer than the model's `n_ctx`.
    #[error("context overflow: sequence {seq} holds {len} tokens, {n_new} more would exceed n_ctx {n_ctx}")]
    ContextOverflow {
        /// index of the sequence in the batch (0 for single-sequence calls)
        seq: usize,
        /// tokens already in its cache
        len: usize,
        /// tokens that were to be appended
        n_new: usize,
        /// the model's context length
        n_ctx: usize,
    },
    /// Inputs that do not fit the model or each other (empty prompt, token id out of range, a
    /// cache built for another model, mismatched batch lengths).
    #[error("bad input: {0}")]
    BadInput(String),
    /// A sampler setting is out of range.
    #[error("invalid sampler setting `{field}`: {reason}")]
    InvalidSampler {
        /// the field name
        field: &'static str,
        /// what is wrong
        reason: String,
    },
}

/// Result with the inference crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
