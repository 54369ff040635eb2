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
/// separate parts), or whose id theirs ends like: `detect` run on an
/// extracted dataset names alike-named HPFs `train/images/001` where the
/// dataset reader says `GZMH/train/images/001`, and a lone case folder's `05`
/// is TUPAC's `case1_05`. Taken only when every such match differs by the
/// same leading parts (one folder prefix added or dropped throughout) and is
/// one-to-one; a prediction id that ends like two truth ids is ambiguous and
/// stops the renaming. Returns a line for the user when ids were matched (a
/// note), or when they could have been but the matches disagree (a warning).
pub(crate) fn align_pred_ids(truth: &AnnotationSet, pred: &mut AnnotationSet) -> Option<IdAlignment> {
    use std::collections::{HashMap, HashSet};
    let parts =
        |id: &str| -> Vec<String> { id.split(['/', '\\', '_']).filter(|p| !p.is_empty()).map(str::to_owned).collect() };
    let pred_ids: HashSet<&str> = pred.images.iter().map(|i| i.image.as_str()).collect();
    let truth_ids: HashSet<&str> = truth.images.iter().map(|i| i.image.as_str()).collect();
    let truth_parts: Vec<(&str, Vec<String>)> =
        truth.images.iter().map(|i| (i.image.as_str(), parts(&i.image))).collect();
    // (pred index, truth id, leading parts one side has beyond the other, which side)
    let mut matches: Vec<(usize, &str, Vec<String>, bool)> = Vec::new();
    let mut ambiguous = None;
    for (k, img) in pred.images.iter().enumerate() {
        if truth_ids.contains(img.image.as_str()) {
            continue;
        }
        let p = parts(&img.image);
        if p.is_empty() {
            continue;
        }
        let hits: Vec<&(&str, Vec<String>)> =
            truth_parts.iter().filter(|(_, t)| t.ends_with(&p) || p.ends_with(t)).collect();
        match hits.as_slice() {
            [] => {}
            [(id, t)] if !pred_ids.contains(id) => {
                let truth_longer = t.len() > p.len();
                let extra =
                    if truth_longer { t[..t.len() - p.len()].to_vec() } else { p[..p.len() - t.len()].to_vec() };
                matches.push((k, id, extra, truth_longer));
            }
            _ => ambiguous = ambiguous.or(Some(img.image.clone())),
        }
    }
    let (Some((_, first_id, extra, side)), false) = (matches.first(), matches.is_empty()) else { return None };
    let one_prefix = matches.iter().all(|(_, _, e, s)| e == extra && s == side);
    let targets: HashSet<&str> = matches.iter().map(|(_, id, ..)| *id).collect();
    if !one_prefix || targets.len() != matches.len() || ambiguous.is_some() {
        return Some(IdAlignment::Disagree(format!(
            "prediction ids end like truth ids but not by one common folder prefix (e.g. '{}' and '{}'{}): \
             none was matched; name the predictions as the truth does",
            pred.images[matches[0].0].image,
            first_id,
            ambiguous.map(|a| format!("; '{a}' ends like several")).unwrap_or_default()
        )));
    }
    let example = (pred.images[matches[0].0].image.clone(), first_id.to_string());
    let renamed: HashMap<usize, String> = matches.iter().map(|(k, id, ..)| (*k, id.to_string())).collect();
    for (k, id) in &renamed {
        pred.images[*k].image = id.clone();
    }
    Some(IdAlignment::Matched(format!(
        "{} prediction image ids matched to truth ids by their path's last parts (e.g. '{}' -> '{}')",
        renamed.len(),
        example.0,
        example.1
    )))
}

/// What [`align_pred_ids`] did, in words for the user.
#[derive(Debug)]
pub(crate) enum IdAlignment {
    /// Ids were renamed.
    Matched(String),
    /// Ids could have been, but not consistently; nothing was renamed.
    Disagree(String),
}

impl IdAlignment {
    /// The line for stderr.
    pub(crate) fn line(&self) -> String {
        match self {
            IdAlignment::Matched(m) => format!("note: {m}"),
            IdAlignment::Disagree(m) => format!("warning: {m}"),
        }
    }
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
    set.flag_out_of_bounds();
    Ok(set)
}

/// [`load`] for commands that use the annotations rather than list them:
/// what the reader found inconsistent is summarised as one warning (the first
/// few named; `inspect` lists all), so a label outside its image, say, is seen.
fn load_checked(path: &Path, format: Option<Format>, opts: &ReadOptions) -> Result<AnnotationSet> {
    let set = load(path, format, opts)?;
    if let Some(first) = set.inconsistencies.first() {
        let more = set.inconsistencies.len() - 1;
        tracing::warn!(
            "{}: {first}{} (`mitoscope inspect {}` lists them)",
            path.display(),
            if more > 0 { format!("; and {more} more inconsistencies") } else { String::new() },
            path.display()
        );
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
/// Whether two paths name the same file, the second possibly not there yet
/// (its folder resolved, so `./a.csv` and `a.csv` agree).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    let resolved = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::canonicalize(parent).map(|d| d.join(p.file_name().unwrap_or_default())).ok()
    };
    resolved(a).is_some_and(|r| Some(r) == resolved(b))
}

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

/// `1 slide`, `2 slides`: a count with its noun (plural by a trailing s).
pub(crate) fn count_of(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
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
        let ids = |s: &AnnotationSet| s.images.iter().map(|i| i.image.clone()).collect::<Vec<_>>();
        // One folder prefix throughout: matched.
        let truth = set(&["GZMH/train/images/001", "GZMH/test/test_3_score/images/001", "GZMH/train/images/002"]);
        let mut pred = set(&["train/images/001", "test/test_3_score/images/001", "train_images_002"]);
        let note = align_pred_ids(&truth, &mut pred).expect("a note").line();
        assert_eq!(ids(&pred), ids(&truth));
        assert!(note.starts_with("note: 3 prediction image ids matched"), "{note}");
        // A lone case folder against TUPAC ids, and the prefix the other way round.
        let mut pred = set(&["05", "06"]);
        align_pred_ids(&set(&["case1_05", "case1_06"]), &mut pred);
        assert_eq!(ids(&pred), ["case1_05", "case1_06"]);
        let mut pred = set(&["c3_01", "c3_02"]);
        align_pred_ids(&set(&["01", "02"]), &mut pred);
        assert_eq!(ids(&pred), ["01", "02"]);
        // Matches by different prefixes (another case's HPF) rename nothing, and say so.
        let truth = set(&["01_01", "01_02", "02_01", "02_03"]);
        let mut pred = set(&["02", "03"]);
        let note = align_pred_ids(&truth, &mut pred).expect("a warning").line();
        assert_eq!(ids(&pred), ["02", "03"]);
        assert!(note.starts_with("warning:") && note.contains("none was matched"), "{note}");
        // Ending like two truth ids is ambiguous, even when one of them is taken exactly.
        let mut pred = set(&["A_1", "1"]);
        let note = align_pred_ids(&set(&["A_1", "B_1"]), &mut pred);
        assert_eq!(ids(&pred), ["A_1", "1"], "{note:?}");
        // Nothing to align: no note, nothing renamed.
        let mut same = set(&["GZMH/train/images/001"]);
        assert!(align_pred_ids(&set(&["GZMH/train/images/001"]), &mut same).is_none());
    }
}
