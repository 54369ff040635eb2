//! Deep-zoom tiles cut from the opened image or slide.
//!
//! Level `z` is the image downsampled by `2^z` (level 0 = full resolution);
//! each level is cut into [`TILE`] x [`TILE`] tiles from the top-left (edge
//! tiles are smaller). The top level fits in one tile. Tiles exist only for
//! the one file the server was started on: a request names numbers, never a
//! path.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::{RgbImage, imageops::FilterType};
use mitoscope_slide::Slide;

use crate::ReviewError;

/// Tile side in pixels.
pub const TILE: u32 = 256;

/// Encoded tiles kept in memory (about 20 KB each).
const CACHE_TILES: usize = 1024;

/// Longest side a slide tile may read from its source level (wider reads mean
/// a slide without a pyramid; those tiles are drawn grey rather than reading
/// hundreds of megapixels per request).
const MAX_SOURCE_SIDE: u64 = 8192;

/// Tile key (z, column, row).
type Key = (u32, u64, u64);
/// Encoded tiles and their insertion order (oldest evicted first).
type TileCache = (HashMap<Key, Arc<Vec<u8>>>, VecDeque<Key>);

enum Source {
    /// A decoded image and its halvings.
    Image(Vec<RgbImage>),
    /// A whole slide read through its own pyramid.
    Slide(Box<dyn Slide>),
}

/// The tiles of one image or slide.
pub struct TileSource {
    source: Source,
    path: PathBuf,
    width: u64,
    height: u64,
    max_level: u32,
    cache: Mutex<TileCache>,
}

/// Levels needed so that the top one fits in one tile.
fn levels_for(width: u64, height: u64) -> u32 {
    let mut z = 0;
    let mut side = width.max(height);
    while side > TILE as u64 {
        side = side.div_ceil(2);
        z += 1;
    }
    z
}

/// What a path is to the review tool: a whole slide (SVS, DICOM, a folder
/// holding a DICOM series, or a tiled / multi-level TIFF) or a plain image.
fn is_slide(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "svs" | "ndpi" | "mrxs" | "scn" | "vms" | "vmu" | "bif" | "dcm" | "svslide")
}

impl TileSource {
    /// Opens an HPF image (decoded whole) or a slide (read tile by tile).
    pub fn open(path: &Path) -> Result<Self, ReviewError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let tiff = ext == "tif" || ext == "tiff";
        if is_slide(path) || tiff {
            match mitoscope_slide::open(path) {
                // A TIFF with a pyramid or tiles is a slide; a flat one is an HPF.
                Ok(s) if !tiff || s.level_count() > 1 || s.levels()[0].tile_width < s.levels()[0].width as u32 => {
                    return Ok(Self::from_slide(s));
                }
                Ok(_) => {}
                Err(e) if !tiff => return Err(e.into()),
                Err(e) => tracing::debug!("{}: not a slide ({e}); reading as an image", path.display()),
            }
        }
        let img = mitoscope_imaging::read_image(path)?;
        Ok(Self::from_image(img, path))
    }

    /// Tiles of a decoded image.
    pub fn from_image(img: RgbImage, path: &Path) -> Self {
        let (width, height) = (img.width() as u64, img.height() as u64);
        let max_level = levels_for(width, height);
        let mut pyramid = vec![img];
        for _ in 0..max_level {
            let prev = pyramid.last().expect("level 0 present");
            let (w, h) = (prev.width().div_ceil(2).max(1), prev.height().div_ceil(2).max(1));
            let next = image::imageops::resize(prev, w, h, FilterType::Triangle);
            pyramid.push(next);
        }
        Self::new(Source::Image(pyramid), path.to_owned(), width, height, max_level)
    }

    /// Tiles of a slide.
    pub fn from_slide(slide: Box<dyn Slide>) -> Self {
        let (width, height) = slide.dimensions(0).unwrap_or((0, 0));
        let path = slide.path().to_owned();
        Self::new(Source::Slide(slide), path, width, height, levels_for(width, height))
    }

    fn new(source: Source, path: PathBuf, width: u64, height: u64, max_level: u32) -> Self {
        Self { source, path, width, height, max_level, cache: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// Level-0 size.
    pub fn size(&self) -> (u64, u64) {
        (self.width, self.height)
    }

    /// The highest level (one tile).
    pub fn max_level(&self) -> u32 {
        self.max_level
    }

    /// The file served.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The slide's mpp, when serving a slide.
    pub fn slide_mpp(&self) -> Option<mitoscope_geom::Mpp> {
        match &self.source {
            Source::Slide(s) => Some(s.mpp().mpp),
            Source::Image(_) => None,
        }
    }

    /// Whether this is a slide (else an image).
    pub fn is_slide(&self) -> bool {
        matches!(self.source, Source::Slide(_))
    }

    /// Size of level `z`.
    pub fn level_size(&self, z: u32) -> (u64, u64) {
        let d = 1u64 << z.min(62);
        (self.width.div_ceil(d).max(1), self.height.div_ceil(d).max(1))
    }

    /// The JPEG tile (`z`, `col`, `row`); `None` when it does not exist.
    pub fn tile(&self, z: u32, col: u64, row: u64) -> Result<Option<Arc<Vec<u8>>>, ReviewError> {
        if z > self.max_level {
            return Ok(None);
        }
        let (lw, lh) = self.level_size(z);
        if col >= lw.div_ceil(TILE as u64) || row >= lh.div_ceil(TILE as u64) {
            return Ok(None);
        }
        let key = (z, col, row);
        if let Some(t) = self.cache.lock().map_err(|_| ReviewError::Poisoned)?.0.get(&key) {
            return Ok(Some(t.clone()));
        }
        let (x0, y0) = (col * TILE as u64, row * TILE as u64);
        let (tw, th) = ((lw - x0).min(TILE as u64) as u32, (lh - y0).min(TILE as u64) as u32);
        let img = match &self.source {
            Source::Image(pyr) => image::imageops::crop_imm(&pyr[z as usize], x0 as u32, y0 as u32, tw, th).to_image(),
            Source::Slide(s) => self.slide_tile(s.as_ref(), z, x0, y0, tw, th)?,
        };
        let mut bytes = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85);
        img.write_with_encoder(enc)
            .map_err(|e| ReviewError::BadInput(format!("{}: encoding tile: {e}", self.path.display())))?;
        let bytes = Arc::new(bytes);
        let mut cache = self.cache.lock().map_err(|_| ReviewError::Poisoned)?;
        if cache.0.insert(key, bytes.clone()).is_none() {
            cache.1.push_back(key);
        }
        while cache.1.len() > CACHE_TILES {
            if let Some(old) = cache.1.pop_front() {
                cache.0.remove(&old);
            }
        }
        Ok(Some(bytes))
    }

    /// A tile of a slide: read from the coarsest slide level at least as
    /// detailed as `2^z`, then resized.
    fn slide_tile(&self, s: &dyn Slide, z: u32, x0: u64, y0: u64, tw: u32, th: u32) -> Result<RgbImage, ReviewError> {
        let ds = (1u64 << z) as f64;
        let level = s.best_level_for_downsample(ds);
        let lds = s.downsample(level).unwrap_or(1.0);
        let f = ds / lds;
        let sx = (x0 as f64 * f).floor() as i64;
        let sy = (y0 as f64 * f).floor() as i64;
        let sw = ((tw as f64 * f).ceil() as u64).max(1);
        let sh = ((th as f64 * f).ceil() as u64).max(1);
        if sw.max(sh) > MAX_SOURCE_SIDE {
            return Ok(RgbImage::from_pixel(tw, th, image::Rgb([200, 200, 200])));
        }
        let region = s.read_region(level, sx, sy, sw as u32, sh as u32)?;
        Ok(if (sw, sh) == (tw as u64, th as u64) {
            region
        } else {
            image::imageops::resize(&region, tw, th, FilterType::Triangle)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_geometry() {
        assert_eq!(levels_for(256, 100), 0);
        assert_eq!(levels_for(257, 100), 1);
        assert_eq!(levels_for(2084, 2084), 4); // 2084 -> 1042 -> 521 -> 261 -> 131
        let img = RgbImage::from_fn(600, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 0]));
        let t = TileSource::from_image(img, Path::new("x.png"));
        assert_eq!(t.max_level(), 2);
        assert_eq!(t.level_size(1), (300, 150));
        let edge = t.tile(0, 2, 1).unwrap().unwrap();
        let dec = image::load_from_memory(&edge).unwrap();
        assert_eq!((dec.width(), dec.height()), (600 - 512, 300 - 256));
        assert!(t.tile(0, 3, 0).unwrap().is_none());
        assert!(t.tile(3, 0, 0).unwrap().is_none());
        // Cached: the same bytes come back.
        assert!(Arc::ptr_eq(&t.tile(2, 0, 0).unwrap().unwrap(), &t.tile(2, 0, 0).unwrap().unwrap()));
    }

    #[test]
    fn slide_tiles_from_real_svs() {
        let data = mitoscope_testdata::require_data!("wsi");
        let t = TileSource::open(&data.join("CMU-1-Small-Region.svs")).unwrap();
        assert!(t.is_slide());
        assert_eq!(t.size(), (2220, 2967));
        let top = t.tile(t.max_level(), 0, 0).unwrap().unwrap();
        let dec = image::load_from_memory(&top).unwrap().to_rgb8();
        assert_eq!((dec.width(), dec.height()), (139, 186), "2220 x 2967 / 16, rounded up");
        let full = t.tile(0, 3, 3).unwrap().unwrap();
        assert_eq!(image::load_from_memory(&full).unwrap().width(), TILE);
    }
}
