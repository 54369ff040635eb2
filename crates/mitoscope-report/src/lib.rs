//! Self-contained HTML reports of mitosis detections.
//!
//! [`build`] turns predictions (and, optionally, ground truth and the images
//! or slide they refer to) into one HTML file with everything embedded:
//!
//! - a summary: images, detections, density per mm² and the Nottingham
//!   mitotic score when the area is known; with truth, pooled precision,
//!   recall, F1, average precision, FROC score, best-F1 threshold and count
//!   errors;
//! - a per-image table, sortable by count or error (a few lines of inline JS);
//! - thumbnails with detections drawn: true positives, false positives and
//!   misses in distinct colours when truth is given;
//! - a crop gallery per class of error (most confident false positives first);
//! - PR and FROC curves as inline SVG ([`svg`]);
//! - the exact command line, model and input files that made it.
//!
//! Images are base64 JPEG `data:` URLs, so the one file can be mailed or
//! archived; an image that cannot be read is reported as a warning and the
//! rest of the report is still built.
#![deny(missing_docs)]

mod pixels;
pub mod svg;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use mitoscope_annotations::AnnotationSet;
use mitoscope_eval::{EvalConfig, EvalReport, MatchRule, evaluate, inputs_from_sets, match_image};
use mitoscope_geom::{Mpp, Point};

use pixels::Pixels;

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Evaluation against the truth failed (bad radius, NaN coordinates, ...).
    #[error("evaluating against the ground truth: {0}")]
    Eval(#[from] mitoscope_eval::EvalError),
    /// Ground truth was given without a match radius.
    #[error("ground truth needs a match radius (--radius-px R, or --radius-um R with --mpp M)")]
    NoRadius,
    /// An image or slide could not be read or encoded.
    #[error("{}: {message}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The slide could not be opened.
    #[error(transparent)]
    Slide(#[from] mitoscope_slide::SlideError),
    /// The report could not be written.
    #[error(transparent)]
    Write(#[from] mitoscope_formats::FormatError),
}

/// Where the pixels behind the annotations are.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ImageSource {
    /// No images: numbers, table and curves only.
    #[default]
    None,
    /// A folder holding `<image id>.<ext>` for each image.
    Dir(PathBuf),
    /// One whole slide; it serves the image whose id is the slide's file stem
    /// (or the only image of the predictions).
    Slide(PathBuf),
}

/// What made the results, recorded verbatim in the report.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The command line that made the report, as typed.
    pub command_line: String,
    /// Model name or bundle that made the predictions, when known.
    pub model: Option<String>,
    /// The predictions file.
    pub pred_path: String,
    /// The ground-truth file, when given.
    pub truth_path: Option<String>,
    /// Tool name and version (`mitoscope 0.1.0`).
    pub tool: String,
}

/// Sizes and limits.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    /// Longest side of a thumbnail, px.
    pub thumb_px: u32,
    /// Side of a gallery crop, px (of the image).
    pub crop_px: u32,
    /// Crops shown per class (most informative first).
    pub max_crops: usize,
    /// Images shown as thumbnails at most (those with the most errors, or
    /// without truth the most detections): each is ~200 KB in the file, so a
    /// run over thousands of HPFs would otherwise make a report of gigabytes.
    pub max_thumbnails: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self { thumb_px: 560, crop_px: 96, max_crops: 24, max_thumbnails: 48 }
    }
}

/// Everything [`build`] reads.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// Predictions (image ids = file stems).
    pub pred: &'a AnnotationSet,
    /// Ground truth, if any.
    pub truth: Option<&'a AnnotationSet>,
    /// Images or slide.
    pub images: ImageSource,
    /// Match radius in pixels (needed with truth; also the circle size drawn).
    pub radius_px: Option<f64>,
    /// Matching rule.
    pub rule: MatchRule,
    /// Predictions scoring below this are left out of everything but the curves.
    pub threshold: Option<f64>,
    /// Microns per pixel for images that state none.
    pub mpp: Option<Mpp>,
    /// What made the results.
    pub provenance: Provenance,
    /// Sizes and limits.
    pub options: ReportOptions,
}

/// The headline numbers, also returned to the caller for printing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Images reported.
    pub images: usize,
    /// Detections kept (after the threshold).
    pub detections: usize,
    /// Area of the images whose size and mpp are known, mm².
    pub area_mm2: Option<f64>,
    /// Detections per mm² over that area.
    pub density_per_mm2: Option<f64>,
    /// Nottingham mitotic score (10 HPF = 2 mm²) of the detections over that area.
    pub mitotic_score: Option<u8>,
    /// Ground-truth mitoses, when truth is given.
    pub truths: Option<usize>,
    /// Pooled (precision, recall, F1), when truth is given.
    pub prf: Option<(f64, f64, f64)>,
    /// Average precision, when truth is given.
    pub average_precision: Option<f64>,
    /// What the density and score rest on, where it is less than they seem
    /// (a slide's glass, an area under the grade's 10 HPFs); printed with them.
    pub caveats: Vec<String>,
}

/// A built report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The HTML document.
    pub html: String,
    /// The headline numbers.
    pub summary: Summary,
    /// Non-fatal problems (an image not found or unreadable), also shown in the report.
    pub warnings: Vec<String>,
}

/// What an object on a thumbnail or in the gallery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A detection, no truth given.
    Detection,
    /// A detection matching a truth.
    Tp,
    /// A detection matching no truth.
    Fp,
    /// A truth no detection matched.
    Fn,
}

impl Kind {
    fn rgb(self) -> Rgb<u8> {
        // Colour-blind-safe-ish: green / red-orange / blue, magenta without truth.
        match self {
            Kind::Detection => Rgb([228, 0, 160]),
            Kind::Tp => Rgb([26, 152, 80]),
            Kind::Fp => Rgb([215, 48, 39]),
            Kind::Fn => Rgb([43, 110, 200]),
        }
    }
    fn css(self) -> String {
        let Rgb([r, g, b]) = self.rgb();
        format!("#{r:02x}{g:02x}{b:02x}")
    }
    fn label(self) -> &'static str {
        match self {
            Kind::Detection => "detections",
            Kind::Tp => "true positives",
            Kind::Fp => "false positives",
            Kind::Fn => "misses (false negatives)",
        }
    }
}

struct Object {
    point: Point,
    kind: Kind,
    score: Option<f64>,
}

struct ImageRow {
    id: String,
    n_pred: usize,
    n_truth: usize,
    tp: usize,
    fp: usize,
    fn_: usize,
    size: Option<(u64, u64)>,
    mpp: Option<Mpp>,
    objects: Vec<Object>,
    thumb: Option<String>,
}

impl ImageRow {
    fn area_mm2(&self) -> Option<f64> {
        let (w, h) = self.size?;
        Some(self.mpp?.area_mm2(w as f64, h as f64))
    }
}

struct Crop {
    image: usize,
    object: usize,
    url: Option<String>,
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Builds the report. Fails only on invalid numbers (from evaluation) or an
/// unopenable slide; unreadable images become warnings.
pub fn build(input: &ReportInput) -> Result<Report, ReportError> {
    let empty = AnnotationSet::default();
    let truth = input.truth.unwrap_or(&empty);
    let has_truth = input.truth.is_some();
    let mut inputs = inputs_from_sets(truth, input.pred);
    if let Some(t) = input.threshold {
        // The curves below use every prediction; the evaluation drops them itself.
        for img in &mut inputs {
            img.pred.retain(|p| p.score >= t);
        }
    }
    let eval: Option<EvalReport> = if has_truth {
        let radius_px = input.radius_px.ok_or(ReportError::NoRadius)?;
        let all = inputs_from_sets(truth, input.pred);
        Some(evaluate(&all, &EvalConfig { radius_px, rule: input.rule, threshold: input.threshold })?)
    } else {
        None
    };
    let mut warnings = Vec::new();
    let mut rows: Vec<ImageRow> = inputs
        .iter()
        .map(|inp| {
            let ann = input.pred.image(&inp.image).or_else(|| truth.image(&inp.image));
            let size = ann.and_then(|a| Some((a.width? as u64, a.height? as u64)));
            let mpp = input
                .pred
                .image(&inp.image)
                .and_then(|a| a.mpp)
                .or_else(|| truth.image(&inp.image).and_then(|a| a.mpp))
                .or(input.mpp);
            let mut row = ImageRow {
                id: inp.image.clone(),
                n_pred: inp.pred.len(),
                n_truth: inp.truth.len(),
                tp: 0,
                fp: 0,
                fn_: 0,
                size,
                mpp,
                objects: Vec::new(),
                thumb: None,
            };
            if let (true, Some(r)) = (has_truth, input.radius_px) {
                let pts: Vec<Point> = inp.pred.iter().map(|p| p.point).collect();
                let m = match_image(&inp.truth, &pts, r, input.rule);
                for (j, p) in inp.pred.iter().enumerate() {
                    let kind = if m.pred_matched[j] { Kind::Tp } else { Kind::Fp };
                    row.objects.push(Object { point: p.point, kind, score: Some(p.score) });
                }
                for (i, t) in inp.truth.iter().enumerate() {
                    if m.truth_to_pred[i].is_none() {
                        row.objects.push(Object { point: *t, kind: Kind::Fn, score: None });
                    }
                }
                (row.tp, row.fp, row.fn_) = (m.tp, m.fp, m.fn_);
            } else {
                for p in &inp.pred {
                    row.objects.push(Object { point: p.point, kind: Kind::Detection, score: Some(p.score) });
                }
            }
            row
        })
        .collect();

    let mut crops = pick_crops(&rows, input.options.max_crops);
    render_pixels(input, &mut rows, &mut crops, &mut warnings)?;

    let mut summary = summarise(&rows, eval.as_ref());
    if matches!(input.images, ImageSource::Slide(_)) {
        // A slide's grade comes from its hotspot over tissue, not the whole
        // image's average with the glass: `mitoscope slide` measures both.
        summary.mitotic_score = None;
        if summary.area_mm2.is_some() {
            summary.caveats.push(
                "density is over the whole slide image, glass included, and no mitotic score is given: \
                 `mitoscope slide` measures density over tissue and the score in the hotspot"
                    .into(),
            );
        }
    } else if let (Some(area), Some(_)) = (summary.area_mm2, summary.mitotic_score) {
        // The grade counts 10 HPFs (about 2 mm²); a smaller area is scaled up.
        if area < PROTOCOL_AREA_MM2 {
            summary.caveats.push(format!(
                "the mitotic score is from {area:.3} mm², less than the {PROTOCOL_AREA_MM2} mm² (10 HPFs) the grade \
                 counts; the count is scaled up, so one mitosis more or less can change it"
            ));
        }
    }
    let html = render_html(input, &rows, &crops, eval.as_ref(), &summary, &warnings);
    Ok(Report { html, summary, warnings })
}

/// Chooses the gallery crops: per class, the most informative first (false
/// positives by descending score, true positives by ascending score, misses
/// in order), capped at `max`. Returns (class, crops, total in class).
fn pick_crops(rows: &[ImageRow], max: usize) -> Vec<(Kind, Vec<Crop>, usize)> {
    let kinds = if rows.iter().any(|r| r.objects.iter().any(|o| o.kind != Kind::Detection)) {
        vec![Kind::Fp, Kind::Fn, Kind::Tp]
    } else {
        vec![Kind::Detection]
    };
    kinds
        .into_iter()
        .map(|kind| {
            let mut all: Vec<(usize, usize, f64)> = rows
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    r.objects
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.kind == kind)
                        .map(move |(j, o)| (i, j, o.score.unwrap_or(0.0)))
                })
                .collect();
            match kind {
                Kind::Fp | Kind::Detection => all.sort_by(|a, b| b.2.total_cmp(&a.2)),
                Kind::Tp => all.sort_by(|a, b| a.2.total_cmp(&b.2)),
                Kind::Fn => {}
            }
            let total = all.len();
            let crops = all.into_iter().take(max).map(|(image, object, _)| Crop { image, object, url: None }).collect();
            (kind, crops, total)
        })
        .collect()
}

/// Indices of the rows drawn as thumbnails: all when they are at most `max`,
/// else the `max` with the most errors (FP + FN), then the most detections.
fn thumbnailed_rows(rows: &[ImageRow], max: usize) -> std::collections::BTreeSet<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(rows[i].fp + rows[i].fn_), std::cmp::Reverse(rows[i].n_pred), i));
    order.into_iter().take(max).collect()
}

/// Loads each image once (bounded memory), draws its thumbnail and cuts its crops.
fn render_pixels(
    input: &ReportInput,
    rows: &mut [ImageRow],
    crops: &mut [(Kind, Vec<Crop>, usize)],
    warnings: &mut Vec<String>,
) -> Result<(), ReportError> {
    let slide = match &input.images {
        ImageSource::Slide(path) => Some((mitoscope_slide::open(path)?, path.clone())),
        _ => None,
    };
    let slide_target = slide.as_ref().map(|(_, path)| {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if rows.iter().any(|r| r.id == stem) || rows.len() != 1 { stem } else { rows[0].id.clone() }
    });
    if let Some(target) = &slide_target
        && !rows.iter().any(|r| &r.id == target)
    {
        let named: Vec<&str> = rows.iter().take(3).map(|r| r.id.as_str()).collect();
        warnings.push(format!(
            "no image of the report is named '{target}' like the slide (they are named e.g. {named:?}): \
             nothing is drawn from the slide"
        ));
    }
    let mut slide = slide.map(|(s, _)| s);
    let radius = input.radius_px.unwrap_or(24.0);
    let thumbnailed = thumbnailed_rows(rows, input.options.max_thumbnails);
    let image_finder = std::cell::OnceCell::new();
    let finder = |dir: &std::path::Path| image_finder.get_or_init(|| pixels::ImageFinder::new(dir));
    for (i, row) in rows.iter_mut().enumerate() {
        let wants_crops = crops.iter().any(|(_, list, _)| list.iter().any(|c| c.image == i));
        if !thumbnailed.contains(&i) && !wants_crops {
            // Neither drawn nor cut from: only its size is read (for the area), from the header.
            if let ImageSource::Dir(dir) = &input.images {
                match finder(dir).find(&row.id).map(|p| image::image_dimensions(&p).map_err(|e| (p, e))) {
                    Ok(Ok((w, h))) => {
                        row.size.get_or_insert((u64::from(w), u64::from(h)));
                    }
                    Ok(Err((p, e))) => warnings.push(format!("image {}: {}: {e}", row.id, p.display())),
                    Err(why) => warnings.push(format!("image {}: {why}", row.id)),
                }
            }
            continue;
        }
        let pixels = match &input.images {
            ImageSource::None => continue,
            ImageSource::Dir(dir) => match finder(dir).find(&row.id) {
                Err(why) => {
                    warnings.push(format!("image {}: {why}", row.id));
                    continue;
                }
                Ok(path) => match mitoscope_imaging::read_image(&path) {
                    Ok(img) => Pixels::Image(img),
                    Err(e) => {
                        warnings.push(e.to_string());
                        continue;
                    }
                },
            },
            ImageSource::Slide(_) => {
                if slide_target.as_deref() != Some(row.id.as_str()) {
                    continue;
                }
                match slide.take() {
                    Some(s) => Pixels::Slide(s),
                    None => continue,
                }
            }
        };
        let (w, h) = pixels.size();
        row.size.get_or_insert((w, h));
        if let Pixels::Slide(s) = &pixels
            && input.pred.image(&row.id).and_then(|a| a.mpp).is_none()
            && input.mpp.is_none()
        {
            row.mpp = Some(s.mpp().mpp);
        }
        if thumbnailed.contains(&i) {
            match pixels.thumbnail(input.options.thumb_px) {
                Ok((mut thumb, scale)) => {
                    draw_objects(&mut thumb, &row.objects, scale, (radius * scale).max(5.0));
                    match pixels::jpeg_data_url(&thumb, 85) {
                        Ok(url) => row.thumb = Some(url),
                        Err(e) => warnings.push(format!("image {}: {e}", row.id)),
                    }
                }
                Err(e) => warnings.push(format!("image {}: {e}", row.id)),
            }
        }
        for (_, list, _) in crops.iter_mut() {
            for c in list.iter_mut().filter(|c| c.image == i) {
                let o = &row.objects[c.object];
                match pixels.crop(o.point.x, o.point.y, input.options.crop_px) {
                    Ok(mut img) => {
                        let half = input.options.crop_px as f64 / 2.0;
                        let obj = Object { point: Point::new(half, half), kind: o.kind, score: None };
                        draw_objects(&mut img, std::slice::from_ref(&obj), 1.0, (radius.min(half - 2.0)).max(4.0));
                        c.url = pixels::jpeg_data_url(&img, 88).ok();
                    }
                    Err(e) => warnings.push(format!("image {}: crop: {e}", row.id)),
                }
            }
        }
    }
    Ok(())
}

fn draw_objects(img: &mut RgbImage, objects: &[Object], scale: f64, radius: f64) {
    let r = radius.round().max(2.0) as i32;
    for o in objects {
        let c = ((o.point.x * scale).round() as i32, (o.point.y * scale).round() as i32);
        for dr in 0..2 {
            imageproc::drawing::draw_hollow_circle_mut(img, c, r + dr, o.kind.rgb());
        }
        if o.kind == Kind::Fn {
            // Misses also get a cross, so they read apart from hits in grey scale.
            let k = (r / 2).max(2) as f32;
            let (x, y) = (c.0 as f32, c.1 as f32);
            imageproc::drawing::draw_line_segment_mut(img, (x - k, y), (x + k, y), o.kind.rgb());
            imageproc::drawing::draw_line_segment_mut(img, (x, y - k), (x, y + k), o.kind.rgb());
        }
    }
}

/// The area the Nottingham grade counts mitoses over: 10 HPFs, about 2 mm².
const PROTOCOL_AREA_MM2: f64 = 2.0;

fn summarise(rows: &[ImageRow], eval: Option<&EvalReport>) -> Summary {
    let detections = rows.iter().map(|r| r.n_pred).sum();
    let areas: Vec<(f64, usize)> = rows.iter().filter_map(|r| Some((r.area_mm2()?, r.n_pred))).collect();
    let area: f64 = areas.iter().map(|a| a.0).sum();
    let counted: usize = areas.iter().map(|a| a.1).sum();
    let (area_mm2, density, score) = if area > 0.0 {
        let score = mitoscope_eval::score::mitotic_score(counted, area, Default::default()).ok().map(|s| s.score);
        (Some(area), Some(counted as f64 / area), score)
    } else {
        (None, None, None)
    };
    Summary {
        images: rows.len(),
        detections,
        area_mm2,
        density_per_mm2: density,
        mitotic_score: score,
        truths: eval.map(|e| e.n_truth),
        prf: eval.map(|e| (e.pooled.precision, e.pooled.recall, e.pooled.f1)),
        average_precision: eval.map(|e| e.average_precision),
        caveats: Vec::new(),
    }
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f6f6f4}
header{background:#3b2a4a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h2{font-size:16px;margin:4px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px;background:#fafafa}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{cursor:pointer;user-select:none;background:#f0eef3}th.sorted-asc::after{content:" \25B2"}th.sorted-desc::after{content:" \25BC"}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;border-radius:50%;border:3px solid;margin-right:4px;vertical-align:-3px}
.thumbs{display:flex;flex-wrap:wrap;gap:12px}.thumb{margin:0;border:1px solid #ddd;padding:6px;background:#fafafa}.thumb img{display:block;max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:6px}.gallery figure{margin:0;font-size:11px;text-align:center}.gallery img{display:block;width:96px;height:96px;image-rendering:auto;border:3px solid}
.charts{display:flex;flex-wrap:wrap;gap:16px}
pre{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:8px;border-radius:4px}
.warn{color:#a04000}
"#;

/// Sorting the per-image table: click a header; numbers sort numerically.
const SORT_JS: &str = r#"
document.querySelectorAll('table.sortable').forEach(function(t){
  var ths=t.querySelectorAll('th');
  ths.forEach(function(th,col){th.addEventListener('click',function(){
    var desc=!th.classList.contains('sorted-desc');
    ths.forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
    th.classList.add(desc?'sorted-desc':'sorted-asc');
    var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;
      var nx=parseFloat(x),ny=parseFloat(y),c;
      if(!isNaN(nx)&&!isNaN(ny)){c=nx-ny}else{c=String(x).localeCompare(String(y))}
      return desc?-c:c});
    rows.forEach(function(r){body.appendChild(r)});
  })});
});
"#;

fn card(out: &mut String, value: &str, label: &str) {
    let _ = write!(out, r#"<div class="card"><b>{}</b><span>{}</span></div>"#, esc(value), esc(label));
}

fn render_html(
    input: &ReportInput,
    rows: &[ImageRow],
    crops: &[(Kind, Vec<Crop>, usize)],
    eval: Option<&EvalReport>,
    summary: &Summary,
    warnings: &[String],
) -> String {
    let mut h = String::with_capacity(1 << 20);
    let title = format!("Mitoscope report: {}", input.provenance.pred_path);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"generator\" content=\"{GENERATOR}\"><title>{}</title><style>{CSS}</style></head><body><header><h1>{}</h1></header><main>",
        esc(&title),
        esc(&title)
    );

    // Summary.
    h.push_str(r#"<section id="summary"><h2>Summary</h2><div class="cards">"#);
    card(&mut h, &summary.images.to_string(), "images");
    card(&mut h, &summary.detections.to_string(), "detections");
    if summary.images > 0 {
        card(&mut h, &format!("{:.2}", summary.detections as f64 / summary.images as f64), "detections per image");
    }
    if let (Some(a), Some(d)) = (summary.area_mm2, summary.density_per_mm2) {
        card(&mut h, &format!("{d:.2}"), &format!("per mm² (over {a:.3} mm²)"));
    }
    if let Some(s) = summary.mitotic_score {
        card(&mut h, &s.to_string(), "mitotic score (10 HPF = 2 mm²)");
    }
    if let Some(e) = eval {
        card(&mut h, &e.n_truth.to_string(), "ground-truth mitoses");
        card(&mut h, &format!("{:.3}", e.pooled.precision), "precision");
        card(&mut h, &format!("{:.3}", e.pooled.recall), "recall");
        card(&mut h, &format!("{:.3}", e.pooled.f1), "F1");
        card(&mut h, &format!("{:.3}", e.average_precision), "average precision");
        card(&mut h, &format!("{:.3}", e.froc.score), "FROC score");
        let best = e.sweep.best_threshold.map_or("-".into(), |t| format!("{t:.3}"));
        card(&mut h, &format!("{:.3} @ {best}", e.sweep.best_f1), "best F1 @ threshold");
        card(&mut h, &format!("{:.2}", e.counts.mean_abs_error), "count MAE per image");
    }
    h.push_str("</div>");
    if let Some(e) = eval {
        let _ = write!(
            h,
            "<p>TP {} · FP {} · FN {} — match rule <b>{}</b>, radius {:.1} px, threshold {}.</p>",
            e.pooled.tp,
            e.pooled.fp,
            e.pooled.fn_,
            e.rule,
            e.radius_px,
            e.threshold.map_or("none".into(), |t| t.to_string())
        );
    }
    if summary.area_mm2.is_none() {
        h.push_str("<p>Density and score need image sizes and microns per pixel (give --images and --mpp).</p>");
    }
    for c in &summary.caveats {
        let _ = write!(h, r#"<p class="warn">{}</p>"#, esc(c));
    }
    h.push_str("</section>");

    if !warnings.is_empty() {
        h.push_str(r#"<section id="warnings"><h2>Warnings</h2><ul>"#);
        for w in warnings {
            let _ = write!(h, r#"<li class="warn">{}</li>"#, esc(w));
        }
        h.push_str("</ul></section>");
    }

    // Curves.
    if let Some(e) = eval {
        h.push_str(r#"<section id="curves"><h2>Curves</h2><div class="charts">"#);
        let mut pr: Vec<(f64, f64)> = e.sweep.points.iter().map(|p| (p.recall, p.precision)).collect();
        pr.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let marker = e
            .sweep
            .best_threshold
            .map(|t| ((e.sweep.best.recall, e.sweep.best.precision), format!("best F1, t={t:.2}")));
        h.push_str(&svg::render(&svg::Chart {
            title: format!("Precision-recall (AP {:.3})", e.average_precision),
            x_label: "recall".into(),
            y_label: "precision".into(),
            x: svg::Scale::Linear { min: 0.0, max: 1.0 },
            y: svg::Scale::Linear { min: 0.0, max: 1.0 },
            series: vec![svg::Series { name: "all thresholds".into(), color: "#3b2a4a".into(), points: pr }],
            marker,
        }));
        let mut froc: Vec<(f64, f64)> = e.froc.points.iter().map(|p| (p.mean_fp_per_image, p.sensitivity)).collect();
        froc.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        h.push_str(&svg::render(&svg::Chart {
            title: format!("FROC (score {:.3})", e.froc.score),
            x_label: "mean false positives per image".into(),
            y_label: "sensitivity".into(),
            x: svg::Scale::Log2 { min: 0.125, max: 8.0 },
            y: svg::Scale::Linear { min: 0.0, max: 1.0 },
            series: vec![svg::Series { name: "all thresholds".into(), color: "#1a9850".into(), points: froc }],
            marker: None,
        }));
        h.push_str("</div></section>");
    }

    // Per-image table.
    h.push_str(r#"<section id="per-image"><h2>Per image</h2><p>Click a column to sort (e.g. by count or by error).</p><table class="sortable"><thead><tr><th>image</th><th>detections</th>"#);
    if eval.is_some() {
        h.push_str("<th>truth</th><th>TP</th><th>FP</th><th>FN</th><th>F1</th><th>count error</th><th>|error|</th>");
    }
    h.push_str("<th>per mm²</th></tr></thead><tbody>");
    for r in rows {
        let _ = write!(
            h,
            r##"<tr><td data-v="{id}"><a href="#img-{id}">{id}</a></td><td data-v="{n}">{n}</td>"##,
            id = esc(&r.id),
            n = r.n_pred
        );
        if eval.is_some() {
            let f1 = if r.n_truth + r.n_pred == 0 { 1.0 } else { 2.0 * r.tp as f64 / (r.n_truth + r.n_pred) as f64 };
            let err = r.n_pred as i64 - r.n_truth as i64;
            let _ = write!(
                h,
                r#"<td data-v="{t}">{t}</td><td data-v="{tp}">{tp}</td><td data-v="{fp}">{fp}</td><td data-v="{fnn}">{fnn}</td><td data-v="{f1:.4}">{f1:.3}</td><td data-v="{err}">{err:+}</td><td data-v="{abs}">{abs}</td>"#,
                t = r.n_truth,
                tp = r.tp,
                fp = r.fp,
                fnn = r.fn_,
                abs = err.abs()
            );
        }
        match r.area_mm2() {
            Some(a) if a > 0.0 => {
                let d = r.n_pred as f64 / a;
                let _ = write!(h, r#"<td data-v="{d:.4}">{d:.2}</td></tr>"#);
            }
            _ => h.push_str(r#"<td data-v="-1">-</td></tr>"#),
        }
    }
    h.push_str("</tbody></table></section>");

    // Thumbnails.
    let legend = |h: &mut String, kinds: &[Kind]| {
        h.push_str(r#"<p class="legend">"#);
        for k in kinds {
            let _ = write!(h, r#"<span><i style="border-color:{}"></i>{}</span>"#, k.css(), k.label());
        }
        h.push_str("</p>");
    };
    let kinds: &[Kind] = if eval.is_some() { &[Kind::Tp, Kind::Fp, Kind::Fn] } else { &[Kind::Detection] };
    if rows.iter().any(|r| r.thumb.is_some()) {
        h.push_str(r#"<section id="images"><h2>Images</h2>"#);
        legend(&mut h, kinds);
        let drawn = rows.iter().filter(|r| r.thumb.is_some()).count();
        if rows.len() > input.options.max_thumbnails {
            let which = if eval.is_some() { "most errors" } else { "most detections" };
            let _ = write!(h, "<p>The {drawn} images with the {which} of {} (all are in the table).</p>", rows.len());
        }
        h.push_str(r#"<div class="thumbs">"#);
        for r in rows {
            let Some(url) = &r.thumb else { continue };
            let stats = if eval.is_some() {
                format!("{} detections, {} truth: TP {} FP {} FN {}", r.n_pred, r.n_truth, r.tp, r.fp, r.fn_)
            } else {
                format!("{} detections", r.n_pred)
            };
            let _ = write!(
                h,
                r#"<figure class="thumb" id="img-{id}"><img src="{url}" alt="{id}"><figcaption><b>{id}</b> — {}</figcaption></figure>"#,
                esc(&stats),
                id = esc(&r.id)
            );
        }
        h.push_str("</div></section>");
    }

    // Gallery.
    if crops.iter().any(|(_, list, _)| list.iter().any(|c| c.url.is_some())) {
        h.push_str(r#"<section id="gallery"><h2>Gallery</h2>"#);
        for (kind, list, total) in crops {
            let shown: Vec<&Crop> = list.iter().filter(|c| c.url.is_some()).collect();
            let order = match kind {
                Kind::Fp | Kind::Detection => ", highest score first",
                Kind::Tp => ", lowest score first",
                Kind::Fn => "",
            };
            let _ = write!(
                h,
                r#"<h3 style="color:{}">{} ({} of {total}{order})</h3><div class="gallery">"#,
                kind.css(),
                esc(kind.label()),
                shown.len()
            );
            for c in shown {
                let r = &rows[c.image];
                let o = &r.objects[c.object];
                let score = o.score.map_or(String::new(), |s| format!(" {s:.2}"));
                let _ = write!(
                    h,
                    r#"<figure><img src="{}" style="border-color:{}" alt="{kind:?}"><figcaption>{} ({:.0},{:.0}){score}</figcaption></figure>"#,
                    c.url.as_deref().unwrap_or_default(),
                    kind.css(),
                    esc(&r.id),
                    o.point.x,
                    o.point.y,
                );
            }
            h.push_str("</div>");
        }
        h.push_str("</section>");
    }

    // Provenance.
    let p = &input.provenance;
    let _ = write!(
        h,
        r#"<section id="provenance"><h2>How this was made</h2><p>Command:</p><pre id="command-line">{}</pre><p>Model: <b id="model">{}</b></p><p>Predictions: <code>{}</code>"#,
        esc(&p.command_line),
        esc(p.model.as_deref().unwrap_or("not recorded (pass --model NAME)")),
        esc(&p.pred_path)
    );
    if let Some(t) = &p.truth_path {
        let _ = write!(h, " · ground truth: <code>{}</code>", esc(t));
    }
    match &input.images {
        ImageSource::Dir(d) => {
            let _ = write!(h, " · images: <code>{}</code>", esc(&d.display().to_string()));
        }
        ImageSource::Slide(s) => {
            let _ = write!(h, " · slide: <code>{}</code>", esc(&s.display().to_string()));
        }
        ImageSource::None => {}
    }
    let _ = write!(h, "</p><p>Made by {}.</p></section>", esc(&p.tool));
    let _ = writeln!(h, "</main><script>{SORT_JS}</script></body></html>");
    h
}

/// The `<meta name="generator">` of every report: how `mitoscope report`
/// knows a file it may write over (see [`is_report_file`]).
pub const GENERATOR: &str = "mitoscope report";

/// Whether `path` holds a report this tool wrote (its generator tag in the
/// first few KB), so that writing over it loses nothing of the user's.
pub fn is_report_file(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = vec![0u8; 4096];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else { return false };
    let head = String::from_utf8_lossy(&head[..n]);
    head.starts_with("<!DOCTYPE html>") && head.contains(&format!("<meta name=\"generator\" content=\"{GENERATOR}\">"))
}

/// Writes the report atomically (temporary file, then rename).
pub fn write(path: &Path, report: &Report) -> Result<(), ReportError> {
    Ok(mitoscope_formats::atomic::write_atomic(path, report.html.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitoscope_annotations::{Annotation, ObjectClass};

    fn set(points: &[(&str, f64, f64, Option<f64>)]) -> AnnotationSet {
        let mut s = AnnotationSet::default();
        for &(img, x, y, score) in points {
            let mut a = Annotation::point(Point::new(x, y), ObjectClass::Mitosis);
            a.score = score;
            s.image_mut_or_insert(img).objects.push(a);
        }
        s
    }

    fn input<'a>(pred: &'a AnnotationSet, truth: Option<&'a AnnotationSet>) -> ReportInput<'a> {
        ReportInput {
            pred,
            truth,
            images: ImageSource::None,
            radius_px: Some(10.0),
            rule: MatchRule::Greedy,
            threshold: None,
            mpp: Some(Mpp::new(0.25).unwrap()),
            provenance: Provenance {
                command_line: "mitoscope report --pred <p>.csv".into(),
                model: Some("test-model".into()),
                pred_path: "p.csv".into(),
                truth_path: None,
                tool: "mitoscope test".into(),
            },
            options: ReportOptions::default(),
        }
    }

    #[test]
    fn without_truth_summarises_counts_and_escapes() {
        let mut pred = set(&[("a<b", 5.0, 5.0, Some(0.9)), ("a<b", 50.0, 50.0, Some(0.4)), ("c", 1.0, 1.0, None)]);
        for img in &mut pred.images {
            img.width = Some(2000);
            img.height = Some(2000);
        }
        let r = build(&input(&pred, None)).unwrap();
        assert_eq!(r.summary.images, 2);
        assert_eq!(r.summary.detections, 3);
        // 2 images of 0.5 mm x 0.5 mm.
        assert!((r.summary.area_mm2.unwrap() - 0.5).abs() < 1e-9);
        assert!((r.summary.density_per_mm2.unwrap() - 6.0).abs() < 1e-9);
        assert!(r.summary.mitotic_score.is_some());
        // 0.5 mm² is a quarter of the grade's 10 HPFs: said beside the score.
        assert_eq!(r.summary.caveats.len(), 1, "{:?}", r.summary.caveats);
        assert!(r.summary.caveats[0].contains("from 0.500 mm²"), "{:?}", r.summary.caveats);
        assert!(r.html.contains("less than the 2 mm²"));
        assert!(r.html.contains("a&lt;b") && !r.html.contains("a<b"));
        assert!(r.html.contains("&lt;p&gt;.csv"), "command line recorded, escaped");
        assert!(r.html.contains("test-model"));
        assert!(!r.html.contains("id=\"curves\""), "no curves without truth");
    }

    #[test]
    fn with_truth_classifies_objects_and_plots() {
        let pred = set(&[("a", 10.0, 10.0, Some(0.9)), ("a", 100.0, 100.0, Some(0.8)), ("b", 7.0, 7.0, Some(0.3))]);
        let truth = set(&[("a", 12.0, 10.0, None), ("a", 300.0, 300.0, None), ("b", 500.0, 500.0, None)]);
        let r = build(&input(&pred, Some(&truth))).unwrap();
        let (p, rc, f1) = r.summary.prf.unwrap();
        assert!((p - 1.0 / 3.0).abs() < 1e-9 && (rc - 1.0 / 3.0).abs() < 1e-9 && (f1 - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.summary.truths, Some(3));
        assert!(r.html.contains("id=\"curves\"") && r.html.matches("<svg").count() == 2);
        assert!(r.html.contains("class=\"sortable\""));
        assert!(r.html.contains("<th>count error</th>"));
    }

    #[test]
    fn truth_without_radius_is_an_error() {
        let pred = set(&[("a", 1.0, 1.0, Some(0.5))]);
        let mut inp = input(&pred, Some(&pred));
        inp.radius_px = None;
        assert!(matches!(build(&inp), Err(ReportError::NoRadius)));
    }

    #[test]
    fn images_from_a_folder_give_thumbnails_crops_and_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = RgbImage::from_pixel(300, 200, Rgb([230, 200, 220]));
        for y in 90..110 {
            for x in 140..160 {
                img.put_pixel(x, y, Rgb([60, 20, 90]));
            }
        }
        img.save(dir.path().join("a.png")).unwrap();
        std::fs::write(dir.path().join("broken.jpg"), b"not a jpeg").unwrap();
        let pred =
            set(&[("a", 150.0, 100.0, Some(0.9)), ("broken", 1.0, 1.0, Some(0.5)), ("missing", 1.0, 1.0, Some(0.5))]);
        let mut inp = input(&pred, None);
        inp.images = ImageSource::Dir(dir.path().to_owned());
        let r = build(&inp).unwrap();
        assert!(r.html.contains("id=\"img-a\""));
        assert_eq!(
            r.html.matches("data:image/jpeg;base64,").count(),
            2,
            "a thumbnail and a crop of a only: {:?}",
            r.warnings
        );
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings.iter().any(|w| w.contains("broken.jpg")));
        assert!(r.warnings.iter().any(|w| w.contains("missing")));
        let out = dir.path().join("r/report.html");
        write(&out, &r).unwrap();
        assert!(std::fs::read_to_string(out).unwrap().starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn thumbnails_are_capped_to_the_images_with_the_most_errors() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["a", "b", "c"] {
            RgbImage::from_pixel(64, 48, Rgb([230, 200, 220])).save(dir.path().join(format!("{id}.png"))).unwrap();
        }
        // b has two false positives, c one, a none (its detection matches).
        let pred = set(&[
            ("a", 10.0, 10.0, Some(0.9)),
            ("b", 10.0, 10.0, Some(0.9)),
            ("b", 40.0, 30.0, Some(0.8)),
            ("c", 10.0, 10.0, Some(0.9)),
        ]);
        let truth = set(&[("a", 10.0, 10.0, None)]);
        let mut inp = input(&pred, Some(&truth));
        inp.images = ImageSource::Dir(dir.path().to_owned());
        inp.options.max_thumbnails = 2;
        inp.options.max_crops = 0;
        let r = build(&inp).unwrap();
        assert!(r.html.contains("id=\"img-b\"") && r.html.contains("id=\"img-c\"") && !r.html.contains("id=\"img-a\""));
        assert!(r.html.contains("The 2 images with the most errors of 3"), "{}", r.html);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn image_ids_never_reach_outside_the_images_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("imgs")).unwrap();
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        RgbImage::from_pixel(64, 64, Rgb([60, 20, 90])).save(dir.path().join("secret/B.png")).unwrap();
        let absolute = dir.path().join("secret/B").display().to_string();
        let pred = set(&[("../secret/B", 10.0, 10.0, Some(0.9)), (&absolute, 10.0, 10.0, Some(0.9))]);
        let mut inp = input(&pred, None);
        inp.images = ImageSource::Dir(dir.path().join("imgs"));
        let r = build(&inp).unwrap();
        assert!(!r.html.contains("data:image/jpeg"), "an image outside --images was drawn");
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        // The warning names the file looked for, inside the folder.
        let looked = dir.path().join("imgs/.._secret_B").display().to_string();
        assert!(r.warnings[0].contains(&looked), "{:?}", r.warnings);
    }

    #[test]
    fn detect_ids_of_nested_and_alike_named_inputs_find_their_images() {
        // `detect` names `train/images/001.png` by its path below the common
        // folder, and `x.png` beside `x.jpg` as `x_png` and `x_jpg`.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train/images")).unwrap();
        let img = RgbImage::from_pixel(64, 64, Rgb([60, 20, 90]));
        img.save(dir.path().join("train/images/001.png")).unwrap();
        img.save(dir.path().join("x.png")).unwrap();
        img.save(dir.path().join("x.jpg")).unwrap();
        let pred = set(&[
            ("train/images/001", 10.0, 10.0, Some(0.9)),
            ("x_png", 10.0, 10.0, Some(0.9)),
            ("x_jpg", 10.0, 10.0, Some(0.9)),
        ]);
        let mut inp = input(&pred, None);
        inp.images = ImageSource::Dir(dir.path().to_owned());
        let r = build(&inp).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.html.matches("data:image/jpeg;base64,").count(), 6, "a thumbnail and a crop of each");

        // Below the folder: a bare stem found once (`002` in `test/images`),
        // `a_y` for `a/y.png` beside `b/y.png`; a stem found twice is named
        // as ambiguous, and a mask folder's files are not images.
        for rel in ["test/images/002.png", "a/y.png", "b/y.png", "p/003.png", "q/003.png", "masks/004.png"] {
            std::fs::create_dir_all(dir.path().join(rel).parent().unwrap()).unwrap();
            img.save(dir.path().join(rel)).unwrap();
        }
        let pred = set(&[
            ("002", 10.0, 10.0, Some(0.9)),
            ("a_y", 10.0, 10.0, Some(0.9)),
            ("003", 10.0, 10.0, Some(0.9)),
            ("004", 10.0, 10.0, Some(0.9)),
        ]);
        let mut inp = input(&pred, None);
        inp.images = ImageSource::Dir(dir.path().to_owned());
        let r = build(&inp).unwrap();
        assert_eq!(r.html.matches("data:image/jpeg;base64,").count(), 4, "{:?}", r.warnings);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("image 003: ") && r.warnings[0].contains("2 files below"),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings[1].starts_with("image 004: no file"), "{:?}", r.warnings);
    }

    #[test]
    fn a_slide_none_of_the_images_is_named_after_is_a_warning() {
        let wsi = mitoscope_testdata::require_data!("wsi");
        let pred = set(&[("a", 10.0, 10.0, Some(0.9)), ("b", 20.0, 20.0, Some(0.9))]);
        let mut inp = input(&pred, None);
        inp.images = ImageSource::Slide(wsi.join("CMU-1-Small-Region.svs"));
        let r = build(&inp).unwrap();
        assert!(r.warnings.iter().any(|w| w.contains("named 'CMU-1-Small-Region' like the slide")), "{:?}", r.warnings);
        // Named after it: drawn, no such warning.
        let pred = set(&[("CMU-1-Small-Region", 10.0, 10.0, Some(0.9)), ("b", 20.0, 20.0, Some(0.9))]);
        let mut inp = input(&pred, None);
        inp.images = ImageSource::Slide(wsi.join("CMU-1-Small-Region.svs"));
        let r = build(&inp).unwrap();
        assert!(r.warnings.iter().all(|w| !w.contains("like the slide")), "{:?}", r.warnings);
        // Over a slide, density includes the glass and no grade is given.
        assert!(r.summary.area_mm2.is_some(), "the slide states its mpp");
        assert_eq!(r.summary.mitotic_score, None);
        assert!(r.summary.caveats.iter().any(|c| c.contains("glass included")), "{:?}", r.summary.caveats);
    }

    #[test]
    fn real_hpf_with_truth() {
        let data = mitoscope_testdata::require_data!("icpr2012");
        let opts = mitoscope_formats::ReadOptions::default();
        let mut truth = mitoscope_formats::read(&data.join("centroids.csv"), None, &opts).unwrap();
        truth.images.retain(|i| i.image.starts_with("A00_00"));
        for i in &mut truth.images {
            i.image = "A00_00".into();
        }
        let first = truth.images[0].objects[0].centroid;
        let mut pred = AnnotationSet::default();
        let img = pred.image_mut_or_insert("A00_00");
        img.objects.push(Annotation::point(Point::new(first.x + 3.0, first.y), ObjectClass::Mitosis).with_score(0.9));
        img.objects.push(Annotation::point(Point::new(1000.0, 40.0), ObjectClass::Mitosis).with_score(0.7));
        let mut inp = input(&pred, Some(&truth));
        inp.radius_px = Some(32.6);
        inp.images = ImageSource::Dir(data.join("hpf"));
        inp.mpp = Some(Mpp::new(0.2456).unwrap());
        let t = std::time::Instant::now();
        let r = build(&inp).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(t.elapsed().as_secs() < 20);
        let n_truth = truth.images[0].objects.len();
        assert_eq!(r.summary.truths, Some(n_truth));
        // 1 TP + 1 FP + (n - 1) FN crops + 1 thumbnail.
        assert_eq!(r.html.matches("data:image/jpeg;base64,").count(), 1 + 1 + 1 + (n_truth - 1));
        assert!(r.summary.area_mm2.unwrap() > 0.25);
    }
}
