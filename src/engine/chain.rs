//! Position-aware, chained propagation (not in the paper; `docs/engine.md`).
//!
//! The paper segments every query slice on its own against the whole support set. A
//! volume is more than a bag of slices: the annotated slice 1 slice away says more
//! than the one 20 slices away, and the slice just predicted says more than either.
//! Here, as in video propagators (SAM2 keeps the prompted frames and the most recent
//! predicted ones; Sli2Vol chains slice to slice):
//!
//! 1. **Nearest supports.** Each query slice is segmented with the `nearest` annotated
//!    slices closest to it along the axis, not with all of them alike.
//! 2. **Chaining.** Slices are predicted in waves of increasing distance from the
//!    annotations; a predicted slice joins the support of the slices after it on the
//!    same path as *memory* (the `memory` most recent ones on the way back to the
//!    nearest annotation). The annotated slices always stay.
//! 3. **Ends.** Beyond the outermost non-empty annotations a slice is queried only
//!    while the slice before it on the path is non-empty: the first empty slice ends
//!    the structure on that side (and the rest costs nothing). An annotated empty slice
//!    is a wall. Between annotations every slice is predicted.
//! 4. **Shape prior.** The network's probabilities are blended with a shape prior
//!    ([`ShapePrior`]: shape-based interpolation between the annotations, a tapering
//!    copy beyond them) with weight `prior_weight`, which rises next to an annotation
//!    ([`prior_weight_at`]); where it reaches 1 the network is not run at all.
//!
//! [`ChainPlan`] is the pure part (order, supports, gating) and is tested on its own;
//! [`propagate`] runs it on the engine's worker with the model.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use super::{
    Cancellation, EngineConfig, EngineError, Event, Outbox, Predictor, PropagationJob,
    PropagationStats, Queue, SupportGroup, SupportSet, Timings, is_inside, must_stop,
};
use crate::model::SupportFeatures;
use crate::volume::Image2D;
use crate::volume::interpolate::{RING_MM, Refinement, ShapePrior};
use crate::volume::likelihood::IntensityModel;
use crate::volume::register::{Demons, registration_slice, registration_window};

/// Settings of a chained propagation ([`super::Strategy::Chain`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ChainOptions {
    /// Annotated slices per query: the nearest along the axis (at least 1).
    pub nearest: usize,
    /// Predicted slices per query: the most recent on the path from the nearest
    /// annotation (0: no chaining; every query sees annotated slices only).
    pub memory: usize,
    /// Weight of the shape prior in the blend with the network's probabilities: 0 is
    /// the network alone, 1 the prior alone.
    pub prior_weight: f32,
    /// How fast the prior's shape closes beyond the outermost annotations, in mm of
    /// shrinkage per mm of distance, once past its hold.
    pub taper: f32,
    /// How far beyond the outermost annotations the prior holds the end shape
    /// unchanged (mm); `None`: half the mean gap between annotations, or 25 mm with a
    /// single annotation ([`ShapePrior::default_hold_mm`]).
    pub hold_mm: Option<f32>,
    /// The prior between two annotations: interpolated, the nearer one copied, or both
    /// weighted by where each one's image matches the slice (the default).
    pub between: crate::volume::interpolate::Between,
    /// Whether the prior follows the image: each annotation's shape is carried slice by
    /// slice along a deformable registration of neighbouring slices
    /// ([`ShapePrior::guided`]) instead of being copied where it was drawn.
    pub guided: bool,
    /// Weight of the study's own intensity evidence ([`IntensityModel`], learned from
    /// the annotated slices) added to the blend's log-odds near the prior's boundary;
    /// 0 leaves the blend as it is.
    pub intensity: f32,
    /// Whether the prior's weight rises next to an annotation ([`prior_weight_at`]):
    /// one slice away the prior alone, two slices away halfway between
    /// `prior_weight` and 1. Next to an annotation the carried annotation is more
    /// precise than the network (`docs/evaluation.md`, Dice by distance).
    pub near_prior: bool,
    /// Whether a guided prior's shapes are registered once more against their own
    /// annotated slice from three slices away ([`Refinement`]), for structures the
    /// image tells apart from their surroundings.
    pub refine: bool,
}

/// The intensity weight of [`ChainOptions::default`] (and of the app's checkbox).
pub const INTENSITY_WEIGHT: f32 = 0.5;

impl Default for ChainOptions {
    /// Measured on four OpenKBP training patients at k = 3 (`docs/evaluation.md`):
    /// memory made the shipped network drift (it was never trained on predicted
    /// supports), a fast-closing prior beyond the ends scored best, and a prior that
    /// carries the nearer annotation along the image (guided) beat the interpolating
    /// one, best with a weight of 0.7 against the network. Between two annotations
    /// both carried shapes, each where its image matches the slice
    /// ([`Between::Matched`](crate::volume::interpolate::Between::Matched)), beat the
    /// nearer one on twelve patients and again on the next twelve.
    fn default() -> Self {
        Self {
            nearest: 2,
            memory: 0,
            prior_weight: 0.7,
            taper: 8.0,
            hold_mm: None,
            between: crate::volume::interpolate::Between::Matched,
            guided: true,
            intensity: INTENSITY_WEIGHT,
            near_prior: true,
            refine: true,
        }
    }
}

/// The prior's weight in the blend on a slice `distance` slices from the nearest
/// annotation: `weight` (the options' `prior_weight`) far from the annotations; with
/// `near_prior`, 1 one slice away and halfway between `weight` and 1 two slices away.
/// Not in the paper: the annotation next to a slice is better evidence than the
/// network (`docs/evaluation.md`).
pub fn prior_weight_at(weight: f32, near_prior: bool, distance: usize) -> f32 {
    let lift = match (near_prior, distance) {
        (true, 1) => 1.0,
        (true, 2) => 0.5,
        _ => 0.0,
    };
    weight + (1.0 - weight) * lift
}

/// Where one target slice sits relative to the annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The slice.
    pub slice: usize,
    /// The annotated slice it is reached from (the nearest; beyond the ends, the
    /// outermost non-empty one).
    pub from: usize,
    /// Its distance in slices from `from`.
    pub distance: usize,
    /// Whether it is queried only when the slice before it on the path is non-empty
    /// (beyond the outermost non-empty annotations).
    pub gated: bool,
}

impl Step {
    /// The slice before this one on the path from `from` (one step towards it).
    pub fn previous(&self) -> usize {
        if self.from < self.slice {
            self.slice - 1
        } else {
            self.slice + 1
        }
    }
}

/// The order and supports of a chained propagation: pure, no model.
#[derive(Clone, Debug)]
pub struct ChainPlan {
    /// Annotated slice indices in the support set's order.
    annotated: Vec<usize>,
    /// Reachable target slices, in the order they are predicted (waves of increasing
    /// distance, then by index).
    steps: Vec<Step>,
    /// Target slices that can never be reached (no non-empty annotation, or behind an
    /// annotated empty slice).
    unreachable: Vec<usize>,
}

impl ChainPlan {
    /// Plans the targets `targets` from annotated slices `annotated` (indices, in the
    /// support set's order) of which `non_empty` say which hold the structure.
    pub fn new(annotated: &[usize], non_empty: &[bool], targets: &[usize]) -> Self {
        let anchors: Vec<usize> = annotated
            .iter()
            .zip(non_empty)
            .filter(|(_, ne)| **ne)
            .map(|(&z, _)| z)
            .collect();
        let walls: Vec<usize> = annotated
            .iter()
            .zip(non_empty)
            .filter(|(_, ne)| !**ne)
            .map(|(&z, _)| z)
            .collect();
        let mut steps = Vec::new();
        let mut unreachable = Vec::new();
        let (Some(&first), Some(&last)) = (anchors.iter().min(), anchors.iter().max()) else {
            return Self {
                annotated: annotated.to_vec(),
                steps,
                unreachable: targets.to_vec(),
            };
        };
        let mut seen = std::collections::HashSet::new();
        for &t in targets {
            if !seen.insert(t) {
                continue;
            }
            let step = if t > first && t < last {
                let from = *annotated
                    .iter()
                    .min_by_key(|&&a| (a.abs_diff(t), a))
                    .expect("anchors are annotated");
                Step {
                    slice: t,
                    from,
                    distance: from.abs_diff(t),
                    gated: false,
                }
            } else {
                let from = if t <= first { first } else { last };
                let (lo, hi) = (t.min(from), t.max(from));
                if walls.iter().any(|&w| w > lo && w < hi) || walls.contains(&t) {
                    unreachable.push(t);
                    continue;
                }
                Step {
                    slice: t,
                    from,
                    distance: from.abs_diff(t),
                    gated: t != from,
                }
            };
            steps.push(step);
        }
        steps.sort_by_key(|s| (s.distance, s.slice));
        Self {
            annotated: annotated.to_vec(),
            steps,
            unreachable,
        }
    }

    /// The planned distance of target `slice` from the annotation it is reached from
    /// ([`Step::distance`]); `None` for slices not in the plan.
    pub fn distance(&self, slice: usize) -> Option<usize> {
        self.steps
            .iter()
            .find(|s| s.slice == slice)
            .map(|s| s.distance)
    }

    /// The reachable targets in prediction order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Targets that are never queried (predicted empty).
    pub fn unreachable(&self) -> &[usize] {
        &self.unreachable
    }

    /// The steps grouped in waves of equal distance: each wave depends only on the ones
    /// before it.
    pub fn waves(&self) -> impl Iterator<Item = &[Step]> {
        self.steps.chunk_by(|a, b| a.distance == b.distance)
    }

    /// Positions (in the support set's order) of the `count` annotated slices nearest
    /// to `slice`; ties go to the lower index. In ascending position order.
    pub fn nearest_annotated(&self, slice: usize, count: usize) -> Vec<usize> {
        nearest_positions(&self.annotated, slice, count)
    }

    /// The memory of `step`: up to `count` slices before it on its path (nearest
    /// first) that were predicted (`predicted(z)`), stopping at an annotated slice.
    pub fn memory(
        &self,
        step: &Step,
        count: usize,
        predicted: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        let mut z = step.slice;
        while out.len() < count && z != step.from {
            z = if step.from < z { z - 1 } else { z + 1 };
            if z == step.from || self.annotated.contains(&z) || !predicted(z) {
                break;
            }
            out.push(z);
        }
        out
    }
}

/// Positions in `annotated` of the `count` (at least 1) slices nearest to `slice`;
/// ties go to the lower index. In ascending position order.
pub fn nearest_positions(annotated: &[usize], slice: usize, count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..annotated.len()).collect();
    order.sort_by_key(|&p| (annotated[p].abs_diff(slice), annotated[p]));
    order.truncate(count.max(1));
    order.sort_unstable();
    order
}

/// Runs a chained propagation job on the worker, sending its events: every target
/// slice gets one [`Event::SlicePredicted`] (all zero for slices never queried).
///
/// The shape prior and the intensity model are built on a thread of their own while
/// the network segments the slices between the annotations (the network alone leaves
/// part of the CPU idle); those slices are blended and sent as soon as the prior is
/// there. The waves beyond the annotations wait for it: where a structure ends
/// depends on the blend.
pub(super) fn propagate(
    predictor: &mut Predictor,
    config: &EngineConfig,
    job: PropagationJob<'_>,
    options: ChainOptions,
    out: &Outbox,
    cancellation: &Cancellation,
    queue: &mut Queue,
) -> Result<(), EngineError> {
    let start = Instant::now();
    let id = job.id;
    out.send(Event::Progress {
        id,
        done: 0,
        total: job.slices.len(),
    });
    let mut run = ChainRun::new(predictor, config, &job, options)?;
    let support = job.support;
    std::thread::scope(|scope| {
        // However the job ends (stopped, failed, done), the prior's build gives up then
        // rather than hold the worker until it is complete.
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let building_stop = stop.0.clone();
        let network_on_cpu = !predictor.device().is_gpu;
        let mut building = Some(
            scope.spawn(move || PriorParts::build(support, options, network_on_cpu, building_stop)),
        );
        run.answer_unreachable(out);

        // Without memory the slices between the annotations depend on nothing
        // predicted: they run first, in batches of the queries that use the same
        // annotated slices.
        let mut waiting: Vec<(usize, Option<Image2D<f32>>)> = Vec::new();
        if options.memory == 0 {
            for (positions, queries) in run.independent_groups() {
                let features = run.features(predictor, &positions);
                for batch in queries.chunks(config.batch_size.max(1)) {
                    if must_stop(id, predictor, config, out, cancellation, queue) {
                        return Ok(());
                    }
                    let network = run.network(predictor, &features, batch)?;
                    waiting.extend(batch.iter().copied().zip(network));
                    if building.as_ref().is_some_and(|b| b.is_finished()) {
                        run.install(building.take());
                    }
                    if building.is_none() {
                        run.blend_and_deliver(out, waiting.drain(..));
                    }
                    run.progress(out);
                }
                let support = positions.iter().map(|&p| run.annotated[p]).collect();
                run.groups.push(SupportGroup { support, queries });
            }
        }
        let wait = Instant::now();
        run.install(building.take());
        run.prior_wait = wait.elapsed();
        run.blend_and_deliver(out, waiting.drain(..));

        // The rest in waves outward: each slice may lean on the waves before it.
        let waves: Vec<Vec<Step>> = run.plan.waves().map(<[Step]>::to_vec).collect();
        for wave in waves {
            let mut new_memory = Vec::new();
            for step in &wave {
                if run.masks[step.slice].is_some() {
                    continue;
                }
                if must_stop(id, predictor, config, out, cancellation, queue) {
                    return Ok(());
                }
                let probabilities = if step.gated && !run.is_non_empty(step.previous()) {
                    run.zeros.clone()
                } else {
                    let (positions, used) = run.supports(step);
                    let features = run.features(predictor, &positions);
                    let network = run.network(predictor, &features, &[step.slice])?;
                    run.groups.push(SupportGroup {
                        support: used,
                        queries: vec![step.slice],
                    });
                    run.blend(step.slice, network.into_iter().next().flatten())
                };
                if options.memory > 0 {
                    new_memory.push(step.slice);
                }
                run.deliver(out, step.slice, probabilities);
                run.progress(out);
            }
            run.remember(predictor, &new_memory);
        }
        run.finish(out, start);
        Ok(())
    })
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The shape prior of a job and the intensity model of its structure, with the time
/// they took to build.
struct PriorParts {
    /// `None` with a prior weight of 0.
    prior: Option<ShapePrior>,
    /// `None` with an intensity weight of 0, or when the annotations cannot teach one.
    intensity: Option<IntensityModel>,
    took: Duration,
}

impl PriorParts {
    /// Builds the prior (its registrations included, when guided) and the intensity
    /// model from the annotated slices of `support`, leaving a core to the network
    /// when it runs on the CPU beside them; the registrations give up once `stop` is
    /// set ([`ShapePrior::with_stop`]).
    fn build(
        support: &SupportSet,
        options: ChainOptions,
        network_on_cpu: bool,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let start = Instant::now();
        let g = support.volume.geometry();
        let axis = support.axis;
        let count = g.slice_count(axis);
        // Beside the network on the CPU (which alone keeps about 1.3 of 2 cores busy)
        // the registrations take one core less: on 2 cores the 100-slice bench ran 1.1 s
        // faster with one registration thread than with two (docs/evaluation.md).
        let threads = if network_on_cpu && options.prior_weight < 1.0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.saturating_sub(1).max(1)
        } else {
            0
        };
        let prior = (options.prior_weight > 0.0).then(|| {
            let prior = ShapePrior::new(
                support.slices.iter().map(|s| (s.index, &s.mask)),
                g.slice_spacing_mm(axis),
                g.spacing_mm[axis.index()],
                options.taper,
            )
            .with_between(options.between)
            .with_threads(threads)
            .with_stop(stop);
            let prior = match options.hold_mm {
                Some(mm) => prior.with_hold_mm(f64::from(mm)),
                None => prior,
            };
            if options.guided {
                let window = registration_window(&support.volume);
                prior.guided(
                    count,
                    |z| registration_slice(&support.volume, axis, z, window),
                    &Demons::default(),
                    options.refine.then(Refinement::default).as_ref(),
                )
            } else {
                prior
            }
        });
        let intensity = (options.intensity > 0.0)
            .then(|| {
                let images: Vec<Image2D<f32>> = support
                    .slices
                    .iter()
                    .map(|s| support.volume.slice(axis, s.index))
                    .collect();
                IntensityModel::learn(
                    images.iter().zip(support.slices.iter().map(|s| &s.mask)),
                    g.slice_spacing_mm(axis),
                )
            })
            .flatten();
        Self {
            prior,
            intensity,
            took: start.elapsed(),
        }
    }
}

/// A chained propagation in progress: the plan, what is known of every slice, and the
/// features of every slice that can serve as a support.
struct ChainRun<'a> {
    id: super::JobId,
    support: &'a SupportSet,
    options: ChainOptions,
    plan: ChainPlan,
    region: crate::volume::Region,
    /// The shape prior (`None` with weight 0, and until [`Self::install`]) and its
    /// weight in the blend.
    prior: Option<ShapePrior>,
    weight: f32,
    /// The structure's intensity model when `options.intensity` is on (from
    /// [`Self::install`]).
    intensity: Option<IntensityModel>,
    annotated: Vec<usize>,
    non_empty: Vec<bool>,
    /// Each slice's mask once answered.
    masks: Vec<Option<Image2D<u8>>>,
    /// Support features of the annotated slices, then of the remembered predictions.
    pool: SupportFeatures,
    pool_position: Vec<Option<usize>>,
    pool_len: usize,
    zeros: Image2D<f32>,
    total: usize,
    done: usize,
    batches: usize,
    /// Slices run through the network.
    queried: usize,
    groups: Vec<SupportGroup>,
    timings: Timings,
    cache: super::CacheUse,
    support_encoding: Duration,
    /// Building the prior and the intensity model (beside the network).
    prior_setup: Duration,
    /// Of `prior_setup`, how long the propagation waited for them.
    prior_wait: Duration,
    /// Blending and intensity evidence, summed over slices.
    blend: Duration,
}

impl<'a> ChainRun<'a> {
    /// Prepares and encodes the annotated slices and plans the job; the prior comes
    /// later ([`Self::install`]).
    fn new(
        predictor: &mut Predictor,
        config: &EngineConfig,
        job: &PropagationJob<'a>,
        options: ChainOptions,
    ) -> Result<Self, EngineError> {
        let start = Instant::now();
        let support = job.support;
        let prepared = predictor.prepare_support(support, config.roi)?;
        let (pool, cache) = predictor.support_features(&prepared);
        let support_encoding = start.elapsed();
        let g = support.volume.geometry();
        let axis = support.axis;
        let count = g.slice_count(axis);
        if let Some(&bad) = job.slices.iter().find(|&&i| i >= count) {
            return Err(EngineError::SliceOutOfRange { index: bad, count });
        }
        let annotated: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
        let non_empty: Vec<bool> = support
            .slices
            .iter()
            .map(|s| s.mask.data.iter().any(|&v| v != 0))
            .collect();
        let weight = options.prior_weight.clamp(0.0, 1.0);
        let mut pool_position = vec![None; count];
        for (p, &z) in annotated.iter().enumerate() {
            pool_position[z] = Some(p);
        }
        let (w, h) = g.slice_dims(axis);
        Ok(Self {
            id: job.id,
            support,
            options,
            plan: ChainPlan::new(&annotated, &non_empty, job.slices),
            region: prepared.region,
            prior: None,
            weight,
            intensity: None,
            pool_len: annotated.len(),
            annotated,
            non_empty,
            masks: vec![None; count],
            pool,
            pool_position,
            zeros: Image2D::filled(w, h, 0.0),
            total: job.slices.len(),
            done: 0,
            batches: 0,
            queried: 0,
            groups: Vec::new(),
            timings: Timings::default(),
            cache,
            support_encoding,
            prior_setup: Duration::ZERO,
            prior_wait: Duration::ZERO,
            blend: Duration::ZERO,
        })
    }

    /// Answers the slices no path reaches: empty.
    fn answer_unreachable(&mut self, out: &Outbox) {
        for z in self.plan.unreachable().to_vec() {
            self.deliver(out, z, self.zeros.clone());
        }
    }

    /// The steps between the annotations, grouped by the annotated slices they use.
    fn independent_groups(&self) -> Vec<(Vec<usize>, Vec<usize>)> {
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        for step in self.plan.steps().iter().filter(|s| !s.gated) {
            let positions = self
                .plan
                .nearest_annotated(step.slice, self.options.nearest);
            match groups.iter_mut().find(|(p, _)| *p == positions) {
                Some((_, queries)) => queries.push(step.slice),
                None => groups.push((positions, vec![step.slice])),
            }
        }
        groups
    }

    /// The pool positions a step is segmented with, and those slices' indices: its
    /// nearest annotated slices and its memory.
    fn supports(&self, step: &Step) -> (Vec<usize>, Vec<usize>) {
        let memory = self.plan.memory(step, self.options.memory, |z| {
            self.pool_position[z].is_some()
        });
        let mut positions = self
            .plan
            .nearest_annotated(step.slice, self.options.nearest);
        let mut used: Vec<usize> = positions.iter().map(|&p| self.annotated[p]).collect();
        positions.extend(memory.iter().filter_map(|&z| self.pool_position[z]));
        used.extend(memory);
        (positions, used)
    }

    /// Whether slice `z` holds the structure: a non-empty annotation or prediction.
    fn is_non_empty(&self, z: usize) -> bool {
        let annotated = self
            .annotated
            .iter()
            .zip(&self.non_empty)
            .any(|(&a, &ne)| a == z && ne);
        annotated
            || self.masks[z]
                .as_ref()
                .is_some_and(|m| m.data.iter().any(|&v| v != 0))
    }

    /// The support features at the pool's `positions`.
    fn features(&self, predictor: &Predictor, positions: &[usize]) -> SupportFeatures {
        predictor.model().select_support(&self.pool, positions)
    }

    /// The prior's weight in the blend on slice `z` (0 when the prior has no weight).
    fn prior_weight(&self, z: usize) -> f32 {
        if self.weight <= 0.0 {
            return 0.0;
        }
        let from_annotation = self.plan.distance(z).unwrap_or(0);
        prior_weight_at(self.weight, self.options.near_prior, from_annotation)
    }

    /// Installs the prior and the intensity model once built (`None`: already done).
    fn install(&mut self, building: Option<ScopedJoinHandle<'_, PriorParts>>) {
        let Some(building) = building else { return };
        let parts = building
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        self.prior = parts.prior;
        self.intensity = parts.intensity;
        self.prior_setup = parts.took;
    }

    /// The network's probabilities of `slices` (one batch) segmented with `features`
    /// ([`Self::features`]), `None` where the prior weighs everything (next to an
    /// annotation, and with the prior alone): the network is not run there.
    fn network(
        &mut self,
        predictor: &Predictor,
        features: &SupportFeatures,
        slices: &[usize],
    ) -> Result<Vec<Option<Image2D<f32>>>, EngineError> {
        let runs: Vec<bool> = slices.iter().map(|&z| self.prior_weight(z) < 1.0).collect();
        let queried: Vec<usize> = slices
            .iter()
            .zip(&runs)
            .filter_map(|(&z, &run)| run.then_some(z))
            .collect();
        let mut network = Vec::new().into_iter();
        if !queried.is_empty() {
            let (p, t) = predictor.predict_batch(
                features,
                &self.support.volume,
                self.support.axis,
                &queried,
                &self.region,
            )?;
            self.timings.add(&t);
            self.batches += 1;
            self.queried += queried.len();
            network = p.into_iter();
        }
        Ok(runs
            .into_iter()
            .map(|run| run.then(|| network.next().expect("one answer per queried slice")))
            .collect())
    }

    /// Slice `z`'s probabilities: the network's (`None` where it was not run) blended
    /// with the prior, plus the intensity evidence. Needs [`Self::install`] first.
    fn blend(&mut self, z: usize, network: Option<Image2D<f32>>) -> Image2D<f32> {
        let start = Instant::now();
        let w = self.prior_weight(z);
        let mut p = network.unwrap_or_else(|| self.zeros.clone());
        // The prior's signed distance, computed once: it gives the prior's
        // probabilities and bounds where the intensity evidence applies.
        let distance = self
            .prior
            .as_ref()
            .and_then(|prior| prior.signed_distance(z));
        if let Some(prior) = &self.prior {
            let q = match &distance {
                Some(d) => prior.probability_of_distance(d),
                None => self.zeros.clone(),
            };
            for (v, pv) in p.data.iter_mut().zip(&q.data) {
                *v = (1.0 - w) * *v + w * pv;
            }
        }
        if let Some(model) = &self.intensity {
            self.add_intensity_evidence(model, z, distance.as_ref(), &mut p);
        }
        self.blend += start.elapsed();
        p
    }

    /// Blends and sends the slices whose network answers were waiting for the prior.
    fn blend_and_deliver(
        &mut self,
        out: &Outbox,
        waiting: impl Iterator<Item = (usize, Option<Image2D<f32>>)>,
    ) {
        for (z, network) in waiting {
            let p = self.blend(z, network);
            self.deliver(out, z, p);
        }
    }

    /// Adds the intensity evidence of slice `z` to the log-odds of its probabilities
    /// `p`, within [`RING_MM`] of the prior's boundary (`distance`, the prior's signed
    /// distance on the slice; everywhere without one).
    fn add_intensity_evidence(
        &self,
        model: &IntensityModel,
        z: usize,
        distance: Option<&Image2D<f32>>,
        p: &mut Image2D<f32>,
    ) {
        let image = self.support.volume.slice(self.support.axis, z);
        let beta = self.options.intensity;
        for (i, v) in p.data.iter_mut().enumerate() {
            if distance.is_some_and(|d| f64::from(d.data[i].abs()) > RING_MM) {
                continue;
            }
            let clamped = v.clamp(1e-4, 1.0 - 1e-4);
            let logit = (clamped / (1.0 - clamped)).ln() + beta * model.log_ratio(image.data[i]);
            *v = 1.0 / (1.0 + (-logit).exp());
        }
    }

    /// Records slice `z`'s answer and sends it.
    fn deliver(&mut self, out: &Outbox, z: usize, probabilities: Image2D<f32>) {
        self.masks[z] = Some(probabilities.map(|v| u8::from(is_inside(v))));
        self.done += 1;
        out.send(Event::SlicePredicted {
            id: self.id,
            slice: z,
            probabilities,
        });
    }

    fn progress(&self, out: &Outbox) {
        out.send(Event::Progress {
            id: self.id,
            done: self.done,
            total: self.total,
        });
    }

    /// Encodes the predicted `slices` with their masks so that later waves can use them
    /// as memory.
    fn remember(&mut self, predictor: &Predictor, slices: &[usize]) {
        let fresh: Vec<usize> = slices
            .iter()
            .copied()
            .filter(|&z| self.pool_position[z].is_none())
            .collect();
        if fresh.is_empty() {
            return;
        }
        let with_masks: Vec<(usize, &Image2D<u8>)> = fresh
            .iter()
            .map(|&z| (z, self.masks[z].as_ref().expect("answered")))
            .collect();
        let encoded = predictor.encode_slices(
            &self.support.volume,
            self.support.axis,
            &with_masks,
            &self.region,
        );
        self.pool = predictor.model().concat_support(&self.pool, &encoded);
        for z in fresh {
            self.pool_position[z] = Some(self.pool_len);
            self.pool_len += 1;
        }
    }

    /// Sends the end of the job with its report.
    fn finish(self, out: &Outbox, start: Instant) {
        self.progress(out);
        out.send(Event::PropagationFinished {
            id: self.id,
            stats: PropagationStats {
                slices: self.total,
                batches: self.batches,
                queried: self.queried,
                support_slices: self.annotated.len(),
                support_size: None,
                groups: self.groups,
                cache: self.cache,
                support_encoding: self.support_encoding,
                retrieval: Duration::ZERO,
                prior: self.prior_setup,
                prior_wait: self.prior_wait,
                blend: self.blend,
                timings: self.timings,
                total: start.elapsed(),
                region: self.region,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(plan: &ChainPlan) -> Vec<usize> {
        plan.steps().iter().map(|s| s.slice).collect()
    }

    #[test]
    fn slices_are_predicted_in_waves_outward_from_the_annotations() {
        let plan = ChainPlan::new(&[10, 16], &[true, true], &(5..=20).collect::<Vec<_>>());
        // Annotated slices are targets too here (distance 0), then 9, 11, 15, 17 ...
        let waves: Vec<Vec<usize>> = plan
            .waves()
            .map(|w| w.iter().map(|s| s.slice).collect())
            .collect();
        assert_eq!(waves[0], vec![10, 16]);
        assert_eq!(waves[1], vec![9, 11, 15, 17]);
        assert_eq!(waves[2], vec![8, 12, 14, 18]);
        assert_eq!(waves[3], vec![7, 13, 19]);
        assert_eq!(slices(&plan).len(), 16);
        let step = |z: usize| *plan.steps().iter().find(|s| s.slice == z).unwrap();
        // Inside the span: never gated, reached from the nearest annotation.
        assert_eq!(step(12).from, 10);
        assert!(!step(12).gated);
        assert_eq!(step(14).from, 16);
        assert_eq!(step(14).previous(), 15);
        // Beyond the ends: gated, reached from the outermost annotation.
        assert!(step(7).gated && step(7).from == 10 && step(7).previous() == 8);
        assert!(step(19).gated && step(19).previous() == 18);
    }

    #[test]
    fn empty_annotations_are_walls_and_no_anchor_reaches_nothing() {
        let plan = ChainPlan::new(&[10, 14], &[true, false], &[8, 11, 12, 13, 15, 16]);
        assert_eq!(slices(&plan), vec![11, 8, 12, 13]);
        assert_eq!(plan.unreachable(), &[15, 16]);
        let none = ChainPlan::new(&[10], &[false], &[9, 11]);
        assert!(none.steps().is_empty());
        assert_eq!(none.unreachable(), &[9, 11]);
    }

    #[test]
    fn supports_are_the_nearest_annotations_and_the_latest_predictions_on_the_path() {
        let plan = ChainPlan::new(&[30, 10, 20], &[true, true, true], &[5, 6, 7, 8]);
        // Positions in the support set's order: slice 10 is position 1, 20 is 2.
        assert_eq!(plan.nearest_annotated(8, 2), vec![1, 2]);
        assert_eq!(plan.nearest_annotated(26, 1), vec![0]);
        assert_eq!(
            plan.nearest_annotated(25, 1),
            vec![2],
            "ties go to the lower slice"
        );
        let step = *plan.steps().iter().find(|s| s.slice == 6).unwrap();
        assert_eq!(plan.memory(&step, 2, |z| z == 7 || z == 8), vec![7, 8]);
        assert_eq!((plan.distance(6), plan.distance(10)), (Some(4), None));
        assert_eq!(plan.memory(&step, 1, |_| true), vec![7]);
        // A gap in the predictions ends the memory.
        assert_eq!(plan.memory(&step, 2, |z| z == 8), Vec::<usize>::new());
        // The path ends at the annotation, which is never memory.
        let next = *plan.steps().iter().find(|s| s.slice == 8).unwrap();
        assert_eq!(plan.memory(&next, 3, |_| true), vec![9]);
    }

    #[test]
    fn the_prior_weighs_more_next_to_an_annotation() {
        assert_eq!(prior_weight_at(0.7, true, 1), 1.0);
        assert!((prior_weight_at(0.7, true, 2) - 0.85).abs() < 1e-6);
        assert_eq!(prior_weight_at(0.7, true, 3), 0.7);
        assert_eq!(prior_weight_at(0.7, true, 0), 0.7, "an annotated slice");
        assert_eq!(prior_weight_at(0.7, false, 1), 0.7);
        assert_eq!(
            prior_weight_at(1.0, true, 5),
            1.0,
            "the prior alone stays so"
        );
    }
}
