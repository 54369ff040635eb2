//! The slide and HPF-set pipelines on synthetic inputs whose answers are
//! known: a "detector" that finds the dark figures the synthetic slide and
//! HPFs are drawn with (so counts, positions, tile-border merging, hotspot
//! and scores can be checked exactly), and the tiny untrained model for the
//! real detector path. Fast: seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{Rgb, RgbImage};
use mitoscope_detect::hpf_set::{
    HpfCount, HpfSetConfig, compare, read_truth, run_hpf_set, score_slides, write_hpf_outputs,
};
use mitoscope_detect::mitoscope_eval::score::FieldPreset;
use mitoscope_detect::mitoscope_slide::synthetic::{Rect, SyntheticSlide};
use mitoscope_detect::mitoscope_slide::{self, Level, MppInfo, Slide, SlideError};
use mitoscope_detect::slide_run::{DetectorInfo, SlideRunConfig, SlideRunError, detect_slide, run_slide, run_slides};
use mitoscope_detect::slide_table::{SLIDE_TABLE_COLUMNS, SLIDE_TABLE_FILE, update_slide_table};
use mitoscope_detect::{DetectError, DetectOptions, Detection, Detector, TileDetector};

/// Finds dark blobs (every channel below 100): one detection at each
/// 8-connected component's centroid, score 0.9.
struct DarkBlobs;

impl TileDetector for DarkBlobs {
    fn detect(
        &self,
        image: &RgbImage,
        _mpp: f64,
        _o: &DetectOptions,
        _keep: &(dyn Fn(f64, f64) -> bool + Sync),
    ) -> Result<Vec<Detection>, DetectError> {
        let mask = image::GrayImage::from_fn(image.width(), image.height(), |x, y| {
            let p = image.get_pixel(x, y);
            image::Luma([if p.0.iter().all(|&c| c < 100) { 255 } else { 0 }])
        });
        let labels = imageproc::region_labelling::connected_components(
            &mask,
            imageproc::region_labelling::Connectivity::Eight,
            image::Luma([0]),
        );
        let mut acc: BTreeMap<u32, (f64, f64, f64)> = BTreeMap::new();
        for (x, y, l) in labels.enumerate_pixels() {
            if l[0] > 0 {
                let e = acc.entry(l[0]).or_default();
                e.0 += x as f64;
                e.1 += y as f64;
                e.2 += 1.0;
            }
        }
        Ok(acc
            .values()
            .filter(|(_, _, n)| *n >= 4.0)
            .map(|&(sx, sy, n)| Detection {
                x: sx / n,
                y: sy / n,
                score: 0.9,
                candidate_score: 0.9,
                outline: Vec::new(),
            })
            .collect())
    }

    fn info(&self, _o: &DetectOptions) -> DetectorInfo {
        DetectorInfo {
            name: "dark-blobs".into(),
            model_mpp: 0.5,
            finest_mpp: 0.5,
            threshold: 0.5,
            min_distance_um: 5.0,
            default_input_mpp: 0.25,
        }
    }
}

/// Counts what is read through a slide.
struct Counting {
    inner: Box<dyn Slide>,
    reads_per_level: Vec<AtomicU64>,
    max_region_px: AtomicU64,
}

impl Counting {
    fn new(inner: Box<dyn Slide>) -> Self {
        let n = inner.level_count();
        Self { inner, reads_per_level: (0..n).map(|_| AtomicU64::new(0)).collect(), max_region_px: AtomicU64::new(0) }
    }
}

impl Slide for Counting {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn vendor(&self) -> &str {
        self.inner.vendor()
    }
    fn levels(&self) -> &[Level] {
        self.inner.levels()
    }
    fn mpp(&self) -> MppInfo {
        self.inner.mpp()
    }
    fn objective_power(&self) -> Option<f64> {
        self.inner.objective_power()
    }
    fn properties(&self) -> &std::collections::BTreeMap<String, String> {
        self.inner.properties()
    }
    fn associated_names(&self) -> Vec<String> {
        self.inner.associated_names()
    }
    fn read_associated(&self, name: &str) -> Result<RgbImage, SlideError> {
        self.inner.read_associated(name)
    }
    fn read_region(&self, level: usize, x: i64, y: i64, w: u32, h: u32) -> Result<RgbImage, SlideError> {
        if let Some(c) = self.reads_per_level.get(level) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.max_region_px.fetch_max(w as u64 * h as u64, Ordering::Relaxed);
        self.inner.read_region(level, x, y, w, h)
    }
}

fn large_slide(dir: &Path) -> (SyntheticSlide, PathBuf) {
    let spec = SyntheticSlide::large();
    let path = dir.join("synthetic-large.tiff");
    let stats = spec.write(&path).unwrap();
    // 3.6 GB of pixels at level 0, a few MB on disk.
    assert!(stats.bytes < 64 << 20, "{stats:?}");
    (spec, path)
}

#[test]
fn large_synthetic_slide_finds_every_figure_over_tissue_tiles_only() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = large_slide(dir.path());
    let slide = Counting::new(mitoscope_slide::open(&path).unwrap());
    let config = SlideRunConfig::default();
    let found = detect_slide(&slide, &DarkBlobs, &config).unwrap();

    // Level 1 (0.5 µm/px) is the model's resolution: level 0 (3.6 GB) is never read.
    assert_eq!(found.read_level, 1);
    assert_eq!(slide.reads_per_level[0].load(Ordering::Relaxed), 0, "level 0 was read");
    assert!(slide.reads_per_level[1].load(Ordering::Relaxed) > 0);
    // No read larger than 2048² px (12 MB; level 1 alone is 900 MB).
    assert!(slide.max_region_px.load(Ordering::Relaxed) <= 2048 * 2048);

    // Tiles over tissue only: between the tiles whose core meets a patch shrunk
    // by two mask pixels and those meeting it grown by two.
    let t = found.tiles;
    assert_eq!((t.side_px, t.overlap_px), (512, 64));
    let grid = mitoscope_detect::tiling::tile_grid(20_000, 15_000, 512, 64);
    assert_eq!(t.grid, grid.len());
    let ds_mask = found.tissue.downsample();
    let touching = |grow: f64| {
        grid.iter()
            .filter(|g| {
                spec.patches.iter().any(|p: &Rect| {
                    let (px0, py0) = (p.x as f64 - grow, p.y as f64 - grow);
                    let (px1, py1) = ((p.x + p.width) as f64 + grow, (p.y + p.height) as f64 + grow);
                    let (cx0, cx1) = (g.core_x.0 as f64 * 2.0, g.core_x.1 as f64 * 2.0);
                    let (cy0, cy1) = (g.core_y.0 as f64 * 2.0, g.core_y.1 as f64 * 2.0);
                    cx0 < px1 && px0 < cx1 && cy0 < py1 && py0 < cy1
                })
            })
            .count()
    };
    let (lo, hi) = (touching(-2.0 * ds_mask), touching(2.0 * ds_mask));
    assert!(lo <= t.processed && t.processed <= hi, "processed {} not in {lo}..={hi}", t.processed);
    assert!(t.processed * 5 < t.grid, "{} of {} tiles processed", t.processed, t.grid);

    // Every figure exactly once (several lie on tile borders), in level-0 px.
    assert_eq!(found.detections.len(), spec.figures.len(), "{:?}", found.detections);
    for &(fx, fy) in &spec.figures {
        let near = found.detections.iter().filter(|d| (d.x - fx).hypot(d.y - fy) < 3.0).count();
        assert_eq!(near, 1, "figure at ({fx}, {fy})");
    }
    // Tissue area: the three patches (30 + 35 + 12 mm² x 1e-6 ... at 0.25 µm/px).
    let patches_mm2: f64 = spec.patches.iter().map(|p| p.width as f64 * p.height as f64 * 0.0625e-6).sum();
    let area = found.tissue.area_mm2();
    assert!((area - patches_mm2).abs() < 0.05 * patches_mm2, "tissue {area} vs {patches_mm2} mm²");
}

/// Stage 2 and the mask head read finer pixels than stage 1: on the large
/// synthetic slide (0.25 µm/px, level 1 at 0.5) the embedded model is read
/// at level 0 although its stage 1 works at 0.5 µm/px, so no network sees
/// upsampled crops; a detector that reads 0.5 µm/px only gets level 1.
#[test]
fn the_level_read_serves_the_finest_network() {
    let device = mitoscope_detect::parse_device("cpu").unwrap();
    let detector = Detector::new(mitoscope_detect::ModelBundle::embedded(&device).unwrap(), device);
    let info = detector.info(&DetectOptions::default());
    assert!(info.finest_mpp < info.model_mpp, "{info:?}");
    assert!(info.finest_mpp <= detector.bundle().classifier_config.mpp, "{info:?}");
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = large_slide(dir.path());
    let slide = mitoscope_slide::open(&path).unwrap();
    assert_eq!(mitoscope_detect::slide_run::read_level_for(slide.as_ref(), info.finest_mpp), 0);
    assert_eq!(mitoscope_detect::slide_run::read_level_for(slide.as_ref(), info.model_mpp), 1);
    let blobs = DarkBlobs.info(&DetectOptions::default());
    assert_eq!(mitoscope_detect::slide_run::read_level_for(slide.as_ref(), blobs.finest_mpp), 1);
}

#[test]
fn run_slide_writes_outputs_and_a_rerun_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, path) = large_slide(dir.path());
    let out = dir.path().join("out");
    let r = run_slide(&path, &DarkBlobs, &out, &SlideRunConfig::default()).unwrap();
    assert_eq!(r.mitoses, spec.figures.len());
    assert_eq!((r.read_level, r.mpp, r.mpp_guessed), (1, 0.25, false));
    // The hotspot (2 mm², a 5657-px square) holds the 12-figure cluster and
    // the 5 other figures of the first patch; 17 in 2 mm² is score 3.
    assert_eq!(r.hotspot.count, 17);
    assert!(r.hotspot.tissue_fraction.unwrap() >= 0.5, "{:?}", r.hotspot);
    assert!((r.hotspot.area_mm2 - 2.0).abs() < 1e-6);
    for &(fx, fy) in &spec.figures[..12] {
        assert!(
            fx >= r.hotspot.x
                && fx < r.hotspot.x + r.hotspot.width
                && fy >= r.hotspot.y
                && fy < r.hotspot.y + r.hotspot.height
        );
    }
    assert_eq!(r.mitotic_score.score, 3);
    assert_eq!(r.top_fields.len(), 10);
    assert_eq!(r.top_fields[0].count, 12);
    assert!((20..=24).contains(&r.top_fields_count), "{}", r.top_fields_count);
    assert_eq!(r.model.name, "dark-blobs");
    assert!(r.warnings.is_empty(), "the protocol's area, all on tissue: {:?}", r.warnings);
    // detections.csv recounts to the summary's fields (positions written exactly, not rounded).
    let csv = std::fs::read_to_string(out.join("synthetic-large/detections.csv")).unwrap();
    let points: Vec<mitoscope_geom::Point> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<f64> = l.split(',').skip(1).map(|v| v.parse().unwrap()).collect();
            mitoscope_geom::Point::new(f[0], f[1])
        })
        .collect();
    for field in r.top_fields.iter().chain([&r.hotspot]) {
        assert_eq!(points.iter().filter(|p| field.contains(p)).count(), field.count, "{field:?}");
    }

    let folder = out.join("synthetic-large");
    let csv = std::fs::read_to_string(folder.join("detections.csv")).unwrap();
    assert!(csv.starts_with("image,x,y,score\n"));
    assert_eq!(csv.lines().count(), 1 + 24);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["mitoses"], 24);
    assert_eq!(summary["mpp_source"], "tiff_resolution");
    assert_eq!(summary["mitotic_score"]["score"], 3);
    assert!(summary["mitotic_score"]["row"]["field_diameter_mm"].as_f64().is_some());
    let geo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("detections.geojson")).unwrap()).unwrap();
    assert_eq!(geo["features"].as_array().unwrap().len(), 24);
    let asap = mitoscope_formats::read(&folder.join("detections.xml"), None, &Default::default()).unwrap();
    assert_eq!((asap.images[0].image.as_str(), asap.images[0].objects.len()), ("synthetic-large", 24));
    let midog = std::fs::read_to_string(folder.join("midog.json")).unwrap();
    assert!(midog.contains("\"points\""), "{midog}");
    let thumb = image::open(folder.join("thumbnail.png")).unwrap().to_rgb8();
    // Hotspot drawn in blue, tissue outline in green.
    assert!(thumb.pixels().any(|p| p.0 == [0, 60, 255]));
    assert!(thumb.pixels().any(|p| p.0 == [0, 170, 0]));

    // A stale file from an earlier run disappears, and so does the temporary
    // folder of a run killed while writing; nothing else is left around.
    std::fs::write(folder.join("stale.txt"), "old").unwrap();
    let killed = out.join(".synthetic-large.partial-Ab12Cd");
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::write(killed.join("detections.csv"), "image,x,y,score\n").unwrap();
    // Another slide's temporary folder is not this run's to remove.
    let other = out.join(".synthetic-large-2.partial-Ab12Cd");
    std::fs::create_dir_all(&other).unwrap();
    run_slide(&path, &DarkBlobs, &out, &SlideRunConfig::default()).unwrap();
    assert!(!folder.join("stale.txt").exists());
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, [".synthetic-large-2.partial-Ab12Cd", "synthetic-large"], "temporary folders left: {names:?}");
    // A foreign folder of the same name is not replaced.
    let foreign = dir.path().join("out2/synthetic-large");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("mine.txt"), "keep").unwrap();
    let err = run_slide(&path, &NeverCalled, &dir.path().join("out2"), &SlideRunConfig::default()).unwrap_err();
    assert!(err.to_string().contains("not a Mitoscope slide output"), "{err}");
    assert!(foreign.join("mine.txt").exists());
}

/// A detector that must not run: the run is refused before any tile is read.
struct NeverCalled;

impl TileDetector for NeverCalled {
    fn detect(
        &self,
        _image: &RgbImage,
        _mpp: f64,
        _o: &DetectOptions,
        _keep: &(dyn Fn(f64, f64) -> bool + Sync),
    ) -> Result<Vec<Detection>, DetectError> {
        panic!("detection ran although its outputs could not be written")
    }
    fn info(&self, options: &DetectOptions) -> DetectorInfo {
        DarkBlobs.info(options)
    }
}

#[test]
fn bad_slides_fail_alone_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    // All glass: no tissue.
    let glass = SyntheticSlide { patches: vec![], figures: vec![], ..small_spec() };
    let glass_path = dir.path().join("glass.tiff");
    glass.write(&glass_path).unwrap();
    let good_path = dir.path().join("good.tiff");
    small_spec().write(&good_path).unwrap();
    let garbage = dir.path().join("garbage.svs");
    std::fs::write(&garbage, b"II*\0 but nothing else").unwrap();
    let dup = dir.path().join("again");
    std::fs::create_dir_all(&dup).unwrap();
    let dup_path = dup.join("good.tiff");
    small_spec().write(&dup_path).unwrap();
    let out = dir.path().join("out");
    let paths = [glass_path.clone(), garbage.clone(), good_path.clone(), dup_path.clone()];
    let results = run_slides(&paths, &DarkBlobs, &out, &SlideRunConfig::default());
    let msg = |i: usize| results[i].1.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(results[0].1, Err(SlideRunError::NoTissue { .. })) && msg(0).contains("glass.tiff"), "{}", msg(0));
    assert!(msg(1).contains("garbage.svs"), "{}", msg(1));
    assert_eq!(results[2].1.as_ref().unwrap().mitoses, 2);
    assert!(msg(3).contains("same name 'good'"), "{}", msg(3));
    assert!(out.join("good/summary.json").is_file());
    assert!(!out.join("glass").exists());

    // Absurd resolutions: an override of 40 µm/px, and a slide that states 1e-4.
    let cfg = SlideRunConfig { mpp_override: Some(40.0), ..SlideRunConfig::default() };
    let err = run_slide(&good_path, &DarkBlobs, &out, &cfg).unwrap_err().to_string();
    assert!(err.contains("good.tiff") && err.contains("40"), "{err}");
    let cfg = SlideRunConfig { mpp_override: Some(f64::NAN), ..SlideRunConfig::default() };
    assert!(run_slide(&good_path, &DarkBlobs, &out, &cfg).is_err());
}

#[test]
fn a_slide_smaller_than_the_hotspot_says_so() {
    // 0.375 mm² in all: neither a 2 mm² hotspot nor 10 fields fit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.tiff");
    small_spec().write(&path).unwrap();
    let r = run_slide(&path, &DarkBlobs, &dir.path().join("out"), &SlideRunConfig::default()).unwrap();
    let all = r.warnings.join(" | ");
    assert!(all.contains("less than the 2.00 mm² asked") && all.contains("of the 10 top fields"), "{all}");
    let summary = std::fs::read_to_string(dir.path().join("out/small/summary.json")).unwrap();
    assert!(summary.contains("less than the 2.00 mm"), "the warnings are in summary.json");
}

fn small_spec() -> SyntheticSlide {
    SyntheticSlide {
        width: 3000,
        height: 2000,
        mpp: 0.25,
        tile: 256,
        downsamples: vec![1, 4],
        patches: vec![Rect { x: 500, y: 400, width: 1500, height: 1000 }],
        figures: vec![(800.0, 700.0), (1700.0, 1200.0)],
        figure_radius: 16.0,
    }
}

#[test]
fn tiny_model_runs_over_a_slide_and_is_deterministic() {
    let device = mitoscope_detect::parse_device("cpu").unwrap();
    let detector = Detector::new(mitoscope_detect::fixtures::tiny_untrained_bundle(&device, 40.0), device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.tiff");
    small_spec().write(&path).unwrap();
    let slide = mitoscope_slide::open(&path).unwrap();
    let cfg = SlideRunConfig::default();
    let a = detect_slide(slide.as_ref(), &detector, &cfg).unwrap();
    let b = detect_slide(slide.as_ref(), &detector, &cfg).unwrap();
    assert_eq!(a.detections, b.detections);
    assert!(!a.detections.is_empty());
    // Level 0 is 0.25 µm/px, no level matches 0.5: level 0 is read and downsampled.
    assert_eq!(a.read_level, 0);
    for d in &a.detections {
        assert!(a.tissue.contains(mitoscope_geom::Point::new(d.x, d.y)), "{d:?} off tissue");
    }
    // No two detections closer than the model's 40 µm (160 px) merge distance.
    for (i, p) in a.detections.iter().enumerate() {
        for q in &a.detections[i + 1..] {
            assert!((p.x - q.x).hypot(p.y - q.y) >= 160.0 - 1e-9);
        }
    }
}

// ---------- HPF sets ----------

fn hpf(count: usize, name: &str, slide: &str) -> HpfCount {
    HpfCount { image: name.into(), slide: slide.into(), count, area_mm2: 0.2, size: (100, 100), truth_count: None }
}

#[test]
fn top_n_hpfs_and_scores_from_known_counts() {
    // Slide A: 12 HPFs with counts 0..11; top 10 = 2..=11 = 65 in 2 mm² -> score 3 (row 0.50: > 14).
    let mut hpfs: Vec<HpfCount> = (0..12).map(|i| hpf(i, &format!("A_{i:02}"), "A")).collect();
    // Slide B: 3 HPFs with 1 each: 3 in 0.6 mm² -> 10 per 2 mm² -> score 2.
    hpfs.extend((0..3).map(|i| hpf(1, &format!("B_{i}"), "B")));
    // Slide C: 10 HPFs with 0 or 1: 5 in 2 mm² -> score 1.
    hpfs.extend((0..10).map(|i| hpf(i % 2, &format!("C_{i}"), "C")));
    let s = score_slides(&hpfs, 10, None).unwrap();
    assert_eq!(s.iter().map(|x| x.slide.as_str()).collect::<Vec<_>>(), ["A", "B", "C"]);
    assert_eq!((s[0].count, s[0].top_hpfs.len(), s[0].hpfs_total), (65, 10, 12));
    assert_eq!(s[0].top_hpfs[0].image, "A_11");
    assert!((s[0].area_mm2 - 2.0).abs() < 1e-12);
    assert_eq!(s[0].score.score, 3);
    assert_eq!((s[1].count, s[1].top_hpfs.len()), (3, 3));
    assert_eq!(s[1].score.score, 2);
    assert_eq!((s[2].count, s[2].score.score), (5, 1));
    // Fields from a diameter: 0.55 mm row.
    let d = score_slides(&hpfs, 10, Some(FieldPreset::Diameter(0.55))).unwrap();
    assert_eq!(d[0].score.row.field_diameter_mm, 0.55);
    assert!(score_slides(&hpfs, 0, None).is_err());
}

/// An HPF of `side` px with `n` dark figures on a pink background.
fn hpf_image(n: usize, side: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(side, side, Rgb([225, 150, 190]));
    for i in 0..n {
        let (cx, cy) = (40 + (i as i32 % 5) * 70, 40 + (i as i32 / 5) * 70);
        imageproc::drawing::draw_filled_circle_mut(&mut img, (cx, cy), 8, Rgb([40, 20, 60]));
    }
    img
}

#[test]
fn hpf_folder_grouped_scored_and_compared_with_truth() {
    let dir = tempfile::tempdir().unwrap();
    let hpfs = dir.path().join("hpfs");
    std::fs::create_dir_all(&hpfs).unwrap();
    // Three HPFs per slide with known figure counts; the top 2 count.
    let counts = [("S1", [9, 1, 0]), ("S2", [0, 0, 0]), ("S3", [1, 0, 0])];
    for (slide, cs) in counts {
        for (i, c) in cs.iter().enumerate() {
            hpf_image(*c, 400).save(hpfs.join(format!("{slide}_{i:02}.png"))).unwrap();
        }
    }
    std::fs::write(hpfs.join("broken_00.png"), b"not a png").unwrap();
    let truth = dir.path().join("truth.csv");
    std::fs::write(&truth, "slide,score,notes\nS1,3,x\nS2,1,\nS3,1,\nS9,2,\n").unwrap();
    // 0.01 mm² per field is outside the score table: score against 0.2 mm² fields.
    let cfg = HpfSetConfig { n_hpfs: 2, field: Some(FieldPreset::Area(0.2)), ..HpfSetConfig::default() };
    let (report, images) = run_hpf_set(&DarkBlobs, &hpfs, Some(&truth), &cfg).unwrap();
    let by: BTreeMap<&str, (usize, u8)> =
        report.slides.iter().map(|s| (s.slide.as_str(), (s.count, s.score.score))).collect();
    // 10 in 2 x 0.2 mm² = 50 per 10 fields: 3; 0: 1; 1 in 0.4 mm²: 5 per 10 fields: 1.
    assert_eq!(by["S1"], (10, 3));
    assert_eq!(by["S2"], (0, 1));
    assert_eq!(by["S3"], (1, 1));
    assert!(!by.contains_key("broken"), "the unreadable HPF is a failure, not a slide");
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].1.contains("broken_00.png"), "{:?}", report.failures);
    let c = report.comparison.as_ref().unwrap();
    assert_eq!((c.slides, c.agreement), (3, 1.0));
    assert_eq!((c.kappa, c.weighted_kappa), (1.0, 1.0));
    assert_eq!(c.missing_predictions, ["S9"]);
    assert_eq!(c.confusion, [[2, 0, 0], [0, 0, 0], [0, 0, 1]]);

    // Disagreement: truth says S2 is 3.
    let mut slides = report.slides.clone();
    let t: BTreeMap<String, u8> = [("S1", 3), ("S2", 3), ("S3", 1)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let c = compare(&mut slides, &t).unwrap();
    assert!((c.agreement - 2.0 / 3.0).abs() < 1e-12);
    // Cohen: p_o = 2/3; truth (3,3,1), pred (3,1,1): p_e = (2*1 + 1*2)/9 = 4/9; kappa = (2/3 - 4/9)/(5/9) = 0.4.
    assert!((c.kappa - 0.4).abs() < 1e-12, "{}", c.kappa);
    assert!(c.weighted_kappa < 1.0);

    // A regex grouping: everything in one slide.
    let cfg1 = HpfSetConfig {
        group: Some(r"^(S)\d_\d+$".into()),
        n_hpfs: 2,
        field: Some(FieldPreset::Area(0.2)),
        ..HpfSetConfig::default()
    };
    let (one, _) = run_hpf_set(&DarkBlobs, &hpfs, None, &cfg1).unwrap();
    assert_eq!(one.slides.len(), 1);
    assert_eq!((one.slides[0].slide.as_str(), one.slides[0].count, one.slides[0].hpfs_total), ("S", 10, 9));
    // A pattern no name matches: said so, with a name it was tried on.
    let none = HpfSetConfig { group: Some(r"^case(\d+)-\d+$".into()), ..cfg1.clone() };
    let err = run_hpf_set(&DarkBlobs, &hpfs, None, &none).unwrap_err().to_string();
    assert!(err.contains("none of its") && err.contains("--group '^case") && err.contains("e.g. S1_"), "{err}");

    let out = dir.path().join("out");
    write_hpf_outputs(&out, &report, &images).unwrap();
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("slide,hpfs,hpfs_used,count,area_mm2,score,truth,subset,annotated_count,annotated_score,split_scores")
    );
    assert!(csv.contains("\nS1,3,2,10,0.4000,3,3,,,,\n"), "{csv}");
    let dets = std::fs::read_to_string(out.join("detections.csv")).unwrap();
    assert_eq!(dets.lines().count(), 1 + 9 + 1 + 1);
}

#[test]
fn truth_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    assert_eq!(read_truth(&w("ok.csv", "score,slide\n2,A\n")).unwrap()["A"], 2);
    // Quoted names, as `score` writes them, read back; blank lines are skipped.
    let quoted = read_truth(&w("q.csv", "slide,score\n\"W,1\",3\n\n\"W\"\"2\",2\n")).unwrap();
    assert_eq!((quoted["W,1"], quoted["W\"2"]), (3, 2));
    for (name, text, needle) in [
        ("nohead.csv", "A,2\n", "lacks"),
        ("four.csv", "slide,score\nA,4\n", "line 2"),
        ("dup.csv", "slide,score\nA,1\nA,2\n", "twice"),
        ("empty.csv", "", "empty"),
    ] {
        let err = read_truth(&w(name, text)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(needle), "{err}");
    }
    let err = read_truth(&dir.path().join("missing.csv")).unwrap_err().to_string();
    assert!(err.contains("missing.csv"), "{err}");
}

/// `slides.csv` as (slide -> column -> value).
fn read_table(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, SLIDE_TABLE_COLUMNS);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let row: BTreeMap<String, String> = header.iter().cloned().zip(rec.iter().map(str::to_owned)).collect();
            (row["slide"].clone(), row)
        })
        .collect()
}

#[test]
fn the_slide_table_lists_every_slide_and_keeps_failures() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.tiff");
    small_spec().write(&good).unwrap();
    let other = dir.path().join("other.tiff");
    SyntheticSlide { figures: vec![(800.0, 700.0)], ..small_spec() }.write(&other).unwrap();
    let garbage = dir.path().join("garbage.svs");
    std::fs::write(&garbage, b"II*\0 but nothing else").unwrap();
    let dup = dir.path().join("again");
    std::fs::create_dir_all(&dup).unwrap();
    let dup_good = dup.join("good.tiff");
    std::fs::copy(&other, &dup_good).unwrap();
    let out = dir.path().join("out");
    let table_file = out.join(SLIDE_TABLE_FILE);
    let truth: BTreeMap<String, u8> =
        [("good", 2), ("other", 3), ("garbage", 2)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let cfg = SlideRunConfig::default();

    let run = run_slides(&[good.clone(), garbage.clone(), other.clone(), dup_good], &DarkBlobs, &out, &cfg);
    let table = update_slide_table(&out, &run, Some(&truth)).unwrap();
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    let rows = read_table(&table_file);
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["garbage", "good", "other"]);
    // The same-named second file failed without turning the done slide into a failure.
    assert_eq!((rows["good"]["status"].as_str(), rows["good"]["mitoses"].as_str()), ("done", "2"));
    assert_eq!((rows["other"]["mitoses"].as_str(), rows["other"]["mpp_source"].as_str()), ("1", "tiff_resolution"));
    assert_eq!(rows["garbage"]["status"], "failed");
    assert!(rows["garbage"]["error"].contains("garbage.svs") && rows["garbage"]["mitoses"].is_empty());
    assert_eq!(rows["garbage"]["truth_score"], "2");
    let scores: Vec<u8> = ["good", "other"].iter().map(|s| rows[*s]["mitotic_score"].parse().unwrap()).collect();
    // 2 and 1 figures in the whole 0.375 mm² slide: 10.7 and 5.3 per 2 mm².
    assert_eq!(scores, [2, 1]);
    // Truth 2 and 3 against 2 and 1; the failed slide has no prediction.
    let c = table.comparison.as_ref().unwrap();
    assert_eq!((c.slides, c.agreement), (2, 0.5));
    assert_eq!(c.confusion, [[0, 0, 0], [0, 1, 0], [1, 0, 0]]);
    assert_eq!(c.missing_predictions, ["garbage"]);

    // A later run of one slide keeps the others: done ones from their folders,
    // the failed one from the previous table.
    let run = run_slides(std::slice::from_ref(&other), &DarkBlobs, &out, &cfg);
    let table = update_slide_table(&out, &run, None).unwrap();
    assert_eq!(table.comparison, None);
    let rows = read_table(&table_file);
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["garbage", "good", "other"]);
    assert!(rows["garbage"]["error"].contains("garbage.svs"), "{:?}", rows["garbage"]);
    assert_eq!((rows["good"]["mitoses"].as_str(), rows["good"]["truth_score"].as_str()), ("2", ""));

    // The latest attempt wins: a slide that now fails is a failed row even
    // though its earlier output folder is still there (and left alone).
    let absurd = SlideRunConfig { mpp_override: Some(40.0), ..SlideRunConfig::default() };
    let run = run_slides(std::slice::from_ref(&good), &DarkBlobs, &out, &absurd);
    update_slide_table(&out, &run, None).unwrap();
    let rows = read_table(&table_file);
    assert_eq!(rows["good"]["status"], "failed");
    assert!(rows["good"]["error"].contains("good.tiff"), "{:?}", rows["good"]);
    assert!(out.join("good/summary.json").is_file());
    // ... and stays failed when later runs do other slides: the older folder
    // does not bring it back as done.
    let run = run_slides(std::slice::from_ref(&other), &DarkBlobs, &out, &cfg);
    update_slide_table(&out, &run, None).unwrap();
    assert_eq!(read_table(&table_file)["good"]["status"], "failed");

    // Two files of one name that both fail: one row with both errors.
    let twin_a = dir.path().join("ta");
    let twin_b = dir.path().join("tb");
    for d in [&twin_a, &twin_b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("twin.svs"), b"not a slide").unwrap();
    }
    let run = run_slides(&[twin_a.join("twin.svs"), twin_b.join("twin.svs")], &DarkBlobs, &out, &cfg);
    update_slide_table(&out, &run, None).unwrap();
    let error = &read_table(&table_file)["twin"]["error"];
    assert!(error.contains("ta/twin.svs") && error.contains("tb/twin.svs") && error.contains("same name"), "{error}");
    // A slide file named like the table fails before it is read.
    let named = dir.path().join("slides.csv.tiff");
    small_spec().write(&named).unwrap();
    let run = run_slides(std::slice::from_ref(&named), &DarkBlobs, &out, &cfg);
    assert!(run[0].1.as_ref().unwrap_err().to_string().contains("the slide table's name"));

    // An unreadable summary is a warning naming the file.
    std::fs::create_dir_all(out.join("junk")).unwrap();
    std::fs::write(out.join("junk/summary.json"), "{").unwrap();
    let table = update_slide_table(&out, &[], None).unwrap();
    assert_eq!(table.warnings.len(), 1, "{:?}", table.warnings);
    assert!(table.warnings[0].contains("junk/summary.json"), "{:?}", table.warnings);
    // A slides.csv this tool did not write is refused, before a run and
    // after one, and left as it was.
    std::fs::write(&table_file, "slide,status\n\"unclosed").unwrap();
    let err = mitoscope_detect::slide_table::check_slide_table(&out).unwrap_err().to_string();
    assert!(err.contains(SLIDE_TABLE_FILE) && err.contains("left alone"), "{err}");
    assert!(update_slide_table(&out, &[], None).is_err());
    assert_eq!(std::fs::read_to_string(&table_file).unwrap(), "slide,status\n\"unclosed");
}

/// A binary mask with the first `n` figures of [`hpf_image`] drawn.
fn hpf_mask(n: usize, side: u32) -> image::GrayImage {
    let mut mask = image::GrayImage::new(side, side);
    for i in 0..n {
        let (cx, cy) = (40 + (i as i32 % 5) * 70, 40 + (i as i32 / 5) * 70);
        imageproc::drawing::draw_filled_circle_mut(&mut mask, (cx, cy), 8, image::Luma([255]));
    }
    mask
}

/// Writes `root/<rel>/images/<name>.png` with `figures` figures and, where
/// `annotated` is given, `root/<rel>/masks/<name>.png` with that many.
fn dataset_hpf(root: &Path, rel: &str, name: &str, figures: usize, annotated: Option<usize>) {
    let dir = root.join(rel);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    hpf_image(figures, 400).save(dir.join("images").join(format!("{name}.png"))).unwrap();
    if let Some(n) = annotated {
        std::fs::create_dir_all(dir.join("masks")).unwrap();
        hpf_mask(n, 400).save(dir.join("masks").join(format!("{name}.png"))).unwrap();
    }
}

#[test]
fn a_gzmh_v2_dataset_is_scored_per_slide_folder_against_its_masks_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("GZMH_V2");
    // A train slide whose folder name a test slide shares; a 1-or-2 slide; a
    // score-3 slide whose masks hold one figure fewer than its images.
    dataset_hpf(&root, "train/WSI01", "001", 2, Some(2));
    dataset_hpf(&root, "test_1or2_score/WSI01", "001", 1, Some(1));
    dataset_hpf(&root, "test_1or2_score/WSI01", "002", 0, Some(0));
    dataset_hpf(&root, "test_3_score/WSI02", "001", 9, Some(8));
    dataset_hpf(&root, "test_3_score/WSI02", "002", 3, Some(3));
    let cfg = HpfSetConfig { n_hpfs: 2, field: Some(FieldPreset::Area(0.2)), ..HpfSetConfig::default() };
    let (report, images) = run_hpf_set(&DarkBlobs, &root, None, &cfg).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let by: BTreeMap<&str, &mitoscope_detect::hpf_set::SlideScore> =
        report.slides.iter().map(|s| (s.slide.as_str(), s)).collect();
    // The folder names a slide; alike names in two splits stay two slides.
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), ["WSI02", "test_1or2_score/WSI01", "train/WSI01"]);
    let s = by["WSI02"];
    // 12 found in 2 x 0.2 mm² -> score 3; annotated 11 -> score 3.
    assert_eq!((s.count, s.score.score, s.annotated_count, s.annotated_score), (12, 3, Some(11), Some(3)));
    assert_eq!((s.subset.as_deref(), s.split_scores.as_deref()), (Some("test_3_score"), Some(&[3u8][..])));
    let s = by["test_1or2_score/WSI01"];
    assert_eq!((s.count, s.score.score, s.annotated_count), (1, 1, Some(1)));
    assert_eq!(s.split_scores.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!((by["train/WSI01"].split_scores.as_ref(), by["train/WSI01"].annotated_count), (None, Some(2)));
    // Truth from the annotations: all three agree.
    assert_eq!(report.truth_source.as_deref(), Some("annotations"));
    let c = report.comparison.as_ref().unwrap();
    assert_eq!((c.slides, c.agreement), (3, 1.0));
    let split = report.split_agreement.as_ref().unwrap();
    assert_eq!((split.slides, split.agreement), (2, 1.0));
    assert_eq!(split.predicted["test_3_score"], [0, 0, 1]);
    assert_eq!(split.predicted["test_1or2_score"], [1, 0, 0]);
    // Counts: off by +1 on WSI02 only.
    let counts = report.count_agreement.as_ref().unwrap();
    assert_eq!(counts.slides, 3);
    assert!((counts.mean_error - 1.0 / 3.0).abs() < 1e-12 && (counts.mean_abs_error - 1.0 / 3.0).abs() < 1e-12);
    // HPFs carry the dataset's ids, so detections.csv evaluates against it.
    let ids: Vec<&str> = images.iter().map(|i| i.image.as_str()).collect();
    assert!(ids.contains(&"test_3_score/WSI02/images/001"), "{ids:?}");
    assert!(report.notes[0].contains("read as a dataset: 5 HPFs in 3 slides"), "{:?}", report.notes);

    // The split folder alone, one slide in it: the folder below the split is
    // still the slide, and the split's name still gives the allowed scores.
    let (alone, _) = run_hpf_set(&DarkBlobs, &root.join("test_3_score"), None, &cfg).unwrap();
    assert_eq!(alone.slides.iter().map(|s| s.slide.as_str()).collect::<Vec<_>>(), ["WSI02"]);
    assert_eq!(alone.split_agreement.as_ref().map(|a| a.slides), Some(1));
    assert_eq!(alone.slides[0].subset.as_deref(), Some("test_3_score"), "the split given is the subset");
    assert!(alone.notes[0].contains("2 HPFs in 1 slide,"), "{:?}", alone.notes);
    // A flat split folder reached by a path whose last part is not its name
    // (`score .` inside it; here `test_3_score/sub/..`) still names the split.
    let flat = dir.path().join("flat/test_3_score");
    std::fs::create_dir_all(flat.join("sub")).unwrap();
    hpf_image(9, 400).save(flat.join("W1_01.png")).unwrap();
    let (flat_report, _) = run_hpf_set(&DarkBlobs, &flat.join("sub/.."), None, &cfg).unwrap();
    assert_eq!(flat_report.slides[0].split_scores.as_deref(), Some(&[3u8][..]));
    assert_eq!(
        flat_report.split_agreement.as_ref().map(|a| a.predicted.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["test_3_score".to_owned()])
    );

    // An explicit --truth wins over the annotations.
    let truth = dir.path().join("truth.csv");
    std::fs::write(&truth, "slide,score\nWSI02,2\n").unwrap();
    let (with_truth, _) = run_hpf_set(&DarkBlobs, &root, Some(&truth), &cfg).unwrap();
    assert_eq!(with_truth.truth_source.as_deref(), Some(truth.display().to_string().as_str()));
    assert_eq!(with_truth.comparison.as_ref().unwrap().agreement, 0.0);
}

#[test]
fn split_names_give_the_scores_they_allow() {
    use mitoscope_detect::hpf_set::split_scores;
    assert_eq!(split_scores("test_1or2_score"), Some(vec![1, 2]));
    assert_eq!(split_scores("test_3_score"), Some(vec![3]));
    assert_eq!(split_scores("Test-1-or-2-Score"), Some(vec![1, 2]));
    assert_eq!(split_scores("train"), None);
    assert_eq!(split_scores("test_score"), None);
    assert_eq!(split_scores("test_4_score"), None);
    assert_eq!(split_scores("WSI04"), None);
}

#[test]
fn hpf_folder_edge_cases_fail_alone_and_outputs_are_owned() {
    use mitoscope_detect::hpf_set::check_hpf_out;
    let dir = tempfile::tempdir().unwrap();
    let hpfs = dir.path().join("hpfs");
    std::fs::create_dir_all(&hpfs).unwrap();
    // Slide A: one full field; `A_01` twice, as PNG and JPEG-free BMP.
    hpf_image(2, 2000).save(hpfs.join("A_01.png")).unwrap();
    hpf_image(1, 2000).save(hpfs.join("A_01.bmp")).unwrap();
    // Slide "B,x": a 400 px crop at 0.25 µm/px is 0.01 mm², outside the score table.
    hpf_image(1, 400).save(hpfs.join("B,x_01.png")).unwrap();
    // Slide C: one HPF read, one not.
    hpf_image(0, 2000).save(hpfs.join("C_01.png")).unwrap();
    std::fs::write(hpfs.join("C_02.png"), b"truncated").unwrap();
    let cfg = HpfSetConfig { n_hpfs: 2, ..HpfSetConfig::default() };
    let (report, images) = run_hpf_set(&DarkBlobs, &hpfs, None, &cfg).unwrap();
    let slides: Vec<&str> = report.slides.iter().map(|s| s.slide.as_str()).collect();
    assert_eq!(slides, ["A", "C"], "the slide outside the table fails alone");
    assert!(report.failures.iter().any(|(_, why)| why.contains("slide B,x")), "{:?}", report.failures);
    assert!(report.failures.iter().any(|(p, _)| p.ends_with("C_02.png")), "{:?}", report.failures);
    // Alike stems get ids of their own and both count.
    let mut ids: Vec<&str> = images.iter().map(|i| i.image.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["A_01_bmp", "A_01_png", "B,x_01", "C_01"]);
    assert_eq!((report.slides[0].count, report.slides[0].hpfs_total), (3, 2));
    // A partly read slide says so.
    assert_eq!(report.slides[1].hpfs_failed, 1);
    assert!(
        report.notes.iter().any(|n| n.contains("slide C: 1 of its 2 HPFs could not be read")),
        "{:?}",
        report.notes
    );

    // Outputs: a folder with a file no score run wrote is refused before and
    // at writing; a folder an earlier score run wrote is taken.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("detections.csv"), "precious").unwrap();
    let err = check_hpf_out(&out).unwrap_err().to_string();
    assert!(err.contains("detections.csv") && err.contains("no earlier"), "{err}");
    assert!(write_hpf_outputs(&out, &report, &images).is_err());
    assert_eq!(std::fs::read_to_string(out.join("detections.csv")).unwrap(), "precious");
    let fresh = dir.path().join("fresh");
    write_hpf_outputs(&fresh, &report, &images).unwrap();
    write_hpf_outputs(&fresh, &report, &images).unwrap();
    // A slide or image id holding a comma is quoted.
    let dets = std::fs::read_to_string(fresh.join("detections.csv")).unwrap();
    let mut r = csv::Reader::from_reader(dets.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert!(rows.iter().all(|row| row.len() == 4), "{dets}");
    assert!(rows.iter().any(|row| &row[0] == "B,x_01"), "{dets}");
    // A file put in since, beside a genuine scores.json, is refused by name
    // and left as it is; the run's own files are still taken.
    std::fs::write(fresh.join("detections.csv"), "image,x,y,score\nother,1,2,0.9\n").unwrap();
    let err = check_hpf_out(&fresh).unwrap_err().to_string();
    assert!(err.contains("detections.csv") && err.contains("changed or copied in"), "{err}");
    assert!(write_hpf_outputs(&fresh, &report, &images).is_err());
    assert_eq!(std::fs::read_to_string(fresh.join("detections.csv")).unwrap(), "image,x,y,score\nother,1,2,0.9\n");
    std::fs::write(fresh.join("detections.csv"), &dets).unwrap();
    check_hpf_out(&fresh).unwrap();
    // A scores.json from before checksums were recorded cannot vouch for
    // the files beside it.
    let mut legacy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fresh.join("scores.json")).unwrap()).unwrap();
    assert!(legacy.as_object_mut().unwrap().remove("outputs").is_some());
    std::fs::write(fresh.join("scores.json"), serde_json::to_vec(&legacy).unwrap()).unwrap();
    let err = check_hpf_out(&fresh).unwrap_err().to_string();
    assert!(err.contains("scores.csv") && err.contains("records no checksum"), "{err}");
    // A scores.json that is no score report is named itself.
    std::fs::write(fresh.join("scores.json"), "{}").unwrap();
    let err = check_hpf_out(&fresh).unwrap_err().to_string();
    assert!(err.contains("scores.json") && err.contains("is not the report of"), "{err}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    assert!(check_hpf_out(&file).unwrap_err().to_string().contains("not a folder"));
}
