//! MITOS-ATYPIA-14 (ICPR 2014 contest) mitosis labels: per x40 frame, two
//! headerless CSVs in the patient's `mitosis/` folder,
//! `<frame>_mitosis.csv` (mitoses) and `<frame>_not_mitosis.csv` (cells
//! some pathologists marked that the panel did not take as mitoses), one
//! cell per line as `x,y,confidence` — **x first**, the confidence in [0, 1]
//! being the panel's agreement. The frames are
//! `<patient>/frames/x40/<frame>.tiff`; frame names carry the patient
//! (`A03_00Aa`), so they are the image ids as they stand.
//!
//! Mitoses become [`ObjectClass::Mitosis`], the others look-alikes
//! ([`ObjectClass::NonMitosis`]: hard negatives for training, ignored by
//! `eval`); the confidence is kept as the object's score (evaluation ignores
//! a truth's scores). Read as one file (with its frame's other file when it
//! is there), a `mitosis/` folder, a patient folder or the dataset folder
//! of patients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_geom::Point;

use crate::yolo::find_image;
use crate::{FormatError, ReadOptions, Result};

/// File-name endings of the two label files, lower case; `_not_mitosis`
/// first, as it also ends in `_mitosis`.
const NOT_MITOSIS_SUFFIX: &str = "_not_mitosis.csv";
const MITOSIS_SUFFIX: &str = "_mitosis.csv";

/// Label files looked at when telling a folder's format at most.
const MAX_SNIFFED: usize = 50;

/// The frame a label file belongs to and whether it lists mitoses, from its
/// name; `None` for any other file.
fn frame_of(file: &Path) -> Option<(String, ObjectClass)> {
    let name = file.file_name()?.to_str()?;
    let lower = name.to_ascii_lowercase();
    let (suffix, class) = if lower.ends_with(NOT_MITOSIS_SUFFIX) {
        (NOT_MITOSIS_SUFFIX, ObjectClass::NonMitosis)
    } else if lower.ends_with(MITOSIS_SUFFIX) {
        (MITOSIS_SUFFIX, ObjectClass::Mitosis)
    } else {
        return None;
    };
    let frame = &name[..name.len() - suffix.len()];
    (!frame.is_empty()).then(|| (frame.to_owned(), class))
}

/// Whether `file` is named like a MITOS-ATYPIA-14 label file.
pub(crate) fn is_label_file_name(file: &Path) -> bool {
    frame_of(file).is_some()
}

/// Whether CSV text reads as MITOS-ATYPIA-14 labels: no header, every
/// non-empty line `x,y,confidence` with the confidence in [0, 1]. (An
/// empty text is not claimed: that takes the file's name.)
pub(crate) fn looks_like_atypia(text: &str) -> bool {
    let mut lines = text.lines().map(|l| l.trim().trim_start_matches('\u{feff}')).filter(|l| !l.is_empty()).peekable();
    lines.peek().is_some() && lines.all(|l| parse_line(l).is_ok())
}

/// Whether `dir` holds MITOS-ATYPIA-14 label files: in itself (a `mitosis/`
/// folder), in its `mitosis/` folder (a patient) or in its folders'
/// `mitosis/` folders (the dataset), and the first of them read as such.
pub(crate) fn is_atypia_folder(dir: &Path) -> bool {
    let Ok(files) = label_files(dir) else { return false };
    !files.is_empty()
        && files
            .iter()
            .take(MAX_SNIFFED)
            .all(|f| std::fs::read_to_string(f).is_ok_and(|text| text.trim().is_empty() || looks_like_atypia(&text)))
}

/// The label files under `dir` (see [`is_atypia_folder`]), sorted.
fn label_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = crate::visible_entries;
    let is_mitosis_dir = |p: &Path| p.is_dir() && p.file_name().is_some_and(|n| n.eq_ignore_ascii_case("mitosis"));
    let mut folders = vec![dir.to_owned()];
    for entry in entries(dir)? {
        if is_mitosis_dir(&entry) {
            folders.push(entry);
        } else if entry.is_dir() {
            // A patient folder of the dataset: only its `mitosis/` (its frames are images).
            folders.extend(entries(&entry)?.into_iter().filter(|p| is_mitosis_dir(p)));
        }
    }
    let mut files = Vec::new();
    for folder in folders {
        files.extend(entries(&folder)?.into_iter().filter(|p| p.is_file() && is_label_file_name(p)));
    }
    Ok(files)
}

/// One frame's label files.
#[derive(Default)]
struct FrameFiles {
    mitoses: Option<PathBuf>,
    others: Option<PathBuf>,
}

/// Reads a label file (with its frame's other one), a `mitosis/` folder, a
/// patient folder or the dataset folder (module docs).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    let files = if path.is_dir() {
        label_files(path)?
    } else {
        let mut files = vec![path.to_owned()];
        if let Some((frame, class)) = frame_of(path) {
            let other = if class == ObjectClass::Mitosis { NOT_MITOSIS_SUFFIX } else { MITOSIS_SUFFIX };
            let sibling = path.with_file_name(format!("{frame}{other}"));
            if sibling.is_file() {
                files.push(sibling);
            }
        }
        files
    };
    if files.is_empty() {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            message: "no <frame>_mitosis.csv or <frame>_not_mitosis.csv files here \
                      (MITOS-ATYPIA-14: <patient>/mitosis/<frame>_mitosis.csv)"
                .into(),
        });
    }
    let mut frames: BTreeMap<String, FrameFiles> = BTreeMap::new();
    for file in files {
        // A file named otherwise (given by path, read by content) is a frame of mitoses.
        let (frame, class) =
            frame_of(&file).unwrap_or_else(|| (crate::csv_points::file_stem(&file), ObjectClass::Mitosis));
        let slot = frames.entry(frame.clone()).or_default();
        let slot = if class == ObjectClass::Mitosis { &mut slot.mitoses } else { &mut slot.others };
        if let Some(first) = slot.replace(file.clone()) {
            return Err(FormatError::Unsupported {
                path: file,
                message: format!(
                    "frame '{frame}' is labelled twice (also by {}): frame names must be unique",
                    first.display()
                ),
            });
        }
    }
    let images = frames
        .into_iter()
        .map(|(frame, files)| {
            let mut img = ImageAnnotations::new(frame.clone());
            for (file, class) in [(&files.mitoses, ObjectClass::Mitosis), (&files.others, ObjectClass::NonMitosis)] {
                if let Some(file) = file {
                    img.objects.extend(read_file(file, class)?);
                }
            }
            let labels = files.mitoses.as_ref().or(files.others.as_ref()).expect("a frame has a file");
            img.path = find_image(&frame, &image_dirs(labels, &frame, opts));
            Ok(img)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AnnotationSet::from_images(images))
}

/// Where a frame's image may be: the images folder (flat, or laid out as
/// the dataset), the patient's `frames/x40/` beside its `mitosis/`, and the
/// label file's own folder.
fn image_dirs(labels: &Path, frame: &str, opts: &ReadOptions) -> Vec<PathBuf> {
    let patient = frame.split('_').next().unwrap_or(frame);
    let mut dirs = Vec::new();
    if let Some(images) = &opts.images_dir {
        dirs.push(images.clone());
        dirs.push(images.join("x40"));
        dirs.push(images.join(patient).join("frames").join("x40"));
    }
    if let Some(folder) = labels.parent() {
        if let Some(patient_dir) = folder.parent() {
            dirs.push(patient_dir.join("frames").join("x40"));
        }
        dirs.push(folder.to_owned());
    }
    dirs
}

/// `(x, y, confidence)` of one line.
fn parse_line(line: &str) -> std::result::Result<(f64, f64, f64), String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [x, y, confidence] = fields.as_slice() else {
        return Err(format!("expected 'x,y,confidence' (three numbers), found {} values", fields.len()));
    };
    let coordinate = |s: &str, what: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{what} '{s}' is not a pixel coordinate"))
    };
    let confidence = confidence
        .parse::<f64>()
        .ok()
        .filter(|c| (0.0..=1.0).contains(c))
        .ok_or_else(|| format!("confidence '{confidence}' is not a number in [0, 1]"))?;
    Ok((coordinate(x, "x")?, coordinate(y, "y")?, confidence))
}

fn read_file(path: &Path, class: ObjectClass) -> Result<Vec<Annotation>> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let (x, y, confidence) =
            parse_line(line).map_err(|why| FormatError::malformed(path, format!("line {}", i + 1), why))?;
        let mut object = Annotation::point(Point::new(x, y), class);
        object.score = Some(confidence);
        objects.push(object);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lines() {
        assert_eq!(frame_of(Path::new("m/A03_00Aa_mitosis.csv")), Some(("A03_00Aa".into(), ObjectClass::Mitosis)));
        assert_eq!(frame_of(Path::new("A03_00Aa_NOT_MITOSIS.CSV")), Some(("A03_00Aa".into(), ObjectClass::NonMitosis)));
        assert_eq!(frame_of(Path::new("_mitosis.csv")), None);
        assert_eq!(frame_of(Path::new("A03_00Aa.csv")), None);
        assert!(looks_like_atypia("1140,1021,1\n233,75,0.65\n"));
        assert!(!looks_like_atypia("1140,1021,2\n"), "a confidence above 1 is not this format");
        assert!(!looks_like_atypia("1140,1021\n"));
        assert!(!looks_like_atypia("x,y,score\n1,2,0.5\n"));
        assert!(!looks_like_atypia(""));
    }
}
