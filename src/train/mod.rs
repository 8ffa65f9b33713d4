//! Training the network on real and synthetic episodes (`icseg train`).
//!
//! The paper's recipe (section 3.3) where it fits a small budget: loss = squared-
//! denominator Dice + 0.25 × BCE, AdamW (weight decay 1e-3) with step decay (halved at
//! 48 % and 65 % of the run, the paper's 75k and 100k of 155k steps), top-K 5 for the
//! first 80 % of the run then 24, the EMA twin updated after every optimiser step, and a
//! variable support size per episode. Episodes come from [`episode`] (real volumes,
//! prepared exactly like inference inputs) and [`synthetic`] volumes mixed in at a
//! configurable rate.
//!
//! Runs are repeatable: episode `n` is drawn from a generator seeded by `(seed, n)`, so
//! a resumed run continues with exactly the episodes it would have seen.

pub mod augment;
pub mod data;
pub mod episode;
pub mod synthetic;
pub mod synthseg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::io::LoadError;
use crate::model::{Model, ModelConfig, WeightsError};
use crate::volume::Image2D;
use data::TrainVolume;
use episode::{Episode, EpisodeConfig, sample_episode};

/// Why training (or loading its data) failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or folder of the run could not be read or written.
    #[error("could not {action} ({source}): {}", path.display())]
    Io {
        /// What was being done: "create", "list", "open", "read" or "write".
        action: &'static str,
        /// The run folder, one of its files, or a data folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `state.json` of the run folder is not what this build writes.
    #[error("the run's state.json is damaged ({source}); start a new run folder: {}", path.display())]
    DamagedState {
        /// The run's `state.json`.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// Weights could not be loaded to resume or saved at a checkpoint.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The AdamW state could not be loaded or saved.
    #[error("cannot {action} the optimiser state ({reason}): {}", path.display())]
    Optimizer {
        /// "load" or "save".
        action: &'static str,
        /// burn's message.
        reason: String,
        /// The run's `optimizer.bin`.
        path: PathBuf,
    },
    /// A training case could not be read.
    #[error("reading {what} of case {case}: {source}")]
    Case {
        /// The case name.
        case: String,
        /// "the image" or "the <role> labels".
        what: String,
        /// The loader's error (it names the file).
        source: LoadError,
    },
    /// No episode could be drawn for a step.
    #[error("no training episode could be drawn: the data holds no usable structure")]
    NoEpisodes,
    /// The loss became infinite or NaN.
    #[error("the training loss diverged at step {step} ({loss}); lower the learning rate")]
    Diverged {
        /// The step whose loss diverged.
        step: usize,
        /// Its loss (infinite or NaN).
        loss: f64,
    },
}

impl TrainError {
    /// Maps an I/O error on `path` while doing `action`.
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    /// Maps burn's error on the optimiser state at `path` while doing `action`.
    fn optimizer<E: std::fmt::Debug>(action: &'static str, path: &Path) -> impl FnOnce(E) -> Self {
        let path = path.to_path_buf();
        move |e| Self::Optimizer {
            action,
            reason: format!("{e:?}"),
            path,
        }
    }
}

/// Everything that defines a training run (saved with every checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Network configuration.
    pub model: ModelConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Episodes per optimiser step.
    pub episodes_per_step: usize,
    /// Peak learning rate (after a linear warm-up).
    pub learning_rate: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// EMA factor μ of the twin encoder.
    pub ema_mu: f64,
    /// Share of episodes drawn from synthetic volumes.
    pub synthetic_rate: f64,
    /// Random seed.
    pub seed: u64,
    /// Episode sampling.
    pub episodes: EpisodeConfig,
    /// Validation every this many steps (and at the end).
    pub validate_every: usize,
    /// Fixed validation episodes.
    pub validation_episodes: usize,
    /// The data folders trained on, as given (for the weights manifest).
    #[serde(default)]
    pub data: Vec<String>,
    /// The validation folder, as given.
    #[serde(default)]
    pub validation_data: Option<String>,
    /// The weights a fine-tuning run started from (`None`: random initialisation).
    #[serde(default)]
    pub init_weights: Option<String>,
}

impl TrainConfig {
    /// Defaults for a model configuration.
    pub fn new(model: ModelConfig) -> Self {
        let size = model.input_size;
        Self {
            model,
            steps: 3200,
            episodes_per_step: 2,
            learning_rate: 3e-4,
            warmup_steps: 100,
            weight_decay: 1e-3,
            ema_mu: 0.99,
            synthetic_rate: 0.1,
            seed: 1,
            episodes: EpisodeConfig {
                size,
                ..Default::default()
            },
            validate_every: 200,
            validation_episodes: 48,
            data: Vec::new(),
            validation_data: None,
            init_weights: None,
        }
    }

    /// Learning rate at `step`: linear warm-up, then halved at 48 % and 65 % of the run.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        let warm = if step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let frac = step as f64 / self.steps.max(1) as f64;
        let decay = if frac >= 0.65 {
            0.25
        } else if frac >= 0.48 {
            0.5
        } else {
            1.0
        };
        self.learning_rate * warm * decay
    }

    /// Top-K base K0 at `step`: 5, then 24 for the last 20 % (paper §3.3).
    pub fn top_k0_at(&self, step: usize) -> usize {
        if step as f64 >= 0.8 * self.steps as f64 {
            24
        } else {
            5
        }
    }
}

/// Squared-denominator Dice (Milletari et al. 2016) + 0.25 × binary cross-entropy, the
/// paper's loss. Returns `[1]`.
///
/// The Dice term is pooled over the batch — one episode's queries, all slices of one
/// structure — so it is the soft version of the volume Dice the evaluation measures
/// (the paper does not say whether its Dice is per image). Per-image Dice with a
/// smoothing constant gives an empty query slice an all-or-nothing term (0 when the
/// prediction is exactly empty, about 1 otherwise); with a third of the queries empty
/// (slices beyond the structure's ends) that made "predict nothing anywhere" the best
/// strategy for a network that cannot yet tell the slices apart, and our CPU runs
/// collapsed to it. Pooled, an empty slice's false positives only enlarge the
/// denominator, as they do in the volume Dice.
///
/// # Shapes
/// `logits`, `target`: `[B, 1, H, W]`.
pub fn segmentation_loss(logits: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let [b, _, h, w] = logits.dims();
    let p = sigmoid(logits.clone()).reshape([1, b * h * w]);
    let t = target.clone().reshape([1, b * h * w]);
    let eps = 1.0;
    let inter = (p.clone() * t.clone()).sum_dim(1); // [1, 1]
    let denom = p.powf_scalar(2.0).sum_dim(1) + t.powf_scalar(2.0).sum_dim(1);
    let dice = (inter * 2.0 + eps) / (denom + eps);
    let dice_loss = dice.neg().add_scalar(1.0).mean();
    let bce = -(target.clone() * log_sigmoid(logits.clone())
        + (target.neg() + 1.0) * log_sigmoid(logits.neg()))
    .mean();
    dice_loss + bce * 0.25
}

/// Stacks `size × size` images into a `[N, 1, size, size]` tensor.
pub fn stack(images: &[Image2D<f32>], device: &Device) -> Tensor<4> {
    let (w, h) = (images[0].width, images[0].height);
    let data: Vec<f32> = images.iter().flat_map(|i| i.data.iter().copied()).collect();
    Tensor::from_data(TensorData::new(data, [images.len(), 1, h, w]), device)
}

/// Per-query Dice of thresholded predictions (for validation).
pub fn hard_dice(logits: &Tensor<4>, targets: &[Image2D<f32>]) -> Vec<f64> {
    let values = logits
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let per = targets.first().map_or(0, |t| t.data.len());
    targets
        .iter()
        .enumerate()
        .map(|(q, t)| {
            let (mut inter, mut sum) = (0.0, 0.0);
            for (l, &tv) in values[q * per..(q + 1) * per].iter().zip(&t.data) {
                let p = if *l > 0.0 { 1.0 } else { 0.0 };
                inter += p * tv as f64;
                sum += p + tv as f64;
            }
            if sum == 0.0 { 1.0 } else { 2.0 * inter / sum }
        })
        .collect()
}

/// A training run's data: real volumes and a pool of synthetic ones.
pub struct TrainingData {
    /// Real training volumes.
    pub real: Vec<TrainVolume>,
    /// Synthetic volumes.
    pub synthetic: Vec<TrainVolume>,
    real_keys: HashMap<String, Vec<(usize, usize)>>,
    synthetic_keys: HashMap<String, Vec<(usize, usize)>>,
}

fn index_keys(volumes: &[TrainVolume]) -> HashMap<String, Vec<(usize, usize)>> {
    let mut by_key: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    for (vi, tv) in volumes.iter().enumerate() {
        for (si, s) in tv.structures.iter().enumerate() {
            by_key.entry(s.key.clone()).or_default().push((vi, si));
        }
    }
    by_key
}

impl TrainingData {
    /// Wraps loaded volumes and generates `synthetic_count` synthetic ones from `seed`.
    pub fn new(real: Vec<TrainVolume>, synthetic_count: usize, seed: u64) -> Self {
        let synthetic: Vec<TrainVolume> = (0..synthetic_count)
            .map(|n| {
                let s = seed.wrapping_mul(1_000_003).wrapping_add(n as u64);
                let organs = 2 + (s % 4) as usize;
                let (v, l) = synthetic::synthetic_volume([96, 96, 40], organs, s);
                // Each synthetic volume is its own task family: no cross-patient pairs.
                TrainVolume::new(
                    format!("synthetic/{n}"),
                    format!("syn{n}"),
                    v,
                    vec![("label".into(), l)],
                )
            })
            .collect();
        Self {
            real_keys: index_keys(&real),
            synthetic_keys: index_keys(&synthetic),
            real,
            synthetic,
        }
    }

    /// Draws episode number `n` of a run (deterministic for `(seed, n)`).
    pub fn episode(&self, cfg: &TrainConfig, n: u64) -> Option<Episode> {
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n);
        use rand::RngExt as _;
        let synthetic = self.real.is_empty()
            || (!self.synthetic.is_empty() && rng.random_bool(cfg.synthetic_rate));
        // With fixed shapes a draw that falls short (a structure too short for the
        // queries, a single annotation for a chained episode) is drawn again.
        let attempts = if cfg.episodes.fixed_shapes { 64 } else { 8 };
        for _ in 0..attempts {
            let ep = if synthetic {
                sample_episode(
                    &self.synthetic,
                    &self.synthetic_keys,
                    &cfg.episodes,
                    &mut rng,
                )
            } else {
                sample_episode(&self.real, &self.real_keys, &cfg.episodes, &mut rng)
            };
            if ep.as_ref().is_some_and(|e| cfg.episodes.fits(e)) {
                return ep;
            }
        }
        None
    }
}

/// Progress of a run, reported to the caller after every step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    /// Steps done.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// Training loss of this step.
    pub loss: f64,
    /// Exponential moving average of the loss.
    pub loss_avg: f64,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Episodes per second over the run so far (this session).
    pub episodes_per_second: f64,
}

/// A validation result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Validation {
    /// Step validated at.
    pub step: usize,
    /// Mean loss over the validation episodes.
    pub loss: f64,
    /// Mean hard Dice over the validation queries whose target holds the structure.
    pub dice: f64,
    /// Share of empty-target queries (slices past the structure) predicted empty.
    #[serde(default)]
    pub empty_correct: f64,
}

impl Validation {
    /// The model-selection score: foreground Dice, weighted 4 : 1 with correctly empty
    /// predictions — a network that predicts nothing scores 0.2, not the share of empty
    /// targets.
    pub fn score(&self) -> f64 {
        0.8 * self.dice + 0.2 * self.empty_correct
    }
}

/// What a checkpoint folder records besides the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Steps completed.
    pub step: usize,
    /// Smoothed training loss.
    pub loss_avg: f64,
    /// Every validation so far.
    pub validations: Vec<Validation>,
    /// Step of the best validation score (saved as `best.bpk`).
    pub best_step: Option<usize>,
    /// Wall time spent training across sessions, seconds.
    pub wall_seconds: f64,
    /// Device description of each session.
    pub devices: Vec<String>,
}

/// Paths inside a run folder.
pub struct RunFiles {
    /// `latest.bpk`: the weights after the last completed checkpoint.
    pub latest: PathBuf,
    /// `best.bpk`: the weights with the best validation score.
    pub best: PathBuf,
    /// `optimizer.bin`: AdamW state for resuming.
    pub optimizer: PathBuf,
    /// `state.json`: [`TrainState`].
    pub state: PathBuf,
    /// `log.jsonl`: one line per step report and validation.
    pub log: PathBuf,
}

impl RunFiles {
    /// The files of the run folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            latest: dir.join("latest.bpk"),
            best: dir.join("best.bpk"),
            optimizer: dir.join("optimizer.bin"),
            state: dir.join("state.json"),
            log: dir.join("log.jsonl"),
        }
    }
}

/// One session of a training run: where the run lives, how long to go on, the device,
/// and whom to tell about progress. A run may span several sessions (resume).
pub struct TrainingRun<'a> {
    /// The run folder (created; resumed from when it holds a checkpoint and `resume`).
    pub dir: PathBuf,
    /// Continue from the folder's checkpoint.
    pub resume: bool,
    /// Stop this session after this many seconds (the run can be resumed).
    pub time_limit_s: Option<f64>,
    /// Checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Compute device (autodiff is added here).
    pub device: Device,
    /// Human description of the device, recorded in the state.
    pub device_name: String,
    /// Called after every step.
    pub on_step: &'a mut dyn FnMut(&StepReport),
    /// Called after every validation.
    pub on_validation: &'a mut dyn FnMut(&Validation, bool),
}

fn episode_loss(model: &Model, ep: &Episode, device: &Device) -> (Tensor<1>, Tensor<4>) {
    let support = model.encode_support(
        stack(&ep.support_images, device),
        stack(&ep.support_masks, device),
    );
    let out = model.forward_query(&support, stack(&ep.query_images, device));
    let loss = segmentation_loss(out.logits.clone(), stack(&ep.query_masks, device));
    (loss, out.logits)
}

/// Validates `model` on fixed episodes (K0 = 8, as at inference; no gradients): mean
/// loss, mean hard Dice over queries that hold the structure, and the share of
/// empty-target queries predicted empty.
pub fn validate(model: &Model, episodes: &[Episode], device: &Device, step: usize) -> Validation {
    let model = model.clone().with_top_k0(8);
    let (mut loss, mut dice, mut n_fg, mut empty_ok, mut n_empty) =
        (0.0, 0.0, 0usize, 0usize, 0usize);
    for ep in episodes {
        let (l, logits) = episode_loss(&model, ep, device);
        loss += l.into_scalar::<f32>() as f64;
        for (d, target) in hard_dice(&logits, &ep.query_masks)
            .into_iter()
            .zip(&ep.query_masks)
        {
            if target.data.contains(&1.0) {
                dice += d;
                n_fg += 1;
            } else {
                // Dice is 1 exactly when nothing was predicted.
                empty_ok += usize::from(d == 1.0);
                n_empty += 1;
            }
        }
    }
    Validation {
        step,
        loss: loss / episodes.len().max(1) as f64,
        dice: dice / n_fg.max(1) as f64,
        empty_correct: if n_empty == 0 {
            1.0
        } else {
            empty_ok as f64 / n_empty as f64
        },
    }
}

/// Episodes drawn ahead of the optimiser by worker threads, handed out in index order
/// (so a run is the same whatever the number of workers).
struct Prefetch {
    rx: crossbeam_channel::Receiver<(u64, Option<Episode>)>,
    ready: std::collections::BTreeMap<u64, Option<Episode>>,
}

impl Prefetch {
    fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        data: &'env TrainingData,
        cfg: &'env TrainConfig,
        first: u64,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (cores.saturating_sub(1)).clamp(1, 8) as u64;
        let (tx, rx) =
            crossbeam_channel::bounded(4 * cfg.episodes_per_step.max(1) * workers as usize);
        for w in 0..workers {
            let tx = tx.clone();
            scope.spawn(move || {
                let mut n = first + w;
                // Ends when the trainer drops the receiver.
                while tx.send((n, data.episode(cfg, n))).is_ok() {
                    n += workers;
                }
            });
        }
        Self {
            rx,
            ready: Default::default(),
        }
    }

    /// Episode `n` (indices must be asked for in increasing order).
    fn take(&mut self, n: u64) -> Option<Episode> {
        loop {
            if let Some(ep) = self.ready.remove(&n) {
                return ep;
            }
            let (m, ep) = self.rx.recv().ok()?;
            self.ready.insert(m, ep);
        }
    }
}

/// Trains (or resumes) a run. Returns the final state.
pub fn train(
    config: TrainConfig,
    data: &TrainingData,
    validation: &[Episode],
    mut run: TrainingRun<'_>,
) -> Result<TrainState, TrainError> {
    let files = RunFiles::new(&run.dir);
    std::fs::create_dir_all(&run.dir).map_err(TrainError::io("create", &run.dir))?;
    let device = run.device.clone().autodiff();
    let optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init();
    let (mut model, mut optim, mut state) = if run.resume && files.state.exists() {
        resume(config, &files, &device, optim)?
    } else {
        let model = match &config.init_weights {
            // Fine-tuning: a new run that starts from trained weights.
            Some(path) => Model::load_weights(&config.model, Path::new(path), &device)?,
            None => config.model.init(&device),
        };
        (model, optim, TrainState::new(config))
    };
    state.devices.push(run.device_name.clone());
    let cfg = state.config.clone();
    let mut log = RunLog::open(&files.log)?;
    let mut clock = Clock {
        started: Instant::now(),
        wall_before: state.wall_seconds,
        episodes_done: 0,
    };
    let first_episode = (state.step * cfg.episodes_per_step) as u64;
    if state.step == 0 {
        // The starting point is the first candidate: a fine-tune that never beats the
        // weights it started from keeps them as best.bpk, and its log says so.
        validate_and_report(&model, validation, &mut run, &mut state, &files, &mut log)?;
    }
    let model = std::thread::scope(|scope| -> Result<Model, TrainError> {
        let mut prefetch = Prefetch::start(scope, data, &cfg, first_episode);
        while state.step < cfg.steps && !run.out_of_time(&clock) {
            let report;
            (model, report) = optimiser_step(
                model,
                &mut optim,
                &mut prefetch,
                &cfg,
                &mut state,
                &device,
                &mut clock,
            )?;
            (run.on_step)(&report);
            log.append(&report)?;
            let validate_now =
                state.step.is_multiple_of(cfg.validate_every) || state.step == cfg.steps;
            if validate_now {
                validate_and_report(&model, validation, &mut run, &mut state, &files, &mut log)?;
            }
            if state.step.is_multiple_of(run.checkpoint_every) || validate_now {
                checkpoint(&files, &model, &optim, &state)?;
            }
        }
        Ok(model)
    })?;
    checkpoint(&files, &model, &optim, &state)?;
    Ok(state)
}

impl TrainState {
    /// The state of a run that has not taken a step yet.
    fn new(config: TrainConfig) -> Self {
        Self {
            config,
            step: 0,
            loss_avg: f64::NAN,
            validations: Vec::new(),
            best_step: None,
            wall_seconds: 0.0,
            devices: Vec::new(),
        }
    }
}

impl TrainingRun<'_> {
    fn out_of_time(&self, clock: &Clock) -> bool {
        self.time_limit_s
            .is_some_and(|t| clock.started.elapsed().as_secs_f64() > t)
    }
}

/// Wall time and episodes of this training session.
struct Clock {
    started: Instant,
    /// Wall time of earlier sessions of the run, seconds.
    wall_before: f64,
    episodes_done: usize,
}

/// `log.jsonl`, appended to.
struct RunLog {
    file: std::fs::File,
    path: PathBuf,
}

impl RunLog {
    fn open(path: &Path) -> Result<Self, TrainError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(TrainError::io("open", path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends `record` as one line of JSON.
    fn append(&mut self, record: &impl Serialize) -> Result<(), TrainError> {
        use std::io::Write as _;
        serde_json::to_string(record)
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(self.file, "{line}"))
            .map_err(TrainError::io("write", &self.path))
    }
}

/// Reads a run folder's state, latest weights and optimiser state. The stored
/// configuration wins, except for the length of the run and the episodes per step (a
/// bigger device takes bigger steps); data folders new to the run are added to it.
fn resume(
    config: TrainConfig,
    files: &RunFiles,
    device: &Device,
    optim: ModuleOptimizer,
) -> Result<(Model, ModuleOptimizer, TrainState), TrainError> {
    let text =
        std::fs::read_to_string(&files.state).map_err(TrainError::io("read", &files.state))?;
    let mut state: TrainState =
        serde_json::from_str(&text).map_err(|source| TrainError::DamagedState {
            path: files.state.clone(),
            source,
        })?;
    let model = Model::load_weights(&state.config.model, &files.latest, device)?;
    let optim = if files.optimizer.exists() {
        optim
            .load(&files.optimizer)
            .map_err(TrainError::optimizer("load", &files.optimizer))?
    } else {
        optim
    };
    state.config.steps = config.steps;
    state.config.episodes_per_step = config.episodes_per_step;
    for d in &config.data {
        if !state.config.data.contains(d) {
            state.config.data.push(d.clone());
        }
    }
    Ok((model, optim, state))
}

/// One optimiser step on the next `episodes_per_step` episodes: their mean loss, its
/// gradients, AdamW at the scheduled rate and the EMA twin's update. Advances `state`
/// and reports the step.
fn optimiser_step(
    mut model: Model,
    optim: &mut ModuleOptimizer,
    prefetch: &mut Prefetch,
    cfg: &TrainConfig,
    state: &mut TrainState,
    device: &Device,
    clock: &mut Clock,
) -> Result<(Model, StepReport), TrainError> {
    let step = state.step;
    model.set_top_k0(cfg.top_k0_at(step));
    let mut total: Option<Tensor<1>> = None;
    for e in 0..cfg.episodes_per_step {
        let n = (step * cfg.episodes_per_step + e) as u64;
        let Some(ep) = prefetch.take(n) else {
            continue;
        };
        let (loss, _) = episode_loss(&model, &ep, device);
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
        clock.episodes_done += 1;
    }
    let total = total.ok_or(TrainError::NoEpisodes)?;
    let loss = total / cfg.episodes_per_step as f64;
    let loss_value = loss.clone().inner().into_scalar::<f32>() as f64;
    if !loss_value.is_finite() {
        return Err(TrainError::Diverged {
            step,
            loss: loss_value,
        });
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let lr = cfg.learning_rate_at(step);
    let model = optim.step(lr, model, grads).ema_update(cfg.ema_mu);
    state.step += 1;
    state.loss_avg = if state.loss_avg.is_finite() {
        0.98 * state.loss_avg + 0.02 * loss_value
    } else {
        loss_value
    };
    let elapsed = clock.started.elapsed().as_secs_f64();
    state.wall_seconds = clock.wall_before + elapsed;
    let report = StepReport {
        step: state.step,
        steps: cfg.steps,
        loss: loss_value,
        loss_avg: state.loss_avg,
        learning_rate: lr,
        episodes_per_second: clock.episodes_done as f64 / elapsed.max(1e-9),
    };
    Ok((model, report))
}

/// Validates the model after a step and logs the result; a best score so far is
/// recorded and its weights saved as `best.bpk`. Returns the validation and whether it
/// is the best.
fn validate_and_keep_best(
    model: &Model,
    validation: &[Episode],
    device: &Device,
    state: &mut TrainState,
    files: &RunFiles,
    log: &mut RunLog,
) -> Result<(Validation, bool), TrainError> {
    let v = validate(&model.valid(), validation, device, state.step);
    let best = state.validations.iter().all(|old| v.score() > old.score());
    log.append(&serde_json::json!({ "validation": &v, "best": best }))?;
    state.validations.push(v.clone());
    if best {
        state.best_step = Some(state.step);
        model.save_weights(&files.best)?;
    }
    Ok((v, best))
}

/// Validates (when there are validation episodes), keeps the best and tells the run.
fn validate_and_report(
    model: &Model,
    validation: &[Episode],
    run: &mut TrainingRun<'_>,
    state: &mut TrainState,
    files: &RunFiles,
    log: &mut RunLog,
) -> Result<(), TrainError> {
    if validation.is_empty() {
        return Ok(());
    }
    let (v, best) = validate_and_keep_best(model, validation, &run.device, state, files, log)?;
    (run.on_validation)(&v, best);
    Ok(())
}

/// Saves what a resumed run needs: the latest weights, the optimiser and the state.
fn checkpoint(
    files: &RunFiles,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<(), TrainError> {
    model.save_weights(&files.latest)?;
    optim
        .save(&files.optimizer)
        .map_err(TrainError::optimizer("save", &files.optimizer))?;
    serde_json::to_vec_pretty(state)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::io::write_atomic(&files.state, &bytes))
        .map_err(TrainError::io("write", &files.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_low_for_confident_correct_logits_and_high_for_wrong_ones() {
        let device = Device::flex();
        let target = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 0.0, 0.0], [1, 1, 2, 2]),
            &device,
        );
        let right = Tensor::<4>::from_data(
            TensorData::new(vec![8.0f32, 8.0, -8.0, -8.0], [1, 1, 2, 2]),
            &device,
        );
        let wrong = right.clone().neg();
        let l_right = segmentation_loss(right, target.clone()).into_scalar::<f32>();
        let l_wrong = segmentation_loss(wrong, target).into_scalar::<f32>();
        assert!(l_right < 0.01, "{l_right}");
        assert!(l_wrong > 1.0, "{l_wrong}");
    }

    #[test]
    fn dice_is_pooled_so_an_uncertain_prediction_beats_predicting_nothing() {
        // One query with the structure (4 of 16 pixels), one beyond its end (empty).
        let device = Device::flex();
        let mut t = vec![0.0f32; 32];
        for i in [5, 6, 9, 10] {
            t[i] = 1.0;
        }
        let target = Tensor::<4>::from_data(TensorData::new(t.clone(), [2, 1, 4, 4]), &device);
        let nothing = Tensor::<4>::full([2, 1, 4, 4], -8.0, &device);
        // An unsure network: p = 0.5 on the structure and on two pixels of each slice.
        let mut unsure = vec![-8.0f32; 32];
        for i in [5, 6, 9, 10, 1, 2, 17, 18] {
            unsure[i] = 0.0;
        }
        let unsure = Tensor::<4>::from_data(TensorData::new(unsure, [2, 1, 4, 4]), &device);
        let l_nothing = segmentation_loss(nothing, target.clone()).into_scalar::<f32>();
        let l_unsure = segmentation_loss(unsure, target).into_scalar::<f32>();
        // Per image, the empty slice alone would cost the unsure prediction 0.33 against 0
        // for nothing, so the margin would shrink to about 0.12; pooled, it is about 0.47.
        assert!(
            l_unsure < l_nothing - 0.2,
            "unsure {l_unsure} vs nothing {l_nothing}"
        );
    }

    #[test]
    fn an_empty_target_is_learnable() {
        // With an empty target the Dice term still rewards predicting nothing.
        let device = Device::flex();
        let target = Tensor::<4>::zeros([1, 1, 4, 4], &device);
        let quiet = Tensor::<4>::full([1, 1, 4, 4], -6.0, &device);
        let loud = Tensor::<4>::full([1, 1, 4, 4], 6.0, &device);
        assert!(
            segmentation_loss(quiet, target.clone()).into_scalar::<f32>()
                < segmentation_loss(loud, target).into_scalar::<f32>()
        );
    }

    #[test]
    fn schedule_follows_the_papers_shape() {
        let cfg = TrainConfig {
            steps: 1000,
            warmup_steps: 10,
            learning_rate: 1e-3,
            ..TrainConfig::new(ModelConfig::tiny())
        };
        assert!((cfg.learning_rate_at(0) - 1e-4).abs() < 1e-12);
        assert_eq!(cfg.learning_rate_at(100), 1e-3);
        assert_eq!(cfg.learning_rate_at(500), 5e-4);
        assert_eq!(cfg.learning_rate_at(700), 2.5e-4);
        assert_eq!(cfg.top_k0_at(799), 5);
        assert_eq!(cfg.top_k0_at(800), 24);
    }

    #[test]
    fn training_on_synthetic_episodes_lowers_the_loss_and_resumes_exactly() {
        let mut model_cfg = ModelConfig::tiny();
        model_cfg.input_size = 32;
        let mut cfg = TrainConfig::new(model_cfg);
        cfg.steps = 24;
        cfg.learning_rate = 3e-3;
        cfg.warmup_steps = 2;
        cfg.episodes.queries = 2;
        cfg.episodes.support_range = (1, 3);
        cfg.validate_every = 12;
        let data = TrainingData::new(Vec::new(), 3, 5);
        let validation: Vec<Episode> = (0..3)
            .filter_map(|n| data.episode(&cfg, 1_000_000 + n))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut losses = Vec::new();
        let run = |steps: usize, resume: bool, losses: &mut Vec<f64>| {
            let mut c = cfg.clone();
            c.steps = steps;
            train(
                c,
                &data,
                &validation,
                TrainingRun {
                    dir: dir.path().to_path_buf(),
                    resume,
                    time_limit_s: None,
                    checkpoint_every: 6,
                    device: Device::flex(),
                    device_name: "cpu".into(),
                    on_step: &mut |r| losses.push(r.loss),
                    on_validation: &mut |_, _| {},
                },
            )
            .unwrap()
        };
        let state = run(12, false, &mut losses);
        assert_eq!(state.step, 12);
        let state = run(24, true, &mut losses);
        assert_eq!(state.step, 24);
        // Step 0 (the starting point), 12 and 24.
        assert_eq!(state.validations.len(), 3);
        assert_eq!(state.validations[0].step, 0);
        assert!(RunFiles::new(dir.path()).best.exists());
        let first: f64 = losses[..4].iter().sum::<f64>() / 4.0;
        let last: f64 = losses[losses.len() - 4..].iter().sum::<f64>() / 4.0;
        assert!(last < first, "loss {first} → {last}");
    }

    #[test]
    fn fixed_shapes_give_every_episode_the_same_supports_and_queries() {
        let mut cfg = TrainConfig::new(ModelConfig::tiny());
        cfg.episodes.queries = 3;
        let data = TrainingData::new(Vec::new(), 4, 9);
        let shape = |e: &Episode| (e.support_images.len(), e.query_images.len());
        let varied: std::collections::BTreeSet<(usize, usize)> = (0..60)
            .filter_map(|n| data.episode(&cfg, n))
            .map(|e| shape(&e))
            .collect();
        assert!(varied.len() > 2, "without fixed shapes: {varied:?}");

        cfg.episodes.fixed_shapes = true;
        let fixed: Vec<Episode> = (0..60).filter_map(|n| data.episode(&cfg, n)).collect();
        assert_eq!(
            fixed.len(),
            60,
            "every draw finds an episode of the fixed shape"
        );
        for e in &fixed {
            assert_eq!(shape(e), (2, 3));
            assert_eq!((e.support_masks.len(), e.query_masks.len()), (2, 3));
        }
    }
}
