//! Saving and loading network weights (burn's burnpack record format, full `f32`
//! precision), from files or from bytes embedded with `include_bytes!`.
//!
//! Every load checks that all values are finite, so a diverged checkpoint is
//! reported instead of producing NaN scores downstream.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Tensor};

use crate::ModelError;

/// File extension of weight files written by this crate.
pub const WEIGHTS_EXTENSION: &str = "bpk";

/// Serialises the weights of `model` to bytes (for `include_bytes!` or shipping).
pub fn weights_to_bytes<M: Module>(model: &M) -> Result<Vec<u8>, ModelError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| ModelError::SaveWeights { path: PathBuf::from("<memory>"), message: e.to_string() })?;
    Ok(bytes.to_vec())
}

/// Writes the weights of `model` to `path` atomically (temp file in the same
/// folder, then rename), so a kill never leaves a half-written file.
pub fn save_weights<M: Module>(model: &M, path: &Path) -> Result<(), ModelError> {
    let bytes = weights_to_bytes(model).map_err(|e| match e {
        ModelError::SaveWeights { message, .. } => ModelError::SaveWeights { path: path.to_owned(), message },
        other => other,
    })?;
    write_atomically(path, &bytes)
}

/// Loads weights from `path` into `model` (built from the matching config).
///
/// A missing file, a corrupt or truncated file, a record for another network
/// shape, and non-finite values are all errors naming the file.
pub fn load_weights<M: Module>(model: M, path: &Path) -> Result<M, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    load_weights_named(model, &bytes, path)
}

/// Loads weights from bytes, e.g. `include_bytes!("classifier.bpk")`; `name`
/// labels the bytes in errors.
pub fn load_weights_from_bytes<M: Module>(model: M, bytes: &[u8], name: &str) -> Result<M, ModelError> {
    load_weights_named(model, bytes, Path::new(name))
}

fn load_weights_named<M: Module>(model: M, bytes: &[u8], path: &Path) -> Result<M, ModelError> {
    let load_error = |message: String| ModelError::LoadWeights { path: path.to_owned(), message };
    if bytes.is_empty() {
        return Err(load_error("the file is empty".into()));
    }
    let record =
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| load_error(e.to_string()))?;
    let model = model.try_load_record(record).map_err(|e| load_error(shape_mismatch_summary(e.to_string())))?;
    let count = count_non_finite(&model);
    if count > 0 {
        return Err(ModelError::NonFiniteWeights { path: path.to_owned(), count });
    }
    Ok(model)
}

/// burn lists every tensor of another shape (kilobytes for a network of
/// another width): the count and the first one say it.
fn shape_mismatch_summary(message: String) -> String {
    let count = message.matches("shape mismatch").count();
    let Some(at) = message.find("shape mismatch") else { return message };
    if count < 2 {
        return message;
    }
    let start = message[..at].rfind('"').map_or(0, |i| i + 1);
    let end = message[at..].find('"').map_or(message.len(), |i| at + i);
    format!(
        "the weights are for a network of another shape: {count} tensors differ, the first {}",
        &message[start..end]
    )
}

/// Number of NaN or infinite values among the float parameters of `model`.
pub fn count_non_finite<M: Module>(model: &M) -> usize {
    struct NonFiniteCounter {
        count: usize,
    }
    impl ModuleVisitor for NonFiniteCounter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            // A tensor that cannot be read back as f32 counts as entirely bad.
            match data.try_to_vec::<f32>() {
                Ok(values) => self.count += values.iter().filter(|v| !v.is_finite()).count(),
                Err(_) => self.count += data.num_elements(),
            }
        }
    }
    let mut counter = NonFiniteCounter { count: 0 };
    model.visit(&mut counter);
    counter.count
}

/// Writes `bytes` to `<path>.tmp` and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

#[cfg(test)]
mod tests {
    use burn::module::ModuleMapper;
    use burn::prelude::*;

    use super::*;
    use crate::PatchClassifierConfig;

    fn small() -> PatchClassifierConfig {
        PatchClassifierConfig::new().with_crop_size(16).with_base_channels(4)
    }

    fn logits(model: &crate::PatchClassifier, device: &Device) -> Vec<f32> {
        let input = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 3 * 16 * 16).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect::<Vec<_>>(),
                [2, 3, 16, 16],
            ),
            device,
        );
        crate::infer::tensor_values(model.forward(input)).unwrap()
    }

    #[test]
    fn save_load_round_trip_gives_identical_outputs() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classifier.bpk");
        let model = small().init(&device);
        save_weights(&model, &path).unwrap();
        let loaded = load_weights(small().init(&device), &path).unwrap();
        assert_eq!(logits(&model, &device), logits(&loaded, &device));
        // From bytes, as with include_bytes!.
        let bytes = std::fs::read(&path).unwrap();
        let embedded = load_weights_from_bytes(small().init(&device), &bytes, "<embedded>").unwrap();
        assert_eq!(logits(&model, &device), logits(&embedded, &device));
        assert_eq!(weights_to_bytes(&model).unwrap(), bytes);
    }

    #[test]
    fn bad_weight_files_are_errors_naming_the_file() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.bpk");
        let err = load_weights(small().init(&device), &missing).unwrap_err();
        assert!(matches!(err, ModelError::Io { .. }) && err.to_string().contains("missing.bpk"), "{err}");

        let good = weights_to_bytes(&small().init(&device)).unwrap();
        let cases: [(&str, Vec<u8>); 4] = [
            ("empty.bpk", Vec::new()),
            ("garbage.bpk", b"this is not a burnpack file at all, just text".repeat(20)),
            ("truncated.bpk", good[..good.len() / 2].to_vec()),
            ("flipped.bpk", good.iter().enumerate().map(|(i, b)| if i < 64 { !b } else { *b }).collect()),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = load_weights(small().init(&device), &path).unwrap_err();
            assert!(matches!(err, ModelError::LoadWeights { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }

        // Weights of a wider network do not fit.
        let wide = dir.path().join("wide.bpk");
        save_weights(&small().with_base_channels(8).init(&device), &wide).unwrap();
        let err = load_weights(small().init(&device), &wide).unwrap_err();
        assert!(matches!(err, ModelError::LoadWeights { .. }), "{err}");
        // Said in one short line: how many tensors differ and the first of them.
        let text = err.to_string();
        assert!(text.contains("another shape") && text.contains("tensors differ") && text.len() < 400, "{text}");
    }

    #[test]
    fn nan_weights_are_reported() {
        struct Poison;
        impl ModuleMapper for Poison {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| t.mul_scalar(f32::NAN))
            }
        }
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.bpk");
        let poisoned = small().init(&device).map(&mut Poison);
        assert!(count_non_finite(&poisoned) > 0);
        save_weights(&poisoned, &path).unwrap();
        let err = load_weights(small().init(&device), &path).unwrap_err();
        assert!(matches!(err, ModelError::NonFiniteWeights { count, .. } if count > 0), "{err}");
        assert!(err.to_string().contains("nan.bpk"));
    }
}
