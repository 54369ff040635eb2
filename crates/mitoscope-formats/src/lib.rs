//! Readers and writers for the annotation formats mitosis researchers hold,
//! all mapping into [`mitoscope_annotations::AnnotationSet`].
//!
//! | format | read | write | module |
//! |---|---|---|---|
//! | GZMH V1/V2 dataset folder or zip (images + masks + labels, layout detected) | yes | - | [`gzmh`] |
//! | plain CSV `image,x,y[,score][,class]` (ICPR centroid CSV too) | yes | yes | [`csv_points`] |
//! | ICPR 2012 pixel-list CSV (`x1,y1,x2,y2,...` per mitosis) | yes | - | [`icpr`] |
//! | MIDOG / MIDOG++ COCO-like JSON and standard COCO JSON | yes | COCO | [`coco`] |
//! | grand-challenge "Multiple points" JSON (MIDOG submissions, mm) | yes | yes | [`midog_points`] |
//! | SlideRunner SQLite | yes | - | [`sliderunner`] |
//! | YOLO txt | yes | yes | [`yolo`] |
//! | Pascal-VOC XML | yes | yes | [`voc`] |
//! | ASAP XML (`<ASAP_Annotations>`: dots, point sets, rectangles, polygons) | yes | yes | [`asap`] |
//! | QuPath GeoJSON | yes | yes | [`geojson`] |
//! | AMi-Br crop table (`AMI-BR.csv`: source slide, subtype, scanner) | yes | - | [`amibr`] |
//!
//! [`detect_format`] tells the format of a path from its extension and a look
//! at its content; [`read()`] and [`write()`] dispatch on it. Every writer is
//! atomic ([`atomic::write_atomic`]).
#![deny(missing_docs)]

pub mod amibr;
pub mod asap;
pub mod atomic;
pub mod atypia14;
pub mod coco;
pub mod csv_points;
pub mod error;
pub mod geojson;
pub mod gzmh;
pub mod icpr;
pub mod midog_points;
pub mod sliderunner;
pub mod tupac;
pub mod voc;
mod xml_files;
pub mod yolo;

use std::io::Read;
use std::path::{Path, PathBuf};

use mitoscope_annotations::AnnotationSet;
use mitoscope_geom::Mpp;

pub use error::{FormatError, Result};

/// Every format Mitoscope reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A GZMH-like dataset: folder or zip of images, masks and label files.
    Gzmh,
    /// Plain CSV with a header holding at least `image,x,y`.
    Csv,
    /// ICPR 2012 pixel-list CSV: one mitosis per line, `x1,y1,x2,y2,...`.
    IcprPixels,
    /// COCO-like JSON; MIDOG's boxes are `[x1,y1,x2,y2]`, standard COCO's `[x,y,w,h]`.
    Coco,
    /// grand-challenge "Multiple points" JSON with coordinates in mm.
    MidogPoints,
    /// SlideRunner SQLite database.
    SlideRunner,
    /// YOLO txt (`class cx cy w h`, normalised), a file or a folder of them.
    Yolo,
    /// Pascal-VOC XML, a file or a folder of them.
    Voc,
    /// ASAP XML (the ASAP viewer's `<ASAP_Annotations>`), a file or a folder of them.
    Asap,
    /// QuPath-compatible GeoJSON.
    GeoJson,
    /// TUPAC16 / AMIDA13 ground truth: headerless `row,column` CSV per HPF,
    /// a file or a `<case>/<hpf>.csv` folder.
    Tupac,
    /// MITOS-ATYPIA-14 labels: headerless `x,y,confidence` CSVs per frame,
    /// `<patient>/mitosis/<frame>_mitosis.csv` and `_not_mitosis.csv`.
    Atypia14,
}

impl Format {
    /// All formats, for help texts.
    pub const ALL: [Format; 12] = [
        Format::Gzmh,
        Format::Csv,
        Format::IcprPixels,
        Format::Coco,
        Format::MidogPoints,
        Format::SlideRunner,
        Format::Yolo,
        Format::Voc,
        Format::Asap,
        Format::GeoJson,
        Format::Tupac,
        Format::Atypia14,
    ];

    /// Short name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gzmh => "gzmh",
            Format::Csv => "csv",
            Format::IcprPixels => "icpr",
            Format::Coco => "coco",
            Format::MidogPoints => "midog",
            Format::SlideRunner => "sliderunner",
            Format::Yolo => "yolo",
            Format::Voc => "voc",
            Format::Asap => "asap",
            Format::GeoJson => "geojson",
            Format::Tupac => "tupac",
            Format::Atypia14 => "atypia14",
        }
    }

    /// Parses a command-line name (also accepts a few aliases).
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        Some(match n.as_str() {
            "gzmh" | "dataset" | "folder" => Format::Gzmh,
            "csv" => Format::Csv,
            "icpr" | "icpr2012" | "pixels" => Format::IcprPixels,
            "coco" | "midog-coco" | "midog++" => Format::Coco,
            "midog" | "points" | "multiple-points" | "gc" => Format::MidogPoints,
            "sliderunner" | "sqlite" => Format::SlideRunner,
            "yolo" => Format::Yolo,
            "voc" | "pascal-voc" | "xml" => Format::Voc,
            "asap" | "asap-xml" => Format::Asap,
            "geojson" | "qupath" => Format::GeoJson,
            "tupac" | "tupac16" | "amida" | "amida13" => Format::Tupac,
            "atypia14" | "atypia" | "mitos-atypia-14" | "mitos-atypia" | "icpr2014" | "mitos14" => Format::Atypia14,
            _ => return None,
        })
    }

    /// Whether [`write()`] supports this format.
    pub fn writable(self) -> bool {
        matches!(
            self,
            Format::Csv
                | Format::Coco
                | Format::MidogPoints
                | Format::Yolo
                | Format::Voc
                | Format::Asap
                | Format::GeoJson
        )
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What readers may need beyond the file itself.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Microns per pixel to assume where the source does not say (needed to
    /// read mm coordinates and to evaluate in µm).
    pub mpp: Option<Mpp>,
    /// Folder holding the images an annotation file refers to (YOLO needs
    /// image sizes; readers record image paths when found).
    pub images_dir: Option<PathBuf>,
    /// Mask components smaller than this many pixels are dropped as speckle
    /// (and reported). The default, 5, is far below any mitotic figure at a
    /// resolution a mask is drawn at (one of 4 µm across covers 5 px even at
    /// 1.6 µm/px), so it only drops stray pixels: an eraser's leftovers, noise.
    pub min_mask_pixels: usize,
    /// YOLO class index -> class; defaults to 0 = mitosis, 1 = look-alike.
    pub yolo_classes: Vec<mitoscope_annotations::ObjectClass>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        use mitoscope_annotations::ObjectClass;
        Self {
            mpp: None,
            images_dir: None,
            min_mask_pixels: 5,
            yolo_classes: vec![ObjectClass::Mitosis, ObjectClass::NonMitosis],
        }
    }
}

/// What writers may need beyond the annotations.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Microns per pixel for images that carry none (MIDOG points are in mm).
    pub mpp: Option<Mpp>,
    /// Write shapes as polygons where known (GeoJSON), else points.
    pub polygons: bool,
}

/// Side in pixels of the square box given to objects known only by a point
/// when a format stores boxes only (COCO, YOLO, VOC): 50 px, as MIDOG's labels.
pub const DEFAULT_BOX_PX: f64 = 50.0;

/// The box a box-only writer stores for `obj`: its own, its shape's, or a
/// [`DEFAULT_BOX_PX`] square around its centroid.
pub(crate) fn box_for_writing(
    obj: &mitoscope_annotations::Annotation,
    path: &Path,
    image: &str,
) -> Result<mitoscope_geom::BBox> {
    match obj.bbox.or_else(|| obj.shape.as_ref().and_then(|s| s.bbox())) {
        Some(b) => Ok(b),
        None => mitoscope_geom::BBox::from_center(obj.centroid, DEFAULT_BOX_PX, DEFAULT_BOX_PX)
            .map_err(|e| FormatError::Unsupported { path: path.to_owned(), message: format!("image {image}: {e}") }),
    }
}

/// An image identifier as a single file name, for the per-image files of the
/// folder writers (and readers that look images up by id): path separators
/// and characters file systems refuse become `_`, and an id of dots only gets
/// a `_` in front, so an id read from a file (`Image="../x"`) never names a
/// file outside the folder.
pub fn file_safe_name(id: &str) -> String {
    let s: String =
        id.chars()
            .map(|c| {
                if matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') { format!("_{s}") } else { s }
}

/// `dir/<file-safe id>.<ext>` for every image of `set`, in order; two images
/// landing on one file (ids alike but for characters made `_`) are an error,
/// not one file silently overwriting the other.
pub(crate) fn per_image_paths(set: &AnnotationSet, dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut seen = std::collections::HashSet::new();
    set.images
        .iter()
        .map(|img| {
            let name = format!("{}.{ext}", file_safe_name(&img.image));
            if !seen.insert(name.clone()) {
                return Err(FormatError::Unsupported {
                    path: dir.to_owned(),
                    message: format!("two images would both be written to {name}; image identifiers must be unique"),
                });
            }
            Ok(dir.join(name))
        })
        .collect()
}

/// The entries of folder `dir`, sorted, hidden ones (`.DS_Store`, editor
/// files: names starting with `.`) left out; an unreadable folder is an
/// error naming it.
pub(crate) fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FormatError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    v.sort();
    Ok(v)
}

/// Tells the format of `path` from its extension and a look at its content.
pub fn detect_format(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
    if meta.is_dir() {
        return Ok(if atypia14::is_atypia_folder(path) {
            Format::Atypia14
        } else if tupac::is_tupac_folder(path) {
            Format::Tupac
        } else {
            Format::Gzmh
        });
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "zip" => return Ok(Format::Gzmh),
        "sqlite" | "sqlite3" | "db" => return Ok(Format::SlideRunner),
        "geojson" => return Ok(Format::GeoJson),
        "xml" => return Ok(detect_xml(&read_head(path, 4096)?)),
        "txt" => return Ok(Format::Yolo),
        _ => {}
    }
    let head = read_head(path, 64 * 1024)?;
    if head.starts_with(b"SQLite format 3\0") {
        return Ok(Format::SlideRunner);
    }
    let text = String::from_utf8_lossy(&head);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if ext == "json" || trimmed.starts_with('{') || trimmed.starts_with('[') {
        if trimmed.is_empty() {
            return Err(FormatError::UnknownFormat {
                path: path.to_owned(),
                hint: "the file is empty (no JSON in it)".into(),
            });
        }
        return detect_json(path, trimmed);
    }
    if ext == "csv"
        && atypia14::is_label_file_name(path)
        && (trimmed.is_empty() || atypia14::looks_like_atypia(trimmed))
    {
        return Ok(Format::Atypia14);
    }
    if ext == "csv" || ext == "tsv" {
        return Ok(detect_csv(trimmed));
    }
    Err(FormatError::UnknownFormat {
        path: path.to_owned(),
        hint: format!(
            "extension '{ext}' is none of csv, json, geojson, xml, txt, sqlite, zip, and the content is not recognised; \
             name the format with --format ({})",
            Format::ALL.map(Format::name).join(", ")
        ),
    })
}

fn read_head(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf).map_err(|e| FormatError::io(path, e))?;
    Ok(buf)
}

/// ASAP XML where the first element is `<ASAP_Annotations>`, else Pascal-VOC
/// (whose reader then says what it found).
fn detect_xml(head: &[u8]) -> Format {
    let text = String::from_utf8_lossy(head);
    let first_element = text
        .match_indices('<')
        .map(|(i, _)| &text[i + 1..])
        .find(|rest| !rest.starts_with('?') && !rest.starts_with('!'));
    match first_element {
        Some(rest) if rest.starts_with(asap::ROOT) => Format::Asap,
        _ => Format::Voc,
    }
}

/// Lines of two numbers only are TUPAC ground truth (`row,column`), of
/// three with the third in [0, 1] MITOS-ATYPIA-14 labels; a CSV
/// whose first line is all numbers, many of them, is an ICPR pixel list;
/// anything with a header is a plain point CSV.
fn detect_csv(text: &str) -> Format {
    if tupac::looks_like_tupac(text) {
        return Format::Tupac;
    }
    if atypia14::looks_like_atypia(text) {
        return Format::Atypia14;
    }
    let first = text.lines().next().unwrap_or("");
    let fields: Vec<&str> = first.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    let numeric = !fields.is_empty() && fields.iter().all(|f| f.parse::<f64>().is_ok());
    if numeric && fields.len() >= 2 && fields.len().is_multiple_of(2) && fields.len() != 4 {
        Format::IcprPixels
    } else {
        Format::Csv
    }
}

fn detect_json(path: &Path, head: &str) -> Result<Format> {
    // Look at top-level keys in the head only: MIDOG++.json is tens of MB.
    let has = |k: &str| head.contains(&format!("\"{k}\""));
    if has("FeatureCollection") || has("Feature") || (head.starts_with('[') && has("geometry")) {
        return Ok(Format::GeoJson);
    }
    if head.contains("Multiple points") || (has("points") && has("point")) {
        return Ok(Format::MidogPoints);
    }
    if has("images") || has("annotations") || has("categories") {
        return Ok(Format::Coco);
    }
    Err(FormatError::UnknownFormat {
        path: path.to_owned(),
        hint: "JSON is neither COCO/MIDOG (images/annotations), grand-challenge Multiple points, nor GeoJSON".into(),
    })
}

/// Reads `path` in `format`, or in the detected format when `None`.
pub fn read(path: &Path, format: Option<Format>, opts: &ReadOptions) -> Result<AnnotationSet> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    tracing::debug!(path = %path.display(), %format, "reading annotations");
    let mut set = match format {
        Format::Gzmh => gzmh::read(path, opts),
        Format::Csv => csv_points::read(path, opts),
        Format::IcprPixels => icpr::read_pixel_lists(path, opts),
        Format::Coco => coco::read(path, opts),
        Format::MidogPoints => midog_points::read(path, opts),
        Format::SlideRunner => sliderunner::read(path, opts),
        Format::Yolo => yolo::read(path, opts),
        Format::Voc => voc::read(path, opts),
        Format::Asap => asap::read(path, opts),
        Format::GeoJson => geojson::read(path, opts),
        Format::Tupac => tupac::read(path, opts),
        Format::Atypia14 => atypia14::read(path, opts),
    }?;
    if let Some(mpp) = opts.mpp {
        set.fill_mpp(mpp);
    }
    Ok(set)
}

/// Writes `set` to `path` in `format` (atomically).
pub fn write(set: &AnnotationSet, path: &Path, format: Format, opts: &WriteOptions) -> Result<()> {
    match format {
        Format::Csv => csv_points::write(set, path, opts),
        Format::Coco => coco::write(set, path, opts),
        Format::MidogPoints => midog_points::write(set, path, opts),
        Format::Yolo => yolo::write(set, path, opts),
        Format::Voc => voc::write(set, path, opts),
        Format::Asap => asap::write(set, path, opts),
        Format::GeoJson => geojson::write(set, path, opts),
        Format::Gzmh | Format::IcprPixels | Format::SlideRunner | Format::Tupac | Format::Atypia14 => {
            Err(FormatError::Unsupported {
                path: path.to_owned(),
                message: format!(
                    "writing {format} is not supported; write csv, coco, midog, yolo, voc, asap or geojson"
                ),
            })
        }
    }
}

/// Picks a writer from the output path's extension (`.csv`, `.geojson`,
/// `.json` = COCO, `.xml` = VOC, `.txt` or a folder = YOLO).
pub fn format_for_output(path: &Path) -> Option<Format> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Some(Format::Csv),
        "geojson" => Some(Format::GeoJson),
        "json" => Some(Format::Coco),
        "xml" => Some(Format::Voc),
        "txt" => Some(Format::Yolo),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_sniffing() {
        assert_eq!(detect_csv("image,x,y\nA,1,2\n"), Format::Csv);
        assert_eq!(detect_csv("606,299,607,299,608,299\n"), Format::IcprPixels);
        // One pair per line: TUPAC's row,column, not a one-pixel ICPR figure.
        assert_eq!(detect_csv("1208,1591\n300,42\n"), Format::Tupac);
        // x,y,confidence: MITOS-ATYPIA-14; three numbers without a confidence in [0, 1] stay plain CSV.
        assert_eq!(detect_csv("1140,1021,1\n233,75,0.65\n"), Format::Atypia14);
        assert_eq!(detect_csv("1140,1021,7\n"), Format::Csv);
    }

    #[test]
    fn xml_sniffing() {
        assert_eq!(detect_xml(b"<?xml version=\"1.0\"?>\n<!-- ASAP -->\n<ASAP_Annotations>"), Format::Asap);
        assert_eq!(detect_xml(b"\xef\xbb\xbf<ASAP_Annotations/>"), Format::Asap);
        assert_eq!(detect_xml(b"<?xml version=\"1.0\"?><annotation><filename>"), Format::Voc);
        assert_eq!(detect_xml(b""), Format::Voc);
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
    }
}
