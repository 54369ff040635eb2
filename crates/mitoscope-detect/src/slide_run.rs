//! Whole slides: tissue mask, tiled detection over tissue in bounded memory,
//! the hotspot and the mitotic score, and the per-slide output folder.
//!
//! 1. **Tissue**: a low-resolution image (at most [`SlideRunConfig::mask_max_side`]
//!    px a side) is built block by block from the coarsest level that is
//!    fine enough, and [`tissue_mask`] is run on it.
//! 2. **Level**: detection reads the coarsest level whose mpp is at most the
//!    model's (×1.1): the detector then downsamples, never upsamples.
//! 3. **Tiles**: [`tile_grid`] squares of [`SlideRunConfig::tile_model_px`]
//!    model pixels with overlap over that level; only tiles whose owned core
//!    touches tissue are read, and stage 2 scores only the candidates in the
//!    core a tile owns. Tiles are decoded and detected in parallel on
//!    rayon's pool, so at most one tile per worker is in memory, plus the
//!    slide's tile cache; level 0 is never held.
//! 4. **Merge**: a tile keeps the detections in the core it owns (as
//!    [`Detector::detect_image`] does inside an image); near-duplicates across
//!    borders are then removed by centre distance (strongest first), and
//!    detections off tissue dropped.
//! 5. **Summary**: [`summarize`] gives count, density, the N-HPF hotspot with
//!    its score and the top-N fields.
//!
//! Output, in `OUT/<slide stem>/` (see [`write_slide_outputs`]):
//! `detections.csv` (`image,x,y,score`, level-0 px), `detections.geojson`
//! (QuPath), `detections.xml` (ASAP), `midog.json` (mm), `summary.json`,
//! `thumbnail.png`. The folder
//! is built under a temporary name and renamed into place, so a re-run
//! replaces the previous output whole and a failed run leaves it untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use image::{GrayImage, Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use mitoscope_formats::{Format, WriteOptions};
use mitoscope_geom::{Mpp, Point};
use mitoscope_slide::hotspot::{HotspotParams, SlideSummary, Window, summarize};
use mitoscope_slide::tissue::{TissueMask, TissueParams, tissue_mask};
use mitoscope_slide::{MppSource, OpenOptions, Slide, SlideError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::batch::{ImageResult, annotation_set, image_id, write_png};
use crate::tiling::tile_grid;
use crate::{DetectError, DetectOptions, Detection, Detector};

/// What the slide and HPF-set pipelines need from a detector. Implemented by
/// [`Detector`]; tests drive the pipelines with detectors whose answers are
/// known.
pub trait TileDetector: Sync {
    /// Detections in `image` (at `input_mpp` µm/px) at or above the
    /// threshold `options` resolve to, in image pixels. Only candidates at
    /// which `keep(x, y)` holds need to be scored (a slide tile keeps the
    /// core it owns: the rest is another tile's work).
    fn detect(
        &self,
        image: &RgbImage,
        input_mpp: f64,
        options: &DetectOptions,
        keep: &(dyn Fn(f64, f64) -> bool + Sync),
    ) -> Result<Vec<Detection>, DetectError>;
    /// Model resolution, name, threshold and merge distance.
    fn info(&self, options: &DetectOptions) -> DetectorInfo;
}

/// A detector's resolution and settings, as recorded in summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorInfo {
    /// Model name / version (the model card's `version`).
    pub name: String,
    /// Microns per pixel the model works at (stage 1).
    pub model_mpp: f64,
    /// The finest µm/px any of the model's networks reads (stage 2's crops,
    /// the mask head's); the slide level read is chosen for it, so that no
    /// network sees upsampled pixels. 0 in summaries written before it.
    #[serde(default)]
    pub finest_mpp: f64,
    /// Operating threshold in use.
    pub threshold: f64,
    /// Detections closer than this (µm) are one figure.
    pub min_distance_um: f64,
    /// µm/px assumed for images of unknown resolution.
    pub default_input_mpp: f64,
}

impl TileDetector for Detector {
    /// [`Detector::detect_image_where`]: stage 2 runs only on the kept candidates.
    fn detect(
        &self,
        image: &RgbImage,
        input_mpp: f64,
        options: &DetectOptions,
        keep: &(dyn Fn(f64, f64) -> bool + Sync),
    ) -> Result<Vec<Detection>, DetectError> {
        self.detect_image_where(image, input_mpp, options, keep)
    }

    fn info(&self, options: &DetectOptions) -> DetectorInfo {
        let card = &self.bundle().card;
        DetectorInfo {
            name: card.version.clone(),
            model_mpp: card.model_mpp,
            finest_mpp: self.finest_mpp(),
            threshold: self.threshold(options),
            min_distance_um: card.min_distance_um,
            default_input_mpp: card.default_input_mpp,
        }
    }
}

/// Level-0 resolutions (µm/px) accepted for detection (those of a single image).
pub use crate::detector::DETECTABLE_MPP;

/// Settings of [`run_slide`].
#[derive(Debug, Clone)]
pub struct SlideRunConfig {
    /// Level-0 µm/px to use whatever the slide says (`--mpp`).
    pub mpp_override: Option<f64>,
    /// Field size, N and search settings of the hotspot.
    pub hotspot: HotspotParams,
    /// Threshold and polygons (tile sizes are set from `tile_model_px`).
    pub options: DetectOptions,
    /// Side of a detection tile in model pixels (512 = 256 µm at 0.5 µm/px:
    /// the tile [`Detector::detect_image`] uses, so a slide and the same
    /// pixels given to `mitoscope detect` see the model alike).
    pub tile_model_px: u32,
    /// Overlap between neighbouring tiles in model pixels.
    pub overlap_model_px: u32,
    /// Tissue detection settings.
    pub tissue: TissueParams,
    /// Longest side of the low-resolution image the tissue mask is made on.
    pub mask_max_side: u32,
    /// Preferred µm per mask pixel (coarser when `mask_max_side` needs it).
    pub mask_um_per_px: f64,
    /// Byte budget of the slide's decoded-tile cache.
    pub tile_cache_bytes: usize,
    /// Show an `indicatif` bar over tiles on stderr.
    pub show_progress: bool,
}

impl Default for SlideRunConfig {
    fn default() -> Self {
        Self {
            mpp_override: None,
            hotspot: HotspotParams::default(),
            options: DetectOptions::default(),
            tile_model_px: 512,
            overlap_model_px: 64,
            tissue: TissueParams::default(),
            mask_max_side: 2048,
            mask_um_per_px: 2.0,
            tile_cache_bytes: 32 << 20,
            show_progress: false,
        }
    }
}

/// A slide that could not be processed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SlideRunError {
    /// Opening or reading the slide failed (the message names file, level, tile).
    #[error(transparent)]
    Slide(Box<SlideError>),
    /// The detector failed on a tile.
    #[error("{path}: detection failed on level {level} tile at ({x}, {y}): {source}")]
    Detect {
        /// The slide.
        path: PathBuf,
        /// Level read.
        level: usize,
        /// Tile left, level pixels.
        x: u32,
        /// Tile top, level pixels.
        y: u32,
        /// Cause.
        #[source]
        source: Box<DetectError>,
    },
    /// The resolution is missing or absurd.
    #[error("{path}: {why}")]
    Mpp {
        /// The slide.
        path: PathBuf,
        /// What is wrong, with the value.
        why: String,
    },
    /// The tissue mask is empty.
    #[error("{path}: no tissue found (the low-resolution image is all background); nothing to analyse")]
    NoTissue {
        /// The slide.
        path: PathBuf,
    },
    /// Hotspot or score failed (e.g. a field size outside the score table).
    #[error("{path}: {source}")]
    Hotspot {
        /// The slide.
        path: PathBuf,
        /// Cause.
        #[source]
        source: mitoscope_slide::HotspotError,
    },
    /// An output file could not be written (names the file).
    #[error(transparent)]
    Format(Box<mitoscope_formats::FormatError>),
    /// Writing the output folder failed.
    #[error("{path}: {message}")]
    Output {
        /// The file or folder being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

// Boxed: the causes are large and these errors travel through every tile.
impl From<SlideError> for SlideRunError {
    fn from(e: SlideError) -> Self {
        Self::Slide(Box::new(e))
    }
}

impl From<mitoscope_formats::FormatError> for SlideRunError {
    fn from(e: mitoscope_formats::FormatError) -> Self {
        Self::Format(Box::new(e))
    }
}

impl SlideRunError {
    pub(crate) fn output(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::Output { path: path.to_owned(), message: e.to_string() }
    }
}

/// Tile counts of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TileStats {
    /// Tiles covering the read level.
    pub grid: usize,
    /// Tiles whose owned core touches tissue: the ones read and detected.
    pub processed: usize,
    /// Tile side in read-level pixels.
    pub side_px: u32,
    /// Overlap in read-level pixels.
    pub overlap_px: u32,
    /// Seconds spent reading and detecting the tiles (the tissue mask, merge
    /// and outputs excluded).
    pub detect_seconds: f64,
}

/// Everything [`detect_slide`] found, before any file is written.
#[derive(Debug, Clone)]
pub struct SlideDetections {
    /// Detections on tissue, level-0 pixels, strongest first.
    pub detections: Vec<Detection>,
    /// The tissue mask.
    pub tissue: TissueMask,
    /// The low-resolution image the mask was made on (for the thumbnail).
    pub low_res: RgbImage,
    /// Level read for detection.
    pub read_level: usize,
    /// Its µm/px.
    pub read_level_mpp: f64,
    /// Tiles.
    pub tiles: TileStats,
    /// Non-fatal problems (undecodable mask blocks, guessed mpp, ...).
    pub warnings: Vec<String>,
}

/// Level-0 µm/px a run will use, checked for plausibility.
fn checked_mpp(slide: &dyn Slide, detector: &DetectorInfo) -> Result<(f64, Vec<String>), SlideRunError> {
    let info = slide.mpp();
    let mpp = info.mpp.get();
    let path = slide.path().to_owned();
    if !DETECTABLE_MPP.contains(&mpp) {
        return Err(SlideRunError::Mpp {
            path,
            why: format!(
                "resolution {mpp} µm/px ({:?}) is outside {}..={} µm/px, where mitoses can be detected; give the right one with --mpp",
                info.source,
                DETECTABLE_MPP.start(),
                DETECTABLE_MPP.end()
            ),
        });
    }
    let mut warnings = Vec::new();
    // The reader already logged the guess; the summary records it too.
    if info.mpp_guessed {
        warnings.push(format!(
            "the slide states no resolution; {mpp} µm/px was guessed ({:?}); pass --mpp if it is wrong",
            info.source
        ));
    }
    if mpp > 1.5 * detector.model_mpp {
        let w = format!(
            "level 0 ({mpp} µm/px) is coarser than the model's {} µm/px: images are upsampled and figures may be missed",
            detector.model_mpp
        );
        tracing::warn!("{}: {w}", slide.path().display());
        warnings.push(w);
    }
    Ok((mpp, warnings))
}

/// The coarsest level whose mpp is at most `model_mpp` (with 10% slack), else level 0.
/// (`model_mpp <= 0`, as in old summaries' `finest_mpp`, gives level 0.)
pub fn read_level_for(slide: &dyn Slide, model_mpp: f64) -> usize {
    let mpp0 = slide.mpp().mpp.get();
    let mut best = 0;
    for (i, l) in slide.levels().iter().enumerate() {
        if mpp0 * l.downsample <= model_mpp * 1.1 && l.downsample > slide.levels()[best].downsample {
            best = i;
        }
    }
    best
}

/// A low-resolution image of the whole slide, `ds` level-0 px per pixel,
/// assembled block by block (each block at most ~4096² source pixels) from
/// the best level. Undecodable blocks stay white and are reported; when no
/// block can be read, the first error is returned.
fn low_res_image(slide: &dyn Slide, ds: f64, warnings: &mut Vec<String>) -> Result<RgbImage, SlideError> {
    let (w0, h0) = slide.dimensions(0).unwrap_or((1, 1));
    let (ow, oh) = (((w0 as f64) / ds).ceil().max(1.0) as u32, ((h0 as f64) / ds).ceil().max(1.0) as u32);
    let level = slide.best_level_for_downsample(ds);
    let lds = slide.downsample(level).unwrap_or(1.0);
    let r = ds / lds; // level pixels per output pixel (>= 1)
    let block = ((4096.0 / r).floor() as u32).clamp(1, 512);
    let mut out = RgbImage::from_pixel(ow, oh, Rgb([255, 255, 255]));
    let (mut failed, mut total) = (0usize, 0usize);
    let mut first_err = None;
    for by in (0..oh).step_by(block as usize) {
        for bx in (0..ow).step_by(block as usize) {
            total += 1;
            let (bw, bh) = (block.min(ow - bx), block.min(oh - by));
            let (sx, sy) = ((bx as f64 * r).floor() as i64, (by as f64 * r).floor() as i64);
            let sw = ((bw as f64 * r).ceil() as u32).max(1);
            let sh = ((bh as f64 * r).ceil() as u32).max(1);
            match slide.read_region(level, sx, sy, sw, sh) {
                Ok(region) => {
                    let small = if (sw, sh) == (bw, bh) {
                        region
                    } else {
                        image::imageops::resize(&region, bw, bh, image::imageops::FilterType::Triangle)
                    };
                    image::imageops::replace(&mut out, &small, bx as i64, by as i64);
                }
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if failed == total
        && let Some(e) = first_err
    {
        return Err(e);
    }
    if let Some(e) = first_err {
        let w =
            format!("{failed} of {total} low-resolution blocks could not be decoded (left as background), first: {e}");
        tracing::warn!("{w}");
        warnings.push(w);
    }
    Ok(out)
}

/// Greedy non-maximum suppression by centre distance on a grid of buckets
/// (the same rule as [`crate::tiling::merge_by_distance`], without its
/// quadratic cost on slides with many detections).
fn merge_nearby(mut items: Vec<Detection>, min_distance: f64) -> Vec<Detection> {
    items.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.candidate_score.total_cmp(&a.candidate_score)));
    if min_distance <= 0.0 {
        return items;
    }
    let cell = min_distance;
    let key = |x: f64, y: f64| ((x / cell).floor() as i64, (y / cell).floor() as i64);
    let mut grid: HashMap<(i64, i64), Vec<(f64, f64)>> = HashMap::new();
    let mut kept = Vec::with_capacity(items.len());
    let d2 = min_distance * min_distance;
    for d in items {
        let (cx, cy) = key(d.x, d.y);
        let near = (-1..=1).any(|dy| {
            (-1..=1).any(|dx| {
                grid.get(&(cx + dx, cy + dy))
                    .is_some_and(|v| v.iter().any(|&(x, y)| (x - d.x).powi(2) + (y - d.y).powi(2) < d2))
            })
        });
        if !near {
            grid.entry((cx, cy)).or_default().push((d.x, d.y));
            kept.push(d);
        }
    }
    kept
}

/// Tissue mask, tiled detection over tissue and the merge; see the module docs.
pub fn detect_slide(
    slide: &dyn Slide,
    detector: &dyn TileDetector,
    config: &SlideRunConfig,
) -> Result<SlideDetections, SlideRunError> {
    let path = slide.path().to_owned();
    let info = detector.info(&config.options);
    let (mpp0, mut warnings) = checked_mpp(slide, &info)?;
    let mpp = Mpp::new(mpp0).map_err(|e| SlideRunError::Mpp { path: path.clone(), why: e.to_string() })?;
    let (w0, h0) = slide.dimensions(0).ok_or_else(|| SlideError::NoLevels { path: path.clone() })?;

    // 1. Tissue.
    let longest = w0.max(h0) as f64;
    let mask_ds = (config.mask_um_per_px / mpp0).max(longest / config.mask_max_side.max(16) as f64).max(1.0);
    let low_res = low_res_image(slide, mask_ds, &mut warnings)?;
    let tissue = tissue_mask(&low_res, mask_ds, mpp, &config.tissue);
    if tissue.tissue_pixels() == 0 {
        return Err(SlideRunError::NoTissue { path });
    }

    // 2. Level and tiles.
    // Stage 2 and the mask head read finer pixels than stage 1 (0.3 and
    // 0.25 µm/px against 0.5 in the default model): a level of ~0.5 µm/px
    // (a 2x pyramid of a 40x scan) would hand them upsampled crops.
    let level = read_level_for(slide, info.finest_mpp.min(info.model_mpp));
    let ds = slide.downsample(level).unwrap_or(1.0);
    let level_mpp = mpp0 * ds;
    let (lw, lh) = slide.dimensions(level).unwrap_or((w0, h0));
    let scale = info.model_mpp / level_mpp; // level px per model px
    let side = ((config.tile_model_px.max(64) as f64 * scale).round() as u32).max(64);
    let overlap = ((config.overlap_model_px as f64 * scale).round() as u32).min(side / 2);
    let grid = tile_grid(lw.min(u32::MAX as u64) as u32, lh.min(u32::MAX as u64) as u32, side, overlap);
    let tiles: Vec<_> = grid
        .iter()
        .filter(|t| {
            let (x0, x1) = (t.core_x.0 as f64 * ds, t.core_x.1 as f64 * ds);
            let (y0, y1) = (t.core_y.0 as f64 * ds, t.core_y.1 as f64 * ds);
            tissue.rect_fraction(x0, y0, x1 - x0, y1 - y0) > 0.0
        })
        .copied()
        .collect();
    tracing::info!(
        "{}: level {level} ({level_mpp:.3} µm/px), {} of {} tiles of {side} px on tissue",
        path.display(),
        tiles.len(),
        grid.len()
    );

    // 3. Detect, in parallel; each worker holds one tile image at a time.
    let bar = if config.show_progress { ProgressBar::new(tiles.len() as u64) } else { ProgressBar::hidden() };
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tiles ({per_sec}, eta {eta}) {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(image_id(&path));
    // The detector sees the whole tile in one pass: no second tiling inside.
    let options = DetectOptions { tile_px: side.max(config.options.tile_px), ..config.options.clone() };
    let found = AtomicUsize::new(0);
    let detect_started = Instant::now();
    let per_tile: Vec<Result<Vec<Detection>, SlideRunError>> = tiles
        .par_iter()
        .map(|t| {
            let image = slide.read_region(level, t.x as i64, t.y as i64, side, side)?;
            let owns = |x: f64, y: f64| {
                let (gx, gy) = (t.x as f64 + x, t.y as f64 + y);
                gx >= 0.0 && gy >= 0.0 && t.owns(gx.floor() as u32, gy.floor() as u32)
            };
            let dets = detector.detect(&image, level_mpp, &options, &owns).map_err(|e| SlideRunError::Detect {
                path: path.clone(),
                level,
                x: t.x,
                y: t.y,
                source: Box::new(e),
            })?;
            drop(image);
            let to_level0 = |v: f64| (v + 0.5) * ds - 0.5;
            let kept: Vec<Detection> = dets
                .into_iter()
                .filter(|d| owns(d.x, d.y))
                .map(|d| Detection {
                    x: to_level0(t.x as f64 + d.x),
                    y: to_level0(t.y as f64 + d.y),
                    outline: d
                        .outline
                        .into_iter()
                        .map(|ring| {
                            ring.into_iter()
                                .map(|(u, v)| (to_level0(t.x as f64 + u), to_level0(t.y as f64 + v)))
                                .collect()
                        })
                        .collect(),
                    ..d
                })
                .collect();
            let n = found.fetch_add(kept.len(), Ordering::Relaxed) + kept.len();
            bar.set_message(format!("{n} found"));
            bar.inc(1);
            Ok(kept)
        })
        .collect();
    bar.finish_and_clear();
    let detect_seconds = detect_started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in per_tile {
        all.extend(r?);
    }

    // 4. Merge across borders and keep what lies on tissue.
    let merged = merge_nearby(all, info.min_distance_um / mpp0);
    let detections: Vec<Detection> = merged.into_iter().filter(|d| tissue.contains(Point::new(d.x, d.y))).collect();
    Ok(SlideDetections {
        detections,
        tissue,
        low_res,
        read_level: level,
        read_level_mpp: level_mpp,
        tiles: TileStats {
            grid: grid.len(),
            processed: tiles.len(),
            side_px: side,
            overlap_px: overlap,
            detect_seconds,
        },
        warnings,
    })
}

/// The model as recorded in `summary.json`.
pub type ModelSummary = DetectorInfo;

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideReport {
    /// Mitoscope version that wrote it.
    pub mitoscope_version: String,
    /// The slide file.
    pub slide: PathBuf,
    /// Its id (file stem): the output folder's name and the `image` column.
    pub slide_id: String,
    /// Reader / vendor.
    pub vendor: String,
    /// Level-0 width and height in pixels.
    pub level0_size: [u64; 2],
    /// Number of pyramid levels.
    pub levels: usize,
    /// Level-0 µm/px used.
    pub mpp: f64,
    /// Where it came from.
    pub mpp_source: MppSource,
    /// True when the slide did not state it.
    pub mpp_guessed: bool,
    /// Level read for detection and its µm/px.
    pub read_level: usize,
    /// µm/px of the read level.
    pub read_level_mpp: f64,
    /// The detector.
    pub model: ModelSummary,
    /// Mitoses found on tissue.
    pub mitoses: usize,
    /// Tissue area analysed, mm².
    pub tissue_area_mm2: f64,
    /// `mitoses / tissue_area_mm2`.
    pub density_per_mm2: f64,
    /// The N-HPF hotspot (level-0 px), its count and the score.
    pub hotspot: Window,
    /// The Nottingham mitotic score of the hotspot, with the table row used.
    pub mitotic_score: mitoscope_eval::score::MitoticScore,
    /// Field preset and N used.
    pub hotspot_params: HotspotParams,
    /// Area of one field, mm².
    pub field_area_mm2: f64,
    /// The top-N single HPF-sized fields (GZMH V2 style) and their total.
    pub top_fields: Vec<Window>,
    /// Detections in the top-N fields together.
    pub top_fields_count: usize,
    /// Tiles.
    pub tiles: TileStats,
    /// Level-0 pixels per tissue-mask (and thumbnail) pixel.
    pub mask_downsample: f64,
    /// Wall-clock seconds (open to outputs written).
    pub seconds: f64,
    /// Processed tiles per second of the detection phase (`tiles.detect_seconds`).
    pub tiles_per_second: f64,
    /// Non-fatal problems.
    pub warnings: Vec<String>,
}

/// One slide end to end: open, [`detect_slide`], [`summarize`], and
/// [`write_slide_outputs`] into `out_root/<stem>/`.
pub fn run_slide(
    path: &Path,
    detector: &dyn TileDetector,
    out_root: &Path,
    config: &SlideRunConfig,
) -> Result<SlideReport, SlideRunError> {
    let started = Instant::now();
    // A field outside the score table fails now, not after the detection.
    mitoscope_eval::score::mitotic_score(0, 1.0, config.hotspot.field).map_err(|e| SlideRunError::Hotspot {
        path: path.to_owned(),
        source: mitoscope_slide::HotspotError::Score(e),
    })?;
    let mpp_override = config
        .mpp_override
        .map(|m| Mpp::new(m).map_err(|e| SlideRunError::Mpp { path: path.to_owned(), why: format!("--mpp: {e}") }))
        .transpose()?;
    // A folder the outputs would not be allowed to replace fails now, not after hours of detection.
    let final_dir = out_root.join(image_id(path));
    if final_dir.exists() && !is_replaceable(&final_dir) {
        return Err(SlideRunError::output(
            &final_dir,
            "exists and is not a Mitoscope slide output (no summary.json); not replacing it",
        ));
    }
    let slide =
        mitoscope_slide::open_with(path, &OpenOptions { mpp_override, tile_cache_bytes: config.tile_cache_bytes })?;
    let found = detect_slide(slide.as_ref(), detector, config)?;
    let mpp = slide.mpp();
    let (w0, h0) = slide.dimensions(0).unwrap_or((0, 0));
    let points: Vec<Point> = found.detections.iter().map(|d| Point::new(d.x, d.y)).collect();
    let summary: SlideSummary =
        summarize(&points, mpp.mpp, (w0 as f64, h0 as f64), &config.hotspot, Some(&found.tissue))
            .map_err(|source| SlideRunError::Hotspot { path: path.to_owned(), source })?;
    let mut warnings = found.warnings.clone();
    warnings.extend(hotspot_warnings(&summary, &config.hotspot));
    let mut report = SlideReport {
        mitoscope_version: env!("CARGO_PKG_VERSION").to_owned(),
        slide: path.to_owned(),
        slide_id: image_id(path),
        vendor: slide.vendor().to_owned(),
        level0_size: [w0, h0],
        levels: slide.level_count(),
        mpp: mpp.mpp.get(),
        mpp_source: mpp.source,
        mpp_guessed: mpp.mpp_guessed,
        read_level: found.read_level,
        read_level_mpp: found.read_level_mpp,
        model: detector.info(&config.options),
        mitoses: summary.count,
        tissue_area_mm2: summary.area_analysed_mm2,
        density_per_mm2: summary.density_per_mm2,
        hotspot: summary.hotspot,
        mitotic_score: summary.hotspot_score,
        hotspot_params: config.hotspot,
        field_area_mm2: summary.field_area_mm2,
        top_fields: summary.top_fields,
        top_fields_count: summary.top_fields_count,
        tiles: found.tiles,
        mask_downsample: found.tissue.downsample(),
        seconds: 0.0,
        tiles_per_second: 0.0,
        warnings,
    };
    drop(slide);
    let seconds = started.elapsed().as_secs_f64();
    report.seconds = seconds;
    let ds = found.tiles.detect_seconds;
    report.tiles_per_second = if ds > 0.0 { found.tiles.processed as f64 / ds } else { 0.0 };
    write_slide_outputs(out_root, &report, &found)?;
    Ok(report)
}

/// What a pathologist must know before trusting the score: a hotspot or a
/// set of top fields smaller than asked (a small slide, or little tissue), or
/// a hotspot with less tissue than asked (no window had enough). The score
/// is then extrapolated from less than the protocol's area.
fn hotspot_warnings(summary: &SlideSummary, params: &HotspotParams) -> Vec<String> {
    let mut warnings = Vec::new();
    let asked = params.field_area_mm2() * params.n_fields as f64;
    if summary.hotspot.area_mm2 < 0.95 * asked {
        warnings.push(format!(
            "the hotspot is {:.2} mm², less than the {asked:.2} mm² asked: the slide is smaller, so the score is \
             extrapolated from less area",
            summary.hotspot.area_mm2
        ));
    }
    if let Some(f) = summary.hotspot.tissue_fraction
        && f < params.min_tissue_fraction
    {
        warnings.push(format!(
            "the hotspot is {:.0}% tissue, under the {:.0}% asked: no window held enough tissue",
            100.0 * f,
            100.0 * params.min_tissue_fraction
        ));
    }
    if summary.top_fields.len() < params.n_fields {
        warnings.push(format!(
            "only {} of the {} top fields fit on the tissue: their count covers {} fields",
            summary.top_fields.len(),
            params.n_fields,
            summary.top_fields.len()
        ));
    }
    warnings
}

/// Files in a slide output folder.
pub const SLIDE_OUTPUT_FILES: [&str; 6] =
    ["detections.csv", "detections.geojson", "detections.xml", "midog.json", "summary.json", "thumbnail.png"];

/// Writes `out_root/<slide_id>/` (see the module docs): all files into a
/// fresh temporary folder beside it, then renamed into place. A previous
/// output folder of the same slide is replaced whole; a folder of that name
/// that is not a Mitoscope slide output (no `summary.json`, not empty) is
/// left alone and reported.
pub fn write_slide_outputs(
    out_root: &Path,
    report: &SlideReport,
    found: &SlideDetections,
) -> Result<PathBuf, SlideRunError> {
    std::fs::create_dir_all(out_root).map_err(|e| SlideRunError::output(out_root, e))?;
    let final_dir = out_root.join(&report.slide_id);
    if final_dir.exists() && !is_replaceable(&final_dir) {
        return Err(SlideRunError::output(
            &final_dir,
            "exists and is not a Mitoscope slide output (no summary.json); not replacing it",
        ));
    }
    let partial_prefix = format!(".{}.partial-", report.slide_id);
    remove_stale_partials(out_root, &partial_prefix);
    let tmp = tempfile::Builder::new()
        .prefix(&partial_prefix)
        .tempdir_in(out_root)
        .map_err(|e| SlideRunError::output(out_root, e))?;
    let dir = tmp.path();

    // detections.csv
    let csv = dir.join("detections.csv");
    let id = csv_field(&report.slide_id);
    mitoscope_formats::atomic::write_atomic_with(&csv, |w| {
        writeln!(w, "{}", crate::DETECTIONS_HEADER)?;
        for d in &found.detections {
            writeln!(w, "{}", crate::batch::detection_row(&id, d))?;
        }
        Ok(())
    })?;

    // GeoJSON, ASAP and MIDOG, through the shared writers.
    let result = ImageResult {
        image: report.slide_id.clone(),
        path: report.slide.clone(),
        size: (report.level0_size[0].min(u32::MAX as u64) as u32, report.level0_size[1].min(u32::MAX as u64) as u32),
        detections: found.detections.clone(),
        candidates: Vec::new(),
        seconds: report.seconds,
    };
    let set = annotation_set(std::slice::from_ref(&result), report.mpp);
    let geo = dir.join("detections.geojson");
    mitoscope_formats::write(&set, &geo, Format::GeoJson, &WriteOptions { mpp: None, polygons: true })?;
    let asap = dir.join("detections.xml");
    mitoscope_formats::write(&set, &asap, Format::Asap, &WriteOptions { mpp: None, polygons: true })?;
    let midog = dir.join("midog.json");
    mitoscope_formats::write(
        &set,
        &midog,
        Format::MidogPoints,
        &WriteOptions { mpp: Mpp::new(report.mpp).ok(), polygons: false },
    )?;

    let summary = dir.join("summary.json");
    let json = serde_json::to_vec_pretty(report).map_err(|e| SlideRunError::output(&summary, e))?;
    mitoscope_formats::atomic::write_atomic(&summary, &json)?;

    let thumb = dir.join("thumbnail.png");
    let picture = thumbnail(found, report);
    write_png(&thumb, &picture).map_err(|e| SlideRunError::output(&thumb, e))?;

    // Swap into place: move the old folder aside, rename the new one in, delete the old.
    let kept = tmp.keep();
    let old = if final_dir.exists() {
        let aside = out_root.join(format!(".{}.old-{}", report.slide_id, std::process::id()));
        let _ = std::fs::remove_dir_all(&aside);
        if let Err(e) = std::fs::rename(&final_dir, &aside) {
            let _ = std::fs::remove_dir_all(&kept);
            return Err(SlideRunError::output(&final_dir, format!("cannot move the previous output aside: {e}")));
        }
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&kept, &final_dir) {
        if let Some(aside) = &old {
            let _ = std::fs::rename(aside, &final_dir);
        }
        let _ = std::fs::remove_dir_all(&kept);
        return Err(SlideRunError::output(&final_dir, e));
    }
    if let Some(aside) = old
        && let Err(e) = std::fs::remove_dir_all(&aside)
    {
        tracing::warn!("could not remove the previous output {}: {e}", aside.display());
    }
    Ok(final_dir)
}

/// Removes the temporary folders (`prefix` + random suffix) that a run killed
/// while writing this slide's outputs left in `out_root`: they only ever hold
/// an unfinished copy of what is about to be written again.
fn remove_stale_partials(out_root: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(out_root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(prefix) && path.is_dir() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!("removed {}, left by an interrupted run", path.display()),
                Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
            }
        }
    }
}

/// A folder we may replace: empty, or holding our `summary.json`.
fn is_replaceable(dir: &Path) -> bool {
    dir.is_dir()
        && (dir.join("summary.json").is_file()
            || std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// The low-resolution image with the tissue outline (green), detections
/// (red circles), the top fields (orange) and the hotspot (blue, thick).
pub fn thumbnail(found: &SlideDetections, report: &SlideReport) -> RgbImage {
    let mut img = found.low_res.clone();
    let ds = found.tissue.downsample();
    outline(&mut img, found.tissue.mask(), Rgb([0, 170, 0]));
    let rect = |img: &mut RgbImage, w: &Window, colour: Rgb<u8>, thickness: i32| {
        let (x, y) = ((w.x / ds).round() as i32, (w.y / ds).round() as i32);
        let (rw, rh) = (((w.width / ds).round() as i32).max(1), ((w.height / ds).round() as i32).max(1));
        for k in 0..thickness {
            if rw > 2 * k && rh > 2 * k {
                let r = imageproc::rect::Rect::at(x + k, y + k).of_size((rw - 2 * k) as u32, (rh - 2 * k) as u32);
                imageproc::drawing::draw_hollow_rect_mut(img, r, colour);
            }
        }
    };
    for f in report.top_fields.iter().filter(|f| f.count > 0) {
        rect(&mut img, f, Rgb([255, 150, 0]), 1);
    }
    let radius = ((img.width().max(img.height()) as f32 / 400.0).ceil() as i32).clamp(2, 6);
    for d in &found.detections {
        let c = ((d.x / ds).round() as i32, (d.y / ds).round() as i32);
        imageproc::drawing::draw_hollow_circle_mut(&mut img, c, radius, Rgb([230, 0, 0]));
    }
    rect(&mut img, &report.hotspot, Rgb([0, 60, 255]), 3);
    img
}

/// Paints the boundary pixels of a 0/255 mask.
fn outline(img: &mut RgbImage, mask: &GrayImage, colour: Rgb<u8>) {
    let (w, h) = mask.dimensions();
    let on =
        |x: i64, y: i64| x >= 0 && y >= 0 && x < w as i64 && y < h as i64 && mask.get_pixel(x as u32, y as u32)[0] != 0;
    for y in 0..h {
        for x in 0..w {
            let (xi, yi) = (x as i64, y as i64);
            if on(xi, yi)
                && !(on(xi - 1, yi) && on(xi + 1, yi) && on(xi, yi - 1) && on(xi, yi + 1))
                && x < img.width()
                && y < img.height()
            {
                img.put_pixel(x, y, colour);
            }
        }
    }
}

/// Several slides one after the other (tiles of each in parallel); one
/// failing slide never stops the others. Two slides with the same file stem
/// would share an output folder: the later one fails with a clear error.
pub fn run_slides(
    paths: &[PathBuf],
    detector: &dyn TileDetector,
    out_root: &Path,
    config: &SlideRunConfig,
) -> Vec<(PathBuf, Result<SlideReport, SlideRunError>)> {
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    paths
        .iter()
        .map(|p| {
            let id = image_id(p);
            if id.eq_ignore_ascii_case(crate::slide_table::SLIDE_TABLE_FILE) {
                let e = SlideRunError::output(
                    p,
                    format!("its output folder would be named '{id}', the slide table's name; rename the file"),
                );
                return (p.clone(), Err(e));
            }
            if let Some(first) = seen.get(&id) {
                let e = SlideRunError::output(
                    p,
                    format!("has the same name '{id}' as {} (one output folder per name); rename one", first.display()),
                );
                return (p.clone(), Err(e));
            }
            seen.insert(id, p.clone());
            (p.clone(), run_slide(p, detector, out_root, config))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f64, y: f64, score: f64) -> Detection {
        Detection { x, y, score, candidate_score: score, outline: Vec::new() }
    }

    #[test]
    fn merge_keeps_strongest_and_matches_the_quadratic_rule() {
        let items = vec![
            det(0.0, 0.0, 0.5),
            det(5.0, 0.0, 0.9),
            det(30.0, 0.0, 0.7),
            det(39.0, 0.0, 0.6),
            det(100.0, 100.0, 0.1),
        ];
        let kept = merge_nearby(items.clone(), 10.0);
        assert_eq!(kept.iter().map(|d| d.x).collect::<Vec<_>>(), vec![5.0, 30.0, 100.0]);
        // Same as the reference (which ranks by candidate score: equal here).
        let reference = crate::tiling::merge_by_distance(items, 10.0);
        assert_eq!(kept.len(), reference.len());
    }
}
