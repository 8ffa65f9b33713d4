//! `icseg propagate`: segment every slice from a few annotated ones.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::inference::{
    ModelArgs, SliceList, StrategyArgs, axis_from_index, peak_memory_bytes, start_engine,
    support_from_labels,
};
use crate::engine::{self, PropagationStats, Strategy};
use crate::io;
use crate::volume::LabelValue;

/// Arguments of `icseg propagate`.
#[derive(Debug, Args)]
pub struct PropagateArgs {
    /// The image: a NIfTI file or a DICOM folder.
    #[arg(long, value_name = "PATH")]
    pub image: PathBuf,
    /// A label map on the image's grid holding the user's annotations.
    #[arg(long, value_name = "ANN.nii.gz")]
    pub annotations: PathBuf,
    /// The annotated slices, e.g. 12,30,48. An empty listed slice means "nothing here".
    #[arg(long, value_name = "LIST")]
    pub slices: SliceList,
    /// Only voxels equal to this label count as the structure (default: any nonzero).
    #[arg(long)]
    pub label: Option<LabelValue>,
    /// The axis the slices are taken across: 0, 1 or 2 (the file's slice axis).
    #[arg(long, default_value_t = 2)]
    pub axis: usize,
    /// Where to write the binary mask (NIfTI).
    #[arg(long, value_name = "PRED.nii.gz")]
    pub out: PathBuf,
    /// Predict only the slices between the first and last annotated slice (what 3D
    /// Slicer's "Fill between slices" fills): annotate both ends of the structure.
    #[arg(long)]
    pub bounded: bool,
    /// How the annotated slices are used.
    #[command(flatten)]
    pub strategy: StrategyArgs,
    /// Where to write a JSON report of timings and memory.
    #[arg(long, value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
    /// Model, device and batching.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The JSON report.
#[derive(Debug, serde::Serialize)]
struct Report {
    device: String,
    is_gpu: bool,
    model: String,
    weights: String,
    annotated_slices: Vec<usize>,
    predicted_slices: usize,
    seconds: Seconds,
    slices_per_second: f64,
    ms_per_slice_inference: f64,
    peak_memory_mb: Option<f64>,
    engine: PropagationStats,
}

#[derive(Debug, serde::Serialize)]
struct Seconds {
    load: f64,
    engine_start: f64,
    support_encoding: f64,
    retrieval: f64,
    inference: f64,
    propagation: f64,
    write: f64,
    total: f64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs `icseg propagate`.
pub fn run(args: PropagateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let slices = args.slices.0.clone();
    let axis = axis_from_index(args.axis)?;

    let loaded = io::open_volume(&args.image)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let volume = Arc::new(loaded.volume);
    let annotations = io::read_label_map(&args.annotations, volume.geometry())?;
    let load = start.elapsed();

    let engine_start = Instant::now();
    let (engine, info) = start_engine(args.model.engine_config())?;
    let engine_start = engine_start.elapsed();

    let support = support_from_labels(volume.clone(), &annotations, axis, &slices, args.label)?;
    drop(annotations);
    let strategy = args.strategy.strategy()?;
    let targets = engine::target_slices(volume.geometry().slice_count(axis), &slices, args.bounded);

    let propagation = Instant::now();
    let collected = engine::collect(
        &engine,
        Arc::new(support),
        targets.clone(),
        strategy,
        &mut |done, total| {
            eprint!("\rpropagating: {done}/{total} slices");
            let _ = std::io::stderr().flush();
        },
    )?;
    eprintln!();
    let propagation = propagation.elapsed();
    let (output, stats) = (collected.mask, collected.stats);
    match strategy {
        Strategy::OneShot { .. } => {
            if let Some(k) = stats.support_size {
                eprintln!(
                    "support: each slice used the {k} most similar of {} annotated slices ({} distinct sets, chosen in {:.2} s)",
                    stats.support_slices,
                    stats.groups.len(),
                    secs(stats.retrieval)
                );
            }
        }
        Strategy::Chain(_) => eprintln!(
            "chain: {} of {} slices queried, the others lie beyond an empty slice",
            stats.queried,
            targets.len()
        ),
    }
    // The structure is the run of non-empty slices through the annotations: islands
    // beyond an empty slice are cleared (volume::extent; the app and `icseg eval` too).
    if collected.cleared > 0 {
        eprintln!(
            "cleared {} predicted slices cut off from the structure by an empty slice",
            collected.cleared
        );
    }

    let write = Instant::now();
    io::write_label_map(&args.out, &output)?;
    let write = write.elapsed();
    let total = start.elapsed();

    let inside = output.labels().iter().filter(|&&v| v != 0).count();
    let voxel_ml = volume.geometry().spacing_mm.iter().product::<f64>() / 1000.0;
    eprintln!(
        "wrote {} ({} voxels, {:.1} ml) in {:.2} s: {} slices predicted at {:.1} slices/s",
        args.out.display(),
        inside,
        inside as f64 * voxel_ml,
        secs(total),
        targets.len(),
        targets.len() as f64 / secs(propagation).max(1e-9)
    );

    if let Some(path) = &args.report {
        let predicted = targets.len();
        let report = Report {
            device: info.device.clone(),
            is_gpu: info.is_gpu,
            model: info.model.clone(),
            weights: match &info.weights {
                crate::engine::WeightsStatus::Loaded(p) => p.display().to_string(),
                crate::engine::WeightsStatus::RandomInit => "random initialisation".into(),
            },
            annotated_slices: slices,
            predicted_slices: predicted,
            seconds: Seconds {
                load: secs(load),
                engine_start: secs(engine_start),
                support_encoding: secs(stats.support_encoding),
                retrieval: secs(stats.retrieval),
                inference: secs(stats.timings.inference),
                propagation: secs(propagation),
                write: secs(write),
                total: secs(total),
            },
            slices_per_second: predicted as f64 / secs(propagation).max(1e-9),
            ms_per_slice_inference: 1000.0 * secs(stats.timings.inference)
                / stats.queried.max(1) as f64,
            peak_memory_mb: peak_memory_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
            engine: stats,
        };
        let json = serde_json::to_vec_pretty(&report)?;
        io::write_atomic(path, &json)
            .with_context(|| format!("could not write the report: {}", path.display()))?;
    }
    Ok(())
}
