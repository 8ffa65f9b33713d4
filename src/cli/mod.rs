//! Headless subcommands. The GUI and these commands share the same library code paths.

use clap::{Parser, Subcommand};

pub mod info;

/// ICSeg: annotate medical volumes with few clicks.
#[derive(Debug, Parser)]
#[command(name = "icseg", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A NIfTI file or DICOM folder to open in the app (default: the bundled sample).
    #[arg(global = false)]
    pub open: Option<std::path::PathBuf>,
    /// What to run; without one, the desktop app starts.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a NIfTI file, DICOM file or DICOM folder: series, dimensions, spacing,
    /// orientation, modality, transfer syntax (no patient identifiers).
    Info(info::InfoArgs),
}

/// Runs a subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Info(args) => info::run(args),
    }
}
