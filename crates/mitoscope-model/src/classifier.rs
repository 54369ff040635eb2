//! Stage 2: [`PatchClassifier`], a small CNN that scores one crop centred on a
//! candidate (one logit per crop; score = sigmoid(logit)).

use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::augment::hed_from_rgb_matrix;
use crate::data::{CHANNEL_MEAN, CHANNEL_STD};
use crate::layers::ConvBlock;

/// Shape and input resolution of a [`PatchClassifier`].
#[derive(Config, Debug, PartialEq)]
pub struct PatchClassifierConfig {
    /// Side of the square input crop in pixels.
    #[config(default = 64)]
    pub crop_size: usize,
    /// Microns per pixel the crop is resampled to (64 px at 0.5 µm/px = 32 µm,
    /// enough context around a mitotic figure of ~5-15 µm).
    #[config(default = 0.5)]
    pub mpp: f64,
    /// Channels of the first conv block; doubled after each of the 3 poolings' blocks.
    #[config(default = 8)]
    pub base_channels: usize,
    /// GroupNorm groups (reduced to a divisor of each block's width).
    #[config(default = 4)]
    pub norm_groups: usize,
    /// Standardise each crop's channels (zero mean, unit variance over the
    /// crop) before the first block. Figure crops from other scanners differ
    /// from in-domain negatives mostly in overall colour and contrast; without
    /// this the network can separate the classes by scanner instead of by
    /// figure (seen: 0.98 validation F1 on mixed crops, 0.11 recall on ICPR).
    #[config(default = false)]
    pub input_norm: bool,
    /// Feed the network stain concentrations (haematoxylin, eosin, residual:
    /// optical density projected on the Ruifrok–Johnston stain vectors)
    /// instead of RGB. Optical density is linear in the amount of stain where
    /// intensity is exponential in it, so with `input_norm` a stronger or
    /// weaker haematoxylin or eosin across a whole crop (another lab, another
    /// scanner) is largely standardised away while the figure's shape and
    /// texture stay.
    #[config(default = false)]
    pub stain_input: bool,
    /// A fourth conv block (8x the base channels) after a third pooling. With
    /// three blocks each output sees about 32 px (10 µm at 0.3 µm/px), less
    /// than a figure and its surroundings, and the global average pools those
    /// local views; the fourth sees about 64 px, the whole default crop, so the
    /// network can weigh a figure's outline and its clear halo, not only its
    /// chromatin texture. Crops need at least 8 px. Absent before 0.7: off.
    #[config(default = false)]
    pub fourth_block: bool,
}

/// Fills in the fields a saved [`PatchClassifierConfig`] (JSON) may lack,
/// with the values that reproduce the networks written before each existed
/// (burn configs have no serde defaults). Bundles and training run folders
/// both keep such configs.
pub fn upgrade_config_json(config: &mut serde_json::Value) {
    if let Some(fields) = config.as_object_mut() {
        // 0.2: per-crop standardisation; 0.6: stain input; 0.7: a fourth block.
        for added in ["input_norm", "stain_input", "fourth_block"] {
            fields.entry(added).or_insert(serde_json::Value::Bool(false));
        }
    }
}

/// Three conv blocks with 2x max-pooling between them, global average pooling
/// and a linear head giving one mitosis logit per crop.
#[derive(Module, Debug)]
pub struct PatchClassifier {
    block1: ConvBlock,
    block2: ConvBlock,
    block3: ConvBlock,
    /// Present when the config asks for [`PatchClassifierConfig::fourth_block`].
    block4: Option<ConvBlock>,
    pool: MaxPool2d,
    global_pool: AdaptiveAvgPool2d,
    head: Linear,
    input_norm: bool,
    stain_input: bool,
}

/// Transmittance floor before the logarithm: a black pixel is 1/255 of full light.
const MIN_TRANSMITTANCE: f32 = 1.0 / 255.0;

/// Normalised RGB `[B, 3, H, W]` (see [`crate::data::image_to_chw`]) ->
/// stain concentrations `[B, 3 (H, E, DAB), H, W]`.
fn stain_concentrations(x: Tensor<4>) -> Tensor<4> {
    let optical_density: Vec<Tensor<4>> = (0..3)
        .map(|c| {
            let intensity = x.clone().narrow(1, c, 1) * CHANNEL_STD[c] + CHANNEL_MEAN[c];
            intensity.clamp_min(MIN_TRANSMITTANCE).log().neg()
        })
        .collect();
    let m = hed_from_rgb_matrix();
    let stains = (0..3)
        .map(|k| {
            optical_density[0].clone() * m[0][k] as f32
                + optical_density[1].clone() * m[1][k] as f32
                + optical_density[2].clone() * m[2][k] as f32
        })
        .collect();
    Tensor::cat(stains, 1)
}

/// Per-crop, per-channel standardisation of `[B, C, H, W]`.
fn standardise(x: Tensor<4>) -> Tensor<4> {
    let mean = x.clone().mean_dim(3).mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(3).mean_dim(2);
    centred / (var + 1e-3).sqrt()
}

impl PatchClassifierConfig {
    /// A freshly initialised classifier on `device`.
    pub fn init(&self, device: &Device) -> PatchClassifier {
        let c = self.base_channels.max(1);
        PatchClassifier {
            block1: ConvBlock::new(3, c, self.norm_groups, device),
            block2: ConvBlock::new(c, 2 * c, self.norm_groups, device),
            block3: ConvBlock::new(2 * c, 4 * c, self.norm_groups, device),
            block4: self.fourth_block.then(|| ConvBlock::new(4 * c, 8 * c, self.norm_groups, device)),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            global_pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(if self.fourth_block { 8 * c } else { 4 * c }, 1).init(device),
            input_norm: self.input_norm,
            stain_input: self.stain_input,
        }
    }
}

impl PatchClassifier {
    /// What the first conv block reads: the crops in stain or RGB space,
    /// standardised or not, as configured.
    fn input_features(&self, crops: Tensor<4>) -> Tensor<4> {
        let crops = if self.stain_input { stain_concentrations(crops) } else { crops };
        if self.input_norm { standardise(crops) } else { crops }
    }

    /// Crops `[B, 3, S, S]` (normalised, see [`crate::data::image_to_chw`]) ->
    /// logits `[B, 1]`. Any `S >= 4` works (`S >= 8` with the fourth block);
    /// the weights expect the config's size.
    pub fn forward(&self, crops: Tensor<4>) -> Tensor<2> {
        let x = self.block1.forward(self.input_features(crops));
        let x = self.block2.forward(self.pool.forward(x));
        let mut x = self.block3.forward(self.pool.forward(x));
        if let Some(block4) = &self.block4 {
            x = block4.forward(self.pool.forward(x));
        }
        let [batch, channels, _, _] = x.dims();
        let x = self.global_pool.forward(x).reshape([batch, channels]);
        self.head.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_gives_one_logit_per_crop() {
        let device = Device::flex();
        let model = PatchClassifierConfig::new().init(&device);
        assert_eq!(model.forward(Tensor::zeros([3, 3, 64, 64], &device)).dims(), [3, 1]);
        let small = PatchClassifierConfig::new().with_crop_size(16).with_base_channels(4).init(&device);
        assert_eq!(small.forward(Tensor::zeros([1, 3, 16, 16], &device)).dims(), [1, 1]);
        let deep = PatchClassifierConfig::new().with_fourth_block(true).init(&device);
        assert_eq!(deep.forward(Tensor::zeros([2, 3, 64, 64], &device)).dims(), [2, 1]);
        assert!(deep.num_params() > model.num_params());
    }

    #[test]
    fn the_fourth_block_is_part_of_the_weights() {
        let device = Device::flex();
        let three = PatchClassifierConfig::new().with_base_channels(4).init(&device);
        let four = PatchClassifierConfig::new().with_base_channels(4).with_fourth_block(true).init(&device);
        let bytes = crate::weights::weights_to_bytes(&four).unwrap();
        // Round trip: the same logits after loading into a fresh four-block network.
        let fresh = PatchClassifierConfig::new().with_base_channels(4).with_fourth_block(true).init(&device);
        let loaded = crate::weights::load_weights_from_bytes(fresh, &bytes, "four").unwrap();
        let x: Tensor<4> = Tensor::random([2, 3, 32, 32], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
        let gap: f32 = (four.forward(x.clone()) - loaded.forward(x)).abs().max().into_scalar();
        assert!(gap < 1e-6, "logits changed by {gap} after a round trip");
        // Weights of one shape never load silently into the other.
        let three_bytes = crate::weights::weights_to_bytes(&three).unwrap();
        assert!(
            crate::weights::load_weights_from_bytes(
                PatchClassifierConfig::new().with_base_channels(4).with_fourth_block(true).init(&device),
                &three_bytes,
                "three"
            )
            .is_err()
        );
        assert!(
            crate::weights::load_weights_from_bytes(
                PatchClassifierConfig::new().with_base_channels(4).init(&device),
                &bytes,
                "four"
            )
            .is_err()
        );
    }

    #[test]
    fn input_norm_ignores_brightness_and_contrast_per_channel() {
        let device = Device::flex();
        let crops: Tensor<4> = Tensor::random([2, 3, 16, 16], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
        // The same crops, each channel scaled and shifted differently.
        let gain = Tensor::<1>::from_floats([0.5, 2.0, 1.3], &device).reshape([1, 3, 1, 1]);
        let offset = Tensor::<1>::from_floats([0.4, -0.7, 0.1], &device).reshape([1, 3, 1, 1]);
        let shifted = crops.clone() * gain + offset;
        let normed = PatchClassifierConfig::new().with_crop_size(16).with_input_norm(true).init(&device);
        let a: Vec<f32> = normed.forward(crops.clone()).into_data().try_to_vec::<f32>().unwrap();
        let b: Vec<f32> = normed.forward(shifted.clone()).into_data().try_to_vec::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
        // Without it the network sees the change.
        let plain = PatchClassifierConfig::new().with_crop_size(16).init(&device);
        let a: Vec<f32> = plain.forward(crops).into_data().try_to_vec::<f32>().unwrap();
        let b: Vec<f32> = plain.forward(shifted).into_data().try_to_vec::<f32>().unwrap();
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3));
    }

    #[test]
    fn stain_input_ignores_how_strongly_each_stain_took() {
        use crate::augment::hed_jitter;
        use crate::data::images_to_tensor;
        let device = Device::flex();
        // A crop with haematoxylin and eosin structure, and the same crop with
        // its haematoxylin 30% stronger and its eosin 25% weaker.
        let crop = image::RgbImage::from_fn(16, 16, |x, y| {
            let h = if (x as i32 - 8).pow(2) + (y as i32 - 8).pow(2) < 20 { 60 } else { 170 };
            image::Rgb([h + (x * 3) as u8, 120 + (y * 4) as u8, 200 - (x as u8)])
        });
        let restained = hed_jitter(&crop, [1.3, 0.75, 1.0], [0.0; 3]);
        let batch = images_to_tensor(&[crop, restained], &device).unwrap();
        // Largest difference between what the network reads of the two crops.
        let gap = |config: PatchClassifierConfig| -> f32 {
            let model = config.with_crop_size(16).with_input_norm(true).init(&device);
            let features = model.input_features(batch.clone());
            let [original, restained] = [0, 1].map(|i| features.clone().narrow(0, i, 1));
            (original - restained).abs().max().into_scalar()
        };
        let stain_gap = gap(PatchClassifierConfig::new().with_stain_input(true));
        let rgb_gap = gap(PatchClassifierConfig::new());
        // Only 8-bit rounding separates the two in stain space; in RGB the
        // restaining is not a per-channel gain and shift, so it shows.
        // (Measured: 0.05 against 2.7, in units of a channel's spread.)
        assert!(stain_gap < 0.15, "stain input: {stain_gap}");
        assert!(rgb_gap > 1.0, "rgb input: {rgb_gap}");
    }
}
