//! The recipe that trains Mitoscope's default model from the shared real data
//! (`../shared/data`), sized for a 2-core CPU. [`train_recipe`] runs the same
//! steps on any [`TrainingData`] (datasets of one's own; where they differ
//! from the shared layout, e.g. no contest overlays, those steps have nothing
//! to do), and can train one stage, keeping the other from a trained model
//! ([`Stages`]).
//!
//! 1. **Stage 1** ([`mitoscope_model::candidate_training`]) on tiles at
//!    0.5 µm/px: the training ICPR 2012 HPFs with discs around their
//!    centroids, the ICPR mask patches with their masks, the training CMC
//!    tiles (no mitoses: all-zero targets), and the AMi-Br / AtNorM-Br crops
//!    with a disc at the centre (centre-directed tiles only).
//! 2. **Candidate threshold**: the highest peak probability that keeps
//!    `candidate_recall_target` of the best recall on the training HPFs (the
//!    threshold the model ships), and the mining threshold, which keeps
//!    `mining_recall_target` of that recall (unset: the same threshold; never
//!    below the candidate threshold).
//! 3. **Hard negatives**: stage-1 peaks above the mining threshold on the training ICPR HPFs and CMC
//!    tiles farther than `match_radius_um` from every labelled mitosis, and
//!    on the ICPR contest overlays clear of their painted mitoses.
//! 4. **Stage 2** ([`mitoscope_model::train_classifier`]): positives = AMi-Br,
//!    AtNorM-Br, ICPR training centroids, mask-patch figures (in-domain ones
//!    repeated); negatives = random ICPR / overlay / CMC crops away from labels, empty
//!    mask patches, CMC look-alike boxes and the hard negatives.
//! 5. **Operating threshold**: the full pipeline (stage 2 averaged over
//!    `classifier_views` orientations, as the card will say) on the held-out
//!    HPF(s) and CMC tile, plus the training HPFs when `threshold_on` says so;
//!    the final score with the best pooled F1 (greedy matching within
//!    `match_radius_um`). With `threshold_on: cross_validated` (0.5's
//!    default) stage 2 trains on every labelled HPF, and one further network
//!    per HPF, trained without it, scores it (with `cv_stage1`, 0.8's default,
//!    on the peaks of a stage 1 also trained without it, which mines that
//!    fold's hard negatives): the threshold is placed on those out-of-fold
//!    scores, and each HPF is also judged at the threshold the other HPFs
//!    alone choose (the nested estimate for unseen HPFs).
//!
//! Outputs in `out_dir`: `model.bundle`, `MODEL.md`, `recipe.json`,
//! `out-of-fold.csv` (cross-validated runs: every candidate's out-of-fold score and stage-1 peak) and the run
//! folders `candidate/`, `classifier/`, `classifier-2/`, ... and
//! `cv-<HPF>/classifier/`, `cv-<HPF>/candidate/` (checkpoints: a killed run resumes).

use std::path::Path;
use std::time::Instant;

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};
use mitoscope_geom::Mpp;
use mitoscope_model::augment::AugmentConfig;
use mitoscope_model::burn::tensor::Device;
use mitoscope_model::candidate::{ProbabilityMap, disc_target, mask_target};
use mitoscope_model::candidate_training::{CandidateSample, CandidateTrainingConfig, train_candidate_net};
use mitoscope_model::data::{
    CropSpec, LabelledCrop, NegativeDraw, centred_crops, load_crop_folders, positive_crops, random_negative_crops,
    resample_crop,
};
use mitoscope_model::training::TrainingConfig;
use mitoscope_model::{CandidateNet, CandidateNetConfig, PatchClassifierConfig, TrainOptions, train_classifier};
use serde::{Deserialize, Serialize};

use crate::mask_training::{MaskImage, train_mask_head};
use crate::training_data::{LabelledField, MaskPatch, NegativeField, PaintedField, TrainingData};
use crate::{DetectError, DetectOptions, Detector, ModelBundle, ModelCard, TrainingRecord};

pub use crate::training_data::{CROP_SOURCE_MPP, ICPR_MPP};

mod config;
mod figures;
mod model_card;

pub use config::{FigureSelection, RecipeConfig, ThresholdImages};
use figures::select_figures;
use model_card::{mask_head_md, model_md};

/// What the recipe measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipeReport {
    /// Stage-1 peak threshold chosen.
    pub candidate_threshold: f64,
    /// Peak threshold the hard negatives were mined above. Absent in reports
    /// up to 0.10, where it was `candidate_threshold`.
    #[serde(default)]
    pub mining_threshold: Option<f64>,
    /// Candidate recall on the training HPFs at that threshold.
    pub train_candidate_recall: f64,
    /// Candidate recall on the validation HPFs.
    pub val_candidate_recall: f64,
    /// Candidates per validation HPF.
    pub val_candidates_per_hpf: f64,
    /// Operating threshold chosen (best pooled F1 on the images `threshold_on` names).
    pub operating_threshold: f64,
    /// Validation precision / recall / F1 at the operating threshold.
    pub val_precision: f64,
    /// See `val_precision`.
    pub val_recall: f64,
    /// See `val_precision`.
    pub val_f1: f64,
    /// Validation mitoses, true / false positives at the threshold.
    pub val_mitoses: usize,
    /// See `val_mitoses`.
    pub val_tp: usize,
    /// See `val_mitoses`; false positives on the held-out CMC tile(s) included.
    pub val_fp: usize,
    /// False positives on the held-out (mitosis-free) CMC tiles alone.
    pub val_cmc_fp: usize,
    /// Seconds of `detect_image` per 2084x2084 validation HPF (this machine).
    pub seconds_per_hpf: f64,
    /// Stage-2 training crops: positives, negatives, of which hard negatives.
    pub classifier_crops: (usize, usize, usize),
    /// Stage-2 last-epoch validation accuracy / F1 at 0.5 (random 10% split).
    pub classifier_val_f1: Option<f32>,
    /// Wall-clock seconds per phase.
    pub seconds: Vec<(String, f64)>,
    /// Per-HPF out-of-fold results (`threshold_on: cross_validated` only).
    #[serde(default)]
    pub cross_validation: Option<CrossValidation>,
    /// The mask head's Dice, out of fold over the mask images (runs with a head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_head: Option<crate::mask_training::MaskHeadReport>,
}

/// Out-of-fold results: every labelled HPF scored by a network that never saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossValidation {
    /// One entry per HPF, at the operating threshold.
    pub folds: Vec<FoldResult>,
    /// Pooled F1 when each HPF is judged at the threshold chosen on the
    /// other HPFs alone: the estimate for unseen HPFs (the threshold never saw the HPF).
    pub nested_f1: f64,
    /// True / false positives behind `nested_f1`.
    pub nested_tp: usize,
    /// See `nested_tp`.
    pub nested_fp: usize,
}

/// One held-out HPF of the cross-validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    /// The HPF its network did not train on.
    pub hpf: String,
    /// Its labelled mitoses.
    pub mitoses: usize,
    /// True / false positives at the operating threshold.
    pub tp: usize,
    /// See `tp`.
    pub fp: usize,
    /// The threshold the other HPFs alone would choose.
    pub threshold_without: f64,
    /// True / false positives at `threshold_without`.
    pub nested_tp: usize,
    /// See `nested_tp`.
    pub nested_fp: usize,
}

/// Labelled centroids of one image, its pixels.
type Points = Vec<(f64, f64)>;

/// One validation image: detections (all candidates, scored), truth, match radius in px.
type ScoredImage = (Vec<crate::Detection>, Points, f64);

/// Which stages a run trains. The other stage comes from a trained model.
pub enum Stages {
    /// Both stages (the recipe).
    Both,
    /// Stage 1 only; stage 2 (its networks, crop geometry, score fusion and
    /// views) is this model's. The operating threshold is chosen anew.
    CandidateOnly(Box<ModelBundle>),
    /// Stage 2 only, on the candidates of this model's stage 1 (kept with its
    /// candidate threshold), which also mines the hard negatives.
    ClassifierOnly(Box<ModelBundle>),
}

/// Trains the default model from `data_root` into `out_dir` (see the module
/// docs); `command` is recorded in the card. Returns the bundle and report.
pub fn train_default(
    data_root: &Path,
    out_dir: &Path,
    config: &RecipeConfig,
    command: &str,
    show_progress: bool,
) -> Result<(ModelBundle, RecipeReport), DetectError> {
    check_config(config, &Stages::Both)?;
    let data = TrainingData::shared(data_root, config.painted_hpf_negatives)?;
    train_recipe(&data, out_dir, config, &Stages::Both, &Device::flex(), command, show_progress)
}

/// Adds a mask head to `base` (its stages, thresholds and card kept), trained
/// on the pixel masks of `data` (the mask patches and the masks of the
/// fields `config.val_hpfs` does not name) with `config.mask_head`, and
/// measured out of fold against `base`'s own stage-1 outlines. Writes
/// `model.bundle`, `recipe.json` and `MASK-HEAD.md` into `out_dir`; re-running
/// resumes.
pub fn add_mask_head(
    data: &TrainingData,
    out_dir: &Path,
    config: &RecipeConfig,
    base: &ModelBundle,
    device: &Device,
    command: &str,
    show_progress: bool,
) -> Result<(ModelBundle, Option<crate::mask_training::MaskHeadReport>), DetectError> {
    if config.mask_head.epochs == 0 {
        return Err(DetectError::Config("the recipe's mask_head.epochs is 0: no mask head to train".into()));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| DetectError::io(out_dir, e))?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| DetectError::Config(e.to_string()))?;
    mitoscope_formats::atomic::write_atomic(&out_dir.join("recipe.json"), &json)?;
    let say = |m: &str| {
        if show_progress {
            eprintln!("[recipe] {m}");
        }
    };
    let fields: Vec<&LabelledField> = data.fields.iter().filter(|f| !config.val_hpfs.contains(&f.name)).collect();
    let images = MaskImage::all(&data.mask_patches, &fields);
    say(&format!(
        "mask head: {} mask images ({} with a figure), stages kept from {}",
        images.len(),
        images.iter().filter(|m| m.has_figure()).count(),
        base.card.version
    ));
    let seed = config.seed.wrapping_add(7000);
    let options = TrainOptions { stop_after_epochs: None, show_progress };
    let (head, report) =
        train_mask_head(base, &images, &config.mask_head, seed, &out_dir.join("mask-head"), device, options, &say)?;
    let mut bundle = base.clone();
    bundle.mask_head = Some(head);
    bundle.card.version = config.version.clone();
    let n_images = images.len();
    // A head replacing another: its note replaces the old one.
    let notes = &mut bundle.card.training.notes;
    if let Some(at) = notes.find("; mask head added to ") {
        notes.truncate(at);
    }
    bundle.card.training.notes +=
        &format!("; mask head added to {} by `{command}` (seed {seed}) from {n_images} mask images", base.card.version);
    if let (Some(r), Some(metrics)) = (&report, bundle.card.metrics.as_object_mut()) {
        metrics.insert("mask_head".into(), serde_json::to_value(r).map_err(|e| DetectError::Config(e.to_string()))?);
    }
    bundle.save(&out_dir.join(crate::BUNDLE_FILE))?;
    let md = format!(
        "# Mask head of `{}`\n\nAdded to `{}` (its stages, thresholds and card kept) by\n\n```\n{command}\n```\n\n{}",
        config.version,
        base.card.version,
        mask_head_md(&bundle.card, report.as_ref(), &config.mask_head)
    );
    mitoscope_formats::atomic::write_atomic(&out_dir.join("MASK-HEAD.md"), md.as_bytes())?;
    Ok((bundle, report))
}

/// Settings that cannot work together, refused before any data is read.
fn check_config(config: &RecipeConfig, stages: &Stages) -> Result<(), DetectError> {
    if config.stage1_on_all_hpfs && !(config.threshold_on == ThresholdImages::CrossValidated && config.cv_stage1) {
        return Err(DetectError::Config(
            "stage1_on_all_hpfs needs threshold_on: cross_validated and cv_stage1: true \
             (else no stage 1 would be left without the HPFs it is judged on)"
                .into(),
        ));
    }
    if matches!(stages, Stages::CandidateOnly(_)) && config.threshold_on == ThresholdImages::CrossValidated {
        return Err(DetectError::Config(
            "training stage 1 alone keeps the given model's stage 2, which no fold can retrain: \
             use threshold_on: validation (or all_hpfs)"
                .into(),
        ));
    }
    Ok(())
}

/// Trains the stages `stages` names on `data` into `out_dir` with `config`
/// (the fields named in `config.val_hpfs` / `val_cmc` validate) on `device`
/// (a GPU only after `mitoscope check-device` passed on it); `command` is
/// recorded in the card. Returns the bundle and report.
///
/// `recipe.json` is written first (a killed run's folder says what it was
/// doing); a run that fails puts back the one it replaced, so a folder whose
/// resume was refused still describes its own checkpoints and model.
pub fn train_recipe(
    data: &TrainingData,
    out_dir: &Path,
    config: &RecipeConfig,
    stages: &Stages,
    device: &Device,
    command: &str,
    show_progress: bool,
) -> Result<(ModelBundle, RecipeReport), DetectError> {
    let record = out_dir.join(RECIPE_FILE);
    let previous = std::fs::read(&record).ok();
    let result = train_recipe_in(data, out_dir, config, stages, device, command, show_progress);
    if let (Err(_), Some(previous)) = (&result, previous)
        && let Err(e) = mitoscope_formats::atomic::write_atomic(&record, &previous)
    {
        tracing::warn!("could not put back the earlier {}: {e}", record.display());
    }
    result
}

/// The settings file of a run folder.
pub const RECIPE_FILE: &str = "recipe.json";

fn train_recipe_in(
    data: &TrainingData,
    out_dir: &Path,
    config: &RecipeConfig,
    stages: &Stages,
    device: &Device,
    command: &str,
    show_progress: bool,
) -> Result<(ModelBundle, RecipeReport), DetectError> {
    check_config(config, stages)?;
    let device = device.clone();
    std::fs::create_dir_all(out_dir).map_err(|e| DetectError::io(out_dir, e))?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| DetectError::Config(e.to_string()))?;
    mitoscope_formats::atomic::write_atomic(&out_dir.join(RECIPE_FILE), &json)?;
    let mut seconds = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, seconds: &mut Vec<(String, f64)>| {
        seconds.push((name.to_owned(), clock.elapsed().as_secs_f64()));
        tracing::info!(phase = name, seconds = clock.elapsed().as_secs_f64(), "recipe phase done");
        clock = Instant::now();
    };
    let say = |m: &str| {
        if show_progress {
            eprintln!("[recipe] {m}");
        }
    };

    let model_mpp = match stages {
        Stages::ClassifierOnly(base) => base.candidate_config.mpp,
        _ => 0.5,
    };
    let (train_hpfs, val_hpfs): (Vec<&LabelledField>, Vec<&LabelledField>) =
        data.fields.iter().partition(|h| !config.val_hpfs.contains(&h.name));
    let cross_validated = config.threshold_on == ThresholdImages::CrossValidated;
    let (train_cmc, val_cmc): (Vec<&NegativeField>, Vec<&NegativeField>) =
        data.negative_fields.iter().partition(|c| !config.val_cmc.contains(&c.name));
    let patches = &data.mask_patches;
    let painted = &data.painted;
    if train_hpfs.is_empty() || val_hpfs.is_empty() {
        return Err(DetectError::Config(format!(
            "need training and validation fields; {} labelled, held out {:?}",
            data.fields.len(),
            config.val_hpfs
        )));
    }
    let spec = CropSpec { crop_size: 64, mpp: Mpp::new(model_mpp).map_err(|e| DetectError::Config(e.to_string()))? };
    let mpp_of = |m: f64| Mpp::new(m).map_err(|e| DetectError::Config(e.to_string()));
    // Stage 2's crop geometry: the kept model's when stage 2 is not trained.
    let (cls_crop_px, cls_mpp) = match stages {
        Stages::CandidateOnly(base) => (base.classifier_config.crop_size as u32, base.classifier_config.mpp),
        _ => (config.classifier_crop_px, config.classifier_mpp),
    };
    let cls_spec = CropSpec {
        crop_size: cls_crop_px,
        mpp: Mpp::new(cls_mpp).map_err(|e| DetectError::Config(format!("classifier_mpp: {e}")))?,
    };
    let load_figures = |spec: CropSpec| -> Result<Vec<LabelledCrop>, DetectError> {
        let mut crops = Vec::new();
        for folder in &data.crop_folders {
            crops.extend(load_crop_folders(&folder.path, mpp_of(folder.mpp)?, spec, config.crops_per_folder)?);
        }
        Ok(crops)
    };
    let crop_positives = load_figures(spec)?;
    say(&format!(
        "data: {} train / {} val labelled fields, {} painted fields, {} train / {} val mitosis-free fields, {} mask patches, {} labelled crops ({} positive)",
        train_hpfs.len(),
        val_hpfs.len(),
        painted.len(),
        train_cmc.len(),
        val_cmc.len(),
        patches.len(),
        crop_positives.len(),
        crop_positives.iter().filter(|c| c.positive).count()
    ));
    lap("load", &mut seconds);

    // ---- Stage 1, its candidate threshold and the hard negatives it mines ----
    let candidate_config = match stages {
        Stages::ClassifierOnly(base) => base.candidate_config.clone(),
        _ => CandidateNetConfig::new().with_base_channels(config.candidate_channels).with_mpp(model_mpp),
    };
    let classifier_config = match stages {
        Stages::CandidateOnly(base) => base.classifier_config.clone(),
        _ => PatchClassifierConfig::new()
            .with_base_channels(config.classifier_channels)
            .with_mpp(config.classifier_mpp)
            .with_crop_size(config.classifier_crop_px as usize)
            .with_input_norm(config.classifier_input_norm)
            .with_stain_input(config.classifier_stain_input)
            .with_fourth_block(config.classifier_fourth_block),
    };
    let mut card = ModelCard::untrained(&config.version);
    card.model_mpp = model_mpp;
    card.crop_size = cls_crop_px;
    card.score_fusion = config.score_fusion;
    card.classifier_views = config.classifier_views;
    card.candidate_centre = config.candidate_centre;
    card.min_distance_um = config.min_distance_um;
    card.operating_threshold = 0.0;
    if let Stages::CandidateOnly(base) = stages {
        // The kept stage 2 is scored as its own card says.
        card.score_fusion = base.card.score_fusion;
        card.classifier_views = base.card.classifier_views;
        card.candidate_centre = base.card.candidate_centre;
    }
    let options = TrainOptions { stop_after_epochs: None, show_progress };
    let stage1_data = Stage1Data {
        config,
        train_cmc: &train_cmc,
        patches,
        painted,
        figures: &crop_positives,
        candidate_config: &candidate_config,
        classifier_config: &classifier_config,
        card: card.clone(),
        cls_spec,
        device: &device,
        options,
        fixed: match stages {
            Stages::ClassifierOnly(base) => Some((&base.candidate, base.card.candidate_threshold)),
            _ => None,
        },
        mine_hard: !matches!(stages, Stages::CandidateOnly(_)),
    };
    // Cross-validated, stage 2 trains on every labelled HPF (stage 1 keeps its split).
    let stage2_hpfs: Vec<&LabelledField> =
        if cross_validated { train_hpfs.iter().chain(&val_hpfs).copied().collect() } else { train_hpfs.clone() };
    // With `stage1_on_all_hpfs` the validation HPFs train the shipped stage 1 too
    // (no stage-1 validation metrics then): the folds' stage 1s are what stay unseen.
    let (stage1_hpfs, stage1_val): (Vec<&LabelledField>, Vec<&LabelledField>) = if config.stage1_on_all_hpfs {
        (stage2_hpfs.clone(), Vec::new())
    } else {
        (train_hpfs.clone(), val_hpfs.clone())
    };
    let stage1 = train_stage1(
        &stage1_data,
        &stage1_hpfs,
        &stage1_val,
        &stage2_hpfs,
        &out_dir.join("candidate"),
        &say,
        &mut |phase| lap(phase, &mut seconds),
    )?;
    let candidate_threshold = stage1.candidate_threshold;
    let mining_threshold = stage1.mining_threshold;
    let train_candidate_recall = stage1.train_candidate_recall;

    // ---- Stage 2 ----
    // Stage 1 took the figure crops at its own resolution; stage 2 re-reads them at its own.
    let train_stage2 = !matches!(stages, Stages::CandidateOnly(_));
    let figures = if !train_stage2 {
        Vec::new()
    } else if cls_spec == spec {
        crop_positives.clone()
    } else {
        load_figures(cls_spec)?
    };
    // The selection (and cap) is of figures; labelled negative crops are all kept.
    let (figures, negative_crops): (Vec<LabelledCrop>, Vec<LabelledCrop>) =
        figures.into_iter().partition(|c| c.positive);
    let mut figures = select_figures(figures, config, data.amibr_table.as_deref(), &say)?;
    figures.extend(negative_crops);
    let n_hard = stage1.hard.len();
    let mut classifiers = Vec::new();
    let mut classifier_val_f1 = None;
    let mut classifier_crops = (0, 0, n_hard);
    // The crops network `member_seed` trains on: the same figures, in-domain
    // positives, look-alikes and hard negatives for every network; random
    // negatives drawn with its own seed. `held_out` names an HPF whose crops
    // (positives, random and mined negatives) stay out, for cross-validation.
    let stage2_crops =
        |member_seed: u64, held_out: Option<&str>, hard: &[LabelledCrop]| -> Result<Vec<LabelledCrop>, DetectError> {
            let mut rng_seed = member_seed;
            let mut crops = figures.clone();
            // Random negatives from `image`, `clear_px` away from `centres`, each image its own stream.
            let mut negatives =
                |image: &RgbImage, centres: &[(f64, f64)], mpp: Mpp, count: usize, clear_px: f64, name: &str| {
                    rng_seed = rng_seed.wrapping_add(1);
                    random_negative_crops(
                        image,
                        centres,
                        mpp,
                        cls_spec,
                        NegativeDraw { count, min_distance_px: clear_px },
                        &mut seeded(rng_seed),
                        name,
                    )
                };
            let repeats = config.in_domain_repeats.max(1);
            for h in stage2_hpfs.iter().filter(|h| Some(h.name.as_str()) != held_out) {
                let Ok(mpp) = Mpp::new(h.mpp) else { continue };
                let image = h.image.load()?;
                let pos = positive_crops(&image, &h.centroids, mpp, cls_spec, &h.name);
                for _ in 0..repeats {
                    crops.extend(pos.iter().cloned());
                }
                let min_d = 2.0 * config.match_radius_um / h.mpp;
                crops.extend(negatives(&image, &h.centroids, mpp, config.negatives_per_hpf, min_d, &h.name));
                let lookalikes = lookalike_crops(&image, &h.lookalikes, mpp, cls_spec, &h.name);
                for _ in 0..repeats {
                    crops.extend(lookalikes.iter().cloned());
                }
            }
            for p in painted {
                let Ok(mpp) = Mpp::new(p.mpp) else { continue };
                let (centres, clear_px) = p.exclusion(crop_half_diagonal(cls_spec, p.mpp));
                crops.extend(negatives(&p.image, &centres, mpp, config.negatives_per_hpf, clear_px, &p.name));
            }
            for c in &train_cmc {
                let Ok(mpp) = Mpp::new(c.mpp) else { continue };
                let image = c.image.load()?;
                crops.extend(negatives(&image, &[], mpp, config.negatives_per_cmc, 0.0, &c.name));
                let lookalikes = lookalike_crops(&image, &c.lookalikes, mpp, cls_spec, &c.name);
                for _ in 0..repeats {
                    crops.extend(lookalikes.iter().cloned());
                }
            }
            for p in patches {
                let Ok(mpp) = Mpp::new(p.mpp) else { continue };
                let centre = p
                    .centroid
                    .unwrap_or(((f64::from(p.image.width()) - 1.0) / 2.0, (f64::from(p.image.height()) - 1.0) / 2.0));
                let crop = LabelledCrop {
                    image: resample_crop(&p.image, centre, mpp, cls_spec),
                    positive: p.centroid.is_some(),
                    origin: p.name.clone(),
                };
                for _ in 0..repeats {
                    crops.push(crop.clone());
                }
            }
            // Mined crops carry their image in the origin: `hard:<name>@x,y`.
            let mined_elsewhere =
                |c: &&LabelledCrop| held_out.is_none_or(|name| !c.origin.starts_with(&format!("hard:{name}@")));
            crops.extend(hard.iter().filter(mined_elsewhere).cloned());
            Ok(crops)
        };
    let train_network = |seed: u64,
                         crops: Vec<LabelledCrop>,
                         folder: &Path|
     -> Result<mitoscope_model::training::TrainOutcome, DetectError> {
        let n_pos = crops.iter().filter(|c| c.positive).count();
        let n_neg = crops.len() - n_pos;
        let (train_crops, val_crops) = mitoscope_model::data::split_train_val(crops, 0.1, seed);
        let cls_config = TrainingConfig::new(classifier_config.clone())
            .with_num_epochs(config.classifier_epochs)
            .with_decay_epochs(config.classifier_decay_epochs)
            .with_seed(seed)
            .with_positive_weight((n_neg as f32 / n_pos.max(1) as f32).clamp(0.25, 4.0))
            .with_augment(
                AugmentConfig::new()
                    .with_hed_scale(config.stain_jitter.0)
                    .with_hed_shift(config.stain_jitter.1)
                    .with_jpeg_probability(config.classifier_jpeg_probability)
                    .with_stain_rotation_deg(config.classifier_stain_rotation_deg)
                    .with_shift_px(config.classifier_shift_um / config.classifier_mpp as f32),
            );
        Ok(train_classifier(&cls_config, &train_crops, &val_crops, folder, &device, options)?)
    };
    // Each network of the ensemble: its own seed for the random negatives, the
    // validation split, initialisation and augmentation; the same data otherwise.
    if let Stages::CandidateOnly(base) = stages {
        say("stage 2: kept from the given model");
        classifiers.push(base.classifier.clone());
        classifiers.extend(base.extra_classifiers.iter().cloned());
    }
    let networks = if train_stage2 { config.classifier_ensemble.max(1) } else { 0 };
    for member in 0..networks {
        let member_seed = config.stage2_seed().wrapping_add(1000 * member as u64);
        let crops = stage2_crops(member_seed, None, &stage1.hard)?;
        let n_pos = crops.iter().filter(|c| c.positive).count();
        let n_neg = crops.len() - n_pos;
        say(&format!("stage 2, network {}: {n_pos} positive, {n_neg} negative crops ({n_hard} hard)", member + 1));
        classifier_crops = (n_pos, n_neg, n_hard);
        let stage2 = train_network(member_seed, crops, &out_dir.join(classifier_folder(member)))?;
        for m in &stage2.history {
            say(&format!("  stage-2 network {} epoch {}: {m}", member + 1, m.epoch));
        }
        if member == 0 {
            classifier_val_f1 = stage2.history.last().and_then(|m| m.val_f1);
        }
        classifiers.push(stage2.model);
    }
    let (n_pos, n_neg, _) = classifier_crops;
    let mut classifiers = classifiers.into_iter();
    let classifier = classifiers.next().ok_or_else(|| DetectError::Config("no stage-2 network trained".into()))?;
    let extra_classifiers: Vec<_> = classifiers.collect();
    lap("stage2", &mut seconds);

    // ---- Operating threshold on held-out images ----
    card.candidate_threshold = candidate_threshold;
    let bundle = ModelBundle {
        candidate: stage1.model.clone(),
        candidate_config: candidate_config.clone(),
        classifier,
        extra_classifiers,
        classifier_config: classifier_config.clone(),
        // A one-stage run keeps the given model's head unless the recipe trains one.
        mask_head: match stages {
            Stages::CandidateOnly(base) | Stages::ClassifierOnly(base) => base.mask_head.clone(),
            Stages::Both => None,
        },
        card: card.clone(),
    };
    let detector = Detector::new(bundle, device.clone());
    // Scoring only: outlines (and a kept mask head's work) are not needed here.
    let all = DetectOptions { keep_all_candidates: true, polygons: false, ..DetectOptions::default() };
    // (scores of detections, ground truth, match radius in px)
    let mut val_sets: Vec<ScoredImage> = Vec::new();
    let mut hpf_seconds = Vec::new();
    for h in &val_hpfs {
        let t = Instant::now();
        let dets = detector.detect_image(&*h.image.load()?, h.mpp, &all)?;
        hpf_seconds.push(t.elapsed().as_secs_f64());
        val_sets.push((dets, h.centroids.clone(), config.match_radius_um / h.mpp));
    }
    for c in &val_cmc {
        val_sets.push((
            detector.detect_image(&*c.image.load()?, c.mpp, &all)?,
            Vec::new(),
            config.match_radius_um / c.mpp,
        ));
    }
    lap("stage2-scoring", &mut seconds);

    // ---- Cross-validation: each labelled HPF scored by a network that never saw it ----
    let mut out_of_fold: Vec<ScoredImage> = Vec::new();
    if cross_validated {
        for h in &stage2_hpfs {
            // The fold's stage 1: the run's own where that was trained without exactly
            // this HPF, else one trained now without it, which mines its own negatives.
            let own_split = stage1_hpfs.len() + 1 == stage2_hpfs.len() && stage1_hpfs.iter().all(|s| s.name != h.name);
            let fold_stage1;
            let s1 = if config.cv_stage1 && !own_split {
                let others: Vec<&LabelledField> = stage2_hpfs.iter().copied().filter(|o| o.name != h.name).collect();
                say(&format!("cross-validation: stage 1 without {}", h.name));
                fold_stage1 = train_stage1(
                    &stage1_data,
                    &others,
                    &[*h],
                    &others,
                    &out_dir.join(format!("cv-{}", h.name)).join("candidate"),
                    &say,
                    &mut |_| {},
                )?;
                &fold_stage1
            } else {
                &stage1
            };
            // As many networks as the shipped ensemble, seeded alike, so that the
            // out-of-fold scores the threshold is placed on are averaged as its are.
            let mut members = Vec::new();
            for member in 0..config.classifier_ensemble.max(1) {
                let member_seed = config.stage2_seed().wrapping_add(1000 * member as u64);
                let crops = stage2_crops(member_seed, Some(&h.name), &s1.hard)?;
                let n_pos = crops.iter().filter(|c| c.positive).count();
                say(&format!(
                    "cross-validation: network {} without {} ({n_pos} positive, {} negative crops)",
                    member + 1,
                    h.name,
                    crops.len() - n_pos
                ));
                let folder = out_dir.join(format!("cv-{}", h.name)).join(classifier_folder(member));
                members.push(train_network(member_seed, crops, &folder)?.model);
            }
            let mut members = members.into_iter();
            let mut fold = detector.bundle().clone();
            fold.candidate = s1.model.clone();
            fold.card.candidate_threshold = s1.candidate_threshold;
            fold.classifier = members.next().ok_or_else(|| DetectError::Config("no stage-2 network trained".into()))?;
            fold.extra_classifiers = members.collect();
            let dets = Detector::new(fold, device.clone()).detect_image(&*h.image.load()?, h.mpp, &all)?;
            out_of_fold.push((dets, h.centroids.clone(), config.match_radius_um / h.mpp));
        }
        // Every candidate with its out-of-fold score, for `mitoscope eval` (AP, FROC, sweeps),
        // and its fold's stage-1 peak, so other fusions can be tried without retraining.
        let csv = out_dir.join(OUT_OF_FOLD_FILE);
        mitoscope_formats::atomic::write_atomic_with(&csv, |w| {
            writeln!(w, "{}", crate::batch::CANDIDATES_HEADER)?;
            for (h, (dets, _, _)) in stage2_hpfs.iter().zip(&out_of_fold) {
                let id = crate::batch::csv_field(&h.name);
                for d in dets {
                    writeln!(w, "{}", crate::batch::candidate_row(&id, d, 6))?;
                }
            }
            Ok(())
        })?;
        lap("cross-validation", &mut seconds);
    }
    // The HPFs the report speaks for: out-of-fold scores of every labelled HPF, or the held-out ones.
    let (report_hpfs, report_names): (Vec<ScoredImage>, Vec<String>) = if cross_validated {
        (out_of_fold.clone(), stage2_hpfs.iter().map(|h| h.name.clone()).collect())
    } else {
        (val_sets[..val_hpfs.len()].to_vec(), val_hpfs.iter().map(|h| h.name.clone()).collect())
    };
    let cmc_sets = &val_sets[val_hpfs.len()..];
    let report_sets: Vec<ScoredImage> = report_hpfs.iter().chain(cmc_sets).cloned().collect();
    let val_mitoses: usize = report_sets.iter().map(|(_, gt, _)| gt.len()).sum();
    let found_val = report_hpfs
        .iter()
        .map(|(dets, gt, r)| {
            gt.iter().filter(|&&(gx, gy)| dets.iter().any(|d| (d.x - gx).hypot(d.y - gy) <= *r)).count()
        })
        .sum::<usize>();
    let val_candidate_recall = if val_mitoses == 0 { 0.0 } else { found_val as f64 / val_mitoses as f64 };
    let val_candidates_per_hpf =
        report_hpfs.iter().map(|(d, _, _)| d.len()).sum::<usize>() as f64 / report_hpfs.len().max(1) as f64;
    // The images that place the threshold: the reported ones, plus the training HPFs when asked.
    let mut select_sets: Vec<ScoredImage> = report_sets.clone();
    if config.threshold_on == ThresholdImages::AllHpfs {
        for h in &train_hpfs {
            select_sets.push((
                detector.detect_image(&*h.image.load()?, h.mpp, &all)?,
                h.centroids.clone(),
                config.match_radius_um / h.mpp,
            ));
        }
    }
    let operating_threshold = best_f1_threshold(&select_sets);
    // Held-out numbers at that threshold, whichever images chose it.
    let (val_tp, val_fp) = count_matches(&report_sets, operating_threshold);
    let val_cmc_fp = count_matches(cmc_sets, operating_threshold).1;
    let cross_validation =
        cross_validated.then(|| cross_validation(&report_names, &report_hpfs, cmc_sets, operating_threshold));
    let val_f1 = f1_score(val_tp, val_fp, val_mitoses);
    let val_precision = if val_tp + val_fp == 0 { 0.0 } else { val_tp as f64 / (val_tp + val_fp) as f64 };
    let val_recall = if val_mitoses == 0 { 0.0 } else { val_tp as f64 / val_mitoses as f64 };
    lap("threshold", &mut seconds);

    // ---- Mask head: outlines at the scan's resolution, trained on the pixel masks ----
    let mut bundle = detector.bundle().clone();
    bundle.card.operating_threshold = operating_threshold;
    let mut mask_head_report = None;
    if config.mask_head.epochs > 0 {
        let images = MaskImage::all(patches, &train_hpfs);
        if images.iter().any(|m| m.has_figure()) {
            let (head, report) = train_mask_head(
                &bundle,
                &images,
                &config.mask_head,
                config.seed.wrapping_add(7000),
                &out_dir.join("mask-head"),
                &device,
                options,
                &say,
            )?;
            if let Some(r) = &report {
                say(&format!(
                    "mask head, out of fold over {} mask images: Dice {:.3} pooled, {:.3} mean (stage-1 outlines: {:.3}, {:.3})",
                    r.images, r.head_dice_pooled, r.head_dice_mean, r.map_dice_pooled, r.map_dice_mean
                ));
            }
            bundle.mask_head = Some(head);
            mask_head_report = report;
        } else {
            say("mask head: no image with a pixel mask of a figure; outlines come from the stage-1 map");
        }
        lap("mask-head", &mut seconds);
    }

    let report = RecipeReport {
        candidate_threshold,
        mining_threshold: Some(mining_threshold),
        train_candidate_recall,
        val_candidate_recall,
        val_candidates_per_hpf,
        operating_threshold,
        val_precision,
        val_recall,
        val_f1,
        val_mitoses,
        val_tp,
        val_fp,
        val_cmc_fp,
        seconds_per_hpf: hpf_seconds.iter().sum::<f64>() / hpf_seconds.len().max(1) as f64,
        classifier_crops: (n_pos, n_neg, n_hard),
        classifier_val_f1,
        seconds,
        cross_validation,
        mask_head: mask_head_report,
    };
    bundle.card.training = TrainingRecord {
        command: command.to_owned(),
        data: if data.source == "shared" {
            format!(
                "ICPR 2012 scanner A: {} HPFs (centroids; stage 1: {}) + {} mask patches + {} contest overlays (negatives clear of the painted mitoses); AMi-Br + AtNorM-Br figure crops \
                 ({} stage-2 positives in all, in-domain ones repeated); CMC: {} mitosis-free tiles (random + {} look-alike negatives); {} mined hard negatives",
                stage2_hpfs.len(),
                stage1_hpfs.len(),
                patches.len(),
                painted.len(),
                n_pos,
                train_cmc.len(),
                train_cmc.iter().map(|c| c.lookalikes.len()).sum::<usize>(),
                n_hard
            )
        } else {
            format!(
                "{}. Stage 1 on {} labelled fields, stage 2 on {} ({} positive crops in all, in-field ones repeated; {} mitosis-free fields; {} mined hard negatives){}",
                data.source,
                stage1_hpfs.len(),
                stage2_hpfs.len(),
                n_pos,
                train_cmc.len(),
                n_hard,
                match stages {
                    Stages::Both => String::new(),
                    Stages::CandidateOnly(base) => format!("; stage 2 kept from {}", base.card.version),
                    Stages::ClassifierOnly(base) => format!("; stage 1 kept from {}", base.card.version),
                }
            )
        },
        seed: config.seed,
        train_images: stage2_hpfs
            .iter()
            .map(|h| {
                if stage1_hpfs.iter().any(|s| s.name == h.name) {
                    h.name.clone()
                } else {
                    format!("{} (stage 2 only)", h.name)
                }
            })
            .chain(painted.iter().map(|p| format!("{} (overlay, negatives only)", p.name)))
            .chain(train_cmc.iter().map(|c| c.name.clone()))
            .collect(),
        val_images: val_hpfs
            .iter()
            .skip(stage2_hpfs.len() - train_hpfs.len())
            .map(|h| h.name.clone())
            .chain(val_cmc.iter().map(|c| c.name.clone()))
            .collect(),
        notes: match config.threshold_on {
            ThresholdImages::Validation => "operating threshold chosen on the validation images it is reported on (optimistic)",
            ThresholdImages::AllHpfs => {
                "operating threshold chosen on all labelled ICPR HPFs, training ones included (biased; one held-out HPF is too few)"
            }
            ThresholdImages::CrossValidated if config.cv_stage1 && config.stage1_on_all_hpfs => {
                "validation numbers are out-of-fold: each labelled ICPR HPF scored by a stage 1 and a stage-2 network both trained \
                 without it (the shipped recipe, as many stage-2 networks averaged; the shipped stages train on all of them); the operating threshold is their best \
                 pooled F1, so the nested F1 (threshold chosen without the HPF it judges) is the estimate for unseen HPFs"
            }
            ThresholdImages::CrossValidated if config.cv_stage1 => {
                "validation numbers are out-of-fold: each labelled ICPR HPF scored by a stage 1 and a stage-2 network both trained \
                 without it (the shipped recipe, as many stage-2 networks averaged; the shipped stage 2 trains on all of them, the shipped stage 1 on all but the \
                 validation HPF); the operating threshold is their best pooled F1, so the nested F1 (threshold chosen without the \
                 HPF it judges) is the estimate for unseen HPFs"
            }
            ThresholdImages::CrossValidated => {
                "validation numbers are out-of-fold: each labelled ICPR HPF scored by a stage-2 network trained without it \
                 (the shipped recipe, as many stage-2 networks averaged; the shipped stage 2 trains on all of them) on the peaks of the shipped stage 1, which saw \
                 all but the validation HPF; the operating threshold is their best pooled F1, so the nested F1 (threshold chosen \
                 without the HPF it judges) is the estimate for unseen HPFs"
            }
        }
        .to_owned()
            + if data.source == "shared" { "; crop sources assumed at 0.25 um/px" } else { "" }
            + match stages {
                Stages::Both => "",
                // The kept stage may have seen the validation fields: its part of the scores is not held out.
                Stages::ClassifierOnly(_) => "; stage 1 was kept, not retrained: its peaks are not out of fold",
                Stages::CandidateOnly(_) => "; stage 2 was kept, not retrained: its scores are not held out",
            },
    };
    bundle.card.metrics = serde_json::to_value(&report).map_err(|e| DetectError::Config(e.to_string()))?;
    bundle.save(&out_dir.join(crate::BUNDLE_FILE))?;
    let md = model_md(&bundle.card, &report, config);
    mitoscope_formats::atomic::write_atomic(&out_dir.join("MODEL.md"), md.as_bytes())?;
    Ok((bundle, report))
}

/// What every stage-1 training of a run shares: the settings and the data
/// besides the labelled HPFs. A cross-validated run trains one stage 1 from it
/// per fold (`cv_stage1`), each without the HPF its fold scores.
struct Stage1Data<'a> {
    config: &'a RecipeConfig,
    train_cmc: &'a [&'a NegativeField],
    patches: &'a [MaskPatch],
    painted: &'a [PaintedField],
    /// Labelled crops (AMi-Br / AtNorM-Br figures) at stage 1's resolution.
    figures: &'a [LabelledCrop],
    candidate_config: &'a CandidateNetConfig,
    /// Stage 2's network and card: the probe that finds peaks is a full
    /// detector, and the mined crops are cut to stage 2's crop geometry.
    classifier_config: &'a PatchClassifierConfig,
    card: ModelCard,
    cls_spec: CropSpec,
    device: &'a Device,
    options: TrainOptions,
    /// A trained stage 1 and its candidate threshold to use instead of training one.
    fixed: Option<(&'a CandidateNet, f64)>,
    /// Whether to mine hard negatives (only stage 2 uses them).
    mine_hard: bool,
}

/// A trained stage 1, the peak thresholds chosen for it and the false positives it mines.
struct Stage1 {
    model: CandidateNet,
    candidate_threshold: f64,
    /// Peaks at or above this (>= `candidate_threshold`) were mined.
    mining_threshold: f64,
    /// Candidate recall on its training HPFs at `candidate_threshold`.
    train_candidate_recall: f64,
    /// Peaks clear of every labelled (or painted) figure, as stage-2 negative
    /// crops whose origin names their image: `hard:<image>@x,y`.
    hard: Vec<LabelledCrop>,
}

/// Half the diagonal of a stage-2 crop (`spec`), in pixels of an image at `image_mpp`.
fn crop_half_diagonal(spec: CropSpec, image_mpp: f64) -> f64 {
    std::f64::consts::SQRT_2 * f64::from(spec.crop_size) * spec.mpp.get() / image_mpp / 2.0
}

/// Stage-2 negative crops centred on labelled look-alikes.
fn lookalike_crops(image: &RgbImage, at: &[(f64, f64)], mpp: Mpp, spec: CropSpec, name: &str) -> Vec<LabelledCrop> {
    centred_crops(image, at, mpp, spec, false, &format!("lookalike:{name}"))
}

/// Trains (or resumes) stage 1 in `folder` on the `train` HPFs and the run's
/// other stage-1 data (validation metrics on `val`), chooses its candidate
/// threshold on `train`, and mines hard negatives on the `mine` HPFs, the
/// contest overlays and the training CMC tiles. `phase_done` is called after
/// the training ("stage1") and after the mining ("mining").
fn train_stage1(
    data: &Stage1Data,
    train: &[&LabelledField],
    val: &[&LabelledField],
    mine: &[&LabelledField],
    folder: &Path,
    say: &dyn Fn(&str),
    phase_done: &mut dyn FnMut(&str),
) -> Result<Stage1, DetectError> {
    let config = data.config;
    let model_mpp = data.candidate_config.mpp;
    let radius_px = config.disc_radius_um / model_mpp;
    // Training HPFs weight tiles centred on their figures 20x; validation ones do not.
    let icpr_sample = |h: &LabelledField, centre_weight: f64| -> Result<CandidateSample, DetectError> {
        let mask = h.mask.as_ref().map(|m| m.load()).transpose()?;
        Ok(hpf_sample(
            &*h.image.load()?,
            &h.centroids,
            mask.as_deref(),
            h.mpp,
            model_mpp,
            radius_px,
            &h.name,
            1.0,
            centre_weight,
        ))
    };
    let stage1 = match data.fixed {
        Some((model, _)) => {
            say("stage 1: kept from the given model");
            model.clone()
        }
        None => {
            let mut samples: Vec<CandidateSample> =
                train.iter().map(|h| icpr_sample(h, 20.0)).collect::<Result<_, _>>()?;
            for c in data.train_cmc {
                samples.push(hpf_sample(&*c.image.load()?, &[], None, c.mpp, model_mpp, radius_px, &c.name, 1.0, 0.0));
            }
            for p in data.patches {
                let step = model_mpp / p.mpp;
                let (w, h) = scaled_size(p.image.dimensions(), step);
                let image = image::imageops::resize(&p.image, w, h, FilterType::Triangle);
                let mask: GrayImage = image::imageops::resize(&p.mask, w, h, FilterType::Nearest);
                let centres: Vec<(f64, f64)> = p.centroid.map(|c| vec![to_model(c, step)]).unwrap_or_default();
                let mut s = CandidateSample::new(image, mask_target(&mask), centres, p.name.clone());
                (s.random_weight, s.centre_weight) = (0.1, 20.0);
                samples.push(s);
            }
            for c in data.figures {
                let centre = ((f64::from(c.image.width()) - 1.0) / 2.0, (f64::from(c.image.height()) - 1.0) / 2.0);
                // A figure: a disc at the centre, tiles centred on it. A labelled
                // negative crop: all background, drawn like a mask patch.
                let centres = if c.positive { vec![centre] } else { Vec::new() };
                let target = disc_target(c.image.width() as usize, c.image.height() as usize, &centres, radius_px);
                let mut s = CandidateSample::new(c.image.clone(), target, centres, c.origin.clone());
                s.random_weight = if c.positive { 0.0 } else { 0.1 };
                samples.push(s);
            }
            let val_samples: Vec<CandidateSample> =
                val.iter().map(|h| icpr_sample(h, 1.0)).collect::<Result<_, _>>()?;
            let cand_train = CandidateTrainingConfig::new(data.candidate_config.clone())
                .with_num_epochs(config.candidate_epochs)
                .with_decay_epochs(config.candidate_decay_epochs)
                .with_tiles_per_epoch(config.candidate_tiles_per_epoch)
                .with_tile_size(config.candidate_tile_size)
                .with_match_distance(config.match_radius_um / model_mpp)
                .with_peak_min_distance((config.min_distance_um / model_mpp) as f32)
                .with_seed(config.seed);
            say("stage 1: training the candidate net");
            let stage1 = train_candidate_net(&cand_train, &samples, &val_samples, folder, data.device, data.options)?;
            for m in &stage1.history {
                say(&format!("  stage-1 epoch {}: {m}", m.epoch));
            }
            stage1.model
        }
    };
    phase_done("stage1");

    // ---- Candidate threshold on the training HPFs ----
    let mut card = data.card.clone();
    card.candidate_threshold = 0.02;
    card.operating_threshold = 0.0;
    let probe = ModelBundle {
        candidate: stage1.clone(),
        candidate_config: data.candidate_config.clone(),
        classifier: data.classifier_config.init(data.device),
        extra_classifiers: Vec::new(),
        classifier_config: data.classifier_config.clone(),
        mask_head: None,
        card,
    };
    let detector = Detector::new(probe, data.device.clone());
    let low = DetectOptions { keep_all_candidates: true, polygons: false, ..DetectOptions::default() };
    let mut train_peaks = Vec::new();
    for h in train {
        train_peaks.push((detector.candidates(&*h.image.load()?, h.mpp, &low)?, &h.centroids, h.mpp));
    }
    let recall_at = |t: f64, sets: &[(Vec<crate::Detection>, &Points, f64)]| -> f64 {
        let (mut found, mut total) = (0usize, 0usize);
        for (dets, gt, mpp) in sets {
            let match_px = config.match_radius_um / mpp;
            for &(gx, gy) in gt.iter() {
                total += 1;
                if dets.iter().any(|d| d.candidate_score >= t && (d.x - gx).hypot(d.y - gy) <= match_px) {
                    found += 1;
                }
            }
        }
        if total == 0 { 0.0 } else { found as f64 / total as f64 }
    };
    let best = recall_at(0.02, &train_peaks);
    let (candidate_threshold, mining_threshold) = match data.fixed {
        Some((_, threshold)) => (threshold, threshold),
        None => candidate_thresholds(|t| recall_at(t, &train_peaks), config),
    };
    let train_candidate_recall = recall_at(candidate_threshold, &train_peaks);
    say(&format!(
        "candidate threshold {candidate_threshold:.2}: training recall {train_candidate_recall:.3} (best {best:.3}); \
         mining threshold {mining_threshold:.2}: training recall {:.3}",
        recall_at(mining_threshold, &train_peaks)
    ));
    if !data.mine_hard {
        return Ok(Stage1 {
            model: stage1,
            candidate_threshold,
            mining_threshold,
            train_candidate_recall,
            hard: Vec::new(),
        });
    }

    // ---- Hard negatives ----
    let mut hard = Vec::new();
    // Peaks farther than `clear_px` from every labelled (or painted) figure.
    let take_hard = |dets: &[crate::Detection],
                     gt: &[(f64, f64)],
                     clear_px: f64,
                     image: &RgbImage,
                     mpp: f64,
                     name: &str,
                     out: &mut Vec<LabelledCrop>| {
        let mut fps: Vec<&crate::Detection> = dets
            .iter()
            .filter(|d| d.candidate_score >= mining_threshold)
            .filter(|d| gt.iter().all(|&(gx, gy)| (d.x - gx).hypot(d.y - gy) > clear_px))
            .collect();
        fps.sort_by(|a, b| b.candidate_score.total_cmp(&a.candidate_score));
        let Ok(m) = Mpp::new(mpp) else { return };
        for d in fps.into_iter().take(config.hard_negatives_per_image) {
            out.push(LabelledCrop {
                image: resample_crop(image, (d.x, d.y), m, data.cls_spec),
                positive: false,
                origin: format!("hard:{name}@{:.0},{:.0}", d.x, d.y),
            });
        }
    };
    for h in mine {
        // The training HPFs' peaks are at hand; the others are found now.
        let image = h.image.load()?;
        let found;
        let dets = match train.iter().position(|t| t.name == h.name) {
            Some(i) => &train_peaks[i].0,
            None => {
                found = detector.candidates(&image, h.mpp, &low)?;
                &found
            }
        };
        take_hard(dets, &h.centroids, config.match_radius_um / h.mpp, &image, h.mpp, &h.name, &mut hard);
    }
    for p in data.painted {
        let dets = detector.candidates(&p.image, p.mpp, &low)?;
        let (centres, clear_px) = p.exclusion(crop_half_diagonal(data.cls_spec, p.mpp));
        take_hard(&dets, &centres, clear_px, &p.image, p.mpp, &p.name, &mut hard);
    }
    // CMC tiles are ~10 HPFs each: peak at the mining threshold only, so the
    // (throw-away) stage-2 pass of the probe stays small.
    let mut probe = detector.bundle().clone();
    probe.card.candidate_threshold = mining_threshold;
    let detector = Detector::new(probe, data.device.clone());
    for c in data.train_cmc {
        let image = c.image.load()?;
        let dets = detector.candidates(&image, c.mpp, &low)?;
        take_hard(&dets, &[], 0.0, &image, c.mpp, &c.name, &mut hard);
    }
    say(&format!("hard negatives: {}", hard.len()));
    phase_done("mining");
    Ok(Stage1 { model: stage1, candidate_threshold, mining_threshold, train_candidate_recall, hard })
}

/// The candidate and mining thresholds for a stage 1 whose training recall at
/// peak threshold `t` is `recall_at(t)`: the highest of 0.02, 0.05, 0.10, ...,
/// 0.95 that keep `candidate_recall_target` (and `mining_recall_target`) of
/// the recall at 0.02. Mining never goes below the candidate threshold.
fn candidate_thresholds(recall_at: impl Fn(f64) -> f64, config: &RecipeConfig) -> (f64, f64) {
    let best = recall_at(0.02);
    let keeping = |share: f64| {
        (1..=19).map(|i| f64::from(i) * 0.05).filter(|&t| recall_at(t) >= share * best).fold(0.02, f64::max)
    };
    let candidate = keeping(config.candidate_recall_target);
    let mining = config.mining_recall_target.map_or(candidate, keeping);
    (candidate, mining.max(candidate))
}

/// Out-of-fold scores of every candidate of every labelled HPF (cross-validated runs), in the run folder.
pub const OUT_OF_FOLD_FILE: &str = "out-of-fold.csv";

/// Run folder of stage-2 network `member` (0-based) of the ensemble.
fn classifier_folder(member: usize) -> String {
    if member == 0 { "classifier".into() } else { format!("classifier-{}", member + 1) }
}

/// F1 from true and false positives and the number of labelled mitoses (0 when all are 0).
fn f1_score(tp: usize, fp: usize, mitoses: usize) -> f64 {
    if tp + fp + mitoses == 0 { 0.0 } else { 2.0 * tp as f64 / (tp + fp + mitoses) as f64 }
}

/// The stage-2 threshold of best pooled F1 over `sets`, strictest among ties.
fn best_f1_threshold(sets: &[ScoredImage]) -> f64 {
    let mitoses: usize = sets.iter().map(|(_, gt, _)| gt.len()).sum();
    let mut thresholds: Vec<f64> = sets.iter().flat_map(|(d, _, _)| d.iter().map(|d| d.score)).collect();
    thresholds.push(1.0);
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let (mut best_t, mut best_f1) = (0.5, -1.0);
    for &t in &thresholds {
        let (tp, fp) = count_matches(sets, t);
        let f1 = f1_score(tp, fp, mitoses);
        // `>=` over ascending thresholds: among ties keep the strictest.
        if f1 >= best_f1 {
            (best_t, best_f1) = (t, f1);
        }
    }
    // The best F1 holds from the next lower score up to this one: take the middle of that
    // gap, so float noise in a rerun (batching changes the last bits) cannot flip the
    // candidate whose score the threshold would otherwise equal.
    if let Some(&below) = thresholds.iter().rev().find(|&&t| t < best_t) {
        best_t = 0.5 * (below + best_t);
    }
    best_t
}

/// Cross-validation results from out-of-fold `folds` (one HPF each, named by
/// `names`) and `extra` sets (held-out mitosis-free tiles) that count in every
/// threshold choice, at `operating_threshold`.
fn cross_validation(
    names: &[String],
    folds: &[ScoredImage],
    extra: &[ScoredImage],
    operating_threshold: f64,
) -> CrossValidation {
    let mut results = Vec::new();
    let (mut nested_tp, mut nested_fp, mut mitoses) = (0, 0, 0);
    for (k, (name, fold)) in names.iter().zip(folds).enumerate() {
        // Choose on every other HPF (and the extra tiles), judge this one.
        let others: Vec<ScoredImage> = folds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, s)| s.clone())
            .chain(extra.iter().cloned())
            .collect();
        let threshold_without = best_f1_threshold(&others);
        let one = std::slice::from_ref(fold);
        let (tp, fp) = count_matches(one, operating_threshold);
        let (ntp, nfp) = count_matches(one, threshold_without);
        nested_tp += ntp;
        nested_fp += nfp;
        mitoses += fold.1.len();
        results.push(FoldResult {
            hpf: name.clone(),
            mitoses: fold.1.len(),
            tp,
            fp,
            threshold_without,
            nested_tp: ntp,
            nested_fp: nfp,
        });
    }
    CrossValidation { folds: results, nested_f1: f1_score(nested_tp, nested_fp, mitoses), nested_tp, nested_fp }
}

/// (true positives, false positives) at stage-2 threshold `t`, greedy by score.
fn count_matches(sets: &[ScoredImage], t: f64) -> (usize, usize) {
    let (mut tp, mut fp) = (0, 0);
    for (dets, gt, r) in sets {
        let mut used = vec![false; gt.len()];
        // Detections are sorted by score, strongest first.
        for d in dets.iter().filter(|d| d.score >= t) {
            let hit = gt
                .iter()
                .enumerate()
                .filter(|(i, g)| !used[*i] && (d.x - g.0).hypot(d.y - g.1) <= *r)
                .min_by(|a, b| (d.x - a.1.0).hypot(d.y - a.1.1).total_cmp(&(d.x - b.1.0).hypot(d.y - b.1.1)));
            match hit {
                Some((i, _)) => {
                    used[i] = true;
                    tp += 1;
                }
                None => fp += 1,
            }
        }
    }
    (tp, fp)
}

fn seeded(seed: u64) -> rand::rngs::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(seed)
}

fn scaled_size((w, h): (u32, u32), step: f64) -> (u32, u32) {
    ((f64::from(w) / step).round().max(1.0) as u32, (f64::from(h) / step).round().max(1.0) as u32)
}

/// Source pixel -> model pixel for a resize by `1 / step` (pixel centres).
fn to_model((x, y): (f64, f64), step: f64) -> (f64, f64) {
    ((x + 0.5) / step - 0.5, (y + 0.5) / step - 0.5)
}

#[allow(clippy::too_many_arguments)]
fn hpf_sample(
    image: &RgbImage,
    centroids: &[(f64, f64)],
    mask: Option<&GrayImage>,
    source_mpp: f64,
    model_mpp: f64,
    radius_px: f64,
    name: &str,
    random_weight: f64,
    centre_weight: f64,
) -> CandidateSample {
    let step = model_mpp / source_mpp;
    let (w, h) = scaled_size(image.dimensions(), step);
    let resized = image::imageops::resize(image, w, h, FilterType::Triangle);
    let centres: Vec<(f64, f64)> = centroids.iter().map(|&c| to_model(c, step)).collect();
    // The figures' own outlines where the field has a mask (the mask head), else discs.
    let target: ProbabilityMap = match mask {
        Some(m) => mask_target(&image::imageops::resize(m, w, h, FilterType::Nearest)),
        None => disc_target(w as usize, h as usize, &centres, radius_px),
    };
    let mut s = CandidateSample::new(resized, target, centres, name);
    (s.random_weight, s.centre_weight) = (random_weight, centre_weight);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CandidateCentre, ScoreFusion};

    /// One labelled HPF with a mitosis at the origin: `(x, score)` detections on the x axis.
    fn scored(dets: &[(f64, f64)]) -> ScoredImage {
        let mut dets: Vec<crate::Detection> = dets
            .iter()
            .map(|&(x, score)| crate::Detection { x, y: 0.0, score, candidate_score: score, outline: Vec::new() })
            .collect();
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        (dets, vec![(0.0, 0.0)], 10.0)
    }

    #[test]
    fn the_candidate_threshold_keeps_every_training_figure_and_mining_keeps_its_share() {
        // 30 training figures: one weak (peak 0.12), one at 0.43, the rest strong.
        let mut peaks = vec![0.12, 0.43];
        peaks.extend(std::iter::repeat_n(0.9, 28));
        let recall = |t: f64| peaks.iter().filter(|&&p| p >= t).count() as f64 / peaks.len() as f64;
        let config =
            RecipeConfig { candidate_recall_target: 0.99, mining_recall_target: Some(0.95), ..RecipeConfig::default() };
        let (candidate, mining) = candidate_thresholds(recall, &config);
        // 0.99 keeps all 30: the highest grid value at or under 0.12; 0.95 lets one go.
        assert!((candidate - 0.10).abs() < 1e-9, "{candidate}");
        assert!((mining - 0.40).abs() < 1e-9, "{mining}");
        // A recipe without a mining target (up to 0.10) uses one threshold for both.
        let old = RecipeConfig { candidate_recall_target: 0.95, mining_recall_target: None, ..config.clone() };
        assert_eq!(candidate_thresholds(recall, &old), (mining, mining));
        // Mining is never below the candidate threshold.
        let odd = RecipeConfig { mining_recall_target: Some(1.0), ..config.clone() };
        assert_eq!(candidate_thresholds(recall, &odd), (candidate, candidate));
        // No figure found at all: the floor.
        let (c, m) = candidate_thresholds(|_| 0.0, &config);
        assert!((c - 0.95).abs() < 1e-9 && c == m, "{c} {m}");
    }

    #[test]
    fn nested_cross_validation_judges_each_hpf_at_the_threshold_of_the_others() {
        // Mitosis hits at x = 0, look-alikes at x = 100.
        let folds = vec![
            scored(&[(0.0, 0.9), (100.0, 0.5)]),
            scored(&[(0.0, 0.6), (100.0, 0.4)]),
            scored(&[(0.0, 0.3), (100.0, 0.95)]),
        ];
        // Pooled: 0.6 keeps 2 TP / 1 FP (F1 4/6), as good as 0.3 (3 / 3) and
        // stricter; the threshold sits midway to the next lower score, 0.5.
        let t = best_f1_threshold(&folds);
        assert!((t - 0.55).abs() < 1e-12, "{t}");
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let cv = cross_validation(&names, &folds, &[], t);
        let at_operating: Vec<(usize, usize)> = cv.folds.iter().map(|f| (f.tp, f.fp)).collect();
        assert_eq!(at_operating, vec![(1, 0), (1, 0), (0, 1)]);
        // Without "c", its look-alike is unknown: the others choose 0.55, which
        // misses its weak figure and keeps the look-alike; "a" and "b" alone get 0.3.
        let without: Vec<f64> = cv.folds.iter().map(|f| f.threshold_without).collect();
        assert!((without[0] - 0.3).abs() < 1e-12 && (without[1] - 0.3).abs() < 1e-12, "{without:?}");
        assert!((without[2] - 0.55).abs() < 1e-12, "{without:?}");
        let nested: Vec<(usize, usize)> = cv.folds.iter().map(|f| (f.nested_tp, f.nested_fp)).collect();
        assert_eq!(nested, vec![(1, 1), (1, 1), (0, 1)]);
        assert_eq!((cv.nested_tp, cv.nested_fp), (2, 3));
        assert!((cv.nested_f1 - 0.5).abs() < 1e-12);
        // A mitosis-free tile whose look-alike scores 0.58 joins every choice:
        // without "c" the best threshold rises above it (0.6 keeps 2 TP, 0 FP).
        let tile = (vec![scored(&[(100.0, 0.58)]).0[0].clone()], Vec::new(), 10.0);
        let cv = cross_validation(&names, &folds, &[tile], t);
        assert!((cv.folds[2].threshold_without - 0.59).abs() < 1e-12, "{:?}", cv.folds[2]);
    }

    #[test]
    fn painted_hpf_negatives_stay_clear_of_the_paint() {
        // Two painted figures of different sizes on grey tissue.
        let mut image = RgbImage::from_pixel(400, 300, image::Rgb([200, 150, 190]));
        let figures = [((100.0, 80.0), 12.0), ((300.0, 200.0), 25.0)];
        for &((cx, cy), r) in &figures {
            for (x, y, p) in image.enumerate_pixels_mut() {
                if (f64::from(x) - cx).abs() <= r / 2.0_f64.sqrt() && (f64::from(y) - cy).abs() <= r / 2.0_f64.sqrt() {
                    *p = image::Rgb([250, 242, 20]);
                }
            }
        }
        let painted = PaintedField { name: "p".into(), image, mpp: ICPR_MPP, figures: figures.to_vec() };
        let spec = CropSpec { crop_size: 32, mpp: Mpp::new(0.3).unwrap() };
        let src = Mpp::new(ICPR_MPP).unwrap();
        let half_diagonal = std::f64::consts::SQRT_2 * 32.0 * 0.3 / ICPR_MPP / 2.0;
        let (centres, clear_px) = painted.exclusion(half_diagonal);
        assert!(clear_px > 25.0 + half_diagonal, "{clear_px}");
        let crops = random_negative_crops(
            &painted.image,
            &centres,
            src,
            spec,
            NegativeDraw { count: 200, min_distance_px: clear_px },
            &mut seeded(3),
            "p",
        );
        assert!(crops.len() > 20, "{} crops", crops.len());
        let yellow = |c: &LabelledCrop| c.image.pixels().any(|p| p.0[2] < 120);
        assert!(crops.iter().all(|c| !c.positive && !yellow(c)));
        // Closer than that, crops do catch paint (so the check above can fail).
        let near = random_negative_crops(
            &painted.image,
            &centres,
            src,
            spec,
            NegativeDraw { count: 400, min_distance_px: 0.0 },
            &mut seeded(3),
            "p",
        );
        assert!(near.iter().any(yellow));
    }

    #[test]
    fn own_datasets_repeat_in_field_figures_only_as_far_as_crops_outnumber_them() {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..300 {
            let sub = if k < 250 { "mitosis" } else { "negative" };
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(format!("{sub}/{k}.png")), b"").unwrap();
        }
        let field = |n: usize, mitoses: usize| crate::training_data::LabelledField {
            name: format!("f_{n}"),
            image: crate::training_data::FieldImage::held(RgbImage::new(1, 1)),
            mpp: 0.25,
            centroids: vec![(0.0, 0.0); mitoses],
            lookalikes: Vec::new(),
            mask: None,
            subset: None,
            slide: "f".into(),
        };
        let data = |fields: usize, mitoses: usize, crops: bool| TrainingData {
            fields: (0..fields).map(|n| field(n, mitoses)).collect(),
            negative_fields: Vec::new(),
            mask_patches: Vec::new(),
            painted: Vec::new(),
            crop_folders: if crops {
                vec![crate::training_data::CropFolder { path: dir.path().to_path_buf(), mpp: 0.25 }]
            } else {
                Vec::new()
            },
            amibr_table: None,
            source: "test".into(),
        };
        // 250 crop figures against 50 in-field ones: 5x; the shared recipe's 16x is the ceiling.
        let c = RecipeConfig::default().fitted_to(&data(10, 5, true));
        assert_eq!((c.in_domain_repeats, c.negatives_per_hpf), (5, 300));
        assert_eq!(c.threshold_on, ThresholdImages::Validation);
        assert!(!c.cv_stage1 && !c.painted_hpf_negatives);
        assert_eq!(RecipeConfig::default().fitted_to(&data(2, 1, true)).in_domain_repeats, 16);
        // Many fields, no crops: no repeats, ~60,000 random negatives in all.
        let c = RecipeConfig::default().fitted_to(&data(1500, 2, false));
        assert_eq!((c.in_domain_repeats, c.negatives_per_hpf), (1, 40));
    }

    #[test]
    fn the_embedded_model_was_made_by_the_default_recipe() {
        // MODEL.md says `mitoscope train` (the default recipe) made the shipped
        // bundle: the settings it saved must be today's defaults.
        let shipped: RecipeConfig = serde_json::from_str(include_str!("../model/recipe.json")).unwrap();
        assert_eq!(serde_json::to_value(&shipped).unwrap(), serde_json::to_value(RecipeConfig::default()).unwrap());
    }

    #[test]
    fn stage1_on_all_hpfs_is_refused_without_a_stage_1_per_fold() {
        // Checked before any data is read or any folder written.
        let out = std::env::temp_dir().join("mitoscope-recipe-refused-never-created");
        for config in [
            RecipeConfig { stage1_on_all_hpfs: true, cv_stage1: false, ..RecipeConfig::default() },
            RecipeConfig {
                stage1_on_all_hpfs: true,
                threshold_on: ThresholdImages::AllHpfs,
                ..RecipeConfig::default()
            },
        ] {
            let err =
                train_default(Path::new("/nonexistent-data"), &out, &config, "test", false).unwrap_err().to_string();
            assert!(err.contains("stage1_on_all_hpfs"), "{err}");
            assert!(!out.exists());
        }
    }

    #[test]
    fn training_stage_1_alone_needs_a_threshold_the_kept_stage_2_can_be_scored_for() {
        let device = Device::flex();
        let base = || {
            Box::new(ModelBundle::untrained(
                CandidateNetConfig::new().with_base_channels(2),
                PatchClassifierConfig::new().with_base_channels(2),
                &device,
            ))
        };
        let err = check_config(&RecipeConfig::default(), &Stages::CandidateOnly(base())).unwrap_err().to_string();
        assert!(err.contains("threshold_on"), "{err}");
        let validation = RecipeConfig { threshold_on: ThresholdImages::Validation, ..RecipeConfig::default() };
        assert!(check_config(&validation, &Stages::CandidateOnly(base())).is_ok());
        // Stage 2 alone keeps cross-validation: each fold retrains stage 2 on the kept stage 1's candidates.
        assert!(check_config(&RecipeConfig::default(), &Stages::ClassifierOnly(base())).is_ok());
    }

    #[test]
    fn old_recipe_files_still_parse() {
        // 0.1 recipes lack the stage-2 fields added since: they mean "off".
        let mut json = serde_json::to_value(RecipeConfig::default()).unwrap();
        let obj = json.as_object_mut().unwrap();
        for key in [
            "classifier_input_norm",
            "classifier_stain_input",
            "classifier_fourth_block",
            "classifier_figure_crops",
            "stain_jitter",
            "classifier_jpeg_probability",
            "classifier_stain_rotation_deg",
            "classifier_shift_um",
            "classifier_crop_px",
            "classifier_mpp",
            "score_fusion",
            "painted_hpf_negatives",
            "classifier_views",
            "candidate_centre",
            "classifier_ensemble",
            "cv_stage1",
            "stage1_on_all_hpfs",
            "candidate_decay_epochs",
            "classifier_figure_selection",
        ] {
            obj.remove(key);
        }
        let old: RecipeConfig = serde_json::from_value(json).unwrap();
        assert!(!old.classifier_input_norm);
        assert!(!old.classifier_stain_input);
        assert!(!old.classifier_fourth_block);
        assert_eq!(old.classifier_figure_crops, None);
        assert_eq!(old.classifier_figure_selection, FigureSelection::Even);
        assert_eq!(old.stain_jitter, (0.05, 0.02));
        assert_eq!(old.classifier_jpeg_probability, 0.0);
        assert_eq!(old.classifier_stain_rotation_deg, 0.0);
        assert_eq!(old.classifier_shift_um, 0.0);
        assert_eq!((old.classifier_crop_px, old.classifier_mpp), (64, 0.5));
        assert_eq!(old.score_fusion, ScoreFusion::Classifier);
        assert!(!old.painted_hpf_negatives);
        assert_eq!(old.classifier_views, 1);
        assert_eq!(old.candidate_centre, CandidateCentre::Peak);
        assert_eq!(old.classifier_ensemble, 1);
        assert!(!old.cv_stage1);
        assert!(!old.stage1_on_all_hpfs);
        assert_eq!(old.candidate_decay_epochs, 0);
        assert_eq!((old.classifier_seed, old.stage2_seed()), (None, old.seed));
    }
}
