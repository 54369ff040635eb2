//! Hand-written training loop for the [`CandidateNet`] (stage 1), in the same
//! style as [`crate::training::train_classifier`]: Adam on per-pixel BCE with
//! logits, seeded tile sampling and augmentation, a validation pass, a
//! JSON-lines metrics log and an atomic checkpoint every epoch that a killed
//! run resumes from with identical results.
//!
//! # Data
//!
//! A [`CandidateSample`] is an image already at the network's resolution with
//! its heat-map target ([`crate::candidate::disc_target`] around centroids,
//! [`crate::candidate::mask_target`] from masks, all zeros for mitosis-free
//! tiles) and the mitosis centres it holds. Each epoch draws
//! `tiles_per_epoch` square tiles: a `positive_fraction` of them around a
//! random labelled centre (jittered, so the figure is not always in the
//! middle), the rest anywhere in a random sample. Tile and target get the
//! same random flip / 90° rotation; the tile also gets stain jitter.
//!
//! # Output folder
//!
//! Same layout as the classifier's: `config.json`
//! ([`CandidateTrainingConfig`]), `model.bpk`, `metrics.jsonl`
//! ([`CandidateEpochMetrics`]) and `checkpoints/epoch-NNNN/`.

use std::path::Path;
use std::time::Instant;

use burn::optim::AdamConfig;
use burn::prelude::*;
use image::{GrayImage, Rgb, RgbImage};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::augment::hed_jitter;
use crate::candidate::{CandidateNet, CandidateNetConfig, ProbabilityMap, SIDE_MULTIPLE, peaks};
use crate::data::images_to_tensor;
use crate::infer::candidate_map;
use crate::infer::tensor_values;
use crate::run_data::{self, Fingerprint};
use crate::training::{
    CONFIG_FILE, METRICS_FILE, MODEL_FILE, annealed_rate, append_metrics, bce_with_logits, candidate_step, derived_rng,
    latest_checkpoint, progress_bar, resume_from, truncate_metrics, write_checkpoint,
};
use crate::weights::{save_weights, write_atomically};
use crate::{ModelError, TrainOptions};

/// One training or validation image for the candidate network.
#[derive(Debug, Clone)]
pub struct CandidateSample {
    /// RGB image at the network's resolution ([`CandidateNetConfig::mpp`]).
    pub image: RgbImage,
    /// Heat-map target, same size as `image`, in 1/255 steps (255 = mitosis).
    /// A byte a pixel, not an f32: a GZMH-sized set holds ~1500 of these at
    /// ~1 MP each, and its targets (binary discs and masks) lose nothing.
    pub target: GrayImage,
    /// Mitosis centres `(x, y)` in `image` pixels (for positive tile sampling
    /// and validation recall); empty for mitosis-free images.
    pub centres: Vec<(f64, f64)>,
    /// Where it came from, for reports.
    pub origin: String,
    /// Relative chance of this image being picked for a random (not
    /// centre-directed) tile; 0 = never (e.g. small crops around a figure).
    pub random_weight: f64,
    /// Relative chance of each of its centres being picked for a
    /// centre-directed tile (to balance small in-domain sets against large ones).
    pub centre_weight: f64,
}

impl CandidateSample {
    /// A sample with weight 1 for both kinds of draws; `target`'s values are
    /// clamped to [0, 1] and kept in 1/255 steps (NaN reads as 0).
    pub fn new(image: RgbImage, target: ProbabilityMap, centres: Vec<(f64, f64)>, origin: impl Into<String>) -> Self {
        let bytes = target.values.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        // A malformed map becomes 0x0, which `validate` refuses, naming the sample.
        let target = (target.values.len() == target.width * target.height)
            .then(|| GrayImage::from_raw(target.width as u32, target.height as u32, bytes))
            .flatten()
            .unwrap_or_else(|| GrayImage::new(0, 0));
        Self { image, target, centres, origin: origin.into(), random_weight: 1.0, centre_weight: 1.0 }
    }

    /// The target at pixel index `i` (row-major), in [0, 1].
    fn target_at(&self, i: usize) -> f32 {
        f32::from(self.target.as_raw()[i]) / 255.0
    }

    /// The target as a map of probabilities.
    pub fn target_map(&self) -> ProbabilityMap {
        ProbabilityMap {
            width: self.target.width() as usize,
            height: self.target.height() as usize,
            values: (0..self.target.as_raw().len()).map(|i| self.target_at(i)).collect(),
        }
    }
}

/// Picks an index with probability proportional to its weight (cumulative sums).
fn pick(cumulative: &[f64], rng: &mut impl Rng) -> Option<usize> {
    let total = *cumulative.last()?;
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let r = rng.random_range(0.0..total);
    Some(cumulative.partition_point(|&c| c <= r).min(cumulative.len() - 1))
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += if w.is_finite() && w > 0.0 { w } else { 0.0 };
            acc
        })
        .collect()
}

/// Everything that defines a candidate training run; saved as `config.json`.
#[derive(Config, Debug)]
pub struct CandidateTrainingConfig {
    /// The network.
    pub model: CandidateNetConfig,
    /// Adam hyper-parameters.
    #[config(default = "AdamConfig::new()")]
    pub optimizer: AdamConfig,
    /// Epochs in total (a resumed run continues up to this number).
    #[config(default = 10)]
    pub num_epochs: usize,
    /// Tiles drawn per epoch.
    #[config(default = 2048)]
    pub tiles_per_epoch: usize,
    /// Side of a training tile in pixels (a multiple of 8).
    #[config(default = 64)]
    pub tile_size: usize,
    /// Share of tiles drawn around a labelled mitosis centre.
    #[config(default = 0.5)]
    pub positive_fraction: f64,
    /// Tiles per optimisation step.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// The last `decay_epochs` epochs anneal the learning rate to zero along a
    /// half cosine (0: constant throughout, as every run before it existed).
    /// At a constant rate the last epoch's weights are one noisy point of the
    /// trajectory (0.8's stage-1 validation loss went 0.049, 0.071, 0.056
    /// over its last three epochs), and the recipe's candidate
    /// threshold and mined negatives are read off those weights' peaks.
    #[config(default = 0)]
    pub decay_epochs: usize,
    /// Loss weight of target-1 pixels (mitosis discs are a tiny share of a tile).
    #[config(default = 5.0)]
    pub positive_weight: f32,
    /// Stain jitter: each HED concentration scaled within `1 ± hed_scale`.
    #[config(default = 0.05)]
    pub hed_scale: f32,
    /// Stain jitter: each HED concentration shifted within `± hed_shift`.
    #[config(default = 0.02)]
    pub hed_shift: f32,
    /// Probability threshold of peaks for the validation recall.
    #[config(default = 0.5)]
    pub peak_threshold: f32,
    /// Minimum distance between peaks in pixels (validation recall).
    #[config(default = 12.0)]
    pub peak_min_distance: f32,
    /// A labelled centre counts as found when a peak is within this many pixels.
    #[config(default = 16.0)]
    pub match_distance: f64,
    /// Seed of initialisation, tile sampling and augmentation.
    #[config(default = 42)]
    pub seed: u64,
    /// Complete checkpoints kept on disk.
    #[config(default = 2)]
    pub keep_checkpoints: usize,
}

/// One line of the candidate run's `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateEpochMetrics {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f32,
    /// Mean loss on the validation images (whole images, one pass each).
    pub val_loss: Option<f32>,
    /// Share of validation centres with a peak within `match_distance`.
    pub val_recall: Option<f32>,
    /// Peaks per validation image at `peak_threshold`.
    pub val_peaks_per_image: Option<f32>,
    /// Wall-clock seconds of the epoch.
    pub seconds: f32,
}

/// One line for progress logs: `train loss 0.5949, val loss 0.4263, recall
/// 1.000, 1165.0 peaks per image (6.5 s)`.
impl std::fmt::Display for CandidateEpochMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "train loss {:.4}", self.train_loss)?;
        if let Some(v) = self.val_loss {
            write!(f, ", val loss {v:.4}")?;
        }
        if let Some(r) = self.val_recall {
            write!(f, ", recall {r:.3}")?;
        }
        if let Some(p) = self.val_peaks_per_image {
            write!(f, ", {p:.1} peaks per image")?;
        }
        write!(f, " ({:.1} s)", self.seconds)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CandidateCheckpointState {
    epoch: usize,
    seed: u64,
    metrics: CandidateEpochMetrics,
}

/// Result of [`train_candidate_net`].
#[derive(Debug)]
pub struct CandidateTrainOutcome {
    /// Trained network on the plain device.
    pub model: CandidateNet,
    /// Epoch this call started at.
    pub first_epoch: usize,
    /// Last completed epoch (0 if none ran).
    pub last_epoch: usize,
    /// Metrics of the epochs run by this call.
    pub history: Vec<CandidateEpochMetrics>,
}

/// Trains (or resumes) a [`CandidateNet`] into `out_dir`; see the module docs.
pub fn train_candidate_net(
    config: &CandidateTrainingConfig,
    train: &[CandidateSample],
    val: &[CandidateSample],
    out_dir: &Path,
    device: &Device,
    options: TrainOptions,
) -> Result<CandidateTrainOutcome, ModelError> {
    validate(config, train)?;
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;
    let config_path = out_dir.join(CONFIG_FILE);
    let latest = latest_checkpoint(out_dir)?;
    if latest.is_some() {
        let saved = read_candidate_config(&config_path)?;
        if saved.model != config.model || saved.seed != config.seed {
            return Err(ModelError::Config {
                path: config_path,
                message: "the run folder holds checkpoints of a different candidate config or seed".into(),
            });
        }
    }
    let mut hash = Fingerprint::default();
    for sample in train.iter().chain(val) {
        // Hashed as the f32 maps they were up to 0.10, so older run folders still resume.
        hash.image(&sample.image).f32s(&sample.target_map().values);
        let centres: Vec<f32> = sample.centres.iter().flat_map(|&(x, y)| [x as f32, y as f32]).collect();
        hash.f32s(&centres).f32s(&[sample.random_weight as f32]);
    }
    run_data::check_and_record(out_dir, &hash.finish(train.len(), val.len()), latest.is_some())?;
    write_atomically(&config_path, burn::config::config_to_json(config).as_bytes())?;

    let train_device = device.clone().autodiff();
    train_device.seed(config.seed);
    let (mut model, mut optimizer, first_epoch) =
        resume_from(config.model.init(&train_device), config.optimizer.init(), latest.as_ref())?;
    truncate_metrics(&out_dir.join(METRICS_FILE), first_epoch - 1)?;

    let positives: Vec<(usize, (f64, f64))> =
        train.iter().enumerate().flat_map(|(i, s)| s.centres.iter().map(move |&c| (i, c))).collect();
    let draws = Draws {
        positives_cum: cumulative(positives.iter().map(|&(i, _)| train[i].centre_weight)),
        random_cum: cumulative(train.iter().map(|s| s.random_weight)),
        positives,
    };
    if draws.random_cum.last().is_none_or(|&t| t.is_nan() || t <= 0.0) {
        return Err(ModelError::Data("no candidate training image has a positive random_weight".into()));
    }
    let mut history = Vec::new();
    let mut last_epoch = first_epoch - 1;
    for epoch in first_epoch..=config.num_epochs {
        if options.stop_after_epochs.is_some_and(|n| history.len() >= n) {
            break;
        }
        let started = Instant::now();
        let batches = config.tiles_per_epoch.div_ceil(config.batch_size);
        let bar = progress_bar(options.show_progress, batches as u64, epoch, config.num_epochs);
        let mut loss_sum = 0.0f64;
        for b in 0..batches {
            let n = config.batch_size.min(config.tiles_per_epoch - b * config.batch_size);
            let (tiles, targets): (Vec<_>, Vec<_>) = (0..n)
                .map(|k| {
                    let mut rng = derived_rng(config.seed, epoch, (b * config.batch_size + k) as u64);
                    draw_tile(config, train, &draws, &mut rng)
                })
                .unzip();
            let (next, loss) = candidate_step(
                model,
                &mut optimizer,
                &tiles,
                &targets,
                annealed_rate(config.learning_rate, config.num_epochs, config.decay_epochs, epoch, b, batches),
                config.positive_weight,
                &train_device,
            )
            .map_err(|e| match e {
                ModelError::Diverged { loss, .. } => ModelError::Diverged { epoch, loss },
                other => other,
            })?;
            model = next;
            loss_sum += f64::from(loss);
            bar.set_message(format!("{:.4}", loss_sum / (b + 1) as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut metrics = evaluate_candidates(&model.valid(), val, config, device)?;
        metrics.epoch = epoch;
        metrics.train_loss = (loss_sum / batches.max(1) as f64) as f32;
        metrics.seconds = started.elapsed().as_secs_f32();

        append_metrics(&out_dir.join(METRICS_FILE), &metrics)?;
        save_weights(&model, &out_dir.join(MODEL_FILE))?;
        let state = CandidateCheckpointState { epoch, seed: config.seed, metrics: metrics.clone() };
        write_checkpoint(out_dir, epoch, &state, &model, &optimizer, config.keep_checkpoints)?;
        history.push(metrics);
        last_epoch = epoch;
    }
    Ok(CandidateTrainOutcome { model: model.valid(), first_epoch, last_epoch, history })
}

/// Reads a `config.json` written by [`train_candidate_net`].
pub fn read_candidate_config(path: &Path) -> Result<CandidateTrainingConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let bad = |e: serde_json::Error| ModelError::Config { path: path.to_owned(), message: e.to_string() };
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    // Runs saved before the learning-rate decay existed trained at a constant rate.
    if let Some(fields) = value.as_object_mut() {
        fields.entry("decay_epochs").or_insert(serde_json::Value::from(0));
    }
    serde_json::from_value(value).map_err(bad)
}

fn validate(config: &CandidateTrainingConfig, train: &[CandidateSample]) -> Result<(), ModelError> {
    if train.is_empty() {
        return Err(ModelError::Data("no candidate training images".into()));
    }
    if config.batch_size == 0 || config.tiles_per_epoch == 0 {
        return Err(ModelError::Data("batch size and tiles per epoch must be at least 1".into()));
    }
    if config.tile_size == 0 || !config.tile_size.is_multiple_of(SIDE_MULTIPLE) {
        return Err(ModelError::Data(format!("tile size {} is not a multiple of {SIDE_MULTIPLE}", config.tile_size)));
    }
    for s in train {
        let (w, h) = (s.image.width() as usize, s.image.height() as usize);
        let (tw, th) = (s.target.width() as usize, s.target.height() as usize);
        if w == 0 || h == 0 || (tw, th) != (w, h) {
            return Err(ModelError::Data(format!("{}: image is {w}x{h}, target is {tw}x{th}", s.origin)));
        }
    }
    Ok(())
}

struct Draws {
    positives: Vec<(usize, (f64, f64))>,
    positives_cum: Vec<f64>,
    random_cum: Vec<f64>,
}

/// One augmented (tile, target) pair.
fn draw_tile(
    config: &CandidateTrainingConfig,
    train: &[CandidateSample],
    draws: &Draws,
    rng: &mut impl Rng,
) -> (RgbImage, ProbabilityMap) {
    let size = config.tile_size;
    let directed = rng.random_bool(config.positive_fraction.clamp(0.0, 1.0));
    let positive = if directed { pick(&draws.positives_cum, rng) } else { None };
    let (sample, x0, y0) = if let Some(k) = positive {
        let (i, (cx, cy)) = draws.positives[k];
        // Jitter by up to a third of the tile so the figure lands anywhere but the rim.
        let j = size as f64 / 3.0;
        let cx = cx + rng.random_range(-j..=j);
        let cy = cy + rng.random_range(-j..=j);
        (i, (cx - size as f64 / 2.0).round() as i64, (cy - size as f64 / 2.0).round() as i64)
    } else {
        let i = pick(&draws.random_cum, rng).unwrap_or(0);
        let s = &train[i];
        let max_x = (s.image.width() as i64 - size as i64).max(0);
        let max_y = (s.image.height() as i64 - size as i64).max(0);
        (i, rng.random_range(0..=max_x), rng.random_range(0..=max_y))
    };
    let transform = rng.random_range(0..8u8);
    let s = &train[sample];
    let (w, h) = (s.image.width() as i64, s.image.height() as i64);
    let mut tile = RgbImage::new(size as u32, size as u32);
    let mut target = ProbabilityMap::zeros(size, size);
    for ty in 0..size {
        for tx in 0..size {
            let (a, b) = dihedral(transform, tx, ty, size);
            // Beyond the image edge: repeat the edge (as inference pads).
            let sx = (x0 + a as i64).clamp(0, w - 1) as usize;
            let sy = (y0 + b as i64).clamp(0, h - 1) as usize;
            tile.put_pixel(tx as u32, ty as u32, *s.image.get_pixel(sx as u32, sy as u32));
            target.values[ty * size + tx] = s.target_at(sy * w as usize + sx);
        }
    }
    if config.hed_scale > 0.0 || config.hed_shift > 0.0 {
        let (sc, sh) = (config.hed_scale.abs(), config.hed_shift.abs());
        let scale = [0; 3].map(|_| rng.random_range(1.0 - sc..=1.0 + sc));
        let shift = [0; 3].map(|_| rng.random_range(-sh..=sh));
        tile = hed_jitter(&tile, scale, shift);
    }
    (tile, target)
}

/// One of the 8 symmetries of a square of side `n`, applied to `(x, y)`.
fn dihedral(t: u8, x: usize, y: usize, n: usize) -> (usize, usize) {
    let m = n - 1;
    let (x, y) = if t & 4 != 0 { (y, x) } else { (x, y) };
    let x = if t & 1 != 0 { m - x } else { x };
    let y = if t & 2 != 0 { m - y } else { y };
    (x, y)
}

/// Validation loss (whole images), recall of centres and peaks per image.
fn evaluate_candidates(
    model: &CandidateNet,
    val: &[CandidateSample],
    config: &CandidateTrainingConfig,
    device: &Device,
) -> Result<CandidateEpochMetrics, ModelError> {
    let mut metrics = CandidateEpochMetrics {
        epoch: 0,
        train_loss: 0.0,
        val_loss: None,
        val_recall: None,
        val_peaks_per_image: None,
        seconds: 0.0,
    };
    if val.is_empty() {
        return Ok(metrics);
    }
    let (mut loss_sum, mut found, mut total, mut n_peaks) = (0.0f64, 0usize, 0usize, 0usize);
    for s in val {
        let map = candidate_map(model, &s.image, device)?;
        loss_sum += f64::from(map_loss(&s.image, &s.target_map(), model, device)?);
        let found_peaks = peaks(&map, config.peak_threshold, config.peak_min_distance);
        n_peaks += found_peaks.len();
        let d2 = config.match_distance * config.match_distance;
        for &(cx, cy) in &s.centres {
            total += 1;
            if found_peaks.iter().any(|p| (p.x as f64 - cx).powi(2) + (p.y as f64 - cy).powi(2) <= d2) {
                found += 1;
            }
        }
    }
    metrics.val_loss = Some((loss_sum / val.len() as f64) as f32);
    metrics.val_recall = (total > 0).then(|| found as f32 / total as f32);
    metrics.val_peaks_per_image = Some(n_peaks as f32 / val.len() as f32);
    Ok(metrics)
}

/// BCE of the whole image against its target, cropped to a multiple of 8.
fn map_loss(
    image: &RgbImage,
    target: &ProbabilityMap,
    model: &CandidateNet,
    device: &Device,
) -> Result<f32, ModelError> {
    let w = (image.width() as usize / SIDE_MULTIPLE) * SIDE_MULTIPLE;
    let h = (image.height() as usize / SIDE_MULTIPLE) * SIDE_MULTIPLE;
    if w == 0 || h == 0 {
        return Ok(0.0);
    }
    let crop = image::imageops::crop_imm(image, 0, 0, w as u32, h as u32).to_image();
    let mut values = Vec::with_capacity(w * h);
    for row in target.values.chunks(target.width).take(h) {
        values.extend_from_slice(&row[..w]);
    }
    let logits = model.forward(images_to_tensor(std::slice::from_ref(&crop), device)?);
    let targets = Tensor::<4>::from_data(TensorData::new(values, [1, 1, h, w]), device);
    let loss = bce_with_logits(logits, targets, 1.0);
    Ok(tensor_values(loss)?.first().copied().unwrap_or(f32::NAN))
}

/// Edge-replicating pad of `image` to at least `min_side` on each side (for
/// images smaller than a training tile).
pub fn pad_to(image: &RgbImage, min_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w >= min_side && h >= min_side || w == 0 || h == 0 {
        return image.clone();
    }
    RgbImage::from_fn(w.max(min_side), h.max(min_side), |x, y| {
        let p = image.get_pixel(x.min(w - 1), y.min(h - 1));
        Rgb(p.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidate::disc_target;
    use crate::test_support::synthetic_crop;

    fn samples() -> Vec<CandidateSample> {
        (0..4)
            .map(|i| {
                let positive = i % 2 == 0;
                let image = synthetic_crop(32, positive, i);
                let centres = if positive { vec![(15.5, 15.5)] } else { vec![] };
                CandidateSample::new(image, disc_target(32, 32, &centres, 6.4), centres, format!("s{i}"))
            })
            .collect()
    }

    fn tiny(num_epochs: usize) -> CandidateTrainingConfig {
        CandidateTrainingConfig::new(CandidateNetConfig::new().with_base_channels(4))
            .with_num_epochs(num_epochs)
            .with_tiles_per_epoch(16)
            .with_tile_size(16)
            .with_batch_size(8)
            .with_learning_rate(1e-2)
            .with_seed(3)
    }

    #[test]
    fn dihedral_maps_are_permutations() {
        for t in 0..8 {
            let mut seen = [false; 25];
            for y in 0..5 {
                for x in 0..5 {
                    let (a, b) = dihedral(t, x, y, 5);
                    assert!(!seen[b * 5 + a]);
                    seen[b * 5 + a] = true;
                }
            }
        }
        assert_eq!(dihedral(0, 1, 2, 5), (1, 2));
    }

    #[test]
    fn trains_checkpoints_and_resumes_identically() {
        let device = Device::flex();
        let data = samples();
        let full_dir = tempfile::tempdir().unwrap();
        let full =
            train_candidate_net(&tiny(2), &data, &data[..2], full_dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((full.first_epoch, full.last_epoch), (1, 2));
        assert!(full.history.iter().all(|m| m.train_loss.is_finite() && m.val_recall.is_some()));
        let log = std::fs::read_to_string(full_dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(log.lines().count(), 2);

        // A run killed after epoch 1: the full run's folder as it was then
        // (copying avoids a second weight init, which draws from burn's
        // global RNG that concurrent tests share).
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join(crate::training::CHECKPOINT_DIR).join("epoch-0001");
        std::fs::create_dir_all(&ckpt).unwrap();
        let src = full_dir.path().join(crate::training::CHECKPOINT_DIR).join("epoch-0001");
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), ckpt.join(entry.file_name())).unwrap();
        }
        for file in [CONFIG_FILE, run_data::DATA_FILE] {
            std::fs::copy(full_dir.path().join(file), dir.path().join(file)).unwrap();
        }
        let first_line = log.lines().next().unwrap();
        // Plus a stale epoch-2 line written after the checkpoint, which the resume must drop.
        std::fs::write(dir.path().join(METRICS_FILE), format!("{first_line}\n{}\n", log.lines().nth(1).unwrap()))
            .unwrap();
        let resumed =
            train_candidate_net(&tiny(2), &data, &data[..2], dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((resumed.first_epoch, resumed.last_epoch), (2, 2));
        assert_eq!(resumed.history[0].train_loss, full.history[1].train_loss);
        // Compare what the networks compute (records also carry parameter ids).
        let probe = synthetic_crop(16, true, 99);
        let a = candidate_map(&resumed.model, &probe, &device).unwrap();
        let b = candidate_map(&full.model, &probe, &device).unwrap();
        assert_eq!(a, b);
        let resumed_log = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(resumed_log.lines().count(), 2, "{resumed_log}");

        let err = train_candidate_net(&tiny(2).with_seed(9), &data, &[], dir.path(), &device, TrainOptions::quiet())
            .unwrap_err();
        assert!(matches!(err, ModelError::Config { .. }), "{err}");
        // Same config and seed, a mitosis centre moved: other data, refused.
        let mut moved = data.clone();
        moved[0].centres.push((1.0, 1.0));
        let err =
            train_candidate_net(&tiny(2), &moved, &data[..2], dir.path(), &device, TrainOptions::quiet()).unwrap_err();
        assert!(err.to_string().contains("other data"), "{err}");
    }

    /// A copy of run folder `from` (config, data record, checkpoints) in a new temp dir.
    fn copy_run(from: &Path) -> tempfile::TempDir {
        fn copy_dir(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    copy_dir(&entry.path(), &to.join(entry.file_name()));
                } else {
                    std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        copy_dir(from, dir.path());
        dir
    }

    #[test]
    fn annealed_epochs_move_the_weights_less_and_old_configs_read_as_constant() {
        let device = Device::flex();
        let data = samples();
        let first = tempfile::tempdir().unwrap();
        let one = train_candidate_net(&tiny(1), &data, &[], first.path(), &device, TrainOptions::quiet()).unwrap();
        // Epoch 2 from the same checkpoint, at a constant rate and annealed to zero.
        let (constant_dir, annealed_dir) = (copy_run(first.path()), copy_run(first.path()));
        let constant =
            train_candidate_net(&tiny(2), &data, &[], constant_dir.path(), &device, TrainOptions::quiet()).unwrap();
        let annealed = train_candidate_net(
            &tiny(2).with_decay_epochs(1),
            &data,
            &[],
            annealed_dir.path(),
            &device,
            TrainOptions::quiet(),
        )
        .unwrap();
        assert_eq!((annealed.first_epoch, annealed.last_epoch), (2, 2));
        let probe = synthetic_crop(16, true, 99);
        let start = candidate_map(&one.model, &probe, &device).unwrap();
        let moved = |m: &CandidateNet| -> f32 {
            let map = candidate_map(m, &probe, &device).unwrap();
            map.values.iter().zip(&start.values).map(|(a, b)| (a - b).abs()).sum()
        };
        let (by_constant, by_annealed) = (moved(&constant.model), moved(&annealed.model));
        assert!(by_annealed > 0.0, "the annealed epoch took no step");
        assert!(by_annealed < by_constant, "annealed {by_annealed} vs constant {by_constant}");

        // config.json written before `decay_epochs` existed.
        let path = annealed_dir.path().join(CONFIG_FILE);
        let mut saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["decay_epochs"], 1);
        saved.as_object_mut().unwrap().remove("decay_epochs");
        std::fs::write(&path, saved.to_string()).unwrap();
        assert_eq!(read_candidate_config(&path).unwrap().decay_epochs, 0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let err = train_candidate_net(&tiny(1), &[], &[], dir.path(), &device, TrainOptions::quiet()).unwrap_err();
        assert!(matches!(err, ModelError::Data(_)));
        let err = train_candidate_net(
            &tiny(1).with_tile_size(12),
            &samples(),
            &[],
            dir.path(),
            &device,
            TrainOptions::quiet(),
        )
        .unwrap_err();
        assert!(matches!(err, ModelError::Data(_)));
        let mut bad = samples();
        bad[0].target = GrayImage::new(3, 3);
        assert!(train_candidate_net(&tiny(1), &bad, &[], dir.path(), &device, TrainOptions::quiet()).is_err());
        assert_eq!(pad_to(&RgbImage::new(3, 5), 8).dimensions(), (8, 8));
        let mut none = samples();
        none.iter_mut().for_each(|s| s.random_weight = 0.0);
        assert!(train_candidate_net(&tiny(1), &none, &[], dir.path(), &device, TrainOptions::quiet()).is_err());
    }

    #[test]
    fn targets_keep_binary_maps_exactly_and_soft_ones_in_255_steps() {
        let map = ProbabilityMap { width: 3, height: 2, values: vec![0.0, 1.0, 0.5, f32::NAN, 2.0, -1.0] };
        let s = CandidateSample::new(RgbImage::new(3, 2), map, Vec::new(), "t");
        assert_eq!(s.target.as_raw(), &[0, 255, 128, 0, 255, 0]);
        assert_eq!(s.target_map().values, vec![0.0, 1.0, 128.0 / 255.0, 0.0, 1.0, 0.0]);
        // A map whose values do not fill it is refused by training, not read past.
        let short = ProbabilityMap { width: 3, height: 2, values: vec![1.0; 5] };
        assert_eq!(CandidateSample::new(RgbImage::new(3, 2), short, Vec::new(), "t").target.dimensions(), (0, 0));
    }

    #[test]
    fn weighted_pick() {
        let cum = cumulative([0.0, 1.0, 0.0, 3.0].into_iter());
        let mut rng = derived_rng(1, 1, 1);
        let mut counts = [0usize; 4];
        for _ in 0..400 {
            counts[pick(&cum, &mut rng).unwrap()] += 1;
        }
        assert_eq!((counts[0], counts[2]), (0, 0));
        assert!(counts[3] > 2 * counts[1], "{counts:?}");
        assert_eq!(pick(&cumulative([0.0].into_iter()), &mut rng), None);
    }
}
