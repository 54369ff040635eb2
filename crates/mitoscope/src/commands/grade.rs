//! `mitoscope grade`: the Nottingham mitotic score of a count over an area.

use std::process::ExitCode;

use anyhow::{Context, Result};
use mitoscope_eval::score::{FieldPreset, mitotic_score};

use crate::cli::GradeArgs;

pub fn run(args: GradeArgs) -> Result<ExitCode> {
    let preset = match (args.field_diameter_mm, args.hpf_area_mm2) {
        (Some(d), _) => FieldPreset::Diameter(d),
        (None, Some(a)) => FieldPreset::Area(a),
        (None, None) => FieldPreset::default(),
    };
    let s = mitotic_score(args.count, args.area_mm2, preset).context("computing the mitotic score")?;
    if args.json {
        super::print(&(serde_json::to_string_pretty(&s)? + "\n"))?;
    } else {
        super::print(&format!(
            "mitotic score {}: {} mitoses in {:.3} mm² = {:.2}/mm², {:.2} per 10 fields of {:.3} mm diameter, \
             counted as {} (table row {:.2} mm: score 1 <= {}, score 2 <= {}, score 3 above)\n",
            s.score,
            s.count,
            s.area_mm2,
            s.density_per_mm2,
            s.equivalent_10_field_count,
            preset.diameter_mm(),
            s.rounded_equivalent_count,
            s.row.field_diameter_mm,
            s.row.score1_max,
            s.row.score2_max
        ))?;
        // The grade counts 10 fields; from less, one mitosis more or less weighs more.
        let ten_fields = 10.0 * preset.area_mm2();
        if s.area_mm2 < 0.99 * ten_fields {
            super::print(&format!(
                "note: {:.3} mm² is {:.0}% of the 10 fields ({ten_fields:.2} mm²) the grade counts; the count is scaled up\n",
                s.area_mm2,
                100.0 * s.area_mm2 / ten_fields
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
