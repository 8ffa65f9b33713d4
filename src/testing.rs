//! Test support: where the shared real data lives.
//!
//! Tests that need real volumes call [`shared_data`]. On a developer machine without the
//! data they skip (print a line and return); under CI (`CI=true`) missing data is a
//! failure, so a green CI run always exercised the real files.

use std::path::PathBuf;

/// The shared data folder: `$ICSEG_DATA`, else `../shared/data` beside the crate.
pub fn shared_data_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ICSEG_DATA") {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    p.is_dir().then_some(p)
}

/// `shared_data_dir()/relative` when it exists. Returns `None` (test skipped) when the
/// data is absent, and panics under CI where the data must be present.
pub fn shared_data(relative: &str) -> Option<PathBuf> {
    let found = shared_data_dir()
        .map(|d| d.join(relative))
        .filter(|p| p.exists());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "shared test data `{relative}` is missing; set ICSEG_DATA to the shared/data folder"
        );
        eprintln!("skipped: shared test data `{relative}` not found (set ICSEG_DATA)");
    }
    found
}
