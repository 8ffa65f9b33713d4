//! The `icseg` binary: parses arguments, then runs the desktop app or a subcommand.

use clap::Parser;
use icseg::cli::{Cli, run};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(command) => run(command),
        None => start_app(cli.open),
    }
}

#[cfg(feature = "gui")]
fn start_app(open: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    icseg::ui::run_app(open)
}

#[cfg(not(feature = "gui"))]
fn start_app(_open: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no desktop app (built without the `gui` feature); run `icseg --help` for the commands"
    )
}
