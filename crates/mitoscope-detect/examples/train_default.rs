//! Trains Mitoscope's default model from the shared real data.
//!
//! ```text
//! cargo run -p mitoscope-detect --example train_default -- [--quick] [--data DIR] [--out DIR]
//! ```
//!
//! `--data` defaults to `$MITOSCOPE_DATA`, else `../shared/data`; `--out` to
//! `target/train-default`. The bundle and MODEL.md land in `--out`; copy them to
//! `crates/mitoscope-detect/model/default.bundle` and `model/MODEL.md` to embed.
//! Re-running with the same `--out` resumes from the stage checkpoints.

use std::path::PathBuf;

use mitoscope_detect::recipe::{RecipeConfig, train_default};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = RecipeConfig::default();
    let mut data =
        std::env::var_os("MITOSCOPE_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("../shared/data"));
    let mut out = PathBuf::from("target/train-default");
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => config = RecipeConfig { ..RecipeConfig::quick() },
            "--data" if i + 1 < args.len() => {
                i += 1;
                data = PathBuf::from(&args[i]);
            }
            "--out" if i + 1 < args.len() => {
                i += 1;
                out = PathBuf::from(&args[i]);
            }
            "--config" if i + 1 < args.len() => {
                i += 1;
                let text = match std::fs::read_to_string(&args[i]) {
                    Ok(t) => t,
                    Err(e) => fail(&format!("cannot read {}: {e}", args[i])),
                };
                config = match serde_json::from_str(&text) {
                    Ok(c) => c,
                    Err(e) => fail(&format!("bad recipe config {}: {e}", args[i])),
                };
            }
            other => fail(&format!("unknown argument '{other}'; use --quick, --data DIR, --out DIR, --config FILE")),
        }
        i += 1;
    }
    let command = format!("cargo run -p mitoscope-detect --example train_default -- {}", args.join(" "));
    match train_default(&data, &out, &config, command.trim(), true) {
        Ok((bundle, report)) => {
            println!("wrote {}", out.join(mitoscope_detect::BUNDLE_FILE).display());
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            println!("operating threshold {:.3}", bundle.card.operating_threshold);
        }
        Err(e) => fail(&format!("{e}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
