//! `mitoscope review`: a local browser tool to accept, reject and add
//! detections on one HPF or slide, saving every decision as it is made.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_formats::ReadOptions;
use mitoscope_review::{ReviewOptions, ReviewServer};

use crate::cli::ReviewArgs;

pub fn run(args: ReviewArgs) -> Result<ExitCode> {
    if !args.path.is_file() {
        bail!("{}: no such image or slide file", args.path.display());
    }
    if let Some(m) = args.mpp {
        mitoscope_detect::checked_input_mpp(m).context("--mpp")?;
    }
    let mpp = super::parse_mpp(args.mpp)?;
    let pred = args
        .pred
        .as_ref()
        .map(|p| super::load_checked(p, None, &ReadOptions { mpp, ..ReadOptions::default() }))
        .transpose()?;
    let opts = ReviewOptions {
        path: args.path.clone(),
        pred,
        decisions: args.decisions.clone().unwrap_or_else(|| mitoscope_review::default_decisions_path(&args.path)),
        bind: SocketAddr::new(args.bind, args.port),
        mpp,
    };

    if let Some(out) = &args.export {
        // The decisions file is the review itself, and the --pred file may
        // hold other images' detections: an export over either loses them.
        if super::same_file(out, &opts.decisions) {
            bail!("{}: --export would write over the decisions file; export to another file", out.display());
        }
        if let Some(pred) = args.pred.as_deref().filter(|p| super::same_file(out, p)) {
            bail!(
                "{}: --export would write over the --pred file {} (which may hold other images' detections too); \
                 export to another file",
                out.display(),
                pred.display()
            );
        }
        if super::same_file(out, &args.path) {
            bail!("{}: --export would write over the image under review; export to another file", out.display());
        }
        let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let format = mitoscope_review::export_format(&ext).with_context(|| {
            format!("{}: --export writes .csv, .geojson, .json (MIDOG) or .xml (ASAP)", out.display())
        })?;
        let (_, decisions, resumed) = mitoscope_review::open_review(&opts)?;
        mitoscope_review::export_to(&decisions, out, format)?;
        let s = decisions.summary();
        super::print(&format!(
            "exported {} mitoses to {} ({})\n",
            s.count,
            out.display(),
            if resumed { "with the saved decisions" } else { "no saved decisions: detections as given" }
        ))?;
        return Ok(ExitCode::SUCCESS);
    }

    if !args.bind.to_canonical().is_loopback() {
        eprintln!(
            "warning: listening on {}: anyone who can reach this machine can see the image and change the decisions",
            args.bind
        );
    }
    let server = ReviewServer::start(opts)?;
    super::print(&format!(
        "review: {} (decisions: {}{}; Ctrl-C to stop)\n",
        server.url(),
        server.decisions_path().display(),
        if server.resumed() { ", resumed" } else { "" }
    ))?;
    server.wait();
    Ok(ExitCode::SUCCESS)
}
