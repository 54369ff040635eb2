//! What a run folder's checkpoints were trained on: the number of training and
//! validation examples and a hash of their pixels and labels, kept in
//! `data.json`. A resume checks it, so a folder left by a run on other data
//! (another split, a changed recipe, other source files) is refused instead of
//! silently continued: the config and seed alone cannot tell.

use std::path::Path;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::ModelError;
use crate::weights::write_atomically;

/// Name of the data record in a run folder.
pub const DATA_FILE: &str = "data.json";

/// Sizes and content hash of a training run's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunData {
    /// Training examples.
    pub train: usize,
    /// Validation examples.
    pub val: usize,
    /// XXH3-64 over every example's pixels and labels, in order (hex). XXH3's
    /// output is fixed by its specification, so the value is stable across
    /// builds and machines, unlike `std`'s hasher.
    pub fingerprint: String,
}

/// Incremental hash of examples, in the order they are fed.
#[derive(Default)]
pub(crate) struct Fingerprint(Xxh3);

impl Fingerprint {
    pub(crate) fn image(&mut self, image: &RgbImage) -> &mut Self {
        self.0.update(&image.width().to_le_bytes());
        self.0.update(&image.height().to_le_bytes());
        self.0.update(image.as_raw());
        self
    }

    pub(crate) fn bool(&mut self, value: bool) -> &mut Self {
        self.0.update(&[u8::from(value)]);
        self
    }

    pub(crate) fn f32s(&mut self, values: &[f32]) -> &mut Self {
        self.0.update(&(values.len() as u64).to_le_bytes());
        for v in values {
            self.0.update(&v.to_le_bytes());
        }
        self
    }

    pub(crate) fn finish(&self, train: usize, val: usize) -> RunData {
        RunData { train, val, fingerprint: format!("{:016x}", self.0.digest()) }
    }
}

/// Records `data` in `out_dir`, after checking that checkpoints already there
/// (`resuming`) were trained on the same data. Folders from before this record
/// existed have no `data.json`: they are resumed as before, with a warning.
pub(crate) fn check_and_record(out_dir: &Path, data: &RunData, resuming: bool) -> Result<(), ModelError> {
    let path = out_dir.join(DATA_FILE);
    if resuming {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let saved: RunData = serde_json::from_str(&text)
                    .map_err(|e| ModelError::Config { path: path.clone(), message: e.to_string() })?;
                if saved != *data {
                    return Err(ModelError::Config {
                        path,
                        message: format!(
                            "the run folder's checkpoints were trained on other data ({} training / {} validation \
                             examples, fingerprint {}; now {} / {}, {}); use a new folder",
                            saved.train, saved.val, saved.fingerprint, data.train, data.val, data.fingerprint
                        ),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "{} has checkpoints but no {DATA_FILE}: resuming without checking its data",
                    out_dir.display()
                );
            }
            Err(e) => return Err(ModelError::io(&path, e)),
        }
    }
    let json = serde_json::to_string_pretty(data)
        .map_err(|e| ModelError::Config { path: path.clone(), message: e.to_string() })?;
    write_atomically(&path, json.as_bytes())
}
