//! Whole-slide fixtures (`wsi/` in the shared data): real Aperio SVS, the
//! OpenSlide test pyramid and broken files. Skipped loudly when the data is
//! absent (see `mitoscope-testdata`).

use std::path::{Path, PathBuf};

use image::RgbImage;
use mitoscope_geom::{Mpp, Point};
use mitoscope_slide::hotspot::{HotspotParams, summarize};
use mitoscope_slide::tissue::{TissueParams, tissue_mask};
use mitoscope_slide::{MppSource, OpenOptions, SlideError, open, open_with};

fn cmu(dir: &Path) -> PathBuf {
    dir.join("CMU-1-Small-Region.svs")
}

/// A copy of CMU-1 in `tmp` named `bad-tile.svs` whose tile 3 (column 3, row 0),
/// located through the TIFF tags, keeps its 2-byte SOI marker and has every
/// later byte set to `fill`.
fn cmu_with_corrupt_tile(dir: &Path, tmp: &Path, fill: u8) -> PathBuf {
    let mut bytes = std::fs::read(cmu(dir)).unwrap();
    let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let offsets = dec.get_tag_u64_vec(tiff::tags::Tag::TileOffsets).unwrap();
    let counts = dec.get_tag_u64_vec(tiff::tags::Tag::TileByteCounts).unwrap();
    let (o, n) = (offsets[3] as usize, counts[3] as usize);
    bytes[o + 2..o + n].fill(fill);
    let p = tmp.join("bad-tile.svs");
    std::fs::write(&p, &bytes).unwrap();
    p
}

fn fixture(dir: &Path, name: &str) -> PathBuf {
    dir.join("openslide-fixtures").join(name)
}

/// Mean absolute difference per channel between `small` and `big` box-averaged
/// down to `small`'s size.
fn mean_abs_diff_downsampled(big: &RgbImage, small: &RgbImage) -> f64 {
    let (sx, sy) = (big.width() as f64 / small.width() as f64, big.height() as f64 / small.height() as f64);
    let mut total = 0.0;
    for (x, y, p) in small.enumerate_pixels() {
        let (x0, x1) = ((x as f64 * sx) as u32, (((x + 1) as f64 * sx) as u32).min(big.width()));
        let (y0, y1) = ((y as f64 * sy) as u32, (((y + 1) as f64 * sy) as u32).min(big.height()));
        let mut acc = [0.0f64; 3];
        let mut n = 0.0;
        for yy in y0..y1.max(y0 + 1) {
            for xx in x0..x1.max(x0 + 1) {
                let q = big.get_pixel(xx, yy);
                for c in 0..3 {
                    acc[c] += q[c] as f64;
                }
                n += 1.0;
            }
        }
        for c in 0..3 {
            total += (acc[c] / n - p[c] as f64).abs();
        }
    }
    total / (small.width() * small.height() * 3) as f64
}

#[test]
fn cmu_aperio_metadata_and_associated_images() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(cmu(&dir)).unwrap();
    assert_eq!(s.vendor(), "aperio");
    assert_eq!(s.level_count(), 1);
    assert_eq!(s.dimensions(0), Some((2220, 2967)));
    let l = s.levels()[0];
    assert_eq!((l.tile_width, l.tile_height, l.downsample), (240, 240, 1.0));
    let m = s.mpp();
    assert!((m.mpp.get() - 0.499).abs() < 1e-3, "{m:?}");
    assert_eq!((m.source, m.mpp_guessed), (MppSource::AperioDescription, false));
    assert_eq!(s.objective_power(), Some(20.0));
    assert_eq!(s.properties()["aperio.AppMag"], "20");
    assert_eq!(s.associated_names(), ["thumbnail", "label", "macro"]);
    assert_eq!(s.read_associated("thumbnail").unwrap().dimensions(), (574, 768));
    assert_eq!(s.read_associated("label").unwrap().dimensions(), (387, 463));
    let mac = s.read_associated("macro").unwrap();
    assert_eq!(mac.dimensions(), (1280, 431));
    let err = s.read_associated("overview").unwrap_err().to_string();
    assert!(err.contains("thumbnail, label, macro"), "{err}");
    // An override wins and is not a guess.
    let o = open_with(cmu(&dir), &OpenOptions { mpp_override: Some(Mpp::new(0.25).unwrap()), ..Default::default() })
        .unwrap();
    assert_eq!((o.mpp().mpp.get(), o.mpp().source, o.mpp().mpp_guessed), (0.25, MppSource::Override, false));
}

#[test]
fn cmu_level0_matches_its_thumbnail_and_colours_are_rgb() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(cmu(&dir)).unwrap();
    let full = s.read_region(0, 0, 0, 2220, 2967).unwrap();
    let thumb = s.read_associated("thumbnail").unwrap();
    // Tiles in the wrong place, or JPEG colours converted twice, would be far off.
    let d = mean_abs_diff_downsampled(&full, &thumb);
    assert!(d < 10.0, "level 0 vs thumbnail differ by {d} per channel");
    // Control: the same measure against a mirrored thumbnail is far larger.
    let mirrored = mean_abs_diff_downsampled(&full, &image::imageops::flip_horizontal(&thumb));
    assert!(mirrored > 3.0 * d, "mirrored {mirrored} vs {d}");
    // Top-left is glass: near white, not tinted (a YCbCr mix-up turns it green/magenta).
    let p = full.get_pixel(200, 200).0;
    assert!(p.iter().all(|&c| c > 215) && p.iter().max().unwrap() - p.iter().min().unwrap() < 20, "{p:?}");
    // A region straddling tile corners equals the same crop of the full read.
    let r = s.read_region(0, 230, 470, 300, 50).unwrap();
    for (x, y, q) in r.enumerate_pixels() {
        assert_eq!(q, full.get_pixel(x + 230, y + 470));
    }
}

#[test]
fn cmu_edges_pad_white_and_outside_is_an_error() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(cmu(&dir)).unwrap();
    let r = s.read_region(0, 2200, 2950, 40, 40).unwrap();
    assert_eq!(r.dimensions(), (40, 40));
    assert_eq!(r.get_pixel(25, 5).0, [255, 255, 255]);
    assert_eq!(r.get_pixel(5, 25).0, [255, 255, 255]);
    let r = s.read_region(0, -10, -10, 20, 20).unwrap();
    assert_eq!(r.get_pixel(0, 0).0, [255, 255, 255]);
    let err = s.read_region(0, 2220, 0, 10, 10).unwrap_err();
    assert!(matches!(err, SlideError::RegionOutside { .. }));
    let msg = err.to_string();
    assert!(msg.contains("CMU-1-Small-Region.svs") && msg.contains("2220x2967"), "{msg}");
    assert!(matches!(s.read_region(0, 0, 0, 10, 0), Err(SlideError::EmptyRegion { .. })));
    assert!(matches!(s.read_region(1, 0, 0, 10, 10), Err(SlideError::NoSuchLevel { level: 1, count: 1, .. })));
    assert!(matches!(s.read_region(0, 0, 0, 1 << 20, 1 << 20), Err(SlideError::TooLarge { .. })));
}

#[test]
fn cmu_tissue_mask_on_thumbnail() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(cmu(&dir)).unwrap();
    let thumb = s.read_associated("thumbnail").unwrap();
    let ds = 2220.0 / thumb.width() as f64;
    let t = tissue_mask(&thumb, ds, s.mpp().mpp, &TissueParams::default());
    let f = t.tissue_fraction();
    assert!((0.2..0.7).contains(&f), "tissue fraction {f}");
    // Thumbnail points (looked at): glass vs the tissue strip.
    for (x, y) in [(100.0, 100.0), (520.0, 100.0), (60.0, 500.0), (540.0, 400.0)] {
        assert!(!t.contains(Point::new(x * ds, y * ds)), "background at thumbnail ({x}, {y})");
    }
    for (x, y) in [(270.0, 400.0), (200.0, 700.0), (300.0, 250.0), (250.0, 600.0)] {
        assert!(t.contains(Point::new(x * ds, y * ds)), "tissue at thumbnail ({x}, {y})");
    }
    // Area: the fraction of the 2220x2967 px region at 0.499 µm/px (1.64 mm²).
    let slide_mm2 = s.mpp().mpp.area_mm2(2220.0, 2967.0);
    assert!((t.area_mm2() - f * slide_mm2).abs() < 0.02 * slide_mm2, "{} vs {}", t.area_mm2(), f * slide_mm2);

    // The summary on this slide: a 2 mm² window does not fit 1.1 mm wide, so it is clipped.
    let pts = [Point::new(1000.0, 1500.0), Point::new(1100.0, 1600.0), Point::new(50.0, 50.0)];
    let sum = summarize(&pts, s.mpp().mpp, (2220.0, 2967.0), &HotspotParams::default(), Some(&t)).unwrap();
    assert_eq!(sum.count, 2, "the glass detection at (50, 50) is not counted");
    assert_eq!(sum.hotspot.count, 2);
    assert_eq!(sum.hotspot.width, 2220.0);
    assert!(sum.hotspot.area_mm2 < 2.0);
    assert_eq!(sum.hotspot_score.score, 1);
}

#[test]
fn small_svs() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(fixture(&dir, "small.svs")).unwrap();
    assert_eq!((s.vendor(), s.level_count(), s.dimensions(0)), ("aperio", 1, Some((16, 16))));
    assert!((s.mpp().mpp.get() - 0.499).abs() < 1e-3);
    assert_eq!(s.associated_names(), ["thumbnail"]);
    let r = s.read_region(0, 0, 0, 16, 16).unwrap();
    let th = s.read_associated("thumbnail").unwrap();
    assert_eq!(th.dimensions(), (16, 16));
    let d = mean_abs_diff_downsampled(&r, &th);
    assert!(d < 8.0, "level 0 vs thumbnail differ by {d}");
}

#[test]
fn boxes_tiff_pyramid_matches_png() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(fixture(&dir, "boxes.tiff")).unwrap();
    assert_eq!(s.vendor(), "generic-tiff");
    let dims: Vec<_> = (0..s.level_count()).map(|l| s.dimensions(l).unwrap()).collect();
    assert_eq!(dims, [(300, 250), (150, 125), (75, 62), (37, 31)]);
    assert_eq!(s.downsample(1), Some(2.0));
    assert!((s.downsample(3).unwrap() - 8.086).abs() < 1e-3);
    assert_eq!(s.best_level_for_downsample(3.0), 1);
    assert_eq!(s.best_level_for_downsample(100.0), 3);
    // Its resolution is a 72 dpi writer default: ignored, so mpp is guessed.
    assert!(s.mpp().mpp_guessed);
    let want = image::open(fixture(&dir, "boxes.png")).unwrap().to_rgb8();
    let got = s.read_region(0, 0, 0, 300, 250).unwrap();
    let worst = got.pixels().zip(want.pixels()).flat_map(|(a, b)| (0..3).map(move |c| a[c].abs_diff(b[c]))).max();
    assert_eq!(worst, Some(0), "boxes.tiff level 0 differs from boxes.png");
    // Every level: crops equal the same part of a whole-level read.
    for level in 0..s.level_count() {
        let (w, h) = s.dimensions(level).unwrap();
        let whole = s.read_region(level, 0, 0, w as u32, h as u32).unwrap();
        for (x, y, cw, ch) in [(0, 0, 7, 5), (w / 3, h / 4, (w / 2) as u32, (h / 2) as u32), (w - 3, h - 2, 3, 2)] {
            let r = s.read_region(level, x as i64, y as i64, cw, ch).unwrap();
            for (i, j, p) in r.enumerate_pixels() {
                assert_eq!(p, whole.get_pixel(x as u32 + i, y as u32 + j), "level {level}");
            }
        }
    }
}

/// The DICOM pair is small.svs converted to DICOM (PixelMed): level 0 as
/// JPEG with an Adobe marker saying RGB, the thumbnail uncompressed.
#[test]
fn dicom_series_reads_like_the_svs_it_was_converted_from() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let svs = open(fixture(&dir, "small.svs")).unwrap();
    let svs_level0 = svs.read_region(0, 0, 0, 16, 16).unwrap();
    // Either file of the series opens the same slide.
    for f in ["boxes_0.dcm", "boxes_1.dcm"] {
        let s = open(fixture(&dir, f)).unwrap();
        assert_eq!((s.vendor(), s.level_count(), s.dimensions(0)), ("dicom", 1, Some((16, 16))), "{f}");
        let m = s.mpp();
        assert_eq!((m.source, m.mpp_guessed), (MppSource::DicomPixelSpacing, false));
        assert!((m.mpp.get() - 0.499).abs() < 1e-6, "{}", m.mpp.get());
        assert_eq!(s.associated_names(), ["thumbnail"]);
        assert_eq!(s.properties().get("dicom.Manufacturer").map(String::as_str), Some("Leica Biosystems"));
        let level0 = s.read_region(0, 0, 0, 16, 16).unwrap();
        // The same JPEG data decoded as RGB: equal within rounding. A YCbCr
        // conversion of these RGB samples would be off by tens.
        let worst = level0.as_raw().iter().zip(svs_level0.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 2, "{f}: level 0 differs from small.svs by up to {worst}");
        let thumbnail = s.read_associated("thumbnail").unwrap();
        assert_eq!(thumbnail.dimensions(), (16, 16));
        let d = mean_abs_diff_downsampled(&level0, &thumbnail);
        assert!(d < 8.0, "{f}: level 0 vs thumbnail differ by {d}");
        // Edges pad white; wholly outside is an error naming the file.
        assert_eq!(s.read_region(0, 10, 10, 10, 10).unwrap().get_pixel(8, 8).0, [255, 255, 255]);
        let err = s.read_region(0, 16, 0, 4, 4).unwrap_err().to_string();
        assert!(err.contains(f), "{err}");
    }
}

#[test]
fn unreadable_svs_opens_but_reading_names_file_and_tile() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let s = open(fixture(&dir, "unreadable.svs")).unwrap();
    let err = s.read_region(0, 0, 0, 16, 16).unwrap_err();
    assert!(matches!(err, SlideError::Tile { level: 0, tile: 0, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("unreadable.svs") && msg.contains("level 0 tile 0"), "{msg}");
    let err = s.read_associated("thumbnail").unwrap_err().to_string();
    assert!(err.contains("unreadable.svs") && err.contains("IFD 1"), "{err}");
}

#[test]
fn unopenable_tiff_fails_on_open() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let err = open(fixture(&dir, "unopenable.tiff")).unwrap_err();
    assert!(matches!(err, SlideError::Unsupported { ifd: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("unopenable.tiff"), "{err}");
}

#[test]
fn truncated_and_garbage_files_fail_cleanly() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let bytes = std::fs::read(cmu(&dir)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The Aperio IFDs sit at the end of the file: cut, they are gone.
    for (name, len) in [("half.svs", bytes.len() / 2), ("header.svs", 8), ("four.svs", 4), ("empty.svs", 0)] {
        let p = tmp.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        let err = open(&p).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
        if len == 0 {
            assert!(err.contains("empty file, 0 bytes"), "said plainly, whatever the build: {err}");
        }
    }
    let p = tmp.path().join("noise.svs");
    std::fs::write(&p, b"this is not a slide at all").unwrap();
    let err = open(&p).map(|_| ()).unwrap_err();
    if cfg!(feature = "openslide") {
        assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
    } else {
        assert!(matches!(err, SlideError::UnsupportedFormat { .. }), "{err:?}");
    }
    let err = open(tmp.path().join("missing.svs")).map(|_| ()).unwrap_err();
    assert!(matches!(err, SlideError::Io { .. }) && err.to_string().contains("missing.svs"));
}

#[test]
fn corrupt_tile_fails_alone() {
    let dir = mitoscope_testdata::require_data!("wsi");
    let tmp = tempfile::tempdir().unwrap();
    let p = cmu_with_corrupt_tile(&dir, tmp.path(), 0);
    let s = open(&p).unwrap();
    assert!(s.read_region(0, 0, 0, 720, 240).is_ok(), "tiles 0-2 are intact");
    let err = s.read_region(0, 700, 100, 50, 50).unwrap_err();
    assert!(matches!(err, SlideError::Tile { tile: 3, col: 3, row: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("bad-tile.svs"), "{err}");
}

#[test]
fn openslide_open_with_needs_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.mrxs");
    std::fs::write(&p, b"[GENERAL]\n").unwrap();
    let err = mitoscope_slide::openslide::open_with(&p, &OpenOptions::default()).map(|_| ()).unwrap_err();
    assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("x.mrxs"), "{msg}");
    if !cfg!(feature = "openslide") {
        assert!(msg.contains("--features openslide") && msg.contains("libopenslide-dev"), "{msg}");
    }
}

/// The same files through OpenSlide (the system libopenslide, Debian's
/// 3.4.1): they must agree with the built-in reader, and broken files must
/// fail with errors that name them.
#[cfg(feature = "openslide")]
mod through_openslide {
    use super::*;
    use mitoscope_slide::Slide;
    use mitoscope_slide::openslide::OpenSlideSlide;

    /// Per-channel absolute differences of two images of the same size.
    fn channel_diffs(a: &RgbImage, b: &RgbImage) -> Vec<u8> {
        assert_eq!(a.dimensions(), b.dimensions());
        a.pixels().zip(b.pixels()).flat_map(|(p, q)| (0..3).map(move |c| p[c].abs_diff(q[c]))).collect()
    }

    /// Asserts two decodes of the same JPEG tiles agree up to decoder rounding
    /// (libjpeg-turbo in OpenSlide, zune-jpeg in ours: measured max 1, mean 0.01).
    fn assert_close(a: &RgbImage, b: &RgbImage, what: &str) {
        let d = channel_diffs(a, b);
        let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
        let max = d.iter().copied().max().unwrap_or(0);
        assert!(max <= 4 && mean < 0.1, "{what}: OpenSlide vs built-in differ by max {max}, mean {mean}");
    }

    #[test]
    fn cmu_agrees_with_the_builtin_reader() {
        let dir = mitoscope_testdata::require_data!("wsi");
        let ours = open(cmu(&dir)).unwrap();
        // `open` keeps Aperio with the built-in reader even with the feature on.
        assert!(!ours.properties().contains_key("openslide.vendor"));
        let os = OpenSlideSlide::open(cmu(&dir)).unwrap();
        assert_eq!(os.vendor(), "aperio");
        assert_eq!(os.properties()["openslide.vendor"], "aperio");
        assert_eq!(os.properties()["aperio.AppMag"], "20");
        assert_eq!(os.level_count(), ours.level_count());
        assert_eq!(os.levels(), ours.levels(), "dimensions, downsamples and tile sizes");
        assert_eq!(os.dimensions(0), Some((2220, 2967)));
        let (m, n) = (os.mpp(), ours.mpp());
        assert!((m.mpp.get() - n.mpp.get()).abs() < 1e-9, "{m:?} vs {n:?}");
        assert_eq!((m.source, m.mpp_guessed), (MppSource::OpenSlide, false));
        assert_eq!(os.objective_power(), Some(20.0));
        let o = OpenSlideSlide::open_with(
            cmu(&dir),
            &OpenOptions { mpp_override: Some(Mpp::new(0.25).unwrap()), ..Default::default() },
        )
        .unwrap();
        assert_eq!((o.mpp().mpp.get(), o.mpp().source), (0.25, MppSource::Override));

        // Regions: one straddling tile corners, one in the middle, the whole level.
        for (x, y, w, h) in [(230, 470, 300, 50), (1000, 1000, 512, 512), (0, 0, 2220, 2967)] {
            let a = os.read_region(0, x, y, w, h).unwrap();
            let b = ours.read_region(0, x, y, w, h).unwrap();
            assert_close(&a, &b, &format!("region {w}x{h} at ({x}, {y})"));
        }
        // Edges pad white as in the built-in reader; the same errors.
        let r = os.read_region(0, 2200, 2950, 40, 40).unwrap();
        assert_eq!((r.dimensions(), r.get_pixel(25, 5).0, r.get_pixel(5, 25).0), ((40, 40), [255; 3], [255; 3]));
        assert_close(&r, &ours.read_region(0, 2200, 2950, 40, 40).unwrap(), "bottom-right corner");
        let r = os.read_region(0, -10, -10, 20, 20).unwrap();
        assert_eq!(r.get_pixel(0, 0).0, [255; 3]);
        assert_close(&r, &ours.read_region(0, -10, -10, 20, 20).unwrap(), "top-left corner");
        let err = os.read_region(0, 2220, 0, 10, 10).unwrap_err();
        assert!(matches!(err, SlideError::RegionOutside { .. }), "{err:?}");
        assert!(err.to_string().contains("CMU-1-Small-Region.svs") && err.to_string().contains("2220x2967"), "{err}");
        assert!(matches!(os.read_region(0, 0, 0, 10, 0), Err(SlideError::EmptyRegion { .. })));
        assert!(matches!(os.read_region(1, 0, 0, 10, 10), Err(SlideError::NoSuchLevel { level: 1, count: 1, .. })));
        assert!(matches!(os.read_region(0, 0, 0, 1 << 20, 1 << 20), Err(SlideError::TooLarge { .. })));

        // Associated images: the same three (OpenSlide lists them sorted).
        let mut names = os.associated_names();
        names.sort();
        assert_eq!(names, ["label", "macro", "thumbnail"]);
        for name in &names {
            let a = os.read_associated(name).unwrap();
            let b = ours.read_associated(name).unwrap();
            assert_close(&a, &b, name);
        }
        let err = os.read_associated("overview").unwrap_err();
        assert!(matches!(err, SlideError::NoSuchAssociated { .. }) && err.to_string().contains("thumbnail"), "{err}");
    }

    #[test]
    fn boxes_pyramid_and_small_svs() {
        let dir = mitoscope_testdata::require_data!("wsi");
        let os = OpenSlideSlide::open(fixture(&dir, "boxes.tiff")).unwrap();
        let ours = open(fixture(&dir, "boxes.tiff")).unwrap();
        assert_eq!(os.vendor(), "generic-tiff");
        let dims: Vec<_> = (0..os.level_count()).map(|l| os.dimensions(l).unwrap()).collect();
        assert_eq!(dims, [(300, 250), (150, 125), (75, 62), (37, 31)]);
        for level in 0..4 {
            assert!((os.downsample(level).unwrap() - ours.downsample(level).unwrap()).abs() < 1e-9);
        }
        // Its 72 dpi resolution is implausible for a slide: guessed by both.
        assert!(os.mpp().mpp_guessed && ours.mpp().mpp_guessed);
        let want = image::open(fixture(&dir, "boxes.png")).unwrap().to_rgb8();
        assert_eq!(channel_diffs(&os.read_region(0, 0, 0, 300, 250).unwrap(), &want).iter().max(), Some(&0));
        // Lossless tiles: whole levels agree exactly; so do crops on the
        // integer-downsample levels (on the others OpenSlide's level-0
        // addressing puts the crop a fraction of a pixel off).
        for level in 0..4 {
            let (w, h) = os.dimensions(level).unwrap();
            let mut boxes = vec![(0, 0, w as u32, h as u32), (w - 3, h - 2, 3, 2)];
            if level < 2 {
                boxes.push((w / 3, h / 4, (w / 2) as u32, (h / 2) as u32));
            }
            for (x, y, cw, ch) in boxes {
                let a = os.read_region(level, x as i64, y as i64, cw, ch).unwrap();
                let b = ours.read_region(level, x as i64, y as i64, cw, ch).unwrap();
                assert_eq!(a, b, "level {level} region {cw}x{ch} at ({x}, {y})");
            }
        }

        let s = OpenSlideSlide::open(fixture(&dir, "small.svs")).unwrap();
        assert_eq!((s.vendor(), s.level_count(), s.dimensions(0)), ("aperio", 1, Some((16, 16))));
        assert!((s.mpp().mpp.get() - 0.499).abs() < 1e-3);
        assert_eq!(s.associated_names(), ["thumbnail"]);
        let ours = open(fixture(&dir, "small.svs")).unwrap();
        assert_close(
            &s.read_region(0, 0, 0, 16, 16).unwrap(),
            &ours.read_region(0, 0, 0, 16, 16).unwrap(),
            "small.svs",
        );
    }

    #[test]
    fn broken_fixtures_fail_with_clear_errors() {
        let dir = mitoscope_testdata::require_data!("wsi");
        // Corrupt tiles: opens, but every read fails and names the file and region.
        let s = OpenSlideSlide::open(fixture(&dir, "unreadable.svs")).unwrap();
        for _ in 0..2 {
            let err = s.read_region(0, 0, 0, 16, 16).unwrap_err();
            assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("unreadable.svs") && msg.contains("level 0 region 16x16 at (0, 0)"), "{msg}");
        }
        let err = s.read_associated("thumbnail").unwrap_err().to_string();
        assert!(err.contains("unreadable.svs") && err.contains("associated image 'thumbnail'"), "{err}");

        // Unsupported compression: fails on open.
        let err = OpenSlideSlide::open(fixture(&dir, "unopenable.tiff")).unwrap_err();
        assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("unopenable.tiff") && msg.to_lowercase().contains("compression"), "{msg}");

        // Cut and empty copies of a real slide: errors, never panics.
        let bytes = std::fs::read(cmu(&dir)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for (name, len) in [("half.svs", bytes.len() / 2), ("header.svs", 8), ("empty.svs", 0)] {
            let p = tmp.path().join(name);
            std::fs::write(&p, &bytes[..len]).unwrap();
            let err = OpenSlideSlide::open(&p).unwrap_err();
            assert!(matches!(err, SlideError::OpenSlide { .. }) && err.to_string().contains(name), "{err:?}");
        }
    }

    #[test]
    fn corrupt_tile_fails_alone_and_the_slide_recovers() {
        let dir = mitoscope_testdata::require_data!("wsi");
        let tmp = tempfile::tempdir().unwrap();
        // 0xff after the SOI marker: a bogus marker for libjpeg.
        let p = cmu_with_corrupt_tile(&dir, tmp.path(), 0xff);
        let s = OpenSlideSlide::open(&p).unwrap();
        let good = s.read_region(0, 0, 0, 720, 240).unwrap();
        let err = s.read_region(0, 700, 100, 50, 50).unwrap_err();
        assert!(matches!(err, SlideError::OpenSlide { .. }), "{err:?}");
        assert!(err.to_string().contains("bad-tile.svs") && err.to_string().contains("level 0"), "{err}");
        // OpenSlide refuses every call on a handle after an error; the slide
        // reopened it, so the intact tiles still read.
        assert_eq!(s.read_region(0, 0, 0, 720, 240).unwrap(), good);
    }

    #[test]
    fn regions_read_from_several_threads() {
        let dir = mitoscope_testdata::require_data!("wsi");
        let s = OpenSlideSlide::open(cmu(&dir)).unwrap();
        let boxes: Vec<(i64, i64)> = (0..8).map(|i| (i * 250, i * 350)).collect();
        let serial: Vec<RgbImage> = boxes.iter().map(|&(x, y)| s.read_region(0, x, y, 256, 256).unwrap()).collect();
        let s = &s;
        let parallel: Vec<RgbImage> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                boxes.iter().map(|&(x, y)| scope.spawn(move || s.read_region(0, x, y, 256, 256).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(serial, parallel);
    }
}
