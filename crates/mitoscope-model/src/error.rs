//! The crate's error type: every variant that concerns a file names it.

use std::path::PathBuf;

/// Anything that can go wrong building data, training, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing a file or folder failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be decoded (the inner error names the file).
    #[error(transparent)]
    Imaging(#[from] mitoscope_imaging::ImagingError),
    /// A weight file (or embedded weight bytes) is missing, truncated, corrupt, or was
    /// written for a different network shape.
    #[error("cannot load weights from {path}: {message}")]
    LoadWeights {
        /// The file (or a label such as `<embedded>` for bytes).
        path: PathBuf,
        /// What burn reported.
        message: String,
    },
    /// Weights loaded fine but hold NaN or infinite values (a diverged run).
    #[error("weights from {path} hold {count} non-finite values (NaN or infinity)")]
    NonFiniteWeights {
        /// The file (or a label for bytes).
        path: PathBuf,
        /// How many values are not finite.
        count: usize,
    },
    /// Serialising weights or an optimizer state failed.
    #[error("cannot save {path}: {message}")]
    SaveWeights {
        /// The destination.
        path: PathBuf,
        /// What burn reported.
        message: String,
    },
    /// A `config.json` or checkpoint state file is unreadable or does not match the run.
    #[error("bad config or checkpoint {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Training data cannot be used as given (empty, wrong sizes, one class only, ...).
    #[error("training data: {0}")]
    Data(String),
    /// The training loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}: loss is {loss}")]
    Diverged {
        /// The epoch (1-based).
        epoch: usize,
        /// The offending loss.
        loss: f32,
    },
    /// A tensor could not be read back as `f32` values.
    #[error("tensor read-back failed: {0}")]
    Tensor(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
