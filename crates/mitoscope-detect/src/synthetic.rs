//! A synthetic H&E-like high-power field for demos and tests: pink stroma,
//! purple nuclei and a few dark, condensed, irregular mitosis-like figures.
//! It is **synthetic**: it shows the pipeline runs, not that it is accurate.

use image::{Rgb, RgbImage};

/// SplitMix64: a tiny seeded generator, so this module needs no RNG crate.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Renders a `size x size` synthetic field at about 0.25 µm/px (40x); returns
/// it with the centres `(x, y)` of its mitosis-like figures.
pub fn render_hpf(seed: u64, size: u32) -> (RgbImage, Vec<(f64, f64)>) {
    let mut rng = SplitMix(seed ^ 0x0005_EED0_F4E5);
    let s = f64::from(size);
    let mut img = RgbImage::from_fn(size, size, |x, y| {
        // Stroma: pink with slow fibre-like bands.
        let band = ((f64::from(x) * 0.021 + f64::from(y) * 0.013).sin() * 0.5 + 0.5) * 18.0;
        Rgb([235.0 - band * 0.3, 180.0 - band, 215.0 - band * 0.5].map(|v| v as u8))
    });
    // Nuclei: ~10 µm ellipses (20 px radius at 0.25 µm/px), textured purple.
    let nuclei = ((s * s) / 2500.0) as usize;
    for _ in 0..nuclei {
        let (cx, cy) = (rng.range(0.0, s), rng.range(0.0, s));
        let (rx, ry) = (rng.range(10.0, 20.0), rng.range(8.0, 16.0));
        let shade = rng.range(-15.0, 15.0);
        paint_blob(&mut img, cx, cy, rx, ry, [150.0 + shade, 110.0 + shade, 175.0 + shade], 0.75, &mut rng);
    }
    // Mitosis-like figures: small, very dark, irregular clumps.
    let count = ((s * s) / 600_000.0).round().max(3.0) as usize;
    let margin = (s * 0.05).max(24.0);
    let mut centres: Vec<(f64, f64)> = Vec::with_capacity(count);
    let mut attempts = 0;
    while centres.len() < count && attempts < count * 100 {
        attempts += 1;
        let (cx, cy) = (rng.range(margin, s - margin), rng.range(margin, s - margin));
        if centres.iter().any(|&(x, y)| (x - cx).hypot(y - cy) < 80.0) {
            continue;
        }
        for i in 0..5 {
            // The first clump sits on the centre, the others around it.
            let (ox, oy) = if i == 0 { (0.0, 0.0) } else { (rng.range(-6.0, 6.0), rng.range(-6.0, 6.0)) };
            let (rx, ry) = (rng.range(4.0, 9.0), rng.range(3.0, 7.0));
            paint_blob(&mut img, cx + ox, cy + oy, rx, ry, [45.0, 25.0, 80.0], 0.95, &mut rng);
        }
        centres.push((cx, cy));
    }
    (img, centres)
}

#[allow(clippy::too_many_arguments)]
fn paint_blob(
    img: &mut RgbImage,
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
    colour: [f64; 3],
    alpha: f64,
    rng: &mut SplitMix,
) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x0 = ((cx - rx).floor() as i64).max(0);
    let x1 = ((cx + rx).ceil() as i64).min(w - 1);
    let y0 = ((cy - ry).floor() as i64).max(0);
    let y1 = ((cy + ry).ceil() as i64).min(h - 1);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let d = ((x as f64 - cx) / rx).powi(2) + ((y as f64 - cy) / ry).powi(2);
            if d > 1.0 {
                continue;
            }
            let noise = rng.range(-12.0, 12.0);
            let p = img.get_pixel_mut(x as u32, y as u32);
            for (channel, c) in p.0.iter_mut().zip(colour) {
                let v = f64::from(*channel) * (1.0 - alpha) + (c + noise) * alpha;
                *channel = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_has_dark_figures() {
        let (a, ca) = render_hpf(1, 512);
        let (b, cb) = render_hpf(1, 512);
        assert_eq!(a, b);
        assert_eq!(ca, cb);
        assert!(ca.len() >= 3);
        for &(x, y) in &ca {
            let p = a.get_pixel(x as u32, y as u32).0;
            assert!(p.iter().map(|&v| u32::from(v)).sum::<u32>() < 300, "{p:?}");
        }
        assert_ne!(render_hpf(2, 512).0, a);
    }
}
