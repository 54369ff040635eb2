//! Patch datasets for the classifier: labelled crops from folders, positive
//! and random negative crops from high-power fields (HPFs), the train /
//! validation split, and the conversion of RGB crops to normalised tensors.
//!
//! Every crop is resampled to the classifier's resolution ([`CropSpec`]) when
//! it is built, so training, validation and inference see the same scale.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use image::{Rgb, RgbImage};
use mitoscope_geom::Mpp;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};

use crate::ModelError;
use crate::augment::sample_bilinear;

/// Per-channel mean (R, G, B) subtracted after scaling to `[0, 1]`: typical of
/// H&E at 40x. Part of the model contract: changing it invalidates trained weights.
pub const CHANNEL_MEAN: [f32; 3] = [0.70, 0.55, 0.70];
/// Per-channel standard deviation divided by after subtracting [`CHANNEL_MEAN`].
pub const CHANNEL_STD: [f32; 3] = [0.18, 0.20, 0.15];

/// Size and resolution every classifier crop is resampled to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropSpec {
    /// Side of the square crop in pixels.
    pub crop_size: u32,
    /// Microns per pixel of the crop.
    pub mpp: Mpp,
}

impl CropSpec {
    /// The crop a [`crate::PatchClassifierConfig`] expects.
    pub fn for_classifier(config: &crate::PatchClassifierConfig) -> Result<Self, ModelError> {
        let mpp = Mpp::new(config.mpp).map_err(|e| ModelError::Data(format!("classifier config: {e}")))?;
        let crop_size = u32::try_from(config.crop_size)
            .ok()
            .filter(|&s| s >= 4)
            .ok_or_else(|| ModelError::Data(format!("classifier crop size {} is not usable", config.crop_size)))?;
        Ok(Self { crop_size, mpp })
    }
}

/// One training or validation example.
#[derive(Debug, Clone)]
pub struct LabelledCrop {
    /// RGB crop, already at the [`CropSpec`] size and resolution.
    pub image: RgbImage,
    /// Whether it is centred on a mitotic figure.
    pub positive: bool,
    /// Where it came from (file, and position for HPF crops), for reports.
    pub origin: String,
}

/// Label implied by a folder name: `Some(true)` for mitosis folders
/// (`normal`/`atypical` as in AMi-Br and AtNorM-Br, `mitosis`, `positive`,
/// `pos`, `1`), `Some(false)` for negatives (`negative`, `neg`, `0`,
/// `non-mitosis`, `hard-negative`, `imposter`), `None` otherwise. Case-insensitive.
pub fn folder_label(name: &str) -> Option<bool> {
    let n = name.to_ascii_lowercase().replace(['-', '_', ' '], "");
    match n.as_str() {
        "normal" | "atypical" | "mitosis" | "mitoses" | "mitotic" | "mitoticfigure" | "positive" | "positives"
        | "pos" | "1" => Some(true),
        "negative" | "negatives" | "neg" | "0" | "nonmitosis" | "nonmitotic" | "hardnegative" | "hardnegatives"
        | "imposter" | "imposters" | "lookalike" | "lookalikes" => Some(false),
        _ => None,
    }
}

/// Loads crop images from the labelled subfolders of `root` (see
/// [`folder_label`]; other subfolders are skipped). Each image is taken as
/// centred on its label at `source_mpp` and resampled to `spec`. Files are read
/// in name order; `limit_per_folder` keeps the first N of each folder.
pub fn load_crop_folders(
    root: &Path,
    source_mpp: Mpp,
    spec: CropSpec,
    limit_per_folder: Option<usize>,
) -> Result<Vec<LabelledCrop>, ModelError> {
    let mut crops = Vec::new();
    for folder in sorted_entries(root)? {
        let Some(positive) = folder.file_name().and_then(|n| n.to_str()).and_then(folder_label) else {
            continue;
        };
        if !folder.is_dir() {
            continue;
        }
        let files = sorted_entries(&folder)?
            .into_iter()
            .filter(|p| p.is_file() && mitoscope_imaging::is_image_path(p))
            .take(limit_per_folder.unwrap_or(usize::MAX));
        for file in files {
            let image = mitoscope_imaging::read_image(&file)?;
            let centre = ((f64::from(image.width()) - 1.0) / 2.0, (f64::from(image.height()) - 1.0) / 2.0);
            crops.push(LabelledCrop {
                image: resample_crop(&image, centre, source_mpp, spec),
                positive,
                origin: file.display().to_string(),
            });
        }
    }
    Ok(crops)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ModelError::io(dir, e))?;
    entries.sort();
    Ok(entries)
}

/// The `spec` crop centred on `centre` (x = column, y = row, source pixels) of
/// an image at `source_mpp`: the covered field is `crop_size * spec.mpp` µm
/// wide; pixels beyond the image edge repeat the edge.
pub fn resample_crop(image: &RgbImage, centre: (f64, f64), source_mpp: Mpp, spec: CropSpec) -> RgbImage {
    let step = spec.mpp.get() / source_mpp.get(); // source pixels per crop pixel
    let half = (f64::from(spec.crop_size) - 1.0) / 2.0;
    RgbImage::from_fn(spec.crop_size, spec.crop_size, |x, y| {
        let sx = centre.0 + (f64::from(x) - half) * step;
        let sy = centre.1 + (f64::from(y) - half) * step;
        if step > 1.0 + 1e-9 {
            // Downsampling: average the step x step source footprint so fine
            // texture does not alias.
            Rgb(box_average(image, sx, sy, step))
        } else {
            Rgb(sample_bilinear(image, sx, sy))
        }
    })
}

/// `width` x `height` pixels of the grid at `target_mpp` laid over `image`
/// (at `source_mpp`): grid pixel `u` is centred on source pixel
/// `(u + 0.5) * step - 0.5` (`step = target / source`), sampled exactly as
/// [`resample_crop`] samples it, so a crop copied out of the grid equals the
/// crop resampled directly. Resampling once and copying crops is what makes
/// overlapping tiles and hundreds of candidate crops per image cheap; rows are
/// resampled in parallel. Grid pixels past the image repeat its edge.
pub fn resample_grid(image: &RgbImage, source_mpp: Mpp, target_mpp: Mpp, width: u32, height: u32) -> RgbImage {
    use rayon::prelude::*;
    let step = target_mpp.get() / source_mpp.get();
    let to_source = |u: u32| (f64::from(u) + 0.5) * step - 0.5;
    let mut out = RgbImage::new(width, height);
    let row_len = width as usize * 3;
    if row_len == 0 {
        return out;
    }
    out.par_chunks_mut(row_len).enumerate().for_each(|(y, row)| {
        let sy = to_source(y as u32);
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let sx = to_source(x as u32);
            let v = if step > 1.0 + 1e-9 { box_average(image, sx, sy, step) } else { sample_bilinear(image, sx, sy) };
            px.copy_from_slice(&v);
        }
    });
    out
}

/// The `size` x `size` block of `grid` whose top-left pixel is (`x0`, `y0`)
/// (may be negative or run past the grid: edge pixels repeat).
pub fn copy_block(grid: &RgbImage, x0: i64, y0: i64, size: u32) -> RgbImage {
    let (w, h) = grid.dimensions();
    if w == 0 || h == 0 {
        return RgbImage::new(size, size);
    }
    let clamp = |v: i64, len: u32| v.clamp(0, i64::from(len) - 1) as u32;
    let inside = x0 >= 0 && y0 >= 0 && x0 + i64::from(size) <= i64::from(w) && y0 + i64::from(size) <= i64::from(h);
    if inside {
        return image::imageops::crop_imm(grid, x0 as u32, y0 as u32, size, size).to_image();
    }
    RgbImage::from_fn(size, size, |x, y| *grid.get_pixel(clamp(x0 + i64::from(x), w), clamp(y0 + i64::from(y), h)))
}

fn box_average(image: &RgbImage, cx: f64, cy: f64, step: f64) -> [u8; 3] {
    // Sample a small grid of bilinear taps covering the footprint.
    let taps = step.ceil().clamp(2.0, 8.0) as usize;
    let mut sum = [0u32; 3];
    for i in 0..taps {
        let ox = ((i as f64 + 0.5) / taps as f64 - 0.5) * step;
        for j in 0..taps {
            let oy = ((j as f64 + 0.5) / taps as f64 - 0.5) * step;
            let p = sample_bilinear(image, cx + ox, cy + oy);
            for k in 0..3 {
                sum[k] += u32::from(p[k]);
            }
        }
    }
    let n = (taps * taps) as f64;
    // Round half up (the sums are >= 0), as `f64::round` would.
    sum.map(|s| (f64::from(s) / n + 0.5).min(255.0) as u8)
}

/// Positive crops centred on each centroid `(x, y)` of an HPF.
pub fn positive_crops(
    image: &RgbImage,
    centroids: &[(f64, f64)],
    source_mpp: Mpp,
    spec: CropSpec,
    origin: &str,
) -> Vec<LabelledCrop> {
    centred_crops(image, centroids, source_mpp, spec, true, origin)
}

/// Crops labelled `positive` centred on each finite point `(x, y)` of `image`
/// (labelled figures, or labelled look-alikes as negatives); each crop's
/// origin is `<origin>@x,y`.
pub fn centred_crops(
    image: &RgbImage,
    at: &[(f64, f64)],
    source_mpp: Mpp,
    spec: CropSpec,
    positive: bool,
    origin: &str,
) -> Vec<LabelledCrop> {
    at.iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| LabelledCrop {
            image: resample_crop(image, (x, y), source_mpp, spec),
            positive,
            origin: format!("{origin}@{x:.0},{y:.0}"),
        })
        .collect()
}

/// How many random negatives [`random_negative_crops`] draws, and how far from
/// every labelled centroid (source pixels) each must lie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NegativeDraw {
    /// Crops wanted.
    pub count: usize,
    /// Smallest distance of a crop centre from any centroid, source pixels.
    pub min_distance_px: f64,
}

/// Up to `draw.count` negative crops at random positions of an HPF whose
/// labels are complete, each centre at least `draw.min_distance_px` from every
/// centroid and far enough from the border for the crop to fit.
/// Fewer come back when the free area is too small (bounded attempts).
pub fn random_negative_crops(
    image: &RgbImage,
    centroids: &[(f64, f64)],
    source_mpp: Mpp,
    spec: CropSpec,
    draw: NegativeDraw,
    rng: &mut impl Rng,
    origin: &str,
) -> Vec<LabelledCrop> {
    let NegativeDraw { count, min_distance_px } = draw;
    let half_field = f64::from(spec.crop_size) * spec.mpp.get() / source_mpp.get() / 2.0;
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let (lo_x, hi_x) = (half_field, w - 1.0 - half_field);
    let (lo_y, hi_y) = (half_field, h - 1.0 - half_field);
    if hi_x < lo_x || hi_y < lo_y {
        return Vec::new();
    }
    let min_d2 = min_distance_px * min_distance_px;
    let mut crops = Vec::with_capacity(count);
    let mut attempts = 0;
    while crops.len() < count && attempts < count.saturating_mul(50) {
        attempts += 1;
        let x = rng.random_range(lo_x..=hi_x).round();
        let y = rng.random_range(lo_y..=hi_y).round();
        if centroids.iter().any(|&(cx, cy)| (cx - x).powi(2) + (cy - y).powi(2) < min_d2) {
            continue;
        }
        crops.push(LabelledCrop {
            image: resample_crop(image, (x, y), source_mpp, spec),
            positive: false,
            origin: format!("{origin}@{x:.0},{y:.0}"),
        });
    }
    crops
}

/// Splits into (train, validation), stratified by label: `val_fraction` of the
/// positives and of the negatives (rounded, at least one of each class that
/// has two or more examples) go to validation. Deterministic for a seed.
pub fn split_train_val(
    crops: Vec<LabelledCrop>,
    val_fraction: f64,
    seed: u64,
) -> (Vec<LabelledCrop>, Vec<LabelledCrop>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut positives, mut negatives): (Vec<_>, Vec<_>) = crops.into_iter().partition(|c| c.positive);
    let mut train = Vec::new();
    let mut val = Vec::new();
    for class in [&mut positives, &mut negatives] {
        class.shuffle(&mut rng);
        let n = class.len();
        let mut n_val = (n as f64 * val_fraction.clamp(0.0, 1.0)).round() as usize;
        if val_fraction > 0.0 && n >= 2 {
            n_val = n_val.clamp(1, n - 1);
        }
        let rest = class.split_off(n_val);
        val.append(class);
        train.extend(rest);
    }
    (train, val)
}

/// A crop as normalised `f32` values in CHW order (`[3][H][W]`): each channel
/// scaled to `[0, 1]`, minus [`CHANNEL_MEAN`], divided by [`CHANNEL_STD`].
pub fn image_to_chw(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, p) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(p.0[c]) / 255.0 - CHANNEL_MEAN[c]) / CHANNEL_STD[c];
        }
    }
    out
}

/// Stacks equally sized crops into a `[B, 3, H, W]` tensor on `device`.
pub fn images_to_tensor(images: &[RgbImage], device: &Device) -> Result<Tensor<4>, ModelError> {
    let first = images.first().ok_or_else(|| ModelError::Data("no images to batch".into()))?;
    let (w, h) = first.dimensions();
    let mut values = Vec::with_capacity(images.len() * 3 * (w * h) as usize);
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != (w, h) {
            return Err(ModelError::Data(format!(
                "image {i} is {}x{}, the batch is {w}x{h}",
                img.width(),
                img.height()
            )));
        }
        values.extend(image_to_chw(img));
    }
    let data = TensorData::new(values, [images.len(), 3, h as usize, w as usize]);
    Ok(Tensor::from_data(data, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{random_image, synthetic_crops};

    fn spec(size: u32, mpp: f64) -> CropSpec {
        CropSpec { crop_size: size, mpp: Mpp::new(mpp).unwrap() }
    }

    #[test]
    fn crops_copied_from_the_grid_equal_direct_resampling() {
        let img = random_image(97, 83, 5);
        let src = Mpp::new(0.2456).unwrap();
        for target in [0.5, 0.3, 0.2] {
            let t = Mpp::new(target).unwrap();
            let step = target / 0.2456;
            let (gw, gh) = ((97.0 / step).ceil() as u32 + 8, (83.0 / step).ceil() as u32 + 8);
            let grid = resample_grid(&img, src, t, gw, gh);
            // A 16 px crop whose pixel (0, 0) is grid pixel (gx, gy): centred on grid
            // coordinate gx + 7.5, i.e. source (gx + 8) * step - 0.5.
            for (gx, gy) in [(0u32, 0u32), (5, 9), (gw - 16, gh - 16)] {
                let centre = ((f64::from(gx) + 8.0) * step - 0.5, (f64::from(gy) + 8.0) * step - 0.5);
                let direct = resample_crop(&img, centre, src, spec(16, target));
                let copied = copy_block(&grid, i64::from(gx), i64::from(gy), 16);
                assert_eq!(direct, copied, "target {target} at ({gx}, {gy})");
            }
        }
        // Blocks past the grid repeat its edge.
        let grid = resample_grid(&img, src, Mpp::new(0.5).unwrap(), 10, 10);
        let block = copy_block(&grid, -3, 8, 4);
        assert_eq!(block.get_pixel(0, 0), grid.get_pixel(0, 8));
        assert_eq!(block.get_pixel(3, 3), grid.get_pixel(0, 9));
    }

    #[test]
    fn folder_names_give_labels() {
        for name in ["normal", "Atypical", "NORMAL", "mitosis", "1"] {
            assert_eq!(folder_label(name), Some(true), "{name}");
        }
        for name in ["negative", "neg", "0", "hard_negative", "Non-Mitosis"] {
            assert_eq!(folder_label(name), Some(false), "{name}");
        }
        assert_eq!(folder_label("images"), None);
    }

    #[test]
    fn same_resolution_centre_crop_is_a_copy() {
        let img = random_image(20, 20, 1);
        let crop = resample_crop(&img, (9.5, 9.5), Mpp::new(0.25).unwrap(), spec(20, 0.25));
        assert_eq!(crop, img);
        // An even crop centred between pixels lands on the pixel grid.
        let inner = resample_crop(&img, (9.5, 9.5), Mpp::new(0.25).unwrap(), spec(4, 0.25));
        assert_eq!(inner.get_pixel(0, 0), img.get_pixel(8, 8));
    }

    #[test]
    fn downsampling_halves_the_size_and_averages() {
        let img = RgbImage::from_fn(8, 8, |x, _| if x % 2 == 0 { Rgb([0, 0, 0]) } else { Rgb([200, 200, 200]) });
        let crop = resample_crop(&img, (3.5, 3.5), Mpp::new(0.25).unwrap(), spec(4, 0.5));
        assert_eq!(crop.dimensions(), (4, 4));
        // A 1-px stripe pattern averages to grey instead of aliasing.
        assert!(crop.pixels().all(|p| (90..=110).contains(&p.0[0])), "{:?}", crop.as_raw());
    }

    #[test]
    fn negatives_keep_away_from_centroids() {
        let img = random_image(200, 200, 2);
        let centroids = [(100.0, 100.0), (40.0, 150.0)];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let s = spec(8, 0.5);
        let crops = random_negative_crops(
            &img,
            &centroids,
            Mpp::new(0.25).unwrap(),
            s,
            NegativeDraw { count: 30, min_distance_px: 50.0 },
            &mut rng,
            "t",
        );
        assert_eq!(crops.len(), 30);
        for c in &crops {
            assert!(!c.positive);
            assert_eq!(c.image.dimensions(), (8, 8));
            let (x, y) = c.origin.trim_start_matches("t@").split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(centroids.iter().all(|&(cx, cy)| (cx - x).hypot(cy - y) >= 50.0));
            assert!((8.0..=191.0).contains(&x) && (8.0..=191.0).contains(&y));
        }
        let positives = positive_crops(&img, &centroids, Mpp::new(0.25).unwrap(), s, "t");
        assert_eq!(positives.len(), 2);
        assert!(positives.iter().all(|c| c.positive));
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let crops = synthetic_crops(20, 4, 0);
        let (train, val) = split_train_val(crops.clone(), 0.2, 1);
        assert_eq!((train.len(), val.len()), (16, 4));
        assert_eq!(val.iter().filter(|c| c.positive).count(), 2);
        let (_, val2) = split_train_val(crops, 0.2, 1);
        let names = |v: &[LabelledCrop]| v.iter().map(|c| c.origin.clone()).collect::<Vec<_>>();
        assert_eq!(names(&val), names(&val2));
    }

    #[test]
    fn chw_conversion_and_batching() {
        let img = RgbImage::from_fn(2, 1, |x, _| if x == 0 { Rgb([255, 0, 0]) } else { Rgb([0, 255, 0]) });
        let chw = image_to_chw(&img);
        assert_eq!(chw.len(), 6);
        let norm = |c: usize, v: f32| (v - CHANNEL_MEAN[c]) / CHANNEL_STD[c];
        assert_eq!(chw, vec![norm(0, 1.0), norm(0, 0.0), norm(1, 0.0), norm(1, 1.0), norm(2, 0.0), norm(2, 0.0)]);
        let device = Device::flex();
        let t = images_to_tensor(&[img.clone(), img.clone()], &device).unwrap();
        assert_eq!(t.dims(), [2, 3, 1, 2]);
        let other = RgbImage::new(3, 3);
        assert!(matches!(images_to_tensor(&[img, other], &device), Err(ModelError::Data(_))));
        assert!(images_to_tensor(&[], &device).is_err());
    }

    /// Real data: a handful of AMi-Br positives and ICPR-2012 random negatives
    /// come out with the right labels and tensor shapes.
    #[test]
    fn real_amibr_and_icpr_crops() {
        let amibr = mitoscope_testdata::require_data!("amibr");
        let icpr = mitoscope_testdata::require_data!("icpr2012");
        let spec = CropSpec::for_classifier(&crate::PatchClassifierConfig::new()).unwrap();
        // AMi-Br crops come from MIDOG / TUPAC scans at about 0.25 µm/px.
        let positives = load_crop_folders(&amibr.join("patches"), Mpp::new(0.25).unwrap(), spec, Some(3)).unwrap();
        assert_eq!(positives.len(), 6, "3 normal + 3 atypical");
        assert!(positives.iter().all(|c| c.positive && c.image.dimensions() == (64, 64)));

        let hpf_path = icpr.join("hpf/A00_00.jpg");
        let hpf = mitoscope_imaging::read_image(&hpf_path).unwrap();
        let csv = std::fs::read_to_string(icpr.join("centroids.csv")).unwrap();
        let centroids: Vec<(f64, f64)> = csv
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f.first()?.trim_end_matches(".jpg") == "A00_00")
                    .then(|| Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?)))?
            })
            .collect();
        assert_eq!(centroids.len(), 6, "A00_00 has 6 mitoses");
        let icpr_mpp = Mpp::new(0.2456).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let origin = hpf_path.display().to_string();
        let negatives = random_negative_crops(
            &hpf,
            &centroids,
            icpr_mpp,
            spec,
            NegativeDraw { count: 5, min_distance_px: 100.0 },
            &mut rng,
            &origin,
        );
        let hpf_positives = positive_crops(&hpf, &centroids, icpr_mpp, spec, &origin);
        assert_eq!(negatives.len(), 5);
        assert!(negatives.iter().all(|c| !c.positive));
        assert_eq!(hpf_positives.len(), 6);

        let all: Vec<LabelledCrop> = positives.into_iter().chain(negatives).chain(hpf_positives).collect();
        let images: Vec<RgbImage> = all.iter().map(|c| c.image.clone()).collect();
        let t = images_to_tensor(&images, &Device::flex()).unwrap();
        assert_eq!(t.dims(), [17, 3, 64, 64]);
        let values = crate::infer::tensor_values(t).unwrap();
        assert!(values.iter().all(|v| v.is_finite() && v.abs() < 10.0));
    }
}
