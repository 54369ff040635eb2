//! The built-in DICOM whole-slide reader (VL Whole Slide Microscopy Image
//! Storage, the format of DICOM-native scanners and of converted archives).
//!
//! A DICOM slide is a *series* of files: one per pyramid level (image type
//! `VOLUME`), plus the `THUMBNAIL`, `LABEL` and `OVERVIEW` images. As
//! OpenSlide 4 does, [`DicomSlide::open_with`] takes any one file of the
//! series and gathers the others from the same folder by Series Instance UID
//! (and Pyramid UID, where the opened file has one).
//!
//! Attributes, nested sequences included, are parsed by dicom-rs
//! (`dicom-object`), read up to the pixel data only. Where the pixel data
//! and its frames lie is found by a header walk written here
//! ([`locate_pixel_data`], [`index_frames`]): dicom-rs's object API reads a
//! pixel data element into memory whole (a level can be gigabytes) and does
//! not report where its fragments lie in the file. The walk reads element
//! and item headers only; each frame is then read by offset when a region
//! needs it, through the same byte-bounded tile cache as the TIFF reader.
//! The walk runs before dicom-rs sees a file, and every declared length
//! must fit in the file: the parser allocates a value's declared length
//! before reading it.
//!
//! Decoded here: JPEG baseline / extended (8-bit, the common WSI transfer
//! syntaxes; via zune-jpeg, with colour conversion off for frames stored as
//! RGB), JPEG 2000 (via hayro-jpeg2000, pure Rust), RLE Lossless and
//! uncompressed 8-bit RGB or monochrome frames. Other transfer syntaxes
//! (JPEG-LS, HTJ2K, …) give a clear error; the `openslide` feature is tried
//! for them where the system OpenSlide reads DICOM (4.0+).
//! Tiles are placed in `TILED_FULL` order (first focal plane and optical
//! path) or, for `TILED_SPARSE`, by each frame's position in the total pixel
//! matrix; positions with no frame read as white.
//!
//! An image too large for one file may be split into a *concatenation*:
//! several files of one Concatenation UID, each holding a run of the frames
//! from its Concatenation Frame Offset Number on. Its parts are read as one
//! image, frames numbered across them; a missing or inconsistent part is an
//! error naming the concatenation.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions, Tag};
use image::RgbImage;

use crate::cache::{TileCache, TileData};
use crate::codec::{decode_jpeg2000, decode_rle, ycbcr_to_rgb_in_place};
use crate::region::{assemble, check_region};
use crate::tiff_slide::{MAX_CHUNK_PIXELS, settle_mpp_from};
use crate::{Level, MppInfo, MppSource, OpenOptions, Slide, SlideError, check_associated_size, find_associated, lock};

mod pixel_data;

use pixel_data::{PixelData, index_frames, locate_pixel_data};

/// SOP Class UID of VL Whole Slide Microscopy Image Storage.
pub const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";

/// Files of one folder inspected at most when gathering a series.
const MAX_SERIES_FILES: usize = 10_000;

/// How a file's frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// JPEG baseline or extended, 8-bit. `keep_colour`: the frames hold RGB
    /// (or grey) samples, not YCbCr, so the decoder must not convert them.
    Jpeg { keep_colour: bool },
    /// JPEG 2000. `ycbcr`: YCbCr components the codestream does not
    /// transform itself (`YBR_FULL`); `YBR_ICT` / `YBR_RCT` frames carry
    /// the transform in the codestream and decode to RGB.
    Jpeg2000 { ycbcr: bool },
    /// Uncompressed 8-bit samples.
    Native { planar: bool },
    /// RLE Lossless, one segment per sample plane. `ycbcr`: `YBR_FULL`
    /// samples, converted to RGB.
    Rle { ycbcr: bool },
}

/// Where each tile of an image lies among its frames.
#[derive(Debug, Clone)]
enum TileMap {
    /// `TILED_FULL`: row-major, the first `across * down` frames.
    Full { across: u32 },
    /// `TILED_SPARSE`: (column, row) of a tile -> frame.
    Sparse(HashMap<(u32, u32), usize>),
}

/// One frame: the file it is in (an index into [`DicomImage::files`]) and the
/// byte ranges (offset, length) of its fragments there.
type FrameRef = (usize, Vec<(u64, u64)>);

/// One DICOM image (a file, or the files of a concatenation) as a tiled
/// image: a level or an associated image.
struct DicomImage {
    width: u64,
    height: u64,
    tile_width: u32,
    tile_height: u32,
    samples: usize,
    codec: Codec,
    map: TileMap,
    /// Every frame, numbered across the parts of a concatenation.
    frames: Vec<FrameRef>,
    /// The files holding the frames (one, or the parts of a concatenation in order).
    files: Vec<(PathBuf, Mutex<File>)>,
}

/// Where a file sits in a concatenation (an image split across files).
#[derive(Debug, Clone, PartialEq)]
struct Concatenation {
    uid: String,
    /// Frames of the concatenation before this file's first (0-based).
    frame_offset: usize,
    /// This part's number (1-based) and the number of parts, where stated.
    part: Option<u32>,
    parts: Option<u32>,
}

/// What the attributes of one file say (no pixel data read).
#[derive(Debug, Clone)]
struct Instance {
    path: PathBuf,
    series_uid: String,
    pyramid_uid: Option<String>,
    /// Third value of Image Type: `VOLUME`, `THUMBNAIL`, `LABEL`, `OVERVIEW`.
    flavour: String,
    transfer_syntax: String,
    width: u64,
    height: u64,
    tile_width: u32,
    tile_height: u32,
    frames: usize,
    samples: usize,
    photometric: String,
    bits_allocated: u16,
    planar: bool,
    tiled_full: bool,
    /// 0-based top-left of each frame in the total pixel matrix, where given.
    positions: Option<Vec<(i64, i64)>>,
    concatenation: Option<Concatenation>,
    /// Where the frames are (the walk that checked the lengths found it).
    pixel_data: Option<PixelData>,
    spacing_um: Option<f64>,
    volume_width_um: Option<f64>,
    objective_power: Option<f64>,
    properties: BTreeMap<String, String>,
}

/// A DICOM whole-slide image (a series of files). Usually used as
/// `Box<dyn Slide>` from [`crate::open`].
pub struct DicomSlide {
    path: PathBuf,
    levels: Vec<Level>,
    images: Vec<DicomImage>,
    associated: Vec<(String, DicomImage)>,
    mpp: MppInfo,
    objective_power: Option<f64>,
    properties: BTreeMap<String, String>,
    cache: Mutex<TileCache>,
}

impl std::fmt::Debug for DicomSlide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomSlide")
            .field("path", &self.path)
            .field("levels", &self.levels)
            .field("mpp", &self.mpp)
            .finish_non_exhaustive()
    }
}

fn dicom_err(path: &Path, what: impl Into<String>) -> SlideError {
    SlideError::Dicom { path: path.to_owned(), what: what.into() }
}

impl DicomSlide {
    /// Opens the series that `path` belongs to, with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SlideError> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens the series that `path` belongs to: reads the attributes of every
    /// DICOM file in its folder, keeps those of the same series (and
    /// pyramid), makes the `VOLUME` images the levels (largest first) and
    /// the others the associated images, and indexes every frame.
    ///
    /// `path` may also be a folder holding one series: its largest `VOLUME`
    /// image is then the file opened (a folder of several series is an error
    /// that names them).
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Self, SlideError> {
        let path = path.as_ref();
        let (opened, series) = if path.is_dir() {
            series_in_folder(path)?
        } else {
            let opened = read_instance(path)?;
            let series = gather_series(&opened)?;
            (opened, series)
        };

        let mut volumes: Vec<Vec<&Instance>> = images_of(&series, "VOLUME");
        if volumes.is_empty() {
            let found: Vec<&str> = series.iter().map(|i| i.flavour.as_str()).collect();
            return Err(dicom_err(
                path,
                format!("series {} has no VOLUME image to read (found: {})", opened.series_uid, found.join(", ")),
            ));
        }
        // Largest first; one image per size (another focal plane or optical
        // path in its own file would repeat a size: the opened file, else the
        // first by name, wins).
        let holds_opened = |parts: &[&Instance]| parts.iter().any(|i| i.path == opened.path);
        volumes.sort_by(|a, b| {
            (b[0].width, b[0].height)
                .cmp(&(a[0].width, a[0].height))
                .then_with(|| holds_opened(b).cmp(&holds_opened(a)))
        });
        volumes.dedup_by_key(|parts| (parts[0].width, parts[0].height));

        let base = volumes[0][0];
        let (w0, h0) = (base.width as f64, base.height as f64);
        let mut levels = Vec::new();
        let mut images = Vec::new();
        for parts in &volumes {
            let inst = parts[0];
            let image = DicomImage::open(parts)?;
            let downsample =
                if levels.is_empty() { 1.0 } else { (w0 / inst.width as f64 + h0 / inst.height as f64) / 2.0 };
            levels.push(Level {
                width: inst.width,
                height: inst.height,
                downsample,
                tile_width: inst.tile_width,
                tile_height: inst.tile_height,
            });
            images.push(image);
        }

        let mut associated = Vec::new();
        for (flavour, name) in [("THUMBNAIL", "thumbnail"), ("LABEL", "label"), ("OVERVIEW", "macro")] {
            if let Some(parts) = images_of(&series, flavour).first() {
                match DicomImage::open(parts) {
                    Ok(image) => associated.push((name.to_owned(), image)),
                    Err(e) => tracing::warn!("{}: skipping the {name} image: {e}", path.display()),
                }
            }
        }

        let mut properties = base.properties.clone();
        properties.insert("mitoscope.vendor".into(), "dicom".into());
        properties.insert("dicom.TransferSyntaxUID".into(), base.transfer_syntax.clone());
        for (i, parts) in volumes.iter().enumerate() {
            properties.insert(format!("dicom.level[{i}].file"), parts[0].path.display().to_string());
            if parts.len() > 1 {
                properties.insert(format!("dicom.level[{i}].concatenation-parts"), parts.len().to_string());
            }
        }
        let objective_power = base.objective_power;
        let stated = [
            (MppSource::DicomPixelSpacing, base.spacing_um),
            (MppSource::DicomPixelSpacing, base.volume_width_um.map(|w| w / w0)),
        ];
        let mpp = settle_mpp_from(path, options.mpp_override, &stated, objective_power);

        Ok(Self {
            path: path.to_owned(),
            levels,
            images,
            associated,
            mpp,
            objective_power,
            properties,
            cache: Mutex::new(TileCache::new(options.tile_cache_bytes)),
        })
    }

    /// The decoded RGB8 data of one tile of a level, via the cache.
    fn tile(&self, level: usize, col: u32, row: u32) -> Result<TileData, SlideError> {
        let image = &self.images[level];
        let across = image.width.div_ceil(image.tile_width as u64) as u32;
        let index = row * across + col;
        if let Some(t) = lock(&self.cache).get((level, index)) {
            return Ok(t);
        }
        let data = Arc::new(image.tile(level, col, row)?);
        lock(&self.cache).insert((level, index), Arc::clone(&data));
        Ok(data)
    }
}

impl Slide for DicomSlide {
    fn path(&self) -> &Path {
        &self.path
    }
    fn vendor(&self) -> &str {
        "dicom"
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
        let image = find_associated(&self.path, &self.associated, name)?;
        check_associated_size(image.path(), name, image.width * image.height)?;
        let level = image.level();
        let (width, height) = (image.width as u32, image.height as u32);
        let (l, clip) = check_region(image.path(), &[level], 0, 0, 0, width, height)?;
        assemble(&l, clip, width, height, |col, row| image.tile(0, col, row).map(Arc::new))
    }

    fn read_region(&self, level: usize, x: i64, y: i64, width: u32, height: u32) -> Result<RgbImage, SlideError> {
        let (l, clip) = check_region(&self.path, &self.levels, level, x, y, width, height)?;
        assemble(&l, clip, width, height, |col, row| self.tile(level, col, row))
    }
}

impl DicomImage {
    /// Checks that the image (one file, or the parts of a concatenation in
    /// order, see [`images_of`]) can be decoded and indexes its frames.
    fn open(parts: &[&Instance]) -> Result<Self, SlideError> {
        let whole = joined(parts)?;
        let inst = &whole;
        let path = &inst.path;
        let err = |what: String| dicom_err(path, what);
        if inst.bits_allocated != 8 {
            return Err(err(format!("{} bits per sample; only 8-bit images are read", inst.bits_allocated)));
        }
        if inst.samples != 1 && inst.samples != 3 {
            return Err(err(format!("{} samples per pixel; only 1 (grey) or 3 (colour) are read", inst.samples)));
        }
        if inst.tile_width == 0 || inst.tile_height == 0 || inst.width == 0 || inst.height == 0 {
            return Err(err(format!(
                "empty image ({}x{} px in {}x{} tiles)",
                inst.width, inst.height, inst.tile_width, inst.tile_height
            )));
        }
        if inst.tile_width as u64 * inst.tile_height as u64 > MAX_CHUNK_PIXELS {
            return Err(err(format!("tiles of {}x{} px are too large", inst.tile_width, inst.tile_height)));
        }
        let photometric = inst.photometric.as_str();
        let codec = match inst.transfer_syntax.as_str() {
            // JPEG baseline (process 1) and extended (processes 2 and 4, 8-bit).
            "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => {
                Codec::Jpeg { keep_colour: matches!(photometric, "RGB" | "MONOCHROME2") }
            }
            // Explicit and implicit VR little endian: uncompressed frames.
            "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2" => {
                if !matches!(photometric, "RGB" | "MONOCHROME2") {
                    return Err(err(format!(
                        "uncompressed {photometric} frames are not read (RGB or MONOCHROME2 only)"
                    )));
                }
                Codec::Native { planar: inst.planar }
            }
            // JPEG 2000: lossless only (.90), lossy or lossless (.91).
            "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => {
                Codec::Jpeg2000 { ycbcr: matches!(photometric, "YBR_FULL" | "YBR_FULL_422") }
            }
            "1.2.840.10008.1.2.5" => {
                if !matches!(photometric, "RGB" | "MONOCHROME2" | "YBR_FULL") {
                    return Err(err(format!(
                        "RLE {photometric} frames are not read (RGB, YBR_FULL or MONOCHROME2 only)"
                    )));
                }
                Codec::Rle { ycbcr: photometric == "YBR_FULL" }
            }
            other => {
                return Err(err(format!(
                    "transfer syntax {other} ({}) is not decoded by the built-in reader (it reads JPEG baseline, JPEG 2000, RLE and uncompressed frames)",
                    transfer_syntax_name(other)
                )));
            }
        };
        let across = inst.width.div_ceil(inst.tile_width as u64);
        let down = inst.height.div_ceil(inst.tile_height as u64);
        // Tile indices are u32 (as in the TIFF reader and the tile cache).
        if across.checked_mul(down).is_none_or(|n| n > u32::MAX as u64) {
            return Err(err(format!("{}x{} px in {across}x{down} tiles is too many tiles", inst.width, inst.height)));
        }
        let map = match (&inst.positions, inst.tiled_full) {
            (Some(positions), false) => sparse_map(path, positions, inst.tile_width, inst.tile_height)?,
            _ => {
                if (inst.frames as u64) < across * down {
                    return Err(err(format!(
                        "{} frames for {across}x{down} tiles of {}x{} px (TILED_FULL needs one frame a tile)",
                        inst.frames, inst.tile_width, inst.tile_height
                    )));
                }
                TileMap::Full { across: u32::try_from(across).map_err(|_| err("too many tiles".into()))? }
            }
        };
        let frame_bytes = inst.tile_width as u64 * inst.tile_height as u64 * inst.samples as u64;
        let native = matches!(codec, Codec::Native { .. });
        let mut frames = Vec::with_capacity(inst.frames);
        let mut files = Vec::with_capacity(parts.len());
        for (k, part) in parts.iter().enumerate() {
            let mut reader = BufReader::new(open_file(&part.path)?);
            let part_err = |what: String| dicom_err(&part.path, what);
            let pixel = part.pixel_data.ok_or_else(|| part_err("no Pixel Data element".into()))?;
            let found =
                index_frames(&mut reader, pixel, part.frames, native.then_some(frame_bytes)).map_err(part_err)?;
            frames.extend(found.into_iter().map(|ranges| (k, ranges)));
            files.push((part.path.clone(), Mutex::new(reader.into_inner())));
        }
        Ok(Self {
            width: inst.width,
            height: inst.height,
            tile_width: inst.tile_width,
            tile_height: inst.tile_height,
            samples: inst.samples,
            codec,
            map,
            frames,
            files,
        })
    }

    /// Its (first) file, for messages about the image as a whole.
    fn path(&self) -> &Path {
        &self.files[0].0
    }

    /// This image as a single level (for associated images).
    fn level(&self) -> Level {
        Level {
            width: self.width,
            height: self.height,
            downsample: 1.0,
            tile_width: self.tile_width,
            tile_height: self.tile_height,
        }
    }

    /// Tile (`col`, `row`) as RGB8, cropped to the image (edge tiles are
    /// stored whole, padded); white where the image has no frame there.
    /// `level` only labels errors.
    fn tile(&self, level: usize, col: u32, row: u32) -> Result<Vec<u8>, SlideError> {
        let (tw, th) = (self.tile_width as u64, self.tile_height as u64);
        let dw = tw.min(self.width - col as u64 * tw) as usize;
        let dh = th.min(self.height - row as u64 * th) as usize;
        let frame = match &self.map {
            TileMap::Full { across } => Some((row * across + col) as usize),
            TileMap::Sparse(map) => map.get(&(col, row)).copied(),
        };
        let Some(frame) = frame else {
            return Ok(vec![255; dw * dh * 3]);
        };
        // Named after the file holding the frame (a concatenation has several).
        let file = self.frames.get(frame).and_then(|(k, _)| self.files.get(*k)).map_or(self.path(), |(p, _)| p);
        let bad = |what: String| SlideError::BadTile { path: file.to_owned(), level, tile: frame as u32, what };
        let bytes = self.read_frame(frame).map_err(|e| bad(format!("cannot read frame {}: {e}", frame + 1)))?;
        let samples = match self.codec {
            Codec::Jpeg { keep_colour } => self.decode_jpeg(bytes, keep_colour).map_err(bad)?,
            Codec::Jpeg2000 { ycbcr } => {
                decode_jpeg2000(&bytes, (self.tile_width, self.tile_height), self.samples, ycbcr).map_err(bad)?
            }
            Codec::Rle { ycbcr } => {
                let mut samples = decode_rle(&bytes, tw as usize * th as usize, self.samples).map_err(bad)?;
                if ycbcr && self.samples == 3 {
                    ycbcr_to_rgb_in_place(&mut samples);
                }
                samples
            }
            Codec::Native { planar } => {
                let n = tw as usize * th as usize;
                if bytes.len() < n * self.samples {
                    return Err(bad(format!("frame of {} bytes, expected {}", bytes.len(), n * self.samples)));
                }
                if planar && self.samples == 3 {
                    (0..n).flat_map(|i| [bytes[i], bytes[n + i], bytes[2 * n + i]]).collect()
                } else {
                    bytes
                }
            }
        };
        // Crop the stored tile to the part inside the image, as RGB.
        let mut out = Vec::with_capacity(dw * dh * 3);
        for y in 0..dh {
            let start = y * tw as usize;
            for x in start..start + dw {
                match self.samples {
                    3 => out.extend_from_slice(&samples[3 * x..3 * x + 3]),
                    _ => out.extend([samples[x]; 3]),
                }
            }
        }
        Ok(out)
    }

    /// The frame's bytes (its fragments, concatenated).
    fn read_frame(&self, frame: usize) -> std::io::Result<Vec<u8>> {
        let Some((k, parts)) = self.frames.get(frame) else {
            return Err(std::io::Error::other(format!("the image has {} frames", self.frames.len())));
        };
        let mut file = lock(&self.files[*k].1);
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.1 as usize).sum());
        for &(offset, len) in parts {
            file.seek(SeekFrom::Start(offset))?;
            let start = out.len();
            out.resize(start + len as usize, 0);
            file.read_exact(&mut out[start..])?;
        }
        Ok(out)
    }

    /// Decodes a JPEG frame to `samples`-per-pixel bytes of the full tile.
    fn decode_jpeg(&self, bytes: Vec<u8>, keep_colour: bool) -> Result<Vec<u8>, String> {
        use zune_core::colorspace::ColorSpace;
        use zune_core::options::DecoderOptions;
        // A JFIF stream is YCbCr by definition (libjpeg writes one from RGB
        // input unless told to keep RGB): convert it, whatever the
        // Photometric Interpretation claims.
        let jfif = bytes[..bytes.len().min(64)].windows(5).any(|w| w == b"JFIF\0");
        let keep_colour = keep_colour && !jfif;
        let mut decoder = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(bytes));
        decoder.decode_headers().map_err(|e| format!("JPEG: {e}"))?;
        let info = decoder.info().ok_or("JPEG: no frame header")?;
        if (info.width as u32, info.height as u32) != (self.tile_width, self.tile_height) {
            return Err(format!(
                "JPEG frame is {}x{}, the tiles are {}x{}",
                info.width, info.height, self.tile_width, self.tile_height
            ));
        }
        let out_colour = match (self.samples, keep_colour) {
            (1, _) => ColorSpace::Luma,
            // Stored RGB: take the samples as they are. Without an Adobe
            // marker the decoder assumes YCbCr: asking for YCbCr out then
            // skips its conversion. With the marker (transform 0) zune-jpeg
            // 0.5 reports CMYK until the frame header, then reads the three
            // components as RGB: ask for RGB.
            (_, true) if decoder.input_colorspace() == Some(ColorSpace::YCbCr) => ColorSpace::YCbCr,
            _ => ColorSpace::RGB,
        };
        decoder.set_options(DecoderOptions::default().jpeg_set_out_colorspace(out_colour));
        let data = decoder.decode().map_err(|e| format!("JPEG: {e}"))?;
        let expected = self.tile_width as usize * self.tile_height as usize * self.samples;
        if data.len() != expected {
            return Err(format!("JPEG decoded to {} bytes, expected {expected}", data.len()));
        }
        Ok(data)
    }
}

/// Tile grid of a `TILED_SPARSE` image from its frames' positions.
fn sparse_map(path: &Path, positions: &[(i64, i64)], tw: u32, th: u32) -> Result<TileMap, SlideError> {
    let mut map = HashMap::new();
    for (frame, &(x, y)) in positions.iter().enumerate() {
        if x < 0 || y < 0 || x % tw as i64 != 0 || y % th as i64 != 0 {
            return Err(dicom_err(
                path,
                format!("frame {} sits at ({x}, {y}), off the {tw}x{th} tile grid", frame + 1),
            ));
        }
        // Later focal planes and optical paths repeat positions: keep the first.
        map.entry(((x / tw as i64) as u32, (y / th as i64) as u32)).or_insert(frame);
    }
    Ok(TileMap::Sparse(map))
}

fn transfer_syntax_name(uid: &str) -> &'static str {
    match uid {
        "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => "JPEG lossless",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "JPEG-LS",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => "HTJ2K",
        "1.2.840.10008.1.2.5" => "RLE",
        "1.2.840.10008.1.2.1.99" => "deflated",
        "1.2.840.10008.1.2.2" => "big endian",
        _ => "unknown",
    }
}

fn open_file(path: &Path) -> Result<File, SlideError> {
    File::open(path).map_err(|source| SlideError::Io { path: path.to_owned(), source })
}

/// Reads the attributes of one file (up to its pixel data).
fn read_instance(path: &Path) -> Result<Instance, SlideError> {
    // Lengths first: dicom-rs allocates a value's declared length before
    // reading it (a 2 KB file declaring a 4 GB text took 4 GB and 6 s).
    let mut file = BufReader::new(open_file(path)?);
    let pixel_data = locate_pixel_data(&mut file).map_err(|e| dicom_err(path, format!("malformed: {e}")))?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| dicom_err(path, format!("cannot parse: {e}")))?;
    let sop_class = obj.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_owned();
    if sop_class != WSI_SOP_CLASS {
        return Err(dicom_err(
            path,
            format!("SOP class {sop_class} is not a whole-slide image (VL Whole Slide Microscopy, {WSI_SOP_CLASS})"),
        ));
    }
    let transfer_syntax = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']).to_owned();
    let missing = |what: &str| dicom_err(path, format!("missing or invalid {what}"));
    let image_type = obj.get(tags::IMAGE_TYPE).and_then(|e| e.to_multi_str().ok()).unwrap_or_default();
    let flavour = image_type.get(2).map(|s| s.trim().to_ascii_uppercase()).unwrap_or_default();
    let tile_width: u32 = int(&obj, tags::COLUMNS).ok_or_else(|| missing("Columns"))?;
    let tile_height: u32 = int(&obj, tags::ROWS).ok_or_else(|| missing("Rows"))?;
    let width = int(&obj, tags::TOTAL_PIXEL_MATRIX_COLUMNS).unwrap_or(tile_width as u64);
    let height = int(&obj, tags::TOTAL_PIXEL_MATRIX_ROWS).unwrap_or(tile_height as u64);
    let frames: usize = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    let organisation = text(&obj, tags::DIMENSION_ORGANIZATION_TYPE).unwrap_or_default();

    let shared = first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let spacing_mm = shared
        .and_then(|s| first_item(s, tags::PIXEL_MEASURES_SEQUENCE))
        .and_then(|m| m.get(tags::PIXEL_SPACING))
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| !v.is_empty() && v.iter().all(|s| s.is_finite() && *s > 0.0))
        .map(|v| v.iter().sum::<f64>() / v.len() as f64);
    let volume_width_mm =
        obj.get(tags::IMAGED_VOLUME_WIDTH).and_then(|e| e.to_float64().ok()).filter(|w| w.is_finite() && *w > 0.0);
    let objective_power = first_item(&obj, tags::OPTICAL_PATH_SEQUENCE)
        .and_then(|o| o.get(tags::OBJECTIVE_LENS_POWER))
        .and_then(|e| e.to_float64().ok())
        .filter(|p| p.is_finite() && *p > 0.0);

    let positions = obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()).map(|items| {
        items
            .iter()
            .map(|item| {
                let pos = first_item(item, tags::PLANE_POSITION_SLIDE_SEQUENCE);
                let at = |tag| pos.and_then(|p| int::<i64>(p, tag)).unwrap_or(0);
                // 1-based in the file.
                (
                    at(tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX) - 1,
                    at(tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX) - 1,
                )
            })
            .collect::<Vec<_>>()
    });

    let mut properties = BTreeMap::new();
    for (name, tag) in [
        ("Manufacturer", tags::MANUFACTURER),
        ("ManufacturerModelName", tags::MANUFACTURER_MODEL_NAME),
        ("DeviceSerialNumber", tags::DEVICE_SERIAL_NUMBER),
        ("SeriesInstanceUID", tags::SERIES_INSTANCE_UID),
        ("StudyInstanceUID", tags::STUDY_INSTANCE_UID),
        ("ContainerIdentifier", tags::CONTAINER_IDENTIFIER),
        ("PhotometricInterpretation", tags::PHOTOMETRIC_INTERPRETATION),
    ] {
        if let Some(v) = text(&obj, tag).filter(|v| !v.is_empty()) {
            properties.insert(format!("dicom.{name}"), v);
        }
    }
    if let Some(s) = spacing_mm {
        properties.insert("dicom.PixelSpacing".into(), format!("{s}"));
    }
    if let Some(p) = objective_power {
        properties.insert("dicom.ObjectiveLensPower".into(), format!("{p}"));
    }

    Ok(Instance {
        path: path.to_owned(),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID).ok_or_else(|| missing("Series Instance UID"))?,
        pyramid_uid: text(&obj, tags::PYRAMID_UID).filter(|s| !s.is_empty()),
        flavour,
        transfer_syntax,
        width,
        height,
        tile_width,
        tile_height,
        frames,
        samples: int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1),
        photometric: text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        bits_allocated: int(&obj, tags::BITS_ALLOCATED).unwrap_or(8),
        planar: int::<u16>(&obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1,
        tiled_full: organisation == "TILED_FULL" || positions.is_none(),
        positions,
        concatenation: concatenation_of(path, &obj)?,
        pixel_data,
        spacing_um: spacing_mm.map(|s| s * 1000.0),
        volume_width_um: volume_width_mm.map(|w| w * 1000.0),
        objective_power,
        properties,
    })
}

/// Where the file sits in a concatenation, if it is part of one.
fn concatenation_of(path: &Path, obj: &InMemDicomObject) -> Result<Option<Concatenation>, SlideError> {
    let uid = text(obj, tags::CONCATENATION_UID).filter(|s| !s.is_empty());
    let has_offset = obj.get(tags::CONCATENATION_FRAME_OFFSET_NUMBER).is_some();
    match (uid, has_offset) {
        (None, false) => Ok(None),
        (Some(uid), true) => {
            let frame_offset = int(obj, tags::CONCATENATION_FRAME_OFFSET_NUMBER)
                .ok_or_else(|| dicom_err(path, "invalid Concatenation Frame Offset Number"))?;
            Ok(Some(Concatenation {
                uid,
                frame_offset,
                part: int(obj, tags::IN_CONCATENATION_NUMBER),
                parts: int(obj, tags::IN_CONCATENATION_TOTAL_NUMBER),
            }))
        }
        (Some(_), false) => Err(dicom_err(path, "Concatenation UID without a Concatenation Frame Offset Number")),
        (None, true) => Err(dicom_err(path, "Concatenation Frame Offset Number without a Concatenation UID")),
    }
}

/// The images of one flavour in `series`, each as its files: one file, or
/// the parts of a concatenation sorted by frame offset. In series order.
fn images_of<'a>(series: &'a [Instance], flavour: &str) -> Vec<Vec<&'a Instance>> {
    let mut images: Vec<Vec<&Instance>> = Vec::new();
    for inst in series.iter().filter(|i| i.flavour == flavour) {
        let uid = inst.concatenation.as_ref().map(|c| &c.uid);
        match images.iter_mut().find(|parts| uid.is_some() && parts[0].concatenation.as_ref().map(|c| &c.uid) == uid) {
            Some(parts) => parts.push(inst),
            None => images.push(vec![inst]),
        }
    }
    for parts in &mut images {
        parts.sort_by_key(|i| i.concatenation.as_ref().map_or(0, |c| c.frame_offset));
    }
    images
}

/// The parts of an image as one instance: the first part's attributes with
/// every part's frames (and frame positions), after checking that the parts
/// describe one image and leave no frame out. One file not in a
/// concatenation is returned as it is.
fn joined(parts: &[&Instance]) -> Result<Instance, SlideError> {
    let first = parts[0];
    let Some(c) = &first.concatenation else { return Ok(first.clone()) };
    let err = |path: &Path, what: String| dicom_err(path, format!("concatenation {}: {what}", c.uid));
    if let Some(total) = parts.iter().find_map(|p| p.concatenation.as_ref().and_then(|c| c.parts))
        && total as usize != parts.len()
    {
        let here: Vec<String> = parts
            .iter()
            .map(|p| p.concatenation.as_ref().and_then(|c| c.part).map_or("?".into(), |n| n.to_string()))
            .collect();
        return Err(err(
            &first.path,
            format!(
                "{} of its {total} parts are in the folder (parts {}); a concatenated image needs every part",
                parts.len(),
                here.join(", ")
            ),
        ));
    }
    let geometry = |i: &Instance| {
        (
            i.width,
            i.height,
            i.tile_width,
            i.tile_height,
            i.samples,
            i.bits_allocated,
            i.planar,
            i.tiled_full,
            i.photometric.clone(),
            i.transfer_syntax.clone(),
        )
    };
    let mut expected = 0;
    let mut positions: Option<Vec<(i64, i64)>> = first.positions.as_ref().map(|_| Vec::new());
    for part in parts {
        let offset = part.concatenation.as_ref().map_or(0, |c| c.frame_offset);
        if geometry(part) != geometry(first) {
            return Err(err(
                &part.path,
                format!(
                    "its image attributes differ from {}'s (size, tiles, samples or encoding)",
                    first.path.display()
                ),
            ));
        }
        if offset != expected {
            return Err(err(
                &part.path,
                format!(
                    "starts at frame {} where frame {} is next (a part is missing or repeated)",
                    offset + 1,
                    expected + 1
                ),
            ));
        }
        expected += part.frames;
        match (&mut positions, &part.positions) {
            (Some(_), Some(mine)) if mine.len() != part.frames => {
                return Err(err(&part.path, format!("{} frame positions for {} frames", mine.len(), part.frames)));
            }
            (Some(all), Some(mine)) => all.extend(mine),
            (None, None) => {}
            _ => return Err(err(&part.path, "frame positions are given in some parts only".into())),
        }
    }
    Ok(Instance { frames: expected, positions, ..first.clone() })
}

/// The DICOM files of a folder (by their magic), sorted by name.
fn dicom_files_in(dir: &Path) -> Result<Vec<PathBuf>, SlideError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SlideError::Io { path: dir.to_owned(), source })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    paths.sort();
    if paths.len() > MAX_SERIES_FILES {
        tracing::warn!("{}: looking at the first {MAX_SERIES_FILES} files only for the series", dir.display());
        paths.truncate(MAX_SERIES_FILES);
    }
    paths.retain(|p| crate::read_head(p).is_ok_and(|h| crate::sniff(&h) == crate::Sniffed::Dicom));
    Ok(paths)
}

/// Whether `inst` belongs to the slide `opened` is part of: the same series,
/// and for levels the same pyramid where both name one.
fn same_slide(opened: &Instance, inst: &Instance) -> bool {
    let other_pyramid =
        inst.flavour == "VOLUME" && matches!((&opened.pyramid_uid, &inst.pyramid_uid), (Some(a), Some(b)) if a != b);
    inst.series_uid == opened.series_uid && !other_pyramid
}

/// The other files of `opened`'s series (and pyramid) in its folder, with it.
fn gather_series(opened: &Instance) -> Result<Vec<Instance>, SlideError> {
    let dir = match opened.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut series = vec![opened.clone()];
    for p in dicom_files_in(&dir)? {
        if same_file(&p, &opened.path) {
            continue;
        }
        match read_instance(&p) {
            Ok(inst) if same_slide(opened, &inst) => series.push(inst),
            Ok(_) => {}
            Err(e) => tracing::debug!("{}: not part of the series: {e}", p.display()),
        }
    }
    Ok(series)
}

/// The one series of a folder: its largest `VOLUME` image and all its files.
fn series_in_folder(dir: &Path) -> Result<(Instance, Vec<Instance>), SlideError> {
    let mut instances = Vec::new();
    let mut first_error = None;
    for p in dicom_files_in(dir)? {
        match read_instance(&p) {
            Ok(inst) => instances.push(inst),
            Err(e) => {
                tracing::debug!("{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    let mut uids: Vec<&str> =
        instances.iter().filter(|i| i.flavour == "VOLUME").map(|i| i.series_uid.as_str()).collect();
    uids.sort_unstable();
    uids.dedup();
    match uids.as_slice() {
        [] => Err(match first_error {
            Some(e) if instances.is_empty() => e,
            _ => dicom_err(
                dir,
                "the folder holds no DICOM whole-slide image (VOLUME); a slide folder holds one DICOM series",
            ),
        }),
        [_] => {
            let opened = instances
                .iter()
                .filter(|i| i.flavour == "VOLUME")
                .max_by_key(|i| (i.width * i.height, std::cmp::Reverse(i.path.clone())))
                .cloned()
                .ok_or_else(|| dicom_err(dir, "no VOLUME image"))?;
            let series = instances.into_iter().filter(|i| same_slide(&opened, i)).collect();
            Ok((opened, series))
        }
        several => Err(dicom_err(
            dir,
            format!(
                "the folder holds {} whole-slide series ({}); pass one file of the series to read",
                several.len(),
                several.join(", ")
            ),
        )),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    Some(v.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned())
}

fn int<T: num_from::FromI64>(obj: &InMemDicomObject, tag: Tag) -> Option<T> {
    let v: i64 = obj.get(tag)?.to_int::<i64>().ok()?;
    T::from_i64(v)
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// Checked conversion from the i64 that DICOM integers are read as.
mod num_from {
    pub trait FromI64: Sized {
        fn from_i64(v: i64) -> Option<Self>;
    }
    macro_rules! impl_from_i64 {
        ($($t:ty),*) => {$(
            impl FromI64 for $t {
                fn from_i64(v: i64) -> Option<Self> {
                    <$t>::try_from(v).ok()
                }
            }
        )*};
    }
    impl_from_i64!(u16, u32, u64, usize, i64);
}

#[cfg(test)]
mod tests {
    use super::pixel_data::UNDEFINED;
    use super::*;
    use crate::testutil::pattern;
    use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::meta::FileMetaTableBuilder;
    use image::Rgb;

    /// [`locate_pixel_data`] then [`index_frames`], as opening a file does.
    fn index_file<R: Read + Seek>(
        r: &mut R,
        frames: usize,
        frame_bytes: Option<u64>,
    ) -> Result<Vec<Vec<(u64, u64)>>, String> {
        let pixel = locate_pixel_data(r)?.ok_or("no Pixel Data element")?;
        index_frames(r, pixel, frames, frame_bytes)
    }

    const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    /// What a synthetic instance holds.
    struct Spec<'a> {
        series: &'a str,
        flavour: &'a str,
        transfer_syntax: &'a str,
        /// The whole image; split into `tile` x `tile` frames.
        image: RgbImage,
        tile: u32,
        /// TILED_SPARSE, leaving out these (column, row) tiles.
        sparse_without: Option<&'a [(u32, u32)]>,
        spacing_mm: Option<f64>,
        /// Tile height (else `tile`).
        tile_rows: Option<u32>,
        /// Every frame is this codestream (else JPEG or raw tiles of `image`).
        codestream: Option<&'a [u8]>,
        /// Photometric Interpretation (else from the transfer syntax).
        photometric: Option<&'a str>,
        /// This file is one part of a concatenation: the frames it holds.
        concatenation: Option<Part<'a>>,
    }

    /// One file of a concatenation.
    #[derive(Clone)]
    struct Part<'a> {
        uid: &'a str,
        /// 1-based part number and the number of parts.
        number: u32,
        of: u32,
        /// Frames (of the whole image's) in this file.
        frames: std::ops::Range<usize>,
    }

    impl<'a> Spec<'a> {
        fn volume(image: RgbImage, tile: u32) -> Self {
            Self {
                series: "1.2.3.4",
                flavour: "VOLUME",
                transfer_syntax: JPEG_BASELINE,
                image,
                tile,
                sparse_without: None,
                spacing_mm: Some(0.00025),
                tile_rows: None,
                codestream: None,
                photometric: None,
                concatenation: None,
            }
        }
    }

    const RLE: &str = "1.2.840.10008.1.2.5";

    /// Full-range (JFIF) RGB to YCbCr, to write `YBR_FULL` frames.
    fn rgb_to_ycbcr(p: &Rgb<u8>) -> [u8; 3] {
        let [r, g, b] = p.0.map(f32::from);
        let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        [
            c(0.299 * r + 0.587 * g + 0.114 * b),
            c(128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b),
            c(128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b),
        ]
    }

    fn jpeg(tile: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(tile).expect("encode JPEG");
        out
    }

    fn write(path: &Path, spec: &Spec) {
        let (w, h, t) = (spec.image.width(), spec.image.height(), spec.tile);
        let th = spec.tile_rows.unwrap_or(t);
        let (across, down) = (w.div_ceil(t), h.div_ceil(th));
        let mut tiles = Vec::new();
        for row in 0..down {
            for col in 0..across {
                if spec.sparse_without.is_some_and(|skip| skip.contains(&(col, row))) {
                    continue;
                }
                // Edge tiles are stored whole, padded with black.
                let tile = RgbImage::from_fn(t, th, |x, y| {
                    let (ix, iy) = (col * t + x, row * th + y);
                    if ix < w && iy < h { *spec.image.get_pixel(ix, iy) } else { Rgb([0, 0, 0]) }
                });
                tiles.push(((col, row), tile));
            }
        }
        if let Some(part) = &spec.concatenation {
            tiles = tiles.drain(part.frames.clone()).collect();
        }
        let item = |elements: Vec<DataElement<InMemDicomObject>>| InMemDicomObject::from_element_iter(elements);
        let seq = |tag, items: Vec<InMemDicomObject>| DataElement::new(tag, VR::SQ, DataSetSequence::from(items));
        let mut elements = vec![
            DataElement::new(
                tags::IMAGE_TYPE,
                VR::CS,
                PrimitiveValue::Strs(
                    ["DERIVED", "PRIMARY", spec.flavour, "NONE"].map(String::from).into_iter().collect(),
                ),
            ),
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, WSI_SOP_CLASS),
            DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                format!(
                    "{}.{}.{w}.{}",
                    spec.series,
                    spec.flavour.len(),
                    spec.concatenation.as_ref().map_or(0, |p| p.number)
                ),
            ),
            DataElement::new(tags::MANUFACTURER, VR::LO, "Mitoscope tests"),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, spec.series),
            DataElement::new(
                tags::DIMENSION_ORGANIZATION_TYPE,
                VR::CS,
                if spec.sparse_without.is_some() { "TILED_SPARSE" } else { "TILED_FULL" },
            ),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)),
            DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                spec.photometric.unwrap_or(if spec.transfer_syntax == JPEG_BASELINE { "YBR_FULL_422" } else { "RGB" }),
            ),
            DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, tiles.len().to_string()),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(th as u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(t as u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)),
            DataElement::new(tags::TOTAL_PIXEL_MATRIX_COLUMNS, VR::UL, PrimitiveValue::from(w)),
            DataElement::new(tags::TOTAL_PIXEL_MATRIX_ROWS, VR::UL, PrimitiveValue::from(h)),
        ];
        if let Some(part) = &spec.concatenation {
            elements.extend([
                DataElement::new(tags::CONCATENATION_UID, VR::UI, part.uid),
                DataElement::new(
                    tags::CONCATENATION_FRAME_OFFSET_NUMBER,
                    VR::UL,
                    PrimitiveValue::from(part.frames.start as u32),
                ),
                DataElement::new(tags::IN_CONCATENATION_NUMBER, VR::US, PrimitiveValue::from(part.number as u16)),
                DataElement::new(tags::IN_CONCATENATION_TOTAL_NUMBER, VR::US, PrimitiveValue::from(part.of as u16)),
            ]);
        }
        if let Some(s) = spec.spacing_mm {
            let measures = item(vec![DataElement::new(tags::PIXEL_SPACING, VR::DS, format!("{s}\\{s}"))]);
            elements.push(seq(
                tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
                vec![item(vec![seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures])])],
            ));
        }
        if spec.sparse_without.is_some() {
            let per_frame = tiles
                .iter()
                .map(|((col, row), _)| {
                    let position = item(vec![
                        DataElement::new(
                            tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                            VR::SL,
                            PrimitiveValue::from((col * t + 1) as i32),
                        ),
                        DataElement::new(
                            tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                            VR::SL,
                            PrimitiveValue::from((row * th + 1) as i32),
                        ),
                    ]);
                    item(vec![seq(tags::PLANE_POSITION_SLIDE_SEQUENCE, vec![position])])
                })
                .collect();
            elements.push(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
        }
        if let Some(codestream) = spec.codestream {
            let fragments = vec![codestream.to_vec(); tiles.len()];
            elements.push(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new(vec![], fragments)));
        } else if spec.transfer_syntax == RLE {
            let ybr = spec.photometric == Some("YBR_FULL");
            let fragments: Vec<Vec<u8>> = tiles
                .iter()
                .map(|(_, tile)| {
                    let samples: Vec<u8> =
                        if ybr { tile.pixels().flat_map(rgb_to_ycbcr).collect() } else { tile.as_raw().clone() };
                    crate::codec::tests::rle_frame(&samples, 3)
                })
                .collect();
            elements.push(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new(vec![], fragments)));
        } else if spec.transfer_syntax == EXPLICIT_LE {
            let bytes: Vec<u8> = tiles.iter().flat_map(|(_, tile)| tile.as_raw().clone()).collect();
            elements.push(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bytes.into())));
        } else {
            let fragments: Vec<Vec<u8>> = tiles.iter().map(|(_, tile)| jpeg(tile)).collect();
            elements.push(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new(vec![], fragments)));
        }
        let obj = InMemDicomObject::from_element_iter(elements)
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(spec.transfer_syntax))
            .expect("meta");
        obj.write_to_file(path).expect("write DICOM");
    }

    fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
    }

    #[test]
    fn tiled_full_jpeg_pyramid_with_label_reads_like_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(100, 70);
        let half = image::imageops::resize(&base, 50, 35, image::imageops::FilterType::Triangle);
        write(&dir.path().join("a_level0.dcm"), &Spec::volume(base.clone(), 32));
        write(&dir.path().join("b_level1.dcm"), &Spec::volume(half.clone(), 16));
        write(&dir.path().join("c_label.dcm"), &Spec { flavour: "LABEL", ..Spec::volume(pattern(20, 10), 32) });
        // Another series in the same folder is not part of this slide.
        write(&dir.path().join("d_other.dcm"), &Spec { series: "9.9", ..Spec::volume(pattern(300, 300), 64) });
        std::fs::write(dir.path().join("notes.txt"), "not DICOM").unwrap();

        // Any file of the series opens the whole series.
        for opened in ["b_level1.dcm", "c_label.dcm", "a_level0.dcm"] {
            let slide = DicomSlide::open(dir.path().join(opened)).unwrap();
            assert_eq!(slide.vendor(), "dicom");
            let dims: Vec<_> = slide.levels().iter().map(|l| (l.width, l.height, l.tile_width)).collect();
            assert_eq!(dims, [(100, 70, 32), (50, 35, 16)], "{opened}");
            assert!((slide.downsample(1).unwrap() - 2.0).abs() < 1e-9);
            assert_eq!(slide.associated_names(), ["label"]);
            let m = slide.mpp();
            assert_eq!((m.source, m.mpp_guessed), (MppSource::DicomPixelSpacing, false));
            assert!((m.mpp.get() - 0.25).abs() < 1e-9);
        }
        let slide = DicomSlide::open(dir.path().join("a_level0.dcm")).unwrap();
        // JPEG at quality 95 on 8-px blocks: close, not exact.
        let whole = slide.read_region(0, 0, 0, 100, 70).unwrap();
        assert!(max_diff(&whole, &base) <= 40, "{}", max_diff(&whole, &base));
        let mean: f64 = whole.as_raw().iter().zip(base.as_raw()).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
            / base.as_raw().len() as f64;
        assert!(mean < 4.0, "{mean}");
        // A region across tile borders equals the same pixels of the whole read.
        let part = slide.read_region(0, 30, 20, 40, 30).unwrap();
        let expected = image::imageops::crop_imm(&whole, 30, 20, 40, 30).to_image();
        assert_eq!(max_diff(&part, &expected), 0);
        // Past the right edge: white padding.
        let edge = slide.read_region(0, 90, 60, 20, 20).unwrap();
        assert_eq!(edge.get_pixel(15, 15).0, [255, 255, 255]);
        assert_eq!(edge.get_pixel(5, 5), whole.get_pixel(95, 65));
        let level1 = slide.read_region(1, 0, 0, 50, 35).unwrap();
        assert!(max_diff(&level1, &half) <= 40);
        assert_eq!(slide.read_associated("label").unwrap().dimensions(), (20, 10));
        assert!(slide.read_associated("macro").unwrap_err().to_string().contains("label"));
        assert!(slide.properties()["dicom.level[1].file"].ends_with("b_level1.dcm"));

        // The folder holds two series: opening the folder names both.
        let err = crate::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2 whole-slide series") && err.contains("1.2.3.4") && err.contains("9.9"), "{err}");
    }

    /// Frames in JPEG 2000 (codestreams written by Pillow, see
    /// tests/fixtures): the reversible transform decodes exactly, the
    /// irreversible one within its loss.
    #[test]
    fn jpeg2000_frames_decode_to_the_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(48, 32);
        for (name, codestream, photometric, tolerance) in [
            ("lossless", &include_bytes!("../tests/fixtures/pattern-48x32-lossless.j2k")[..], "YBR_RCT", 0),
            ("lossy", &include_bytes!("../tests/fixtures/pattern-48x32-lossy.j2k")[..], "YBR_ICT", 20),
        ] {
            let folder = dir.path().join(name);
            std::fs::create_dir(&folder).unwrap();
            let spec = Spec {
                transfer_syntax: if tolerance == 0 { "1.2.840.10008.1.2.4.90" } else { "1.2.840.10008.1.2.4.91" },
                codestream: Some(codestream),
                photometric: Some(photometric),
                ..Spec::volume(base.clone(), 48)
            };
            // 48-px tiles but a 48x32 frame: the size check must refuse it.
            write(&folder.join("square.dcm"), &spec);
            let err = DicomSlide::open(folder.join("square.dcm")).unwrap().read_region(0, 0, 0, 4, 4).unwrap_err();
            assert!(err.to_string().contains("48x32"), "{err}");
            std::fs::remove_file(folder.join("square.dcm")).unwrap();
            // One 48x32 tile: a 48x32 image.
            let path = folder.join("slide.dcm");
            write(&path, &Spec { tile_rows: Some(32), ..spec });
            let slide = DicomSlide::open(&path).unwrap();
            let read = slide.read_region(0, 0, 0, 48, 32).unwrap();
            assert!(max_diff(&read, &base) <= tolerance, "{name}: {}", max_diff(&read, &base));
        }
    }

    #[test]
    fn a_folder_of_one_series_opens_as_the_slide() {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("case-17");
        std::fs::create_dir(&case).unwrap();
        // Named so that the smaller level comes first.
        write(&case.join("1.dcm"), &Spec::volume(pattern(30, 20), 16));
        write(&case.join("2.dcm"), &Spec::volume(pattern(60, 40), 16));
        write(&case.join("3.dcm"), &Spec { flavour: "OVERVIEW", ..Spec::volume(pattern(20, 10), 16) });
        let slide = crate::open(&case).unwrap();
        assert_eq!(slide.path(), case.as_path());
        let dims: Vec<_> = slide.levels().iter().map(|l| (l.width, l.height)).collect();
        assert_eq!(dims, [(60, 40), (30, 20)]);
        assert_eq!(slide.associated_names(), ["macro"]);

        // A folder with no DICOM file, and one with only a label, say so.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        std::fs::write(empty.join("readme.txt"), "nothing here").unwrap();
        let err = crate::open(&empty).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("no DICOM whole-slide image"), "{err}");
        let labels = dir.path().join("labels");
        std::fs::create_dir(&labels).unwrap();
        write(&labels.join("l.dcm"), &Spec { flavour: "LABEL", ..Spec::volume(pattern(20, 10), 16) });
        let err = crate::open(&labels).unwrap_err().to_string();
        assert!(err.contains("labels") && err.contains("no DICOM whole-slide image"), "{err}");
    }

    /// A JFIF (YCbCr) frame in a file that says RGB, as converters that
    /// hand libjpeg RGB without keeping it write: converted all the same.
    #[test]
    fn jfif_frames_labelled_rgb_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(64, 32);
        assert!(jpeg(&base).windows(5).any(|w| w == b"JFIF\0"), "the encoder writes JFIF");
        write(&dir.path().join("rgb.dcm"), &Spec { photometric: Some("RGB"), ..Spec::volume(base.clone(), 32) });
        let read = DicomSlide::open(dir.path().join("rgb.dcm")).unwrap().read_region(0, 0, 0, 64, 32).unwrap();
        let mean = read.as_raw().iter().zip(base.as_raw()).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
            / base.as_raw().len() as f64;
        assert!(mean < 4.0, "{mean}");
    }

    #[test]
    fn uncompressed_and_sparse_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(40, 24);
        let spec = Spec {
            transfer_syntax: EXPLICIT_LE,
            sparse_without: Some(&[(1, 0)]),
            spacing_mm: None,
            ..Spec::volume(base.clone(), 16)
        };
        write(&dir.path().join("s.dcm"), &spec);
        let slide = DicomSlide::open(dir.path().join("s.dcm")).unwrap();
        let whole = slide.read_region(0, 0, 0, 40, 24).unwrap();
        for (x, y, p) in whole.enumerate_pixels() {
            if (16..32).contains(&x) && y < 16 {
                assert_eq!(p.0, [255, 255, 255], "the missing tile reads white");
            } else {
                assert_eq!(p, base.get_pixel(x, y), "({x}, {y})");
            }
        }
        // No spacing stated: guessed, and said so.
        assert!(slide.mpp().mpp_guessed);
    }

    #[test]
    fn rle_frames_decode_exactly_and_ybr_full_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(40, 24);
        let rgb = dir.path().join("rgb").join("rgb.dcm");
        std::fs::create_dir(rgb.parent().unwrap()).unwrap();
        write(&rgb, &Spec { transfer_syntax: RLE, ..Spec::volume(base.clone(), 16) });
        let whole = DicomSlide::open(&rgb).unwrap().read_region(0, 0, 0, 40, 24).unwrap();
        assert_eq!(max_diff(&whole, &base), 0, "RLE is lossless");

        let ybr = dir.path().join("ybr").join("ybr.dcm");
        std::fs::create_dir(ybr.parent().unwrap()).unwrap();
        write(&ybr, &Spec { transfer_syntax: RLE, photometric: Some("YBR_FULL"), ..Spec::volume(base.clone(), 16) });
        let whole = DicomSlide::open(&ybr).unwrap().read_region(0, 0, 0, 40, 24).unwrap();
        // Only the rounding of the two colour conversions.
        let d = max_diff(&whole, &base);
        assert!((1..=3).contains(&d), "converted back to RGB, off by {d}");

        // A frame that is not RLE fails as that tile, naming file and codec.
        let junk = dir.path().join("junk").join("junk.dcm");
        std::fs::create_dir(junk.parent().unwrap()).unwrap();
        write(
            &junk,
            &Spec { transfer_syntax: RLE, codestream: Some(&[3, 0, 0, 0, 64]), ..Spec::volume(base.clone(), 16) },
        );
        let err = DicomSlide::open(&junk).unwrap().read_region(0, 0, 0, 8, 8).unwrap_err();
        assert!(matches!(err, SlideError::BadTile { level: 0, tile: 0, .. }), "{err:?}");
        assert!(err.to_string().contains("junk.dcm") && err.to_string().contains("RLE"), "{err}");
        let odd = dir.path().join("odd").join("odd.dcm");
        std::fs::create_dir(odd.parent().unwrap()).unwrap();
        write(&odd, &Spec { transfer_syntax: RLE, photometric: Some("PALETTE COLOR"), ..Spec::volume(base, 16) });
        let err = DicomSlide::open(&odd).unwrap_err().to_string();
        assert!(err.contains("odd.dcm") && err.contains("PALETTE COLOR"), "{err}");
    }

    #[test]
    fn a_concatenated_level_reads_as_one_image() {
        let dir = tempfile::tempdir().unwrap();
        let base = pattern(100, 70); // 7 x 5 = 35 tiles of 16 px
        let half = image::imageops::resize(&base, 50, 35, image::imageops::FilterType::Triangle);
        let part = |number: u32, frames: std::ops::Range<usize>| Part { uid: "1.2.3.9", number, of: 3, frames };
        let level0 =
            |p: Part<'static>| Spec { transfer_syntax: RLE, concatenation: Some(p), ..Spec::volume(base.clone(), 16) };
        let parts = [part(1, 0..12), part(2, 12..30), part(3, 30..35)];
        // File names out of frame order: the frame offsets order the parts.
        for (name, p) in ["c.dcm", "a.dcm", "b.dcm"].iter().zip(&parts) {
            write(&dir.path().join(name), &level0(p.clone()));
        }
        write(&dir.path().join("level1.dcm"), &Spec::volume(half, 16));
        let slide = DicomSlide::open(dir.path().join("b.dcm")).unwrap();
        assert_eq!(slide.level_count(), 2);
        assert_eq!(slide.dimensions(0).unwrap(), (100, 70));
        assert_eq!(slide.properties()["dicom.level[0].concatenation-parts"], "3");
        let whole = slide.read_region(0, 0, 0, 100, 70).unwrap();
        assert_eq!(max_diff(&whole, &base), 0, "every frame from the right part, in order");

        // A missing part, a gap in the frames, a part of another geometry.
        std::fs::remove_file(dir.path().join("b.dcm")).unwrap();
        let err = DicomSlide::open(dir.path().join("a.dcm")).unwrap_err().to_string();
        assert!(err.contains("1.2.3.9") && err.contains("2 of its 3 parts") && err.contains("parts 1, 2"), "{err}");
        let two = |number, frames| Part { uid: "1.2.3.9", number, of: 2, frames };
        let gap = tempfile::tempdir().unwrap();
        write(&gap.path().join("p1.dcm"), &level0(two(1, 0..12)));
        write(&gap.path().join("p2.dcm"), &level0(two(2, 13..35)));
        let err = DicomSlide::open(gap.path().join("p1.dcm")).unwrap_err().to_string();
        assert!(err.contains("p2.dcm") && err.contains("starts at frame 14 where frame 13 is next"), "{err}");
        let mixed = tempfile::tempdir().unwrap();
        write(&mixed.path().join("p1.dcm"), &level0(two(1, 0..12)));
        write(
            &mixed.path().join("p2.dcm"),
            &Spec { concatenation: Some(two(2, 9..12)), ..Spec::volume(base.clone(), 32) },
        );
        let err = DicomSlide::open(mixed.path().join("p1.dcm")).unwrap_err().to_string();
        assert!(err.contains("p2.dcm") && err.contains("differ"), "{err}");

        // TILED_SPARSE across two parts: each part's frame positions place its frames.
        let sparse = tempfile::tempdir().unwrap();
        for (name, frames) in [("s1.dcm", 0..4), ("s2.dcm", 4..5)] {
            let spec = Spec {
                transfer_syntax: EXPLICIT_LE,
                sparse_without: Some(&[(1, 0)]),
                concatenation: Some(Part { uid: "1.2.3.10", number: 1 + frames.start as u32 / 4, of: 2, frames }),
                ..Spec::volume(pattern(40, 24), 16)
            };
            write(&sparse.path().join(name), &spec);
        }
        let whole = DicomSlide::open(sparse.path().join("s2.dcm")).unwrap().read_region(0, 0, 0, 40, 24).unwrap();
        let expected = RgbImage::from_fn(40, 24, |x, y| {
            if (16..32).contains(&x) && y < 16 { Rgb([255, 255, 255]) } else { *pattern(40, 24).get_pixel(x, y) }
        });
        assert_eq!(max_diff(&whole, &expected), 0);
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.dcm");
        write(&good, &Spec::volume(pattern(64, 64), 32));

        // Truncated inside the pixel data.
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut").join("cut.dcm");
        std::fs::create_dir(cut.parent().unwrap()).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 300]).unwrap();
        let err = DicomSlide::open(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.dcm") && err.contains("DICOM"), "{err}");

        // A corrupt frame fails alone, naming file, level and tile.
        let corrupt = dir.path().join("bad").join("bad.dcm");
        std::fs::create_dir(corrupt.parent().unwrap()).unwrap();
        let mut broken = bytes.clone();
        let last_sos = broken.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        broken[last_sos + 2..last_sos + 40].fill(0);
        std::fs::write(&corrupt, &broken).unwrap();
        let slide = DicomSlide::open(&corrupt).unwrap();
        assert!(slide.read_region(0, 0, 0, 32, 32).is_ok());
        let err = slide.read_region(0, 32, 32, 32, 32).unwrap_err();
        assert!(matches!(err, SlideError::BadTile { level: 0, tile: 3, .. }), "{err:?}");
        assert!(err.to_string().contains("bad.dcm"), "{err}");

        // Not a whole-slide image.
        let other = dir.path().join("ct").join("ct.dcm");
        std::fs::create_dir(other.parent().unwrap()).unwrap();
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3"),
        ])
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_LE))
        .unwrap()
        .write_to_file(&other)
        .unwrap();
        let err = crate::open(&other).unwrap_err().to_string();
        assert!(err.contains("ct.dcm") && err.contains("not a whole-slide image"), "{err}");

        // A transfer syntax the built-in reader does not decode.
        let jls = dir.path().join("jls").join("jls.dcm");
        std::fs::create_dir(jls.parent().unwrap()).unwrap();
        write(&jls, &Spec { transfer_syntax: "1.2.840.10008.1.2.4.80", ..Spec::volume(pattern(32, 32), 32) });
        let err = DicomSlide::open(&jls).unwrap_err().to_string();
        assert!(err.contains("jls.dcm") && err.contains("JPEG-LS"), "{err}");

        // JPEG frames labelled JPEG 2000: the tile fails, naming the codec.
        let j2k = dir.path().join("j2k").join("j2k.dcm");
        std::fs::create_dir(j2k.parent().unwrap()).unwrap();
        write(&j2k, &Spec { transfer_syntax: "1.2.840.10008.1.2.4.90", ..Spec::volume(pattern(32, 32), 32) });
        let err = DicomSlide::open(&j2k).unwrap().read_region(0, 0, 0, 8, 8).unwrap_err().to_string();
        assert!(err.contains("j2k.dcm") && err.contains("JPEG 2000"), "{err}");

        // A 4 GB length declared in a small file: refused before any parser
        // allocates it.
        let hostile = dir.path().join("hostile").join("hostile.dcm");
        std::fs::create_dir(hostile.parent().unwrap()).unwrap();
        let mut b = vec![0u8; 128];
        b.extend(b"DICM");
        for (element, uid) in [(0x0002u16, WSI_SOP_CLASS), (0x0003, "1.2.3"), (0x0010, EXPLICIT_LE)] {
            let mut v = uid.as_bytes().to_vec();
            if v.len() % 2 == 1 {
                v.push(0);
            }
            b.extend(2u16.to_le_bytes());
            b.extend(element.to_le_bytes());
            b.extend(b"UI");
            b.extend((v.len() as u16).to_le_bytes());
            b.extend(v);
        }
        b.extend(8u16.to_le_bytes());
        b.extend(0x0060u16.to_le_bytes());
        b.extend(b"UT\0\0");
        b.extend(0xFFFF_FFF0u32.to_le_bytes());
        b.extend(b"abc");
        std::fs::write(&hostile, b).unwrap();
        let err = crate::open(&hostile).unwrap_err().to_string();
        assert!(err.contains("hostile.dcm") && err.contains("malformed"), "{err}");

        // Garbage after the magic.
        let junk = dir.path().join("junk").join("junk.dcm");
        std::fs::create_dir(junk.parent().unwrap()).unwrap();
        let mut b = vec![0u8; 128];
        b.extend(b"DICM");
        b.extend([0xAB; 64]);
        std::fs::write(&junk, b).unwrap();
        let err = crate::open(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.dcm"), "{err}");
    }

    #[test]
    fn frames_are_found_past_nested_undefined_length_sequences() {
        // Explicit VR LE: a sequence of undefined length holding an item of
        // undefined length with a nested sequence, then encapsulated pixel
        // data with a Basic Offset Table grouping 3 fragments into 2 frames.
        let mut b = vec![0u8; 128];
        b.extend(b"DICM");
        let el = |b: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], value: &[u8]| {
            b.extend(g.to_le_bytes());
            b.extend(e.to_le_bytes());
            b.extend(vr);
            b.extend((value.len() as u16).to_le_bytes());
            b.extend(value);
        };
        let tag = |b: &mut Vec<u8>, g: u16, e: u16| {
            b.extend(g.to_le_bytes());
            b.extend(e.to_le_bytes());
        };
        el(&mut b, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.4.50\0");
        el(&mut b, 0x0008, 0x0060, b"CS", b"SM");
        // (5200,9229) SQ, undefined length.
        tag(&mut b, 0x5200, 0x9229);
        b.extend(b"SQ\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        tag(&mut b, 0xFFFE, 0xE000);
        b.extend(UNDEFINED.to_le_bytes());
        tag(&mut b, 0x0028, 0x9110);
        b.extend(b"SQ\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        tag(&mut b, 0xFFFE, 0xE000);
        b.extend(12u32.to_le_bytes());
        el(&mut b, 0x0028, 0x0030, b"DS", b"1\\1 ");
        tag(&mut b, 0xFFFE, 0xE0DD);
        b.extend(0u32.to_le_bytes());
        tag(&mut b, 0xFFFE, 0xE00D);
        b.extend(0u32.to_le_bytes());
        tag(&mut b, 0xFFFE, 0xE0DD);
        b.extend(0u32.to_le_bytes());
        // Pixel data: BOT [0, 20] (fragments of 4 and 4 bytes: items of 12).
        tag(&mut b, 0x7FE0, 0x0010);
        b.extend(b"OB\0\0");
        b.extend(UNDEFINED.to_le_bytes());
        tag(&mut b, 0xFFFE, 0xE000);
        b.extend(8u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(24u32.to_le_bytes());
        let mut starts = Vec::new();
        for fragment in [[1u8; 4], [2; 4], [3; 4]] {
            tag(&mut b, 0xFFFE, 0xE000);
            b.extend(4u32.to_le_bytes());
            starts.push(b.len() as u64);
            b.extend(fragment);
        }
        tag(&mut b, 0xFFFE, 0xE0DD);
        b.extend(0u32.to_le_bytes());
        // Meta group length is not needed by the walk; the (0002,0010) above is the group.
        let mut cursor = std::io::Cursor::new(b.clone());
        let frames = index_file(&mut cursor, 2, None).unwrap();
        assert_eq!(frames, vec![vec![(starts[0], 4), (starts[1], 4)], vec![(starts[2], 4)]]);
        // A table shorter than the frames is ignored: one fragment a frame.
        let one_each = index_file(&mut std::io::Cursor::new(b.clone()), 3, None).unwrap();
        assert_eq!(one_each, starts.iter().map(|&s| vec![(s, 4)]).collect::<Vec<_>>());
        // 3 fragments for 4 frames cannot be grouped.
        let err = index_file(&mut std::io::Cursor::new(b.clone()), 4, None).unwrap_err();
        assert!(err.contains("3 fragments for 4 frames"), "{err}");
        // An absurd offset-table length or frame count is an error, not an
        // allocation failure.
        let mut huge = b.clone();
        // BOT item: tag, length, two offsets; then the first fragment item: tag, length, data.
        let bot_len_at = starts[0] as usize - 8 - 8 - 4;
        assert_eq!(huge[bot_len_at..bot_len_at + 4], 8u32.to_le_bytes());
        huge[bot_len_at..bot_len_at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert!(index_file(&mut std::io::Cursor::new(huge), 2, None).is_err());
        let err = index_file(&mut std::io::Cursor::new(b.clone()), usize::MAX / 2, None).unwrap_err();
        assert!(err.contains("fragments for"), "{err}");
        let native = index_file(&mut std::io::Cursor::new(b.clone()), usize::MAX / 2, Some(1 << 20));
        assert!(native.is_err());
        // A length past the end of the file is an error, not a panic.
        let mut short = b.clone();
        short.truncate(b.len() - 14);
        assert!(index_file(&mut std::io::Cursor::new(short), 2, None).is_err());
    }
}
