//! Image and mask decoding for Mitoscope, with errors that name the file.
//!
//! - [`read_image`] decodes PNG, JPEG, TIFF and BMP into RGB8 (grayscale and
//!   RGBA inputs are converted; H&E is RGB).
//! - [`image_size`] reads only the header; [`stated_mpp`] the resolution a
//!   TIFF states.
//! - [`read_mask`] decodes a mask image and normalises the encodings datasets
//!   use (0/1, 0/255, RGB with any non-black foreground, masks stored as JPEG)
//!   to 0/255; [`read_mask_instances`] also keeps the figures of an instance
//!   map (one grey level or colour each) apart.
//!
//! ```
//! let mask = image::GrayImage::from_raw(3, 1, vec![0, 1, 0]).unwrap();
//! let norm = mitoscope_imaging::normalise_mask(&image::DynamicImage::ImageLuma8(mask), false);
//! assert_eq!(norm.as_raw(), &vec![0, 255, 0]);
//! ```
#![deny(missing_docs)]

mod resolution;

pub use resolution::{PLAUSIBLE_MPP, stated_mpp, tiff_decoder_mpp};

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Extensions Mitoscope reads as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

/// Whether `path` has an image extension (case-insensitive).
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// An image could not be read; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// Opening or reading the file failed.
    #[error("cannot read image {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a decodable image (corrupt, truncated, unknown format).
    #[error("cannot decode image {path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: image::ImageError,
    },
    /// The file ends before the image does (a decoder may still have
    /// returned pixels for the part that is there).
    #[error("image {path} is truncated: {detail}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: &'static str,
    },
    /// Decoding would take more memory than one image may (the `image`
    /// crate's default allocation limit).
    #[error(
        "image {path} is {width}x{height} ({megapixels:.0} megapixels), more than one image may take in memory \
         ({limit_mib} MiB decoded): cut it into fields, or read a whole slide with `mitoscope slide`"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Width in its header.
        width: u32,
        /// Height in its header.
        height: u32,
        /// Width x height / 10^6.
        megapixels: f64,
        /// The limit.
        limit_mib: u64,
    },
    /// The file holds no bytes at all (an interrupted copy or download).
    #[error("image {path} is an empty file (0 bytes)")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// Zero width or height.
    #[error("image {path} is empty ({width}x{height})")]
    Empty {
        /// The file.
        path: PathBuf,
        /// Width found.
        width: u32,
        /// Height found.
        height: u32,
    },
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, ImagingError> {
    ImageReader::open(path)
        .map_err(|source| ImagingError::Io { path: path.to_owned(), source })?
        .with_guessed_format()
        .map_err(|source| ImagingError::Io { path: path.to_owned(), source })
}

fn decode(path: &Path) -> Result<DynamicImage, ImagingError> {
    let bytes = std::fs::read(path).map_err(|source| ImagingError::Io { path: path.to_owned(), source })?;
    decode_bytes(&bytes, path)
}

/// Decodes an image held in memory (a file read whole, a zip entry); `path`
/// names it in errors. Refuses truncated JPEGs (no end-of-image marker after the last scan)
/// and zero-sized images.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<DynamicImage, ImagingError> {
    // Said plainly: the decoder's own words for no bytes are "format could not be determined".
    if bytes.is_empty() {
        return Err(ImagingError::EmptyFile { path: path.to_owned() });
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImagingError::Io { path: path.to_owned(), source })?;
    // BigTIFF (a TIFF past 4 GiB offsets, as scanners write large fields):
    // the tiff decoder reads it, but the format guess knows only classic TIFF.
    if reader.format().is_none() && (bytes.starts_with(b"II+\0") || bytes.starts_with(b"MM\0+")) {
        reader.set_format(ImageFormat::Tiff);
    }
    reader.limits(decode_limits());
    if reader.format() == Some(ImageFormat::Jpeg) && jpeg_is_truncated(bytes) {
        return Err(ImagingError::Truncated {
            path: path.to_owned(),
            detail: "no JPEG end-of-image marker after the last scan",
        });
    }
    let fail = |source: image::ImageError| match source {
        image::ImageError::Limits(_) => {
            too_large(bytes, path).unwrap_or(ImagingError::Decode { path: path.to_owned(), source })
        }
        source => ImagingError::Decode { path: path.to_owned(), source },
    };
    // As `ImageReader::decode`, but keeping the decoder to ask its orientation.
    let mut decoder = reader.into_decoder().map_err(fail)?;
    decode_limits().reserve(decoder.total_bytes()).map_err(fail)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(fail)?;
    if orientation != image::metadata::Orientation::NoTransforms {
        // Not applied, as OpenSlide and QuPath do not apply it either: the
        // coordinates then match theirs, but not a viewer that turns the image.
        tracing::warn!(
            "{}: its EXIF orientation ({orientation:?}) is not applied; coordinates are in the stored \
             pixel frame, as OpenSlide and QuPath read it",
            path.display()
        );
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(ImagingError::Empty { path: path.to_owned(), width: img.width(), height: img.height() });
    }
    if let Some(pages) = tiff_pages(bytes).filter(|&n| n > 1) {
        tracing::warn!(
            "{}: a TIFF of {pages} pages; only the first ({}x{}) is read (a whole-slide pyramid goes to `mitoscope slide`)",
            path.display(),
            img.width(),
            img.height()
        );
    }
    Ok(img)
}

/// Pages (IFDs) of TIFF `bytes`, counted up to 1000; `None` for other formats.
fn tiff_pages(bytes: &[u8]) -> Option<usize> {
    if !(bytes.starts_with(b"II") || bytes.starts_with(b"MM")) {
        return None;
    }
    let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)).ok()?;
    let mut pages = 1;
    while pages < 1000 && dec.more_images() && dec.next_image().is_ok() {
        pages += 1;
    }
    Some(pages)
}

/// Most memory one decoded image may take: 2 GiB, about 26000 x 26000 RGB
/// px, four times the `image` crate's default, so that a large region
/// exported from a slide (14000 x 14000 px is 0.6 GB) is read whole, while a
/// header claiming gigapixels is still refused before anything is allocated.
pub const MAX_DECODED_BYTES: u64 = 2 << 30;

fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}

/// [`ImagingError::TooLarge`] with the size in the image's header, when it has one.
fn too_large(bytes: &[u8], path: &Path) -> Option<ImagingError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?;
    let (width, height) = reader.into_dimensions().ok()?;
    Some(ImagingError::TooLarge {
        path: path.to_owned(),
        width,
        height,
        megapixels: f64::from(width) * f64::from(height) / 1e6,
        limit_mib: MAX_DECODED_BYTES / (1024 * 1024),
    })
}

/// Whether JPEG `bytes` stop inside the image: no end-of-image marker
/// (FF D9) after the last start-of-scan marker (FF DA).
///
/// Written here because `image`'s JPEG decoder (zune-jpeg) fills a cut-off
/// scan with grey and returns success, and `image` exposes no strict mode: a
/// half-downloaded HPF would be scored as a field half empty of cells. PNG,
/// TIFF and BMP decoders already fail on a short file. Entropy-coded scan
/// data stuffs every FF byte with 00, so neither marker can occur inside a
/// scan; an EXIF thumbnail's own markers come before the main image's scans.
/// Bytes without any scan are left to the decoder to reject.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    const SOS: [u8; 2] = [0xFF, 0xDA];
    const EOI: [u8; 2] = [0xFF, 0xD9];
    match bytes.windows(2).rposition(|w| w == SOS) {
        Some(last_scan) => !bytes[last_scan..].windows(2).any(|w| w == EOI),
        None => false,
    }
}

/// Width and height from the header, without decoding pixels.
pub fn image_size(path: &Path) -> Result<(u32, u32), ImagingError> {
    let bytes = std::fs::metadata(path).map_err(|source| ImagingError::Io { path: path.to_owned(), source })?.len();
    if bytes == 0 {
        return Err(ImagingError::EmptyFile { path: path.to_owned() });
    }
    let (w, h) =
        reader(path)?.into_dimensions().map_err(|source| ImagingError::Decode { path: path.to_owned(), source })?;
    if w == 0 || h == 0 {
        return Err(ImagingError::Empty { path: path.to_owned(), width: w, height: h });
    }
    Ok((w, h))
}

/// Decodes an image to RGB8.
pub fn read_image(path: &Path) -> Result<RgbImage, ImagingError> {
    Ok(decode(path)?.into_rgb8())
}

/// Whether every pixel is grey (R = G = B): a grayscale file, or one saved
/// as RGB without colour. H&E is told apart by its stains' colours, so a
/// detector can only guess on such an image; callers warn. Stops at the
/// first coloured pixel, so a colour image costs next to nothing.
pub fn is_grayscale(img: &RgbImage) -> bool {
    img.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])
}

/// Whether the file is stored lossily (JPEG), so mask values near zero are noise.
fn is_lossy(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

/// Decodes a mask image to 0/255 (see [`normalise_mask`]).
pub fn read_mask(path: &Path) -> Result<GrayImage, ImagingError> {
    Ok(normalise_mask(&decode(path)?, is_lossy(path)))
}

/// Per-pixel instance labels of a mask that tells its figures apart by grey
/// level or colour (0 = background).
pub type InstanceLabels = image::ImageBuffer<image::Luma<u32>, Vec<u32>>;

/// Decodes a mask to 0/255 (see [`normalise_mask`]) and, where it is an
/// instance map, its labels (see [`instance_labels`]).
pub fn read_mask_instances(path: &Path) -> Result<(GrayImage, Option<InstanceLabels>), ImagingError> {
    let img = decode(path)?;
    let lossy = is_lossy(path);
    Ok((normalise_mask(&img, lossy), instance_labels(&img, lossy)))
}

/// The mask's labels when it is an instance map (each figure its own grey
/// level or colour, as instance-segmentation datasets store them), so that
/// two figures that touch stay two. It is one when it is stored losslessly,
/// holds at least two foreground values, and every value meets the
/// background along more of its outline than it meets other values: figures
/// that touch share only a stretch of their outlines. A binary mask has one
/// value; a value inside a figure (a stray line, a two-tone figure, an
/// anti-aliased figure's core inside its grey rim) meets little or no
/// background, and the mask is then read as binary. `None` otherwise (also
/// for 16-bit colour and float masks).
pub fn instance_labels(img: &DynamicImage, lossy: bool) -> Option<InstanceLabels> {
    if lossy {
        return None;
    }
    let (w, h) = (img.width(), img.height());
    let pack = |r: u8, g: u8, b: u8| u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b);
    let keys: Vec<u32> = match img {
        DynamicImage::ImageLuma8(g) => g.as_raw().iter().map(|&v| u32::from(v)).collect(),
        DynamicImage::ImageLuma16(g) => g.as_raw().iter().map(|&v| u32::from(v)).collect(),
        DynamicImage::ImageLumaA8(g) => {
            g.as_raw().chunks_exact(2).map(|p| if p[1] == 0 { 0 } else { u32::from(p[0]) }).collect()
        }
        DynamicImage::ImageRgb8(c) => c.as_raw().chunks_exact(3).map(|p| pack(p[0], p[1], p[2])).collect(),
        DynamicImage::ImageRgba8(c) => {
            c.as_raw().chunks_exact(4).map(|p| if p[3] == 0 { 0 } else { pack(p[0], p[1], p[2]) }).collect()
        }
        _ => return None,
    };
    let mut foreground = keys.iter().copied().filter(|&k| k != 0);
    let first = foreground.next()?;
    foreground.find(|&k| k != first)?;
    // Per value: pixel edges shared with the background, and with other values.
    let mut outline: std::collections::HashMap<u32, (u64, u64)> = std::collections::HashMap::new();
    let mut tally = |a: u32, b: u32| match (a, b) {
        _ if a == b => {}
        (0, v) | (v, 0) => outline.entry(v).or_default().0 += 1,
        _ => {
            outline.entry(a).or_default().1 += 1;
            outline.entry(b).or_default().1 += 1;
        }
    };
    let (w_us, h_us) = (w as usize, h as usize);
    for y in 0..h_us {
        let row = &keys[y * w_us..(y + 1) * w_us];
        for x in 0..w_us {
            if x + 1 < w_us {
                tally(row[x], row[x + 1]);
            }
            if y + 1 < h_us {
                tally(row[x], keys[(y + 1) * w_us + x]);
            }
        }
    }
    if outline.values().any(|&(background, others)| others >= background) {
        return None;
    }
    InstanceLabels::from_raw(w, h, keys)
}

/// Normalises a mask to 0/255. Foreground is any pixel whose brightest channel
/// is non-zero (0/1, 0/255 and coloured-label masks alike); for lossy (JPEG)
/// masks the cut is at 128, since compression leaves low non-zero noise.
/// Where alpha is used, a fully transparent pixel is background whatever its
/// colour (a white, transparent background), and a mask drawn in alpha alone
/// (colour channels all zero) is read from its alpha.
pub fn normalise_mask(img: &DynamicImage, lossy: bool) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    if img.color().has_alpha() {
        let cut: u16 = if lossy { 32768 } else { 1 };
        let rgba = img.to_rgba16();
        let colour = |p: &[u16]| p[0].max(p[1]).max(p[2]) >= cut;
        let pixels = || rgba.as_raw().chunks_exact(4);
        let alpha_used = pixels().any(|p| p[3] < u16::MAX);
        if alpha_used {
            let colour_used = pixels().any(colour);
            let out: Vec<u8> = pixels()
                .map(|p| {
                    let on = if colour_used { colour(p) && p[3] > 0 } else { p[3] >= cut };
                    if on { 255 } else { 0 }
                })
                .collect();
            return GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h));
        }
    }
    // Work on raw buffers: GZMH has 1534 masks of 2084x2084, and per-pixel
    // accessors cost ~30x more than a slice map.
    let out: Vec<u8> = match img {
        DynamicImage::ImageLuma8(g) => {
            let cut = if lossy { 128 } else { 1 };
            g.as_raw().iter().map(|&v| if v >= cut { 255 } else { 0 }).collect()
        }
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) | DynamicImage::ImageLumaA8(_) => {
            let cut = if lossy { 128 } else { 1 };
            let rgb = img.to_rgb8();
            rgb.as_raw().chunks_exact(3).map(|p| if p[0].max(p[1]).max(p[2]) >= cut { 255 } else { 0 }).collect()
        }
        _ => {
            // 16-bit and float masks: compare in 16 bits.
            let cut: u16 = if lossy { 32768 } else { 1 };
            let rgb = img.to_rgb16();
            rgb.as_raw().chunks_exact(3).map(|p| if p[0].max(p[1]).max(p[2]) >= cut { 255 } else { 0 }).collect()
        }
    };
    GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb, RgbImage};

    #[test]
    fn grayscale_is_told_from_colour_by_one_pixel() {
        let mut img = RgbImage::from_pixel(4, 4, Rgb([120, 120, 120]));
        assert!(is_grayscale(&img));
        let luma = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, Luma([7]))).into_rgb8();
        assert!(is_grayscale(&luma));
        img.put_pixel(3, 3, Rgb([120, 121, 120]));
        assert!(!is_grayscale(&img));
    }

    #[test]
    fn instance_maps_are_told_from_binary_and_anti_aliased_masks() {
        use image::{GrayImage, Rgb};
        let disc = |m: &mut GrayImage, cx: i32, cy: i32, v: u8| {
            for (x, y, p) in m.enumerate_pixels_mut() {
                if (x as i32 - cx).pow(2) + (y as i32 - cy).pow(2) <= 100 {
                    *p = Luma([v]);
                }
            }
        };
        // Two touching discs numbered 1 and 2, and a lone one numbered 3.
        let mut m = GrayImage::new(80, 40);
        disc(&mut m, 12, 15, 1);
        disc(&mut m, 30, 15, 2);
        disc(&mut m, 60, 25, 3);
        let labels = instance_labels(&DynamicImage::ImageLuma8(m.clone()), false).expect("an instance map");
        assert_eq!((labels.get_pixel(12, 15).0[0], labels.get_pixel(30, 15).0[0]), (1, 2));
        assert!(instance_labels(&DynamicImage::ImageLuma8(m.clone()), true).is_none(), "JPEG values are noise");
        // The same as colours.
        let rgb = RgbImage::from_fn(80, 40, |x, y| match m.get_pixel(x, y).0[0] {
            0 => Rgb([0, 0, 0]),
            1 => Rgb([255, 0, 0]),
            2 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        assert!(instance_labels(&DynamicImage::ImageRgb8(rgb), false).is_some());
        // Binary: one value.
        let binary = GrayImage::from_fn(80, 40, |x, y| Luma([if m.get_pixel(x, y).0[0] > 0 { 255 } else { 0 }]));
        assert!(instance_labels(&DynamicImage::ImageLuma8(binary.clone()), false).is_none());
        // Anti-aliased: each disc's edge pixels are grey, around a white core.
        let mut soft = binary.clone();
        for (x, y, p) in binary.enumerate_pixels() {
            let edge = p.0[0] == 255
                && [(1i32, 0i32), (-1, 0), (0, 1), (0, -1)].iter().any(|(dx, dy)| {
                    let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                    nx < 0 || ny < 0 || binary.get_pixel_checked(nx as u32, ny as u32).is_none_or(|q| q.0[0] == 0)
                });
            if edge {
                soft.put_pixel(x, y, Luma([96 + (x % 3) as u8 * 40]));
            }
        }
        assert!(instance_labels(&DynamicImage::ImageLuma8(soft), false).is_none());
        // A stray line of another value across one binary figure, and a
        // figure with a core of another value: binary, not three figures.
        let mut stray = binary.clone();
        for x in 50..71 {
            stray.put_pixel(x, 25, Luma([254]));
        }
        assert!(instance_labels(&DynamicImage::ImageLuma8(stray), false).is_none());
        let mut two_tone = binary.clone();
        for (x, y) in [(60, 25), (61, 25), (60, 26), (61, 26)] {
            two_tone.put_pixel(x, y, Luma([128]));
        }
        assert!(instance_labels(&DynamicImage::ImageLuma8(two_tone), false).is_none());
    }

    #[test]
    fn alpha_masks() {
        use image::{Rgba, RgbaImage};
        // Drawn in alpha alone: colour all zero.
        let mut m = RgbaImage::from_pixel(3, 1, Rgba([0, 0, 0, 0]));
        m.put_pixel(1, 0, Rgba([0, 0, 0, 255]));
        assert_eq!(normalise_mask(&DynamicImage::ImageRgba8(m), false).as_raw(), &vec![0, 255, 0]);
        // Red figures on a white, transparent background.
        let mut m = RgbaImage::from_pixel(3, 1, Rgba([255, 255, 255, 0]));
        m.put_pixel(2, 0, Rgba([255, 0, 0, 255]));
        assert_eq!(normalise_mask(&DynamicImage::ImageRgba8(m), false).as_raw(), &vec![0, 0, 255]);
        // Opaque everywhere: colour decides, as without alpha.
        let mut m = RgbaImage::from_pixel(3, 1, Rgba([0, 0, 0, 255]));
        m.put_pixel(0, 0, Rgba([1, 0, 0, 255]));
        assert_eq!(normalise_mask(&DynamicImage::ImageRgba8(m), false).as_raw(), &vec![255, 0, 0]);
    }

    #[test]
    fn rgb_labels_and_jpeg_noise() {
        let mut m = RgbImage::new(3, 1);
        m.put_pixel(1, 0, Rgb([0, 0, 40]));
        m.put_pixel(2, 0, Rgb([200, 0, 0]));
        let img = DynamicImage::ImageRgb8(m);
        assert_eq!(normalise_mask(&img, false).as_raw(), &vec![0, 255, 255]);
        assert_eq!(normalise_mask(&img, true).as_raw(), &vec![0, 0, 255]);
    }

    #[test]
    fn sixteen_bit_zero_one() {
        let m = image::ImageBuffer::<Luma<u16>, _>::from_raw(3, 1, vec![0u16, 1, 65535]).unwrap();
        assert_eq!(normalise_mask(&DynamicImage::ImageLuma16(m), false).as_raw(), &vec![0, 255, 255]);
    }

    #[test]
    fn tiff_pages_are_counted() {
        use tiff::encoder::{TiffEncoder, colortype};
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut enc = TiffEncoder::new(&mut bytes).unwrap();
        for _ in 0..3 {
            enc.write_image::<colortype::RGB8>(2, 2, &[100u8; 12]).unwrap();
        }
        let bytes = bytes.into_inner();
        assert_eq!(tiff_pages(&bytes), Some(3));
        assert_eq!(decode_bytes(&bytes, Path::new("stack.tif")).unwrap().width(), 2, "the first page is read");
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::new(2, 2))
            .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert_eq!(tiff_pages(&png), None);
    }

    #[test]
    fn a_bigtiff_is_read() {
        use tiff::encoder::{TiffEncoder, colortype};
        let mut bytes = std::io::Cursor::new(Vec::new());
        let pixels: Vec<u8> = (0..3 * 4 * 3).map(|v| v as u8).collect();
        TiffEncoder::new_big(&mut bytes).unwrap().write_image::<colortype::RGB8>(4, 3, &pixels).unwrap();
        let bytes = bytes.into_inner();
        assert!(bytes.starts_with(b"II+\0"));
        let img = decode_bytes(&bytes, Path::new("big.tif")).unwrap().into_rgb8();
        assert_eq!((img.dimensions(), img.as_raw()), ((4, 3), &pixels));
    }

    #[test]
    fn exif_orientation_is_read_and_the_stored_pixels_kept() {
        // A JPEG with an EXIF APP1 segment saying "rotate 90° clockwise" (6).
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 4, image::Rgb([200, 100, 150])))
            .write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let mut tiff = b"II*\0".to_vec();
        tiff.extend(8u32.to_le_bytes());
        tiff.extend(1u16.to_le_bytes()); // one entry
        tiff.extend(0x0112u16.to_le_bytes()); // Orientation
        tiff.extend(3u16.to_le_bytes()); // SHORT
        tiff.extend(1u32.to_le_bytes());
        tiff.extend(6u16.to_le_bytes());
        tiff.extend([0, 0]);
        tiff.extend(0u32.to_le_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend([0xFF, 0xE1]);
        with_exif.extend(((app1.len() + 2) as u16).to_be_bytes());
        with_exif.extend(&app1);
        with_exif.extend(&jpeg[2..]);
        let mut reader = ImageReader::new(std::io::Cursor::new(&with_exif)).with_guessed_format().unwrap();
        reader.limits(decode_limits());
        let mut decoder = reader.into_decoder().unwrap();
        assert_eq!(decoder.orientation().unwrap(), image::metadata::Orientation::Rotate90);
        // Read (with a warning), not turned: coordinates stay in the stored frame.
        assert_eq!(decode_bytes(&with_exif, Path::new("turned.jpg")).unwrap().into_rgb8().dimensions(), (8, 4));
    }

    #[test]
    fn an_image_too_large_to_decode_says_its_size_and_what_to_do() {
        // A BMP header for 40000 x 30000 px, 24-bit (3.6 GB decoded), with no pixels behind it.
        let (w, h) = (40_000u32, 30_000u32);
        let mut bmp = Vec::new();
        bmp.extend(b"BM");
        bmp.extend(54u32.to_le_bytes()); // file size (a lie, as a truncated file's)
        bmp.extend([0; 4]);
        bmp.extend(54u32.to_le_bytes()); // pixel data offset
        bmp.extend(40u32.to_le_bytes()); // BITMAPINFOHEADER
        bmp.extend(w.to_le_bytes());
        bmp.extend(h.to_le_bytes());
        bmp.extend(1u16.to_le_bytes());
        bmp.extend(24u16.to_le_bytes());
        bmp.extend([0; 24]);
        let err = decode_bytes(&bmp, Path::new("huge.bmp")).unwrap_err();
        assert!(matches!(err, ImagingError::TooLarge { width: 40_000, height: 30_000, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("huge.bmp") && text.contains("1200 megapixels") && text.contains("mitoscope slide"),
            "{text}"
        );
    }

    #[test]
    fn truncated_and_missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.png");
        let mut bytes = Vec::new();
        RgbImage::new(64, 64).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_image(&p).unwrap_err().to_string();
        assert!(err.contains("cut.png"), "{err}");
        let err = read_image(&dir.path().join("nope.png")).unwrap_err().to_string();
        assert!(err.contains("nope.png"), "{err}");
    }

    #[test]
    fn a_zero_byte_file_is_called_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zero.png");
        std::fs::write(&p, b"").unwrap();
        for err in [read_image(&p).unwrap_err(), image_size(&p).unwrap_err()] {
            let msg = err.to_string();
            assert!(matches!(err, ImagingError::EmptyFile { .. }), "{msg}");
            assert!(msg.contains("zero.png is an empty file (0 bytes)"), "{msg}");
        }
    }

    #[test]
    fn truncated_jpegs_are_refused_where_the_decoder_would_fill_them_with_grey() {
        let dir = tempfile::tempdir().unwrap();
        let mut field = RgbImage::new(96, 80);
        for (x, y, p) in field.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8]);
        }
        let mut bytes = Vec::new();
        field.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &bytes).unwrap();
        assert_eq!(read_image(&whole).unwrap().dimensions(), (96, 80));
        // Trailing bytes after the end-of-image marker are not truncation.
        let padded = dir.path().join("padded.jpg");
        std::fs::write(&padded, [bytes.as_slice(), &[0u8; 16]].concat()).unwrap();
        assert!(read_image(&padded).is_ok());
        for keep in [bytes.len() - 2, bytes.len() * 2 / 3] {
            let cut = dir.path().join(format!("cut-{keep}.jpg"));
            std::fs::write(&cut, &bytes[..keep]).unwrap();
            let err = read_image(&cut).unwrap_err();
            assert!(matches!(err, ImagingError::Truncated { .. }), "{err}");
            assert!(err.to_string().contains(&format!("cut-{keep}.jpg")), "{err}");
        }
    }

    #[test]
    fn real_hpf_jpegs_are_whole() {
        let dir = mitoscope_testdata::require_data!("icpr2012/hpf");
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(!jpeg_is_truncated(&bytes), "{}", path.display());
            assert!(jpeg_is_truncated(&bytes[..bytes.len() / 2]), "{}", path.display());
        }
    }

    #[test]
    fn real_mask_patches_decode() {
        let dir = mitoscope_testdata::require_data!("icpr2012/mask-patches/masks");
        let mut with_fg = 0;
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let m = read_mask(&e.unwrap().path()).unwrap();
            assert_eq!(m.dimensions(), (256, 256));
            n += 1;
            with_fg += m.pixels().any(|p| p[0] == 255) as usize;
        }
        assert_eq!((n, with_fg), (50, 20));
    }
}
