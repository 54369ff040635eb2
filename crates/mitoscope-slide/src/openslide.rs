//! Vendor formats through OpenSlide (cargo feature `openslide`).
//!
//! State: the feature is declared but not wired to a binding yet. Building
//! it needs Debian's `libopenslide-dev` and a maintained Rust binding (e.g.
//! the `openslide-rs` crate), neither of which the default build may depend
//! on. Until then, with the feature on, files the built-in reader does not
//! handle (DICOM WSI, MIRAX, NDPI, …) fail with a clear
//! [`SlideError::OpenSlide`] error instead of "unsupported format"; without
//! the feature they fail with [`SlideError::UnsupportedFormat`], whose
//! message says to build with `--features openslide`.

use std::path::Path;

use crate::{OpenOptions, Slide, SlideError};

/// Opens `path` with OpenSlide. Currently always an error (see the module docs).
pub fn open_with(path: &Path, _options: &OpenOptions) -> Result<Box<dyn Slide>, SlideError> {
    Err(SlideError::OpenSlide {
        path: path.to_owned(),
        message: "the openslide feature is not wired to libopenslide in this build yet \
                  (only Aperio SVS and pyramidal TIFF are read)"
            .into(),
    })
}
