//! `mitoscope slide`: whole slides through `mitoscope_detect::slide_run`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_detect::hpf_set::read_truth;
use mitoscope_detect::mitoscope_eval::score::FieldPreset;
use mitoscope_detect::mitoscope_slide::hotspot::HotspotParams;
use mitoscope_detect::slide_table::{SLIDE_TABLE_FILE, check_slide_table, update_slide_table};
use mitoscope_detect::{DetectOptions, Detector, ModelBundle, SlideRunConfig, parse_device, run_slides};

use crate::cli::{FieldArgs, ModelArgs, SlideArgs};

/// Loads `--model` (or the embedded model) on `--device`.
pub(super) fn load_detector(args: &ModelArgs) -> Result<Detector> {
    let device = parse_device(&args.device)?;
    let bundle = match &args.model {
        Some(path) => ModelBundle::load(path, &device).with_context(|| format!("loading model {}", path.display()))?,
        None => ModelBundle::embedded(&device).context("loading the embedded default model")?,
    };
    Ok(Detector::new(bundle, device))
}

/// The field preset of `--hpf-area-mm2` / `--field-diameter-mm`, checked.
pub(super) fn field_preset(args: &FieldArgs) -> Result<Option<FieldPreset>> {
    if args.hpfs == 0 {
        bail!("--hpfs must be at least 1");
    }
    match (args.hpf_area_mm2, args.field_diameter_mm) {
        (Some(a), _) if !(a.is_finite() && a > 0.0) => bail!("--hpf-area-mm2 must be a positive number, got {a}"),
        (_, Some(d)) if !(d.is_finite() && d > 0.0) => bail!("--field-diameter-mm must be a positive number, got {d}"),
        (Some(a), _) => checked(FieldPreset::Area(a)).map(Some),
        (_, Some(d)) => checked(FieldPreset::Diameter(d)).map(Some),
        _ => Ok(None),
    }
}

/// A field the score table covers (fails before any detection runs).
fn checked(field: FieldPreset) -> Result<FieldPreset> {
    mitoscope_detect::mitoscope_eval::score::table_row(field.diameter_mm())
        .with_context(|| format!("field of {:.3} mm diameter", field.diameter_mm()))?;
    Ok(field)
}

/// Checks `--threshold` and `--mpp` values clap cannot.
pub(super) fn check_numbers(threshold: Option<f64>, mpp: Option<f64>) -> Result<()> {
    if let Some(t) = threshold
        && !(t.is_finite() && (0.0..=1.0).contains(&t))
    {
        bail!("--threshold must be in [0, 1], got {t}");
    }
    if let Some(m) = mpp {
        mitoscope_geom::Mpp::new(m).context("--mpp")?;
    }
    Ok(())
}

/// File extensions of whole-slide files (the built-in readers' and OpenSlide's).
const SLIDE_EXTENSIONS: [&str; 10] = ["svs", "tif", "tiff", "ndpi", "vms", "vmu", "scn", "mrxs", "bif", "svslide"];

/// Each folder argument that holds slide files and nothing that could be a
/// DICOM series (no `.dcm` file, no file without an extension) stands for
/// those files, sorted; any other folder stays one input (a DICOM series).
fn expand_slide_folders(inputs: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for input in inputs {
        let files: Vec<std::path::PathBuf> = match std::fs::read_dir(input) {
            Ok(entries) if input.is_dir() => {
                let mut f: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
                f.sort();
                f
            }
            _ => {
                out.push(input.clone());
                continue;
            }
        };
        let ext = |p: &std::path::Path| p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        let dicom_like = files.iter().any(|p| matches!(ext(p).as_deref(), None | Some("dcm")));
        let slides: Vec<std::path::PathBuf> =
            files.iter().filter(|p| ext(p).is_some_and(|e| SLIDE_EXTENSIONS.contains(&e.as_str()))).cloned().collect();
        if dicom_like || slides.is_empty() {
            out.push(input.clone());
        } else {
            out.extend(slides);
        }
    }
    out
}

pub fn run(args: SlideArgs) -> Result<ExitCode> {
    check_numbers(args.threshold, args.mpp)?;
    let field = field_preset(&args.field)?.unwrap_or(FieldPreset::TenHpfTwoMm2);
    // A bad truth file fails before hours of detection, not after.
    let truth = args.truth.as_deref().map(read_truth).transpose()?;
    // So is an output folder whose slides.csv is the user's own.
    check_slide_table(&args.out)?;
    let slides = expand_slide_folders(&args.slides);
    let detector = load_detector(&args.model)?;
    let config = SlideRunConfig {
        mpp_override: args.mpp,
        hotspot: HotspotParams { field, n_fields: args.field.hpfs, ..HotspotParams::default() },
        options: DetectOptions { threshold: args.threshold, ..DetectOptions::default() },
        show_progress: super::show_progress(),
        ..SlideRunConfig::default()
    };
    let results = run_slides(&slides, &detector, &args.out, &config);
    let mut text = String::new();
    let mut failed = Vec::new();
    for (path, r) in &results {
        match r {
            Ok(s) => {
                let h = &s.hotspot;
                let _ = writeln!(
                    text,
                    "{}: {} mitoses in {:.2} mm² of tissue ({:.2}/mm²); hotspot {} in {:.2} mm² at ({:.0}, {:.0}); \
                     mitotic score {} (row {:.2} mm); {:.1} s, {} tiles{}",
                    s.slide_id,
                    s.mitoses,
                    s.tissue_area_mm2,
                    s.density_per_mm2,
                    h.count,
                    h.area_mm2,
                    h.x,
                    h.y,
                    s.mitotic_score.score,
                    s.mitotic_score.row.field_diameter_mm,
                    s.seconds,
                    s.tiles.processed,
                    if s.mpp_guessed { " (mpp guessed: pass --mpp)" } else { "" }
                );
            }
            Err(e) => failed.push((path, e)),
        }
    }
    let _ = writeln!(
        text,
        "{} of {} slides done; results in {}/<slide>/",
        results.len() - failed.len(),
        results.len(),
        args.out.display()
    );
    let mut table_failed = false;
    match update_slide_table(&args.out, &results, truth.as_ref()) {
        Ok(table) => {
            let _ = writeln!(
                text,
                "{} in {}",
                super::count_of(table.rows.len(), "slide"),
                args.out.join(SLIDE_TABLE_FILE).display()
            );
            match (&table.comparison, &truth) {
                (Some(c), _) => text.push_str(&super::comparison_text(c, "truth slides with no result here")),
                (None, Some(t)) => {
                    eprintln!(
                        "error: no slide of {} is in the truth file (truth names e.g. {:?}; slide ids are file stems)",
                        args.out.display(),
                        t.keys().take(3).collect::<Vec<_>>()
                    );
                    table_failed = true;
                }
                (None, None) => {}
            }
            for w in &table.warnings {
                eprintln!("warning: {w}");
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            table_failed = true;
        }
    }
    super::print(&text)?;
    for (path, e) in &failed {
        super::print_failure(path, &e.to_string());
    }
    Ok(if failed.is_empty() && !table_failed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::expand_slide_folders;

    #[test]
    fn a_folder_of_slide_files_stands_for_them_and_a_dicom_folder_for_itself() {
        let dir = tempfile::tempdir().unwrap();
        let scans = dir.path().join("scans");
        let series = dir.path().join("series");
        std::fs::create_dir_all(&scans).unwrap();
        std::fs::create_dir_all(&series).unwrap();
        for f in ["b.tiff", "a.svs", "notes.txt"] {
            std::fs::write(scans.join(f), b"x").unwrap();
        }
        for f in ["level0.dcm", "thumb.tif"] {
            std::fs::write(series.join(f), b"x").unwrap();
        }
        let single = dir.path().join("c.svs");
        let got = expand_slide_folders(&[scans.clone(), series.clone(), single.clone()]);
        assert_eq!(got, [scans.join("a.svs"), scans.join("b.tiff"), series, single]);
    }
}
