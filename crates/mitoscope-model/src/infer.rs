//! Batched inference helpers on plain RGB images.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use image::RgbImage;

use crate::ModelError;
use crate::candidate::{CandidateNet, ProbabilityMap, SIDE_MULTIPLE};
use crate::classifier::PatchClassifier;
use crate::data::images_to_tensor;

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

/// Most views [`classify_crops_averaged`] takes: the 8 symmetries of a square.
pub const MAX_VIEWS: usize = 8;

/// Mitosis probability of each crop, averaged over `views` of its dihedral
/// orientations: 1 = the crop as given, 2 adds its mirror image, 4 all flips,
/// 8 the transposed ones too (`views` is clamped to 1..=8; other counts take
/// the first `views` of that order).
///
/// A mitotic figure has no preferred orientation and training augments with
/// flips and 90° turns, yet a small network's answer still moves with the
/// orientation; the average is a steadier score than any one view. Costs
/// `views` times one pass; crops must be square.
pub fn classify_crops_averaged(
    model: &PatchClassifier,
    crops: &[RgbImage],
    views: usize,
    device: &Device,
) -> Result<Vec<f32>, ModelError> {
    let views = views.clamp(1, MAX_VIEWS);
    if views == 1 {
        return classify_crops(model, crops, device);
    }
    if let Some(c) = crops.iter().find(|c| c.width() != c.height()) {
        return Err(ModelError::Data(format!(
            "averaging over orientations needs square crops, found {}x{}",
            c.width(),
            c.height()
        )));
    }
    let mut scores = Vec::with_capacity(crops.len());
    // Fewer crops per pass, so that a pass holds about CLASSIFY_BATCH views.
    for chunk in crops.chunks(CLASSIFY_BATCH.div_ceil(views).max(1)) {
        let batch = images_to_tensor(chunk, device)?;
        let oriented: Vec<Tensor<4>> = (0..views).map(|v| dihedral_view(batch.clone(), v)).collect();
        let probs = tensor_values(sigmoid(model.forward(Tensor::cat(oriented, 0))))?;
        let n = chunk.len();
        for i in 0..n {
            scores.push((0..views).map(|v| probs[v * n + i]).sum::<f32>() / views as f32);
        }
    }
    Ok(scores)
}

/// View `v` (0..8) of `[B, C, S, S]`: identity, mirror, vertical flip, 180°
/// turn, then the same four of the transpose.
fn dihedral_view(x: Tensor<4>, v: usize) -> Tensor<4> {
    let x = if v >= 4 { x.swap_dims(2, 3) } else { x };
    match v % 4 {
        0 => x,
        1 => x.flip([3]),
        2 => x.flip([2]),
        _ => x.flip([2, 3]),
    }
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
        RgbImage::from_fn(pw as u32, ph as u32, |x, y| *image.get_pixel(x.min(w as u32 - 1), y.min(h as u32 - 1)))
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
    fn averaged_views_are_the_mean_over_turned_and_mirrored_crops() {
        let device = Device::flex();
        let model = PatchClassifierConfig::new().with_crop_size(16).with_base_channels(4).init(&device);
        let crop = random_image(16, 16, 5);
        let turn = |img: &RgbImage| image::imageops::rotate90(img);
        let mirror = |img: &RgbImage| image::imageops::flip_horizontal(img);
        // The 8 orientations, made with `image` rather than tensor ops.
        let mut all = Vec::new();
        let mut r = crop.clone();
        for _ in 0..4 {
            all.push(r.clone());
            all.push(mirror(&r));
            r = turn(&r);
        }
        let singles = classify_crops(&model, &all, &device).unwrap();
        let mean8 = singles.iter().sum::<f32>() / 8.0;
        let spread =
            singles.iter().cloned().fold(f32::MIN, f32::max) - singles.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1e-4, "an untrained net should see orientation: {singles:?}");
        // Averaged over 8 views, every orientation of a crop scores the same: the mean.
        let averaged = classify_crops_averaged(&model, &all, 8, &device).unwrap();
        for a in &averaged {
            assert!((a - mean8).abs() < 1e-5, "{a} vs {mean8}");
        }
        // Two views: the crop and its mirror.
        let two = classify_crops_averaged(&model, std::slice::from_ref(&crop), 2, &device).unwrap();
        assert!((two[0] - (singles[0] + singles[1]) / 2.0).abs() < 1e-5);
        // One view is the plain score; many crops (more than a pass) keep their order.
        assert_eq!(classify_crops_averaged(&model, &all, 1, &device).unwrap(), singles);
        let many: Vec<RgbImage> = (0..70).map(|i| random_image(16, 16, i)).collect();
        let plain = classify_crops(&model, &many, &device).unwrap();
        let by4 = classify_crops_averaged(&model, &many, 4, &device).unwrap();
        assert_eq!(by4.len(), 70);
        let mirrored: Vec<RgbImage> = many.iter().map(image::imageops::rotate180).collect();
        let by4_turned = classify_crops_averaged(&model, &mirrored, 4, &device).unwrap();
        for i in 0..70 {
            assert!((by4[i] - by4_turned[i]).abs() < 1e-5, "180° turns are among the 4 views");
        }
        assert!(plain.iter().zip(&by4).any(|(a, b)| (a - b).abs() > 1e-5));
        assert!(classify_crops_averaged(&model, &[random_image(16, 12, 1)], 8, &device).is_err());
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
