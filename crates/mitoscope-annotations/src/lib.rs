//! The annotation model that every Mitoscope reader produces and every writer
//! consumes, plus mask <-> object conversion.
//!
//! - [`Annotation`]: one object (a mitosis or a look-alike): centroid, optional
//!   box, optional shape (pixel set or polygon), optional score, [`ObjectClass`].
//! - [`ImageAnnotations`]: the objects of one image, with its size, mpp and
//!   subset (e.g. GZMH V2 `test_3_score`).
//! - [`AnnotationSet`]: a whole dataset or file, plus the [`Inconsistency`]s a
//!   reader found and reported instead of failing on.
//! - [`mask`]: connected components of a binary mask become objects, and
//!   objects rasterise back to a mask.
//!
//! ```
//! use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
//! use mitoscope_geom::Point;
//! let mut img = ImageAnnotations::new("A00_00");
//! img.objects.push(Annotation::point(Point::new(10.0, 20.0), ObjectClass::Mitosis));
//! let set = AnnotationSet::from_images(vec![img]);
//! assert_eq!(set.count(ObjectClass::Mitosis), 1);
//! ```
#![deny(missing_docs)]

pub mod mask;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mitoscope_geom::{BBox, Mpp, Point, Polygon};
use serde::{Deserialize, Serialize};

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectClass {
    /// A mitotic figure.
    Mitosis,
    /// A mitosis look-alike / hard negative ("non-mitotic figure").
    NonMitosis,
}

impl ObjectClass {
    /// Parses the class names used across datasets ("mitosis", "mitotic figure",
    /// "1", "hard negative", "not mitotic figure", "impostor", ...).
    pub fn parse(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase().replace(['_', '-'], " ");
        // Group and folder names are often plural ("mitotic figures", "imposters").
        Self::parse_normalised(&n).or_else(|| n.strip_suffix('s').and_then(Self::parse_normalised))
    }

    /// [`Self::parse`] on a lower-case name with `_` and `-` made spaces.
    fn parse_normalised(n: &str) -> Option<Self> {
        match n {
            "mitosis" | "mitoses" | "mitotic figure" | "mitotic" | "mf" | "1" | "true" | "positive" | "pos" => {
                Some(Self::Mitosis)
            }
            "non mitosis" | "nonmitosis" | "non mitotic figure" | "not mitotic figure" | "nonmitotic figure"
            | "hard negative" | "mitosis look alike" | "lookalike" | "look alike" | "impostor" | "imposter"
            | "negative" | "neg" | "0" | "2" | "false" | "non mitotic" => Some(Self::NonMitosis),
            _ => None,
        }
    }

    /// Canonical name used by our writers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mitosis => "mitosis",
            Self::NonMitosis => "non-mitosis",
        }
    }
}

impl std::fmt::Display for ObjectClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outline of an object, where a format gives one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Every pixel the object covers, as (x, y).
    Pixels(Vec<(u32, u32)>),
    /// A polygon outline.
    Polygon(Polygon),
    /// One object in several separate parts (a figure in anaphase or
    /// telophase: two chromatin masses), each with its own outline.
    MultiPolygon(Vec<Polygon>),
}

impl Shape {
    /// The shape of an object outlined in `parts`: none for no part, a
    /// polygon for one, a multipolygon for several (readers and writers of
    /// every format build outlines this way, so one part is never a
    /// one-element multipolygon).
    pub fn from_parts(mut parts: Vec<Polygon>) -> Option<Shape> {
        match parts.len() {
            0 => None,
            1 => parts.pop().map(Shape::Polygon),
            _ => Some(Shape::MultiPolygon(parts)),
        }
    }

    /// Centroid: mean of the pixels, or the polygon's area centroid.
    pub fn centroid(&self) -> Option<Point> {
        match self {
            Shape::Pixels(px) => pixel_centroid(px),
            Shape::Polygon(p) => p.centroid(),
            Shape::MultiPolygon(parts) => parts_centroid(parts),
        }
    }

    /// Minimum bounding rectangle (inclusive pixel coordinates).
    pub fn bbox(&self) -> Option<BBox> {
        match self {
            Shape::Pixels(px) => pixel_bbox(px),
            Shape::Polygon(p) => p.bbox(),
            Shape::MultiPolygon(parts) => BBox::enclosing(parts.iter().flat_map(|p| &p.vertices)),
        }
    }

    /// Area in pixels (pixel count, or polygon area).
    pub fn area_px(&self) -> f64 {
        match self {
            Shape::Pixels(px) => px.len() as f64,
            Shape::Polygon(p) => p.area(),
            Shape::MultiPolygon(parts) => parts.iter().map(Polygon::area).sum(),
        }
    }

    /// The outlines of a polygonal shape: one for a polygon, each part's for a
    /// multipolygon, none for a pixel set.
    pub fn polygons(&self) -> &[Polygon] {
        match self {
            Shape::Pixels(_) => &[],
            Shape::Polygon(p) => std::slice::from_ref(p),
            Shape::MultiPolygon(parts) => parts,
        }
    }
}

/// The area-weighted centroid of separate parts (the vertex mean of each
/// part weighs by its vertex count where every part has no area).
fn parts_centroid(parts: &[Polygon]) -> Option<Point> {
    let weighted: Vec<(Point, f64)> = parts.iter().filter_map(|p| Some((p.centroid()?, p.area()))).collect();
    let total: f64 = weighted.iter().map(|(_, a)| a).sum();
    if total > 0.0 {
        let (sx, sy) = weighted.iter().fold((0.0, 0.0), |(sx, sy), (c, a)| (sx + c.x * a, sy + c.y * a));
        return Some(Point::new(sx / total, sy / total));
    }
    let vertices: Vec<&Point> = parts.iter().flat_map(|p| &p.vertices).collect();
    let n = vertices.len() as f64;
    (!vertices.is_empty()).then(|| {
        let (sx, sy) = vertices.iter().fold((0.0, 0.0), |(sx, sy), p| (sx + p.x, sy + p.y));
        Point::new(sx / n, sy / n)
    })
}

/// Mean position of a pixel set.
pub fn pixel_centroid(pixels: &[(u32, u32)]) -> Option<Point> {
    if pixels.is_empty() {
        return None;
    }
    let (sx, sy) = pixels.iter().fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x as f64, sy + y as f64));
    let n = pixels.len() as f64;
    Some(Point::new(sx / n, sy / n))
}

/// Minimum bounding rectangle of a pixel set, inclusive.
pub fn pixel_bbox(pixels: &[(u32, u32)]) -> Option<BBox> {
    let (&(x0, y0), rest) = pixels.split_first()?;
    let (mut a, mut b, mut c, mut d) = (x0, y0, x0, y0);
    for &(x, y) in rest {
        a = a.min(x);
        b = b.min(y);
        c = c.max(x);
        d = d.max(y);
    }
    Some(BBox { x_min: a as f64, y_min: b as f64, x_max: c as f64, y_max: d as f64 })
}

/// One annotated or detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    /// Centre of the object in pixels.
    pub centroid: Point,
    /// Minimum bounding rectangle, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
    /// Pixel set or polygon, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
    /// Detector confidence in [0, 1] (predictions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Mitosis or look-alike.
    pub class: ObjectClass,
}

impl Annotation {
    /// An object known only by its centre.
    pub fn point(centroid: Point, class: ObjectClass) -> Self {
        Self { centroid, bbox: None, shape: None, score: None, class }
    }

    /// An object from its box; the centroid is the box centre.
    pub fn from_bbox(bbox: BBox, class: ObjectClass) -> Self {
        Self { centroid: bbox.center(), bbox: Some(bbox), shape: None, score: None, class }
    }

    /// An object from its shape: centroid and box are derived from it.
    /// `None` for an empty shape.
    pub fn from_shape(shape: Shape, class: ObjectClass) -> Option<Self> {
        Some(Self { centroid: shape.centroid()?, bbox: shape.bbox(), shape: Some(shape), score: None, class })
    }

    /// Builder: attach a score.
    pub fn with_score(mut self, score: f64) -> Self {
        self.score = Some(score);
        self
    }
}

/// The objects of one image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageAnnotations {
    /// Image identifier: the file stem (e.g. `A00_00`), or the slide name.
    pub image: String,
    /// The image file, when the source names or holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Width in pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Microns per pixel, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpp: Option<Mpp>,
    /// Named subset (`train`, `test`, `test_1or2_score`, ...), when the source has splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The slide (WSI) the image was taken from, where the source names it:
    /// a per-slide folder such as GZMH V2's `test_3_score/WSI04/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<String>,
    /// The pixel mask file the objects came from, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_path: Option<PathBuf>,
    /// Why this image's objects cannot be taken as its complete truth (its
    /// mask could not be used and nothing else lists its mitoses); `None`
    /// when they can. Evaluation leaves such an image out and training
    /// refuses it, rather than take it for an image without mitoses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusable: Option<String>,
    /// The objects.
    pub objects: Vec<Annotation>,
}

impl ImageAnnotations {
    /// An image with no objects and nothing else known.
    pub fn new(image: impl Into<String>) -> Self {
        Self { image: image.into(), ..Default::default() }
    }

    /// Number of objects of one class.
    pub fn count(&self, class: ObjectClass) -> usize {
        self.objects.iter().filter(|o| o.class == class).count()
    }
}

/// Something a reader found wrong in the data and reported instead of failing:
/// a centroid outside its mask, a box disagreeing with the mask, a label file
/// with no image, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inconsistency {
    /// The image (or file) concerned.
    pub image: String,
    /// What is wrong, in words, with expected vs found.
    pub message: String,
}

impl std::fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.image, self.message)
    }
}

/// A dataset or annotation file: images in a stable order, plus what was found
/// inconsistent while reading it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnnotationSet {
    /// Images in the order the source gives them.
    pub images: Vec<ImageAnnotations>,
    /// Problems found and reported, not fatal.
    #[serde(default)]
    pub inconsistencies: Vec<Inconsistency>,
}

impl AnnotationSet {
    /// A set from images, with no inconsistencies.
    pub fn from_images(images: Vec<ImageAnnotations>) -> Self {
        Self { images, inconsistencies: Vec::new() }
    }

    /// Total number of objects of one class.
    pub fn count(&self, class: ObjectClass) -> usize {
        self.images.iter().map(|i| i.count(class)).sum()
    }

    /// Total number of objects.
    pub fn object_count(&self) -> usize {
        self.images.iter().map(|i| i.objects.len()).sum()
    }

    /// The image with this identifier.
    pub fn image(&self, image: &str) -> Option<&ImageAnnotations> {
        self.images.iter().find(|i| i.image == image)
    }

    /// Reports, as inconsistencies, objects whose centroid lies outside their
    /// image where its size is known (a label for another image, or x and y
    /// swapped); returns how many. They are kept: a caller that needs only
    /// real figures (training) leaves them out itself.
    pub fn flag_out_of_bounds(&mut self) -> usize {
        let mut found = Vec::new();
        for img in &self.images {
            let (Some(w), Some(h)) = (img.width, img.height) else { continue };
            for o in &img.objects {
                let (x, y) = (o.centroid.x, o.centroid.y);
                // Pixel columns are 0..w: x = w lies past the last one.
                if !(0.0..f64::from(w)).contains(&x) || !(0.0..f64::from(h)).contains(&y) {
                    found.push(Inconsistency {
                        image: img.image.clone(),
                        message: format!("object at ({x}, {y}) lies outside the image ({w} x {h} px)"),
                    });
                }
            }
        }
        let n = found.len();
        self.inconsistencies.extend(found);
        n
    }

    /// The image with this identifier, created (empty) if absent. Readers of
    /// row-per-object formats use this to group rows by image in input order.
    pub fn image_mut_or_insert(&mut self, image: &str) -> &mut ImageAnnotations {
        match self.images.iter().position(|i| i.image == image) {
            Some(idx) => &mut self.images[idx],
            None => {
                self.images.push(ImageAnnotations::new(image));
                self.images.last_mut().expect("just pushed")
            }
        }
    }

    /// Images grouped by subset name (`None` = no subset), in first-seen order
    /// of subsets as a sorted map for stable reports.
    pub fn subsets(&self) -> BTreeMap<Option<String>, Vec<&ImageAnnotations>> {
        let mut map: BTreeMap<Option<String>, Vec<&ImageAnnotations>> = BTreeMap::new();
        for img in &self.images {
            map.entry(img.subset.clone()).or_default().push(img);
        }
        map
    }

    /// Sets `mpp` on every image that has none (the user knows the scanner).
    pub fn fill_mpp(&mut self, mpp: Mpp) {
        for img in &mut self.images {
            img.mpp.get_or_insert(mpp);
        }
    }

    /// Keeps only objects of `class`.
    pub fn retain_class(&mut self, class: ObjectClass) {
        for img in &mut self.images {
            img.objects.retain(|o| o.class == class);
        }
    }

    /// Drops scored objects whose score is below `threshold` (unscored objects stay).
    pub fn retain_score_at_least(&mut self, threshold: f64) {
        for img in &mut self.images {
            img.objects.retain(|o| o.score.is_none_or(|s| s >= threshold));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_square_at(x: f64, y: f64) -> Polygon {
        Polygon::new(vec![
            Point::new(x, y),
            Point::new(x + 1.0, y),
            Point::new(x + 1.0, y + 1.0),
            Point::new(x, y + 1.0),
        ])
    }

    #[test]
    fn an_outline_in_parts_is_nothing_a_polygon_or_a_multipolygon_by_its_count() {
        assert_eq!(Shape::from_parts(Vec::new()), None);
        assert_eq!(Shape::from_parts(vec![unit_square_at(0.0, 0.0)]), Some(Shape::Polygon(unit_square_at(0.0, 0.0))));
        let two = Shape::from_parts(vec![unit_square_at(0.0, 0.0), unit_square_at(4.0, 0.0)]).unwrap();
        let Shape::MultiPolygon(parts) = &two else { panic!("{two:?}") };
        assert_eq!(parts.len(), 2);
        assert_eq!(two.area_px(), 2.0);
        let c = two.centroid().unwrap();
        assert!((c.x - 2.5).abs() < 1e-9 && (c.y - 0.5).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn class_names_from_datasets() {
        assert_eq!(ObjectClass::parse("mitotic figure"), Some(ObjectClass::Mitosis));
        assert_eq!(ObjectClass::parse("not mitotic figure"), Some(ObjectClass::NonMitosis));
        assert_eq!(ObjectClass::parse("Non-mitotic figure"), Some(ObjectClass::NonMitosis));
        assert_eq!(ObjectClass::parse("Mitosis"), Some(ObjectClass::Mitosis));
        assert_eq!(ObjectClass::parse("tumour"), None);
        assert_eq!(ObjectClass::parse("Mitotic figures"), Some(ObjectClass::Mitosis));
        assert_eq!(ObjectClass::parse("imposters"), Some(ObjectClass::NonMitosis));
        assert_eq!(ObjectClass::parse("hard_negatives"), Some(ObjectClass::NonMitosis));
        assert_eq!(ObjectClass::parse("mitoses"), Some(ObjectClass::Mitosis));
        assert_eq!(ObjectClass::parse("tumours"), None);
    }

    #[test]
    fn grouping_and_filters() {
        let mut set = AnnotationSet::default();
        set.image_mut_or_insert("b")
            .objects
            .push(Annotation::point(Point::new(1.0, 1.0), ObjectClass::Mitosis).with_score(0.2));
        set.image_mut_or_insert("a").objects.push(Annotation::point(Point::new(1.0, 1.0), ObjectClass::NonMitosis));
        set.image_mut_or_insert("b")
            .objects
            .push(Annotation::point(Point::new(2.0, 2.0), ObjectClass::Mitosis).with_score(0.9));
        assert_eq!(set.images.iter().map(|i| i.image.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(set.count(ObjectClass::Mitosis), 2);
        set.retain_score_at_least(0.5);
        assert_eq!(set.object_count(), 2);
        set.retain_class(ObjectClass::Mitosis);
        assert_eq!(set.object_count(), 1);
    }

    #[test]
    fn shape_derives_centroid_and_box() {
        let a =
            Annotation::from_shape(Shape::Pixels(vec![(1, 1), (2, 1), (3, 1), (2, 4)]), ObjectClass::Mitosis).unwrap();
        assert_eq!(a.centroid, Point::new(2.0, 1.75));
        assert_eq!(a.bbox, Some(BBox { x_min: 1.0, y_min: 1.0, x_max: 3.0, y_max: 4.0 }));
        assert!(Annotation::from_shape(Shape::Pixels(vec![]), ObjectClass::Mitosis).is_none());
    }

    #[test]
    fn objects_outside_a_known_image_size_are_flagged_and_kept() {
        let mut set = AnnotationSet::default();
        for (x, y) in [(5000.0, 5.0), (100.0, 100.0), (511.9, 0.0), (-1.0, 3.0), (3.0, 512.0)] {
            set.image_mut_or_insert("a").objects.push(Annotation::point(Point::new(x, y), ObjectClass::Mitosis));
        }
        set.image_mut_or_insert("unsized").objects.push(Annotation::point(Point::new(9e9, 0.0), ObjectClass::Mitosis));
        assert_eq!(set.flag_out_of_bounds(), 0, "sizes unknown: nothing to check against");
        set.images[0].width = Some(512);
        set.images[0].height = Some(512);
        assert_eq!(set.flag_out_of_bounds(), 3);
        assert!(
            set.inconsistencies[0].message.contains("(5000, 5)")
                && set.inconsistencies[0].message.contains("512 x 512")
        );
        assert!(set.inconsistencies[1].message.contains("(-1, 3)"));
        assert!(set.inconsistencies[2].message.contains("(3, 512)"));
        assert_eq!(set.images[0].objects.len(), 5, "flagged, not removed");
    }
}
