//! Segmentation Dice/IoU, the Nottingham mitotic score and kappa.

use image::{GrayImage, Luma};
use mitoscope_eval::EvalError;
use mitoscope_eval::score::{
    FieldPreset, cohen_kappa, field_diameter_table, mitotic_score, table_row, weighted_kappa_quadratic,
};
use mitoscope_eval::segmentation::{object_dice, object_dice_masks, pixel_scores};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn mask(rows: &[&str]) -> GrayImage {
    GrayImage::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
        Luma([if rows[y as usize].as_bytes()[x as usize] == b'#' { 255 } else { 0 }])
    })
}

// --------------------------------------------------------------- segmentation

#[test]
fn pixel_dice_and_iou_hand_worked() {
    let t = mask(&["##..", "##..", "....", "...."]);
    let p = mask(&[".#..", "....", "....", "...#"]);
    // |T| = 4, |P| = 2, overlap 1: Dice 2/6, IoU 1/5.
    let s = pixel_scores(&t, &p).unwrap();
    assert!(close(s.dice, 1.0 / 3.0) && close(s.iou, 0.2), "{s:?}");
    // Any non-zero value is foreground.
    let mut p2 = t.clone();
    p2.put_pixel(0, 0, Luma([1]));
    assert_eq!(pixel_scores(&t, &p2).unwrap().dice, 1.0);
}

#[test]
fn pixel_scores_empty_masks() {
    let e = GrayImage::new(3, 3);
    let s = pixel_scores(&e, &e).unwrap();
    assert_eq!((s.dice, s.iou), (1.0, 1.0));
    let one = mask(&["#..", "...", "..."]);
    let s = pixel_scores(&one, &e).unwrap();
    assert_eq!((s.dice, s.iou), (0.0, 0.0));
}

#[test]
fn mask_size_mismatch_names_both_sizes() {
    let e = pixel_scores(&GrayImage::new(2084, 2084), &GrayImage::new(2048, 2048)).unwrap_err();
    assert_eq!(e.to_string(), "truth mask is 2084x2084, prediction 2048x2048");
    assert!(matches!(
        object_dice_masks(&GrayImage::new(3, 2), &GrayImage::new(2, 3)),
        Err(EvalError::MaskSizeMismatch { .. })
    ));
}

#[test]
fn object_dice_hand_worked() {
    let row = |xs: std::ops::Range<u32>, y: u32| xs.map(|x| (x, y)).collect::<Vec<_>>();
    // G1 (4 px) found exactly; G2 (2 px) missed; S2 (2 px) is spurious.
    let g = vec![row(0..4, 0), row(0..2, 5)];
    let s = vec![row(0..4, 0), row(10..12, 9)];
    // Both sides: 4/6 * 1 + 2/6 * 0.
    assert!(close(object_dice(&g, &s), 2.0 / 3.0));
    // Partial overlap: |G|=4, |S|=4, overlap 2 -> 0.5 both ways.
    assert!(close(object_dice(&[row(0..4, 0)], &[row(2..6, 0)]), 0.5));
    // S* is the largest overlap: G overlaps S1 by 1 px and S2 by 3 px.
    let g = vec![row(0..4, 0)];
    let s = vec![row(0..1, 0), row(1..4, 0)];
    // G side: Dice(G, S2) = 6/7. S side: S1 -> Dice 2/5 (w 1/4); S2 -> 6/7 (w 3/4).
    let want = 0.5 * (6.0 / 7.0 + 0.25 * 0.4 + 0.75 * 6.0 / 7.0);
    assert!(close(object_dice(&g, &s), want));
    // Edge cases.
    assert_eq!(object_dice(&[], &[]), 1.0);
    assert_eq!(object_dice(&[vec![]], &[]), 1.0);
    assert_eq!(object_dice(&[row(0..2, 0)], &[]), 0.0);
    assert_eq!(object_dice(&[], &[row(0..2, 0)]), 0.0);
}

#[test]
fn object_dice_from_masks_matches_pixel_sets() {
    let t = mask(&["####....", "........", "##......"]);
    let p = mask(&["####....", "........", "......##"]);
    assert!(close(object_dice_masks(&t, &p).unwrap(), 2.0 / 3.0));
    assert_eq!(object_dice_masks(&GrayImage::new(4, 4), &GrayImage::new(4, 4)).unwrap(), 1.0);
}

// --------------------------------------------------------------------- score

#[test]
fn table_is_the_elston_ellis_table() {
    let t = field_diameter_table().unwrap();
    assert_eq!(t.len(), 30);
    for (k, row) in t.iter().enumerate() {
        let d = 0.40 + 0.01 * k as f64;
        assert!((row.field_diameter_mm - d).abs() < 1e-9);
        let area = std::f64::consts::PI * (d / 2.0).powi(2);
        assert!((row.field_area_mm2 - area).abs() < 1e-6, "{row:?}");
        assert!(row.score1_max < row.score2_max);
    }
    assert!(t.windows(2).all(|w| w[0].score1_max <= w[1].score1_max && w[0].score2_max <= w[1].score2_max));
    let pick = |d: f64| table_row(d).map(|r| (r.score1_max, r.score2_max)).unwrap();
    assert_eq!(pick(0.40), (4, 9));
    assert_eq!(pick(0.50), (7, 14));
    assert_eq!(pick(0.51), (7, 15));
    assert_eq!(pick(0.60), (10, 20));
    assert_eq!(pick(0.69), (13, 27));
}

#[test]
fn ten_hpf_two_mm2_preset() {
    assert_eq!(FieldPreset::default(), FieldPreset::TenHpfTwoMm2);
    assert!((FieldPreset::TenHpfTwoMm2.diameter_mm() - 0.5046).abs() < 1e-4);
    let s = mitotic_score(10, 2.0, FieldPreset::TenHpfTwoMm2).unwrap();
    assert_eq!(s.row.field_diameter_mm, 0.50);
    // 10 fields are 2 mm² by definition: 10 per 10 fields, scored on the
    // 0.50 mm row (<= 7, 8-14, >= 15) -> score 2.
    assert_eq!(s.equivalent_10_field_count, 10.0);
    assert_eq!((s.rounded_equivalent_count, s.score), (10, 2));
    assert!(close(s.density_per_mm2, 5.0));
    // Area(0.2) is the same field.
    assert_eq!(mitotic_score(10, 2.0, FieldPreset::Area(0.2)).unwrap(), s);
}

#[test]
fn field_area_matches_its_diameter() {
    for preset in [FieldPreset::TenHpfTwoMm2, FieldPreset::Area(0.237), FieldPreset::Diameter(0.55)] {
        let d = preset.diameter_mm();
        assert!((preset.area_mm2() - std::f64::consts::PI * d * d / 4.0).abs() < 1e-12, "{preset:?}");
    }
    assert_eq!(FieldPreset::TenHpfTwoMm2.area_mm2(), 0.2);
}

#[test]
fn counts_are_scaled_to_ten_of_the_presets_own_fields() {
    // A 0.52 mm field (0.2124 mm²) scores on the 0.52 mm row; 20 mitoses in
    // 20 of those fields are 10 per 10 fields.
    let preset = FieldPreset::Diameter(0.52);
    let s = mitotic_score(20, 20.0 * preset.area_mm2(), preset).unwrap();
    assert!((s.equivalent_10_field_count - 10.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s.rounded_equivalent_count, 10);
    // 15 in 2 mm² under 10 HPF = 2 mm²: 15, score 3 (<= 14 is score 2).
    assert_eq!(mitotic_score(15, 2.0, FieldPreset::TenHpfTwoMm2).unwrap().score, 3);
    assert_eq!(mitotic_score(14, 2.0, FieldPreset::TenHpfTwoMm2).unwrap().score, 2);
}

#[test]
fn score_cut_offs_on_exactly_ten_fields() {
    let row = table_row(0.40).unwrap();
    let area = 10.0 * row.field_area_mm2;
    let score = |n| mitotic_score(n, area, FieldPreset::Diameter(0.40)).unwrap().score;
    assert_eq!((score(0), score(4), score(5), score(9), score(10), score(60)), (1, 1, 2, 2, 3, 3));
}

#[test]
fn fractional_equivalent_counts_round_half_up() {
    let row = table_row(0.50).unwrap();
    // 100 fields: the equivalent is count / 10.
    let area = 100.0 * row.field_area_mm2;
    let s = |n| mitotic_score(n, area, FieldPreset::Diameter(0.50)).unwrap();
    assert_eq!((s(74).rounded_equivalent_count, s(74).score), (7, 1));
    assert_eq!((s(76).rounded_equivalent_count, s(76).score), (8, 2));
}

#[test]
fn score_errors() {
    assert!(matches!(mitotic_score(3, 0.0, FieldPreset::default()), Err(EvalError::BadArea(_))));
    assert!(matches!(mitotic_score(3, f64::NAN, FieldPreset::default()), Err(EvalError::BadArea(_))));
    assert!(matches!(mitotic_score(3, -2.0, FieldPreset::default()), Err(EvalError::BadArea(_))));
    let e = mitotic_score(3, 2.0, FieldPreset::Diameter(0.30)).unwrap_err();
    assert!(matches!(e, EvalError::FieldOutOfRange { .. }));
    assert!(e.to_string().contains("0.40 to 0.69 mm"), "{e}");
    assert!(mitotic_score(3, 2.0, FieldPreset::Diameter(0.70)).is_err());
    assert!(mitotic_score(3, 2.0, FieldPreset::Diameter(f64::NAN)).is_err());
    assert!(mitotic_score(3, 2.0, FieldPreset::Area(-1.0)).is_err());
    // Within half a step of the ends: the end row.
    assert_eq!(table_row(0.694).unwrap().field_diameter_mm, 0.69);
    assert_eq!(table_row(0.396).unwrap().field_diameter_mm, 0.40);
}

#[test]
fn cohen_kappa_textbook() {
    // 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    // p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (x, y, n) in [(1u8, 1u8, 20), (1, 0, 5), (0, 1, 10), (0, 0, 15)] {
        a.extend(std::iter::repeat_n(x, n));
        b.extend(std::iter::repeat_n(y, n));
    }
    assert!(close(cohen_kappa(&a, &b).unwrap(), 0.4));
    assert_eq!(cohen_kappa(&[2, 2, 2], &[2, 2, 2]).unwrap(), 1.0, "single category: expected agreement 1");
    assert_eq!(cohen_kappa(&[1, 2, 3], &[1, 2, 3]).unwrap(), 1.0);
    assert!(cohen_kappa(&[1, 2], &[2, 1]).unwrap() < 0.0);
}

#[test]
fn weighted_kappa_hand_worked() {
    // O: (1,1),(1,2),(2,2),(3,3); rows 2,1,1; cols 1,2,1; n = 4.
    // Σ w O = 1/4, Σ w E = 20/4 /4 -> kappa = 1 - 4/20 = 0.8.
    assert!(close(weighted_kappa_quadratic(&[1, 1, 2, 3], &[1, 2, 2, 3], &[1, 2, 3]).unwrap(), 0.8));
    assert_eq!(weighted_kappa_quadratic(&[3, 3], &[3, 3], &[1, 2, 3]).unwrap(), 1.0);
    // Quadratic weights punish a 1-vs-3 disagreement more than 1-vs-2.
    let near = weighted_kappa_quadratic(&[1, 2, 3, 1], &[1, 2, 3, 2], &[1, 2, 3]).unwrap();
    let far = weighted_kappa_quadratic(&[1, 2, 3, 1], &[1, 2, 3, 3], &[1, 2, 3]).unwrap();
    assert!(near > far);
}

#[test]
fn kappa_errors() {
    assert!(matches!(cohen_kappa(&[1, 2], &[1]), Err(EvalError::LengthMismatch { a: 2, b: 1 })));
    assert!(matches!(cohen_kappa(&[], &[]), Err(EvalError::Empty(_))));
    assert!(matches!(weighted_kappa_quadratic(&[1], &[1, 2], &[1, 2]), Err(EvalError::LengthMismatch { .. })));
    assert!(matches!(weighted_kappa_quadratic(&[], &[], &[1, 2]), Err(EvalError::Empty(_))));
    assert!(matches!(weighted_kappa_quadratic(&[1], &[1], &[]), Err(EvalError::Empty(_))));
    assert!(matches!(weighted_kappa_quadratic(&[1], &[4], &[1, 2, 3]), Err(EvalError::UnknownCategory(4))));
    assert!(matches!(weighted_kappa_quadratic(&[1], &[1], &[1, 1]), Err(EvalError::DuplicateCategory(1))));
}
