//! How background work and actions report to the user: notices with a level, and the
//! waker that asks the UI for a new frame from another thread. A leaf that the state,
//! the engine link and the widgets all use.

use std::sync::Arc;

/// A closure that wakes the UI (egui's `request_repaint`), callable from any thread.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// How serious a notice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Status-bar information.
    Info,
    /// Shown until dismissed, but nothing failed.
    Warning,
    /// Something failed; shown until dismissed.
    Error,
}

/// A message for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Info goes to the status bar; warnings and errors stay until dismissed.
    pub level: Level,
    /// What happened and what to do.
    pub text: String,
}
