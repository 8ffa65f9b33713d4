//! The inference engine: a worker thread that owns the network, encodes support sets
//! once (cached by content), segments query slices in batches and explains clicks.
//!
//! The GUI and the CLI use the same API:
//!
//! ```no_run
//! use std::sync::Arc;
//! use icseg::engine::{Engine, EngineConfig, Event, JobRequest, Strategy, SupportSet};
//! # fn support() -> Arc<SupportSet> { unimplemented!() }
//! let engine = Engine::start(EngineConfig::default(), Box::new(|| { /* ctx.request_repaint() */ }));
//! let id = engine.submit(JobRequest::Propagate {
//!     support: support(),
//!     slices: vec![3, 4, 5],
//!     strategy: Strategy::default(), // nearest annotations, chaining, shape prior
//! });
//! for event in engine.events().iter() {
//!     match event {
//!         Event::SlicePredicted { id: got, slice, probabilities } if got == id => { /* … */ }
//!         Event::PropagationFinished { id: got, .. } if got == id => break,
//!         _ => {}
//!     }
//! }
//! ```
//!
//! [`collect`] does this loop for a caller that wants the finished mask (the CLI, the
//! evaluation). Jobs carry increasing [`JobId`]s (generations): a consumer drops events of jobs
//! older than the one it waits for. Cancellation takes effect between batches. The
//! waker is called after every event so a GUI can repaint; the engine never sees egui.

pub mod chain;
mod device;
mod predictor;
pub mod preprocess;
pub mod retrieval;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use chain::{ChainOptions, INTENSITY_WEIGHT};
pub use device::{AdapterSummary, ComputeDevice, DeviceChoice, list_adapters, select_device};
pub use predictor::{
    CacheUse, ExplainedStage, Explanation, Predictor, PreparedSupport, QueryInputs, SupportSet,
    SupportSlice, support_limit,
};
pub use preprocess::{RoiMode, RoiPolicy};
pub use retrieval::SupportGroup;

use crate::model::{Model, ModelConfig, SupportFeatures, WeightsError};
use crate::volume::extent::keep_run_through_support;
use crate::volume::{Image2D, LabelMap, LabelValue, Region};
pub use crate::volume::{MASK_THRESHOLD, is_inside};

/// Engine failures. Messages say what to do; none carries patient data.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `--device gpu` was asked for and no usable adapter exists.
    #[error("no usable GPU ({reason}); use --device auto or cpu")]
    NoGpu {
        /// What went wrong.
        reason: String,
    },
    /// The weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The support set cannot be used.
    #[error("the annotations cannot be used: {reason}")]
    InvalidSupport {
        /// What is wrong.
        reason: String,
    },
    /// A slice index past the end of the volume.
    #[error("slice {index} does not exist; the volume has {count} slices on this axis")]
    SliceOutOfRange {
        /// The index asked for.
        index: usize,
        /// Slices on the axis.
        count: usize,
    },
    /// An explanation was asked for a pixel outside the region the model sees.
    #[error(
        "pixel ({}, {}) lies outside the region around the annotations that the model looks at; click inside it",
        pixel[0], pixel[1]
    )]
    PixelOutsideRegion {
        /// The pixel `[x, y]`.
        pixel: [usize; 2],
    },
    /// The compute backend failed (out of memory, a driver error).
    #[error("the computation failed ({message}); try --device cpu or fewer slices per batch")]
    Compute {
        /// The backend's message.
        message: String,
    },
    /// The job was cancelled.
    #[error("the propagation was cancelled")]
    Cancelled,
    /// The worker thread is gone.
    #[error("the inference engine has stopped; restart the program")]
    Stopped,
}

/// How a propagation uses its support set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Strategy {
    /// The paper's: every query slice is segmented on its own with the whole support
    /// set or, when `support_size` is below the number of support slices, with its
    /// `support_size` most similar ones (§4.3; see [`retrieval`]). `Some(0)` is an
    /// error.
    OneShot {
        /// The most support slices one query is segmented with (`None`: all).
        support_size: Option<usize>,
    },
    /// Nearest annotated slices, chaining through predicted slices, honest ends and a
    /// shape prior ([`chain`]; not in the paper).
    Chain(ChainOptions),
}

impl Default for Strategy {
    /// Chaining with its default options.
    fn default() -> Self {
        Self::Chain(ChainOptions::default())
    }
}

/// Where the weights come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum WeightsChoice {
    /// The shipped weights for the configuration (see [`default_weights_path`]) when
    /// present, else random initialisation.
    #[default]
    Default,
    /// This file; missing or mismatched is an error.
    File(PathBuf),
    /// Random initialisation (tests, benchmarks).
    Random,
}

/// Where the shipped weights of `config` are looked for, in order: `$ICSEG_WEIGHTS_DIR`,
/// `./weights`, and the source tree's `weights/` folder. Returns the first existing
/// `icseg-<name>.bpk`, or `None`.
pub fn default_weights_path(config: &ModelConfig) -> Option<PathBuf> {
    let file = format!("icseg-{}.bpk", config.name());
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("ICSEG_WEIGHTS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("weights"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights"));
    dirs.into_iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
}

/// Which weights the engine runs with.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum WeightsStatus {
    /// Trained weights from this file.
    Loaded(PathBuf),
    /// Random initialisation (no trained weights found, or asked for).
    RandomInit,
}

/// Loads the model for `config` and `weights` on `device`.
pub fn load_model(
    config: &ModelConfig,
    weights: &WeightsChoice,
    device: &burn::tensor::Device,
) -> Result<(Model, WeightsStatus), EngineError> {
    let path = match weights {
        WeightsChoice::Random => None,
        WeightsChoice::File(p) => Some(p.clone()),
        WeightsChoice::Default => default_weights_path(config),
    };
    match path {
        Some(path) => {
            let model = Model::load_weights(config, &path, device)?;
            Ok((
                model.with_top_k0(config.top_k0),
                WeightsStatus::Loaded(path),
            ))
        }
        None => Ok((config.init(device), WeightsStatus::RandomInit)),
    }
}

/// How to get the compute device.
#[derive(Clone, Debug)]
pub enum DeviceRequest {
    /// Select by choice (see [`select_device`]).
    Choice(DeviceChoice),
    /// Use a device initialised elsewhere (e.g. shared with the GUI's renderer).
    Existing(ComputeDevice),
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The compute device.
    pub device: DeviceRequest,
    /// Network configuration (its `top_k0` is used at inference).
    pub model: ModelConfig,
    /// Weights.
    pub weights: WeightsChoice,
    /// Query slices per batch.
    pub batch_size: usize,
    /// Region of interest policy.
    pub roi: RoiMode,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            device: DeviceRequest::Choice(DeviceChoice::Auto),
            model: ModelConfig::lite(),
            weights: WeightsChoice::Default,
            batch_size: 8,
            roi: RoiMode::default(),
        }
    }
}

/// A job's generation number: later jobs have larger ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct JobId(pub u64);

/// Work for the engine.
#[derive(Clone, Debug)]
pub enum JobRequest {
    /// Segment `slices` (indices across the support set's axis) with the support set.
    Propagate {
        /// The annotated slices.
        support: Arc<SupportSet>,
        /// Slices to predict (annotated ones may be included; they are predicted too).
        slices: Vec<usize>,
        /// How the support set is used.
        strategy: Strategy,
    },
    /// The attention maps for one clicked pixel.
    Explain {
        /// The annotated slices.
        support: Arc<SupportSet>,
        /// The query slice index.
        query_slice: usize,
        /// The clicked pixel `[x, y]` of the query slice.
        pixel: [usize; 2],
        /// As for [`JobRequest::Propagate`]: the maps then cover the support slices a
        /// propagation of `query_slice` with this support size uses.
        support_size: Option<usize>,
    },
    /// The attention maps for one clicked pixel of a slice that a chained propagation
    /// ([`Strategy::Chain`]) segmented: with its `nearest` annotated slices and the
    /// predicted `memory` slices it used ([`SupportGroup`] of the propagation's stats),
    /// with the masks predicted for them.
    ExplainChained {
        /// The annotated slices.
        support: Arc<SupportSet>,
        /// The query slice index.
        query_slice: usize,
        /// The clicked pixel `[x, y]` of the query slice.
        pixel: [usize; 2],
        /// Annotated slices the propagation used per query.
        nearest: usize,
        /// The predicted slices the query used, with their predicted masks.
        memory: Vec<SupportSlice>,
    },
    /// Drops cached support features (e.g. after loading another volume).
    ClearCache,
}

/// Timings and facts about a finished propagation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PropagationStats {
    /// Slices predicted.
    pub slices: usize,
    /// Batches run.
    pub batches: usize,
    /// Slices the network was run on. A chained propagation skips those beyond the
    /// first empty slice past the annotations, and those next to an annotation, where
    /// the prior alone decides ([`chain::prior_weight_at`]).
    pub queried: usize,
    /// Support slices (the candidates, when a support size applied).
    pub support_slices: usize,
    /// Support slices per query when a support size below `support_slices` made the
    /// engine choose them by similarity; `None` when every query used all of them.
    pub support_size: Option<usize>,
    /// Which support slices each query used: one group with all of them, or, after a
    /// choice by similarity, one group per distinct choice (its queries were batched
    /// together and shared its support features). A chained propagation also lists the
    /// slices next to an annotation with the supports the network would have used: a
    /// click there is explained with them.
    pub groups: Vec<SupportGroup>,
    /// Whether support features were cached.
    pub cache: CacheUse,
    /// Preparing and encoding the support set (seconds in JSON).
    #[serde(serialize_with = "as_seconds")]
    pub support_encoding: Duration,
    /// Choosing support slices by similarity (zero without a support size; seconds in
    /// JSON).
    #[serde(serialize_with = "as_seconds")]
    pub retrieval: Duration,
    /// Building the shape prior (its registrations included) and the intensity model of
    /// a chained propagation (zero otherwise; seconds in JSON).
    #[serde(serialize_with = "as_seconds")]
    pub prior: Duration,
    /// Of `prior`, how long the propagation waited for it: the rest was built while
    /// the network ran (seconds in JSON).
    #[serde(serialize_with = "as_seconds")]
    pub prior_wait: Duration,
    /// Blending the network with the prior and adding the intensity evidence, summed
    /// over slices (zero for a one-shot propagation; seconds in JSON).
    #[serde(serialize_with = "as_seconds")]
    pub blend: Duration,
    /// Summed over batches.
    pub timings: Timings,
    /// From the job's start to its end.
    #[serde(serialize_with = "as_seconds")]
    pub total: Duration,
    /// The region of interest used (native pixels).
    pub region: Region,
}

/// Where the time of one batch, or summed over a propagation, went (seconds in JSON).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Slice extraction, resampling, normalisation.
    #[serde(serialize_with = "as_seconds")]
    pub preprocessing: Duration,
    /// The network.
    #[serde(serialize_with = "as_seconds")]
    pub inference: Duration,
    /// Pasting back at native resolution.
    #[serde(serialize_with = "as_seconds")]
    pub postprocessing: Duration,
}

impl Timings {
    /// Adds another batch's timings.
    pub fn add(&mut self, other: &Timings) {
        self.preprocessing += other.preprocessing;
        self.inference += other.inference;
        self.postprocessing += other.postprocessing;
    }
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Facts about a started engine.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EngineInfo {
    /// The compute device, for people.
    pub device: String,
    /// Whether it is a hardware GPU.
    pub is_gpu: bool,
    /// Configuration name (`lite`, `paper`, ...).
    pub model: String,
    /// Model input size.
    pub input_size: usize,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// The weights in use.
    pub weights: WeightsStatus,
}

/// What the engine reports. Every event of a job carries its [`JobId`] as `id`; the
/// other fields are described with their variant.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Event {
    /// The worker has its device and model.
    Ready(EngineInfo),
    /// The worker could not start (device or weights); every later job fails.
    StartFailed(EngineError),
    /// `done` of the `total` slices asked for are answered.
    Progress {
        id: JobId,
        done: usize,
        total: usize,
    },
    /// Slice `slice`'s `probabilities`, in `[0, 1]` on the slice's native pixel grid.
    SlicePredicted {
        id: JobId,
        slice: usize,
        probabilities: Image2D<f32>,
    },
    /// A propagation is complete; `stats` says how it went.
    PropagationFinished { id: JobId, stats: PropagationStats },
    /// An explanation is ready.
    Explained {
        id: JobId,
        explanation: Box<Explanation>,
    },
    /// A job was cancelled (before it started or between batches).
    Cancelled { id: JobId },
    /// A job failed with `error`.
    Failed { id: JobId, error: EngineError },
}

enum Message {
    Job(JobId, JobRequest),
    Shutdown,
}

/// Shared cancellation state: every job with an id ≤ `below_or_at` is cancelled, and
/// so is every id in `ids`.
#[derive(Default)]
struct Cancellation {
    below_or_at: AtomicU64,
    ids: Mutex<HashSet<u64>>,
}

impl Cancellation {
    fn is_cancelled(&self, id: JobId) -> bool {
        id.0 <= self.below_or_at.load(Ordering::Acquire)
            || self.ids.lock().map(|s| s.contains(&id.0)).unwrap_or(false)
    }
}

/// The engine handle: submit jobs, read events, cancel. Dropping it stops the worker
/// (after the current batch).
pub struct Engine {
    jobs: Sender<Message>,
    events: Receiver<Event>,
    cancellation: Arc<Cancellation>,
    next_id: AtomicU64,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker thread. It picks the device and loads the weights, then sends
    /// [`Event::Ready`] (or [`Event::StartFailed`]). `waker` is called after every
    /// event.
    pub fn start(config: EngineConfig, waker: Box<dyn Fn() + Send>) -> Engine {
        let (job_tx, job_rx) = crossbeam_channel::bounded(256);
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let cancellation = Arc::new(Cancellation::default());
        let worker = {
            let cancellation = cancellation.clone();
            std::thread::Builder::new()
                .name("icseg-engine".into())
                .spawn(move || {
                    let out = Outbox {
                        events: event_tx,
                        waker,
                    };
                    worker(config, job_rx, out, &cancellation);
                })
                .expect("the operating system refused to start a thread")
        };
        Engine {
            jobs: job_tx,
            events: event_rx,
            cancellation,
            next_id: AtomicU64::new(1),
            worker: Some(worker),
        }
    }

    /// Waits for the worker's first word after [`Engine::start`]: its [`EngineInfo`] once
    /// the device and weights are ready, or why it could not start. For callers that
    /// block (the CLI, the evaluation, the benchmark); a GUI reads `Ready` from
    /// [`Engine::poll`] instead.
    pub fn wait_ready(&self) -> Result<EngineInfo, EngineError> {
        loop {
            match self.events.recv() {
                Ok(Event::Ready(info)) => return Ok(info),
                Ok(Event::StartFailed(e)) => return Err(e),
                Ok(_) => continue,
                Err(_) => return Err(EngineError::Stopped),
            }
        }
    }

    /// Queues a job and returns its id.
    pub fn submit(&self, job: JobRequest) -> JobId {
        let id = JobId(self.next_id.fetch_add(1, Ordering::AcqRel));
        // A stopped worker is reported by the event channel disconnecting.
        let _ = self.jobs.send(Message::Job(id, job));
        id
    }

    /// Cancels one job (before it starts, or between its batches).
    pub fn cancel(&self, id: JobId) {
        if let Ok(mut ids) = self.cancellation.ids.lock() {
            ids.insert(id.0);
        }
    }

    /// Cancels every job submitted so far.
    pub fn cancel_all(&self) {
        let last = self.next_id.load(Ordering::Acquire).saturating_sub(1);
        self.cancellation
            .below_or_at
            .fetch_max(last, Ordering::AcqRel);
    }

    /// The event channel (blocking `recv`/`iter` for the CLI).
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Events available now, without blocking (for a GUI frame).
    pub fn poll(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.try_iter()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.cancel_all();
        let _ = self.jobs.send(Message::Shutdown);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The slices a propagation predicts in a volume of `count` slices annotated on
/// `annotated`: every other slice or, `bounded`, only those between the first and last
/// annotated slice (what "Fill between slices" fills).
pub fn target_slices(count: usize, annotated: &[usize], bounded: bool) -> Vec<usize> {
    if count == 0 {
        return Vec::new();
    }
    let (lo, hi) = match (annotated.iter().min(), annotated.iter().max()) {
        (Some(&lo), Some(&hi)) if bounded => (lo, hi),
        _ => (0, count.saturating_sub(1)),
    };
    (lo..=hi.min(count.saturating_sub(1)))
        .filter(|z| !annotated.contains(z))
        .collect()
}

/// A finished propagation as a mask ([`collect`]).
pub struct Collected {
    /// The structure: 1 inside, 0 outside, on the volume's grid.
    pub mask: LabelMap,
    /// The engine's report.
    pub stats: PropagationStats,
    /// Predicted slices the run rule cleared (cut off from the structure by an empty
    /// slice).
    pub cleared: usize,
}

/// Propagates `support` to `slices` with `strategy` and waits for the result: the
/// annotated slices' masks, every predicted slice thresholded with [`is_inside`], then
/// the run rule ([`keep_run_through_support`]: the structure is the unbroken run of
/// non-empty slices through the annotations). `on_progress(done, total)` sees the
/// engine's progress. `icseg propagate` and `icseg eval` call this; the app writes the
/// same events into its session as they arrive, with the same threshold and rule.
pub fn collect(
    engine: &Engine,
    support: Arc<SupportSet>,
    slices: Vec<usize>,
    strategy: Strategy,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<Collected, EngineError> {
    let axis = support.axis;
    let annotated: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
    let mut mask = support.annotation_map();
    let id = engine.submit(JobRequest::Propagate {
        support,
        slices,
        strategy,
    });
    loop {
        match engine.events().recv().map_err(|_| EngineError::Stopped)? {
            Event::SlicePredicted {
                id: got,
                slice,
                probabilities,
            } if got == id => {
                mask.set_slice(
                    axis,
                    slice,
                    &probabilities.map(|p| LabelValue::from(is_inside(p))),
                );
            }
            Event::Progress {
                id: got,
                done,
                total,
            } if got == id => on_progress(done, total),
            Event::PropagationFinished { id: got, stats } if got == id => {
                let cleared = keep_run_through_support(&mut mask, axis, &annotated);
                return Ok(Collected {
                    mask,
                    stats,
                    cleared,
                });
            }
            Event::Failed { id: got, error } if got == id => return Err(error),
            Event::Cancelled { id: got } if got == id => return Err(EngineError::Cancelled),
            _ => {}
        }
    }
}

struct Outbox {
    events: Sender<Event>,
    waker: Box<dyn Fn() + Send>,
}

impl Outbox {
    fn send(&self, event: Event) {
        if self.events.send(event).is_ok() {
            (self.waker)();
        }
    }
}

/// Turns a panic inside the compute backend into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(EngineError::Compute { message })
        }
    }
}

fn start_predictor(config: &EngineConfig) -> Result<(Predictor, EngineInfo), EngineError> {
    let device = match &config.device {
        DeviceRequest::Choice(choice) => select_device(*choice)?,
        DeviceRequest::Existing(d) => d.clone(),
    };
    let (model, weights) = load_model(&config.model, &config.weights, &device.device)?;
    let info = EngineInfo {
        device: device.description.clone(),
        is_gpu: device.is_gpu,
        model: config.model.name().to_string(),
        input_size: config.model.input_size,
        trainable_params: model.trainable_param_count(),
        weights,
    };
    Ok((Predictor::new(model, device), info))
}

/// The worker's queue: jobs deferred while a propagation ran, then the channel.
struct Queue {
    channel: Receiver<Message>,
    deferred: std::collections::VecDeque<(JobId, JobRequest)>,
    shutdown: bool,
}

impl Queue {
    /// The next job, blocking; `None` at shutdown.
    fn next(&mut self) -> Option<(JobId, JobRequest)> {
        if self.shutdown {
            return None;
        }
        if let Some(job) = self.deferred.pop_front() {
            return Some(job);
        }
        match self.channel.recv() {
            Ok(Message::Job(id, job)) => Some((id, job)),
            Ok(Message::Shutdown) | Err(_) => {
                self.shutdown = true;
                None
            }
        }
    }
}

fn worker(config: EngineConfig, jobs: Receiver<Message>, out: Outbox, cancellation: &Cancellation) {
    let started = guarded(|| start_predictor(&config));
    let mut predictor = match started {
        Ok((predictor, info)) => {
            out.send(Event::Ready(info));
            Some(predictor)
        }
        Err(e) => {
            out.send(Event::StartFailed(e));
            None
        }
    };
    let mut queue = Queue {
        channel: jobs,
        deferred: Default::default(),
        shutdown: false,
    };
    while let Some((id, job)) = queue.next() {
        if cancellation.is_cancelled(id) {
            out.send(Event::Cancelled { id });
            continue;
        }
        let Some(predictor) = predictor.as_mut() else {
            out.send(Event::Failed {
                id,
                error: EngineError::Stopped,
            });
            continue;
        };
        let result = match job {
            JobRequest::Propagate {
                support,
                slices,
                strategy,
            } => guarded(|| {
                let job = PropagationJob {
                    id,
                    support: &support,
                    slices: &slices,
                };
                match strategy {
                    Strategy::OneShot { support_size } => propagate(
                        predictor,
                        &config,
                        job,
                        support_size,
                        &out,
                        cancellation,
                        &mut queue,
                    ),
                    Strategy::Chain(options) => chain::propagate(
                        predictor,
                        &config,
                        job,
                        options,
                        &out,
                        cancellation,
                        &mut queue,
                    ),
                }
            }),
            job @ (JobRequest::Explain { .. } | JobRequest::ExplainChained { .. }) => {
                match Click::of(job) {
                    Ok((support, click)) => explain(predictor, &config, id, &support, click, &out),
                    Err(_) => Ok(()),
                }
            }
            JobRequest::ClearCache => {
                predictor.clear_cache();
                Ok(())
            }
        };
        if let Err(error) = result {
            out.send(Event::Failed { id, error });
        }
    }
}

/// What an explanation job asks about.
struct Click {
    query_slice: usize,
    pixel: [usize; 2],
    supports: ClickSupports,
}

/// Which support slices an explained query uses.
enum ClickSupports {
    /// All, or the `Some(k)` most similar (as a one-shot propagation).
    Similar(Option<usize>),
    /// As a chained propagation: the nearest annotated slices and this memory.
    Chained {
        nearest: usize,
        memory: Vec<SupportSlice>,
    },
}

impl Click {
    /// The click of an explanation request; `None` for other jobs.
    fn of(job: JobRequest) -> Result<(Arc<SupportSet>, Click), JobRequest> {
        match job {
            JobRequest::Explain {
                support,
                query_slice,
                pixel,
                support_size,
            } => Ok((
                support,
                Click {
                    query_slice,
                    pixel,
                    supports: ClickSupports::Similar(support_size),
                },
            )),
            JobRequest::ExplainChained {
                support,
                query_slice,
                pixel,
                nearest,
                memory,
            } => Ok((
                support,
                Click {
                    query_slice,
                    pixel,
                    supports: ClickSupports::Chained { nearest, memory },
                },
            )),
            other => Err(other),
        }
    }
}

/// Runs one explanation job, sending its event.
fn explain(
    predictor: &mut Predictor,
    config: &EngineConfig,
    id: JobId,
    support: &SupportSet,
    click: Click,
    out: &Outbox,
) -> Result<(), EngineError> {
    guarded(|| {
        let explanation = match &click.supports {
            ClickSupports::Similar(support_size) => predictor.explain(
                support,
                config.roi,
                click.query_slice,
                click.pixel,
                *support_size,
            )?,
            ClickSupports::Chained { nearest, memory } => predictor.explain_chained(
                support,
                config.roi,
                click.query_slice,
                click.pixel,
                *nearest,
                memory,
            )?,
        };
        out.send(Event::Explained {
            id,
            explanation: Box::new(explanation),
        });
        Ok(())
    })
}

/// Between two batches of a propagation: serves explanation requests at once (a click
/// should not wait for a whole volume), defers other jobs, notes a shutdown.
fn serve_between_batches(
    predictor: &mut Predictor,
    config: &EngineConfig,
    out: &Outbox,
    cancellation: &Cancellation,
    queue: &mut Queue,
) {
    while let Ok(message) = queue.channel.try_recv() {
        match message {
            Message::Shutdown => queue.shutdown = true,
            Message::Job(id, job) => match Click::of(job) {
                Ok((support, click)) => {
                    if cancellation.is_cancelled(id) {
                        out.send(Event::Cancelled { id });
                    } else if let Err(error) = explain(predictor, config, id, &support, click, out)
                    {
                        out.send(Event::Failed { id, error });
                    }
                }
                Err(job) => queue.deferred.push_back((id, job)),
            },
        }
    }
}

/// Between two batches of propagation `id`: serves explanation requests
/// ([`serve_between_batches`]) and tells whether the job must stop (cancelled, or the
/// engine shutting down; `Cancelled` is then sent).
fn must_stop(
    id: JobId,
    predictor: &mut Predictor,
    config: &EngineConfig,
    out: &Outbox,
    cancellation: &Cancellation,
    queue: &mut Queue,
) -> bool {
    serve_between_batches(predictor, config, out, cancellation, queue);
    let stop = cancellation.is_cancelled(id) || queue.shutdown;
    if stop {
        out.send(Event::Cancelled { id });
    }
    stop
}

/// A propagation request.
struct PropagationJob<'a> {
    id: JobId,
    support: &'a SupportSet,
    slices: &'a [usize],
}

/// Runs one propagation job, sending its events.
///
/// Without a support size (or with one at least the support set's size) every query
/// is segmented with the whole support set, in the order asked for. Otherwise the
/// support images are encoded once, every query is scored against all of them in
/// batches ([`Predictor::choose_supports`]), queries that chose the same slices form a
/// group, and each group is segmented in batches with its slices' features, selected
/// from the ones already encoded (nothing is encoded twice). Batches run in the order
/// of their first slice in the request.
fn propagate(
    predictor: &mut Predictor,
    config: &EngineConfig,
    job: PropagationJob<'_>,
    support_size: Option<usize>,
    out: &Outbox,
    cancellation: &Cancellation,
    queue: &mut Queue,
) -> Result<(), EngineError> {
    let PropagationJob {
        id,
        support,
        slices,
    } = job;
    let start = Instant::now();
    let total = slices.len();
    let batch_size = config.batch_size.max(1);
    out.send(Event::Progress { id, done: 0, total });
    let limit = support_limit(support_size, support.slices.len())?;
    let prepared = predictor.prepare_support(support, config.roi)?;
    let (features, cache) = predictor.support_features(&prepared);
    let support_encoding = start.elapsed();

    // With a support size, every query is prepared and encoded once here, scored, and
    // its input and encoding kept for the prediction below.
    let retrieval_start = Instant::now();
    let mut kept: Option<QueryInputs> = None;
    let groups = match limit {
        None => vec![((0..support.slices.len()).collect(), slices.to_vec())],
        Some(k) => {
            let mut choices = Vec::with_capacity(total);
            for batch in slices.chunks(batch_size) {
                if must_stop(id, predictor, config, out, cancellation, queue) {
                    return Ok(());
                }
                let mut inputs = predictor.query_inputs(
                    &support.volume,
                    support.axis,
                    batch,
                    &prepared.region,
                )?;
                let picks = predictor.choose_for(support, &features.attention, &mut inputs, k)?;
                choices.extend(batch.iter().copied().zip(picks));
                match kept.as_mut() {
                    Some(all) => all.append(inputs),
                    None => kept = Some(inputs),
                }
            }
            retrieval::group_queries(&choices)
        }
    };
    let retrieval = retrieval_start.elapsed();
    let slice_dims = support.volume.geometry().slice_dims(support.axis);

    // Batches hold queries of one group; they run in the order of their first slice
    // in the request, so slices still arrive roughly in the order asked for.
    let position: std::collections::HashMap<usize, usize> = slices
        .iter()
        .enumerate()
        .map(|(n, &s)| (s, n))
        .rev()
        .collect();
    let mut batches: Vec<(usize, &[usize])> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, (_, queries))| queries.chunks(batch_size).map(move |b| (g, b)))
        .collect();
    batches.sort_by_key(|(_, batch)| position[&batch[0]]);
    let mut selected: Vec<Option<SupportFeatures>> = vec![None; groups.len()];

    let mut timings = Timings::default();
    let mut done = 0;
    for &(g, batch) in &batches {
        if must_stop(id, predictor, config, out, cancellation, queue) {
            return Ok(());
        }
        let group_features = match limit {
            None => &features,
            Some(_) => selected[g]
                .get_or_insert_with(|| predictor.model().select_support(&features, &groups[g].0)),
        };
        let (probabilities, t) = match &kept {
            Some(inputs) => predictor.predict_inputs(
                group_features,
                &inputs.select(batch),
                &prepared.region,
                slice_dims,
            )?,
            None => predictor.predict_batch(
                group_features,
                &support.volume,
                support.axis,
                batch,
                &prepared.region,
            )?,
        };
        timings.add(&t);
        for (&slice, probabilities) in batch.iter().zip(probabilities) {
            out.send(Event::SlicePredicted {
                id,
                slice,
                probabilities,
            });
        }
        done += batch.len();
        out.send(Event::Progress { id, done, total });
    }
    out.send(Event::PropagationFinished {
        id,
        stats: PropagationStats {
            slices: total,
            batches: batches.len(),
            queried: total,
            support_slices: support.slices.len(),
            support_size: limit,
            groups: groups
                .into_iter()
                .map(|(positions, queries)| SupportGroup {
                    support: positions.iter().map(|&p| support.slices[p].index).collect(),
                    queries,
                })
                .collect(),
            cache,
            support_encoding,
            retrieval,
            prior: Duration::ZERO,
            prior_wait: Duration::ZERO,
            blend: Duration::ZERO,
            timings,
            total: start.elapsed(),
            region: prepared.region,
        },
    });
    Ok(())
}

#[cfg(test)]
mod tests;
