//! `mitoscope report`: a self-contained HTML report of detections, with their
//! errors against ground truth when it is given.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_formats::ReadOptions;
use mitoscope_report::{ImageSource, Provenance, ReportInput, ReportOptions};

use crate::cli::ReportArgs;

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let rule = super::parse_rule(&args.matching.rule)?;
    super::check_threshold(args.threshold)?;
    let mpp = super::parse_mpp(args.mpp)?;
    if let Some(dir) = &args.images
        && !dir.is_dir()
    {
        bail!("{}: --images must be a folder of images", dir.display());
    }
    if let Some(s) = &args.slide
        && !s.is_file()
    {
        bail!("{}: no such slide file", s.display());
    }
    check_report_out(&args)?;
    let opts = ReadOptions { mpp, images_dir: args.images.clone(), ..ReadOptions::default() };
    let mut pred = super::load_checked(&args.pred, None, &opts)?;
    let mut truth = args.truth.as_ref().map(|t| super::load_checked(t, None, &opts)).transpose()?;
    if let Some(t) = truth.as_mut() {
        super::leave_out_unusable(t, &mut pred);
    }
    let radius_px = match super::match_radius_px(&args.matching, mpp, truth.as_ref())? {
        Some(r) => Some(r),
        None if truth.is_some() => {
            bail!("--truth needs a match radius: --radius-px R, or --radius-um R with --mpp M")
        }
        None => mpp.map(|m| m.um_to_px(8.0)),
    };
    let images = match (&args.images, &args.slide) {
        (Some(d), _) => ImageSource::Dir(d.clone()),
        (None, Some(s)) => ImageSource::Slide(s.clone()),
        (None, None) => ImageSource::None,
    };
    let input = ReportInput {
        pred: &pred,
        truth: truth.as_ref(),
        images,
        radius_px,
        rule,
        threshold: args.threshold,
        mpp,
        provenance: Provenance {
            command_line: super::command_line(),
            model: args.model.clone().or_else(|| recorded_model(&args.pred)),
            pred_path: args.pred.display().to_string(),
            truth_path: args.truth.as_ref().map(|t| t.display().to_string()),
            tool: format!("mitoscope {}", env!("CARGO_PKG_VERSION")),
        },
        options: ReportOptions::default(),
    };
    let report = mitoscope_report::build(&input).context("building the report")?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    mitoscope_report::write(&args.out, &report)?;
    let s = &report.summary;
    let mut line = format!("report: {} ({} images, {} detections", args.out.display(), s.images, s.detections);
    if let Some((p, r, f1)) = s.prf {
        line.push_str(&format!(", precision {p:.3} recall {r:.3} F1 {f1:.3}"));
    }
    if !report.warnings.is_empty() {
        line.push_str(&format!(", {} warnings", report.warnings.len()));
    }
    line.push_str(")\n");
    super::print(&line)?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses, before any work, an `--out` that is one of the inputs, a folder,
/// or a file that is not a report this tool wrote: writing would lose it.
fn check_report_out(args: &ReportArgs) -> Result<()> {
    let out = &args.out;
    let inputs = [Some(&args.pred), args.truth.as_ref(), args.slide.as_ref()];
    if let Some(input) = inputs.into_iter().flatten().find(|p| super::same_file(out, p)) {
        bail!("{}: --out would write over the input {}; give another file name", out.display(), input.display());
    }
    if out.is_dir() {
        bail!(
            "{}: --out is a folder; give the report's file name, e.g. {}",
            out.display(),
            out.join("report.html").display()
        );
    }
    if out.exists() && !mitoscope_report::is_report_file(out) {
        bail!(
            "{}: exists and is not a report this tool wrote; it is left alone: give another file name",
            out.display()
        );
    }
    Ok(())
}

/// The model named in the `run.json` that `mitoscope detect` left beside
/// the predictions, with the command that ran it.
fn recorded_model(pred: &std::path::Path) -> Option<String> {
    let dir = if pred.is_dir() { pred } else { pred.parent()? };
    let text = std::fs::read_to_string(dir.join(mitoscope_detect::RUN_RECORD_FILE)).ok()?;
    let record: mitoscope_detect::RunRecord = serde_json::from_str(&text).ok()?;
    let mut model = format!("{} (operating threshold {:.3})", record.model, record.operating_threshold);
    if let Some(cmd) = record.command {
        model.push_str(&format!(", from: {cmd}"));
    }
    Some(model)
}
