//! `mitoscope train` on datasets of one's own (not the shared data): a tiny
//! synthetic dataset in the formats users bring (CSV points + images, crop
//! folders labelled by folder name), trained end to end with a minutes-free
//! config, the model used by `detect`, one stage retrained, and bad input.

use std::path::Path;

use image::RgbImage;
use mitoscope_detect::recipe::{RecipeConfig, ThresholdImages};
use mitoscope_detect::synthetic::render_hpf;
use mitoscope_testdata::require_data;

mod common;
use common::{fails, mitoscope, succeeds};

/// Runs a command that must succeed; returns its stderr (the recipe's log).
fn ok(args: &[&str]) -> String {
    String::from_utf8_lossy(&succeeds(args).stderr).into_owned()
}

/// `mitoscope train --config CONFIG --dataset labels.csv --images fields --mpp 0.25 REST...`
/// on the synthetic dataset under `root` (see [`dataset`]), which most tests here train on.
fn train_own(root: &Path, config: &str, rest: &[&str]) -> Vec<String> {
    let p = |rel: &str| root.join(rel).display().to_string();
    let mut args: Vec<String> = vec!["train".into(), "--config".into(), p(config), "--dataset".into(), p("labels.csv")];
    args.extend(["--images".into(), p("fields"), "--mpp".into(), "0.25".into()]);
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

/// An owned argument list borrowed for [`ok`] and [`fails`].
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn crop(img: &RgbImage, (cx, cy): (f64, f64), size: u32) -> RgbImage {
    let x0 = (cx as i64 - i64::from(size) / 2).clamp(0, i64::from(img.width() - size)) as u32;
    let y0 = (cy as i64 - i64::from(size) / 2).clamp(0, i64::from(img.height() - size)) as u32;
    image::imageops::crop_imm(img, x0, y0, size, size).to_image()
}

/// Four synthetic fields of three "slides" with a points CSV, and a crop
/// folder (figures and background) cut from two further fields.
fn dataset(root: &Path) {
    let mut csv = String::from("image,x,y\n");
    for (i, name) in ["s1_1", "s1_2", "s2_1", "s3_1"].iter().enumerate() {
        let (img, centres) = render_hpf(100 + i as u64, 384);
        std::fs::create_dir_all(root.join("fields")).unwrap();
        img.save(root.join(format!("fields/{name}.png"))).unwrap();
        for (x, y) in centres {
            csv.push_str(&format!("{name},{x:.1},{y:.1}\n"));
        }
    }
    std::fs::write(root.join("labels.csv"), csv).unwrap();
    for folder in ["crops/mitosis", "crops/negative"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    for seed in [200u64, 201] {
        let (img, centres) = render_hpf(seed, 384);
        for (k, &c) in centres.iter().enumerate() {
            crop(&img, c, 96).save(root.join(format!("crops/mitosis/{seed}_{k}.png"))).unwrap();
            // Background: away from every figure.
            let away = ((c.0 + 120.0) % 384.0, (c.1 + 150.0) % 384.0);
            if centres.iter().all(|&o| (o.0 - away.0).hypot(o.1 - away.1) > 60.0) {
                crop(&img, away, 96).save(root.join(format!("crops/negative/{seed}_{k}.png"))).unwrap();
            }
        }
    }
}

/// The recipe cut down to seconds: every step runs, the model is a placeholder.
fn tiny_config(path: &Path) {
    let config = RecipeConfig {
        candidate_epochs: 1,
        candidate_decay_epochs: 0,
        candidate_tiles_per_epoch: 32,
        classifier_epochs: 1,
        classifier_decay_epochs: 0,
        negatives_per_hpf: 10,
        negatives_per_cmc: 10,
        hard_negatives_per_image: 10,
        in_domain_repeats: 2,
        threshold_on: ThresholdImages::Validation,
        cv_stage1: false,
        version: "tiny-test".into(),
        ..RecipeConfig::quick()
    };
    std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn trains_on_a_dataset_of_ones_own_and_detect_uses_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    dataset(root);
    let config = root.join("tiny.json");
    tiny_config(&config);
    let p = |rel: &str| root.join(rel).display().to_string();
    let out = p("model");
    let log =
        ok(&strs(&train_own(root, "tiny.json", &["--crops", &p("crops"), "--val-fraction", "0.25", "--out", &out])));
    assert!(log.contains("4 labelled fields"), "{log}");
    let model = root.join("model/model.bundle");
    assert!(model.is_file());
    // The split held out whole slides: s1's two fields together, or one of the others.
    let recipe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("model/recipe.json")).unwrap()).unwrap();
    let val: Vec<&str> = recipe["val_hpfs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(
        [vec!["s1_1", "s1_2"], vec!["s2_1"], vec!["s3_1"]].iter().any(|w| {
            let mut v = val.clone();
            v.sort();
            &v == w
        }),
        "{val:?}"
    );
    let card = std::fs::read_to_string(root.join("model/MODEL.md")).unwrap();
    assert!(card.contains("labels.csv: 4 fields") && card.contains("crops at 0.25 um/px"), "{card}");
    assert!(card.contains(&format!("validation images (held out): {}", val.join(", "))), "{card}");

    // The finished folder again, on other data (the fields read at another
    // resolution): refused, and its recipe.json still describes the model beside it.
    let before = std::fs::read(root.join("model/recipe.json")).unwrap();
    let mut renamed: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    renamed["version"] = "tiny-test-2".into();
    std::fs::write(root.join("tiny2.json"), serde_json::to_vec(&renamed).unwrap()).unwrap();
    let mut other = train_own(root, "tiny2.json", &["--crops", &p("crops"), "--val-fraction", "0.25", "--out", &out]);
    other.iter_mut().filter(|a| *a == "0.25").take(1).for_each(|a| *a = "0.3".into());
    let err = fails(&strs(&other));
    assert!(err.contains("other data"), "{err}");
    assert_eq!(std::fs::read(root.join("model/recipe.json")).unwrap(), before, "recipe.json was replaced");
    // The same run again, quiet: it resumes the finished folder and says nothing on stderr.
    let again = train_own(root, "tiny.json", &["--crops", &p("crops"), "--val-fraction", "0.25", "--out", &out, "-q"]);
    let quiet = succeeds(&strs(&again));
    assert!(quiet.stderr.is_empty(), "{}", String::from_utf8_lossy(&quiet.stderr));

    // detect runs the trained model on a field and writes its outputs.
    let det = p("det");
    ok(&["detect", &p("fields/s3_1.png"), "--model", model.to_str().unwrap(), "--out", &det, "--mpp", "0.25"]);
    let csv = std::fs::read_to_string(root.join("det/detections.csv")).unwrap();
    assert!(csv.starts_with("image,x,y,score"), "{csv}");

    // Stage 2 alone, on the candidates of the model just trained.
    let rest = ["--stage", "classifier", "--base-model", model.to_str().unwrap(), "--out", &p("stage2")];
    let log = ok(&strs(&train_own(root, "tiny.json", &rest)));
    assert!(log.contains("stage 1: kept from the given model"), "{log}");
    let card = std::fs::read_to_string(root.join("stage2/MODEL.md")).unwrap();
    assert!(card.contains("stage 1 kept from tiny-test"), "{card}");
    assert!(root.join("stage2/model.bundle").is_file());
    // No stage 1 was trained there, a stage 2 was.
    assert!(!root.join("stage2/candidate").exists() && root.join("stage2/classifier").is_dir());

    // Stage 1 alone, keeping the model's stage 2.
    let rest = ["--stage", "candidate", "--base-model", model.to_str().unwrap(), "--out", &p("stage1")];
    let log = ok(&strs(&train_own(root, "tiny.json", &rest)));
    assert!(log.contains("stage 2: kept from the given model"), "{log}");
    assert!(root.join("stage1/candidate").is_dir() && !root.join("stage1/classifier").exists());
    let card = std::fs::read_to_string(root.join("stage1/MODEL.md")).unwrap();
    assert!(card.contains("stage 2 kept from tiny-test"), "{card}");
}

#[test]
fn cross_validation_scores_each_field_by_an_ensemble_trained_without_it_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    dataset(root);
    // The default recipe's way (out-of-fold threshold, a stage 1 per fold), with two networks.
    let config = RecipeConfig {
        threshold_on: ThresholdImages::CrossValidated,
        cv_stage1: true,
        classifier_ensemble: 2,
        ..serde_json::from_slice(&{
            tiny_config(&root.join("tiny.json"));
            std::fs::read(root.join("tiny.json")).unwrap()
        })
        .unwrap()
    };
    std::fs::write(root.join("cv.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let p = |rel: &str| root.join(rel).display().to_string();
    let train = train_own(root, "cv.json", &["--crops", &p("crops"), "--val-fraction", "0.25", "--out", &p("model")]);
    let log = ok(&strs(&train));
    // Every labelled field is scored out of fold, by its own stage 1 and both networks without it.
    let fields = ["s1_1", "s1_2", "s2_1", "s3_1"];
    for f in fields {
        for sub in ["candidate", "classifier", "classifier-2"] {
            assert!(root.join(format!("model/cv-{f}/{sub}/model.bpk")).is_file(), "cv-{f}/{sub}: {log}");
        }
        assert!(log.contains(&format!("cross-validation: network 2 without {f}")), "{log}");
    }
    let oof = std::fs::read_to_string(root.join("model/out-of-fold.csv")).unwrap();
    assert!(oof.starts_with("image,x,y,score,candidate_score"), "{oof}");
    let scored: std::collections::BTreeSet<&str> = oof.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
    assert!(scored.iter().all(|f| fields.contains(f)), "{scored:?}");
    let device = mitoscope_model::burn::tensor::Device::flex();
    let bundle = mitoscope_detect::ModelBundle::load(&root.join("model/model.bundle"), &device).unwrap();
    assert_eq!(bundle.extra_classifiers.len(), 1, "the shipped ensemble has two networks");
    let card = std::fs::read_to_string(root.join("model/MODEL.md")).unwrap();
    assert!(card.contains("Nested estimate for unseen HPFs"), "{card}");

    // Run again: every network is found finished (none rewritten), and the scores are the same.
    let weights = || -> Vec<(String, std::time::SystemTime)> {
        let mut files: Vec<String> =
            ["candidate", "classifier", "classifier-2"].iter().map(|s| format!("model/{s}")).collect();
        for f in fields {
            files.extend(["candidate", "classifier", "classifier-2"].iter().map(|s| format!("model/cv-{f}/{s}")));
        }
        files
            .into_iter()
            .map(|f| {
                let t = std::fs::metadata(root.join(&f).join("model.bpk")).and_then(|m| m.modified()).unwrap();
                (f, t)
            })
            .collect()
    };
    let before = weights();
    ok(&strs(&train));
    assert_eq!(weights(), before, "nothing retrained");
    assert_eq!(std::fs::read_to_string(root.join("model/out-of-fold.csv")).unwrap(), oof);

    // Stage 2 redrawn with a seed of its own: the finished stage 1s are kept
    // (the stage-1 checkpoints refuse a changed `seed`), every network is new.
    let stage2_folders: Vec<String> = std::iter::once("model".to_owned())
        .chain(fields.iter().map(|f| format!("model/cv-{f}")))
        .flat_map(|d| ["classifier", "classifier-2"].map(|s| format!("{d}/{s}")))
        .collect();
    let read_weights = |f: &str| std::fs::read(root.join(f).join("model.bpk")).unwrap();
    let old_stage2: Vec<Vec<u8>> = stage2_folders.iter().map(|f| read_weights(f)).collect();
    for f in &stage2_folders {
        std::fs::remove_dir_all(root.join(f)).unwrap();
    }
    let redrawn = RecipeConfig { classifier_seed: Some(config.seed + 77), ..config.clone() };
    std::fs::write(root.join("cv.json"), serde_json::to_vec_pretty(&redrawn).unwrap()).unwrap();
    ok(&strs(&train));
    let kept: Vec<_> = weights().into_iter().filter(|(f, _)| f.ends_with("candidate")).collect();
    let kept_before: Vec<_> = before.into_iter().filter(|(f, _)| f.ends_with("candidate")).collect();
    assert_eq!(kept, kept_before, "stage 1 retrained");
    // Retrained with the run's own seed, a network's file differs from the old
    // one only in the random parameter ids of its header (~0.3% of the bytes);
    // with a new seed, about seven bytes in eight differ.
    for (f, old) in stage2_folders.iter().zip(&old_stage2) {
        let new = read_weights(f);
        let same = new.iter().zip(old).filter(|(a, b)| a == b).count();
        assert!(same < new.len() / 2, "{f}: {same} of {} bytes as with the run's seed", new.len());
    }
    let card = std::fs::read_to_string(root.join("model/MODEL.md")).unwrap();
    assert!(card.contains(&format!("{} (stage 2: {})", config.seed, config.seed + 77)), "{card}");
}

#[test]
fn bad_training_input_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = |rel: &str| root.join(rel).display().to_string();
    std::fs::create_dir_all(root.join("fields")).unwrap();
    render_hpf(1, 128).0.save(root.join("fields/a_1.png")).unwrap();
    std::fs::write(root.join("labels.csv"), "image,x,y\na_1,10,10\nb_1,5,5\n").unwrap();
    let err =
        fails(&["train", "--dataset", &p("labels.csv"), "--images", &p("fields"), "--mpp", "0.25", "--out", &p("o")]);
    assert!(err.contains("b_1") && err.contains("not found"), "{err}");
    let err = fails(&["train", "--dataset", &p("nowhere.csv"), "--out", &p("o")]);
    assert!(err.contains("nowhere.csv"), "{err}");
    std::fs::write(root.join("one.csv"), "image,x,y\na_1,10,10\n").unwrap();
    let err =
        fails(&["train", "--dataset", &p("one.csv"), "--images", &p("fields"), "--mpp", "0.25", "--out", &p("o")]);
    assert!(err.contains("at least one must train and one validate"), "{err}");
    let err = fails(&[
        "train",
        "--dataset",
        &p("one.csv"),
        "--images",
        &p("fields"),
        "--mpp",
        "0.25",
        "--val-subset",
        "test",
        "--out",
        &p("o"),
    ]);
    assert!(err.contains("--val-subset"), "{err}");
    let err = fails(&[
        "train",
        "--stage",
        "both",
        "--base-model",
        &p("x.bundle"),
        "--dataset",
        &p("one.csv"),
        "--out",
        &p("o"),
    ]);
    assert!(err.contains("--base-model"), "{err}");
    let err = fails(&[
        "train",
        "--stage",
        "classifier",
        "--base-model",
        &p("x.bundle"),
        "--dataset",
        &p("one.csv"),
        "--out",
        &p("o"),
    ]);
    assert!(err.contains("x.bundle"), "{err}");
    let err = fails(&[
        "train",
        "--dataset",
        &p("one.csv"),
        "--format",
        "csv",
        "--format",
        "coco",
        "--format",
        "csv",
        "--images",
        &p("fields"),
        "--mpp",
        "0.25",
        "--out",
        &p("o"),
    ]);
    assert!(err.contains("3 formats for 1 datasets"), "{err}");
    let err = fails(&["train", "--dataset", &p("one.csv"), "--format", "jsonl", "--out", &p("o")]);
    assert!(err.contains("unknown format 'jsonl'"), "{err}");
    let err = fails(&["train", "--val-fraction", "0.3", "--out", &p("o")]);
    assert!(err.contains("--val-fraction"), "{err}");
    // A --config of the keys it changes is taken over --recipe (the run then
    // stops at the data); a key the recipe does not know is named.
    std::fs::write(root.join("partial.json"), r#"{"cv_stage1": false, "mining_recall_target": 0.9}"#).unwrap();
    std::fs::write(root.join("typo.json"), r#"{"cv_stag1": false}"#).unwrap();
    let with = |config: &str| {
        let args = ["train", "--config", config, "--dataset", "ONE", "--images", "F", "--mpp", "0.25", "--out", "O"];
        let (one, fields, out) = (p("one.csv"), p("fields"), p("o"));
        let args: Vec<&str> = args
            .iter()
            .map(|a| match *a {
                "ONE" => one.as_str(),
                "F" => fields.as_str(),
                "O" => out.as_str(),
                a => a,
            })
            .collect();
        fails(&args)
    };
    let err = with(&p("partial.json"));
    assert!(err.contains("at least one must train and one validate"), "{err}");
    let err = with(&p("typo.json"));
    assert!(err.contains("typo.json") && err.contains("'cv_stag1'"), "{err}");
    // A key given twice (serde_json would keep the last) and a config that
    // is not an object are refused by what they are.
    std::fs::write(root.join("twice.json"), "{\"stage1\": {\"epochs\": 1, \"epochs\": 2}}").unwrap();
    let err = with(&p("twice.json"));
    assert!(err.contains("twice.json") && err.contains("key 'epochs' is given twice"), "{err}");
    std::fs::write(root.join("array.json"), "[1, 2]").unwrap();
    let err = with(&p("array.json"));
    assert!(err.contains("array.json") && err.contains("not an array"), "{err}");
    // A label outside its image is left out of training with a warning naming the file.
    std::fs::write(root.join("outside.csv"), "image,x,y\na_1,10,10\na_1,5000,5\n").unwrap();
    let out = mitoscope(&[
        "train",
        "--dataset",
        &p("outside.csv"),
        "--images",
        &p("fields"),
        "--mpp",
        "0.25",
        "--out",
        &p("o"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a_1.png: label at (5000, 5) lies outside the image (128 x 128 px)"), "{stderr}");
    assert!(!root.join("o").exists(), "nothing written for refused runs");
}

#[test]
fn trains_on_the_real_icpr_hpfs_named_by_a_points_csv() {
    let icpr = require_data!("icpr2012");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.json");
    tiny_config(&config);
    let out = dir.path().join("model");
    let log = ok(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--dataset",
        icpr.join("centroids.csv").to_str().unwrap(),
        "--images",
        icpr.join("hpf").to_str().unwrap(),
        "--mpp",
        "0.2456",
        "--out",
        out.to_str().unwrap(),
    ]);
    // Five slides (A00 ... A04) of one HPF each: 20% is one of them.
    assert!(log.contains("5 labelled fields: 1 validate"), "{log}");
    let card = std::fs::read_to_string(out.join("MODEL.md")).unwrap();
    assert!(card.contains("centroids.csv: 5 fields, 35 mitoses, 0 look-alikes, 0 masks"), "{card}");
    let recipe: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("recipe.json")).unwrap()).unwrap();
    let val = recipe["val_hpfs"][0].as_str().unwrap().to_owned();
    assert!(["A00_00", "A01_04", "A02_07", "A03_01", "A04_07"].contains(&val.as_str()), "{val}");
    assert!(card.contains(&format!("validation images (held out): {val}")), "{card}");
}

#[test]
fn check_device_compares_a_device_with_the_cpu() {
    // The CPU against itself: the check's own plumbing, end to end.
    let out = mitoscope(&["check-device", "--device", "cpu", "--steps", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check["passed"], true);
    assert_eq!(check["cpu_losses"].as_array().unwrap().len(), 2);
    assert_eq!(check["cpu_losses"], check["device_losses"]);
    // A build without the GPU backend says how to get one.
    #[cfg(not(feature = "wgpu"))]
    {
        let err = fails(&["check-device", "--device", "wgpu"]);
        assert!(err.contains("--features wgpu"), "{err}");
    }
}

#[test]
fn a_dataset_with_pixel_masks_trains_a_mask_head_measured_out_of_fold() {
    let icpr = require_data!("icpr2012");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.json");
    tiny_config(&config);
    let p = |rel: &str| dir.path().join(rel).display().to_string();
    let patches = icpr.join("mask-patches");
    let patches = patches.to_str().unwrap();
    // `mitoscope train --config CONFIG ... REST` on the 50 mask patches read as a GZMH-like folder.
    let on_patches = |config: &str, rest: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec!["train".into(), "--config".into(), p(config), "--dataset".into()];
        args.extend([patches.to_owned(), "--mpp".into(), "0.2456".into()]);
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    };
    // Both stages and then the head.
    let log = ok(&strs(&on_patches("tiny.json", &["--out", &p("model")])));
    assert!(log.contains("mask head: fold 2 of 2") && log.contains("mask head, out of fold over"), "{log}");
    let device = mitoscope_model::burn::tensor::Device::flex();
    let bundle = mitoscope_detect::ModelBundle::load(&dir.path().join("model/model.bundle"), &device).unwrap();
    let head = bundle.mask_head.as_ref().expect("the recipe adds a mask head");
    assert_eq!((head.config.crop_size, head.config.net.mpp), (80, 0.25));
    let card = std::fs::read_to_string(dir.path().join("model/MODEL.md")).unwrap();
    assert!(card.contains("## Mask head") && card.contains("mask head (out of fold)"), "{card}");
    // Its out-of-fold Dice is in the card's metrics, beside the stage-1 outlines'.
    let report = &bundle.card.metrics["mask_head"];
    for key in ["head_dice_pooled", "head_dice_mean", "map_dice_pooled", "map_dice_mean"] {
        let v = report[key].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&v), "{key}: {report}");
    }
    assert!(report["images"].as_u64().unwrap() >= 30, "{report}");

    // A head alone, added to that model: its stages and threshold are kept.
    let rest = ["--stage", "mask", "--base-model", &p("model/model.bundle"), "--out", &p("head")];
    let log = ok(&strs(&on_patches("tiny.json", &rest)));
    assert!(log.contains("stages kept from tiny-test"), "{log}");
    let added = mitoscope_detect::ModelBundle::load(&dir.path().join("head/model.bundle"), &device).unwrap();
    assert!(added.mask_head.is_some());
    assert_eq!(added.card.operating_threshold, bundle.card.operating_threshold);
    assert_eq!(added.card.candidate_threshold, bundle.card.candidate_threshold);
    assert!(std::fs::read_to_string(dir.path().join("head/MASK-HEAD.md")).unwrap().contains("Added to `tiny-test`"));
    // A recipe without a head has nothing for --stage mask to do: one clear error.
    let mut no_head: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    no_head["mask_head"]["epochs"] = 0.into();
    std::fs::write(dir.path().join("nohead.json"), serde_json::to_vec(&no_head).unwrap()).unwrap();
    let rest = ["--stage", "mask", "--base-model", &p("model/model.bundle"), "--out", &p("none")];
    let err = fails(&strs(&on_patches("nohead.json", &rest)));
    assert!(err.contains("mask_head.epochs is 0"), "{err}");
}
