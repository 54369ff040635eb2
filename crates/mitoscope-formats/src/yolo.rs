//! YOLO txt labels: one object per line, `class cx cy w h`, box centre and
//! size normalised to [0, 1] by the image size; an optional sixth column is
//! read as the score (YOLO's `save_conf` output). A missing final newline is
//! fine.
//!
//! Reader: one `.txt` (image id = stem) or a folder of them (`classes.txt`
//! is skipped). The image size comes from an image with the same stem, looked
//! for in [`ReadOptions::images_dir`], beside the txt, and in a sibling
//! `images/` folder when the txt sits in `labels/`; only its header is read.
//! Class indices map through [`ReadOptions::yolo_classes`].
//!
//! Writer: one `<image>.txt` per image into a folder (or a single `.txt`
//! path for a one-image set), class 0 = mitosis, 1 = look-alike, six
//! decimals, score as a sixth column when present. Images need their width
//! and height. Objects without a box get a [`DEFAULT_BOX_PX`] square around
//! the centroid. Images without objects get an empty file.

use std::path::{Path, PathBuf};

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_geom::{BBox, Point};

use crate::csv_points::{file_stem, fmt_num};
use crate::{FormatError, ReadOptions, Result, WriteOptions, atomic};

/// Side in pixels of the box written for objects that have none (50 px, as
/// the MIDOG and CMC labels use).
pub use crate::DEFAULT_BOX_PX;

/// Slack on the [0, 1] range for values rounded on writing.
const RANGE_SLACK: f64 = 1e-6;

/// Parses one YOLO label file for an image of `width` x `height` pixels;
/// `classes[i]` is the class of index `i`. Image id = file stem; the result
/// carries the size but no image path.
pub fn read_txt(path: &Path, width: u32, height: u32, classes: &[ObjectClass]) -> Result<ImageAnnotations> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let mut img = ImageAnnotations::new(file_stem(path));
    img.width = Some(width);
    img.height = Some(height);
    for (i, line) in text.lines().enumerate() {
        let loc = || format!("line {}", i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 5 && fields.len() != 6 {
            return Err(FormatError::malformed(
                path,
                loc(),
                format!("expected 5 values 'class cx cy w h' (or 6 with a score), found {}", fields.len()),
            ));
        }
        let idx: usize = fields[0].parse().map_err(|_| {
            FormatError::malformed(
                path,
                loc(),
                format!("class: expected a non-negative integer, found '{}'", fields[0]),
            )
        })?;
        let class = *classes.get(idx).ok_or_else(|| {
            FormatError::malformed(
                path,
                loc(),
                format!("class index {idx} is beyond the {} known class(es) {:?}", classes.len(), classes),
            )
        })?;
        let mut v = [0.0f64; 4];
        for (k, name) in ["cx", "cy", "w", "h"].iter().enumerate() {
            let raw = fields[k + 1];
            let x: f64 = raw.parse().map_err(|_| {
                FormatError::malformed(path, loc(), format!("{name}: expected a number, found '{raw}'"))
            })?;
            if !(x.is_finite() && (-RANGE_SLACK..=1.0 + RANGE_SLACK).contains(&x)) {
                return Err(FormatError::malformed(
                    path,
                    loc(),
                    format!(
                        "{name} = {raw}: expected a number in [0, 1] (YOLO values are normalised by the image size)"
                    ),
                ));
            }
            v[k] = x;
        }
        let (w, h) = (width as f64, height as f64);
        let bbox = BBox::from_center(Point::new(v[0] * w, v[1] * h), v[2] * w, v[3] * h)
            .map_err(|e| FormatError::malformed(path, loc(), e.to_string()))?;
        let mut obj = Annotation::from_bbox(bbox, class);
        if let Some(raw) = fields.get(5) {
            let s: f64 = raw.parse().ok().filter(|s: &f64| s.is_finite()).ok_or_else(|| {
                FormatError::malformed(path, loc(), format!("score: expected a finite number, found '{raw}'"))
            })?;
            obj.score = Some(s);
        }
        img.objects.push(obj);
    }
    Ok(img)
}

/// Folders where the image of `txt` may be, in search order.
fn image_dirs(txt: &Path, opts: &ReadOptions) -> Vec<PathBuf> {
    let parent = txt.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = opts.images_dir.iter().cloned().collect();
    // YOLO datasets keep `labels/x.txt` beside `images/x.jpg`.
    let sibling = parent
        .file_name()
        .filter(|n| n.eq_ignore_ascii_case("labels"))
        .and_then(|_| parent.parent())
        .map(|up| up.join("images"));
    dirs.push(parent);
    dirs.extend(sibling);
    dirs
}

pub(crate) fn find_image(stem: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    for dir in dirs {
        for ext in mitoscope_imaging::IMAGE_EXTENSIONS {
            for ext in [ext.to_string(), ext.to_ascii_uppercase()] {
                let p = dir.join(format!("{stem}.{ext}"));
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn read_one(txt: &Path, opts: &ReadOptions) -> Result<ImageAnnotations> {
    let stem = file_stem(txt);
    let dirs = image_dirs(txt, opts);
    let image = find_image(&stem, &dirs).ok_or_else(|| FormatError::Unsupported {
        path: txt.to_owned(),
        message: format!(
            "YOLO boxes are normalised, so the image size is needed, but no image {stem}.{{{}}} was found in {}; \
             give the images folder (--images)",
            mitoscope_imaging::IMAGE_EXTENSIONS.join(","),
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })?;
    let (w, h) = mitoscope_imaging::image_size(&image)?;
    let mut img = read_txt(txt, w, h, &opts.yolo_classes)?;
    img.path = Some(image);
    img.mpp = opts.mpp;
    Ok(img)
}

/// Reads one label file or a folder of them (sorted by name).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    if !path.is_dir() {
        return Ok(AnnotationSet::from_images(vec![read_one(path, opts)?]));
    }
    let mut txts: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| FormatError::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"))
                && !p.file_name().is_some_and(|n| n.eq_ignore_ascii_case("classes.txt"))
        })
        .collect();
    txts.sort();
    if txts.is_empty() {
        return Err(FormatError::UnknownFormat {
            path: path.to_owned(),
            hint: "no YOLO .txt label files in this folder".into(),
        });
    }
    let images = txts.iter().map(|t| read_one(t, opts)).collect::<Result<Vec<_>>>()?;
    Ok(AnnotationSet::from_images(images))
}

fn to_txt(img: &ImageAnnotations, path: &Path) -> Result<String> {
    let (Some(w), Some(h)) = (img.width, img.height) else {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            message: format!("image {}: YOLO needs the image width and height, which are unknown", img.image),
        });
    };
    let (w, h) = (w as f64, h as f64);
    let mut out = String::new();
    for o in &img.objects {
        let b = crate::box_for_writing(o, path, &img.image)?;
        let c = b.center();
        let class = match o.class {
            ObjectClass::Mitosis => 0,
            ObjectClass::NonMitosis => 1,
        };
        // Clamp so that the file stays valid for boxes reaching past the border.
        let n = |v: f64| fmt_num(v.clamp(0.0, 1.0), 6);
        out.push_str(&format!("{class} {} {} {} {}", n(c.x / w), n(c.y / h), n(b.width() / w), n(b.height() / h)));
        if let Some(s) = o.score {
            out.push_str(&format!(" {}", fmt_num(s, 6)));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Writes `<path>/<image>.txt` per image, or `path` itself when it ends in
/// `.txt` and the set has one image.
pub fn write(set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) {
        return match set.images.as_slice() {
            [img] => atomic::write_atomic(path, to_txt(img, path)?.as_bytes()),
            imgs => Err(FormatError::Unsupported {
                path: path.to_owned(),
                message: format!(
                    "a YOLO txt holds one image, the set has {}; give a folder path to write one file per image",
                    imgs.len()
                ),
            }),
        };
    }
    let files = set
        .images
        .iter()
        .zip(crate::per_image_paths(set, path, "txt")?)
        .map(|(img, file)| Ok((file, to_txt(img, path)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(path).map_err(|e| FormatError::io(path, e))?;
    for (file, text) in files {
        atomic::write_atomic(&file, text.as_bytes())?;
    }
    Ok(())
}
