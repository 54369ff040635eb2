//! COCO-like JSON: MIDOG 2021 / MIDOG++ and standard COCO.
//!
//! Reader: `images` (id, file_name, width, height), `annotations` (image_id,
//! category_id, bbox, optional polygon `segmentation`: each list one part of
//! the object, RLE masks not read; optional `score`) and
//! `categories` (id, name). The category name decides the class through
//! [`ObjectClass::parse`] ("mitotic figure" / "not mitotic figure"); a
//! category no name of which is recognised is an error naming it. The image
//! id is the `file_name` stem. Images without annotations are kept (empty).
//!
//! Box convention: MIDOG's JSON stores `bbox` as `[x1, y1, x2, y2]`, standard
//! COCO as `[x, y, width, height]`. Without an explicit [`BoxConvention`]
//! ([`read_with`]) it is decided per file: `info` mentioning MIDOG means
//! x1y1x2y2; else a box that would be inverted as x1y1x2y2 means xywh; else a
//! box that, read as xywh, would lie more than half outside its image means
//! x1y1x2y2; else the standard xywh (also for files this writer made).
//!
//! Writer: standard COCO (`[x, y, w, h]`, categories 1 "mitotic figure" and
//! 2 "not mitotic figure", `score` for detections, polygon shapes as
//! `segmentation`, a list per part of a figure in several parts). An object without a box gets a [`DEFAULT_BOX_PX`] square
//! around its centroid, as MIDOG draws its 50 px boxes.
//!
//! Boxes are continuous: `[x, y, w, h]` maps to `x_min = x, x_max = x + w`.
//!
//! Each written annotation also carries `centroid: [x, y]` (not COCO; other
//! tools ignore it), which the reader prefers to the box centre: a mitosis'
//! centre of mass is what detections are matched to, and a box's centre can
//! lie several pixels from it (an L-shaped or two-part figure).

use std::collections::HashMap;
use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, Inconsistency, ObjectClass, Shape};
use mitoscope_geom::{BBox, Point, Polygon};
use serde::{Deserialize, Serialize};

use crate::csv_points::{image_id_from_name, json_error};
use crate::{FormatError, ReadOptions, Result, WriteOptions, atomic};

/// Side in pixels of the box written for objects that have none (MIDOG's size).
pub use crate::DEFAULT_BOX_PX;

/// `info.description` of files we write; the reader trusts it to mean xywh.
const WRITER_DESCRIPTION: &str = "written by mitoscope; standard COCO bbox [x, y, width, height]";

/// How a COCO `bbox` array is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxConvention {
    /// `[x1, y1, x2, y2]` (MIDOG 2021, MIDOG++).
    X1Y1X2Y2,
    /// `[x, y, width, height]` (standard COCO).
    Xywh,
}

/// COCO ids are integers, some tools write strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(untagged)]
enum Id {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            // Quoted, so that `"1"` (a string) and `1` (a number), which never match, read differently.
            Id::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

#[derive(Deserialize)]
struct CocoIn {
    #[serde(default)]
    info: Option<InfoIn>,
    #[serde(default)]
    images: Vec<ImageIn>,
    #[serde(default)]
    annotations: Vec<AnnIn>,
    #[serde(default)]
    categories: Vec<CategoryIn>,
}

#[derive(Deserialize)]
struct InfoIn {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    contributor: Option<String>,
}

#[derive(Deserialize)]
struct ImageIn {
    id: Id,
    file_name: String,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
}

#[derive(Deserialize)]
struct AnnIn {
    #[serde(default)]
    id: Option<Id>,
    image_id: Id,
    category_id: Id,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    segmentation: Option<serde_json::Value>,
    #[serde(default)]
    score: Option<f64>,
    /// Not COCO: the object's centroid `[x, y]`, which this writer adds (a
    /// box's centre is not a figure's centre of mass); other tools ignore it.
    #[serde(default)]
    centroid: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct CategoryIn {
    id: Id,
    name: String,
}

/// Reads a COCO-like file, deciding the box convention per file.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    read_with(path, opts, None)
}

/// Reads a COCO-like file with the box convention given (`None` = detect).
pub fn read_with(path: &Path, opts: &ReadOptions, convention: Option<BoxConvention>) -> Result<AnnotationSet> {
    let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let coco: CocoIn = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| json_error(path, e))?;
    from_coco(coco, path, opts, convention)
}

/// The image id of each entry: its file name's stem, unless another file of
/// the list has that stem too (`train/001.png` and `test/001.png`, or
/// `x.png` and `x.jpg`); those take the file name without extension
/// (`train/001`) or, where that is still shared, the whole file name with
/// `.` as `_` (`x_png`, as `detect` names `x.png` beside `x.jpg`). The same
/// file listed twice keeps one id.
fn distinct_image_ids(images: &[ImageIn]) -> Vec<String> {
    let stems: Vec<String> = images.iter().map(|i| image_id_from_name(&i.file_name)).collect();
    let mut files_per_stem: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for (stem, img) in stems.iter().zip(images) {
        files_per_stem.entry(stem).or_default().insert(img.file_name.trim());
    }
    let without_ext = |name: &str| match name.rsplit_once('.') {
        Some((base, _)) if !base.is_empty() && !base.ends_with('/') => base.to_owned(),
        _ => name.to_owned(),
    };
    let longer: Vec<String> = images.iter().map(|i| without_ext(i.file_name.trim())).collect();
    let mut files_per_longer: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for (l, img) in longer.iter().zip(images) {
        files_per_longer.entry(l).or_default().insert(img.file_name.trim());
    }
    stems
        .iter()
        .zip(&longer)
        .zip(images)
        .map(|((stem, longer), img)| {
            if files_per_stem[stem.as_str()].len() == 1 {
                stem.clone()
            } else if files_per_longer[longer.as_str()].len() == 1 {
                longer.clone()
            } else {
                img.file_name.trim().replace('.', "_")
            }
        })
        .collect()
}

/// [`read_with`] on bytes already read (a label file inside a dataset folder
/// or zip); `path` names them in errors.
pub(crate) fn parse_with(
    bytes: &[u8],
    path: &Path,
    opts: &ReadOptions,
    convention: Option<BoxConvention>,
) -> Result<AnnotationSet> {
    let coco: CocoIn = serde_json::from_slice(bytes).map_err(|e| json_error(path, e))?;
    from_coco(coco, path, opts, convention)
}

fn from_coco(
    coco: CocoIn,
    path: &Path,
    opts: &ReadOptions,
    convention: Option<BoxConvention>,
) -> Result<AnnotationSet> {
    let convention = convention.unwrap_or_else(|| detect_convention(&coco));
    tracing::debug!(path = %path.display(), ?convention, "COCO box convention");

    let mut set = AnnotationSet::default();
    let mut index: HashMap<&Id, usize> = HashMap::with_capacity(coco.images.len());
    let ids = distinct_image_ids(&coco.images);
    // One file listed twice is one image: its entries' objects are read together.
    let mut by_file: HashMap<&str, (usize, &Id)> = HashMap::new();
    for (img, image_id) in coco.images.iter().zip(ids) {
        if index.contains_key(&img.id) {
            return Err(FormatError::malformed(path, format!("image id {}", img.id), "duplicate image id"));
        }
        if let Some(&(at, first)) = by_file.get(img.file_name.trim()) {
            index.insert(&img.id, at);
            set.inconsistencies.push(Inconsistency {
                image: set.images[at].image.clone(),
                message: format!(
                    "image ids {first} and {} both name the file '{}'; their objects are read as one image's",
                    img.id, img.file_name
                ),
            });
            continue;
        }
        by_file.insert(img.file_name.trim(), (set.images.len(), &img.id));
        index.insert(&img.id, set.images.len());
        let mut out = ImageAnnotations::new(image_id);
        out.width = img.width.filter(|&w| w > 0);
        out.height = img.height.filter(|&h| h > 0);
        out.mpp = opts.mpp;
        if let Some(dir) = &opts.images_dir {
            let p = dir.join(&img.file_name);
            if p.is_file() {
                out.path = Some(p);
            }
        }
        set.images.push(out);
    }
    let mut classes: HashMap<&Id, (&str, Option<ObjectClass>)> = HashMap::new();
    for c in &coco.categories {
        classes.insert(&c.id, (c.name.as_str(), ObjectClass::parse(&c.name)));
    }

    for (k, ann) in coco.annotations.iter().enumerate() {
        let loc = || match &ann.id {
            Some(id) => format!("annotation id {id}"),
            None => format!("annotation #{}", k + 1),
        };
        let &img_idx = index.get(&ann.image_id).ok_or_else(|| {
            FormatError::malformed(path, loc(), format!("image_id {} is not among the images", ann.image_id))
        })?;
        let class = match classes.get(&ann.category_id) {
            Some((_, Some(c))) => *c,
            Some((name, None)) => {
                return Err(FormatError::malformed(
                    path,
                    loc(),
                    format!(
                        "unknown category '{name}' (id {}); expected e.g. 'mitotic figure' or 'not mitotic figure'",
                        ann.category_id
                    ),
                ));
            }
            None => {
                return Err(FormatError::malformed(
                    path,
                    loc(),
                    format!("category_id {} is not among the categories", ann.category_id),
                ));
            }
        };
        let bbox = match &ann.bbox {
            None => None,
            Some(b) if b.is_empty() => None,
            Some(b) => Some(parse_box(b, convention).map_err(|m| FormatError::malformed(path, loc(), m))?),
        };
        let shape = ann.segmentation.as_ref().and_then(segmentation_shape);
        let mut obj = match (shape, bbox) {
            (Some(shape), bbox) => {
                let mut a = Annotation::from_shape(shape, class)
                    .ok_or_else(|| FormatError::malformed(path, loc(), "empty segmentation polygon"))?;
                if bbox.is_some() {
                    a.bbox = bbox;
                }
                a
            }
            (None, Some(b)) => Annotation::from_bbox(b, class),
            (None, None) => {
                return Err(FormatError::malformed(path, loc(), "neither a bbox nor a polygon segmentation"));
            }
        };
        obj.score = ann.score;
        match ann.centroid.as_deref() {
            None => {}
            Some(&[x, y]) if x.is_finite() && y.is_finite() => obj.centroid = Point::new(x, y),
            Some(c) => {
                return Err(FormatError::malformed(path, loc(), format!("centroid {c:?} is not [x, y]")));
            }
        }
        // MIDOG boxes reach past the border (x down to -30): a centre that falls
        // outside the image is pulled onto its edge, and said so, so that every
        // reader's output is valid input to the others (they reject negatives).
        let img = &set.images[img_idx];
        let inside = clamp_to_image(obj.centroid, img.width, img.height);
        if inside != obj.centroid {
            let message = format!(
                "{}: centre ({}, {}) lies outside the image; moved to ({}, {})",
                loc(),
                obj.centroid.x,
                obj.centroid.y,
                inside.x,
                inside.y
            );
            set.inconsistencies.push(Inconsistency { image: img.image.clone(), message });
            obj.centroid = inside;
        }
        set.images[img_idx].objects.push(obj);
    }
    Ok(set)
}

/// `p` moved into `[0, width-1] x [0, height-1]` (only `>= 0` where the size is unknown).
fn clamp_to_image(p: Point, width: Option<u32>, height: Option<u32>) -> Point {
    let hi = |v: Option<u32>| v.map_or(f64::INFINITY, |v| v.saturating_sub(1) as f64);
    Point::new(p.x.clamp(0.0, hi(width)), p.y.clamp(0.0, hi(height)))
}

fn parse_box(b: &[f64], convention: BoxConvention) -> std::result::Result<BBox, String> {
    let [a, c, d, e] = b else {
        return Err(format!("bbox must have 4 numbers, found {}", b.len()));
    };
    let r = match convention {
        BoxConvention::X1Y1X2Y2 => BBox::new(*a, *c, *d, *e),
        BoxConvention::Xywh => BBox::new(*a, *c, a + d, c + e),
    };
    r.map_err(|err| format!("bbox {b:?} ({convention:?}): {err}"))
}

/// A polygon segmentation (a list of flat `[x1, y1, x2, y2, ...]` lists, one
/// per part of the object) as a shape: a polygon, or a multipolygon where the
/// object has several parts. Run-length (mask) segmentations and parts with
/// fewer than 3 vertices give none.
fn segmentation_shape(seg: &serde_json::Value) -> Option<Shape> {
    let parts: Vec<Polygon> = seg
        .as_array()?
        .iter()
        .filter_map(|ring| {
            let ring = ring.as_array()?;
            let nums: Vec<f64> = ring.iter().filter_map(serde_json::Value::as_f64).collect();
            if nums.len() < 6 || nums.len() != ring.len() || !nums.len().is_multiple_of(2) {
                return None;
            }
            Some(Polygon::new(nums.chunks_exact(2).map(|c| Point::new(c[0], c[1])).collect()))
        })
        .collect();
    Shape::from_parts(parts)
}

fn detect_convention(coco: &CocoIn) -> BoxConvention {
    let info_mentions = |needle: &str| {
        coco.info.as_ref().is_some_and(|i| {
            [&i.description, &i.contributor]
                .iter()
                .any(|s| s.as_deref().is_some_and(|s| s.to_ascii_lowercase().contains(needle)))
        })
    };
    if coco.info.as_ref().is_some_and(|i| i.description.as_deref() == Some(WRITER_DESCRIPTION)) {
        return BoxConvention::Xywh;
    }
    if info_mentions("midog") {
        return BoxConvention::X1Y1X2Y2;
    }
    let boxes = || coco.annotations.iter().filter_map(|a| a.bbox.as_deref()).filter(|b| b.len() == 4);
    if boxes().any(|b| b[2] < b[0] || b[3] < b[1]) {
        return BoxConvention::Xywh;
    }
    let sizes: HashMap<&Id, (Option<u32>, Option<u32>)> =
        coco.images.iter().map(|i| (&i.id, (i.width, i.height))).collect();
    let beyond = coco.annotations.iter().any(|a| {
        let (Some(b), Some((w, h))) = (a.bbox.as_deref(), sizes.get(&a.image_id)) else { return false };
        // More than half of the box outside its image: implausible for xywh.
        b.len() == 4
            && (w.is_some_and(|w| b[0] + b[2] / 2.0 > w as f64) || h.is_some_and(|h| b[1] + b[3] / 2.0 > h as f64))
    });
    if beyond { BoxConvention::X1Y1X2Y2 } else { BoxConvention::Xywh }
}

#[derive(Serialize)]
struct CocoOut {
    info: InfoOut,
    images: Vec<ImageOut>,
    annotations: Vec<AnnOut>,
    categories: [CategoryOut; 2],
}

#[derive(Serialize)]
struct InfoOut {
    description: &'static str,
}

#[derive(Serialize)]
struct ImageOut {
    id: usize,
    file_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
}

#[derive(Serialize)]
struct AnnOut {
    id: usize,
    image_id: usize,
    category_id: u32,
    bbox: [f64; 4],
    area: f64,
    iscrowd: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    segmentation: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    /// See [`AnnIn::centroid`].
    centroid: [f64; 2],
}

#[derive(Serialize)]
struct CategoryOut {
    id: u32,
    name: &'static str,
}

/// Writes standard COCO JSON (see the module docs).
pub fn write(set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    let mut images = Vec::with_capacity(set.images.len());
    let mut annotations = Vec::new();
    for (i, img) in set.images.iter().enumerate() {
        // The reader takes the file_name stem as id: keep the image's own file
        // name when its stem is the id, else the bare id.
        let file_name = img
            .path
            .as_deref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| image_id_from_name(n) == img.image)
            .unwrap_or_else(|| img.image.clone());
        images.push(ImageOut { id: i + 1, file_name, width: img.width, height: img.height });
        for o in &img.objects {
            let b = crate::box_for_writing(o, path, &img.image)?;
            // One flat list per part of the object (COCO's polygon segmentation).
            let parts: Vec<Vec<f64>> = o
                .shape
                .as_ref()
                .map_or(&[][..], Shape::polygons)
                .iter()
                .filter(|p| p.vertices.len() >= 3)
                .map(|p| p.vertices.iter().flat_map(|v| [v.x, v.y]).collect())
                .collect();
            let segmentation = (!parts.is_empty()).then_some(parts);
            annotations.push(AnnOut {
                id: annotations.len() + 1,
                image_id: i + 1,
                category_id: match o.class {
                    ObjectClass::Mitosis => 1,
                    ObjectClass::NonMitosis => 2,
                },
                bbox: [b.x_min, b.y_min, b.width(), b.height()],
                // COCO's area is the object's, the box's only where no shape is known.
                area: o.shape.as_ref().map_or(b.area(), Shape::area_px),
                iscrowd: 0,
                segmentation,
                score: o.score,
                centroid: [o.centroid.x, o.centroid.y],
            });
        }
    }
    let out = CocoOut {
        info: InfoOut { description: WRITER_DESCRIPTION },
        images,
        annotations,
        categories: [CategoryOut { id: 1, name: "mitotic figure" }, CategoryOut { id: 2, name: "not mitotic figure" }],
    };
    atomic::write_atomic_with(path, |w| {
        serde_json::to_writer(&mut *w, &out).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(info: Option<&str>, boxes: &[[f64; 4]]) -> CocoIn {
        CocoIn {
            info: info.map(|d| InfoIn { description: Some(d.into()), contributor: None }),
            images: vec![ImageIn { id: Id::Int(1), file_name: "a.png".into(), width: Some(1000), height: Some(1000) }],
            annotations: boxes
                .iter()
                .map(|b| AnnIn {
                    id: None,
                    image_id: Id::Int(1),
                    category_id: Id::Int(1),
                    bbox: Some(b.to_vec()),
                    segmentation: None,
                    score: None,
                    centroid: None,
                })
                .collect(),
            categories: vec![],
        }
    }

    #[test]
    fn alike_file_names_get_distinct_ids_and_a_file_listed_twice_is_one_image() {
        let json = br#"{
            "images": [
                {"id": 1, "file_name": "train/001.png"}, {"id": 2, "file_name": "test/001.png"},
                {"id": 3, "file_name": "x.png"}, {"id": 4, "file_name": "x.jpg"},
                {"id": 5, "file_name": "dup.tiff"}, {"id": 6, "file_name": "dup.tiff"},
                {"id": 7, "file_name": "lone.png"}
            ],
            "annotations": [
                {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                {"image_id": 5, "category_id": 1, "bbox": [10, 10, 20, 20]},
                {"image_id": 6, "category_id": 1, "bbox": [50, 50, 20, 20]}
            ],
            "categories": [{"id": 1, "name": "mitotic figure"}]
        }"#;
        let set = parse_with(json, Path::new("c.json"), &ReadOptions::default(), None).unwrap();
        let ids: Vec<&str> = set.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(ids, ["train/001", "test/001", "x_png", "x_jpg", "dup", "lone"]);
        assert_eq!(set.images[0].objects.len(), 1);
        assert_eq!(set.images[4].objects.len(), 2, "both entries' objects");
        assert_eq!(set.inconsistencies.len(), 1, "{:?}", set.inconsistencies);
        assert!(set.inconsistencies[0].message.contains("image ids 5 and 6 both name the file 'dup.tiff'"));
    }

    #[test]
    fn box_convention_heuristics() {
        use BoxConvention::*;
        assert_eq!(detect_convention(&file(Some("MIDOG 2021"), &[[10.0, 10.0, 5.0, 5.0]])), X1Y1X2Y2);
        assert_eq!(detect_convention(&file(None, &[[100.0, 100.0, 50.0, 50.0]])), Xywh, "inverted as x1y1x2y2");
        assert_eq!(
            detect_convention(&file(None, &[[700.0, 10.0, 750.0, 60.0]])),
            X1Y1X2Y2,
            "xywh would leave the image"
        );
        // A 50 px box around a point near the border is still xywh.
        assert_eq!(detect_convention(&file(None, &[[10.0, 10.0, 20.0, 20.0], [980.0, 5.0, 50.0, 50.0]])), Xywh);
        assert_eq!(detect_convention(&file(Some(WRITER_DESCRIPTION), &[[700.0, 10.0, 750.0, 60.0]])), Xywh);
    }

    #[test]
    fn centroids_and_mask_areas_survive_a_round_trip() {
        // An L of 5 pixels: its centre of mass is not its box's centre.
        let l = Shape::Pixels(vec![(10, 10), (10, 11), (10, 12), (11, 12), (12, 12)]);
        let obj = Annotation::from_shape(l, ObjectClass::Mitosis).unwrap();
        assert_ne!(obj.centroid, obj.bbox.unwrap().center());
        let mut img = ImageAnnotations::new("a");
        img.objects.push(obj.clone());
        let set = AnnotationSet { images: vec![img], ..Default::default() };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.json");
        write(&set, &out, &WriteOptions::default()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("\"area\":5.0"), "the mask's area, not the box's: {text}");
        let back = read(&out, &ReadOptions::default()).unwrap();
        assert_eq!(back.images[0].objects[0].centroid, obj.centroid);
        // A centroid that is not [x, y] is an error, not ignored.
        let bad =
            text.replace(&format!("\"centroid\":[{:?},{:?}]", obj.centroid.x, obj.centroid.y), "\"centroid\":[1]");
        assert_ne!(bad, text);
        std::fs::write(&out, bad).unwrap();
        assert!(read(&out, &ReadOptions::default()).unwrap_err().to_string().contains("centroid"));
    }
}
