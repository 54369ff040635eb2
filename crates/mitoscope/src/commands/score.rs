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
    let detector = load_detector(&args.model)?;
    let config = HpfSetConfig {
        group: args.group.clone(),
        n_hpfs: args.field.hpfs,
        input_mpp: args.mpp,
        field,
        options: DetectOptions { threshold: args.threshold, ..DetectOptions::default() },
        show_progress: !args.json,
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
            "{:<24} {:>5} {:>5} {:>6} {:>9} {:>10} {:>5} {:>5}",
            "slide", "hpfs", "used", "count", "area_mm2", "eq10", "score", "truth"
        );
        for s in &report.slides {
            let truth = s.truth.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                t,
                "{:<24} {:>5} {:>5} {:>6} {:>9.3} {:>10.1} {:>5} {:>5}",
                s.slide,
                s.hpfs_total,
                s.top_hpfs.len(),
                s.count,
                s.area_mm2,
                s.score.equivalent_10_field_count,
                s.score.score,
                truth
            );
        }
        let _ = writeln!(
            t,
            "{} slides, {} HPFs at {} µm/px, top {} HPFs per slide, model {} (threshold {:.3})",
            report.slides.len(),
            report.hpfs.len(),
            report.mpp,
            report.n_hpfs,
            report.model.name,
            report.model.threshold
        );
        if let Some(c) = &report.comparison {
            let _ = writeln!(
                t,
                "vs truth ({} slides): agreement {:.3}, Cohen's kappa {:.3}, quadratic weighted kappa {:.3}",
                c.slides, c.agreement, c.kappa, c.weighted_kappa
            );
            let _ = writeln!(t, "confusion (rows truth 1-3, columns predicted 1-3): {:?}", c.confusion);
            if !c.missing_predictions.is_empty() {
                let _ = writeln!(t, "truth slides with no HPF here: {}", c.missing_predictions.join(", "));
            }
            if !c.missing_truth.is_empty() {
                let _ = writeln!(t, "slides without a truth score: {}", c.missing_truth.join(", "));
            }
        }
        if let Some(out) = &args.out {
            let _ = writeln!(t, "written: {}/scores.csv, scores.json, detections.csv", out.display());
        }
        super::print(&t)?;
    }
    for (path, message) in &report.failures {
        if message.contains(&path.display().to_string()) {
            eprintln!("error: {message}");
        } else {
            eprintln!("error: {}: {message}", path.display());
        }
    }
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
