//! Whole-slide images for Mitoscope: pyramid levels, microns per pixel,
//! associated images, bounded region reads, tissue masks and the HPF /
//! hotspot logic that turns detections into a mitotic count.
//!
//! - [`open`] / [`open_with`] return a `Box<dyn` [`Slide`]`>`; the rest of
//!   Mitoscope never knows which reader served it. Built in (pure Rust, no
//!   system library): Aperio SVS (JPEG tiles whose shared `JPEGTables` are
//!   merged into each tile stream by the `tiff` crate, or JPEG 2000 tiles)
//!   and generic tiled or stripped pyramidal TIFF / BigTIFF, and DICOM
//!   whole-slide series (JPEG baseline, JPEG 2000 or uncompressed frames;
//!   see [`DicomSlide`]). Vendor formats
//!   (NDPI, MIRAX, SCN, BIF, Philips TIFF) are read through the system
//!   libopenslide behind the `openslide` cargo feature (see [`openslide`]).
//! - [`Slide::read_region`] decodes only the tiles a region touches, through a
//!   small LRU tile cache, so memory stays bounded whatever the slide size.
//! - [`tissue::tissue_mask`] finds tissue on a low-resolution image.
//! - [`hotspot`] places the N-HPF hotspot window and the top-N fields and
//!   summarises a slide with [`mitoscope_eval::score::mitotic_score`].
//!
//! Coordinates: `x` = column, `y` = row, origin top-left; detections are in
//! level-0 pixels; [`Slide::read_region`] takes the pixels *of the level it
//! reads* (unlike OpenSlide, whose `x, y` are level-0).
//!
//! ```
//! use mitoscope_geom::{Mpp, Point};
//! use mitoscope_slide::hotspot::{HotspotParams, best_window};
//!
//! // 0.5 µm/px; one field of 0.01 mm² (a 200x200 px square); N = 1.
//! let params = HotspotParams { n_fields: 1, ..HotspotParams::with_field_area_mm2(0.01) };
//! let pts = [Point::new(10.0, 10.0), Point::new(1000.0, 1000.0),
//!            Point::new(1050.0, 1100.0), Point::new(1150.0, 1190.0)];
//! let w = best_window(&pts, Mpp::new(0.5).unwrap(), (5000.0, 5000.0), &params, None).unwrap();
//! assert_eq!(w.count, 3);
//! assert_eq!((w.x, w.y), (1000.0, 1000.0));
//! ```
#![deny(missing_docs)]

mod cache;
mod codec;
mod dicom_slide;
mod error;
pub mod hotspot;
pub mod openslide;
mod region;
pub mod synthetic;
#[cfg(test)]
mod testutil;
mod tiff_slide;
pub mod tissue;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use image::RgbImage;
use mitoscope_geom::Mpp;
use serde::{Deserialize, Serialize};

pub use dicom_slide::{DicomSlide, WSI_SOP_CLASS};
pub use error::{HotspotError, SlideError};
pub use tiff_slide::TiffSlide;

/// The largest region (width x height) one [`Slide::read_region`] call may
/// return: 2^28 px (768 MiB of RGB). Larger reads must be tiled by the caller.
pub const MAX_REGION_PIXELS: u64 = 1 << 28;

/// Default byte budget of the decoded-tile cache of one slide (64 MiB).
pub const DEFAULT_TILE_CACHE_BYTES: usize = 64 << 20;

/// Microns per pixel assumed when a slide states neither its resolution nor
/// its magnification: 0.25 µm/px, a 40x scan, the usual for mitosis work.
pub const DEFAULT_GUESS_MPP: f64 = 0.25;

/// One pyramid level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
    /// Level-0 pixels per pixel of this level (mean of the x and y ratios, as
    /// OpenSlide computes it); 1 for level 0.
    pub downsample: f64,
    /// Tile width (for strips: the image width).
    pub tile_width: u32,
    /// Tile height (for strips: rows per strip).
    pub tile_height: u32,
}

/// Where the slide's microns-per-pixel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MppSource {
    /// Given by the user ([`OpenOptions::mpp_override`]).
    Override,
    /// `MPP = …` in the Aperio ImageDescription.
    AperioDescription,
    /// TIFF `XResolution` / `ResolutionUnit` (cm or inch).
    TiffResolution,
    /// DICOM Pixel Spacing of the level-0 image (else its Imaged Volume
    /// Width over its width in pixels).
    DicomPixelSpacing,
    /// OpenSlide's `openslide.mpp-x` / `openslide.mpp-y` (their mean when
    /// both are given; feature `openslide`).
    OpenSlide,
    /// Guessed from the objective magnification (`10 / AppMag`).
    Magnification,
    /// Guessed: [`DEFAULT_GUESS_MPP`].
    Default,
}

/// The level-0 resolution and how sure we are of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MppInfo {
    /// Microns per level-0 pixel.
    pub mpp: Mpp,
    /// Where it came from.
    pub source: MppSource,
    /// True when the file did not state it and it was guessed (a
    /// `tracing::warn!` was emitted at open).
    pub mpp_guessed: bool,
}

/// Options for [`open_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOptions {
    /// Use this resolution whatever the file says.
    pub mpp_override: Option<Mpp>,
    /// Byte budget of the decoded-tile cache.
    pub tile_cache_bytes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { mpp_override: None, tile_cache_bytes: DEFAULT_TILE_CACHE_BYTES }
    }
}

/// A whole-slide image, whichever reader serves it. `Send + Sync`: regions
/// may be read from several threads at once.
pub trait Slide: Send + Sync {
    /// The file.
    fn path(&self) -> &Path;
    /// Which reader / vendor: `aperio`, `generic-tiff`, `dicom`, or OpenSlide's vendor.
    fn vendor(&self) -> &str;
    /// Pyramid levels, largest (level 0) first.
    fn levels(&self) -> &[Level];
    /// Level-0 resolution.
    fn mpp(&self) -> MppInfo;
    /// Scanning objective magnification when stated (Aperio `AppMag`).
    fn objective_power(&self) -> Option<f64>;
    /// Raw metadata (`aperio.MPP`, `tiff.ImageDescription`, …).
    fn properties(&self) -> &BTreeMap<String, String>;
    /// Names of the associated images (`thumbnail`, `label`, `macro`).
    fn associated_names(&self) -> Vec<String>;
    /// Decodes an associated image whole (they are small).
    fn read_associated(&self, name: &str) -> Result<RgbImage, SlideError>;
    /// Reads `width` x `height` pixels at (`x`, `y`) of `level`, in that
    /// level's pixels. Only the tiles the region touches are decoded.
    ///
    /// Edges: a region partly outside the level is *padded with white*
    /// (255, 255, 255: background for H&E, so tissue masks and detectors
    /// ignore it) and keeps the requested size. Errors: a level past the
    /// last, a zero width or height, a region wholly outside the level, a
    /// region over [`MAX_REGION_PIXELS`], or an undecodable tile (naming the
    /// file, level and tile).
    fn read_region(&self, level: usize, x: i64, y: i64, width: u32, height: u32) -> Result<RgbImage, SlideError>;

    /// Number of levels.
    fn level_count(&self) -> usize {
        self.levels().len()
    }
    /// `(width, height)` of a level.
    fn dimensions(&self, level: usize) -> Option<(u64, u64)> {
        self.levels().get(level).map(|l| (l.width, l.height))
    }
    /// Downsample of a level relative to level 0.
    fn downsample(&self, level: usize) -> Option<f64> {
        self.levels().get(level).map(|l| l.downsample)
    }
    /// Microns per pixel at a level (`mpp * downsample`).
    fn level_mpp(&self, level: usize) -> Option<Mpp> {
        let ds = self.downsample(level)?;
        Mpp::new(self.mpp().mpp.get() * ds).ok()
    }
    /// The coarsest level whose downsample is at most `downsample` (level 0
    /// when none is).
    fn best_level_for_downsample(&self, downsample: f64) -> usize {
        let mut best = 0;
        for (i, l) in self.levels().iter().enumerate() {
            if l.downsample <= downsample + 1e-9 && l.downsample >= self.levels()[best].downsample {
                best = i;
            }
        }
        best
    }
}

impl std::fmt::Debug for dyn Slide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slide")
            .field("path", &self.path())
            .field("vendor", &self.vendor())
            .field("levels", &self.levels())
            .field("mpp", &self.mpp())
            .finish_non_exhaustive()
    }
}

/// Opens a slide with default options; see [`open_with`].
pub fn open(path: impl AsRef<Path>) -> Result<Box<dyn Slide>, SlideError> {
    open_with(path, &OpenOptions::default())
}

/// Opens a slide: TIFF-based files (Aperio SVS, pyramidal TIFF, BigTIFF)
/// and DICOM whole-slide series (any file of the series, or its folder) with the built-in
/// readers, anything else through OpenSlide when the `openslide` feature is
/// on, else a clear "unsupported format" error. A DICOM series the built-in
/// reader cannot decode (JPEG 2000 frames, say) is tried with OpenSlide too
/// when the feature is on.
///
/// With the feature on, TIFF-based files that OpenSlide identifies as another
/// vendor's (NDPI, SCN, BIF, Philips TIFF, …) go to OpenSlide too, and so
/// does a TIFF the built-in reader refuses as unsupported (if OpenSlide
/// cannot read it either, the built-in reader's error is returned).
pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Box<dyn Slide>, SlideError> {
    let path = path.as_ref();
    if path.is_dir() {
        // A folder is a DICOM series (the other formats are single files).
        return DicomSlide::open_with(path, options).map(|s| Box::new(s) as Box<dyn Slide>);
    }
    let head = read_head(path)?;
    if head.is_empty() {
        // Said plainly: an interrupted copy, not a format to build support for.
        return Err(SlideError::UnsupportedFormat {
            path: path.to_owned(),
            format: "an empty file, 0 bytes".into(),
            hint: "; copy the slide again".into(),
        });
    }
    match sniff(&head) {
        Sniffed::Tiff if openslide::serves_tiff(path) => openslide::open_with(path, options),
        Sniffed::Tiff => or_openslide(path, options, TiffSlide::open_with(path, options), |e| {
            matches!(e, SlideError::Unsupported { .. } | SlideError::NoLevels { .. })
        }),
        Sniffed::Dicom => {
            or_openslide(path, options, DicomSlide::open_with(path, options), |e| matches!(e, SlideError::Dicom { .. }))
        }
        other => {
            if cfg!(feature = "openslide") {
                return openslide::open_with(path, options);
            }
            Err(SlideError::UnsupportedFormat {
                path: path.to_owned(),
                format: other.name().to_owned(),
                hint: "; this build reads Aperio SVS, pyramidal TIFF and DICOM only, build with --features openslide for vendor formats".into(),
            })
        }
    }
}

/// A built-in reader's result; where it failed with an error that
/// `openslide_may_read` accepts and the `openslide` feature is on, OpenSlide
/// is tried (if OpenSlide fails too, the built-in reader's error is returned).
fn or_openslide<S: Slide + 'static>(
    path: &Path,
    options: &OpenOptions,
    builtin: Result<S, SlideError>,
    openslide_may_read: impl Fn(&SlideError) -> bool,
) -> Result<Box<dyn Slide>, SlideError> {
    match builtin {
        Ok(s) => Ok(Box::new(s)),
        Err(e) if cfg!(feature = "openslide") && openslide_may_read(&e) => match openslide::open_with(path, options) {
            Ok(slide) => {
                tracing::info!("{e}; read through OpenSlide instead");
                Ok(slide)
            }
            Err(_) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The associated image `name` of a reader's `(name, image)` list, or the
/// error that lists the names there are.
fn find_associated<'a, T>(path: &Path, associated: &'a [(String, T)], name: &str) -> Result<&'a T, SlideError> {
    associated.iter().find(|(n, _)| n == name).map(|(_, image)| image).ok_or_else(|| SlideError::NoSuchAssociated {
        path: path.to_owned(),
        name: name.to_owned(),
        available: associated.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// Associated images are decoded whole: at most `MAX_ASSOCIATED_PIXELS`.
fn check_associated_size(path: &Path, name: &str, pixels: u64) -> Result<(), SlideError> {
    let limit = tiff_slide::MAX_ASSOCIATED_PIXELS;
    if pixels > limit {
        return Err(SlideError::TooLarge {
            path: path.to_owned(),
            what: format!("associated image '{name}'"),
            pixels,
            limit,
        });
    }
    Ok(())
}

/// Locks a mutex, recovering from poisoning: a panic in another reader
/// leaves a decoder, file handle or cache usable (each read seeks afresh).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// First 132 bytes (or fewer) of the file: enough for TIFF and DICOM magic.
fn read_head(path: &Path) -> Result<Vec<u8>, SlideError> {
    let io = |source| SlideError::Io { path: path.to_owned(), source };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(132);
    f.take(132).read_to_end(&mut head).map_err(io)?;
    Ok(head)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Tiff,
    Dicom,
    Unknown,
}

impl Sniffed {
    fn name(self) -> &'static str {
        match self {
            Sniffed::Tiff => "TIFF",
            Sniffed::Dicom => "DICOM",
            Sniffed::Unknown => "unknown",
        }
    }
}

fn sniff(head: &[u8]) -> Sniffed {
    match head.get(..4) {
        Some(b"II*\0") | Some(b"MM\0*") | Some(b"II+\0") | Some(b"MM\0+") => return Sniffed::Tiff,
        _ => {}
    }
    if head.get(128..132) == Some(b"DICM") {
        return Sniffed::Dicom;
    }
    Sniffed::Unknown
}
