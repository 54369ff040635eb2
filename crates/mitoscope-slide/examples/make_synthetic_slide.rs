//! Writes the large synthetic pyramidal TIFF used by the slide benchmarks
//! (`SyntheticSlide::large`: 40000 x 30000 px at 0.25 µm/px, three tissue
//! patches, 24 dark figures). Not H&E: for timing and memory, not accuracy.
//!
//! ```sh
//! cargo run --release -p mitoscope-slide --example make_synthetic_slide -- /tmp/synthetic-large.tiff
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use mitoscope_slide::synthetic::SyntheticSlide;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: make_synthetic_slide OUT.tiff");
        return ExitCode::FAILURE;
    };
    let spec = SyntheticSlide::large();
    match spec.write(&path) {
        Ok(st) => {
            println!(
                "{}: {}x{} px at {} µm/px, {} levels, {} tiles ({} with tissue), {} bytes",
                path.display(),
                spec.width,
                spec.height,
                spec.mpp,
                spec.downsamples.len(),
                st.tiles,
                st.tissue_tiles,
                st.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
