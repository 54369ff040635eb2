//! TUPAC16 / AMIDA13 ground truth (`<case>/<hpf>.csv`, `row,column` per
//! line): detected as a file, a case folder and the whole folder, with y
//! read first, empty files as mitosis-free HPFs and bad lines named.

use std::path::Path;

use mitoscope_formats::{Format, ReadOptions, detect_format, read};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// (image, [(x, y)]) of a set, in reading order.
fn points(set: &mitoscope_annotations::AnnotationSet) -> Vec<(String, Vec<(f64, f64)>)> {
    set.images
        .iter()
        .map(|i| (i.image.clone(), i.objects.iter().map(|o| (o.centroid.x, o.centroid.y)).collect()))
        .collect()
}

#[test]
fn ground_truth_folders_and_files_read_row_first() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("mitoses_ground_truth");
    write(&gt, "01/01.csv", "1208,1591\n300,42\n");
    write(&gt, "01/02.csv", "");
    write(&gt, "02/01.csv", "10,20.5\n\n");
    let opts = ReadOptions::default();

    assert_eq!(detect_format(&gt).unwrap(), Format::Tupac);
    let all = read(&gt, None, &opts).unwrap();
    assert_eq!(
        points(&all),
        [
            ("01_01".to_string(), vec![(1591.0, 1208.0), (42.0, 300.0)]),
            ("01_02".to_string(), vec![]),
            ("02_01".to_string(), vec![(20.5, 10.0)]),
        ]
    );
    // A case folder and a single file give the same ids.
    assert_eq!(detect_format(&gt.join("01")).unwrap(), Format::Tupac);
    assert_eq!(read(&gt.join("01"), None, &opts).unwrap().images.len(), 2);
    let one = gt.join("01/01.csv");
    assert_eq!(detect_format(&one).unwrap(), Format::Tupac);
    assert_eq!(points(&read(&one, None, &opts).unwrap())[0].0, "01_01");

    // A case whose HPFs hold no mitosis (empty files only) is TUPAC too.
    write(&gt, "03/01.csv", "");
    write(&gt, "03/02.csv", "\n");
    assert_eq!(detect_format(&gt.join("03")).unwrap(), Format::Tupac);
    let quiet = read(&gt.join("03"), None, &opts).unwrap();
    assert_eq!(points(&quiet), [("03_01".to_string(), vec![]), ("03_02".to_string(), vec![])]);
    std::fs::remove_dir_all(gt.join("03")).unwrap();

    // No images anywhere: none recorded.
    assert!(all.images.iter().all(|i| i.path.is_none()));

    // Not TUPAC: an image among the files, or a plain CSV with a header.
    write(dir.path(), "imgs/01/01.csv", "5,6\n");
    image::RgbImage::new(4, 4).save(dir.path().join("imgs/01/01.png")).unwrap();
    assert_eq!(detect_format(&dir.path().join("imgs")).unwrap(), Format::Gzmh);
    write(dir.path(), "plain.csv", "image,x,y\nA,1,2\n");
    assert_eq!(detect_format(&dir.path().join("plain.csv")).unwrap(), Format::Csv);
}

#[test]
fn bad_ground_truth_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, needle) in [
        ("three.csv", "1,2\n1,2,3\n", "line 2"),
        ("word.csv", "12,abc\n", "column 'abc'"),
        ("negative.csv", "-4,2\n", "row '-4'"),
    ] {
        write(dir.path(), &format!("c/{name}"), text);
        let err = read(&dir.path().join("c").join(name), Some(Format::Tupac), &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
    }
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let err = read(&dir.path().join("empty"), Some(Format::Tupac), &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("no <hpf>.csv"), "{err}");
}

#[test]
fn images_are_found_beside_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("mitoses_ground_truth");
    write(&gt, "01/01.csv", "12,34\n");
    write(&gt, "01/02.csv", "");
    write(&gt, "02/01.csv", "5,6\n");
    // As the release splits them: parts of mitoses_image_data, one case each.
    let img = |rel: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::new(8, 8).save(&p).unwrap();
        p
    };
    let a = img("mitoses_image_data/part_1/01/01.tif");
    let b = img("mitoses_image_data/part_2/02/01.tif");
    let set = read(&gt, None, &ReadOptions::default()).unwrap();
    let paths: Vec<Option<&Path>> = set.images.iter().map(|i| i.path.as_deref()).collect();
    assert_eq!(paths, [Some(a.as_path()), None, Some(b.as_path())]);
    // --images names the folder; a file alone finds its image the same way.
    let elsewhere = tempfile::tempdir().unwrap();
    let c = elsewhere.path().join("01/01.png");
    std::fs::create_dir_all(c.parent().unwrap()).unwrap();
    image::RgbImage::new(8, 8).save(&c).unwrap();
    let opts = ReadOptions { images_dir: Some(elsewhere.path().to_owned()), ..ReadOptions::default() };
    let one = read(&gt.join("01/01.csv"), None, &opts).unwrap();
    assert_eq!(one.images[0].path.as_deref(), Some(c.as_path()));
}
