//! Honest measurement of slice propagation: the simulated-annotator protocol, Dice, and
//! the classical baselines the network must beat.
//!
//! # Protocol (`icseg eval`)
//!
//! For every volume and every label whose extent along the slice axis spans at least
//! [`MIN_EXTENT`] slices, a simulated user annotates `k` slices at positions
//! `(i + 0.5) / k` of the extent ([`annotation_slices`]) — so the ends of the structure
//! must be found, not given. Every other slice of the whole volume is predicted and Dice
//! is computed over all non-annotated slices (false positives far from the structure
//! count). The same annotations go to every method.

pub mod baselines;
mod network;
mod report;
mod run;

pub use network::NetworkPropagator;
pub use report::{DISTANCES, EvalReport, MethodScore, ScoresByColumn, TaskResult};
pub use run::{EvalOptions, evaluate_cases};

use std::sync::Arc;

use crate::engine::EngineError;
use crate::io::LoadError;
use crate::volume::{Axis, LabelMap, LabelValue, Volume};

/// Structures shorter than this along the slice axis are not evaluated.
pub const MIN_EXTENT: usize = 6;

/// Evaluation failures.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An image or label file could not be read.
    #[error("cannot read the {what} of case {case}: {source}")]
    Load {
        /// `image` or the label role.
        what: String,
        /// The case name.
        case: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// The network failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where the simulated user draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// `k` slices at positions `(i + 0.5) / k` inside the extent: the ends of the
    /// structure must be found, never given. Methods fill the whole volume.
    #[default]
    Inner,
    /// The first and last slice of the structure and `k − 2` evenly spaced between
    /// them: what a 3D Slicer user paints before "Fill between slices". Methods fill
    /// only between the outermost annotations (bounded). Needs `k ≥ 2`.
    Ends,
}

impl Protocol {
    /// The slices the simulated user annotates in the inclusive `extent`.
    pub fn annotation_slices(self, extent: (usize, usize), k: usize) -> Vec<usize> {
        match self {
            Self::Inner => annotation_slices(extent, k),
            Self::Ends => end_annotation_slices(extent, k),
        }
    }

    /// Whether methods propagate only between the outermost annotations.
    pub fn bounded(self) -> bool {
        self == Self::Ends
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Inner => "inner",
            Self::Ends => "ends",
        }
    }
}

/// Something that fills the non-annotated slices of a structure from a few annotated
/// ones. The classical baselines and the network (through the engine) both implement it,
/// so the evaluation treats them identically.
pub trait Propagator {
    /// Short name used in tables ("nearest", "interp", "network").
    fn name(&self) -> &str;

    /// Predicts a 0/1 mask for every slice along `axis`. `annotations` holds 0/1 values
    /// and only its `slices` may be read; `volume` is the image. `bounded`: predict
    /// nothing outside the first and last annotated slice.
    fn propagate(
        &mut self,
        volume: &Arc<Volume>,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
        bounded: bool,
    ) -> Result<LabelMap, EvalError>;
}

/// Clears every slice of `mask` outside the first and last of `slices`.
fn clear_outside(mut mask: LabelMap, axis: Axis, slices: &[usize]) -> LabelMap {
    let (Some(&lo), Some(&hi)) = (slices.iter().min(), slices.iter().max()) else {
        return mask;
    };
    let (w, h) = mask.geometry().slice_dims(axis);
    let empty = crate::volume::Image2D::filled(w, h, 0);
    for z in (0..mask.geometry().slice_count(axis)).filter(|&z| z < lo || z > hi) {
        mask.set_slice(axis, z, &empty);
    }
    mask
}

/// A classical baseline as a [`Propagator`]: a pure function of the annotated slices.
/// Bounded, it predicts nothing outside the first and last annotated slice.
#[derive(Clone, Copy)]
pub struct Baseline {
    name: &'static str,
    fill: fn(&LabelMap, Axis, &[usize]) -> LabelMap,
}

impl Baseline {
    /// Every slice copies the nearest annotated slice within half a gap
    /// ([`baselines::nearest_slice`]).
    pub const NEAREST: Baseline = Baseline {
        name: "nearest",
        fill: baselines::nearest_slice,
    };

    /// Shape-based interpolation ([`baselines::shape_based_interpolation`]).
    pub const INTERP: Baseline = Baseline {
        name: "interp",
        fill: baselines::shape_based_interpolation,
    };

    /// Every slice within [`baselines::COPY_RANGE_MM`] of an annotated slice copies the
    /// nearest one (with one annotation: that slice copied ±20 mm; the honest baseline at
    /// k = 1).
    pub const COPY: Baseline = Baseline {
        name: "copy",
        fill: |a, axis, s| baselines::copy_within(a, axis, s, baselines::COPY_RANGE_MM),
    };
}

impl Propagator for Baseline {
    fn name(&self) -> &str {
        self.name
    }

    fn propagate(
        &mut self,
        _: &Arc<Volume>,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
        bounded: bool,
    ) -> Result<LabelMap, EvalError> {
        let out = (self.fill)(annotations, axis, slices);
        Ok(if bounded {
            clear_outside(out, axis, slices)
        } else {
            out
        })
    }
}

/// The slices a simulated annotator draws: `k` slices evenly spread inside the inclusive
/// extent `(first, last)`, at positions `(i + 0.5) / k` of it.
pub fn annotation_slices((first, last): (usize, usize), k: usize) -> Vec<usize> {
    let len = (last - first + 1) as f64;
    let mut s: Vec<usize> = (0..k)
        .map(|i| first + (((i as f64 + 0.5) / k as f64) * len).floor() as usize)
        .map(|z| z.min(last))
        .collect();
    s.dedup();
    s
}

/// The slices of the `ends` protocol: the first and last slice of the extent and
/// `k − 2` evenly spaced between them (rounded); with `k = 1` the middle slice.
pub fn end_annotation_slices((first, last): (usize, usize), k: usize) -> Vec<usize> {
    if k <= 1 {
        return annotation_slices((first, last), 1);
    }
    let span = (last - first) as f64;
    let mut s: Vec<usize> = (0..k)
        .map(|i| first + (i as f64 * span / (k - 1) as f64).round() as usize)
        .collect();
    s.dedup();
    s
}

/// The binary mask of `label` in `labels`, as a 0/1 label map.
pub fn binary_mask(labels: &LabelMap, label: LabelValue) -> LabelMap {
    let data = labels
        .labels()
        .iter()
        .map(|&v| u16::from(v == label))
        .collect();
    LabelMap::new(labels.geometry().clone(), data).expect("same grid")
}

/// A copy of `mask` in which only `slices` along `axis` are kept (what the user drew).
pub fn keep_slices(mask: &LabelMap, axis: Axis, slices: &[usize]) -> LabelMap {
    let mut out = LabelMap::empty(mask.geometry().clone());
    for &s in slices {
        out.set_slice(axis, s, &mask.slice(axis, s));
    }
    out
}

/// Overlap of two 0/1 masks over every slice along `axis` except `excluded`: the
/// intersection and the sum of both sizes in voxels, in total and per distance `d` =
/// 1..=[`DISTANCES`] (slices) from the nearest excluded (annotated) slice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlap {
    /// `[intersection, |pred| + |truth|]` over all scored slices.
    pub total: [u64; 2],
    /// The same per distance from the nearest annotated slice (index `d − 1`).
    pub by_distance: Vec<[u64; 2]>,
}

impl Overlap {
    /// Dice of the total; 1 when both masks are empty.
    pub fn dice(&self) -> f64 {
        dice_of(self.total)
    }
}

/// Dice from `[intersection, |pred| + |truth|]`; 1 when both are empty.
pub fn dice_of([inter, sum]: [u64; 2]) -> f64 {
    if sum == 0 {
        1.0
    } else {
        2.0 * inter as f64 / sum as f64
    }
}

/// The [`Overlap`] of `pred` and `truth` (0/1 masks) outside the `excluded` slices.
pub fn overlap_excluding(
    pred: &LabelMap,
    truth: &LabelMap,
    axis: Axis,
    excluded: &[usize],
) -> Overlap {
    let g = truth.geometry();
    let [nx, ny, _] = g.dims;
    let count = g.slice_count(axis);
    // Distance of each slice to the nearest excluded one (0 = excluded).
    let distance: Vec<usize> = (0..count)
        .map(|z| {
            excluded
                .iter()
                .map(|&e| e.abs_diff(z))
                .min()
                .unwrap_or(usize::MAX)
        })
        .collect();
    let mut out = Overlap {
        total: [0, 0],
        by_distance: vec![[0, 0]; DISTANCES],
    };
    for (n, (&p, &t)) in pred.labels().iter().zip(truth.labels()).enumerate() {
        let ijk = [n % nx, (n / nx) % ny, n / (nx * ny)];
        let d = distance[ijk[axis.index()]];
        if d == 0 {
            continue;
        }
        let (p, t) = (p != 0, t != 0);
        let (i, s) = (u64::from(p && t), u64::from(p) + u64::from(t));
        out.total[0] += i;
        out.total[1] += s;
        if d <= DISTANCES {
            out.by_distance[d - 1][0] += i;
            out.by_distance[d - 1][1] += s;
        }
    }
    out
}

/// Dice of two 0/1 masks over every slice along `axis` except `excluded`; 1 when both
/// are empty there.
pub fn dice_excluding(pred: &LabelMap, truth: &LabelMap, axis: Axis, excluded: &[usize]) -> f64 {
    overlap_excluding(pred, truth, axis, excluded).dice()
}

/// The annotated slices of one structure and each method's [`Overlap`] with the truth.
pub type Scored = (Vec<usize>, Vec<Overlap>);

/// Runs the protocol for one structure: annotates `k` slices of `truth` (0/1) under
/// `protocol` and scores each method's prediction. Returns `None` when the structure is
/// shorter than [`MIN_EXTENT`] along `axis`.
pub fn evaluate_structure(
    volume: &Arc<Volume>,
    truth: &LabelMap,
    axis: Axis,
    k: usize,
    protocol: Protocol,
    methods: &mut [&mut dyn Propagator],
) -> Result<Option<Scored>, EvalError> {
    let Some(extent) = truth.slice_extent(axis, 1) else {
        return Ok(None);
    };
    if extent.1 - extent.0 + 1 < MIN_EXTENT {
        return Ok(None);
    }
    let slices = protocol.annotation_slices(extent, k);
    let annotations = keep_slices(truth, axis, &slices);
    let mut scores = Vec::with_capacity(methods.len());
    for m in methods.iter_mut() {
        let pred = m.propagate(volume, &annotations, axis, &slices, protocol.bounded())?;
        scores.push(overlap_excluding(&pred, truth, axis, &slices));
    }
    Ok(Some((slices, scores)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    /// An all-zero CT on `g`: the baselines never look at the image.
    fn blank_volume(g: &Geometry) -> Arc<Volume> {
        Arc::new(
            Volume::new(
                g.clone(),
                vec![0.0; g.voxel_count()],
                crate::volume::Modality::Ct,
            )
            .unwrap(),
        )
    }

    #[test]
    fn annotation_slices_sit_at_half_steps_of_the_extent() {
        assert_eq!(annotation_slices((10, 19), 1), vec![15]);
        assert_eq!(annotation_slices((10, 19), 3), vec![11, 15, 18]);
        assert_eq!(annotation_slices((0, 5), 5), vec![0, 1, 3, 4, 5]);
        // Never outside the extent, never duplicated.
        assert_eq!(annotation_slices((3, 4), 5), vec![3, 4]);
    }

    #[test]
    fn the_ends_protocol_annotates_both_ends_and_spaces_the_rest_evenly() {
        assert_eq!(end_annotation_slices((10, 19), 2), vec![10, 19]);
        assert_eq!(end_annotation_slices((10, 19), 3), vec![10, 15, 19]);
        assert_eq!(end_annotation_slices((0, 8), 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(end_annotation_slices((3, 4), 5), vec![3, 4]);
        assert_eq!(Protocol::Ends.annotation_slices((10, 19), 1), vec![15]);
        assert!(Protocol::Ends.bounded() && !Protocol::Inner.bounded());
    }

    #[test]
    fn bounded_baselines_predict_nothing_beyond_the_outermost_annotations() {
        let g = Geometry::axis_aligned([4, 4, 20], [1.0, 1.0, 2.0]);
        let mut truth = LabelMap::empty(g.clone());
        for z in 4..16 {
            truth.set([1, 1, z], 1);
        }
        let volume = blank_volume(&g);
        let ann = keep_slices(&truth, Axis::K, &[4, 10, 15]);
        for mut method in [Baseline::NEAREST, Baseline::INTERP, Baseline::COPY] {
            let free = method
                .propagate(&volume, &ann, Axis::K, &[4, 10, 15], false)
                .unwrap();
            let bounded = method
                .propagate(&volume, &ann, Axis::K, &[4, 10, 15], true)
                .unwrap();
            assert!(
                free.get([1, 1, 3]) == Some(1),
                "{} reaches past the end",
                method.name()
            );
            assert_eq!(bounded.get([1, 1, 3]), Some(0), "{}", method.name());
            assert_eq!(bounded.get([1, 1, 16]), Some(0), "{}", method.name());
            assert_eq!(bounded.get([1, 1, 12]), Some(1), "{}", method.name());
        }
    }

    #[test]
    fn dice_ignores_annotated_slices_and_counts_false_positives_elsewhere() {
        let g = Geometry::axis_aligned([4, 4, 4], [1.0; 3]);
        let mut truth = LabelMap::empty(g.clone());
        let mut pred = LabelMap::empty(g);
        truth.set([0, 0, 1], 1);
        pred.set([0, 0, 1], 1);
        pred.set([3, 3, 3], 1); // false positive on another slice
        truth.set([2, 2, 0], 1); // only on an excluded slice
        assert!((dice_excluding(&pred, &truth, Axis::K, &[0]) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            dice_excluding(&pred, &truth, Axis::K, &[0, 1, 3]),
            1.0,
            "both empty elsewhere"
        );
    }

    #[test]
    fn perfect_and_empty_propagators_score_one_and_zero() {
        struct Oracle(LabelMap);
        impl Propagator for Oracle {
            fn name(&self) -> &str {
                "oracle"
            }
            fn propagate(
                &mut self,
                _: &Arc<Volume>,
                _: &LabelMap,
                _: Axis,
                _: &[usize],
                _: bool,
            ) -> Result<LabelMap, EvalError> {
                Ok(self.0.clone())
            }
        }
        let g = Geometry::axis_aligned([8, 8, 12], [1.0; 3]);
        let mut truth = LabelMap::empty(g.clone());
        for z in 2..10 {
            truth.set([3, 3, z], 1);
            truth.set([4, 3, z], 1);
        }
        let volume = blank_volume(&g);
        let mut oracle = Oracle(truth.clone());
        let mut empty = Oracle(LabelMap::empty(g));
        let (slices, scores) = evaluate_structure(
            &volume,
            &truth,
            Axis::K,
            3,
            Protocol::Inner,
            &mut [&mut oracle, &mut empty],
        )
        .unwrap()
        .unwrap();
        assert_eq!(slices, vec![3, 6, 8]);
        let dice: Vec<f64> = scores.iter().map(Overlap::dice).collect();
        assert_eq!(dice, vec![1.0, 0.0]);
        // Slices 2, 4, 5, 7, 9 are scored: 2, 4, 7, 9 at distance 1 and 5 at distance 1
        // too (from 6); two voxels each.
        assert_eq!(scores[0].by_distance[0], [10, 20]);
        assert_eq!(scores[1].by_distance[0], [0, 10]);
        assert_eq!(scores[0].by_distance[1], [0, 0]);
    }

    #[test]
    fn short_structures_are_skipped() {
        let g = Geometry::axis_aligned([4, 4, 12], [1.0; 3]);
        let mut truth = LabelMap::empty(g.clone());
        for z in 0..5 {
            truth.set([1, 1, z], 1);
        }
        let volume = blank_volume(&g);
        let mut nearest = Baseline::NEAREST;
        let r = evaluate_structure(
            &volume,
            &truth,
            Axis::K,
            1,
            Protocol::Inner,
            &mut [&mut nearest],
        )
        .unwrap();
        assert!(r.is_none());
    }
}
