//! The cohort table `OUT/slides.csv`: one row per slide of an output folder,
//! rewritten after every `slide` run so that a lab running slides in batches
//! over days has one table of every slide's count, density and score.
//!
//! Rows come from the per-slide `summary.json` files in the folder (what is
//! there now, whichever run wrote it), this run's failures, and earlier runs'
//! failures still unresolved (kept from the previous table, so no failure is
//! lost by running other slides later). A slide that failed in this run, or
//! whose last attempt failed in an earlier one, is a `failed` row even where
//! an older output folder of it remains: the table says what the latest
//! attempt gave. A `slides.csv` this tool did not write is never replaced. With a truth file, each row carries the
//! truth score and the run's agreement and kappas are computed over the
//! slides in both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::hpf_set::{Comparison, HpfSetError, compare_scores};
use crate::slide_run::{SlideReport, SlideRunError};

/// The table's file name in the output folder.
pub const SLIDE_TABLE_FILE: &str = "slides.csv";

/// Its columns, in order.
pub const SLIDE_TABLE_COLUMNS: [&str; 21] = [
    "slide",
    "status",
    "mitoses",
    "tissue_mm2",
    "density_per_mm2",
    "hotspot_mitoses",
    "hotspot_mm2",
    "mitotic_score",
    "truth_score",
    "top_fields_mitoses",
    "mpp",
    "mpp_source",
    "mpp_guessed",
    "read_level",
    "tiles",
    "seconds",
    "model",
    "threshold",
    "warnings",
    "error",
    "path",
];

/// What the latest attempt on a slide gave.
#[derive(Debug, Clone, PartialEq)]
pub enum SlideOutcome {
    /// Its `summary.json`.
    Done(Box<SlideReport>),
    /// The slide file as given, and the error line.
    Failed {
        /// The slide file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideRow {
    /// The slide id (output folder name).
    pub slide: String,
    /// Result or error.
    pub outcome: SlideOutcome,
    /// Truth score, when a truth file names the slide.
    pub truth: Option<u8>,
}

impl SlideRow {
    fn done(report: SlideReport) -> Self {
        Self { slide: report.slide_id.clone(), outcome: SlideOutcome::Done(Box::new(report)), truth: None }
    }

    fn failed(slide: String, path: PathBuf, message: String) -> Self {
        Self { slide, outcome: SlideOutcome::Failed { path, message }, truth: None }
    }

    /// The slide file.
    pub fn path(&self) -> &Path {
        match &self.outcome {
            SlideOutcome::Done(report) => &report.slide,
            SlideOutcome::Failed { path, .. } => path,
        }
    }
}

/// The table as written, with what could not go into it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideTable {
    /// Rows sorted by slide id.
    pub rows: Vec<SlideRow>,
    /// Against the truth, when given and some slide is in both.
    pub comparison: Option<Comparison>,
    /// Things left out, each naming the file (an unreadable `summary.json`,
    /// an unreadable previous table).
    pub warnings: Vec<String>,
}

/// Rebuilds `out_root/slides.csv` after a run (see the module docs) and
/// returns it. `run` is what [`crate::run_slides`] returned; `truth` maps
/// slide ids to scores 1-3 ([`crate::hpf_set::read_truth`]).
pub fn update_slide_table(
    out_root: &Path,
    run: &[(PathBuf, Result<SlideReport, SlideRunError>)],
    truth: Option<&BTreeMap<String, u8>>,
) -> Result<SlideTable, SlideRunError> {
    let table_path = out_root.join(SLIDE_TABLE_FILE);
    let mut warnings = Vec::new();
    let mut rows: BTreeMap<String, SlideRow> = BTreeMap::new();
    // The output folders first; an earlier run's failure of a slide is newer
    // than its folder (a failed run leaves the older folder), so it replaces
    // it; this run's results replace both.
    for report in slide_outputs(out_root, &mut warnings) {
        rows.insert(report.slide_id.clone(), SlideRow::done(report));
    }
    let previous = previous_failures(&table_path).map_err(|why| {
        SlideRunError::output(
            &table_path,
            format!(
                "{why}: not a slide table this tool wrote; it is left alone (each slide's results are in its folder)"
            ),
        )
    })?;
    for (slide, path, message) in previous {
        rows.insert(slide.clone(), SlideRow::failed(slide, path, message));
    }
    let done_now: Vec<String> = run.iter().filter_map(|(_, r)| r.as_ref().ok().map(|s| s.slide_id.clone())).collect();
    let mut failed_now: BTreeMap<String, SlideRow> = BTreeMap::new();
    for (path, result) in run {
        match result {
            Ok(report) => {
                rows.insert(report.slide_id.clone(), SlideRow::done(report.clone()));
            }
            // A second file with a done slide's name fails without touching that slide's row.
            Err(e) => {
                let slide = crate::batch::image_id(path);
                if done_now.contains(&slide) {
                    continue;
                }
                // Two files of one name that both failed: one row, both errors.
                match failed_now.get_mut(&slide) {
                    Some(SlideRow { outcome: SlideOutcome::Failed { message, .. }, .. }) => {
                        // The error names its file already.
                        message.push_str(&format!("; also {e}"));
                    }
                    _ => {
                        failed_now.insert(slide.clone(), SlideRow::failed(slide, path.clone(), e.to_string()));
                    }
                }
            }
        }
    }
    rows.extend(failed_now);
    let mut comparison = None;
    if let Some(truth) = truth {
        for row in rows.values_mut() {
            row.truth = truth.get(&row.slide).copied();
        }
        let predicted: Vec<(&str, u8)> = rows
            .values()
            .filter_map(|r| match &r.outcome {
                SlideOutcome::Done(s) => Some((r.slide.as_str(), s.mitotic_score.score)),
                SlideOutcome::Failed { .. } => None,
            })
            .collect();
        comparison =
            compare_scores(&predicted, truth).map_err(|e: HpfSetError| SlideRunError::output(&table_path, e))?;
    }
    let rows: Vec<SlideRow> = rows.into_values().collect();
    let bytes = table_csv(&rows).map_err(|e| SlideRunError::output(&table_path, e))?;
    mitoscope_formats::atomic::write_atomic(&table_path, &bytes)?;
    Ok(SlideTable { rows, comparison, warnings })
}

/// Refuses an output folder whose `slides.csv` this tool did not write (it
/// would be replaced after the run), so that a run stops before any work.
pub fn check_slide_table(out_root: &Path) -> Result<(), SlideRunError> {
    let table_path = out_root.join(SLIDE_TABLE_FILE);
    if table_path.is_dir() {
        return Err(SlideRunError::output(&table_path, "is a folder where the slide table goes; give another --out"));
    }
    previous_failures(&table_path).map(|_| ()).map_err(|why| {
        SlideRunError::output(
            &table_path,
            format!("{why}: not a slide table this tool wrote; it is left alone: give another --out"),
        )
    })
}

/// Every `summary.json` directly below `out_root` (hidden folders, i.e. the
/// temporary ones of a run in progress, skipped), sorted by folder name.
fn slide_outputs(out_root: &Path, warnings: &mut Vec<String>) -> Vec<SlideReport> {
    let Ok(entries) = std::fs::read_dir(out_root) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.join("summary.json").is_file())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let file = dir.join("summary.json");
        let parsed = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<SlideReport>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(report) => out.push(report),
            Err(why) => warnings
                .push(format!("{}: not a readable slide summary ({why}); left out of the table", file.display())),
        }
    }
    out
}

/// `(slide, path, error)` of the `failed` rows of an earlier table; none when
/// there is no table yet.
fn previous_failures(table: &Path) -> Result<Vec<(String, PathBuf, String)>, String> {
    let bytes = match std::fs::read(table) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let header = reader.headers().map_err(|e| format!("not a CSV table: {e}"))?.clone();
    let col =
        |name: &str| header.iter().position(|h| h == name).ok_or_else(|| format!("header lacks the '{name}' column"));
    let (slide, status, error, path) = (col("slide")?, col("status")?, col("error")?, col("path")?);
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", i + 2))?;
        let field = |c: usize| record.get(c).unwrap_or("").to_owned();
        if field(status) == "failed" && !field(slide).is_empty() {
            out.push((field(slide), PathBuf::from(field(path)), field(error)));
        }
    }
    Ok(out)
}

fn table_csv(rows: &[SlideRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(SLIDE_TABLE_COLUMNS)?;
    for row in rows {
        w.write_record(SLIDE_TABLE_COLUMNS.iter().map(|c| cell(row, c)))?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The value of `column` for `row`; a failed slide has only its name,
/// status, truth, error and path.
fn cell(row: &SlideRow, column: &str) -> String {
    match (column, &row.outcome) {
        ("slide", _) => row.slide.clone(),
        ("path", _) => row.path().display().to_string(),
        ("truth_score", _) => row.truth.map(|t| t.to_string()).unwrap_or_default(),
        ("status", SlideOutcome::Done(_)) => "done".into(),
        ("status", SlideOutcome::Failed { .. }) => "failed".into(),
        ("error", SlideOutcome::Failed { message, .. }) => message.clone(),
        (_, SlideOutcome::Failed { .. }) => String::new(),
        (column, SlideOutcome::Done(s)) => match column {
            "mitoses" => s.mitoses.to_string(),
            "tissue_mm2" => format!("{:.4}", s.tissue_area_mm2),
            "density_per_mm2" => format!("{:.3}", s.density_per_mm2),
            "hotspot_mitoses" => s.hotspot.count.to_string(),
            "hotspot_mm2" => format!("{:.4}", s.hotspot.area_mm2),
            "mitotic_score" => s.mitotic_score.score.to_string(),
            "top_fields_mitoses" => s.top_fields_count.to_string(),
            "mpp" => format!("{:.5}", s.mpp),
            // The summary's own spelling (snake case).
            "mpp_source" => {
                serde_json::to_value(s.mpp_source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            }
            "mpp_guessed" => s.mpp_guessed.to_string(),
            "read_level" => s.read_level.to_string(),
            "tiles" => s.tiles.processed.to_string(),
            "seconds" => format!("{:.1}", s.seconds),
            "model" => s.model.name.clone(),
            "threshold" => format!("{:.4}", s.model.threshold),
            "warnings" => s.warnings.join("; "),
            _ => String::new(),
        },
    }
}
