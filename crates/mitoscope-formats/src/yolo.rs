//! Placeholder: being written.
use std::path::Path;
use mitoscope_annotations::AnnotationSet;
use crate::{FormatError, ReadOptions, Result, WriteOptions};

/// Not yet implemented.
pub fn read(path: &Path, _opts: &ReadOptions) -> Result<AnnotationSet> {
    Err(FormatError::Unsupported { path: path.to_owned(), message: "not yet implemented".into() })
}

/// Not yet implemented.
pub fn write(_set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    Err(FormatError::Unsupported { path: path.to_owned(), message: "not yet implemented".into() })
}
