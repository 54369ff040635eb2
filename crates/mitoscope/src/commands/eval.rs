//! `mitoscope eval`: detections against ground truth. Benchmarks call this
//! exactly; keep the flags and the JSON's top-level keys stable.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mitoscope_annotations::AnnotationSet;
use mitoscope_eval::{EvalConfig, EvalReport, Metrics};
use mitoscope_formats::ReadOptions;

use crate::cli::EvalArgs;

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let rule = super::parse_rule(&args.matching.rule)?;
    super::check_threshold(args.threshold)?;
    let mpp = super::parse_mpp(args.mpp)?;
    let opts = ReadOptions { mpp, images_dir: args.images.clone(), ..ReadOptions::default() };
    let mut truth = super::load_checked(&args.truth, super::parse_format(args.truth_format.as_deref())?, &opts)?;
    let mut pred = super::load_checked(&args.pred, super::parse_format(args.pred_format.as_deref())?, &opts)?;
    if let Some(alignment) = super::align_pred_ids(&truth, &mut pred) {
        eprintln!("{}", alignment.line());
    }
    super::leave_out_unusable(&mut truth, &mut pred);
    let radius_px = super::match_radius_px(&args.matching, mpp, Some(&truth))?
        .context("give --radius-px R or --radius-um R --mpp M")?;
    if let Some(warning) = disjoint_ids(&truth, &pred).or_else(|| unknown_pred_ids(&truth, &pred)) {
        eprintln!("warning: {warning}");
    }
    let inputs = mitoscope_eval::inputs_from_sets(&truth, &pred);
    let cfg = EvalConfig { radius_px, rule, threshold: args.threshold };
    let report = mitoscope_eval::evaluate(&inputs, &cfg).context("evaluating")?;
    if args.json {
        super::print(&(serde_json::to_string(&report)? + "\n"))?;
    } else {
        super::print(&render(&report, args.per_image))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A warning when truth and predictions share no image id although both name
/// images: every prediction would then be a false positive and every truth
/// a miss, which is nearly always a naming mismatch (`A01_04` against
/// `A01_04.png`, or a dataset's `<case>_<hpf>` ids against bare stems).
fn disjoint_ids(truth: &AnnotationSet, pred: &AnnotationSet) -> Option<String> {
    let with_objects = |s: &AnnotationSet| -> Vec<String> {
        s.images.iter().filter(|i| !i.objects.is_empty()).map(|i| i.image.clone()).collect()
    };
    let (t, p) = (with_objects(truth), with_objects(pred));
    let shared = truth.images.iter().any(|i| pred.image(&i.image).is_some());
    if t.is_empty() || p.is_empty() || shared {
        return None;
    }
    let some = |v: &[String]| v.iter().take(3).map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    Some(format!(
        "no image is named alike in the truth and the predictions (truth: {}; predictions: {}): \
         every prediction counts as a false positive; check that both name the images the same way",
        some(&t),
        some(&p)
    ))
}

/// A warning when some images with detections are not in the truth at all
/// (a truth image without detections is ordinary; a detected image the truth
/// does not know is a naming mismatch or the wrong truth file): their every
/// detection counts as a false positive.
fn unknown_pred_ids(truth: &AnnotationSet, pred: &AnnotationSet) -> Option<String> {
    let unknown: Vec<&str> = pred
        .images
        .iter()
        .filter(|i| !i.objects.is_empty() && truth.image(&i.image).is_none())
        .map(|i| i.image.as_str())
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let detections: usize = unknown.iter().filter_map(|id| pred.image(id)).map(|i| i.objects.len()).sum();
    Some(format!(
        "{} images with detections are not in the truth (e.g. {}): their {detections} detections count as false positives",
        unknown.len(),
        unknown.iter().take(3).map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
    ))
}

fn row(out: &mut String, name: &str, m: &Metrics) {
    let _ = writeln!(
        out,
        "{:<20} {:>6} {:>6} {:>6} {:>9.4} {:>9.4} {:>9.4}",
        name, m.tp, m.fp, m.fn_, m.precision, m.recall, m.f1
    );
}

fn render(r: &EvalReport, per_image: bool) -> String {
    let mut out = String::new();
    let threshold = r.threshold.map_or("none".to_owned(), |t| t.to_string());
    let _ = writeln!(out, "match: {}  radius: {:.2} px  threshold: {threshold}", r.rule, r.radius_px);
    let _ = writeln!(out, "images: {}  truths: {}  predictions: {}\n", r.n_images, r.n_truth, r.n_pred);
    let _ =
        writeln!(out, "{:<20} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}", "", "tp", "fp", "fn", "precision", "recall", "f1");
    row(&mut out, "pooled", &r.pooled);
    for (name, m) in &r.subsets {
        row(&mut out, name, m);
    }
    if per_image {
        let _ = writeln!(out);
        for img in &r.per_image {
            let _ = writeln!(
                out,
                "{:<20} {:>6} {:>6} {:>6} {:>9.4} {:>9.4} {:>9.4}  count error {:+}",
                img.image, img.tp, img.fp, img.fn_, img.precision, img.recall, img.f1, img.count_error
            );
        }
    }
    let _ = writeln!(
        out,
        "\nbest F1 {:.4} at threshold {}  |  AP {:.4}  |  FROC score {:.4}",
        r.sweep.best_f1,
        r.sweep.best_threshold.map_or("-".to_owned(), |t| format!("{t:.4}")),
        r.average_precision,
        r.froc.score
    );
    let _ = writeln!(
        out,
        "count per image: MAE {:.3}  RMSE {:.3}  bias {:+.3}",
        r.counts.mean_abs_error, r.counts.rmse, r.counts.mean_error
    );
    out
}
