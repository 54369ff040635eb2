//! `mitoscope score`: HPF folders scored per slide through `mitoscope_detect::hpf_set`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use mitoscope_detect::hpf_set::write_hpf_outputs;
use mitoscope_detect::{DetectOptions, HpfSetConfig, run_hpf_set};

use super::slide::{check_numbers, field_preset, load_detector};
use crate::cli::ScoreArgs;

pub fn run(args: ScoreArgs) -> Result<ExitCode> {
    check_numbers(args.threshold, args.mpp)?;
    let field = field_preset(&args.field)?;
    if let Some(g) = &args.group {
        mitoscope_detect::hpf_set::compile_group(g)?;
    }
    if let Some(out) = &args.out {
        mitoscope_detect::hpf_set::check_hpf_out(out)?;
    }
    let detector = load_detector(&args.model)?;
    let config = HpfSetConfig {
        group: args.group.clone(),
        n_hpfs: args.field.hpfs,
        input_mpp: args.mpp,
        field,
        options: DetectOptions { threshold: args.threshold, ..DetectOptions::default() },
        show_progress: !args.json && super::show_progress(),
    };
    let (report, images) = run_hpf_set(&detector, &args.dir, args.truth.as_deref(), &config)?;
    if let Some(out) = &args.out {
        write_hpf_outputs(out, &report, &images)?;
    }
    if args.json {
        super::print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<24} {:>5} {:>5} {:>6} {:>9} {:>10} {:>5} {:>5} {:>7} {:>6}",
            "slide", "hpfs", "used", "count", "area_mm2", "eq10", "score", "truth", "annot_n", "split"
        );
        for s in &report.slides {
            let truth = s.truth.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let annotated = s.annotated_count.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                t,
                "{:<24} {:>5} {:>5} {:>6} {:>9.3} {:>10.1} {:>5} {:>5} {:>7} {:>6}",
                s.slide,
                s.hpfs_total,
                s.top_hpfs.len(),
                s.count,
                s.area_mm2,
                s.score.equivalent_10_field_count,
                s.score.score,
                truth,
                annotated,
                split_label(s.split_scores.as_deref())
            );
        }
        let _ = writeln!(
            t,
            "{}, {} at {} µm/px, top {} HPFs per slide, model {} (threshold {:.3})",
            super::count_of(report.slides.len(), "slide"),
            super::count_of(report.hpfs.len(), "HPF"),
            report.mpp,
            report.n_hpfs,
            report.model.name,
            report.model.threshold
        );
        for note in &report.notes {
            let _ = writeln!(t, "{note}");
        }
        if let Some(c) = &report.comparison {
            if let Some(source) = &report.truth_source {
                let _ = writeln!(t, "truth: {source}");
            }
            t.push_str(&super::comparison_text(c, "truth slides with no HPF here"));
        }
        if let Some(c) = &report.count_agreement {
            let _ = writeln!(
                t,
                "top-{} counts vs annotated ({}): mean absolute error {:.2}, mean error {:+.2} (predicted - annotated)",
                report.n_hpfs,
                super::count_of(c.slides, "slide"),
                c.mean_abs_error,
                c.mean_error
            );
        }
        if let Some(a) = &report.split_agreement {
            let _ = writeln!(
                t,
                "vs split scores ({}): {:.3} predicted a score their split allows",
                super::count_of(a.slides, "slide"),
                a.agreement
            );
            for (split, n) in &a.predicted {
                let _ = writeln!(t, "  {split}: predicted 1/2/3 = {}/{}/{}", n[0], n[1], n[2]);
            }
        }
        if let Some(out) = &args.out {
            let _ = writeln!(t, "written: {}/scores.csv, scores.json, detections.csv", out.display());
        }
        super::print(&t)?;
    }
    for (path, message) in &report.failures {
        super::print_failure(path, message);
    }
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `1or2`, `3`, or `-`: the scores a split allows, as GZMH V2 names them.
fn split_label(scores: Option<&[u8]>) -> String {
    match scores {
        Some(s) if !s.is_empty() => s.iter().map(u8::to_string).collect::<Vec<_>>().join("or"),
        _ => "-".into(),
    }
}
