//! SlideRunner SQLite databases (MITOS 2012/2014, MIDOG, CCMCT, ...).
//!
//! Tables read: `Slides(uid, filename, width, height, directory)`,
//! `Annotations(uid, slide, type, agreedClass[, deleted])`,
//! `Annotations_coordinates(coordinateX, coordinateY, slide, annoId, orderIdx)`
//! and `Classes(uid, name)`. The database is opened read-only.
//!
//! - Image id = slide filename stem; every slide appears, with or without
//!   annotations.
//! - Class: "Mitosis" -> mitosis, "Nonmitosis" -> look-alike, other names
//!   through [`ObjectClass::parse`]; annotations of any other class (or with
//!   no agreed class) are skipped and reported as one [`Inconsistency`] per
//!   class with its count.
//! - Annotation types (SlideRunner's `AnnotationType`): 1 spot and 4 special
//!   spot = centroid; 2 area (rectangle) and 5 circle = the box enclosing its
//!   two corner coordinates; 3 polygon = [`Shape::Polygon`]. Type 6 (image
//!   annotation) and unknown types are skipped and reported.
//! - Annotations with `deleted = 1` (newer databases) are skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, Inconsistency, ObjectClass, Shape};
use mitoscope_geom::{BBox, Point, Polygon};
use rusqlite::{Connection, OpenFlags};

use crate::csv_points::image_id_from_name;
use crate::{FormatError, ReadOptions, Result, WriteOptions};

const REQUIRED_TABLES: [&str; 4] = ["Slides", "Annotations", "Annotations_coordinates", "Classes"];

fn db_error(path: &Path, what: &str, e: rusqlite::Error) -> FormatError {
    FormatError::malformed(path, what, format!("cannot read the SlideRunner database: {e}"))
}

/// Reads a SlideRunner database (see the module docs).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    // Open fails lazily on non-databases; check existence for a plain I/O error.
    std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| db_error(path, "open", e))?;

    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| db_error(path, "schema", e))?;
    let missing: Vec<&str> =
        REQUIRED_TABLES.iter().copied().filter(|t| !tables.iter().any(|x| x.eq_ignore_ascii_case(t))).collect();
    if !missing.is_empty() {
        return Err(FormatError::malformed(
            path,
            "schema",
            format!(
                "not a SlideRunner database: missing table(s) {} (found: {})",
                missing.join(", "),
                if tables.is_empty() { "none".to_owned() } else { tables.join(", ") }
            ),
        ));
    }

    let classes: HashMap<i64, String> = conn
        .prepare("SELECT uid, name FROM Classes")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())))?.collect()
        })
        .map_err(|e| db_error(path, "table Classes", e))?;

    let mut set = AnnotationSet::default();
    let mut slide_index: HashMap<i64, usize> = HashMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT uid, filename, width, height, directory FROM Slides ORDER BY uid")
            .map_err(|e| db_error(path, "table Slides", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(|e| db_error(path, "table Slides", e))?;
        for row in rows {
            let (uid, filename, w, h, dir) = row.map_err(|e| db_error(path, "table Slides", e))?;
            let filename = filename.unwrap_or_else(|| format!("slide_{uid}"));
            let mut img = ImageAnnotations::new(image_id_from_name(&filename));
            img.width = w.and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0);
            img.height = h.and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0);
            img.mpp = opts.mpp;
            let base = opts.images_dir.clone().or_else(|| dir.filter(|d| !d.is_empty()).map(Into::into));
            if let Some(p) = base.map(|b| b.join(&filename)).filter(|p| p.is_file()) {
                img.path = Some(p);
            }
            slide_index.insert(uid, set.images.len());
            set.images.push(img);
        }
    }

    // Coordinates grouped by annotation, in drawing order.
    let mut coords: HashMap<i64, Vec<Point>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT annoId, coordinateX, coordinateY FROM Annotations_coordinates \
                 ORDER BY annoId, orderIdx, uid",
            )
            .map_err(|e| db_error(path, "table Annotations_coordinates", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<f64>>(1)?, r.get::<_, Option<f64>>(2)?))
            })
            .map_err(|e| db_error(path, "table Annotations_coordinates", e))?;
        for row in rows {
            let (anno, x, y) = row.map_err(|e| db_error(path, "table Annotations_coordinates", e))?;
            if let (Some(anno), Some(x), Some(y)) = (anno, x, y) {
                coords.entry(anno).or_default().push(Point::new(x, y));
            }
        }
    }

    let has_deleted = conn
        .prepare("SELECT name FROM pragma_table_info('Annotations')")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| db_error(path, "table Annotations", e))?
        .iter()
        .any(|c| c.eq_ignore_ascii_case("deleted"));
    let sql = if has_deleted {
        "SELECT uid, slide, type, agreedClass FROM Annotations WHERE deleted IS NULL OR deleted = 0 ORDER BY uid"
    } else {
        "SELECT uid, slide, type, agreedClass FROM Annotations ORDER BY uid"
    };
    let mut skipped_class: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped_type: BTreeMap<i64, usize> = BTreeMap::new();
    let (mut no_coords, mut no_slide) = (0usize, 0usize);
    let mut stmt = conn.prepare(sql).map_err(|e| db_error(path, "table Annotations", e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .map_err(|e| db_error(path, "table Annotations", e))?;
    for row in rows {
        let (uid, slide, kind, class_id) = row.map_err(|e| db_error(path, "table Annotations", e))?;
        let class = match class_id {
            None | Some(0) => {
                *skipped_class.entry("(no agreed class)".into()).or_default() += 1;
                continue;
            }
            Some(c) => match classes.get(&c) {
                Some(name) => match ObjectClass::parse(name) {
                    Some(cls) => cls,
                    None => {
                        *skipped_class.entry(format!("'{name}' (uid {c})")).or_default() += 1;
                        continue;
                    }
                },
                None => {
                    *skipped_class.entry(format!("uid {c} (not in Classes)")).or_default() += 1;
                    continue;
                }
            },
        };
        let Some(&img_idx) = slide.and_then(|s| slide_index.get(&s)) else {
            no_slide += 1;
            continue;
        };
        let Some(pts) = coords.get(&uid).filter(|p| !p.is_empty()) else {
            no_coords += 1;
            continue;
        };
        let obj = match kind.unwrap_or(0) {
            1 | 4 => Some(Annotation::point(pts[0], class)),
            2 | 5 => BBox::enclosing(pts).map(|b| Annotation::from_bbox(b, class)),
            3 => Annotation::from_shape(Shape::Polygon(Polygon::new(pts.clone())), class),
            other => {
                *skipped_type.entry(other).or_default() += 1;
                None
            }
        };
        if let Some(obj) = obj {
            set.images[img_idx].objects.push(obj);
        }
    }

    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut report = |message: String| set.inconsistencies.push(Inconsistency { image: file.clone(), message });
    for (name, n) in skipped_class {
        report(format!("{n} annotation(s) of class {name} skipped: neither mitosis nor look-alike"));
    }
    for (kind, n) in skipped_type {
        report(format!("{n} annotation(s) of unsupported type {kind} skipped"));
    }
    if no_coords > 0 {
        report(format!("{no_coords} annotation(s) without coordinates skipped"));
    }
    if no_slide > 0 {
        report(format!("{no_slide} annotation(s) referring to no slide in Slides skipped"));
    }
    Ok(set)
}

/// Writing SlideRunner databases is not supported.
pub fn write(_set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    Err(FormatError::Unsupported {
        path: path.to_owned(),
        message: "writing SlideRunner databases is not supported; write csv, coco, midog, yolo, voc or geojson".into(),
    })
}
