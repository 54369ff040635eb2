//! A local browser tool to review mitosis detections on one HPF or slide.
//!
//! [`ReviewServer::start`] opens the image or slide, loads (or resumes) the
//! review state ([`state::Decisions`]) and serves, on loopback by default:
//!
//! | route | what |
//! |---|---|
//! | `GET /` , `/app.js`, `/app.css` | the viewer, embedded in the binary |
//! | `GET /api/info` | image size, pyramid, mpp |
//! | `GET /api/state` | items with decisions, filter, live count and score |
//! | `GET /tile/Z/X/Y.jpg` | deep-zoom tiles ([`tiles`]) |
//! | `POST /api/decide` `{id, decision}` | accept / reject / undo |
//! | `POST /api/add` `{x, y}` | add a missed mitosis |
//! | `POST /api/filter` `{min_score}` | score filter |
//! | `GET /api/export/{csv,geojson,midog,asap}` | the corrected set, as a download |
//!
//! Nothing else is served: the routes are fixed, tiles are computed from the
//! opened file, and no part of a request becomes a file-system path. Requests
//! holding `..`, `%` (percent-encoding), `\` or `//` are refused before
//! routing. On loopback the `Host` header must name loopback (a page on
//! another site cannot reach the tool through DNS rebinding), and POSTs must
//! be `application/json` (which a cross-site form cannot send).
//!
//! Every change is saved at once, atomically, to the decisions file.
#![deny(missing_docs)]

pub mod http;
pub mod state;
pub mod tiles;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http::{Request, Response};
use mitoscope_annotations::AnnotationSet;
use mitoscope_formats::{Format, WriteOptions};
use mitoscope_geom::Mpp;
use serde::Deserialize;

use state::{Decision, Decisions};
use tiles::TileSource;

/// Why the review tool could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Bad input: a request body, a decisions file, a point outside the image.
    #[error("{0}")]
    BadInput(String),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] mitoscope_imaging::ImagingError),
    /// The slide could not be read.
    #[error(transparent)]
    Slide(#[from] mitoscope_slide::SlideError),
    /// Writing the decisions or an export failed.
    #[error(transparent)]
    Format(#[from] mitoscope_formats::FormatError),
    /// The address could not be bound (in use, not permitted, ...).
    #[error("cannot listen on {addr}: {message} (pick another --port, or --port 0 for any free one)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        message: String,
    },
    /// A worker panicked while holding the state.
    #[error("internal state lock poisoned")]
    Poisoned,
}

/// How to start the tool.
#[derive(Debug, Clone)]
pub struct ReviewOptions {
    /// The HPF image or slide to review.
    pub path: PathBuf,
    /// Detections to review (their image id must be the file stem of `path`,
    /// unless the file holds only one image).
    pub pred: Option<AnnotationSet>,
    /// The decisions file: resumed when it exists, else created.
    pub decisions: PathBuf,
    /// Address to listen on (port 0: any free port).
    pub bind: SocketAddr,
    /// Microns per pixel, when the file does not say (HPF images never do).
    pub mpp: Option<Mpp>,
}

/// The default decisions file for `path`: `<stem>.review.json` in the
/// current folder.
pub fn default_decisions_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.review.json", image_id(path)))
}

/// The image identifier of a file: its stem.
pub fn image_id(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// Opens the image and the review state without serving: what both the
/// server and a command-line export need.
pub fn open_review(opts: &ReviewOptions) -> Result<(TileSource, Decisions, bool), ReviewError> {
    let tiles = TileSource::open(&opts.path)?;
    let id = image_id(&opts.path);
    let mpp =
        opts.mpp.or(tiles.slide_mpp()).or_else(|| opts.pred.as_ref().and_then(|p| p.image(&id)).and_then(|i| i.mpp));
    if opts.decisions.exists() {
        let mut d = Decisions::load(&opts.decisions)?;
        if d.image != id || (d.width, d.height) != tiles.size() {
            return Err(ReviewError::BadInput(format!(
                "{}: these decisions are for image {:?} ({} x {}), not {:?} ({} x {}); give another --decisions file",
                opts.decisions.display(),
                d.image,
                d.width,
                d.height,
                id,
                tiles.size().0,
                tiles.size().1
            )));
        }
        // Same stem and size is not the same image: case folders often name their
        // HPFs alike. A saved source that is still there must be this file.
        let here = std::fs::canonicalize(&opts.path).unwrap_or_else(|_| opts.path.clone());
        match std::fs::canonicalize(&d.source) {
            Ok(saved) if saved != here => {
                return Err(ReviewError::BadInput(format!(
                    "{}: these decisions are for {}, not {} (same name and size, another file); \
                     give another --decisions file",
                    opts.decisions.display(),
                    saved.display(),
                    here.display()
                )));
            }
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "{}: made for {}, which is no longer there; resuming it on {} (same name and size)",
                opts.decisions.display(),
                d.source.display(),
                here.display()
            ),
        }
        if opts.pred.is_some() {
            tracing::warn!(
                "{}: resuming the saved review; --pred is not re-read (delete the file or give another \
                 --decisions to start from these detections)",
                opts.decisions.display()
            );
        }
        // A resolution given now is the one to use (a resumed file may have none).
        if let Some(m) = opts.mpp {
            d.mpp = Some(m.get());
        }
        return Ok((tiles, d, true));
    }
    let source = std::fs::canonicalize(&opts.path).unwrap_or_else(|_| opts.path.clone());
    let d = Decisions::new(&id, &source, tiles.size(), mpp, opts.pred.as_ref())?;
    Ok((tiles, d, false))
}

/// The export formats the tool writes.
pub fn export_format(name: &str) -> Option<Format> {
    match name {
        "csv" => Some(Format::Csv),
        "geojson" => Some(Format::GeoJson),
        "midog" | "json" => Some(Format::MidogPoints),
        "asap" | "xml" => Some(Format::Asap),
        _ => None,
    }
}

fn export_extension(format: Format) -> &'static str {
    match format {
        Format::GeoJson => "geojson",
        Format::MidogPoints => "json",
        Format::Asap => "xml",
        _ => "csv",
    }
}

/// Writes the corrected set to `path` in `format` with the project's writers.
pub fn export_to(decisions: &Decisions, path: &Path, format: Format) -> Result<(), ReviewError> {
    let opts = WriteOptions { mpp: decisions.mpp.and_then(|m| Mpp::new(m).ok()), polygons: false };
    mitoscope_formats::write(&decisions.corrected(), path, format, &opts)?;
    Ok(())
}

/// The corrected set as file bytes, and a file name for it.
fn export_bytes(decisions: &Decisions, format: Format) -> Result<(Vec<u8>, String), ReviewError> {
    let name = format!("{}.reviewed.{}", decisions.image, export_extension(format));
    let dir = tempfile::tempdir().map_err(|e| ReviewError::Io { path: std::env::temp_dir(), source: e })?;
    let path = dir.path().join(&name);
    export_to(decisions, &path, format).map_err(|e| {
        // The temporary file means nothing to the reviewer: name the download.
        ReviewError::BadInput(e.to_string().replace(&path.display().to_string(), &name))
    })?;
    let bytes = std::fs::read(&path).map_err(|e| ReviewError::Io { path: path.clone(), source: e })?;
    Ok((bytes, name))
}

/// A request that is refused before routing, or not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Why, in words.
    pub message: String,
}

/// The fixed routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The page.
    Index,
    /// The script.
    Script,
    /// The style sheet.
    Style,
    /// Image facts.
    Info,
    /// Items and summary.
    State,
    /// One tile.
    Tile {
        /// Level (0 = full resolution).
        z: u32,
        /// Column.
        col: u64,
        /// Row.
        row: u64,
    },
    /// Set a verdict.
    Decide,
    /// Add a point.
    Add,
    /// Set the score filter.
    Filter,
    /// Download the corrected set.
    Export(Format),
}

fn refuse(status: u16, message: &str) -> Refusal {
    Refusal { status, message: message.to_owned() }
}

/// Maps a request line to a route. Anything that looks like a path trick is
/// refused with 400 before matching; unknown paths are 404.
pub fn route(method: &str, url: &str) -> Result<Route, Refusal> {
    if !url.starts_with('/') || url.len() > 512 {
        return Err(refuse(400, "refused: not an origin-form path"));
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    if url.contains("..")
        || url.contains('%')
        || url.contains('\\')
        || path.contains("//")
        || url.chars().any(|c| c.is_control() || c == ':')
    {
        return Err(refuse(400, "refused: traversal, encoded or absolute paths are never served"));
    }
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    let r = match path {
        "/" | "/index.html" if get => Route::Index,
        "/app.js" if get => Route::Script,
        "/app.css" if get => Route::Style,
        "/api/info" if get => Route::Info,
        "/api/state" if get => Route::State,
        "/api/decide" if post => Route::Decide,
        "/api/add" if post => Route::Add,
        "/api/filter" if post => Route::Filter,
        p if get && p.starts_with("/api/export/") => Route::Export(
            export_format(&p["/api/export/".len()..]).ok_or_else(|| refuse(404, "no such export format"))?,
        ),
        p if get && p.starts_with("/tile/") => {
            parse_tile(&p["/tile/".len()..]).ok_or_else(|| refuse(404, "no such tile"))?
        }
        "/" | "/index.html" | "/app.js" | "/app.css" | "/api/info" | "/api/state" | "/api/decide" | "/api/add"
        | "/api/filter" => return Err(refuse(405, "method not allowed")),
        _ => return Err(refuse(404, "not found")),
    };
    Ok(r)
}

/// `Z/X/Y.jpg`, digits only.
fn parse_tile(rest: &str) -> Option<Route> {
    let rest = rest.strip_suffix(".jpg")?;
    let mut parts = rest.split('/');
    let num = |s: Option<&str>| -> Option<u64> {
        let s = s?;
        if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (z, col, row) = (num(parts.next())?, num(parts.next())?, num(parts.next())?);
    if parts.next().is_some() || z > 40 {
        return None;
    }
    Some(Route::Tile { z: z as u32, col, row })
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

struct App {
    tiles: TileSource,
    state: Mutex<Decisions>,
    decisions_path: PathBuf,
    /// `Host` header values accepted; `None` = any (bound off loopback).
    allowed_hosts: Option<Vec<String>>,
}

/// A running review server.
pub struct ReviewServer {
    server: http::Server,
    resumed: bool,
    decisions_path: PathBuf,
}

/// The `Host` values a server bound to `addr` answers: on loopback (any
/// 127.x address, `::1`, or the IPv4-mapped form of either) the names of
/// loopback and the bound address, with the port (and without it on port
/// 80, as browsers send it); off loopback `None`, any host (the user chose
/// to expose the tool, and was warned).
pub fn allowed_hosts(addr: SocketAddr) -> Option<Vec<String>> {
    let ip = addr.ip().to_canonical();
    if !ip.is_loopback() {
        return None;
    }
    let bound = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned(), "[::1]".to_owned()];
    if !names.contains(&bound) {
        names.push(bound);
    }
    let port = addr.port();
    let mut hosts: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    if port == 80 {
        hosts.extend(names);
    }
    Some(hosts)
}

impl ReviewServer {
    /// Opens the file and the review state, binds, saves the state (so the
    /// file exists from the start) and starts serving in the background.
    pub fn start(opts: ReviewOptions) -> Result<Self, ReviewError> {
        let (tiles, decisions, resumed) = open_review(&opts)?;
        let bind_err = |e: std::io::Error| ReviewError::Bind { addr: opts.bind, message: e.to_string() };
        let listener = std::net::TcpListener::bind(opts.bind).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        // Saved only once the address is ours, so a failed start leaves no file.
        decisions.save(&opts.decisions)?;
        let allowed_hosts = allowed_hosts(addr);
        let app = App { tiles, state: Mutex::new(decisions), decisions_path: opts.decisions.clone(), allowed_hosts };
        let server = http::Server::start(listener, move |rq| handle(&app, rq)).map_err(bind_err)?;
        Ok(Self { server, resumed, decisions_path: opts.decisions })
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr())
    }

    /// Whether a saved review was resumed.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The decisions file.
    pub fn decisions_path(&self) -> &Path {
        &self.decisions_path
    }

    /// Serves until the process ends.
    pub fn wait(self) {
        self.server.wait()
    }

    /// Stops serving.
    pub fn shutdown(self) {
        self.server.shutdown()
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>, extra: &[(&str, &str)]) -> Response {
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), content_type.into()),
        ("X-Content-Type-Options".into(), "nosniff".into()),
        ("Referrer-Policy".into(), "no-referrer".into()),
        ("X-Frame-Options".into(), "DENY".into()),
        (
            "Content-Security-Policy".into(),
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
                .into(),
        ),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Response { status, headers, body }
}

fn json(status: u16, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    respond(status, "application/json", body, &[("Cache-Control", "no-store")])
}

fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn state_json(d: &Decisions) -> serde_json::Value {
    serde_json::json!({ "min_score": d.min_score, "items": d.items, "summary": d.summary() })
}

fn handle(app: &App, rq: Request) -> Response {
    let (method, url) = (rq.method.as_str(), rq.url.as_str());
    tracing::debug!("{method} {url}");
    let route = match route(method, url) {
        Ok(r) => r,
        Err(refusal) => {
            tracing::debug!("{method} {url}: {}", refusal.message);
            return error(refusal.status, &refusal.message);
        }
    };
    if let Some(allowed) = &app.allowed_hosts {
        let host = rq.header("Host");
        if !host.is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(h))) {
            return error(403, "refused: Host is not this tool's loopback address");
        }
    }
    match route {
        Route::Index => respond(200, "text/html; charset=utf-8", INDEX_HTML.into(), &[("Cache-Control", "no-store")]),
        Route::Script => {
            respond(200, "text/javascript; charset=utf-8", APP_JS.into(), &[("Cache-Control", "no-store")])
        }
        Route::Style => respond(200, "text/css; charset=utf-8", APP_CSS.into(), &[("Cache-Control", "no-store")]),
        Route::Info => {
            let Ok(d) = app.state.lock() else { return error(500, "state lock poisoned") };
            let (w, h) = app.tiles.size();
            let name = app.tiles.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let v = serde_json::json!({
                "image": d.image, "file": name, "width": w, "height": h, "mpp": d.mpp,
                "tile_size": tiles::TILE, "max_level": app.tiles.max_level(), "slide": app.tiles.is_slide(),
                "decisions": app.decisions_path.display().to_string(),
            });
            drop(d);
            json(200, &v)
        }
        Route::State => {
            let Ok(d) = app.state.lock() else { return error(500, "state lock poisoned") };
            let v = state_json(&d);
            drop(d);
            json(200, &v)
        }
        Route::Tile { z, col, row } => match app.tiles.tile(z, col, row) {
            Ok(Some(bytes)) => {
                respond(200, "image/jpeg", bytes.to_vec(), &[("Cache-Control", "private, max-age=3600")])
            }
            Ok(None) => error(404, "no such tile"),
            Err(e) => {
                tracing::warn!("tile {z}/{col}/{row}: {e}");
                error(500, &e.to_string())
            }
        },
        Route::Export(format) => {
            let result = match app.state.lock() {
                Ok(d) => export_bytes(&d, format),
                Err(_) => Err(ReviewError::Poisoned),
            };
            match result {
                Ok((bytes, name)) => {
                    let ct = match format {
                        Format::Csv => "text/csv; charset=utf-8",
                        Format::Asap => "application/xml",
                        _ => "application/json",
                    };
                    // The name comes from the image's file name: quotes and control characters out.
                    let name = mitoscope_formats::file_safe_name(&name);
                    let disp = format!("attachment; filename=\"{name}\"");
                    respond(200, ct, bytes, &[("Content-Disposition", &disp), ("Cache-Control", "no-store")])
                }
                Err(e) => error(409, &e.to_string()),
            }
        }
        Route::Decide | Route::Add | Route::Filter => {
            let is_json =
                rq.header("Content-Type").is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
            if !is_json {
                return error(415, "POST bodies must be application/json");
            }
            let result = mutate(app, route, &rq.body);
            match result {
                Ok(v) => json(200, &v),
                Err(e) => error(400, &e.to_string()),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    id: u64,
    decision: Decision,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    x: f64,
    y: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    min_score: f64,
}

/// Applies a change and saves the state before answering; on a failed save
/// the change is rolled back, so what the page shows is what is on disk.
fn mutate(app: &App, route: Route, body: &[u8]) -> Result<serde_json::Value, ReviewError> {
    let bad = |e: serde_json::Error| ReviewError::BadInput(format!("bad request body: {e}"));
    let mut d = app.state.lock().map_err(|_| ReviewError::Poisoned)?;
    let before = d.clone();
    let mut added = None;
    match route {
        Route::Decide => {
            let b: DecideBody = serde_json::from_slice(body).map_err(bad)?;
            d.decide(b.id, b.decision)?;
        }
        Route::Add => {
            let b: AddBody = serde_json::from_slice(body).map_err(bad)?;
            added = Some(d.add(b.x, b.y)?);
        }
        Route::Filter => {
            let b: FilterBody = serde_json::from_slice(body).map_err(bad)?;
            d.set_min_score(b.min_score)?;
        }
        _ => return Err(ReviewError::BadInput("not a change".into())),
    }
    if let Err(e) = d.save(&app.decisions_path) {
        *d = before;
        return Err(e);
    }
    let mut v = state_json(&d);
    if let Some(id) = added {
        v["added"] = serde_json::json!(id);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling_checks_the_host_and_answers_its_own_url() {
        let hosts = |a: &str| allowed_hosts(a.parse().unwrap());
        let v4 = hosts("127.0.0.1:8765").unwrap();
        assert!(v4.contains(&"localhost:8765".to_owned()) && !v4.contains(&"evil.example:8765".to_owned()));
        assert!(hosts("127.0.0.2:9000").unwrap().contains(&"127.0.0.2:9000".to_owned()), "its own URL");
        assert!(hosts("[::ffff:127.0.0.1]:9000").unwrap().contains(&"[::ffff:127.0.0.1]:9000".to_owned()));
        assert!(hosts("127.0.0.1:80").unwrap().contains(&"127.0.0.1".to_owned()), "port 80 is left out by browsers");
        assert_eq!(hosts("0.0.0.0:8765"), None);
        assert_eq!(hosts("192.168.1.5:8765"), None);
    }

    #[test]
    fn fixed_routes() {
        assert_eq!(route("GET", "/"), Ok(Route::Index));
        assert_eq!(route("GET", "/app.js?v=1"), Ok(Route::Script));
        assert_eq!(route("GET", "/tile/3/1/2.jpg"), Ok(Route::Tile { z: 3, col: 1, row: 2 }));
        assert_eq!(route("GET", "/api/export/midog"), Ok(Route::Export(Format::MidogPoints)));
        assert_eq!(route("POST", "/api/decide"), Ok(Route::Decide));
        assert_eq!(route("GET", "/api/decide").unwrap_err().status, 405);
        assert_eq!(route("GET", "/tile/1/2.jpg").unwrap_err().status, 404);
        assert_eq!(route("GET", "/tile/a/1/2.jpg").unwrap_err().status, 404);
        assert_eq!(route("GET", "/tile/1/+2/2.jpg").unwrap_err().status, 404);
        assert_eq!(route("GET", "/api/export/asap"), Ok(Route::Export(Format::Asap)));
        assert_eq!(route("GET", "/api/export/pdf").unwrap_err().status, 404);
        assert_eq!(route("GET", "/etc/passwd").unwrap_err().status, 404);
    }

    #[test]
    fn traversal_is_refused_before_routing() {
        for url in [
            "/../../etc/passwd",
            "/tile/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/tile/0/0/0.jpg%00",
            "/..%2f..%2fetc/passwd",
            "/..\\..\\windows\\win.ini",
            "//etc/passwd",
            "/app.js?f=../../etc/passwd",
            "/C:/Windows/win.ini",
            "etc/passwd",
            "http://127.0.0.1/etc/passwd",
            "/%c0%ae%c0%ae/etc/passwd",
        ] {
            let r = route("GET", url);
            assert_eq!(r.as_ref().map_err(|e| e.status), Err(400), "{url}: {r:?}");
        }
    }
}
