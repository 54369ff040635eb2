//! `evaluate`: pooled/per-image/subset numbers, the threshold sweep, AP,
//! FROC, count statistics, input pairing and every error path.

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_eval::{
    EvalConfig, EvalError, ImageInput, MatchRule, Prediction, average_precision, evaluate, inputs_from_sets,
    match_image,
};
use mitoscope_geom::Point;

fn p(x: f64, y: f64) -> Point {
    Point::new(x, y)
}

fn pr(x: f64, y: f64, score: f64) -> Prediction {
    Prediction { point: p(x, y), score }
}

fn img(name: &str, subset: Option<&str>, truth: Vec<Point>, pred: Vec<Prediction>) -> ImageInput {
    ImageInput { image: name.into(), subset: subset.map(Into::into), truth, pred }
}

fn cfg(rule: MatchRule) -> EvalConfig {
    EvalConfig { radius_px: 5.0, rule, threshold: None }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Three truths in image a; image b has none. Ranked predictions:
/// 0.9 hit, 0.8 false positive (in b), 0.7 hit.
fn ap_case() -> Vec<ImageInput> {
    vec![
        img(
            "a",
            Some("test"),
            vec![p(0.0, 0.0), p(100.0, 0.0), p(200.0, 0.0)],
            vec![pr(1.0, 0.0, 0.9), pr(101.0, 0.0, 0.7)],
        ),
        img("b", Some("train"), vec![], vec![pr(500.0, 500.0, 0.8)]),
    ]
}

#[test]
fn hand_worked_sweep_ap_and_froc() {
    for rule in [MatchRule::Greedy, MatchRule::Optimal, MatchRule::Wang2024] {
        let r = evaluate(&ap_case(), &cfg(rule)).unwrap();
        let pts: Vec<(f64, usize, usize, usize)> =
            r.sweep.points.iter().map(|s| (s.threshold, s.tp, s.fp, s.fn_)).collect();
        assert_eq!(pts, [(0.9, 1, 0, 2), (0.8, 1, 1, 2), (0.7, 2, 1, 1)], "{rule}");
        assert_eq!(r.sweep.n_thresholds, 3);
        assert!(!r.sweep.thinned);
        // F1: 2/4, 2/5, 4/6 -> best at 0.7.
        assert_eq!(r.sweep.best_threshold, Some(0.7));
        assert!(close(r.sweep.best_f1, 2.0 / 3.0), "{}", r.sweep.best_f1);
        assert_eq!((r.sweep.best.tp, r.sweep.best.fp, r.sweep.best.fn_), (2, 1, 1));
        // Envelope: p(1/3) = 1, p(2/3) = 2/3 -> AP = 1/3 + 2/9.
        assert!(close(r.average_precision, 5.0 / 9.0), "{rule} AP {}", r.average_precision);
        // FROC over 2 images: (fp/img, sens) = (0, 1/3), (0.5, 1/3), (0.5, 2/3).
        let froc: Vec<(f64, f64)> = r.froc.points.iter().map(|f| (f.mean_fp_per_image, f.sensitivity)).collect();
        assert_eq!(froc.len(), 3);
        assert!(close(froc[1].0, 0.5) && close(froc[2].1, 2.0 / 3.0));
        let sens: Vec<f64> = r.froc.at_rates.iter().map(|a| a.sensitivity).collect();
        let want = [1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0];
        assert!(sens.iter().zip(want).all(|(a, b)| close(*a, b)), "{sens:?}");
        assert!(close(r.froc.score, 4.0 / 7.0));
    }
}

#[test]
fn pooled_per_image_subsets_and_json_shape() {
    let r = evaluate(&ap_case(), &cfg(MatchRule::Greedy)).unwrap();
    assert_eq!((r.pooled.tp, r.pooled.fp, r.pooled.fn_), (2, 1, 1));
    assert!(close(r.pooled.precision, 2.0 / 3.0) && close(r.pooled.recall, 2.0 / 3.0));
    assert_eq!((r.n_images, r.n_truth, r.n_pred), (2, 3, 3));
    assert_eq!(r.per_image[0].count_error, -1);
    assert_eq!(r.per_image[1].count_error, 1);
    // Image b: no truths, one prediction: precision 0, recall 0/0 = 0, f1 0.
    let b = r.per_image[1].metrics();
    assert_eq!((b.tp, b.fp, b.fn_, b.precision, b.recall, b.f1), (0, 1, 0, 0.0, 0.0, 0.0));
    assert_eq!(r.subsets.keys().collect::<Vec<_>>(), ["test", "train"]);
    assert_eq!(r.subsets["test"].tp, 2);
    assert_eq!(r.subsets["train"].fp, 1);

    let v = serde_json::to_value(&r).unwrap();
    for key in [
        "rule",
        "radius_px",
        "threshold",
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "n_images",
        "n_truth",
        "n_pred",
        "per_image",
        "subsets",
        "sweep",
        "average_precision",
        "froc",
        "counts",
    ] {
        assert!(v.get(key).is_some(), "missing top-level key {key}");
    }
    assert_eq!(v["rule"], "greedy");
    assert_eq!(v["fn"], 1);
    let pi = &v["per_image"][0];
    for key in ["image", "subset", "n_truth", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "count_error"] {
        assert!(pi.get(key).is_some(), "missing per-image key {key}");
    }
    assert_eq!(v["sweep"]["points"][0]["fn"], 2);
    assert_eq!(v["sweep"]["best_threshold"], 0.7);
}

#[test]
fn threshold_drops_predictions_below_it() {
    let mut c = cfg(MatchRule::Greedy);
    c.threshold = Some(0.8);
    let r = evaluate(&ap_case(), &c).unwrap();
    // 0.9 and 0.8 kept (>=), 0.7 dropped.
    assert_eq!((r.pooled.tp, r.pooled.fp, r.pooled.fn_, r.n_pred), (1, 1, 2, 2));
    // The sweep ignores the threshold.
    assert_eq!(r.sweep.n_thresholds, 3);
}

#[test]
fn wang2024_pooled_precision_is_tp_over_predictions() {
    // Image a: one prediction confirms two truths (tp 2, n_pred 1); image b: one miss.
    let images = vec![
        img("a", None, vec![p(0.0, 0.0), p(2.0, 0.0)], vec![pr(1.0, 0.0, 1.0)]),
        img("b", None, vec![], vec![pr(50.0, 50.0, 1.0)]),
    ];
    let r = evaluate(&images, &EvalConfig { radius_px: 2.0, rule: MatchRule::Wang2024, threshold: None }).unwrap();
    assert_eq!((r.pooled.tp, r.pooled.fp, r.pooled.fn_), (2, 1, 0));
    assert!(close(r.pooled.precision, 1.0)); // 2 / 2 predictions
    assert!(close(r.pooled.recall, 1.0));
    // Per image a: precision 2/1 as the paper's formula gives.
    assert!(close(r.per_image[0].precision, 2.0));
    let g = evaluate(&images, &EvalConfig { radius_px: 2.0, rule: MatchRule::Greedy, threshold: None }).unwrap();
    assert_eq!((g.pooled.tp, g.pooled.fp, g.pooled.fn_), (1, 1, 1));
}

#[test]
fn equal_scores_form_one_threshold() {
    let images =
        vec![img("a", None, vec![p(0.0, 0.0)], vec![pr(0.0, 0.0, 0.5), pr(40.0, 0.0, 0.5), pr(80.0, 0.0, 0.2)])];
    let r = evaluate(&images, &cfg(MatchRule::Greedy)).unwrap();
    let pts: Vec<(f64, usize, usize)> = r.sweep.points.iter().map(|s| (s.threshold, s.tp, s.fp)).collect();
    assert_eq!(pts, [(0.5, 1, 1), (0.2, 1, 2)]);
}

#[test]
fn no_predictions_no_truths_no_images() {
    let r = evaluate(&[img("a", None, vec![p(1.0, 1.0)], vec![])], &cfg(MatchRule::Optimal)).unwrap();
    assert_eq!(r.sweep.best_threshold, None);
    assert_eq!((r.sweep.best.tp, r.sweep.best.fn_, r.sweep.best_f1), (0, 1, 0.0));
    assert_eq!(r.average_precision, 0.0);
    assert_eq!(r.froc.score, 0.0);

    let r = evaluate(&[img("a", None, vec![], vec![pr(1.0, 1.0, 0.3)])], &cfg(MatchRule::Greedy)).unwrap();
    assert_eq!(r.average_precision, 0.0, "no truths: AP 0");
    assert_eq!(r.sweep.best_threshold, Some(0.3));

    let r = evaluate(&[], &cfg(MatchRule::Greedy)).unwrap();
    assert_eq!((r.n_images, r.pooled.tp, r.pooled.f1), (0, 0, 0.0));
    assert!(r.froc.points.is_empty());
    assert_eq!(r.counts.pearson_r, None);
}

#[test]
fn count_statistics_hand_worked() {
    // (truth, pred) counts: (2,3), (4,4), (0,1); predictions far from every truth.
    let far = |n: usize| (0..n).map(|k| pr(1000.0 + 100.0 * k as f64, 0.0, 1.0)).collect::<Vec<_>>();
    let truths = |n: usize| (0..n).map(|k| p(100.0 * k as f64, 0.0)).collect::<Vec<_>>();
    let images =
        vec![img("a", None, truths(2), far(3)), img("b", None, truths(4), far(4)), img("c", None, truths(0), far(1))];
    let c = evaluate(&images, &cfg(MatchRule::Greedy)).unwrap().counts;
    assert!(close(c.mean_error, 2.0 / 3.0));
    assert!(close(c.mean_abs_error, 2.0 / 3.0));
    assert!(close(c.rmse, (2.0f64 / 3.0).sqrt()));
    let want_r = 6.0 / (8.0f64 * 42.0 / 9.0).sqrt();
    assert!(close(c.pearson_r.unwrap(), want_r), "{:?} vs {want_r}", c.pearson_r);
}

#[test]
fn average_precision_envelope_and_order_independence() {
    // Non-monotone precision: the envelope lifts the dip.
    let pts = [(0.5, 0.5), (0.25, 1.0), (0.5, 0.4), (1.0, 0.6)];
    // recall 0.25: max(1, .5, .4, .6) = 1; 0.5: max(.5, .4, .6) = .6; 1.0: .6
    let want = 0.25 * 1.0 + 0.25 * 0.6 + 0.5 * 0.6;
    assert!(close(average_precision(&pts), want));
    let mut rev = pts;
    rev.reverse();
    assert!(close(average_precision(&rev), want));
    assert_eq!(average_precision(&[]), 0.0);
}

/// Deterministic generator (SplitMix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_images(rng: &mut Rng) -> Vec<ImageInput> {
    let n_img = 1 + rng.below(5) as usize;
    (0..n_img)
        .map(|i| {
            let truth = (0..rng.below(8)).map(|_| p(rng.below(20) as f64, rng.below(20) as f64)).collect();
            // Few score levels so that ties across images and within images are common.
            let pred = (0..rng.below(12))
                .map(|_| pr(rng.below(20) as f64, rng.below(20) as f64, rng.below(6) as f64 / 5.0))
                .collect();
            img(&format!("img{i}"), None, truth, pred)
        })
        .collect()
}

#[test]
fn sweep_equals_direct_evaluation_at_every_threshold() {
    // The sweep updates matchings incrementally; re-evaluating from scratch at
    // each of its thresholds must give the same pooled counts.
    let mut rng = Rng(0xA11CE);
    for case in 0..150 {
        let images = random_images(&mut rng);
        for rule in [MatchRule::Greedy, MatchRule::Optimal, MatchRule::Wang2024] {
            let c = EvalConfig { radius_px: [1.0, 2.0, 3.0][case % 3], rule, threshold: None };
            let r = evaluate(&images, &c).unwrap();
            let mut distinct: Vec<f64> = images.iter().flat_map(|i| i.pred.iter().map(|p| p.score)).collect();
            distinct.sort_by(|a, b| b.partial_cmp(a).unwrap());
            distinct.dedup();
            assert_eq!(r.sweep.points.iter().map(|s| s.threshold).collect::<Vec<_>>(), distinct);
            for s in &r.sweep.points {
                let direct = evaluate(&images, &EvalConfig { threshold: Some(s.threshold), ..c }).unwrap();
                assert_eq!(
                    (s.tp, s.fp, s.fn_),
                    (direct.pooled.tp, direct.pooled.fp, direct.pooled.fn_),
                    "{rule} case {case}"
                );
                assert_eq!(s.f1, direct.pooled.f1);
                // And pooled = sum of independent per-image matchings.
                let tp: usize = images
                    .iter()
                    .map(|i| {
                        let kept: Vec<Point> =
                            i.pred.iter().filter(|q| q.score >= s.threshold).map(|q| q.point).collect();
                        match_image(&i.truth, &kept, c.radius_px, rule).tp
                    })
                    .sum();
                assert_eq!(tp, s.tp);
            }
            // Best threshold is the first maximal F1 in decreasing threshold order.
            if let Some(best) = r.sweep.best_threshold {
                let max = r.sweep.points.iter().map(|s| s.f1).fold(f64::MIN, f64::max);
                let first = r.sweep.points.iter().find(|s| s.f1 == max).unwrap();
                assert_eq!(best, first.threshold);
            }
            // FROC at the standard rates is non-decreasing, within [0, 1].
            let sens: Vec<f64> = r.froc.at_rates.iter().map(|a| a.sensitivity).collect();
            assert!(sens.windows(2).all(|w| w[0] <= w[1]), "{sens:?}");
            assert!(sens.iter().all(|s| (0.0..=1.0).contains(s)));
            if rule.is_one_to_one() {
                assert!((0.0..=1.0).contains(&r.average_precision));
                // One-to-one: mean FP per image never falls as the threshold drops.
                let fps: Vec<f64> = r.froc.points.iter().map(|f| f.mean_fp_per_image).collect();
                assert!(fps.windows(2).all(|w| w[0] <= w[1]), "{fps:?}");
            }
        }
    }
}

#[test]
fn many_distinct_scores_are_all_evaluated_and_points_thinned() {
    let n = 5000;
    let truth: Vec<Point> = (0..n / 2).map(|k| p((k % 100) as f64 * 50.0, (k / 100) as f64 * 50.0)).collect();
    // Every other prediction hits a truth; scores all distinct.
    let pred: Vec<Prediction> = (0..n)
        .map(|k| {
            let t = truth[(k / 2) % truth.len()];
            let off = if k % 2 == 0 { 1.0 } else { 20.0 };
            pr(t.x + off, t.y, 1.0 - k as f64 / n as f64)
        })
        .collect();
    let images = vec![img("big", None, truth, pred)];
    let r = evaluate(&images, &cfg(MatchRule::Greedy)).unwrap();
    assert_eq!(r.sweep.n_thresholds, n);
    assert!(r.sweep.thinned);
    assert!(r.sweep.points.len() <= mitoscope_eval::MAX_REPORTED_POINTS);
    assert_eq!(r.froc.points.len(), r.sweep.points.len());
    assert!(r.sweep.points.iter().any(|s| Some(s.threshold) == r.sweep.best_threshold));
    // Precision alternates 1, 2/3, 3/4, ... ; recall reaches 1 at the end.
    assert_eq!(r.sweep.points.last().unwrap().recall, 1.0);
    assert_eq!(r.pooled.tp, n / 2);
}

#[test]
fn inputs_from_sets_pairs_images() {
    let mitosis = |x: f64| Annotation::point(p(x, 0.0), ObjectClass::Mitosis);
    let mut t1 = ImageAnnotations::new("t1");
    t1.subset = Some("test".into());
    t1.objects = vec![mitosis(1.0), Annotation::point(p(9.0, 9.0), ObjectClass::NonMitosis)];
    let t2 = ImageAnnotations::new("t2");
    let truth = AnnotationSet::from_images(vec![t1, t2]);

    let mut p_only = ImageAnnotations::new("p_only");
    p_only.subset = Some("extra".into());
    p_only.objects = vec![mitosis(3.0).with_score(0.25)];
    let mut p1 = ImageAnnotations::new("t1");
    p1.objects = vec![mitosis(2.0), Annotation::point(p(5.0, 5.0), ObjectClass::NonMitosis).with_score(0.9)];
    let pred = AnnotationSet::from_images(vec![p_only, p1]);

    let inputs = inputs_from_sets(&truth, &pred);
    let names: Vec<&str> = inputs.iter().map(|i| i.image.as_str()).collect();
    assert_eq!(names, ["t1", "t2", "p_only"]);
    assert_eq!(inputs[0].truth, [p(1.0, 0.0)], "look-alikes ignored");
    assert_eq!(inputs[0].pred, [pr(2.0, 0.0, 1.0)], "no score -> 1.0, look-alikes ignored");
    assert_eq!(inputs[0].subset.as_deref(), Some("test"));
    assert!(inputs[1].pred.is_empty() && inputs[1].truth.is_empty());
    assert_eq!(inputs[2].pred, [pr(3.0, 0.0, 0.25)]);
    assert_eq!(inputs[2].subset.as_deref(), Some("extra"), "subset from pred when truth lacks the image");
}

#[test]
fn every_error_path() {
    let ok = || vec![img("a", None, vec![p(0.0, 0.0)], vec![pr(1.0, 1.0, 0.5)])];
    let c = cfg(MatchRule::Greedy);

    let mut bad = ok();
    bad[0].truth[0].x = f64::NAN;
    let e = evaluate(&bad, &c).unwrap_err();
    assert!(
        matches!(&e, EvalError::NotFinite { what, .. } if what.contains("ground truth 0") && what.contains("\"a\"")),
        "{e}"
    );

    let mut bad = ok();
    bad[0].pred[0].point.y = f64::INFINITY;
    assert!(matches!(evaluate(&bad, &c), Err(EvalError::NotFinite { .. })));

    let mut bad = ok();
    bad[0].pred[0].score = f64::NAN;
    let e = evaluate(&bad, &c).unwrap_err();
    assert!(e.to_string().contains("score"), "{e}");

    let mut bad = ok();
    bad[0].pred[0].score = f64::NEG_INFINITY;
    assert!(evaluate(&bad, &c).is_err());

    for radius in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = evaluate(&ok(), &EvalConfig { radius_px: radius, ..c }).unwrap_err();
        assert!(matches!(e, EvalError::BadRadius(_)), "{radius}");
    }
    assert!(matches!(evaluate(&ok(), &EvalConfig { threshold: Some(f64::NAN), ..c }), Err(EvalError::BadThreshold(_))));
}
