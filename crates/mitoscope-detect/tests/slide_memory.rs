//! Bounded memory on a large slide, measured on the process: the only test
//! of this binary, so the peak resident set (`VmHWM`) is this run's.
//!
//! The slide is 40000 x 30000 px (3.6 GB of RGB at level 0, 900 MB at
//! level 1, the level read) written in the test, and run end to end with
//! the tiny untrained model (the real detector path). Its tissue is two
//! 0.5 mm patches far apart, so that the model runs on a few tiles only
//! (a fraction of a second each).

use mitoscope_detect::Detector;
use mitoscope_detect::mitoscope_slide::synthetic::{Rect, SyntheticSlide};
use mitoscope_detect::slide_run::{SlideRunConfig, run_slide};

/// Peak resident set size in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn large_slide_runs_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SyntheticSlide {
        patches: vec![
            Rect { x: 3000, y: 3000, width: 2000, height: 2000 },
            Rect { x: 33000, y: 24000, width: 2000, height: 2000 },
        ],
        figures: vec![(4000.0, 4000.0), (34000.0, 25000.0)],
        ..SyntheticSlide::large()
    };
    let path = dir.path().join("large.tiff");
    let stats = spec.write(&path).unwrap();
    let level1_bytes = (spec.width as u64 / 2) * (spec.height as u64 / 2) * 3;
    let device = mitoscope_detect::parse_device("cpu").unwrap();
    let detector = Detector::new(mitoscope_detect::fixtures::tiny_untrained_bundle(&device, 40.0), device);
    let before = peak_rss();

    let started = std::time::Instant::now();
    let report = run_slide(&path, &detector, &dir.path().join("out"), &SlideRunConfig::default()).unwrap();
    let seconds = started.elapsed().as_secs_f64();

    assert_eq!(report.read_level, 1);
    assert!(report.tiles.processed * 5 < report.tiles.grid, "{:?}", report.tiles);
    assert!(report.mitoses > 0);
    eprintln!(
        "large slide: {} bytes on disk, {} of {} tiles in {seconds:.1} s, {} detections",
        stats.bytes, report.tiles.processed, report.tiles.grid, report.mitoses
    );
    let (Some(before), Some(after)) = (before, peak_rss()) else {
        eprintln!("SKIP memory check: no /proc/self/status on this platform");
        return;
    };
    let growth = after.saturating_sub(before);
    eprintln!("peak RSS {} MiB before the run, {} MiB after (+{} MiB)", before >> 20, after >> 20, growth >> 20);
    // Holding level 1 (the level read) would add 900 MB, level 0 3.6 GB. The
    // run holds a 32 MiB tile cache, one 512² tile and its activations per
    // worker, and the 2051 x 1538 mask image with its summed-area table.
    assert!(growth < 400 << 20, "peak RSS grew by {} MiB", growth >> 20);
    assert!(growth < level1_bytes / 2);
}
