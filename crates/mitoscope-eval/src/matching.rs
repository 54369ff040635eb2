//! Point matching between ground-truth and predicted mitoses of one image.
//!
//! Distances are Euclidean, computed with [`Point::distance`] (`f64::hypot`)
//! and compared with the radius directly (`d <= r` or `d < r`), as the rules
//! are stated. (scikit-learn's `BallTree`, which evalutils uses, compares
//! squared distances with `r²`; the two can disagree only in the last bit of a
//! distance lying exactly on the boundary.)
//!
//! Non-finite coordinates never match anything here (every comparison with NaN
//! is false); [`crate::evaluate`] rejects them before matching.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use mitoscope_geom::Point;
use pathfinding::prelude::{Matrix, kuhn_munkres};
use serde::{Deserialize, Serialize};

use crate::EvalError;

/// How predictions are paired with ground-truth mitoses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchRule {
    /// The evalutils `score_detection` rule used by the MIDOG evaluation
    /// containers: ground truths in input order each take their nearest
    /// not-yet-used prediction with distance `<= r`. Equidistant predictions:
    /// the lower prediction index wins. One-to-one.
    Greedy,
    /// A maximum-cardinality one-to-one matching of pairs with distance
    /// `<= r`; among those, one with the smallest total distance (to within
    /// about `1e-12 r` per pair; which of several equally short ones is
    /// reported is unspecified but deterministic).
    Optimal,
    /// The GZMH papers' rule: a ground truth is found if its nearest
    /// prediction is at distance `< r` (strict). Not one-to-one: one
    /// prediction can confirm several ground truths. Precision is
    /// `TP / number of predictions`, so it can exceed 1 when predictions
    /// confirm several truths each; `fp` is reported as
    /// `n_pred.saturating_sub(tp)`.
    Wang2024,
}

impl MatchRule {
    /// The rule's name as parsed and printed: `greedy`, `optimal`, `wang2024`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greedy => "greedy",
            Self::Optimal => "optimal",
            Self::Wang2024 => "wang2024",
        }
    }

    /// Whether each prediction confirms at most one ground truth (greedy,
    /// optimal), so that `tp + fp == n_pred`.
    pub fn is_one_to_one(self) -> bool {
        !matches!(self, Self::Wang2024)
    }
}

impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MatchRule {
    type Err = EvalError;

    /// Case-insensitive; surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "greedy" => Ok(Self::Greedy),
            "optimal" => Ok(Self::Optimal),
            "wang2024" => Ok(Self::Wang2024),
            _ => Err(EvalError::UnknownRule(s.to_string())),
        }
    }
}

/// The outcome of matching one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMatch {
    /// Ground truths found.
    pub tp: usize,
    /// Predictions not counted as hits: `n_pred - tp` for greedy/optimal,
    /// `n_pred.saturating_sub(tp)` for wang2024.
    pub fp: usize,
    /// Ground truths not found: `n_truth - tp`.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// For each ground truth, the prediction that confirmed it. Under
    /// wang2024 several truths can name the same prediction.
    pub truth_to_pred: Vec<Option<usize>>,
    /// For each prediction, whether it confirmed at least one ground truth.
    pub pred_matched: Vec<bool>,
}

impl ImageMatch {
    /// Number of ground truths.
    pub fn n_truth(&self) -> usize {
        self.truth_to_pred.len()
    }

    /// Number of predictions.
    pub fn n_pred(&self) -> usize {
        self.pred_matched.len()
    }

    /// The (truth index, prediction index) pairs, in truth order.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.truth_to_pred.iter().enumerate().filter_map(|(t, p)| p.map(|p| (t, p)))
    }

    fn from_assignment(truth_to_pred: Vec<Option<usize>>, n_pred: usize, rule: MatchRule) -> Self {
        let mut pred_matched = vec![false; n_pred];
        for p in truth_to_pred.iter().flatten() {
            pred_matched[*p] = true;
        }
        let tp = truth_to_pred.iter().filter(|p| p.is_some()).count();
        let fp = if rule.is_one_to_one() { n_pred - tp } else { n_pred.saturating_sub(tp) };
        Self { tp, fp, fn_: truth_to_pred.len() - tp, truth_to_pred, pred_matched }
    }
}

/// Matches `pred` to `truth` under `rule` with radius `radius_px` (pixels).
///
/// ```
/// use mitoscope_eval::{MatchRule, match_image};
/// use mitoscope_geom::Point;
/// let truth = [Point::new(0.0, 0.0), Point::new(10.0, 0.0)];
/// let pred = [Point::new(1.0, 0.0), Point::new(50.0, 50.0)];
/// let m = match_image(&truth, &pred, 5.0, MatchRule::Greedy);
/// assert_eq!((m.tp, m.fp, m.fn_), (1, 1, 1));
/// assert_eq!(m.truth_to_pred, [Some(0), None]);
/// ```
pub fn match_image(truth: &[Point], pred: &[Point], radius_px: f64, rule: MatchRule) -> ImageMatch {
    ImageMatch::from_assignment(assign(truth, pred, radius_px, rule), pred.len(), rule)
}

/// Number of truths found; the same as `match_image(..).tp` without building
/// the per-point vectors the caller does not need.
pub(crate) fn count_tp(truth: &[Point], pred: &[Point], radius_px: f64, rule: MatchRule) -> usize {
    assign(truth, pred, radius_px, rule).iter().filter(|p| p.is_some()).count()
}

fn assign(truth: &[Point], pred: &[Point], r: f64, rule: MatchRule) -> Vec<Option<usize>> {
    let cands = candidates(truth, pred, r);
    match rule {
        MatchRule::Greedy => greedy(&cands, pred.len()),
        MatchRule::Optimal => optimal(&cands, truth.len(), pred.len(), r),
        MatchRule::Wang2024 => wang(&cands, r),
    }
}

/// For each truth, the predictions with distance `<= r` as `(distance, index)`,
/// sorted by distance then index: the candidate lists every rule works from.
///
/// Predictions are bucketed in a grid of cells `2r` wide, so a truth only looks
/// at the 3x3 cells around its own: within `r` of a point means at most half a
/// cell away, hence at most one cell index apart even after rounding. Points
/// whose cell index would not fit comfortably in an `i64` (or a radius that is
/// not positive and finite) fall back to comparing every pair.
pub(crate) fn candidates(truth: &[Point], pred: &[Point], r: f64) -> Vec<Vec<(f64, usize)>> {
    let cell = 2.0 * r;
    let key = |q: &Point| -> Option<(i64, i64)> {
        let (cx, cy) = ((q.x / cell).floor(), (q.y / cell).floor());
        (cx.abs() < 1e15 && cy.abs() < 1e15).then_some((cx as i64, cy as i64))
    };
    let gridded = r > 0.0
        && cell.is_finite()
        && pred.len().saturating_mul(truth.len()) > 64
        && truth.iter().chain(pred).all(|q| key(q).is_some());
    let mut out: Vec<Vec<(f64, usize)>> = Vec::with_capacity(truth.len());
    if gridded {
        let mut grid: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
        for (j, q) in pred.iter().enumerate() {
            if let Some(k) = key(q) {
                grid.entry(k).or_default().push(j);
            }
        }
        for t in truth {
            let mut c = Vec::new();
            if let Some((kx, ky)) = key(t) {
                for dx in -1..=1 {
                    for dy in -1..=1 {
                        for &j in grid.get(&(kx + dx, ky + dy)).map(Vec::as_slice).unwrap_or(&[]) {
                            let d = t.distance(&pred[j]);
                            if d <= r {
                                c.push((d, j));
                            }
                        }
                    }
                }
            }
            out.push(c);
        }
    } else {
        for t in truth {
            out.push(pred.iter().enumerate().map(|(j, q)| (t.distance(q), j)).filter(|&(d, _)| d <= r).collect());
        }
    }
    for c in &mut out {
        // Distances here are never NaN (NaN fails `d <= r`).
        c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    out
}

/// Truths in input order take their first unused candidate (nearest, then
/// lowest index).
fn greedy(cands: &[Vec<(f64, usize)>], n_pred: usize) -> Vec<Option<usize>> {
    let mut used = vec![false; n_pred];
    cands
        .iter()
        .map(|c| {
            let &(_, j) = c.iter().find(|&&(_, j)| !used[j])?;
            used[j] = true;
            Some(j)
        })
        .collect()
}

/// The nearest prediction overall is the first candidate, if there is one;
/// found only when strictly within `r`.
fn wang(cands: &[Vec<(f64, usize)>], r: f64) -> Vec<Option<usize>> {
    cands.iter().map(|c| c.first().filter(|&&(d, _)| d < r).map(|&(_, j)| j)).collect()
}

/// Disjoint-set forest with path halving, for splitting the truth/prediction
/// graph into independent components.
pub(crate) struct Dsu(Vec<usize>);

impl Dsu {
    pub(crate) fn new(n: usize) -> Self {
        Self((0..n).collect())
    }
    pub(crate) fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    pub(crate) fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a] = b;
        }
    }
}

type Component = (Vec<usize>, Vec<usize>, Vec<(usize, usize, f64)>);

fn optimal(cands: &[Vec<(f64, usize)>], nt: usize, np: usize, r: f64) -> Vec<Option<usize>> {
    let mut out = vec![None; nt];
    // Matchings never cross components, so each is solved on its own: the
    // Hungarian method is cubic, and real images are many small clusters.
    let mut dsu = Dsu::new(nt + np);
    for (i, c) in cands.iter().enumerate() {
        for &(_, j) in c {
            dsu.union(i, nt + j);
        }
    }
    let mut comp_of_root: HashMap<usize, usize> = HashMap::new();
    // (truths, predictions, allowed pairs (truth, prediction, distance)) per component.
    let mut comps: Vec<Component> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        if c.is_empty() {
            continue;
        }
        let root = dsu.find(i);
        let k = *comp_of_root.entry(root).or_insert_with(|| {
            comps.push((Vec::new(), Vec::new(), Vec::new()));
            comps.len() - 1
        });
        comps[k].0.push(i);
        comps[k].2.extend(c.iter().map(|&(d, j)| (i, j, d)));
    }
    for (ts, ps, es) in &mut comps {
        ps.extend(es.iter().map(|e| e.1));
        ps.sort_unstable();
        ps.dedup();
        // Truths were pushed in increasing order already.
        debug_assert!(ts.windows(2).all(|w| w[0] < w[1]));
    }
    for (ts, ps, es) in comps {
        if es.len() == 1 {
            out[es[0].0] = Some(es[0].1);
            continue;
        }
        for (i, j) in solve_component(&ts, &ps, &es, r) {
            out[i] = Some(j);
        }
    }
    out
}

/// Maximum-cardinality, then minimum-total-distance matching of one
/// component, by maximum-weight assignment on integer weights
/// `BIG - scaled distance` (0 for disallowed pairs). With `BIG` larger than
/// any sum of `k` scaled distances (`k` = the smaller side), one more pair
/// always outweighs any saving in distance, so the maximum-weight assignment
/// is a maximum matching of least total (scaled) distance. Disallowed pairs
/// weigh 0, so a row assigned to one is simply unmatched.
fn solve_component(ts: &[usize], ps: &[usize], es: &[(usize, usize, f64)], r: f64) -> Vec<(usize, usize)> {
    let transpose = ts.len() > ps.len();
    let (rows, cols) = if transpose { (ps, ts) } else { (ts, ps) };
    let k = rows.len() as i128;
    // Scale so that k * BIG stays far below i64::MAX (the algorithm adds
    // labels and weights), and never finer than f64 resolution.
    let scale: i128 = ((1i128 << 61) / (k * (k + 1))).min(1i128 << 50);
    let big: i128 = k * scale + 1;
    let mut w = Matrix::new(rows.len(), cols.len(), 0i64);
    let pos = |list: &[usize], v: usize| list.binary_search(&v).ok();
    for &(i, j, d) in es {
        let (a, b) = if transpose { (j, i) } else { (i, j) };
        let (Some(ra), Some(cb)) = (pos(rows, a), pos(cols, b)) else { continue };
        // d/r in [0, 1]; NaN/inf (r = inf) saturate to 0, harmless here.
        let frac = if r > 0.0 && r.is_finite() { (d / r).clamp(0.0, 1.0) } else { 0.0 };
        let scaled = (frac * scale as f64).round() as i128;
        w[(ra, cb)] = (big - scaled) as i64;
    }
    let (_, assignment) = kuhn_munkres(&w);
    assignment
        .into_iter()
        .enumerate()
        .filter(|&(ra, cb)| w[(ra, cb)] > 0)
        .map(|(ra, cb)| if transpose { (cols[cb], rows[ra]) } else { (rows[ra], cols[cb]) })
        .collect()
}
