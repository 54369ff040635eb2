//! [`Detector`]: one image in, scored mitosis detections out.
//!
//! 1. The image is resampled once to the model's mpp and covered by
//!    overlapping square tiles *in model pixels* ([`crate::tiling`]), mapped
//!    in parallel. (Whole slides are cut into regions by the caller, so the
//!    resampled copy stays bounded.)
//! 2. Stage 1 maps each tile; peaks above the card's candidate threshold that
//!    the tile owns become candidates, with an optional outline (the
//!    thresholded heat-map blob around the peak).
//! 3. Candidates from all tiles are merged by centre distance.
//! 4. Stage 2 scores a crop at each candidate, in batches.
//! 5. Where the bundle has a mask head, it outlines each detection at or
//!    above the threshold from a crop at its own resolution.
//!
//! Coordinates in [`Detection`] are input-image pixels (x = column, y = row).

use burn::tensor::Device;
use image::RgbImage;
use mitoscope_geom::Mpp;
use mitoscope_model::burn;
use mitoscope_model::candidate::{ProbabilityMap, SIDE_MULTIPLE, blob_centre, blob_pixels, peaks};
use mitoscope_model::data::{CropSpec, copy_block, resample_crop, resample_grid};
use mitoscope_model::infer::{candidate_map, classify_crops_averaged};
use rayon::prelude::*;

use crate::tiling::{Scored, merge_by_distance, tile_grid};
use crate::{CandidateCentre, DetectError, ModelBundle};

/// Per-call settings of [`Detector::detect_image`].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    /// Stage-2 score to report at; `None` = the model card's operating threshold.
    pub threshold: Option<f64>,
    /// Return every stage-1 candidate (with its stage-2 score), not only those
    /// at or above the threshold.
    pub keep_all_candidates: bool,
    /// Tile side in model pixels (rounded up to a multiple of 8).
    pub tile_px: u32,
    /// Overlap between neighbouring tiles in model pixels (at most half a tile).
    pub overlap_px: u32,
    /// Outline each detection from the stage-1 heat map.
    pub polygons: bool,
}

impl Default for DetectOptions {
    fn default() -> Self {
        // At most 640 px at 0.5 µm/px = 320 µm (an HPF at 0.25 µm/px is 1042
        // model px: 2 x 2 balanced tiles); 64 px overlap = 32 µm, two figure widths.
        Self { threshold: None, keep_all_candidates: false, tile_px: 640, overlap_px: 64, polygons: true }
    }
}

/// One scored candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Column of the centre, input-image pixels.
    pub x: f64,
    /// Row of the centre, input-image pixels.
    pub y: f64,
    /// Final mitosis score in [0, 1]: the stage-2 probability, fused with
    /// the stage-1 peak as the model card says ([`crate::ScoreFusion`]).
    pub score: f64,
    /// Stage-1 heat-map peak value.
    pub candidate_score: f64,
    /// Outline (input-image pixels): a ring per separate part of the figure
    /// (two for the chromatin masses of an anaphase), none where neither the
    /// mask head nor the heat map gives one.
    pub outline: Vec<Vec<(f64, f64)>>,
}

impl Scored for Detection {
    fn position(&self) -> (f64, f64) {
        (self.x, self.y)
    }
    // Merging across tiles happens before stage 2: it ranks by the stage-1 peak.
    #[allow(clippy::misnamed_getters)]
    fn score(&self) -> f64 {
        self.candidate_score
    }
}

/// A loaded model on a device, ready to run on any number of images (share it
/// across threads by reference).
#[derive(Debug, Clone)]
pub struct Detector {
    bundle: ModelBundle,
    device: Device,
}

/// Stage-2 crops scored per forward pass: bounds memory on candidate-rich
/// images; small enough that a few hundred candidates spread over the cores.
const CROP_CHUNK: usize = 64;

/// The input resampled onto the model's pixel grid.
struct ModelGrid {
    image: RgbImage,
    /// Input pixels per model pixel.
    step: f64,
    mpp: Mpp,
}

impl ModelGrid {
    /// Model-grid coordinate -> input pixel (pixel centres align).
    fn to_input(&self, u: f64) -> f64 {
        (u + 0.5) * self.step - 0.5
    }
    /// Input pixel -> model-grid coordinate.
    fn to_model(&self, x: f64) -> f64 {
        (x + 0.5) / self.step - 0.5
    }
}

/// A detection's outline parts, input pixels (none where no figure is seen).
type Outline = Vec<Vec<(f64, f64)>>;

/// Peaks farther than this (µm) from their seed are not part of its outline.
const OUTLINE_RADIUS_UM: f64 = 10.0;

/// Input resolutions (µm/px) the detector reads: below is not a light
/// microscope, above is coarser than a 5x scan, where mitoses are a pixel or
/// two. Resampling to the model's resolution from outside this range would
/// also ask for absurd buffers (an HPF read at 40 µm/px is 80x upsampled).
pub const DETECTABLE_MPP: std::ops::RangeInclusive<f64> = 0.05..=2.0;

/// `input_mpp` as an [`Mpp`], if it lies in [`DETECTABLE_MPP`].
pub fn checked_input_mpp(input_mpp: f64) -> Result<Mpp, DetectError> {
    if !DETECTABLE_MPP.contains(&input_mpp) {
        return Err(DetectError::Config(format!(
            "input resolution {input_mpp} µm/px is outside {}..={} µm/px, where mitoses can be detected \
             (a light microscope at 5x-100x); give the image's resolution with --mpp",
            DETECTABLE_MPP.start(),
            DETECTABLE_MPP.end()
        )));
    }
    Mpp::new(input_mpp).map_err(|e| DetectError::Config(format!("input mpp {input_mpp}: {e}")))
}

impl Detector {
    /// Wraps a bundle for inference on `device`.
    pub fn new(bundle: ModelBundle, device: Device) -> Self {
        Self { bundle, device }
    }

    /// The model.
    pub fn bundle(&self) -> &ModelBundle {
        &self.bundle
    }

    /// The device inference runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The threshold `options` resolve to.
    pub fn threshold(&self, options: &DetectOptions) -> f64 {
        options.threshold.unwrap_or(self.bundle.card.operating_threshold)
    }

    /// The finest µm/px any network of the model reads: stage 1's grid,
    /// stage 2's crops, the mask head's crops.
    pub fn finest_mpp(&self) -> f64 {
        let head = self.bundle.mask_head.as_ref().map(|h| h.config.net.mpp);
        [self.bundle.card.model_mpp, self.bundle.classifier_config.mpp]
            .into_iter()
            .chain(head)
            .filter(|m| m.is_finite() && *m > 0.0)
            .fold(f64::INFINITY, f64::min)
    }

    /// Stage 1 only: merged candidates (input pixels) with `score` 0, strongest peak first;
    /// outlined from the map (with `options.polygons`) only when the bundle has no mask head.
    pub fn candidates(
        &self,
        image: &RgbImage,
        input_mpp: f64,
        options: &DetectOptions,
    ) -> Result<Vec<Detection>, DetectError> {
        Ok(self.stage1(image, input_mpp, options)?.0)
    }

    /// Stage 1, and the model-resolution grid it ran on (reused by stage 2).
    fn stage1(
        &self,
        image: &RgbImage,
        input_mpp: f64,
        options: &DetectOptions,
    ) -> Result<(Vec<Detection>, ModelGrid), DetectError> {
        let in_mpp = checked_input_mpp(input_mpp)?;
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return Err(DetectError::Config(format!("image is empty ({w}x{h})")));
        }
        let card = &self.bundle.card;
        let model_mpp = Mpp::new(card.model_mpp).map_err(|e| DetectError::Config(format!("model mpp: {e}")))?;
        let step = card.model_mpp / input_mpp; // input pixels per model pixel
        let model_w = (f64::from(w) / step).ceil().max(1.0) as u32;
        let model_h = (f64::from(h) / step).ceil().max(1.0) as u32;
        let want = options.tile_px.max(SIDE_MULTIPLE as u32);
        let overlap = options.overlap_px.min(want / 2);
        let tile = balanced_side(model_w, want, overlap).max(balanced_side(model_h, want, overlap));
        let min_distance_model = card.min_distance_um / card.model_mpp;
        let centre_of = |map: &ProbabilityMap, p: &mitoscope_model::Peak| match card.candidate_centre {
            CandidateCentre::Peak => (p.x as f64, p.y as f64),
            // The blob may reach as far as the spacing candidates keep.
            CandidateCentre::BlobCentre => blob_centre(map, p, min_distance_model as f32),
        };
        let tiles = tile_grid(model_w, model_h, tile, overlap);
        // The grid covers every tile, so tiles are plain copies out of it.
        let grid_w = tiles.iter().map(|t| t.x + t.size).max().unwrap_or(model_w);
        let grid_h = tiles.iter().map(|t| t.y + t.size).max().unwrap_or(model_h);
        let started = std::time::Instant::now();
        let grid = ModelGrid { image: resample_grid(image, in_mpp, model_mpp, grid_w, grid_h), step, mpp: model_mpp };
        let resampled = started.elapsed();

        // A mask head outlines the detections afterwards (and only them), so the
        // map's outlines of its candidates would be thrown away.
        let map_outlines = options.polygons && self.bundle.mask_head.is_none();
        // Tiles in parallel: on one large image this is what uses every core.
        let per_tile: Vec<Result<Vec<Detection>, DetectError>> = tiles
            .par_iter()
            .map(|t| {
                let tile_img = copy_block(&grid.image, i64::from(t.x), i64::from(t.y), t.size);
                let map = candidate_map(&self.bundle.candidate, &tile_img, &self.device)?;
                let found = peaks(&map, card.candidate_threshold as f32, min_distance_model as f32);
                let mut out = Vec::new();
                for p in found {
                    let (gx, gy) = (t.x + p.x as u32, t.y + p.y as u32);
                    if !t.owns(gx, gy) {
                        continue;
                    }
                    let outline = if map_outlines {
                        // The map is a per-pixel probability (trained on masks where a dataset has
                        // them): cut at 0.5, or at half a weaker peak so weak figures get an outline.
                        let level = (0.5 * p.score).min(0.5).max(card.candidate_threshold as f32);
                        map_outline(&map, p.x, p.y, level, OUTLINE_RADIUS_UM / card.model_mpp).map(|poly| {
                            poly.into_iter()
                                .map(|(u, v)| (grid.to_input(f64::from(t.x) + u), grid.to_input(f64::from(t.y) + v)))
                                .collect()
                        })
                    } else {
                        None
                    };
                    let (cx, cy) = centre_of(&map, &p);
                    out.push(Detection {
                        x: grid.to_input(f64::from(t.x) + cx),
                        y: grid.to_input(f64::from(t.y) + cy),
                        score: 0.0,
                        candidate_score: f64::from(p.score),
                        outline: outline.into_iter().collect(),
                    });
                }
                Ok(out)
            })
            .collect();
        let mut candidates = Vec::new();
        for found in per_tile {
            candidates.extend(found?);
        }
        // Where the time goes, for `-vv` (`MITOSCOPE_LOG=debug`).
        tracing::debug!(
            resample_ms = resampled.as_millis() as u64,
            stage1_ms = (started.elapsed() - resampled).as_millis() as u64,
            tiles = tiles.len(),
            tile_px = tile,
            candidates = candidates.len(),
            "stage 1 of a {w}x{h} image"
        );
        Ok((merge_by_distance(candidates, min_distance_model * step), grid))
    }

    /// Detections in `image` (at `input_mpp` µm/px), strongest stage-2 score first.
    pub fn detect_image(
        &self,
        image: &RgbImage,
        input_mpp: f64,
        options: &DetectOptions,
    ) -> Result<Vec<Detection>, DetectError> {
        self.detect_image_where(image, input_mpp, options, &|_, _| true)
    }

    /// As [`Detector::detect_image`], keeping only candidates at which
    /// `keep(x, y)` holds (before stage 2: a slide tile scores only the core
    /// it owns).
    pub fn detect_image_where(
        &self,
        image: &RgbImage,
        input_mpp: f64,
        options: &DetectOptions,
        keep: &(dyn Fn(f64, f64) -> bool + Sync),
    ) -> Result<Vec<Detection>, DetectError> {
        let threshold = self.threshold(options);
        if !(threshold.is_finite() && (0.0..=1.0).contains(&threshold)) {
            return Err(DetectError::Config(format!("threshold {threshold} is not in [0, 1]")));
        }
        let (mut candidates, grid) = self.stage1(image, input_mpp, options)?;
        candidates.retain(|d| keep(d.x, d.y));
        let fusion = self.bundle.card.score_fusion;
        if !options.keep_all_candidates {
            // Candidates that cannot reach the threshold whatever stage 2 says are dropped unscored.
            let min_peak = fusion.min_peak_for(threshold);
            candidates.retain(|d| d.candidate_score >= min_peak);
        }
        let in_mpp = checked_input_mpp(input_mpp)?;
        let crop_spec = CropSpec::for_classifier(&self.bundle.classifier_config)?;
        let started = std::time::Instant::now();
        // Same resolution as stage 1 (the default models): crops are copies out
        // of the grid, centred within half a model pixel of the candidate.
        let from_grid = (crop_spec.mpp.get() - grid.mpp.get()).abs() < 1e-9;
        let half = i64::from(crop_spec.crop_size / 2);
        let scores: Vec<Result<Vec<f32>, DetectError>> = candidates
            .par_chunks(CROP_CHUNK)
            .map(|chunk| {
                let crops: Vec<RgbImage> = chunk
                    .iter()
                    .map(|d| {
                        if from_grid {
                            let (u, v) = (grid.to_model(d.x).round() as i64, grid.to_model(d.y).round() as i64);
                            copy_block(&grid.image, u - half, v - half, crop_spec.crop_size)
                        } else {
                            resample_crop(image, (d.x, d.y), in_mpp, crop_spec)
                        }
                    })
                    .collect();
                self.classify(&crops)
            })
            .collect();
        let mut flat = Vec::with_capacity(candidates.len());
        for chunk in scores {
            flat.extend(chunk?);
        }
        tracing::debug!(stage2_ms = started.elapsed().as_millis() as u64, crops = flat.len(), "stage 2");
        for (d, s) in candidates.iter_mut().zip(flat) {
            if !s.is_finite() {
                return Err(DetectError::Config("the classifier produced a non-finite score".into()));
            }
            d.score = fusion.fuse(d.candidate_score, f64::from(s));
        }
        if !options.keep_all_candidates {
            candidates.retain(|d| d.score >= threshold);
        }
        if options.polygons {
            self.outline_with_mask_head(&mut candidates, image, in_mpp, threshold)?;
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.y.total_cmp(&b.y)).then(a.x.total_cmp(&b.x)));
        Ok(candidates)
    }

    /// Replaces the stage-1 outline of each detection at or above `threshold`
    /// by the mask head's (none where the head sees no figure), when the
    /// bundle has a head.
    fn outline_with_mask_head(
        &self,
        detections: &mut [Detection],
        image: &RgbImage,
        in_mpp: Mpp,
        threshold: f64,
    ) -> Result<(), DetectError> {
        let Some(head) = &self.bundle.mask_head else {
            return Ok(());
        };
        let spec = CropSpec {
            crop_size: head.config.crop_size as u32,
            mpp: Mpp::new(head.config.net.mpp).map_err(|e| DetectError::Config(format!("mask head mpp: {e}")))?,
        };
        let step = spec.mpp.get() / in_mpp.get(); // input pixels per crop pixel
        let half = (head.config.crop_size as f64 - 1.0) / 2.0;
        let started = std::time::Instant::now();
        let mut chosen: Vec<&mut Detection> = detections.iter_mut().filter(|d| d.score >= threshold).collect();
        let outlines: Vec<Result<Vec<Outline>, DetectError>> = chosen
            .par_chunks(CROP_CHUNK)
            .map(|chunk| {
                let crops: Vec<RgbImage> =
                    chunk.iter().map(|d| resample_crop(image, (d.x, d.y), in_mpp, spec)).collect();
                let maps = head.maps(&crops, &self.device)?;
                Ok(chunk
                    .iter()
                    .zip(&maps)
                    .map(|(d, map)| {
                        let pixels = head.figure(map);
                        if pixels.len() < 3 {
                            return Vec::new(); // too small to be the figure
                        }
                        // The figure's own edges: a ring per mass (two in anaphase).
                        mitoscope_formats::geojson::pixel_outlines(&pixels)
                            .iter()
                            .map(|part| {
                                // Crop pixel u lies at centre + (u - half) * step in the input.
                                part.vertices
                                    .iter()
                                    .map(|p| (d.x + (p.x - half) * step, d.y + (p.y - half) * step))
                                    .collect()
                            })
                            .collect()
                    })
                    .collect())
            })
            .collect();
        let mut outlines = outlines.into_iter();
        for chunk in chosen.chunks_mut(CROP_CHUNK) {
            let found = outlines.next().unwrap_or_else(|| Ok(Vec::new()))?;
            for (d, outline) in chunk.iter_mut().zip(found) {
                d.outline = outline;
            }
        }
        tracing::debug!(mask_ms = started.elapsed().as_millis() as u64, "mask head");
        Ok(())
    }

    /// Stage-2 probabilities of crops: the mean over the bundle's networks,
    /// each averaged over the card's orientations.
    fn classify(&self, crops: &[RgbImage]) -> Result<Vec<f32>, DetectError> {
        let views = usize::from(self.bundle.card.classifier_views);
        let mut sum = classify_crops_averaged(&self.bundle.classifier, crops, views, &self.device)?;
        for extra in &self.bundle.extra_classifiers {
            let scores = classify_crops_averaged(extra, crops, views, &self.device)?;
            sum.iter_mut().zip(scores).for_each(|(s, v)| *s += v);
        }
        let networks = (1 + self.bundle.extra_classifiers.len()) as f32;
        Ok(sum.into_iter().map(|s| s / networks).collect())
    }

    /// Stage-2 score of the crop centred on `(x, y)` of `image` (input pixels at `input_mpp`).
    pub fn score_at(&self, image: &RgbImage, centres: &[(f64, f64)], input_mpp: f64) -> Result<Vec<f64>, DetectError> {
        let in_mpp = checked_input_mpp(input_mpp)?;
        let spec = CropSpec::for_classifier(&self.bundle.classifier_config)?;
        let mut out = Vec::with_capacity(centres.len());
        for chunk in centres.chunks(CROP_CHUNK) {
            let crops: Vec<RgbImage> = chunk.iter().map(|&c| resample_crop(image, c, in_mpp, spec)).collect();
            out.extend(self.classify(&crops)?.into_iter().map(f64::from));
        }
        Ok(out)
    }
}

/// The tile side (a multiple of 8, at most `want` rounded up) that covers
/// `len` pixels with the fewest tiles, shrunk so they share the length evenly:
/// fixed-size tiles over an HPF (1024 model px) would be 3 x 3 tiles of 512,
/// twice the pixels of the image; balanced, 2 x 2 of 544.
fn balanced_side(len: u32, want: u32, overlap: u32) -> u32 {
    let round = |v: u32| v.max(1).div_ceil(SIDE_MULTIPLE as u32) * SIDE_MULTIPLE as u32;
    let want = round(want);
    if len <= want {
        return round(len);
    }
    let step = want.saturating_sub(overlap).max(1);
    let tiles = (len - overlap).div_ceil(step);
    round((len + (tiles - 1) * overlap).div_ceil(tiles)).min(want)
}

/// Outline (map pixels, along the pixels' edges) of the 4-connected blob of
/// map values >= `threshold` containing `(x, y)`, within `radius` pixels of
/// it: what the map drew, not its convex hull (as the mask head's outlines).
/// `None` for blobs of fewer than 3 pixels.
fn map_outline(map: &ProbabilityMap, x: usize, y: usize, threshold: f32, radius: f64) -> Option<Vec<(f64, f64)>> {
    let pixels: Vec<(u32, u32)> =
        blob_pixels(map, x, y, threshold, radius).into_iter().map(|(px, py)| (px as u32, py as u32)).collect();
    if pixels.len() < 3 {
        return None;
    }
    let outline = mitoscope_formats::geojson::pixel_outline(&pixels)?;
    (outline.vertices.len() >= 3).then(|| outline.vertices.iter().map(|p| (p.x, p.y)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_hopeless_candidates_changes_no_detection() {
        let device = Device::flex();
        let mut bundle = crate::testutil::tiny_bundle(&device);
        bundle.card.score_fusion = crate::ScoreFusion::GeometricMean;
        let detector = Detector::new(bundle, device);
        let (img, _) = crate::synthetic::render_hpf(7, 300);
        let all = DetectOptions { keep_all_candidates: true, ..DetectOptions::default() };
        let scored = detector.detect_image(&img, 0.25, &all).unwrap();
        assert!(scored.len() > 4, "{} candidates", scored.len());
        for d in &scored {
            assert!((d.score - (d.candidate_score * d.score.powi(2) / d.candidate_score).sqrt()).abs() < 1e-9);
        }
        // A threshold in the middle of the fused scores, so some pass and some do not.
        let mut s: Vec<f64> = scored.iter().map(|d| d.score).collect();
        s.sort_by(f64::total_cmp);
        let t = s[s.len() / 2];
        let cut = DetectOptions { threshold: Some(t), ..DetectOptions::default() };
        let kept = detector.detect_image(&img, 0.25, &cut).unwrap();
        let expected: Vec<(f64, f64, f64)> =
            scored.iter().filter(|d| d.score >= t).map(|d| (d.x, d.y, d.score)).collect();
        let got: Vec<(f64, f64, f64)> = kept.iter().map(|d| (d.x, d.y, d.score)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn blob_centres_move_candidates_off_the_map_grid_and_within_reach() {
        let device = Device::flex();
        let bundle = crate::testutil::tiny_bundle(&device);
        let mut centred = bundle.clone();
        centred.card.candidate_centre = CandidateCentre::BlobCentre;
        // The candidate spacing in input pixels (0.25 µm/px).
        let spacing_px = bundle.card.min_distance_um / 0.25;
        let (img, _) = crate::synthetic::render_hpf(7, 300);
        let all = DetectOptions { keep_all_candidates: true, ..DetectOptions::default() };
        let at_peaks = Detector::new(bundle, device.clone()).detect_image(&img, 0.25, &all).unwrap();
        let at_blobs = Detector::new(centred, device).detect_image(&img, 0.25, &all).unwrap();
        // Peaks on one blob share its centre and merge there, so there can be fewer.
        assert!(at_peaks.len() > 4, "{} candidates", at_peaks.len());
        assert!(!at_blobs.is_empty() && at_blobs.len() <= at_peaks.len());
        // Stage 1 runs at 0.5 µm/px, 2 input pixels per map pixel: a peak is a
        // map pixel, x = 2u + 0.5; a blob centre need not be.
        let on_grid = |v: f64| ((v - 0.5) / 2.0).fract().abs() < 1e-9;
        assert!(at_peaks.iter().all(|d| on_grid(d.x) && on_grid(d.y)));
        assert!(at_blobs.iter().any(|d| !on_grid(d.x) || !on_grid(d.y)), "no candidate moved");
        // A centre lies within the spacing of its own peak, and that peak
        // within the spacing of a candidate kept at peaks.
        for b in &at_blobs {
            let d = at_peaks.iter().map(|p| (b.x - p.x).hypot(b.y - p.y)).fold(f64::INFINITY, f64::min);
            assert!(d <= 2.0 * spacing_px, "{d} px from every peak");
        }
    }

    #[test]
    fn keeping_part_of_the_image_scores_that_part_alike() {
        let device = Device::flex();
        let mut bundle = crate::testutil::tiny_bundle(&device);
        bundle.card.score_fusion = crate::ScoreFusion::GeometricMean;
        let detector = Detector::new(bundle, device);
        let (img, _) = crate::synthetic::render_hpf(8, 300);
        let options = DetectOptions { threshold: Some(0.3), ..DetectOptions::default() };
        let all = detector.detect_image(&img, 0.25, &options).unwrap();
        let left = detector.detect_image_where(&img, 0.25, &options, &|x, _| x < 150.0).unwrap();
        let expected: Vec<_> = all.iter().filter(|d| d.x < 150.0).cloned().collect();
        assert!(!expected.is_empty() && expected.len() < all.len(), "{} of {}", expected.len(), all.len());
        assert_eq!(left, expected, "same fused scores, same threshold, only the kept part");
    }

    #[test]
    fn an_ensemble_scores_the_mean_of_its_networks() {
        let device = Device::flex();
        let single = crate::testutil::tiny_bundle(&device);
        let mut other = single.clone();
        other.classifier = single.classifier_config.init(&device);
        let mut ensemble = single.clone();
        ensemble.extra_classifiers = vec![other.classifier.clone()];
        let (img, _) = crate::synthetic::render_hpf(9, 200);
        let centres = [(50.0, 60.0), (120.0, 100.0), (150.0, 30.0)];
        let score = |b: &ModelBundle| Detector::new(b.clone(), device.clone()).score_at(&img, &centres, 0.25).unwrap();
        let (a, b, mean) = (score(&single), score(&other), score(&ensemble));
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4), "two inits should differ: {a:?} {b:?}");
        for i in 0..centres.len() {
            assert!((mean[i] - (a[i] + b[i]) / 2.0).abs() < 1e-6, "{mean:?} vs {a:?} {b:?}");
        }
    }

    #[test]
    fn a_mask_head_outlines_the_detections_it_sees_a_figure_in() {
        use mitoscope_model::{CandidateNetConfig, MaskHead, MaskHeadConfig};
        let device = Device::flex();
        let mut bundle = crate::testutil::tiny_bundle(&device);
        bundle.card.operating_threshold = 0.0;
        let (img, _) = crate::synthetic::render_hpf(5, 240);
        let options = DetectOptions::default();
        let map_outlined = Detector::new(bundle.clone(), device.clone()).detect_image(&img, 0.25, &options).unwrap();
        assert!(!map_outlined.is_empty());
        // A head at 0.5 µm/px with every pixel on (threshold 0): the outline is
        // its whole 16-px crop, 32 input px square around the detection.
        let config = MaskHeadConfig {
            net: CandidateNetConfig::new().with_base_channels(2).with_mpp(0.5),
            crop_size: 16,
            threshold: 0.0,
            reach_um: 2.0,
        };
        bundle.mask_head = Some(MaskHead { net: config.net.init(&device), config: config.clone() });
        let with_head = Detector::new(bundle.clone(), device.clone()).detect_image(&img, 0.25, &options).unwrap();
        assert_eq!(with_head.len(), map_outlined.len(), "the head changes outlines, not detections");
        for d in &with_head {
            let [poly] = d.outline.as_slice() else { panic!("one outline: {:?}", d.outline) };
            let xs: Vec<f64> = poly.iter().map(|p| p.0 - d.x).collect();
            let ys: Vec<f64> = poly.iter().map(|p| p.1 - d.y).collect();
            let span = |v: &[f64]| {
                (v.iter().cloned().fold(f64::INFINITY, f64::min), v.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
            };
            // Pixel edges of crop pixels 0 and 15 around the centre 7.5, 2 input px per crop px.
            assert_eq!(span(&xs), (-16.0, 16.0), "{poly:?}");
            assert_eq!(span(&ys), (-16.0, 16.0), "{poly:?}");
        }
        // A head that sees no figure (no probability reaches 1): no outline at all.
        bundle.mask_head.as_mut().unwrap().config.threshold = 1.0;
        let blind = Detector::new(bundle.clone(), device.clone()).detect_image(&img, 0.25, &options).unwrap();
        assert!(blind.iter().all(|d| d.outline.is_empty()));
        // Polygons off: the head is not run.
        let off = DetectOptions { polygons: false, ..DetectOptions::default() };
        bundle.mask_head.as_mut().unwrap().config.threshold = 0.0;
        let none = Detector::new(bundle, device).detect_image(&img, 0.25, &off).unwrap();
        assert!(none.iter().all(|d| d.outline.is_empty()));
    }

    #[test]
    fn balanced_tiles_cover_with_little_waste() {
        // An HPF at 0.5 µm/px: 2 tiles of 552 per axis instead of 3 of 640.
        let side = balanced_side(1042, 640, 64);
        assert_eq!(side % 8, 0);
        assert!(side <= 640 && 2 * side - 64 >= 1042, "{side}");
        assert_eq!(tile_grid(1042, 1042, side, 64).len(), 4);
        assert_eq!(balanced_side(100, 640, 64), 104, "small inputs: one padded tile");
        // Long strips still get tiles no larger than asked.
        let long = balanced_side(10_000, 640, 64);
        assert!((560..=640).contains(&long), "{long}");
        for len in [1, 7, 8, 639, 640, 641, 1200, 4321] {
            let s = balanced_side(len, 640, 64);
            let tiles = tile_grid(len, 8, s, 64);
            assert!(tiles.iter().all(|t| t.size == s));
            // Every column is owned by exactly one tile.
            let owned: u32 = tiles.iter().filter(|t| t.y == 0).map(|t| t.core_x.1 - t.core_x.0).sum();
            assert_eq!(owned, len, "len {len}");
        }
    }

    #[test]
    fn outline_follows_the_blob() {
        let mut map = ProbabilityMap::zeros(10, 10);
        for (x, y) in [(4, 4), (5, 4), (4, 5), (5, 5), (8, 8)] {
            map.values[y * 10 + x] = 0.9;
        }
        let poly = map_outline(&map, 4, 4, 0.5, 5.0).unwrap();
        let xs: Vec<f64> = poly.iter().map(|p| p.0).collect();
        assert_eq!(xs.iter().cloned().fold(f64::MAX, f64::min), 3.5);
        assert_eq!(xs.iter().cloned().fold(f64::MIN, f64::max), 5.5);
        assert!(map_outline(&map, 8, 8, 0.5, 5.0).is_none(), "a single pixel has no outline");
        // An L of three pixels: the outline turns at the notch (6 corners)
        // where a hull would cut across it (5 corners, half a pixel more area).
        let mut l = ProbabilityMap::zeros(10, 10);
        for (x, y) in [(2, 2), (2, 3), (3, 3)] {
            l.values[y * 10 + x] = 0.9;
        }
        let poly = map_outline(&l, 2, 3, 0.5, 5.0).unwrap();
        assert_eq!(poly.len(), 6, "{poly:?}");
        assert!(poly.contains(&(2.5, 2.5)), "the notch's corner: {poly:?}");
        let area =
            poly.iter().zip(poly.iter().cycle().skip(1)).map(|(a, b)| a.0 * b.1 - b.0 * a.1).sum::<f64>().abs() / 2.0;
        assert_eq!(area, 3.0, "exactly the three pixels");
    }
}
