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

/// The test PACS that `scripts/orthanc.sh start` runs, as `(DICOMweb URL, user,
/// password)`: from `ICSEG_PACS_URL`/`ICSEG_PACS_USER`/`ICSEG_PACS_PASSWORD`, else from
/// the script's state file (`$ORTHANC_STATE/env`, or an `icseg-orthanc-*` folder in the
/// temporary folder). `None` (test skipped) when there is none; under CI that panics.
/// Whether it answers is the caller's check ([`missing_pacs`] reports it).
pub fn test_pacs() -> Option<(String, String, String)> {
    let from_env = || {
        Some((
            std::env::var("ICSEG_PACS_URL").ok()?,
            std::env::var("ICSEG_PACS_USER").ok()?,
            std::env::var("ICSEG_PACS_PASSWORD").ok()?,
        ))
    };
    let from_state = || {
        let state = std::env::var_os("ORTHANC_STATE")
            .map(PathBuf::from)
            .or_else(|| {
                std::fs::read_dir(std::env::temp_dir())
                    .ok()?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("icseg-orthanc-"))
                            && p.join("env").is_file()
                    })
            })?;
        let text = std::fs::read_to_string(state.join("env")).ok()?;
        let var = |name: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(&format!("export {name}="))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        Some((
            var("ICSEG_PACS_URL")?,
            var("ICSEG_PACS_USER")?,
            var("ICSEG_PACS_PASSWORD")?,
        ))
    };
    let found = from_env().or_else(from_state);
    if found.is_none() {
        missing_pacs();
    }
    found
}

/// Reports a missing test PACS: a skip message, or a panic under CI.
pub fn missing_pacs() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "the test PACS is not running: scripts/orthanc.sh start (apt-get install orthanc orthanc-dicomweb)"
    );
    eprintln!("skipped: no test PACS (run scripts/orthanc.sh start)");
}
