//! MITOS-ATYPIA-14 labels (`<patient>/mitosis/<frame>_mitosis.csv` and
//! `_not_mitosis.csv`, `x,y,confidence` per line): detected as a file, a
//! `mitosis/` folder, a patient and the dataset; x read first, look-alikes
//! kept apart, frames found, bad input named.

use std::path::Path;

use mitoscope_annotations::{AnnotationSet, ObjectClass};
use mitoscope_formats::{Format, ReadOptions, detect_format, read};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// (image, [(x, y, class, score)]) of a set, in reading order.
type Objects = Vec<(f64, f64, ObjectClass, Option<f64>)>;
fn objects(set: &AnnotationSet) -> Vec<(String, Objects)> {
    set.images
        .iter()
        .map(|i| (i.image.clone(), i.objects.iter().map(|o| (o.centroid.x, o.centroid.y, o.class, o.score)).collect()))
        .collect()
}

/// Two patients as the release lays them out; A03_00Aa has an image.
fn dataset(root: &Path) -> std::path::PathBuf {
    let data = root.join("mitos_atypia_2014_training_aperio");
    write(&data, "A03/mitosis/A03_00Aa_mitosis.csv", "1140,1021,1\n233,75,0.65\n");
    write(&data, "A03/mitosis/A03_00Aa_not_mitosis.csv", "400,12,0.35\n");
    write(&data, "A03/mitosis/A03_00Ab_mitosis.csv", "");
    write(&data, "A03/mitosis/A03_00Ab_not_mitosis.csv", "");
    write(&data, "A04/mitosis/A04_01Ba_not_mitosis.csv", "\u{feff}7,8,0.5\n\n");
    std::fs::create_dir_all(data.join("A03/frames/x40")).unwrap();
    image::RgbImage::new(4, 4).save(data.join("A03/frames/x40/A03_00Aa.png")).unwrap();
    data
}

#[test]
fn the_dataset_its_patients_and_files_read_x_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let opts = ReadOptions::default();

    assert_eq!(detect_format(&data).unwrap(), Format::Atypia14);
    let all = read(&data, None, &opts).unwrap();
    assert_eq!(
        objects(&all),
        [
            (
                "A03_00Aa".to_string(),
                vec![
                    (1140.0, 1021.0, ObjectClass::Mitosis, Some(1.0)),
                    (233.0, 75.0, ObjectClass::Mitosis, Some(0.65)),
                    (400.0, 12.0, ObjectClass::NonMitosis, Some(0.35)),
                ]
            ),
            ("A03_00Ab".to_string(), vec![]),
            ("A04_01Ba".to_string(), vec![(7.0, 8.0, ObjectClass::NonMitosis, Some(0.5))]),
        ]
    );
    // The frame beside the labels is found, the others are absent.
    let a = all.image("A03_00Aa").unwrap();
    assert_eq!(a.path.as_deref(), Some(data.join("A03/frames/x40/A03_00Aa.png").as_path()));
    assert!(all.image("A04_01Ba").unwrap().path.is_none());

    // A patient folder and its mitosis folder read the patient's frames.
    for p in [data.join("A03"), data.join("A03/mitosis")] {
        assert_eq!(detect_format(&p).unwrap(), Format::Atypia14, "{}", p.display());
        let ids: Vec<String> = read(&p, None, &opts).unwrap().images.into_iter().map(|i| i.image).collect();
        assert_eq!(ids, ["A03_00Aa", "A03_00Ab"]);
    }
    // One file reads its frame, the other file of the frame included; an empty one is detected by name.
    let one = data.join("A03/mitosis/A03_00Aa_mitosis.csv");
    assert_eq!(detect_format(&one).unwrap(), Format::Atypia14);
    assert_eq!(objects(&read(&one, None, &opts).unwrap()), objects(&all)[..1]);
    assert_eq!(detect_format(&data.join("A03/mitosis/A03_00Ab_mitosis.csv")).unwrap(), Format::Atypia14);

    // An images folder laid out as the dataset is searched too.
    let opts = ReadOptions { images_dir: Some(dir.path().join("elsewhere")), ..ReadOptions::default() };
    std::fs::create_dir_all(dir.path().join("elsewhere/A04/frames/x40")).unwrap();
    image::RgbImage::new(4, 4).save(dir.path().join("elsewhere/A04/frames/x40/A04_01Ba.tiff")).unwrap();
    let with_images = read(&data, None, &opts).unwrap();
    assert!(with_images.image("A04_01Ba").unwrap().path.as_ref().is_some_and(|p| p.ends_with("A04_01Ba.tiff")));
}

#[test]
fn bad_labels_are_named_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let opts = ReadOptions::default();

    // A line that is not x,y,confidence: the file and line are named.
    write(&data, "A04/mitosis/A04_01Ba_mitosis.csv", "1,2,0.5\n3,4\n");
    let err = read(&data, Some(Format::Atypia14), &opts).unwrap_err().to_string();
    assert!(err.contains("A04_01Ba_mitosis.csv") && err.contains("line 2"), "{err}");
    write(&data, "A04/mitosis/A04_01Ba_mitosis.csv", "1,2,1.5\n");
    let err = read(&data, Some(Format::Atypia14), &opts).unwrap_err().to_string();
    assert!(err.contains("confidence '1.5'"), "{err}");
    write(&data, "A04/mitosis/A04_01Ba_mitosis.csv", "NaN,2,1\n");
    let err = read(&data, Some(Format::Atypia14), &opts).unwrap_err().to_string();
    assert!(err.contains("x 'NaN'"), "{err}");
    std::fs::remove_file(data.join("A04/mitosis/A04_01Ba_mitosis.csv")).unwrap();

    // The same frame labelled in two folders.
    write(&data, "A04/mitosis/A03_00Ab_mitosis.csv", "");
    let err = read(&data, None, &opts).unwrap_err().to_string();
    assert!(err.contains("'A03_00Ab' is labelled twice"), "{err}");

    // A folder without label files is not this format, and reading it as such says what is missing.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_ne!(detect_format(&empty).unwrap(), Format::Atypia14);
    let err = read(&empty, Some(Format::Atypia14), &opts).unwrap_err().to_string();
    assert!(err.contains("<frame>_mitosis.csv"), "{err}");

    // A headerless x,y,score file of another name is read by content, as one frame of mitoses.
    write(dir.path(), "points.csv", "5,6,0.9\n");
    let p = dir.path().join("points.csv");
    assert_eq!(detect_format(&p).unwrap(), Format::Atypia14);
    assert_eq!(
        objects(&read(&p, None, &opts).unwrap()),
        [("points".into(), vec![(5.0, 6.0, ObjectClass::Mitosis, Some(0.9))])]
    );
}
