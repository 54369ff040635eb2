//! Where the report gets pixels from: image files in a folder (one per image
//! identifier) or one whole slide. Thumbnails and crops are the only things it
//! needs, so both sources are reduced to those two reads.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use image::{RgbImage, imageops::FilterType};
use mitoscope_slide::Slide;

use crate::ReportError;

/// Pixels of one image, loaded for as long as its card is rendered.
pub(crate) enum Pixels {
    /// A decoded image file.
    Image(RgbImage),
    /// A slide: thumbnails from a coarse level, crops from level 0.
    Slide(Box<dyn Slide>),
}

impl Pixels {
    pub(crate) fn size(&self) -> (u64, u64) {
        match self {
            Pixels::Image(img) => (img.width() as u64, img.height() as u64),
            Pixels::Slide(s) => s.dimensions(0).unwrap_or((0, 0)),
        }
    }

    /// The whole image scaled to fit `max_side`, and the scale used
    /// (thumbnail pixels per image pixel).
    pub(crate) fn thumbnail(&self, max_side: u32) -> Result<(RgbImage, f64), ReportError> {
        let (w, h) = self.size();
        if w == 0 || h == 0 {
            return Err(ReportError::Image { path: PathBuf::new(), message: "image has no pixels".into() });
        }
        let scale = (max_side as f64 / w.max(h) as f64).min(1.0);
        let tw = ((w as f64 * scale).round() as u32).max(1);
        let th = ((h as f64 * scale).round() as u32).max(1);
        match self {
            Pixels::Image(img) => Ok((image::imageops::resize(img, tw, th, FilterType::Triangle), scale)),
            Pixels::Slide(s) => {
                // Read the coarsest level still at least as detailed as the
                // thumbnail, then resize: bounded memory for any slide size.
                let level = s.best_level_for_downsample(1.0 / scale);
                let (lw, lh) = s.dimensions(level).unwrap_or((w, h));
                let too_big = lw * lh > mitoscope_slide::MAX_REGION_PIXELS / 4;
                if too_big {
                    return Err(ReportError::Image {
                        path: s.path().to_owned(),
                        message: format!("no pyramid level small enough for a thumbnail (coarsest {lw}x{lh})"),
                    });
                }
                let region = s
                    .read_region(level, 0, 0, lw as u32, lh as u32)
                    .map_err(|e| ReportError::Image { path: s.path().to_owned(), message: e.to_string() })?;
                Ok((image::imageops::resize(&region, tw, th, FilterType::Triangle), scale))
            }
        }
    }

    /// A `side` x `side` crop centred on (`cx`, `cy`) in level-0 pixels;
    /// outside the image is white.
    pub(crate) fn crop(&self, cx: f64, cy: f64, side: u32) -> Result<RgbImage, ReportError> {
        let x0 = (cx - side as f64 / 2.0).round() as i64;
        let y0 = (cy - side as f64 / 2.0).round() as i64;
        match self {
            Pixels::Image(img) => {
                let mut out = RgbImage::from_pixel(side, side, image::Rgb([255, 255, 255]));
                for y in 0..side {
                    for x in 0..side {
                        let (sx, sy) = (x0 + x as i64, y0 + y as i64);
                        if sx >= 0 && sy >= 0 && (sx as u64) < img.width() as u64 && (sy as u64) < img.height() as u64 {
                            out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
                        }
                    }
                }
                Ok(out)
            }
            Pixels::Slide(s) => s
                .read_region(0, x0, y0, side, side)
                .map_err(|e| ReportError::Image { path: s.path().to_owned(), message: e.to_string() }),
        }
    }
}

/// Where the image of `id` may lie in `dir`, without extension, in the order
/// tried: the id as a path below `dir` (`detect` names nested inputs so:
/// `train/images/001`; never one with `..` or a root, which could leave
/// `dir`), the id as one file-safe name, and for `detect`'s ids of alike
/// stems (`x_png` beside `x_jpg`) the stem with that extension.
fn image_candidates(dir: &Path, id: &str) -> Vec<(PathBuf, Option<&'static str>)> {
    let mut out = Vec::new();
    let relative = Path::new(id);
    if id.contains('/') && relative.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        out.push((dir.join(relative), None));
    }
    out.push((dir.join(mitoscope_formats::file_safe_name(id)), None));
    for ext in mitoscope_imaging::IMAGE_EXTENSIONS {
        if let Some(stem) = id.strip_suffix(&format!("_{ext}")).filter(|s| !s.is_empty()) {
            out.push((dir.join(mitoscope_formats::file_safe_name(stem)), Some(*ext)));
        }
    }
    out
}

/// The image file of `id` in `dir` (see [`image_candidates`]).
pub(crate) fn find_image(dir: &Path, id: &str) -> Option<PathBuf> {
    image_candidates(dir, id).into_iter().find_map(|(base, only)| {
        let exts: Vec<&str> = only.map_or_else(|| mitoscope_imaging::IMAGE_EXTENSIONS.to_vec(), |e| vec![e]);
        exts.iter()
            .flat_map(|ext| [ext.to_string(), ext.to_ascii_uppercase()])
            .map(|ext| {
                let mut name = base.clone().into_os_string();
                name.push(format!(".{ext}"));
                PathBuf::from(name)
            })
            .find(|p| p.is_file())
    })
}

/// The files [`find_image`] looked for, for the warning when none is there.
pub(crate) fn image_looked_for(dir: &Path, id: &str) -> String {
    image_candidates(dir, id)
        .iter()
        .map(|(base, only)| format!("{}.{}", base.display(), only.unwrap_or("<png|jpg|tif|bmp>")))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `data:` URL of `img` as JPEG (photographs compress far better than PNG).
pub(crate) fn jpeg_data_url(img: &RgbImage, quality: u8) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    img.write_with_encoder(enc).map_err(|e| ReportError::Image { path: PathBuf::new(), message: e.to_string() })?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)))
}
