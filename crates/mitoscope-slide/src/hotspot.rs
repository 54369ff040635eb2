//! HPF and hotspot logic: pure functions of detections (level-0 pixels), the
//! slide resolution and a field size.
//!
//! - [`best_window`]: where an N-HPF rectangle (area = N x field area,
//!   default N = 10, square) holds the most detections.
//! - [`top_fields`]: the N individual HPF-sized square fields with the most
//!   detections, not overlapping, as GZMH V2 counts them.
//! - [`summarize`]: count, area analysed, density, hotspot and the Nottingham
//!   score on the hotspot via [`mitoscope_eval::score::mitotic_score`].
//!
//! # Search
//! Windows are half-open, `[x, x + width) x [y, y + height)`, and lie inside
//! the slide. Candidate positions are the detections' coordinates (clamped
//! so the window stays on the slide) plus a grid of step
//! `grid_step_fraction` x the window side. Without a tissue mask and for the
//! first window this is **exact**: any window can be shifted right and down
//! until its left and top edges meet a detection (or the slide edge) without
//! losing one. With a tissue mask (windows need `min_tissue_fraction` tissue,
//! detections off tissue are ignored) or with the non-overlap rule of
//! [`top_fields`], shifting can change eligibility, so the result is the best
//! over the candidates: exact up to the grid step. Cost: O((n + g)²) for n
//! detections and g grid lines.
//!
//! When the slide is smaller than a window in a direction, the window is
//! clipped to the slide and its reported `area_mm2` is the clipped area (the
//! score then refers the count to that area).

use mitoscope_eval::score::{FieldPreset, MitoticScore, mitotic_score};
use mitoscope_geom::{BBox, Mpp, Point};
use serde::{Deserialize, Serialize};

use crate::HotspotError;
use crate::tissue::TissueMask;

/// Parameters of the hotspot search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HotspotParams {
    /// The microscope field (HPF) size; default 10 HPF = 2 mm².
    pub field: FieldPreset,
    /// Fields in the hotspot window and in [`top_fields`]; default 10.
    pub n_fields: usize,
    /// Width / height of the hotspot window; 1 (square) by default.
    pub aspect: f64,
    /// With a tissue mask, the least tissue fraction of an eligible window
    /// (default 0.5).
    pub min_tissue_fraction: f64,
    /// Grid step of the extra candidate positions, as a fraction of the
    /// window side (default 0.25).
    pub grid_step_fraction: f64,
}

impl Default for HotspotParams {
    fn default() -> Self {
        Self {
            field: FieldPreset::TenHpfTwoMm2,
            n_fields: 10,
            aspect: 1.0,
            min_tissue_fraction: 0.5,
            grid_step_fraction: 0.25,
        }
    }
}

impl HotspotParams {
    /// Defaults with a field of `area_mm2` per HPF.
    pub fn with_field_area_mm2(area_mm2: f64) -> Self {
        Self { field: FieldPreset::Area(area_mm2), ..Self::default() }
    }

    /// Defaults with a field of diameter `diameter_mm`.
    pub fn with_field_diameter_mm(diameter_mm: f64) -> Self {
        Self { field: FieldPreset::Diameter(diameter_mm), ..Self::default() }
    }

    /// Area of one field in mm² (`π d² / 4` for a diameter).
    pub fn field_area_mm2(&self) -> f64 {
        self.field.area_mm2()
    }

    fn validate(&self) -> Result<(), HotspotError> {
        let bad = |name, why: String| Err(HotspotError::BadParameter { name, why });
        let a = self.field_area_mm2();
        if !(a.is_finite() && a > 0.0) {
            return bad("field", format!("field area must be positive, got {a} mm²"));
        }
        if self.n_fields == 0 {
            return bad("n_fields", "must be at least 1".into());
        }
        if !(self.aspect.is_finite() && self.aspect > 0.0) {
            return bad("aspect", format!("must be positive, got {}", self.aspect));
        }
        if !(0.0..=1.0).contains(&self.min_tissue_fraction) {
            return bad("min_tissue_fraction", format!("must be in [0, 1], got {}", self.min_tissue_fraction));
        }
        if !(self.grid_step_fraction > 0.0 && self.grid_step_fraction <= 1.0) {
            return bad("grid_step_fraction", format!("must be in (0, 1], got {}", self.grid_step_fraction));
        }
        Ok(())
    }
}

/// A placed window, in level-0 pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Detections inside.
    pub count: usize,
    /// Area in mm².
    pub area_mm2: f64,
    /// Tissue fraction when a mask was given.
    pub tissue_fraction: Option<f64>,
}

impl Window {
    /// Whether `p` is inside (half-open).
    pub fn contains(&self, p: &Point) -> bool {
        p.x >= self.x && p.x < self.x + self.width && p.y >= self.y && p.y < self.y + self.height
    }

    /// Whether two windows share any area.
    pub fn overlaps(&self, o: &Window) -> bool {
        self.x < o.x + o.width && o.x < self.x + self.width && self.y < o.y + o.height && o.y < self.y + self.height
    }

    /// The window as an inclusive-pixel [`BBox`] (last column `x + width - 1`).
    pub fn bbox(&self) -> Option<BBox> {
        BBox::new(self.x, self.y, self.x + self.width - 1.0, self.y + self.height - 1.0).ok()
    }
}

/// Per-slide numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideSummary {
    /// Detections counted (on the slide, and on tissue when a mask is given).
    pub count: usize,
    /// Tissue area when a mask is given, else the slide area, mm².
    pub area_analysed_mm2: f64,
    /// `count / area_analysed_mm2`.
    pub density_per_mm2: f64,
    /// The N-HPF hotspot.
    pub hotspot: Window,
    /// Nottingham mitotic score of the hotspot count over its area.
    pub hotspot_score: MitoticScore,
    /// The top-N non-overlapping single fields.
    pub top_fields: Vec<Window>,
    /// Detections in the top-N fields together.
    pub top_fields_count: usize,
    /// Area of one field, mm².
    pub field_area_mm2: f64,
}

/// Checks input and keeps the detections that count: on the slide, and on
/// tissue when a mask is given.
fn eligible(points: &[Point], extent: (f64, f64), tissue: Option<&TissueMask>) -> Result<Vec<Point>, HotspotError> {
    let (w, h) = extent;
    if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        return Err(HotspotError::BadParameter {
            name: "extent",
            why: format!("slide size must be positive, got {w}x{h}"),
        });
    }
    let mut out = Vec::with_capacity(points.len());
    for (index, p) in points.iter().enumerate() {
        if !(p.x.is_finite() && p.y.is_finite()) {
            return Err(HotspotError::NonFinitePoint { index, x: p.x, y: p.y });
        }
        if p.x >= 0.0 && p.x < w && p.y >= 0.0 && p.y < h && tissue.is_none_or(|t| t.contains(*p)) {
            out.push(*p);
        }
    }
    Ok(out)
}

/// Window side lengths in px for an area, clipped to the slide.
fn window_size(area_mm2: f64, aspect: f64, mpp: Mpp, extent: (f64, f64)) -> (f64, f64) {
    let w = mpp.mm_to_px((area_mm2 * aspect).sqrt());
    let h = mpp.mm_to_px((area_mm2 / aspect).sqrt());
    (w.min(extent.0), h.min(extent.1))
}

/// Candidate left (or top) edges: detection coordinates and a grid, clamped
/// to `[0, limit - side]`, sorted and deduplicated.
fn candidates(coords: impl Iterator<Item = f64>, side: f64, limit: f64, step: f64) -> Vec<f64> {
    let max = (limit - side).max(0.0);
    let mut v: Vec<f64> = coords.map(|c| c.clamp(0.0, max)).collect();
    let steps = (max / step).floor() as usize;
    v.extend((0..=steps).map(|i| i as f64 * step));
    v.push(max);
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The best `w` x `h` window over the candidates; `exclude`d windows may not
/// be overlapped. `pts` must be sorted by x.
fn search(
    pts: &[Point],
    size: (f64, f64),
    extent: (f64, f64),
    params: &HotspotParams,
    tissue: Option<&TissueMask>,
    exclude: &[Window],
    mpp: Mpp,
) -> Option<Window> {
    let (w, h) = size;
    let xs = candidates(pts.iter().map(|p| p.x), w, extent.0, w * params.grid_step_fraction);
    let ys = candidates(pts.iter().map(|p| p.y), h, extent.1, h * params.grid_step_fraction);
    let area_mm2 = mpp.area_mm2(w, h);
    let mut best: Option<Window> = None;
    let mut strip: Vec<f64> = Vec::new();
    for &x in &xs {
        // Detections in the column strip [x, x + w), by y.
        let lo = pts.partition_point(|p| p.x < x);
        let hi = pts.partition_point(|p| p.x < x + w);
        strip.clear();
        strip.extend(pts[lo..hi].iter().map(|p| p.y));
        strip.sort_by(f64::total_cmp);
        let (mut a, mut b) = (0, 0);
        for &y in &ys {
            while a < strip.len() && strip[a] < y {
                a += 1;
            }
            b = b.max(a);
            while b < strip.len() && strip[b] < y + h {
                b += 1;
            }
            let cand = Window { x, y, width: w, height: h, count: b - a, area_mm2, tissue_fraction: None };
            if exclude.iter().any(|e| e.overlaps(&cand)) {
                continue;
            }
            let cand = match tissue {
                Some(t) => {
                    let f = t.rect_fraction(x, y, w, h);
                    if f < params.min_tissue_fraction {
                        continue;
                    }
                    Window { tissue_fraction: Some(f), ..cand }
                }
                None => cand,
            };
            // Most detections, then most tissue; on a tie the first found
            // (leftmost, then topmost) stays.
            let better = match &best {
                None => true,
                Some(b) => {
                    let (ft, fb) = (cand.tissue_fraction.unwrap_or(0.0), b.tissue_fraction.unwrap_or(0.0));
                    cand.count > b.count || (cand.count == b.count && ft > fb)
                }
            };
            if better {
                best = Some(cand);
            }
        }
    }
    best
}

fn sorted_by_x(mut pts: Vec<Point>) -> Vec<Point> {
    pts.sort_by(|a, b| a.x.total_cmp(&b.x));
    pts
}

/// The N-HPF window (area `n_fields x field area`, `aspect` = width/height)
/// holding the most detections; see the module docs for the search.
/// `extent` is the level-0 slide size in px. Returns `None`-free: when no
/// window meets the tissue requirement, the best window ignoring tissue is
/// returned with its (low) `tissue_fraction`.
pub fn best_window(
    points: &[Point],
    mpp: Mpp,
    extent: (f64, f64),
    params: &HotspotParams,
    tissue: Option<&TissueMask>,
) -> Result<Window, HotspotError> {
    params.validate()?;
    let pts = sorted_by_x(eligible(points, extent, tissue)?);
    let area = params.field_area_mm2() * params.n_fields as f64;
    let size = window_size(area, params.aspect, mpp, extent);
    search(&pts, size, extent, params, tissue, &[], mpp)
        .or_else(|| {
            let relaxed = HotspotParams { min_tissue_fraction: 0.0, ..*params };
            search(&pts, size, extent, &relaxed, tissue, &[], mpp)
        })
        .ok_or_else(|| HotspotError::BadParameter { name: "extent", why: "no window position".into() })
}

/// The `n_fields` square HPF-sized fields with the most detections, chosen
/// greedily (best first) and not overlapping one another. Fewer are returned
/// when no further eligible non-overlapping position exists.
pub fn top_fields(
    points: &[Point],
    mpp: Mpp,
    extent: (f64, f64),
    params: &HotspotParams,
    tissue: Option<&TissueMask>,
) -> Result<Vec<Window>, HotspotError> {
    params.validate()?;
    let mut pts = sorted_by_x(eligible(points, extent, tissue)?);
    let size = window_size(params.field_area_mm2(), 1.0, mpp, extent);
    let mut chosen: Vec<Window> = Vec::with_capacity(params.n_fields);
    while chosen.len() < params.n_fields {
        let Some(f) = search(&pts, size, extent, params, tissue, &chosen, mpp) else { break };
        // Detections of a chosen field cannot fall in a non-overlapping one:
        // drop them so later searches are cheaper.
        pts.retain(|p| !f.contains(p));
        chosen.push(f);
    }
    Ok(chosen)
}

/// The per-slide summary: count and density over the tissue (or the whole
/// slide), the hotspot with its mitotic score, and the top-N fields.
pub fn summarize(
    points: &[Point],
    mpp: Mpp,
    extent: (f64, f64),
    params: &HotspotParams,
    tissue: Option<&TissueMask>,
) -> Result<SlideSummary, HotspotError> {
    params.validate()?;
    let count = eligible(points, extent, tissue)?.len();
    let area_analysed_mm2 = match tissue {
        Some(t) => t.area_mm2(),
        None => mpp.area_mm2(extent.0, extent.1),
    };
    let density_per_mm2 = if area_analysed_mm2 > 0.0 { count as f64 / area_analysed_mm2 } else { 0.0 };
    let hotspot = best_window(points, mpp, extent, params, tissue)?;
    let hotspot_score = mitotic_score(hotspot.count, hotspot.area_mm2, params.field)?;
    let top = top_fields(points, mpp, extent, params, tissue)?;
    Ok(SlideSummary {
        count,
        area_analysed_mm2,
        density_per_mm2,
        hotspot,
        hotspot_score,
        top_fields_count: top.iter().map(|f| f.count).sum(),
        top_fields: top,
        field_area_mm2: params.field_area_mm2(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GrayImage;
    use proptest::prelude::*;

    fn mpp1() -> Mpp {
        Mpp::new(1.0).unwrap()
    }

    /// One field of 0.0001 mm² = a 10x10 px square at 1 µm/px.
    fn unit_params(n: usize) -> HotspotParams {
        HotspotParams { n_fields: n, ..HotspotParams::with_field_area_mm2(1e-4) }
    }

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter().map(|&(x, y)| Point::new(x, y)).collect()
    }

    #[test]
    fn known_best_window() {
        // A cluster of 4 within 10x10 at (50..59, 30..39), 3 elsewhere spread out.
        let p = pts(&[(50.0, 30.0), (55.0, 35.0), (59.5, 39.5), (52.0, 38.0), (5.0, 5.0), (80.0, 80.0), (61.0, 30.0)]);
        let w = best_window(&p, mpp1(), (100.0, 100.0), &unit_params(1), None).unwrap();
        assert_eq!((w.x, w.y, w.width, w.height, w.count), (50.0, 30.0, 10.0, 10.0, 4));
        assert!((w.area_mm2 - 1e-4).abs() < 1e-15);
        // Four fields: a 20x20 window takes (61, 30) too.
        let w = best_window(&p, mpp1(), (100.0, 100.0), &unit_params(4), None).unwrap();
        assert_eq!((w.width, w.count), (20.0, 5));
    }

    #[test]
    fn window_stays_on_slide_and_clips() {
        // Points in the bottom-right corner: the window is clamped to end at the edge.
        let p = pts(&[(98.0, 97.0), (99.5, 99.5), (95.0, 92.0)]);
        let w = best_window(&p, mpp1(), (100.0, 100.0), &unit_params(1), None).unwrap();
        assert_eq!((w.x, w.y, w.count), (90.0, 90.0, 3));
        // A 10-field window (31.6 px) on a 20x50 slide is clipped to 20 wide.
        let w = best_window(&p[..0], mpp1(), (20.0, 50.0), &unit_params(10), None).unwrap();
        assert_eq!(w.width, 20.0);
        assert!((w.area_mm2 - 20.0 * w.height * 1e-6).abs() < 1e-12);
        assert_eq!(w.count, 0);
    }

    #[test]
    fn aspect_ratio_and_bad_input() {
        let p = HotspotParams { aspect: 4.0, ..unit_params(1) };
        let w = best_window(&[], mpp1(), (100.0, 100.0), &p, None).unwrap();
        assert_eq!((w.width, w.height), (20.0, 5.0));
        let nan = pts(&[(1.0, f64::NAN)]);
        assert!(matches!(
            best_window(&nan, mpp1(), (9.0, 9.0), &unit_params(1), None),
            Err(HotspotError::NonFinitePoint { index: 0, .. })
        ));
        assert!(best_window(&[], mpp1(), (0.0, 9.0), &unit_params(1), None).is_err());
        assert!(best_window(&[], mpp1(), (9.0, 9.0), &unit_params(0), None).is_err());
        assert!(best_window(&[], mpp1(), (9.0, 9.0), &HotspotParams::with_field_area_mm2(-1.0), None).is_err());
    }

    #[test]
    fn top_fields_do_not_overlap_and_take_the_densest() {
        // Cluster A: 3 in one field; cluster B: 2; a lone point; field 10x10.
        let p = pts(&[(10.0, 10.0), (12.0, 15.0), (18.0, 18.0), (60.0, 60.0), (65.0, 62.0), (90.0, 5.0)]);
        let f = top_fields(&p, mpp1(), (100.0, 100.0), &unit_params(3), None).unwrap();
        assert_eq!(f.iter().map(|w| w.count).collect::<Vec<_>>(), vec![3, 2, 1]);
        for (i, a) in f.iter().enumerate() {
            for b in &f[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} {b:?}");
            }
        }
        // Ten fields asked: filled with empty ones, still disjoint.
        let f = top_fields(&p, mpp1(), (100.0, 100.0), &unit_params(10), None).unwrap();
        assert_eq!(f.len(), 10);
        assert_eq!(f.iter().map(|w| w.count).sum::<usize>(), 6);
    }

    #[test]
    fn tissue_restricts_points_and_windows() {
        // Mask at downsample 10 over a 100x100 slide: tissue only on the left half.
        let mut m = GrayImage::new(10, 10);
        for y in 0..10 {
            for x in 0..5 {
                m.put_pixel(x, y, image::Luma([255]));
            }
        }
        let t = TissueMask::from_mask(m, 10.0, mpp1());
        // 3 detections on background (right half), 2 on tissue.
        let p = pts(&[(70.0, 10.0), (72.0, 12.0), (75.0, 15.0), (20.0, 20.0), (25.0, 25.0)]);
        let w = best_window(&p, mpp1(), (100.0, 100.0), &unit_params(1), Some(&t)).unwrap();
        assert_eq!(w.count, 2);
        assert_eq!(w.tissue_fraction, Some(1.0));
        // The summary needs a field inside the score table: at 44.72 µm/px a
        // 0.2 mm² field is again 10x10 px.
        let mpp = Mpp::new(0.2f64.sqrt() * 100.0).unwrap();
        let t = TissueMask::from_mask(t.mask().clone(), 10.0, mpp);
        let params = HotspotParams { n_fields: 1, ..HotspotParams::default() };
        let s = summarize(&p, mpp, (100.0, 100.0), &params, Some(&t)).unwrap();
        assert_eq!((s.count, s.hotspot.count), (2, 2));
        // 50 tissue mask pixels of 10x10 px, each 0.2 mm².
        assert!((s.area_analysed_mm2 - 10.0).abs() < 1e-9);
        assert!((s.density_per_mm2 - 0.2).abs() < 1e-9);
        assert_eq!(s.top_fields[0].count, 2);
    }

    #[test]
    fn summary_scores_the_hotspot() {
        // 0.25 µm/px, 10 HPF = 2 mm²: the window is 1.414 mm = 5657 px square.
        let mpp = Mpp::new(0.25).unwrap();
        let mut p = Vec::new();
        for i in 0..12 {
            p.push(Point::new(1000.0 + 300.0 * i as f64, 2000.0 + 200.0 * (i % 3) as f64));
        }
        p.push(Point::new(39_000.0, 39_000.0));
        let s = summarize(&p, mpp, (40_000.0, 40_000.0), &HotspotParams::default(), None).unwrap();
        assert_eq!(s.count, 13);
        assert_eq!(s.hotspot.count, 12);
        assert!((s.hotspot.area_mm2 - 2.0).abs() < 1e-6);
        // 12 in 2 mm² on the 0.50 mm row (score 1 <= 7, 2 <= 14): score 2.
        assert_eq!(s.hotspot_score.score, 2);
        assert_eq!(s.hotspot_score.count, 12);
        assert!((s.area_analysed_mm2 - 100.0).abs() < 1e-9);
        assert_eq!(s.top_fields.len(), 10);
        assert_eq!(s.top_fields_count, 13);
        assert!((s.field_area_mm2 - 0.2).abs() < 1e-15);
    }

    /// Brute force over every integer position.
    fn brute(p: &[Point], side: f64, extent: f64) -> usize {
        let mut best = 0;
        for x in 0..=(extent - side) as i64 {
            for y in 0..=(extent - side) as i64 {
                let w = Window {
                    x: x as f64,
                    y: y as f64,
                    width: side,
                    height: side,
                    count: 0,
                    area_mm2: 0.0,
                    tissue_fraction: None,
                };
                best = best.max(p.iter().filter(|q| w.contains(q)).count());
            }
        }
        best
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn exact_against_brute_force(v in proptest::collection::vec((0u32..40, 0u32..40), 0..25)) {
            let p: Vec<Point> = v.iter().map(|&(x, y)| Point::new(x as f64, y as f64)).collect();
            let w = best_window(&p, mpp1(), (40.0, 40.0), &unit_params(1), None).unwrap();
            prop_assert_eq!(w.count, brute(&p, 10.0, 40.0));
            prop_assert_eq!(w.count, p.iter().filter(|q| w.contains(q)).count());
            // Optimal single field >= the greedy first top field, which is the same search.
            let f = top_fields(&p, mpp1(), (40.0, 40.0), &unit_params(3), None).unwrap();
            prop_assert_eq!(f[0].count, w.count);
            prop_assert!(f.iter().map(|x| x.count).sum::<usize>() <= p.len());
        }
    }
}
