//! `mitoscope segeval`: masks against masks (pixel Dice/IoU, object Dice).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use mitoscope_annotations::{Annotation, Shape};
use mitoscope_eval::segmentation::{self, PixelCounts};

use crate::cli::SegevalArgs;

/// Pixel sets of mask components (components are computed once per mask).
fn shapes(objects: &[Annotation]) -> Vec<Vec<(u32, u32)>> {
    objects
        .iter()
        .filter_map(|o| match &o.shape {
            Some(Shape::Pixels(px)) => Some(px.clone()),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct MaskScores {
    image: String,
    dice: f64,
    iou: f64,
    object_dice: f64,
    truth_objects: usize,
    pred_objects: usize,
}

#[derive(Debug, Serialize)]
struct SegReport {
    images: usize,
    /// Pixel Dice over all pixels of all images pooled.
    pooled_dice: f64,
    /// Pixel IoU pooled likewise.
    pooled_iou: f64,
    mean_dice: f64,
    mean_object_dice: f64,
    per_image: Vec<MaskScores>,
}

/// Mask files by stem: a single file, or every image in a folder.
fn masks_by_stem(path: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| mitoscope_imaging::is_image_path(p))
            .collect();
        v.sort();
        v
    } else if path.is_file() {
        vec![path.to_owned()]
    } else {
        bail!("{}: no such file or folder", path.display());
    };
    if files.is_empty() {
        bail!("{}: no mask images found (png, jpg, tif, bmp)", path.display());
    }
    let mut map: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(first) = map.get(&stem) {
            bail!("{} and {} are both masks of '{stem}': keep one", first.display(), f.display());
        }
        map.insert(stem, f);
    }
    Ok(map)
}

pub fn run(args: SegevalArgs) -> Result<ExitCode> {
    let truth = masks_by_stem(&args.truth)?;
    let pred = masks_by_stem(&args.pred)?;
    // A single file on each side pairs regardless of names.
    let pairs: Vec<(String, &PathBuf, &PathBuf)> = if truth.len() == 1 && pred.len() == 1 {
        let (name, t) = truth.iter().next().context("one truth mask")?;
        vec![(name.clone(), t, pred.values().next().context("one predicted mask")?)]
    } else {
        let mut v = Vec::new();
        for (name, t) in &truth {
            let p =
                pred.get(name).with_context(|| format!("no predicted mask for {} in {}", name, args.pred.display()))?;
            v.push((name.clone(), t, p));
        }
        // A predicted mask with no truth is not scored: said, not silently dropped.
        let extra: Vec<&str> = pred.keys().filter(|k| !truth.contains_key(*k)).map(String::as_str).collect();
        if !extra.is_empty() {
            eprintln!(
                "warning: {} predicted masks have no truth mask and are not scored (e.g. {})",
                extra.len(),
                extra.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            );
        }
        v
    };
    let mut pooled = PixelCounts::default();
    let mut per_image = Vec::new();
    for (name, t, p) in pairs {
        let (tm, t_labels) = mitoscope_imaging::read_mask_instances(t)?;
        let (pm, p_labels) = mitoscope_imaging::read_mask_instances(p)?;
        let counts =
            segmentation::pixel_counts(&tm, &pm).with_context(|| format!("{} vs {}", t.display(), p.display()))?;
        pooled += counts;
        let px = counts.scores();
        // Objects: runs of one label in an instance map (figures that touch
        // stay apart), else the binary mask's components.
        let objects = |mask, labels: &Option<mitoscope_imaging::InstanceLabels>| match labels {
            Some(l) => mitoscope_annotations::mask::objects_from_labels(l, 1),
            None => mitoscope_annotations::mask::objects_from_mask(mask, 1),
        };
        let to = objects(&tm, &t_labels);
        let po = objects(&pm, &p_labels);
        per_image.push(MaskScores {
            image: name,
            dice: px.dice,
            iou: px.iou,
            object_dice: segmentation::object_dice(&shapes(&to), &shapes(&po)),
            truth_objects: to.len(),
            pred_objects: po.len(),
        });
    }
    let n = per_image.len() as f64;
    let pooled = pooled.scores();
    let report = SegReport {
        images: per_image.len(),
        pooled_dice: pooled.dice,
        pooled_iou: pooled.iou,
        mean_dice: per_image.iter().map(|s| s.dice).sum::<f64>() / n,
        mean_object_dice: per_image.iter().map(|s| s.object_dice).sum::<f64>() / n,
        per_image,
    };
    if args.json {
        super::print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "images: {}  pooled Dice {:.4}  pooled IoU {:.4}  mean Dice {:.4}  mean object Dice {:.4}",
            report.images, report.pooled_dice, report.pooled_iou, report.mean_dice, report.mean_object_dice
        );
        for s in &report.per_image {
            let _ = writeln!(
                out,
                "{:<24} Dice {:.4}  IoU {:.4}  object Dice {:.4}  objects {} / {}",
                s.image, s.dice, s.iou, s.object_dice, s.truth_objects, s.pred_objects
            );
        }
        super::print(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}
