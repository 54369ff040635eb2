//! Tissue detection on a low-resolution image of a slide (a thumbnail or a
//! coarse level): Otsu on HSV saturation plus a small morphological cleanup.
//!
//! Why saturation: glass and background are near-white or grey
//! (saturation ~0), while eosin and haematoxylin stain tissue pink to purple.
//! Brightness alone confuses pale stroma with glass.

use image::{GrayImage, Luma, RgbImage};
use imageproc::distance_transform::Norm;
use mitoscope_geom::{Mpp, Point};
use serde::{Deserialize, Serialize};

/// Settings of [`tissue_mask`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TissueParams {
    /// The Otsu saturation threshold (0–255) is clamped to at least this, so
    /// near-grey glass never counts as tissue on a slide with little tissue.
    pub min_saturation: u8,
    /// …and to at most this, so a field that is all tissue (no background
    /// mode for Otsu to separate) is not split in two.
    pub max_saturation: u8,
    /// Pixels whose brightest channel is below this are not tissue (black
    /// slide edges, scanner borders).
    pub min_brightness: u8,
    /// Radius (px of the input image, L∞) of the closing that fills small
    /// holes and the opening that then removes specks; 0 for no cleanup.
    pub cleanup_radius: u8,
}

impl Default for TissueParams {
    fn default() -> Self {
        Self { min_saturation: 12, max_saturation: 40, min_brightness: 30, cleanup_radius: 2 }
    }
}

/// A binary tissue mask over a low-resolution image, tied to level 0.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueMask {
    mask: GrayImage,
    downsample: f64,
    mpp: Mpp,
    /// Summed-area table of tissue pixels, `(w + 1) * (h + 1)`.
    integral: Vec<u64>,
}

impl TissueMask {
    /// Wraps a 0/255 mask whose pixels are `downsample` level-0 pixels wide,
    /// on a slide of level-0 resolution `mpp`. Any non-zero value is tissue.
    /// A non-finite or non-positive downsample is taken as 1.
    pub fn from_mask(mask: GrayImage, downsample: f64, mpp: Mpp) -> Self {
        let downsample = if downsample.is_finite() && downsample > 0.0 { downsample } else { 1.0 };
        let (w, h) = (mask.width() as usize, mask.height() as usize);
        let mut integral = vec![0u64; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u64;
            for x in 0..w {
                row += (mask.as_raw()[y * w + x] != 0) as u64;
                integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
            }
        }
        Self { mask, downsample, mpp, integral }
    }

    /// The mask (255 tissue, 0 background).
    pub fn mask(&self) -> &GrayImage {
        &self.mask
    }

    /// Level-0 pixels per mask pixel.
    pub fn downsample(&self) -> f64 {
        self.downsample
    }

    /// Number of tissue pixels in the mask.
    pub fn tissue_pixels(&self) -> u64 {
        self.count(0, 0, self.mask.width() as usize, self.mask.height() as usize)
    }

    /// Fraction of the mask that is tissue.
    pub fn tissue_fraction(&self) -> f64 {
        let all = self.mask.width() as u64 * self.mask.height() as u64;
        if all == 0 { 0.0 } else { self.tissue_pixels() as f64 / all as f64 }
    }

    /// Tissue area in mm²: tissue pixels times the level-0 area of a mask pixel.
    pub fn area_mm2(&self) -> f64 {
        let side_mm = self.mpp.px_to_mm(self.downsample);
        self.tissue_pixels() as f64 * side_mm * side_mm
    }

    /// Whether a level-0 point lies on tissue (false outside the mask).
    pub fn contains(&self, p: Point) -> bool {
        let (x, y) = (p.x / self.downsample, p.y / self.downsample);
        if !(x >= 0.0 && y >= 0.0) {
            return false;
        }
        self.mask.get_pixel_checked(x as u32, y as u32).is_some_and(|v| v[0] != 0)
    }

    /// Fraction of the level-0 rectangle `[x, x + width) x [y, y + height)`
    /// that is tissue, at mask resolution (mask pixels the rectangle touches;
    /// the part outside the mask counts as background).
    pub fn rect_fraction(&self, x: f64, y: f64, width: f64, height: f64) -> f64 {
        let ds = self.downsample;
        let (mw, mh) = (self.mask.width() as f64, self.mask.height() as f64);
        let (fx0, fy0) = ((x / ds).floor(), (y / ds).floor());
        let (fx1, fy1) = (((x + width) / ds).ceil(), ((y + height) / ds).ceil());
        let total = (fx1 - fx0) * (fy1 - fy0);
        if total.is_nan() || total <= 0.0 {
            return 0.0;
        }
        let c = |v: f64, hi: f64| v.clamp(0.0, hi) as usize;
        let inside = self.count(c(fx0, mw), c(fy0, mh), c(fx1, mw), c(fy1, mh));
        inside as f64 / total
    }

    /// Tissue pixels in mask columns `x0..x1`, rows `y0..y1`.
    fn count(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> u64 {
        if x0 >= x1 || y0 >= y1 {
            return 0;
        }
        let s = self.mask.width() as usize + 1;
        let at = |x: usize, y: usize| self.integral[y * s + x];
        at(x1, y1) + at(x0, y0) - at(x0, y1) - at(x1, y0)
    }
}

/// HSV saturation scaled to 0–255 (`255 (max - min) / max`).
pub fn saturation(img: &RgbImage) -> GrayImage {
    let data = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| {
            let (mx, mn) = (p[0].max(p[1]).max(p[2]), p[0].min(p[1]).min(p[2]));
            if mx == 0 { 0 } else { ((mx - mn) as u32 * 255 / mx as u32) as u8 }
        })
        .collect();
    GrayImage::from_raw(img.width(), img.height(), data).unwrap_or_else(|| GrayImage::new(img.width(), img.height()))
}

/// Finds tissue on `img`, an image whose pixels are `downsample` level-0
/// pixels wide (a thumbnail: level-0 width / thumbnail width), on a slide of
/// level-0 resolution `mpp`.
///
/// Tissue: saturation above the Otsu threshold (clamped to
/// `[min_saturation, max_saturation]`) and brightest channel at least
/// `min_brightness`; then a closing (fills gaps between fibres) and an
/// opening (drops specks) of `cleanup_radius`.
pub fn tissue_mask(img: &RgbImage, downsample: f64, mpp: Mpp, params: &TissueParams) -> TissueMask {
    let sat = saturation(img);
    let otsu = imageproc::contrast::otsu_level(&sat);
    let cut = otsu.clamp(params.min_saturation, params.max_saturation.max(params.min_saturation));
    let mut mask = GrayImage::new(img.width(), img.height());
    for ((m, s), p) in mask.pixels_mut().zip(sat.pixels()).zip(img.pixels()) {
        let bright = p[0].max(p[1]).max(p[2]);
        *m = Luma([if s[0] > cut && bright >= params.min_brightness { 255 } else { 0 }]);
    }
    if params.cleanup_radius > 0 {
        // Close first: at thumbnail scale stroma is thin fibres with glass
        // between them, which an opening alone would erase.
        mask = imageproc::morphology::close(&mask, Norm::LInf, params.cleanup_radius);
        mask = imageproc::morphology::open(&mask, Norm::LInf, params.cleanup_radius);
    }
    TissueMask::from_mask(mask, downsample, mpp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn pink_square_on_glass() {
        // 40x30 glass (near white, slight grey noise) with a 20x10 pink block.
        let mut img = RgbImage::from_fn(40, 30, |x, y| {
            let n = ((x * 7 + y * 13) % 5) as u8;
            Rgb([240 - n, 241 - n, 242 - n])
        });
        for y in 10..20 {
            for x in 5..25 {
                img.put_pixel(x, y, Rgb([200, 120, 170]));
            }
        }
        img.put_pixel(35, 3, Rgb([200, 100, 160])); // a speck: removed by the opening
        let mpp = Mpp::new(0.5).unwrap();
        let m = tissue_mask(&img, 10.0, mpp, &TissueParams::default());
        assert_eq!(m.tissue_pixels(), 200);
        // 200 mask px of 10x10 level-0 px at 0.5 µm: 200 * (5 µm)² = 0.005 mm².
        assert!((m.area_mm2() - 0.005).abs() < 1e-12);
        assert!(m.contains(Point::new(60.0, 120.0)));
        assert!(!m.contains(Point::new(355.0, 35.0)));
        assert!(!m.contains(Point::new(-1.0, 5.0)));
        assert_eq!(m.rect_fraction(50.0, 100.0, 200.0, 100.0), 1.0);
        assert_eq!(m.rect_fraction(0.0, 100.0, 100.0, 100.0), 0.5);
        assert_eq!(m.rect_fraction(1000.0, 1000.0, 10.0, 10.0), 0.0);
    }
}
