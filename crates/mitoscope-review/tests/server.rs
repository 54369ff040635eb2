//! The review server over real HTTP on loopback: fixed routes work, changes
//! are saved and resumed, exports hold the corrected set, and requests for
//! anything outside the served file are refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use mitoscope_annotations::{Annotation, AnnotationSet, ObjectClass};
use mitoscope_geom::{Mpp, Point};
use mitoscope_review::{ReviewOptions, ReviewServer};

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// Sends `raw` (request line and headers up to, not including, the blank
/// line) and reads the whole answer. Raw bytes on purpose: an HTTP client
/// would normalise `..` and percent-escapes away before they reach the server.
fn raw(addr: SocketAddr, request_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{request_line}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Resp { status, head, body: out[split + 4..].to_vec() }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    let host = format!("127.0.0.1:{}", addr.port());
    raw(addr, &format!("GET {path} HTTP/1.1"), &[("Host", &host)], b"")
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Resp {
    let host = format!("127.0.0.1:{}", addr.port());
    raw(
        addr,
        &format!("POST {path} HTTP/1.1"),
        &[("Host", &host), ("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

fn hpf(dir: &Path) -> std::path::PathBuf {
    let img = image::RgbImage::from_fn(600, 400, |x, y| image::Rgb([200, (x % 200) as u8, (y % 200) as u8]));
    let p = dir.join("field_01.png");
    img.save(&p).unwrap();
    p
}

fn pred() -> AnnotationSet {
    let mut s = AnnotationSet::default();
    for (x, y, score) in [(100.0, 100.0, 0.95), (300.0, 200.0, 0.6), (500.0, 300.0, 0.3)] {
        s.image_mut_or_insert("field_01")
            .objects
            .push(Annotation::point(Point::new(x, y), ObjectClass::Mitosis).with_score(score));
    }
    s
}

fn options(dir: &Path, image: &Path) -> ReviewOptions {
    ReviewOptions {
        path: image.to_owned(),
        pred: Some(pred()),
        decisions: dir.join("field_01.review.json"),
        bind: "127.0.0.1:0".parse().unwrap(),
        mpp: Some(Mpp::new(0.25).unwrap()),
    }
}

#[test]
fn review_round_trip_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let image = hpf(dir.path());
    let server = ReviewServer::start(options(dir.path(), &image)).unwrap();
    assert!(!server.resumed());
    let addr = server.addr();
    assert!(addr.ip().is_loopback());

    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<canvas id=\"view\""));
    assert!(page.head.to_ascii_lowercase().contains("content-security-policy"));
    assert_eq!(get(addr, "/app.js").status, 200);
    let info = get(addr, "/api/info").json();
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64(), info["max_level"].as_u64()),
        (Some(600), Some(400), Some(2))
    );
    let tile = get(addr, "/tile/0/0/0.jpg");
    assert_eq!(tile.status, 200);
    assert!(tile.body.starts_with(&[0xFF, 0xD8]), "a JPEG");
    assert_eq!(get(addr, "/tile/0/9/0.jpg").status, 404);

    // Decide, add, filter: each answer is the new state, already on disk.
    let s = post(addr, "/api/decide", r#"{"id": 0, "decision": "rejected"}"#).json();
    assert_eq!(s["summary"]["rejected"], 1);
    let s = post(addr, "/api/add", r#"{"x": 50.5, "y": 60}"#).json();
    assert_eq!(s["added"], 3);
    let s = post(addr, "/api/filter", r#"{"min_score": 0.5}"#).json();
    assert_eq!(s["summary"]["count"], 2, "0.6 pending + the added point");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("field_01.review.json")).unwrap()).unwrap();
    assert_eq!(saved["min_score"], 0.5);
    assert_eq!(saved["items"][0]["decision"], "rejected");

    // Bad changes are refused with a message and change nothing.
    assert_eq!(post(addr, "/api/add", r#"{"x": 5000, "y": 1}"#).status, 400);
    assert_eq!(post(addr, "/api/decide", r#"{"id": 42, "decision": "accepted"}"#).status, 400);
    assert_eq!(post(addr, "/api/decide", "not json").status, 400);
    let host = format!("127.0.0.1:{}", addr.port());
    let form = raw(
        addr,
        "POST /api/filter HTTP/1.1",
        &[("Host", &host), ("Content-Type", "text/plain")],
        b"{\"min_score\":0}",
    );
    assert_eq!(form.status, 415, "a cross-site form cannot post");

    let csv = get(addr, "/api/export/csv");
    assert_eq!(csv.status, 200);
    assert!(csv.head.contains("field_01.reviewed.csv"));
    let text = csv.text();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().any(|r| r.starts_with("field_01,300,200,0.6")), "{text}");
    assert!(rows.iter().any(|r| r.starts_with("field_01,50.5,60,")), "{text}");
    let geo = get(addr, "/api/export/geojson").json();
    assert_eq!(geo["features"].as_array().unwrap().len(), 2);
    let midog = get(addr, "/api/export/midog").json();
    assert_eq!(midog["points"].as_array().unwrap().len(), 2);
    let asap = get(addr, "/api/export/asap");
    assert!(asap.head.contains("field_01.reviewed.xml"), "{}", asap.head);
    let back = mitoscope_formats::asap::parse(asap.text().as_bytes(), std::path::Path::new("x.xml")).unwrap().0;
    assert_eq!((back.image.as_str(), back.objects.len()), ("field_01", 2));
    server.shutdown();

    // Without µm/px the MIDOG export (in mm) is refused, naming the download,
    // not the temporary file it was written through.
    let no_mpp = tempfile::tempdir().unwrap();
    let server = ReviewServer::start(ReviewOptions { mpp: None, ..options(no_mpp.path(), &image) }).unwrap();
    let refused = get(server.addr(), "/api/export/midog");
    let body = refused.text();
    assert_eq!(refused.status, 409, "{body}");
    let error = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("field_01.reviewed.json: ") && error.contains("give --mpp"), "{body}");
    server.shutdown();

    // A restart resumes the saved review (even with --pred given again).
    let again = ReviewServer::start(options(dir.path(), &image)).unwrap();
    assert!(again.resumed());
    let s = get(again.addr(), "/api/state").json();
    assert_eq!(s["summary"]["count"], 2);
    assert_eq!(s["items"].as_array().unwrap().len(), 4);
    again.shutdown();
}

#[test]
fn requests_outside_the_served_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = hpf(dir.path());
    std::fs::write(dir.path().join("secret.txt"), "do not serve").unwrap();
    let server = ReviewServer::start(options(dir.path(), &image)).unwrap();
    let addr = server.addr();
    for path in [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/tile/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..\\secret.txt",
        "//etc/passwd",
        "/app.js?x=../../secret.txt",
        "/tile/0/0/0.jpg%00.txt",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 400, "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("do not serve") && !r.text().contains("root:"), "{path}");
    }
    for path in
        ["/secret.txt", "/field_01.png", "/field_01.review.json", "/etc/passwd", "/assets/app.js", "/src/lib.rs"]
    {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    // Absolute-form and non-origin request targets.
    let host = format!("127.0.0.1:{}", addr.port());
    for line in
        ["GET /etc/passwd HTTP/1.1", "GET file:///etc/passwd HTTP/1.1", "GET http://127.0.0.1/../secret.txt HTTP/1.1"]
    {
        let r = raw(addr, line, &[("Host", &host)], b"");
        assert!(r.status == 400 || r.status == 404, "{line}: {}", r.status);
        assert!(!r.text().contains("root:"));
    }
    // DNS rebinding: a foreign Host is refused even for a valid route.
    let r = raw(addr, "GET /api/state HTTP/1.1", &[("Host", "evil.example:80")], b"");
    assert_eq!(r.status, 403);
    server.shutdown();
}

#[test]
fn port_in_use_and_bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let image = hpf(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut opts = options(dir.path(), &image);
    opts.bind = taken.local_addr().unwrap();
    let err = ReviewServer::start(opts).err().expect("port in use");
    assert!(err.to_string().contains("cannot listen on"), "{err}");

    let mut opts = options(dir.path(), &dir.path().join("missing.png"));
    opts.decisions = dir.path().join("m.json");
    assert!(ReviewServer::start(opts).err().unwrap().to_string().contains("missing.png"));

    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xFF\xD8 not really").unwrap();
    let mut opts = options(dir.path(), &broken);
    opts.decisions = dir.path().join("b.json");
    assert!(ReviewServer::start(opts).err().unwrap().to_string().contains("broken.jpg"));

    // Decisions saved for another image are not silently reused.
    let other = dir.path().join("field_02.png");
    std::fs::copy(&image, &other).unwrap();
    let first = ReviewServer::start(options(dir.path(), &image)).unwrap();
    first.shutdown();
    let mut opts = options(dir.path(), &other);
    opts.pred = None;
    let err = ReviewServer::start(opts).err().unwrap();
    assert!(err.to_string().contains("these decisions are for image \"field_01\""), "{err}");
}

#[test]
fn real_hpf_tiles() {
    let data = mitoscope_testdata::require_data!("icpr2012");
    let dir = tempfile::tempdir().unwrap();
    let opts = ReviewOptions {
        path: data.join("hpf/A00_00.jpg"),
        pred: None,
        decisions: dir.path().join("A00_00.review.json"),
        bind: "127.0.0.1:0".parse().unwrap(),
        mpp: Some(Mpp::new(0.2456).unwrap()),
    };
    let server = ReviewServer::start(opts).unwrap();
    let info = get(server.addr(), "/api/info").json();
    assert_eq!(info["width"], 2084);
    assert_eq!(info["max_level"], 4);
    for path in ["/tile/4/0/0.jpg", "/tile/0/8/8.jpg", "/tile/2/2/2.jpg"] {
        let t = get(server.addr(), path);
        assert_eq!(t.status, 200, "{path}");
        let img = image::load_from_memory(&t.body).unwrap();
        assert!(img.width() > 0);
    }
    let s = get(server.addr(), "/api/state").json();
    assert_eq!(s["summary"]["count"], 0);
    assert!(s["summary"]["area_mm2"].as_f64().unwrap() > 0.26);
    server.shutdown();
}
