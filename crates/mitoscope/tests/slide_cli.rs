//! `mitoscope slide` and `mitoscope score` end to end through the binary,
//! with the tiny untrained model (the plumbing, not accuracy: the library
//! tests in mitoscope-detect check counts with a detector of known answers).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mitoscope_testdata::require_data;

fn mitoscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mitoscope")).args(args).output().expect("the binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes the tiny untrained bundle (fast on CPU) into `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    let device = mitoscope_detect::parse_device("cpu").unwrap();
    let path = dir.join("tiny.bundle");
    mitoscope_detect::fixtures::tiny_untrained_bundle(&device, 40.0).save(&path).unwrap();
    path
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn cmu_slide_end_to_end_despite_broken_slides() {
    let wsi = require_data!("wsi");
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out = tmp.path().join("out");
    let unreadable = wsi.join("openslide-fixtures/unreadable.svs");
    let unopenable = wsi.join("openslide-fixtures/unopenable.tiff");
    let cmu = wsi.join("CMU-1-Small-Region.svs");
    let run = mitoscope(&["slide", s(&unreadable), s(&cmu), s(&unopenable), "--out", s(&out), "--model", s(&model)]);
    let (stdout, stderr) = text(&run);
    assert!(!run.status.success(), "broken slides must make the exit non-zero: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(errors[0].contains("unreadable.svs") && errors[0].contains("tile"), "{stderr}");
    assert!(errors[1].contains("unopenable.tiff"), "{stderr}");
    assert!(stdout.contains("CMU-1-Small-Region:") && stdout.contains("1 of 3 slides done"), "{stdout}");

    let dir = out.join("CMU-1-Small-Region");
    let sum = read_json(&dir.join("summary.json"));
    assert!((sum["mpp"].as_f64().unwrap() - 0.499).abs() < 1e-3, "{sum}");
    assert_eq!(sum["mpp_source"], "aperio_description");
    assert_eq!(sum["mpp_guessed"], false);
    assert_eq!(sum["read_level"], 0);
    assert_eq!(sum["model"]["name"], "untrained-tiny");
    assert_eq!(sum["level0_size"], serde_json::json!([2220, 2967]));
    // The tissue strip covers 20-70% of the 1.64 mm² region.
    let tissue = sum["tissue_area_mm2"].as_f64().unwrap();
    assert!((0.33..1.15).contains(&tissue), "{tissue}");
    // The 2 mm² hotspot does not fit the 1.1 mm wide region: clipped.
    assert!(sum["hotspot"]["area_mm2"].as_f64().unwrap() < 2.0);
    let score = sum["mitotic_score"]["score"].as_u64().unwrap();
    assert!((1..=3).contains(&score));
    let processed = sum["tiles"]["processed"].as_u64().unwrap();
    assert!(processed >= 1 && processed <= sum["tiles"]["grid"].as_u64().unwrap());

    // Detections: CSV rows = mitoses = GeoJSON features, all inside level 0.
    let n = sum["mitoses"].as_u64().unwrap() as usize;
    let csv = std::fs::read_to_string(dir.join("detections.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(csv.lines().next(), Some("image,x,y,score"));
    assert_eq!(rows.len(), n);
    for r in &rows {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f[0], "CMU-1-Small-Region");
        let (x, y): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!((0.0..2220.0).contains(&x) && (0.0..2967.0).contains(&y), "{r}");
    }
    let geo = read_json(&dir.join("detections.geojson"));
    assert_eq!(geo["features"].as_array().unwrap().len(), n);
    let asap = mitoscope_formats::read(&dir.join("detections.xml"), None, &Default::default()).unwrap();
    assert_eq!((asap.images[0].image.as_str(), asap.images[0].objects.len()), ("CMU-1-Small-Region", n));
    let midog = read_json(&dir.join("midog.json"));
    assert_eq!(midog["points"].as_array().map(Vec::len).unwrap_or(0), n, "{midog}");
    let thumb = image::open(dir.join("thumbnail.png")).unwrap();
    // About 2 µm per thumbnail pixel: 2220 x 2967 px at 0.499 µm/px / 4.
    assert!(
        (550..560).contains(&thumb.width()) && (735..745).contains(&thumb.height()),
        "{:?}",
        (thumb.width(), thumb.height())
    );

    // Re-run with another threshold: the folder is replaced, never mixed.
    std::fs::write(dir.join("leftover.txt"), "from an older run").unwrap();
    let run = mitoscope(&["slide", s(&cmu), "--out", s(&out), "--model", s(&model), "--threshold", "1", "--hpfs", "2"]);
    assert!(run.status.success(), "{:?}", text(&run));
    assert!(!dir.join("leftover.txt").exists());
    let sum = read_json(&dir.join("summary.json"));
    assert_eq!(sum["hotspot_params"]["n_fields"], 2);
    assert_eq!(sum["model"]["threshold"], 1.0);
    let again = std::fs::read_to_string(dir.join("detections.csv")).unwrap();
    assert_eq!(again.lines().count() - 1, sum["mitoses"].as_u64().unwrap() as usize);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["CMU-1-Small-Region", "slides.csv"]);
    // The cohort table still holds the first run's two failures beside the re-run slide.
    let table = std::fs::read_to_string(out.join("slides.csv")).unwrap();
    let statuses: Vec<(&str, &str)> =
        table.lines().skip(1).map(|l| l.split(',').collect::<Vec<_>>()).map(|f| (f[0], f[1])).collect();
    assert_eq!(statuses, [("CMU-1-Small-Region", "done"), ("unopenable", "failed"), ("unreadable", "failed")]);

    // With a truth file: agreement printed, the truth in the table; a truth
    // file naming none of the slides is an error after the work is written.
    let truth = tmp.path().join("truth.csv");
    std::fs::write(&truth, format!("slide,score\nCMU-1-Small-Region,{score}\n")).unwrap();
    let run = mitoscope(&["slide", s(&cmu), "--out", s(&out), "--model", s(&model), "--truth", s(&truth)]);
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("vs truth (1 slides): agreement 1.000"), "{stdout}");
    assert!(stdout.contains("3 slides in"), "{stdout}");
    std::fs::write(&truth, "slide,score\nsomething-else,2\n").unwrap();
    let run = mitoscope(&["slide", s(&cmu), "--out", s(&out), "--model", s(&model), "--truth", s(&truth)]);
    let (stdout, stderr) = text(&run);
    assert!(!run.status.success(), "{stdout}");
    assert!(stderr.contains("error: no slide of") && stderr.contains("truth"), "{stderr}");
    assert!(dir.join("summary.json").is_file());
}

#[test]
fn slide_bad_arguments_are_one_clear_error() {
    let wsi = require_data!("wsi");
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out = tmp.path().join("out");
    let cmu = wsi.join("CMU-1-Small-Region.svs");
    let cases: [(&[&str], &str); 6] = [
        (&["--mpp", "50"], "outside"),
        (&["--mpp=-1"], "--mpp"),
        (&["--threshold", "2"], "--threshold"),
        (&["--hpfs", "0"], "--hpfs"),
        (&["--hpf-area-mm2", "5"], "field"),
        (&["--truth", "no-such-truth.csv"], "no-such-truth.csv"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["slide", s(&cmu), "--out", s(&out), "--model", s(&model)];
        args.extend_from_slice(extra);
        let run = mitoscope(&args);
        let (_, stderr) = text(&run);
        assert!(!run.status.success(), "{extra:?} should fail");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(last.starts_with("error: ") && last.contains(needle), "{extra:?}: {stderr}");
    }
    let run = mitoscope(&["slide", s(&tmp.path().join("nope.svs")), "--out", s(&out), "--model", s(&model)]);
    assert!(!run.status.success());
    assert!(text(&run).1.contains("nope.svs"));
}

#[test]
fn score_hpf_folder_per_slide_with_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let hpfs = tmp.path().join("hpfs");
    std::fs::create_dir_all(&hpfs).unwrap();
    // Three slides of two small HPFs each (pinkish noise; the tiny model finds something or nothing).
    for slide in ["W01", "W02", "W03"] {
        for i in 0..2u32 {
            let img = image::RgbImage::from_fn(160, 160, |x, y| {
                let v = ((x * 7 + y * 13 + i * 31) % 40) as u8;
                image::Rgb([200 + v / 2, 120 + v, 170 + v / 3])
            });
            img.save(hpfs.join(format!("{slide}_{i:02}.png"))).unwrap();
        }
    }
    let truth = tmp.path().join("truth.csv");
    std::fs::write(&truth, "slide,score\nW01,1\nW02,2\nW03,3\n").unwrap();
    let out = tmp.path().join("scores");
    let run = mitoscope(&[
        "score",
        s(&hpfs),
        "--truth",
        s(&truth),
        "--out",
        s(&out),
        "--model",
        s(&model),
        "--hpfs",
        "2",
        "--hpf-area-mm2",
        "0.2",
    ]);
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 slides, 6 HPFs"), "{stdout}");
    assert!(stdout.contains("Cohen's kappa") && stdout.contains("agreement"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let report = read_json(&out.join("scores.json"));
    assert_eq!(report["comparison"]["slides"], 3);
    assert_eq!(report["slides"][0]["hpfs_total"], 2);
    assert!(out.join("detections.csv").is_file());

    // JSON on stdout; a pattern without a group is one clear error.
    let run = mitoscope(&["score", s(&hpfs), "--model", s(&model), "--json", "--hpf-area-mm2", "0.2"]);
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(v["slides"].as_array().unwrap().len(), 3);
    let run = mitoscope(&["score", s(&hpfs), "--model", s(&model), "--group", "W0"]);
    let (_, stderr) = text(&run);
    assert!(!run.status.success() && stderr.contains("capture group"), "{stderr}");
    let run = mitoscope(&["score", s(&hpfs), "--model", s(&model), "--truth", s(&tmp.path().join("none.csv"))]);
    assert!(!run.status.success() && text(&run).1.contains("none.csv"));
}
