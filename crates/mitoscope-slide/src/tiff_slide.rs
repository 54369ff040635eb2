//! The built-in reader: Aperio SVS and generic pyramidal TIFF / BigTIFF.
//!
//! IFD and tag parsing, `JPEGTables` merging and tile decompression (JPEG via
//! zune-jpeg, LZW, deflate, PackBits) are the `tiff` crate's. Written here:
//! which IFD is a level or an associated image, the Aperio description
//! fields, the sample-layout conversion to RGB8, and the tile cache. Aperio's
//! JPEG 2000 tiles (compressions 33003 and 33005), which the `tiff` crate
//! does not decode, are read raw and decoded by hayro-jpeg2000.
//!
//! Aperio layout (as OpenSlide reads it): IFD 0 is level 0; every *tiled*
//! IFD is a level; IFD 1, when strip-based, is the thumbnail; strip-based
//! IFDs whose ImageDescription has `label` / `macro` on its second line are
//! the label and macro. Aperio JPEG tiles are stored as RGB (the
//! ImageDescription says `JPEG/RGB`, Photometric is RGB) with no colour
//! transform: the `tiff` crate decodes them without YCbCr conversion, which
//! is what they need.
//!
//! Generic TIFF: IFD 0 and every later IFD (tiled or stripped, not a mask)
//! that is smaller than level 0 with the same aspect ratio are levels.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbImage;
use mitoscope_geom::Mpp;
use mitoscope_imaging::PLAUSIBLE_MPP;
use tiff::decoder::{ChunkType, Decoder, DecodingResult};
use tiff::tags::Tag;

use crate::cache::{TileCache, TileData};
use crate::codec::{decode_jpeg2000, ycbcr_to_rgb};
use crate::region::{assemble, check_region};
use crate::{
    DEFAULT_GUESS_MPP, Level, MppInfo, MppSource, OpenOptions, Slide, SlideError, check_associated_size,
    find_associated, lock,
};

/// Largest decoded chunk (tile or strip) we accept: 2^26 px. A stripped TIFF
/// stored as one strip per level would otherwise decode the whole level.
pub const MAX_CHUNK_PIXELS: u64 = 1 << 26;

/// Largest associated image decoded whole: 2^26 px.
pub(crate) const MAX_ASSOCIATED_PIXELS: u64 = 1 << 26;

/// IFDs read at most (guards against absurd files; cycles are caught by `tiff`).
const MAX_IFDS: usize = 4096;

type TiffDecoder = Decoder<BufReader<File>>;

/// Sample layout of an IFD, as the `tiff` crate reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Rgb,
    Rgba,
    Gray,
    /// JPEG-compressed YCbCr: the crate returns unconverted YCbCr samples.
    YCbCr,
    /// Aperio JPEG 2000 tiles (compression 33003 YCbCr, 33005 RGB), which
    /// the `tiff` crate does not decode: read raw and decoded here.
    Jpeg2000 {
        ycbcr: bool,
    },
}

impl Layout {
    fn samples(self) -> usize {
        match self {
            Layout::Rgb | Layout::YCbCr | Layout::Jpeg2000 { .. } => 3,
            Layout::Rgba => 4,
            Layout::Gray => 1,
        }
    }
}

/// What we learnt about one IFD at open.
#[derive(Debug, Clone)]
struct IfdInfo {
    index: usize,
    width: u32,
    height: u32,
    tiled: bool,
    chunk: (u32, u32),
    description: Option<String>,
    subfile_type: u32,
    /// `Err(reason)` when the IFD cannot be decoded by this reader.
    layout: Result<Layout, String>,
    mpp_from_resolution: Option<f64>,
}

/// One pyramid level: its IFD, and a decoder parked on it.
struct LevelReader {
    ifd: usize,
    layout: Layout,
    decoder: Mutex<TiffDecoder>,
    /// (offset, byte count) of each chunk, for layouts read raw (JPEG 2000).
    raw_chunks: Vec<(u64, u64)>,
}

/// A slide read by the built-in TIFF reader. Usually used as
/// `Box<dyn Slide>` from [`crate::open`].
pub struct TiffSlide {
    path: PathBuf,
    vendor: &'static str,
    levels: Vec<Level>,
    readers: Vec<LevelReader>,
    associated: Vec<(String, IfdInfo)>,
    mpp: MppInfo,
    objective_power: Option<f64>,
    properties: BTreeMap<String, String>,
    cache: Mutex<TileCache>,
}

impl std::fmt::Debug for TiffSlide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffSlide")
            .field("path", &self.path)
            .field("vendor", &self.vendor)
            .field("levels", &self.levels)
            .field("mpp", &self.mpp)
            .finish_non_exhaustive()
    }
}

impl TiffSlide {
    /// Opens a TIFF-based slide with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SlideError> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens a TIFF-based slide: reads every IFD's tags (no pixels), picks
    /// the levels and associated images, and settles the mpp.
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Self, SlideError> {
        let path = path.as_ref();
        let ifds = scan_ifds(path)?;
        let first = ifds.first().ok_or_else(|| SlideError::NoLevels { path: path.to_owned() })?;
        let is_aperio = first.description.as_deref().is_some_and(|d| d.starts_with("Aperio"));

        let mut properties = BTreeMap::new();
        if let Some(d) = &first.description {
            properties.insert("tiff.ImageDescription".to_owned(), d.clone());
        }
        let (level_ifds, associated) = if is_aperio {
            properties.extend(parse_aperio_description(first.description.as_deref().unwrap_or_default()));
            aperio_layout(&ifds)
        } else {
            (generic_levels(&ifds), Vec::new())
        };
        let vendor = if is_aperio { "aperio" } else { "generic-tiff" };
        properties.insert("mitoscope.vendor".into(), vendor.into());

        let base = level_ifds.first().ok_or_else(|| SlideError::NoLevels { path: path.to_owned() })?;
        let (w0, h0) = (base.width as f64, base.height as f64);
        let mut levels = Vec::new();
        let mut readers = Vec::new();
        for info in &level_ifds {
            let layout = info.layout.clone().map_err(|what| SlideError::Unsupported {
                path: path.to_owned(),
                ifd: info.index,
                what,
            })?;
            let downsample =
                if levels.is_empty() { 1.0 } else { (w0 / info.width as f64 + h0 / info.height as f64) / 2.0 };
            levels.push(Level {
                width: info.width as u64,
                height: info.height as u64,
                downsample,
                tile_width: info.chunk.0,
                tile_height: info.chunk.1,
            });
            let mut decoder = decoder_at(path, info.index)?;
            let raw_chunks = match layout {
                Layout::Jpeg2000 { .. } => chunk_locations(&mut decoder, info.tiled)
                    .map_err(|source| SlideError::Tiff { path: path.to_owned(), ifd: info.index, source })?,
                _ => Vec::new(),
            };
            readers.push(LevelReader { ifd: info.index, layout, decoder: Mutex::new(decoder), raw_chunks });
        }

        let objective_power = properties.get("aperio.AppMag").and_then(|v| v.trim().parse::<f64>().ok());
        let aperio_mpp = properties.get("aperio.MPP").and_then(|v| v.trim().parse::<f64>().ok());
        let mpp = settle_mpp(path, options.mpp_override, aperio_mpp, base.mpp_from_resolution, objective_power);

        Ok(Self {
            path: path.to_owned(),
            vendor,
            levels,
            readers,
            associated,
            mpp,
            objective_power,
            properties,
            cache: Mutex::new(TileCache::new(options.tile_cache_bytes)),
        })
    }

    /// The decoded RGB8 data of one tile (or strip), via the cache.
    fn tile(&self, level: usize, col: u32, row: u32) -> Result<TileData, SlideError> {
        let l = &self.levels[level];
        let across = l.width.div_ceil(l.tile_width as u64) as u32;
        let index = row * across + col;
        if let Some(t) = lock(&self.cache).get((level, index)) {
            return Ok(t);
        }
        let reader = &self.readers[level];
        let (dw, dh) = (
            (l.tile_width as u64).min(l.width - col as u64 * l.tile_width as u64),
            (l.tile_height as u64).min(l.height - row as u64 * l.tile_height as u64),
        );
        if dw * dh > MAX_CHUNK_PIXELS {
            return Err(SlideError::TooLarge {
                path: self.path.clone(),
                what: format!("level {level} chunk {index} ({dw}x{dh})"),
                pixels: dw * dh,
                limit: MAX_CHUNK_PIXELS,
            });
        }
        let bad = |what: String| SlideError::BadTile {
            path: self.path.clone(),
            level,
            tile: index,
            what: format!("{what} (IFD {})", reader.ifd),
        };
        let rgb = if let Layout::Jpeg2000 { ycbcr } = reader.layout {
            let bytes = {
                let mut dec = lock(&reader.decoder);
                read_raw_chunk(dec.inner(), reader.raw_chunks.get(index as usize).copied())
                    .map_err(|e| bad(format!("cannot read the tile: {e}")))?
            };
            // Aperio stores edge tiles whole: decode the full tile, keep the image's part.
            let full = decode_jpeg2000(&bytes, (l.tile_width, l.tile_height), 3, ycbcr).map_err(bad)?;
            let row_bytes = dw as usize * 3;
            (0..dh as usize)
                .flat_map(|y| {
                    let start = y * l.tile_width as usize * 3;
                    full[start..start + row_bytes].iter().copied()
                })
                .collect()
        } else {
            let decoded = {
                let mut dec = lock(&reader.decoder);
                dec.read_chunk(index).map_err(|source| SlideError::Tile {
                    path: self.path.clone(),
                    level,
                    tile: index,
                    col,
                    row,
                    source,
                })?
            };
            to_rgb8(decoded, dw as usize, dh as usize, reader.layout).map_err(bad)?
        };
        let data = Arc::new(rgb);
        lock(&self.cache).insert((level, index), Arc::clone(&data));
        Ok(data)
    }
}

impl Slide for TiffSlide {
    fn path(&self) -> &Path {
        &self.path
    }
    fn vendor(&self) -> &str {
        self.vendor
    }
    fn levels(&self) -> &[Level] {
        &self.levels
    }
    fn mpp(&self) -> MppInfo {
        self.mpp
    }
    fn objective_power(&self) -> Option<f64> {
        self.objective_power
    }
    fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }
    fn associated_names(&self) -> Vec<String> {
        self.associated.iter().map(|(n, _)| n.clone()).collect()
    }

    fn read_associated(&self, name: &str) -> Result<RgbImage, SlideError> {
        let info = find_associated(&self.path, &self.associated, name)?;
        let unsupported = |what: String| SlideError::Unsupported { path: self.path.clone(), ifd: info.index, what };
        let layout = info.layout.clone().map_err(unsupported)?;
        check_associated_size(&self.path, name, info.width as u64 * info.height as u64)?;
        let mut dec = decoder_at(&self.path, info.index)?;
        let tiff_err = |source| SlideError::Tiff { path: self.path.clone(), ifd: info.index, source };
        let data = dec.read_image().map_err(tiff_err)?;
        let rgb = to_rgb8(data, info.width as usize, info.height as usize, layout)
            .map_err(|what| unsupported(format!("associated image '{name}': {what}")))?;
        RgbImage::from_raw(info.width, info.height, rgb)
            .ok_or_else(|| unsupported(format!("associated image '{name}': buffer size mismatch")))
    }

    fn read_region(&self, level: usize, x: i64, y: i64, width: u32, height: u32) -> Result<RgbImage, SlideError> {
        let (l, clip) = check_region(&self.path, &self.levels, level, x, y, width, height)?;
        assemble(&l, clip, width, height, |col, row| self.tile(level, col, row))
    }
}

fn open_decoder(path: &Path) -> Result<TiffDecoder, SlideError> {
    let file = File::open(path).map_err(|source| SlideError::Io { path: path.to_owned(), source })?;
    Decoder::new(BufReader::new(file)).map_err(|source| SlideError::Tiff { path: path.to_owned(), ifd: 0, source })
}

fn decoder_at(path: &Path, ifd: usize) -> Result<TiffDecoder, SlideError> {
    let mut dec = open_decoder(path)?;
    if ifd > 0 {
        dec.seek_to_image(ifd).map_err(|source| SlideError::Tiff { path: path.to_owned(), ifd, source })?;
    }
    Ok(dec)
}

/// Reads the tags of every IFD.
fn scan_ifds(path: &Path) -> Result<Vec<IfdInfo>, SlideError> {
    let mut dec = open_decoder(path)?;
    let mut out = Vec::new();
    loop {
        let index = out.len();
        out.push(ifd_info(path, &mut dec, index)?);
        if !dec.more_images() || out.len() >= MAX_IFDS {
            break;
        }
        if let Err(source) = dec.next_image() {
            // A broken IFD after level 0 (often a vendor extra) should not make
            // the slide unreadable: keep what we have, but say so.
            tracing::warn!("{}: stopping at unreadable IFD {}: {source}", path.display(), index + 1);
            break;
        }
    }
    Ok(out)
}

fn ifd_info(path: &Path, dec: &mut TiffDecoder, index: usize) -> Result<IfdInfo, SlideError> {
    let tiff_err = |source| SlideError::Tiff { path: path.to_owned(), ifd: index, source };
    let (width, height) = dec.dimensions().map_err(tiff_err)?;
    let description = match dec.find_tag(Tag::ImageDescription) {
        Ok(Some(v)) => v.into_string().ok(),
        _ => None,
    };
    let subfile_type = dec.find_tag_unsigned::<u32>(Tag::NewSubfileType).ok().flatten().unwrap_or(0);
    let tiled = dec.get_chunk_type() == ChunkType::Tile;
    let chunk = dec.chunk_dimensions();
    let layout = ifd_layout(dec, width, height, chunk);
    let mpp_from_resolution = resolution_mpp(dec);
    Ok(IfdInfo { index, width, height, tiled, chunk, description, subfile_type, layout, mpp_from_resolution })
}

/// Whether this reader can decode the IFD, and its sample layout.
fn ifd_layout(dec: &mut TiffDecoder, width: u32, height: u32, chunk: (u32, u32)) -> Result<Layout, String> {
    use tiff::ColorType;
    if width == 0 || height == 0 || chunk.0 == 0 || chunk.1 == 0 {
        return Err(format!("empty image or chunk ({width}x{height}, chunk {}x{})", chunk.0, chunk.1));
    }
    let compression = dec.find_tag_unsigned::<u16>(Tag::Compression).ok().flatten().unwrap_or(1);
    if matches!(compression, 33003 | 33005) {
        let samples = dec.find_tag_unsigned::<u16>(Tag::SamplesPerPixel).ok().flatten().unwrap_or(1);
        let bits = dec.find_tag_unsigned_vec::<u16>(Tag::BitsPerSample).ok().flatten().unwrap_or_default();
        if samples != 3 || bits.iter().any(|&b| b != 8) {
            return Err(format!("JPEG 2000 (compression {compression}) with {samples} samples of {bits:?} bits"));
        }
        return Ok(Layout::Jpeg2000 { ycbcr: compression == 33003 });
    }
    // 1 none, 5 LZW, 7 JPEG, 8 / 32946 deflate, 32773 PackBits: what `tiff` decodes.
    if !matches!(compression, 1 | 5 | 7 | 8 | 32946 | 32773) {
        return Err(format!("compression {compression}"));
    }
    if dec.find_tag_unsigned::<u16>(Tag::PlanarConfiguration).ok().flatten().unwrap_or(1) != 1 {
        return Err("planar (separate) sample configuration".into());
    }
    match dec.colortype() {
        Ok(ColorType::RGB(8)) => Ok(Layout::Rgb),
        Ok(ColorType::RGBA(8)) => Ok(Layout::Rgba),
        Ok(ColorType::Gray(8)) => Ok(Layout::Gray),
        Ok(ColorType::YCbCr(8)) if compression == 7 => Ok(Layout::YCbCr),
        Ok(other) => Err(format!("sample layout {other:?} (8-bit RGB, RGBA, gray or JPEG YCbCr expected)")),
        Err(e) => Err(format!("sample layout: {e}")),
    }
}

/// µm/px from XResolution + ResolutionUnit (shared with the HPF reader).
fn resolution_mpp(dec: &mut TiffDecoder) -> Option<f64> {
    mitoscope_imaging::tiff_decoder_mpp(dec)
}

/// `key = value` fields of an Aperio ImageDescription (`|`-separated after
/// the header line), as `aperio.KEY`.
pub(crate) fn parse_aperio_description(desc: &str) -> BTreeMap<String, String> {
    desc.split('|')
        .skip(1)
        .filter_map(|field| {
            let (k, v) = field.split_once('=')?;
            Some((format!("aperio.{}", k.trim()), v.trim().to_owned()))
        })
        .collect()
}

/// Aperio: tiled IFDs are levels; IFD 1 untiled is the thumbnail; untiled
/// IFDs named `label` / `macro` on their description's second line.
fn aperio_layout(ifds: &[IfdInfo]) -> (Vec<IfdInfo>, Vec<(String, IfdInfo)>) {
    let mut levels = Vec::new();
    let mut assoc = Vec::new();
    for info in ifds {
        if info.tiled {
            levels.push(info.clone());
            continue;
        }
        let second_line = info.description.as_deref().and_then(|d| d.lines().nth(1)).unwrap_or("");
        let name = if info.index == 1 {
            Some("thumbnail")
        } else if second_line.starts_with("label") {
            Some("label")
        } else if second_line.starts_with("macro") {
            Some("macro")
        } else {
            None
        };
        match name {
            Some(n) if !assoc.iter().any(|(m, _): &(String, IfdInfo)| m == n) => {
                assoc.push((n.to_owned(), info.clone()))
            }
            _ => {}
        }
    }
    (levels, assoc)
}

/// Generic TIFF: IFD 0 plus every smaller IFD with the same aspect ratio that
/// is not a transparency mask (NewSubfileType bit 2), largest first.
fn generic_levels(ifds: &[IfdInfo]) -> Vec<IfdInfo> {
    let Some(first) = ifds.first() else { return Vec::new() };
    let (w0, h0) = (first.width as f64, first.height as f64);
    let mut levels: Vec<IfdInfo> = vec![first.clone()];
    for info in &ifds[1..] {
        if info.subfile_type & 4 != 0 || info.width >= first.width || info.height >= first.height {
            continue;
        }
        let (dx, dy) = (w0 / info.width as f64, h0 / info.height as f64);
        // Same pyramid: the two downsamples agree up to rounding of the level size.
        let same_aspect = ((w0 / dy) - info.width as f64).abs() <= 1.5 || ((h0 / dx) - info.height as f64).abs() <= 1.5;
        if same_aspect && !levels.iter().any(|l| l.width == info.width) {
            levels.push(info.clone());
        }
    }
    levels.sort_by_key(|l| std::cmp::Reverse(l.width));
    levels
}

fn settle_mpp(
    path: &Path,
    override_mpp: Option<Mpp>,
    aperio_mpp: Option<f64>,
    resolution_mpp: Option<f64>,
    objective_power: Option<f64>,
) -> MppInfo {
    let stated = [(MppSource::AperioDescription, aperio_mpp), (MppSource::TiffResolution, resolution_mpp)];
    settle_mpp_from(path, override_mpp, &stated, objective_power)
}

/// The mpp precedence shared by the readers: the override, then the first
/// plausible stated value (`stated`, in order), then a guess from the
/// objective magnification, then [`DEFAULT_GUESS_MPP`] (guesses warn).
pub(crate) fn settle_mpp_from(
    path: &Path,
    override_mpp: Option<Mpp>,
    stated: &[(MppSource, Option<f64>)],
    objective_power: Option<f64>,
) -> MppInfo {
    let plausible = |mpp: Option<f64>| mpp.filter(|m| PLAUSIBLE_MPP.contains(m)).and_then(|m| Mpp::new(m).ok());
    if let Some(mpp) = override_mpp {
        return MppInfo { mpp, source: MppSource::Override, mpp_guessed: false };
    }
    for &(source, value) in stated {
        if let Some(mpp) = plausible(value) {
            return MppInfo { mpp, source, mpp_guessed: false };
        }
    }
    if let Some(mpp) = plausible(objective_power.filter(|m| *m > 0.0).map(|m| 10.0 / m)) {
        tracing::warn!("{}: no resolution stated; guessing {mpp} from the objective magnification", path.display());
        return MppInfo { mpp, source: MppSource::Magnification, mpp_guessed: true };
    }
    let mpp = Mpp::new(DEFAULT_GUESS_MPP).unwrap_or(Mpp::ICPR2012_APERIO);
    tracing::warn!("{}: no resolution or magnification stated; guessing {mpp}", path.display());
    MppInfo { mpp, source: MppSource::Default, mpp_guessed: true }
}

/// (offset, byte count) of every tile (or strip) of the decoder's current IFD.
fn chunk_locations(dec: &mut TiffDecoder, tiled: bool) -> tiff::TiffResult<Vec<(u64, u64)>> {
    let (offsets, counts) =
        if tiled { (Tag::TileOffsets, Tag::TileByteCounts) } else { (Tag::StripOffsets, Tag::StripByteCounts) };
    let offsets = dec.get_tag_u64_vec(offsets)?;
    let counts = dec.get_tag_u64_vec(counts)?;
    Ok(offsets.into_iter().zip(counts).collect())
}

/// The stored bytes of one chunk.
fn read_raw_chunk(file: &mut BufReader<File>, location: Option<(u64, u64)>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let (offset, count) = location.ok_or_else(|| std::io::Error::other("no such tile in the file"))?;
    if count > 4 * MAX_CHUNK_PIXELS * 3 {
        return Err(std::io::Error::other(format!("a tile of {count} bytes")));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; count as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Converts a decoded chunk of `width` x `height` to RGB8.
fn to_rgb8(data: DecodingResult, width: usize, height: usize, layout: Layout) -> Result<Vec<u8>, String> {
    let DecodingResult::U8(v) = data else {
        return Err("decoded samples are not 8-bit".into());
    };
    let n = width * height;
    let expected = n * layout.samples();
    if v.len() < expected {
        return Err(format!("expected {width}x{height}x{} = {expected} bytes, found {}", layout.samples(), v.len()));
    }
    Ok(match layout {
        Layout::Rgb => {
            let mut v = v;
            v.truncate(expected);
            v
        }
        Layout::Rgba => v.chunks_exact(4).take(n).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        Layout::Gray => v.iter().take(n).flat_map(|&g| [g, g, g]).collect(),
        Layout::YCbCr => v.chunks_exact(3).take(n).flat_map(|p| ycbcr_to_rgb(p[0], p[1], p[2])).collect(),
        Layout::Jpeg2000 { .. } => return Err("JPEG 2000 data is read raw, not through the TIFF decoder".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestLevel, pattern, write_precompressed_tiff, write_tiled_tiff};
    use crate::{Slide, open};

    /// Aperio's JPEG 2000 compressions: 33005 (RGB; the fixture's reversible
    /// transform decodes exactly) and 33003 (YCbCr, converted here; within
    /// the rounding of Pillow's RGB -> YCbCr). Two 48x32 tiles make an
    /// 88x32 level: the edge tile is stored whole and cut.
    #[test]
    fn aperio_jpeg2000_tiles_decode() {
        let rgb = include_bytes!("../tests/fixtures/pattern-48x32-lossless.j2k");
        let ycbcr = include_bytes!("../tests/fixtures/pattern-48x32-ycbcr.j2k");
        let tile = pattern(48, 32);
        for (compression, codestream, tolerance) in [(33005u16, &rgb[..], 0u8), (33003, &ycbcr[..], 2)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("j2k.tif");
            write_precompressed_tiff(&path, (88, 32), (48, 32), compression, codestream).unwrap();
            let s = TiffSlide::open(&path).unwrap();
            let r = s.read_region(0, 0, 0, 88, 32).unwrap();
            for (x, y, p) in r.enumerate_pixels() {
                let want = tile.get_pixel(x % 48, y);
                let worst = p.0.iter().zip(want.0).map(|(a, b)| a.abs_diff(b)).max().unwrap();
                assert!(worst <= tolerance, "{compression}: ({x}, {y}) {p:?} vs {want:?}");
            }
        }
        // A codestream of the wrong size fails the tile, naming it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wrong.tif");
        write_precompressed_tiff(&path, (64, 64), (64, 64), 33005, rgb).unwrap();
        let err = TiffSlide::open(&path).unwrap().read_region(0, 0, 0, 8, 8).unwrap_err().to_string();
        assert!(err.contains("wrong.tif") && err.contains("48x32"), "{err}");
    }

    #[test]
    fn aperio_description_fields() {
        let p = parse_aperio_description(
            "Aperio Image Library v11\r\n46000x32914 (240x240) JPEG/RGB Q=30|AppMag = 20|MPP = 0.4990|Date = 12/29/09",
        );
        assert_eq!(p["aperio.AppMag"], "20");
        assert_eq!(p["aperio.MPP"], "0.4990");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn mpp_precedence_and_guess_flag() {
        let p = Path::new("s.tiff");
        let o = Mpp::new(0.3).unwrap();
        assert_eq!(settle_mpp(p, Some(o), Some(0.5), None, None).source, MppSource::Override);
        let a = settle_mpp(p, None, Some(0.499), Some(0.2), Some(20.0));
        assert_eq!((a.mpp.get(), a.source, a.mpp_guessed), (0.499, MppSource::AperioDescription, false));
        assert_eq!(settle_mpp(p, None, None, Some(0.2), Some(20.0)).source, MppSource::TiffResolution);
        let m = settle_mpp(p, None, None, None, Some(40.0));
        assert_eq!((m.mpp.get(), m.mpp_guessed), (0.25, true));
        let d = settle_mpp(p, None, Some(f64::NAN), None, None);
        assert_eq!((d.mpp.get(), d.source, d.mpp_guessed), (DEFAULT_GUESS_MPP, MppSource::Default, true));
    }

    #[test]
    fn ycbcr_grey_and_red() {
        assert_eq!(ycbcr_to_rgb(128, 128, 128), [128, 128, 128]);
        let [r, g, b] = ycbcr_to_rgb(76, 85, 255);
        assert!(r > 250 && g < 5 && b < 5, "{r} {g} {b}");
    }

    /// Value of pixel (x, y) at `level` in the synthetic pyramids.
    fn px(level: usize, x: u32, y: u32) -> [u8; 3] {
        [(x % 251) as u8, (y % 241) as u8, (level * 40 + (x / 7 + y / 5) as usize % 40) as u8]
    }

    fn pyramid(dir: &Path, tiled: bool) -> PathBuf {
        let levels: Vec<TestLevel> = [(300u32, 200u32), (150, 100), (75, 50)]
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| TestLevel::from_fn(w, h, if tiled { Some((64, 48)) } else { None }, |x, y| px(i, x, y)))
            .collect();
        let path = dir.join(if tiled { "tiled.tiff" } else { "stripped.tiff" });
        write_tiled_tiff(&path, &levels, Some(4.0)).unwrap();
        path
    }

    #[test]
    fn synthetic_pyramid_levels_regions_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        for tiled in [true, false] {
            let path = pyramid(dir.path(), tiled);
            let s = open(&path).unwrap();
            assert_eq!(s.vendor(), "generic-tiff");
            assert_eq!(s.level_count(), 3);
            assert_eq!(s.dimensions(1), Some((150, 100)));
            assert_eq!(s.downsample(2), Some(4.0));
            // XResolution 40000 px/cm = 4 px/µm.
            let m = s.mpp();
            assert_eq!((m.mpp.get(), m.source, m.mpp_guessed), (0.25, MppSource::TiffResolution, false));
            assert!(s.associated_names().is_empty());
            for level in 0..3 {
                let (lw, lh) = s.dimensions(level).unwrap();
                // A region straddling tile boundaries, and one over the bottom-right edge.
                let r = s.read_region(level, 13, 7, 70, 51).unwrap();
                for (x, y, p) in r.enumerate_pixels() {
                    let (gx, gy) = (x as u64 + 13, y as u64 + 7);
                    let want = if gx < lw && gy < lh { px(level, gx as u32, gy as u32) } else { [255; 3] };
                    assert_eq!(p.0, want, "tiled {tiled} level {level} at ({gx}, {gy})");
                }
                let e = s.read_region(level, lw as i64 - 5, lh as i64 - 3, 10, 10).unwrap();
                assert_eq!(e.get_pixel(4, 2).0, px(level, lw as u32 - 1, lh as u32 - 1));
                assert_eq!(e.get_pixel(5, 2).0, [255; 3]);
                assert_eq!(e.get_pixel(4, 3).0, [255; 3]);
            }
            let err = s.read_region(0, 300, 0, 5, 5).unwrap_err();
            assert!(matches!(err, SlideError::RegionOutside { .. }), "{err}");
            assert!(err.to_string().contains("300x200"), "{err}");
            assert!(matches!(s.read_region(0, 0, 0, 0, 5), Err(SlideError::EmptyRegion { .. })));
            assert!(matches!(s.read_region(3, 0, 0, 1, 1), Err(SlideError::NoSuchLevel { .. })));
            assert!(matches!(s.read_associated("label"), Err(SlideError::NoSuchAssociated { .. })));
        }
    }

    #[test]
    fn truncated_synthetic_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = pyramid(dir.path(), true);
        assert!(open(&path).unwrap().read_region(0, 0, 0, 300, 200).is_ok());
        // The encoder writes tile data first and the IFDs last: cutting the
        // file loses the IFDs, so opening fails.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.tiff");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = open(&cut).map(|_| ()).unwrap_err();
        assert!(matches!(err, SlideError::Tiff { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.tiff"), "{err}");
    }

    #[test]
    fn tile_cache_serves_repeat_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = pyramid(dir.path(), true);
        let s = TiffSlide::open(&path).unwrap();
        let a = s.read_region(0, 0, 0, 100, 100).unwrap();
        assert!(lock(&s.cache).len() == 6, "2x3 tiles of 64x48 cover 100x100");
        let b = s.read_region(0, 0, 0, 100, 100).unwrap();
        assert_eq!(a, b);
    }
}
