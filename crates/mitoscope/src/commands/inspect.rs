//! `mitoscope inspect PATH`: what a dataset or annotation file holds and what
//! is wrong with it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use mitoscope_annotations::{AnnotationSet, ObjectClass};
use mitoscope_formats::{Format, ReadOptions};
use serde::Serialize;

use crate::cli::InspectArgs;

#[derive(Debug, Serialize)]
struct Summary {
    path: String,
    format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    layout: Option<String>,
    images: usize,
    images_with_mask: usize,
    mitoses: usize,
    non_mitoses: usize,
    subsets: Vec<SubsetSummary>,
    mpp: Vec<f64>,
    image_sizes: Vec<String>,
    inconsistencies: Vec<String>,
}

#[derive(Debug, Serialize)]
struct SubsetSummary {
    name: String,
    images: usize,
    images_with_mask: usize,
    images_with_mitoses: usize,
    mitoses: usize,
    non_mitoses: usize,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let format = match super::parse_format(args.format.as_deref())? {
        Some(f) => f,
        None => mitoscope_formats::detect_format(&args.path)?,
    };
    let opts = ReadOptions {
        mpp: super::parse_mpp(args.read.mpp)?,
        images_dir: args.read.images.clone(),
        ..ReadOptions::default()
    };
    let layout = if format == Format::Gzmh {
        mitoscope_formats::gzmh::detect_layout(&args.path).ok().map(|l| l.to_string())
    } else {
        None
    };
    let set = super::load(&args.path, Some(format), &opts)?;
    let summary = summarise(&args.path.display().to_string(), format, layout, &set);
    if args.json {
        super::print(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
    } else {
        super::print(&render(&summary, args.max_issues))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn summarise(path: &str, format: Format, layout: Option<String>, set: &AnnotationSet) -> Summary {
    let subsets = set
        .subsets()
        .into_iter()
        .map(|(name, imgs)| SubsetSummary {
            name: name.unwrap_or_else(|| "(all)".into()),
            images: imgs.len(),
            images_with_mask: imgs.iter().filter(|i| i.mask_path.is_some()).count(),
            images_with_mitoses: imgs.iter().filter(|i| i.count(ObjectClass::Mitosis) > 0).count(),
            mitoses: imgs.iter().map(|i| i.count(ObjectClass::Mitosis)).sum(),
            non_mitoses: imgs.iter().map(|i| i.count(ObjectClass::NonMitosis)).sum(),
        })
        .collect();
    let mpp: BTreeSet<String> = set.images.iter().filter_map(|i| i.mpp).map(|m| format!("{}", m.get())).collect();
    let sizes: BTreeSet<String> =
        set.images.iter().filter_map(|i| Some(format!("{}x{}", i.width?, i.height?))).collect();
    Summary {
        path: path.to_owned(),
        format: format.name().to_owned(),
        layout,
        images: set.images.len(),
        images_with_mask: set.images.iter().filter(|i| i.mask_path.is_some()).count(),
        mitoses: set.count(ObjectClass::Mitosis),
        non_mitoses: set.count(ObjectClass::NonMitosis),
        subsets,
        mpp: mpp.into_iter().filter_map(|m| m.parse().ok()).collect(),
        image_sizes: sizes.into_iter().collect(),
        inconsistencies: set.inconsistencies.iter().map(ToString::to_string).collect(),
    }
}

fn render(s: &Summary, max_issues: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", s.path, s.format);
    if let Some(layout) = &s.layout {
        let _ = writeln!(out, "layout: {layout}");
    }
    let _ = writeln!(
        out,
        "images: {}  with mask: {}  mitoses: {}  look-alikes: {}",
        s.images, s.images_with_mask, s.mitoses, s.non_mitoses
    );
    let mpp = if s.mpp.is_empty() {
        "unknown (pass --mpp)".to_owned()
    } else {
        s.mpp.iter().map(|m| format!("{m} µm/px")).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(out, "mpp: {mpp}");
    if !s.image_sizes.is_empty() {
        let shown: Vec<&str> = s.image_sizes.iter().take(8).map(String::as_str).collect();
        let more = s.image_sizes.len().saturating_sub(shown.len());
        let _ = writeln!(
            out,
            "image sizes: {}{}",
            shown.join(", "),
            if more > 0 { format!(" (+{more} more)") } else { String::new() }
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>7} {:>7} {:>13} {:>8} {:>12}",
        "subset", "images", "masks", "with mitoses", "mitoses", "look-alikes"
    );
    for sub in &s.subsets {
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>7} {:>13} {:>8} {:>12}",
            sub.name, sub.images, sub.images_with_mask, sub.images_with_mitoses, sub.mitoses, sub.non_mitoses
        );
    }
    let _ = writeln!(out, "\ninconsistencies: {}", s.inconsistencies.len());
    for issue in s.inconsistencies.iter().take(max_issues) {
        let _ = writeln!(out, "  - {issue}");
    }
    if s.inconsistencies.len() > max_issues {
        let _ = writeln!(out, "  ... {} more (raise --max-issues)", s.inconsistencies.len() - max_issues);
    }
    out
}
