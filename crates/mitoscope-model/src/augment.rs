//! Training-time augmentation of RGB crops: stain jitter in HED space, flips,
//! 90° rotations, scale jitter, a shift of the centre, a small Gaussian blur
//! and JPEG recompression.
//!
//! Everything is driven by the caller's RNG, so a seeded `ChaCha8Rng` gives the
//! same augmented crop on every run (and after a resume).
//!
//! Stain jitter follows Tellez et al. (2018): convert to optical density,
//! deconvolve into haematoxylin / eosin / DAB concentrations with the
//! Ruifrok–Johnston (2001) stain vectors, scale and shift each concentration,
//! and recompose. With zero jitter the round trip is the identity up to rounding.
//!
//! Stain rotation goes one step further: it recomposes with haematoxylin and
//! eosin vectors each turned by a small random angle, so the hue of each stain
//! and the angle between them vary, as they do between scanners and labs (a
//! scale and shift of the concentrations alone keep every hue).

use burn::prelude::*;
use image::{Rgb, RgbImage};
use rand::{Rng, RngExt};

/// How strongly to augment; [`AugmentConfig::none`] turns everything off.
#[derive(Config, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Random horizontal and vertical flips (each with probability 1/2).
    #[config(default = true)]
    pub flips: bool,
    /// Random rotation by 0, 90, 180 or 270 degrees (square crops only).
    #[config(default = true)]
    pub rotate90: bool,
    /// Each stain concentration is multiplied by a factor drawn from
    /// `[1 - hed_scale, 1 + hed_scale]`.
    #[config(default = 0.05)]
    pub hed_scale: f32,
    /// ... and shifted by an offset drawn from `[-hed_shift, hed_shift]`
    /// (optical-density units).
    #[config(default = 0.02)]
    pub hed_shift: f32,
    /// Largest angle, in degrees, by which the haematoxylin and the eosin
    /// optical-density vectors are each turned (about a random axis
    /// perpendicular to the vector) before recomposing; at most 45°. 0 (the default, and
    /// what configs saved before it existed mean) draws nothing, so the
    /// random stream of older configs is unchanged.
    #[config(default = 0.0)]
    pub stain_rotation_deg: f32,
    /// Probability of blurring a crop.
    #[config(default = 0.2)]
    pub blur_probability: f32,
    /// Largest Gaussian blur sigma in pixels (drawn uniformly from `[0.1, max]`).
    #[config(default = 1.0)]
    pub blur_sigma_max: f32,
    /// Zoom factor drawn from `[1 - scale_jitter, 1 + scale_jitter]`, about the
    /// crop centre (mimics scanner-to-scanner magnification differences).
    #[config(default = 0.1)]
    pub scale_jitter: f32,
    /// Largest shift of the crop's content along each axis, in pixels (drawn
    /// uniformly from `[-shift_px, shift_px]` per axis; bilinear, edges
    /// clamped). Training crops are centred exactly on their annotations, while
    /// at inference a crop is centred on a stage-1 peak, which lies a little off
    /// the figure's centre; the shift teaches the classifier that offset. 0
    /// (the default, and what configs saved before it existed mean) draws
    /// nothing, so the random stream of older configs is unchanged.
    #[config(default = 0.0)]
    pub shift_px: f32,
    /// Probability of re-encoding a crop as JPEG (quality drawn uniformly from
    /// `jpeg_quality`). Scanner-A HPFs are JPEG re-encodes while the
    /// off-domain figure crops are PNGs, so block artefacts could be a label
    /// cue. Off by default, so that older configs draw the same crops (and the
    /// default recipe measured it without a gain; see its `RecipeConfig`).
    #[config(default = 0.0)]
    pub jpeg_probability: f32,
    /// Smallest and largest JPEG quality (1-100).
    #[config(default = "(60, 95)")]
    pub jpeg_quality: (u8, u8),
}

impl AugmentConfig {
    /// No augmentation at all: [`augment`] returns the crop unchanged.
    pub fn none() -> Self {
        Self {
            flips: false,
            rotate90: false,
            hed_scale: 0.0,
            hed_shift: 0.0,
            stain_rotation_deg: 0.0,
            blur_probability: 0.0,
            blur_sigma_max: 0.0,
            scale_jitter: 0.0,
            shift_px: 0.0,
            jpeg_probability: 0.0,
            jpeg_quality: (60, 95),
        }
    }
}

/// One random augmentation of `crop`.
pub fn augment(crop: &RgbImage, config: &AugmentConfig, rng: &mut impl Rng) -> RgbImage {
    let mut img = crop.clone();
    if config.scale_jitter > 0.0 {
        let j = config.scale_jitter.min(0.9);
        let factor = rng.random_range(1.0 - j..=1.0 + j);
        img = scale_about_centre(&img, factor);
    }
    // Drawn only when on, so configs without it keep their random stream.
    if config.shift_px > 0.0 {
        let m = config.shift_px.min(img.width().min(img.height()) as f32 / 4.0);
        let (dx, dy) = (rng.random_range(-m..=m), rng.random_range(-m..=m));
        img = shift(&img, dx, dy);
    }
    if config.flips {
        if rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut img);
        }
        if rng.random_bool(0.5) {
            image::imageops::flip_vertical_in_place(&mut img);
        }
    }
    if config.rotate90 && img.width() == img.height() {
        img = rotate90(&img, rng.random_range(0..4u8));
    }
    if config.hed_scale > 0.0 || config.hed_shift > 0.0 {
        let s = config.hed_scale.abs();
        let b = config.hed_shift.abs();
        let mut scale = [1.0f32; 3];
        let mut shift = [0.0f32; 3];
        for k in 0..3 {
            scale[k] = rng.random_range(1.0 - s..=1.0 + s);
            shift[k] = rng.random_range(-b..=b);
        }
        img = hed_jitter(&img, scale, shift);
    }
    // Drawn only when on, so configs without it keep their random stream.
    if config.stain_rotation_deg > 0.0 {
        let max = config.stain_rotation_deg.min(45.0).to_radians();
        let mut turns = [(0.0f32, 0.0f32); 2];
        for turn in &mut turns {
            *turn = (rng.random_range(-max..=max), rng.random_range(0.0..std::f32::consts::TAU));
        }
        img = stain_rotate(&img, turns);
    }
    if config.blur_probability > 0.0
        && config.blur_sigma_max > 0.1
        && rng.random_bool(f64::from(config.blur_probability.clamp(0.0, 1.0)))
    {
        let sigma = rng.random_range(0.1..=config.blur_sigma_max);
        img = image::imageops::blur(&img, sigma);
    }
    // Drawn only when on, so configs without it keep their random stream.
    if config.jpeg_probability > 0.0 && rng.random_bool(f64::from(config.jpeg_probability.clamp(0.0, 1.0))) {
        let (lo, hi) = config.jpeg_quality;
        let (lo, hi) = (lo.clamp(1, 100), hi.clamp(1, 100));
        let quality = rng.random_range(lo.min(hi)..=hi.max(lo));
        img = jpeg_round_trip(&img, quality);
    }
    img
}

/// `img` encoded as JPEG at `quality` and decoded again. An in-memory encode of
/// a valid RGB buffer cannot fail in practice; if it ever does, the crop is
/// returned unchanged rather than aborting a training run.
pub fn jpeg_round_trip(img: &RgbImage, quality: u8) -> RgbImage {
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    if img.write_with_encoder(encoder).is_err() {
        return img.clone();
    }
    match image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg) {
        Ok(decoded) => decoded.to_rgb8(),
        Err(_) => img.clone(),
    }
}

/// Rotates a crop by `quarter_turns * 90°` clockwise.
pub fn rotate90(img: &RgbImage, quarter_turns: u8) -> RgbImage {
    match quarter_turns % 4 {
        0 => img.clone(),
        1 => image::imageops::rotate90(img),
        2 => image::imageops::rotate180(img),
        _ => image::imageops::rotate270(img),
    }
}

/// Ruifrok–Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical
/// density per RGB channel, before normalisation to unit length.
const RGB_FROM_HED: [[f64; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

/// Floor on intensity / 255 before the logarithm, so black pixels stay finite
/// and still round back to 0.
const MIN_TRANSMITTANCE: f64 = 1e-6;

/// The matrix taking optical densities `[R, G, B]` (row vector) to stain
/// concentrations `[H, E, DAB]`.
pub fn hed_from_rgb_matrix() -> [[f64; 3]; 3] {
    stain_matrices().1
}

fn stain_matrices() -> ([[f64; 3]; 3], [[f64; 3]; 3]) {
    let mut m = RGB_FROM_HED;
    for row in &mut m {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    (m, invert3(&m))
}

fn invert3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            // Cofactor of (c, r): transposed adjugate.
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / det;
        }
    }
    inv
}

/// Stain concentrations `[H, E, DAB]` of one RGB pixel.
pub fn rgb_to_hed(pixel: [u8; 3]) -> [f64; 3] {
    let (_, hed_from_rgb) = stain_matrices();
    let od = pixel.map(|v| -(f64::from(v) / 255.0).max(MIN_TRANSMITTANCE).ln());
    mul_row(&od, &hed_from_rgb)
}

fn mul_row(v: &[f64; 3], m: &[[f64; 3]; 3]) -> [f64; 3] {
    [0, 1, 2].map(|c| v[0] * m[0][c] + v[1] * m[1][c] + v[2] * m[2][c])
}

/// Scales each stain concentration by `scale[k]` and adds `shift[k]`
/// (k = H, E, DAB), then recomposes RGB. `scale = [1; 3]`, `shift = [0; 3]`
/// returns the image unchanged.
pub fn hed_jitter(img: &RgbImage, scale: [f32; 3], shift: [f32; 3]) -> RgbImage {
    let (rgb_from_hed, hed_from_rgb) = stain_matrices();
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let od = p.0.map(|v| -(f64::from(v) / 255.0).max(MIN_TRANSMITTANCE).ln());
        let mut hed = mul_row(&od, &hed_from_rgb);
        for k in 0..3 {
            hed[k] = hed[k] * f64::from(scale[k]) + f64::from(shift[k]);
        }
        let od = mul_row(&hed, &rgb_from_hed);
        *p = Rgb(od.map(|d| (255.0 * (-d).exp()).round().clamp(0.0, 255.0) as u8));
    }
    out
}

/// Recomposes `img` with its haematoxylin and eosin vectors turned:
/// `turns[k] = (angle, azimuth)` turns stain k (0 = H, 1 = E) by `angle`
/// radians about the axis perpendicular to it at `azimuth` radians around it.
/// Concentrations come from the standard (Ruifrok–Johnston) vectors, so the
/// map is the linear change of optical density that takes each standard
/// vector to its turned copy; zero angles return the image unchanged.
pub fn stain_rotate(img: &RgbImage, turns: [(f32, f32); 2]) -> RgbImage {
    let (rgb_from_hed, hed_from_rgb) = stain_matrices();
    let mut turned = rgb_from_hed;
    for (k, &(angle, azimuth)) in turns.iter().enumerate() {
        turned[k] = turn_unit_vector(rgb_from_hed[k], f64::from(angle), f64::from(azimuth));
    }
    // od' = od · (hed_from_rgb · turned): one 3x3 matrix for every pixel.
    let map = [0, 1, 2].map(|r| mul_row(&hed_from_rgb[r], &turned));
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let od = p.0.map(|v| -(f64::from(v) / 255.0).max(MIN_TRANSMITTANCE).ln());
        // Optical density cannot be negative: a turned vector may point
        // slightly "brighter than white" in one channel for faint pixels.
        let od = mul_row(&od, &map).map(|d| d.max(0.0));
        *p = Rgb(od.map(|d| (255.0 * (-d).exp()).round().clamp(0.0, 255.0) as u8));
    }
    out
}

/// The unit vector `v` turned by `angle` radians towards the unit direction
/// perpendicular to it at `azimuth` radians (measured in a fixed basis of the
/// plane perpendicular to `v`).
fn turn_unit_vector(v: [f64; 3], angle: f64, azimuth: f64) -> [f64; 3] {
    // A first perpendicular: v x (the axis v is least aligned with).
    let least = (0..3).min_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs())).unwrap_or(0);
    let mut e = [0.0; 3];
    e[least] = 1.0;
    let normalise = |u: [f64; 3]| {
        let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.map(|x| x / n)
    };
    let p = normalise(cross(v, e));
    let q = cross(v, p);
    let dir = [0, 1, 2].map(|i| p[i] * azimuth.cos() + q[i] * azimuth.sin());
    normalise([0, 1, 2].map(|i| v[i] * angle.cos() + dir[i] * angle.sin()))
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// Zooms by `factor` about the crop centre (bilinear, edges clamped), keeping the size.
pub fn scale_about_centre(img: &RgbImage, factor: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let cx = (f64::from(w) - 1.0) / 2.0;
    let cy = (f64::from(h) - 1.0) / 2.0;
    let inv = 1.0 / f64::from(factor.max(1e-3));
    RgbImage::from_fn(w, h, |x, y| {
        let sx = cx + (f64::from(x) - cx) * inv;
        let sy = cy + (f64::from(y) - cy) * inv;
        Rgb(sample_bilinear(img, sx, sy))
    })
}

/// Moves the content by `(dx, dy)` pixels (right and down for positive
/// values; bilinear, edges clamped), keeping the size.
pub fn shift(img: &RgbImage, dx: f32, dy: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        Rgb(sample_bilinear(img, f64::from(x) - f64::from(dx), f64::from(y) - f64::from(dy)))
    })
}

/// Bilinear sample at `(x, y)` (pixel centres on integers), clamped to the edges.
pub(crate) fn sample_bilinear(img: &RgbImage, x: f64, y: f64) -> [u8; 3] {
    // Hot: every resampled pixel of every tile and crop passes here, so it
    // reads the raw buffer and rounds by truncating `v + 0.5` (v >= 0)
    // rather than through `get_pixel` and `f64::round`.
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return [0; 3];
    }
    let x = x.clamp(0.0, f64::from(w - 1));
    let y = y.clamp(0.0, f64::from(h - 1));
    let (x0, y0) = (x as u32, y as u32); // floor: both are >= 0
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - f64::from(x0), y - f64::from(y0));
    let raw = img.as_raw();
    let stride = w as usize * 3;
    let at = |xx: u32, yy: u32| yy as usize * stride + xx as usize * 3;
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    let mut out = [0u8; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let top = f64::from(raw[a + k]) * (1.0 - fx) + f64::from(raw[b + k]) * fx;
        let bottom = f64::from(raw[c + k]) * (1.0 - fx) + f64::from(raw[d + k]) * fx;
        *o = ((top * (1.0 - fy) + bottom * fy) + 0.5).min(255.0) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    use super::*;
    use crate::test_support::random_image;

    #[test]
    fn zero_stain_jitter_is_identity() {
        let img = random_image(32, 32, 1);
        assert_eq!(hed_jitter(&img, [1.0; 3], [0.0; 3]), img);
    }

    #[test]
    fn no_augmentation_is_identity() {
        let img = random_image(16, 16, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(augment(&img, &AugmentConfig::none(), &mut rng), img);
    }

    #[test]
    fn flips_and_rotations_are_involutions() {
        let img = random_image(12, 12, 4);
        let mut flipped = image::imageops::flip_horizontal(&img);
        assert_ne!(flipped, img);
        image::imageops::flip_horizontal_in_place(&mut flipped);
        assert_eq!(flipped, img);
        assert_eq!(rotate90(&rotate90(&img, 2), 2), img);
        let four = (0..4).fold(img.clone(), |acc, _| rotate90(&acc, 1));
        assert_eq!(four, img);
        assert_eq!(rotate90(&rotate90(&img, 1), 3), img);
    }

    #[test]
    fn augmentation_is_deterministic_for_a_seed() {
        let img = random_image(24, 24, 5);
        let config = AugmentConfig::new().with_blur_probability(1.0);
        let a = augment(&img, &config, &mut ChaCha8Rng::seed_from_u64(9));
        let b = augment(&img, &config, &mut ChaCha8Rng::seed_from_u64(9));
        let c = augment(&img, &config, &mut ChaCha8Rng::seed_from_u64(10));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.dimensions(), img.dimensions());
    }

    #[test]
    fn white_has_no_stain_and_more_haematoxylin_darkens() {
        let white = rgb_to_hed([255, 255, 255]);
        assert!(white.iter().all(|v| v.abs() < 1e-9), "{white:?}");
        // A haematoxylin-rich pixel decomposes mostly into H.
        let nucleus = rgb_to_hed([80, 60, 140]);
        assert!(nucleus[0] > nucleus[2], "{nucleus:?}");
        let img = RgbImage::from_pixel(4, 4, Rgb([120, 90, 160]));
        let darker = hed_jitter(&img, [1.5, 1.0, 1.0], [0.0; 3]);
        let sum = |i: &RgbImage| i.as_raw().iter().map(|&v| u32::from(v)).sum::<u32>();
        assert!(sum(&darker) < sum(&img));
    }

    #[test]
    fn stain_rotation_turns_hue_and_zero_is_identity() {
        let img = random_image(16, 16, 8);
        assert_eq!(stain_rotate(&img, [(0.0, 1.0), (0.0, 2.0)]), img);
        // Turning a unit vector keeps its length and moves it by the angle.
        let (m, _) = stain_matrices();
        for azimuth in [0.0, 1.0, 4.0] {
            let t = turn_unit_vector(m[0], 0.1, azimuth);
            let dot: f64 = (0..3).map(|i| t[i] * m[0][i]).sum();
            let len: f64 = t.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((len - 1.0).abs() < 1e-9 && (dot.acos() - 0.1).abs() < 1e-9, "{len} {dot}");
        }
        // A haematoxylin-rich pixel changes colour when either vector turns,
        // and differently for each.
        let nucleus = RgbImage::from_pixel(2, 2, Rgb([90, 70, 150]));
        let turned = stain_rotate(&nucleus, [(0.15, 0.0), (0.0, 0.0)]);
        assert_ne!(turned, nucleus);
        let only_e = stain_rotate(&nucleus, [(0.0, 0.0), (0.15, 0.0)]);
        assert_ne!(only_e, turned, "H and E turn independently");
        assert_changes_only_when_on(&img, &AugmentConfig::none().with_stain_rotation_deg(8.0), 4);
    }

    /// Through `augment`, `config` (one augmentation on) is deterministic for a
    /// seed, changes `img` and draws from the stream; with everything off,
    /// nothing is drawn (so older configs keep their crops).
    fn assert_changes_only_when_on(img: &RgbImage, config: &AugmentConfig, seed: u64) {
        let mut on = ChaCha8Rng::seed_from_u64(seed);
        let a = augment(img, config, &mut on);
        assert_eq!(a, augment(img, config, &mut ChaCha8Rng::seed_from_u64(seed)));
        assert_ne!(&a, img);
        let mut off = ChaCha8Rng::seed_from_u64(seed);
        augment(img, &AugmentConfig::none(), &mut off);
        let untouched = ChaCha8Rng::seed_from_u64(seed).random::<u64>();
        assert_eq!(off.random::<u64>(), untouched);
        assert_ne!(on.random::<u64>(), untouched);
    }

    #[test]
    fn unit_scale_keeps_the_image() {
        let img = random_image(10, 10, 6);
        assert_eq!(scale_about_centre(&img, 1.0), img);
        let zoomed = scale_about_centre(&img, 2.0);
        assert_eq!(zoomed.dimensions(), (10, 10));
    }

    #[test]
    fn shift_moves_the_content_and_zero_is_identity() {
        let img = random_image(20, 20, 11);
        assert_eq!(shift(&img, 0.0, 0.0), img);
        // A whole-pixel shift moves every pixel; the strip it uncovers repeats the edge.
        let moved = shift(&img, 3.0, -2.0);
        assert_eq!(moved.dimensions(), img.dimensions());
        for y in 0..18 {
            for x in 3..20 {
                assert_eq!(moved.get_pixel(x, y), img.get_pixel(x - 3, y + 2), "({x}, {y})");
            }
            assert_eq!(moved.get_pixel(0, y), img.get_pixel(0, y + 2));
        }
        assert_eq!(moved.get_pixel(5, 19), img.get_pixel(2, 19));
        assert_changes_only_when_on(&img, &AugmentConfig::none().with_shift_px(4.0), 6);
    }

    #[test]
    fn jpeg_recompression_keeps_size_and_loses_more_at_low_quality() {
        let img = random_image(40, 40, 7);
        let error = |q: u8| {
            let out = jpeg_round_trip(&img, q);
            assert_eq!(out.dimensions(), img.dimensions());
            out.as_raw().iter().zip(img.as_raw()).map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs()).sum::<i32>()
        };
        let (fine, coarse) = (error(95), error(20));
        assert!(fine > 0, "a JPEG round trip of noise is lossy");
        assert!(coarse > fine, "quality 20 lost {coarse}, quality 95 {fine}");
        // Through `augment`, with everything else off: always applied at p = 1.
        let config = AugmentConfig::none().with_jpeg_probability(1.0).with_jpeg_quality((50, 50));
        let out = augment(&img, &config, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(out, jpeg_round_trip(&img, 50));
    }
}
