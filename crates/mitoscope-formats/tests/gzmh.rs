//! GZMH-like dataset reading: every layout variant on synthetic trees, bad
//! input, and the real ICPR 2012 mask patches.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use mitoscope_annotations::{AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_formats::{FormatError, ReadOptions, gzmh};
use mitoscope_geom::{BBox, Point};

const W: u32 = 64;
const H: u32 = 48;

/// A filled rectangle in a mask: left, top, width, height.
type Blob = (u32, u32, u32, u32);
const A: Blob = (5, 6, 4, 3); // centroid (6.5, 7), box [5, 6, 8, 8]
const B: Blob = (30, 20, 5, 5); // centroid (32, 22), box [30, 20, 34, 24]

fn centre(b: Blob) -> Point {
    Point::new(b.0 as f64 + (b.2 - 1) as f64 / 2.0, b.1 as f64 + (b.3 - 1) as f64 / 2.0)
}

fn bbox(b: Blob) -> BBox {
    BBox::new(b.0 as f64, b.1 as f64, (b.0 + b.2 - 1) as f64, (b.1 + b.3 - 1) as f64).unwrap()
}

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png).unwrap();
    out
}

fn he_image(w: u32, h: u32) -> Vec<u8> {
    png(RgbImage::from_pixel(w, h, Rgb([200, 120, 180])).into())
}

/// A grey mask with `fg` inside the blobs.
fn mask(w: u32, h: u32, blobs: &[Blob], fg: u8) -> Vec<u8> {
    let m = GrayImage::from_fn(w, h, |x, y| Luma([if blobs.iter().any(|b| in_blob(*b, x, y)) { fg } else { 0 }]));
    png(m.into())
}

/// An RGB mask with a coloured foreground.
fn rgb_mask(w: u32, h: u32, blobs: &[Blob]) -> Vec<u8> {
    let m = RgbImage::from_fn(w, h, |x, y| {
        Rgb(if blobs.iter().any(|b| in_blob(*b, x, y)) { [0, 0, 90] } else { [0, 0, 0] })
    });
    png(m.into())
}

fn in_blob(b: Blob, x: u32, y: u32) -> bool {
    x >= b.0 && x < b.0 + b.2 && y >= b.1 && y < b.1 + b.3
}

/// Writes files (relative path, bytes) under a fresh temp dir.
fn tree(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, bytes) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    dir
}

fn zip_of(files: &[(&str, Vec<u8>)], at: &Path) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(at).unwrap());
    for (rel, bytes) in files {
        z.start_file(*rel, zip::write::SimpleFileOptions::default()).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn read(path: &Path) -> AnnotationSet {
    gzmh::read(path, &ReadOptions::default()).unwrap()
}

fn img<'a>(set: &'a AnnotationSet, id: &str) -> &'a ImageAnnotations {
    set.image(id)
        .unwrap_or_else(|| panic!("no image {id} in {:?}", set.images.iter().map(|i| &i.image).collect::<Vec<_>>()))
}

fn problems(set: &AnnotationSet) -> String {
    set.inconsistencies.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn assert_mask_objects(i: &ImageAnnotations, blobs: &[Blob]) {
    assert_eq!(i.objects.len(), blobs.len(), "{}: {:?}", i.image, i.objects);
    for (o, b) in i.objects.iter().zip(blobs) {
        assert_eq!(o.centroid, centre(*b));
        assert_eq!(o.bbox, Some(bbox(*b)));
        assert_eq!(o.shape.as_ref().map(|s| s.area_px() as u32), Some(b.2 * b.3));
        assert_eq!(o.class, ObjectClass::Mitosis);
    }
}

#[test]
fn sibling_masks_folder_with_an_empty_mask() {
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("images/b.png", he_image(W, H)),
        ("masks/a.png", mask(W, H, &[A, B], 255)),
        ("masks/b.png", mask(W, H, &[], 255)),
    ]);
    let set = read(d.path());
    assert_eq!(set.images.len(), 2);
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let a = img(&set, "a");
    assert_mask_objects(a, &[A, B]);
    assert_eq!((a.width, a.height, a.subset.as_deref()), (Some(W), Some(H), None));
    assert_eq!(a.path.as_deref(), Some(d.path().join("images/a.png").as_path()));
    assert_eq!(a.mask_path.as_deref(), Some(d.path().join("masks/a.png").as_path()));
    assert!(img(&set, "b").objects.is_empty(), "an all-black mask is a mitosis-free HPF");
    let layout = gzmh::detect_layout(d.path()).unwrap();
    assert_eq!((layout.images, layout.masks, layout.mask_dirs.clone()), (2, 2, vec!["masks".to_owned()]));
    let text = layout.to_string();
    assert!(
        text.contains("2 images in images")
            && text.contains("2 masks in masks (same stem)")
            && text.contains("no label files"),
        "{text}"
    );
}

#[test]
fn an_instance_map_keeps_touching_figures_apart() {
    // Two figures side by side, sharing an edge, numbered 1 and 2; a third
    // apart, numbered 3. Read as binary, the first two would be one.
    const L: Blob = (10, 10, 4, 4);
    const R: Blob = (14, 10, 3, 4);
    let labels = GrayImage::from_fn(W, H, |x, y| {
        Luma([[L, R, B].iter().position(|b| in_blob(*b, x, y)).map_or(0, |i| i as u8 + 1)])
    });
    let coloured = RgbImage::from_fn(W, H, |x, y| match labels.get_pixel(x, y).0[0] {
        0 => Rgb([0, 0, 0]),
        1 => Rgb([200, 0, 0]),
        2 => Rgb([0, 200, 0]),
        _ => Rgb([0, 0, 200]),
    });
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("masks/a.png", png(labels.into())),
        ("images/b.png", he_image(W, H)),
        ("masks/b.png", png(coloured.into())),
        ("images/c.png", he_image(W, H)),
        ("masks/c.png", mask(W, H, &[L, R, B], 255)),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    assert_mask_objects(img(&set, "a"), &[L, R, B]);
    assert_mask_objects(img(&set, "b"), &[L, R, B]);
    assert_eq!(img(&set, "c").objects.len(), 2, "a binary mask cannot tell them apart");
}

#[test]
fn mask_suffix_beside_image_and_rgb_masks() {
    let d = tree(&[("hpf/a.png", he_image(W, H)), ("hpf/a_mask.png", rgb_mask(W, H, &[B]))]);
    let set = read(d.path());
    assert_eq!(set.images.len(), 1, "the mask is not an image");
    assert_mask_objects(img(&set, "a"), &[B]);
    assert_eq!(gzmh::detect_layout(d.path()).unwrap().mask_suffixes, vec!["_mask".to_owned()]);
}

#[test]
fn zero_one_masks_in_a_gt_folder_and_min_pixels() {
    let d = tree(&[("img/a.png", he_image(W, H)), ("GT/a.png", mask(W, H, &[A, B], 1))]);
    assert_mask_objects(img(&read(d.path()), "a"), &[A, B]);
    let opts = ReadOptions { min_mask_pixels: 20, ..Default::default() };
    let set = gzmh::read(d.path(), &opts).unwrap();
    assert_mask_objects(img(&set, "a"), &[B]);
}

#[test]
fn an_image_named_like_a_mask_without_its_image_is_an_image() {
    // `case_gt.png` in images/ has no `case.png`: it is an HPF, not a mask.
    let d = tree(&[
        ("images/case_gt.png", he_image(W, H)),
        ("images/other.png", he_image(W, H)),
        ("masks/case_gt.png", mask(W, H, &[A], 255)),
        ("masks/other.png", mask(W, H, &[B], 255)),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    assert_mask_objects(img(&set, "case_gt"), &[A]);
    assert_mask_objects(img(&set, "other"), &[B]);
}

#[test]
fn stray_pixels_are_specks_not_mitoses() {
    // Two figures and two lone pixels (one a diagonal pair: 8-connected, 2 px).
    let m = GrayImage::from_fn(W, H, |x, y| {
        let on = [A, B].iter().any(|b| in_blob(*b, x, y)) || (x, y) == (50, 40) || [(60, 5), (61, 6)].contains(&(x, y));
        Luma([if on { 255 } else { 0 }])
    });
    let d = tree(&[("images/s.png", he_image(W, H)), ("masks/s.png", png(m.into()))]);
    let set = read(d.path());
    assert_mask_objects(img(&set, "s"), &[A, B]);
    let all = problems(&set);
    assert!(all.contains("2 components under 5 px left out as specks") && all.contains("(60.5, 5.5)"), "{all}");
}

#[test]
fn headered_csv_labels_merge_with_the_mask() {
    let csv = format!("centroid_y,centroid_x,xmin,ymin,xmax,ymax\n{},{},5,6,8,8\n22,32,30,20,34,24\n", 7.5, 6.0);
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("masks/a.png", mask(W, H, &[A, B], 255)),
        ("labels/a.csv", csv.into_bytes()),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let a = img(&set, "a");
    assert_eq!(a.objects.len(), 2, "one object per mitosis, not one per source");
    assert_eq!(a.objects[0].centroid, Point::new(6.0, 7.5), "the label's centroid is kept");
    assert_eq!(a.objects[0].bbox, Some(bbox(A)));
    assert!(a.objects.iter().all(|o| o.shape.is_some()), "the mask's shape is kept");
    let text = gzmh::detect_layout(d.path()).unwrap().to_string();
    assert!(text.contains("labels: 1 csv files per image in labels"), "{text}");
}

#[test]
fn a_mitosis_in_two_masses_with_one_label_is_one_object() {
    // Telophase: two masses 6 px apart, one minimum bounding rectangle around
    // both and the centroid between them; B is an ordinary mitosis.
    let left: Blob = (5, 30, 4, 5);
    let right: Blob = (15, 31, 4, 5);
    let csv = "xmin,ymin,xmax,ymax,cx,cy\n5,30,18,35,11.5,32.5\n30,20,34,24,32,22\n";
    let d = tree(&[
        ("images/t.png", he_image(W, H)),
        ("masks/t.png", mask(W, H, &[left, right, B], 255)),
        ("labels/t.csv", csv.as_bytes().to_vec()),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let t = img(&set, "t");
    assert_eq!(t.objects.len(), 2, "{:?}", t.objects);
    let fig = t.objects.iter().find(|o| o.centroid.x < 20.0).expect("the two-mass figure");
    assert_eq!(fig.centroid, Point::new(11.5, 32.5));
    assert_eq!(fig.shape.as_ref().map(|s| s.area_px() as u32), Some(40), "both masses are its shape");
    // Written as GeoJSON, the figure is one feature of two parts.
    let out = d.path().join("t.geojson");
    let opts = mitoscope_formats::WriteOptions { polygons: true, ..Default::default() };
    mitoscope_formats::geojson::write(&set, &out, &opts).unwrap();
    let geo = std::fs::read_to_string(out).unwrap();
    assert_eq!(geo.matches("MultiPolygon").count(), 1, "{geo}");
}

#[test]
fn rotated_rectangle_labels_with_masks() {
    // Each mitosis labelled by a rotated rectangle's corners (as OpenCV's
    // boxPoints writes them) and its centroid: 10 numbers, no header.
    let csv = "3,7,7,3,11,7,7,11,6.5,7\n26,22,32,16,38,22,32,28,32,22\n";
    let d = tree(&[
        ("images/r.png", he_image(W, H)),
        ("masks/r.png", mask(W, H, &[A, B], 255)),
        ("labels/r.txt", csv.as_bytes().to_vec()),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    assert_mask_objects(img(&set, "r"), &[A, B]);
}

#[test]
fn headerless_labels_in_both_column_orders_without_masks() {
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("images/b.png", he_image(W, H)),
        ("labels/a.txt", b"5 6 8 8 6.5 7\n30 20 34 24 32 22\n".to_vec()),
        ("labels/b.txt", b"6.5,7,5,6,8,8\n32,22,30,20,34,24\n".to_vec()),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    for id in ["a", "b"] {
        let i = img(&set, id);
        assert_eq!(i.objects.len(), 2);
        assert_eq!(i.objects[0].centroid, centre(A), "{id}");
        assert_eq!(i.objects[0].bbox, Some(bbox(A)), "{id}");
        assert_eq!(i.objects[1].centroid, centre(B), "{id}");
        assert_eq!(i.objects[1].bbox, Some(bbox(B)), "{id}");
        assert_eq!(i.mask_path, None);
    }
}

fn voc_xml(name: &str, boxes: &[Blob]) -> Vec<u8> {
    let objs: String = boxes
        .iter()
        .map(|b| {
            let bb = bbox(*b);
            format!(
                "<object><name>mitosis</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>",
                bb.x_min, bb.y_min, bb.x_max, bb.y_max
            )
        })
        .collect();
    format!("<annotation><filename>{name}</filename><size><width>{W}</width><height>{H}</height><depth>3</depth></size>{objs}</annotation>")
        .into_bytes()
}

#[test]
fn voc_xml_labels_with_masks() {
    let d = tree(&[
        ("JPEGImages/a.png", he_image(W, H)),
        ("SegmentationClass/a.png", mask(W, H, &[A, B], 255)),
        ("Annotations/a.xml", voc_xml("a.png", &[A, B])),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let a = img(&set, "a");
    assert_eq!(a.subset, None, "VOC folder names are roles, not subsets");
    // VOC gives boxes only, so the centroid is the mask's centre of mass.
    assert_mask_objects(a, &[A, B]);
}

#[test]
fn json_labels() {
    let json = r#"{"objects": [{"bbox": [30, 20, 34, 24], "centroid": {"x": 32, "y": 22}, "class": "mitosis"}]}"#;
    let d = tree(&[("images/a.png", he_image(W, H)), ("annotations/a.json", json.as_bytes().to_vec())]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let a = img(&set, "a");
    assert_eq!(a.objects.len(), 1);
    assert_eq!((a.objects[0].centroid, a.objects[0].bbox), (centre(B), Some(bbox(B))));
}

#[test]
fn a_coco_file_in_the_dataset_is_read_as_coco() {
    // Image id 1 is b.png: annotations name images by id, and boxes are [x, y, w, h].
    let json = r#"{"images": [{"id": 1, "file_name": "b.png", "width": 64, "height": 48},
                              {"id": 2, "file_name": "a.png", "width": 64, "height": 48}],
                   "categories": [{"id": 1, "name": "mitotic figure"}],
                   "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 5, 5]},
                                   {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 6, 4, 3]}]}"#;
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("images/b.png", he_image(W, H)),
        ("annotations.json", json.as_bytes().to_vec()),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    // As the COCO reader reads a COCO file on its own: [x, y, w, h] -> [x, y, x + w, y + h].
    for (id, (x, y, w, h)) in [("a", A), ("b", B)] {
        let objects = &img(&set, id).objects;
        assert_eq!(objects.len(), 1, "{id}");
        let expected = BBox::new(x as f64, y as f64, (x + w) as f64, (y + h) as f64).unwrap();
        assert_eq!(objects[0].bbox, Some(expected), "{id}");
    }
}

/// GZMH V2-like: a wrapping folder, train and two nested test sets, stems
/// repeated across splits.
fn v2_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("GZMH_V2/train/images/001.png", he_image(W, H)),
        ("GZMH_V2/train/masks/001.png", mask(W, H, &[A], 255)),
        ("GZMH_V2/train/images/002.png", he_image(W, H)),
        ("GZMH_V2/train/masks/002.png", mask(W, H, &[], 255)),
        ("GZMH_V2/test/test_1or2_score/images/001.png", he_image(W, H)),
        ("GZMH_V2/test/test_1or2_score/masks/001.png", mask(W, H, &[A, B], 255)),
        ("GZMH_V2/test/test_3_score/images/001.png", he_image(W, H)),
        ("GZMH_V2/test/test_3_score/masks/001.png", mask(W, H, &[B], 255)),
        ("GZMH_V2/README.txt", b"GZMH V2".to_vec()),
    ]
}

fn check_v2(set: &AnnotationSet) {
    assert!(set.inconsistencies.is_empty(), "{}", problems(set));
    assert_eq!(set.images.len(), 4);
    let by_subset: Vec<(Option<&str>, usize)> =
        set.images.iter().map(|i| (i.subset.as_deref(), i.objects.len())).collect();
    assert_eq!(
        by_subset,
        vec![(Some("test_1or2_score"), 2), (Some("test_3_score"), 1), (Some("train"), 1), (Some("train"), 0)]
    );
    assert_eq!(img(set, "002").objects.len(), 0, "a unique stem stays the identifier");
    assert_mask_objects(img(set, "GZMH_V2/test/test_3_score/images/001"), &[B]);
    assert_eq!(set.subsets().len(), 3);
}

#[test]
fn v2_split_folders_become_subsets() {
    let d = tree(&v2_files());
    check_v2(&read(d.path()));
    let text = gzmh::detect_layout(d.path()).unwrap().to_string();
    assert!(text.contains("subsets: test_1or2_score, test_3_score, train"), "{text}");
}

#[test]
fn alike_named_images_keep_their_ids_through_csv_and_coco() {
    // The ids of `001.png` in three splits carry their folders; written out
    // and read back, they must not fall back to a bare `001` (one image).
    let d = tree(&v2_files());
    let set = read(d.path());
    let ids = |s: &AnnotationSet| {
        let mut v: Vec<(String, usize)> = s.images.iter().map(|i| (i.image.clone(), i.objects.len())).collect();
        v.retain(|(_, n)| *n > 0);
        v.sort();
        v
    };
    for name in ["out.csv", "out.json"] {
        let out = d.path().join(name);
        let format = mitoscope_formats::format_for_output(&out).unwrap();
        mitoscope_formats::write(&set, &out, format, &Default::default()).unwrap();
        let back = mitoscope_formats::read(&out, None, &ReadOptions::default()).unwrap();
        assert_eq!(ids(&back), ids(&set), "{name}");
    }
}

#[test]
fn zip_reads_like_the_folder() {
    let d = tempfile::tempdir().unwrap();
    let z = d.path().join("GZMH_V2.zip");
    zip_of(&v2_files(), &z);
    let set = read(&z);
    check_v2(&set);
    let i = img(&set, "GZMH_V2/test/test_3_score/images/001");
    assert_eq!(i.path.as_deref(), Some(z.join("GZMH_V2/test/test_3_score/images/001.png").as_path()));
    assert_eq!((i.width, i.height), (Some(W), Some(H)));
    let layout = gzmh::detect_layout(&z).unwrap();
    assert!(layout.archive && layout.to_string().starts_with("zip "), "{layout}");
    // The dispatcher sends a .zip here too.
    assert_eq!(mitoscope_formats::read(&z, None, &ReadOptions::default()).unwrap().images.len(), 4);
}

#[test]
fn dataset_level_csv_labels_many_images() {
    let csv = "filename,cx,cy,xmin,ymin,xmax,ymax\na.png,6.5,7,5,6,8,8\nb.png,32,22,30,20,34,24\nb.png,6.5,7,5,6,8,8\nghost.png,1,1,0,0,2,2\n";
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("images/b.png", he_image(W, H)),
        ("images/c.png", he_image(W, H)),
        ("labels.csv", csv.as_bytes().to_vec()),
    ]);
    let set = read(d.path());
    assert_eq!([img(&set, "a").objects.len(), img(&set, "b").objects.len(), img(&set, "c").objects.len()], [1, 2, 0]);
    assert_eq!(img(&set, "b").objects[0].centroid, centre(B));
    assert_eq!(set.inconsistencies.len(), 1, "{}", problems(&set));
    assert!(set.inconsistencies[0].message.contains("'ghost.png'"), "{}", problems(&set));
    assert_eq!(gzmh::detect_layout(d.path()).unwrap().dataset_label_files, vec!["labels.csv".to_owned()]);
}

#[test]
fn a_label_file_in_a_split_speaks_for_that_split() {
    // Every split has a 001.png; the test sets are labelled by a labels.csv
    // each, train by masks alone.
    let labels = |rows: &str| format!("image,xmin,ymin,xmax,ymax,cx,cy\n{rows}").into_bytes();
    let d = tree(&[
        ("GZMH/train/images/001.png", he_image(W, H)),
        ("GZMH/train/masks/001.png", mask(W, H, &[A, B], 255)),
        ("GZMH/test_1or2_score/images/001.png", he_image(W, H)),
        ("GZMH/test_1or2_score/images/002.png", he_image(W, H)),
        ("GZMH/test_1or2_score/labels.csv", labels("001.png,30,20,34,24,32,22\n")),
        ("GZMH/test_3_score/images/001.png", he_image(W, H)),
        ("GZMH/test_3_score/annotations/labels.csv", labels("001.png,5,6,8,8,6.5,7\n001.png,30,20,34,24,32,22\n")),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "no unlabelled-component noise for train: {}", problems(&set));
    let count = |id: &str| img(&set, id).objects.len();
    assert_eq!(count("GZMH/train/images/001"), 2);
    assert_eq!(count("GZMH/test_1or2_score/images/001"), 1);
    assert_eq!(count("GZMH/test_3_score/images/001"), 2);
    let free = img(&set, "002");
    assert!(free.objects.is_empty() && free.unusable.is_none(), "its split's file lists no mitosis for it");
}

#[test]
fn dataset_level_files_without_a_header_or_keyed_by_image() {
    let images = || vec![("images/a.png", he_image(W, H)), ("images/b.png", he_image(W, H))];
    let expect = |set: &AnnotationSet, what: &str| {
        assert!(set.inconsistencies.is_empty(), "{what}: {}", problems(set));
        assert_eq!(img(set, "a").objects.len(), 1, "{what}");
        assert_eq!(img(set, "b").objects.len(), 2, "{what}");
        assert_eq!(img(set, "a").objects[0].centroid, centre(A), "{what}");
    };
    let files = [
        ("labels.csv", "a.png,5,6,8,8,6.5,7\nb.png,30,20,34,24,32,22\nb.png,5,6,8,8,6.5,7\n"),
        (
            "labels.json",
            r#"{"a.png": [{"bbox": [5, 6, 8, 8], "centroid": [6.5, 7]}],
                "b.png": [{"centroid": [32, 22]}, {"centroid": [6.5, 7]}]}"#,
        ),
        (
            "labels.json",
            r#"{"images": [{"file_name": "a.png", "mitoses": [{"centroid": [6.5, 7]}]},
                           {"file_name": "b.png", "mitoses": [{"centroid": [32, 22]}, {"centroid": [6.5, 7]}]}]}"#,
        ),
    ];
    for (name, text) in files {
        let mut all = images();
        all.push((name, text.as_bytes().to_vec()));
        expect(&read(tree(&all).path()), text);
    }
}

#[test]
fn a_root_label_file_speaks_only_for_the_subsets_it_names() {
    // labels.csv lists train's mitoses only: test has no annotation, not no mitoses;
    // train/labels.csv cannot label test's image.
    let d = tree(&[
        ("train/images/001.png", he_image(W, H)),
        ("train/images/002.png", he_image(W, H)),
        ("test/images/101.png", he_image(W, H)),
        ("labels.csv", b"image,cx,cy\n001.png,6.5,7\n".to_vec()),
        ("train/labels.csv", b"image,cx,cy\n101.png,32,22\n".to_vec()),
    ]);
    let set = read(d.path());
    assert_eq!(img(&set, "001").objects.len(), 1);
    assert!(img(&set, "002").objects.is_empty() && img(&set, "002").unusable.is_none(), "train is annotated");
    let test = img(&set, "101");
    assert!(test.objects.is_empty() && test.unusable.is_some(), "{test:?}");
    let all = problems(&set);
    assert!(all.contains("labels image '101.png', which is not in the dataset under train/"), "{all}");
}

#[test]
fn a_subset_column_tells_alike_named_images_apart() {
    let csv = "split,image,cx,cy\ntrain,001.png,6.5,7\ntest_3_score,001.png,32,22\ntest_3_score,001.png,6.5,7\n";
    let d = tree(&[
        ("GZMH/train/images/001.png", he_image(W, H)),
        ("GZMH/test/test_3_score/images/001.png", he_image(W, H)),
        ("GZMH/labels.csv", csv.as_bytes().to_vec()),
    ]);
    let set = read(d.path());
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    assert_eq!(img(&set, "GZMH/train/images/001").objects.len(), 1);
    assert_eq!(img(&set, "GZMH/test/test_3_score/images/001").objects.len(), 2);
}

#[test]
fn disagreements_are_reported_not_fatal() {
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("masks/a.png", mask(W, H, &[A, B], 255)),
        // A's centroid is off its component; B's box is far too big; a third label has no component.
        (
            "labels/a.csv",
            b"cx,cy,xmin,ymin,xmax,ymax\n9.5,9.5,5,6,9.5,9.5\n32,22,20,10,60,44\n50,40,48,38,52,42\n".to_vec(),
        ),
        ("images/small.png", he_image(W, H)),
        ("masks/small.png", mask(W / 2, H, &[A], 255)),
        ("labels/orphan.csv", b"cx,cy\n1,1\n".to_vec()),
        ("masks/lonely.png", mask(W, H, &[A], 255)),
    ]);
    let set = read(d.path());
    assert_eq!(set.images.len(), 2);
    let all = problems(&set);
    let expect = [
        "a: label centroid (9.5, 9.5)",
        "outside its mask component (component centroid (6.5, 7), box [5, 6, 8, 8])",
        "label box [20, 10, 60, 44]",
        "disagrees with its mask component's minimum bounding rectangle [30, 20, 34, 24]",
        "a: label at (50, 40)",
        &format!(
            "mask {} is 32x48, image {} is 64x48 (mask ignored)",
            d.path().join("masks/small.png").display(),
            d.path().join("images/small.png").display()
        ),
        "label file labels/orphan.csv matches no image",
        "mask masks/lonely.png matches no image",
    ];
    for e in expect {
        assert!(all.contains(e), "missing '{e}' in:\n{all}");
    }
    assert_eq!(set.inconsistencies.len(), 6, "{all}");
    assert_eq!(img(&set, "a").objects.len(), 3, "labelled objects are kept even when they disagree");
    let small = img(&set, "small");
    assert!(small.objects.is_empty() && small.width == Some(W), "the wrong-size mask is ignored, the image kept");
    // ... but not as an image without mitoses: nothing else lists its mitoses.
    assert!(small.unusable.as_deref().is_some_and(|w| w.contains("could not be used")), "{:?}", small.unusable);
    assert!(img(&set, "a").unusable.is_none());
}

#[test]
fn an_inverted_mask_is_not_one_huge_mitosis() {
    // Figures black on white (and a white, fully opaque RGBA background reads the same).
    let inverted = png(GrayImage::from_fn(W, H, |x, y| Luma([if in_blob(A, x, y) { 0 } else { 255 }])).into());
    let d = tree(&[
        ("images/a.png", he_image(W, H)),
        ("masks/a.png", inverted),
        ("images/b.png", he_image(W, H)),
        ("masks/b.png", mask(W, H, &[A], 255)),
    ]);
    let set = read(d.path());
    let all = problems(&set);
    assert!(all.contains("covers 100% of the mask") && all.contains("inverted"), "{all}");
    let a = img(&set, "a");
    assert!(a.objects.is_empty() && a.unusable.is_some(), "{:?}", a.objects.len());
    assert_mask_objects(img(&set, "b"), &[A]);
}

#[test]
fn empty_folder_is_a_clear_error() {
    let d = tree(&[("notes.md", b"nothing".to_vec())]);
    let err = gzmh::read(d.path(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, FormatError::UnknownFormat { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no images found") && msg.contains(&d.path().display().to_string()) && msg.contains("png/jpg"),
        "{msg}"
    );
    let err = gzmh::read(&d.path().join("missing"), &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn images_without_masks_or_labels_are_not_read_as_mitosis_free() {
    let d = tree(&[("images/A00_00.png", he_image(8, 8)), ("images/A00_01.png", he_image(8, 8))]);
    let err = gzmh::read(d.path(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, FormatError::UnknownFormat { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("2 images but no masks and no label files") && msg.contains(&d.path().display().to_string()),
        "{msg}"
    );
    // One label file is enough to make the others labelled mitosis-free.
    let d = tree(&[
        ("images/A00_00.png", he_image(8, 8)),
        ("images/A00_01.png", he_image(8, 8)),
        ("labels/A00_00.csv", b"cx,cy\n4,4\n".to_vec()),
    ]);
    let set = read(d.path());
    let mitoses: Vec<usize> = set.images.iter().map(|i| i.objects.len()).collect();
    assert_eq!(mitoses, vec![1, 0]);
}

#[test]
fn a_split_without_masks_or_labels_is_unannotated_not_mitosis_free() {
    // test_3_score shipped without its masks; in train one empty field has no mask file.
    let d = tree(&[
        ("train/images/a.png", he_image(W, H)),
        ("train/masks/a.png", mask(W, H, &[A], 255)),
        ("train/images/b.png", he_image(W, H)),
        ("test_3_score/images/c.png", he_image(W, H)),
        ("test_3_score/images/e.png", he_image(W, H)),
    ]);
    let set = read(d.path());
    for id in ["c", "e"] {
        let why = img(&set, id).unusable.clone().unwrap_or_default();
        assert!(why.contains("subset test_3_score has no masks and no label files"), "{id}: {why}");
    }
    assert!(img(&set, "a").unusable.is_none() && img(&set, "b").unusable.is_none(), "train is annotated");
    let reported: Vec<String> = set.inconsistencies.iter().map(ToString::to_string).collect();
    assert_eq!(reported.len(), 1, "one line for the subset: {reported:?}");
    assert!(reported[0].contains("none of its 2 images"), "{reported:?}");
}

#[test]
fn archives_inside_are_named_when_no_image_is_found() {
    let d = tempfile::tempdir().unwrap();
    let inner = d.path().join("GZMH.zip");
    zip_of(&v2_files(), &inner);
    let outer = d.path().join("release.zip");
    zip_of(&[("release/GZMH.zip", std::fs::read(&inner).unwrap())], &outer);
    let err = gzmh::read(&outer, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("release/GZMH.zip") && err.contains("give an inner .zip itself"), "{err}");
    // The inner archive itself reads.
    check_v2(&read(&inner));
}

/// A zip of stored entries whose names are raw bytes, without the UTF-8
/// flag: as Windows' own zip writes them in a Chinese locale (GBK).
fn zip_with_raw_names(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let (crc, size, name_len) = (crc32(data), data.len() as u32, name.len() as u16);
        // Local header: version 20, no flags, stored, no time.
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20u16, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
        out.extend([crc, size, size].iter().flat_map(|v| v.to_le_bytes()));
        out.extend([name_len, 0].iter().flat_map(|v| v.to_le_bytes()));
        out.extend(name);
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20u16, 20, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
        central.extend([crc, size, size].iter().flat_map(|v| v.to_le_bytes()));
        central.extend([name_len, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
        central.extend([0u32, offset].iter().flat_map(|v| v.to_le_bytes()));
        central.extend(name);
    }
    let (cd_offset, cd_size, n) = (out.len() as u32, central.len() as u32, entries.len() as u16);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u16, 0, n, n].iter().flat_map(|v| v.to_le_bytes()));
    out.extend([cd_size, cd_offset].iter().flat_map(|v| v.to_le_bytes()));
    out.extend(0u16.to_le_bytes());
    out
}

#[test]
fn zip_names_in_gbk_read_as_the_unzipped_folder_names() {
    // "训练集" (training set) in GBK, as a Chinese Windows zip stores it.
    let gbk_train: &[u8] = &[0xD1, 0xB5, 0xC1, 0xB7, 0xBC, 0xAF];
    let name = |rest: &str| [gbk_train, rest.as_bytes()].concat();
    let d = tempfile::tempdir().unwrap();
    let z = d.path().join("GZMH.zip");
    let bytes = zip_with_raw_names(&[
        (name("/images/a.png"), he_image(W, H)),
        (name("/masks/a.png"), mask(W, H, &[A], 255)),
        ("test_3_score/images/b.png".as_bytes().to_vec(), he_image(W, H)),
        ("test_3_score/masks/b.png".as_bytes().to_vec(), mask(W, H, &[B], 255)),
    ]);
    std::fs::write(&z, bytes).unwrap();
    let set = read(&z);
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let a = img(&set, "a");
    assert_eq!(a.subset.as_deref(), Some("训练集"), "the folder reads as the user's unzip names it");
    assert_mask_objects(a, &[A]);
    assert_mask_objects(img(&set, "b"), &[B]);
}

#[test]
fn corrupt_zip_names_the_archive() {
    let d = tree(&[("broken.zip", b"PK\x03\x04 this is not really a zip".to_vec())]);
    let z = d.path().join("broken.zip");
    let err = gzmh::read(&z, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("broken.zip") && err.contains("zip"), "{err}");
}

#[test]
fn truncated_mask_and_bad_label_lines_are_reported() {
    let good_mask = mask(W, H, &[A], 255);
    let files = [
        ("images/a.png", he_image(W, H)),
        ("masks/a.png", good_mask[..good_mask.len() / 2].to_vec()),
        ("images/b.png", he_image(W, H)),
        ("labels/b.csv", b"xmin,ymin,xmax,ymax\n5,6,8,8\n5,six,8,8\n-1,2,3,4\nnan,1,2,3\n".to_vec()),
    ];
    let d = tree(&files);
    let zdir = tempfile::tempdir().unwrap();
    let z = zdir.path().join("d.zip");
    zip_of(&files, &z);
    for (root, set) in [(d.path().to_owned(), read(d.path())), (z.clone(), read(&z))] {
        let all = problems(&set);
        assert!(
            all.contains(&format!("{}", root.join("masks/a.png").display())) && all.contains("mask ignored"),
            "{all}"
        );
        let csv = root.join("labels/b.csv").display().to_string();
        for line in [3, 4, 5] {
            assert!(all.contains(&format!("{csv} line {line}")), "line {line} missing:\n{all}");
        }
        assert!(all.contains("negative") && all.contains("NaN"), "{all}");
        assert_eq!(set.inconsistencies.len(), 4, "{all}");
        assert_eq!(img(&set, "b").objects.len(), 1);
        assert!(img(&set, "a").objects.is_empty());
    }
}

#[test]
fn real_icpr_mask_patches() {
    let dir: PathBuf = mitoscope_testdata::require_data!("icpr2012/mask-patches");
    let set = read(&dir);
    assert_eq!(set.images.len(), 50);
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    let with_objects = set.images.iter().filter(|i| !i.objects.is_empty()).count();
    assert_eq!(with_objects, 20, "objects in exactly the 20 patches with foreground");
    assert!(
        set.images
            .iter()
            .all(|i| i.width == Some(256) && i.height == Some(256) && i.mask_path.is_some() && i.subset.is_none())
    );
    let text = gzmh::detect_layout(&dir).unwrap().to_string();
    assert!(text.contains("50 images in images") && text.contains("50 masks in masks"), "{text}");
}

#[test]
fn yolo_txt_beside_images_in_folder_and_zip() {
    let files = [("tiles/a.png", he_image(W, H)), ("tiles/a.txt", b"1 0.5 0.5 0.25 0.25\n0 0.1 0.2 0.05 0.1".to_vec())];
    let d = tree(&files);
    let z = d.path().join("y.zip");
    zip_of(&files, &z);
    for set in [read(&d.path().join("tiles")), read(&z)] {
        assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
        let a = img(&set, "a");
        assert_eq!(a.objects.len(), 2);
        assert_eq!(a.objects[0].bbox, Some(BBox::new(24.0, 18.0, 40.0, 30.0).unwrap()));
        assert_eq!(a.objects[0].centroid, Point::new(32.0, 24.0));
        assert_eq!((a.objects[0].class, a.objects[1].class), (ObjectClass::NonMitosis, ObjectClass::Mitosis));
    }
}

#[test]
fn real_cmc_negatives_with_yolo_labels() {
    let dir: PathBuf = mitoscope_testdata::require_data!("cmc-negatives");
    let set = read(&dir);
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    assert_eq!(set.images.len(), 3);
    assert_eq!((set.count(ObjectClass::NonMitosis), set.count(ObjectClass::Mitosis)), (14, 0));
    assert!(set.images.iter().all(|i| i.width == Some(7215) && i.height == Some(5412)));
}

#[test]
fn label_position_outside_the_image_is_reported() {
    let d = tree(&[("images/c.png", he_image(W, H)), ("labels/c.csv", b"cx,cy\n100,10\n3,4\n".to_vec())]);
    let set = read(d.path());
    assert_eq!(img(&set, "c").objects.len(), 2);
    assert_eq!(set.inconsistencies.len(), 1, "{}", problems(&set));
    assert!(
        problems(&set).contains("label at (100, 10)") && problems(&set).contains("outside the 64x48 image"),
        "{}",
        problems(&set)
    );
}

#[test]
fn zip_with_windows_separators() {
    let d = tempfile::tempdir().unwrap();
    let z = d.path().join("win.zip");
    zip_of(&[("images\\a.png", he_image(W, H)), ("masks\\a.png", mask(W, H, &[A], 255))], &z);
    let set = read(&z);
    assert!(set.inconsistencies.is_empty(), "{}", problems(&set));
    assert_mask_objects(img(&set, "a"), &[A]);
}
