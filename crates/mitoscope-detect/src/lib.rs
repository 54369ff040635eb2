//! Mitoscope's two-stage mitosis detection pipeline: image files in,
//! scored detections and output files out.
//!
//! - [`ModelBundle`]: the candidate net (stage 1) and patch classifier
//!   (stage 2) with a [`ModelCard`] (model mpp, thresholds, provenance), from a
//!   `.bundle` file or the embedded default ([`ModelBundle::embedded`]).
//! - [`Detector::detect_image`]: resample to the model's mpp tile by tile
//!   ([`tiling`]), stage-1 peaks, merge across tiles, stage-2 scores, threshold.
//! - [`run_batch`]: files and folders in parallel, one bad input never stops
//!   the others; writes `detections.csv` (`image,x,y,score`), `candidates.csv`,
//!   GeoJSON, MIDOG JSON and overlay PNGs ([`batch`]).
//! - [`classify_images`]: stage 2 on the centre crop of each image.
//! - [`synthetic::render_hpf`] and [`run_demo`]: a synthetic H&E-like field
//!   through the whole pipeline.
//! - [`slide_run`]: whole slides (tissue, tiles over tissue, hotspot, score,
//!   per-slide output folder); [`slide_table`]: the cohort table `slides.csv`
//!   over an output folder; [`hpf_set`]: folders of HPFs scored per slide.
//! - [`recipe::train_default`]: the recipe that trains the default model from
//!   the shared real data; [`recipe::train_recipe`] runs it (both stages or
//!   one) on any [`training_data::TrainingData`], e.g. datasets of one's own.
//!
//! ```
//! use mitoscope_detect::{DetectOptions, Detector, ModelBundle};
//! use mitoscope_model::{burn::tensor::Device, CandidateNetConfig, PatchClassifierConfig};
//!
//! let device = Device::flex();
//! // An untrained narrow model: shows the API, not accuracy.
//! let bundle = ModelBundle::untrained(
//!     CandidateNetConfig::new().with_base_channels(2),
//!     PatchClassifierConfig::new().with_base_channels(2),
//!     &device,
//! );
//! let detector = Detector::new(bundle, device);
//! let (image, _figures) = mitoscope_detect::synthetic::render_hpf(7, 96);
//! let options = DetectOptions { keep_all_candidates: true, ..DetectOptions::default() };
//! let found = detector.detect_image(&image, 0.25, &options).unwrap();
//! assert!(found.iter().all(|d| (0.0..=1.0).contains(&d.score) && d.x < 96.0 && d.y < 96.0));
//! ```
#![deny(missing_docs)]

pub mod batch;
mod bundle;
mod classify;
mod demo;
mod detector;
mod error;
pub mod fixtures;
pub mod hpf_set;
pub mod mask_training;
pub mod recipe;
pub mod slide_run;
pub mod slide_table;
pub mod synthetic;
pub mod tiling;
pub mod training_data;

#[cfg(test)]
mod testutil;

pub use batch::{
    BatchConfig, BatchSummary, DETECTIONS_HEADER, ImageResult, Outputs, RUN_RECORD_FILE, RunRecord, run_batch,
};
pub use bundle::{BUNDLE_FILE, CandidateCentre, ModelBundle, ModelCard, ScoreFusion, TrainingRecord};
pub use classify::{ClassifyResult, classify_images};
pub use demo::{DEMO_IMAGE, run_demo};
pub use detector::{DETECTABLE_MPP, DetectOptions, Detection, Detector, checked_input_mpp};
pub use error::DetectError;
pub use hpf_set::{HpfSetConfig, HpfSetError, HpfSetReport, run_hpf_set};
/// The evaluation crate (mitotic score, field presets), re-exported for the CLI.
pub use mitoscope_eval;
/// The slide reader, tissue and hotspot crate, re-exported for the CLI.
pub use mitoscope_slide;
pub use slide_run::{SlideReport, SlideRunConfig, SlideRunError, TileDetector, run_slide, run_slides};

use mitoscope_model::burn::tensor::Device;

/// The burn device for a `--device` name: `cpu` (burn's pure-Rust `flex`
/// backend), or `cuda` / `cuda:N` in builds with the `cuda` feature.
pub fn parse_device(name: &str) -> Result<Device, DetectError> {
    let n = name.trim().to_ascii_lowercase();
    if n == "cpu" || n == "flex" {
        return Ok(Device::flex());
    }
    if let Some(rest) = n.strip_prefix("cuda") {
        let index: usize = match rest.strip_prefix(':') {
            Some(i) => {
                i.parse().map_err(|_| DetectError::Config(format!("bad CUDA device '{name}'; use cuda or cuda:N")))?
            }
            None if rest.is_empty() => 0,
            None => return Err(DetectError::Config(format!("bad device '{name}'; use cpu, cuda or cuda:N"))),
        };
        return cuda_device(index);
    }
    if let Some(rest) = n.strip_prefix("wgpu") {
        let index = match rest.strip_prefix(':') {
            Some(i) => Some(
                i.parse::<usize>()
                    .map_err(|_| DetectError::Config(format!("bad wgpu device '{name}'; use wgpu or wgpu:N")))?,
            ),
            None if rest.is_empty() => None,
            None => return Err(DetectError::Config(format!("bad device '{name}'; use cpu, wgpu, wgpu:N or cuda"))),
        };
        return wgpu_device(index);
    }
    Err(DetectError::Config(format!("unknown device '{name}'; use cpu, wgpu or cuda")))
}

/// `wgpu`: the adapter wgpu prefers (a discrete GPU first); `wgpu:N`: discrete GPU N.
#[cfg(feature = "wgpu")]
fn wgpu_device(index: Option<usize>) -> Result<Device, DetectError> {
    use mitoscope_model::burn::tensor::DeviceKind;
    Ok(Device::wgpu(match index {
        Some(i) => DeviceKind::DiscreteGpu(i),
        None => DeviceKind::DefaultDevice,
    }))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_index: Option<usize>) -> Result<Device, DetectError> {
    Err(DetectError::Config(
        "this build has no wgpu support (build with `--features wgpu`; the GPU machine needs a Vulkan loader); \
         use --device cpu"
            .into(),
    ))
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device, DetectError> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<Device, DetectError> {
    Err(DetectError::Config(
        "this build has no CUDA support (build with `--features cuda`, which needs network access for burn's LLVM \
         bundle); use --device cpu"
            .into(),
    ))
}
