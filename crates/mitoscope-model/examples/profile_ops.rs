//! Times the stage-1 building blocks on burn's CPU backend: plain 3x3
//! convolutions against the channel-sliced ones inference uses
//! (`layers::conv3x3_in_slices`), GroupNorm, and the whole candidate net.
//!
//! ```text
//! cargo run --release -p mitoscope-model --example profile_ops [-- SIDE]
//! ```
//!
//! SIDE (default 576) is the side of the square input in model pixels.

use std::time::Instant;

use burn::nn::conv::Conv2dConfig;
use burn::nn::{GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use mitoscope_model::CandidateNetConfig;

/// Mean milliseconds of `f` over 5 runs, after one warm-up run.
fn time<F: FnMut() -> Tensor<4>>(name: &str, mut f: F) {
    let _ = f().into_data();
    let started = Instant::now();
    let runs = 5;
    for _ in 0..runs {
        let _ = f().into_data();
    }
    println!("{name:>28}: {:7.1} ms", started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs));
}

fn main() {
    let side: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(576);
    let device = Device::flex();
    let input = |c: usize| Tensor::<4>::random([1, c, side, side], Distribution::Default, &device);
    println!("{side}x{side} input, {} rayon threads", rayon::current_num_threads());
    // Every 3x3 convolution of the default candidate net (8 base channels), at its resolution.
    for (c_in, c_out, scale) in [
        (3, 8, 1),
        (8, 8, 1),
        (16, 8, 1),
        (8, 16, 2),
        (16, 16, 2),
        (32, 8, 2),
        (16, 32, 4),
        (32, 32, 4),
        (64, 16, 4),
        (16, 16, 4),
        (32, 32, 8),
    ] {
        let conv = Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
        let s = side / scale;
        let x = Tensor::<4>::random([1, c_in, s, s], Distribution::Default, &device);
        time(&format!("conv {c_in}->{c_out} at 1/{scale}"), || conv.forward(x.clone()));
        time(&format!("conv {c_in}->{c_out} at 1/{scale}, sliced"), || {
            mitoscope_model::conv3x3_in_slices(&conv, x.clone())
        });
    }
    let norm = GroupNormConfig::new(4, 8).init(&device);
    let x8 = input(8);
    time("group norm, 8 channels", || norm.forward(x8.clone()));
    let net = CandidateNetConfig::new().init(&device);
    let x3 = input(3);
    time("candidate net", || net.forward(x3.clone()));
    time("candidate net, sliced", || net.forward_sliced(x3.clone()));
    // Stage 2: 64 crops of 64x64 (one pass of `classify_crops`).
    let classifier = mitoscope_model::PatchClassifierConfig::new().with_input_norm(true).init(&device);
    let crops = Tensor::<4>::random([64, 3, 64, 64], Distribution::Default, &device);
    time("classifier, 64 crops", || classifier.forward(crops.clone()).reshape([64, 1, 1, 1]));
    for (c_in, c_out, s) in [(3, 8, 64), (8, 8, 64), (8, 16, 32), (16, 16, 32), (16, 32, 16), (32, 32, 16)] {
        let conv = Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
        let x = Tensor::<4>::random([64, c_in, s, s], Distribution::Default, &device);
        time(&format!("64 crops: conv {c_in}->{c_out} at {s}"), || conv.forward(x.clone()));
        time(&format!("64 crops: conv {c_in}->{c_out} at {s}, sliced"), || {
            mitoscope_model::conv3x3_in_slices(&conv, x.clone())
        });
    }
    for (c, s) in [(8, 64), (16, 32), (32, 16)] {
        let norm = GroupNormConfig::new(4, c).init(&device);
        let x = Tensor::<4>::random([64, c, s, s], Distribution::Default, &device);
        time(&format!("64 crops: group norm {c} at {s}"), || norm.forward(x.clone()));
    }
}
