//! Batched inference helpers on plain RGB images.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use image::RgbImage;

use crate::candidate::{CandidateNet, ProbabilityMap, SIDE_MULTIPLE};
use crate::classifier::PatchClassifier;
use crate::data::images_to_tensor;
use crate::ModelError;

/// Crops per forward pass in [`classify_crops`]: bounds memory, keeps the
/// per-call overhead small.
pub const CLASSIFY_BATCH: usize = 64;

/// Mitosis probability (sigmoid of the logit) of each crop, in order.
///
/// Crops must already be at the classifier's size and resolution (see
/// [`crate::data::resample_crop`]); sizes may not be mixed within a call.
pub fn classify_crops(model: &PatchClassifier, crops: &[RgbImage], device: &Device) -> Result<Vec<f32>, ModelError> {
    let mut scores = Vec::with_capacity(crops.len());
    for chunk in crops.chunks(CLASSIFY_BATCH) {
        let logits = model.forward(images_to_tensor(chunk, device)?);
        scores.extend(tensor_values(sigmoid(logits))?);
    }
    Ok(scores)
}

/// Per-pixel mitosis probability of `image` (already at the network's
/// resolution), same size as the image.
///
/// The image is padded by edge replication to a multiple of
/// [`SIDE_MULTIPLE`] and the padding is cropped from the map again. The whole
/// image goes through in one pass; callers tile whole-slide regions.
pub fn candidate_map(model: &CandidateNet, image: &RgbImage, device: &Device) -> Result<ProbabilityMap, ModelError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(ModelError::Data("candidate map of an empty image".into()));
    }
    let pw = w.div_ceil(SIDE_MULTIPLE) * SIDE_MULTIPLE;
    let ph = h.div_ceil(SIDE_MULTIPLE) * SIDE_MULTIPLE;
    let padded = if (pw, ph) == (w, h) {
        image.clone()
    } else {
        RgbImage::from_fn(pw as u32, ph as u32, |x, y| {
            *image.get_pixel(x.min(w as u32 - 1), y.min(h as u32 - 1))
        })
    };
    let input = images_to_tensor(std::slice::from_ref(&padded), device)?;
    // The sliced convolutions only pay off on burn-flex's direct CPU kernel.
    let logits = if *device == Device::flex() { model.forward_sliced(input) } else { model.forward(input) };
    let probs = tensor_values(sigmoid(logits))?;
    let mut values = Vec::with_capacity(w * h);
    for row in probs.chunks(pw).take(h) {
        values.extend_from_slice(&row[..w]);
    }
    Ok(ProbabilityMap { width: w, height: h, values })
}

/// All values of a float tensor as `f32`, row-major.
pub(crate) fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    tensor.into_data().try_into_vec::<f32>().map_err(|e| ModelError::Tensor(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::random_image;
    use crate::{CandidateNetConfig, PatchClassifierConfig};

    #[test]
    fn classify_crops_gives_one_probability_per_crop() {
        let device = Device::flex();
        let model = PatchClassifierConfig::new().with_crop_size(16).with_base_channels(4).init(&device);
        let crops: Vec<_> = (0..3).map(|i| random_image(16, 16, i)).collect();
        let scores = classify_crops(&model, &crops, &device).unwrap();
        assert_eq!(scores.len(), 3);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        assert!(classify_crops(&model, &[], &device).unwrap().is_empty());
    }

    #[test]
    fn candidate_map_matches_odd_image_sizes() {
        let device = Device::flex();
        let model = CandidateNetConfig::new().with_base_channels(4).init(&device);
        let map = candidate_map(&model, &random_image(21, 13, 1), &device).unwrap();
        assert_eq!((map.width, map.height, map.values.len()), (21, 13, 21 * 13));
        assert!(map.values.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
