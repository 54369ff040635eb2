//! `mitoscope report` and `mitoscope review` end to end: the binary makes a
//! report on a real HPF, serves the review tool on it, and headless Chromium
//! (Debian's /usr/bin/chromium, driven by e2e/review.mjs through
//! playwright-core) rejects a detection, adds one and exports; the exported
//! file, the decisions file and two screenshots are checked here. Plus the
//! command-line error paths, which need no browser.
//!
//! Without Chromium, Node or e2e/node_modules the browser test prints SKIP,
//! unless MITOSCOPE_REQUIRE_DATA=1 or CI is set (as `.ci/run` does), where it
//! fails: CI installs them, so a skip there would hide a broken set-up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mitoscope_testdata::require_data;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mitoscope"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mitoscope {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command that must fail with one clean `error:` line, no panic.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "mitoscope {args:?} should fail");
    assert!(!stderr.contains("panicked"), "panic on bad input: {stderr}");
    assert!(stderr.lines().last().is_some_and(|l| l.starts_with("error: ")), "expected an error line: {stderr}");
    stderr
}

fn required() -> bool {
    std::env::var("MITOSCOPE_REQUIRE_DATA").is_ok_and(|v| v == "1") || std::env::var_os("CI").is_some()
}

/// Skips loudly, or fails where the browser stack is required.
fn missing(what: &str) {
    let msg = format!("{what}; CI installs it through .ci/run (apt-get install chromium; npm ci in e2e/)");
    if required() {
        panic!("{msg}, and MITOSCOPE_REQUIRE_DATA=1 / CI requires it");
    }
    eprintln!("SKIP: {msg}");
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Kills the server when the test ends, pass or fail.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three detections on A00_00: two on real mitoses (scores 0.8, 0.7) and a
/// confident false positive (0.9), which `space` selects first and the
/// browser rejects.
fn write_pred(dir: &Path, data: &Path) -> (PathBuf, Vec<(f64, f64)>) {
    let truth = std::fs::read_to_string(data.join("centroids.csv")).unwrap();
    let pts: Vec<(f64, f64)> = truth
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("A00_00"))
        .take(2)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(pts.len(), 2);
    let fp = (400.0, 1700.0);
    let csv = format!(
        "image,x,y,score\nA00_00,{},{},0.9\nA00_00,{},{},0.8\nA00_00,{},{},0.7\n",
        fp.0,
        fp.1,
        pts[0].0 + 2.0,
        pts[0].1,
        pts[1].0,
        pts[1].1 - 2.0
    );
    let p = dir.join("pred.csv");
    std::fs::write(&p, csv).unwrap();
    (p, vec![fp, (pts[0].0 + 2.0, pts[0].1), (pts[1].0, pts[1].1 - 2.0)])
}

/// Not blank: many distinct colours and real contrast.
fn assert_rendered(png: &Path) {
    let img = image::open(png).unwrap_or_else(|e| panic!("{}: {e}", png.display())).to_rgb8();
    assert!(img.width() >= 800 && img.height() >= 600, "{}: {}x{}", png.display(), img.width(), img.height());
    let mut colours = std::collections::HashSet::new();
    let (mut sum, mut sum2, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for p in img.pixels() {
        colours.insert((p[0] >> 3, p[1] >> 3, p[2] >> 3));
        let l = 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        sum += l;
        sum2 += l * l;
        n += 1.0;
    }
    let sd = (sum2 / n - (sum / n).powi(2)).max(0.0).sqrt();
    assert!(colours.len() >= 50, "{}: only {} distinct colours", png.display(), colours.len());
    assert!(sd >= 15.0, "{}: luminance sd {sd:.1}", png.display());
}

#[test]
fn report_and_review_in_headless_chromium() {
    let data = require_data!("icpr2012");
    let chromium =
        std::env::var_os("MITOSCOPE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    let e2e = workspace_root().join("e2e");
    if !chromium.is_file() {
        return missing(&format!("no Chromium at {}", chromium.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return missing("no node on PATH");
    }
    if !e2e.join("node_modules/playwright-core/package.json").is_file() {
        return missing(&format!("no {}/node_modules/playwright-core", e2e.display()));
    }

    let dir = tempfile::tempdir().unwrap();
    let (pred, placed) = write_pred(dir.path(), &data);
    let pred_s = pred.to_str().unwrap();
    let report = dir.path().join("report.html");
    let truth = data.join("centroids.csv");
    let hpf = data.join("hpf");
    let printed = ok(&[
        "report",
        "--pred",
        pred_s,
        "--truth",
        truth.to_str().unwrap(),
        "--images",
        hpf.to_str().unwrap(),
        "--radius-um",
        "8",
        "--mpp",
        "0.2456",
        "--model",
        "e2e-test-model",
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(printed.contains("5 images, 3 detections"), "{printed}");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("e2e-test-model") && html.contains("--radius-um 8"), "model and command line recorded");
    assert!(html.contains("id=\"img-A00_00\""));

    // Start the server on a free port; it prints its URL first thing.
    let decisions = dir.path().join("A00_00.review.json");
    let image = hpf.join("A00_00.jpg");
    let child = bin()
        .args(["review", image.to_str().unwrap(), "--pred", pred_s, "--port", "0", "--mpp", "0.2456", "--decisions"])
        .arg(&decisions)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mitoscope review");
    let mut server = Server(child);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));

    let out = dir.path().join("e2e");
    std::fs::create_dir_all(&out).unwrap();
    let mut node = Command::new("node")
        .current_dir(&e2e)
        .args(["review.mjs", "--url", url, "--report"])
        .arg(&report)
        .arg("--out")
        .arg(&out)
        .env("MITOSCOPE_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = node.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            panic!("e2e/review.mjs did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let node_out = node.wait_with_output().unwrap();
    assert!(
        status.success(),
        "e2e/review.mjs failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&node_out.stdout),
        String::from_utf8_lossy(&node_out.stderr)
    );
    drop(server);

    // The browser rejected the 0.9 false positive and added a point at (1000, 1000).
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["rejected"], 0, "{result}");
    assert_eq!(result["suggested_filename"], "A00_00.reviewed.csv");
    assert_eq!(result["count_text"], "3", "live count: 2 kept + 1 added");

    let csv = std::fs::read_to_string(out.join("exported.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("image,x,y,score,class"), "{csv}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows.iter().all(|r| r[0] == "A00_00" && r[4] == "mitosis"), "{csv}");
    let xy = |r: &Vec<&str>| (r[1].parse::<f64>().unwrap(), r[2].parse::<f64>().unwrap());
    assert!(!rows.iter().any(|r| r[3] == "0.9"), "rejected detection exported: {csv}");
    for (k, score) in [(1, "0.8"), (2, "0.7")] {
        let row = rows.iter().find(|r| r[3] == score).unwrap_or_else(|| panic!("no {score} row: {csv}"));
        let (x, y) = xy(row);
        assert!((x - placed[k].0).abs() < 0.01 && (y - placed[k].1).abs() < 0.01, "{csv}");
    }
    let added = rows.iter().find(|r| r[3].is_empty()).unwrap_or_else(|| panic!("no added row: {csv}"));
    let (x, y) = xy(added);
    assert!((x - 1000.0).abs() < 6.0 && (y - 1000.0).abs() < 6.0, "added at ({x}, {y})");

    // Saved as it happened, and resumable.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&decisions).unwrap()).unwrap();
    assert_eq!(saved["items"][0]["decision"], "rejected");
    assert_eq!(saved["items"][3]["origin"], "added");
    let geo = dir.path().join("again.geojson");
    let printed = ok(&[
        "review",
        image.to_str().unwrap(),
        "--decisions",
        decisions.to_str().unwrap(),
        "--export",
        geo.to_str().unwrap(),
    ]);
    assert!(printed.contains("exported 3 mitoses"), "{printed}");
    let geo: serde_json::Value = serde_json::from_slice(&std::fs::read(&geo).unwrap()).unwrap();
    assert_eq!(geo["features"].as_array().unwrap().len(), 3);
    let xml = dir.path().join("again.xml");
    let args = ["review", image.to_str().unwrap(), "--decisions", decisions.to_str().unwrap(), "--export"];
    ok(&[&args[..], &[xml.to_str().unwrap()]].concat());
    let asap = mitoscope_formats::read(&xml, None, &Default::default()).unwrap();
    assert_eq!(asap.images[0].objects.len(), 3, "the ASAP export holds the corrected set");

    assert_rendered(&out.join("review.png"));
    assert_rendered(&out.join("report.png"));
}

#[test]
fn report_and_review_bad_input_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("r.html");
    let out_s = out.to_str().unwrap();
    let err = fails(&["report", "--pred", d.join("nope.csv").to_str().unwrap(), "--out", out_s]);
    assert!(err.contains("nope.csv"), "{err}");
    let bad = d.join("bad.csv");
    std::fs::write(&bad, "image,x,y,score\nA,12,not-a-number,0.5\n").unwrap();
    let err = fails(&["report", "--pred", bad.to_str().unwrap(), "--out", out_s]);
    assert!(err.contains("bad.csv"), "{err}");
    let good = d.join("good.csv");
    std::fs::write(&good, "image,x,y,score\nA,12,13,0.5\n").unwrap();
    let err = fails(&["report", "--pred", good.to_str().unwrap(), "--truth", good.to_str().unwrap(), "--out", out_s]);
    assert!(err.contains("radius"), "{err}");
    let err = fails(&[
        "report",
        "--pred",
        good.to_str().unwrap(),
        "--images",
        d.join("no-dir").to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(err.contains("no-dir"), "{err}");
    assert!(!out.exists());
    // Without images or truth: still a report (counts only).
    let printed = ok(&["report", "--pred", good.to_str().unwrap(), "--out", out_s]);
    assert!(printed.contains("1 images, 1 detections"), "{printed}");
    // A report it wrote is written over; an input, a folder or a file of the
    // user's is not, and is left as it was.
    ok(&["report", "--pred", good.to_str().unwrap(), "--out", out_s]);
    let copy = d.join("copy.csv");
    std::fs::copy(&good, &copy).unwrap();
    let err = fails(&["report", "--pred", copy.to_str().unwrap(), "--out", copy.to_str().unwrap()]);
    assert!(err.contains("would write over the input"), "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&good).unwrap());
    let notes = d.join("notes.html");
    std::fs::write(&notes, "<html>my notes</html>").unwrap();
    let err = fails(&["report", "--pred", good.to_str().unwrap(), "--out", notes.to_str().unwrap()]);
    assert!(err.contains("not a report this tool wrote"), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "<html>my notes</html>");
    let err = fails(&["report", "--pred", good.to_str().unwrap(), "--out", d.to_str().unwrap()]);
    assert!(err.contains("is a folder"), "{err}");

    let img = d.join("A.png");
    image::RgbImage::from_pixel(300, 300, image::Rgb([200, 100, 150])).save(&img).unwrap();
    let err = fails(&["review", d.join("missing.png").to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("missing.png"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dec = d.join("A.review.json");
    let err = fails(&["review", img.to_str().unwrap(), "--port", &port, "--decisions", dec.to_str().unwrap()]);
    assert!(err.contains("cannot listen on"), "{err}");
    let err = fails(&["review", img.to_str().unwrap(), "--pred", bad.to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("bad.csv"), "{err}");
    let err = fails(&["review", img.to_str().unwrap(), "--export", d.join("x.pdf").to_str().unwrap()]);
    assert!(err.contains("x.pdf"), "{err}");
    let csv = d.join("out.csv");
    let printed = ok(&[
        "review",
        img.to_str().unwrap(),
        "--pred",
        good.to_str().unwrap(),
        "--decisions",
        dec.to_str().unwrap(),
        "--export",
        csv.to_str().unwrap(),
    ]);
    assert!(printed.contains("exported 1 mitoses"), "{printed}");
    assert!(std::fs::read_to_string(&csv).unwrap().contains("A,12,13,0.5,mitosis"));
    // Exporting one image's review over the --pred file would drop every other image's rows.
    let multi = d.join("multi.csv");
    std::fs::write(&multi, "image,x,y,score\nA,12,13,0.5\nB,5,5,0.9\n").unwrap();
    let err = fails(&[
        "review",
        img.to_str().unwrap(),
        "--pred",
        multi.to_str().unwrap(),
        "--decisions",
        dec.to_str().unwrap(),
        "--export",
        multi.to_str().unwrap(),
    ]);
    assert!(err.contains("--pred file"), "{err}");
    assert!(std::fs::read_to_string(&multi).unwrap().contains("B,5,5,0.9"));
    let err = fails(&["review", img.to_str().unwrap(), "--export", d.join("./A.png").to_str().unwrap()]);
    assert!(err.contains("image under review"), "{err}");

    // Two cases whose HPFs share a name and a size: a review saved for one is not resumed on the other.
    for (case, colour) in [("caseA", [200, 100, 150]), ("caseB", [150, 100, 200])] {
        std::fs::create_dir_all(d.join(case)).unwrap();
        image::RgbImage::from_pixel(300, 300, image::Rgb(colour)).save(d.join(case).join("HPF1.png")).unwrap();
    }
    let shared = d.join("HPF1.review.json");
    let opts = mitoscope_review::ReviewOptions {
        path: d.join("caseA/HPF1.png"),
        pred: None,
        decisions: shared.clone(),
        bind: "127.0.0.1:0".parse().unwrap(),
        mpp: None,
    };
    let (_, decisions, _) = mitoscope_review::open_review(&opts).unwrap();
    decisions.save(&shared).unwrap();
    let s_ = |p: &Path| p.to_str().unwrap().to_owned();
    let (b, a, dec_s) = (s_(&d.join("caseB/HPF1.png")), s_(&d.join("caseA/HPF1.png")), s_(&shared));
    let err = fails(&["review", &b, "--decisions", &dec_s, "--export", &s_(&d.join("b.csv"))]);
    assert!(err.contains("another file") && err.contains("caseA"), "{err}");
    // An export over the decisions file would lose the review.
    let before = std::fs::read(&shared).unwrap();
    let err = fails(&["review", &a, "--decisions", &dec_s, "--export", &dec_s]);
    assert!(err.contains("over the decisions file"), "{err}");
    assert_eq!(std::fs::read(&shared).unwrap(), before);
    // Resumed with --pred: said on stderr that the detections given are not read.
    let out = run(&[
        "review",
        &a,
        "--decisions",
        &dec_s,
        "--pred",
        good.to_str().unwrap(),
        "--export",
        &s_(&d.join("a.csv")),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pred is not re-read"));
}
