//! Pascal-VOC XML: one `<annotation>` file per image, boxes in `<object><bndbox>`.
//!
//! ```xml
//! <annotation>
//!   <filename>A00_00.png</filename>
//!   <size><width>2084</width><height>2084</height><depth>3</depth></size>
//!   <object><name>mitosis</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>40</xmax><ymax>52</ymax></bndbox></object>
//! </annotation>
//! ```
//!
//! - Reading takes one `.xml` file or a folder of them (searched recursively,
//!   in path order). The image identifier is the stem of `<filename>` (or the
//!   whole filename when it has no image extension), else the XML file's stem.
//! - Coordinates are taken as written (no 1-based shift) and are inclusive, as
//!   [`mitoscope_geom::BBox`] is; the centroid is the box centre.
//! - `<name>` goes through [`ObjectClass::parse`]; an empty or missing name
//!   means mitosis, an unknown one is an error naming the file and value.
//! - A non-standard `<score>` inside `<object>` is read and written, so
//!   predictions round-trip.
//! - Writing produces one XML per image: into `path` itself when it ends in
//!   `.xml` and the set holds one image, else into the folder `path` as
//!   `<image>.xml`. Objects without a box get a [`crate::DEFAULT_BOX_PX`] square
//!   around their centroid (VOC stores boxes only).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_geom::BBox;
use quick_xml::events::Event;

use crate::xml_files::{line_at, write_per_image, xml_inputs};
use crate::{FormatError, ReadOptions, Result, WriteOptions};

/// Reads one VOC `.xml` file, or every `.xml` file under a folder.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<AnnotationSet> {
    let files = xml_inputs(path)?;
    let mut images = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| FormatError::io(file, e))?;
        let mut img = parse(&bytes, file)?;
        img.path = image_path(file, &bytes, opts);
        images.push(img);
    }
    Ok(AnnotationSet::from_images(images))
}

/// The image file the annotation names, when it exists in `opts.images_dir`
/// or beside the XML.
fn image_path(xml: &Path, bytes: &[u8], opts: &ReadOptions) -> Option<PathBuf> {
    let filename = parse_raw(bytes, xml).ok()?.filename?;
    let name = Path::new(&filename).file_name()?.to_owned();
    let dirs = opts.images_dir.iter().map(PathBuf::as_path).chain(xml.parent());
    dirs.map(|d| d.join(&name)).find(|p| p.is_file())
}

/// Parses one VOC document. `source` names the file in errors (for a zip
/// entry, a path like `archive.zip/inner/a.xml`).
pub fn parse(bytes: &[u8], source: &Path) -> Result<ImageAnnotations> {
    let raw = parse_raw(bytes, source)?;
    let image = match &raw.filename {
        Some(f) if !f.trim().is_empty() => image_id_from_filename(f.trim()),
        _ => source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let mut img = ImageAnnotations::new(image);
    img.width = raw.width.filter(|&w| w > 0);
    img.height = raw.height.filter(|&h| h > 0);
    for obj in raw.objects {
        img.objects.push(obj.into_annotation(source)?);
    }
    Ok(img)
}

/// `A00_00.png` -> `A00_00`; a name without an image extension is kept whole,
/// so identifiers containing dots survive a write/read round trip.
fn image_id_from_filename(filename: &str) -> String {
    let p = Path::new(filename);
    let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| filename.to_owned());
    if mitoscope_imaging::is_image_path(p) {
        p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(file)
    } else {
        file
    }
}

/// The document as written, before validation.
#[derive(Debug, Default)]
struct RawDoc {
    filename: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    objects: Vec<RawObject>,
}

/// One `<object>` as written; `line` is where it starts.
#[derive(Debug, Default)]
struct RawObject {
    line: usize,
    name: Option<String>,
    score: Option<String>,
    corners: [Option<String>; 4],
}

const CORNERS: [&str; 4] = ["xmin", "ymin", "xmax", "ymax"];

impl RawObject {
    fn into_annotation(self, source: &Path) -> Result<Annotation> {
        let location = format!("line {} (<object>)", self.line);
        let bad = |msg: String| FormatError::malformed(source, &location, msg);
        let class = match self.name.as_deref().map(str::trim) {
            None | Some("") => ObjectClass::Mitosis,
            Some(n) => ObjectClass::parse(n).ok_or_else(|| {
                bad(format!(
                    "unknown class name '{n}' (expected e.g. mitosis, mitotic figure, non-mitosis, hard negative)"
                ))
            })?,
        };
        let mut v = [0.0; 4];
        for (i, text) in self.corners.iter().enumerate() {
            let text = text.as_deref().ok_or_else(|| bad(format!("<bndbox> lacks <{}>", CORNERS[i])))?;
            v[i] =
                text.trim().parse::<f64>().map_err(|_| bad(format!("<{}> is '{text}', not a number", CORNERS[i])))?;
            if v[i] < 0.0 {
                return Err(bad(format!("<{}> is negative ({})", CORNERS[i], v[i])));
            }
        }
        let bbox = BBox::new(v[0], v[1], v[2], v[3]).map_err(|e| bad(e.to_string()))?;
        let mut ann = Annotation::from_bbox(bbox, class);
        if let Some(s) = self.score {
            let score = s.trim().parse::<f64>().ok().filter(|s| s.is_finite());
            ann.score = Some(score.ok_or_else(|| bad(format!("<score> is '{s}', not a number")))?);
        }
        Ok(ann)
    }
}

/// Walks the XML events, keeping the element path, and collects the fields
/// VOC defines; everything else (`<source>`, `<part>`, `<segmented>`) is skipped.
fn parse_raw(bytes: &[u8], source: &Path) -> Result<RawDoc> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    // No trimming: it would also trim text pieces between entities (`a &amp; b`).
    let mut doc = RawDoc::default();
    let mut stack: Vec<String> = Vec::new();
    let mut saw_root = false;
    let mut text = String::new();
    let mut buf = Vec::new();
    let malformed =
        |pos: u64, msg: String| FormatError::malformed(source, format!("line {}", line_at(bytes, pos)), msg);
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| malformed(reader.error_position(), e.to_string()))?;
        // The end of the event just read: on the line of its closing `>`.
        let pos = reader.buffer_position();
        match event {
            Event::Start(ref e) | Event::Empty(ref e) if stack.is_empty() => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name != "annotation" || saw_root {
                    return Err(malformed(
                        pos,
                        format!("root element is <{name}>, expected one <annotation> (Pascal VOC)"),
                    ));
                }
                saw_root = true;
                if matches!(event, Event::Start(_)) {
                    stack.push(name);
                }
            }
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if stack.len() == 1 && name == "object" {
                    doc.objects.push(RawObject { line: line_at(bytes, pos), ..Default::default() });
                }
                stack.push(name);
                text.clear();
            }
            Event::End(_) => {
                store_field(&mut doc, &stack, std::mem::take(&mut text), |m| malformed(pos, m))?;
                stack.pop();
            }
            Event::Text(t) => text.push_str(&t.xml_content().map_err(|e| malformed(pos, e.to_string()))?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| malformed(pos, e.to_string()))?),
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| malformed(pos, e.to_string()))?;
                if let Some(c) = r.resolve_char_ref().map_err(|e| malformed(pos, e.to_string()))? {
                    text.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&name) {
                    text.push_str(s);
                } else {
                    return Err(malformed(pos, format!("unknown entity &{name};")));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(malformed(bytes.len() as u64, format!("document ends inside <{}>", stack.join("><"))));
    }
    if !saw_root {
        return Err(malformed(0, "no <annotation> element (empty or not Pascal VOC XML)".into()));
    }
    Ok(doc)
}

/// Stores the text of the element that `stack` ends in, if VOC defines it.
fn store_field(doc: &mut RawDoc, stack: &[String], text: String, bad: impl Fn(String) -> FormatError) -> Result<()> {
    let path: Vec<&str> = stack.iter().map(String::as_str).collect();
    let size = |text: &str| -> Result<u32> {
        let v = text.trim().parse::<f64>().map_err(|_| bad(format!("image size '{text}' is not a number")))?;
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
            return Err(bad(format!("image size '{text}' is not a whole number of pixels")));
        }
        Ok(v as u32)
    };
    match path.as_slice() {
        ["annotation", "filename"] => doc.filename = Some(text),
        ["annotation", "size", "width"] => doc.width = Some(size(&text)?),
        ["annotation", "size", "height"] => doc.height = Some(size(&text)?),
        ["annotation", "object", field] => {
            if let Some(obj) = doc.objects.last_mut() {
                match *field {
                    "name" => obj.name = Some(text),
                    "score" => obj.score = Some(text),
                    _ => {}
                }
            }
        }
        ["annotation", "object", "bndbox", corner] => {
            if let (Some(obj), Some(i)) = (doc.objects.last_mut(), CORNERS.iter().position(|c| c == corner)) {
                obj.corners[i] = Some(text);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Writes one XML per image (see the module docs for where).
pub fn write(set: &AnnotationSet, path: &Path, _opts: &WriteOptions) -> Result<()> {
    write_per_image(set, path, "VOC", to_xml)
}

/// The VOC document for one image. `target` names the output in errors.
pub fn to_xml(img: &ImageAnnotations, target: &Path) -> Result<String> {
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let filename = img
        .path
        .as_deref()
        .and_then(Path::file_name)
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| img.image.clone());
    let mut out = String::from("<annotation>\n");
    let _ = writeln!(out, "  <filename>{}</filename>", esc(&filename));
    let _ = writeln!(
        out,
        "  <size><width>{}</width><height>{}</height><depth>3</depth></size>",
        img.width.unwrap_or(0),
        img.height.unwrap_or(0)
    );
    out.push_str("  <segmented>0</segmented>\n");
    for obj in &img.objects {
        let bbox = crate::box_for_writing(obj, target, &img.image)?;
        // VOC boxes lie inside the image (readers refuse negative corners): a
        // default-sized box around a figure near the edge is cut at the edge.
        let clip = |v: f64, size: Option<u32>| {
            let v = v.max(0.0);
            match size {
                Some(s) if s > 0 => v.min(f64::from(s - 1)),
                _ => v,
            }
        };
        let bbox = mitoscope_geom::BBox {
            x_min: clip(bbox.x_min, img.width),
            y_min: clip(bbox.y_min, img.height),
            x_max: clip(bbox.x_max, img.width),
            y_max: clip(bbox.y_max, img.height),
        };
        out.push_str("  <object>\n");
        let _ = writeln!(out, "    <name>{}</name>", obj.class.as_str());
        out.push_str("    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n    <difficult>0</difficult>\n");
        if let Some(s) = obj.score {
            let _ = writeln!(out, "    <score>{s}</score>");
        }
        let _ = writeln!(
            out,
            "    <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>",
            bbox.x_min, bbox.y_min, bbox.x_max, bbox.y_max
        );
        out.push_str("  </object>\n");
    }
    out.push_str("</annotation>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitoscope_geom::Point;

    fn parse_str(s: &str) -> Result<ImageAnnotations> {
        parse(s.as_bytes(), Path::new("t.xml"))
    }

    #[test]
    fn reads_boxes_classes_and_size() {
        let img = parse_str(
            "<?xml version=\"1.0\"?>\n<annotation><folder>x</folder><filename>A00_00.png</filename>\
             <size><width>2084</width><height>2084</height><depth>3</depth></size>\
             <object><name>mitosis</name><part><name>head</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></part>\
             <bndbox><xmin>10</xmin><ymin>20.5</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>\
             <object><name>hard negative</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></object>\
             <object><name></name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>7</xmax><ymax>9</ymax></bndbox></object></annotation>",
        )
        .unwrap();
        assert_eq!(img.image, "A00_00");
        assert_eq!((img.width, img.height), (Some(2084), Some(2084)));
        assert_eq!(img.objects.len(), 3);
        assert_eq!(img.objects[0].bbox, Some(BBox { x_min: 10.0, y_min: 20.5, x_max: 30.0, y_max: 40.0 }));
        assert_eq!(img.objects[0].centroid, Point::new(20.0, 30.25));
        assert_eq!(img.objects[1].class, ObjectClass::NonMitosis);
        assert_eq!(img.objects[2].class, ObjectClass::Mitosis);
    }

    #[test]
    fn errors_name_file_line_and_value() {
        let err = parse_str("<annotation>\n<object><name>tumour</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.xml") && err.contains("line 2") && err.contains("tumour"), "{err}");
        let err = parse_str("<annotation><object><bndbox><xmin>a</xmin></bndbox></object></annotation>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("'a'"), "{err}");
        let err = parse_str(
            "<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax></bndbox></object></annotation>",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("<ymax>"), "{err}");
        let err = parse_str("<annotation><object><bndbox><xmin>NaN</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("finite"), "{err}");
        assert!(parse_str("<annotation><object>").unwrap_err().to_string().contains("ends inside"));
        assert!(parse_str("<coco/>").unwrap_err().to_string().contains("expected one <annotation>"));
        assert!(parse_str("<annotation/>").unwrap().objects.is_empty());
        assert!(parse_str("<coco></coco>").unwrap_err().to_string().contains("expected one <annotation>"));
        assert!(parse_str("").is_err());
    }

    #[test]
    fn escapes_and_entities_round_trip() {
        let mut img = ImageAnnotations::new("a&b <c>");
        img.objects
            .push(Annotation::from_bbox(BBox::new(1.0, 2.0, 3.0, 4.0).unwrap(), ObjectClass::Mitosis).with_score(0.75));
        let xml = to_xml(&img, Path::new("o.xml")).unwrap();
        let back = parse_str(&xml).unwrap();
        assert_eq!(back.image, "a&b <c>");
        assert_eq!(back.objects, img.objects);
    }

    #[test]
    fn point_only_objects_get_the_default_box() {
        let mut img = ImageAnnotations::new("p");
        img.objects.push(Annotation::point(Point::new(100.0, 40.0), ObjectClass::Mitosis));
        let xml = to_xml(&img, Path::new("o.xml")).unwrap();
        let back = parse(xml.as_bytes(), Path::new("o.xml")).unwrap();
        let b = back.objects[0].bbox.unwrap();
        assert_eq!((b.width(), b.center()), (crate::DEFAULT_BOX_PX, Point::new(100.0, 40.0)));
    }
}
