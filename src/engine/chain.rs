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
//!    copy beyond them) with weight `prior_weight`.
//!
//! [`ChainPlan`] is the pure part (order, supports, gating) and is tested on its own;
//! [`propagate`] runs it on the engine's worker with the model.

use std::time::Instant;

use super::{
    Cancellation, EngineError, Event, Outbox, PropagationJob, PropagationStats, Queue,
    SupportGroup, Timings, serve_between_batches,
};
use super::{EngineConfig, Predictor, is_inside};
use crate::model::SupportFeatures;
use crate::volume::Image2D;
use crate::volume::interpolate::ShapePrior;

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
    /// unchanged (mm); `None`: half the mean gap between annotations, or 20 mm with a
    /// single annotation ([`ShapePrior::default_hold_mm`]).
    pub hold_mm: Option<f32>,
}

impl Default for ChainOptions {
    /// Measured on four OpenKBP training patients at k = 3 (`docs/evaluation.md`):
    /// memory made the shipped network drift (it was never trained on predicted
    /// supports), a weight of 0.6 for the shape prior and a fast-closing prior beyond
    /// the ends scored best.
    fn default() -> Self {
        Self {
            nearest: 2,
            memory: 0,
            prior_weight: 0.6,
            taper: 8.0,
            hold_mm: None,
        }
    }
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
pub(super) fn propagate(
    predictor: &mut Predictor,
    config: &EngineConfig,
    job: PropagationJob<'_>,
    options: ChainOptions,
    out: &Outbox,
    cancellation: &Cancellation,
    queue: &mut Queue,
) -> Result<(), EngineError> {
    let PropagationJob {
        id,
        support,
        slices,
        ..
    } = job;
    let start = Instant::now();
    let total = slices.len();
    out.send(Event::Progress { id, done: 0, total });
    let prepared = predictor.prepare_support(support, config.roi)?;
    let (annotated_features, cache) = predictor.support_features(&prepared);
    let support_encoding = start.elapsed();

    let volume = &support.volume;
    let axis = support.axis;
    let g = volume.geometry();
    let count = g.slice_count(axis);
    if let Some(&bad) = slices.iter().find(|&&i| i >= count) {
        return Err(EngineError::SliceOutOfRange { index: bad, count });
    }
    let (w, h) = g.slice_dims(axis);
    let annotated: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
    let non_empty: Vec<bool> = support
        .slices
        .iter()
        .map(|s| s.mask.data.iter().any(|&v| v != 0))
        .collect();
    let plan = ChainPlan::new(&annotated, &non_empty, slices);
    let weight = options.prior_weight.clamp(0.0, 1.0);
    // With the prior alone the network's answer would be multiplied by zero: skip it.
    let network_counts = weight < 1.0;
    let prior = (weight > 0.0).then(|| {
        let prior = ShapePrior::new(
            support.slices.iter().map(|s| (s.index, &s.mask)),
            g.slice_spacing_mm(axis),
            g.spacing_mm[axis.index()],
            options.taper,
        );
        match options.hold_mm {
            Some(mm) => prior.with_hold_mm(f64::from(mm)),
            None => prior,
        }
    });

    // Every slice's state: its mask once predicted, and its place in the feature pool.
    let mut masks: Vec<Option<Image2D<u8>>> = vec![None; count];
    let mut pool_position: Vec<Option<usize>> = vec![None; count];
    for (p, s) in support.slices.iter().enumerate() {
        pool_position[s.index] = Some(p);
    }
    let mut pool: SupportFeatures = annotated_features;
    let mut pool_len = annotated.len();
    let is_annotated_non_empty = |z: usize| {
        annotated
            .iter()
            .zip(&non_empty)
            .any(|(&a, &ne)| a == z && ne)
    };

    let mut timings = Timings::default();
    let mut groups = Vec::new();
    let mut batches = 0;
    let mut done = 0;
    let zeros = Image2D::filled(w, h, 0.0f32);
    for &z in plan.unreachable() {
        out.send(Event::SlicePredicted {
            id,
            slice: z,
            probabilities: zeros.clone(),
        });
        done += 1;
    }
    let fuse = |p: &mut Image2D<f32>, slice: usize| {
        if let Some(prior) = &prior {
            let q = prior.probability(slice, w, h);
            for (v, pv) in p.data.iter_mut().zip(&q.data) {
                *v = (1.0 - weight) * *v + weight * pv;
            }
        }
    };
    let mut finished = vec![false; count];

    // Without memory the slices between the annotations depend on nothing predicted:
    // they run first, in batches of the queries that use the same annotated slices.
    if options.memory == 0 {
        let mut by_support: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        for step in plan.steps().iter().filter(|s| !s.gated) {
            let positions = plan.nearest_annotated(step.slice, options.nearest);
            match by_support.iter_mut().find(|(p, _)| *p == positions) {
                Some((_, queries)) => queries.push(step.slice),
                None => by_support.push((positions, vec![step.slice])),
            }
        }
        for (positions, queries) in &by_support {
            let features = predictor.model().select_support(&pool, positions);
            for batch in queries.chunks(config.batch_size.max(1)) {
                serve_between_batches(predictor, config, out, cancellation, queue);
                if cancellation.is_cancelled(id) || queue.shutdown {
                    out.send(Event::Cancelled { id });
                    return Ok(());
                }
                let (predicted, t) = if network_counts {
                    predictor.predict_batch(&features, volume, axis, batch, &prepared.region)?
                } else {
                    (vec![zeros.clone(); batch.len()], Timings::default())
                };
                timings.add(&t);
                batches += 1;
                for (&slice, mut probabilities) in batch.iter().zip(predicted) {
                    fuse(&mut probabilities, slice);
                    masks[slice] = Some(probabilities.map(|v| u8::from(is_inside(v))));
                    finished[slice] = true;
                    out.send(Event::SlicePredicted {
                        id,
                        slice,
                        probabilities,
                    });
                    done += 1;
                }
                out.send(Event::Progress { id, done, total });
            }
            groups.push(SupportGroup {
                support: positions.iter().map(|&p| annotated[p]).collect(),
                queries: queries.clone(),
            });
        }
    }

    for wave in plan.waves() {
        let mut new_memory: Vec<(usize, Image2D<u8>)> = Vec::new();
        for step in wave {
            if finished[step.slice] {
                continue;
            }
            serve_between_batches(predictor, config, out, cancellation, queue);
            if cancellation.is_cancelled(id) || queue.shutdown {
                out.send(Event::Cancelled { id });
                return Ok(());
            }
            let previous = step.previous();
            let alive = is_annotated_non_empty(previous)
                || masks[previous]
                    .as_ref()
                    .is_some_and(|m| m.data.iter().any(|&v| v != 0));
            let probabilities = if step.gated && !alive {
                zeros.clone()
            } else {
                let memory = plan.memory(step, options.memory, |z| pool_position[z].is_some());
                let nearest = plan.nearest_annotated(step.slice, options.nearest);
                let mut positions = nearest.clone();
                positions.extend(memory.iter().map(|&z| pool_position[z].expect("encoded")));
                let features = predictor.model().select_support(&pool, &positions);
                let (mut predicted, t) = if network_counts {
                    predictor.predict_batch(
                        &features,
                        volume,
                        axis,
                        &[step.slice],
                        &prepared.region,
                    )?
                } else {
                    (vec![zeros.clone()], Timings::default())
                };
                timings.add(&t);
                batches += 1;
                let mut p = predicted.remove(0);
                fuse(&mut p, step.slice);
                let mut used: Vec<usize> = nearest.into_iter().map(|p| annotated[p]).collect();
                used.extend(&memory);
                groups.push(SupportGroup {
                    support: used,
                    queries: vec![step.slice],
                });
                p
            };
            let mask = probabilities.map(|v| u8::from(is_inside(v)));
            if options.memory > 0 && pool_position[step.slice].is_none() {
                new_memory.push((step.slice, mask.clone()));
            }
            masks[step.slice] = Some(mask);
            finished[step.slice] = true;
            out.send(Event::SlicePredicted {
                id,
                slice: step.slice,
                probabilities,
            });
            done += 1;
            out.send(Event::Progress { id, done, total });
        }
        // The wave's predictions become supports for the waves after it.
        if !new_memory.is_empty() {
            let slices: Vec<(usize, &Image2D<u8>)> =
                new_memory.iter().map(|(z, m)| (*z, m)).collect();
            let encoded = predictor.encode_slices(volume, axis, &slices, &prepared.region);
            pool = predictor.model().concat_support(&pool, &encoded);
            for (z, _) in &new_memory {
                pool_position[*z] = Some(pool_len);
                pool_len += 1;
            }
        }
    }
    out.send(Event::Progress { id, done, total });
    out.send(Event::PropagationFinished {
        id,
        stats: PropagationStats {
            slices: total,
            batches,
            support_slices: annotated.len(),
            support_size: None,
            groups,
            cache,
            support_encoding,
            retrieval: std::time::Duration::ZERO,
            timings,
            total: start.elapsed(),
            region: prepared.region,
        },
    });
    Ok(())
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
        assert_eq!(plan.memory(&step, 1, |_| true), vec![7]);
        // A gap in the predictions ends the memory.
        assert_eq!(plan.memory(&step, 2, |z| z == 8), Vec::<usize>::new());
        // The path ends at the annotation, which is never memory.
        let next = *plan.steps().iter().find(|s| s.slice == 8).unwrap();
        assert_eq!(plan.memory(&next, 3, |_| true), vec![9]);
    }
}
