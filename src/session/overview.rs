//! What a structure looks like along the working axis, for review: the area of every
//! slice, the slices where the area or the shape jumps relative to a neighbour, and the
//! structure's statistics (volume in mL, slice range, mean and standard deviation of the
//! image inside it, as 3D Slicer's Segment Statistics reports them).
//!
//! Computing this touches every voxel of the label map, so [`OverviewCache`] keeps one
//! measurement per working-axis slice and re-measures only the slices whose
//! [`Session::slice_revision`] changed (a brush stroke re-measures one or two slices; a
//! propagation the slices that arrived).
//!
//! # When a slice is flagged
//!
//! For two neighbouring slices that both hold the structure (areas `a` and `b`, at
//! least [`MIN_FLAG_PIXELS`] pixels in the larger one):
//!
//! - **area jump**: the larger is at least [`AREA_JUMP_RATIO`] times the smaller *and*
//!   the difference is at least [`AREA_JUMP_OF_MAX`] of the structure's largest slice
//!   area, and the smaller slice is not the end of the structure (so the small end
//!   slices of a tapering structure are not flagged);
//! - **shape jump**: the areas are similar (below the ratio) but the two masks overlap
//!   little: Dice = 2·overlap / (a + b) below [`SHAPE_JUMP_DICE`] (the outline moved or
//!   changed shape).
//!
//! Both slices of such a pair are flagged; [`Session::next_to_review_flagged`] puts the
//! flagged predicted slices before the others (uncertainty ranks within each group).

use crate::volume::{Axis, LabelValue, Modality, Volume};

use super::{Session, SliceState};

/// An area jump: the larger of two neighbouring slice areas is at least this many times
/// the smaller.
pub const AREA_JUMP_RATIO: f64 = 2.0;
/// An area jump must also change the area by at least this share of the structure's
/// largest slice area.
pub const AREA_JUMP_OF_MAX: f64 = 0.2;
/// A shape jump: neighbouring masks of similar area whose Dice is below this.
pub const SHAPE_JUMP_DICE: f64 = 0.5;
/// Neighbouring slices smaller than this (pixels, the larger of the two) are never
/// flagged: a few pixels jump for no reason worth a look.
pub const MIN_FLAG_PIXELS: usize = 20;

/// What one working-axis slice holds of a structure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SliceMeasure {
    /// Pixels of the structure.
    pub pixels: usize,
    /// Pixels of the structure also on the next slice (`s + 1`).
    pub overlap_next: usize,
    /// Sum of the image values inside.
    pub sum: f64,
    /// Sum of the squared image values inside.
    pub sum_sq: f64,
}

/// Why a slice is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jump {
    /// The area changes abruptly from a neighbour.
    Area,
    /// The outline moves or changes shape abruptly from a neighbour.
    Shape,
}

impl Jump {
    /// Words for a tooltip.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Area => "the area jumps from a neighbouring slice",
            Self::Shape => "the outline moves or changes shape from a neighbouring slice",
        }
    }
}

/// Statistics of one structure (Slicer's Segment Statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StructureStats {
    /// Voxels of the structure.
    pub voxels: usize,
    /// Volume in millilitres.
    pub volume_ml: f64,
    /// First and last working-axis slice holding the structure.
    pub slice_range: Option<(usize, usize)>,
    /// Mean image value inside (`None` when empty).
    pub mean: Option<f64>,
    /// Standard deviation of the image values inside (population; `None` when empty).
    pub std: Option<f64>,
    /// Whether the values are Hounsfield units (CT).
    pub hounsfield: bool,
}

/// A structure along the working axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Overview {
    /// The structure.
    pub label: LabelValue,
    /// The working axis.
    pub axis: Axis,
    /// Area of the structure on each slice, mm².
    pub area_mm2: Vec<f64>,
    /// Review state of each slice.
    pub states: Vec<SliceState>,
    /// Why each slice is flagged (`None`: not flagged).
    pub jumps: Vec<Option<Jump>>,
    /// The statistics.
    pub stats: StructureStats,
}

impl Overview {
    /// Builds the overview from per-slice measurements (see the module docs).
    pub fn from_measures(
        label: LabelValue,
        session: &Session,
        modality: Modality,
        measures: &[SliceMeasure],
    ) -> Self {
        let axis = session.axis();
        let geometry = session.geometry();
        let (sx, sy) = geometry.slice_spacing_mm(axis);
        let pixel_mm2 = sx * sy;
        let voxel_mm3 = geometry.spacing_mm.iter().product::<f64>();
        let states = session
            .structure(label)
            .map(|s| s.states().to_vec())
            .unwrap_or_else(|| vec![SliceState::Unlabelled; measures.len()]);
        let area_mm2 = measures
            .iter()
            .map(|m| m.pixels as f64 * pixel_mm2)
            .collect();
        let jumps = flag_jumps(measures);
        let voxels: usize = measures.iter().map(|m| m.pixels).sum();
        let sum: f64 = measures.iter().map(|m| m.sum).sum();
        let sum_sq: f64 = measures.iter().map(|m| m.sum_sq).sum();
        let first = measures.iter().position(|m| m.pixels > 0);
        let last = measures.iter().rposition(|m| m.pixels > 0);
        let (mean, std) = if voxels == 0 {
            (None, None)
        } else {
            let n = voxels as f64;
            let mean = sum / n;
            (Some(mean), Some((sum_sq / n - mean * mean).max(0.0).sqrt()))
        };
        Self {
            label,
            axis,
            area_mm2,
            states,
            jumps,
            stats: StructureStats {
                voxels,
                volume_ml: voxels as f64 * voxel_mm3 / 1000.0,
                slice_range: first.zip(last),
                mean,
                std,
                hounsfield: modality == Modality::Ct,
            },
        }
    }

    /// The flagged slices, in order.
    pub fn flagged(&self) -> impl Iterator<Item = usize> + '_ {
        self.jumps
            .iter()
            .enumerate()
            .filter(|(_, j)| j.is_some())
            .map(|(s, _)| s)
    }
}

/// Flags the slices whose area or shape jumps from a neighbour (see the module docs).
pub fn flag_jumps(measures: &[SliceMeasure]) -> Vec<Option<Jump>> {
    let mut jumps = vec![None; measures.len()];
    let max_area = measures.iter().map(|m| m.pixels).max().unwrap_or(0) as f64;
    for s in 0..measures.len().saturating_sub(1) {
        let (a, b) = (measures[s].pixels as f64, measures[s + 1].pixels as f64);
        let (small, large) = (a.min(b), a.max(b));
        if small == 0.0 || (large as usize) < MIN_FLAG_PIXELS {
            continue;
        }
        // The smaller slice's other neighbour: empty (or none) means the smaller slice
        // ends the structure, where areas shrink quickly by nature.
        let small_ends = if a < b {
            s == 0 || measures[s - 1].pixels == 0
        } else {
            measures.get(s + 2).is_none_or(|m| m.pixels == 0)
        };
        let jump = if large / small >= AREA_JUMP_RATIO {
            (!small_ends && large - small >= AREA_JUMP_OF_MAX * max_area).then_some(Jump::Area)
        } else {
            let dice = 2.0 * measures[s].overlap_next as f64 / (a + b);
            (dice < SHAPE_JUMP_DICE).then_some(Jump::Shape)
        };
        if let Some(j) = jump {
            for t in [s, s + 1] {
                // An area jump says more than a shape jump; keep it.
                if jumps[t] != Some(Jump::Area) {
                    jumps[t] = Some(j);
                }
            }
        }
    }
    jumps
}

/// Measures slice `s` of `label` along `axis` (its overlap with slice `s + 1` too).
pub fn measure_slice(
    session: &Session,
    volume: &Volume,
    label: LabelValue,
    s: usize,
) -> SliceMeasure {
    let axis = session.axis();
    let n = session.slice_count();
    let mut m = SliceMeasure::default();
    let add = |m: &mut SliceMeasure, v: f32| {
        let v = f64::from(v);
        m.pixels += 1;
        m.sum += v;
        m.sum_sq += v * v;
    };
    if axis == Axis::K {
        let [nx, ny, _] = session.geometry().dims;
        let plane = nx * ny;
        let labels = session.labels().labels();
        let here = &labels[s * plane..(s + 1) * plane];
        let values = &volume.voxels()[s * plane..(s + 1) * plane];
        for (&l, &v) in here.iter().zip(values) {
            if l == label {
                add(&mut m, v);
            }
        }
        if s + 1 < n {
            let next = &labels[(s + 1) * plane..(s + 2) * plane];
            m.overlap_next = here
                .iter()
                .zip(next)
                .filter(|&(&a, &b)| a == label && b == label)
                .count();
        }
    } else {
        let here = session.labels().slice(axis, s);
        let values = volume.slice(axis, s);
        for (&l, &v) in here.data.iter().zip(&values.data) {
            if l == label {
                add(&mut m, v);
            }
        }
        if s + 1 < n {
            let next = session.labels().slice(axis, s + 1);
            m.overlap_next = here
                .data
                .iter()
                .zip(&next.data)
                .filter(|&(&a, &b)| a == label && b == label)
                .count();
        }
    }
    m
}

/// Per-slice measurements of one structure, kept up to date incrementally.
#[derive(Debug, Default)]
pub struct OverviewCache {
    /// The structure and axis measured.
    key: Option<(LabelValue, Axis)>,
    /// Per slice: the revisions of slices `s` and `s + 1` when it was measured.
    revisions: Vec<Option<(u64, u64)>>,
    measures: Vec<SliceMeasure>,
    overview: Option<Overview>,
    /// Revision of the session the overview was built at.
    built_at: Option<u64>,
}

impl OverviewCache {
    /// Brings the measurements of `label` up to date with `session` (re-measuring only
    /// changed slices) and returns the overview. `None` without such a structure.
    pub fn update(
        &mut self,
        session: &Session,
        volume: &Volume,
        label: LabelValue,
    ) -> Option<&Overview> {
        session.structure(label)?;
        let n = session.slice_count();
        let key = (label, session.axis());
        if self.key != Some(key) || self.measures.len() != n {
            self.key = Some(key);
            self.revisions = vec![None; n];
            self.measures = vec![SliceMeasure::default(); n];
            self.built_at = None;
        }
        if self.built_at != Some(session.revision()) {
            for s in 0..n {
                let rev = (
                    session.slice_revision(s),
                    if s + 1 < n {
                        session.slice_revision(s + 1)
                    } else {
                        0
                    },
                );
                if self.revisions[s] != Some(rev) {
                    self.measures[s] = measure_slice(session, volume, label, s);
                    self.revisions[s] = Some(rev);
                }
            }
            self.overview = Some(Overview::from_measures(
                label,
                session,
                volume.modality,
                &self.measures,
            ));
            self.built_at = Some(session.revision());
        }
        self.overview.as_ref()
    }

    /// The overview last built, if it is for `label`.
    pub fn get(&self, label: LabelValue) -> Option<&Overview> {
        self.overview.as_ref().filter(|o| o.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::paint::{PaintMode, PaintOp, Shape};
    use crate::session::{EditKind, Session};
    use crate::volume::{Geometry, Volume};

    fn measures(pixels: &[usize], overlap: &[usize]) -> Vec<SliceMeasure> {
        pixels
            .iter()
            .zip(overlap.iter().chain(std::iter::repeat(&0)))
            .map(|(&p, &o)| SliceMeasure {
                pixels: p,
                overlap_next: o,
                ..Default::default()
            })
            .collect()
    }

    /// A 40×40×12 CT volume whose value at a voxel is its `i` index.
    fn volume(spacing: [f64; 3]) -> Volume {
        let g = Geometry::axis_aligned([40, 40, 12], spacing);
        let v = (0..g.voxel_count()).map(|n| (n % 40) as f32).collect();
        Volume::new(g, v, Modality::Ct).unwrap()
    }

    /// Fills the square `[x0, x0 + w) × [y0, y0 + w)` on slice `s`.
    fn square(session: &mut Session, label: LabelValue, s: usize, x0: f32, y0: f32, w: f32) {
        session.begin_stroke(label, s, EditKind::Paint).unwrap();
        // A quarter pixel below the edges: exactly w × w pixel centres inside.
        let (a, b) = (x0 - 0.25, y0 - 0.25);
        let points = vec![[a, b], [a + w, b], [a + w, b + w], [a, b + w]];
        session.stroke(
            &PaintOp {
                shape: Shape::Polygon { points },
                mode: PaintMode::Paint {
                    overwrite_others: false,
                },
                range: None,
            },
            None,
        );
        session.end_stroke();
    }

    #[test]
    fn a_smooth_structure_is_not_flagged_and_its_tapering_ends_are_not_either() {
        // Each slice inside the next larger one; the end slices are much smaller than
        // their neighbours, as a tapering structure's are.
        let p = [0, 4, 30, 50, 75, 90, 75, 50, 30, 4, 0];
        let o = [0, 4, 30, 50, 75, 75, 50, 30, 4, 0];
        assert!(flag_jumps(&measures(&p, &o)).iter().all(Option::is_none));
    }

    #[test]
    fn an_area_jump_flags_both_slices_of_the_pair() {
        let p = [100, 100, 100, 300, 300];
        let o = [100, 100, 100, 300];
        let j = flag_jumps(&measures(&p, &o));
        assert_eq!(
            j,
            vec![None, None, Some(Jump::Area), Some(Jump::Area), None]
        );
    }

    #[test]
    fn a_shape_jump_is_similar_area_with_little_overlap() {
        // Same area, but slice 2 overlaps its neighbours by only 20 of 100 pixels.
        let p = [100, 100, 100, 100];
        let o = [100, 20, 20];
        let j = flag_jumps(&measures(&p, &o));
        assert_eq!(
            j,
            vec![
                None,
                Some(Jump::Shape),
                Some(Jump::Shape),
                Some(Jump::Shape)
            ]
        );
    }

    #[test]
    fn tiny_structures_are_never_flagged() {
        let p = [2, 8, 1, 9];
        let o = [0, 0, 0];
        assert!(flag_jumps(&measures(&p, &o)).iter().all(Option::is_none));
    }

    #[test]
    fn statistics_give_the_volume_in_ml_slice_range_and_mean_and_sd_in_hu() {
        let vol = volume([0.5, 0.5, 2.0]);
        let mut s = Session::new(vol.geometry().clone(), Axis::K);
        let l = s.add_structure("box").unwrap();
        // 10×10 pixels on slices 3..=5: x from 10 to 19, so values 10..=19.
        for k in 3..=5 {
            square(&mut s, l, k, 10.0, 10.0, 10.0);
        }
        let mut cache = OverviewCache::default();
        let o = cache.update(&s, &vol, l).unwrap().clone();
        assert_eq!(o.stats.voxels, 300);
        // 300 voxels × 0.5 mm³ = 150 mm³ = 0.15 mL.
        assert!((o.stats.volume_ml - 0.15).abs() < 1e-9);
        assert_eq!(o.stats.slice_range, Some((3, 5)));
        assert!((o.stats.mean.unwrap() - 14.5).abs() < 1e-9);
        // The population SD of 10..=19 is sqrt(8.25).
        assert!((o.stats.std.unwrap() - 8.25f64.sqrt()).abs() < 1e-9);
        assert!(o.stats.hounsfield);
        assert!((o.area_mm2[4] - 25.0).abs() < 1e-9);
        assert_eq!(o.area_mm2[2], 0.0);
        assert_eq!(o.states[4], SliceState::Manual);
        assert!(o.jumps.iter().all(Option::is_none));
    }

    #[test]
    fn the_cache_remeasures_changed_slices_and_follows_undo() {
        let vol = volume([1.0, 1.0, 1.0]);
        let mut s = Session::new(vol.geometry().clone(), Axis::K);
        let l = s.add_structure("box").unwrap();
        for k in 2..=6 {
            square(&mut s, l, k, 10.0, 10.0, 10.0);
        }
        let mut cache = OverviewCache::default();
        assert!(
            cache
                .update(&s, &vol, l)
                .unwrap()
                .flagged()
                .next()
                .is_none()
        );
        // Slice 4 grows to 20×20: an area jump against slices 3 and 5.
        square(&mut s, l, 4, 5.0, 5.0, 20.0);
        let o = cache.update(&s, &vol, l).unwrap();
        assert_eq!(o.area_mm2[4], 400.0);
        assert_eq!(o.flagged().collect::<Vec<_>>(), vec![3, 4, 5]);
        // The same result as measuring from scratch.
        let fresh = OverviewCache::default().update(&s, &vol, l).cloned();
        assert_eq!(cache.get(l).cloned(), fresh);
        s.undo();
        let o = cache.update(&s, &vol, l).unwrap();
        assert_eq!(o.area_mm2[4], 100.0);
        assert!(o.flagged().next().is_none());
    }

    #[test]
    fn measuring_along_another_axis_matches_the_same_labels() {
        let vol = volume([1.0, 1.0, 1.0]);
        let mut s = Session::new(vol.geometry().clone(), Axis::I);
        let l = s.add_structure("box").unwrap();
        // On sagittal slices i = 7 and 8: a 4×4 square of (j, k).
        for i in [7, 8] {
            square(&mut s, l, i, 2.0, 2.0, 4.0);
        }
        let mut cache = OverviewCache::default();
        let o = cache.update(&s, &vol, l).unwrap();
        assert_eq!(o.stats.slice_range, Some((7, 8)));
        assert_eq!(o.stats.voxels, 32);
        assert!((o.stats.mean.unwrap() - 7.5).abs() < 1e-9);
        assert_eq!(o.axis, Axis::I);
    }
}
