//! Models for tests and benchmarks of the *plumbing* (slides, HPF sets,
//! outputs), never for real use: untrained, their detections are noise.

use mitoscope_model::burn::tensor::Device;
use mitoscope_model::{CandidateNetConfig, PatchClassifierConfig};

use crate::ModelBundle;

/// An untrained, narrow bundle (2 base channels: fast on CPU), card version
/// `untrained-tiny`, with every stage-1 peak a candidate (threshold 0), every
/// stage-2 score a detection (operating threshold 0) and peaks merged within
/// `min_distance_um`.
pub fn tiny_untrained_bundle(device: &Device, min_distance_um: f64) -> ModelBundle {
    let mut b = ModelBundle::untrained(
        CandidateNetConfig::new().with_base_channels(2),
        PatchClassifierConfig::new().with_base_channels(2),
        device,
    );
    b.card.version = "untrained-tiny".into();
    b.card.candidate_threshold = 0.0;
    b.card.operating_threshold = 0.0;
    b.card.min_distance_um = min_distance_um;
    b
}
