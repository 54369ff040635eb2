//! Detection metrics: precision/recall/F1 (pooled and per image), the
//! score-threshold sweep, average precision, FROC and count agreement.
//!
//! Conventions (all documented on the items too):
//! - Any `0/0` ratio is 0 (precision with no predictions, recall with no
//!   truths, F1 with neither).
//! - Greedy/optimal: `precision = tp/(tp+fp)`, `recall = tp/(tp+fn)`,
//!   `f1 = 2tp/(2tp+fp+fn)`.
//! - Wang2024: `precision = tp/n_pred`, `recall = tp/n_truth`,
//!   `f1 = 2PR/(P+R)`; pooled by summing `tp`, `n_pred` and `n_truth`.

use serde::{Deserialize, Serialize};

use crate::MatchRule;

/// Summable detection counts, with the totals that wang2024 needs (its `fp`
/// is not `n_pred - tp` when a prediction confirms several truths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub n_truth: usize,
    pub n_pred: usize,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.n_truth += o.n_truth;
        self.n_pred += o.n_pred;
    }

    /// Counts of one image from its `tp` and sizes.
    pub fn of_image(tp: usize, n_truth: usize, n_pred: usize, rule: MatchRule) -> Self {
        let fp = if rule.is_one_to_one() { n_pred - tp } else { n_pred.saturating_sub(tp) };
        Self { tp, fp, fn_: n_truth - tp, n_truth, n_pred }
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// Precision, recall and F1 with the counts behind them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Ground truths found.
    pub tp: usize,
    /// Predictions not counted as hits.
    pub fp: usize,
    /// Ground truths missed.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// See the module notes: `tp/(tp+fp)`, or `tp/n_pred` for wang2024; 0 when
    /// there are no predictions.
    pub precision: f64,
    /// `tp/(tp+fn)` (= `tp/n_truth`); 0 when there are no truths.
    pub recall: f64,
    /// `2tp/(2tp+fp+fn)`, or `2PR/(P+R)` for wang2024; 0 when undefined.
    pub f1: f64,
}

impl Metrics {
    pub(crate) fn from_counts(c: &Counts, rule: MatchRule) -> Self {
        let (tp, fp, fn_) = (c.tp as f64, c.fp as f64, c.fn_ as f64);
        let (precision, recall, f1) = if rule.is_one_to_one() {
            (ratio(tp, tp + fp), ratio(tp, tp + fn_), ratio(2.0 * tp, 2.0 * tp + fp + fn_))
        } else {
            let p = ratio(tp, c.n_pred as f64);
            let r = ratio(tp, c.n_truth as f64);
            (p, r, ratio(2.0 * p * r, p + r))
        };
        Self { tp: c.tp, fp: c.fp, fn_: c.fn_, precision, recall, f1 }
    }
}

/// The metrics of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetrics {
    /// Image identifier.
    pub image: String,
    /// Subset name, when known.
    pub subset: Option<String>,
    /// Number of ground-truth mitoses.
    pub n_truth: usize,
    /// Number of predictions kept (after the score threshold).
    pub n_pred: usize,
    /// Ground truths found.
    pub tp: usize,
    /// Predictions not counted as hits.
    pub fp: usize,
    /// Ground truths missed.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// As [`Metrics::precision`].
    pub precision: f64,
    /// As [`Metrics::recall`].
    pub recall: f64,
    /// As [`Metrics::f1`].
    pub f1: f64,
    /// `n_pred - n_truth` (signed: positive = over-counting).
    pub count_error: i64,
}

impl ImageMetrics {
    /// The counts and ratios as a [`Metrics`].
    pub fn metrics(&self) -> Metrics {
        Metrics { tp: self.tp, fp: self.fp, fn_: self.fn_, precision: self.precision, recall: self.recall, f1: self.f1 }
    }
}

/// One point of the score-threshold sweep: predictions with
/// `score >= threshold` kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The score threshold (one of the distinct prediction scores).
    pub threshold: f64,
    /// Ground truths found.
    pub tp: usize,
    /// Predictions not counted as hits.
    pub fp: usize,
    /// Ground truths missed.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// Pooled precision.
    pub precision: f64,
    /// Pooled recall.
    pub recall: f64,
    /// Pooled F1.
    pub f1: f64,
}

/// Pooled metrics at every distinct prediction score, ignoring
/// [`crate::EvalConfig::threshold`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSweep {
    /// The threshold with the highest F1 (the highest such threshold on ties);
    /// `None` when there are no predictions.
    pub best_threshold: Option<f64>,
    /// F1 at `best_threshold` (0 without predictions).
    pub best_f1: f64,
    /// All metrics at `best_threshold` (those with no predictions kept, if
    /// there are none).
    pub best: Metrics,
    /// Number of distinct thresholds evaluated (all of them, always).
    pub n_thresholds: usize,
    /// Whether `points` (and the FROC points) were thinned for the report:
    /// when there are more than [`MAX_REPORTED_POINTS`] thresholds, evenly
    /// spaced ones (by rank, always including the first, the last and the
    /// best) are listed. AP, FROC and the best threshold always use every
    /// threshold.
    pub thinned: bool,
    /// Sweep points in order of decreasing threshold.
    pub points: Vec<SweepPoint>,
}

/// Most sweep/FROC points listed in a report; every threshold is still
/// evaluated.
pub const MAX_REPORTED_POINTS: usize = 2000;

/// One point of the FROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrocPoint {
    /// Score threshold.
    pub threshold: f64,
    /// Total false positives divided by the number of images.
    pub mean_fp_per_image: f64,
    /// Pooled recall.
    pub sensitivity: f64,
}

/// Sensitivity at one false-positive rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrocRate {
    /// Mean false positives per image allowed.
    pub fp_per_image: f64,
    /// Best sensitivity among thresholds whose mean FP per image is at most
    /// `fp_per_image`; 0 if none is.
    pub sensitivity: f64,
}

/// Free-response ROC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Froc {
    /// Curve points in order of decreasing threshold (thinned like the sweep).
    pub points: Vec<FrocPoint>,
    /// Sensitivity at [`FROC_RATES`] FP per image.
    pub at_rates: Vec<FrocRate>,
    /// Mean of the sensitivities in `at_rates`.
    pub score: f64,
}

/// The standard FROC false-positive rates per image (CAMELYON16/LUNA16 style).
pub const FROC_RATES: [f64; 7] = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// Agreement of per-image counts (predictions kept vs ground truths).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CountStats {
    /// Mean of `|n_pred - n_truth|` (0 with no images).
    pub mean_abs_error: f64,
    /// Root mean square of `n_pred - n_truth` (0 with no images).
    pub rmse: f64,
    /// Mean of `n_pred - n_truth`: the bias (0 with no images).
    pub mean_error: f64,
    /// Pearson correlation of the counts; `None` with fewer than two images
    /// or when either count is the same in every image.
    pub pearson_r: Option<f64>,
}

impl CountStats {
    pub(crate) fn from_counts(pairs: &[(usize, usize)]) -> Self {
        let n = pairs.len() as f64;
        if pairs.is_empty() {
            return Self { mean_abs_error: 0.0, rmse: 0.0, mean_error: 0.0, pearson_r: None };
        }
        let err = |&(t, p): &(usize, usize)| p as f64 - t as f64;
        let mean_error = pairs.iter().map(err).sum::<f64>() / n;
        let mean_abs_error = pairs.iter().map(|x| err(x).abs()).sum::<f64>() / n;
        let rmse = (pairs.iter().map(|x| err(x).powi(2)).sum::<f64>() / n).sqrt();
        let mt = pairs.iter().map(|x| x.0 as f64).sum::<f64>() / n;
        let mp = pairs.iter().map(|x| x.1 as f64).sum::<f64>() / n;
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for &(t, p) in pairs {
            let (dx, dy) = (t as f64 - mt, p as f64 - mp);
            sxy += dx * dy;
            sxx += dx * dx;
            syy += dy * dy;
        }
        let pearson_r =
            (pairs.len() >= 2 && sxx > 0.0 && syy > 0.0).then(|| (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0));
        Self { mean_abs_error, rmse, mean_error, pearson_r }
    }
}

/// Average precision from (recall, precision) points, all-point interpolated
/// as in PASCAL VOC 2010+: the precision envelope `p(r) = max precision over
/// points with recall >= r`, integrated as `Σ (r_k - r_{k-1}) p(r_k)` over the
/// distinct recall values in increasing order with `r_0 = 0`. Points need not
/// be sorted, and recall need not grow monotonically with the number of
/// predictions (it does not always under greedy matching). No points: 0.
pub fn average_precision(points: &[(f64, f64)]) -> f64 {
    let mut pts: Vec<(f64, f64)> = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Suffix maximum of precision = the envelope at each recall.
    let mut env = vec![0.0; pts.len()];
    let mut best = f64::NEG_INFINITY;
    for k in (0..pts.len()).rev() {
        best = best.max(pts[k].1);
        env[k] = best;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for k in 0..pts.len() {
        let r = pts[k].0;
        // Only the first point of each recall value counts (its envelope covers the rest).
        if r > prev_recall {
            ap += (r - prev_recall) * env[k];
            prev_recall = r;
        }
    }
    ap
}

/// Sensitivity at each of `rates`: the best sensitivity among points whose mean
/// FP per image is `<=` the rate, 0 if none.
pub fn froc_at_rates(points: &[FrocPoint], rates: &[f64]) -> Vec<FrocRate> {
    rates
        .iter()
        .map(|&rate| FrocRate {
            fp_per_image: rate,
            sensitivity: points
                .iter()
                .filter(|p| p.mean_fp_per_image <= rate)
                .map(|p| p.sensitivity)
                .fold(0.0, f64::max),
        })
        .collect()
}

/// Indices of at most `max` of `n` items, evenly spaced by rank, always
/// including the first, the last and `keep`.
pub(crate) fn thin_indices(n: usize, max: usize, keep: Option<usize>) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let slots = max.saturating_sub(1).max(2);
    let mut idx: Vec<usize> = (0..slots).map(|s| s * (n - 1) / (slots - 1)).collect();
    if let Some(k) = keep {
        idx.push(k);
    }
    idx.sort_unstable();
    idx.dedup();
    idx
}
