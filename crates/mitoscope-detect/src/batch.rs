//! [`run_batch`]: many images in, one output folder out.
//!
//! Inputs (files or folders, expanded to sorted image files) are processed in
//! parallel on rayon's pool; each failure (unreadable, truncated, empty
//! image, ...) is recorded with its path and every other input still goes
//! through. Outputs, all written atomically once every image is done:
//!
//! ```text
//! out_dir/
//!   detections.csv        image,x,y,score   (score >= threshold)
//!   candidates.csv        image,x,y,score,candidate_score   (--all-candidates)
//!   detections.geojson    QuPath GeoJSON, a polygon per detection where one exists
//!   midog/<image>.json    grand-challenge "Multiple points" (MIDOG), mm
//!   asap/<image>.xml      ASAP XML, a polygon per detection where one exists
//!   overlays/<image>.png  input with each detection circled and its score written
//!   masks/<image>.png     detection outlines filled, 0/255, input size
//!   run.json              what made these files: command, model, thresholds, mpp
//! ```
//!
//! Each image's resolution is the configured `input_mpp`, else what a TIFF
//! states in its resolution tags, else the model card's default.
//!
//! A re-run into the same folder replaces the earlier run's outputs: the
//! files its `run.json` lists that this run does not write again (formats not
//! asked for, images not in this run) are removed, so the folder never mixes
//! two runs. A file this run would write that exists and no earlier run here
//! wrote (a dataset's own `masks/001.png`, say) stops the run before any
//! image is read: nothing of the user's is overwritten or removed. A run in
//! which every input failed writes nothing and leaves the folder as it was.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use image::{Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass, Shape};
use mitoscope_formats::{Format, WriteOptions};
use mitoscope_geom::{Mpp, Point, Polygon};
use rayon::prelude::*;

use crate::{DetectError, DetectOptions, Detection, Detector};

/// Exact header of `detections.csv`.
pub const DETECTIONS_HEADER: &str = "image,x,y,score";
/// Exact header of `candidates.csv`.
pub const CANDIDATES_HEADER: &str = "image,x,y,score,candidate_score";

/// Optional outputs besides `detections.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outputs {
    /// `detections.geojson`.
    pub geojson: bool,
    /// `midog/<image>.json`.
    pub midog: bool,
    /// `asap/<image>.xml`: ASAP XML for review in the ASAP viewer.
    pub asap: bool,
    /// `overlays/<image>.png`.
    pub overlay: bool,
    /// `masks/<image>.png`: the outlines of the detections filled (255 =
    /// mitosis), input size, for `mitoscope segeval`.
    pub masks: bool,
}

impl Outputs {
    /// Every output.
    pub fn all() -> Self {
        Self { geojson: true, midog: true, asap: true, overlay: true, masks: true }
    }

    /// Parses a `--format` list such as `csv,geojson,midog,overlay`
    /// (`csv` is always written; case-insensitive; `all` = every format).
    pub fn parse_list(list: &str) -> Result<Self, DetectError> {
        let mut out = Self::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "csv" => {}
                "geojson" | "qupath" => out.geojson = true,
                "midog" | "json" => out.midog = true,
                "asap" | "xml" => out.asap = true,
                "overlay" | "overlays" | "png" => out.overlay = true,
                "mask" | "masks" => out.masks = true,
                "all" => out = Self::all(),
                other => {
                    return Err(DetectError::Config(format!(
                        "unknown output format '{other}'; expected csv, geojson, midog, asap, overlay, masks or all"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// File name of the [`RunRecord`] written beside the detections.
pub const RUN_RECORD_FILE: &str = "run.json";

/// What made a detections folder (`run.json`): read back by `mitoscope
/// report` so a report names the model without being told.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// `mitoscope X.Y.Z`.
    pub tool: String,
    /// The command line, when the caller gave it.
    pub command: Option<String>,
    /// Model name and version (the card's).
    pub model: String,
    /// Stage-2 threshold the detections were cut at.
    pub operating_threshold: f64,
    /// Stage-1 threshold of the model.
    pub candidate_threshold: f64,
    /// Resolution the model works at, µm/px.
    pub model_mpp: f64,
    /// `--mpp` as given (`None`: per image, from TIFF tags or the default).
    pub input_mpp: Option<f64>,
    /// Images processed.
    pub images: usize,
    /// Inputs that failed.
    pub failures: usize,
    /// Detections written.
    pub detections: usize,
    /// The optional and per-image files this run wrote, relative to the
    /// folder (`masks/001.png`, `candidates.csv`): a later run here removes
    /// or overwrites only these, never a file it did not write.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Settings of a batch run.
#[derive(Debug, Clone, Default)]
pub struct BatchConfig {
    /// Input mpp for every image; `None` = the model card's default (0.25).
    pub input_mpp: Option<f64>,
    /// Threshold, tiling, polygons (`keep_all_candidates` is ignored: see `write_candidates`).
    pub options: DetectOptions,
    /// Extra outputs.
    pub outputs: Outputs,
    /// Also write `candidates.csv` with every stage-1 candidate.
    pub write_candidates: bool,
    /// Show an `indicatif` bar on stderr.
    pub show_progress: bool,
    /// The command line that started the run, recorded in `run.json`.
    pub command: Option<String>,
}

/// Result for one input image.
#[derive(Debug, Clone)]
pub struct ImageResult {
    /// Image id (file stem).
    pub image: String,
    /// The file.
    pub path: PathBuf,
    /// Width x height in pixels.
    pub size: (u32, u32),
    /// Detections at or above the threshold, strongest first.
    pub detections: Vec<Detection>,
    /// All candidates (only kept when `write_candidates`).
    pub candidates: Vec<Detection>,
    /// Seconds spent on this image (decode + detect + overlay).
    pub seconds: f64,
}

/// What [`run_batch`] did.
#[derive(Debug, Clone)]
pub struct BatchSummary {
    /// `(image id, detections)` per processed image, in input order.
    pub per_image: Vec<(String, usize)>,
    /// Inputs that could not be processed, with the reason (names the file).
    pub failures: Vec<(PathBuf, String)>,
    /// Detections over all images.
    pub total: usize,
    /// The operating threshold used.
    pub threshold: f64,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Full per-image results.
    pub images: Vec<ImageResult>,
}

/// Expands files and folders (non-recursive) into image files, sorted within
/// each folder; paths that do not exist or hold no image are failures.
pub fn expand_inputs(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut failures = Vec::new();
    for input in inputs {
        if input.is_dir() {
            match std::fs::read_dir(input) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file() && mitoscope_imaging::is_image_path(p))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        // Folders are not searched recursively (a dataset's mask
                        // folders hold PNGs too): point at where the images are.
                        let below = image_folders_below(input, 4, 3);
                        let hint = if below.is_empty() {
                            String::new()
                        } else {
                            let names: Vec<String> = below
                                .iter()
                                .map(|d| d.strip_prefix(input).unwrap_or(d).display().to_string())
                                .collect();
                            format!("; its subfolders {} do: give those folders", names.join(", "))
                        };
                        failures.push((
                            input.clone(),
                            format!("folder {} holds no PNG/JPEG/TIFF/BMP image{hint}", input.display()),
                        ));
                    }
                    files.extend(found);
                }
                Err(e) => failures.push((input.clone(), format!("cannot read folder {}: {e}", input.display()))),
            }
        } else if input.is_file() {
            files.push(input.clone());
        } else if std::fs::symlink_metadata(input).is_ok() {
            // There, but not reachable: a link to nothing, or a loop of links.
            let why = std::fs::metadata(input).err().map(|e| e.to_string()).unwrap_or_default();
            failures
                .push((input.clone(), format!("{} is a symbolic link that leads nowhere ({why})", input.display())));
        } else {
            failures.push((input.clone(), format!("{} does not exist", input.display())));
        }
    }
    // The same file named twice (`a.png` and its folder, or a repeated path)
    // is processed once, under its first name.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    (files, failures)
}

/// Up to `limit` folders below `dir` (at most `depth` levels down, in name
/// order, mask folders left out) that directly hold an image.
fn image_folders_below(dir: &Path, depth: usize, limit: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0)];
    while let Some((d, level)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        let mut subdirs: Vec<PathBuf> = Vec::new();
        let mut has_image = false;
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.is_dir() {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if !mitoscope_formats::gzmh::is_mask_folder(&name) {
                    subdirs.push(p);
                }
            } else if mitoscope_imaging::is_image_path(&p) {
                has_image = true;
            }
        }
        if has_image && level > 0 {
            out.push(d);
            if out.len() == limit {
                break;
            }
        }
        if level < depth {
            subdirs.sort();
            stack.extend(subdirs.into_iter().rev().map(|s| (s, level + 1)));
        }
    }
    out
}

/// The resolution an input is read at: the caller's, else the one a TIFF
/// states, else `default` (logged, since counts per area depend on it).
pub fn image_mpp(path: &Path, given: Option<f64>, default: f64) -> f64 {
    if let Some(m) = given {
        return m;
    }
    match mitoscope_imaging::stated_mpp(path) {
        Some(m) => {
            tracing::info!("{}: {m:.4} µm/px from its TIFF resolution tags", path.display());
            m
        }
        None => default,
    }
}

/// Image id of a file: its stem.
pub fn image_id(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// One id per file: the stem, unless two inputs share it (`a/x.png` and
/// `b/x.png`, or `x.png` and `x.jpg`), whose outputs would overwrite each
/// other; those get the file name, then the parent folder too, then a
/// counter, whichever first makes them unique. A warning names each renaming.
pub fn unique_image_ids(files: &[PathBuf]) -> Vec<String> {
    use std::collections::HashMap;
    // `x_png`, not `x.png`: readers take an id ending in an image extension
    // for a file name and strip it, which would merge `x.png` and `x.PNG` again.
    let file_name = |p: &Path| match p.extension() {
        Some(ext) => format!("{}_{}", image_id(p), ext.to_string_lossy()),
        None => image_id(p),
    };
    // `<folder>_<stem>`: TUPAC16's `<case>/<hpf>.tif` become its `<case>_<hpf>` ids.
    let with_parent = |p: &Path| match p.parent().and_then(|d| d.file_name()) {
        Some(dir) => format!("{}_{}", dir.to_string_lossy(), image_id(p)),
        None => file_name(p),
    };
    let count = |ids: &[String]| {
        let mut n: HashMap<String, usize> = HashMap::new();
        for id in ids {
            *n.entry(id.clone()).or_default() += 1;
        }
        n
    };
    let mut ids: Vec<String> = files.iter().map(|p| image_id(p)).collect();
    for rename in [&file_name as &dyn Fn(&Path) -> String, &with_parent] {
        let n = count(&ids);
        for (id, path) in ids.iter_mut().zip(files) {
            if n[id.as_str()] > 1 {
                *id = rename(path);
            }
        }
    }
    // Still alike (`train/images/001.jpg`, `test/images/001.jpg`): the path
    // below the inputs' common folder, as a dataset reader names them
    // (`train/images/001`), where that tells them apart.
    let relative = relative_ids(files);
    let rel_count = count(&relative);
    let n = count(&ids);
    for (id, rel) in ids.iter_mut().zip(&relative) {
        if n[id.as_str()] > 1 && rel_count[rel.as_str()] == 1 {
            *id = rel.clone();
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let n = count(&ids);
    for id in ids.iter_mut() {
        if n[id.as_str()] > 1 {
            let k = seen.entry(id.clone()).or_default();
            *k += 1;
            *id = format!("{id}_{k}");
        }
    }
    // Per-image files take the file-safe form (`a/x` -> `a_x`): ids that
    // would share a file get a counter too, or one image's overlay would
    // replace another's.
    let safe: Vec<String> = ids.iter().map(|id| mitoscope_formats::file_safe_name(id)).collect();
    let n = count(&safe);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (id, safe) in ids.iter_mut().zip(&safe) {
        if n[safe.as_str()] > 1 && id != safe {
            let k = seen.entry(safe.clone()).or_default();
            *k += 1;
            *id = format!("{id}_{k}");
        }
    }
    for (id, path) in ids.iter().zip(files) {
        if *id != image_id(path) {
            tracing::warn!("{}: another input has the same file stem; its image id is '{id}'", path.display());
        }
    }
    ids
}

/// Each file's path below the deepest folder all of them share, `/`-separated,
/// without its extension.
fn relative_ids(files: &[PathBuf]) -> Vec<String> {
    let parents: Vec<Vec<std::path::Component<'_>>> =
        files.iter().map(|f| f.parent().map(|p| p.components().collect()).unwrap_or_default()).collect();
    let common = parents.iter().skip(1).fold(parents.first().map_or(0, Vec::len), |n, p| {
        n.min(p.iter().zip(&parents[0]).take_while(|(a, b)| a == b).count())
    });
    files
        .iter()
        .zip(&parents)
        .map(|(f, p)| {
            let mut parts: Vec<String> =
                p[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            parts.push(image_id(f));
            parts.join("/")
        })
        .collect()
}

/// Runs `detector` on every input and writes the outputs into `out_dir`; see the module docs.
///
/// Errors only for problems that concern the whole run (bad settings, an
/// unwritable output folder); per-image problems go to `failures`.
pub fn run_batch(
    detector: &Detector,
    inputs: &[PathBuf],
    out_dir: &Path,
    config: &BatchConfig,
) -> Result<BatchSummary, DetectError> {
    let default_mpp = detector.bundle().card.default_input_mpp;
    let input_mpp = config.input_mpp.unwrap_or(default_mpp);
    // A wrong --mpp fails the run here, before any image; a TIFF's own stated
    // resolution is checked per image.
    crate::detector::checked_input_mpp(input_mpp)?;
    let threshold = detector.threshold(&config.options);
    if !(threshold.is_finite() && (0.0..=1.0).contains(&threshold)) {
        return Err(DetectError::Config(format!("threshold {threshold} is not in [0, 1]")));
    }
    // Folders this run makes, taken away again if it writes nothing.
    let made = mitoscope_formats::atomic::missing_dirs(out_dir);
    std::fs::create_dir_all(out_dir).map_err(|e| DetectError::io(out_dir, e))?;
    let (files, mut failures) = expand_inputs(inputs);

    let bar = if config.show_progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("detect [{bar:30}] {pos}/{len} images ({elapsed}, eta {eta}) {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let overlay_dir = out_dir.join("overlays");
    // Every candidate is classified only when candidates.csv is asked for; otherwise
    // those that cannot reach the threshold are skipped (same detections, less work).
    let options = DetectOptions { keep_all_candidates: config.write_candidates, ..config.options.clone() };
    let errors = Mutex::new(Vec::new());
    let ids = unique_image_ids(&files);
    let owned = previous_run_files(out_dir);
    refuse_foreign_files(out_dir, &planned_files(config, ids.iter().map(String::as_str)), &owned)?;
    let results: Vec<Option<ImageResult>> = files
        .par_iter()
        .zip(ids.par_iter())
        .map(|(path, id)| {
            let mpp = image_mpp(path, config.input_mpp, default_mpp);
            let result = process_one(detector, Job { path, id, mpp }, threshold, &options, config, &overlay_dir);
            bar.inc(1);
            match result {
                Ok(r) => {
                    bar.set_message(format!("{}: {}", r.image, r.detections.len()));
                    Some(r)
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "image failed");
                    if let Ok(mut errs) = errors.lock() {
                        errs.push((path.clone(), e.to_string()));
                    }
                    None
                }
            }
        })
        .collect();
    bar.finish_and_clear();
    let mut errs = errors.into_inner().unwrap_or_default();
    // Keep failures in input order for stable reports.
    errs.sort_by_key(|(p, _)| files.iter().position(|f| f == p));
    failures.extend(errs);
    let images: Vec<ImageResult> = results.into_iter().flatten().collect();
    if images.is_empty() {
        // Every input failed: an earlier run's outputs stay whole, and a
        // folder made for this run goes again (deepest first; only if empty).
        for dir in &made {
            let _ = std::fs::remove_dir(dir);
        }
        return Ok(BatchSummary { per_image: Vec::new(), failures, total: 0, threshold, written: Vec::new(), images });
    }
    let this_run = planned_files(config, images.iter().map(|r| r.image.as_str()));
    remove_stale_outputs(out_dir, &owned, &this_run)?;

    let mut written = Vec::new();
    let csv = out_dir.join("detections.csv");
    write_points_csv(&csv, &images, false)?;
    written.push(csv);
    if config.write_candidates {
        let path = out_dir.join("candidates.csv");
        write_points_csv(&path, &images, true)?;
        written.push(path);
    }
    let mut set = annotation_set(&images, input_mpp);
    for (img, r) in set.images.iter_mut().zip(&images) {
        img.mpp = Mpp::new(image_mpp(&r.path, config.input_mpp, default_mpp)).ok();
    }
    if config.outputs.geojson {
        let path = out_dir.join("detections.geojson");
        mitoscope_formats::write(&set, &path, Format::GeoJson, &WriteOptions { mpp: None, polygons: true })?;
        written.push(path);
    }
    if config.outputs.midog {
        let path = out_dir.join("midog");
        let mpp = Mpp::new(input_mpp).ok();
        mitoscope_formats::write(&set, &path, Format::MidogPoints, &WriteOptions { mpp, polygons: false })?;
        written.push(path);
    }
    if config.outputs.asap {
        let path = out_dir.join("asap");
        mitoscope_formats::write(&set, &path, Format::Asap, &WriteOptions { mpp: None, polygons: true })?;
        written.push(path);
    }
    if config.outputs.overlay && !images.is_empty() {
        written.push(overlay_dir.clone());
    }
    if config.outputs.masks && !images.is_empty() {
        written.push(overlay_dir.with_file_name("masks"));
    }
    let per_image: Vec<(String, usize)> = images.iter().map(|r| (r.image.clone(), r.detections.len())).collect();
    let total = per_image.iter().map(|(_, n)| n).sum();
    let card = &detector.bundle().card;
    let record = RunRecord {
        tool: format!("mitoscope {}", env!("CARGO_PKG_VERSION")),
        command: config.command.clone(),
        model: card.version.clone(),
        operating_threshold: threshold,
        candidate_threshold: card.candidate_threshold,
        model_mpp: card.model_mpp,
        input_mpp: config.input_mpp,
        images: images.len(),
        failures: failures.len(),
        detections: total,
        files: this_run,
    };
    let path = out_dir.join(RUN_RECORD_FILE);
    let json = serde_json::to_vec_pretty(&record).map_err(|e| DetectError::Config(e.to_string()))?;
    mitoscope_formats::atomic::write_atomic(&path, &json)?;
    written.push(path);
    Ok(BatchSummary { per_image, failures, total, threshold, written, images })
}

/// The optional and per-image files a run with `config` writes for `ids`,
/// relative to its folder (`detections.csv` and `run.json` are always
/// written and always ours once a `run.json` is there).
fn planned_files<'a>(config: &BatchConfig, ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    if config.write_candidates {
        out.push("candidates.csv".to_owned());
    }
    if config.outputs.geojson {
        out.push("detections.geojson".to_owned());
    }
    let per_image = [
        ("midog", "json", config.outputs.midog),
        ("asap", "xml", config.outputs.asap),
        ("overlays", "png", config.outputs.overlay),
        ("masks", "png", config.outputs.masks),
    ];
    for id in ids {
        let safe = mitoscope_formats::file_safe_name(id);
        for (folder, ext, wanted) in per_image {
            if wanted {
                out.push(format!("{folder}/{safe}.{ext}"));
            }
        }
    }
    out
}

/// The files the earlier run in `out_dir` wrote, as its `run.json` lists
/// them; `None` without a readable `run.json` (then the folder is not ours).
fn previous_run_files(out_dir: &Path) -> Option<std::collections::HashSet<String>> {
    let text = std::fs::read(out_dir.join(RUN_RECORD_FILE)).ok()?;
    let record: RunRecord = serde_json::from_slice(&text).ok()?;
    // Only names of the shapes a run writes: an edited or foreign run.json
    // must not make a stale-file sweep reach past the folder (`../x`, `/x`).
    let (kept, refused): (Vec<String>, Vec<String>) = record.files.into_iter().partition(|f| is_run_output_name(f));
    if let Some(first) = refused.first() {
        tracing::warn!(
            "{}: lists {} file{} no run writes (e.g. '{first}'); {} left alone",
            out_dir.join(RUN_RECORD_FILE).display(),
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            if refused.len() == 1 { "it is" } else { "they are" }
        );
    }
    Some(kept.into_iter().collect())
}

/// Whether `rel` names a file a run writes in its folder: one of the fixed
/// names, or `<midog|asap|overlays|masks>/<one file name>` of its extension.
fn is_run_output_name(rel: &str) -> bool {
    const FIXED: [&str; 4] = ["detections.csv", "candidates.csv", "detections.geojson", RUN_RECORD_FILE];
    const PER_IMAGE: [(&str, &str); 4] = [("midog", "json"), ("asap", "xml"), ("overlays", "png"), ("masks", "png")];
    if FIXED.contains(&rel) {
        return true;
    }
    let Some((folder, name)) = rel.split_once('/') else { return false };
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name.chars().any(|c| c != '.')
        && Path::new(name).components().count() == 1;
    plain && PER_IMAGE.iter().any(|(f, ext)| *f == folder && name.ends_with(&format!(".{ext}")))
}

/// Refuses, before any image is read, to write over a file that exists and
/// that no earlier run here wrote: `detect --out` pointed at a dataset folder
/// would otherwise replace its `masks/` with detections.
fn refuse_foreign_files(
    out_dir: &Path,
    planned: &[String],
    owned: &Option<std::collections::HashSet<String>>,
) -> Result<(), DetectError> {
    let mut fixed = vec!["detections.csv".to_owned(), RUN_RECORD_FILE.to_owned()];
    if owned.is_some() {
        fixed.clear(); // a run.json we can read: the fixed names are ours
    }
    let foreign: Vec<&String> = fixed
        .iter()
        .chain(planned)
        .filter(|rel| out_dir.join(rel.as_str()).exists())
        .filter(|rel| !owned.as_ref().is_some_and(|o| o.contains(rel.as_str()) || is_fixed_output(rel)))
        .collect();
    match foreign.as_slice() {
        [] => Ok(()),
        some => Err(DetectError::Config(format!(
            "{} exists and no earlier `mitoscope detect` run in {} wrote it{}: nothing is overwritten; \
             give another --out (or move the file)",
            out_dir.join(some[0].as_str()).display(),
            out_dir.display(),
            if some.len() > 1 { format!(" (and {} more)", some.len() - 1) } else { String::new() }
        ))),
    }
}

/// The names every run writes or may write at the top of its folder.
fn is_fixed_output(rel: &str) -> bool {
    matches!(rel, "detections.csv" | "candidates.csv" | "detections.geojson" | RUN_RECORD_FILE)
}

/// Removes what the earlier run in `out_dir` wrote (as its `run.json`
/// lists it, `owned`) and this run does not write again (`this_run`); folders
/// left empty go too. Nothing else is touched.
fn remove_stale_outputs(
    out_dir: &Path,
    owned: &Option<std::collections::HashSet<String>>,
    this_run: &[String],
) -> Result<(), DetectError> {
    let Some(owned) = owned else { return Ok(()) };
    let keep: std::collections::HashSet<&str> = this_run.iter().map(String::as_str).collect();
    let mut stale: Vec<&String> = owned.iter().filter(|rel| !keep.contains(rel.as_str())).collect();
    stale.sort();
    for rel in stale {
        let path = out_dir.join(rel.as_str());
        if path.is_file() {
            std::fs::remove_file(&path).map_err(|e| DetectError::io(&path, e))?;
        }
        if let Some(parent) = path.parent()
            && parent != out_dir
        {
            // Gone only if nothing else is in it.
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(())
}

/// One input of a batch: the file, its unique id and resolution.
struct Job<'a> {
    path: &'a Path,
    id: &'a str,
    mpp: f64,
}

fn process_one(
    detector: &Detector,
    job: Job<'_>,
    threshold: f64,
    options: &DetectOptions,
    config: &BatchConfig,
    overlay_dir: &Path,
) -> Result<ImageResult, DetectError> {
    let Job { path, id, mpp: input_mpp } = job;
    let started = Instant::now();
    let mut image = mitoscope_imaging::read_image(path)?;
    warn_if_grayscale(path, &image);
    warn_if_smaller_than_a_crop(path, &image, input_mpp, detector);
    let all = detector
        .detect_image(&image, input_mpp, options)
        .map_err(|e| DetectError::Input { path: path.to_owned(), message: e.to_string() })?;
    let detections: Vec<Detection> = all.iter().filter(|d| d.score >= threshold).cloned().collect();
    let id = id.to_owned();
    if config.outputs.masks {
        let file = overlay_dir.with_file_name("masks").join(format!("{}.png", mitoscope_formats::file_safe_name(&id)));
        write_png(&file, &detection_mask(&detections, image.width(), image.height()))?;
    }
    if config.outputs.overlay {
        draw_overlay(&mut image, &detections);
        let file = overlay_dir.join(format!("{}.png", mitoscope_formats::file_safe_name(&id)));
        write_png(&file, &image)?;
    }
    Ok(ImageResult {
        image: id,
        path: path.to_owned(),
        size: image.dimensions(),
        detections,
        candidates: if config.write_candidates { all } else { Vec::new() },
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Warns when `image` (at `mpp`) is narrower than what stage 2 looks at
/// around a candidate: it is scored, edge-padded, but a figure in it is seen
/// with little or none of its surroundings.
pub(crate) fn warn_if_smaller_than_a_crop(path: &Path, image: &RgbImage, mpp: f64, detector: &Detector) {
    let classifier = &detector.bundle().classifier_config;
    let field_um = classifier.crop_size as f64 * classifier.mpp;
    let (w, h) = (f64::from(image.width()) * mpp, f64::from(image.height()) * mpp);
    if w < field_um || h < field_um {
        tracing::warn!(
            "{}: {}x{} px is {w:.1} x {h:.1} µm, smaller than the {field_um:.0} µm the classifier looks at around a \
             figure; it is scored on edge padding",
            path.display(),
            image.width(),
            image.height()
        );
    }
}

/// Says on stderr that an image without colour is scored anyway (it is not
/// refused: a user may want to see what the model makes of it).
pub(crate) fn warn_if_grayscale(path: &Path, image: &RgbImage) {
    if mitoscope_imaging::is_grayscale(image) {
        tracing::warn!(
            "{}: grayscale image (no colour); the model reads H&E stain colours, so its scores here are unreliable",
            path.display()
        );
    }
}

/// The detections' outlines filled into a `width` x `height` mask (255 =
/// mitosis); detections without an outline leave no mark.
pub fn detection_mask(detections: &[Detection], width: u32, height: u32) -> image::GrayImage {
    let objects: Vec<Annotation> = detections
        .iter()
        .filter_map(|d| Annotation::from_shape(outline_shape(&d.outline)?, ObjectClass::Mitosis))
        .collect();
    mitoscope_annotations::mask::rasterise(&objects, width, height).0
}

/// Encodes `image` (RGB, gray, ...) as PNG and writes it atomically.
pub fn write_png<P>(path: &Path, image: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> Result<(), DetectError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    mitoscope_formats::atomic::write_atomic_with(path, |w| {
        let mut buf = std::io::Cursor::new(Vec::new());
        image.write_to(&mut buf, image::ImageFormat::Png).map_err(std::io::Error::other)?;
        w.write_all(buf.get_ref())
    })?;
    Ok(())
}

/// One `candidates.csv` row (see [`CANDIDATES_HEADER`]) for the image id `id`
/// (already CSV-quoted), scores to `decimals` places. The recipe's
/// `out-of-fold.csv` uses it too, with more places near its strict thresholds.
pub(crate) fn candidate_row(id: &str, d: &Detection, decimals: usize) -> String {
    format!("{id},{:.2},{:.2},{:.decimals$},{:.decimals$}", d.x, d.y, d.score, d.candidate_score)
}

/// One `detections.csv` row for the image id `id` (already CSV-quoted).
/// Numbers are written as they are (shortest text that reads back to the
/// same value): rounded, a score just above the operating threshold could
/// read back below it, and a position on a hotspot field's edge (fields are
/// placed at detections) could move out of the field.
pub(crate) fn detection_row(id: &str, d: &Detection) -> String {
    format!("{id},{},{},{}", d.x, d.y, d.score)
}

fn write_points_csv(path: &Path, images: &[ImageResult], candidates: bool) -> Result<(), DetectError> {
    mitoscope_formats::atomic::write_atomic_with(path, |w| {
        writeln!(w, "{}", if candidates { CANDIDATES_HEADER } else { DETECTIONS_HEADER })?;
        for r in images {
            let rows = if candidates { &r.candidates } else { &r.detections };
            let id = csv_field(&r.image);
            for d in rows {
                if candidates {
                    writeln!(w, "{}", candidate_row(&id, d, 4))?;
                } else {
                    writeln!(w, "{}", detection_row(&id, d))?;
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Quotes a CSV field when it holds a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// A detection's outline as a shape: a polygon, a multipolygon for a figure in
/// several parts, none without an outline.
fn outline_shape(outline: &[Vec<(f64, f64)>]) -> Option<Shape> {
    Shape::from_parts(
        outline.iter().map(|ring| Polygon::new(ring.iter().map(|&(x, y)| Point::new(x, y)).collect())).collect(),
    )
}

/// Detections as an annotation set (class mitosis, score, outline shape).
pub fn annotation_set(images: &[ImageResult], input_mpp: f64) -> AnnotationSet {
    let images = images
        .iter()
        .map(|r| {
            let mut img = ImageAnnotations::new(r.image.clone());
            img.path = Some(r.path.clone());
            img.width = Some(r.size.0);
            img.height = Some(r.size.1);
            img.mpp = Mpp::new(input_mpp).ok();
            img.objects = r
                .detections
                .iter()
                .map(|d| {
                    let centre = Point::new(d.x, d.y);
                    let mut a = Annotation::point(centre, ObjectClass::Mitosis).with_score(d.score);
                    if let Some(shape) = outline_shape(&d.outline) {
                        a.bbox = shape.bbox();
                        a.shape = Some(shape);
                    }
                    a
                })
                .collect();
            img
        })
        .collect();
    AnnotationSet::from_images(images)
}

/// Circles each detection (radius 8 µm at 0.25 µm/px scales with the image:
/// 1.5% of the shorter side, at least 12 px) and writes its score beside it.
/// Colour goes from yellow (at threshold) to red (score 1).
pub fn draw_overlay(image: &mut RgbImage, detections: &[Detection]) {
    let (w, h) = image.dimensions();
    let radius = ((w.min(h) as f32) * 0.015).max(12.0) as i32;
    let scale = (radius / 8).clamp(1, 6) as u32;
    for d in detections {
        let g = (220.0 * (1.0 - d.score.clamp(0.0, 1.0))) as u8;
        let colour = Rgb([255, g, 0]);
        let c = (d.x.round() as i32, d.y.round() as i32);
        for r in radius..radius + scale as i32 + 1 {
            imageproc::drawing::draw_hollow_circle_mut(image, c, r, colour);
        }
        let text = format!("{:.2}", d.score);
        draw_text(image, c.0 + radius + 3, c.1 - (5 * scale as i32) / 2, &text, scale, colour);
    }
}

/// 3x5 bitmap glyphs for digits and '.', one `u16` per glyph, row-major bits.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        _ => return None,
    })
}

/// Draws digits with the 3x5 font (the workspace's imageproc has no `text`
/// feature), each font pixel a `scale x scale` square, clipped to the image.
fn draw_text(image: &mut RgbImage, x: i32, y: i32, text: &str, scale: u32, colour: Rgb<u8>) {
    let (w, h) = (image.width() as i32, image.height() as i32);
    let s = scale as i32;
    for (i, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        let gx = x + i as i32 * 4 * s;
        for (ry, bits) in rows.iter().enumerate() {
            for rx in 0..3 {
                if bits & (0b100 >> rx) == 0 {
                    continue;
                }
                for dy in 0..s {
                    for dx in 0..s {
                        let (px, py) = (gx + rx * s + dx, y + ry as i32 * s + dy);
                        if (0..w).contains(&px) && (0..h).contains(&py) {
                            image.put_pixel(px as u32, py as u32, colour);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_rows_read_back_to_the_same_numbers() {
        let d = Detection {
            x: 1_234.567_890_123,
            y: 0.004,
            score: 0.974_723_768_571_225_2,
            candidate_score: 0.5,
            outline: Vec::new(),
        };
        let row = detection_row("a", &d);
        let f: Vec<f64> = row.split(',').skip(1).map(|v| v.parse().unwrap()).collect();
        assert_eq!(f, [d.x, d.y, d.score], "{row}");
    }

    #[test]
    fn a_dataset_root_points_at_its_image_folders() {
        let dir = tempfile::tempdir().unwrap();
        for rel in ["GZMH/train/images/001.png", "GZMH/train/masks/001.png", "GZMH/test/images/002.png"] {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let (files, failures) = expand_inputs(&[dir.path().to_owned()]);
        assert!(files.is_empty());
        let why = &failures[0].1;
        assert!(why.contains("its subfolders GZMH/test/images, GZMH/train/images do"), "{why}");
        assert!(!why.contains("masks"), "mask folders are not offered: {why}");
    }

    #[test]
    fn shared_stems_get_distinct_ids() {
        let files: Vec<PathBuf> =
            ["a/x.png", "b/x.png", "a/x.jpg", "c/y.png", "z.tif"].iter().map(PathBuf::from).collect();
        let ids = unique_image_ids(&files);
        assert_eq!(ids, ["a_x", "b_x", "x_jpg", "y", "z"]);
        // TUPAC16's case folders of alike-named HPFs: `<case>_<hpf>`, its ground truth's ids.
        let tupac = unique_image_ids(&["data/01/01.tif", "data/02/01.tif"].map(PathBuf::from));
        assert_eq!(tupac, ["01_01", "02_01"]);
        // A dataset's split folders with `images/` inside: the path below the common folder.
        let gzmh = unique_image_ids(
            &["GZMH/train/images/001.jpg", "GZMH/test/test_3_score/images/001.jpg", "GZMH/train/images/002.jpg"]
                .map(PathBuf::from),
        );
        assert_eq!(gzmh, ["train/images/001", "test/test_3_score/images/001", "002"]);
        // An id whose file-safe form is another input's id (`a/x` beside a file `a_x`) gets a counter.
        let clash = unique_image_ids(&["a/x.png", "b/x.png", "a_x.png"].map(PathBuf::from));
        assert_eq!(clash, ["a/x_1", "b_x", "a_x"]);
        let safe: std::collections::HashSet<String> =
            clash.iter().map(|id| mitoscope_formats::file_safe_name(id)).collect();
        assert_eq!(safe.len(), 3, "three files");
        // Identical names in identical folders (the same file twice) fall back to a counter.
        let twice: Vec<PathBuf> = ["d/q.png", "d/q.png"].iter().map(PathBuf::from).collect();
        assert_eq!(unique_image_ids(&twice), ["d_q_1", "d_q_2"]);
        // Ids that differ by the extension's case survive a points CSV (whose reader strips extensions).
        let cased = unique_image_ids(&["x.png", "x.PNG"].map(PathBuf::from));
        assert_eq!(cased, ["x_png", "x_PNG"]);
        let mut set = AnnotationSet::default();
        for id in &cased {
            set.image_mut_or_insert(id).objects.push(Annotation::point(Point::new(1.0, 2.0), ObjectClass::Mitosis));
        }
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        mitoscope_formats::write(&set, &csv, Format::Csv, &WriteOptions::default()).unwrap();
        let back = mitoscope_formats::read(&csv, None, &Default::default()).unwrap();
        assert_eq!(back.images.iter().map(|i| i.image.as_str()).collect::<Vec<_>>(), ["x_png", "x_PNG"]);
    }

    #[test]
    fn detection_mask_fills_outlines_only() {
        let square = vec![(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)];
        let shifted = |dx: f64| square.iter().map(|&(x, y)| (x + dx, y)).collect::<Vec<_>>();
        let with = Detection { x: 15.0, y: 15.0, score: 0.9, candidate_score: 0.9, outline: vec![square.clone()] };
        let without = Detection { x: 40.0, y: 40.0, score: 0.9, candidate_score: 0.9, outline: Vec::new() };
        let mask = detection_mask(&[with, without], 50, 50);
        assert_eq!(mask.get_pixel(15, 15).0, [255]);
        assert_eq!(mask.get_pixel(40, 40).0, [0]);
        let on = mask.pixels().filter(|p| p.0[0] == 255).count();
        assert!((100..=121).contains(&on), "{on} pixels for a 10x10 square");
        // A figure in two parts fills both and leaves the gap between them.
        let anaphase = Detection {
            x: 27.5,
            y: 15.0,
            score: 0.9,
            candidate_score: 0.9,
            outline: vec![shifted(0.0), shifted(25.0)],
        };
        let mask = detection_mask(&[anaphase], 50, 50);
        assert_eq!((mask.get_pixel(15, 15).0, mask.get_pixel(40, 15).0, mask.get_pixel(27, 15).0), ([255], [255], [0]));
    }

    #[test]
    fn format_lists() {
        assert_eq!(Outputs::parse_list("csv").unwrap(), Outputs::default());
        assert_eq!(Outputs::parse_list("csv,geojson,midog,asap,overlay,masks").unwrap(), Outputs::all());
        assert!(!Outputs::parse_list("csv,geojson,midog,overlay").unwrap().masks);
        assert!(Outputs::parse_list("GeoJSON").unwrap().geojson);
        assert!(Outputs::parse_list("csv,asap").unwrap().asap && !Outputs::parse_list("csv").unwrap().asap);
        assert!(Outputs::parse_list("csv,pdf").unwrap_err().to_string().contains("pdf"));
    }

    #[test]
    fn overlay_draws_circle_and_digits() {
        let mut img = RgbImage::from_pixel(100, 100, Rgb([255, 255, 255]));
        let d = Detection { x: 40.0, y: 50.0, score: 0.87, candidate_score: 0.9, outline: Vec::new() };
        draw_overlay(&mut img, &[d]);
        assert_ne!(*img.get_pixel(52, 50), Rgb([255, 255, 255]), "circle at radius 12");
        let coloured = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(coloured > 80, "{coloured}");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
