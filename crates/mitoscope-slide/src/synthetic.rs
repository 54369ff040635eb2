//! A synthetic pyramidal TIFF of any size, for tests and benchmarks of the
//! slide pipeline: glass (pure white) with a few rectangular tissue patches
//! (pink, with purple nuclei) and dark round "figures" at known level-0
//! positions. **Not H&E**: it exercises reading, tiling, tissue masking and
//! memory, not a model's accuracy.
//!
//! Written streaming, one deflate-compressed tile at a time, so a
//! 40000 x 30000 slide takes a few MB of memory and of disk: every tile that
//! touches no patch points at one shared white tile (TIFF allows several
//! tile offsets to name the same bytes).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tiff::encoder::compression::{CompressionAlgorithm, Deflate, DeflateLevel};
use tiff::encoder::{Rational, TiffEncoder};
use tiff::tags::Tag;

use crate::SlideError;

/// A rectangle in level-0 pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    fn contains(&self, x: f64, y: f64) -> bool {
        x >= self.x as f64
            && y >= self.y as f64
            && x < (self.x + self.width) as f64
            && y < (self.y + self.height) as f64
    }

    /// Whether the rectangle meets `[x0, x1) x [y0, y1)`.
    fn meets(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> bool {
        (self.x as f64) < x1
            && x0 < (self.x + self.width) as f64
            && (self.y as f64) < y1
            && y0 < (self.y + self.height) as f64
    }
}

/// Description of a synthetic slide; [`SyntheticSlide::write`] writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSlide {
    /// Level-0 width in pixels.
    pub width: u32,
    /// Level-0 height in pixels.
    pub height: u32,
    /// Level-0 microns per pixel, written as TIFF XResolution / YResolution.
    pub mpp: f64,
    /// Tile side (a multiple of 16).
    pub tile: u32,
    /// Downsample of each level, starting with 1.
    pub downsamples: Vec<u32>,
    /// Tissue patches.
    pub patches: Vec<Rect>,
    /// Centres of the dark figures (level-0 pixels; inside patches).
    pub figures: Vec<(f64, f64)>,
    /// Radius of a figure in level-0 pixels.
    pub figure_radius: f64,
}

/// What [`SyntheticSlide::write`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// File size in bytes.
    pub bytes: u64,
    /// Tiles over all levels.
    pub tiles: u64,
    /// Tiles with their own data (touching a patch); the rest share one white tile.
    pub tissue_tiles: u64,
}

/// Pure glass.
const WHITE: [u8; 3] = [255, 255, 255];

fn hash(x: u32, y: u32) -> u32 {
    let mut h = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
    h ^= h >> 15;
    h = h.wrapping_mul(0xC2B2_AE3D);
    h ^ (h >> 13)
}

impl SyntheticSlide {
    /// The benchmark / memory-test slide: 40000 x 30000 px at 0.25 µm/px (a
    /// 10 x 7.5 mm 40x scan; 3.6 GB of RGB at level 0), levels 1, 2, 8, 32,
    /// 512-px tiles, three tissue patches (a 1.5 x 1.5 mm one that holds a
    /// whole 2 mm² hotspot) and 24 figures: 12 in one cluster, several on the
    /// borders between the 512-px detection tiles (64 px overlap) at level 1,
    /// which fall at level-0 x or y = 960 + 896 k.
    pub fn large() -> Self {
        let patches = vec![
            Rect { x: 3000, y: 3000, width: 6000, height: 6000 },
            Rect { x: 22000, y: 14000, width: 2500, height: 3000 },
            Rect { x: 30000, y: 24000, width: 2000, height: 1500 },
        ];
        let mut figures = Vec::new();
        for i in 0..12 {
            figures.push((5000.0 + 300.0 * (i % 4) as f64, 4000.0 + 350.0 * (i / 4) as f64));
        }
        figures.extend_from_slice(&[
            (7232.0, 5000.0),
            (5000.0, 7232.0),
            (7232.0, 7232.0),
            (4600.0, 7600.0),
            (8128.0, 3500.0),
            (22464.0, 15000.0),
            (24000.0, 16192.0),
            (22600.0, 15296.0),
            (23360.0, 16896.0),
            (31424.0, 25000.0),
            (30528.0, 24256.0),
            (31000.0, 25152.0),
        ]);
        Self {
            width: 40_000,
            height: 30_000,
            mpp: 0.25,
            tile: 512,
            downsamples: vec![1, 2, 8, 32],
            patches,
            figures,
            figure_radius: 20.0,
        }
    }

    /// Size of level `i`.
    pub fn level_size(&self, i: usize) -> (u32, u32) {
        let ds = self.downsamples.get(i).copied().unwrap_or(1).max(1);
        (self.width.div_ceil(ds), self.height.div_ceil(ds))
    }

    /// Colour at level-0 position `(x, y)`.
    pub fn pixel(&self, x: f64, y: f64) -> [u8; 3] {
        if !self.patches.iter().any(|p| p.contains(x, y)) {
            return WHITE;
        }
        let r2 = self.figure_radius * self.figure_radius;
        if self.figures.iter().any(|&(fx, fy)| (fx - x).powi(2) + (fy - y).powi(2) <= r2) {
            return [45, 25, 70];
        }
        // Nuclei: one per 48-px cell, radius 9, jittered.
        let (cx, cy) = ((x / 48.0).floor() as u32, (y / 48.0).floor() as u32);
        let h = hash(cx, cy);
        let (nx, ny) = (cx as f64 * 48.0 + 12.0 + (h % 24) as f64, cy as f64 * 48.0 + 12.0 + ((h >> 8) % 24) as f64);
        // Noise in 16-px blocks: texture that still compresses.
        let n = (hash(x as u32 / 16, y as u32 / 16) % 12) as u8;
        if (nx - x).powi(2) + (ny - y).powi(2) <= 81.0 {
            [140 + n, 80 + n, 165 + n]
        } else {
            [225 - n, 150 + n, 190 - n]
        }
    }

    /// Writes the slide as a tiled, deflate-compressed RGB pyramidal TIFF
    /// (one IFD per level, reduced levels flagged), tile by tile.
    pub fn write(&self, path: &Path) -> Result<WriteStats, SlideError> {
        let tiff_err = |source| SlideError::Tiff { path: path.to_owned(), ifd: 0, source };
        if self.width == 0
            || self.height == 0
            || self.tile == 0
            || !self.tile.is_multiple_of(16)
            || self.downsamples.first() != Some(&1)
        {
            return Err(SlideError::Unsupported {
                path: path.to_owned(),
                ifd: 0,
                what: "synthetic slide needs a size, a tile side that is a multiple of 16 and downsample 1 first"
                    .into(),
            });
        }
        let file = File::create(path).map_err(|source| SlideError::Io { path: path.to_owned(), source })?;
        let mut enc = TiffEncoder::new(BufWriter::new(file)).map_err(tiff_err)?;
        let t = self.tile;
        let compress = |raw: &[u8]| -> Result<Vec<u8>, SlideError> {
            let mut out = Vec::new();
            Deflate::with_level(DeflateLevel::Fast)
                .write_to(&mut out, raw)
                .map_err(|source| SlideError::Io { path: path.to_owned(), source })?;
            Ok(out)
        };
        let white = compress(&vec![255u8; (t * t * 3) as usize])?;
        let mut white_at: Option<u32> = None;
        let mut stats = WriteStats { bytes: 0, tiles: 0, tissue_tiles: 0 };
        let mut raw = vec![0u8; (t * t * 3) as usize];
        for (i, &ds) in self.downsamples.iter().enumerate() {
            let (w, h) = self.level_size(i);
            let dsf = ds.max(1) as f64;
            let mut dir = enc.image_directory().map_err(tiff_err)?;
            let (mut offsets, mut counts) = (Vec::new(), Vec::new());
            for row in 0..h.div_ceil(t) {
                for col in 0..w.div_ceil(t) {
                    stats.tiles += 1;
                    let (x0, y0) = ((col * t) as f64 * dsf, (row * t) as f64 * dsf);
                    let (x1, y1) = (x0 + t as f64 * dsf, y0 + t as f64 * dsf);
                    if !self.patches.iter().any(|p| p.meets(x0, y0, x1, y1)) {
                        let at = match white_at {
                            Some(a) => a,
                            None => {
                                let a = dir.write_data(white.as_slice()).map_err(tiff_err)? as u32;
                                white_at = Some(a);
                                a
                            }
                        };
                        offsets.push(at);
                        counts.push(white.len() as u32);
                        continue;
                    }
                    stats.tissue_tiles += 1;
                    for yy in 0..t {
                        for xx in 0..t {
                            // Level pixel centre in level-0 coordinates (point sampling).
                            let gx = ((col * t + xx) as f64 + 0.5) * dsf - 0.5;
                            let gy = ((row * t + yy) as f64 + 0.5) * dsf - 0.5;
                            let i = ((yy * t + xx) * 3) as usize;
                            raw[i..i + 3].copy_from_slice(&self.pixel(gx, gy));
                        }
                    }
                    let bytes = compress(&raw)?;
                    offsets.push(dir.write_data(bytes.as_slice()).map_err(tiff_err)? as u32);
                    counts.push(bytes.len() as u32);
                }
            }
            dir.write_tag(Tag::NewSubfileType, if i > 0 { 1u32 } else { 0 }).map_err(tiff_err)?;
            dir.write_tag(Tag::ImageWidth, w).map_err(tiff_err)?;
            dir.write_tag(Tag::ImageLength, h).map_err(tiff_err)?;
            dir.write_tag(Tag::BitsPerSample, &[8u16, 8, 8][..]).map_err(tiff_err)?;
            dir.write_tag(Tag::Compression, 8u16).map_err(tiff_err)?;
            dir.write_tag(Tag::PhotometricInterpretation, 2u16).map_err(tiff_err)?;
            dir.write_tag(Tag::SamplesPerPixel, 3u16).map_err(tiff_err)?;
            dir.write_tag(Tag::PlanarConfiguration, 1u16).map_err(tiff_err)?;
            dir.write_tag(Tag::TileWidth, t).map_err(tiff_err)?;
            dir.write_tag(Tag::TileLength, t).map_err(tiff_err)?;
            dir.write_tag(Tag::TileOffsets, offsets.as_slice()).map_err(tiff_err)?;
            dir.write_tag(Tag::TileByteCounts, counts.as_slice()).map_err(tiff_err)?;
            if self.mpp.is_finite() && self.mpp > 0.0 {
                // Pixels per cm, to 1/1000.
                let r = Rational { n: (10_000_000.0 / self.mpp).round() as u32, d: 1000 };
                dir.write_tag(Tag::XResolution, &r).map_err(tiff_err)?;
                dir.write_tag(Tag::YResolution, &r).map_err(tiff_err)?;
                dir.write_tag(Tag::ResolutionUnit, 3u16).map_err(tiff_err)?;
            }
            dir.finish().map_err(tiff_err)?;
        }
        drop(enc);
        stats.bytes = std::fs::metadata(path).map_err(|source| SlideError::Io { path: path.to_owned(), source })?.len();
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MppSource, open};

    #[test]
    fn small_synthetic_reads_back() {
        let s = SyntheticSlide {
            width: 700,
            height: 500,
            mpp: 0.25,
            tile: 128,
            downsamples: vec![1, 2, 4],
            patches: vec![Rect { x: 100, y: 100, width: 300, height: 200 }],
            figures: vec![(200.0, 200.0)],
            figure_radius: 10.0,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("syn.tiff");
        let st = s.write(&p).unwrap();
        assert!(st.tissue_tiles < st.tiles);
        let slide = open(&p).unwrap();
        assert_eq!(slide.level_count(), 3);
        assert_eq!(slide.dimensions(2), Some((175, 125)));
        assert_eq!((slide.mpp().source, slide.mpp().mpp.get()), (MppSource::TiffResolution, 0.25));
        let r = slide.read_region(0, 0, 0, 700, 500).unwrap();
        for (x, y) in [(0, 0), (150, 120), (200, 200), (399, 299), (400, 300), (690, 490)] {
            assert_eq!(r.get_pixel(x, y).0, s.pixel(x as f64, y as f64), "({x}, {y})");
        }
        assert_eq!(r.get_pixel(200, 200).0, [45, 25, 70]);
        assert_eq!(r.get_pixel(10, 10).0, WHITE);
    }
}
