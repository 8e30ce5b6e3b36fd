//! One error type for the engine; every message names what was wrong and where.

use std::path::PathBuf;

/// Errors returned by the LCT engine. Messages carry the numbers involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("invalid config: {0}")]
    Config(String),

    #[error(
        "checkpoint {path}: tensor '{name}' is missing (the config expects shape {expected:?})"
    )]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },

    #[error("checkpoint {path}: tensor '{name}' has shape {found:?} but the config expects {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("checkpoint {path}: tensor '{name}' is stored as {found}; weights must be floating point (F32, F16 or BF16)")]
    TensorDType {
        path: PathBuf,
        name: String,
        found: String,
    },

    #[error("checkpoint {path}: {count} tensor(s) are not used by the config (first: '{first}'); the config disagrees with the weights")]
    UnusedTensors {
        path: PathBuf,
        count: usize,
        first: String,
    },

    #[error("invalid scene layout: {0}")]
    Layout(String),

    #[error("segment {segment}: timestep {value} is outside [0, 1]")]
    Timestep { segment: usize, value: f32 },

    #[error("input shape: {0}")]
    Shape(String),

    #[error("KV cache: {0}")]
    KvCache(String),

    #[error("sampling was cancelled at step {step} of {total}")]
    Cancelled { step: usize, total: usize },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file refused by lct's bounds (not a regular file, or over its kind's size limit).
    #[error(transparent)]
    Read(lct_files::ReadError),

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("unknown word '{word}' in the prompt; the vocabulary is: {vocabulary}")]
    UnknownWord { word: String, vocabulary: String },

    #[error("this model has no {0}; its config.json has no such section")]
    MissingComponent(&'static str),

    #[error("training: {0}")]
    Training(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A file that could not be read is [`Error::Io`], as before; one refused by lct's bounds is
/// [`Error::Read`].
impl From<lct_files::ReadError> for Error {
    fn from(error: lct_files::ReadError) -> Self {
        match error {
            lct_files::ReadError::Io { path, source } => Error::Io { path, source },
            other => Error::Read(other),
        }
    }
}
