//! Where the report gets pixels from: image files in a folder (one per image
//! identifier) or one whole slide. Thumbnails and crops are the only things it
//! needs, so both sources are reduced to those two reads.

use std::collections::HashMap;
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

/// Finds the image file of a detection id in the `--images` folder, naming
/// files as `mitoscope detect` does: the stem (`001`), the stem and extension
/// of alike-named inputs (`x_png` beside `x_jpg`), the parent folder and stem
/// (`a_x` for `a/x.png` beside `b/x.png`), or the path below the inputs'
/// common folder (`train/images/001`). An id is looked up in the folder
/// first, then, for ids of files in its subfolders, by a one-time index of
/// the images below it (mask folders left out). Never outside the folder:
/// no id with `..` or a root is joined to it.
pub(crate) struct ImageFinder {
    dir: PathBuf,
    /// Image files below `dir` by stem, built on first need.
    below: std::sync::OnceLock<HashMap<String, Vec<PathBuf>>>,
}

/// Most image files the index of a folder's subfolders holds.
const MAX_INDEXED: usize = 200_000;

impl ImageFinder {
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), below: std::sync::OnceLock::new() }
    }

    /// Paths without extension tried directly, in order, each with the one
    /// extension it must have where the id names it.
    fn direct(&self, id: &str) -> Vec<(PathBuf, Option<&'static str>)> {
        let mut out = Vec::new();
        let relative = Path::new(id);
        if id.contains('/') && relative.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
            out.push((self.dir.join(relative), None));
        }
        out.push((self.dir.join(mitoscope_formats::file_safe_name(id)), None));
        for ext in mitoscope_imaging::IMAGE_EXTENSIONS {
            if let Some(stem) = id.strip_suffix(&format!("_{ext}")).filter(|s| !s.is_empty()) {
                out.push((self.dir.join(mitoscope_formats::file_safe_name(stem)), Some(*ext)));
            }
        }
        out
    }

    /// The image file of `id`, or why none was taken.
    pub(crate) fn find(&self, id: &str) -> Result<PathBuf, String> {
        for (base, only) in self.direct(id) {
            let exts: Vec<&str> = only.map_or_else(|| mitoscope_imaging::IMAGE_EXTENSIONS.to_vec(), |e| vec![e]);
            let found = exts
                .iter()
                .flat_map(|ext| [ext.to_string(), ext.to_ascii_uppercase()])
                .map(|ext| {
                    let mut name = base.clone().into_os_string();
                    name.push(format!(".{ext}"));
                    PathBuf::from(name)
                })
                .find(|p| p.is_file());
            if let Some(path) = found {
                return Ok(path);
            }
        }
        // Below the folder: by stem, or by `<parent>_<stem>`.
        let index = self.below.get_or_init(|| index_images(&self.dir));
        let mut hits: Vec<&PathBuf> = index.get(id).map(|v| v.iter().collect()).unwrap_or_default();
        if hits.is_empty() {
            for (i, _) in id.match_indices('_') {
                let (parent, stem) = (&id[..i], &id[i + 1..]);
                hits.extend(
                    index.get(stem).into_iter().flatten().filter(|p| {
                        p.parent().and_then(|d| d.file_name()).is_some_and(|d| d.to_string_lossy() == parent)
                    }),
                );
            }
        }
        let looked = self
            .direct(id)
            .iter()
            .map(|(base, only)| format!("'{}'.{}", base.display(), only.unwrap_or("<png|jpg|tif|bmp>")))
            .collect::<Vec<_>>()
            .join(" or ");
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(format!("no file {looked}, nor one of that name below {}", self.dir.display())),
            many => Err(format!(
                "no file {looked}, and {} files below {} could be it ({}, ...): give --images the folder detect read",
                many.len(),
                self.dir.display(),
                many.iter().take(2).map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// Image files in the subfolders of `dir` (not `dir` itself, looked at
/// directly), by stem; mask folders and hidden folders are left out.
fn index_images(dir: &Path) -> HashMap<String, Vec<PathBuf>> {
    let mut index: HashMap<String, Vec<PathBuf>> = HashMap::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(dir.to_owned(), 0)];
    let mut seen = 0usize;
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if path.is_dir() {
                if depth < 8 && !name.starts_with('.') && !mitoscope_formats::gzmh::is_mask_folder(&name) {
                    stack.push((path, depth + 1));
                }
            } else if depth > 0 && mitoscope_imaging::is_image_path(&path) {
                seen += 1;
                if seen > MAX_INDEXED {
                    tracing::warn!(
                        "{}: more than {MAX_INDEXED} images below it; the rest are not looked at",
                        dir.display()
                    );
                    return index;
                }
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                index.entry(stem).or_default().push(path);
            }
        }
    }
    for paths in index.values_mut() {
        paths.sort();
    }
    index
}

/// `data:` URL of `img` as JPEG (photographs compress far better than PNG).
pub(crate) fn jpeg_data_url(img: &RgbImage, quality: u8) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    img.write_with_encoder(enc).map_err(|e| ReportError::Image { path: PathBuf::new(), message: e.to_string() })?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)))
}
