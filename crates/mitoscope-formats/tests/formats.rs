//! Readers and writers of the point, COCO, MIDOG points, SlideRunner, YOLO,
//! ICPR pixel-list and GeoJSON formats: real fixtures (skipped loudly when the
//! shared data is absent), hand-made files, bad input and round trips.

use std::path::{Path, PathBuf};

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass, Shape};
use mitoscope_formats::coco::BoxConvention;
use mitoscope_formats::{
    Format, FormatError, ReadOptions, WriteOptions, coco, csv_points, detect_format, geojson, icpr, midog_points,
    sliderunner, yolo,
};
use mitoscope_geom::{BBox, Mpp, Point, Polygon};

fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// The error's message, asserting it names the file and contains every `parts`.
fn err_names(r: mitoscope_formats::Result<AnnotationSet>, file: &str, parts: &[&str]) -> String {
    let msg = match r {
        Ok(set) => panic!("expected an error mentioning {parts:?}, got {} objects", set.object_count()),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(file), "error does not name {file}: {msg}");
    for p in parts {
        assert!(msg.contains(p), "error lacks '{p}': {msg}");
    }
    msg
}

fn opts() -> ReadOptions {
    ReadOptions::default()
}

fn sample_set() -> AnnotationSet {
    let mut a = ImageAnnotations::new("A00_01");
    a.width = Some(2084);
    a.height = Some(2084);
    a.objects.push(Annotation::point(Point::new(608.0, 314.0), ObjectClass::Mitosis));
    a.objects.push(Annotation::point(Point::new(1413.25, 201.5), ObjectClass::NonMitosis).with_score(0.25));
    a.objects.push(
        Annotation::from_bbox(BBox::new(100.0, 120.0, 150.0, 170.0).unwrap(), ObjectClass::Mitosis).with_score(0.9),
    );
    let mut b = ImageAnnotations::new("slide_2");
    b.width = Some(1000);
    b.height = Some(800);
    b.objects.push(Annotation::point(Point::new(10.0, 790.0), ObjectClass::Mitosis).with_score(0.5));
    AnnotationSet::from_images(vec![a, b])
}

/// Same images (in order), and per image the same classes, scores and
/// centroids within `tol` pixels.
fn assert_same_objects(a: &AnnotationSet, b: &AnnotationSet, tol: f64) {
    let names = |s: &AnnotationSet| s.images.iter().map(|i| i.image.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    for (x, y) in a.images.iter().zip(&b.images) {
        assert_eq!(x.objects.len(), y.objects.len(), "image {}", x.image);
        for (o, p) in x.objects.iter().zip(&y.objects) {
            assert_eq!(o.class, p.class, "image {}", x.image);
            assert!(o.centroid.distance(&p.centroid) <= tol, "image {}: {:?} vs {:?}", x.image, o.centroid, p.centroid);
            match (o.score, p.score) {
                (Some(s), Some(t)) => assert!((s - t).abs() < 1e-6),
                (s, t) => assert_eq!(s, t),
            }
        }
    }
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_reads_aliases_boxes_scores_and_classes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        dir.path(),
        "points.csv",
        "Filename,X,Y,Confidence,Label,extra\nA00_01.bmp,1.5,2,0.8,mitotic figure,zz\nB,3,4,,hard negative,\nA00_01.bmp,5,6,-2.5,,\n",
    );
    let set = csv_points::read(&p, &opts()).unwrap();
    assert_eq!(set.images.len(), 2);
    assert_eq!(set.images[0].image, "A00_01");
    assert_eq!(set.images[0].objects.len(), 2);
    assert_eq!(set.images[0].objects[0].centroid, Point::new(1.5, 2.0));
    assert_eq!(set.images[0].objects[0].score, Some(0.8));
    assert_eq!(set.images[0].objects[1].score, Some(-2.5), "logits are accepted");
    assert_eq!(set.images[0].objects[1].class, ObjectClass::Mitosis, "empty class cell = mitosis");
    assert_eq!(set.images[1].objects[0].class, ObjectClass::NonMitosis);
    assert_eq!(set.images[1].objects[0].score, None);

    let p = write_file(dir.path(), "boxes.csv", "image_id,xmin,ymin,xmax,ymax\nimg,10,20,30,60\n");
    let set = csv_points::read(&p, &opts()).unwrap();
    let o = &set.images[0].objects[0];
    assert_eq!(o.centroid, Point::new(20.0, 40.0));
    assert_eq!(o.bbox, Some(BBox::new(10.0, 20.0, 30.0, 60.0).unwrap()));

    let p = write_file(dir.path(), "tabs.tsv", "image\tx\ty\tclass\nimg\t1\t2\tnon-mitosis\n");
    let set = csv_points::read(&p, &opts()).unwrap();
    assert_eq!(set.count(ObjectClass::NonMitosis), 1);
}

#[test]
fn csv_bad_input_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &str, &[&str])] = &[
        ("hdr.csv", "a,b,c\n1,2,3\n", &["line 1", "expected a header with at least image,x,y", "found: a,b,c"]),
        ("empty.csv", "", &["header"]),
        ("nan.csv", "image,x,y\nA,NaN,2\n", &["line 2", "not a finite"]),
        ("inf.csv", "image,x,y\nA,1,2\nA,3,inf\n", &["line 3", "not a finite"]),
        ("neg.csv", "image,x,y\nA,-1,2\n", &["line 2", "negative"]),
        ("text.csv", "image,x,y\nA,one,2\n", &["line 2", "'one'"]),
        ("cols.csv", "image,x,y\nA,1,2\nA,1\n", &["line 3", "expected 3 fields"]),
        ("noimg.csv", "image,x,y\n,1,2\n", &["line 2", "empty image"]),
        ("class.csv", "image,x,y,class\nA,1,2,tumour\n", &["line 2", "'tumour'"]),
        ("score.csv", "image,x,y,score\nA,1,2,nan\n", &["line 2", "score"]),
        ("dup.csv", "image,x,x,y\nA,1,2,3\n", &["line 1", "'x' appears twice (columns 2 and 3)"]),
        ("numbers.csv", "2,2,10,10\n5,5,9,9\n", &["line 1", "(2,2,10,10) is numbers, not a header"]),
    ];
    for (name, content, parts) in cases {
        let p = write_file(d, name, content);
        err_names(csv_points::read(&p, &opts()), name, parts);
    }
}

#[test]
fn csv_image_column_is_preferred_to_slide() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "both.csv", "slide,image,x,y\nS1,A00_00,1,2\nS1,A00_01,3,4\n");
    let set = csv_points::read(&p, &opts()).unwrap();
    let ids: Vec<&str> = set.images.iter().map(|i| i.image.as_str()).collect();
    assert_eq!(ids, ["A00_00", "A00_01"]);
}

#[test]
fn csv_round_trip_and_detection() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.csv");
    let set = sample_set();
    csv_points::write(&set, &p, &WriteOptions::default()).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(
        text.starts_with("image,x,y,score,class\nA00_01,608,314,,mitosis\nA00_01,1413.25,201.5,0.25,non-mitosis\n"),
        "{text}"
    );
    assert_eq!(detect_format(&p).unwrap(), Format::Csv);
    let back = csv_points::read(&p, &opts()).unwrap();
    assert_same_objects(&set, &back, 0.01);
}

#[test]
fn csv_real_icpr_centroids() {
    let dir = mitoscope_testdata::require_data!("icpr2012");
    let set = csv_points::read(&dir.join("centroids.csv"), &opts()).unwrap();
    let per_image: Vec<usize> = set.images.iter().map(|i| i.objects.len()).collect();
    assert_eq!(per_image, [6, 11, 4, 9, 5]);
    assert_eq!(set.count(ObjectClass::Mitosis), 35);
    let train = csv_points::read(&dir.join("train_centroids_no_images.csv"), &opts()).unwrap();
    assert_eq!(train.count(ObjectClass::Mitosis), 226);
}

// ---------------------------------------------------------------- ICPR pixel lists

#[test]
fn icpr_real_pixel_lists_match_official_centroids() {
    let dir = mitoscope_testdata::require_data!("icpr2012");
    let official = csv_points::read(&dir.join("train_centroids_no_images.csv"), &opts()).unwrap();
    for (name, expected) in [("A00_01", 5), ("A00_02", 2)] {
        let path = dir.join(format!("pixel-masks/{name}.csv"));
        assert_eq!(detect_format(&path).unwrap(), Format::IcprPixels);
        let set = icpr::read_pixel_lists(&path, &opts()).unwrap();
        assert_eq!(set.images.len(), 1);
        let img = &set.images[0];
        assert_eq!(img.image, name);
        assert_eq!(img.objects.len(), expected);
        let refs = &official.image(name).unwrap().objects;
        assert_eq!(refs.len(), expected, "official centroids of {name}");
        for o in &img.objects {
            assert!(matches!(o.shape, Some(Shape::Pixels(ref px)) if px.len() > 20));
            let nearest = refs.iter().map(|r| r.centroid.distance(&o.centroid)).fold(f64::INFINITY, f64::min);
            assert!(
                nearest < 5.0,
                "{name}: centroid {:?} is {nearest:.1} px from the nearest official one",
                o.centroid
            );
        }
    }
}

#[test]
fn icpr_hand_made_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "X01_02.csv", "1,1,2,1,3,1\n\n10,10,11,10,10,11,11,11,\n");
    let set = icpr::read_pixel_lists(&p, &opts()).unwrap();
    assert_eq!(set.images[0].image, "X01_02");
    assert_eq!(set.images[0].objects.len(), 2);
    assert_eq!(set.images[0].objects[0].centroid, Point::new(2.0, 1.0));
    assert_eq!(set.images[0].objects[1].centroid, Point::new(10.5, 10.5));

    let cases: &[(&str, &str, &[&str])] = &[
        ("odd.csv", "1,1,2,1\n1,2,3\n", &["line 2", "even"]),
        ("float.csv", "1,1,2.5,1\n", &["line 1", "'2.5'"]),
        ("neg.csv", "\n1,1,-2,1\n", &["line 2", "-2"]),
        ("word.csv", "1,1,x,1\n", &["line 1", "'x'"]),
    ];
    for (name, content, parts) in cases {
        let p = write_file(dir.path(), name, content);
        err_names(icpr::read_pixel_lists(&p, &opts()), name, parts);
    }
}

// ---------------------------------------------------------------- COCO / MIDOG

#[test]
fn coco_real_midog_counts() {
    let dir = mitoscope_testdata::require_data!("formats");
    let set = coco::read(&dir.join("MIDOG.json"), &opts()).unwrap();
    assert_eq!(set.images.len(), 200);
    assert_eq!(set.count(ObjectClass::Mitosis), 1721);
    assert_eq!(set.count(ObjectClass::NonMitosis), 2714);
    assert_eq!(set.object_count(), 4435);
    assert_eq!(set.images.iter().filter(|i| i.objects.is_empty()).count(), 50, "images without labels are kept");
    let first = &set.images[0];
    assert_eq!((first.image.as_str(), first.width, first.height), ("001", Some(7215), Some(5412)));
    // MIDOG boxes are [x1,y1,x2,y2] of 50 px.
    let b = first.objects[0].bbox.unwrap();
    assert_eq!((b.x_min, b.y_min, b.x_max, b.y_max), (4336.0, 346.0, 4386.0, 396.0));
    assert!(set.images.iter().flat_map(|i| &i.objects).all(|o| o.bbox.is_some_and(|b| b.width() == 50.0)));

    let set = coco::read(&dir.join("MIDOG++.json"), &opts()).unwrap();
    assert_eq!(set.images.len(), 553);
    assert_eq!(set.count(ObjectClass::Mitosis), 11937);
    assert_eq!(set.count(ObjectClass::NonMitosis), 14349);
    assert_eq!(set.object_count(), 26286);
    assert!(set.images.iter().flat_map(|i| &i.objects).all(|o| o.bbox.is_some_and(|b| b.width() == 50.0)));
}

const COCO_XYWH: &str = r#"{
  "images": [{"id": 7, "file_name": "dir/a.png", "width": 100, "height": 80},
             {"id": 8, "file_name": "b.tif", "width": 100, "height": 80}],
  "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "hard negative"}],
  "annotations": [
    {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 10], "score": 0.7},
    {"id": 2, "image_id": 7, "category_id": 2, "bbox": [50, 50, 10, 10],
     "segmentation": [[50, 50, 60, 50, 60, 60, 50, 60]]}
  ]
}"#;

#[test]
fn coco_standard_xywh_detected_and_override() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "coco.json", COCO_XYWH);
    assert_eq!(detect_format(&p).unwrap(), Format::Coco);
    let set = coco::read(&p, &opts()).unwrap();
    assert_eq!(set.images.iter().map(|i| i.image.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(set.images[1].objects.is_empty());
    let o = &set.images[0].objects[0];
    assert_eq!(o.bbox, Some(BBox::new(10.0, 20.0, 40.0, 30.0).unwrap()), "[30,10] > [10,20] fails as x2y2, so xywh");
    assert_eq!(o.score, Some(0.7));
    let o2 = &set.images[0].objects[1];
    assert_eq!(o2.class, ObjectClass::NonMitosis);
    assert!(matches!(o2.shape, Some(Shape::Polygon(ref p)) if p.vertices.len() == 4));
    assert_eq!(o2.centroid, Point::new(55.0, 55.0));

    let forced = coco::read_with(&p, &opts(), Some(BoxConvention::X1Y1X2Y2));
    err_names(forced, "coco.json", &["annotation id 1", "inverted"]);
}

#[test]
fn coco_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let truncated = &COCO_XYWH[..COCO_XYWH.len() / 2];
    let cat = COCO_XYWH.replace("hard negative", "tumour cell");
    let short = COCO_XYWH.replace("[50, 50, 10, 10]", "[50, 50, 10]");
    let img = COCO_XYWH.replace("\"image_id\": 7, \"category_id\": 2", "\"image_id\": 9, \"category_id\": 2");
    let string_id = COCO_XYWH.replace("\"image_id\": 7, \"category_id\": 2", "\"image_id\": \"7\", \"category_id\": 2");
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("trunc.json", truncated.to_owned(), &["line", "invalid JSON"]),
        ("cat.json", cat, &["annotation id 2", "'tumour cell'"]),
        ("short.json", short, &["annotation id 2", "4 numbers"]),
        ("img.json", img, &["annotation id 2", "image_id 9"]),
        // The string "7" is not the number 7: the message shows which it got.
        ("strid.json", string_id, &["annotation id 2", "image_id \"7\""]),
        ("shape.json", "{\"images\": 3}".to_owned(), &["invalid JSON"]),
    ];
    for (name, content, parts) in &cases {
        let p = write_file(d, name, content);
        err_names(coco::read(&p, &opts()), name, parts);
    }
    // An empty .json is said to be empty, not a format puzzle.
    let empty = write_file(d, "empty.json", "  \n");
    let err = mitoscope_formats::detect_format(&empty).unwrap_err().to_string();
    assert!(err.contains("empty.json") && err.contains("the file is empty"), "{err}");
}

#[test]
fn coco_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.json");
    let mut set = sample_set();
    let poly =
        Polygon::new(vec![Point::new(0.0, 0.0), Point::new(10.0, 0.0), Point::new(10.0, 10.0), Point::new(0.0, 10.0)]);
    set.images[1].objects.push(Annotation::from_shape(Shape::Polygon(poly.clone()), ObjectClass::NonMitosis).unwrap());
    // A figure in two parts (anaphase): one object, both parts kept.
    let apart = Polygon::new(poly.vertices.iter().map(|v| Point::new(v.x + 30.0, v.y)).collect());
    let two = Shape::MultiPolygon(vec![poly, apart]);
    set.images[1].objects.push(Annotation::from_shape(two.clone(), ObjectClass::Mitosis).unwrap());
    set.images.push(ImageAnnotations::new("empty.one"));
    coco::write(&set, &p, &WriteOptions::default()).unwrap();
    assert_eq!(detect_format(&p).unwrap(), Format::Coco);
    let back = coco::read(&p, &opts()).unwrap();
    assert_same_objects(&set, &back, 1e-9);
    // Objects without a box got a 50 px one; boxes survive as given.
    assert_eq!(back.images[0].objects[0].bbox.unwrap().width(), coco::DEFAULT_BOX_PX);
    assert_eq!(back.images[0].objects[2].bbox, set.images[0].objects[2].bbox);
    assert!(matches!(back.images[1].objects[1].shape, Some(Shape::Polygon(_))));
    assert_eq!(back.images[1].objects[2].shape, Some(two));
    assert_eq!(back.images[1].objects[2].centroid, Point::new(20.0, 5.0));
    assert_eq!(back.images[0].width, Some(2084));
}

// ---------------------------------------------------------------- grand-challenge points

#[test]
fn midog_points_round_trip_file_and_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mpp = Mpp::new(0.25).unwrap();
    let wopts = WriteOptions { mpp: Some(mpp), ..Default::default() };
    let ropts = ReadOptions { mpp: Some(mpp), ..Default::default() };
    let set = sample_set();

    let one = AnnotationSet::from_images(vec![set.images[0].clone()]);
    let file = dir.path().join("A00_01.json");
    midog_points::write(&one, &file, &wopts).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"Multiple points\"") && text.contains("\"non-mitotic figure\""), "{text}");
    // 608 px * 0.25 µm = 0.152 mm
    assert!(text.contains("0.152"), "{text}");
    assert_eq!(detect_format(&file).unwrap(), Format::MidogPoints);
    assert_same_objects(&one, &midog_points::read(&file, &ropts).unwrap(), 1e-6);

    let folder = dir.path().join("points");
    midog_points::write(&set, &folder, &wopts).unwrap();
    assert_same_objects(&set, &midog_points::read(&folder, &ropts).unwrap(), 1e-6);

    // Several images into one .json: refused with a hint.
    let e = midog_points::write(&set, &dir.path().join("all.json"), &wopts).unwrap_err().to_string();
    assert!(e.contains("folder"), "{e}");
    // No mpp anywhere.
    let e = midog_points::write(&set, &dir.path().join("x"), &WriteOptions::default()).unwrap_err().to_string();
    assert!(e.contains("mpp") && e.contains("A00_01"), "{e}");
    err_names(midog_points::read(&file, &opts()), "A00_01.json", &["--mpp"]);
}

#[test]
fn midog_points_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let ropts = ReadOptions { mpp: Some(Mpp::new(0.25).unwrap()), ..Default::default() };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "trunc.json",
            r#"{"type": "Multiple points", "points": [{"name": "mitotic figure", "point": [0.1,"#,
            &["line 1", "invalid JSON"],
        ),
        (
            "name.json",
            r#"{"type": "Multiple points", "points": [{"name": "cell", "point": [0.1, 0.2, 0]}]}"#,
            &["points[0]", "'cell'"],
        ),
        (
            "short.json",
            r#"{"points": [{"name": "mitotic figure", "point": [0.1, 0.2]}, {"point": [0.1]}]}"#,
            &["points[1]"],
        ),
        ("neg.json", r#"{"points": [{"point": [-0.1, 0.2, 0]}]}"#, &["points[0]", "negative"]),
        ("type.json", r#"{"type": "Single point", "points": []}"#, &["Single point"]),
    ];
    for (name, content, parts) in cases {
        let p = write_file(dir.path(), name, content);
        err_names(midog_points::read(&p, &ropts), name, parts);
    }
}

// ---------------------------------------------------------------- SlideRunner

#[test]
fn sliderunner_real_databases() {
    let dir = mitoscope_testdata::require_data!("formats");
    let path = dir.join("MITOS2012.sqlite");
    assert_eq!(detect_format(&path).unwrap(), Format::SlideRunner);
    let set = sliderunner::read(&path, &opts()).unwrap();
    assert_eq!(set.images.len(), 35);
    assert_eq!(set.count(ObjectClass::Mitosis), 226);
    assert_eq!(set.count(ObjectClass::NonMitosis), 0);
    assert!(set.inconsistencies.is_empty(), "{:?}", set.inconsistencies);
    assert_eq!(set.images[0].image, "A00_01");
    assert_eq!(set.images[0].objects[0].centroid, Point::new(608.0, 314.0));

    let set = sliderunner::read(&dir.join("MITOS2014.sqlite"), &opts()).unwrap();
    assert_eq!(set.images.len(), 1200);
    assert_eq!(set.count(ObjectClass::Mitosis), 749);
    assert_eq!(set.count(ObjectClass::NonMitosis), 2884);
    assert_eq!(set.images.iter().filter(|i| !i.objects.is_empty()).count(), 865);
    assert!(set.inconsistencies.is_empty(), "{:?}", set.inconsistencies);
}

fn make_db(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

const SLIDERUNNER_SCHEMA: &str = "
CREATE TABLE Slides (uid INTEGER PRIMARY KEY, filename TEXT, width INTEGER, height INTEGER, directory TEXT);
CREATE TABLE Annotations (uid INTEGER PRIMARY KEY, slide INTEGER, type INTEGER, agreedClass INTEGER);
CREATE TABLE Annotations_coordinates (uid INTEGER PRIMARY KEY, coordinateX INTEGER, coordinateY INTEGER, slide INTEGER, annoId INTEGER, orderIdx INTEGER);
CREATE TABLE Classes (uid INTEGER PRIMARY KEY, name TEXT);
";

#[test]
fn sliderunner_hand_made_types_and_unknown_classes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db.sqlite");
    make_db(
        &p,
        &format!(
            "{SLIDERUNNER_SCHEMA}
            INSERT INTO Classes VALUES (1, 'Mitosis'), (2, 'Nonmitosis'), (3, 'Granulocyte');
            INSERT INTO Slides VALUES (1, 'case1.svs', 5000, 4000, NULL), (2, 'empty.svs', NULL, NULL, NULL);
            INSERT INTO Annotations VALUES (1, 1, 1, 1), (2, 1, 2, 2), (3, 1, 3, 1), (4, 1, 1, 3), (5, 1, 1, 3), (6, 1, 1, 9);
            INSERT INTO Annotations_coordinates (coordinateX, coordinateY, slide, annoId, orderIdx) VALUES
              (100, 200, 1, 1, 1),
              (10, 10, 1, 2, 1), (30, 50, 1, 2, 2),
              (0, 0, 1, 3, 1), (10, 0, 1, 3, 2), (10, 10, 1, 3, 3), (0, 10, 1, 3, 4),
              (1, 1, 1, 4, 1), (2, 2, 1, 5, 1), (3, 3, 1, 6, 1);"
        ),
    );
    let set = sliderunner::read(&p, &opts()).unwrap();
    assert_eq!(set.images.iter().map(|i| i.image.as_str()).collect::<Vec<_>>(), ["case1", "empty"]);
    assert_eq!((set.images[0].width, set.images[0].height), (Some(5000), Some(4000)));
    let objs = &set.images[0].objects;
    assert_eq!(objs.len(), 3);
    assert_eq!(objs[0].centroid, Point::new(100.0, 200.0));
    assert_eq!(objs[1].class, ObjectClass::NonMitosis);
    assert_eq!(objs[1].bbox, Some(BBox::new(10.0, 10.0, 30.0, 50.0).unwrap()));
    assert!(matches!(objs[2].shape, Some(Shape::Polygon(_))));
    assert_eq!(objs[2].centroid, Point::new(5.0, 5.0));
    let msgs: Vec<String> = set.inconsistencies.iter().map(|i| i.message.clone()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("2 annotation(s) of class 'Granulocyte'")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("uid 9")), "{msgs:?}");
}

#[test]
fn sliderunner_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "text.sqlite", "this is not a database, just some text that is long enough\n");
    err_names(sliderunner::read(&p, &opts()), "text.sqlite", &[]);
    let p = dir.path().join("other.sqlite");
    make_db(&p, "CREATE TABLE Slides (uid INTEGER, filename TEXT); CREATE TABLE Foo (a);");
    err_names(
        sliderunner::read(&p, &opts()),
        "other.sqlite",
        &["missing table(s) Annotations, Annotations_coordinates, Classes"],
    );
    let p = dir.path().join("cols.sqlite");
    make_db(
        &p,
        "CREATE TABLE Slides (uid INTEGER, name TEXT); CREATE TABLE Annotations (uid INTEGER);
         CREATE TABLE Annotations_coordinates (uid INTEGER); CREATE TABLE Classes (uid INTEGER, name TEXT);",
    );
    err_names(sliderunner::read(&p, &opts()), "cols.sqlite", &["Slides"]);
    err_names(sliderunner::read(&dir.path().join("missing.sqlite"), &opts()), "missing.sqlite", &[]);
}

// ---------------------------------------------------------------- YOLO

#[test]
fn yolo_real_cmc_negatives() {
    let dir = mitoscope_testdata::require_data!("cmc-negatives");
    let set = yolo::read(&dir, &opts()).unwrap();
    assert_eq!(set.images.len(), 3);
    assert_eq!(set.count(ObjectClass::NonMitosis), 14);
    assert_eq!(set.count(ObjectClass::Mitosis), 0);
    for img in &set.images {
        assert_eq!((img.width, img.height), (Some(7215), Some(5412)));
        assert!(img.path.as_ref().is_some_and(|p| p.is_file()));
        for o in &img.objects {
            let b = o.bbox.unwrap();
            assert!((b.width() - 50.0).abs() < 0.1 && (b.height() - 50.0).abs() < 0.1, "{b:?}");
        }
    }
    // A single txt, with the images elsewhere.
    let txt =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().unwrap() == "txt").unwrap();
    let one = yolo::read(&txt, &opts()).unwrap();
    assert_eq!(one.images.len(), 1);
}

fn png(path: &Path, w: u32, h: u32) {
    image::RgbImage::new(w, h).save(path).unwrap();
}

#[test]
fn yolo_hand_made_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let labels = d.join("labels");
    std::fs::create_dir(&labels).unwrap();
    std::fs::create_dir(d.join("images")).unwrap();
    png(&d.join("images/a.png"), 200, 100);
    std::fs::write(labels.join("a.txt"), "0 0.5 0.5 0.1 0.2\n1 0.25 0.75 0.05 0.1 0.42").unwrap();
    std::fs::write(labels.join("classes.txt"), "mitosis\nlookalike\n").unwrap();
    let set = yolo::read(&labels, &opts()).unwrap();
    assert_eq!(set.images.len(), 1);
    let img = &set.images[0];
    assert_eq!((img.image.as_str(), img.width, img.height), ("a", Some(200), Some(100)));
    assert_eq!(img.objects[0].bbox, Some(BBox::new(90.0, 40.0, 110.0, 60.0).unwrap()));
    assert_eq!(img.objects[1].class, ObjectClass::NonMitosis);
    assert_eq!(img.objects[1].score, Some(0.42));

    let direct =
        yolo::read_txt(&labels.join("a.txt"), 200, 100, &[ObjectClass::Mitosis, ObjectClass::Mitosis]).unwrap();
    assert_eq!(direct.count(ObjectClass::Mitosis), 2);

    png(&d.join("b.png"), 10, 10);
    let cases: &[(&str, &str, &[&str])] = &[
        ("b.txt", "0 0.5 0.5 0.1\n", &["line 1", "found 4"]),
        ("b.txt", "0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n", &["line 2", "class index 2"]),
        ("b.txt", "0 0.5 nan 0.1 0.1\n", &["line 1", "cy"]),
        ("b.txt", "\n0 1.5 0.5 0.1 0.1\n", &["line 2", "cx = 1.5: expected a number in [0, 1]"]),
        ("b.txt", "0 0.5 0.5 -0.1 0.1\n", &["line 1", "w = -0.1"]),
        ("b.txt", "x 0.5 0.5 0.1 0.1\n", &["line 1", "'x'"]),
        ("c.txt", "0 0.5 0.5 0.1 0.1\n", &["no image c.", "--images"]),
    ];
    for (name, content, parts) in cases {
        let p = write_file(d, name, content);
        err_names(yolo::read(&p, &opts()), name, parts);
    }
}

#[test]
fn yolo_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels");
    let mut set = sample_set();
    set.images.push(ImageAnnotations { width: Some(64), height: Some(64), ..ImageAnnotations::new("negative") });
    yolo::write(&set, &out, &WriteOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("negative.txt")).unwrap(), "");
    for img in &set.images {
        png(&out.join(format!("{}.png", img.image)), img.width.unwrap(), img.height.unwrap());
    }
    let back = yolo::read(&out, &opts()).unwrap();
    // read sorts by file name: A00_01, negative, slide_2
    let mut sorted = set.clone();
    sorted.images.sort_by(|a, b| a.image.cmp(&b.image));
    assert_same_objects(&sorted, &back, 0.01);
    let b = back.images[0].objects[2].bbox.unwrap();
    assert!((b.x_min - 100.0).abs() < 0.01 && (b.y_max - 170.0).abs() < 0.01);

    let mut no_size = sample_set();
    no_size.images[1].width = None;
    let e = yolo::write(&no_size, &dir.path().join("x"), &WriteOptions::default()).unwrap_err();
    assert!(matches!(e, FormatError::Unsupported { .. }) && e.to_string().contains("slide_2"), "{e}");
}

// ---------------------------------------------------------------- GeoJSON

#[test]
fn geojson_round_trip_points_and_polygons() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = sample_set();
    let px: Vec<(u32, u32)> = (10..20).flat_map(|x| (30..36).map(move |y| (x, y))).collect();
    set.images[1].objects.push(Annotation::from_shape(Shape::Pixels(px), ObjectClass::Mitosis).unwrap());

    let file = dir.path().join("all.geojson");
    geojson::write(&set, &file, &WriteOptions::default()).unwrap();
    assert_eq!(detect_format(&file).unwrap(), Format::GeoJson);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(r#""classification":{"color":[220,30,30],"name":"Mitosis"}"#)
            || text.contains(r#""name":"Mitosis""#),
        "{text}"
    );
    let back = geojson::read(&file, &opts()).unwrap();
    assert_same_objects(&set, &back, 1e-9);
    // Written in QuPath's convention: the first point's pixel centre is at +0.5.
    let first = &set.images.iter().find(|i| !i.objects.is_empty()).unwrap().objects[0].centroid;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let coords = &json["features"][0]["geometry"]["coordinates"];
    assert_eq!((coords[0].as_f64().unwrap(), coords[1].as_f64().unwrap()), (first.x + 0.5, first.y + 0.5));

    let polys = WriteOptions { polygons: true, ..Default::default() };
    let folder = dir.path().join("per-image");
    geojson::write(&set, &folder, &polys).unwrap();
    assert!(folder.join("A00_01.geojson").is_file() && folder.join("slide_2.geojson").is_file());
    let back = geojson::read(&folder, &opts()).unwrap();
    assert_same_objects(&set, &back, 1e-9);
    let rect = &back.images[1].objects[1];
    assert!(matches!(rect.shape, Some(Shape::Polygon(ref p)) if p.area() == 60.0), "{:?}", rect.shape);
}

#[test]
fn geojson_reads_qupath_exports() {
    let dir = tempfile::tempdir().unwrap();
    // A plain array of features, as QuPath exports "features as array".
    let arr = r#"[
      {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
       "properties": {"objectType": "annotation", "classification": {"name": "Mitosis", "colorRGB": -65536}}},
      {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0,0],[4,0],[4,4],[0,4],[0,0]]]},
       "properties": {"classification": "Non-mitosis", "measurements": [{"name": "score", "value": 0.3}]}},
      {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[[[0,0],[1,0],[1,1],[0,0]]], [[[10,10],[20,10],[20,20],[10,20],[10,10]]]]},
       "properties": {"class": "mitotic figure"}},
      {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0,0],[1,1]]}, "properties": null}
    ]"#;
    let p = write_file(dir.path(), "HPF_3.json", arr);
    assert_eq!(detect_format(&p).unwrap(), Format::GeoJson);
    let set = geojson::read(&p, &opts()).unwrap();
    assert_eq!(set.images.len(), 1);
    let img = &set.images[0];
    assert_eq!(img.image, "HPF_3");
    assert_eq!(img.objects.len(), 4);
    // QuPath's corner-based coordinates move by half a pixel onto our pixel centres.
    assert_eq!(img.objects[1].centroid, Point::new(2.5, 3.5));
    assert_eq!(img.objects[2].class, ObjectClass::NonMitosis);
    assert_eq!(img.objects[2].score, Some(0.3));
    // The MultiPolygon is one object of both parts: a triangle of area 0.5 and a 10x10 square.
    let Some(Shape::MultiPolygon(parts)) = &img.objects[3].shape else { panic!("{:?}", img.objects[3].shape) };
    assert_eq!(parts.len(), 2);
    assert_eq!(img.objects[3].shape.as_ref().unwrap().area_px(), 100.5);
    let expected_x = (0.5 * (1.0 / 6.0) + 100.0 * 14.5) / 100.5;
    assert!((img.objects[3].centroid.x - expected_x).abs() < 1e-9, "area-weighted: {:?}", img.objects[3].centroid);
    assert_eq!(set.inconsistencies.len(), 1, "the LineString is reported");

    let single =
        r#"{"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}, "properties": {"image": "X"}}"#;
    let p = write_file(dir.path(), "one.geojson", single);
    let set = geojson::read(&p, &opts()).unwrap();
    assert_eq!(set.images[0].image, "X");
    assert_eq!(set.count(ObjectClass::Mitosis), 1);

    // `name` is free text in QuPath: a class only when it reads as one.
    let named = r#"{"type": "FeatureCollection", "features": [
      {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}, "properties": {"name": "Annotation 3"}},
      {"type": "Feature", "geometry": {"type": "Point", "coordinates": [7, 8]}, "properties": {"name": "hard negative"}}]}"#;
    let p = write_file(dir.path(), "named.geojson", named);
    let set = geojson::read(&p, &opts()).unwrap();
    assert_eq!((set.count(ObjectClass::Mitosis), set.count(ObjectClass::NonMitosis)), (1, 1));
}

#[test]
fn geojson_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "trunc.geojson",
            r#"{"type": "FeatureCollection", "features": [{"type": "Feature","#,
            &["line 1", "invalid JSON"],
        ),
        (
            "cls.geojson",
            r#"{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {"classification": {"name": "Tumor"}}}]}"#,
            &["feature 0", "'Tumor'"],
        ),
        (
            "pos.geojson",
            r#"[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1]}, "properties": {}}]"#,
            &[],
        ),
        ("geom.geojson", r#"{"type": "Point", "coordinates": [1, 2]}"#, &["bare geometry"]),
        ("other.geojson", r#"{"hello": 1}"#, &["not GeoJSON"]),
    ];
    for (name, content, parts) in cases {
        let p = write_file(dir.path(), name, content);
        err_names(geojson::read(&p, &opts()), name, parts);
    }
}

/// MIDOG++ boxes hang over the border; every centre read must still lie in
/// its image, so that converting to CSV gives a file our CSV reader accepts.
#[test]
fn midog_plus_plus_centres_inside_images_and_convert_to_csv() {
    let dir = mitoscope_testdata::require_data!("formats");
    let set = mitoscope_formats::read(&dir.join("MIDOG++.json"), None, &ReadOptions::default()).unwrap();
    for img in &set.images {
        let (w, h) = (img.width.unwrap() as f64, img.height.unwrap() as f64);
        for o in &img.objects {
            assert!(o.centroid.x >= 0.0 && o.centroid.y >= 0.0 && o.centroid.x < w && o.centroid.y < h);
        }
    }
    let moved = set.inconsistencies.iter().filter(|i| i.message.contains("outside the image")).count();
    assert!(moved > 0, "MIDOG++ has centres outside their images; they must be reported");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("all.csv");
    mitoscope_formats::write(&set, &out, Format::Csv, &WriteOptions::default()).unwrap();
    let back = mitoscope_formats::read(&out, None, &ReadOptions::default()).unwrap();
    assert_eq!(back.object_count(), 26286);
}

#[test]
fn per_image_files_stay_in_their_folder_whatever_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = AnnotationSet::default();
    for id in ["../escape", "/abs/olute", "plain"] {
        let img = set.image_mut_or_insert(id);
        img.width = Some(100);
        img.height = Some(100);
        img.objects.push(Annotation::point(Point::new(10.0, 10.0), ObjectClass::Mitosis));
    }
    let wopts = WriteOptions { mpp: Some(Mpp::new(0.25).unwrap()), polygons: false };
    for (format, ext) in [
        (Format::Yolo, "txt"),
        (Format::MidogPoints, "json"),
        (Format::GeoJson, "geojson"),
        (Format::Voc, "xml"),
        (Format::Asap, "xml"),
    ] {
        let out = dir.path().join("nested").join(format.name());
        mitoscope_formats::write(&set, &out, format, &wopts).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            [format!(".._escape.{ext}"), format!("_abs_olute.{ext}"), format!("plain.{ext}")],
            "{format}"
        );
    }
    assert!(!dir.path().join("nested/escape.txt").exists() && !std::path::Path::new("/abs").exists());
    // Ids that differ only where characters become `_` would share a file: refused before writing.
    let mut clash = AnnotationSet::default();
    clash.image_mut_or_insert("a/b");
    clash.image_mut_or_insert("a_b");
    let out = dir.path().join("clash");
    let err = mitoscope_formats::write(&clash, &out, Format::Yolo, &wopts).unwrap_err().to_string();
    assert!(err.contains("a_b.txt") && err.contains("unique"), "{err}");
    assert!(!out.exists(), "nothing written");
}
