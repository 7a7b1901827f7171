//! The one error type of `moe-data`.
//!
//! Every variant that concerns a file names it (`path`) and says what is wrong with it, so a
//! message printed by the CLI is enough to find and fix the problem.

use std::path::PathBuf;

/// Everything that can go wrong while reading corpora, tokenising or batching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or directory could not be read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done ("cannot read", "cannot write", ...).
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A text file read as strict UTF-8 (`data.encoding = "utf-8"`) is not valid UTF-8.
    #[error("{}: not valid UTF-8 (first invalid byte at offset {offset}); data.encoding is \"utf-8\" (strict): set it (--data-encoding) to \"utf-8-lossy\" to replace such bytes, or to \"cp1252\" or \"latin-1\" to decode them", path.display())]
    InvalidUtf8 {
        /// The offending file.
        path: PathBuf,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },

    /// A line of a `.jsonl` file is not a JSON object with a string `"text"` field.
    #[error("{}:{line}: {message}", path.display())]
    Jsonl {
        /// The offending file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },

    /// No document with non-empty text was found.
    #[error("{}: no documents with non-empty text found (directories are searched for *.txt, *.md and *.jsonl files)", path.display())]
    EmptyCorpus {
        /// The file or directory that was read.
        path: PathBuf,
    },

    /// A chat template could not be read, compiled or rendered.
    #[error("{}: chat template: {message}", path.display())]
    ChatTemplate {
        /// The file holding the template (`tokenizer_config.json` or `chat_template.jinja`).
        path: PathBuf,
        /// What went wrong (the template engine's message, or the template's own exception).
        message: String,
    },

    /// A tokenizer file could not be parsed.
    #[error("{}: cannot load tokenizer (expected a Hugging Face tokenizer.json): {message}", path.display())]
    TokenizerLoad {
        /// The tokenizer file.
        path: PathBuf,
        /// The parser's complaint.
        message: String,
    },

    /// A tokenizer could not be serialised or written.
    #[error("{}: cannot save tokenizer: {message}", path.display())]
    TokenizerSave {
        /// The destination file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The byte tokenizer has no file representation; it is identified by its kind alone.
    #[error("{}: the byte tokenizer has no tokenizer file to save (it is fully described by its kind \"byte\")", path.display())]
    ByteTokenizerNotSavable {
        /// The destination that was asked for.
        path: PathBuf,
    },

    /// BPE training was asked for a vocabulary size it cannot produce.
    #[error("{}: invalid BPE vocabulary size {vocab}: {reason}", path.display())]
    InvalidVocabSize {
        /// The tokenizer file that was to be written.
        path: PathBuf,
        /// The requested size.
        vocab: usize,
        /// Why it is invalid.
        reason: String,
    },

    /// BPE training failed inside the tokenizers library.
    #[error("{}: BPE training failed: {message}", path.display())]
    TokenizerTrain {
        /// The tokenizer file that was to be written.
        path: PathBuf,
        /// The library's message.
        message: String,
    },

    /// Encoding text failed inside the tokenizers library.
    #[error("cannot encode text: {message}")]
    Encode {
        /// The library's message.
        message: String,
    },

    /// Decoding token ids failed.
    #[error("cannot decode tokens: {message}")]
    Decode {
        /// What went wrong.
        message: String,
    },

    /// A token id is not in the vocabulary.
    #[error("token id {id} is out of range for a vocabulary of {n_vocab}")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// The validation fraction is not strictly between 0 and 1.
    #[error("validation fraction {value} must be strictly between 0 and 1")]
    InvalidValFraction {
        /// The requested fraction.
        value: f64,
    },

    /// One side of the train/validation split has too few tokens to form a single example.
    #[error("the {side} split has only {n_tokens} tokens (at least {needed} needed); use more data or a different validation fraction")]
    SplitTooSmall {
        /// "train" or "validation".
        side: &'static str,
        /// Tokens that ended up on that side.
        n_tokens: usize,
        /// The minimum.
        needed: usize,
    },

    /// More distinct domains than fit in the per-token `u8` domain tags.
    #[error("{count} distinct document domains; at most 256 are supported")]
    TooManyDomains {
        /// Number of distinct domains found.
        count: usize,
    },

    /// A batcher was asked for windows that do not fit the token stream.
    #[error("cannot draw windows of {seq_len} tokens (+1 target) with batch size {batch_size} from {n_tokens} tokens")]
    InvalidBatchShape {
        /// Length of the token stream.
        n_tokens: usize,
        /// Requested batch size.
        batch_size: usize,
        /// Requested sequence length.
        seq_len: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_io_names_path() {
        let e = Error::Io {
            path: PathBuf::from("/some/file.txt"),
            action: "cannot read",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        let msg = e.to_string();
        assert!(msg.contains("/some/file.txt"), "{msg}");
        assert!(msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn error_display_jsonl_names_path_and_line() {
        let e = Error::Jsonl { path: PathBuf::from("d.jsonl"), line: 7, message: "x".into() };
        assert_eq!(e.to_string(), "d.jsonl:7: x");
    }
}
