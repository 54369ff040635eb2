//! `mitoscope detect`, `demo`, `classify` and `train`: thin wrappers over
//! `mitoscope-detect`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_detect::{
    BatchConfig, BatchSummary, DetectOptions, Detector, ModelBundle, Outputs, classify_images, parse_device,
    recipe::{RecipeConfig, Stages, train_recipe},
    run_batch, run_demo,
    training_data::{DatasetSources, TrainingData, validation_split},
};

use crate::cli::{CheckDeviceArgs, ClassifyArgs, DemoArgs, DetectArgs, ModelArgs, TrainArgs};

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
    if summary.written.is_empty() {
        let _ = writeln!(text, "no image could be read; nothing written ({} is as it was)", out.display());
    } else {
        let _ = writeln!(
            text,
            "total: {} mitoses in {} images (threshold {:.3}); results in {}",
            summary.total,
            summary.per_image.len(),
            summary.threshold,
            out.display()
        );
    }
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
        show_progress: super::show_progress(),
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

/// Writes the keys of `changes` over `base`, object by object (a nested
/// object changes only the keys it names; anything else replaces).
fn merge_json(base: &mut serde_json::Value, changes: serde_json::Value) {
    match (base, changes) {
        (serde_json::Value::Object(b), serde_json::Value::Object(c)) => {
            for (k, v) in c {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Parses JSON, refusing a key given twice in one object. serde_json keeps
/// the last silently, and in a config the first would then be ignored unseen;
/// no JSON crate at hand reports it, so a small checking pass runs first.
fn json_once_per_key(text: &str) -> serde_json::Result<serde_json::Value> {
    use serde::de::{Deserializer, Error, MapAccess, SeqAccess, Visitor};
    struct Checked;
    impl<'de> serde::Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Checked)
        }
    }
    impl<'de> Visitor<'de> for Checked {
        type Value = Checked;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_unit<E>(self) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
            while seq.next_element::<Checked>()?.is_some() {}
            Ok(Checked)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(A::Error::custom(format!("key '{key}' is given twice")));
                }
                map.next_value::<Checked>()?;
            }
            Ok(Checked)
        }
    }
    serde_json::from_str::<Checked>(text)?;
    serde_json::from_str(text)
}

/// "an array", "a number", ... for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Keys of `given` (non-null) that `kept`, the parsed config written back,
/// does not have: names the config does not know.
fn unkept_keys(given: &serde_json::Value, kept: &serde_json::Value, at: &str, unknown: &mut Vec<String>) {
    let serde_json::Value::Object(g) = given else { return };
    for (k, v) in g {
        let key = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
        match kept.get(k) {
            Some(inner) => unkept_keys(v, inner, &key, unknown),
            None if !v.is_null() => unknown.push(format!("'{key}'")),
            None => {}
        }
    }
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
            let path = mitoscope_detect::batch::csv_field(&r.path.display().to_string());
            let _ = writeln!(text, "{path},{:.4}", r.score.unwrap_or(f64::NAN));
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
    let own_data = !(args.datasets.is_empty() && args.crops.is_empty() && args.negatives.is_empty());
    let recipe = match args.recipe.as_str() {
        "default" => RecipeConfig::default(),
        "quick" => RecipeConfig::quick(),
        other => bail!("unknown --recipe '{other}': expected default or quick"),
    };
    // A --config holds the keys it changes (`{"cv_stage1": false}`), over --recipe.
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let changes = json_once_per_key(&text).with_context(|| format!("{}: not JSON", path.display()))?;
            if !changes.is_object() {
                bail!(
                    "{}: a --config is a JSON object of the recipe keys it changes (e.g. {{\"cv_stage1\": false}}), \
                     not {}",
                    path.display(),
                    json_kind(&changes)
                );
            }
            let mut merged = serde_json::to_value(&recipe)?;
            merge_json(&mut merged, changes.clone());
            let config: RecipeConfig =
                serde_json::from_value(merged).with_context(|| format!("{}: not a recipe config", path.display()))?;
            // A key the config does not keep is a typo that would be ignored.
            let mut unknown = Vec::new();
            unkept_keys(&changes, &serde_json::to_value(&config)?, "", &mut unknown);
            if !unknown.is_empty() {
                bail!(
                    "{}: unknown recipe keys {} (a finished run's OUT/recipe.json lists every key)",
                    path.display(),
                    unknown.join(", ")
                );
            }
            config
        }
        None => recipe,
    };
    if !own_data && (args.val_subset.is_some() || args.val_fraction.is_some()) {
        bail!("--val-subset and --val-fraction split --dataset fields; the shared-data recipe names its own");
    }
    let device = parse_device(&args.device)?;
    let base = || -> Result<Box<ModelBundle>> {
        Ok(Box::new(match &args.base_model {
            Some(path) => {
                ModelBundle::load(path, &device).with_context(|| format!("loading --base-model {}", path.display()))?
            }
            None => ModelBundle::embedded(&device).context("loading the embedded default model")?,
        }))
    };
    // None: only a mask head, added to the base model (no stage is trained).
    let stages = match args.stage.as_str() {
        "mask" | "mask-head" => None,
        "both" => {
            if args.base_model.is_some() {
                bail!("--base-model is for one-stage runs (--stage candidate or classifier)");
            }
            Some(Stages::Both)
        }
        "candidate" | "1" => Some(Stages::CandidateOnly(base()?)),
        "classifier" | "2" => Some(Stages::ClassifierOnly(base()?)),
        other => bail!("unknown --stage '{other}': expected both, candidate, classifier or mask"),
    };
    let data = if own_data {
        let sources = DatasetSources {
            datasets: args.datasets.clone(),
            formats: args
                .formats
                .iter()
                .map(|f| super::parse_format(Some(f)).map(Option::unwrap))
                .collect::<Result<_>>()?,
            images_dir: args.images.clone(),
            mpp: args.mpp,
            crop_folders: args.crops.clone(),
            crops_mpp: args.crops_mpp,
            negative_folders: args.negatives.clone(),
        };
        for path in sources.datasets.iter().chain(&sources.crop_folders).chain(&sources.negative_folders) {
            if !path.exists() {
                bail!("{}: no such file or folder", path.display());
            }
        }
        let data = TrainingData::from_datasets(&sources)?;
        // Folds per field are for a handful of fields: a dataset validates on a held-out part
        // (a --config may still ask for cross_validated).
        if args.config.is_none() {
            config = config.fitted_to(&data);
        }
        config.val_hpfs =
            validation_split(&data.fields, args.val_subset.as_deref(), args.val_fraction.unwrap_or(0.2), config.seed)?;
        config.val_cmc.clear();
        if super::show_progress() {
            eprintln!(
                "[recipe] {} labelled fields: {} validate ({})",
                data.fields.len(),
                config.val_hpfs.len(),
                config.val_hpfs.join(", ")
            );
        }
        data
    } else {
        let root = args.data.clone().unwrap_or_else(|| {
            std::env::var_os("MITOSCOPE_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("../shared/data"))
        });
        if !root.is_dir() {
            bail!("{}: data folder not found (pass --data or set MITOSCOPE_DATA, or --dataset)", root.display());
        }
        TrainingData::shared(&root, config.painted_hpf_negatives)?
    };
    let command: Vec<String> = std::env::args().collect();
    let Some(stages) = stages else {
        let base = base()?;
        let (bundle, report) = mitoscope_detect::recipe::add_mask_head(
            &data,
            &args.out,
            &config,
            &base,
            &device,
            &command.join(" "),
            super::show_progress(),
        )?;
        super::print(&format!(
            "{}\nmodel with mask head written to {} ({})\n",
            serde_json::to_string_pretty(&report)?,
            args.out.join(mitoscope_detect::BUNDLE_FILE).display(),
            bundle.card.version
        ))?;
        return Ok(ExitCode::SUCCESS);
    };
    let (bundle, report) =
        train_recipe(&data, &args.out, &config, &stages, &device, &command.join(" "), super::show_progress())?;
    super::print(&format!(
        "{}\nmodel written to {} (operating threshold {:.3})\n",
        serde_json::to_string_pretty(&report)?,
        args.out.join(mitoscope_detect::BUNDLE_FILE).display(),
        bundle.card.operating_threshold
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `mitoscope check-device`: does `--device` compute what the CPU computes?
pub fn check_device(args: CheckDeviceArgs) -> Result<ExitCode> {
    use mitoscope_model::backend_check::{BackendCheckConfig, check_device};
    let device = parse_device(&args.device)?;
    let config = BackendCheckConfig { steps: args.steps, ..BackendCheckConfig::default() };
    let check = check_device(&device, &config).with_context(|| format!("checking device {}", args.device))?;
    if args.json {
        super::print(&(serde_json::to_string_pretty(&check)? + "\n"))?;
    } else {
        let mut text = String::new();
        let _ = writeln!(text, "device: {} ({})", args.device, check.device);
        let _ = writeln!(text, "forward outputs, largest |device - cpu|: {:e}", check.forward_max_abs_diff);
        let _ = writeln!(text, "step  cpu loss   device loss");
        for (i, (c, d)) in check.cpu_losses.iter().zip(&check.device_losses).enumerate() {
            let _ = writeln!(text, "{:>4}  {c:<9.6}  {d:.6}", i + 1);
        }
        let _ =
            writeln!(text, "ms per training step: cpu {:.1}, device {:.1}", check.cpu_step_ms, check.device_step_ms);
        let _ = writeln!(
            text,
            "ms per {0}x{0} inference: cpu {1:.1}, device {2:.1}",
            config.infer_side, check.cpu_infer_ms, check.device_infer_ms
        );
        let _ = writeln!(
            text,
            "{}",
            match &check.failure {
                None => "PASS: the device agrees with the CPU".to_owned(),
                Some(why) => format!("FAIL: {why}"),
            }
        );
        super::print(&text)?;
    }
    Ok(if check.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
