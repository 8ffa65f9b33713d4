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
mod dataset;
mod network;
mod report;
mod run;

pub use dataset::{Case, LabelSource, Task, discover_cases, load_label_names};
pub use network::NetworkPropagator;
pub use report::{EvalReport, MethodScore, ScoresByColumn, TaskResult};
pub use run::{EvalOptions, evaluate_cases};

use crate::volume::{Axis, LabelMap, LabelValue, Volume};

/// Structures shorter than this along the slice axis are not evaluated.
pub const MIN_EXTENT: usize = 6;

/// Something that fills the non-annotated slices of a structure from a few annotated
/// ones. The classical baselines and the network (through the engine) both implement it,
/// so the evaluation treats them identically.
pub trait Propagator {
    /// Short name used in tables ("nearest", "interp", "network").
    fn name(&self) -> &str;

    /// Predicts a 0/1 mask for every slice along `axis`. `annotations` holds 0/1 values
    /// and only its `slices` may be read; `volume` is the image.
    fn propagate(
        &mut self,
        volume: &Volume,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
    ) -> anyhow::Result<LabelMap>;
}

/// Nearest-annotated-slice baseline as a [`Propagator`].
pub struct NearestSlice;

impl Propagator for NearestSlice {
    fn name(&self) -> &str {
        "nearest"
    }

    fn propagate(
        &mut self,
        _: &Volume,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
    ) -> anyhow::Result<LabelMap> {
        Ok(baselines::nearest_slice(annotations, axis, slices))
    }
}

/// Shape-based interpolation baseline as a [`Propagator`].
pub struct ShapeInterpolation;

impl Propagator for ShapeInterpolation {
    fn name(&self) -> &str {
        "interp"
    }

    fn propagate(
        &mut self,
        _: &Volume,
        annotations: &LabelMap,
        axis: Axis,
        slices: &[usize],
    ) -> anyhow::Result<LabelMap> {
        Ok(baselines::shape_based_interpolation(
            annotations,
            axis,
            slices,
        ))
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

/// Dice of two 0/1 masks over every slice along `axis` except `excluded`; 1 when both
/// are empty there.
pub fn dice_excluding(pred: &LabelMap, truth: &LabelMap, axis: Axis, excluded: &[usize]) -> f64 {
    let g = truth.geometry();
    let [nx, ny, _] = g.dims;
    let mut skip = vec![false; g.slice_count(axis)];
    for &s in excluded {
        if s < skip.len() {
            skip[s] = true;
        }
    }
    let (mut inter, mut sum) = (0u64, 0u64);
    for (n, (&p, &t)) in pred.labels().iter().zip(truth.labels()).enumerate() {
        let ijk = [n % nx, (n / nx) % ny, n / (nx * ny)];
        if skip[ijk[axis.index()]] {
            continue;
        }
        let (p, t) = (p != 0, t != 0);
        inter += u64::from(p && t);
        sum += u64::from(p) + u64::from(t);
    }
    if sum == 0 {
        1.0
    } else {
        2.0 * inter as f64 / sum as f64
    }
}

/// Runs the protocol for one structure: annotates `k` slices of `truth` (0/1) and
/// scores each method's prediction. Returns `None` when the structure is shorter than
/// [`MIN_EXTENT`] along `axis`.
pub fn evaluate_structure(
    volume: &Volume,
    truth: &LabelMap,
    axis: Axis,
    k: usize,
    methods: &mut [&mut dyn Propagator],
) -> anyhow::Result<Option<(Vec<usize>, Vec<f64>)>> {
    let Some(extent) = truth.slice_extent(axis, 1) else {
        return Ok(None);
    };
    if extent.1 - extent.0 + 1 < MIN_EXTENT {
        return Ok(None);
    }
    let slices = annotation_slices(extent, k);
    let annotations = keep_slices(truth, axis, &slices);
    let mut scores = Vec::with_capacity(methods.len());
    for m in methods.iter_mut() {
        let pred = m.propagate(volume, &annotations, axis, &slices)?;
        scores.push(dice_excluding(&pred, truth, axis, &slices));
    }
    Ok(Some((slices, scores)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn annotation_slices_sit_at_half_steps_of_the_extent() {
        assert_eq!(annotation_slices((10, 19), 1), vec![15]);
        assert_eq!(annotation_slices((10, 19), 3), vec![11, 15, 18]);
        assert_eq!(annotation_slices((0, 5), 5), vec![0, 1, 3, 4, 5]);
        // Never outside the extent, never duplicated.
        assert_eq!(annotation_slices((3, 4), 5), vec![3, 4]);
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
                _: &Volume,
                _: &LabelMap,
                _: Axis,
                _: &[usize],
            ) -> anyhow::Result<LabelMap> {
                Ok(self.0.clone())
            }
        }
        let g = Geometry::axis_aligned([8, 8, 12], [1.0; 3]);
        let mut truth = LabelMap::empty(g.clone());
        for z in 2..10 {
            truth.set([3, 3, z], 1);
            truth.set([4, 3, z], 1);
        }
        let volume = Volume::new(
            g.clone(),
            vec![0.0; g.voxel_count()],
            crate::volume::Modality::Ct,
        )
        .unwrap();
        let mut oracle = Oracle(truth.clone());
        let mut empty = Oracle(LabelMap::empty(g));
        let (slices, scores) =
            evaluate_structure(&volume, &truth, Axis::K, 3, &mut [&mut oracle, &mut empty])
                .unwrap()
                .unwrap();
        assert_eq!(slices, vec![3, 6, 8]);
        assert_eq!(scores, vec![1.0, 0.0]);
    }

    #[test]
    fn short_structures_are_skipped() {
        let g = Geometry::axis_aligned([4, 4, 12], [1.0; 3]);
        let mut truth = LabelMap::empty(g.clone());
        for z in 0..5 {
            truth.set([1, 1, z], 1);
        }
        let volume = Volume::new(
            g.clone(),
            vec![0.0; g.voxel_count()],
            crate::volume::Modality::Ct,
        )
        .unwrap();
        let r = evaluate_structure(&volume, &truth, Axis::K, 1, &mut [&mut NearestSlice]).unwrap();
        assert!(r.is_none());
    }
}
