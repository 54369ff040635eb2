//! The crate's error type: every variant that concerns a file names it.

use std::path::PathBuf;

/// Anything that can go wrong loading a model, detecting, or writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Network-level failure (weights, tensors, training); names the file where there is one.
    #[error(transparent)]
    Model(#[from] mitoscope_model::ModelError),
    /// An input image could not be read (names the file).
    #[error(transparent)]
    Imaging(#[from] mitoscope_imaging::ImagingError),
    /// An output file could not be written (names the file).
    #[error(transparent)]
    Format(#[from] mitoscope_formats::FormatError),
    /// Reading or writing a file or folder failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A model bundle is missing, truncated, corrupt or incompatible.
    #[error("bad model bundle {path}: {message}")]
    Bundle {
        /// The bundle file (or `<embedded>`).
        path: PathBuf,
        /// What is wrong, expected vs found.
        message: String,
    },
    /// An input path is neither an image file nor a folder.
    #[error("{path}: {message}")]
    Input {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },
    /// A setting is out of range (mpp, tile size, threshold, format name, ...).
    #[error("invalid setting: {0}")]
    Config(String),
}

impl DetectError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn bundle(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Bundle { path: path.into(), message: message.into() }
    }
}
