//! One module per subcommand; each validates its arguments, calls the
//! libraries and prints. Shared helpers for reading annotations live here.

mod convert;
mod detect;
mod eval;
mod grade;
mod inspect;
mod report;
mod review;
mod score;
mod segeval;
mod slide;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_annotations::AnnotationSet;
use mitoscope_formats::{Format, ReadOptions};
use mitoscope_geom::Mpp;

use crate::cli::{Command, MatchArgs};

/// Runs one subcommand.
/// Leaves out of an evaluation the images whose truth cannot be used
/// (`ImageAnnotations::unusable`: a GZMH mask that could not be read, with
/// nothing else listing the image's mitoses), from the truth and the
/// predictions both, each named in a warning: scored, they would count every
/// detection there as false.
pub(crate) fn leave_out_unusable(truth: &mut AnnotationSet, pred: &mut AnnotationSet) {
    let out: Vec<(String, String)> =
        truth.images.iter().filter_map(|i| i.unusable.clone().map(|why| (i.image.clone(), why))).collect();
    for (image, why) in &out {
        eprintln!("warning: image {image} is left out of the evaluation: {why}");
    }
    truth.images.retain(|i| i.unusable.is_none());
    pred.images.retain(|i| !out.iter().any(|(id, _)| *id == i.image));
}

/// Renames prediction images that the truth does not know to the one truth
/// image whose id ends like theirs, path part by path part (`/` and `_` both
/// separate parts): `detect` run on an extracted dataset names alike-named
/// HPFs `train/images/001` or `train_001` where the dataset reader says
/// `GZMH/train/images/001`, and a lone case folder's `05` is TUPAC's
/// `case1_05`. Only one-to-one matches are taken; returns a note for the user
/// when any id was matched so.
pub(crate) fn align_pred_ids(truth: &AnnotationSet, pred: &mut AnnotationSet) -> Option<String> {
    use std::collections::{HashMap, HashSet};
    let parts =
        |id: &str| -> Vec<String> { id.split(['/', '\\', '_']).filter(|p| !p.is_empty()).map(str::to_owned).collect() };
    let exact: HashSet<&str> =
        pred.images.iter().map(|i| i.image.as_str()).filter(|id| truth.image(id).is_some()).collect();
    let open_truth: Vec<(&str, Vec<String>)> = truth
        .images
        .iter()
        .map(|i| i.image.as_str())
        .filter(|id| !exact.contains(id))
        .map(|id| (id, parts(id)))
        .collect();
    let mut target: HashMap<usize, &str> = HashMap::new();
    for (k, img) in pred.images.iter().enumerate() {
        if exact.contains(img.image.as_str()) {
            continue;
        }
        let p = parts(&img.image);
        if p.is_empty() {
            continue;
        }
        let hits: Vec<&str> =
            open_truth.iter().filter(|(_, t)| t.ends_with(&p) || p.ends_with(t)).map(|(id, _)| *id).collect();
        if let [one] = hits.as_slice() {
            target.insert(k, one);
        }
    }
    // One-to-one: a truth image two predictions point at takes neither.
    let mut claims: HashMap<&str, usize> = HashMap::new();
    for id in target.values() {
        *claims.entry(id).or_default() += 1;
    }
    target.retain(|_, id| claims[id] == 1);
    let mut renamed: Vec<(String, String)> = target
        .iter()
        .map(|(&k, &id)| (std::mem::replace(&mut pred.images[k].image, id.to_owned()), id.to_owned()))
        .collect();
    if renamed.is_empty() {
        return None;
    }
    renamed.sort();
    Some(format!(
        "{} prediction image ids matched to truth ids by their path's last parts (e.g. '{}' -> '{}')",
        renamed.len(),
        renamed[0].0,
        renamed[0].1
    ))
}

/// `--quiet`: only errors on stderr, so no progress bars or `[recipe]` lines either.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether progress (bars, training lines) goes to stderr.
pub(crate) fn show_progress() -> bool {
    !QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn run(command: Command, quiet: bool) -> Result<ExitCode> {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    match command {
        Command::Detect(a) => detect::detect(a),
        Command::Demo(a) => detect::demo(a),
        Command::Classify(a) => detect::classify(a),
        Command::Train(a) => detect::train(a),
        Command::CheckDevice(a) => detect::check_device(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Segeval(a) => segeval::run(a),
        Command::Grade(a) => grade::run(a),
        Command::Slide(a) => slide::run(a),
        Command::Score(a) => score::run(a),
        Command::Report(a) => report::run(a),
        Command::Review(a) => review::run(a),
    }
}

/// Parses a `--format`-style name.
fn parse_format(name: Option<&str>) -> Result<Option<Format>> {
    name.map(|n| {
        Format::from_name(n).with_context(|| {
            format!("unknown format '{n}': expected one of {}", Format::ALL.map(Format::name).join(", "))
        })
    })
    .transpose()
}

/// Parses `--match`.
fn parse_rule(name: &str) -> Result<mitoscope_eval::MatchRule> {
    name.parse().map_err(|_| anyhow::anyhow!("unknown --match '{name}': expected greedy, optimal or wang2024"))
}

/// The match radius in pixels from `--radius-px`, or `--radius-um` through
/// `--mpp` (else the truth's own mpp when all its images agree); `None` when
/// neither flag is given.
fn match_radius_px(args: &MatchArgs, mpp: Option<Mpp>, truth: Option<&AnnotationSet>) -> Result<Option<f64>> {
    let r = match (args.radius_px, args.radius_um) {
        (Some(px), None) => px,
        (None, Some(um)) => {
            let mpp = match mpp {
                Some(m) => m,
                None => truth
                    .and_then(uniform_mpp)
                    .context("--radius-um needs --mpp M (microns per pixel of the images)")?,
            };
            mpp.um_to_px(um)
        }
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => bail!("give one of --radius-px R or --radius-um R, not both"),
    };
    if !(r.is_finite() && r > 0.0) {
        bail!("the match radius must be a positive number of pixels, got {r}");
    }
    Ok(Some(r))
}

/// The mpp every image of `set` states, when they all state the same one.
fn uniform_mpp(set: &AnnotationSet) -> Option<Mpp> {
    let first = set.images.first()?.mpp?;
    set.images.iter().all(|i| i.mpp == Some(first)).then_some(first)
}

/// Validates a `--threshold` value.
fn check_threshold(threshold: Option<f64>) -> Result<()> {
    match threshold {
        Some(t) if !t.is_finite() => bail!("--threshold must be a finite number, got {t}"),
        _ => Ok(()),
    }
}

/// Validates an `--mpp` value.
fn parse_mpp(mpp: Option<f64>) -> Result<Option<Mpp>> {
    mpp.map(|m| Mpp::new(m).context("--mpp")).transpose()
}

/// Reads annotations in any format, naming the file in every error, and
/// makes image identifiers file stems (`A00_00.jpg` and `A00_00` are one image).
fn load(path: &Path, format: Option<Format>, opts: &ReadOptions) -> Result<AnnotationSet> {
    if !path.exists() {
        bail!("{}: no such file or folder", path.display());
    }
    if format.is_none() && mitoscope_imaging::is_image_path(path) {
        bail!("{}: is an image; give an annotation file or a dataset folder (see --format)", path.display());
    }
    // FormatError already names the file (and line): no extra context here.
    let mut set = mitoscope_formats::read(path, format, opts)?;
    for img in &mut set.images {
        if let Some(stem) = strip_image_extension(&img.image) {
            img.image = stem;
        }
    }
    if let Some(dir) = &opts.images_dir {
        fill_image_sizes(&mut set, dir);
    }
    Ok(set)
}

/// Gives images whose size the annotation file does not state the size of the
/// image file with the same stem in `dir` (writers such as YOLO need it).
fn fill_image_sizes(set: &mut AnnotationSet, dir: &Path) {
    for img in set.images.iter_mut().filter(|i| i.width.is_none() || i.height.is_none()) {
        let found = mitoscope_imaging::IMAGE_EXTENSIONS
            .iter()
            .map(|ext| dir.join(format!("{}.{ext}", img.image)))
            .find(|p| p.is_file());
        let Some(path) = found else { continue };
        match mitoscope_imaging::image_size(&path) {
            Ok((w, h)) => {
                img.width = Some(w);
                img.height = Some(h);
                img.path.get_or_insert(path);
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

fn strip_image_extension(name: &str) -> Option<String> {
    let p = Path::new(name);
    if mitoscope_imaging::is_image_path(p) { p.file_stem().map(|s| s.to_string_lossy().into_owned()) } else { None }
}

/// Writes `text` to stdout, treating a closed pipe (`| head`) as success.
fn print(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// An `error:` line for a failed input, naming the file unless the message already does.
fn print_failure(path: &std::path::Path, message: &str) {
    if message.contains(&path.display().to_string()) {
        eprintln!("error: {message}");
    } else {
        eprintln!("error: {}: {message}", path.display());
    }
}

/// Predicted slide scores against the truth, as `score` and `slide` print them;
/// `missing_label` introduces the truth slides that got no prediction.
fn comparison_text(c: &mitoscope_detect::hpf_set::Comparison, missing_label: &str) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "vs truth ({} slides): agreement {:.3}, Cohen's kappa {:.3}, quadratic weighted kappa {:.3}",
        c.slides, c.agreement, c.kappa, c.weighted_kappa
    );
    let _ = writeln!(t, "confusion (rows truth 1-3, columns predicted 1-3): {:?}", c.confusion);
    if !c.missing_predictions.is_empty() {
        let _ = writeln!(t, "{missing_label}: {}", c.missing_predictions.join(", "));
    }
    if !c.missing_truth.is_empty() {
        let _ = writeln!(t, "slides without a truth score: {}", c.missing_truth.join(", "));
    }
    t
}

/// The command line as typed, shell-quoted where needed, for `run.json` and reports.
pub(crate) fn command_line() -> String {
    std::env::args_os()
        .map(|a| {
            let s = a.to_string_lossy().into_owned();
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c)) {
                s
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_become_stems() {
        assert_eq!(strip_image_extension("A00_00.jpg").as_deref(), Some("A00_00"));
        assert_eq!(strip_image_extension("001.tiff").as_deref(), Some("001"));
        assert_eq!(strip_image_extension("A00_00"), None);
        assert_eq!(strip_image_extension("slide.v2"), None);
    }

    #[test]
    fn prediction_ids_align_to_truth_ids_by_their_last_parts() {
        use mitoscope_annotations::ImageAnnotations;
        let set = |ids: &[&str]| AnnotationSet::from_images(ids.iter().map(|i| ImageAnnotations::new(*i)).collect());
        let truth =
            set(&["GZMH/train/images/001", "GZMH/test/test_3_score/images/001", "case1_05", "A00_00", "x_7", "y_7"]);
        let mut pred =
            set(&["train/images/001", "test_3_score_images_001", "05", "A00_00", "7", "elsewhere", "images/001"]);
        let note = align_pred_ids(&truth, &mut pred).expect("a note");
        let ids: Vec<&str> = pred.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(
            ids,
            [
                "GZMH/train/images/001",
                "GZMH/test/test_3_score/images/001",
                "case1_05",
                "A00_00",
                "7",          // x_7 or y_7: ambiguous, left alone
                "elsewhere",  // matches nothing
                "images/001", // matches both splits: left alone
            ]
        );
        assert!(note.starts_with("3 prediction image ids matched"), "{note}");
        // Nothing to align: no note, nothing renamed.
        let mut same = set(&["A00_00"]);
        assert!(align_pred_ids(&truth, &mut same).is_none());
    }
}
