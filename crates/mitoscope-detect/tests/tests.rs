//! Integration tests of the detection pipeline on synthetic images and a
//! tiny untrained model (fast; accuracy is not tested here).

use std::path::PathBuf;

use image::{Rgb, RgbImage};
use mitoscope_detect::{BatchConfig, DETECTIONS_HEADER, DetectOptions, Detector, ModelBundle, Outputs, run_batch};
use mitoscope_model::burn::tensor::Device;
use mitoscope_model::{CandidateNetConfig, PatchClassifierConfig};

fn tiny_detector() -> Detector {
    let device = Device::flex();
    let mut bundle = ModelBundle::untrained(
        CandidateNetConfig::new().with_base_channels(2),
        PatchClassifierConfig::new().with_base_channels(2),
        &device,
    );
    // Untrained: every local maximum is a candidate, every score passes.
    bundle.card.candidate_threshold = 0.0;
    bundle.card.operating_threshold = 0.0;
    bundle.card.min_distance_um = 20.0;
    Detector::new(bundle, device)
}

fn save(dir: &std::path::Path, name: &str, img: &RgbImage) -> PathBuf {
    let p = dir.join(name);
    img.save(&p).unwrap();
    p
}

#[test]
fn synthetic_hpf_end_to_end_writes_every_output() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = mitoscope_detect::synthetic::render_hpf(3, 400);
    let input = save(dir.path(), "synthetic-a.png", &img);
    let out = dir.path().join("out");
    let config = BatchConfig { outputs: Outputs::all(), write_candidates: true, ..BatchConfig::default() };
    let summary = run_batch(&detector, &[input], &out, &config).unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(summary.per_image.len(), 1);
    assert!(summary.total > 0);
    let csv = std::fs::read_to_string(out.join("detections.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(DETECTIONS_HEADER));
    assert_eq!(DETECTIONS_HEADER, "image,x,y,score");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), summary.total);
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0], "synthetic-a");
        let (x, y): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!((0.0..400.0).contains(&x) && (0.0..400.0).contains(&y), "{row}");
    }
    let cands = std::fs::read_to_string(out.join("candidates.csv")).unwrap();
    assert!(cands.starts_with("image,x,y,score,candidate_score\n"));
    assert!(out.join("detections.geojson").is_file());
    assert!(out.join("midog/synthetic-a.json").is_file());
    let asap = mitoscope_formats::read(&out.join("asap/synthetic-a.xml"), None, &Default::default()).unwrap();
    assert_eq!(asap.images[0].image, "synthetic-a");
    assert_eq!(asap.images[0].objects.len(), summary.total, "ASAP holds every detection");
    let overlay = image::open(out.join("overlays/synthetic-a.png")).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (400, 400));
}

#[test]
fn corrupt_and_odd_inputs_fail_alone() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = mitoscope_detect::synthetic::render_hpf(4, 200);
    let good = save(dir.path(), "good.png", &img);
    // Grayscale, RGBA and tiny (smaller than a tile) inputs are converted / padded.
    let gray = dir.path().join("gray.png");
    image::DynamicImage::ImageRgb8(img.clone()).to_luma8().save(&gray).unwrap();
    let rgba = dir.path().join("rgba.png");
    image::DynamicImage::ImageRgb8(img.clone()).to_rgba8().save(&rgba).unwrap();
    let tiny = save(dir.path(), "tiny.png", &RgbImage::from_pixel(5, 3, Rgb([200, 150, 200])));
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    // A truncated PNG, and a truncated JPEG (which the image crate would decode grey-filled).
    let truncated = dir.path().join("truncated.png");
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    std::fs::write(&truncated, &png[..png.len() / 3]).unwrap();
    let truncated_jpeg = dir.path().join("truncated.jpg");
    let mut jpeg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    std::fs::write(&truncated_jpeg, &jpeg[..jpeg.len() / 2]).unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.png");

    let inputs = vec![
        corrupt.clone(),
        good,
        gray,
        truncated.clone(),
        truncated_jpeg.clone(),
        rgba,
        empty.clone(),
        tiny,
        missing.clone(),
    ];
    let out = dir.path().join("out");
    let summary = run_batch(&detector, &inputs, &out, &BatchConfig::default()).unwrap();
    let ok: Vec<&str> = summary.per_image.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ok, vec!["good", "gray", "rgba", "tiny"]);
    let failed: Vec<&PathBuf> = summary.failures.iter().map(|(p, _)| p).collect();
    assert_eq!(failed.len(), 5, "{:?}", summary.failures);
    for (path, message) in &summary.failures {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(message.contains(name.as_ref()), "error names the file: {message}");
    }
    for bad in [&missing, &corrupt, &truncated, &truncated_jpeg, &empty] {
        assert!(failed.contains(&bad), "{} should have failed: {:?}", bad.display(), summary.failures);
    }
    let csv = std::fs::read_to_string(out.join("detections.csv")).unwrap();
    assert!(csv.starts_with("image,x,y,score\n"));
    assert!(csv.lines().skip(1).all(|l| ["good,", "gray,", "rgba,", "tiny,"].iter().any(|p| l.starts_with(p))));
}

#[test]
fn folders_expand_sorted_and_counts_add_up() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let inputs_dir = dir.path().join("in");
    std::fs::create_dir(&inputs_dir).unwrap();
    for (i, name) in ["b.png", "a.bmp", "c.tif"].iter().enumerate() {
        save(&inputs_dir, name, &mitoscope_detect::synthetic::render_hpf(i as u64, 120).0);
    }
    std::fs::write(inputs_dir.join("notes.txt"), "not an image").unwrap();
    let summary = run_batch(&detector, &[inputs_dir], &dir.path().join("out"), &BatchConfig::default()).unwrap();
    let names: Vec<&str> = summary.per_image.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(summary.total, summary.per_image.iter().map(|(_, n)| n).sum::<usize>());
}

#[test]
fn a_rerun_replaces_the_earlier_outputs_and_a_run_that_reads_nothing_keeps_them() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let a = save(dir.path(), "a.png", &mitoscope_detect::synthetic::render_hpf(5, 160).0);
    let b = save(dir.path(), "b.png", &mitoscope_detect::synthetic::render_hpf(6, 160).0);
    let out = dir.path().join("out");
    let all = BatchConfig { outputs: Outputs::all(), write_candidates: true, ..BatchConfig::default() };
    run_batch(&detector, &[a.clone(), b], &out, &all).unwrap();
    for f in ["candidates.csv", "detections.geojson", "midog/b.json", "asap/b.xml", "overlays/b.png", "masks/b.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The user's own files in the folder are never touched.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    std::fs::write(out.join("overlays/notes.txt"), "mine").unwrap();

    // Again on `a` alone, overlays only: nothing of `b` and no other format stays behind.
    let overlays = BatchConfig {
        outputs: Outputs { overlay: true, ..Outputs::default() },
        write_candidates: false,
        ..BatchConfig::default()
    };
    run_batch(&detector, std::slice::from_ref(&a), &out, &overlays).unwrap();
    for gone in ["candidates.csv", "detections.geojson", "midog", "asap", "masks", "overlays/b.png"] {
        assert!(!out.join(gone).exists(), "{gone} is the earlier run's");
    }
    assert!(out.join("overlays/a.png").is_file());
    assert!(out.join("notes.txt").is_file() && out.join("overlays/notes.txt").is_file());
    let csv = std::fs::read_to_string(out.join("detections.csv")).unwrap();
    assert!(csv.lines().skip(1).all(|l| l.starts_with("a,")), "{csv}");

    // A run in which every input fails writes nothing.
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"not a png").unwrap();
    let summary = run_batch(&detector, &[corrupt], &out, &all).unwrap();
    assert!(summary.written.is_empty() && summary.failures.len() == 1, "{summary:?}");
    assert_eq!(std::fs::read_to_string(out.join("detections.csv")).unwrap(), csv);
    assert!(out.join("overlays/a.png").is_file() && !out.join("candidates.csv").exists());
    // ... and leaves no folder it made behind.
    let fresh = dir.path().join("new/out");
    let summary = run_batch(&detector, &[dir.path().join("corrupt.png")], &fresh, &all).unwrap();
    assert!(summary.written.is_empty());
    assert!(!dir.path().join("new").exists(), "the folders made for the run are gone");

    // In a folder no run marked as its own (no run.json), nothing is removed.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(foreign.join("masks")).unwrap();
    std::fs::write(foreign.join("masks/x.png"), "a user's mask").unwrap();
    run_batch(&detector, std::slice::from_ref(&a), &foreign, &BatchConfig::default()).unwrap();
    assert!(foreign.join("masks/x.png").is_file());
    // Run again there: the user's mask is still not the earlier run's, so it stays.
    run_batch(&detector, std::slice::from_ref(&a), &foreign, &BatchConfig::default()).unwrap();
    assert_eq!(std::fs::read_to_string(foreign.join("masks/x.png")).unwrap(), "a user's mask");

    // A dataset folder as --out: its own masks/a.png is never overwritten; the
    // run stops before reading any image, naming the file.
    let dataset = dir.path().join("dataset");
    std::fs::create_dir_all(dataset.join("masks")).unwrap();
    std::fs::write(dataset.join("masks/a.png"), "truth").unwrap();
    let err = run_batch(&detector, std::slice::from_ref(&a), &dataset, &all).unwrap_err().to_string();
    assert!(err.contains("masks/a.png") && err.contains("no earlier `mitoscope detect` run"), "{err}");
    assert_eq!(std::fs::read_to_string(dataset.join("masks/a.png")).unwrap(), "truth");
    assert!(!dataset.join("detections.csv").exists(), "nothing written");

    // An edited run.json listing files outside its folder (or of shapes no
    // run writes) removes none of them.
    let record_path = out.join("run.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "mine").unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    record["files"] =
        serde_json::json!(["../victim.txt", "keep.txt", victim.display().to_string(), "overlays/../../victim.txt"]);
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    run_batch(&detector, std::slice::from_ref(&a), &out, &BatchConfig::default()).unwrap();
    assert!(victim.is_file() && out.join("keep.txt").is_file());
}

#[test]
fn the_same_file_named_twice_is_processed_once() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let a = save(&inputs, "a.png", &mitoscope_detect::synthetic::render_hpf(7, 120).0);
    let summary =
        run_batch(&detector, &[a.clone(), a, inputs], &dir.path().join("out"), &BatchConfig::default()).unwrap();
    let names: Vec<&str> = summary.per_image.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a"], "one image, under its own stem");
    // A link that leads nowhere is named as one, not as a missing file.
    #[cfg(unix)]
    {
        let link = dir.path().join("loop.png");
        std::os::unix::fs::symlink(&link, &link).unwrap();
        let summary = run_batch(
            &detector,
            &[link, dir.path().join("none.png")],
            &dir.path().join("out2"),
            &BatchConfig::default(),
        )
        .unwrap();
        let why: Vec<&str> = summary.failures.iter().map(|(_, w)| w.as_str()).collect();
        assert!(why[0].contains("loop.png is a symbolic link that leads nowhere"), "{why:?}");
        assert!(why[1].contains("none.png does not exist"), "{why:?}");
    }
}

#[test]
fn resolutions_no_microscope_gives_are_refused_before_any_buffer_is_sized() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let a = save(dir.path(), "a.png", &mitoscope_detect::synthetic::render_hpf(8, 120).0);
    // 40 µm/px would upsample this field 80x to the model's 0.5 µm/px.
    let coarse = BatchConfig { input_mpp: Some(40.0), ..BatchConfig::default() };
    let err = run_batch(&detector, std::slice::from_ref(&a), &dir.path().join("out"), &coarse).unwrap_err();
    assert!(err.to_string().contains("40 µm/px is outside 0.05..=2"), "{err}");
    let img = image::open(&a).unwrap().to_rgb8();
    for mpp in [0.001, 2.5, 40.0] {
        assert!(detector.detect_image(&img, mpp, &DetectOptions::default()).is_err(), "{mpp}");
        assert!(detector.score_at(&img, &[(60.0, 60.0)], mpp).is_err(), "{mpp}");
    }
    assert!(detector.detect_image(&img, 2.0, &DetectOptions::default()).is_ok());
}

#[test]
fn large_input_goes_through_tiles() {
    // A 7215x5412 frame (the CMC tile size) at 0.25 µm/px, mostly blank: the
    // tiled path must cover it (3608x2706 model px -> 48 tiles of 512) with
    // detections anywhere in the frame and none outside.
    let detector = tiny_detector();
    let mut img = RgbImage::from_pixel(7215, 5412, Rgb([235, 190, 220]));
    let (patch, _) = mitoscope_detect::synthetic::render_hpf(9, 300);
    image::imageops::replace(&mut img, &patch, 6900, 5100);
    let options = DetectOptions { tile_px: 1024, overlap_px: 64, polygons: false, ..DetectOptions::default() };
    let found = detector.detect_image(&img, 0.25, &options).unwrap();
    assert!(found.iter().all(|d| d.x >= 0.0 && d.x < 7215.0 && d.y >= 0.0 && d.y < 5412.0));
    assert!(found.iter().any(|d| d.x > 6900.0 && d.y > 5100.0), "bottom-right corner is reached");
}

#[test]
fn tiling_does_not_change_detections_much() {
    // Same image, one tile vs many small overlapping tiles: the merged
    // candidates agree up to border effects (the net sees less context at
    // tile edges), and there are no duplicates within the merge radius.
    let detector = tiny_detector();
    let (img, _) = mitoscope_detect::synthetic::render_hpf(5, 600);
    let one = DetectOptions {
        keep_all_candidates: true,
        tile_px: 512,
        overlap_px: 0,
        polygons: false,
        ..DetectOptions::default()
    };
    let many = DetectOptions { tile_px: 96, overlap_px: 48, ..one.clone() };
    let a = detector.detect_image(&img, 0.25, &one).unwrap();
    let b = detector.detect_image(&img, 0.25, &many).unwrap();
    let min_d = 20.0 / 0.25; // card min distance 20 µm in input px
    for (i, p) in b.iter().enumerate() {
        for q in &b[i + 1..] {
            assert!((p.x - q.x).hypot(p.y - q.y) >= min_d - 1e-6, "duplicate across tiles");
        }
    }
    let near = b.iter().filter(|p| a.iter().any(|q| (p.x - q.x).hypot(p.y - q.y) < min_d)).count();
    assert!(near * 10 >= b.len() * 6, "{near} of {} tiled candidates near an untiled one", b.len());
}

#[test]
fn bad_model_files_are_clear_errors() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.bundle");
    std::fs::write(&bad, b"MITOSCOPE-BUNDLE-1\n\x10\0\0\0\0\0\0\0{not json}").unwrap();
    let err = ModelBundle::load(&bad, &device).unwrap_err().to_string();
    assert!(err.contains("broken.bundle"), "{err}");
    let err = ModelBundle::load(&dir.path().join("absent.bundle"), &device).unwrap_err().to_string();
    assert!(err.contains("absent.bundle"), "{err}");

    // NaN weights inside an otherwise valid bundle.
    let detector = tiny_detector();
    let good = detector.bundle().to_bytes().unwrap();
    let nan = f32::NAN.to_le_bytes();
    let mut poisoned = good.clone();
    // Overwrite the last 64 bytes (classifier parameters) with NaNs.
    let n = poisoned.len();
    for chunk in poisoned[n - 64..].chunks_mut(4) {
        chunk.copy_from_slice(&nan);
    }
    let path = dir.path().join("nan.bundle");
    std::fs::write(&path, &poisoned).unwrap();
    let err = ModelBundle::load(&path, &device).unwrap_err().to_string();
    assert!(err.contains("nan.bundle") && err.contains("non-finite"), "{err}");
}

#[test]
fn classify_scores_centre_crops_and_reports_bad_files() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let crop = save(dir.path(), "crop.png", &mitoscope_detect::synthetic::render_hpf(1, 128).0);
    let big = save(dir.path(), "big.png", &mitoscope_detect::synthetic::render_hpf(2, 700).0);
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"nope").unwrap();
    let results = mitoscope_detect::classify_images(&detector, &[crop, big, bad], None);
    assert_eq!(results.len(), 3);
    assert!(results[0].score.is_some_and(|s| (0.0..=1.0).contains(&s)));
    assert!(results[1].score.is_some());
    assert!(results[2].score.is_none() && results[2].error.as_deref().is_some_and(|e| e.contains("bad.jpg")));
}

#[test]
fn demo_writes_a_labelled_synthetic_folder() {
    let detector = tiny_detector();
    let dir = tempfile::tempdir().unwrap();
    let summary = mitoscope_detect::run_demo(&detector, dir.path(), 1, 300).unwrap();
    assert!(summary.failures.is_empty());
    for f in [
        "synthetic-hpf.png",
        "synthetic-truth.csv",
        "README.txt",
        "detections.csv",
        "candidates.csv",
        "detections.geojson",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let readme = std::fs::read_to_string(dir.path().join("README.txt")).unwrap();
    assert!(readme.starts_with("SYNTHETIC"));
}

#[test]
fn embedded_model_loads_when_present() {
    let device = Device::flex();
    if ModelBundle::has_embedded() {
        let b = ModelBundle::embedded(&device).unwrap();
        assert!((0.0..=1.0).contains(&b.card.operating_threshold));
        assert!(!b.card.training.command.is_empty());
    } else {
        let err = ModelBundle::embedded(&device).unwrap_err().to_string();
        assert!(err.contains("no embedded model"), "{err}");
    }
}

#[test]
fn devices_parse() {
    assert!(mitoscope_detect::parse_device("cpu").is_ok());
    assert!(mitoscope_detect::parse_device("tpu").is_err());
    #[cfg(not(feature = "cuda"))]
    assert!(mitoscope_detect::parse_device("cuda").unwrap_err().to_string().contains("CUDA"));
    #[cfg(not(feature = "wgpu"))]
    assert!(mitoscope_detect::parse_device("wgpu").unwrap_err().to_string().contains("--features wgpu"));
    // wgpu devices are created lazily: parsing needs no GPU.
    #[cfg(feature = "wgpu")]
    assert!(mitoscope_detect::parse_device("wgpu:1").is_ok());
    for bad in ["wgpu:x", "wgpux", "cuda:-1"] {
        assert!(mitoscope_detect::parse_device(bad).is_err(), "{bad}");
    }
}

#[test]
fn skipping_hopeless_candidates_keeps_the_detections() {
    // With the fused score a candidate whose peak is below threshold² is not
    // classified unless candidates.csv is asked for; the detections must not
    // change. The embedded model on a real HPF has both kinds of candidate.
    let icpr = mitoscope_testdata::require_data!("icpr2012");
    let detector = Detector::new(ModelBundle::embedded(&Device::flex()).unwrap(), Device::flex());
    let card = &detector.bundle().card;
    assert_eq!(card.score_fusion, mitoscope_detect::ScoreFusion::GeometricMean);
    let min_peak = card.operating_threshold.powi(2);
    let input = icpr.join("hpf/A04_07.jpg");
    let dir = tempfile::tempdir().unwrap();
    let mut csvs = Vec::new();
    for write_candidates in [false, true] {
        let out = dir.path().join(format!("out-{write_candidates}"));
        let config = BatchConfig { input_mpp: Some(0.2456), write_candidates, ..BatchConfig::default() };
        run_batch(&detector, std::slice::from_ref(&input), &out, &config).unwrap();
        csvs.push(std::fs::read_to_string(out.join("detections.csv")).unwrap());
        if write_candidates {
            let all = std::fs::read_to_string(out.join("candidates.csv")).unwrap();
            let peaks: Vec<f64> = all.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
            let hopeless = peaks.iter().filter(|&&p| p < min_peak).count();
            assert!(
                hopeless > 0 && hopeless < peaks.len(),
                "{hopeless} of {} candidates below {min_peak}",
                peaks.len()
            );
        }
    }
    assert_eq!(csvs[0], csvs[1]);
    assert!(csvs[0].lines().count() > 1, "no detection at all:\n{}", csvs[0]);
}
