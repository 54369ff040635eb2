//! Synthetic data shared by the unit tests.

use image::{Rgb, RgbImage};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::data::LabelledCrop;

/// A noisy pink (eosin-like) crop; positives also carry a dark purple blob in
/// the middle, so the classes are separable by a small CNN in a few steps.
pub fn synthetic_crop(size: u32, positive: bool, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = (f64::from(size) - 1.0) / 2.0;
    let r2 = (f64::from(size) / 5.0).powi(2);
    RgbImage::from_fn(size, size, |x, y| {
        let noise: i16 = rng.random_range(-20..=20);
        let inside = (f64::from(x) - c).powi(2) + (f64::from(y) - c).powi(2) <= r2;
        let base: [i16; 3] = if positive && inside { [70, 40, 110] } else { [230, 170, 210] };
        Rgb(base.map(|v| (v + noise).clamp(0, 255) as u8))
    })
}

/// `n` crops alternating negative / positive.
pub fn synthetic_crops(n: usize, size: u32, seed: u64) -> Vec<LabelledCrop> {
    (0..n)
        .map(|i| {
            let positive = i % 2 == 1;
            LabelledCrop {
                image: synthetic_crop(size, positive, seed.wrapping_add(i as u64)),
                positive,
                origin: format!("synthetic-{i}"),
            }
        })
        .collect()
}

/// A random RGB image (every value 0-255 likely present).
pub fn random_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    RgbImage::from_fn(w, h, |_, _| Rgb([rng.random(), rng.random(), rng.random()]))
}
