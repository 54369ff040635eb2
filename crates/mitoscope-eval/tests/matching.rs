//! Matching rules: hand-worked cases, and randomized comparison against plain
//! reference implementations written from the rule text.

use mitoscope_eval::{ImageMatch, MatchRule, match_image};
use mitoscope_geom::Point;

const RULES: [MatchRule; 3] = [MatchRule::Greedy, MatchRule::Optimal, MatchRule::Wang2024];

fn p(x: f64, y: f64) -> Point {
    Point::new(x, y)
}

fn counts(m: &ImageMatch) -> (usize, usize, usize) {
    (m.tp, m.fp, m.fn_)
}

// ---------------------------------------------------------------- hand-worked

#[test]
fn rule_names_round_trip() {
    for rule in RULES {
        assert_eq!(rule.to_string().parse::<MatchRule>().unwrap(), rule);
        assert_eq!(serde_json::to_string(&rule).unwrap(), format!("\"{rule}\""));
    }
    assert_eq!("Optimal".parse::<MatchRule>().unwrap(), MatchRule::Optimal);
    assert!("hungarian".parse::<MatchRule>().is_err());
}

#[test]
fn equidistant_predictions_lower_index_wins() {
    let truth = [p(0.0, 0.0)];
    let pred = [p(1.0, 0.0), p(-1.0, 0.0)];
    let g = match_image(&truth, &pred, 2.0, MatchRule::Greedy);
    assert_eq!(g.truth_to_pred, [Some(0)]);
    assert_eq!(g.pred_matched, [true, false]);
    assert_eq!(counts(&g), (1, 1, 0));
    let o = match_image(&truth, &pred, 2.0, MatchRule::Optimal);
    assert_eq!(counts(&o), (1, 1, 0));
    let w = match_image(&truth, &pred, 2.0, MatchRule::Wang2024);
    assert_eq!(w.truth_to_pred, [Some(0)]);
    assert_eq!(counts(&w), (1, 1, 0));
}

#[test]
fn one_prediction_nearest_to_two_truths() {
    // P sits between A and B; Q only reaches A.
    let truth = [p(0.0, 0.0), p(2.0, 0.0)];
    let pred = [p(1.0, 0.0), p(-1.5, 0.0)];
    let g = match_image(&truth, &pred, 2.0, MatchRule::Greedy);
    // A (first in input order) takes its nearest, P; B has nothing left.
    assert_eq!(g.truth_to_pred, [Some(0), None]);
    assert_eq!(counts(&g), (1, 1, 1));
    // Input order matters for greedy: B first takes P, A then takes Q.
    let g_rev = match_image(&[truth[1], truth[0]], &pred, 2.0, MatchRule::Greedy);
    assert_eq!(counts(&g_rev), (2, 0, 0));
    // Optimal finds both.
    let o = match_image(&truth, &pred, 2.0, MatchRule::Optimal);
    assert_eq!(o.truth_to_pred, [Some(1), Some(0)]);
    assert_eq!(counts(&o), (2, 0, 0));
    // Wang2024: both truths have P as nearest prediction (d = 1 < 2).
    let w = match_image(&truth, &pred, 2.0, MatchRule::Wang2024);
    assert_eq!(w.truth_to_pred, [Some(0), Some(0)]);
    assert_eq!(w.pred_matched, [true, false]);
    assert_eq!(counts(&w), (2, 0, 0));
}

#[test]
fn wang2024_one_prediction_confirms_two_truths() {
    let truth = [p(0.0, 0.0), p(2.0, 0.0)];
    let pred = [p(1.0, 0.0)];
    let w = match_image(&truth, &pred, 2.0, MatchRule::Wang2024);
    assert_eq!(counts(&w), (2, 0, 0), "fp = n_pred.saturating_sub(tp)");
    for rule in [MatchRule::Greedy, MatchRule::Optimal] {
        assert_eq!(counts(&match_image(&truth, &pred, 2.0, rule)), (1, 0, 1));
    }
}

#[test]
fn optimal_minimises_total_distance_among_maximum_matchings() {
    // Both rules match both truths, but greedy's A->P, B->Q totals 1.2 + 3.3;
    // optimal's A->Q, B->P totals 1.3 + 0.8.
    let truth = [p(0.0, 0.0), p(2.0, 0.0)];
    let pred = [p(1.2, 0.0), p(-1.3, 0.0)];
    let g = match_image(&truth, &pred, 4.0, MatchRule::Greedy);
    assert_eq!(g.truth_to_pred, [Some(0), Some(1)]);
    let o = match_image(&truth, &pred, 4.0, MatchRule::Optimal);
    assert_eq!(o.truth_to_pred, [Some(1), Some(0)]);
    assert_eq!(counts(&o), (2, 0, 0));
}

#[test]
fn duplicate_predictions_on_one_truth() {
    let truth = [p(5.0, 5.0)];
    let pred = [p(5.0, 5.0), p(5.0, 5.0)];
    for rule in RULES {
        let m = match_image(&truth, &pred, 3.0, rule);
        assert_eq!(counts(&m), (1, 1, 0), "{rule}");
        assert_eq!(m.truth_to_pred, [Some(0)], "{rule}");
    }
}

#[test]
fn empty_sides() {
    let truth = [p(0.0, 0.0), p(10.0, 10.0)];
    for rule in RULES {
        let m = match_image(&truth, &[], 5.0, rule);
        assert_eq!(counts(&m), (0, 0, 2), "{rule}");
        assert_eq!(m.truth_to_pred, [None, None]);
        let m = match_image(&[], &truth, 5.0, rule);
        assert_eq!(counts(&m), (0, 2, 0), "{rule}");
        assert_eq!(m.pred_matched, [false, false]);
        assert_eq!(counts(&match_image(&[], &[], 5.0, rule)), (0, 0, 0));
    }
}

#[test]
fn radius_boundary_inclusive_for_greedy_optimal_strict_for_wang() {
    // 3-4-5 triangle: the distance is exactly 5.
    let truth = [p(0.0, 0.0)];
    let pred = [p(3.0, 4.0)];
    assert_eq!(match_image(&truth, &pred, 5.0, MatchRule::Greedy).tp, 1);
    assert_eq!(match_image(&truth, &pred, 5.0, MatchRule::Optimal).tp, 1);
    assert_eq!(match_image(&truth, &pred, 5.0, MatchRule::Wang2024).tp, 0);
    for rule in RULES {
        assert_eq!(match_image(&truth, &pred, 4.999, rule).tp, 0, "{rule}");
        assert_eq!(match_image(&truth, &pred, 5.001, rule).tp, 1, "{rule}");
    }
}

#[test]
fn greedy_suboptimal_optimal_finds_more() {
    // A chain: t0 takes p0 (its nearest) which t1 needed; t1's other option
    // is out of range. Optimal: t0->p1, t1->p0, t2->p2.
    let truth = [p(0.0, 0.0), p(3.0, 0.0), p(20.0, 0.0)];
    let pred = [p(1.5, 0.0), p(-1.9, 0.0), p(20.0, 1.0)];
    let g = match_image(&truth, &pred, 2.0, MatchRule::Greedy);
    assert_eq!(counts(&g), (2, 1, 1));
    let o = match_image(&truth, &pred, 2.0, MatchRule::Optimal);
    assert_eq!(counts(&o), (3, 0, 0));
    assert_eq!(o.truth_to_pred, [Some(1), Some(0), Some(2)]);
    assert_eq!(o.pairs().collect::<Vec<_>>(), [(0, 1), (1, 0), (2, 2)]);
}

#[test]
fn more_truths_than_predictions_in_one_component() {
    // Exercises the transposed assignment (rows = predictions).
    let truth = [p(0.0, 0.0), p(1.0, 0.0), p(2.0, 0.0), p(3.0, 0.0)];
    let pred = [p(1.4, 0.0), p(2.6, 0.0)];
    let o = match_image(&truth, &pred, 1.0, MatchRule::Optimal);
    assert_eq!(counts(&o), (2, 0, 2));
    // Least total distance: p0 -> t1 (0.4), p1 -> t3 (0.4) = 0.8.
    assert_eq!(o.truth_to_pred, [None, Some(0), None, Some(1)]);
}

// ------------------------------------------------------------ references

/// Deterministic generator (SplitMix64) so failures are reproducible.
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
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Points either on a small integer grid (ties and exact boundary distances
/// are common) or continuous.
fn random_points(rng: &mut Rng, n: usize, grid: bool) -> Vec<Point> {
    (0..n)
        .map(
            |_| {
                if grid { p(rng.below(8) as f64, rng.below(8) as f64) } else { p(rng.unit() * 12.0, rng.unit() * 12.0) }
            },
        )
        .collect()
}

const RADII: [f64; 5] = [1.0, 2.0, 2.5, 3.0, 5.0];

/// Greedy straight from the rule text: truths in order; candidates are the
/// unused predictions with distance <= r, sorted by (distance, index); take the first.
fn reference_greedy(truth: &[Point], pred: &[Point], r: f64) -> Vec<Option<usize>> {
    let mut used = vec![false; pred.len()];
    let mut out = Vec::new();
    for t in truth {
        let mut cands: Vec<(f64, usize)> =
            (0..pred.len()).filter(|&j| !used[j]).map(|j| (t.distance(&pred[j]), j)).filter(|c| c.0 <= r).collect();
        cands.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
        match cands.first() {
            Some(&(_, j)) => {
                used[j] = true;
                out.push(Some(j));
            }
            None => out.push(None),
        }
    }
    out
}

/// Brute force over every injective partial assignment: (max cardinality,
/// min total distance among those).
fn reference_optimal(truth: &[Point], pred: &[Point], r: f64) -> (usize, f64) {
    #[allow(clippy::too_many_arguments)] // a plain recursive enumeration, kept obvious
    fn rec(
        i: usize,
        truth: &[Point],
        pred: &[Point],
        r: f64,
        used: &mut Vec<bool>,
        card: usize,
        dist: f64,
        best: &mut (usize, f64),
    ) {
        if i == truth.len() {
            if card > best.0 || (card == best.0 && dist < best.1) {
                *best = (card, dist);
            }
            return;
        }
        rec(i + 1, truth, pred, r, used, card, dist, best);
        for j in 0..pred.len() {
            let d = truth[i].distance(&pred[j]);
            if !used[j] && d <= r {
                used[j] = true;
                rec(i + 1, truth, pred, r, used, card + 1, dist + d, best);
                used[j] = false;
            }
        }
    }
    let mut best = (0, 0.0);
    rec(0, truth, pred, r, &mut vec![false; pred.len()], 0, 0.0, &mut best);
    best
}

/// Each truth: the nearest prediction overall (lowest index on ties); found if strictly within r.
fn reference_wang(truth: &[Point], pred: &[Point], r: f64) -> Vec<Option<usize>> {
    truth
        .iter()
        .map(|t| {
            let mut ds: Vec<(f64, usize)> = pred.iter().enumerate().map(|(j, q)| (t.distance(q), j)).collect();
            ds.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
            ds.first().filter(|x| x.0 < r).map(|x| x.1)
        })
        .collect()
}

fn check_consistent(m: &ImageMatch, truth: &[Point], pred: &[Point], r: f64, rule: MatchRule) {
    assert_eq!(m.truth_to_pred.len(), truth.len());
    assert_eq!(m.pred_matched.len(), pred.len());
    assert_eq!(m.tp + m.fn_, truth.len());
    let mut seen = vec![0; pred.len()];
    for (t, j) in m.pairs() {
        let d = truth[t].distance(&pred[j]);
        if rule == MatchRule::Wang2024 {
            assert!(d < r);
        } else {
            assert!(d <= r, "pair ({t},{j}) at {d} > {r}");
        }
        seen[j] += 1;
        assert!(m.pred_matched[j]);
    }
    if rule.is_one_to_one() {
        assert!(seen.iter().all(|&s| s <= 1), "prediction used twice");
        assert_eq!(m.tp + m.fp, pred.len());
    } else {
        assert_eq!(m.fp, pred.len().saturating_sub(m.tp));
    }
    for (j, &s) in seen.iter().enumerate() {
        assert_eq!(m.pred_matched[j], s > 0);
    }
}

#[test]
fn randomized_against_references() {
    let mut rng = Rng(0x5EED_0001);
    for case in 0..1500 {
        let grid = case % 2 == 0;
        let nt = rng.below(7) as usize;
        let np = rng.below(7) as usize;
        let truth = random_points(&mut rng, nt, grid);
        let pred = random_points(&mut rng, np, grid);
        let r = RADII[rng.below(RADII.len() as u64) as usize];
        let ctx = format!("case {case}: r={r} truth={truth:?} pred={pred:?}");

        let g = match_image(&truth, &pred, r, MatchRule::Greedy);
        check_consistent(&g, &truth, &pred, r, MatchRule::Greedy);
        assert_eq!(g.truth_to_pred, reference_greedy(&truth, &pred, r), "greedy {ctx}");

        let o = match_image(&truth, &pred, r, MatchRule::Optimal);
        check_consistent(&o, &truth, &pred, r, MatchRule::Optimal);
        let (card, min_dist) = reference_optimal(&truth, &pred, r);
        assert_eq!(o.tp, card, "optimal cardinality {ctx}");
        let total: f64 = o.pairs().map(|(t, j)| truth[t].distance(&pred[j])).sum();
        assert!(
            (total - min_dist).abs() <= 1e-9 * r * (card as f64 + 1.0),
            "optimal distance {total} vs {min_dist} {ctx}"
        );
        assert!(o.tp >= g.tp, "optimal below greedy {ctx}");

        let w = match_image(&truth, &pred, r, MatchRule::Wang2024);
        check_consistent(&w, &truth, &pred, r, MatchRule::Wang2024);
        assert_eq!(w.truth_to_pred, reference_wang(&truth, &pred, r), "wang {ctx}");
    }
}

#[test]
fn randomized_larger_optimal_properties() {
    // Beyond brute-force size: still a valid matching, never below greedy, and
    // at least a maximal matching's size (no augmenting edge left between free nodes).
    let mut rng = Rng(0x5EED_0002);
    for _ in 0..200 {
        let (nt, np) = (5 + rng.below(40) as usize, 5 + rng.below(40) as usize);
        let truth = random_points(&mut rng, nt, false);
        let pred = random_points(&mut rng, np, false);
        let r = RADII[rng.below(RADII.len() as u64) as usize];
        let g = match_image(&truth, &pred, r, MatchRule::Greedy);
        let o = match_image(&truth, &pred, r, MatchRule::Optimal);
        check_consistent(&o, &truth, &pred, r, MatchRule::Optimal);
        assert!(o.tp >= g.tp);
        for (t, tp) in truth.iter().enumerate() {
            if o.truth_to_pred[t].is_none() {
                for (j, q) in pred.iter().enumerate() {
                    assert!(o.pred_matched[j] || tp.distance(q) > r, "free pair ({t},{j}) within r left unmatched");
                }
            }
        }
    }
}

/// Maximum bipartite matching size by plain augmenting paths (Kuhn), as an
/// independent check of optimal's cardinality on cases too big to enumerate.
fn reference_max_matching(truth: &[Point], pred: &[Point], r: f64) -> usize {
    fn augment(t: usize, adj: &[Vec<usize>], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
        for &j in &adj[t] {
            if !seen[j] {
                seen[j] = true;
                if owner[j].is_none_or(|o| augment(o, adj, seen, owner)) {
                    owner[j] = Some(t);
                    return true;
                }
            }
        }
        false
    }
    let adj: Vec<Vec<usize>> =
        truth.iter().map(|t| (0..pred.len()).filter(|&j| t.distance(&pred[j]) <= r).collect()).collect();
    let mut owner = vec![None; pred.len()];
    (0..truth.len()).filter(|&t| augment(t, &adj, &mut vec![false; pred.len()], &mut owner)).count()
}

#[test]
fn randomized_larger_against_references() {
    // Large enough that candidate search goes through the spatial grid;
    // negative and far-off coordinates included.
    let mut rng = Rng(0x5EED_0004);
    for case in 0..300 {
        let (nt, np) = (10 + rng.below(50) as usize, 10 + rng.below(50) as usize);
        let grid = case % 2 == 0;
        let (ox, oy) = ([0.0, -1.0e6, 3.0e5][case % 3], [0.0, 7.0e5, -20.0][case % 3]);
        let shift = |v: Vec<Point>| v.into_iter().map(|q| p(q.x * 3.0 + ox, q.y * 3.0 + oy)).collect::<Vec<_>>();
        let truth = shift(random_points(&mut rng, nt, grid));
        let pred = shift(random_points(&mut rng, np, grid));
        let r = RADII[rng.below(RADII.len() as u64) as usize] * 3.0;
        let g = match_image(&truth, &pred, r, MatchRule::Greedy);
        assert_eq!(g.truth_to_pred, reference_greedy(&truth, &pred, r), "greedy case {case}");
        let w = match_image(&truth, &pred, r, MatchRule::Wang2024);
        assert_eq!(w.truth_to_pred, reference_wang(&truth, &pred, r), "wang case {case}");
        let o = match_image(&truth, &pred, r, MatchRule::Optimal);
        check_consistent(&o, &truth, &pred, r, MatchRule::Optimal);
        assert_eq!(o.tp, reference_max_matching(&truth, &pred, r), "optimal case {case}");
    }
}

#[test]
fn randomized_translation_invariance() {
    // Integer coordinates and offsets: the translated distances are bit-identical.
    let mut rng = Rng(0x5EED_0003);
    for _ in 0..300 {
        let (nt, np) = (rng.below(9) as usize, rng.below(9) as usize);
        let truth = random_points(&mut rng, nt, true);
        let pred = random_points(&mut rng, np, true);
        let r = RADII[rng.below(RADII.len() as u64) as usize];
        let (dx, dy) = (rng.below(5000) as f64 - 2500.0, rng.below(5000) as f64);
        let shift = |v: &[Point]| v.iter().map(|q| p(q.x + dx, q.y + dy)).collect::<Vec<_>>();
        for rule in RULES {
            let a = match_image(&truth, &pred, r, rule);
            let b = match_image(&shift(&truth), &shift(&pred), r, rule);
            assert_eq!(counts(&a), counts(&b), "{rule}");
            if rule != MatchRule::Optimal {
                assert_eq!(a, b, "{rule}");
            }
        }
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn points(max: usize) -> impl Strategy<Value = Vec<Point>> {
        proptest::collection::vec((-50.0f64..50.0, -50.0f64..50.0).prop_map(|(x, y)| Point::new(x, y)), 0..max)
    }

    proptest! {
        #[test]
        fn counts_add_up(truth in points(30), pred in points(30), r in 0.1f64..40.0) {
            for rule in RULES {
                let m = match_image(&truth, &pred, r, rule);
                prop_assert_eq!(m.tp + m.fn_, truth.len());
                if rule.is_one_to_one() {
                    prop_assert_eq!(m.tp + m.fp, pred.len());
                }
            }
            let g = match_image(&truth, &pred, r, MatchRule::Greedy);
            let o = match_image(&truth, &pred, r, MatchRule::Optimal);
            prop_assert!(o.tp >= g.tp);
        }
    }
}
