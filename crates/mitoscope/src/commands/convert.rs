//! `mitoscope convert IN OUT`: any reader to any writer.

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
    mitoscope_formats::write(&set, &args.output, to, &wopts)
        .with_context(|| format!("writing {} as {to}", args.output.display()))?;
    super::print(&format!(
        "wrote {} objects from {} images to {} ({to})\n",
        set.object_count(),
        set.images.len(),
        args.output.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
