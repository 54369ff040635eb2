//! Atomic output: write to a temporary file in the destination's folder, then
//! rename over the destination, so a crash never leaves a half-written file.

use std::io::Write;
use std::path::Path;

use crate::error::{FormatError, Result};

/// `dir` and those of its ancestors that do not exist yet, deepest first:
/// the folders a writer is about to make, to take away again (each only if
/// empty) when it ends up writing nothing.
pub fn missing_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !a.exists()).map(Path::to_owned).collect()
}

/// Writes `bytes` to `path` atomically (temp file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams output through `fill` into a temp file, then renames it to `path`.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mitoscope-").suffix(".tmp");
    // Temp files are private (0600) by default; an output should get the mode
    // a plain create gives it (0666 less the umask), so colleagues can read it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| FormatError::io(dir, e))?;
    {
        let mut buf = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut buf).map_err(|e| FormatError::io(path, e))?;
        buf.flush().map_err(|e| FormatError::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| FormatError::io(path, e))?;
    tmp.persist(path).map_err(|e| FormatError::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn outputs_get_a_plain_file_mode_not_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let atomic = dir.path().join("atomic.csv");
        let plain = dir.path().join("plain.csv");
        write_atomic(&atomic, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain), "the umask decides, as for any new file");
    }

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.csv");
        write_atomic(&p, b"first version, long").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_fill_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.csv");
        write_atomic(&p, b"good").unwrap();
        let err = write_atomic_with(&p, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
    }
}
