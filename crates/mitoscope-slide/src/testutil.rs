//! Test helpers: a synthetic pyramidal TIFF writer.
//!
//! The `tiff` encoder writes strip images only, so tiled levels are written
//! through its low-level directory API: tile bytes with `write_data`, then the
//! tile tags pointing at them.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use tiff::encoder::{DirectoryEncoder, Rational, TiffEncoder, TiffKind};
use tiff::tags::Tag;

/// 8-px blocks of five colours: misplaced or mis-coloured tiles show. The
/// JPEG 2000 fixtures in tests/fixtures are this pattern at 48x32.
pub(crate) fn pattern(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let block = (x / 8 + 3 * (y / 8)) % 5;
        image::Rgb([40 + 40 * block as u8, 200 - 30 * block as u8, if (x / 8 + y / 8) % 2 == 0 { 70 } else { 190 }])
    })
}

/// Writes one tiled level whose every tile is `tile_data` (a compressed
/// tile), with compression `compression`: tiles the `tiff` encoder cannot
/// produce (JPEG 2000).
pub(crate) fn write_precompressed_tiff(
    path: &Path,
    (width, height): (u32, u32),
    (tile_w, tile_h): (u32, u32),
    compression: u16,
    tile_data: &[u8],
) -> tiff::TiffResult<()> {
    let mut enc = TiffEncoder::new(BufWriter::new(File::create(path)?))?;
    let mut dir = enc.image_directory()?;
    let tiles = width.div_ceil(tile_w) * height.div_ceil(tile_h);
    let (mut offsets, mut counts) = (Vec::<u32>::new(), Vec::<u32>::new());
    for _ in 0..tiles {
        offsets.push(dir.write_data(tile_data)? as u32);
        counts.push(tile_data.len() as u32);
    }
    write_rgb8_tags(&mut dir, (width, height), compression, 1)?;
    write_tile_tags(&mut dir, (tile_w, tile_h), &offsets, &counts)?;
    dir.finish()?;
    Ok(())
}

/// The tags of an 8-bit RGB image: size, compression, sample layout
/// (`planar`: 1 interleaved, 2 one plane per colour).
fn write_rgb8_tags<W: Write + Seek, K: TiffKind>(
    dir: &mut DirectoryEncoder<'_, W, K>,
    (width, height): (u32, u32),
    compression: u16,
    planar: u16,
) -> tiff::TiffResult<()> {
    dir.write_tag(Tag::ImageWidth, width)?;
    dir.write_tag(Tag::ImageLength, height)?;
    dir.write_tag(Tag::BitsPerSample, &[8u16, 8, 8][..])?;
    dir.write_tag(Tag::Compression, compression)?;
    dir.write_tag(Tag::PhotometricInterpretation, 2u16)?;
    dir.write_tag(Tag::SamplesPerPixel, 3u16)?;
    dir.write_tag(Tag::PlanarConfiguration, planar)
}

/// The tags that place tiles written with `write_data`.
fn write_tile_tags<W: Write + Seek, K: TiffKind>(
    dir: &mut DirectoryEncoder<'_, W, K>,
    (tile_w, tile_h): (u32, u32),
    offsets: &[u32],
    counts: &[u32],
) -> tiff::TiffResult<()> {
    dir.write_tag(Tag::TileWidth, tile_w)?;
    dir.write_tag(Tag::TileLength, tile_h)?;
    dir.write_tag(Tag::TileOffsets, offsets)?;
    dir.write_tag(Tag::TileByteCounts, counts)
}

/// One uncompressed RGB8 level.
pub(crate) struct TestLevel {
    pub width: u32,
    pub height: u32,
    /// `Some((tile_w, tile_h))` for a tiled level, `None` for 16-row strips.
    pub tile: Option<(u32, u32)>,
    pub rgb: Vec<u8>,
}

impl TestLevel {
    pub(crate) fn from_fn(width: u32, height: u32, tile: Option<(u32, u32)>, f: impl Fn(u32, u32) -> [u8; 3]) -> Self {
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            for x in 0..width {
                rgb.extend(f(x, y));
            }
        }
        Self { width, height, tile, rgb }
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0; 3]; // tile padding
        }
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// Writes `levels` as consecutive IFDs (levels after the first flagged as
/// reduced-resolution), with `px_per_um` as XResolution in pixels per cm.
pub(crate) fn write_tiled_tiff(path: &Path, levels: &[TestLevel], px_per_um: Option<f64>) -> tiff::TiffResult<()> {
    write_tiled_tiff_with_tags(path, levels, px_per_um, &[])
}

/// [`write_tiled_tiff`] with extra LONG tags in the first IFD (e.g. a vendor's
/// marker tag, to make a file look like that vendor's).
#[cfg_attr(not(feature = "openslide"), allow(dead_code))]
pub(crate) fn write_tiled_tiff_with_tags(
    path: &Path,
    levels: &[TestLevel],
    px_per_um: Option<f64>,
    first_ifd_tags: &[(u16, u32)],
) -> tiff::TiffResult<()> {
    let mut enc = TiffEncoder::new(BufWriter::new(File::create(path)?))?;
    for (i, l) in levels.iter().enumerate() {
        let mut dir = enc.image_directory()?;
        let (cw, ch) = l.tile.unwrap_or((l.width, 16));
        let (mut offsets, mut counts) = (Vec::<u32>::new(), Vec::<u32>::new());
        for row in 0..l.height.div_ceil(ch) {
            for col in 0..l.width.div_ceil(cw) {
                // Tiles are stored whole (padded); the last strip is short.
                let rows = if l.tile.is_some() { ch } else { ch.min(l.height - row * ch) };
                let mut bytes = Vec::new();
                for y in row * ch..row * ch + rows {
                    for x in col * cw..col * cw + cw {
                        bytes.extend(l.pixel(x, y));
                    }
                }
                offsets.push(dir.write_data(bytes.as_slice())? as u32);
                counts.push(bytes.len() as u32);
            }
        }
        dir.write_tag(Tag::NewSubfileType, if i > 0 { 1u32 } else { 0 })?;
        write_rgb8_tags(&mut dir, (l.width, l.height), 1, 1)?;
        if l.tile.is_some() {
            write_tile_tags(&mut dir, (cw, ch), &offsets, &counts)?;
        } else {
            dir.write_tag(Tag::RowsPerStrip, ch)?;
            dir.write_tag(Tag::StripOffsets, offsets.as_slice())?;
            dir.write_tag(Tag::StripByteCounts, counts.as_slice())?;
        }
        if let Some(p) = px_per_um {
            let r = Rational { n: (p * 10_000.0).round() as u32, d: 1 };
            dir.write_tag(Tag::XResolution, &r)?;
            dir.write_tag(Tag::YResolution, &r)?;
            dir.write_tag(Tag::ResolutionUnit, 3u16)?;
        }
        if i == 0 {
            for &(tag, value) in first_ifd_tags {
                dir.write_tag(Tag::Unknown(tag), value)?;
            }
        }
        dir.finish()?;
    }
    Ok(())
}

/// One tiled level with separate colour planes (PlanarConfiguration 2): all
/// red tiles, then green, then blue. The built-in reader refuses this layout.
#[cfg_attr(not(feature = "openslide"), allow(dead_code))]
pub(crate) fn write_planar_tiff(path: &Path, level: &TestLevel, tile: (u32, u32)) -> tiff::TiffResult<()> {
    let mut enc = TiffEncoder::new(BufWriter::new(File::create(path)?))?;
    let mut dir = enc.image_directory()?;
    let (cw, ch) = tile;
    let (mut offsets, mut counts) = (Vec::<u32>::new(), Vec::<u32>::new());
    for plane in 0..3 {
        for row in 0..level.height.div_ceil(ch) {
            for col in 0..level.width.div_ceil(cw) {
                let mut bytes = Vec::new();
                for y in row * ch..(row + 1) * ch {
                    for x in col * cw..(col + 1) * cw {
                        bytes.push(level.pixel(x, y)[plane]);
                    }
                }
                offsets.push(dir.write_data(bytes.as_slice())? as u32);
                counts.push(bytes.len() as u32);
            }
        }
    }
    write_rgb8_tags(&mut dir, (level.width, level.height), 1, 2)?;
    write_tile_tags(&mut dir, (cw, ch), &offsets, &counts)?;
    dir.finish()
}
