//! HPF sets as slides: a folder of high-power-field images, grouped into
//! slides by file name (GZMH and ICPR name HPFs `<slide>_<n>`), detected,
//! and scored per slide from its top-N HPFs, as GZMH V2 scores each WSI.
//!
//! - [`group_key`]: the slide an HPF belongs to: the first capture group of
//!   a regex matched against the file stem, or by default the stem up to its
//!   last `_` (`A04_07` -> `A04`; a stem without `_` is its own slide).
//! - [`score_slides`]: pure: per-HPF counts in, per-slide top-N count, area
//!   and Nottingham score out.
//! - [`read_truth`] / [`compare`]: a `slide,score` CSV and agreement,
//!   Cohen's kappa and quadratic weighted kappa via `mitoscope-eval`.
//! - [`run_hpf_set`]: all of it on a folder with a [`TileDetector`].
//!
//! A folder with HPF images directly in it is scored as it is. A folder with
//! none there is read as a dataset (the GZMH reader: splits, per-slide
//! folders, masks and labels), as GZMH V2 ships: `test_3_score/WSI04/...`.
//! Then each per-slide folder is a slide (else the file-name rule above), the
//! dataset's ids name the HPFs (so `detections.csv` evaluates against the
//! dataset), the masks and labels give each slide's annotated count and
//! score over its own top-N annotated HPFs (the truth unless `--truth` is
//! given), and a split named by score (`test_1or2_score`, `test_3_score`)
//! says which scores its slides may have: see [`split_scores`].
//!
//! Area: each HPF counts as its image area (`width x height x mpp²`), or as
//! the field of [`HpfSetConfig::field`] when one is given (images that are
//! crops of the microscope field, or whose mpp is unknown). The table row
//! comes from the same field (the mean image area by default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use mitoscope_eval::score::{FieldPreset, MitoticScore, cohen_kappa, mitotic_score, weighted_kappa_quadratic};
use mitoscope_geom::Mpp;
use rayon::prelude::*;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::batch::{ImageResult, csv_field, expand_inputs, image_id};
use crate::slide_run::{DetectorInfo, TileDetector};
use crate::{DetectError, DetectOptions, Detection};

/// Invalid input to the HPF-set scoring. Variants concerning a file name it.
#[derive(Debug, thiserror::Error)]
pub enum HpfSetError {
    /// The grouping pattern does not compile or has no capture group.
    #[error("--group '{pattern}': {why}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        why: String,
    },
    /// A setting out of range (N, mpp, field size).
    #[error("invalid setting: {0}")]
    Config(String),
    /// The truth file is unreadable or malformed.
    #[error("{path}: {why}")]
    Truth {
        /// The truth CSV.
        path: PathBuf,
        /// What is wrong (with the line number).
        why: String,
    },
    /// No image could be scored.
    #[error("{path}: {why}")]
    Input {
        /// The folder.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The mitotic score could not be computed (field size outside the table).
    #[error("slide {slide}: {source} (set the field size with --hpf-area-mm2 or --field-diameter-mm)")]
    Score {
        /// The slide.
        slide: String,
        /// Cause.
        #[source]
        source: mitoscope_eval::EvalError,
    },
    /// The output folder holds files no `score` run wrote, or is a file.
    #[error("{path}: {why}")]
    Output {
        /// The file or folder.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// An output file could not be written.
    #[error(transparent)]
    Format(#[from] mitoscope_formats::FormatError),
}

/// Settings of [`run_hpf_set`].
#[derive(Debug, Clone)]
pub struct HpfSetConfig {
    /// Regex whose first capture group, matched on the file stem, names the slide.
    pub group: Option<String>,
    /// HPFs per slide that count (top by count); default 10.
    pub n_hpfs: usize,
    /// µm/px of the images; `None` = the model card's default input mpp (0.25).
    pub input_mpp: Option<f64>,
    /// Field per HPF; `None` = each image's own area.
    pub field: Option<FieldPreset>,
    /// Threshold and tiling of the detector.
    pub options: DetectOptions,
    /// Show an `indicatif` bar over images on stderr.
    pub show_progress: bool,
}

impl Default for HpfSetConfig {
    fn default() -> Self {
        Self {
            group: None,
            n_hpfs: 10,
            input_mpp: None,
            field: None,
            options: DetectOptions::default(),
            show_progress: false,
        }
    }
}

/// Detections of one HPF image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HpfCount {
    /// Image id (file stem).
    pub image: String,
    /// The slide it belongs to.
    pub slide: String,
    /// Mitoses detected.
    pub count: usize,
    /// Area the HPF counts for, mm².
    pub area_mm2: f64,
    /// Width x height in pixels.
    pub size: (u32, u32),
    /// Mitoses the dataset's masks or labels give this HPF (dataset folders
    /// only; `None` where the image has no usable annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_count: Option<usize>,
}

/// The score of one slide from its HPFs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideScore {
    /// Slide name (the group key).
    pub slide: String,
    /// HPF images of this slide that were read.
    pub hpfs_total: usize,
    /// HPF images of this slide that could not be read (see the failures):
    /// its score is from the rest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hpfs_failed: usize,
    /// The top-N HPFs counted (fewer when the slide has fewer), most first.
    pub top_hpfs: Vec<HpfCount>,
    /// Mitoses in the top HPFs.
    pub count: usize,
    /// Area of the top HPFs, mm².
    pub area_mm2: f64,
    /// Nottingham score with the table row used.
    pub score: MitoticScore,
    /// Ground-truth score when given.
    pub truth: Option<u8>,
    /// The dataset subset (split) the slide's HPFs are in, when read as a dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Annotated mitoses in the slide's top-N HPFs by annotation, when every
    /// HPF of the slide is annotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotated_count: Option<usize>,
    /// The Nottingham score of `annotated_count` over those HPFs' area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotated_score: Option<u8>,
    /// The scores the slide's split allows (`test_1or2_score`: 1 and 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_scores: Option<Vec<u8>>,
}

/// Predicted vs ground-truth slide scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Slides with both a prediction and a truth.
    pub slides: usize,
    /// Fraction of those with equal scores.
    pub agreement: f64,
    /// Cohen's kappa (unweighted).
    pub kappa: f64,
    /// Quadratically weighted kappa over scores 1, 2, 3.
    pub weighted_kappa: f64,
    /// `confusion[truth - 1][predicted - 1]`.
    pub confusion: [[usize; 3]; 3],
    /// Truth slides with no prediction (no HPF in the folder; no slide result).
    pub missing_predictions: Vec<String>,
    /// Scored slides absent from the truth file.
    pub missing_truth: Vec<String>,
}

/// Everything [`run_hpf_set`] produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HpfSetReport {
    /// The detector.
    pub model: DetectorInfo,
    /// µm/px of the images.
    pub mpp: f64,
    /// N.
    pub n_hpfs: usize,
    /// Per slide, sorted by name.
    pub slides: Vec<SlideScore>,
    /// Every HPF's count.
    pub hpfs: Vec<HpfCount>,
    /// Inputs that failed or matched no group, with the reason (names the file).
    pub failures: Vec<(PathBuf, String)>,
    /// Against the truth, when given.
    pub comparison: Option<Comparison>,
    /// Where the truth of `comparison` came from: the `--truth` file, or
    /// `annotations` (the dataset's masks and labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth_source: Option<String>,
    /// Predicted scores against the scores each slide's split allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_agreement: Option<SplitAgreement>,
    /// Predicted against annotated top-N counts, per slide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_agreement: Option<CountAgreement>,
    /// What reading the folder as a dataset found (layout, annotation problems).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// CRC-32 (hex) of each file the run wrote beside `scores.json`, so that a
    /// later run replaces only files it wrote, unchanged since
    /// ([`check_hpf_out`]). Empty in reports not yet written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

/// Predicted slide scores against the scores their split allows (GZMH V2
/// splits its test slides by score: `test_1or2_score`, `test_3_score`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitAgreement {
    /// Slides in a split named by score.
    pub slides: usize,
    /// Fraction whose predicted score is one the split allows.
    pub agreement: f64,
    /// Per split: slides predicted 1, 2 and 3.
    pub predicted: BTreeMap<String, [usize; 3]>,
}

/// Predicted against annotated mitoses in each slide's top-N HPFs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountAgreement {
    /// Slides with an annotated count.
    pub slides: usize,
    /// Mean of |predicted - annotated|.
    pub mean_abs_error: f64,
    /// Mean of predicted - annotated (positive: the model over-counts).
    pub mean_error: f64,
}

/// Compiles a `--group` pattern; it needs at least one capture group.
pub fn compile_group(pattern: &str) -> Result<Regex, HpfSetError> {
    let re =
        Regex::new(pattern).map_err(|e| HpfSetError::BadPattern { pattern: pattern.into(), why: e.to_string() })?;
    if re.captures_len() < 2 {
        return Err(HpfSetError::BadPattern {
            pattern: pattern.into(),
            why: "needs a capture group naming the slide, e.g. '^(.+)_\\d+$'".into(),
        });
    }
    Ok(re)
}

/// The slide an HPF stem belongs to; see the module docs. `None` when the
/// regex does not match (or its first group is empty).
pub fn group_key(stem: &str, re: Option<&Regex>) -> Option<String> {
    match re {
        Some(re) => re.captures(stem).and_then(|c| c.get(1)).map(|m| m.as_str().to_owned()).filter(|s| !s.is_empty()),
        None => Some(match stem.rfind('_') {
            Some(i) if i > 0 => stem[..i].to_owned(),
            _ => stem.to_owned(),
        }),
    }
}

/// The scores a split named by score allows: `test_1or2_score` -> `[1, 2]`,
/// `test_3_score` -> `[3]`; `None` for other names (`train`, `WSI04`).
pub fn split_scores(name: &str) -> Option<Vec<u8>> {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(['_', '-', ' ', '.']).filter(|w| !w.is_empty()).collect();
    let at = words.iter().position(|w| *w == "score" || *w == "scores")?;
    // The words before `score`: `3`, `1or2`, or `1`, `or`, `2`.
    let is_spec =
        |w: &&&str| **w == "or" || w.split("or").all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let spec: Vec<&str> = words[..at].iter().rev().take_while(is_spec).copied().collect();
    let mut scores = Vec::new();
    for c in spec.iter().flat_map(|w| w.chars()).filter(char::is_ascii_digit) {
        match c.to_digit(10) {
            Some(d @ 1..=3) => scores.push(d as u8),
            _ => return None,
        }
    }
    scores.sort_unstable();
    scores.dedup();
    (!scores.is_empty()).then_some(scores)
}

/// Per-slide scores from per-HPF counts: the `n` HPFs with the most
/// mitoses (ties: by image name), their count and area, and the score.
/// `field` sets the table row (default: the mean area of the counted HPFs).
pub fn score_slides(hpfs: &[HpfCount], n: usize, field: Option<FieldPreset>) -> Result<Vec<SlideScore>, HpfSetError> {
    let (scores, mut failed) = score_each_slide(hpfs, n, field)?;
    match failed.is_empty() {
        true => Ok(scores),
        false => Err(failed.swap_remove(0)),
    }
}

/// [`score_slides`], with the slides that cannot be scored (a field size
/// outside the table) returned apart, so that the others still are.
fn score_each_slide(
    hpfs: &[HpfCount],
    n: usize,
    field: Option<FieldPreset>,
) -> Result<(Vec<SlideScore>, Vec<HpfSetError>), HpfSetError> {
    if n == 0 {
        return Err(HpfSetError::Config("--hpfs must be at least 1".into()));
    }
    let mut failed = Vec::new();
    let mut by_slide: BTreeMap<&str, Vec<&HpfCount>> = BTreeMap::new();
    for h in hpfs {
        by_slide.entry(&h.slide).or_default().push(h);
    }
    let mut out = Vec::with_capacity(by_slide.len());
    for (slide, mut list) in by_slide {
        list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.image.cmp(&b.image)));
        let hpfs_total = list.len();
        let top: Vec<HpfCount> = list.into_iter().take(n).cloned().collect();
        let count = top.iter().map(|h| h.count).sum();
        let area_mm2: f64 = top.iter().map(|h| h.area_mm2).sum();
        let preset = field.unwrap_or(FieldPreset::Area(area_mm2 / top.len() as f64));
        let score = match mitotic_score(count, area_mm2, preset) {
            Ok(score) => score,
            Err(source) => {
                failed.push(HpfSetError::Score { slide: slide.to_owned(), source });
                continue;
            }
        };
        out.push(SlideScore {
            slide: slide.to_owned(),
            hpfs_total,
            hpfs_failed: 0,
            top_hpfs: top,
            count,
            area_mm2,
            score,
            truth: None,
            subset: None,
            annotated_count: None,
            annotated_score: None,
            split_scores: None,
        });
    }
    Ok((out, failed))
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Reads a ground-truth CSV: a header with `slide` and `score` columns (any
/// order, other columns ignored), one row per slide, score 1, 2 or 3.
pub fn read_truth(path: &Path) -> Result<BTreeMap<String, u8>, HpfSetError> {
    let bad = |why: String| HpfSetError::Truth { path: path.to_owned(), why };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Err(bad("empty file; expected a header 'slide,score'".into()));
    }
    // A CSV reader, so quoted names (`"W,1"`, as `score` writes them) read back.
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| bad(format!("header: {e}")))?.clone();
    let cols: Vec<String> = header.iter().map(str::to_ascii_lowercase).collect();
    let find = |name: &str| cols.iter().position(|c| c == name);
    let (Some(si), Some(ci)) = (find("slide"), find("score")) else {
        return Err(bad(format!(
            "header '{}' lacks 'slide' and 'score' columns",
            header.iter().collect::<Vec<_>>().join(",")
        )));
    };
    let mut out = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let (Some(slide), Some(score)) = (record.get(si), record.get(ci)) else {
            return Err(bad(format!("line {line}: expected {} columns, found {}", cols.len(), record.len())));
        };
        let score: u8 = match score.parse() {
            Ok(s @ 1..=3) => s,
            _ => return Err(bad(format!("line {line}: score '{score}' is not 1, 2 or 3"))),
        };
        if slide.is_empty() {
            return Err(bad(format!("line {line}: empty slide name")));
        }
        if out.insert(slide.to_string(), score).is_some() {
            return Err(bad(format!("line {line}: slide '{slide}' appears twice")));
        }
    }
    if out.is_empty() {
        return Err(bad("no rows".into()));
    }
    Ok(out)
}

/// Agreement and kappas between `scores` and `truth` over the slides in both;
/// fills each score's `truth`.
pub fn compare(scores: &mut [SlideScore], truth: &BTreeMap<String, u8>) -> Result<Comparison, HpfSetError> {
    for s in scores.iter_mut() {
        s.truth = truth.get(&s.slide).copied();
    }
    let predicted: Vec<(&str, u8)> = scores.iter().map(|s| (s.slide.as_str(), s.score.score)).collect();
    compare_scores(&predicted, truth)?.ok_or_else(|| {
        HpfSetError::Config(format!(
            "no slide of the folder is in the truth file (truth names e.g. {:?}; the folder's slides are e.g. {:?}); check --group",
            truth.keys().take(3).collect::<Vec<_>>(),
            scores.iter().take(3).map(|s| &s.slide).collect::<Vec<_>>()
        ))
    })
}

/// Agreement and kappas between predicted `(slide, score)` pairs and `truth`
/// over the slides in both; `None` when no slide is in both. Shared by HPF
/// folders ([`compare`]) and whole-slide runs (`slide --truth`).
pub fn compare_scores(
    predicted: &[(&str, u8)],
    truth: &BTreeMap<String, u8>,
) -> Result<Option<Comparison>, HpfSetError> {
    let (mut pred, mut gold) = (Vec::new(), Vec::new());
    let mut confusion = [[0usize; 3]; 3];
    let mut missing_truth = Vec::new();
    for &(slide, score) in predicted {
        match truth.get(slide) {
            Some(&t) => {
                pred.push(score);
                gold.push(t);
                confusion[(t - 1) as usize][(score - 1) as usize] += 1;
            }
            None => missing_truth.push(slide.to_owned()),
        }
    }
    let missing_predictions: Vec<String> =
        truth.keys().filter(|k| !predicted.iter().any(|(s, _)| s == k)).cloned().collect();
    if pred.is_empty() {
        return Ok(None);
    }
    let eval = |e| HpfSetError::Config(format!("kappa: {e}"));
    let agree = pred.iter().zip(&gold).filter(|(a, b)| a == b).count();
    Ok(Some(Comparison {
        slides: pred.len(),
        agreement: agree as f64 / pred.len() as f64,
        kappa: cohen_kappa(&gold, &pred).map_err(eval)?,
        weighted_kappa: weighted_kappa_quadratic(&gold, &pred, &[1, 2, 3]).map_err(eval)?,
        confusion,
        missing_predictions,
        missing_truth,
    }))
}

/// Detects on every image of `dir`, groups, scores, and compares with
/// `truth` when given. Returns the report and each image's detections.
pub fn run_hpf_set(
    detector: &dyn TileDetector,
    dir: &Path,
    truth: Option<&Path>,
    config: &HpfSetConfig,
) -> Result<(HpfSetReport, Vec<ImageResult>), HpfSetError> {
    let re = config.group.as_deref().map(compile_group).transpose()?;
    if config.n_hpfs == 0 {
        return Err(HpfSetError::Config("--hpfs must be at least 1".into()));
    }
    let info = detector.info(&config.options);
    let mpp = config.input_mpp.unwrap_or(info.default_input_mpp);
    crate::detector::checked_input_mpp(mpp).map_err(|e| match e {
        DetectError::Config(why) => HpfSetError::Config(format!("--mpp: {why}")),
        other => HpfSetError::Config(format!("--mpp: {other}")),
    })?;
    if let Some(f) = config.field {
        let area = f.area_mm2();
        if !(area.is_finite() && area > 0.0) {
            return Err(HpfSetError::Config(format!("field area must be positive, got {area} mm²")));
        }
    }
    let truth_path = truth;
    let truth = truth.map(read_truth).transpose()?;
    if !dir.is_dir() {
        let why = if dir.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
            "is a zip: detection reads image files, so extract it and give its folder (`mitoscope inspect` reads the zip as it is)"
        } else {
            "is not a folder of HPF images"
        };
        return Err(HpfSetError::Input { path: dir.to_owned(), why: why.into() });
    }
    let (files, mut failures) = expand_inputs(&[dir.to_owned()]);
    let mut notes = Vec::new();
    let jobs = if files.is_empty() {
        // No image directly in the folder: a dataset root or split (GZMH V2).
        failures.clear();
        dataset_jobs(dir, re.as_ref(), &mut failures, &mut notes)?
    } else {
        flat_jobs(files, re.as_ref(), &mut failures)
    };
    if jobs.is_empty() {
        // Say why: no image at all, or none whose name the --group pattern matches.
        let unmatched = failures.iter().filter(|(_, why)| why.contains("--group")).count();
        let why = match (&config.group, unmatched) {
            (Some(pattern), n) if n > 0 => format!(
                "no HPF image to score: none of its {n} images is named as --group '{pattern}' expects (e.g. {})",
                failures.iter().find(|(_, w)| w.contains("--group")).map(|(p, _)| image_id(p)).unwrap_or_default()
            ),
            _ => "no HPF image to score".into(),
        };
        return Err(HpfSetError::Input { path: dir.to_owned(), why });
    }
    let bar = if config.show_progress { ProgressBar::new(jobs.len() as u64) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("score [{bar:30}] {pos}/{len} HPFs ({elapsed}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    let results: Vec<Result<(HpfCount, ImageResult), (PathBuf, String)>> = jobs
        .par_iter()
        .map(|job| {
            let r = detect_one(detector, job, mpp, config).map_err(|e| (job.path.clone(), e.to_string()));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let (mut hpfs, mut images) = (Vec::new(), Vec::new());
    let mut unread: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, job) in results.into_iter().zip(&jobs) {
        match r {
            Ok((h, img)) => {
                hpfs.push(h);
                images.push(img);
            }
            Err(f) => {
                *unread.entry(job.slide.as_str()).or_default() += 1;
                failures.push(f);
            }
        }
    }
    if hpfs.is_empty() {
        return Err(HpfSetError::Input { path: dir.to_owned(), why: "no HPF image could be read".into() });
    }
    let (mut slides, unscored) = score_each_slide(&hpfs, config.n_hpfs, config.field)?;
    if slides.is_empty() {
        let why: Vec<String> = unscored.iter().map(ToString::to_string).collect();
        return Err(HpfSetError::Input {
            path: dir.to_owned(),
            why: format!("no slide could be scored: {}", why.join("; ")),
        });
    }
    // A slide that cannot be scored fails alone; the others are still scored.
    failures.extend(unscored.into_iter().map(|e| (dir.to_owned(), e.to_string())));
    for s in &mut slides {
        s.hpfs_failed = unread.remove(s.slide.as_str()).unwrap_or(0);
        if s.hpfs_failed > 0 {
            notes.push(format!(
                "slide {}: {} of its {} HPFs could not be read (see the errors); its score is from the rest",
                s.slide,
                s.hpfs_failed,
                s.hpfs_failed + s.hpfs_total
            ));
        }
        if s.hpfs_total < config.n_hpfs {
            notes.push(format!(
                "slide {}: {} HPF{}, fewer than the {} counted; its count is scaled from {:.3} mm²",
                s.slide,
                s.hpfs_total,
                if s.hpfs_total == 1 { "" } else { "s" },
                config.n_hpfs,
                s.area_mm2
            ));
        }
    }
    for (slide, n) in &unread {
        notes.push(format!("slide {slide}: none of its {n} HPFs could be read; it is not scored"));
    }
    let split_agreement = add_dataset_truth(&mut slides, &hpfs, &jobs, dir, config)?;
    let count_agreement = count_agreement(&slides);
    let annotated: BTreeMap<String, u8> =
        slides.iter().filter_map(|s| Some((s.slide.clone(), s.annotated_score?))).collect();
    // Name unreadable HPFs where no scored slide is in the truth: the truth's
    // slides may be the ones that failed, not a wrong --group.
    let unread_hint = |e: HpfSetError| match (&e, failures.first()) {
        (HpfSetError::Config(why), Some((path, first))) => HpfSetError::Config(format!(
            "{why}; {} HPFs could not be read, e.g. {}: {first}",
            failures.len(),
            path.display()
        )),
        _ => e,
    };
    let (comparison, truth_source) = match (&truth, truth_path) {
        (Some(t), Some(p)) => (Some(compare(&mut slides, t).map_err(unread_hint)?), Some(p.display().to_string())),
        _ if !annotated.is_empty() => (Some(compare(&mut slides, &annotated)?), Some("annotations".to_owned())),
        _ => (None, None),
    };
    Ok((
        HpfSetReport {
            model: info,
            mpp,
            n_hpfs: config.n_hpfs,
            slides,
            hpfs,
            failures,
            comparison,
            truth_source,
            split_agreement,
            count_agreement,
            notes,
            outputs: BTreeMap::new(),
        },
        images,
    ))
}

/// One HPF to score: its file, id, slide, and what a dataset says of it.
#[derive(Debug, Clone)]
struct HpfJob {
    path: PathBuf,
    image: String,
    slide: String,
    subset: Option<String>,
    truth_count: Option<usize>,
}

/// The images of a flat folder, grouped by file name.
fn flat_jobs(files: Vec<PathBuf>, re: Option<&Regex>, failures: &mut Vec<(PathBuf, String)>) -> Vec<HpfJob> {
    let mut jobs = Vec::new();
    // `x.png` beside `x.jpg` get ids of their own (with a warning), as in `detect`.
    let ids = crate::batch::unique_image_ids(&files);
    for (path, image) in files.into_iter().zip(ids) {
        match group_key(&image_id(&path), re) {
            Some(slide) => jobs.push(HpfJob { path, image, slide, subset: None, truth_count: None }),
            None => failures.push((path.clone(), format!("{}: name does not match --group; skipped", path.display()))),
        }
    }
    jobs
}

/// The images of a dataset folder (read by the GZMH reader), each in its
/// per-slide folder's slide (or by file name where there is none; always by
/// file name with `--group`), with its annotated count where it has one.
fn dataset_jobs(
    dir: &Path,
    re: Option<&Regex>,
    failures: &mut Vec<(PathBuf, String)>,
    notes: &mut Vec<String>,
) -> Result<Vec<HpfJob>, HpfSetError> {
    let set = mitoscope_formats::gzmh::read(dir, &mitoscope_formats::ReadOptions::default()).map_err(|e| {
        HpfSetError::Input {
            path: dir.to_owned(),
            why: format!("no HPF image directly in it, and not readable as a dataset: {e}"),
        }
    })?;
    // A split folder given itself (`test_3_score/`) is its images' subset.
    let root_split = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| split_scores(n).is_some());
    let mut jobs = Vec::new();
    for img in &set.images {
        let Some(path) = img.path.clone() else { continue };
        let stem = image_id(&path);
        let slide = match re {
            Some(_) => group_key(&stem, re),
            None => img.slide.clone().or_else(|| group_key(&stem, None)),
        };
        let Some(slide) = slide else {
            failures.push((path.clone(), format!("{}: name does not match --group; skipped", path.display())));
            continue;
        };
        let truth_count = img.unusable.is_none().then(|| img.count(mitoscope_annotations::ObjectClass::Mitosis));
        let subset = root_split.clone().or_else(|| img.subset.clone());
        jobs.push(HpfJob { path, image: img.image.clone(), slide, subset, truth_count });
    }
    // A slide name in two subsets (per-split folder counters) is two slides.
    let mut subsets_of: BTreeMap<&str, std::collections::BTreeSet<Option<&str>>> = BTreeMap::new();
    for j in &jobs {
        subsets_of.entry(j.slide.as_str()).or_default().insert(j.subset.as_deref());
    }
    let shared: std::collections::BTreeSet<String> =
        subsets_of.into_iter().filter(|(_, s)| s.len() > 1).map(|(k, _)| k.to_owned()).collect();
    for j in &mut jobs {
        if let (true, Some(subset)) = (shared.contains(&j.slide), &j.subset) {
            j.slide = format!("{subset}/{}", j.slide);
        }
    }
    let slides: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.slide.as_str()).collect();
    let annotated = jobs.iter().filter(|j| j.truth_count.is_some()).count();
    notes.push(format!(
        "read as a dataset: {} HPF{} in {} slide{}{}; {annotated} annotated (masks or labels)",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" },
        slides.len(),
        if slides.len() == 1 { "" } else { "s" },
        match jobs.iter().filter_map(|j| j.subset.as_deref()).collect::<std::collections::BTreeSet<_>>() {
            s if s.is_empty() => String::new(),
            s => format!(", subsets {}", s.into_iter().collect::<Vec<_>>().join(", ")),
        }
    ));
    if !set.inconsistencies.is_empty() {
        notes.push(format!(
            "{} annotation problems (see `mitoscope inspect {}`), e.g. {}",
            set.inconsistencies.len(),
            dir.display(),
            set.inconsistencies[0]
        ));
    }
    Ok(jobs)
}

/// Fills each slide's subset, split scores and annotated count and score
/// (over its own top-N HPFs by annotation, every HPF annotated), and returns
/// the predicted scores against the splits' where any split is named by score.
fn add_dataset_truth(
    slides: &mut [SlideScore],
    hpfs: &[HpfCount],
    jobs: &[HpfJob],
    dir: &Path,
    config: &HpfSetConfig,
) -> Result<Option<SplitAgreement>, HpfSetError> {
    // Canonical, so that `score .` inside `test_3_score/` still names the split.
    let dir_name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()));
    let dir_split = dir_name.as_deref().and_then(split_scores);
    let mut truth_hpfs = Vec::new();
    let mut unannotated: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for h in hpfs {
        match h.truth_count {
            Some(n) => truth_hpfs.push(HpfCount { count: n, ..h.clone() }),
            None => {
                unannotated.insert(h.slide.as_str());
            }
        }
    }
    truth_hpfs.retain(|h| !unannotated.contains(h.slide.as_str()));
    let annotated: BTreeMap<String, SlideScore> = if truth_hpfs.is_empty() {
        BTreeMap::new()
    } else {
        score_each_slide(&truth_hpfs, config.n_hpfs, config.field)?
            .0
            .into_iter()
            .map(|s| (s.slide.clone(), s))
            .collect()
    };
    let mut predicted: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let (mut in_split, mut agree) = (0, 0);
    for s in slides.iter_mut() {
        s.subset = jobs.iter().find(|j| j.slide == s.slide).and_then(|j| j.subset.clone());
        if let Some(a) = annotated.get(&s.slide) {
            s.annotated_count = Some(a.count);
            s.annotated_score = Some(a.score.score);
        }
        let named = s.subset.as_deref().and_then(|n| split_scores(n).map(|v| (n.to_owned(), v)));
        let named = named.or_else(|| Some((dir_name.clone()?, dir_split.clone()?)));
        if let Some((split, allowed)) = named {
            in_split += 1;
            agree += usize::from(allowed.contains(&s.score.score));
            predicted.entry(split).or_default()[usize::from(s.score.score.clamp(1, 3) - 1)] += 1;
            s.split_scores = Some(allowed);
        }
    }
    Ok((in_split > 0).then(|| SplitAgreement {
        slides: in_split,
        agreement: agree as f64 / in_split as f64,
        predicted,
    }))
}

/// Predicted against annotated top-N counts over the slides that have both.
fn count_agreement(slides: &[SlideScore]) -> Option<CountAgreement> {
    let diffs: Vec<f64> = slides.iter().filter_map(|s| Some(s.count as f64 - s.annotated_count? as f64)).collect();
    (!diffs.is_empty()).then(|| CountAgreement {
        slides: diffs.len(),
        mean_abs_error: diffs.iter().map(|d| d.abs()).sum::<f64>() / diffs.len() as f64,
        mean_error: diffs.iter().sum::<f64>() / diffs.len() as f64,
    })
}

fn detect_one(
    detector: &dyn TileDetector,
    job: &HpfJob,
    default_mpp: f64,
    config: &HpfSetConfig,
) -> Result<(HpfCount, ImageResult), DetectError> {
    let path = job.path.as_path();
    // As `detect` reads it: --mpp, else a TIFF's resolution tags, else the default.
    let mpp = crate::batch::image_mpp(path, config.input_mpp, default_mpp);
    crate::detector::checked_input_mpp(mpp)
        .map_err(|e| DetectError::Input { path: path.to_owned(), message: e.to_string() })?;
    let image = mitoscope_imaging::read_image(path)?;
    let (w, h) = image.dimensions();
    let detections: Vec<Detection> = detector
        .detect(&image, mpp, &config.options, &|_, _| true)
        .map_err(|e| DetectError::Input { path: path.to_owned(), message: e.to_string() })?;
    let area_mm2 = match config.field {
        Some(field) => field.area_mm2(),
        None => Mpp::new(mpp).map(|m| m.area_mm2(w as f64, h as f64)).unwrap_or(0.0),
    };
    let id = job.image.clone();
    let count = HpfCount {
        image: id.clone(),
        slide: job.slide.clone(),
        count: detections.len(),
        area_mm2,
        size: (w, h),
        truth_count: job.truth_count,
    };
    let result = ImageResult {
        image: id,
        path: path.to_owned(),
        size: (w, h),
        detections,
        candidates: Vec::new(),
        seconds: 0.0,
    };
    Ok((count, result))
}

/// The files [`write_hpf_outputs`] writes into its folder.
pub const HPF_OUTPUT_FILES: [&str; 3] = ["scores.csv", "scores.json", "detections.csv"];

/// Refuses an output folder that is a file, or where writing would replace a
/// file no earlier `score` run wrote: one of [`HPF_OUTPUT_FILES`] with no
/// `scores.json` of a score run beside it (a `detect` run's
/// `detections.csv`, say), or one whose content is no longer what that run
/// recorded (a file copied or edited in since). Called before any detection,
/// and again before writing.
pub fn check_hpf_out(out_dir: &Path) -> Result<(), HpfSetError> {
    let refuse = |path: PathBuf, why: &str| Err(HpfSetError::Output { path, why: why.to_owned() });
    if out_dir.exists() && !out_dir.is_dir() {
        return refuse(out_dir.to_owned(), "--out exists and is not a folder");
    }
    let earlier = std::fs::read(out_dir.join("scores.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<HpfSetReport>(&bytes).ok());
    let Some(earlier) = earlier else {
        let json = out_dir.join("scores.json");
        if json.exists() {
            return refuse(
                json,
                "exists, and is not the report of an earlier `mitoscope score` run; \
                 it is left alone: give a new or empty --out folder",
            );
        }
        return match HPF_OUTPUT_FILES.iter().map(|f| out_dir.join(f)).find(|p| p.exists()) {
            Some(path) => refuse(
                path,
                "exists, and no earlier `mitoscope score` run wrote it (no scores.json of one beside it); \
                 it is left alone: give a new or empty --out folder",
            ),
            None => Ok(()),
        };
    };
    for name in HPF_OUTPUT_FILES.iter().filter(|f| **f != "scores.json") {
        let path = out_dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let why = match earlier.outputs.get(*name) {
            Some(crc) if *crc == crc32_hex(&bytes) => continue,
            Some(_) => {
                "exists, and is not the file the earlier `mitoscope score` run in this folder wrote \
                 (changed or copied in since); it is left alone: give a new or empty --out folder"
            }
            // Reports from before checksums were recorded cannot vouch for it.
            None => {
                "exists beside a scores.json that records no checksum of it (an older version's), \
                 so it may not be that run's file; it is left alone: give a new or empty --out folder"
            }
        };
        return refuse(path, why);
    }
    Ok(())
}

fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Writes `scores.csv` (`slide,hpfs,hpfs_used,count,area_mm2,score,truth`,
/// then `subset,annotated_count,annotated_score,split_scores` from datasets),
/// `detections.csv` (`image,x,y,score` of every HPF) and, last, `scores.json`
/// (the whole report, with the other two files' digests) into `out_dir`, each
/// atomically.
pub fn write_hpf_outputs(
    out_dir: &Path,
    report: &HpfSetReport,
    images: &[ImageResult],
) -> Result<Vec<PathBuf>, HpfSetError> {
    use mitoscope_formats::atomic::write_atomic;
    check_hpf_out(out_dir)?;
    let mut scores = String::from(
        "slide,hpfs,hpfs_used,count,area_mm2,score,truth,subset,annotated_count,annotated_score,split_scores\n",
    );
    for s in &report.slides {
        let truth = s.truth.map(|t| t.to_string()).unwrap_or_default();
        let opt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
        let split = s.split_scores.iter().flatten().map(u8::to_string).collect::<Vec<_>>().join("or");
        scores.push_str(&format!(
            "{},{},{},{},{:.4},{},{truth},{},{},{},{split}\n",
            csv_field(&s.slide),
            s.hpfs_total,
            s.top_hpfs.len(),
            s.count,
            s.area_mm2,
            s.score.score,
            csv_field(s.subset.as_deref().unwrap_or_default()),
            opt(s.annotated_count),
            opt(s.annotated_score.map(usize::from)),
        ));
    }
    let mut detections = format!("{}\n", crate::DETECTIONS_HEADER);
    for r in images {
        let id = csv_field(&r.image);
        for d in &r.detections {
            detections.push_str(&crate::batch::detection_row(&id, d));
            detections.push('\n');
        }
    }
    let mut report = report.clone();
    report.outputs.clear();
    let mut written = Vec::new();
    for (name, bytes) in [("scores.csv", scores.as_bytes()), ("detections.csv", detections.as_bytes())] {
        let path = out_dir.join(name);
        write_atomic(&path, bytes)?;
        report.outputs.insert(name.to_owned(), crc32_hex(bytes));
        written.push(path);
    }
    let json = out_dir.join("scores.json");
    let bytes = serde_json::to_vec_pretty(&report)
        .map_err(|e| mitoscope_formats::FormatError::io(&json, std::io::Error::other(e)))?;
    write_atomic(&json, &bytes)?;
    written.insert(1, json);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_regex_groups() {
        assert_eq!(group_key("A04_07", None).as_deref(), Some("A04"));
        assert_eq!(group_key("slide_12_003", None).as_deref(), Some("slide_12"));
        assert_eq!(group_key("lonely", None).as_deref(), Some("lonely"));
        assert_eq!(group_key("_x", None).as_deref(), Some("_x"));
        let re = compile_group(r"^(\w+?)-hpf\d+$").unwrap();
        assert_eq!(group_key("wsi7-hpf03", Some(&re)).as_deref(), Some("wsi7"));
        assert_eq!(group_key("other", Some(&re)), None);
        assert!(compile_group("no-group").is_err());
        assert!(compile_group("(unclosed").unwrap_err().to_string().contains("(unclosed"));
    }
}
