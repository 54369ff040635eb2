//! ICPR 2012 MITOS pixel-list CSV: one mitosis per line, a flat list
//! `x1,y1,x2,y2,...` of every pixel it covers. The file stem is the image id
//! (`A00_01.csv` -> `A00_01`). Blank lines are skipped; a trailing comma is
//! tolerated.

use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass, Shape};

use crate::csv_points::file_stem;
use crate::{FormatError, ReadOptions, Result, WriteOptions, atomic};

/// Reads one pixel-list file: each line becomes a mitosis with its pixel set,
/// centroid (pixel mean) and bounding box.
pub fn read_pixel_lists(path: &Path, _opts: &ReadOptions) -> Result<AnnotationSet> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let mut img = ImageAnnotations::new(file_stem(path));
    for (i, line) in text.lines().enumerate() {
        let loc = || format!("line {}", i + 1);
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.strip_suffix(',').unwrap_or(line).split(',').map(str::trim).collect();
        if !fields.len().is_multiple_of(2) {
            return Err(FormatError::malformed(
                path,
                loc(),
                format!("expected an even number of values (x,y pairs), found {}", fields.len()),
            ));
        }
        let mut coords = Vec::with_capacity(fields.len());
        for (k, f) in fields.iter().enumerate() {
            let v: i64 = f.parse().map_err(|_| {
                FormatError::malformed(
                    path,
                    loc(),
                    format!("value {}: expected an integer pixel coordinate, found '{f}'", k + 1),
                )
            })?;
            let v = u32::try_from(v).map_err(|_| {
                FormatError::malformed(
                    path,
                    loc(),
                    format!("value {}: pixel coordinate {v} is out of range (negative?)", k + 1),
                )
            })?;
            coords.push(v);
        }
        let pixels: Vec<(u32, u32)> = coords.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        let obj = Annotation::from_shape(Shape::Pixels(pixels), ObjectClass::Mitosis)
            .ok_or_else(|| FormatError::malformed(path, loc(), "no pixels"))?;
        img.objects.push(obj);
    }
    Ok(AnnotationSet::from_images(vec![img]))
}

/// Writes the pixel sets of every image as `<path>/<image>.csv`, one mitosis
/// per line. Objects without a pixel set cannot be written (error).
pub fn write(set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    for (img, file) in set.images.iter().zip(crate::per_image_paths(set, path, "csv")?) {
        let mut out = String::new();
        for (k, o) in img.objects.iter().enumerate() {
            let Some(Shape::Pixels(px)) = &o.shape else {
                return Err(FormatError::Unsupported {
                    path: path.to_owned(),
                    message: format!(
                        "image {} object {}: the ICPR pixel-list format needs a pixel set",
                        img.image,
                        k + 1
                    ),
                });
            };
            let line: Vec<String> = px.iter().map(|(x, y)| format!("{x},{y}")).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        atomic::write_atomic(&file, out.as_bytes())?;
    }
    Ok(())
}
