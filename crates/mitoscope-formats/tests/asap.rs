//! ASAP XML: write/read round trips through the public dispatcher, and the
//! format told from VOC by content.

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_formats::{Format, ReadOptions, WriteOptions};
use mitoscope_geom::{BBox, Point};

fn sample() -> AnnotationSet {
    let mut a = ImageAnnotations::new("slide_01");
    a.objects.push(Annotation::point(Point::new(1032.5, 877.0), ObjectClass::Mitosis).with_score(0.97));
    a.objects.push(Annotation::from_bbox(BBox::new(100.0, 7.0, 130.0, 33.0).unwrap(), ObjectClass::NonMitosis));
    let empty = ImageAnnotations::new("slide_02");
    AnnotationSet::from_images(vec![a, empty])
}

#[test]
fn folder_round_trip_keeps_images_classes_scores_and_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("asap");
    let set = sample();
    let opts = WriteOptions { polygons: true, ..Default::default() };
    mitoscope_formats::write(&set, &out, Format::Asap, &opts).unwrap();
    assert!(out.join("slide_01.xml").is_file() && out.join("slide_02.xml").is_file());
    let back = mitoscope_formats::read(&out, Some(Format::Asap), &ReadOptions::default()).unwrap();
    assert_eq!(back.images.len(), 2);
    for (b, a) in back.images.iter().zip(&set.images) {
        assert_eq!(b.image, a.image);
        assert_eq!(b.objects, a.objects);
    }
}

#[test]
fn an_xml_file_is_asap_or_voc_by_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let asap = dir.path().join("renamed.xml");
    let mut one = sample();
    one.images.truncate(1);
    mitoscope_formats::write(&one, &asap, Format::Asap, &WriteOptions::default()).unwrap();
    assert_eq!(mitoscope_formats::detect_format(&asap).unwrap(), Format::Asap);
    let back = mitoscope_formats::read(&asap, None, &ReadOptions::default()).unwrap();
    assert_eq!(back.images[0].image, "slide_01", "the image keeps its name, not the file's");
    assert_eq!(back.images[0].objects.len(), 2);
    assert_eq!(back.images[0].objects[1].centroid, Point::new(115.0, 20.0), "without polygons a box is its centre");

    let voc = dir.path().join("voc.xml");
    mitoscope_formats::write(&one, &voc, Format::Voc, &WriteOptions::default()).unwrap();
    assert_eq!(mitoscope_formats::detect_format(&voc).unwrap(), Format::Voc);

    let cut = dir.path().join("cut.xml");
    std::fs::write(&cut, "<?xml version=\"1.0\"?>\n<ASAP_Annotations>\n<Annotations>\n<Annotation Type=\"Dot\">")
        .unwrap();
    let err = mitoscope_formats::read(&cut, None, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("cut.xml") && err.contains("ends inside"), "{err}");
}
