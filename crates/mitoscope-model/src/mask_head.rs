//! The mask head: outlines of detected figures at the scan's resolution.
//!
//! Stage 1 works at 0.5 µm/px for speed and is trained on one heat map
//! (masks where they exist, discs elsewhere), so an outline cut from it is a
//! coarse blob. The mask head is a second network of the same U-Net shape
//! ([`CandidateNet`]) run only on a crop centred on each detection, at about
//! 0.25 µm/px, and trained only on pixel masks (GZMH's, ICPR's mask
//! patches): its map says which pixels of the crop are the figure's
//! chromatin. Reusing the candidate net's shape and training loop
//! ([`crate::candidate_training`]) keeps one tested encoder-decoder and one
//! resumable loop; only the data and resolution differ.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::candidate::{CandidateNet, CandidateNetConfig, ProbabilityMap, SIDE_MULTIPLE};
use crate::data::images_to_tensor;
use crate::infer::tensor_values;

/// Shape, resolution and read-out of a [`MaskHead`]; stored in model bundles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskHeadConfig {
    /// The network (its `mpp` is the crop's resolution).
    pub net: CandidateNetConfig,
    /// Side of the square crop around a detection, pixels at `net.mpp` (a
    /// multiple of 8).
    pub crop_size: usize,
    /// Probability a pixel needs to belong to the figure.
    pub threshold: f32,
    /// Blobs of the thresholded map with a pixel within this distance (µm)
    /// of the detection's centre make up the figure: anaphase and telophase
    /// figures are two chromatin masses either side of the centre.
    pub reach_um: f64,
}

impl Default for MaskHeadConfig {
    fn default() -> Self {
        // 80 px at 0.25 µm/px = 20 µm: the largest figures (late anaphase) fit.
        Self { net: CandidateNetConfig::new().with_mpp(0.25), crop_size: 80, threshold: 0.5, reach_um: 3.0 }
    }
}

impl MaskHeadConfig {
    /// Settings that cannot be used, named.
    pub fn check(&self) -> Result<(), ModelError> {
        let ok = self.crop_size >= SIDE_MULTIPLE
            && self.crop_size.is_multiple_of(SIDE_MULTIPLE)
            && self.net.mpp.is_finite()
            && self.net.mpp > 0.0
            && self.threshold.is_finite()
            && (0.0..=1.0).contains(&self.threshold)
            && self.reach_um.is_finite()
            && self.reach_um >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(ModelError::Data(format!(
                "mask head config unusable: crop {} px (a multiple of {SIDE_MULTIPLE}), {} µm/px, threshold {}, reach {} µm",
                self.crop_size, self.net.mpp, self.threshold, self.reach_um
            )))
        }
    }
}

/// A trained mask head and its settings.
#[derive(Debug, Clone)]
pub struct MaskHead {
    /// The network.
    pub net: CandidateNet,
    /// Its shape, resolution and read-out.
    pub config: MaskHeadConfig,
}

/// Crops per forward pass of [`MaskHead::maps`].
const MASK_BATCH: usize = 32;

impl MaskHead {
    /// Per-pixel figure probability of each crop (`config.crop_size` square,
    /// at `config.net.mpp`, as [`crate::data::resample_crop`] cuts them).
    pub fn maps(&self, crops: &[RgbImage], device: &Device) -> Result<Vec<ProbabilityMap>, ModelError> {
        let side = self.config.crop_size;
        if let Some(c) = crops.iter().find(|c| (c.width() as usize, c.height() as usize) != (side, side)) {
            return Err(ModelError::Data(format!(
                "mask head crops must be {side}x{side}, found {}x{}",
                c.width(),
                c.height()
            )));
        }
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(MASK_BATCH) {
            let input = images_to_tensor(chunk, device)?;
            let logits =
                if *device == Device::flex() { self.net.forward_sliced(input) } else { self.net.forward(input) };
            let probs = tensor_values(sigmoid(logits))?;
            out.extend(probs.chunks(side * side).map(|v| ProbabilityMap {
                width: side,
                height: side,
                values: v.to_vec(),
            }));
        }
        Ok(out)
    }

    /// The figure's pixels in a map from [`Self::maps`]: see [`figure_pixels`].
    pub fn figure(&self, map: &ProbabilityMap) -> Vec<(u32, u32)> {
        // The crop's centre pixel position, as `resample_crop` centres it.
        let centre = ((map.width as f64 - 1.0) / 2.0, (map.height as f64 - 1.0) / 2.0);
        figure_pixels(map, self.config.threshold, centre, self.config.reach_um / self.config.net.mpp)
    }
}

/// The 4-connected blobs of `map >= threshold` that have a pixel within
/// `reach` pixels of `centre`, as one pixel list (row-major within each blob).
/// Empty when no blob comes that close: the head sees no figure there.
pub fn figure_pixels(map: &ProbabilityMap, threshold: f32, centre: (f64, f64), reach: f64) -> Vec<(u32, u32)> {
    let (w, h) = (map.width, map.height);
    if map.values.len() != w * h {
        return Vec::new();
    }
    let on = |i: usize| map.values[i] >= threshold; // NaN is never on
    let near = |x: usize, y: usize| (x as f64 - centre.0).powi(2) + (y as f64 - centre.1).powi(2) <= reach * reach;
    let mut label = vec![false; w * h];
    let mut out = Vec::new();
    for start in 0..w * h {
        if label[start] || !on(start) {
            continue;
        }
        // Flood one blob, noting whether it reaches the centre.
        let mut blob = Vec::new();
        let mut stack = vec![start];
        label[start] = true;
        let mut reaches = false;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            reaches |= near(x, y);
            blob.push((x as u32, y as u32));
            let mut visit = |j: usize| {
                if !label[j] && on(j) {
                    label[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        if reaches {
            blob.sort_by_key(|&(x, y)| (y, x));
            out.extend(blob);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with(w: usize, h: usize, on: &[(usize, usize)]) -> ProbabilityMap {
        let mut m = ProbabilityMap::zeros(w, h);
        for &(x, y) in on {
            m.values[y * w + x] = 0.9;
        }
        m
    }

    #[test]
    fn figure_is_the_blobs_reaching_the_centre() {
        // Two masses either side of the centre (anaphase) and one far blob.
        let mut on = vec![(3, 5), (4, 5), (3, 6), (7, 5), (8, 5), (15, 15), (16, 15)];
        on.push((5, 9));
        let m = map_with(20, 20, &on);
        let px = figure_pixels(&m, 0.5, (5.5, 5.5), 2.6);
        assert_eq!(px, vec![(3, 5), (4, 5), (3, 6), (7, 5), (8, 5)]);
        // Nothing within reach: no figure.
        assert!(figure_pixels(&m, 0.5, (12.0, 1.0), 2.0).is_empty());
        // A higher threshold switches every pixel off.
        assert!(figure_pixels(&m, 0.95, (5.5, 5.5), 2.6).is_empty());
        // NaN pixels are never part of a figure; a malformed map has none.
        let mut nan = m.clone();
        nan.values.iter_mut().for_each(|v| *v = f32::NAN);
        assert!(figure_pixels(&nan, 0.5, (5.5, 5.5), 2.6).is_empty());
        nan.values.pop();
        assert!(figure_pixels(&nan, 0.0, (5.5, 5.5), 2.6).is_empty());
    }

    #[test]
    fn maps_have_the_crop_size_and_refuse_other_sizes() {
        let device = Device::flex();
        let config = MaskHeadConfig {
            net: CandidateNetConfig::new().with_base_channels(4).with_mpp(0.25),
            crop_size: 16,
            ..Default::default()
        };
        config.check().unwrap();
        let head = MaskHead { net: config.net.init(&device), config };
        let crops = vec![RgbImage::new(16, 16); 3];
        let maps = head.maps(&crops, &device).unwrap();
        assert_eq!(maps.len(), 3);
        assert!(
            maps.iter().all(|m| m.width == 16 && m.height == 16 && m.values.iter().all(|v| (0.0..=1.0).contains(v)))
        );
        let err = head.maps(&[RgbImage::new(16, 8)], &device).unwrap_err().to_string();
        assert!(err.contains("16x16") && err.contains("16x8"), "{err}");
        let bad = MaskHeadConfig { crop_size: 20, ..MaskHeadConfig::default() };
        assert!(bad.check().is_err());
    }
}
