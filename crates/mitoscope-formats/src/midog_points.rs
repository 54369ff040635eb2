//! grand-challenge "Multiple points" JSON, as MIDOG submissions use:
//!
//! ```json
//! {"type": "Multiple points",
//!  "points": [{"name": "mitotic figure", "point": [x_mm, y_mm, 0], "probability": 0.93}],
//!  "version": {"major": 1, "minor": 0}}
//! ```
//!
//! Coordinates are in millimetres, so both directions need microns per
//! pixel: the image's own, else [`ReadOptions::mpp`] / [`WriteOptions::mpp`].
//! Names are "mitotic figure" and "non-mitotic figure" (anything
//! [`ObjectClass::parse`] knows is read). One file holds one image, whose id
//! is the file stem.
//!
//! Writer: a path ending in `.json` with exactly one image is written as that
//! file; any other path is a folder that receives `<image>.json` per image
//! (images without objects get a file with no points). The reader accepts
//! a file or such a folder.

use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_geom::{Mpp, Point};
use serde::{Deserialize, Serialize};

use crate::csv_points::{file_stem, json_error};
use crate::{FormatError, ReadOptions, Result, WriteOptions, atomic};

#[derive(Deserialize)]
struct PointsIn {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    points: Vec<PointIn>,
}

#[derive(Deserialize)]
struct PointIn {
    #[serde(default)]
    name: Option<String>,
    point: Vec<f64>,
    #[serde(default)]
    probability: Option<f64>,
}

#[derive(Serialize)]
struct PointsOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    points: Vec<PointOut<'a>>,
    version: Version,
}

#[derive(Serialize)]
struct PointOut<'a> {
    name: &'a str,
    point: [f64; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
}

#[derive(Serialize)]
struct Version {
    major: u32,
    minor: u32,
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Reads one points file, or every `*.json` in a folder (sorted by name).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    let Some(mpp) = opts.mpp else {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            message: "grand-challenge point coordinates are in mm; microns per pixel are needed to convert them \
                      to pixels (give --mpp, e.g. 0.25)"
                .into(),
        });
    };
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| FormatError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_json(p))
            .collect();
        files.sort();
        let images = files.iter().map(|f| read_file(f, mpp)).collect::<Result<Vec<_>>>()?;
        return Ok(AnnotationSet::from_images(images));
    }
    Ok(AnnotationSet::from_images(vec![read_file(path, mpp)?]))
}

fn read_file(path: &Path, mpp: Mpp) -> Result<ImageAnnotations> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let parsed: PointsIn = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| json_error(path, e))?;
    if let Some(kind) = parsed.kind.as_deref().filter(|k| !k.eq_ignore_ascii_case("Multiple points")) {
        return Err(FormatError::malformed(path, "type", format!("expected \"Multiple points\", found \"{kind}\"")));
    }
    let mut img = ImageAnnotations::new(file_stem(path));
    img.mpp = Some(mpp);
    for (i, p) in parsed.points.iter().enumerate() {
        let loc = || format!("points[{i}]");
        let class = match p.name.as_deref() {
            None => ObjectClass::Mitosis,
            Some(n) => ObjectClass::parse(n).ok_or_else(|| {
                FormatError::malformed(
                    path,
                    loc(),
                    format!("unknown name '{n}' (expected 'mitotic figure' or 'non-mitotic figure')"),
                )
            })?,
        };
        let [x, y, ..] = p.point[..] else {
            return Err(FormatError::malformed(path, loc(), format!("point needs x and y, found {:?}", p.point)));
        };
        if x < 0.0 || y < 0.0 {
            return Err(FormatError::malformed(path, loc(), format!("negative coordinate [{x}, {y}] mm")));
        }
        let mut obj = Annotation::point(Point::new(mpp.mm_to_px(x), mpp.mm_to_px(y)), class);
        obj.score = p.probability;
        img.objects.push(obj);
    }
    Ok(img)
}

fn point_name(class: ObjectClass) -> &'static str {
    match class {
        ObjectClass::Mitosis => "mitotic figure",
        ObjectClass::NonMitosis => "non-mitotic figure",
    }
}

fn to_json(img: &ImageAnnotations, path: &Path, opts: &WriteOptions) -> Result<Vec<u8>> {
    let mpp = img.mpp.or(opts.mpp).ok_or_else(|| FormatError::Unsupported {
        path: path.to_owned(),
        message: format!(
            "image {}: microns per pixel are unknown, and grand-challenge points are in mm (give --mpp)",
            img.image
        ),
    })?;
    let out = PointsOut {
        kind: "Multiple points",
        points: img
            .objects
            .iter()
            .map(|o| PointOut {
                name: point_name(o.class),
                point: [mpp.px_to_mm(o.centroid.x), mpp.px_to_mm(o.centroid.y), 0.0],
                probability: o.score,
            })
            .collect(),
        version: Version { major: 1, minor: 0 },
    };
    let mut bytes = serde_json::to_vec_pretty(&out).map_err(|e| FormatError::io(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes one file (`*.json`, one image) or a folder of `<image>.json`.
pub fn write(set: &AnnotationSet, path: &Path, opts: &WriteOptions) -> Result<()> {
    if is_json(path) {
        return match set.images.as_slice() {
            [img] => atomic::write_atomic(path, &to_json(img, path, opts)?),
            imgs => Err(FormatError::Unsupported {
                path: path.to_owned(),
                message: format!(
                    "a points file holds one image, the set has {}; give a folder path (no .json) to write one file per image",
                    imgs.len()
                ),
            }),
        };
    }
    // Convert all first so that a missing mpp leaves no partial folder.
    let files = set
        .images
        .iter()
        .zip(crate::per_image_paths(set, path, "json")?)
        .map(|(img, file)| Ok((file, to_json(img, path, opts)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(path).map_err(|e| FormatError::io(path, e))?;
    for (file, bytes) in files {
        atomic::write_atomic(&file, &bytes)?;
    }
    Ok(())
}
