//! `icseg train`: train the network on image/label folders (see [`crate::train`]).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::engine::{DeviceChoice, select_device};
use crate::model::ModelConfig;
use crate::train::{self, TrainConfig, TrainingData, TrainingRun, data::load_volumes};

/// Arguments of `icseg train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training folders of image/label NIfTI pairs (repeatable), e.g.
    /// `../shared/data/volumes/openkbp/train`.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Validation folder for model selection (fixed episodes drawn from it).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Run folder: checkpoints, `state.json`, `log.jsonl`, `best.bpk`.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in `--out`.
    #[arg(long)]
    pub resume: bool,
    /// Start a new run from these weights instead of a random initialisation
    /// (fine-tuning, e.g. from weights/icseg-lite.bpk); ignored when resuming.
    #[arg(long, value_name = "FILE")]
    pub init_weights: Option<PathBuf>,
    /// Network configuration (`lite`, `paper`, or `tiny` for smoke tests).
    #[arg(long, default_value = "lite")]
    pub config: String,
    /// Total optimiser steps of the run.
    #[arg(long, default_value_t = 3200)]
    pub steps: usize,
    /// Episodes per optimiser step.
    #[arg(long, default_value_t = 2)]
    pub episodes_per_step: usize,
    /// Queries per episode.
    #[arg(long, default_value_t = 6)]
    pub queries: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Share of synthetic episodes.
    #[arg(long, default_value_t = 0.1)]
    pub synthetic_rate: f64,
    /// Synthetic volumes to generate.
    #[arg(long, default_value_t = 48)]
    pub synthetic_volumes: usize,
    /// A folder of brain label maps to synthesise MR-like images of random contrast
    /// from (SynthSeg-style), e.g. `../shared/data/volumes/synthseg-labelmaps`.
    #[arg(long, value_name = "DIR")]
    pub synthseg: Option<PathBuf>,
    /// Use at most this many label maps of `--synthseg`.
    #[arg(long, default_value_t = 20)]
    pub synthseg_maps: usize,
    /// Images of different contrast synthesised from each label map.
    #[arg(long, default_value_t = 2)]
    pub synthseg_contrasts: usize,
    /// Share of episodes drawn as chained propagation uses the network (the nearest
    /// annotated slices as supports; queries between them and past the ends).
    #[arg(long, default_value_t = 0.5)]
    pub p_chain: f64,
    /// Draw the small rotation/scale, contrast, blur and noise per image instead of once
    /// per volume of an episode (how runs before chaining were trained).
    #[arg(long)]
    pub independent_augment: bool,
    /// Give every episode the same shape (2 supports, `--queries` queries), so that a
    /// GPU compiles its kernels once per run instead of for every new shape; for short
    /// GPU windows (`scripts/gpu-train.sh`). Kept by a resumed run as it started.
    #[arg(long)]
    pub fixed_shapes: bool,
    /// Random seed (runs are repeatable for a seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validate every this many steps.
    #[arg(long, default_value_t = 200)]
    pub validate_every: usize,
    /// Number of fixed validation episodes.
    #[arg(long, default_value_t = 48)]
    pub validation_episodes: usize,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Stop this session after so many minutes (resume later with `--resume`).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Use at most this many cases per data folder.
    #[arg(long)]
    pub max_cases: Option<usize>,
    /// Compute device.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
}

/// Runs `icseg train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let model = match args.config.as_str() {
        "lite" => ModelConfig::lite(),
        "paper" => ModelConfig::paper(),
        // For smoke tests of the training path (e.g. on a new device).
        "tiny" => ModelConfig::tiny(),
        other => anyhow::bail!("unknown configuration `{other}`; use lite, paper or tiny"),
    };
    let mut cfg = TrainConfig::new(model);
    cfg.steps = args.steps;
    cfg.episodes_per_step = args.episodes_per_step.max(1);
    cfg.episodes.queries = args.queries.max(1);
    cfg.learning_rate = args.lr;
    cfg.synthetic_rate = args.synthetic_rate.clamp(0.0, 1.0);
    cfg.seed = args.seed;
    cfg.validate_every = args.validate_every.max(1);
    cfg.validation_episodes = args.validation_episodes;
    cfg.episodes.p_chain = args.p_chain.clamp(0.0, 1.0);
    cfg.episodes.shared_in_task = !args.independent_augment;
    cfg.episodes.fixed_shapes = args.fixed_shapes;
    cfg.data = args.data.iter().map(|p| p.display().to_string()).collect();
    if let Some(dir) = &args.synthseg {
        cfg.data.push(dir.display().to_string());
    }
    cfg.validation_data = args.val_data.as_ref().map(|p| p.display().to_string());
    cfg.init_weights = args.init_weights.as_ref().map(|p| p.display().to_string());

    let compute = select_device(args.device).context("no usable compute device")?;
    eprintln!("device: {}", compute.description);

    let t0 = std::time::Instant::now();
    let mut real = Vec::new();
    for dir in &args.data {
        let mut loaded = load_volumes(dir, args.max_cases, &mut |n, total| {
            eprint!("\rloading {} [{}/{total}]", dir.display(), n + 1);
        })?;
        eprintln!();
        real.append(&mut loaded);
    }
    if let Some(dir) = &args.synthseg {
        let mut synthesised = train::synthseg::load(
            dir,
            args.synthseg_maps,
            args.synthseg_contrasts,
            cfg.seed,
            &mut |n, total| eprint!("\rsynthesising from {} [{}/{total}]", dir.display(), n + 1),
        )?;
        eprintln!();
        real.append(&mut synthesised);
    }
    let structures: usize = real.iter().map(|v| v.structures.len()).sum();
    eprintln!(
        "loaded {} volumes ({structures} structures) in {:.0} s; generating {} synthetic volumes",
        real.len(),
        t0.elapsed().as_secs_f64(),
        args.synthetic_volumes
    );
    let data = TrainingData::new(real, args.synthetic_volumes, cfg.seed);

    let validation = match &args.val_data {
        Some(dir) => {
            let volumes = load_volumes(dir, args.max_cases, &mut |_, _| {})?;
            let mut vcfg = cfg.clone();
            vcfg.synthetic_rate = 0.0;
            vcfg.seed = cfg.seed ^ 0x5eed;
            vcfg.episodes.augment = train::augment::AugmentConfig {
                flip: 0.0,
                rot90: 0.0,
                intensity_flip: 0.0,
                edge_target: 0.0,
                affine: 0.0,
                contrast: 0.0,
                blur: 0.0,
                noise: 0.0,
            };
            let vdata = TrainingData::new(volumes, 0, 0);
            (0..cfg.validation_episodes as u64)
                .filter_map(|n| vdata.episode(&vcfg, n))
                .collect()
        }
        None => Vec::new(),
    };
    eprintln!("{} validation episodes", validation.len());

    let tty = std::io::stderr().is_terminal();
    let episodes_per_step = cfg.episodes_per_step as f64;
    let mut on_step = |r: &train::StepReport| {
        let remaining_s =
            (r.steps - r.step) as f64 * episodes_per_step / r.episodes_per_second.max(1e-9);
        let width = 24;
        let filled = width * r.step / r.steps.max(1);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let line = format!(
            "step {}/{} [{bar}] loss {:.4} (avg {:.4}) lr {:.1e} {:.2} episodes/s ETA {:.0} min",
            r.step,
            r.steps,
            r.loss,
            r.loss_avg,
            r.learning_rate,
            r.episodes_per_second,
            remaining_s / 60.0
        );
        if tty {
            eprint!("\r{line}");
        } else if r.step.is_multiple_of(10) {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    };
    let mut on_validation = |v: &train::Validation, best: bool| {
        eprintln!(
            "\nvalidation at step {}: loss {:.4}, Dice {:.4} on the structure, {:.0} % of empty slices left empty, score {:.4}{}",
            v.step,
            v.loss,
            v.dice,
            100.0 * v.empty_correct,
            v.score(),
            if best { " (best)" } else { "" }
        );
    };
    let state = train::train(
        cfg,
        &data,
        &validation,
        TrainingRun {
            dir: args.out.clone(),
            resume: args.resume,
            time_limit_s: args.minutes.map(|m| m * 60.0),
            checkpoint_every: args.checkpoint_every.max(1),
            device: compute.device.clone(),
            device_name: compute.description.clone(),
            on_step: &mut on_step,
            on_validation: &mut on_validation,
        },
    )?;
    eprintln!(
        "\nstopped at step {}/{} after {:.1} min of training in total; best validation at step {:?}",
        state.step,
        state.config.steps,
        state.wall_seconds / 60.0,
        state.best_step
    );
    Ok(())
}
