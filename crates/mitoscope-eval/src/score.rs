//! The Nottingham mitotic count score and rater agreement (Cohen's kappa).
//!
//! The score table (`data/field_diameter_table.csv`, embedded) is the standard
//! Elston–Ellis table of score cut-offs for a count over 10 high-power fields,
//! by microscope field diameter 0.40–0.69 mm, as reproduced in the NHSBSP /
//! RCPath breast pathology reporting guidelines.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::EvalError;

const TABLE_CSV: &str = include_str!("../data/field_diameter_table.csv");

/// How far outside the table's diameters (0.40–0.69 mm) a field may be and
/// still use the nearest row: half a table step.
pub const DIAMETER_TOLERANCE_MM: f64 = 0.005;

/// One row of the field-diameter table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// Field diameter in mm.
    pub field_diameter_mm: f64,
    /// Field area in mm² (`π (d/2)²`).
    pub field_area_mm2: f64,
    /// Score 1 if the 10-field count is at most this.
    pub score1_max: u32,
    /// Score 2 if the 10-field count is at most this (else 3).
    pub score2_max: u32,
}

impl TableRow {
    /// Score 1, 2 or 3 for a whole count over 10 fields of this size.
    pub fn score_for(&self, count_10_fields: u64) -> u8 {
        if count_10_fields <= self.score1_max as u64 {
            1
        } else if count_10_fields <= self.score2_max as u64 {
            2
        } else {
            3
        }
    }
}

fn parse_table(text: &str) -> Result<Vec<TableRow>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let header = lines.next().ok_or("no header")?;
    if header != "field_diameter_mm,field_area_mm2,score1_max,score2_max" {
        return Err(format!("unexpected header {header:?}"));
    }
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let [d, a, s1, s2] = f.as_slice() else { return Err(format!("row {l:?} has {} fields", f.len())) };
            let e = |_| format!("bad number in row {l:?}");
            Ok(TableRow {
                field_diameter_mm: d.parse().map_err(e)?,
                field_area_mm2: a.parse().map_err(e)?,
                score1_max: s1.parse().map_err(|_| format!("bad number in row {l:?}"))?,
                score2_max: s2.parse().map_err(|_| format!("bad number in row {l:?}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if rows.is_empty() {
        return Err("no rows".into());
    }
    Ok(rows)
}

/// The embedded field-diameter table, in increasing diameter.
pub fn field_diameter_table() -> Result<&'static [TableRow], EvalError> {
    static TABLE: OnceLock<Result<Vec<TableRow>, String>> = OnceLock::new();
    match TABLE.get_or_init(|| parse_table(TABLE_CSV)) {
        Ok(rows) => Ok(rows),
        Err(e) => Err(EvalError::Table(e.clone())),
    }
}

/// The microscope field that counts are referred to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldPreset {
    /// A field of this diameter in mm.
    Diameter(f64),
    /// A field of this area in mm² (per field, not per 10 fields).
    Area(f64),
    /// The TUPAC16/MIDOG convention: 10 HPF = 2 mm², i.e. 0.2 mm² per field
    /// (diameter ≈ 0.505 mm, nearest table row 0.50 mm).
    TenHpfTwoMm2,
}

impl Default for FieldPreset {
    /// [`FieldPreset::TenHpfTwoMm2`]: the datasets Mitoscope reads (TUPAC16,
    /// MIDOG) define their mitotic count over 10 HPF = 2 mm², so counts from
    /// them map onto the table without assuming a particular microscope.
    fn default() -> Self {
        Self::TenHpfTwoMm2
    }
}

impl FieldPreset {
    /// Field diameter in mm (`2 sqrt(A/π)` for an area).
    pub fn diameter_mm(self) -> f64 {
        match self {
            Self::Diameter(d) => d,
            Self::Area(a) => 2.0 * (a / std::f64::consts::PI).sqrt(),
            Self::TenHpfTwoMm2 => 2.0 * (0.2 / std::f64::consts::PI).sqrt(),
        }
    }

    /// Area of one field in mm² (`π d² / 4` for a diameter, 0.2 for 10 HPF = 2 mm²).
    pub fn area_mm2(self) -> f64 {
        match self {
            Self::Diameter(d) => std::f64::consts::PI * d * d / 4.0,
            Self::Area(a) => a,
            Self::TenHpfTwoMm2 => 0.2,
        }
    }
}

/// A Nottingham mitotic count score with how it was reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MitoticScore {
    /// 1, 2 or 3.
    pub score: u8,
    /// Mitoses counted.
    pub count: usize,
    /// Area over which they were counted, mm².
    pub area_mm2: f64,
    /// `count / area_mm2`.
    pub density_per_mm2: f64,
    /// `count * (10 * field area) / area_mm2`: the count scaled to 10 fields
    /// of the preset's size (2 mm² for 10 HPF = 2 mm²).
    pub equivalent_10_field_count: f64,
    /// `equivalent_10_field_count` rounded half up: the whole count looked up
    /// in the table.
    pub rounded_equivalent_count: u64,
    /// The table row used.
    pub row: TableRow,
}

/// The table row nearest to `diameter_mm` (the lower one on an exact tie).
/// Errors when the diameter is more than [`DIAMETER_TOLERANCE_MM`] outside
/// the table, or not finite.
pub fn table_row(diameter_mm: f64) -> Result<TableRow, EvalError> {
    let table = field_diameter_table()?;
    let (first, last) = (table[0], table[table.len() - 1]);
    let out_of_range = || EvalError::FieldOutOfRange {
        diameter_mm,
        min_mm: first.field_diameter_mm,
        max_mm: last.field_diameter_mm,
        min_area_mm2: first.field_area_mm2,
        max_area_mm2: last.field_area_mm2,
    };
    // `!(a <= b)` also rejects NaN.
    if !(diameter_mm >= first.field_diameter_mm - DIAMETER_TOLERANCE_MM
        && diameter_mm <= last.field_diameter_mm + DIAMETER_TOLERANCE_MM)
    {
        return Err(out_of_range());
    }
    let mut best = first;
    for row in table {
        if (row.field_diameter_mm - diameter_mm).abs() < (best.field_diameter_mm - diameter_mm).abs() {
            best = *row;
        }
    }
    Ok(best)
}

/// The Nottingham mitotic count score of `count` mitoses found in `area_mm2`
/// of tissue, referred to the field size of `preset`.
///
/// The count is scaled to 10 of the preset's own fields (for 10 HPF = 2 mm²,
/// to 2 mm²), as a pathologist counts 10 fields of their microscope, rounded
/// half up to a whole count (the table is defined on whole counts, so the cut
/// between "≤ 7" and "≥ 8" falls at 7.5), and scored with the table row
/// nearest the field's diameter.
///
/// ```
/// use mitoscope_eval::score::{FieldPreset, mitotic_score};
/// // 10 mitoses in 2 mm²: 10 per 10 fields, 0.50 mm row -> score 2.
/// let s = mitotic_score(10, 2.0, FieldPreset::TenHpfTwoMm2).unwrap();
/// assert_eq!((s.score, s.equivalent_10_field_count, s.row.field_diameter_mm), (2, 10.0, 0.50));
/// ```
pub fn mitotic_score(count: usize, area_mm2: f64, preset: FieldPreset) -> Result<MitoticScore, EvalError> {
    if !(area_mm2.is_finite() && area_mm2 > 0.0) {
        return Err(EvalError::BadArea(area_mm2));
    }
    let row = table_row(preset.diameter_mm())?;
    let eq = count as f64 * (10.0 * preset.area_mm2()) / area_mm2;
    // Saturating float-to-int cast: absurdly large equivalents are score 3 anyway.
    let rounded = (eq + 0.5).floor() as u64;
    Ok(MitoticScore {
        score: row.score_for(rounded),
        count,
        area_mm2,
        density_per_mm2: count as f64 / area_mm2,
        equivalent_10_field_count: eq,
        rounded_equivalent_count: rounded,
        row,
    })
}

/// Cohen's (unweighted) kappa between two raters' ratings of the same items.
///
/// `(p_o - p_e) / (1 - p_e)`, computed in exact integer arithmetic. When the
/// expected agreement `p_e` is 1 (both raters gave every item the same single
/// category) the kappa is undefined; this returns 1.0 (perfect agreement).
/// Errors on different lengths or empty input.
pub fn cohen_kappa(a: &[u8], b: &[u8]) -> Result<f64, EvalError> {
    if a.len() != b.len() {
        return Err(EvalError::LengthMismatch { a: a.len(), b: b.len() });
    }
    if a.is_empty() {
        return Err(EvalError::Empty("rating list"));
    }
    let n = a.len() as i128;
    let (mut ca, mut cb) = ([0i128; 256], [0i128; 256]);
    let mut agree = 0i128;
    for (&x, &y) in a.iter().zip(b) {
        ca[x as usize] += 1;
        cb[y as usize] += 1;
        agree += (x == y) as i128;
    }
    let chance: i128 = ca.iter().zip(&cb).map(|(x, y)| x * y).sum();
    // kappa = (n*agree - chance) / (n² - chance), all over n².
    let den = n * n - chance;
    if den == 0 {
        return Ok(1.0);
    }
    Ok((n * agree - chance) as f64 / den as f64)
}

/// Quadratically weighted kappa over ordered `categories` (e.g. `[1, 2, 3]`):
/// `1 - Σ w_ij O_ij / Σ w_ij E_ij`, `w_ij = (i - j)² / (k - 1)²`, `E` from the
/// marginals. When `Σ w E = 0` (every rating in one category) it returns 1.0.
/// Errors on different lengths, empty input, no or repeated categories, and a
/// rating not among the categories.
pub fn weighted_kappa_quadratic(a: &[u8], b: &[u8], categories: &[u8]) -> Result<f64, EvalError> {
    if a.len() != b.len() {
        return Err(EvalError::LengthMismatch { a: a.len(), b: b.len() });
    }
    if a.is_empty() {
        return Err(EvalError::Empty("rating list"));
    }
    if categories.is_empty() {
        return Err(EvalError::Empty("category list"));
    }
    let mut index = [None::<usize>; 256];
    for (i, &c) in categories.iter().enumerate() {
        if index[c as usize].replace(i).is_some() {
            return Err(EvalError::DuplicateCategory(c));
        }
    }
    let k = categories.len();
    let idx = |v: u8| index[v as usize].ok_or(EvalError::UnknownCategory(v));
    let mut observed = vec![vec![0i128; k]; k];
    let (mut ra, mut rb) = (vec![0i128; k], vec![0i128; k]);
    for (&x, &y) in a.iter().zip(b) {
        let (i, j) = (idx(x)?, idx(y)?);
        observed[i][j] += 1;
        ra[i] += 1;
        rb[j] += 1;
    }
    // Integer sums: Σ (i-j)² O_ij * n and Σ (i-j)² ra_i rb_j (common factors cancel).
    let n = a.len() as i128;
    let (mut num, mut den) = (0i128, 0i128);
    for i in 0..k {
        for j in 0..k {
            let w = ((i as i128) - (j as i128)).pow(2);
            num += w * observed[i][j] * n;
            den += w * ra[i] * rb[j];
        }
    }
    if den == 0 {
        return Ok(1.0);
    }
    Ok(1.0 - num as f64 / den as f64)
}
