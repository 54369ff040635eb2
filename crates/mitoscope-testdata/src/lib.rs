//! Dev-only helper that finds the shared real mitosis data for tests.
//!
//! Tests call [`data_dir`] (or the [`require_data!`] macro) with a folder name
//! under the data root (`icpr2012`, `formats`, ...). The root is `$MITOSCOPE_DATA`
//! when set, else `../shared/data` beside the workspace. When it is missing
//! the test prints a loud `SKIP` line and returns, unless
//! `MITOSCOPE_REQUIRE_DATA=1` (as CI sets), in which case it fails: CI always
//! has the data, so a silent skip there would hide a broken path.
#![deny(missing_docs)]

use std::path::PathBuf;

/// Environment variable naming the data root.
pub const DATA_ENV: &str = "MITOSCOPE_DATA";
/// Environment variable that turns a missing data folder into a failure.
pub const REQUIRE_ENV: &str = "MITOSCOPE_REQUIRE_DATA";

/// The data root: `$MITOSCOPE_DATA`, else `<workspace>/../shared/data`.
pub fn data_root() -> PathBuf {
    match std::env::var_os(DATA_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}

/// `<root>/<name>` when it exists. When it does not, prints `SKIP` with the
/// reason and returns `None`, or panics when `MITOSCOPE_REQUIRE_DATA=1`.
pub fn data_dir(name: &str) -> Option<PathBuf> {
    let dir = data_root().join(name);
    if dir.exists() {
        return Some(dir);
    }
    let msg = format!("real data '{}' not found at {} (set {DATA_ENV} to the shared data folder)", name, dir.display());
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{msg}, and {REQUIRE_ENV}=1 requires it");
    }
    eprintln!("SKIP: {msg}");
    None
}

/// `let dir = require_data!("icpr2012");` returns from the test (skipping
/// loudly) when the folder is absent.
#[macro_export]
macro_rules! require_data {
    ($name:expr) => {
        match $crate::data_dir($name) {
            Some(dir) => dir,
            None => return,
        }
    };
}
