//! ASAP XML: the annotation files of the ASAP whole-slide viewer (CAMELYON,
//! many pathology datasets and tools), one `<ASAP_Annotations>` file per image
//! or slide, coordinates in level-0 pixels.
//!
//! ```xml
//! <ASAP_Annotations>
//!   <Annotations>
//!     <Annotation Name="Annotation 0" Type="Dot" PartOfGroup="mitosis" Color="#F4FA58">
//!       <Coordinates><Coordinate Order="0" X="1032.5" Y="877" /></Coordinates>
//!     </Annotation>
//!   </Annotations>
//!   <AnnotationGroups>
//!     <Group Name="mitosis" PartOfGroup="None" Color="#F4FA58"><Attributes /></Group>
//!   </AnnotationGroups>
//! </ASAP_Annotations>
//! ```
//!
//! Reader (one `.xml` file, or every `.xml` under a folder):
//! - `Dot`: one object at its coordinate; `PointSet`: one object per
//!   coordinate; `Rectangle`: an object with the box around its corners;
//!   `Polygon` and `Spline`: an object outlined by its vertices (a spline's
//!   control points are taken as the polygon: close enough for a figure's
//!   outline and its centroid). Coordinates follow their `Order`, taken as
//!   written (no half-pixel shift). Other types (`Measurement`, ...) are not
//!   objects: skipped and reported as an [`Inconsistency`], as is an object
//!   whose centre has a negative coordinate (off the image).
//! - Class: the annotation's `PartOfGroup`, else that group's own parent in
//!   `<AnnotationGroups>` (and so on up), parsed by [`ObjectClass::parse`]; an
//!   annotation in no group (`None`) is a mitosis unless its `Name` parses as
//!   a class. A group that names no class at any level is an error naming the
//!   file, line and group.
//! - Image: the root's `Image` attribute (Mitoscope writes it; ASAP ignores
//!   it), else the file's stem, as ASAP pairs `slide.tif` with `slide.xml`.
//! - Mitoscope's own attributes round-trip predictions and split figures:
//!   `Score` on a scored annotation, and `Figure` on each part of a figure
//!   outlined in several parts (the parts of one figure become one object
//!   again).
//!
//! Writer: one XML per image, into `path` when it ends in `.xml` and the set
//! holds one image, else into the folder `path` as `<image>.xml` (named after
//! the image or slide, as ASAP datasets pair `slide.tif` and `slide.xml`). Objects are `Dot`s at
//! their centroids; with [`WriteOptions::polygons`] an outlined object is a
//! `Polygon` (one per part) and a boxed one a `Rectangle`. Groups are
//! `mitosis` and `non-mitosis`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, Inconsistency, ObjectClass, Shape};
use mitoscope_geom::{BBox, Point, Polygon};
use quick_xml::events::{BytesStart, Event};

use crate::xml_files::{line_at, write_per_image, xml_inputs};
use crate::{FormatError, ReadOptions, Result, WriteOptions};

/// The root element that tells ASAP XML from other XML.
pub const ROOT: &str = "ASAP_Annotations";

/// Reads one ASAP `.xml` file, or every `.xml` file under a folder.
pub fn read(path: &Path, _opts: &ReadOptions) -> Result<AnnotationSet> {
    let mut set = AnnotationSet::default();
    for file in xml_inputs(path)? {
        let bytes = std::fs::read(&file).map_err(|e| FormatError::io(&file, e))?;
        let (img, skipped) = parse(&bytes, &file)?;
        set.inconsistencies.extend(skipped);
        set.images.push(img);
    }
    Ok(set)
}

/// Parses one ASAP document; also returns the annotations skipped as not
/// objects. `source` names the file in errors and gives the image its name
/// when the root does not.
pub fn parse(bytes: &[u8], source: &Path) -> Result<(ImageAnnotations, Vec<Inconsistency>)> {
    let raw = parse_raw(bytes, source)?;
    let image = raw
        .image
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let mut img = ImageAnnotations::new(image);
    let mut skipped = Vec::new();
    // Objects in file order; a split figure stands where its first part does,
    // its parts gathered by their `Figure` attribute.
    let mut entries: Vec<Entry> = Vec::new();
    let mut figures: BTreeMap<String, Vec<Polygon>> = BTreeMap::new();
    for ann in &raw.annotations {
        let bad = |msg: String| {
            FormatError::malformed(source, format!("line {} (<Annotation Name=\"{}\">)", ann.line, ann.name), msg)
        };
        let class = raw.class_of(ann).map_err(&bad)?;
        let score = match &ann.score {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(format!("Score is '{s}', not a number")))?,
            ),
        };
        let points = ann.points(source)?;
        let kind = ann.kind.to_ascii_lowercase();
        let need = |n: usize, what: &str| -> Result<()> {
            if points.len() < n {
                return Err(bad(format!("a {what} needs at least {n} coordinate(s), found {}", points.len())));
            }
            Ok(())
        };
        let mut objects = Vec::new();
        match kind.as_str() {
            "dot" => {
                if points.len() != 1 {
                    return Err(bad(format!("a Dot has one coordinate, found {}", points.len())));
                }
                objects.push(Annotation::point(points[0], class));
            }
            "pointset" => objects.extend(points.iter().map(|&p| Annotation::point(p, class))),
            "rectangle" => {
                need(1, "Rectangle")?;
                let bbox = BBox::enclosing(&points).ok_or_else(|| bad("empty rectangle".into()))?;
                objects.push(Annotation::from_bbox(bbox, class));
            }
            "polygon" | "spline" => {
                need(3, "Polygon")?;
                let polygon = Polygon::new(points);
                if let Some(key) = &ann.figure {
                    let parts = figures.entry(key.clone()).or_default();
                    if parts.is_empty() {
                        entries.push(Entry::Figure { key: key.clone(), class, score });
                    }
                    parts.push(polygon);
                    continue;
                }
                let obj = Annotation::from_shape(Shape::Polygon(polygon), class)
                    .ok_or_else(|| bad("the polygon has no centroid".into()))?;
                objects.push(obj);
            }
            _ => {
                skipped.push(Inconsistency {
                    image: img.image.clone(),
                    message: format!(
                        "{}: line {}: annotation '{}' of type '{}' is not an object (Dot, PointSet, Rectangle, \
                         Polygon, Spline); skipped",
                        source.display(),
                        ann.line,
                        ann.name,
                        ann.kind
                    ),
                });
            }
        }
        for mut obj in objects {
            if off_image(&obj) {
                skipped.push(off_image_report(&img.image, source, &format!("line {}", ann.line), &ann.name, &obj));
                continue;
            }
            obj.score = score;
            entries.push(Entry::Object(obj));
        }
    }
    for entry in entries {
        let obj = match entry {
            Entry::Object(obj) => Some(obj),
            Entry::Figure { key, class, score } => {
                let parts = figures.remove(&key).unwrap_or_default();
                Shape::from_parts(parts)
                    .and_then(|shape| Annotation::from_shape(shape, class))
                    .map(|obj| Annotation { score, ..obj })
                    .filter(|obj| {
                        let off = off_image(obj);
                        if off {
                            skipped.push(off_image_report(&img.image, source, "figure", &key, obj));
                        }
                        !off
                    })
            }
        };
        img.objects.extend(obj);
    }
    Ok((img, skipped))
}

/// Whether an object's centre lies left of or above the image: coordinates
/// are level-0 pixels from the top-left corner, so it cannot be on the image.
/// (An outline may still reach a little past the edge.)
fn off_image(obj: &Annotation) -> bool {
    obj.centroid.x < 0.0 || obj.centroid.y < 0.0
}

fn off_image_report(image: &str, source: &Path, at: &str, name: &str, obj: &Annotation) -> Inconsistency {
    Inconsistency {
        image: image.to_owned(),
        message: format!(
            "{}: {at}: annotation '{name}' lies off the image (centre ({}, {}), negative); skipped",
            source.display(),
            obj.centroid.x,
            obj.centroid.y
        ),
    }
}

/// An object of the document, or the place of a figure drawn in several parts.
enum Entry {
    Object(Annotation),
    Figure { key: String, class: ObjectClass, score: Option<f64> },
}

/// The document as written, before validation.
#[derive(Debug, Default)]
struct RawDoc {
    image: Option<String>,
    annotations: Vec<RawAnnotation>,
    /// Group name -> its parent group as written (`None` or empty: no parent).
    groups: BTreeMap<String, String>,
}

/// One `<Annotation>` as written; `line` is where it starts.
#[derive(Debug, Default)]
struct RawAnnotation {
    line: usize,
    name: String,
    kind: String,
    group: String,
    score: Option<String>,
    figure: Option<String>,
    coordinates: Vec<RawCoordinate>,
}

#[derive(Debug)]
struct RawCoordinate {
    line: usize,
    order: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// ASAP's name for "in no group".
fn no_group(name: &str) -> bool {
    let n = name.trim();
    n.is_empty() || n.eq_ignore_ascii_case("none")
}

impl RawDoc {
    /// The class of `ann` from its group chain (see the module docs).
    fn class_of(&self, ann: &RawAnnotation) -> std::result::Result<ObjectClass, String> {
        if no_group(&ann.group) {
            return Ok(ObjectClass::parse(&ann.name).unwrap_or(ObjectClass::Mitosis));
        }
        let mut group = ann.group.trim();
        // Bounded walk: a cycle of groups must not hang the reader.
        for _ in 0..=self.groups.len() {
            if let Some(class) = ObjectClass::parse(group) {
                return Ok(class);
            }
            match self.groups.get(group) {
                Some(parent) if !no_group(parent) => group = parent.trim(),
                _ => break,
            }
        }
        Err(format!(
            "group '{}' names no mitosis class, nor does any group it is part of (expected e.g. mitosis, \
             mitotic figure, non-mitosis, hard negative)",
            ann.group
        ))
    }
}

impl RawAnnotation {
    /// The coordinates as points, in their `Order` where every one has one.
    fn points(&self, source: &Path) -> Result<Vec<Point>> {
        let mut ordered = Vec::with_capacity(self.coordinates.len());
        for (i, c) in self.coordinates.iter().enumerate() {
            let bad = |msg: String| FormatError::malformed(source, format!("line {} (<Coordinate>)", c.line), msg);
            let value = |v: &Option<String>, axis: &str| -> Result<f64> {
                let text = v.as_deref().ok_or_else(|| bad(format!("<Coordinate> lacks {axis}")))?;
                let value = text.trim().parse::<f64>().map_err(|_| bad(format!("{axis} is '{text}', not a number")))?;
                if !value.is_finite() {
                    return Err(bad(format!("{axis} is '{text}', not a finite number")));
                }
                Ok(value)
            };
            let point = Point::new(value(&c.x, "X")?, value(&c.y, "Y")?);
            let order = match &c.order {
                Some(o) => o.trim().parse::<f64>().map_err(|_| bad(format!("Order is '{o}', not a number")))?,
                None => i as f64,
            };
            ordered.push((order, point));
        }
        ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(ordered.into_iter().map(|(_, p)| p).collect())
    }
}

/// The value of attribute `name` of `e`, unescaped.
fn attribute(e: &BytesStart<'_>, name: &str, bad: &impl Fn(String) -> FormatError) -> Result<Option<String>> {
    let found = e.try_get_attribute(name).map_err(|err| bad(err.to_string()))?;
    found.map(|a| a.unescape_value().map(|v| v.into_owned()).map_err(|err| bad(err.to_string()))).transpose()
}

/// Walks the XML events, keeping the element path, and collects what ASAP
/// defines; other elements (`<Attributes>`, colours) are skipped.
fn parse_raw(bytes: &[u8], source: &Path) -> Result<RawDoc> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut doc = RawDoc::default();
    let mut stack: Vec<String> = Vec::new();
    let mut saw_root = false;
    let mut buf = Vec::new();
    let malformed =
        |pos: u64, msg: String| FormatError::malformed(source, format!("line {}", line_at(bytes, pos)), msg);
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| malformed(reader.error_position(), e.to_string()))?;
        let pos = reader.buffer_position();
        let bad = |msg: String| malformed(pos, msg);
        let (e, has_children) = match &event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(_) => {
                stack.pop();
                buf.clear();
                continue;
            }
            Event::Eof => break,
            _ => {
                buf.clear();
                continue;
            }
        };
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let parent = stack.last().map(String::as_str);
        match (parent, name.as_str()) {
            (None, _) if name != ROOT || saw_root => {
                return Err(bad(format!("root element is <{name}>, expected one <{ROOT}> (ASAP XML)")));
            }
            (None, _) => {
                saw_root = true;
                doc.image = attribute(e, "Image", &bad)?;
            }
            (Some("Annotations"), "Annotation") => doc.annotations.push(RawAnnotation {
                line: line_at(bytes, pos),
                name: attribute(e, "Name", &bad)?.unwrap_or_default(),
                kind: attribute(e, "Type", &bad)?.unwrap_or_default(),
                group: attribute(e, "PartOfGroup", &bad)?.unwrap_or_default(),
                score: attribute(e, "Score", &bad)?,
                figure: attribute(e, "Figure", &bad)?,
                coordinates: Vec::new(),
            }),
            (Some("Coordinates"), "Coordinate") if stack.iter().any(|s| s == "Annotation") => {
                let coordinate = RawCoordinate {
                    line: line_at(bytes, pos),
                    order: attribute(e, "Order", &bad)?,
                    x: attribute(e, "X", &bad)?,
                    y: attribute(e, "Y", &bad)?,
                };
                if let Some(ann) = doc.annotations.last_mut() {
                    ann.coordinates.push(coordinate);
                }
            }
            (Some("AnnotationGroups"), "Group") => {
                let group = attribute(e, "Name", &bad)?.unwrap_or_default();
                let parent = attribute(e, "PartOfGroup", &bad)?.unwrap_or_default();
                doc.groups.insert(group.trim().to_owned(), parent);
            }
            _ => {}
        }
        if has_children {
            stack.push(name);
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(malformed(bytes.len() as u64, format!("document ends inside <{}>", stack.join("><"))));
    }
    if !saw_root {
        return Err(malformed(0, format!("no <{ROOT}> element (empty or not ASAP XML)")));
    }
    Ok(doc)
}

/// Writes one XML per image (see the module docs for where).
pub fn write(set: &AnnotationSet, path: &Path, opts: &WriteOptions) -> Result<()> {
    write_per_image(set, path, "ASAP", |img, _| Ok(to_xml(img, opts.polygons)))
}

/// Group name and colour of a class (the colours of the GeoJSON writer).
fn group_of(class: ObjectClass) -> (&'static str, &'static str) {
    match class {
        ObjectClass::Mitosis => ("mitosis", "#DC1E1E"),
        ObjectClass::NonMitosis => ("non-mitosis", "#1E78DC"),
    }
}

/// The ASAP document for one image; with `polygons`, outlines and boxes
/// where known (see the module docs).
pub fn to_xml(img: &ImageAnnotations, polygons: bool) -> String {
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let mut out = String::from("<?xml version=\"1.0\"?>\n");
    let _ = writeln!(out, "<{ROOT} Image=\"{}\">", esc(&img.image));
    out.push_str("  <Annotations>\n");
    for (index, obj) in img.objects.iter().enumerate() {
        let (group, color) = group_of(obj.class);
        let outlines = if polygons { crate::geojson::outlines_for_writing(obj.shape.as_ref()) } else { Vec::new() };
        let (kind, parts) = match obj.bbox {
            _ if !outlines.is_empty() => ("Polygon", outlines),
            Some(b) if polygons => {
                let corners = [(b.x_min, b.y_min), (b.x_max, b.y_min), (b.x_max, b.y_max), (b.x_min, b.y_max)];
                ("Rectangle", vec![Polygon::new(corners.map(|(x, y)| Point::new(x, y)).to_vec())])
            }
            _ => ("Dot", vec![Polygon { vertices: vec![obj.centroid] }]),
        };
        let figure = if parts.len() > 1 { format!(" Figure=\"{index}\"") } else { String::new() };
        let score = obj.score.map(|s| format!(" Score=\"{s}\"")).unwrap_or_default();
        for (k, part) in parts.iter().enumerate() {
            // Named by object, so the parts of a split figure share a number.
            let mut label = format!("{group} {index}");
            if parts.len() > 1 {
                let _ = write!(label, " part {}", k + 1);
            }
            if let Some(s) = obj.score {
                let _ = write!(label, " ({s:.3})");
            }
            let _ = writeln!(
                out,
                "    <Annotation Name=\"{label}\" Type=\"{kind}\" PartOfGroup=\"{group}\" Color=\"{color}\"{score}{figure}>"
            );
            out.push_str("      <Coordinates>\n");
            for (order, v) in part.vertices.iter().enumerate() {
                let _ = writeln!(out, "        <Coordinate Order=\"{order}\" X=\"{}\" Y=\"{}\" />", v.x, v.y);
            }
            out.push_str("      </Coordinates>\n    </Annotation>\n");
        }
    }
    out.push_str("  </Annotations>\n  <AnnotationGroups>\n");
    for class in [ObjectClass::Mitosis, ObjectClass::NonMitosis] {
        let (group, color) = group_of(class);
        let _ =
            writeln!(out, "    <Group Name=\"{group}\" PartOfGroup=\"None\" Color=\"{color}\"><Attributes /></Group>");
    }
    out.push_str("  </AnnotationGroups>\n");
    let _ = writeln!(out, "</{ROOT}>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<(ImageAnnotations, Vec<Inconsistency>)> {
        parse(s.as_bytes(), Path::new("slide_7.xml"))
    }

    const SAMPLE: &str = r##"<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Dot" PartOfGroup="mitosis" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="100.5" Y="200" /></Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="PointSet" PartOfGroup="imposters" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="1" X="30" Y="40" />
        <Coordinate Order="0" X="10" Y="20" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 2" Type="Polygon" PartOfGroup="None" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="10" Y="10" />
        <Coordinate Order="0" X="0" Y="0" />
        <Coordinate Order="1" X="10" Y="0" />
        <Coordinate Order="3" X="0" Y="10" />
      </Coordinates>
    </Annotation>
    <Annotation Name="ruler" Type="Measurement" PartOfGroup="None" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="1" Y="1" /><Coordinate Order="1" X="9" Y="9" /></Coordinates>
    </Annotation>
    <Annotation Name="box" Type="Rectangle" PartOfGroup="hard negative" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="50" Y="60" /><Coordinate Order="1" X="80" Y="60" />
        <Coordinate Order="2" X="80" Y="90" /><Coordinate Order="3" X="50" Y="90" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="mitosis" PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>
    <Group Name="imposters" PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"##;

    #[test]
    fn reads_every_object_type_in_order() {
        let (img, skipped) = parse_str(SAMPLE).unwrap();
        assert_eq!(img.image, "slide_7", "no Image attribute: the file stem");
        let got: Vec<(f64, f64, ObjectClass)> =
            img.objects.iter().map(|o| (o.centroid.x, o.centroid.y, o.class)).collect();
        assert_eq!(
            got,
            vec![
                (100.5, 200.0, ObjectClass::Mitosis),
                (10.0, 20.0, ObjectClass::NonMitosis),
                (30.0, 40.0, ObjectClass::NonMitosis),
                (5.0, 5.0, ObjectClass::Mitosis),
                (65.0, 75.0, ObjectClass::NonMitosis),
            ]
        );
        let Some(Shape::Polygon(p)) = &img.objects[3].shape else { panic!("polygon expected") };
        assert_eq!(p.vertices[1], Point::new(10.0, 0.0), "vertices follow Order");
        assert_eq!(img.objects[4].bbox, Some(BBox { x_min: 50.0, y_min: 60.0, x_max: 80.0, y_max: 90.0 }));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].message.contains("Measurement") && skipped[0].message.contains("line 21"), "{skipped:?}");
    }

    #[test]
    fn classes_come_from_group_parents_and_names() {
        let doc = |group: &str, name: &str, groups: &str| {
            format!(
                "<ASAP_Annotations><Annotations><Annotation Name=\"{name}\" Type=\"Dot\" PartOfGroup=\"{group}\">\
                 <Coordinates><Coordinate Order=\"0\" X=\"1\" Y=\"2\"/></Coordinates></Annotation></Annotations>\
                 <AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>"
            )
        };
        let class = |s: String| parse_str(&s).map(|(img, _)| img.objects[0].class);
        let nested = "<Group Name=\"rater A\" PartOfGroup=\"hard negative\"/><Group Name=\"hard negative\" PartOfGroup=\"None\"/>";
        assert_eq!(class(doc("rater A", "x", nested)).unwrap(), ObjectClass::NonMitosis);
        assert_eq!(class(doc("None", "imposter", "")).unwrap(), ObjectClass::NonMitosis);
        assert_eq!(class(doc("None", "Annotation 3", "")).unwrap(), ObjectClass::Mitosis);
        let cycle = "<Group Name=\"a\" PartOfGroup=\"b\"/><Group Name=\"b\" PartOfGroup=\"a\"/>";
        let err = class(doc("a", "x", cycle)).unwrap_err().to_string();
        assert!(err.contains("slide_7.xml") && err.contains("group 'a'") && err.contains("line 1"), "{err}");
        let err = class(doc("Tumor", "x", "")).unwrap_err().to_string();
        assert!(err.contains("'Tumor'"), "{err}");
    }

    #[test]
    fn errors_name_file_line_and_value() {
        let coords = |c: &str, kind: &str| {
            format!(
                "<ASAP_Annotations>\n<Annotations>\n<Annotation Name=\"a\" Type=\"{kind}\" PartOfGroup=\"mitosis\">\
                 <Coordinates>\n{c}</Coordinates></Annotation></Annotations></ASAP_Annotations>"
            )
        };
        let err = |s: String| parse_str(&s).unwrap_err().to_string();
        let e = err(coords("<Coordinate Order=\"0\" X=\"abc\" Y=\"3\"/>", "Dot"));
        assert!(e.contains("slide_7.xml") && e.contains("line 4") && e.contains("'abc'"), "{e}");
        let e = err(coords("<Coordinate Order=\"0\" X=\"NaN\" Y=\"3\"/>", "Dot"));
        assert!(e.contains("finite"), "{e}");
        let e = err(coords("<Coordinate Order=\"0\" Y=\"3\"/>", "Dot"));
        assert!(e.contains("lacks X"), "{e}");
        let e = err(coords("<Coordinate X=\"1\" Y=\"3\"/><Coordinate X=\"2\" Y=\"3\"/>", "Dot"));
        assert!(e.contains("line 3") && e.contains("found 2"), "{e}");
        let e = err(coords("<Coordinate X=\"1\" Y=\"3\"/><Coordinate X=\"2\" Y=\"3\"/>", "Polygon"));
        assert!(e.contains("at least 3"), "{e}");
        assert!(err("<ASAP_Annotations><Annotations>".into()).contains("ends inside"));
        assert!(err("<annotation/>".into()).contains("expected one <ASAP_Annotations>"));
        assert!(err(String::new()).contains("not ASAP XML"));
        assert!(err("<ASAP_Annotations".into()).contains("line 1"));
        let (empty, _) = parse_str("<ASAP_Annotations/>").unwrap();
        assert!(empty.objects.is_empty());
    }

    #[test]
    fn an_object_off_the_image_is_reported_and_skipped() {
        let doc = r#"<ASAP_Annotations><Annotations>
    <Annotation Name="off" Type="Dot" PartOfGroup="None"><Coordinates><Coordinate Order="0" X="-12" Y="40" /></Coordinates></Annotation>
    <Annotation Name="edge" Type="Polygon" PartOfGroup="None"><Coordinates>
      <Coordinate Order="0" X="-1" Y="0" /><Coordinate Order="1" X="6" Y="0" /><Coordinate Order="2" X="6" Y="6" />
    </Coordinates></Annotation>
  </Annotations></ASAP_Annotations>"#;
        let (img, skipped) = parse(doc.as_bytes(), Path::new("s.xml")).unwrap();
        assert_eq!(img.objects.len(), 1, "an outline reaching past the edge stays: {:?}", img.objects);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].message.contains("'off' lies off the image (centre (-12, 40)"), "{skipped:?}");
        assert!(skipped[0].message.contains("line 2"), "{skipped:?}");
    }

    #[test]
    fn written_documents_read_back_whole() {
        let mut img = ImageAnnotations::new("slide <1> & co");
        img.objects.push(Annotation::point(Point::new(12.25, 40.0), ObjectClass::Mitosis).with_score(0.9375));
        img.objects.push(Annotation::from_bbox(BBox::new(1.0, 2.0, 5.0, 8.0).unwrap(), ObjectClass::NonMitosis));
        let square = |x: f64| {
            Polygon::new(vec![
                Point::new(x, 0.0),
                Point::new(x + 4.0, 0.0),
                Point::new(x + 4.0, 4.0),
                Point::new(x, 4.0),
            ])
        };
        let split = Shape::MultiPolygon(vec![square(100.0), square(120.0)]);
        img.objects.push(Annotation::from_shape(split, ObjectClass::Mitosis).unwrap().with_score(0.5));
        img.objects.push(Annotation::from_shape(Shape::Polygon(square(300.0)), ObjectClass::Mitosis).unwrap());

        let xml = to_xml(&img, true);
        assert!(xml.contains("Name=\"mitosis 2 part 2 (0.500)\"") && xml.contains("Figure=\"2\""), "{xml}");
        let (back, skipped) = parse(xml.as_bytes(), Path::new("other.xml")).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(back.image, img.image, "the Image attribute names it, not the file");
        assert_eq!(back.objects, img.objects, "outlines, boxes, split figures and scores survive");

        let (dots, _) = parse(to_xml(&img, false).as_bytes(), Path::new("o.xml")).unwrap();
        let centres: Vec<Point> = dots.objects.iter().map(|o| o.centroid).collect();
        assert_eq!(centres, img.objects.iter().map(|o| o.centroid).collect::<Vec<_>>());
        assert!(dots.objects.iter().all(|o| o.shape.is_none() && o.bbox.is_none()), "without polygons: dots");
        assert_eq!(dots.objects[0].score, Some(0.9375));
    }
}
