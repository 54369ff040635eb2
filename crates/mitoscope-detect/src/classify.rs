//! Stage 2 on its own: score the centre crop of each image (a crop already
//! centred on a figure, or the middle of a larger image).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::{DetectError, Detector};

/// Score of one image, or why it has none.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassifyResult {
    /// The file.
    pub path: PathBuf,
    /// Image id (file stem).
    pub image: String,
    /// Mitosis probability of the centre crop.
    pub score: Option<f64>,
    /// Whether the score reaches the model's operating threshold.
    pub mitosis: Option<bool>,
    /// The error, naming the file, when the image could not be scored.
    pub error: Option<String>,
}

/// Scores the centre crop (the classifier's field of view, resampled from
/// `input_mpp`, default the card's 0.25) of every image, in parallel; one
/// bad file gives one result with `error` set.
pub fn classify_images(detector: &Detector, paths: &[PathBuf], input_mpp: Option<f64>) -> Vec<ClassifyResult> {
    let mpp = input_mpp.unwrap_or(detector.bundle().card.default_input_mpp);
    let threshold = detector.bundle().card.operating_threshold;
    paths
        .par_iter()
        .map(|path| {
            let image = crate::batch::image_id(path);
            match classify_one(detector, path, mpp) {
                Ok(score) => ClassifyResult {
                    path: path.clone(),
                    image,
                    score: Some(score),
                    mitosis: Some(score >= threshold),
                    error: None,
                },
                Err(e) => {
                    ClassifyResult { path: path.clone(), image, score: None, mitosis: None, error: Some(e.to_string()) }
                }
            }
        })
        .collect()
}

fn classify_one(detector: &Detector, path: &Path, mpp: f64) -> Result<f64, DetectError> {
    let image = mitoscope_imaging::read_image(path)?;
    crate::batch::warn_if_grayscale(path, &image);
    warn_if_smaller_than_crop(detector, path, &image, mpp);
    let centre = ((f64::from(image.width()) - 1.0) / 2.0, (f64::from(image.height()) - 1.0) / 2.0);
    let scores = detector
        .score_at(&image, &[centre], mpp)
        .map_err(|e| DetectError::Input { path: path.to_owned(), message: e.to_string() })?;
    scores.first().copied().ok_or_else(|| DetectError::Input { path: path.to_owned(), message: "no score".into() })
}

/// Warns when the image covers well under the classifier's crop (its edge
/// pixels are then repeated to fill it, which the network never saw in
/// training), so that a score from a tiny crop or a wrong `--mpp` is not
/// taken at face value.
fn warn_if_smaller_than_crop(detector: &Detector, path: &Path, image: &image::RgbImage, mpp: f64) {
    let config = &detector.bundle().classifier_config;
    let crop_um = config.crop_size as f64 * config.mpp;
    let image_um = f64::from(image.width().min(image.height())) * mpp;
    if image_um < 0.75 * crop_um {
        tracing::warn!(
            "{}: the image is {:.0} µm across at {mpp} µm/px, smaller than the classifier's {crop_um:.0} µm crop; \
             its edges are repeated to fill the crop, so the score is less reliable (is --mpp right?)",
            path.display(),
            image_um
        );
    }
}
