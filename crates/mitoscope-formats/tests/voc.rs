//! Pascal-VOC XML: write/read round trips through the public dispatcher.

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_formats::{Format, ReadOptions, WriteOptions, voc};
use mitoscope_geom::BBox;

fn sample() -> AnnotationSet {
    let mut a = ImageAnnotations::new("A00_00");
    a.width = Some(2084);
    a.height = Some(2084);
    a.objects.push(Annotation::from_bbox(BBox::new(10.0, 20.0, 40.0, 52.0).unwrap(), ObjectClass::Mitosis));
    a.objects.push(
        Annotation::from_bbox(BBox::new(100.5, 7.0, 130.0, 33.25).unwrap(), ObjectClass::NonMitosis).with_score(0.25),
    );
    let empty = ImageAnnotations::new("A01_04");
    AnnotationSet::from_images(vec![a, empty])
}

#[test]
fn folder_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("voc");
    let set = sample();
    mitoscope_formats::write(&set, &out, Format::Voc, &WriteOptions::default()).unwrap();
    assert!(out.join("A00_00.xml").is_file() && out.join("A01_04.xml").is_file());
    let back = mitoscope_formats::read(&out, Some(Format::Voc), &ReadOptions::default()).unwrap();
    assert_eq!(back.images.len(), 2);
    for (b, a) in back.images.iter().zip(&set.images) {
        assert_eq!((&b.image, b.width, b.height), (&a.image, a.width, a.height));
        assert_eq!(b.objects, a.objects);
    }
}

#[test]
fn points_near_the_edge_get_boxes_inside_the_image_that_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("voc");
    let mut a = ImageAnnotations::new("edge");
    a.width = Some(100);
    a.height = Some(80);
    a.objects.push(Annotation::point(mitoscope_geom::Point::new(10.0, 70.0), ObjectClass::Mitosis));
    let mut no_size = ImageAnnotations::new("unsized");
    no_size.objects.push(Annotation::point(mitoscope_geom::Point::new(5.0, 6.0), ObjectClass::Mitosis));
    let set = AnnotationSet::from_images(vec![a, no_size]);
    mitoscope_formats::write(&set, &out, Format::Voc, &WriteOptions::default()).unwrap();
    let back = mitoscope_formats::read(&out, Some(Format::Voc), &ReadOptions::default()).unwrap();
    // The 50-px default box around (10, 70), cut at the image's edges.
    let edge = back.image("edge").unwrap().objects[0].bbox.unwrap();
    assert_eq!((edge.x_min, edge.y_min, edge.x_max, edge.y_max), (0.0, 45.0, 35.0, 79.0));
    let no_size = back.image("unsized").unwrap().objects[0].bbox.unwrap();
    assert_eq!((no_size.x_min, no_size.y_min), (0.0, 0.0), "no size: cut at zero only");
}

#[test]
fn single_file_round_trip_and_detection() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("one.xml");
    let mut set = sample();
    set.images.truncate(1);
    let image_file = dir.path().join("A00_00.png");
    std::fs::write(&image_file, b"not read").unwrap();
    set.images[0].path = Some(image_file.clone());
    voc::write(&set, &out, &WriteOptions::default()).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("<filename>A00_00.png</filename>") && text.contains("<name>non-mitosis</name>"), "{text}");
    assert_eq!(mitoscope_formats::detect_format(&out).unwrap(), Format::Voc);
    let back = mitoscope_formats::read(&out, None, &ReadOptions::default()).unwrap();
    assert_eq!(back.images[0].image, "A00_00");
    assert_eq!(back.images[0].objects, set.images[0].objects);
    assert_eq!(back.images[0].path.as_deref(), Some(image_file.as_path()), "the image beside the XML is found");
}

#[test]
fn many_images_need_a_folder_and_unique_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exists.xml");
    std::fs::write(&file, "x").unwrap();
    let err = voc::write(&sample(), &file, &WriteOptions::default()).unwrap_err().to_string();
    assert!(err.contains("folder"), "{err}");
    let mut dup = sample();
    dup.images[1].image = "A00_00".into();
    let err = voc::write(&dup, &dir.path().join("out"), &WriteOptions::default()).unwrap_err().to_string();
    assert!(err.contains("A00_00.xml"), "{err}");
}

#[test]
fn folder_without_xml_and_bad_file_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = voc::read(dir.path(), &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("no .xml files"), "{err}");
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, "<annotation>\n<object><name>mitosis</name><bndbox><xmin>1</xmin>\n</annotation>").unwrap();
    let err = voc::read(&bad, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("bad.xml") && err.contains("line"), "{err}");
}
