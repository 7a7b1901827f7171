//! Data for moe: tokenizers, corpora and batching.
//!
//! The pieces, in the order a training run uses them:
//! - [`corpus`] reads user text (`.txt`/`.md` files, `.jsonl` with a `"text"` field, or a
//!   directory of them) into [`Document`]s; [`synthetic`] generates a built-in, seeded corpus of
//!   five domains (arithmetic, a formal language, key–value recall, records, prose) that needs
//!   nothing outside the binary.
//! - [`tokenizer`] turns text into token ids: the 256-symbol byte tokenizer, or byte-level BPE
//!   loaded from a Hugging Face `tokenizer.json` or trained with [`train_bpe`]; [`chat`] renders a
//!   checkpoint's Jinja chat template.
//! - [`dataset`] tokenises documents into a deterministic train/validation split
//!   ([`TokenDataset`], with per-token domain tags), draws seeded random training windows
//!   ([`Batcher`], whose state can be checkpointed so a resumed run sees the same stream, and two
//!   runs with the same seed — dense and MoE — see identical batches), and cuts validation tokens
//!   into sequential evaluation windows ([`eval_batches`]).
//!
//! All randomness comes from [`moe_kernels::rng::Rng`]; every failure is an [`Error`] that names
//! the file concerned.

pub mod chat;
pub mod corpus;
pub mod dataset;
pub mod error;
pub mod gguf_vocab;
pub mod synthetic;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use corpus::{load_documents, read_corpus, Corpus, Document, Replaced, TextEncoding};
pub use dataset::{eval_batches, Batch, Batcher, BatcherState, TokenDataset};
pub use error::{Error, Result};
pub use gguf_vocab::GgufVocab;
pub use tokenizer::{train_bpe, Detokenizer, Tokenizer};
