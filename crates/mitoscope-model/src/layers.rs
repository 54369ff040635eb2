//! Building blocks shared by both networks.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Two `3x3 conv -> GroupNorm -> ReLU` steps at constant resolution.
///
/// GroupNorm rather than BatchNorm: it has no running statistics, so it behaves
/// the same for the tiny batches a 2-core CPU trains with, in training and in
/// inference, and a checkpoint is just the weights.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv1: Conv2d,
    norm1: GroupNorm,
    conv2: Conv2d,
    norm2: GroupNorm,
}

impl ConvBlock {
    /// A block mapping `in_channels` to `out_channels`; `norm_groups` is reduced
    /// to a divisor of `out_channels` so any width works.
    pub fn new(in_channels: usize, out_channels: usize, norm_groups: usize, device: &Device) -> Self {
        let groups = gcd(norm_groups.max(1), out_channels);
        let conv = |i, o| Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Same).init(device);
        Self {
            conv1: conv(in_channels, out_channels),
            norm1: GroupNormConfig::new(groups, out_channels).init(device),
            conv2: conv(out_channels, out_channels),
            norm2: GroupNormConfig::new(groups, out_channels).init(device),
        }
    }

    /// `[B, in, H, W] -> [B, out, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = relu(self.norm1.forward(self.conv1.forward(x)));
        relu(self.norm2.forward(self.conv2.forward(x)))
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
