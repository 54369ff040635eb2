//! QuPath-compatible GeoJSON.
//!
//! Writer: a `FeatureCollection` with one `Feature` per object. Geometry is
//! the centroid as a `Point`, or with [`WriteOptions::polygons`] the outline
//! where the object has a shape: a polygon as is, a multipolygon (a figure in
//! several parts) as a `MultiPolygon`, and a pixel set as the outline along
//! its pixels' edges, a `Polygon` where it is one 4-connected blob, else a
//! `MultiPolygon` with a part per blob (exactly its pixels either way).
//! Properties, as QuPath 0.4+ reads them:
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
//! outer ring as shape; a `MultiPolygon` is one object in several parts,
//! each part's outer ring kept (holes are dropped: a mitosis has none). Class from `properties.classification.name` (QuPath; a plain
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
                let parts = coordinates.iter().map(|p| outer_ring(path, &loc, p)).collect::<Result<Vec<_>>>()?;
                let shape = Shape::from_parts(parts)
                    .ok_or_else(|| FormatError::malformed(path, loc(), "multipolygon without polygons"))?;
                objs.push(
                    Annotation::from_shape(shape, class)
                        .ok_or_else(|| FormatError::malformed(path, loc(), "empty multipolygon"))?,
                );
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
    Annotation::from_shape(Shape::Polygon(outer_ring(path, loc, rings)?), class)
        .ok_or_else(|| FormatError::malformed(path, loc(), "empty polygon"))
}

/// A polygon's outer ring (holes are not kept: a mitosis has none).
fn outer_ring(path: &Path, loc: &dyn Fn() -> String, rings: &[Vec<Position>]) -> Result<Polygon> {
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
    Ok(poly)
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

/// The outline of a pixel set along its pixels' edges, holes filled, when the
/// set is one 4-connected blob (else `None`): it covers exactly the blob's
/// pixels, where [`pixel_hull`] also covers its concavities. Clockwise on
/// screen (y down), a vertex at each turn, in the same half-pixel frame as
/// [`pixel_hull`].
///
/// Written here rather than taken from `imageproc::contours`: that traces
/// through pixel centres, so a filled contour loses half a pixel all round
/// and a one-pixel-wide figure has no area at all.
pub fn pixel_outline(pixels: &[(u32, u32)]) -> Option<Polygon> {
    let set: std::collections::HashSet<(i64, i64)> =
        pixels.iter().map(|&(x, y)| (i64::from(x), i64::from(y))).collect();
    let &start = set.iter().min_by_key(|&&(x, y)| (y, x))?;
    // One blob: everything reachable from `start` through edge neighbours.
    let mut seen = std::collections::HashSet::from([start]);
    let mut stack = vec![start];
    while let Some((x, y)) = stack.pop() {
        for n in [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)] {
            if set.contains(&n) && seen.insert(n) {
                stack.push(n);
            }
        }
    }
    if seen.len() != set.len() {
        return None;
    }
    let on = |x: i64, y: i64| set.contains(&(x, y));
    // Walk the pixel corners (corner (cx, cy) is the top-left of pixel (cx, cy))
    // with the blob on the right: east, south, west, north.
    const STEP: [(i64, i64); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];
    // The two pixels ahead of corner (cx, cy) heading `d`: (left, right).
    let ahead = |cx: i64, cy: i64, d: usize| match d {
        0 => (on(cx, cy - 1), on(cx, cy)),
        1 => (on(cx, cy), on(cx - 1, cy)),
        2 => (on(cx - 1, cy), on(cx - 1, cy - 1)),
        _ => (on(cx - 1, cy - 1), on(cx, cy - 1)),
    };
    let (mut c, mut d) = (start, 0usize);
    let mut vertices = vec![start];
    // Each edge of the boundary is walked once: 4 per pixel bounds the walk.
    for _ in 0..=4 * set.len() {
        c = (c.0 + STEP[d].0, c.1 + STEP[d].1);
        if c == start {
            break;
        }
        let (left, right) = ahead(c.0, c.1, d);
        let turn = if !right {
            (d + 1) % 4 // the edge turns right (also where a pixel only touches diagonally)
        } else if left {
            (d + 3) % 4 // a pixel ahead on the left too: the edge turns left
        } else {
            d
        };
        if turn != d {
            vertices.push(c);
            d = turn;
        }
    }
    let vertices = vertices.into_iter().map(|(x, y)| Point::new(x as f64 - 0.5, y as f64 - 0.5)).collect();
    Some(Polygon::new(vertices))
}

/// The outlines of a pixel set's 4-connected blobs along their pixels' edges
/// ([`pixel_outline`] of each), largest first (ties in raster order of their
/// first pixel): together they cover exactly the set, holes filled, so two
/// masses (a figure in anaphase) stay two parts instead of one hull over the
/// gap between them.
pub fn pixel_outlines(pixels: &[(u32, u32)]) -> Vec<Polygon> {
    let mut left: std::collections::HashSet<(u32, u32)> = pixels.iter().copied().collect();
    let mut firsts: Vec<(u32, u32)> = left.iter().copied().collect();
    firsts.sort_by_key(|&(x, y)| (y, x));
    let mut blobs: Vec<Vec<(u32, u32)>> = Vec::new();
    for first in firsts {
        if !left.remove(&first) {
            continue; // already part of an earlier blob
        }
        let mut blob = vec![first];
        let mut i = 0;
        while i < blob.len() {
            let (x, y) = blob[i];
            let near = [(x.wrapping_sub(1), y), (x + 1, y), (x, y.wrapping_sub(1)), (x, y + 1)];
            for n in near {
                if left.remove(&n) {
                    blob.push(n);
                }
            }
            i += 1;
        }
        blobs.push(blob);
    }
    // Stable: equal sizes keep raster order.
    blobs.sort_by_key(|b| std::cmp::Reverse(b.len()));
    blobs.iter().filter_map(|b| pixel_outline(b)).collect()
}

fn class_label(class: ObjectClass) -> (&'static str, [u8; 3]) {
    match class {
        ObjectClass::Mitosis => ("Mitosis", [220, 30, 30]),
        ObjectClass::NonMitosis => ("Non-mitosis", [30, 120, 220]),
    }
}

/// The outlines a polygon writer draws for `shape`: a polygon's or each
/// part's (3 vertices or more), a pixel set's along its pixel edges; none
/// without a shape.
pub(crate) fn outlines_for_writing(shape: Option<&Shape>) -> Vec<Polygon> {
    match shape {
        Some(Shape::Pixels(px)) => pixel_outlines(px),
        Some(shape) => shape.polygons().iter().filter(|p| p.vertices.len() >= 3).cloned().collect(),
        None => Vec::new(),
    }
}

fn feature(img: &ImageAnnotations, o: &Annotation, polygons: bool) -> Feature {
    let outlines = if polygons { outlines_for_writing(o.shape.as_ref()) } else { Vec::new() };
    // GeoJSON rings are closed: repeat the first vertex.
    let ring = |poly: &Polygon| -> Vec<Position> {
        let mut ring: Vec<Position> =
            poly.vertices.iter().map(|v| Position::from([v.x + QUPATH_OFFSET, v.y + QUPATH_OFFSET])).collect();
        ring.extend(ring.first().cloned());
        ring
    };
    let geometry = match outlines.as_slice() {
        [] => Geometry::new_point([o.centroid.x + QUPATH_OFFSET, o.centroid.y + QUPATH_OFFSET]),
        [one] => Geometry::new(GeometryValue::Polygon { coordinates: vec![ring(one)] }),
        parts => {
            Geometry::new(GeometryValue::MultiPolygon { coordinates: parts.iter().map(|p| vec![ring(p)]).collect() })
        }
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
    let files = crate::per_image_paths(set, path, "geojson")?;
    std::fs::create_dir_all(path).map_err(|e| FormatError::io(path, e))?;
    for (img, file) in set.images.iter().zip(files) {
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

    #[test]
    fn outline_of_pixels_follows_their_edges() {
        let single = pixel_outline(&[(5, 5)]).unwrap();
        assert_eq!((single.area(), single.vertices.len()), (1.0, 4));
        assert_eq!(single.centroid(), Some(Point::new(5.0, 5.0)));
        // The L: exactly its 3 pixels (the hull: 3.5), 6 corners, centred on its pixels' mean.
        let l = pixel_outline(&[(0, 0), (0, 1), (1, 1)]).unwrap();
        assert_eq!((l.area(), l.vertices.len()), (3.0, 6));
        let c = l.centroid().unwrap();
        assert!((c.x - 1.0 / 3.0).abs() < 1e-12 && (c.y - 2.0 / 3.0).abs() < 1e-12, "{c:?}");
        // A U (concave, 7 pixels) and a ring (its hole filled: 9).
        let u = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0)];
        assert_eq!(pixel_outline(&u).unwrap().area(), 7.0);
        let ring: Vec<(u32, u32)> = (0..3).flat_map(|y| (0..3).map(move |x| (x, y))).filter(|&p| p != (1, 1)).collect();
        assert_eq!(pixel_outline(&ring).unwrap().area(), 9.0);
        // Diagonal neighbours are two blobs, as are two masses apart: no one outline, a part per blob.
        assert!(pixel_outline(&[(0, 0), (1, 1)]).is_none());
        assert!(pixel_outline(&[(0, 0), (5, 0)]).is_none());
        assert!(pixel_outline(&[]).is_none());
        assert!(pixel_outlines(&[]).is_empty());
        assert_eq!(pixel_outlines(&[(0, 0), (1, 1)]).len(), 2);
        // Anaphase: a 2-pixel mass and a 3-pixel mass 5 px apart; largest first, nothing between.
        let parts = pixel_outlines(&[(0, 0), (0, 1), (6, 0), (7, 0), (8, 0)]);
        let areas: Vec<f64> = parts.iter().map(Polygon::area).collect();
        assert_eq!(areas, [3.0, 2.0]);
        assert_eq!(parts[0].centroid(), Some(Point::new(7.0, 0.0)));
        assert_eq!(parts[1].centroid(), Some(Point::new(0.0, 0.5)));
        // One blob: the one outline.
        assert_eq!(pixel_outlines(&u), vec![pixel_outline(&u).unwrap()]);
        // A random blob: the outline's area is its pixel count whenever it has no hole.
        let blob: Vec<(u32, u32)> = (0..40u32)
            .flat_map(|y| (0..40u32).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let (dx, dy) = (x as f64 - 20.0, y as f64 - 20.0);
                dx.hypot(dy) < 12.0 + 5.0 * (3.0 * dy.atan2(dx)).sin()
            })
            .collect();
        assert_eq!(pixel_outline(&blob).unwrap().area(), blob.len() as f64);
        assert!(pixel_hull(&blob).area() > blob.len() as f64 + 50.0);
    }

    #[test]
    fn a_figure_in_two_parts_is_written_and_read_as_one_multipolygon() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = ImageAnnotations::new("HPF");
        // Anaphase as a pixel set: two 2x2 masses 4 px apart, one object.
        let masses = vec![(10, 10), (11, 10), (10, 11), (11, 11), (16, 10), (17, 10), (16, 11), (17, 11)];
        img.objects.push(Annotation::from_shape(Shape::Pixels(masses), ObjectClass::Mitosis).unwrap().with_score(0.9));
        let set = AnnotationSet::from_images(vec![img]);
        let path = dir.path().join("out.geojson");
        write(&set, &path, &WriteOptions { mpp: None, polygons: true }).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"MultiPolygon\""), "{text}");
        let back = read(&path, &ReadOptions::default()).unwrap();
        let objects = &back.images[0].objects;
        assert_eq!(objects.len(), 1, "one figure, not two");
        let Some(Shape::MultiPolygon(parts)) = &objects[0].shape else { panic!("{:?}", objects[0].shape) };
        // Each part covers exactly its mass's 4 pixels, back in our pixel-centre frame.
        assert_eq!(parts.iter().map(Polygon::area).collect::<Vec<_>>(), [4.0, 4.0]);
        assert_eq!(objects[0].centroid, Point::new(13.5, 10.5));
        assert_eq!(objects[0].score, Some(0.9));
    }
}
