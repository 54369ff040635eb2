//! A dataset tree that is either a folder or a zip archive, so layout
//! detection and reading see the same thing: a sorted list of relative file
//! paths (`/`-separated) and a way to read one.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::{GrayImage, ImageReader};
use mitoscope_imaging::{ImagingError, InstanceLabels};
use zip::ZipArchive;

use crate::{FormatError, Result};

/// Bytes read from a zip entry to find an image header; the rest of the entry
/// is only decompressed when the header is not within them.
const HEADER_PREFIX: u64 = 64 * 1024;

/// Where the files live.
enum Backing {
    Dir,
    /// The archive is shared by the reading threads: entry bytes are read
    /// under the lock, decoding happens outside it.
    Zip(Mutex<ZipArchive<std::fs::File>>),
}

/// A folder or zip, listed.
pub(crate) struct Tree {
    root: PathBuf,
    backing: Backing,
    /// Relative paths of every regular file, sorted.
    pub(crate) files: Vec<String>,
    /// Zip entry index of each listed file, by its relative path.
    zip_index: HashMap<String, usize>,
}

/// A zip entry's name. Zips made on Windows in China (as GZMH's may be) store
/// names in GBK without the UTF-8 flag, which the zip crate reads as CP437
/// and garbles; many tools also write UTF-8 without the flag. So: the raw
/// bytes as UTF-8 where they are valid UTF-8, else as GBK where they are
/// valid GBK, else the zip crate's reading. The names must match those the
/// user's own unzip gives, or ids from the extracted folder never match.
fn entry_name(raw: &[u8], decoded: &str) -> String {
    if let Ok(utf8) = std::str::from_utf8(raw) {
        return utf8.to_owned();
    }
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(raw)
        .map_or_else(|| decoded.to_owned(), |gbk| gbk.into_owned())
}

/// Files that are never data: OS droppings and hidden files.
fn is_junk(rel: &str) -> bool {
    rel.split('/').any(|c| {
        c.starts_with('.')
            || c == "__MACOSX"
            || c.eq_ignore_ascii_case("thumbs.db")
            || c.eq_ignore_ascii_case("desktop.ini")
    })
}

impl Tree {
    /// Lists `path`: a folder (recursively) or a `.zip` file.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            list_dir(path, "", &mut files)?;
            files.retain(|f| !is_junk(f));
            files.sort();
            return Ok(Self { root: path.to_owned(), backing: Backing::Dir, files, zip_index: HashMap::new() });
        }
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        let bad_zip = |e: zip::result::ZipError| FormatError::UnknownFormat {
            path: path.to_owned(),
            hint: format!("not a readable zip archive ({e}); a GZMH dataset is a folder or a .zip"),
        };
        let mut archive = ZipArchive::new(file).map_err(bad_zip)?;
        let mut files = Vec::new();
        let mut zip_index = HashMap::new();
        for i in 0..archive.len() {
            let entry = archive.by_index_raw(i).map_err(bad_zip)?;
            let rel = entry_name(entry.name_raw(), entry.name()).replace('\\', "/");
            if rel.ends_with('/') || is_junk(&rel) {
                continue;
            }
            zip_index.insert(rel.clone(), i);
            files.push(rel);
        }
        files.sort();
        Ok(Self { root: path.to_owned(), backing: Backing::Zip(Mutex::new(archive)), files, zip_index })
    }

    /// The folder or zip this tree was opened from.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is a zip archive.
    pub(crate) fn is_zip(&self) -> bool {
        matches!(self.backing, Backing::Zip(_))
    }

    /// A path naming `rel` for messages and `ImageAnnotations::path`; for a
    /// zip entry, `archive.zip/inner/path`.
    pub(crate) fn display_path(&self, rel: &str) -> PathBuf {
        rel.split('/').fold(self.root.clone(), |p, c| p.join(c))
    }

    /// The whole content of `rel` (or its first `limit` bytes).
    pub(crate) fn read_bytes(&self, rel: &str, limit: Option<u64>) -> Result<Vec<u8>> {
        let shown = self.display_path(rel);
        let mut buf = Vec::new();
        match &self.backing {
            Backing::Dir => {
                let f = std::fs::File::open(&shown).map_err(|e| FormatError::io(&shown, e))?;
                f.take(limit.unwrap_or(u64::MAX)).read_to_end(&mut buf).map_err(|e| FormatError::io(&shown, e))?;
            }
            Backing::Zip(archive) => {
                // A poisoned lock only means another reader panicked; the archive is still usable.
                let mut archive = archive.lock().unwrap_or_else(|p| p.into_inner());
                let index = self.zip_index.get(rel).copied().ok_or_else(|| {
                    FormatError::io(&shown, std::io::Error::new(std::io::ErrorKind::NotFound, "no such zip entry"))
                })?;
                let entry = archive.by_index(index).map_err(|e| FormatError::io(&shown, std::io::Error::other(e)))?;
                entry.take(limit.unwrap_or(u64::MAX)).read_to_end(&mut buf).map_err(|e| FormatError::io(&shown, e))?;
            }
        }
        Ok(buf)
    }

    /// Width and height of an image from its header only.
    pub(crate) fn image_size(&self, rel: &str) -> Result<(u32, u32)> {
        if let Backing::Dir = self.backing {
            return Ok(mitoscope_imaging::image_size(&self.display_path(rel))?);
        }
        let head = self.read_bytes(rel, Some(HEADER_PREFIX))?;
        match dimensions(&head) {
            Ok(d) => Ok(d),
            // The header lies further in (e.g. TIFF with its directory at the end).
            Err(_) => dimensions(&self.read_bytes(rel, None)?)
                .map_err(|source| ImagingError::Decode { path: self.display_path(rel), source }.into()),
        }
        .and_then(|(w, h)| {
            if w == 0 || h == 0 {
                Err(ImagingError::Empty { path: self.display_path(rel), width: w, height: h }.into())
            } else {
                Ok((w, h))
            }
        })
    }

    /// Decodes a mask, normalised to 0/255, with its instance labels where it
    /// is an instance map (see `mitoscope_imaging::read_mask_instances`).
    pub(crate) fn read_mask(&self, rel: &str) -> Result<(GrayImage, Option<InstanceLabels>)> {
        let shown = self.display_path(rel);
        if let Backing::Dir = self.backing {
            return Ok(mitoscope_imaging::read_mask_instances(&shown)?);
        }
        let bytes = self.read_bytes(rel, None)?;
        let img = mitoscope_imaging::decode_bytes(&bytes, &shown)?;
        let lossy = matches!(extension(rel).as_str(), "jpg" | "jpeg");
        Ok((mitoscope_imaging::normalise_mask(&img, lossy), mitoscope_imaging::instance_labels(&img, lossy)))
    }
}

fn dimensions(bytes: &[u8]) -> image::ImageResult<(u32, u32)> {
    ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(image::ImageError::IoError)?.into_dimensions()
}

/// Lowercase extension of a relative path, "" when none.
pub(crate) fn extension(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

fn list_dir(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let entry = entry.map_err(|e| FormatError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        // Follows symlinks: datasets are often assembled from linked folders.
        let path = entry.path();
        if path.is_dir() {
            list_dir(&path, &rel, out)?;
        } else if path.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}
