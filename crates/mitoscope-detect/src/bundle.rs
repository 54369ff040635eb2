//! [`ModelBundle`]: both networks plus a [`ModelCard`] in one file.
//!
//! # File format (`*.bundle`)
//!
//! ```text
//! MITOSCOPE-BUNDLE-1\n            magic, 19 bytes
//! u64 little-endian               length of the JSON header
//! JSON BundleHeader               card, network configs, blob lengths
//! candidate-net burnpack bytes
//! classifier burnpack bytes
//! further classifiers' bytes       (ensembles, 0.4 on)
//! mask-head burnpack bytes         (bundles with a mask head, 0.10 on)
//! ```
//!
//! One file, no archive dependency, readable from `include_bytes!`; the header
//! is plain JSON so `head -c 4000 model.bundle` shows what a model is.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use mitoscope_model::weights::{load_weights_from_bytes, weights_to_bytes};
use mitoscope_model::{
    CandidateNet, CandidateNetConfig, MaskHead, MaskHeadConfig, PatchClassifier, PatchClassifierConfig, burn,
};
use serde::{Deserialize, Serialize};

use crate::DetectError;

/// First bytes of every bundle file.
pub const BUNDLE_MAGIC: &[u8] = b"MITOSCOPE-BUNDLE-1\n";
/// File name looked for when a bundle is loaded from a folder.
pub const BUNDLE_FILE: &str = "model.bundle";
/// Name of the embedded default model in errors.
pub const EMBEDDED_NAME: &str = "<embedded default model>";

/// The committed default model (empty until one has been trained; see
/// `model/MODEL.md`).
static EMBEDDED: &[u8] = include_bytes!("../model/default.bundle");

/// How a model was made and how to run it; stored in the bundle header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model name and version, e.g. `mitoscope-default-0.1`.
    pub version: String,
    /// Microns per pixel stage 1 works at (stage 2 crops are at the
    /// classifier config's mpp; the same in 0.1 models).
    pub model_mpp: f64,
    /// Side of the classifier crop in pixels (at the classifier's mpp).
    pub crop_size: u32,
    /// Stage-1 probability a heat-map peak needs to become a candidate.
    pub candidate_threshold: f64,
    /// Minimum distance between candidates, in µm (also the cross-tile merge radius).
    pub min_distance_um: f64,
    /// Stage-2 score at or above which a candidate is reported (chosen on validation data).
    pub operating_threshold: f64,
    /// Input mpp assumed when the caller knows none (40x scans).
    pub default_input_mpp: f64,
    /// How a detection's final score combines the two stages (0.1 models:
    /// the classifier's alone).
    #[serde(default)]
    pub score_fusion: ScoreFusion,
    /// Orientations of each crop whose stage-2 probabilities are averaged
    /// (1, 2, 4 or 8; see `mitoscope_model::infer::classify_crops_averaged`).
    /// The operating threshold was chosen with this many. Older bundles: 1.
    #[serde(default = "one_view")]
    pub classifier_views: u8,
    /// Where stage 2 centres a candidate's crop. Older bundles: the peak pixel.
    #[serde(default)]
    pub candidate_centre: CandidateCentre,
    /// Training provenance.
    pub training: TrainingRecord,
    /// Validation numbers, free-form (recall, F1, thresholds, ...).
    #[serde(default)]
    pub metrics: serde_json::Value,
}

/// Where a candidate sits (its reported position and the centre of its stage-2 crop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateCentre {
    /// The heat map's maximum (a pixel of the stage-1 grid).
    #[default]
    Peak,
    /// The weighted centre of the peak's blob (`mitoscope_model::blob_centre`):
    /// the map learns a disc per figure, whose flat top leaves the maximum
    /// up to a few pixels off the figure's centre.
    BlobCentre,
}

/// How a detection's final score is made from the stage-1 peak `p1` and the
/// stage-2 probability `p2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreFusion {
    /// `p2`: stage 1 only proposes.
    #[default]
    Classifier,
    /// `sqrt(p1 * p2)`: a cascade in which both stages must agree. The
    /// heat-map net sees a whole field and its peak carries evidence the crop
    /// classifier lacks (on the ICPR HPFs the peak alone ranks mitoses better
    /// than the classifier alone); the classifier still vetoes look-alikes.
    /// Since `p2 <= 1`, a candidate with `p1 < t^2` cannot reach threshold
    /// `t`, so it need not be classified at all.
    GeometricMean,
}

impl ScoreFusion {
    /// The final score.
    pub fn fuse(self, p1: f64, p2: f64) -> f64 {
        match self {
            Self::Classifier => p2,
            Self::GeometricMean => (p1.clamp(0.0, 1.0) * p2.clamp(0.0, 1.0)).sqrt(),
        }
    }

    /// The lowest stage-1 peak that can still reach `threshold`.
    pub fn min_peak_for(self, threshold: f64) -> f64 {
        match self {
            Self::Classifier => 0.0,
            Self::GeometricMean => threshold.clamp(0.0, 1.0).powi(2),
        }
    }
}

/// Provenance of a trained model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Command that produced the model.
    pub command: String,
    /// Data used, in words (datasets and how many examples).
    pub data: String,
    /// Seed of the run.
    pub seed: u64,
    /// Images trained on.
    #[serde(default)]
    pub train_images: Vec<String>,
    /// Images held out for validation (threshold choice).
    #[serde(default)]
    pub val_images: Vec<String>,
    /// Caveats (e.g. placeholder quality).
    #[serde(default)]
    pub notes: String,
}

impl ModelCard {
    /// A card for an untrained / test model with sensible defaults.
    pub fn untrained(version: &str) -> Self {
        Self {
            version: version.into(),
            model_mpp: 0.5,
            crop_size: 64,
            candidate_threshold: 0.5,
            min_distance_um: 6.0,
            operating_threshold: 0.5,
            default_input_mpp: 0.25,
            score_fusion: ScoreFusion::default(),
            classifier_views: 1,
            candidate_centre: CandidateCentre::default(),
            training: TrainingRecord { notes: "untrained".into(), ..Default::default() },
            metrics: serde_json::Value::Null,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct BundleHeader {
    card: ModelCard,
    candidate_config: CandidateNetConfig,
    classifier_config: PatchClassifierConfig,
    candidate_bytes: u64,
    classifier_bytes: u64,
    /// Sizes of further stage-2 networks (same config), after the first.
    /// Absent in bundles from before 0.4: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    extra_classifier_bytes: Vec<u64>,
    /// The mask head's settings and size, when the bundle has one (0.10 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mask_head: Option<MaskHeadEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MaskHeadEntry {
    config: MaskHeadConfig,
    bytes: u64,
}

/// Fills in config fields added since older bundles were written, with the
/// value that reproduces their behaviour (burn configs have no serde defaults).
fn upgrade_header(header: &mut serde_json::Value) {
    if let Some(classifier) = header.get_mut("classifier_config") {
        mitoscope_model::classifier::upgrade_config_json(classifier);
    }
}

/// Both networks and their card, on one device.
#[derive(Debug, Clone)]
pub struct ModelBundle {
    /// Stage 1.
    pub candidate: CandidateNet,
    /// Stage 1 shape.
    pub candidate_config: CandidateNetConfig,
    /// Stage 2.
    pub classifier: PatchClassifier,
    /// Further stage-2 networks of the same shape (trained with other seeds):
    /// stage 2's probability is the mean over `classifier` and these. Two
    /// independently trained small networks disagree on different crops, and
    /// their mean ranks candidates better than either (0.4's recipe).
    pub extra_classifiers: Vec<PatchClassifier>,
    /// Stage 2 shape.
    pub classifier_config: PatchClassifierConfig,
    /// Outlines detections at the scan's resolution, where the model has one
    /// (else outlines come from the stage-1 map).
    pub mask_head: Option<MaskHead>,
    /// Metadata.
    pub card: ModelCard,
}

impl ModelBundle {
    /// The default model compiled into the binary.
    pub fn embedded(device: &Device) -> Result<Self, DetectError> {
        if EMBEDDED.is_empty() {
            return Err(DetectError::bundle(
                EMBEDDED_NAME,
                "this build has no embedded model (model/default.bundle is empty); pass --model PATH",
            ));
        }
        Self::from_bytes(EMBEDDED, EMBEDDED_NAME, device)
    }

    /// Whether a default model is compiled in.
    pub fn has_embedded() -> bool {
        !EMBEDDED.is_empty()
    }

    /// Loads a bundle file, or `model.bundle` inside a folder.
    pub fn load(path: &Path, device: &Device) -> Result<Self, DetectError> {
        let file: PathBuf = if path.is_dir() { path.join(BUNDLE_FILE) } else { path.to_owned() };
        let bytes = std::fs::read(&file).map_err(|e| DetectError::io(&file, e))?;
        Self::from_bytes(&bytes, &file.display().to_string(), device)
    }

    /// Parses bundle bytes; `name` labels them in errors.
    pub fn from_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self, DetectError> {
        let bad = |m: String| DetectError::bundle(name, m);
        let rest = bytes.strip_prefix(BUNDLE_MAGIC).ok_or_else(|| {
            bad(format!("not a Mitoscope model bundle (expected it to start with {:?})", "MITOSCOPE-BUNDLE-1"))
        })?;
        let (len, rest) = rest.split_at_checked(8).ok_or_else(|| bad("truncated before the header length".into()))?;
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(len);
        let header_len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad("header too large".into()))?;
        let (header, blobs) = rest
            .split_at_checked(header_len)
            .ok_or_else(|| bad(format!("header of {header_len} bytes but only {} bytes follow", rest.len())))?;
        let mut header: serde_json::Value =
            serde_json::from_slice(header).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        upgrade_header(&mut header);
        let header: BundleHeader =
            serde_json::from_value(header).map_err(|e| bad(format!("header does not describe a bundle: {e}")))?;
        let (c_len, k_len) = (header.candidate_bytes as usize, header.classifier_bytes as usize);
        let extra_lens: Vec<usize> = header.extra_classifier_bytes.iter().map(|&n| n as usize).collect();
        let mask_len = header.mask_head.as_ref().map_or(0, |m| m.bytes as usize);
        let total =
            extra_lens.iter().fold(c_len.saturating_add(k_len), |a, &n| a.saturating_add(n)).saturating_add(mask_len);
        if blobs.len() != total {
            return Err(bad(format!(
                "expected {total} bytes of weights ({c_len} + {k_len}{}{}), found {} (truncated or padded file)",
                extra_lens.iter().map(|n| format!(" + {n}")).collect::<String>(),
                header.mask_head.as_ref().map(|_| format!(" + mask head {mask_len}")).unwrap_or_default(),
                blobs.len()
            )));
        }
        validate_card(&header.card).map_err(bad)?;
        let (c_bytes, rest) = blobs.split_at(c_len);
        let (k_bytes, mut rest) = rest.split_at(k_len);
        let mut extra_classifiers = Vec::with_capacity(extra_lens.len());
        for (i, &n) in extra_lens.iter().enumerate() {
            let (bytes, tail) = rest.split_at(n);
            rest = tail;
            extra_classifiers.push(load_weights_from_bytes(
                header.classifier_config.init(device),
                bytes,
                &format!("{name} (classifier {})", i + 2),
            )?);
        }
        let mask_head = match &header.mask_head {
            Some(entry) => {
                entry.config.check().map_err(|e| bad(e.to_string()))?;
                let net = load_weights_from_bytes(entry.config.net.init(device), rest, &format!("{name} (mask head)"))?;
                Some(MaskHead { net, config: entry.config.clone() })
            }
            None => None,
        };
        let candidate =
            load_weights_from_bytes(header.candidate_config.init(device), c_bytes, &format!("{name} (candidate net)"))?;
        let classifier =
            load_weights_from_bytes(header.classifier_config.init(device), k_bytes, &format!("{name} (classifier)"))?;
        if header.classifier_config.crop_size != header.card.crop_size as usize
            || (header.candidate_config.mpp - header.card.model_mpp).abs() > 1e-9
            || !(header.classifier_config.mpp.is_finite() && header.classifier_config.mpp > 0.0)
        {
            return Err(bad(format!(
                "card says {} px crops and stage 1 at {} µm/px; the configs say {} px crops at {} µm/px and stage 1 at {} µm/px",
                header.card.crop_size,
                header.card.model_mpp,
                header.classifier_config.crop_size,
                header.classifier_config.mpp,
                header.candidate_config.mpp
            )));
        }
        Ok(Self {
            candidate,
            candidate_config: header.candidate_config,
            classifier,
            extra_classifiers,
            classifier_config: header.classifier_config,
            mask_head,
            card: header.card,
        })
    }

    /// Serialises the bundle (see the module docs for the layout).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DetectError> {
        let c = weights_to_bytes(&self.candidate)?;
        let k = weights_to_bytes(&self.classifier)?;
        let extras = self.extra_classifiers.iter().map(weights_to_bytes).collect::<Result<Vec<_>, _>>()?;
        let mask = self.mask_head.as_ref().map(|m| weights_to_bytes(&m.net)).transpose()?;
        let header = BundleHeader {
            mask_head: self
                .mask_head
                .as_ref()
                .zip(mask.as_ref())
                .map(|(m, b)| MaskHeadEntry { config: m.config.clone(), bytes: b.len() as u64 }),
            extra_classifier_bytes: extras.iter().map(|e| e.len() as u64).collect(),
            card: self.card.clone(),
            candidate_config: self.candidate_config.clone(),
            classifier_config: self.classifier_config.clone(),
            candidate_bytes: c.len() as u64,
            classifier_bytes: k.len() as u64,
        };
        let json = serde_json::to_vec_pretty(&header).map_err(|e| DetectError::Config(e.to_string()))?;
        let mut out = Vec::with_capacity(BUNDLE_MAGIC.len() + 8 + json.len() + c.len() + k.len());
        out.extend_from_slice(BUNDLE_MAGIC);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&c);
        out.extend_from_slice(&k);
        for e in &extras {
            out.extend_from_slice(e);
        }
        if let Some(m) = &mask {
            out.extend_from_slice(m);
        }
        Ok(out)
    }

    /// Writes the bundle atomically.
    pub fn save(&self, path: &Path) -> Result<(), DetectError> {
        mitoscope_formats::atomic::write_atomic(path, &self.to_bytes()?)?;
        Ok(())
    }

    /// A freshly initialised (untrained) bundle: for tests and pipeline checks.
    pub fn untrained(
        candidate_config: CandidateNetConfig,
        classifier_config: PatchClassifierConfig,
        device: &Device,
    ) -> Self {
        let mut card = ModelCard::untrained("untrained");
        card.model_mpp = candidate_config.mpp;
        card.crop_size = classifier_config.crop_size as u32;
        Self {
            candidate: candidate_config.init(device),
            candidate_config,
            classifier: classifier_config.init(device),
            extra_classifiers: Vec::new(),
            classifier_config,
            mask_head: None,
            card,
        }
    }
}

fn one_view() -> u8 {
    1
}

/// Largest stage-2 crop side a card may ask for: 16x the default's 64 px.
const MAX_CROP_PX: u32 = 1024;

fn validate_card(card: &ModelCard) -> Result<(), String> {
    if ![1, 2, 4, 8].contains(&card.classifier_views) {
        return Err(format!("card classifier_views must be 1, 2, 4 or 8, found {}", card.classifier_views));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
    if !positive(card.model_mpp) || !positive(card.default_input_mpp) {
        return Err(format!(
            "card mpp values must be positive, found {} and {}",
            card.model_mpp, card.default_input_mpp
        ));
    }
    // The model reads images at its mpp and assumes inputs at the default: both
    // must be resolutions mitoses can be seen at (and buffers sized for them).
    for (what, mpp) in [("model_mpp", card.model_mpp), ("default_input_mpp", card.default_input_mpp)] {
        if !crate::detector::DETECTABLE_MPP.contains(&mpp) {
            return Err(format!(
                "card {what} {mpp} is outside {}..={} µm/px",
                crate::detector::DETECTABLE_MPP.start(),
                crate::detector::DETECTABLE_MPP.end()
            ));
        }
    }
    if !unit(card.candidate_threshold) || !unit(card.operating_threshold) {
        return Err(format!(
            "card thresholds must lie in [0, 1], found candidate {} and operating {}",
            card.candidate_threshold, card.operating_threshold
        ));
    }
    let usable = |d: f64| d.is_finite() && d >= 0.0;
    if !(4..=MAX_CROP_PX).contains(&card.crop_size) || !usable(card.min_distance_um) {
        return Err(format!("card crop size {} / min distance {} unusable", card.crop_size, card.min_distance_um));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::tiny_bundle;

    #[test]
    fn fusion_bound_is_exact() {
        let f = ScoreFusion::GeometricMean;
        assert_eq!(f.fuse(0.64, 1.0), 0.8);
        assert!((f.fuse(0.81, 0.25) - 0.45).abs() < 1e-12);
        // At the bound, a perfect classifier score just reaches the threshold.
        let t = 0.7;
        assert!((f.fuse(f.min_peak_for(t), 1.0) - t).abs() < 1e-12);
        assert!(f.fuse(f.min_peak_for(t) * 0.999, 1.0) < t);
        assert_eq!(ScoreFusion::Classifier.fuse(0.1, 0.9), 0.9);
        assert_eq!(ScoreFusion::Classifier.min_peak_for(0.9), 0.0);
    }

    /// `bytes` with its JSON header changed by `edit`.
    fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let rest = &bytes[BUNDLE_MAGIC.len()..];
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&rest[8..8 + len]).unwrap();
        edit(&mut header);
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = BUNDLE_MAGIC.to_vec();
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&rest[8 + len..]);
        out
    }

    #[test]
    fn bundles_from_before_input_norm_stain_input_fourth_block_and_views_still_load() {
        let device = Device::flex();
        let mut bundle = tiny_bundle(&device);
        bundle.card.classifier_views = 8;
        let bytes = bundle.to_bytes().unwrap();
        // Rewrite the header without the fields, as 0.1 bundles were written.
        let old = with_header(&bytes, |h| {
            h["classifier_config"].as_object_mut().unwrap().remove("input_norm").unwrap();
            h["classifier_config"].as_object_mut().unwrap().remove("stain_input").unwrap();
            h["classifier_config"].as_object_mut().unwrap().remove("fourth_block").unwrap();
            h["card"].as_object_mut().unwrap().remove("classifier_views").unwrap();
        });
        let loaded = ModelBundle::from_bytes(&old, "old.bundle", &device).unwrap();
        assert!(!loaded.classifier_config.input_norm);
        assert!(!loaded.classifier_config.stain_input);
        assert!(!loaded.classifier_config.fourth_block);
        assert_eq!(loaded.card.classifier_views, 1);
        assert_eq!(ModelBundle::from_bytes(&bytes, "new.bundle", &device).unwrap().card.classifier_views, 8);
    }

    #[test]
    fn extra_classifiers_round_trip_and_are_checked() {
        let device = Device::flex();
        let mut bundle = tiny_bundle(&device);
        bundle.extra_classifiers = vec![bundle.classifier_config.init(&device), bundle.classifier_config.init(&device)];
        let bytes = bundle.to_bytes().unwrap();
        let back = ModelBundle::from_bytes(&bytes, "ens.bundle", &device).unwrap();
        assert_eq!(back.extra_classifiers.len(), 2);
        assert_eq!(back.to_bytes().unwrap(), bytes);
        // The last network cut short: named, not a panic.
        let err = ModelBundle::from_bytes(&bytes[..bytes.len() - 7], "ens.bundle", &device).unwrap_err().to_string();
        assert!(err.contains("ens.bundle") && err.contains("truncated"), "{err}");
        // A header that promises more networks than follow.
        let more = with_header(&bytes, |h| h["extra_classifier_bytes"].as_array_mut().unwrap().push(100.into()));
        assert!(ModelBundle::from_bytes(&more, "ens.bundle", &device).is_err());
        // One network: no field in the header (older readers see the bundle they know).
        let single = tiny_bundle(&device).to_bytes().unwrap();
        assert!(!String::from_utf8_lossy(&single).contains("extra_classifier_bytes"));
    }

    #[test]
    fn a_mask_head_round_trips_and_is_checked() {
        let device = Device::flex();
        let mut bundle = tiny_bundle(&device);
        let config = MaskHeadConfig {
            net: CandidateNetConfig::new().with_base_channels(4).with_mpp(0.25),
            crop_size: 16,
            ..Default::default()
        };
        bundle.mask_head = Some(MaskHead { net: config.net.init(&device), config: config.clone() });
        let bytes = bundle.to_bytes().unwrap();
        let back = ModelBundle::from_bytes(&bytes, "mask.bundle", &device).unwrap();
        assert_eq!(back.mask_head.as_ref().map(|m| &m.config), Some(&config));
        assert_eq!(back.to_bytes().unwrap(), bytes);
        // Cut into the head's weights: named, not a panic.
        let err = ModelBundle::from_bytes(&bytes[..bytes.len() - 3], "mask.bundle", &device).unwrap_err().to_string();
        assert!(err.contains("mask.bundle") && err.contains("mask head"), "{err}");
        // An unusable crop size in the header is refused by name.
        let odd = with_header(&bytes, |h| h["mask_head"]["config"]["crop_size"] = 13.into());
        let err = ModelBundle::from_bytes(&odd, "mask.bundle", &device).unwrap_err().to_string();
        assert!(err.contains("mask head config"), "{err}");
        // Without a head the header has no entry (0.9 bundles read as before).
        let plain = tiny_bundle(&device).to_bytes().unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("mask_head"));
        assert!(ModelBundle::from_bytes(&plain, "plain.bundle", &device).unwrap().mask_head.is_none());
    }

    #[test]
    fn odd_view_counts_are_refused() {
        let device = Device::flex();
        let bytes = tiny_bundle(&device).to_bytes().unwrap();
        for views in [0, 3, 9] {
            let bad = with_header(&bytes, |h| h["card"]["classifier_views"] = views.into());
            let err = ModelBundle::from_bytes(&bad, "views.bundle", &device).unwrap_err().to_string();
            assert!(err.contains("views.bundle") && err.contains("classifier_views"), "{err}");
        }
    }

    #[test]
    fn cards_asking_for_absurd_buffers_are_refused() {
        let device = Device::flex();
        let bytes = tiny_bundle(&device).to_bytes().unwrap();
        let edits: [(&str, serde_json::Value); 4] = [
            ("model_mpp", 0.001.into()),
            ("default_input_mpp", 40.0.into()),
            ("crop_size", 100_000.into()),
            ("crop_size", 2.into()),
        ];
        for (key, value) in edits {
            let bad = with_header(&bytes, |h| h["card"][key] = value.clone());
            let err = ModelBundle::from_bytes(&bad, "odd.bundle", &device).unwrap_err().to_string();
            assert!(err.contains("odd.bundle") && (err.contains(key) || err.contains("crop size")), "{key}: {err}");
        }
    }

    #[test]
    fn round_trip_and_corruptions() {
        let device = Device::flex();
        let bundle = tiny_bundle(&device);
        let bytes = bundle.to_bytes().unwrap();
        let back = ModelBundle::from_bytes(&bytes, "x.bundle", &device).unwrap();
        assert_eq!(back.card, bundle.card);
        assert_eq!(back.to_bytes().unwrap().len(), bytes.len());

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("text", b"hello world, not a model".to_vec()),
            ("truncated", bytes[..bytes.len() - 10].to_vec()),
            ("header-cut", bytes[..BUNDLE_MAGIC.len() + 20].to_vec()),
            ("padded", [bytes.clone(), vec![0; 5]].concat()),
        ];
        for (name, b) in cases {
            let err = ModelBundle::from_bytes(&b, name, &device).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn load_names_missing_files_and_folders() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let err = ModelBundle::load(&dir.path().join("nope.bundle"), &device).unwrap_err();
        assert!(err.to_string().contains("nope.bundle"), "{err}");
        let err = ModelBundle::load(dir.path(), &device).unwrap_err();
        assert!(err.to_string().contains(BUNDLE_FILE), "{err}");
        let bundle = tiny_bundle(&device);
        bundle.save(&dir.path().join(BUNDLE_FILE)).unwrap();
        assert!(ModelBundle::load(dir.path(), &device).is_ok());
    }
}
