//! The recipe's settings ([`RecipeConfig`], saved as `recipe.json`) and
//! their defaults: the default model's recipe, the quick one, and the fit
//! to datasets of one's own.

use std::path::Path;

use mitoscope_formats::amibr::Scanner;
use serde::{Deserialize, Serialize};

use crate::mask_training::MaskHeadRecipe;
use crate::training_data::TrainingData;
use crate::{CandidateCentre, ScoreFusion};

/// Every knob of the recipe (saved as `recipe.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipeConfig {
    /// Seed of everything (stage 2's too unless `classifier_seed` is set).
    pub seed: u64,
    /// ICPR HPFs held out for validation / the operating threshold.
    pub val_hpfs: Vec<String>,
    /// CMC tiles (file stems) held out for validation (false positives on mitosis-free tissue).
    pub val_cmc: Vec<String>,
    /// Stage-1 epochs.
    pub candidate_epochs: usize,
    /// The last this-many stage-1 epochs anneal the learning rate to zero
    /// (`CandidateTrainingConfig::decay_epochs`). Absent before 0.9: 0 (constant).
    #[serde(default)]
    pub candidate_decay_epochs: usize,
    /// Stage-1 tiles per epoch.
    pub candidate_tiles_per_epoch: usize,
    /// Stage-1 tile side (model pixels).
    pub candidate_tile_size: usize,
    /// Stage-1 channels at full resolution.
    pub candidate_channels: usize,
    /// Radius of the disc target around centroids, µm.
    pub disc_radius_um: f64,
    /// Stage-2 epochs.
    pub classifier_epochs: usize,
    /// The last this-many stage-2 epochs anneal the learning rate to zero
    /// (`TrainingConfig::decay_epochs`). Absent in 0.1/0.2 recipes: 0 (constant).
    #[serde(default)]
    pub classifier_decay_epochs: usize,
    /// Stage-2 channels of the first block.
    pub classifier_channels: usize,
    /// Keep at most this many crops per AMi-Br / AtNorM-Br class folder (None = all).
    pub crops_per_folder: Option<usize>,
    /// Random negatives per training ICPR HPF.
    pub negatives_per_hpf: usize,
    /// Random negatives per training CMC tile.
    pub negatives_per_cmc: usize,
    /// Copies of each in-domain (ICPR, mask patch, CMC look-alike) crop.
    pub in_domain_repeats: usize,
    /// At most this many hard negatives per image (strongest peaks first).
    pub hard_negatives_per_image: usize,
    /// Share of the best training recall the candidate threshold (the one the
    /// model ships, and each fold's) must keep.
    pub candidate_recall_target: f64,
    /// Share of the best training recall the threshold hard negatives are
    /// mined above must keep. Absent (up to 0.10): `candidate_recall_target`,
    /// one threshold for both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mining_recall_target: Option<f64>,
    /// A detection matches a labelled mitosis within this distance, µm.
    pub match_radius_um: f64,
    /// Minimum distance between candidates, µm.
    pub min_distance_um: f64,
    /// Standardise each stage-2 crop's channels inside the classifier (see
    /// `PatchClassifierConfig::input_norm`). Absent in 0.1 recipes: off.
    #[serde(default)]
    pub classifier_input_norm: bool,
    /// Stage 2 reads stain concentrations instead of RGB (see
    /// `PatchClassifierConfig::stain_input`). Absent before 0.6: off.
    #[serde(default)]
    pub classifier_stain_input: bool,
    /// Stage 2 has a fourth conv block, seeing the whole crop (see
    /// `PatchClassifierConfig::fourth_block`). Absent before 0.7: off.
    #[serde(default)]
    pub classifier_fourth_block: bool,
    /// Stage 2 keeps at most this many of the (off-domain) AMi-Br /
    /// AtNorM-Br figure crops, evenly spread over them; stage 1 uses all.
    #[serde(default)]
    pub classifier_figure_crops: Option<usize>,
    /// Which figure crops stage 2 keeps when `classifier_figure_crops` caps
    /// them. Absent in 0.9 and older recipes: evenly spread.
    #[serde(default)]
    pub classifier_figure_selection: FigureSelection,
    /// Stage-2 stain augmentation: HED concentration scale and shift ranges.
    #[serde(default = "default_stain_jitter")]
    pub stain_jitter: (f32, f32),
    /// Probability that a stage-2 training crop is re-encoded as JPEG at a
    /// random quality (60-95; `AugmentConfig::jpeg_probability`). Absent
    /// before 0.8: never.
    #[serde(default)]
    pub classifier_jpeg_probability: f32,
    /// Stage-2 stain rotation: largest angle (degrees) by which the H and E
    /// vectors of a training crop are turned (`AugmentConfig::stain_rotation_deg`).
    /// Absent before 0.11: 0, none.
    #[serde(default)]
    pub classifier_stain_rotation_deg: f32,
    /// Stage-2 centre shift: largest offset (µm, per axis) by which a training
    /// crop's content is moved (`AugmentConfig::shift_px`), since at inference
    /// crops are centred on stage-1 peaks, not on annotated centres.
    /// Absent before 0.11: 0, none.
    #[serde(default)]
    pub classifier_shift_um: f32,
    /// Stage-2 crop side in pixels (0.1: 64).
    #[serde(default = "default_classifier_crop_px")]
    pub classifier_crop_px: u32,
    /// Stage-2 crop resolution, µm/px (0.1: 0.5, stage 1's). Finer than
    /// stage 1: chromatin texture is what tells a figure from a look-alike.
    #[serde(default = "default_classifier_mpp")]
    pub classifier_mpp: f64,
    /// How the final score combines the stages (0.1: the classifier's alone).
    #[serde(default)]
    pub score_fusion: ScoreFusion,
    /// Which labelled HPFs place the operating threshold (best pooled F1; the
    /// held-out CMC tiles always count their false positives). Absent in
    /// 0.1/0.2 recipes: the validation HPFs alone.
    #[serde(default)]
    pub threshold_on: ThresholdImages,
    /// Also take stage-2 negatives (random and mined) from the ICPR contest
    /// overlays in `icpr2012/pixel-masks/` (`<id>_overlay.jpg`, training HPFs
    /// whose mitoses are painted yellow; `<id>.csv` lists the painted pixels),
    /// clear of the painted figures. In-domain tissue is what stage 2 lacks
    /// most: 4 labelled HPFs gave all its scanner-A negatives before 0.4.
    /// Absent in older recipes: off.
    #[serde(default)]
    pub painted_hpf_negatives: bool,
    /// Orientations of each crop stage 2 averages at inference (1, 2, 4 or 8;
    /// written into the card, so the threshold is chosen with them). Absent in
    /// older recipes: 1.
    #[serde(default = "default_classifier_views")]
    pub classifier_views: u8,
    /// Where a candidate's stage-2 crop is centred (written into the card, so
    /// hard negatives are mined and the threshold chosen with it). Absent in
    /// older recipes: the heat map's peak pixel.
    #[serde(default)]
    pub candidate_centre: CandidateCentre,
    /// Seed of stage 2 alone (its random negatives, validation split,
    /// initialisation and augmentation), so that a run folder's finished
    /// stage 1s can be kept while stage 2 is redrawn: what measures stage 2's
    /// own seed-to-seed spread. Absent (the default, and in older recipes):
    /// `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_seed: Option<u64>,
    /// Stage-2 networks trained (seeds `seed`, `seed + 1000`, ...; run
    /// folders `classifier/`, `classifier-2/`, ...) whose probabilities the
    /// detector averages; each cross-validation fold trains as many (its
    /// `cv-<HPF>/classifier*`). Absent in older recipes: 1.
    #[serde(default = "default_classifier_ensemble")]
    pub classifier_ensemble: usize,
    /// Cross-validated runs: each fold also trains its own stage 1 without the
    /// HPF it scores (and mines its hard negatives with it), so out-of-fold
    /// scores come from two stages that never saw that HPF, and the operating
    /// threshold is placed on peaks as strong as unseen HPFs give. Absent in
    /// older recipes: false (the run's stage 1, which saw all but `val_hpfs`,
    /// serves every fold).
    #[serde(default)]
    pub cv_stage1: bool,
    /// Cross-validated runs with `cv_stage1`: the shipped stage 1 also trains
    /// on the validation HPFs (`val_hpfs`), since the folds' own stage 1s give
    /// the out-of-fold estimate; every fold then trains its stage 1. Absent in
    /// older recipes: false.
    #[serde(default)]
    pub stage1_on_all_hpfs: bool,
    /// The mask head's training (`epochs: 0`: none). Absent in older recipes:
    /// the default head.
    #[serde(default)]
    pub mask_head: MaskHeadRecipe,
    /// Model name written into the card.
    pub version: String,
}

/// How stage 2 picks its (off-domain) figure crops when they are capped.
/// AMi-Br's `AMI-BR.csv` names each crop's source slide, and so its scanner;
/// crops it does not list (AtNorM-Br) count as one slide each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureSelection {
    /// Evenly spread over the crops in file order.
    #[default]
    Even,
    /// Every crop scanned by this scanner first (the scanner of the HPFs the
    /// model is for: same optics and compression), the rest evenly spread.
    ScannerFirst(Scanner),
    /// As many slides as possible: each slide gives at most the same number
    /// of crops (evenly spread over its own), so slides with hundreds of
    /// figures do not decide what a figure looks like.
    PerSlide,
}

/// The images that choose the operating threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdImages {
    /// The held-out validation HPFs only: unbiased, but with the default split
    /// that is one HPF of 5 mitoses, where the best-F1 threshold is noise (the
    /// first 0.3 run put it at 0.98: pooled F1 0.43 over the 5 ICPR HPFs, 0.61 at 0.84).
    #[default]
    Validation,
    /// Every labelled ICPR HPF, training ones included: 7x the mitoses, at the
    /// cost of a bias from images stage 2 has seen. The validation numbers are
    /// still reported on the held-out images alone.
    AllHpfs,
    /// Out-of-fold scores: each labelled ICPR HPF is scored by a stage-2
    /// network trained without it (the shipped networks' data, seeds and
    /// schedule, that HPF's crops and mined negatives left out; as many
    /// networks as `classifier_ensemble`, averaged), and the threshold is the
    /// best pooled F1 over all of them. The shipped stage 2 then trains on
    /// every labelled HPF (stage 1 keeps its own split). Out-of-fold scores
    /// for all 35 mitoses, at the cost of one extra network per HPF; with
    /// `cv_stage1` also one stage 1 per HPF, without which the peaks the
    /// scores fuse are in-sample for all but the validation HPF.
    CrossValidated,
}

fn default_stain_jitter() -> (f32, f32) {
    (0.05, 0.02)
}

fn default_classifier_crop_px() -> u32 {
    64
}

fn default_classifier_ensemble() -> usize {
    1
}

fn default_classifier_views() -> u8 {
    1
}

fn default_classifier_mpp() -> f64 {
    0.5
}

impl Default for RecipeConfig {
    fn default() -> Self {
        Self {
            seed: 2025,
            val_hpfs: vec!["A04_07".into()],
            val_cmc: vec!["2191a7aa287ce1d5dbc0_patch_0_57720".into()],
            candidate_epochs: 6,
            // 0.9: the last 2 of the 6 epochs anneal (0.8: constant, same time).
            // Out of fold, all else as 0.8 (same seed): AP 0.45 vs 0.40, best
            // pooled F1 0.51 vs 0.47, nested F1 0.48 vs 0.42, candidate recall
            // 33 vs 32 of 35 (BENCHMARKS.md).
            candidate_decay_epochs: 2,
            candidate_tiles_per_epoch: 2048,
            candidate_tile_size: 64,
            candidate_channels: 8,
            disc_radius_um: 4.0,
            // 8 epochs at a constant rate, then 4 annealed to zero (0.2: 12, constant;
            // 0.3-0.5: 12 + 6). 0.6 measured the shorter run out of fold with its
            // other changes (BENCHMARKS.md): it keeps the recipe with its 6
            // stage-2 networks near an hour on 2 cores.
            classifier_epochs: 12,
            classifier_decay_epochs: 4,
            classifier_channels: 8,
            crops_per_folder: None,
            negatives_per_hpf: 300,
            // 0.7: twice 0.6's 400. Out of fold, with 0.6's stage 1 and all else
            // equal: AP 0.48 vs 0.44, best pooled F1 0.51 vs 0.49, nested F1 0.43 vs
            // 0.33, 1 false positive on the 3 CMC tiles vs 4 (BENCHMARKS.md).
            negatives_per_cmc: 800,
            in_domain_repeats: 16,
            hard_negatives_per_image: 400,
            // With 30 training figures 0.95 lets the weakest go; out of fold stage 1
            // finds 33 of 35. Measured in session 15: 0.99 with `mining_recall_target:
            // 0.95` (same mined negatives, so the same stage 2) still finds 33 of 35,
            // with 354 candidates per HPF instead of 168 (BENCHMARKS.md): not taken.
            candidate_recall_target: 0.95,
            mining_recall_target: None,
            match_radius_um: 8.0,
            min_distance_um: 6.0,
            // Measured without it in session 12 (0.9's stage 1s and seed, raw stain
            // concentrations): out of fold AP 0.38, best F1 0.44, nested F1 0.37
            // (0.9: 0.45, 0.51, 0.48).
            classifier_input_norm: true,
            // 0.6: stage 2 reads stain concentrations. Against RGB with the same
            // stage 1 and schedule, out of fold: AP 0.44 vs 0.32, best pooled F1
            // 0.49 vs 0.47, and F1 flat over thresholds 0.90-0.96 (BENCHMARKS.md).
            classifier_stain_input: true,
            // Measured for 0.7 and not taken: out of fold AP 0.34, best F1 0.41,
            // nested F1 0.29 (three blocks: 0.48, 0.51, 0.43). It fits the
            // training crops better (validation loss 0.08 vs 0.15), and with it,
            // it seems, whatever separates off-domain figures from in-domain tissue.
            classifier_fourth_block: false,
            // Off-domain figure crops are capped and in-domain ones repeated
            // more, so that scanner differences do not decide the class.
            classifier_figure_crops: Some(2000),
            // Measured in session 11 against 0.9 (its stage 1s, seed and all else;
            // only the 2000 figure crops differ) and not taken, out of fold:
            // Aperio XT scans first (1329 TUPAC16 1-23 crops): AP 0.40, best F1
            // 0.45, nested F1 0.42; at most 8-9 per slide (948 slides): AP 0.38,
            // best F1 0.45, nested F1 0.38 (0.9: 0.45, 0.51, 0.48).
            classifier_figure_selection: FigureSelection::Even,
            stain_jitter: (0.1, 0.03),
            // Measured for 0.8 and not taken: half the crops re-encoded as JPEG
            // (quality 60-95) gave out of fold AP 0.46, best F1 0.54, nested F1 0.38
            // (0.7: 0.48, 0.51, 0.43): no better on the measures for unseen HPFs.
            classifier_jpeg_probability: 0.0,
            // Measured in sessions 25 and 28 and not taken: 5°, three stage-2 draws a side,
            // out of fold AP 0.36 and best F1 0.44 on average against the control's 0.39 and
            // 0.45 (nested F1 0.42 against 0.39, within the draws' spread); 10°, one draw, lower.
            classifier_stain_rotation_deg: 0.0,
            // Measured in session 26 and not taken: training crops shifted by up to 1.5 µm
            // per axis, out of fold nested F1 0.34 (AP 0.39) against the control's 0.48 (0.45).
            classifier_shift_um: 0.0,
            // 64 px at 0.3 µm/px = 19 µm: a figure and its rim, at the cost of 64 px at 0.5.
            // Measured in session 13 and not taken: 80 px at 0.25 µm/px (the same field,
            // 1.56x the pixels), out of fold AP 0.39, best F1 0.42, nested F1 0.29
            // (0.9: 0.45, 0.51, 0.46 on the same HPF-only measure; BENCHMARKS.md). Nor 48 px
            // (14 µm), three stage-2 draws (session 29): mean AP 0.37, best F1 0.43 against 0.39, 0.45.
            classifier_crop_px: 64,
            classifier_mpp: 0.3,
            score_fusion: ScoreFusion::GeometricMean,
            // 0.5: out-of-fold scores of all 5 HPFs place the threshold (0.3, 0.4:
            // all HPFs, training ones included), and stage 2 trains on all of them.
            threshold_on: ThresholdImages::CrossValidated,
            painted_hpf_negatives: true,
            // Measured (MODEL.md): averaging 8 orientations raised the pooled F1 on
            // the 4 training HPFs but lowered AP on the held-out one, at 8x the
            // stage-2 time. 0.4 averaged two networks; 0.5 ships one, the kind of
            // network whose out-of-fold scores placed its threshold (an average of
            // two is distributed differently), and the 5 cross-validation networks
            // take the time a second one would.
            classifier_views: 1,
            // Session 26: blob centres localise the figures better (median 0.88 -> 0.53 µm
            // out of fold) but, with 0.10's networks, gave nested F1 0.40 against 0.48;
            // session 27, stage 2 retrained on them: AP 0.45, nested F1 0.28.
            candidate_centre: CandidateCentre::Peak,
            classifier_seed: None,
            classifier_ensemble: 1,
            // 0.8: the out-of-fold peaks of 0.7's stage 1 were in-sample for 4 of
            // the 5 HPFs, inflating the scores the threshold was placed on.
            cv_stage1: true,
            // Measured for 0.8 and not taken: its out-of-fold scores are 0.8's by
            // construction (the same folds); the shipped model it makes scored the 5
            // HPFs in-sample at F1 0.51, AP 0.62 (0.8: 0.52, 0.63) with 1 false
            // positive on the held-out CMC tile (0.8: 0). No gain that shows here.
            stage1_on_all_hpfs: false,
            // 0.10: outlines from a mask head at 0.25 µm/px trained on the mask
            // patches (0.9: convex hulls of the 0.5 µm/px stage-1 map).
            mask_head: MaskHeadRecipe::default(),
            version: "mitoscope-default-0.10".into(),
        }
    }
}

impl RecipeConfig {
    /// Seed of stage 2: `classifier_seed` where set, else `seed`.
    pub fn stage2_seed(&self) -> u64 {
        self.classifier_seed.unwrap_or(self.seed)
    }

    /// A few-minute configuration that exercises every step (placeholder quality).
    pub fn quick() -> Self {
        Self {
            candidate_epochs: 2,
            candidate_tiles_per_epoch: 256,
            classifier_epochs: 2,
            classifier_decay_epochs: 1,
            crops_per_folder: Some(150),
            negatives_per_hpf: 60,
            negatives_per_cmc: 60,
            hard_negatives_per_image: 60,
            mask_head: MaskHeadRecipe {
                epochs: 2,
                decay_epochs: 1,
                tiles_per_epoch: 128,
                folds: 2,
                ..MaskHeadRecipe::default()
            },
            ..Self::default()
        }
    }
}

impl RecipeConfig {
    /// The recipe's settings fitted to datasets of one's own (`mitoscope train
    /// --dataset`): the operating threshold is placed on the validation fields
    /// (one network per fold is for a handful of HPFs), in-field figures are
    /// repeated only as far as they are outnumbered by crop-folder figures (the
    /// shared recipe repeats its 31 ICPR figures 16x against 2000 crops), and
    /// random negatives per field shrink so that a large dataset draws about
    /// 60,000 in all. `val_hpfs` / `val_cmc` are left to the caller.
    pub fn fitted_to(mut self, data: &TrainingData) -> Self {
        let mitoses: usize = data.fields.iter().map(|f| f.centroids.len()).sum();
        let folder_figures: usize = data.crop_folders.iter().map(|c| count_positive_crops(&c.path)).sum();
        let figures = self.classifier_figure_crops.map_or(folder_figures, |cap| cap.min(folder_figures));
        self.in_domain_repeats =
            (figures as f64 / mitoses.max(1) as f64).round().clamp(1.0, self.in_domain_repeats.max(1) as f64) as usize;
        let fields = data.fields.len() + data.negative_fields.len();
        self.negatives_per_hpf = self.negatives_per_hpf.min((60_000 / fields.max(1)).max(20));
        self.negatives_per_cmc = self.negatives_per_cmc.min((60_000 / fields.max(1)).max(20));
        self.threshold_on = ThresholdImages::Validation;
        self.cv_stage1 = false;
        self.stage1_on_all_hpfs = false;
        self.painted_hpf_negatives = false;
        self.version = "mitoscope-custom".into();
        self
    }
}

/// Image files in the figure subfolders of a crop folder (a directory listing, no decoding).
fn count_positive_crops(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().and_then(mitoscope_model::data::folder_label) == Some(true))
        .filter_map(|e| std::fs::read_dir(e.path()).ok())
        .flat_map(|d| d.filter_map(|f| f.ok()))
        .filter(|f| mitoscope_imaging::is_image_path(&f.path()))
        .count()
}
