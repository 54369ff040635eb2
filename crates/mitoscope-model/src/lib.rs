//! Networks and training for Mitoscope's two-stage mitosis detector, on
//! [burn](https://burn.dev) 0.22.
//!
//! # The two stages
//!
//! 1. **Candidates** ([`CandidateNet`]): a small U-Net-like encoder-decoder
//!    (3 levels down, 3 up, 8-32 channels, GroupNorm, ReLU) maps an RGB tile at
//!    0.5 µm/px (`[B, 3, H, W]`) to per-pixel mitosis logits (`[B, 1, H, W]`).
//!    It is trained on the same heat map everywhere: pixel masks where they
//!    exist ([`candidate::mask_target`]) and discs around centroids elsewhere
//!    ([`candidate::disc_target`]). [`infer::candidate_map`] gives the
//!    probability map of an image and [`candidate::peaks`] its local maxima.
//! 2. **Classification** ([`PatchClassifier`]): a small CNN scores a 64x64 crop
//!    at 0.5 µm/px (32 µm of tissue) centred on each candidate; one logit per
//!    crop, score = sigmoid. [`infer::classify_crops`] batches crops.
//!
//! A model may also carry a **mask head** ([`MaskHead`]): the candidate net's
//! shape at 0.25 µm/px on a crop around each detection, trained on pixel masks
//! alone, whose thresholded map outlines the figure.
//!
//! Networks are deliberately lean: the default CPU backend (burn's pure-Rust
//! `flex`) trains several times slower than PyTorch on CPU.
//!
//! # Data, augmentation, training
//!
//! [`data`] builds labelled crops (folders named `normal`/`atypical`/`negative`
//! ..., positive crops at HPF centroids, random negatives away from them),
//! resampled to the classifier's size and resolution, and converts them to
//! normalised CHW tensors. [`augment`] jitters stains in HED space, flips,
//! rotates by 90°, zooms and blurs, reproducibly from a seed. [`training`]
//! runs Adam on BCE-with-logits with a validation split, an `indicatif` bar,
//! a JSON-lines metrics log, and an atomic checkpoint every epoch from which a
//! killed run resumes with identical results. [`candidate_training`] does the
//! same for the candidate network on tiles sampled from labelled images.
//!
//! # Weights
//!
//! [`weights`] saves and loads burnpack records (full precision) from files or
//! from bytes (for `include_bytes!`); missing, corrupt, mismatched or
//! non-finite weights are a [`ModelError`] naming the file.
//!
//! # Devices
//!
//! Everything takes a burn [`Device`](burn::tensor::Device). The default build
//! has only the CPU backend: use `Device::flex()`. Features `wgpu` and `cuda`
//! (off by default) add `Device::wgpu(..)` / `Device::cuda(0)`; `cuda` downloads an
//! LLVM bundle while building (burn 0.22's cubecl-llvm), so it needs network access.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use mitoscope_model::PatchClassifierConfig;
//!
//! let device = Device::flex();
//! let model = PatchClassifierConfig::new().init(&device);
//! let logits = model.forward(Tensor::zeros([2, 3, 64, 64], &device));
//! assert_eq!(logits.dims(), [2, 1]);
//! ```
#![deny(missing_docs)]

pub mod augment;
pub mod backend_check;
pub mod candidate;
pub mod candidate_training;
pub mod classifier;
pub mod data;
mod error;
pub mod infer;
mod layers;
pub mod mask_head;
pub mod run_data;
pub mod training;
pub mod weights;

#[cfg(test)]
mod test_support;

pub use candidate::{CandidateNet, CandidateNetConfig, Peak, ProbabilityMap, blob_centre, blob_pixels, peaks};
pub use candidate_training::{CandidateSample, CandidateTrainingConfig, train_candidate_net};
pub use classifier::{PatchClassifier, PatchClassifierConfig};
pub use error::ModelError;
pub use layers::conv3x3_in_slices;
pub use mask_head::{MaskHead, MaskHeadConfig};
pub use training::{TrainOptions, TrainOutcome, TrainingConfig, train_classifier};

/// Re-export so callers name the same burn version (`mitoscope_model::burn::tensor::Device`).
pub use burn;
