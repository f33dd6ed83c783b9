//! Library error type. Every variant says what went wrong, where, and (when the user can act) what to do.

use std::path::PathBuf;

/// Errors raised by the whospoke library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input is not audio we can decode, or is truncated/corrupt.
    #[error("{what}: {why}")]
    BadAudio { what: String, why: String },
    /// Audio device problems (unknown device, cannot open, stream error).
    #[error("audio device: {0}")]
    Device(String),
    /// A model file is missing or corrupt.
    #[error("model {path}: {why}")]
    Model { path: PathBuf, why: String },
    /// The ONNX Runtime shared library is missing or cannot be loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// Inference failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A pipeline thread panicked (a bug): which one and its message.
    #[error(
        "internal error: the {stage} thread panicked: {message} (outputs flushed up to this point)"
    )]
    Panic { stage: String, message: String },
    /// Invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Writing an output failed.
    #[error("cannot write {what}")]
    Output {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An RTTM file could not be parsed.
    #[error("{path}:{line}: {why}")]
    Rttm {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
