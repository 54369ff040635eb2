//! Plain point CSV: one object per row, `image,x,y[,score][,class]`.
//!
//! Reader: a header is required and must name at least an image column and
//! either `x,y` or the box columns `xmin,ymin,xmax,ymax` (centroid = box
//! centre). Column names are case-insensitive; aliases:
//!
//! | meaning | accepted names |
//! |---|---|
//! | image | `image`, `image_id`, `image_name`, `filename`, `file`, `slide` |
//! | centroid | `x`/`y`, `cx`/`cy`, `centroid_x`/`centroid_y` |
//! | box | `xmin,ymin,xmax,ymax` or `x_min,y_min,x_max,y_max` |
//! | score | `score`, `probability`, `prob`, `confidence` |
//! | class | `class`, `label`, `category` ([`ObjectClass::parse`]; absent or empty = mitosis) |
//!
//! Other columns are ignored. A `.tsv` file, or a header with tabs and no
//! commas, is read tab-separated. An image cell that names an image file
//! (`A00_01.bmp`, `slides/001.tiff`) becomes its stem, so ids match the other
//! readers. Any finite score is accepted (detectors may write logits).
//!
//! Writer: header `image,x,y,score,class`, coordinates with at most two
//! decimals, `score` empty for annotations. Only centroids are written: boxes
//! and shapes are dropped, and images without objects cannot be represented.

use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ObjectClass};
use mitoscope_geom::{BBox, Point};

use crate::{FormatError, ReadOptions, Result, WriteOptions, atomic};

const IMAGE_NAMES: &[&str] = &["image", "image_id", "image_name", "filename", "file_name", "file", "slide"];
const X_NAMES: &[&str] = &["x", "cx", "centroid_x"];
const Y_NAMES: &[&str] = &["y", "cy", "centroid_y"];
const SCORE_NAMES: &[&str] = &["score", "probability", "prob", "confidence"];
const CLASS_NAMES: &[&str] = &["class", "label", "category"];
const BOX_NAMES: [&[&str]; 4] = [&["xmin", "x_min"], &["ymin", "y_min"], &["xmax", "x_max"], &["ymax", "y_max"]];

/// Extensions of image and whole-slide files whose stem is the image id.
const IMAGE_FILE_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "tif", "tiff", "bmp", "svs", "ndpi", "mrxs", "scn", "vms", "czi", "dcm", "bif"];

/// The image id for a name found in an annotation file. A file name (an
/// image or slide extension) gives its stem (`slides/001.tiff` -> `001`);
/// anything else is an id already and is kept whole (`case.1`, and the
/// `train/images/001` a dataset gives alike-named images in different folders).
pub(crate) fn image_id_from_name(name: &str) -> String {
    let name = name.trim();
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && IMAGE_FILE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)) => {
            stem.to_owned()
        }
        _ => name.to_owned(),
    }
}

/// The stem of an annotation file, used as the image id of single-image formats.
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A number with at most `decimals` decimals and no trailing zeros (`12`, `12.5`).
pub(crate) fn fmt_num(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

/// A serde_json error as [`FormatError::Malformed`] with its line and column.
pub(crate) fn json_error(path: &Path, e: serde_json::Error) -> FormatError {
    if e.is_io() {
        return FormatError::io(path, std::io::Error::other(e));
    }
    // serde_json's message ends with " at line L column C"; the location says that already.
    let msg = e.to_string();
    let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m);
    FormatError::malformed(path, format!("line {} column {}", e.line(), e.column()), format!("invalid JSON: {msg}"))
}

fn csv_error(path: &Path, e: csv::Error) -> FormatError {
    let line = e.position().map(|p| p.line());
    let location = line.map_or_else(|| "record".to_owned(), |l| format!("line {l}"));
    match e.into_kind() {
        csv::ErrorKind::Io(io) => FormatError::io(path, io),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => FormatError::malformed(
            path,
            location,
            format!("expected {expected_len} fields as in the header, found {len}"),
        ),
        csv::ErrorKind::Utf8 { err, .. } => FormatError::malformed(path, location, format!("not UTF-8: {err}")),
        other => FormatError::malformed(path, location, format!("{other:?}")),
    }
}

struct Columns {
    image: usize,
    xy: Option<(usize, usize)>,
    bbox: Option<[usize; 4]>,
    score: Option<usize>,
    class: Option<usize>,
}

impl Columns {
    fn from_header(path: &Path, header: &csv::StringRecord) -> Result<Self> {
        let names: Vec<String> =
            header.iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase()).collect();
        // A first line of numbers is data, not a header: this reader needs one.
        if !names.is_empty() && names.iter().all(|n| n.parse::<f64>().is_ok()) {
            return Err(FormatError::malformed(
                path,
                "line 1",
                format!(
                    "the first line ({}) is numbers, not a header: a points CSV starts with a header \
                     such as image,x,y[,score] (or give --format for another layout)",
                    names.join(",")
                ),
            ));
        }
        // A column named twice would be read from one of them and the other ignored.
        if let Some((i, name)) = names.iter().enumerate().find(|(i, n)| !n.is_empty() && names[..*i].contains(n)) {
            return Err(FormatError::malformed(
                path,
                "line 1",
                format!(
                    "column '{name}' appears twice (columns {} and {})",
                    names.iter().position(|n| n == name).unwrap_or(0) + 1,
                    i + 1
                ),
            ));
        }
        // The first alias present wins (`image` over `slide` where a table has both).
        let find = |aliases: &[&str]| aliases.iter().find_map(|a| names.iter().position(|n| n == a));
        let xy = find(X_NAMES).zip(find(Y_NAMES));
        let b = BOX_NAMES.map(find);
        let bbox = match b {
            [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
            _ => None,
        };
        match find(IMAGE_NAMES) {
            Some(image) if xy.is_some() || bbox.is_some() => {
                Ok(Self { image, xy, bbox, score: find(SCORE_NAMES), class: find(CLASS_NAMES) })
            }
            _ => Err(FormatError::malformed(
                path,
                "line 1",
                format!(
                    "expected a header with at least image,x,y (or image,xmin,ymin,xmax,ymax); found: {}",
                    header.iter().collect::<Vec<_>>().join(",")
                ),
            )),
        }
    }
}

/// Reads a point CSV (or TSV); see the module docs for the columns.
pub fn read(path: &Path, _opts: &ReadOptions) -> Result<AnnotationSet> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let is_tsv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
        || (first_line.contains(&b'\t') && !first_line.contains(&b','));
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(if is_tsv { b'\t' } else { b',' })
        .trim(csv::Trim::All)
        .has_headers(true)
        .from_reader(bytes.as_slice());
    let header = rdr.headers().map_err(|e| csv_error(path, e))?.clone();
    if header.iter().all(str::is_empty) {
        return Err(FormatError::malformed(path, "line 1", "empty file: expected a header with at least image,x,y"));
    }
    let cols = Columns::from_header(path, &header)?;
    let mut set = AnnotationSet::default();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let (image, obj) = parse_row(path, line, &header, &record, &cols)?;
        set.image_mut_or_insert(&image).objects.push(obj);
    }
    Ok(set)
}

fn parse_row(
    path: &Path,
    line: u64,
    header: &csv::StringRecord,
    record: &csv::StringRecord,
    cols: &Columns,
) -> Result<(String, Annotation)> {
    let loc = || format!("line {line}");
    let cell = |i: usize| record.get(i).unwrap_or("");
    let coord = |i: usize| -> Result<f64> {
        let name = header.get(i).unwrap_or("?");
        let raw = cell(i);
        let v: f64 = raw.parse().map_err(|_| {
            FormatError::malformed(path, loc(), format!("column {name}: expected a number, found '{raw}'"))
        })?;
        if !v.is_finite() {
            return Err(FormatError::malformed(
                path,
                loc(),
                format!("column {name}: {raw} is not a finite coordinate"),
            ));
        }
        if v < 0.0 {
            return Err(FormatError::malformed(path, loc(), format!("column {name}: negative coordinate {raw}")));
        }
        Ok(v)
    };
    let image = cell(cols.image);
    if image.is_empty() {
        return Err(FormatError::malformed(path, loc(), "empty image cell"));
    }
    let class = match cols.class.map(cell) {
        None | Some("") => ObjectClass::Mitosis,
        Some(raw) => ObjectClass::parse(raw).ok_or_else(|| {
            FormatError::malformed(
                path,
                loc(),
                format!("unrecognised class '{raw}' (expected e.g. mitosis, non-mitosis, hard negative)"),
            )
        })?,
    };
    let bbox = match cols.bbox {
        Some([a, b, c, d]) => Some(
            BBox::new(coord(a)?, coord(b)?, coord(c)?, coord(d)?)
                .map_err(|e| FormatError::malformed(path, loc(), e.to_string()))?,
        ),
        None => None,
    };
    let mut obj = match (cols.xy, bbox) {
        (Some((x, y)), bbox) => {
            let mut a = Annotation::point(Point::new(coord(x)?, coord(y)?), class);
            a.bbox = bbox;
            a
        }
        (None, Some(b)) => Annotation::from_bbox(b, class),
        // Columns::from_header guarantees x,y or a box; kept as an error rather than a panic.
        (None, None) => return Err(FormatError::malformed(path, loc(), "no x,y or box columns")),
    };
    if let Some(i) = cols.score {
        let raw = cell(i);
        if !raw.is_empty() {
            let s: f64 = raw
                .parse()
                .map_err(|_| FormatError::malformed(path, loc(), format!("score: expected a number, found '{raw}'")))?;
            if !s.is_finite() {
                return Err(FormatError::malformed(path, loc(), format!("score {raw} is not a finite number")));
            }
            obj.score = Some(s);
        }
    }
    Ok((image_id_from_name(image), obj))
}

/// Writes `image,x,y,score,class` rows (see the module docs).
pub fn write(set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    atomic::write_atomic_with(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        out.write_record(["image", "x", "y", "score", "class"])?;
        for img in &set.images {
            for o in &img.objects {
                let score = o.score.map(|s| fmt_num(s, 6)).unwrap_or_default();
                out.write_record([
                    img.image.as_str(),
                    &fmt_num(o.centroid.x, 2),
                    &fmt_num(o.centroid.y, 2),
                    &score,
                    o.class.as_str(),
                ])?;
            }
        }
        out.flush()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ids() {
        assert_eq!(fmt_num(12.0, 2), "12");
        assert_eq!(fmt_num(12.345, 2), "12.35");
        assert_eq!(fmt_num(12.5, 2), "12.5");
        assert_eq!(fmt_num(-0.001, 2), "0");
        assert_eq!(image_id_from_name("slides/001.tiff"), "001");
        assert_eq!(image_id_from_name("A00_01.BMP"), "A00_01");
        assert_eq!(image_id_from_name("case.1"), "case.1");
        assert_eq!(image_id_from_name("test/test_3_score/images/001"), "test/test_3_score/images/001");
    }
}
