//! `mitoscope demo`: a synthetic field through the whole pipeline.

use std::path::Path;

use crate::batch::{BatchConfig, BatchSummary, Outputs, run_batch, write_png};
use crate::{DetectError, Detector};

/// File name of the rendered field (the word *synthetic* is in every output name).
pub const DEMO_IMAGE: &str = "synthetic-hpf.png";

/// Renders a 2084x2084 synthetic HPF (seed `seed`, 0.25 µm/px) into
/// `out_dir/synthetic-hpf.png`, runs the pipeline on it with every output and
/// all candidates, and writes `out_dir/README.txt` saying it is synthetic and
/// where the figures were painted (`synthetic-truth.csv`).
pub fn run_demo(detector: &Detector, out_dir: &Path, seed: u64, size: u32) -> Result<BatchSummary, DetectError> {
    let (image, truth) = crate::synthetic::render_hpf(seed, size);
    let image_path = out_dir.join(DEMO_IMAGE);
    write_png(&image_path, &image)?;
    let mut truth_csv = String::from("image,x,y\n");
    for (x, y) in &truth {
        truth_csv.push_str(&format!("synthetic-hpf,{x:.2},{y:.2}\n"));
    }
    mitoscope_formats::atomic::write_atomic(&out_dir.join("synthetic-truth.csv"), truth_csv.as_bytes())?;
    let config = BatchConfig {
        input_mpp: Some(0.25),
        outputs: Outputs::all(),
        write_candidates: true,
        ..BatchConfig::default()
    };
    let summary = run_batch(detector, &[image_path], out_dir, &config)?;
    let readme = format!(
        "SYNTHETIC DEMO - not real tissue.\n\
         {DEMO_IMAGE} is a computer-generated H&E-like field ({size}x{size} px, seed {seed}, taken as 0.25 um/px)\n\
         with {} painted mitosis-like figures (synthetic-truth.csv). The model ({}) was trained on real H&E;\n\
         its output on this drawing shows the pipeline and formats work, not how accurate it is.\n\
         detections: {} at threshold {:.3}\n",
        truth.len(),
        detector.bundle().card.version,
        summary.total,
        summary.threshold
    );
    mitoscope_formats::atomic::write_atomic(&out_dir.join("README.txt"), readme.as_bytes())?;
    Ok(summary)
}
