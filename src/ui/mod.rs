//! The eframe desktop application (feature `gui`).

/// Starts the desktop app, opening `open` or the bundled sample volume.
pub fn run_app(_open: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("the desktop app is not built yet")
}
