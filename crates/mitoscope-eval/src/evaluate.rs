//! From annotation sets to a full [`EvalReport`].

use std::collections::{BTreeMap, HashMap};

use mitoscope_annotations::{AnnotationSet, ObjectClass};
use mitoscope_geom::Point;
use serde::{Deserialize, Serialize};

use crate::matching::{Dsu, candidates, count_tp, match_image};
use crate::metrics::{
    CountStats, Counts, FROC_RATES, Froc, FrocPoint, ImageMetrics, MAX_REPORTED_POINTS, Metrics, SweepPoint,
    ThresholdSweep, average_precision, froc_at_rates, thin_indices,
};
use crate::{EvalError, MatchRule};

/// One predicted mitosis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Position in pixels.
    pub point: Point,
    /// Detector confidence (any finite number; higher = more confident).
    pub score: f64,
}

/// Ground truth and predictions of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInput {
    /// Image identifier.
    pub image: String,
    /// Subset name (e.g. `test`), when known.
    pub subset: Option<String>,
    /// Ground-truth mitoses.
    pub truth: Vec<Point>,
    /// Predicted mitoses.
    pub pred: Vec<Prediction>,
}

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Match radius in pixels (MIDOG: 7.5 µm, i.e. 30 px at 0.25 µm/px).
    pub radius_px: f64,
    /// Matching rule.
    pub rule: MatchRule,
    /// Predictions with `score < threshold` are dropped before matching for
    /// the main (pooled, per-image, subset, count) numbers. `None` keeps all.
    pub threshold: Option<f64>,
}

/// Pairs the images of a ground-truth set and a prediction set.
///
/// - Only [`ObjectClass::Mitosis`] objects are used (look-alikes ignored), by
///   their centroids.
/// - Predictions without a score get 1.0.
/// - Images: the union, truth images first in their order, then images found
///   only in `pred` in theirs. An image listed several times in one set is
///   merged into its first occurrence.
/// - The subset comes from the truth image, else from the prediction image.
pub fn inputs_from_sets(truth: &AnnotationSet, pred: &AnnotationSet) -> Vec<ImageInput> {
    let mut out: Vec<ImageInput> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut slot = |out: &mut Vec<ImageInput>, name: &str, subset: &Option<String>| -> usize {
        let i = *index.entry(name.to_string()).or_insert_with(|| {
            out.push(ImageInput { image: name.to_string(), subset: None, truth: Vec::new(), pred: Vec::new() });
            out.len() - 1
        });
        if out[i].subset.is_none() {
            out[i].subset.clone_from(subset);
        }
        i
    };
    for img in &truth.images {
        let i = slot(&mut out, &img.image, &img.subset);
        out[i].truth.extend(img.objects.iter().filter(|o| o.class == ObjectClass::Mitosis).map(|o| o.centroid));
    }
    for img in &pred.images {
        let i = slot(&mut out, &img.image, &img.subset);
        out[i].pred.extend(
            img.objects
                .iter()
                .filter(|o| o.class == ObjectClass::Mitosis)
                .map(|o| Prediction { point: o.centroid, score: o.score.unwrap_or(1.0) }),
        );
    }
    out
}

/// Everything [`evaluate`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Matching rule used.
    pub rule: MatchRule,
    /// Match radius in pixels.
    pub radius_px: f64,
    /// Score threshold applied to the main numbers.
    pub threshold: Option<f64>,
    /// Pooled over all images (serialised as top-level `tp`, `fp`, `fn`,
    /// `precision`, `recall`, `f1`).
    #[serde(flatten)]
    pub pooled: Metrics,
    /// Number of images.
    pub n_images: usize,
    /// Ground truths over all images.
    pub n_truth: usize,
    /// Predictions kept (after the threshold) over all images.
    pub n_pred: usize,
    /// Per image, in input order.
    pub per_image: Vec<ImageMetrics>,
    /// Pooled per named subset; images without a subset are in none.
    pub subsets: BTreeMap<String, Metrics>,
    /// Pooled metrics at every distinct score (all predictions, ignoring `threshold`).
    pub sweep: ThresholdSweep,
    /// Average precision over the sweep (see [`average_precision`]); 0 with no truths.
    pub average_precision: f64,
    /// Free-response ROC over the sweep.
    pub froc: Froc,
    /// Agreement of per-image counts (after the threshold).
    pub counts: CountStats,
}

fn check(what: impl FnOnce() -> String, value: f64) -> Result<(), EvalError> {
    if value.is_finite() { Ok(()) } else { Err(EvalError::NotFinite { what: what(), value }) }
}

fn validate(images: &[ImageInput], cfg: &EvalConfig) -> Result<(), EvalError> {
    if !(cfg.radius_px.is_finite() && cfg.radius_px > 0.0) {
        return Err(EvalError::BadRadius(cfg.radius_px));
    }
    if let Some(t) = cfg.threshold
        && t.is_nan()
    {
        return Err(EvalError::BadThreshold(t));
    }
    for img in images {
        for (k, p) in img.truth.iter().enumerate() {
            check(|| format!("ground truth {k} of image {:?}: x", img.image), p.x)?;
            check(|| format!("ground truth {k} of image {:?}: y", img.image), p.y)?;
        }
        for (k, p) in img.pred.iter().enumerate() {
            check(|| format!("prediction {k} of image {:?}: x", img.image), p.point.x)?;
            check(|| format!("prediction {k} of image {:?}: y", img.image), p.point.y)?;
            check(|| format!("prediction {k} of image {:?}: score", img.image), p.score)?;
        }
    }
    Ok(())
}

/// Evaluates predictions against ground truth over many images.
///
/// Errors on a NaN/infinite coordinate or score, a radius that is not a
/// positive finite number, or a NaN threshold. Zero images give an all-zero
/// report.
pub fn evaluate(images: &[ImageInput], cfg: &EvalConfig) -> Result<EvalReport, EvalError> {
    validate(images, cfg)?;
    let (r, rule) = (cfg.radius_px, cfg.rule);

    let mut pooled = Counts::default();
    let mut per_image = Vec::with_capacity(images.len());
    let mut subsets: BTreeMap<String, Counts> = BTreeMap::new();
    let mut count_pairs = Vec::with_capacity(images.len());
    for img in images {
        let kept: Vec<Point> =
            img.pred.iter().filter(|p| cfg.threshold.is_none_or(|t| p.score >= t)).map(|p| p.point).collect();
        let m = match_image(&img.truth, &kept, r, rule);
        let c = Counts::of_image(m.tp, img.truth.len(), kept.len(), rule);
        pooled.add(&c);
        if let Some(s) = &img.subset {
            subsets.entry(s.clone()).or_default().add(&c);
        }
        count_pairs.push((img.truth.len(), kept.len()));
        let m = Metrics::from_counts(&c, rule);
        per_image.push(ImageMetrics {
            image: img.image.clone(),
            subset: img.subset.clone(),
            n_truth: img.truth.len(),
            n_pred: kept.len(),
            tp: m.tp,
            fp: m.fp,
            fn_: m.fn_,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            count_error: kept.len() as i64 - img.truth.len() as i64,
        });
    }

    let curve = sweep_curve(images, r, rule);
    let (sweep, froc, ap) = summarise_curve(&curve, pooled.n_truth, images.len(), rule);

    Ok(EvalReport {
        rule,
        radius_px: r,
        threshold: cfg.threshold,
        pooled: Metrics::from_counts(&pooled, rule),
        n_images: images.len(),
        n_truth: pooled.n_truth,
        n_pred: pooled.n_pred,
        per_image,
        subsets: subsets.into_iter().map(|(k, c)| (k, Metrics::from_counts(&c, rule))).collect(),
        sweep,
        average_precision: ap,
        froc,
        counts: CountStats::from_counts(&count_pairs),
    })
}

/// Pooled counts after applying every distinct score as threshold, in order
/// of decreasing threshold.
///
/// Exact at every threshold without re-matching every image each time. Under
/// all three rules the matching splits over the connected components of the
/// graph of truth–prediction pairs within `r` (greedy: a truth only ever
/// competes for predictions of its component; optimal: matchings never cross
/// components; wang2024: each truth looks only at its own candidates). So
/// components are taken once from all predictions, and when predictions enter
/// at a lower threshold only their components are re-matched, on the
/// predictions admitted so far in their original order (which keeps the
/// greedy tie-break). Predictions in no component are false positives at
/// every threshold. Pooled totals are updated by differences.
fn sweep_curve(images: &[ImageInput], r: f64, rule: MatchRule) -> Vec<(f64, Counts)> {
    // (score, image, n_pred, tp) events, per image in decreasing score.
    let mut events: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (ii, img) in images.iter().enumerate() {
        let (nt, np) = (img.truth.len(), img.pred.len());
        let points: Vec<Point> = img.pred.iter().map(|p| p.point).collect();
        let cands = candidates(&img.truth, &points, r);
        let mut dsu = Dsu::new(nt + np);
        for (i, c) in cands.iter().enumerate() {
            for &(_, j) in c {
                dsu.union(i, nt + j);
            }
        }
        let mut comp_of_root: HashMap<usize, usize> = HashMap::new();
        let mut comp_truth: Vec<Vec<Point>> = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            if c.is_empty() {
                continue;
            }
            let k = *comp_of_root.entry(dsu.find(i)).or_insert_with(|| {
                comp_truth.push(Vec::new());
                comp_truth.len() - 1
            });
            // Input order of truths is kept within each component.
            comp_truth[k].push(img.truth[i]);
        }
        let pred_comp: Vec<Option<usize>> = (0..np).map(|j| comp_of_root.get(&dsu.find(nt + j)).copied()).collect();
        let mut comp_pred: Vec<Vec<usize>> = vec![Vec::new(); comp_truth.len()];
        let mut comp_tp = vec![0usize; comp_truth.len()];
        let mut touched = vec![false; comp_truth.len()];

        let mut order: Vec<usize> = (0..np).collect();
        order.sort_by(|&a, &b| img.pred[b].score.total_cmp(&img.pred[a].score).then(a.cmp(&b)));
        let (mut n_pred, mut tp) = (0usize, 0usize);
        let mut k = 0;
        while k < order.len() {
            let s = img.pred[order[k]].score;
            let mut changed: Vec<usize> = Vec::new();
            while k < order.len() && img.pred[order[k]].score == s {
                let j = order[k];
                n_pred += 1;
                if let Some(c) = pred_comp[j] {
                    comp_pred[c].push(j);
                    if !std::mem::replace(&mut touched[c], true) {
                        changed.push(c);
                    }
                }
                k += 1;
            }
            for c in changed {
                touched[c] = false;
                comp_pred[c].sort_unstable();
                let pts: Vec<Point> = comp_pred[c].iter().map(|&j| points[j]).collect();
                let new = count_tp(&comp_truth[c], &pts, r, rule);
                tp = tp - comp_tp[c] + new;
                comp_tp[c] = new;
            }
            events.push((s, ii, n_pred, tp));
        }
    }
    // Stable sort keeps each image's own events in decreasing order.
    events.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut state: Vec<Counts> = images.iter().map(|img| Counts::of_image(0, img.truth.len(), 0, rule)).collect();
    let mut total = Counts::default();
    for c in &state {
        total.add(c);
    }
    let mut curve = Vec::new();
    let mut k = 0;
    while k < events.len() {
        let s = events[k].0;
        // Equal scores (by value; -0.0 == 0.0) form one threshold.
        while k < events.len() && events[k].0 == s {
            let (_, ii, n_pred, tp) = events[k];
            let new = Counts::of_image(tp, images[ii].truth.len(), n_pred, rule);
            let old = std::mem::replace(&mut state[ii], new);
            total.tp = total.tp - old.tp + new.tp;
            total.fp = total.fp - old.fp + new.fp;
            total.fn_ = total.fn_ - old.fn_ + new.fn_;
            total.n_pred = total.n_pred - old.n_pred + new.n_pred;
            k += 1;
        }
        curve.push((s, total));
    }
    curve
}

fn summarise_curve(
    curve: &[(f64, Counts)],
    n_truth: usize,
    n_images: usize,
    rule: MatchRule,
) -> (ThresholdSweep, Froc, f64) {
    let metrics: Vec<Metrics> = curve.iter().map(|(_, c)| Metrics::from_counts(c, rule)).collect();
    // Highest threshold among equal best F1: the first in decreasing order.
    let mut best_idx: Option<usize> = None;
    for (k, m) in metrics.iter().enumerate() {
        if best_idx.is_none_or(|b| m.f1 > metrics[b].f1) {
            best_idx = Some(k);
        }
    }
    let empty = Counts { fn_: n_truth, n_truth, ..Counts::default() };
    let best = best_idx.map_or_else(|| Metrics::from_counts(&empty, rule), |b| metrics[b]);
    let keep = thin_indices(curve.len(), MAX_REPORTED_POINTS, best_idx);
    let points = keep
        .iter()
        .map(|&k| {
            let m = metrics[k];
            SweepPoint {
                threshold: curve[k].0,
                tp: m.tp,
                fp: m.fp,
                fn_: m.fn_,
                precision: m.precision,
                recall: m.recall,
                f1: m.f1,
            }
        })
        .collect();
    let sweep = ThresholdSweep {
        best_threshold: best_idx.map(|b| curve[b].0),
        best_f1: best.f1,
        best,
        n_thresholds: curve.len(),
        thinned: keep.len() < curve.len(),
        points,
    };

    let ap = if n_truth == 0 {
        0.0
    } else {
        average_precision(&metrics.iter().map(|m| (m.recall, m.precision)).collect::<Vec<_>>())
    };

    let froc_all: Vec<FrocPoint> = if n_images == 0 {
        Vec::new()
    } else {
        curve
            .iter()
            .zip(&metrics)
            .map(|((t, c), m)| FrocPoint {
                threshold: *t,
                mean_fp_per_image: c.fp as f64 / n_images as f64,
                sensitivity: m.recall,
            })
            .collect()
    };
    let at_rates = froc_at_rates(&froc_all, &FROC_RATES);
    let score = at_rates.iter().map(|r| r.sensitivity).sum::<f64>() / at_rates.len() as f64;
    let froc_points = if froc_all.is_empty() { Vec::new() } else { keep.iter().map(|&k| froc_all[k]).collect() };
    (sweep, Froc { points: froc_points, at_rates, score }, ap)
}
