//! Building blocks shared by both networks.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

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
        self.forward_with(x, |conv, x| conv.forward(x))
    }

    /// [`Self::forward`] with the convolutions run as [`conv3x3_in_slices`]:
    /// the same result (to float rounding), faster on the CPU backend.
    pub fn forward_sliced(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, conv3x3_in_slices)
    }

    fn forward_with(&self, x: Tensor<4>, conv: impl Fn(&Conv2d, Tensor<4>) -> Tensor<4>) -> Tensor<4> {
        let x = relu(self.norm1.forward(conv(&self.conv1, x)));
        relu(self.norm2.forward(conv(&self.conv2, x)))
    }
}

/// Most input channels per slice in [`conv3x3_in_slices`]; burn-flex 0.22
/// (`SMALL_CHANNEL_IN_THRESHOLD`) takes its direct path up to this.
const SLICE_IN_CHANNELS: usize = 4;
/// Layers wider than this (out) or [`SLICED_MAX_IN`] (in) stay on gemm, which
/// is faster for them (measured below).
const SLICED_MAX_OUT: usize = 16;
/// See [`SLICED_MAX_OUT`].
const SLICED_MAX_IN: usize = 32;

/// A stride-1, `Same`-padded 3x3 `conv`; when it has at most 16 output and 32
/// input channels, computed as a sum over slices of at most 4 input channels.
///
/// Why: burn-flex runs convolutions with <= 4 input and <= 16 output channels
/// through a direct kernel and all others through tiled im2col + gemm, which is
/// slow when there are few output channels. `examples/profile_ops.rs`, 576² at
/// 2 threads: 16->8 at full size 72 -> 42 ms sliced, 32->8 at half size 32 -> 18 ms,
/// 8->8 70 -> 61 ms; but 16->32 at quarter size 8 -> 11 ms and 32->32 13 -> 23 ms,
/// hence the width limits. Convolution is linear in the input channels, so
/// the sum of the sliced convolutions equals the full one (to float rounding).
/// Only for inference: training keeps the plain layer and its backward pass.
pub fn conv3x3_in_slices(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let weight = conv.weight.val();
    let [c_out, c_in, kh, kw] = weight.dims();
    // Already direct (<= 4 in), or wide enough that gemm wins.
    if c_in <= SLICE_IN_CHANNELS || c_out > SLICED_MAX_OUT || c_in > SLICED_MAX_IN {
        return conv.forward(x);
    }
    let options = ConvOptions::new([1, 1], [kh / 2, kw / 2], [1, 1], 1);
    let mut sum: Option<Tensor<4>> = None;
    for i0 in (0..c_in).step_by(SLICE_IN_CHANNELS) {
        let i1 = (i0 + SLICE_IN_CHANNELS).min(c_in);
        let input = x.clone().narrow(1, i0, i1 - i0);
        let part = conv2d(input, weight.clone().narrow(1, i0, i1 - i0), None, options.clone());
        sum = Some(match sum {
            None => part,
            Some(acc) => acc + part,
        });
    }
    let out = sum.expect("at least one input channel");
    match &conv.bias {
        Some(bias) => out + bias.val().reshape([1, c_out, 1, 1]),
        None => out,
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn sliced_convolution_equals_the_plain_one() {
        let device = Device::flex();
        // Widths on both sides of the slice limits, odd ones included.
        for (c_in, c_out) in [(3, 8), (8, 8), (7, 13), (16, 16), (30, 5), (16, 32), (64, 16)] {
            let conv = Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
            let x = Tensor::<4>::random([2, c_in, 13, 10], Distribution::Normal(0.0, 1.0), &device);
            let plain = conv.forward(x.clone());
            let sliced = conv3x3_in_slices(&conv, x);
            assert_eq!(plain.dims(), sliced.dims());
            let diff: f32 = (plain - sliced).abs().max().into_scalar();
            assert!(diff < 1e-4, "{c_in}->{c_out}: max difference {diff}");
        }
    }

    #[test]
    fn sliced_block_equals_the_plain_one() {
        let device = Device::flex();
        let block = ConvBlock::new(16, 8, 4, &device);
        let x = Tensor::<4>::random([1, 16, 24, 24], Distribution::Normal(0.0, 1.0), &device);
        let diff: f32 = (block.forward(x.clone()) - block.forward_sliced(x)).abs().max().into_scalar();
        assert!(diff < 1e-4, "max difference {diff}");
    }
}
