//! Headless subcommands. The GUI and these commands share the same library code paths.

pub mod info;

mod bench;
mod eval;
mod explain;
mod inference;
mod pacs;
mod propagate;
mod ship;
mod train;

pub use bench::BenchArgs;
pub use explain::ExplainArgs;
pub use propagate::PropagateArgs;

use clap::{Parser, Subcommand};

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
    /// Score propagation methods on image/label pairs with simulated annotations.
    Eval(eval::EvalArgs),
    /// Segment every slice of an image from a few annotated slices.
    Propagate(PropagateArgs),
    /// Show what the network looked at for one clicked pixel (attention heatmaps).
    Explain(ExplainArgs),
    /// Measure parameter counts, FLOPs, speed and memory of the network.
    Bench(BenchArgs),
    /// Train the network on image/label folders.
    Train(train::TrainArgs),
    /// Copy a training run's best weights into weights/ with a manifest.
    Ship(ship::ShipArgs),
    /// Search a PACS, pull a series, push a DICOM SEG (DICOMweb).
    Pacs(pacs::PacsArgs),
}

/// Runs a subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Eval(args) => eval::run(args),
        Command::Propagate(args) => propagate::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(args),
        Command::Ship(args) => ship::run(args),
        Command::Info(args) => info::run(args),
        Command::Pacs(args) => pacs::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn propagate_parses_the_documented_arguments() {
        let cli = Cli::try_parse_from([
            "icseg",
            "propagate",
            "--image",
            "ct.nii.gz",
            "--annotations",
            "ann.nii.gz",
            "--slices",
            "12,30,48",
            "--label",
            "3",
            "--axis",
            "2",
            "--out",
            "pred.nii.gz",
            "--weights",
            "w.bpk",
            "--device",
            "cpu",
            "--report",
            "r.json",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Propagate(args)) => {
                assert_eq!(args.slices.0, vec![12, 30, 48]);
                assert_eq!(args.label, Some(3));
                assert_eq!(args.model.device, crate::engine::DeviceChoice::Cpu);
                assert_eq!(args.strategy.support_size, None, "no limit unless asked");
            }
            other => panic!("{other:?}"),
        }
        let with_size = |size: &str| {
            Cli::try_parse_from([
                "icseg",
                "propagate",
                "--image",
                "ct.nii.gz",
                "--annotations",
                "ann.nii.gz",
                "--slices",
                "1,5,9,13",
                "--out",
                "pred.nii.gz",
                "--support-size",
                size,
            ])
        };
        match with_size("2").unwrap().command {
            Some(Command::Propagate(args)) => assert_eq!(args.strategy.support_size, Some(2)),
            other => panic!("{other:?}"),
        }
        assert!(with_size("0").is_err());
        let cli = Cli::try_parse_from([
            "icseg",
            "explain",
            "--image",
            "ct",
            "--annotations",
            "a",
            "--slices",
            "4",
            "--query-slice",
            "9",
            "--pixel",
            "120,87",
            "--out-dir",
            "d",
            "--repeat",
            "3",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Explain(args)) => assert_eq!(args.pixel.0, [120, 87]),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["icseg", "propagate", "--slices", "x"]).is_err());
    }
}
