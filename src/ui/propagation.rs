//! The link to the inference engine: propagation runs with progress and ETA, results
//! written into the session as they arrive, and explanations. No egui here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{
    self, Engine, EngineInfo, Event, Explanation, JobId, JobRequest, Strategy, SupportSet,
    WeightsStatus,
};
use crate::session::PropagationPlan;
use crate::volume::LabelValue;

use super::document::Document;
use super::notice::{Level, Waker};
use super::render::Heatmap;

/// Support slices per query the app starts with: the most the paper evaluates its
/// retrieval with (Table 3), and on a CPU the attention cost of a query grows with it.
pub const DEFAULT_SUPPORT_SIZE: usize = 8;

/// Whether and how the app starts the inference engine.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Passed to [`Engine::start`]; `None` runs without a network (viewing and painting
    /// only).
    pub engine: Option<engine::EngineConfig>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            engine: Some(engine::EngineConfig::default()),
        }
    }
}

/// A propagation in progress.
#[derive(Clone, Debug)]
pub struct Run {
    /// Engine job.
    pub id: JobId,
    /// Document it belongs to.
    pub doc_key: u64,
    /// Structure being propagated.
    pub label: LabelValue,
    /// Slices done so far.
    pub done: usize,
    /// Slices asked for.
    pub total: usize,
    /// When it was submitted.
    pub started: Instant,
    /// When the first slice arrived (support encoding and warm-up before that).
    pub first_result: Option<Instant>,
    /// Slices written into the session (others were user-owned by then).
    pub written: usize,
    /// Support slices sent (annotated and accepted).
    pub support_slices: usize,
    /// The support size asked for (`None`: all support slices for every query).
    pub support_size: Option<usize>,
    /// How the support set is used.
    pub strategy: Strategy,
}

impl Run {
    /// Fraction done in `[0, 1]`.
    pub fn fraction(&self) -> f32 {
        if self.total == 0 {
            1.0
        } else {
            self.done as f32 / self.total as f32
        }
    }

    /// Estimated time left, from the rate since the first result.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let first = self.first_result?;
        if self.done == 0 || self.done >= self.total {
            return None;
        }
        let per_slice = now.duration_since(first).as_secs_f64() / self.done.max(1) as f64;
        Some(Duration::from_secs_f64(
            per_slice * (self.total - self.done) as f64,
        ))
    }
}

/// Facts about the last finished propagation, for the status bar.
#[derive(Clone, Debug, PartialEq)]
pub struct LastRun {
    /// Slices predicted.
    pub slices: usize,
    /// Wall time.
    pub total: Duration,
    /// Time the UI spent building each frame while it ran.
    pub frames: Option<FrameSummary>,
    /// Time between the starts of consecutive frames while it ran (what the user sees
    /// as smoothness: it includes rendering and waiting for events).
    pub intervals: Option<FrameSummary>,
    /// Support slices sent.
    pub support_slices: usize,
    /// Support slices per query when the engine chose them by similarity (`None`: each
    /// query used all of them).
    pub support_size: Option<usize>,
    /// How the support set was used.
    pub strategy: Strategy,
    /// The document and structure it propagated.
    pub doc_key: u64,
    /// The structure it propagated.
    pub label: LabelValue,
    /// The support slices each queried slice used (a chained propagation's memory
    /// included), for the explanation of a click.
    pub groups: Vec<engine::SupportGroup>,
}

impl LastRun {
    /// Distinct support choices among the queries (1 without a choice).
    pub fn support_groups(&self) -> usize {
        self.groups.len()
    }
}

/// UI frame time statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameSummary {
    /// Frames measured.
    pub frames: usize,
    /// Median time spent building a frame (ms).
    pub median_ms: f32,
    /// 95th percentile (ms).
    pub p95_ms: f32,
    /// Longest (ms).
    pub max_ms: f32,
}

/// Summarises frame durations.
pub fn summarise_frames(times: &[Duration]) -> Option<FrameSummary> {
    if times.is_empty() {
        return None;
    }
    let mut ms: Vec<f32> = times.iter().map(|d| d.as_secs_f32() * 1000.0).collect();
    ms.sort_by(f32::total_cmp);
    let at = |q: f32| ms[((ms.len() - 1) as f32 * q).round() as usize];
    Some(FrameSummary {
        frames: ms.len(),
        median_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: ms[ms.len() - 1],
    })
}

/// The message at the end of a propagation: how long it took, what the run rule
/// cleared and how the support set was used. (The UI's frame times are diagnostics for
/// developers: [`frame_diagnostics`], in the log and the View → Diagnostics window.)
fn finished_message(stats: &engine::PropagationStats, run: &Run, cut_off: usize) -> String {
    let per_slice = stats.total.as_secs_f64() * 1000.0 / stats.slices.max(1) as f64;
    let mut text = format!(
        "Propagated {} slices in {:.1} s ({per_slice:.0} ms per slice).",
        stats.slices,
        stats.total.as_secs_f64()
    );
    if cut_off > 0 {
        text.push_str(&format!(
            " {cut_off} predicted slices cut off from the structure by an empty slice were cleared."
        ));
    }
    if let Some(k) = stats.support_size {
        text.push_str(&format!(
            " Each slice used the {k} most similar of {} support slices ({} distinct sets).",
            stats.support_slices,
            stats.groups.len()
        ));
    }
    if let Strategy::Chain(c) = run.strategy {
        text.push_str(&chain_summary(&c, stats.queried, stats.slices));
    }
    text
}

/// The UI's frame times during a run, for developers (log and diagnostics window).
pub fn frame_diagnostics(
    frames: Option<FrameSummary>,
    intervals: Option<FrameSummary>,
) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(f) = frames {
        lines.push(format!(
            "UI frame build time: median {:.1} ms, 95th percentile {:.1} ms, max {:.1} ms ({} frames)",
            f.median_ms, f.p95_ms, f.max_ms, f.frames
        ));
    }
    if let Some(f) = intervals {
        lines.push(format!(
            "Frame intervals: median {:.0} ms, 95th percentile {:.0} ms, max {:.0} ms",
            f.median_ms, f.p95_ms, f.max_ms
        ));
    }
    lines
}

/// What a chained propagation did, for the user: which slices each slice was segmented
/// with, where it stopped, and that the result is blended with interpolation.
pub fn chain_summary(c: &engine::ChainOptions, queried: usize, asked: usize) -> String {
    let mut text = format!(
        " Chained: each slice was segmented with its {} nearest annotated slice{}",
        c.nearest,
        if c.nearest == 1 { "" } else { "s" }
    );
    if c.memory > 0 {
        text.push_str(&format!(
            " and the {} slice{} predicted just before it",
            c.memory,
            if c.memory == 1 { "" } else { "s" }
        ));
    }
    text.push_str(&format!(
        "; the network ran on {queried} of {asked} slices (beyond the annotations the structure ends at the first empty slice)."
    ));
    if c.prior_weight > 0.0 {
        let prior = match c.between {
            crate::volume::interpolate::Between::Interpolate => {
                "shape-based interpolation of your slices"
            }
            crate::volume::interpolate::Between::Nearest => "the shape of your nearest slice",
            crate::volume::interpolate::Between::Matched => {
                "the shapes of your two nearest slices, each where its image matches best"
            }
        };
        text.push_str(&format!(
            " The result is {:.0} % network and {:.0} % {prior}{}.",
            (1.0 - c.prior_weight) * 100.0,
            c.prior_weight * 100.0,
            if c.guided {
                ", carried along a registration of neighbouring slices"
            } else {
                ""
            }
        ));
        if c.near_prior && c.prior_weight < 1.0 {
            text.push_str(
                " Next to your slices it leans on their shape alone (the network is not run there).",
            );
        }
    }
    if c.intensity > 0.0 {
        text.push_str(
            " Near its edge the boundary was pulled onto the image by the intensities inside and around your slices' shapes.",
        );
    }
    text
}

/// Which attention stages the explain panel shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageChoice {
    /// One stage (0: 1/32, 1: 1/16, 2: 1/8).
    One(usize),
    /// All three side by side.
    All,
}

/// An explanation requested or shown.
pub struct ExplainView {
    /// Job id of the request.
    pub id: JobId,
    /// Document it belongs to.
    pub doc_key: u64,
    /// The clicked query slice and pixel.
    pub query: (usize, [f32; 2]),
    /// When it was requested.
    pub requested: Instant,
    /// The engine's answer.
    pub result: Option<Box<Explanation>>,
    /// From the click to the answer arriving in the UI.
    pub latency: Option<Duration>,
    /// Stage selection.
    pub stages: StageChoice,
    /// Show whole support slices instead of the network's region of interest.
    pub whole_slices: bool,
    /// `(stage, support position)` whose attention map is laid over the working view
    /// (while it shows that support slice).
    pub overlay: Option<(usize, usize)>,
    /// Heatmaps per (stage, support position), normalised per stage, built lazily.
    heat_cache: Vec<Option<Heatmap>>,
}

impl ExplainView {
    /// Positions in the support list, the slice receiving the most attention first: at
    /// the stage shown, or summed over the stages when all are shown.
    pub fn order_by_mass(&self) -> Vec<usize> {
        let Some(ex) = &self.result else {
            return Vec::new();
        };
        let masses: Vec<&[f32]> = match self.stages {
            StageChoice::One(s) => ex
                .stages
                .get(s)
                .map(|st| st.support_mass.as_slice())
                .into_iter()
                .collect(),
            StageChoice::All => ex
                .stages
                .iter()
                .map(|st| st.support_mass.as_slice())
                .collect(),
        };
        let total = |n: usize| -> f32 {
            masses
                .iter()
                .map(|m| m.get(n).copied().unwrap_or(0.0))
                .sum()
        };
        order_by_mass(ex.support_slices.len(), total)
    }

    /// The slice pixels `[x0, y0, x1, y1]` (edges) the thumbnails show: the network's
    /// region of interest, or the whole `width × height` slice.
    pub fn crop_box(&self, width: usize, height: usize) -> [f32; 4] {
        match (&self.result, self.whole_slices) {
            (Some(ex), false) => {
                let r = &ex.region;
                [
                    r.x0 as f32,
                    r.y0 as f32,
                    (r.x0 + r.width) as f32,
                    (r.y0 + r.height) as f32,
                ]
            }
            _ => [-0.5, -0.5, width as f32 - 0.5, height as f32 - 0.5],
        }
    }

    /// The heatmap of support slice number `n` at `stage`, on the native slice grid,
    /// scaled so that the strongest location over all support slices of that stage is 1.
    pub fn heatmap(
        &mut self,
        stage: usize,
        n: usize,
        width: usize,
        height: usize,
    ) -> Option<&Heatmap> {
        let ex = self.result.as_ref()?;
        let supports = ex.support_slices.len();
        if stage >= ex.stages.len() || n >= supports {
            return None;
        }
        if self.heat_cache.len() != ex.stages.len() * supports {
            self.heat_cache = vec![None; ex.stages.len() * supports];
        }
        let k = stage * supports + n;
        if self.heat_cache[k].is_none() {
            let max = ex.stages[stage]
                .maps
                .iter()
                .flat_map(|m| m.data.iter().copied())
                .fold(0.0f32, f32::max);
            let native = ex.native_heatmap(stage, n, width, height);
            let scale = if max > 0.0 { 1.0 / max } else { 0.0 };
            self.heat_cache[k] = Some(Heatmap {
                slice: ex.support_slices[n],
                values: native.map(|v| (v * scale).clamp(0.0, 1.0)),
            });
        }
        self.heat_cache[k].as_ref()
    }
}

/// `0..n` ordered by `mass`, largest first (ties: the earlier position first).
pub fn order_by_mass(n: usize, mass: impl Fn(usize) -> f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| mass(b).total_cmp(&mass(a)).then(a.cmp(&b)));
    order
}

/// Why a propagation or an explanation could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The engine did not start (or runs without a network).
    #[error("the network is not available: {0}")]
    Unavailable(String),
    /// No structure is selected.
    #[error("select a structure in the label list first")]
    NoStructure,
    /// The structure has no support slice to explain with.
    #[error(
        "paint the structure on a few slices (or accept predictions) first; the explanation shows how the network uses them"
    )]
    NoSupport,
}

/// Results of one [`Propagation::poll`].
#[derive(Default)]
pub struct PollEvents {
    /// Messages for the user.
    pub notices: Vec<(Level, String)>,
    /// A propagation finished (time to autosave).
    pub propagation_finished: bool,
}

/// The engine and the runs it is doing for the app.
pub struct Propagation {
    engine: Option<Engine>,
    info: Option<EngineInfo>,
    failure: Option<String>,
    run: Option<Run>,
    last: Option<LastRun>,
    explain: Option<ExplainView>,
    frame_times: Vec<Duration>,
    frame_intervals: Vec<Duration>,
}

impl Propagation {
    /// Starts the engine's worker (it loads the model in the background).
    pub fn new(config: &EngineSettings, waker: Waker) -> Self {
        let engine = config
            .engine
            .clone()
            .map(|c| Engine::start(c, Box::new(move || waker())));
        Self {
            failure: engine
                .is_none()
                .then(|| "this session runs without the network".to_owned()),
            engine,
            info: None,
            run: None,
            last: None,
            explain: None,
            frame_times: Vec::new(),
            frame_intervals: Vec::new(),
        }
    }

    /// The engine's device and model, once started.
    pub fn info(&self) -> Option<&EngineInfo> {
        self.info.as_ref()
    }

    /// Why the engine cannot run, if it cannot.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The running propagation.
    pub fn run(&self) -> Option<&Run> {
        self.run.as_ref()
    }

    /// The last finished propagation.
    pub fn last(&self) -> Option<&LastRun> {
        self.last.as_ref()
    }

    /// The explanation panel's contents.
    pub fn explanation(&self) -> Option<&ExplainView> {
        self.explain.as_ref()
    }

    /// Mutable explanation (stage switch, heatmap cache).
    pub fn explanation_mut(&mut self) -> Option<&mut ExplainView> {
        self.explain.as_mut()
    }

    /// Records how long the UI took to build a frame and how long after the previous
    /// frame it started (kept while a run is active).
    pub fn record_frame(&mut self, spent: Duration, interval: Option<Duration>) {
        if self.run.is_some() && self.frame_times.len() < 100_000 {
            self.frame_times.push(spent);
            self.frame_intervals.extend(interval);
        }
    }

    /// Forgets runs and explanations of a document that is no longer open.
    pub fn document_changed(&mut self) {
        self.cancel();
        self.explain = None;
        if let Some(e) = &self.engine {
            let _ = e.submit(JobRequest::ClearCache);
        }
    }

    fn support(doc: &Document, label: LabelValue, support: &[usize]) -> Arc<SupportSet> {
        Arc::new(SupportSet::from_label_map(
            doc.volume.clone(),
            doc.session.labels(),
            doc.session.axis(),
            support,
            |v| v == label,
        ))
    }

    fn engine(&self) -> Result<&Engine, RequestError> {
        match (&self.engine, &self.failure) {
            (_, Some(f)) => Err(RequestError::Unavailable(f.clone())),
            (Some(e), None) => Ok(e),
            (None, None) => Err(RequestError::Unavailable("not started".into())),
        }
    }

    /// Sends a propagation with `strategy`; a running one is cancelled first.
    pub fn start(
        &mut self,
        doc: &Document,
        plan: PropagationPlan,
        strategy: Strategy,
    ) -> Result<(), RequestError> {
        let support_size = match strategy {
            Strategy::OneShot { support_size } => support_size,
            Strategy::Chain(_) => None,
        };
        self.cancel();
        let support = Self::support(doc, plan.label, &plan.support);
        let total = plan.targets.len();
        let support_slices = plan.support.len();
        let engine = self.engine()?;
        let id = engine.submit(JobRequest::Propagate {
            support,
            slices: plan.targets,
            strategy,
        });
        self.frame_times.clear();
        self.frame_intervals.clear();
        self.run = Some(Run {
            id,
            doc_key: doc.key,
            label: plan.label,
            done: 0,
            total,
            started: Instant::now(),
            first_result: None,
            written: 0,
            support_slices,
            support_size,
            strategy,
        });
        Ok(())
    }

    /// Cancels the running propagation (results already written stay; undo removes them).
    pub fn cancel(&mut self) {
        if let (Some(run), Some(engine)) = (&self.run, &self.engine) {
            engine.cancel(run.id);
        }
    }

    /// Asks why the network predicted what it did at pixel `at` of working-axis slice
    /// `slice`, using the active structure's support set — limited, like a propagation
    /// with the same `support_size`, to the slices most similar to `slice`.
    pub fn explain(
        &mut self,
        doc: &Document,
        slice: usize,
        at: [f32; 2],
        support_size: Option<usize>,
    ) -> Result<(), RequestError> {
        let label = doc.active.ok_or(RequestError::NoStructure)?;
        let support = doc.session.support_slices(label);
        if support.is_empty() {
            return Err(RequestError::NoSupport);
        }
        let (w, h) = doc.volume.geometry().slice_dims(doc.session.axis());
        let pixel = [
            (at[0].round().max(0.0) as usize).min(w - 1),
            (at[1].round().max(0.0) as usize).min(h - 1),
        ];
        let support = Self::support(doc, label, &support);
        let annotated: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
        // A slice of the last chained propagation is explained with the supports it was
        // segmented with: its nearest annotated slices and the predicted slices before
        // it (their masks as the session holds them).
        let chained = self.last.as_ref().and_then(|last| match last.strategy {
            Strategy::Chain(c) if last.doc_key == doc.key && last.label == label => last
                .groups
                .iter()
                .find(|g| g.queries.contains(&slice))
                .map(|g| (c.nearest, g.support.clone())),
            _ => None,
        });
        let job = match chained {
            Some((nearest, used)) => JobRequest::ExplainChained {
                memory: used
                    .iter()
                    .filter(|z| !annotated.contains(z))
                    .map(|&z| engine::SupportSlice {
                        index: z,
                        mask: doc.session.mask(z, label),
                    })
                    .collect(),
                support,
                query_slice: slice,
                pixel,
                nearest,
            },
            None => JobRequest::Explain {
                support,
                query_slice: slice,
                pixel,
                support_size,
            },
        };
        let engine = self.engine()?;
        let id = engine.submit(job);
        let stages = self
            .explain
            .as_ref()
            .map_or(StageChoice::One(2), |e| e.stages);
        self.explain = Some(ExplainView {
            id,
            doc_key: doc.key,
            query: (slice, [pixel[0] as f32, pixel[1] as f32]),
            requested: Instant::now(),
            result: None,
            latency: None,
            stages,
            whole_slices: false,
            overlay: None,
            heat_cache: Vec::new(),
        });
        Ok(())
    }

    /// Closes the explanation panel.
    pub fn close_explanation(&mut self) {
        self.explain = None;
    }

    /// Takes in engine events; predictions go into `doc`'s session.
    pub fn poll(&mut self, mut doc: Option<&mut Document>) -> PollEvents {
        let mut out = PollEvents::default();
        let Some(engine) = &self.engine else {
            return out;
        };
        let events: Vec<Event> = engine.poll().collect();
        for event in events {
            let doc = doc.as_deref_mut();
            match event {
                Event::Ready(info) => self.on_ready(info, &mut out),
                Event::StartFailed(e) => {
                    let text = e.to_string();
                    out.notices
                        .push((Level::Error, format!("the network could not start: {text}")));
                    self.failure = Some(text);
                }
                Event::Progress { id, done, total } => {
                    if let Some(run) = self.run.as_mut().filter(|r| r.id == id) {
                        run.done = done;
                        run.total = total;
                    }
                }
                Event::SlicePredicted {
                    id,
                    slice,
                    probabilities,
                } => self.on_slice(id, slice, &probabilities, doc, &mut out),
                Event::PropagationFinished { id, stats } => {
                    self.on_finished(id, stats, doc, &mut out)
                }
                Event::Explained { id, explanation } => {
                    if let Some(ex) = self.explain.as_mut().filter(|e| e.id == id) {
                        ex.latency = Some(ex.requested.elapsed());
                        ex.result = Some(explanation);
                        ex.heat_cache.clear();
                    }
                }
                Event::Cancelled { id } => {
                    if let Some(run) = self.end_run(id, doc) {
                        out.notices.push((
                            Level::Info,
                            format!(
                                "Propagation cancelled after {} of {} slices (undo removes them).",
                                run.done, run.total
                            ),
                        ));
                        out.propagation_finished = run.written > 0;
                    }
                }
                Event::Failed { id, error } => {
                    if self.end_run(id, doc).is_some() {
                        out.notices
                            .push((Level::Error, format!("propagation failed: {error}")));
                    } else if self.explain.as_ref().is_some_and(|e| e.id == id) {
                        self.explain = None;
                        out.notices
                            .push((Level::Error, format!("explanation failed: {error}")));
                    }
                }
            }
        }
        out
    }

    /// The engine is up: say with which weights (warn about random ones).
    fn on_ready(&mut self, info: EngineInfo, out: &mut PollEvents) {
        let weights = match &info.weights {
            WeightsStatus::Loaded(p) => format!("weights {}", p.display()),
            WeightsStatus::RandomInit => {
                out.notices.push((
                    Level::Warning,
                    "no trained weights were found, so the network is randomly initialised and its predictions are meaningless; put icseg-lite.bpk in ./weights or set ICSEG_WEIGHTS_DIR".into(),
                ));
                "random weights".into()
            }
        };
        out.notices.push((
            Level::Info,
            format!(
                "Network ready: {} ({weights}) on {}.",
                info.model, info.device
            ),
        ));
        self.info = Some(info);
    }

    /// One predicted slice of the running propagation goes into the session.
    fn on_slice(
        &mut self,
        id: JobId,
        slice: usize,
        probabilities: &crate::volume::Image2D<f32>,
        doc: Option<&mut Document>,
        out: &mut PollEvents,
    ) {
        let Some(run) = self.run.as_mut().filter(|r| r.id == id) else {
            return;
        };
        run.first_result.get_or_insert_with(Instant::now);
        if let Some(d) = doc.filter(|d| d.key == run.doc_key) {
            match d
                .session
                .apply_prediction(run.label, slice, probabilities, id.0)
            {
                Ok(true) => run.written += 1,
                Ok(false) => {}
                Err(e) => out.notices.push((Level::Error, e.to_string())),
            }
        }
    }

    /// Ends the run `id` (if it is the running one) and closes its undo step.
    fn end_run(&mut self, id: JobId, doc: Option<&mut Document>) -> Option<Run> {
        if self.run.as_ref().is_none_or(|r| r.id != id) {
            return None;
        }
        let run = self.run.take()?;
        if let Some(d) = doc.filter(|d| d.key == run.doc_key) {
            d.session.finish_propagation(id.0);
        }
        Some(run)
    }

    /// The running propagation finished: apply the run rule in its undo step, report
    /// what it did and remember it for the status bar and explanations.
    fn on_finished(
        &mut self,
        id: JobId,
        stats: engine::PropagationStats,
        mut doc: Option<&mut Document>,
        out: &mut PollEvents,
    ) {
        if self.run.as_ref().is_none_or(|r| r.id != id) {
            return;
        }
        let mut cut_off = 0;
        if let Some(d) = doc
            .as_deref_mut()
            .filter(|d| self.run.as_ref().is_some_and(|r| r.doc_key == d.key))
        {
            let label = self.run.as_ref().map_or(0, |r| r.label);
            match d.session.keep_predicted_run(label, id.0) {
                Ok(n) => cut_off = n,
                Err(e) => out.notices.push((Level::Error, e.to_string())),
            }
        }
        let Some(run) = self.end_run(id, doc) else {
            return;
        };
        let frames = summarise_frames(&self.frame_times);
        let intervals = summarise_frames(&self.frame_intervals);
        out.notices
            .push((Level::Info, finished_message(&stats, &run, cut_off)));
        for line in frame_diagnostics(frames, intervals) {
            log::info!("propagation: {line}");
        }
        self.last = Some(LastRun {
            slices: stats.slices,
            total: stats.total,
            frames,
            intervals,
            support_slices: stats.support_slices,
            support_size: stats.support_size,
            strategy: run.strategy,
            doc_key: run.doc_key,
            label: run.label,
            groups: stats.groups,
        });
        out.propagation_finished = true;
    }

    /// Blocks until the running propagation (if any) ends; for tests and scripts.
    pub fn wait(&mut self, doc: &mut Option<Document>, timeout: Duration) -> PollEvents {
        let deadline = Instant::now() + timeout;
        let mut all = PollEvents::default();
        while Instant::now() < deadline {
            let ev = self.poll(doc.as_mut());
            all.notices.extend(ev.notices);
            all.propagation_finished |= ev.propagation_finished;
            let explaining = self.explain.as_ref().is_some_and(|e| e.result.is_none());
            if self.run.is_none() && !explaining && (self.info.is_some() || self.failure.is_some())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_the_rate_since_the_first_result() {
        let t0 = Instant::now();
        let run = Run {
            id: JobId(1),
            doc_key: 1,
            label: 1,
            done: 10,
            total: 30,
            started: t0,
            first_result: Some(t0),
            written: 10,
            support_slices: 2,
            support_size: None,
            strategy: Strategy::default(),
        };
        let eta = run.eta(t0 + Duration::from_secs(5)).unwrap();
        assert!((eta.as_secs_f64() - 10.0).abs() < 1e-6);
        assert!((run.fraction() - 1.0 / 3.0).abs() < 1e-6);
        let waiting = Run {
            first_result: None,
            done: 0,
            ..run
        };
        assert_eq!(waiting.eta(t0), None);
    }

    #[test]
    fn a_chained_run_says_what_it_did() {
        let options = engine::ChainOptions {
            memory: 2,
            prior_weight: 0.5,
            between: crate::volume::interpolate::Between::Interpolate,
            guided: false,
            ..Default::default()
        };
        let text = chain_summary(&options, 31, 120);
        assert_eq!(
            text.contains("registration"),
            options.guided,
            "the summary says whether the interpolation followed the image: {text}"
        );
        assert!(text.contains("2 nearest annotated slices"), "{text}");
        assert!(text.contains("2 slices predicted just before it"), "{text}");
        assert!(text.contains("31 of 120"), "{text}");
        assert!(
            text.contains("50 % network and 50 % shape-based interpolation"),
            "{text}"
        );
        let guided = chain_summary(&engine::ChainOptions::default(), 31, 120);
        assert!(
            guided.contains(
                "70 % the shapes of your two nearest slices, each where its image matches best, carried along a registration of neighbouring slices"
            ),
            "{guided}"
        );
        assert!(guided.contains("intensities"), "{guided}");
        assert!(guided.contains("Next to your slices"), "{guided}");
        let uniform = engine::ChainOptions {
            near_prior: false,
            ..Default::default()
        };
        assert!(!chain_summary(&uniform, 31, 120).contains("Next to your slices"));
        let plain = engine::ChainOptions {
            nearest: 1,
            memory: 0,
            prior_weight: 0.0,
            intensity: 0.0,
            ..Default::default()
        };
        let text = chain_summary(&plain, 5, 5);
        assert!(
            text.contains("1 nearest annotated slice;")
                || text.contains("1 nearest annotated slice "),
            "{text}"
        );
        assert!(
            !text.contains("interpolation")
                && !text.contains("just before")
                && !text.contains("intensities"),
            "{text}"
        );
    }

    #[test]
    fn supports_are_ordered_by_attention_mass() {
        let mass = [0.1, 0.6, 0.05, 0.25];
        assert_eq!(order_by_mass(4, |n| mass[n]), vec![1, 3, 0, 2]);
        assert_eq!(order_by_mass(3, |_| 0.5), vec![0, 1, 2]);
    }

    #[test]
    fn frame_summary_reports_median_p95_and_max() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarise_frames(&times).unwrap();
        assert_eq!(s.frames, 100);
        assert!((s.median_ms - 51.0).abs() < 1e-3 || (s.median_ms - 50.0).abs() < 1e-3);
        assert!((s.p95_ms - 95.0).abs() <= 1.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(summarise_frames(&[]), None);
    }
}
