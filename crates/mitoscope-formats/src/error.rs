//! The one error type of every reader and writer. Each variant names the file
//! (and line or record where there is one) and says what was expected.

use std::path::PathBuf;

/// A reader or writer failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Opening, reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is malformed: `location` says where (`line 12`, `annotation id 7`, ...).
    #[error("{path}: {location}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Line, record or element.
        location: String,
        /// What is wrong, expected vs found.
        message: String,
    },
    /// An image or mask could not be decoded.
    #[error(transparent)]
    Image(#[from] mitoscope_imaging::ImagingError),
    /// A mask's size differs from its image's.
    #[error("mask {mask} is {mask_w}x{mask_h}, image {image} is {image_w}x{image_h}")]
    MaskSize {
        /// Mask file.
        mask: PathBuf,
        /// Mask width.
        mask_w: u32,
        /// Mask height.
        mask_h: u32,
        /// Image file.
        image: PathBuf,
        /// Image width.
        image_w: u32,
        /// Image height.
        image_h: u32,
    },
    /// The path's format could not be recognised (or a dataset layout detected).
    #[error("{path}: cannot tell the format: {hint}")]
    UnknownFormat {
        /// The file or folder.
        path: PathBuf,
        /// What was looked for and what was found.
        hint: String,
    },
    /// The data cannot be expressed in the asked format (e.g. YOLO without image sizes).
    #[error("{path}: {message}")]
    Unsupported {
        /// The file being written or read.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl FormatError {
    /// Shorthand for [`FormatError::Malformed`].
    pub fn malformed(path: impl Into<PathBuf>, location: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Malformed { path: path.into(), location: location.into(), message: message.into() }
    }

    /// Shorthand for [`FormatError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
