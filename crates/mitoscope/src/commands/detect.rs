//! `mitoscope detect`, `demo`, `classify` and `train`: thin wrappers over
//! `mitoscope-detect`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_detect::{
    BatchConfig, BatchSummary, DetectOptions, Detector, ModelBundle, Outputs, classify_images, parse_device,
    recipe::{RecipeConfig, train_default},
    run_batch, run_demo,
};

use crate::cli::{ClassifyArgs, DemoArgs, DetectArgs, ModelArgs, TrainArgs};

fn detector(args: &ModelArgs) -> Result<Detector> {
    let device = parse_device(&args.device)?;
    let bundle = match &args.model {
        Some(path) => ModelBundle::load(path, &device).with_context(|| format!("loading model {}", path.display()))?,
        None => ModelBundle::embedded(&device).context("loading the embedded default model")?,
    };
    Ok(Detector::new(bundle, device))
}

fn check_mpp(mpp: Option<f64>) -> Result<()> {
    if let Some(m) = mpp {
        mitoscope_geom::Mpp::new(m).context("--mpp")?;
    }
    Ok(())
}

/// Prints counts per image, the total and every failure; non-zero exit when any input failed.
fn report(summary: &BatchSummary, out: &std::path::Path) -> Result<ExitCode> {
    let mut text = String::new();
    for (image, n) in &summary.per_image {
        let _ = writeln!(text, "{image}: {n}");
    }
    let _ = writeln!(
        text,
        "total: {} mitoses in {} images (threshold {:.3}); results in {}",
        summary.total,
        summary.per_image.len(),
        summary.threshold,
        out.display()
    );
    super::print(&text)?;
    for (path, message) in &summary.failures {
        eprintln!("error: {}: {message}", path.display());
    }
    Ok(if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn detect(args: DetectArgs) -> Result<ExitCode> {
    check_mpp(args.mpp)?;
    super::check_threshold(args.threshold)?;
    let outputs = Outputs::parse_list(&args.format)?;
    let detector = detector(&args.model)?;
    let cfg = BatchConfig {
        input_mpp: args.mpp,
        options: DetectOptions { threshold: args.threshold, ..DetectOptions::default() },
        outputs,
        write_candidates: args.all_candidates,
        show_progress: true,
        command: Some(super::command_line()),
    };
    let summary = run_batch(&detector, &args.inputs, &args.out, &cfg)?;
    report(&summary, &args.out)
}

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let detector = detector(&args.model)?;
    let summary = run_demo(&detector, &args.out, args.seed, args.size)?;
    super::print(&format!(
        "SYNTHETIC demo field ({}x{} px, seed {}), not real tissue: every output format written to {}\n\
         Real use: mitoscope detect YOUR_IMAGES... --out DIR --mpp M\n",
        args.size,
        args.size,
        args.seed,
        args.out.display()
    ))?;
    report(&summary, &args.out)
}

pub fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    check_mpp(args.mpp)?;
    let detector = detector(&args.model)?;
    let results = classify_images(&detector, &args.images, args.mpp);
    if args.json {
        super::print(&(serde_json::to_string_pretty(&results)? + "\n"))?;
    } else {
        let mut text = String::from("path,score\n");
        for r in results.iter().filter(|r| r.score.is_some()) {
            let _ = writeln!(text, "{},{:.4}", r.path.display(), r.score.unwrap_or(f64::NAN));
        }
        super::print(&text)?;
    }
    let mut failed = false;
    for r in results.iter().filter(|r| r.error.is_some()) {
        failed = true;
        eprintln!("error: {}", r.error.as_deref().unwrap_or("unknown"));
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let config = match (&args.config, args.recipe.as_str()) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{}: not a recipe config", path.display()))?
        }
        (None, "default") => RecipeConfig::default(),
        (None, "quick") => RecipeConfig::quick(),
        (None, other) => bail!("unknown --recipe '{other}': expected default or quick"),
    };
    let data = args.data.clone().unwrap_or_else(|| {
        std::env::var_os("MITOSCOPE_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("../shared/data"))
    });
    if !data.is_dir() {
        bail!("{}: data folder not found (pass --data or set MITOSCOPE_DATA)", data.display());
    }
    let command: Vec<String> = std::env::args().collect();
    let (bundle, report) = train_default(&data, &args.out, &config, &command.join(" "), true)?;
    super::print(&format!(
        "{}\nmodel written to {} (operating threshold {:.3})\n",
        serde_json::to_string_pretty(&report)?,
        args.out.join(mitoscope_detect::BUNDLE_FILE).display(),
        bundle.card.operating_threshold
    ))?;
    Ok(ExitCode::SUCCESS)
}
