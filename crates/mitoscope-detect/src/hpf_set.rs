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

use crate::batch::{ImageResult, expand_inputs, image_id};
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
}

/// The score of one slide from its HPFs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideScore {
    /// Slide name (the group key).
    pub slide: String,
    /// HPF images of this slide.
    pub hpfs_total: usize,
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

/// Per-slide scores from per-HPF counts: the `n` HPFs with the most
/// mitoses (ties: by image name), their count and area, and the score.
/// `field` sets the table row (default: the mean area of the counted HPFs).
pub fn score_slides(hpfs: &[HpfCount], n: usize, field: Option<FieldPreset>) -> Result<Vec<SlideScore>, HpfSetError> {
    if n == 0 {
        return Err(HpfSetError::Config("--hpfs must be at least 1".into()));
    }
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
        let score = mitotic_score(count, area_mm2, preset)
            .map_err(|source| HpfSetError::Score { slide: slide.to_owned(), source })?;
        out.push(SlideScore {
            slide: slide.to_owned(),
            hpfs_total,
            top_hpfs: top,
            count,
            area_mm2,
            score,
            truth: None,
        });
    }
    Ok(out)
}

/// Reads a ground-truth CSV: a header with `slide` and `score` columns (any
/// order, other columns ignored), one row per slide, score 1, 2 or 3.
pub fn read_truth(path: &Path) -> Result<BTreeMap<String, u8>, HpfSetError> {
    let bad = |why: String| HpfSetError::Truth { path: path.to_owned(), why };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad("empty file; expected a header 'slide,score'".into()))?;
    let cols: Vec<String> =
        header.split(',').map(|c| c.trim().trim_start_matches('\u{feff}').to_ascii_lowercase()).collect();
    let find = |name: &str| cols.iter().position(|c| c == name);
    let (Some(si), Some(ci)) = (find("slide"), find("score")) else {
        return Err(bad(format!("header '{header}' lacks 'slide' and 'score' columns")));
    };
    let mut out = BTreeMap::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let (Some(slide), Some(score)) = (f.get(si), f.get(ci)) else {
            return Err(bad(format!("line {}: expected {} columns, found {}", i + 1, cols.len(), f.len())));
        };
        let score: u8 = match score.parse() {
            Ok(s @ 1..=3) => s,
            _ => return Err(bad(format!("line {}: score '{score}' is not 1, 2 or 3", i + 1))),
        };
        if slide.is_empty() {
            return Err(bad(format!("line {}: empty slide name", i + 1)));
        }
        if out.insert(slide.to_string(), score).is_some() {
            return Err(bad(format!("line {}: slide '{slide}' appears twice", i + 1)));
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
    crate::detector::checked_input_mpp(mpp).map_err(|e| HpfSetError::Config(format!("--mpp: {e}")))?;
    if let Some(f) = config.field {
        let area = match f {
            FieldPreset::Area(a) => a,
            FieldPreset::Diameter(d) => std::f64::consts::PI * d * d / 4.0,
            FieldPreset::TenHpfTwoMm2 => 0.2,
        };
        if !(area.is_finite() && area > 0.0) {
            return Err(HpfSetError::Config(format!("field area must be positive, got {area} mm²")));
        }
    }
    let truth = truth.map(read_truth).transpose()?;
    if !dir.is_dir() {
        return Err(HpfSetError::Input { path: dir.to_owned(), why: "is not a folder of HPF images".into() });
    }
    let (files, mut failures) = expand_inputs(&[dir.to_owned()]);
    let mut jobs = Vec::new();
    for f in files {
        match group_key(&image_id(&f), re.as_ref()) {
            Some(slide) => jobs.push((f, slide)),
            None => failures.push((f.clone(), format!("{}: name does not match --group; skipped", f.display()))),
        }
    }
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
        .map(|(path, slide)| {
            let r = detect_one(detector, path, slide, mpp, config).map_err(|e| (path.clone(), e.to_string()));
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let (mut hpfs, mut images) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok((h, img)) => {
                hpfs.push(h);
                images.push(img);
            }
            Err(f) => failures.push(f),
        }
    }
    if hpfs.is_empty() {
        return Err(HpfSetError::Input { path: dir.to_owned(), why: "no HPF image could be read".into() });
    }
    let mut slides = score_slides(&hpfs, config.n_hpfs, config.field)?;
    let comparison = truth.as_ref().map(|t| compare(&mut slides, t)).transpose()?;
    Ok((HpfSetReport { model: info, mpp, n_hpfs: config.n_hpfs, slides, hpfs, failures, comparison }, images))
}

fn detect_one(
    detector: &dyn TileDetector,
    path: &Path,
    slide: &str,
    mpp: f64,
    config: &HpfSetConfig,
) -> Result<(HpfCount, ImageResult), DetectError> {
    let image = mitoscope_imaging::read_image(path)?;
    let (w, h) = image.dimensions();
    let detections: Vec<Detection> = detector
        .detect(&image, mpp, &config.options, &|_, _| true)
        .map_err(|e| DetectError::Input { path: path.to_owned(), message: e.to_string() })?;
    let area_mm2 = match config.field {
        Some(FieldPreset::Area(a)) => a,
        Some(FieldPreset::Diameter(d)) => std::f64::consts::PI * d * d / 4.0,
        Some(FieldPreset::TenHpfTwoMm2) => 0.2,
        None => Mpp::new(mpp).map(|m| m.area_mm2(w as f64, h as f64)).unwrap_or(0.0),
    };
    let id = image_id(path);
    let count =
        HpfCount { image: id.clone(), slide: slide.to_owned(), count: detections.len(), area_mm2, size: (w, h) };
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

/// Writes `scores.csv` (`slide,hpfs,hpfs_used,count,area_mm2,score,truth`),
/// `scores.json` (the whole report) and `detections.csv` (`image,x,y,score`
/// of every HPF) into `out_dir`, each atomically.
pub fn write_hpf_outputs(
    out_dir: &Path,
    report: &HpfSetReport,
    images: &[ImageResult],
) -> Result<Vec<PathBuf>, HpfSetError> {
    use mitoscope_formats::atomic::{write_atomic, write_atomic_with};
    let csv = out_dir.join("scores.csv");
    write_atomic_with(&csv, |w| {
        writeln!(w, "slide,hpfs,hpfs_used,count,area_mm2,score,truth")?;
        for s in &report.slides {
            let truth = s.truth.map(|t| t.to_string()).unwrap_or_default();
            writeln!(
                w,
                "{},{},{},{},{:.4},{},{truth}",
                s.slide,
                s.hpfs_total,
                s.top_hpfs.len(),
                s.count,
                s.area_mm2,
                s.score.score
            )?;
        }
        Ok(())
    })?;
    let json = out_dir.join("scores.json");
    let bytes = serde_json::to_vec_pretty(report)
        .map_err(|e| mitoscope_formats::FormatError::io(&json, std::io::Error::other(e)))?;
    write_atomic(&json, &bytes)?;
    let dets = out_dir.join("detections.csv");
    write_atomic_with(&dets, |w| {
        writeln!(w, "{}", crate::DETECTIONS_HEADER)?;
        for r in images {
            for d in &r.detections {
                writeln!(w, "{},{:.2},{:.2},{:.4}", r.image, d.x, d.y, d.score)?;
            }
        }
        Ok(())
    })?;
    Ok(vec![csv, json, dets])
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
