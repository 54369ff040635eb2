//! `mitoscope convert IN OUT`: any reader to any writer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mitoscope_annotations::ObjectClass;
use mitoscope_formats::{Format, ReadOptions, WriteOptions};

use crate::cli::ConvertArgs;

pub fn run(args: ConvertArgs) -> Result<ExitCode> {
    let from = super::parse_format(args.from.as_deref())?;
    let to = match super::parse_format(args.to.as_deref())? {
        Some(f) => f,
        None => mitoscope_formats::format_for_output(&args.output).with_context(|| {
            format!(
                "cannot tell the output format of {} from its extension; pass --to ({})",
                args.output.display(),
                Format::ALL.iter().filter(|f| f.writable()).map(|f| f.name()).collect::<Vec<_>>().join(", ")
            )
        })?,
    };
    // Writing over the input would lose it.
    if let (Ok(input), Ok(output)) = (std::fs::canonicalize(&args.input), std::fs::canonicalize(&args.output))
        && input == output
    {
        bail!(
            "the output {} is the input {}: write the conversion elsewhere",
            args.output.display(),
            args.input.display()
        );
    }
    let mpp = super::parse_mpp(args.read.mpp)?;
    let opts = ReadOptions { mpp, images_dir: args.read.images.clone(), ..ReadOptions::default() };
    let mut set = super::load(&args.input, from, &opts)?;
    if args.mitoses_only {
        set.retain_class(ObjectClass::Mitosis);
    }
    for issue in &set.inconsistencies {
        tracing::warn!("{issue}");
    }
    let wopts = WriteOptions { mpp, polygons: args.polygons };
    write_new(&args.output, args.force, |path| {
        mitoscope_formats::write(&set, path, to, &wopts)
            .with_context(|| format!("writing {} as {to}", args.output.display()))
    })?;
    super::print(&format!(
        "wrote {} objects from {} images to {} ({to})\n",
        set.object_count(),
        set.images.len(),
        args.output.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `write` on a path of the same name in a fresh folder beside
/// `output`, then moves what it wrote into place: one file to `output`, or a
/// folder's files (per-image formats) into the folder `output`. Every
/// destination is checked before any is moved: one that exists (a dangling
/// link too) is refused unless `force`, and one that is a folder always, so
/// a conversion never silently replaces a file nor lands half-written. Each
/// move is a rename on one file system, so every file lands whole.
fn write_new(output: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = output.file_name().with_context(|| format!("{} names no file", output.display()))?;
    // Folders made for the output, removed again if nothing lands in them.
    let made = mitoscope_formats::atomic::missing_dirs(&parent);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let result = stage_and_move(&parent, name, output, force, write);
    if result.is_err() {
        for dir in &made {
            let _ = std::fs::remove_dir(dir); // only if empty
        }
    }
    result
}

fn stage_and_move(
    parent: &Path,
    name: &std::ffi::OsStr,
    output: &Path,
    force: bool,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let staging = tempfile::Builder::new()
        .prefix(".mitoscope-convert-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary folder in {}", parent.display()))?;
    let staged = staging.path().join(name);
    // The writer names the file it was given: name the real output instead.
    write(&staged).map_err(|e| {
        let shown = staged.display().to_string();
        anyhow::anyhow!(format!("{e:#}").replace(&shown, &output.display().to_string()))
    })?;
    // (staged file, destination) pairs.
    let moves: Vec<(PathBuf, PathBuf)> = if staged.is_dir() {
        if output.exists() && !output.is_dir() {
            bail!("{} exists and is not a folder; the per-image files go in a folder", output.display());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&staged)
            .with_context(|| format!("reading {}", staged.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let dest = output.join(f.file_name().unwrap_or_default());
                (f, dest)
            })
            .collect()
    } else {
        vec![(staged.clone(), output.to_owned())]
    };
    if let Some((_, dir)) = moves.iter().find(|(_, d)| d.is_dir()) {
        bail!("{} is a folder; nothing was written (the output file would take its place)", dir.display());
    }
    if !force {
        let existing: Vec<String> = moves
            .iter()
            .filter(|(_, d)| std::fs::symlink_metadata(d).is_ok())
            .map(|(_, d)| d.display().to_string())
            .collect();
        if let Some(first) = existing.first() {
            bail!(
                "{first}{} already exist{}; nothing was written (give --force to replace {})",
                if existing.len() > 1 { format!(" and {} more", existing.len() - 1) } else { String::new() },
                if existing.len() > 1 { "" } else { "s" },
                if existing.len() > 1 { "them" } else { "it" }
            );
        }
    }
    if staged.is_dir() {
        std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    }
    for (from, to) in &moves {
        std::fs::rename(from, to).with_context(|| format!("moving the written file into {}", to.display()))?;
    }
    Ok(())
}
