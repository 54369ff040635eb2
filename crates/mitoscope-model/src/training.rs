//! Hand-written training loop for the [`PatchClassifier`]: Adam, BCE with
//! logits, seeded shuffling and augmentation, a validation pass, a metrics log,
//! and a checkpoint every epoch that a killed run resumes from.
//!
//! # Output folder
//!
//! ```text
//! out_dir/
//!   config.json            TrainingConfig of the run
//!   model.bpk              latest weights (rewritten each epoch)
//!   metrics.jsonl          one EpochMetrics JSON object per epoch
//!   checkpoints/epoch-NNNN/{model.bpk, optimizer.bpk, state.json}
//! ```
//!
//! A checkpoint folder is written as `epoch-NNNN.tmp` and renamed when
//! complete, so a kill at any moment leaves either the previous checkpoint or
//! the new one, never a torn one. Randomness is derived from `(seed, epoch,
//! example index)`, not carried in a generator, so the only state to save is
//! the epoch number: a resumed run draws exactly what the uninterrupted run
//! would have drawn.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::augment::{AugmentConfig, augment};
use crate::candidate::{CandidateNet, ProbabilityMap, SIDE_MULTIPLE};
use crate::classifier::{PatchClassifier, PatchClassifierConfig};
use crate::data::{LabelledCrop, images_to_tensor};
use crate::infer::tensor_values;
use crate::run_data::{self, Fingerprint};
use crate::weights::{load_weights, save_weights, write_atomically};

/// Everything that defines a classifier training run; saved as `config.json`.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// The network.
    pub model: PatchClassifierConfig,
    /// Adam hyper-parameters (betas, epsilon, optional weight decay).
    #[config(default = "AdamConfig::new()")]
    pub optimizer: AdamConfig,
    /// Augmentation applied to training crops (never to validation crops).
    #[config(default = "AugmentConfig::new()")]
    pub augment: AugmentConfig,
    /// Epochs in total (a resumed run continues up to this number).
    #[config(default = 20)]
    pub num_epochs: usize,
    /// Crops per optimisation step.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// The last `decay_epochs` epochs anneal the learning rate to zero along a
    /// half cosine (0: constant rate throughout). At a constant rate the weights
    /// of the last epoch are one noisy point of the trajectory (validation loss
    /// jumped 0.17 -> 0.28 between two epochs of the 0.2 model); annealing the
    /// tail settles them. Resuming a finished run with more epochs and a decay
    /// adds an annealing phase to it.
    #[config(default = 0)]
    pub decay_epochs: usize,
    /// Seed of weight initialisation, shuffling and augmentation.
    #[config(default = 42)]
    pub seed: u64,
    /// Loss weight of positive examples (> 1 when positives are rare).
    #[config(default = 1.0)]
    pub positive_weight: f32,
    /// Complete checkpoints kept on disk (older ones are deleted; at least 1).
    #[config(default = 2)]
    pub keep_checkpoints: usize,
}

/// Per-run knobs that do not change the result.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Return after this many epochs of *this* call, as if killed after the
    /// checkpoint (time-boxed runs; tests of resume).
    pub stop_after_epochs: Option<usize>,
    /// Show an `indicatif` progress bar with the running loss on stderr.
    pub show_progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { stop_after_epochs: None, show_progress: true }
    }
}

impl TrainOptions {
    /// No progress bar, no early stop.
    pub fn quiet() -> Self {
        Self { stop_after_epochs: None, show_progress: false }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f32,
    /// Mean validation loss (None without validation data).
    pub val_loss: Option<f32>,
    /// Validation accuracy at score 0.5.
    pub val_accuracy: Option<f32>,
    /// Validation precision at score 0.5 (None when nothing was called positive).
    pub val_precision: Option<f32>,
    /// Validation recall at score 0.5 (None without positives).
    pub val_recall: Option<f32>,
    /// Validation F1 at score 0.5.
    pub val_f1: Option<f32>,
    /// Wall-clock seconds of the epoch.
    pub seconds: f32,
}

/// One line for progress logs: `train loss 0.5758, val loss 0.5824, accuracy
/// 0.941, precision -, recall 0.000, F1 0.000 (2.1 s)`.
impl std::fmt::Display for EpochMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f32>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        write!(f, "train loss {:.4}", self.train_loss)?;
        if self.val_loss.is_some() {
            write!(
                f,
                ", val loss {}, accuracy {}, precision {}, recall {}, F1 {}",
                opt(self.val_loss, 4),
                opt(self.val_accuracy, 3),
                opt(self.val_precision, 3),
                opt(self.val_recall, 3),
                opt(self.val_f1, 3)
            )?;
        }
        write!(f, " ({:.1} s)", self.seconds)
    }
}

/// What a checkpoint records besides the weights and optimizer state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
    seed: u64,
    metrics: EpochMetrics,
}

/// Result of [`train_classifier`].
#[derive(Debug)]
pub struct TrainOutcome {
    /// Trained weights, in inference mode on the plain (non-autodiff) device.
    pub model: PatchClassifier,
    /// Epoch this call started at (1 for a fresh run, `k + 1` after resuming from checkpoint `k`).
    pub first_epoch: usize,
    /// Last completed epoch (0 if none ran).
    pub last_epoch: usize,
    /// Metrics of the epochs run by this call.
    pub history: Vec<EpochMetrics>,
}

/// Name of the config file in a run folder.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the latest-weights file in a run folder.
pub const MODEL_FILE: &str = "model.bpk";
/// Name of the metrics log in a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
pub(crate) const CHECKPOINT_DIR: &str = "checkpoints";
pub(crate) const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";

/// A freshly initialised `model` and `optimizer`, or, when the run folder has
/// a checkpoint `latest`, its weights and optimizer state loaded into them;
/// with the first epoch still to run. Both trainers resume this way.
pub(crate) fn resume_from<M: burn::module::Module>(
    model: M,
    optimizer: ModuleOptimizer,
    latest: Option<&(usize, PathBuf)>,
) -> Result<(M, ModuleOptimizer, usize), ModelError> {
    let Some((epoch, dir)) = latest else {
        return Ok((model, optimizer, 1));
    };
    let model = load_weights(model, &dir.join(MODEL_FILE))?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let optimizer = optimizer
        .load(&optimizer_path)
        .map_err(|e| ModelError::LoadWeights { path: optimizer_path.clone(), message: e.to_string() })?;
    Ok((model, optimizer, epoch + 1))
}

/// Trains (or resumes training of) a [`PatchClassifier`] into `out_dir`.
///
/// When `out_dir` holds a checkpoint, training continues after its epoch with
/// the saved weights and optimizer state; the model config and seed must match
/// the saved `config.json`. `device` is a plain device (e.g. `Device::flex()`);
/// gradients are taken on `device.autodiff()`.
pub fn train_classifier(
    config: &TrainingConfig,
    train: &[LabelledCrop],
    val: &[LabelledCrop],
    out_dir: &Path,
    device: &Device,
    options: TrainOptions,
) -> Result<TrainOutcome, ModelError> {
    if train.is_empty() {
        return Err(ModelError::Data("no training crops".into()));
    }
    if config.batch_size == 0 {
        return Err(ModelError::Data("batch size must be at least 1".into()));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;
    let config_path = out_dir.join(CONFIG_FILE);
    let latest = latest_checkpoint(out_dir)?;
    if latest.is_some() {
        check_resumable(config, &config_path)?;
    }
    run_data::check_and_record(out_dir, &crops_fingerprint(train, val), latest.is_some())?;
    write_atomically(&config_path, config_json(config).as_bytes())?;

    let train_device = device.clone().autodiff();
    train_device.seed(config.seed);
    let (mut model, mut optimizer, first_epoch) =
        resume_from(config.model.init(&train_device), config.optimizer.init(), latest.as_ref())?;
    truncate_metrics(&out_dir.join(METRICS_FILE), first_epoch - 1)?;

    let mut history = Vec::new();
    let mut last_epoch = first_epoch - 1;
    for epoch in first_epoch..=config.num_epochs {
        if options.stop_after_epochs.is_some_and(|n| history.len() >= n) {
            break;
        }
        let started = Instant::now();
        let train_loss = run_epoch(config, train, epoch, &mut model, &mut optimizer, &train_device, options)?;
        let mut metrics = evaluate(&model.valid(), val, config, device)?;
        metrics.epoch = epoch;
        metrics.train_loss = train_loss;
        metrics.seconds = started.elapsed().as_secs_f32();

        append_metrics(&out_dir.join(METRICS_FILE), &metrics)?;
        save_weights(&model, &out_dir.join(MODEL_FILE))?;
        let state = CheckpointState { epoch, seed: config.seed, metrics: metrics.clone() };
        write_checkpoint(out_dir, epoch, &state, &model, &optimizer, config.keep_checkpoints)?;
        history.push(metrics);
        last_epoch = epoch;
    }
    Ok(TrainOutcome { model: model.valid(), first_epoch, last_epoch, history })
}

/// What [`train_classifier`] records of its crops (see [`run_data`]).
fn crops_fingerprint(train: &[LabelledCrop], val: &[LabelledCrop]) -> run_data::RunData {
    let mut hash = Fingerprint::default();
    for crop in train.iter().chain(val) {
        hash.image(&crop.image).bool(crop.positive);
    }
    hash.finish(train.len(), val.len())
}

/// Loads the classifier of a finished (or interrupted) run: `config.json` and
/// `model.bpk` from `out_dir`, on `device`.
pub fn load_trained_classifier(
    out_dir: &Path,
    device: &Device,
) -> Result<(PatchClassifier, TrainingConfig), ModelError> {
    let config_path = out_dir.join(CONFIG_FILE);
    let config = read_config(&config_path)?;
    let model = load_weights(config.model.init(device), &out_dir.join(MODEL_FILE))?;
    Ok((model, config))
}

/// Reads a `config.json` written by [`train_classifier`].
pub fn read_config(path: &Path) -> Result<TrainingConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let bad = |e: serde_json::Error| ModelError::Config { path: path.to_owned(), message: e.to_string() };
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    // Runs saved before the learning-rate decay existed trained at a constant rate.
    if let Some(fields) = value.as_object_mut() {
        fields.entry("decay_epochs").or_insert(serde_json::Value::from(0));
        if let Some(model) = fields.get_mut("model") {
            crate::classifier::upgrade_config_json(model);
        }
        // ... and before JPEG augmentation existed, without it.
        if let Some(augment) = fields.get_mut("augment").and_then(|a| a.as_object_mut()) {
            augment.entry("jpeg_probability").or_insert(serde_json::Value::from(0.0));
            augment.entry("jpeg_quality").or_insert(serde_json::json!([60, 95]));
            // ... and before stain rotation, without it.
            augment.entry("stain_rotation_deg").or_insert(serde_json::Value::from(0.0));
            // ... and before the centre shift, without it.
            augment.entry("shift_px").or_insert(serde_json::Value::from(0.0));
        }
    }
    serde_json::from_value(value).map_err(bad)
}

/// The newest complete checkpoint of a run folder: `(epoch, folder)`.
pub fn latest_checkpoint(out_dir: &Path) -> Result<Option<(usize, PathBuf)>, ModelError> {
    Ok(complete_checkpoints(out_dir)?.pop())
}

/// Binary cross-entropy on logits, averaged over all elements, numerically
/// stable for large |logit|. `targets` may be soft (in `[0, 1]`); positives
/// (target 1) weigh `positive_weight`, negatives 1.
pub fn bce_with_logits<const D: usize>(logits: Tensor<D>, targets: Tensor<D>, positive_weight: f32) -> Tensor<1> {
    // softplus(-x) = max(-x, 0) + ln(1 + exp(-|x|)) never overflows.
    let softplus_neg = logits.clone().neg().clamp_min(0.0) + logits.clone().abs().neg().exp().log1p();
    let weight = targets.clone().mul_scalar(positive_weight - 1.0).add_scalar(1.0);
    (targets.neg().add_scalar(1.0) * logits + weight * softplus_neg).mean()
}

/// One Adam step of the [`CandidateNet`] on tiles and their heat-map targets
/// ([`crate::candidate::disc_target`] / [`crate::candidate::mask_target`]),
/// returning the updated network and the batch loss. Building block for a
/// candidate training loop; `model` and `device` must be on an autodiff device
/// (`Device::flex().autodiff()`), tiles equally sized with sides multiples of
/// [`crate::candidate::SIDE_MULTIPLE`].
pub fn candidate_step(
    model: CandidateNet,
    optimizer: &mut ModuleOptimizer,
    tiles: &[RgbImage],
    targets: &[ProbabilityMap],
    learning_rate: f64,
    positive_weight: f32,
    device: &Device,
) -> Result<(CandidateNet, f32), ModelError> {
    if tiles.len() != targets.len() {
        return Err(ModelError::Data(format!("{} tiles but {} targets", tiles.len(), targets.len())));
    }
    let mut target_values = Vec::new();
    for (tile, target) in tiles.iter().zip(targets) {
        let (w, h) = (tile.width() as usize, tile.height() as usize);
        if (target.width, target.height) != (w, h) || target.values.len() != w * h {
            return Err(ModelError::Data(format!("a {w}x{h} tile has a {}x{} target", target.width, target.height)));
        }
        if w % SIDE_MULTIPLE != 0 || h % SIDE_MULTIPLE != 0 {
            return Err(ModelError::Data(format!("tile {w}x{h} is not a multiple of {SIDE_MULTIPLE}")));
        }
        target_values.extend_from_slice(&target.values);
    }
    let inputs = images_to_tensor(tiles, device)?;
    let [b, _, h, w] = inputs.dims();
    let targets = Tensor::<4>::from_data(TensorData::new(target_values, [b, 1, h, w]), device);
    let loss = bce_with_logits(model.forward(inputs), targets, positive_weight);
    let loss_value = loss.clone().into_scalar::<f32>();
    if !loss_value.is_finite() {
        return Err(ModelError::Diverged { epoch: 0, loss: loss_value });
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    Ok((optimizer.step(learning_rate, model, grads), loss_value))
}

/// SplitMix64 finaliser: decorrelates nearby seeds (epoch 3 vs 4).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn derived_rng(seed: u64, epoch: usize, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ epoch as u64) ^ stream))
}

/// Learning rate of each step of 1-based `epoch` (`step` of `steps`): constant,
/// then a half-cosine to zero over the last [`TrainingConfig::decay_epochs`].
pub fn learning_rate_at(config: &TrainingConfig, epoch: usize, step: usize, steps: usize) -> f64 {
    annealed_rate(config.learning_rate, config.num_epochs, config.decay_epochs, epoch, step, steps)
}

/// Rate `base` for the first `num_epochs - decay_epochs` epochs, then a
/// half-cosine to zero over the rest; `epoch` is 1-based, `step` of `steps`
/// within it. Shared by both stages' training loops.
pub(crate) fn annealed_rate(
    base: f64,
    num_epochs: usize,
    decay_epochs: usize,
    epoch: usize,
    step: usize,
    steps: usize,
) -> f64 {
    let decay = decay_epochs.min(num_epochs);
    let start = num_epochs - decay; // epochs before the decay
    if decay == 0 || epoch <= start {
        return base;
    }
    // Progress through the decay in (0, 1]: the first decayed step is already below the peak.
    let done = (epoch - start - 1) as f64 + (step + 1) as f64 / steps.max(1) as f64;
    let t = (done / decay as f64).clamp(0.0, 1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

fn run_epoch(
    config: &TrainingConfig,
    train: &[LabelledCrop],
    epoch: usize,
    model: &mut PatchClassifier,
    optimizer: &mut ModuleOptimizer,
    train_device: &Device,
    options: TrainOptions,
) -> Result<f32, ModelError> {
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut derived_rng(config.seed, epoch, u64::MAX));
    let batches = order.len().div_ceil(config.batch_size);
    let bar = progress_bar(options.show_progress, batches as u64, epoch, config.num_epochs);

    let mut loss_sum = 0.0f64;
    for (b, batch) in order.chunks(config.batch_size).enumerate() {
        let images: Vec<_> = batch
            .iter()
            .map(|&i| augment(&train[i].image, &config.augment, &mut derived_rng(config.seed, epoch, i as u64)))
            .collect();
        let labels: Vec<f32> = batch.iter().map(|&i| if train[i].positive { 1.0 } else { 0.0 }).collect();
        let inputs = images_to_tensor(&images, train_device)?;
        let targets = Tensor::<2>::from_data(TensorData::new(labels, [batch.len(), 1]), train_device);
        let loss = bce_with_logits(model.forward(inputs), targets, config.positive_weight);
        let loss_value = loss.clone().into_scalar::<f32>();
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(ModelError::Diverged { epoch, loss: loss_value });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &*model);
        let learning_rate = learning_rate_at(config, epoch, b, batches);
        *model = optimizer.step(learning_rate, model.clone(), grads);
        loss_sum += f64::from(loss_value);
        bar.set_message(format!("{:.4}", loss_sum / (b + 1) as f64));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((loss_sum / batches.max(1) as f64) as f32)
}

pub(crate) fn progress_bar(show: bool, batches: u64, epoch: usize, num_epochs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches);
    if let Ok(style) = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{epoch}/{num_epochs}"));
    bar
}

/// Validation loss and classification metrics at score 0.5 (train_loss,
/// epoch and seconds are filled in by the caller).
fn evaluate(
    model: &PatchClassifier,
    val: &[LabelledCrop],
    config: &TrainingConfig,
    device: &Device,
) -> Result<EpochMetrics, ModelError> {
    let mut metrics = EpochMetrics {
        epoch: 0,
        train_loss: 0.0,
        val_loss: None,
        val_accuracy: None,
        val_precision: None,
        val_recall: None,
        val_f1: None,
        seconds: 0.0,
    };
    if val.is_empty() {
        return Ok(metrics);
    }
    let (mut loss_sum, mut tp, mut fp, mut tn, mut fn_) = (0.0f64, 0usize, 0usize, 0usize, 0usize);
    for chunk in val.chunks(config.batch_size.max(1)) {
        let images: Vec<_> = chunk.iter().map(|c| c.image.clone()).collect();
        let labels: Vec<f32> = chunk.iter().map(|c| if c.positive { 1.0 } else { 0.0 }).collect();
        let logits = model.forward(images_to_tensor(&images, device)?);
        let targets = Tensor::<2>::from_data(TensorData::new(labels, [chunk.len(), 1]), device);
        let loss = bce_with_logits(logits.clone(), targets, config.positive_weight).into_scalar::<f32>();
        // Weight by batch size so a short last batch counts for what it holds.
        loss_sum += f64::from(loss) * chunk.len() as f64;
        for (score, crop) in tensor_values(sigmoid(logits))?.into_iter().zip(chunk) {
            match (score >= 0.5, crop.positive) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, false) => tn += 1,
                (false, true) => fn_ += 1,
            }
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f32 / b as f32);
    metrics.val_loss = Some((loss_sum / val.len() as f64) as f32);
    metrics.val_accuracy = ratio(tp + tn, val.len());
    metrics.val_precision = ratio(tp, tp + fp);
    metrics.val_recall = ratio(tp, tp + fn_);
    metrics.val_f1 = ratio(2 * tp, 2 * tp + fp + fn_);
    Ok(metrics)
}

fn config_json(config: &TrainingConfig) -> String {
    burn::config::config_to_json(config)
}

/// A resume must continue the same experiment: same network and seed.
fn check_resumable(config: &TrainingConfig, config_path: &Path) -> Result<(), ModelError> {
    let saved = read_config(config_path)?;
    if saved.model != config.model || saved.seed != config.seed {
        return Err(ModelError::Config {
            path: config_path.to_owned(),
            message: "the run folder holds checkpoints of a different model config or seed; \
                      use a new folder or the saved config"
                .into(),
        });
    }
    Ok(())
}

pub(crate) fn complete_checkpoints(out_dir: &Path) -> Result<Vec<(usize, PathBuf)>, ModelError> {
    let dir = out_dir.join(CHECKPOINT_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| ModelError::io(&dir, e))? {
        let path = entry.map_err(|e| ModelError::io(&dir, e))?.path();
        let epoch = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("epoch-"))
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(epoch) = epoch
            && path.join(STATE_FILE).is_file()
        {
            found.push((epoch, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `checkpoints/epoch-NNNN/` (weights, optimizer, `state`) via a
/// `.tmp` folder and prunes all but the newest `keep`. Generic so the
/// candidate loop shares the exact on-disk layout.
pub(crate) fn write_checkpoint<M: burn::module::Module, S: Serialize>(
    out_dir: &Path,
    epoch: usize,
    state: &S,
    model: &M,
    optimizer: &ModuleOptimizer,
    keep: usize,
) -> Result<(), ModelError> {
    let dir = out_dir.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    let name = format!("epoch-{epoch:04}");
    let tmp = dir.join(format!("{name}.tmp"));
    let done = dir.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    save_weights(model, &tmp.join(MODEL_FILE))?;
    let optimizer_path = tmp.join(OPTIMIZER_FILE);
    optimizer
        .save(&optimizer_path)
        .map_err(|e| ModelError::SaveWeights { path: optimizer_path.clone(), message: e.to_string() })?;
    let state_json = serde_json::to_string_pretty(state)
        .map_err(|e| ModelError::Config { path: tmp.join(STATE_FILE), message: e.to_string() })?;
    write_atomically(&tmp.join(STATE_FILE), state_json.as_bytes())?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| ModelError::io(&done, e))?;
    }
    std::fs::rename(&tmp, &done).map_err(|e| ModelError::io(&done, e))?;

    let complete = complete_checkpoints(out_dir)?;
    let excess = complete.len().saturating_sub(keep.max(1));
    for (_, old) in complete.into_iter().take(excess) {
        std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
    }
    Ok(())
}

pub(crate) fn append_metrics<T: Serialize>(path: &Path, metrics: &T) -> Result<(), ModelError> {
    let line = serde_json::to_string(metrics)
        .map_err(|e| ModelError::Config { path: path.to_owned(), message: e.to_string() })?;
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| ModelError::io(path, e))?;
    writeln!(file, "{line}").map_err(|e| ModelError::io(path, e))
}

/// Drops log lines of epochs after `last_kept` (written after the last
/// checkpoint by a run that was then killed), so the log matches the resume.
pub(crate) fn truncate_metrics(path: &Path, last_kept: usize) -> Result<(), ModelError> {
    /// Only the epoch matters here, so both metrics types share this.
    #[derive(Deserialize)]
    struct EpochOnly {
        epoch: usize,
    }
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<EpochOnly>(line).is_ok_and(|m| m.epoch <= last_kept))
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        write_atomically(path, kept.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::synthetic_crops;
    use crate::weights::{load_weights, weights_to_bytes};

    fn tiny_config(num_epochs: usize) -> TrainingConfig {
        TrainingConfig::new(PatchClassifierConfig::new().with_crop_size(16).with_base_channels(4))
            .with_augment(AugmentConfig::none())
            .with_num_epochs(num_epochs)
            .with_batch_size(8)
            .with_learning_rate(1e-2)
            .with_seed(7)
    }

    #[test]
    fn learning_rate_is_constant_then_anneals_to_zero() {
        let model = PatchClassifierConfig::new();
        let constant = TrainingConfig::new(model.clone()).with_num_epochs(4).with_learning_rate(0.01);
        assert_eq!(learning_rate_at(&constant, 4, 9, 10), 0.01);
        let config = constant.with_decay_epochs(2);
        // Epochs 1-2 at the full rate, 3-4 annealed, monotonically, ending at 0.
        assert_eq!(learning_rate_at(&config, 2, 9, 10), 0.01);
        let mut last = 0.01;
        for epoch in 3..=4 {
            for step in 0..10 {
                let lr = learning_rate_at(&config, epoch, step, 10);
                assert!(lr < last && lr >= 0.0, "epoch {epoch} step {step}: {lr} after {last}");
                last = lr;
            }
        }
        assert!(last.abs() < 1e-12);
        // Half-way through the decay: half the rate.
        assert!((learning_rate_at(&config, 3, 9, 10) - 0.005).abs() < 1e-12);
        // More decay epochs than epochs: the whole run anneals.
        let all = TrainingConfig::new(model).with_num_epochs(2).with_learning_rate(0.01).with_decay_epochs(5);
        assert!(learning_rate_at(&all, 1, 0, 10) < 0.01);
    }

    #[test]
    fn bce_with_logits_matches_the_formula() {
        let device = Device::flex();
        let x = Tensor::<1>::from_floats([0.0, 2.0, -3.0, 100.0], &device);
        let t = Tensor::<1>::from_floats([1.0, 0.0, 1.0, 1.0], &device);
        let got = bce_with_logits(x, t, 1.0).into_scalar::<f32>();
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let want = (-(sig(0.0).ln()) - (1.0 - sig(2.0)).ln() - sig(-3.0).ln() + 0.0) / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn loss_falls_on_separable_synthetic_crops() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let crops = synthetic_crops(32, 16, 1);
        let (train, val) = crate::data::split_train_val(crops, 0.25, 3);
        let out = train_classifier(&tiny_config(4), &train, &val, dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((out.first_epoch, out.last_epoch), (1, 4));
        let first = out.history[0].train_loss;
        let last = out.history[3].train_loss;
        assert!(last < 0.7 * first, "train loss {first} -> {last}");
        assert!(out.history[3].val_accuracy.is_some());

        // The run folder: config.json beside the weights, one metrics line per epoch.
        let (loaded, config) = load_trained_classifier(dir.path(), &device).unwrap();
        assert_eq!(config.model, tiny_config(4).model);
        assert_eq!(weights_to_bytes(&loaded).unwrap(), weights_to_bytes(&out.model).unwrap());
        let log = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        let epochs: Vec<usize> = log.lines().map(|l| serde_json::from_str::<EpochMetrics>(l).unwrap().epoch).collect();
        assert_eq!(epochs, vec![1, 2, 3, 4]);
        // Only the last `keep_checkpoints` (2) remain.
        let kept: Vec<usize> = complete_checkpoints(dir.path()).unwrap().into_iter().map(|(e, _)| e).collect();
        assert_eq!(kept, vec![3, 4]);
    }

    #[test]
    fn killed_run_resumes_at_the_next_epoch_with_identical_weights() {
        let device = Device::flex();
        let crops = synthetic_crops(24, 16, 2);
        let (train, val) = crate::data::split_train_val(crops, 0.25, 4);
        let config = tiny_config(3).with_augment(AugmentConfig::new());

        // Reference: three epochs uninterrupted.
        let full_dir = tempfile::tempdir().unwrap();
        let full = train_classifier(&config, &train, &val, full_dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!(full.last_epoch, 3);

        // A run "killed" after epoch 2: take the reference's epoch-2 checkpoint
        // and the log as they were, plus a stray line for an epoch whose
        // checkpoint never landed and a torn temporary checkpoint folder.
        let resumed_dir = tempfile::tempdir().unwrap();
        let ckpt = resumed_dir.path().join(CHECKPOINT_DIR);
        std::fs::create_dir_all(ckpt.join("epoch-0003.tmp")).unwrap();
        let src = full_dir.path().join(CHECKPOINT_DIR).join("epoch-0002");
        std::fs::create_dir_all(ckpt.join("epoch-0002")).unwrap();
        for f in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            std::fs::copy(src.join(f), ckpt.join("epoch-0002").join(f)).unwrap();
        }
        for file in [CONFIG_FILE, METRICS_FILE, run_data::DATA_FILE] {
            std::fs::copy(full_dir.path().join(file), resumed_dir.path().join(file)).unwrap();
        }

        let resumed =
            train_classifier(&config, &train, &val, resumed_dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((resumed.first_epoch, resumed.last_epoch), (3, 3));
        assert_eq!(weights_to_bytes(&resumed.model).unwrap(), weights_to_bytes(&full.model).unwrap());
        assert_eq!(resumed.history[0].train_loss, full.history[2].train_loss);
        let log = std::fs::read_to_string(resumed_dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(log.lines().count(), 3, "stale epoch-3 line replaced, not duplicated:\n{log}");
        assert!(!ckpt.join("epoch-0003.tmp").exists());
    }

    #[test]
    fn stop_then_resume_continues_from_the_saved_weights() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let crops = synthetic_crops(16, 16, 3);
        let config = tiny_config(2);
        let stopped = TrainOptions { stop_after_epochs: Some(1), show_progress: false };
        let first = train_classifier(&config, &crops, &[], dir.path(), &device, stopped).unwrap();
        assert_eq!((first.first_epoch, first.last_epoch), (1, 1));
        let (epoch, ckpt) = latest_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(epoch, 1);
        let saved = load_weights(config.model.init(&device), &ckpt.join(MODEL_FILE)).unwrap();
        assert_eq!(weights_to_bytes(&saved).unwrap(), weights_to_bytes(&first.model).unwrap());
        drop(first);

        let second = train_classifier(&config, &crops, &[], dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((second.first_epoch, second.last_epoch), (2, 2));
        // Nothing left to do: a third call runs no epoch.
        let third = train_classifier(&config, &crops, &[], dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((third.first_epoch, third.last_epoch, third.history.len()), (3, 2, 0));

        // Resuming with another network or seed is refused.
        let other = tiny_config(2).with_seed(8);
        let err = train_classifier(&other, &crops, &[], dir.path(), &device, TrainOptions::quiet()).unwrap_err();
        assert!(matches!(err, ModelError::Config { .. }), "{err}");
        // So is resuming the same network and seed on other crops: one crop
        // more, or the same number with one label flipped.
        let mut more = crops.clone();
        more.extend(synthetic_crops(1, 16, 99));
        let mut relabelled = crops.clone();
        relabelled[0].positive = !relabelled[0].positive;
        for data in [&more, &relabelled] {
            let err = train_classifier(&config, data, &[], dir.path(), &device, TrainOptions::quiet()).unwrap_err();
            assert!(err.to_string().contains("other data"), "{err}");
        }
        // The refusal changed nothing: the original crops still resume.
        train_classifier(&config, &crops, &[], dir.path(), &device, TrainOptions::quiet()).unwrap();
    }

    #[test]
    fn run_folders_saved_before_newer_network_options_still_resume() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let crops = synthetic_crops(16, 16, 3);
        let config = tiny_config(2);
        let stopped = TrainOptions { stop_after_epochs: Some(1), show_progress: false };
        train_classifier(&config, &crops, &[], dir.path(), &device, stopped).unwrap();
        // Rewrite config.json as 0.6 and earlier wrote it: no `fourth_block`,
        // no `stain_input`, no `decay_epochs`.
        let path = dir.path().join(CONFIG_FILE);
        let mut saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        saved["model"].as_object_mut().unwrap().remove("fourth_block").unwrap();
        saved["model"].as_object_mut().unwrap().remove("stain_input").unwrap();
        saved.as_object_mut().unwrap().remove("decay_epochs").unwrap();
        // ... and 0.7 and earlier: no JPEG augmentation.
        saved["augment"].as_object_mut().unwrap().remove("jpeg_probability").unwrap();
        saved["augment"].as_object_mut().unwrap().remove("jpeg_quality").unwrap();
        // ... and 0.10 and earlier: no stain rotation.
        saved["augment"].as_object_mut().unwrap().remove("stain_rotation_deg").unwrap();
        // ... and 0.11's experiments and earlier: no centre shift.
        saved["augment"].as_object_mut().unwrap().remove("shift_px").unwrap();
        std::fs::write(&path, serde_json::to_string(&saved).unwrap()).unwrap();
        let read = read_config(&path).unwrap();
        assert_eq!(read.model, config.model);
        assert_eq!(read.augment, config.augment);
        let resumed = train_classifier(&config, &crops, &[], dir.path(), &device, TrainOptions::quiet()).unwrap();
        assert_eq!((resumed.first_epoch, resumed.last_epoch), (2, 2));
        // A network that has the fourth block is not what that folder holds.
        let deeper = TrainingConfig { model: config.model.clone().with_fourth_block(true), ..config.clone() };
        std::fs::write(&path, serde_json::to_string(&saved).unwrap()).unwrap();
        let err = train_classifier(&deeper, &crops, &[], dir.path(), &device, TrainOptions::quiet()).unwrap_err();
        assert!(matches!(err, ModelError::Config { .. }), "{err}");
    }
    #[test]
    fn candidate_steps_fit_a_disc_heat_map() {
        let device = Device::flex().autodiff();
        let mut model = crate::CandidateNetConfig::new().with_base_channels(4).init(&device);
        let mut optimizer = AdamConfig::new().init();
        let tile = crate::test_support::synthetic_crop(16, true, 5);
        let target = crate::candidate::disc_target(16, 16, &[(7.5, 7.5)], 3.2);
        let mut losses = Vec::new();
        // Weight init draws from burn's global RNG, which concurrent tests share;
        // the bound is loose enough for any initialisation.
        for _ in 0..20 {
            let (next, loss) = candidate_step(
                model,
                &mut optimizer,
                std::slice::from_ref(&tile),
                std::slice::from_ref(&target),
                1e-2,
                2.0,
                &device,
            )
            .unwrap();
            model = next;
            losses.push(loss);
        }
        assert!(losses[19] < 0.75 * losses[0], "{losses:?}");
        let bad = crate::candidate::disc_target(8, 8, &[], 1.0);
        assert!(candidate_step(model, &mut optimizer, &[tile], &[bad], 1e-2, 1.0, &device).is_err());
    }
}
