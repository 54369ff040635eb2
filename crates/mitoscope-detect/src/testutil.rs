//! Helpers for unit tests.

use burn::tensor::Device;
use mitoscope_model::{CandidateNetConfig, PatchClassifierConfig, burn};

use crate::ModelBundle;

/// An untrained, narrow bundle (fast on CPU) with a low candidate threshold
/// so that the pipeline produces candidates.
pub fn tiny_bundle(device: &Device) -> ModelBundle {
    let mut b = ModelBundle::untrained(
        CandidateNetConfig::new().with_base_channels(2),
        PatchClassifierConfig::new().with_base_channels(2),
        device,
    );
    b.card.candidate_threshold = 0.0;
    b.card.operating_threshold = 0.0;
    b.card.min_distance_um = 20.0;
    b
}
