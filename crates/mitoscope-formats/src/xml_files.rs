//! What the one-XML-per-image formats ([`crate::voc`], [`crate::asap`]) share:
//! finding their files under a folder, placing one file per image on write,
//! and line numbers for errors.

use std::path::{Path, PathBuf};

use mitoscope_annotations::{AnnotationSet, ImageAnnotations};

use crate::{FormatError, Result, atomic};

/// Every `.xml` file under `dir`, recursively, sorted by path; an error when
/// there is none.
pub(crate) fn xml_files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| FormatError::io(&d, e))? {
            let p = entry.map_err(|e| FormatError::io(&d, e))?.path();
            if p.is_dir() {
                pending.push(p);
            } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(FormatError::UnknownFormat {
            path: dir.to_owned(),
            hint: "no .xml files found in the folder".into(),
        });
    }
    Ok(out)
}

/// The files a reader takes for `path`: the file itself, or every `.xml` under a folder.
pub(crate) fn xml_inputs(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() { xml_files_under(path) } else { Ok(vec![path.to_owned()]) }
}

/// Writes one XML document per image, rendered by `render(image, target)`:
/// into `path` itself when it ends in `.xml` and the set holds one image,
/// else into the folder `path` as `<image>.xml`. `format` names the format
/// in errors.
pub(crate) fn write_per_image(
    set: &AnnotationSet,
    path: &Path,
    format: &str,
    render: impl Fn(&ImageAnnotations, &Path) -> Result<String>,
) -> Result<()> {
    let single_file = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")) && set.images.len() == 1;
    if single_file {
        return atomic::write_atomic(path, render(&set.images[0], path)?.as_bytes());
    }
    if path.is_file() {
        return Err(FormatError::Unsupported {
            path: path.to_owned(),
            message: format!(
                "{format} writes one XML per image; {} images need a folder, and this is a file",
                set.images.len()
            ),
        });
    }
    // Every name is checked before the first file is written.
    for (img, file) in set.images.iter().zip(crate::per_image_paths(set, path, "xml")?) {
        atomic::write_atomic(&file, render(img, &file)?.as_bytes())?;
    }
    if set.images.is_empty() {
        std::fs::create_dir_all(path).map_err(|e| FormatError::io(path, e))?;
    }
    Ok(())
}

/// 1-based line of byte offset `pos`.
pub(crate) fn line_at(bytes: &[u8], pos: u64) -> usize {
    let end = (pos as usize).min(bytes.len());
    bytes[..end].iter().filter(|&&b| b == b'\n').count() + 1
}
