//! TUPAC16 / AMIDA13 mitosis ground truth: one headerless CSV per HPF,
//! `mitoses_ground_truth/<case>/<hpf>.csv`, one mitosis per line as
//! `row,column` — **y first**. An empty file is an HPF with no mitosis (the
//! labels are complete per HPF).
//!
//! The image id is `<case>_<hpf>` (`mitoses_ground_truth/01/02.csv` ->
//! `01_02`): every case numbers its HPFs from `01`, so the stem alone would
//! repeat. It is also the id `mitoscope detect` gives `<case>/<hpf>.tif`
//! when several cases' images are detected in one run.
//!
//! Read as a single file, a case folder (`<hpf>.csv` files) or the whole
//! ground-truth folder (case folders); detected where every line holds two
//! numbers (an ICPR 2012 pixel list holds a figure's every pixel, so never
//! one pair per line).
//!
//! Images are found as `<case>/<hpf>.tif` (or another image extension) in
//! [`ReadOptions::images_dir`], else in the folder that holds
//! `mitoses_ground_truth`, or in a folder one or two levels below it (the
//! release's `mitoses_image_data`, split into `..._part_1` ... folders).

use std::path::{Path, PathBuf};

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_geom::Point;

use crate::csv_points::file_stem;
use crate::yolo::find_image;
use crate::{FormatError, ReadOptions, Result};

/// Folders searched for the images at most (the image roots' subfolders).
const MAX_IMAGE_ROOTS: usize = 2000;

/// Whether CSV text is TUPAC-style ground truth: no header, and every
/// non-empty line two numbers. (An empty text is not claimed.)
pub(crate) fn looks_like_tupac(text: &str) -> bool {
    let mut lines = text.lines().map(|l| l.trim().trim_start_matches('\u{feff}')).filter(|l| !l.is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            f.len() == 2 && f.iter().all(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
        })
}

/// Whether `dir` is a TUPAC ground-truth folder or one case folder of it:
/// CSV files only (directly or one folder down), each TUPAC-style or empty
/// (a case whose HPFs hold no mitosis has empty files only).
pub(crate) fn is_tupac_folder(dir: &Path) -> bool {
    let Ok(files) = csv_files(dir) else { return false };
    for f in files.iter().take(200) {
        let Ok(text) = std::fs::read_to_string(f) else { return false };
        if text.trim().is_empty() {
            continue;
        }
        if !looks_like_tupac(&text) {
            return false;
        }
    }
    !files.is_empty()
}

/// The CSV files of `dir` and of its subfolders (one level), sorted; any
/// other file is an error (this is then not a ground-truth folder).
fn csv_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let list = crate::visible_entries;
    for entry in list(dir)? {
        let nested = if entry.is_dir() { list(&entry)? } else { vec![entry] };
        for f in nested {
            let is_csv = f.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if f.is_dir() || !is_csv {
                return Err(FormatError::Unsupported {
                    path: f,
                    message: "a TUPAC ground-truth folder holds <case>/<hpf>.csv files only".into(),
                });
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// Reads one file, a case folder or the ground-truth folder (module docs).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    let files = if path.is_dir() { csv_files(path)? } else { vec![path.to_owned()] };
    if files.is_empty() {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            message: "no <hpf>.csv files here (TUPAC ground truth: mitoses_ground_truth/<case>/<hpf>.csv)".into(),
        });
    }
    let mut images = files.iter().map(|f| read_file(f)).collect::<Result<Vec<_>>>()?;
    // <hpf>.csv -> <case> -> mitoses_ground_truth -> the folder beside the
    // images; absolute, as a relative `mitoses_ground_truth` has an empty parent.
    let first = std::fs::canonicalize(&files[0]).unwrap_or_else(|_| files[0].clone());
    let truth_root = first.parent().and_then(Path::parent);
    let roots = image_roots(opts.images_dir.as_deref().or_else(|| truth_root.and_then(Path::parent)), truth_root);
    for (img, file) in images.iter_mut().zip(&files) {
        let case = file.parent().map(|c| roots.iter().map(|r| r.join(c.file_name().unwrap_or_default())).collect());
        img.path = case.and_then(|dirs: Vec<PathBuf>| find_image(&file_stem(file), &dirs));
    }
    Ok(AnnotationSet::from_images(images))
}

/// `base` and the folders one and two levels below it, but not the
/// ground-truth folder itself.
fn image_roots(base: Option<&Path>, truth_root: Option<&Path>) -> Vec<PathBuf> {
    let Some(base) = base else { return Vec::new() };
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let not_truth = |p: &PathBuf| truth_root.is_none_or(|t| p.as_path() != t);
    let mut roots = vec![base.to_owned()];
    for first in subdirs(base).into_iter().filter(not_truth) {
        let second = subdirs(&first);
        roots.push(first);
        roots.extend(second);
        if roots.len() >= MAX_IMAGE_ROOTS {
            break;
        }
    }
    roots
}

/// `<case>_<hpf>` from `.../<case>/<hpf>.csv`.
fn image_id(file: &Path) -> String {
    let case = file.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    match case {
        Some(case) if !case.is_empty() => format!("{case}_{}", file_stem(file)),
        _ => file_stem(file),
    }
}

fn read_file(path: &Path) -> Result<ImageAnnotations> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let mut img = ImageAnnotations::new(image_id(path));
    for (i, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| FormatError::malformed(path, format!("line {}", i + 1), why);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [row, col] = fields.as_slice() else {
            return Err(bad(format!("expected 'row,column' (two numbers), found {} values", fields.len())));
        };
        let number = |s: &str, what: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad(format!("{what} '{s}' is not a pixel coordinate")))
        };
        let (y, x) = (number(row, "row")?, number(col, "column")?);
        img.objects.push(Annotation::point(Point::new(x, y), ObjectClass::Mitosis));
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_tupac_from_icpr_and_headers() {
        assert!(looks_like_tupac("1208,1591\n300,42\n"));
        assert!(looks_like_tupac("\u{feff}12.5, 7\n\n"));
        assert!(!looks_like_tupac("606,299,607,299,608,299\n"));
        assert!(!looks_like_tupac("image,x,y\nA,1,2\n"));
        assert!(!looks_like_tupac(""));
    }
}
