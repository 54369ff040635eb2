//! QuPath-compatible GeoJSON.
//!
//! Writer: a `FeatureCollection` with one `Feature` per object. Geometry is
//! the centroid as a `Point`, or with [`WriteOptions::polygons`] the outline
//! as a `Polygon` where the object has a shape (a polygon as is; a pixel set
//! as the convex hull of its pixels' squares, a simple outline that covers
//! every pixel). Properties, as QuPath 0.4+ reads them:
//!
//! ```json
//! {"objectType": "annotation",            // "detection" when scored
//!  "classification": {"name": "Mitosis", "color": [220, 30, 30]},  // or "Non-mitosis"
//!  "measurements": {"score": 0.93},       // scored objects only
//!  "image": "A00_01"}
//! ```
//!
//! A path ending in `.geojson` or `.json` receives one file holding every
//! image, each feature naming its image in `properties.image` (images without
//! objects are lost). Any other path is a folder that receives
//! `<image>.geojson` per image, as QuPath imports one file per image; empty
//! images then keep an empty collection.
//!
//! Coordinates: QuPath puts pixel *corners* on integers (pixel (0, 0) spans
//! [0, 1]²); Mitoscope puts pixel *centres* on integers. The writer adds
//! [`QUPATH_OFFSET`] to every coordinate and the reader subtracts it, so a
//! centroid lands on the same pixel in QuPath as here.
//!
//! Reader: a `FeatureCollection`, a single `Feature` or a plain array of
//! features, or a folder of `*.geojson`/`*.json` files. `Point` and each
//! point of a `MultiPoint` are objects; a `Polygon` is one object with its
//! outer ring as shape; a `MultiPolygon` is one object shaped by its largest
//! polygon. Class from `properties.classification.name` (QuPath; a plain
//! string is accepted too), else `properties.class`, parsed by
//! [`ObjectClass::parse`]; `properties.name` (free text in QuPath) counts
//! only when it parses. Unclassified features are mitoses; unknown class
//! names are an error. Score from `measurements.score`
//! (object or QuPath's older `[{"name","value"}]` list), `score` or
//! `probability`. Image from `properties.image`, else the file stem. Other
//! geometries are skipped and reported as an [`Inconsistency`].

use std::path::{Path, PathBuf};

use geojson::{Feature, FeatureCollection, GeoJson, Geometry, GeometryValue, JsonObject, JsonValue, Position};
use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, Inconsistency, ObjectClass, Shape};
use mitoscope_geom::{Point, Polygon};
use serde_json::json;

use crate::csv_points::{file_stem, json_error};
use crate::{FormatError, ReadOptions, Result, WriteOptions, atomic};

/// QuPath coordinate minus Mitoscope coordinate (see the module docs).
pub const QUPATH_OFFSET: f64 = 0.5;

fn is_geojson_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("geojson") || e.eq_ignore_ascii_case("json"))
}

/// Reads a GeoJSON file or a folder of them (see the module docs).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    let mut set = AnnotationSet::default();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| FormatError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_geojson_file(p))
            .collect();
        files.sort();
        for f in files {
            read_file(&f, &mut set)?;
        }
    } else {
        read_file(path, &mut set)?;
    }
    if let Some(mpp) = opts.mpp {
        set.fill_mpp(mpp);
    }
    Ok(set)
}

fn read_file(path: &Path, set: &mut AnnotationSet) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let value: JsonValue = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| json_error(path, e))?;
    let features: Vec<Feature> = if value.is_array() {
        serde_json::from_value(value)
            .map_err(|e| FormatError::malformed(path, "top level", format!("not an array of GeoJSON features: {e}")))?
    } else {
        match serde_json::from_value::<GeoJson>(value) {
            Ok(GeoJson::FeatureCollection(fc)) => fc.features,
            Ok(GeoJson::Feature(f)) => vec![f],
            Ok(GeoJson::Geometry(_)) => {
                return Err(FormatError::malformed(
                    path,
                    "top level",
                    "a bare geometry: expected a Feature or FeatureCollection",
                ));
            }
            Err(e) => return Err(FormatError::malformed(path, "top level", format!("not GeoJSON: {e}"))),
        }
    };
    let stem = file_stem(path);
    // A per-image file of an empty image still names its image.
    if features.is_empty() {
        set.image_mut_or_insert(&stem);
    }
    for (i, f) in features.iter().enumerate() {
        let loc = || format!("feature {i}");
        let props = f.properties.as_ref();
        let image = props.and_then(|p| p.get("image")).and_then(JsonValue::as_str).unwrap_or(&stem).to_owned();
        let class = match class_name(props) {
            None => ObjectClass::Mitosis,
            Some(name) => ObjectClass::parse(name).ok_or_else(|| {
                FormatError::malformed(
                    path,
                    loc(),
                    format!("unknown class '{name}' (expected e.g. Mitosis, Non-mitosis)"),
                )
            })?,
        };
        let score = score(props);
        let Some(geom) = &f.geometry else {
            set.inconsistencies.push(Inconsistency {
                image,
                message: format!("{}: {} has no geometry; skipped", path.display(), loc()),
            });
            continue;
        };
        let mut objs = Vec::new();
        match &geom.value {
            GeometryValue::Point { coordinates } => {
                objs.push(Annotation::point(position(path, &loc, coordinates)?, class))
            }
            GeometryValue::MultiPoint { coordinates } => {
                for c in coordinates {
                    objs.push(Annotation::point(position(path, &loc, c)?, class));
                }
            }
            GeometryValue::Polygon { coordinates } => objs.push(polygon_object(path, &loc, coordinates, class)?),
            GeometryValue::MultiPolygon { coordinates } => {
                let mut parts =
                    coordinates.iter().map(|p| polygon_object(path, &loc, p, class)).collect::<Result<Vec<_>>>()?;
                let area = |a: &Annotation| a.shape.as_ref().map_or(0.0, Shape::area_px);
                parts.sort_by(|a, b| area(b).total_cmp(&area(a)));
                objs.extend(parts.into_iter().next());
            }
            other => {
                set.inconsistencies.push(Inconsistency {
                    image,
                    message: format!(
                        "{}: {} is a {}, not a point or polygon; skipped",
                        path.display(),
                        loc(),
                        other.type_name()
                    ),
                });
                continue;
            }
        }
        let img = set.image_mut_or_insert(&image);
        img.objects.extend(objs.into_iter().map(|mut o| {
            o.score = score;
            o
        }));
    }
    Ok(())
}

fn class_name(props: Option<&JsonObject>) -> Option<&str> {
    let p = props?;
    let classification = p.get("classification");
    classification
        .and_then(|c| c.get("name"))
        .and_then(JsonValue::as_str)
        .or_else(|| classification.and_then(JsonValue::as_str))
        .or_else(|| p.get("class").and_then(JsonValue::as_str))
        // QuPath's `name` is free text ("Annotation 3"): a class only when it reads as one.
        .or_else(|| p.get("name").and_then(JsonValue::as_str).filter(|n| ObjectClass::parse(n).is_some()))
        .filter(|s| !s.trim().is_empty())
}

fn score(props: Option<&JsonObject>) -> Option<f64> {
    let p = props?;
    let from_measurements = match p.get("measurements") {
        Some(JsonValue::Object(m)) => m.get("score").and_then(JsonValue::as_f64),
        Some(JsonValue::Array(list)) => list
            .iter()
            .find(|m| m.get("name").and_then(JsonValue::as_str).is_some_and(|n| n.eq_ignore_ascii_case("score")))
            .and_then(|m| m.get("value"))
            .and_then(JsonValue::as_f64),
        _ => None,
    };
    from_measurements
        .or_else(|| p.get("score").and_then(JsonValue::as_f64))
        .or_else(|| p.get("probability").and_then(JsonValue::as_f64))
}

fn position(path: &Path, loc: &dyn Fn() -> String, p: &Position) -> Result<Point> {
    match p.as_slice() {
        [x, y, ..] if x.is_finite() && y.is_finite() => Ok(Point::new(x - QUPATH_OFFSET, y - QUPATH_OFFSET)),
        other => Err(FormatError::malformed(path, loc(), format!("position needs finite x and y, found {other:?}"))),
    }
}

fn polygon_object(
    path: &Path,
    loc: &dyn Fn() -> String,
    rings: &[Vec<Position>],
    class: ObjectClass,
) -> Result<Annotation> {
    let outer = rings.first().ok_or_else(|| FormatError::malformed(path, loc(), "polygon without rings"))?;
    let pts = outer.iter().map(|p| position(path, loc, p)).collect::<Result<Vec<_>>>()?;
    let poly = Polygon::new(pts);
    if poly.vertices.len() < 3 {
        return Err(FormatError::malformed(
            path,
            loc(),
            format!("polygon ring has {} distinct vertices", poly.vertices.len()),
        ));
    }
    Annotation::from_shape(Shape::Polygon(poly), class)
        .ok_or_else(|| FormatError::malformed(path, loc(), "empty polygon"))
}

/// Convex hull (counter-clockwise, Andrew's monotone chain) of the squares of
/// a pixel set: pixel (x, y) covers [x - 0.5, x + 0.5] x [y - 0.5, y + 0.5].
pub fn pixel_hull(pixels: &[(u32, u32)]) -> Polygon {
    let mut pts: Vec<(f64, f64)> = pixels
        .iter()
        .flat_map(|&(x, y)| {
            let (x, y) = (x as f64, y as f64);
            [(x - 0.5, y - 0.5), (x + 0.5, y - 0.5), (x + 0.5, y + 0.5), (x - 0.5, y + 0.5)]
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() < 3 {
        return Polygon::new(pts.into_iter().map(|(x, y)| Point::new(x, y)).collect());
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(pts.len() + 1);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f64, f64)>> =
            if pass == 0 { Box::new(pts.iter()) } else { Box::new(pts.iter().rev()) };
        for &p in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    Polygon::new(hull.into_iter().map(|(x, y)| Point::new(x, y)).collect())
}

fn class_label(class: ObjectClass) -> (&'static str, [u8; 3]) {
    match class {
        ObjectClass::Mitosis => ("Mitosis", [220, 30, 30]),
        ObjectClass::NonMitosis => ("Non-mitosis", [30, 120, 220]),
    }
}

fn feature(img: &ImageAnnotations, o: &Annotation, polygons: bool) -> Feature {
    let outline = match (&o.shape, polygons) {
        (Some(Shape::Polygon(p)), true) if p.vertices.len() >= 3 => Some(p.clone()),
        (Some(Shape::Pixels(px)), true) if !px.is_empty() => Some(pixel_hull(px)),
        _ => None,
    };
    let geometry = match outline {
        Some(poly) => {
            // GeoJSON rings are closed: repeat the first vertex.
            let mut ring: Vec<Position> =
                poly.vertices.iter().map(|v| Position::from([v.x + QUPATH_OFFSET, v.y + QUPATH_OFFSET])).collect();
            ring.extend(ring.first().cloned());
            Geometry::new(GeometryValue::Polygon { coordinates: vec![ring] })
        }
        None => Geometry::new_point([o.centroid.x + QUPATH_OFFSET, o.centroid.y + QUPATH_OFFSET]),
    };
    let (name, color) = class_label(o.class);
    let mut props = JsonObject::new();
    props.insert("objectType".into(), json!(if o.score.is_some() { "detection" } else { "annotation" }));
    props.insert("classification".into(), json!({"name": name, "color": color}));
    if let Some(s) = o.score {
        props.insert("measurements".into(), json!({"score": s}));
    }
    props.insert("image".into(), json!(img.image));
    Feature { geometry: Some(geometry), properties: Some(props), ..Default::default() }
}

fn collection<'a>(images: impl IntoIterator<Item = &'a ImageAnnotations>, polygons: bool) -> FeatureCollection {
    images.into_iter().flat_map(|img| img.objects.iter().map(move |o| feature(img, o, polygons))).collect()
}

fn to_bytes(path: &Path, fc: FeatureCollection) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(&fc).map_err(|e| FormatError::io(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes one `.geojson`/`.json` file, or a folder of `<image>.geojson`.
pub fn write(set: &AnnotationSet, path: &Path, opts: &WriteOptions) -> Result<()> {
    if is_geojson_file(path) {
        return atomic::write_atomic(path, &to_bytes(path, collection(&set.images, opts.polygons))?);
    }
    std::fs::create_dir_all(path).map_err(|e| FormatError::io(path, e))?;
    for img in &set.images {
        let file = path.join(format!("{}.geojson", img.image));
        atomic::write_atomic(&file, &to_bytes(&file, collection([img], opts.polygons))?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_pixels() {
        let single = pixel_hull(&[(5, 5)]);
        assert_eq!(single.vertices.len(), 4);
        assert_eq!(single.area(), 1.0);
        assert_eq!(single.centroid(), Some(Point::new(5.0, 5.0)));
        // An L of three pixels: hull of the squares has area 3.5.
        let l = pixel_hull(&[(0, 0), (0, 1), (1, 1)]);
        assert_eq!(l.area(), 3.5);
        assert!(l.vertices.iter().all(|v| v.x.fract().abs() == 0.5));
    }
}
