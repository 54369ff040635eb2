//! Stage 1: [`CandidateNet`], a small fully-convolutional encoder-decoder that
//! turns an RGB tile into a per-pixel mitosis heat map, plus the plain-Rust
//! post-processing around it: training targets ([`disc_target`],
//! [`mask_target`]) and peak extraction ([`peaks`]).

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;
use image::GrayImage;

use crate::layers::ConvBlock;

/// Number of 2x downsamplings; inputs must have sides divisible by `2^DEPTH`.
pub const DEPTH: u32 = 3;

/// The side multiple [`CandidateNet::forward`] needs (8);
/// [`crate::infer::candidate_map`] pads any image up to it.
pub const SIDE_MULTIPLE: usize = 1 << DEPTH;

/// Shape and input resolution of a [`CandidateNet`].
#[derive(Config, Debug, PartialEq)]
pub struct CandidateNetConfig {
    /// Channels at full resolution; the encoder doubles them at each of the
    /// first two downsamplings (8 -> 16 -> 32, bottleneck 32).
    #[config(default = 8)]
    pub base_channels: usize,
    /// GroupNorm groups (reduced to a divisor of each block's width).
    #[config(default = 4)]
    pub norm_groups: usize,
    /// Microns per pixel the tile is resampled to before the network (half of
    /// the usual 0.25 µm/px scan resolution: 4x fewer pixels, figures still
    /// ~10-30 px wide).
    #[config(default = 0.5)]
    pub mpp: f64,
}

/// U-Net-like encoder-decoder, 3 levels down and 3 up with skip connections.
#[derive(Module, Debug)]
pub struct CandidateNet {
    enc0: ConvBlock,
    enc1: ConvBlock,
    enc2: ConvBlock,
    bottleneck: ConvBlock,
    up2: ConvTranspose2d,
    dec2: ConvBlock,
    up1: ConvTranspose2d,
    dec1: ConvBlock,
    up0: ConvTranspose2d,
    dec0: ConvBlock,
    head: Conv2d,
    pool: MaxPool2d,
}

impl CandidateNetConfig {
    /// A freshly initialised network on `device`.
    pub fn init(&self, device: &Device) -> CandidateNet {
        let c = self.base_channels.max(1);
        let g = self.norm_groups;
        // Kernel 2, stride 2: exactly doubles the side, so decoder and skip align.
        let up = |ch: usize| ConvTranspose2dConfig::new([ch, ch], [2, 2]).with_stride([2, 2]).init(device);
        CandidateNet {
            enc0: ConvBlock::new(3, c, g, device),
            enc1: ConvBlock::new(c, 2 * c, g, device),
            enc2: ConvBlock::new(2 * c, 4 * c, g, device),
            bottleneck: ConvBlock::new(4 * c, 4 * c, g, device),
            up2: up(4 * c),
            dec2: ConvBlock::new(8 * c, 2 * c, g, device),
            up1: up(2 * c),
            dec1: ConvBlock::new(4 * c, c, g, device),
            up0: up(c),
            dec0: ConvBlock::new(2 * c, c, g, device),
            head: Conv2dConfig::new([c, 1], [1, 1]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }
}

impl CandidateNet {
    /// Tiles `[B, 3, H, W]` (normalised; `H`, `W` multiples of [`SIDE_MULTIPLE`])
    /// -> per-pixel mitosis logits `[B, 1, H, W]`.
    pub fn forward(&self, tiles: Tensor<4>) -> Tensor<4> {
        self.forward_with(tiles, ConvBlock::forward)
    }

    /// [`Self::forward`] for inference on the CPU backend: the same logits
    /// (to float rounding), with the narrow 3x3 convolutions computed in
    /// channel slices that burn-flex runs faster (see
    /// [`crate::layers::conv3x3_in_slices`]; ~25% less time for the whole net).
    pub fn forward_sliced(&self, tiles: Tensor<4>) -> Tensor<4> {
        self.forward_with(tiles, ConvBlock::forward_sliced)
    }

    fn forward_with(&self, tiles: Tensor<4>, block: impl Fn(&ConvBlock, Tensor<4>) -> Tensor<4>) -> Tensor<4> {
        let e0 = block(&self.enc0, tiles); // [B, c, H, W]
        let e1 = block(&self.enc1, self.pool.forward(e0.clone())); // [B, 2c, H/2, W/2]
        let e2 = block(&self.enc2, self.pool.forward(e1.clone())); // [B, 4c, H/4, W/4]
        let b = block(&self.bottleneck, self.pool.forward(e2.clone())); // [B, 4c, H/8, W/8]
        let d2 = block(&self.dec2, Tensor::cat(vec![self.up2.forward(b), e2], 1)); // [B, 2c, H/4, W/4]
        let d1 = block(&self.dec1, Tensor::cat(vec![self.up1.forward(d2), e1], 1)); // [B, c, H/2, W/2]
        let d0 = block(&self.dec0, Tensor::cat(vec![self.up0.forward(d1), e0], 1)); // [B, c, H, W]
        self.head.forward(d0)
    }
}

/// A single-channel map of values (probabilities or targets), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbabilityMap {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width` values, row by row.
    pub values: Vec<f32>,
}

impl ProbabilityMap {
    /// A map of zeros.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self { width, height, values: vec![0.0; width * height] }
    }

    /// Value at column `x`, row `y` (None outside).
    pub fn get(&self, x: usize, y: usize) -> Option<f32> {
        (x < self.width && y < self.height).then(|| self.values[y * self.width + x])
    }
}

/// A local maximum of a [`ProbabilityMap`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Column, in map pixels.
    pub x: usize,
    /// Row, in map pixels.
    pub y: usize,
    /// Map value there.
    pub score: f32,
}

/// Local maxima of `map` at or above `threshold`, at least `min_distance`
/// pixels apart (Euclidean), strongest first.
///
/// A pixel is a candidate when no 8-neighbour is larger; candidates are then
/// accepted greedily by score (ties broken top-left first, so the result is
/// deterministic), dropping any within `min_distance` of an accepted peak. This
/// also collapses flat plateaus to one peak. NaN values are never peaks.
pub fn peaks(map: &ProbabilityMap, threshold: f32, min_distance: f32) -> Vec<Peak> {
    let (w, h) = (map.width, map.height);
    if map.values.len() != w * h {
        return Vec::new();
    }
    let mut candidates = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let v = map.values[y * w + x];
            if v.is_nan() || v < threshold {
                continue;
            }
            let mut is_max = true;
            'neighbours: for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    if map.values[ny * w + nx] > v {
                        is_max = false;
                        break 'neighbours;
                    }
                }
            }
            if is_max {
                candidates.push(Peak { x, y, score: v });
            }
        }
    }
    // Stable sort keeps row-major order among equal scores.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let min_d2 = min_distance.max(0.0).powi(2);
    let mut accepted: Vec<Peak> = Vec::new();
    for c in candidates {
        let far = accepted.iter().all(|p| {
            let (dx, dy) = (p.x as f32 - c.x as f32, p.y as f32 - c.y as f32);
            dx * dx + dy * dy >= min_d2
        });
        if far {
            accepted.push(c);
        }
    }
    accepted
}

/// The pixels of the 4-connected blob of map values `>= level` that holds
/// `(x, y)`, within `radius` pixels of it, in the order a depth-first fill
/// visits them (`(x, y)` first, whatever its value). Empty if `(x, y)` is off
/// the map. NaN values never join (`NaN >= level` is false).
pub fn blob_pixels(map: &ProbabilityMap, x: usize, y: usize, level: f32, radius: f64) -> Vec<(usize, usize)> {
    let (w, h) = (map.width, map.height);
    if map.values.len() != w * h || x >= w || y >= h {
        return Vec::new();
    }
    let r2 = radius.max(0.0).powi(2);
    // Visited pixels in the window the radius allows (not the whole map: this
    // runs once per candidate).
    let reach = (radius.max(0.0).floor() as usize).min(w.max(h));
    let (x0, y0) = (x.saturating_sub(reach), y.saturating_sub(reach));
    let side = 2 * reach + 1;
    let mut seen = vec![false; side * side];
    let at = |px: usize, py: usize| (py - y0) * side + (px - x0);
    let mut stack = vec![(x, y)];
    seen[at(x, y)] = true;
    let mut pixels = Vec::new();
    while let Some((px, py)) = stack.pop() {
        pixels.push((px, py));
        let neighbours = [(px.wrapping_sub(1), py), (px + 1, py), (px, py.wrapping_sub(1)), (px, py + 1)];
        for (nx, ny) in neighbours {
            let (dx, dy) = (nx as f64 - x as f64, ny as f64 - y as f64);
            // Inside the radius means inside the window, so `at` is in range.
            if nx >= w || ny >= h || dx * dx + dy * dy > r2 || seen[at(nx, ny)] {
                continue;
            }
            if map.values[ny * w + nx] >= level {
                seen[at(nx, ny)] = true;
                stack.push((nx, ny));
            }
        }
    }
    pixels
}

/// The centre of `peak`'s blob: the mean position of the pixels connected to
/// it (4-neighbours) at or above half its value and within `radius` pixels
/// ([`blob_pixels`]), each weighted by how far it rises above that half.
///
/// The heat map learns a disc around each figure, so its maximum can sit
/// anywhere on the disc's flat top; the blob's weighted centre is the map's
/// estimate of the figure's centre, which is where stage 2 should look. Falls
/// back to the peak itself where the blob has no weight (a NaN or flat map).
pub fn blob_centre(map: &ProbabilityMap, peak: &Peak, radius: f32) -> (f64, f64) {
    let fallback = (peak.x as f64, peak.y as f64);
    if !peak.score.is_finite() {
        return fallback;
    }
    let level = peak.score / 2.0;
    let (mut sum_w, mut sum_x, mut sum_y) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in blob_pixels(map, peak.x, peak.y, level, f64::from(radius)) {
        let weight = f64::from(map.values[y * map.width + x] - level);
        sum_w += weight;
        sum_x += weight * x as f64;
        sum_y += weight * y as f64;
    }
    if sum_w > 0.0 && sum_w.is_finite() { (sum_x / sum_w, sum_y / sum_w) } else { fallback }
}

/// Training target from centroids: 1 inside a disc of `radius` pixels around
/// each `(x, y)`, 0 elsewhere (used where only point labels exist).
pub fn disc_target(width: usize, height: usize, centroids: &[(f64, f64)], radius: f64) -> ProbabilityMap {
    let mut map = ProbabilityMap::zeros(width, height);
    let r2 = radius * radius;
    for &(cx, cy) in centroids {
        if !(cx.is_finite() && cy.is_finite()) {
            continue;
        }
        let x0 = (cx - radius).floor().max(0.0) as usize;
        let y0 = (cy - radius).floor().max(0.0) as usize;
        let x1 = ((cx + radius).ceil().max(0.0) as usize).min(width.saturating_sub(1));
        let y1 = ((cy + radius).ceil().max(0.0) as usize).min(height.saturating_sub(1));
        for y in y0..=y1.max(y0) {
            for x in x0..=x1.max(x0) {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                if x < width && y < height && dx * dx + dy * dy <= r2 {
                    map.values[y * width + x] = 1.0;
                }
            }
        }
    }
    map
}

/// Training target from a binary mask (any non-zero pixel is mitosis), as
/// `mitoscope_imaging::read_mask` returns it.
pub fn mask_target(mask: &GrayImage) -> ProbabilityMap {
    ProbabilityMap {
        width: mask.width() as usize,
        height: mask.height() as usize,
        values: mask.as_raw().iter().map(|&v| if v > 0 { 1.0 } else { 0.0 }).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_keeps_the_tile_size() {
        let device = Device::flex();
        let net = CandidateNetConfig::new().with_base_channels(4).init(&device);
        let out = net.forward(Tensor::zeros([2, 3, 16, 24], &device));
        assert_eq!(out.dims(), [2, 1, 16, 24]);
    }

    #[test]
    fn sliced_forward_gives_the_same_logits() {
        let device = Device::flex();
        let net = CandidateNetConfig::new().init(&device);
        let x = Tensor::<4>::random([1, 3, 40, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let diff: f32 = (net.forward(x.clone()) - net.forward_sliced(x)).abs().max().into_scalar();
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn blob_centre_is_the_weighted_centre_of_the_peaks_blob() {
        // A flat-topped disc centred at (10.5, 7): its maximum is the first
        // pixel of the top in row order, its blob centre the disc's centre.
        let mut map = ProbabilityMap::zeros(24, 16);
        for y in 0..16 {
            for x in 0..24 {
                let d = ((x as f64 - 10.5).powi(2) + (y as f64 - 7.0).powi(2)).sqrt();
                map.values[y * 24 + x] = if d <= 2.0 {
                    0.9
                } else if d <= 4.0 {
                    0.6
                } else {
                    0.0
                };
            }
        }
        // A second, stronger blob 9 px away stays out: it is not connected.
        map.values[7 * 24 + 20] = 1.0;
        let peak = peaks(&map, 0.5, 6.0).into_iter().find(|p| p.x < 16).unwrap();
        assert_eq!((peak.x, peak.y), (9, 6));
        let (cx, cy) = blob_centre(&map, &peak, 8.0);
        assert!((cx - 10.5).abs() < 1e-9 && (cy - 7.0).abs() < 1e-9, "({cx}, {cy})");
        // The radius bounds the blob: within 0.5 px the peak is alone.
        assert_eq!(blob_centre(&map, &peak, 0.5), (9.0, 6.0));
        // A lone peak is its own centre, a NaN neighbour is left out, and a
        // peak off the map falls back to itself.
        let mut lone = ProbabilityMap::zeros(5, 5);
        lone.values[12] = 0.8;
        let p = Peak { x: 2, y: 2, score: 0.8 };
        assert_eq!(blob_centre(&lone, &p, 3.0), (2.0, 2.0));
        lone.values[13] = f32::NAN;
        assert_eq!(blob_centre(&lone, &p, 3.0), (2.0, 2.0));
        assert_eq!(blob_centre(&lone, &Peak { x: 9, y: 0, score: 0.8 }, 3.0), (9.0, 0.0));
    }

    #[test]
    fn peaks_on_a_hand_made_map() {
        let mut map = ProbabilityMap::zeros(10, 8);
        let mut set = |x: usize, y: usize, v: f32| map.values[y * 10 + x] = v;
        set(2, 2, 0.9);
        set(3, 2, 0.8); // shoulder of the first peak, not a maximum
        set(4, 3, 0.85); // a local maximum, but within 3 px of (2, 2)
        set(8, 6, 0.7);
        set(0, 7, 0.3); // below threshold
        set(6, 0, 0.6);
        set(7, 0, 0.6); // plateau: one peak only
        let found = peaks(&map, 0.5, 3.0);
        let xy: Vec<_> = found.iter().map(|p| (p.x, p.y)).collect();
        assert_eq!(xy, vec![(2, 2), (8, 6), (6, 0)]);
        assert_eq!(found[0].score, 0.9);
        // Without a distance constraint the close local maximum survives.
        assert_eq!(peaks(&map, 0.5, 0.0).len(), 5);
        assert!(peaks(&ProbabilityMap::zeros(0, 0), 0.5, 1.0).is_empty());
    }

    #[test]
    fn disc_and_mask_targets() {
        let t = disc_target(9, 9, &[(4.0, 4.0), (100.0, 100.0)], 2.0);
        assert_eq!(t.get(4, 4), Some(1.0));
        assert_eq!(t.get(6, 4), Some(1.0));
        assert_eq!(t.get(6, 6), Some(0.0)); // sqrt(8) > 2
        assert_eq!(t.values.iter().filter(|&&v| v > 0.0).count(), 13);
        let mask = GrayImage::from_raw(3, 1, vec![0, 255, 7]).unwrap();
        assert_eq!(mask_target(&mask).values, vec![0.0, 1.0, 1.0]);
    }
}
