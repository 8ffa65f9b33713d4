//! The eframe desktop application (feature `gui`).
//!
//! # Structure
//!
//! - [`state::AppState`]: everything the app knows, without egui — the open
//!   [`document::Document`] (volume + [`crate::session::Session`]), tools, dialogs,
//!   background loading and autosave, and the engine link ([`propagation`]).
//! - [`actions::Action`]: what the user can do. Widgets (`*_ui` functions) read the state
//!   and return actions; [`state::AppState::apply`] carries them out, and is unit-tested
//!   without a window.
//! - [`app::IcsegApp`]: the `eframe::App` that lays out panels and views each frame.
//! - [`render`]: slice rendering on the GPU (WGSL, egui-wgpu paint callbacks) with a CPU
//!   fallback. Window/level, colours and the display geometry of a view are
//!   [`crate::display`]'s (shared with the command line).
//!
//! The UI thread never runs the network or file loading: both happen on worker threads
//! that wake the UI when results arrive.

pub mod actions;
pub mod app;
mod demo;
pub mod document;
mod explain;
mod export;
pub mod notice;
pub mod overview;
pub mod pacs;
mod pacs_demo;
pub mod painter;
pub mod panels;
pub mod propagation;
pub mod render;
pub mod slice_states;
pub mod slice_view;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use app::IcsegApp;
pub use state::{AppConfig, AppState};

use crate::session::RecoveryStore;

/// File name of the bundled sample volume in `assets/`.
pub const SAMPLE_FILE: &str = "mni152_2009_t1.nii.gz";

/// The bundled sample volume: `assets/` beside the executable (or two folders up, as in
/// `target/release/`), else the source tree's `assets/`.
pub fn sample_path() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("assets").join(SAMPLE_FILE));
        if let Some(up) = dir.parent().and_then(Path::parent) {
            candidates.push(up.join("assets").join(SAMPLE_FILE));
        }
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(SAMPLE_FILE),
    );
    candidates.into_iter().find(|p| p.is_file())
}

/// The configuration `icseg` starts with: open `open` (or the bundled sample), recovery
/// files in the default folder, autosave every minute, the default engine
/// (`ICSEG_NO_NETWORK=1` starts without it: viewing and painting only).
pub fn default_config(open: Option<PathBuf>) -> AppConfig {
    let engine = if std::env::var_os("ICSEG_NO_NETWORK").is_some() {
        propagation::EngineSettings { engine: None }
    } else {
        propagation::EngineSettings::default()
    };
    AppConfig {
        open: open.or_else(sample_path),
        recovery: RecoveryStore::default_location(),
        autosave_interval: Duration::from_secs(60),
        engine,
    }
}

/// Starts the desktop app, opening `open` or the bundled sample volume.
pub fn run_app(open: Option<PathBuf>) -> anyhow::Result<()> {
    let config = default_config(open);
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("ICSeg")
            .with_inner_size([1400.0, 900.0])
            .with_drag_and_drop(true),
        // The slice pipeline renders without MSAA or depth, as egui's own pass.
        multisampling: 0,
        depth_buffer: 0,
        ..Default::default()
    };
    eframe::run_native(
        "ICSeg",
        options,
        Box::new(move |cc| Ok(Box::new(IcsegApp::new(cc, config)))),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
