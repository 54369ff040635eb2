//! End-to-end tests of the `mitoscope` binary: real fixtures with their known
//! counts, hand-worked evaluation cases, randomized agreement with a plain
//! reference implementation, and bad input.

use std::path::{Path, PathBuf};

use mitoscope_testdata::require_data;

mod common;
use common::{fails, mitoscope, ok};

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("valid JSON")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p
}

// ---------- inspect: real fixtures with the counts their READMEs state ----------

#[test]
fn inspect_mask_patches() {
    let dir = require_data!("icpr2012/mask-patches");
    let v = json(&["inspect", s(&dir), "--json"]);
    assert_eq!(v["images"], 50);
    let with_mitoses: u64 =
        v["subsets"].as_array().unwrap().iter().map(|s| s["images_with_mitoses"].as_u64().unwrap()).sum();
    assert_eq!(with_mitoses, 20);
}

#[test]
fn inspect_midog_json() {
    let dir = require_data!("formats");
    let v = json(&["inspect", s(&dir.join("MIDOG.json")), "--json"]);
    assert_eq!((v["mitoses"].as_u64(), v["non_mitoses"].as_u64()), (Some(1721), Some(2714)));
    let v = json(&["inspect", s(&dir.join("MIDOG++.json")), "--json"]);
    assert_eq!((v["mitoses"].as_u64(), v["non_mitoses"].as_u64()), (Some(11937), Some(14349)));
}

#[test]
fn inspect_sliderunner() {
    let dir = require_data!("formats");
    let v = json(&["inspect", s(&dir.join("MITOS2012.sqlite")), "--json"]);
    assert_eq!(v["mitoses"], 226);
    assert_eq!(v["images"], 35);
    let v = json(&["inspect", s(&dir.join("MITOS2014.sqlite")), "--json"]);
    assert_eq!((v["mitoses"].as_u64(), v["non_mitoses"].as_u64()), (Some(749), Some(2884)));
}

#[test]
fn inspect_icpr_pixel_lists_and_centroids() {
    let dir = require_data!("icpr2012");
    let v = json(&["inspect", s(&dir.join("pixel-masks/A00_01.csv")), "--json"]);
    assert_eq!(v["mitoses"], 5);
    let v = json(&["inspect", s(&dir.join("pixel-masks/A00_02.csv")), "--json"]);
    assert_eq!(v["mitoses"], 2);
    let v = json(&["inspect", s(&dir.join("centroids.csv")), "--json"]);
    assert_eq!((v["mitoses"].as_u64(), v["images"].as_u64()), (Some(35), Some(5)));
}

#[test]
fn inspect_cmc_yolo() {
    let dir = require_data!("cmc-negatives");
    let v = json(&["inspect", s(&dir), "--format", "yolo", "--json"]);
    assert_eq!((v["images"].as_u64(), v["mitoses"].as_u64(), v["non_mitoses"].as_u64()), (Some(3), Some(0), Some(14)));
}

// ---------- convert ----------

#[test]
fn convert_round_trips_through_every_writer() {
    let data = require_data!("icpr2012");
    let tmp = tempfile::tempdir().unwrap();
    let src = data.join("centroids.csv");
    let hpf = data.join("hpf");
    for (name, extra) in [
        ("out.geojson", vec![]),
        ("out.json", vec![]),
        ("midog", vec!["--to", "midog", "--mpp", "0.2456"]),
        ("yolo", vec!["--to", "yolo", "--images", s(&hpf)]),
        ("voc", vec!["--to", "voc", "--images", s(&hpf)]),
        ("asap", vec!["--to", "asap"]),
        ("out.csv", vec![]),
    ] {
        let out = tmp.path().join(name);
        let mut args = vec!["convert", s(&src), s(&out)];
        args.extend(extra.iter().copied());
        ok(&args);
        let mut back = vec!["inspect", s(&out), "--json"];
        let fmt_flag;
        if !name.contains('.') {
            fmt_flag = name.to_owned();
            back.extend(["--format", fmt_flag.as_str(), "--mpp", "0.2456"]);
            if name == "yolo" {
                back.extend(["--images", s(&hpf)]);
            }
        }
        let v = json(&back);
        assert_eq!(v["mitoses"], 35, "{name}: {v}");
    }
}

#[test]
fn convert_needs_a_known_output_format() {
    let tmp = tempfile::tempdir().unwrap();
    let t = write(tmp.path(), "t.csv", "image,x,y\na,1,2\n");
    let err = fails(&["convert", s(&t), s(&tmp.path().join("out.weird"))]);
    assert!(err.contains("--to"), "{err}");
    // Onto itself (also by another spelling of the path): refused, the input kept byte for byte.
    let before = std::fs::read(&t).unwrap();
    let same = tmp.path().join(".").join("t.csv");
    let err = fails(&["convert", s(&t), s(&same), "--mitoses-only"]);
    assert!(err.contains("is the input"), "{err}");
    assert_eq!(std::fs::read(&t).unwrap(), before);
}

#[test]
fn convert_replaces_no_file_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let t = write(
        tmp.path(),
        "t.csv",
        "image,x,y
a,1,2
b,3,4
",
    );
    // One file: refused and kept, then replaced with --force.
    let out = write(tmp.path(), "out.geojson", "precious");
    let err = fails(&["convert", s(&t), s(&out)]);
    assert!(err.contains("out.geojson already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
    ok(&["convert", s(&t), s(&out), "--force"]);
    assert!(std::fs::read_to_string(&out).unwrap().contains("FeatureCollection"));
    // A per-image folder: one file of it already there refuses them all;
    // other files in the folder are left alone either way.
    let dir = tmp.path().join("asap");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.xml"), "<precious/>").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = fails(&["convert", s(&t), s(&dir), "--to", "asap"]);
    assert!(err.contains("b.xml already exists"), "{err}");
    assert!(!dir.join("a.xml").exists(), "nothing written when any file would be replaced");
    assert_eq!(std::fs::read_to_string(dir.join("b.xml")).unwrap(), "<precious/>");
    ok(&["convert", s(&t), s(&dir), "--to", "asap", "--force"]);
    assert!(dir.join("a.xml").is_file());
    assert!(std::fs::read_to_string(dir.join("b.xml")).unwrap().contains("ASAP_Annotations"));
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    // Even with --force, a destination that is a folder stops the run
    // before any file moves; a dangling link counts as an existing file.
    let clash = tmp.path().join("clash");
    std::fs::create_dir_all(clash.join("b.xml")).unwrap();
    let err = fails(&["convert", s(&t), s(&clash), "--to", "asap", "--force"]);
    assert!(err.contains("b.xml is a folder"), "{err}");
    assert!(!clash.join("a.xml").exists(), "no half-written folder");
    #[cfg(unix)]
    {
        let linked = tmp.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink("nowhere", linked.join("a.xml")).unwrap();
        let err = fails(&["convert", s(&t), s(&linked), "--to", "asap"]);
        assert!(err.contains("a.xml already exists"), "{err}");
        assert!(std::fs::symlink_metadata(linked.join("a.xml")).unwrap().file_type().is_symlink());
    }
    // A writer's error names the output, not the staging folder, and the
    // folders made for it are gone again.
    let err = fails(&["convert", s(&t), s(&tmp.path().join("new/deep/out")), "--to", "midog"]);
    assert!(err.contains("new/deep/out: ") && !err.contains(".mitoscope-convert"), "{err}");
    assert!(!tmp.path().join("new").exists());
    // No temporary folder is left beside the outputs.
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mitoscope-convert"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

// ---------- eval: hand-worked ----------

/// Truths a (0,0), b (10,0); predictions p1 (5,0) score .9 between them, p2 (14,0) score .5,
/// and an image `c` with a truth but no predictions, `d` with a prediction but no truth.
fn hand_case(dir: &Path) -> (PathBuf, PathBuf) {
    let t = write(dir, "truth.csv", "image,x,y\nm,0,0\nm,10,0\nc,50,50\n");
    let p = write(dir, "pred.csv", "image,x,y,score\nm,5,0,0.9\nm,14,0,0.5\nd,1,1,0.7\n");
    (t, p)
}

#[test]
fn eval_three_rules_hand_worked() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, p) = hand_case(tmp.path());
    let run = |rule: &str, r: &str| {
        json(&["eval", "--truth", s(&t), "--pred", s(&p), "--radius-px", r, "--match", rule, "--json"])
    };
    // greedy: truth (0,0) takes p1 (d=5, inclusive), truth (10,0) takes p2 (d=4).
    let g = run("greedy", "5");
    assert_eq!((g["tp"].as_u64(), g["fp"].as_u64(), g["fn"].as_u64()), (Some(2), Some(1), Some(1)));
    // radius 4.5: truth (0,0) finds nothing; (10,0) takes p2 (4) -> 1 tp.
    let g = run("greedy", "4.5");
    assert_eq!((g["tp"].as_u64(), g["fp"].as_u64(), g["fn"].as_u64()), (Some(1), Some(2), Some(2)));
    let o = run("optimal", "5");
    assert_eq!((o["tp"].as_u64(), o["fp"].as_u64(), o["fn"].as_u64()), (Some(2), Some(1), Some(1)));
    // wang2024 at r = 5: strict; (0,0)'s nearest is p1 at exactly 5 -> not found; (10,0) -> p2 (4) found.
    let w = run("wang2024", "5");
    assert_eq!(w["tp"].as_u64(), Some(1));
    let precision = w["precision"].as_f64().unwrap();
    assert!((precision - 1.0 / 3.0).abs() < 1e-12, "wang2024 precision = TP / predictions: {precision}");
    // per-image rows include the image with truths only and the one with predictions only.
    let images: Vec<&str> = g["per_image"].as_array().unwrap().iter().map(|r| r["image"].as_str().unwrap()).collect();
    assert!(images.contains(&"c") && images.contains(&"d"), "{images:?}");
}

#[test]
fn eval_threshold_and_micron_radius() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, p) = hand_case(tmp.path());
    // Dropping scores below 0.6 removes p2: greedy r=5 -> (0,0) takes p1; (10,0) nothing.
    let v = json(&["eval", "--truth", s(&t), "--pred", s(&p), "--radius-px", "5", "--threshold", "0.6", "--json"]);
    assert_eq!((v["tp"].as_u64(), v["fp"].as_u64(), v["fn"].as_u64()), (Some(1), Some(1), Some(2)));
    // 1.25 µm at 0.25 µm/px is 5 px: same as --radius-px 5.
    let a = json(&["eval", "--truth", s(&t), "--pred", s(&p), "--radius-um", "1.25", "--mpp", "0.25", "--json"]);
    let b = json(&["eval", "--truth", s(&t), "--pred", s(&p), "--radius-px", "5", "--json"]);
    assert_eq!(a["tp"], b["tp"]);
    assert_eq!(a["f1"], b["f1"]);
    let text = ok(&["eval", "--truth", s(&t), "--pred", s(&p), "--radius-px", "5"]);
    assert!(text.contains("pooled") && text.contains("AP"), "{text}");
}

#[test]
fn eval_warns_when_no_image_is_named_alike() {
    let tmp = tempfile::tempdir().unwrap();
    // TUPAC ground truth names the HPF `01_01`; detections named otherwise match nothing.
    std::fs::create_dir_all(tmp.path().join("gt/01")).unwrap();
    write(&tmp.path().join("gt/01"), "01.csv", "100,200\n");
    let p = write(tmp.path(), "p.csv", "image,x,y,score\nhpf-a.tif,200,100,0.9\n");
    let out = common::succeeds(&["eval", "--truth", s(&tmp.path().join("gt")), "--pred", s(&p), "--radius-px", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: no image is named alike") && stderr.contains("'01_01'"), "{stderr}");
    // Detections of one case folder call it `01`: the one truth id ending so, with a note.
    let p = write(tmp.path(), "p1.csv", "image,x,y,score\n01.tif,200,100,0.9\n");
    let out = common::succeeds(&["eval", "--truth", s(&tmp.path().join("gt")), "--pred", s(&p), "--radius-px", "5"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("note: 1 prediction image ids matched") && stderr.contains("'01' -> '01_01'"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stdout.contains("pooled                    1      0      0"), "{stdout}");
    // Named alike: no warning, and the TUPAC row,column lands on x = 200, y = 100.
    let p = write(tmp.path(), "q.csv", "image,x,y,score\n01_01.tif,200,100,0.9\n");
    let out = common::succeeds(&["eval", "--truth", s(&tmp.path().join("gt")), "--pred", s(&p), "--radius-px", "5"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let v = json(&["eval", "--truth", s(&tmp.path().join("gt")), "--pred", s(&p), "--radius-px", "5", "--json"]);
    assert_eq!((v["tp"].as_u64(), v["fp"].as_u64()), (Some(1), Some(0)), "{v}");
    // Some named alike, one not: that one is said, with what it costs.
    let p = write(
        tmp.path(),
        "r.csv",
        "image,x,y,score
01_01.tif,200,100,0.9
02.tif,5,5,0.9
02.tif,9,9,0.8
",
    );
    let out = common::succeeds(&["eval", "--truth", s(&tmp.path().join("gt")), "--pred", s(&p), "--radius-px", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 images with detections are not in the truth (e.g. '02')")
            && stderr.contains("their 2 detections"),
        "{stderr}"
    );
}

// ---------- eval: randomized agreement with a plain reference ----------

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Pt = (f64, f64);

fn dist(a: Pt, b: Pt) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// evalutils score_detection, written from its description.
fn ref_greedy(truth: &[Pt], pred: &[Pt], r: f64) -> usize {
    let mut used = vec![false; pred.len()];
    let mut tp = 0;
    for &t in truth {
        let mut best: Option<(f64, usize)> = None;
        for (j, &p) in pred.iter().enumerate() {
            let d = dist(t, p);
            if !used[j] && d <= r && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, j));
            }
        }
        if let Some((_, j)) = best {
            used[j] = true;
            tp += 1;
        }
    }
    tp
}

/// Maximum matching by exhaustive search (small cases only).
fn ref_optimal(truth: &[Pt], pred: &[Pt], r: f64) -> usize {
    fn go(i: usize, truth: &[Pt], pred: &[Pt], r: f64, used: &mut Vec<bool>) -> usize {
        if i == truth.len() {
            return 0;
        }
        let mut best = go(i + 1, truth, pred, r, used);
        for j in 0..pred.len() {
            if !used[j] && dist(truth[i], pred[j]) <= r {
                used[j] = true;
                best = best.max(1 + go(i + 1, truth, pred, r, used));
                used[j] = false;
            }
        }
        best
    }
    go(0, truth, pred, r, &mut vec![false; pred.len()])
}

fn ref_wang(truth: &[Pt], pred: &[Pt], r: f64) -> usize {
    truth.iter().filter(|&&t| pred.iter().map(|&p| dist(t, p)).fold(f64::INFINITY, f64::min) < r).count()
}

#[test]
fn eval_agrees_with_reference_on_random_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Lcg(42);
    for case in 0..12 {
        let mut truth_csv = String::from("image,x,y\n");
        let mut pred_csv = String::from("image,x,y,score\n");
        let (mut g, mut o, mut w, mut nt, mut np) = (0, 0, 0, 0, 0);
        let r = 4.0 + 6.0 * rng.next();
        for img in 0..4 {
            let n_t = (rng.next() * 6.0) as usize;
            let n_p = (rng.next() * 6.0) as usize;
            // Integer grid so that exact-radius ties happen.
            let truth: Vec<Pt> = (0..n_t).map(|_| ((rng.next() * 20.0).floor(), (rng.next() * 20.0).floor())).collect();
            let pred: Vec<Pt> = (0..n_p).map(|_| ((rng.next() * 20.0).floor(), (rng.next() * 20.0).floor())).collect();
            for t in &truth {
                truth_csv += &format!("i{img},{},{}\n", t.0, t.1);
            }
            for p in &pred {
                pred_csv += &format!("i{img},{},{},{:.3}\n", p.0, p.1, rng.next());
            }
            g += ref_greedy(&truth, &pred, r);
            o += ref_optimal(&truth, &pred, r);
            w += ref_wang(&truth, &pred, r);
            nt += n_t;
            np += n_p;
        }
        let t = write(tmp.path(), &format!("t{case}.csv"), &truth_csv);
        let p = write(tmp.path(), &format!("p{case}.csv"), &pred_csv);
        let rs = format!("{r}");
        for (rule, expect) in [("greedy", g), ("optimal", o), ("wang2024", w)] {
            let v = json(&["eval", "--truth", s(&t), "--pred", s(&p), "--radius-px", &rs, "--match", rule, "--json"]);
            assert_eq!(v["tp"].as_u64(), Some(expect as u64), "case {case} {rule}");
            assert_eq!(v["fn"].as_u64(), Some((nt - expect) as u64), "case {case} {rule}");
            if rule != "wang2024" {
                assert_eq!(v["fp"].as_u64(), Some((np - expect) as u64), "case {case} {rule}");
            }
        }
    }
}

// ---------- grade and segeval ----------

#[test]
fn grade_tupac_convention() {
    // 10 HPF = 2 mm²: 10 mitoses over 2 mm² sits in the 0.50 mm row (<= 7, 8-14, >= 15) -> score 2.
    let v = json(&["grade", "--count", "10", "--area-mm2", "2", "--json"]);
    assert_eq!(v["score"], 2);
    let v = json(&["grade", "--count", "20", "--area-mm2", "2", "--json"]);
    assert_eq!(v["score"], 3);
    fails(&["grade", "--count", "3", "--area-mm2", "0"]);
    // A negative area is refused by the grade, not taken for an option.
    let err = fails(&["grade", "--count", "3", "--area-mm2", "-1"]);
    assert!(err.contains("must be positive") && err.contains("-1"), "{err}");
    // Less than the 10 fields the grade counts: said so.
    let text = ok(&["grade", "--count", "3", "--area-mm2", "0.5"]);
    assert!(text.contains("note: 0.500 mm² is 25% of the 10 fields"), "{text}");
    assert!(!ok(&["grade", "--count", "3", "--area-mm2", "2"]).contains("note:"));
    // The whole count looked up is shown: 14.46 and 14.50 both read 14.5.
    assert!(
        ok(&["grade", "--count", "1446", "--area-mm2", "200"])
            .contains("14.46 per 10 fields of 0.505 mm diameter, counted as 14")
    );
    assert!(
        ok(&["grade", "--count", "29", "--area-mm2", "4"])
            .contains("14.50 per 10 fields of 0.505 mm diameter, counted as 15")
    );
}

#[test]
fn segeval_mask_against_itself_and_empty() {
    let dir = require_data!("icpr2012/mask-patches/masks");
    let v = json(&["segeval", "--truth", s(&dir), "--pred", s(&dir), "--json"]);
    assert_eq!(v["images"], 50);
    assert_eq!(v["pooled_dice"], 1.0);
    assert_eq!(v["mean_object_dice"], 1.0);
}

#[test]
fn segeval_counts_the_figures_of_an_instance_map() {
    // Truth numbers two touching figures 1 and 2; the prediction is their
    // binary union. Pixels agree; objects: two in the truth, one predicted.
    let tmp = tempfile::tempdir().unwrap();
    let (t, p) = (tmp.path().join("t"), tmp.path().join("p"));
    std::fs::create_dir_all(&t).unwrap();
    std::fs::create_dir_all(&p).unwrap();
    let label = |x: u32, y: u32| match (x, y) {
        (4..=9, 4..=11) => 1u8,
        (10..=15, 4..=11) => 2,
        _ => 0,
    };
    image::GrayImage::from_fn(24, 16, |x, y| image::Luma([label(x, y)])).save(t.join("a.png")).unwrap();
    image::GrayImage::from_fn(24, 16, |x, y| image::Luma([if label(x, y) > 0 { 255 } else { 0 }]))
        .save(p.join("a.png"))
        .unwrap();
    let v = json(&["segeval", "--truth", s(&t), "--pred", s(&p), "--json"]);
    assert_eq!(v["pooled_dice"], 1.0);
    let image = &v["per_image"][0];
    assert_eq!((image["truth_objects"].as_u64(), image["pred_objects"].as_u64()), (Some(2), Some(1)), "{v}");
}

#[test]
fn segeval_says_what_it_cannot_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, p) = (tmp.path().join("t"), tmp.path().join("p"));
    std::fs::create_dir_all(&t).unwrap();
    std::fs::create_dir_all(&p).unwrap();
    let m = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([if x < 4 { 255 } else { 0 }]));
    for (dir, name) in [(&t, "a.png"), (&t, "b.png"), (&p, "a.png"), (&p, "b.png"), (&p, "extra.png")] {
        m.save(dir.join(name)).unwrap();
    }
    let o = mitoscope(&["segeval", "--truth", s(&t), "--pred", s(&p), "--json"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("1 predicted masks have no truth mask and are not scored (e.g. extra)")
    );
    // Two masks of one name (a.png and a.jpg) would silently replace each other: refused.
    m.save(p.join("a.jpg")).unwrap();
    let err = fails(&["segeval", "--truth", s(&t), "--pred", s(&p)]);
    assert!(err.contains("are both masks of 'a'"), "{err}");
}

// ---------- bad input: one error line naming the file, non-zero exit ----------

#[test]
fn bad_input_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write(tmp.path(), "good.csv", "image,x,y,score\na,1,2,0.5\n");
    let no_cols = write(tmp.path(), "nocols.csv", "foo,bar\n1,2\n");
    let nan = write(tmp.path(), "nan.csv", "image,x,y,score\na,NaN,2,0.5\n");
    let nan_score = write(tmp.path(), "nanscore.csv", "image,x,y,score\na,1,2,nan\n");
    let neg = write(tmp.path(), "neg.csv", "image,x,y\na,-4,2\n");
    let trunc = write(tmp.path(), "trunc.json", "{\"images\": [{\"id\": 1, \"file_name\": ");
    for bad in [&no_cols, &nan, &nan_score, &neg, &trunc] {
        let name = bad.file_name().unwrap().to_str().unwrap();
        let err = fails(&["eval", "--truth", s(bad), "--pred", s(&good), "--radius-px", "5"]);
        assert!(err.contains(name), "error must name {name}: {err}");
        let err = fails(&["inspect", s(bad)]);
        assert!(err.contains(name), "error must name {name}: {err}");
    }
    let err = fails(&["eval", "--truth", s(&good), "--pred", s(&good), "--radius-um", "8"]);
    assert!(err.contains("--mpp"), "{err}");
    let err = fails(&["inspect", s(&tmp.path().join("missing.csv"))]);
    assert!(err.contains("missing.csv"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(&["inspect", s(&empty)]);
    assert!(err.contains("empty"), "{err}");
    fails(&["eval", "--truth", s(&good), "--pred", s(&good), "--radius-px", "5", "--match", "nearest"]);
    fails(&["eval", "--truth", s(&good), "--pred", s(&good), "--radius-px", "0"]);
}

// ---------- detector commands (embedded default model) ----------

#[test]
fn demo_writes_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let text = ok(&["demo", "--out", s(&out), "--size", "512"]);
    assert!(text.to_lowercase().contains("synthetic"), "{text}");
    let csv = std::fs::read_to_string(out.join("detections.csv")).unwrap();
    assert_eq!(csv.lines().next(), Some("image,x,y,score"));
    for name in ["detections.geojson", "candidates.csv", "README.txt", "asap/synthetic-hpf.xml"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    assert!(std::fs::read_dir(out.join("overlays")).unwrap().count() >= 1);
    // The demo's detections file is valid input to eval.
    let v = json(&[
        "eval",
        "--truth",
        s(&out.join("synthetic-truth.csv")),
        "--pred",
        s(&out.join("detections.csv")),
        "--radius-px",
        "30",
        "--json",
    ]);
    assert!(v["f1"].as_f64().is_some());
}

#[test]
fn detect_processes_good_inputs_despite_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let (img, _) = mitoscope_detect::synthetic::render_hpf(3, 300);
    img.save(inputs.join("good.png")).unwrap();
    image::DynamicImage::ImageRgb8(img.clone()).to_luma8().save(inputs.join("gray.png")).unwrap();
    image::imageops::crop_imm(&img, 0, 0, 10, 10).to_image().save(inputs.join("speck.png")).unwrap();
    std::fs::write(inputs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out = tmp.path().join("out");
    let o =
        mitoscope(&["detect", s(&inputs), "--out", s(&out), "--format", "csv,geojson,midog,overlay", "--mpp", "0.25"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a failed input must give a non-zero exit");
    assert!(stderr.contains("broken.png") && !stderr.contains("panicked"), "{stderr}");
    // The grayscale input is scored, with a warning that names it (and only it).
    let warned: Vec<&str> = stderr.lines().filter(|l| l.contains("grayscale image (no colour)")).collect();
    assert!(warned.len() == 1 && warned[0].contains("gray.png"), "{stderr}");
    // So is a 10 x 10 px speck (2.5 µm), said to be smaller than what stage 2 looks at.
    let warned: Vec<&str> = stderr.lines().filter(|l| l.contains("µm the classifier looks at")).collect();
    assert!(warned.len() == 1 && warned[0].contains("speck.png"), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("good:") && stdout.contains("gray:") && stdout.contains("total:"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("detections.csv")).unwrap();
    assert_eq!(csv.lines().next(), Some("image,x,y,score"));
    // run.json says what made the folder, and a report finds the model there by itself.
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let model = run["model"].as_str().unwrap().to_owned();
    assert!(model.starts_with("mitoscope-default"), "{run}");
    assert!(run["command"].as_str().unwrap().contains("detect"), "{run}");
    assert_eq!((run["images"].as_u64(), run["failures"].as_u64()), (Some(3), Some(1)));
    let html = out.join("report.html");
    ok(&[
        "report",
        "--pred",
        s(&out.join("detections.csv")),
        "--images",
        s(&inputs),
        "--mpp",
        "0.25",
        "--out",
        s(&html),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains(&model), "the report names the model from run.json");
}

#[test]
fn same_stem_inputs_keep_separate_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, _) = mitoscope_detect::synthetic::render_hpf(5, 200);
    for dir in ["a", "b"] {
        std::fs::create_dir(tmp.path().join(dir)).unwrap();
        img.save(tmp.path().join(dir).join("x.png")).unwrap();
    }
    let out = tmp.path().join("out");
    let text = ok(&[
        "detect",
        s(&tmp.path().join("a")),
        s(&tmp.path().join("b")),
        "--out",
        s(&out),
        "--format",
        "overlay,masks",
    ]);
    assert!(text.contains("a_x:") && text.contains("b_x:"), "{text}");
    for id in ["a_x", "b_x"] {
        assert!(out.join("overlays").join(format!("{id}.png")).is_file(), "{id} overlay");
        let mask = image::open(out.join("masks").join(format!("{id}.png"))).unwrap();
        assert_eq!((mask.width(), mask.height()), (200, 200));
    }
}

#[test]
fn classify_scores_real_crops() {
    let dir = require_data!("amibr/patches/normal");
    let mut crops: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    crops.sort();
    let crops: Vec<&str> = crops.iter().take(4).map(|p| s(p)).collect();
    let mut args = vec!["classify", "--json"];
    args.extend(crops.iter().copied());
    let v = json(&args);
    let scores: Vec<f64> = v.as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert_eq!(scores.len(), 4);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    // The CSV lines quote a path holding a comma or a quote.
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join("a,\"b.png");
    std::fs::copy(crops[0], &odd).unwrap();
    let out = mitoscope(&["classify", s(&odd)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!((&rows[0][0], rows[0].len()), (s(&odd), 2), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("smaller than"), "a full crop is not warned of");
    // A crop well under the classifier's is scored, with a warning naming it.
    let tiny = tmp.path().join("tiny.png");
    image::imageops::crop_imm(&image::open(crops[0]).unwrap().to_rgb8(), 44, 44, 40, 40)
        .to_image()
        .save(&tiny)
        .unwrap();
    let out = mitoscope(&["classify", s(&tiny)]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tiny.png: the image is 10 µm across") && stderr.contains("--mpp"), "{stderr}");
}

#[test]
fn bad_model_file_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write(tmp.path(), "junk.bundle", "definitely not a model");
    let (img, _) = mitoscope_detect::synthetic::render_hpf(1, 64);
    let input = tmp.path().join("a.png");
    img.save(&input).unwrap();
    let err = fails(&["detect", s(&input), "--out", s(&tmp.path().join("o")), "--model", s(&model)]);
    assert!(err.contains("junk.bundle"), "{err}");
    let err =
        fails(&["detect", s(&input), "--out", s(&tmp.path().join("o")), "--model", s(&tmp.path().join("none.bundle"))]);
    assert!(err.contains("none.bundle"), "{err}");
}

#[test]
fn eval_leaves_out_an_image_whose_mask_cannot_be_used() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("ds");
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::create_dir_all(d.join("masks")).unwrap();
    for id in ["a", "b"] {
        image::RgbImage::from_pixel(64, 48, image::Rgb([200, 120, 180]))
            .save(d.join(format!("images/{id}.png")))
            .unwrap();
    }
    // b: one mitosis at (10.5, 10.5); a: a mask that is not an image.
    let mask = image::GrayImage::from_fn(64, 48, |x, y| {
        image::Luma([if (9..12).contains(&x) && (9..12).contains(&y) { 255 } else { 0 }])
    });
    mask.save(d.join("masks/b.png")).unwrap();
    std::fs::write(d.join("masks/a.png"), "garbage").unwrap();
    let pred = write(tmp.path(), "p.csv", "image,x,y,score\na,20,20,0.9\nb,10,10,0.9\n");
    let o = mitoscope(&["eval", "--truth", s(&d), "--pred", s(&pred), "--radius-px", "5", "--json"]);
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("image a is left out of the evaluation") && stderr.contains("masks/a.png"), "{stderr}");
    // a's detection is not a false positive: only b is scored, and its detection matches.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["tp"].as_u64(), v["fp"].as_u64(), v["n_images"].as_u64()), (Some(1), Some(0), Some(1)), "{v}");
}
