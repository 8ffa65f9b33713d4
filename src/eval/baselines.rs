//! Classical slice-propagation baselines the network is measured against.
//!
//! Both take a binary annotation volume (1 = structure) of which only the listed slices
//! (perpendicular to one axis) are trusted, and fill the other slices:
//!
//! - [`nearest_slice`]: each slice copies the nearest annotated slice, but only within
//!   the annotated range widened on both ends by half the mean gap between annotations
//!   (with a single annotation there is no gap, so nothing outside it is filled).
//! - [`copy_within`]: each slice within a fixed distance (mm) of an annotated slice
//!   copies the nearest one — with one annotation, the honest baseline at k = 1
//!   ([`COPY_RANGE_MM`]).
//! - [`shape_based_interpolation`]: Raya & Udupa (1990) shape-based interpolation, the
//!   idea behind 3D Slicer's "Fill between slices": signed distance maps of consecutive
//!   annotated slices are blended linearly and thresholded at zero. Pure "fill between"
//!   leaves the two ends of the structure empty, so — to make the baseline as strong as
//!   the nearest one there — beyond the first and last annotation it copies the end
//!   slice over the same half-gap margin as [`nearest_slice`]. With one annotation it
//!   fills nothing but that slice.

use crate::volume::interpolate::ShapePrior;
use crate::volume::{Axis, LabelMap};

/// Slices of `annotations` to keep, sorted and de-duplicated.
fn sorted_unique(slices: &[usize]) -> Vec<usize> {
    let mut s = slices.to_vec();
    s.sort_unstable();
    s.dedup();
    s
}

/// Nearest-annotated-slice copy. `annotations` holds 0/1 values; only `slices` along
/// `axis` are read. Annotated slices are copied unchanged.
pub fn nearest_slice(annotations: &LabelMap, axis: Axis, slices: &[usize]) -> LabelMap {
    let slices = sorted_unique(slices);
    let mut out = LabelMap::empty(annotations.geometry().clone());
    let (Some(&first), Some(&last)) = (slices.first(), slices.last()) else {
        return out;
    };
    let n = annotations.geometry().slice_count(axis);
    let half_gap = if slices.len() > 1 {
        ((last - first) as f64 / (slices.len() - 1) as f64 / 2.0).floor() as usize
    } else {
        0
    };
    let lo = first.saturating_sub(half_gap);
    let hi = (last + half_gap).min(n - 1);
    let sources: Vec<_> = slices.iter().map(|&s| annotations.slice(axis, s)).collect();
    for z in lo..=hi {
        // Nearest annotated slice; ties go to the lower one.
        let (idx, _) = slices
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.abs_diff(z), **s))
            .expect("slices is not empty");
        out.set_slice(axis, z, &sources[idx]);
    }
    out
}

/// How far (mm along the axis) the `copy` baseline copies an annotated slice: ±20 mm, as
/// the evaluation's definition of the honest k = 1 baseline fixes it (independent of the
/// shape prior's own hold).
pub const COPY_RANGE_MM: f64 = 20.0;

/// Each slice within `range_mm` of an annotated slice (physical distance along `axis`)
/// copies the nearest annotated slice (ties to the lower one); the rest stay empty.
pub fn copy_within(
    annotations: &LabelMap,
    axis: Axis,
    slices: &[usize],
    range_mm: f64,
) -> LabelMap {
    let slices = sorted_unique(slices);
    let mut out = LabelMap::empty(annotations.geometry().clone());
    let step = annotations.geometry().spacing_mm[axis.index()]
        .abs()
        .max(1e-6);
    let reach = (range_mm / step + 1e-9).floor() as usize;
    let n = annotations.geometry().slice_count(axis);
    let sources: Vec<_> = slices.iter().map(|&s| annotations.slice(axis, s)).collect();
    for z in 0..n {
        let Some((idx, &s)) = slices
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.abs_diff(z), **s))
        else {
            break;
        };
        if s.abs_diff(z) <= reach {
            out.set_slice(axis, z, &sources[idx]);
        }
    }
    out
}

/// Shape-based interpolation between consecutive annotated slices (Raya & Udupa 1990),
/// with the ends extended like [`nearest_slice`] (see the module docs). Distances use
/// the grid's in-plane spacing, so they are physical on anisotropic grids.
pub fn shape_based_interpolation(annotations: &LabelMap, axis: Axis, slices: &[usize]) -> LabelMap {
    let slices = sorted_unique(slices);
    // Start from the nearest-slice fill, which handles the margins beyond the ends;
    // everything from the first to the last annotation is overwritten below with the
    // interpolation of `volume::interpolate` (the shape prior of chained propagation).
    let mut out = nearest_slice(annotations, axis, &slices);
    let (Some(&first), Some(&last)) = (slices.first(), slices.last()) else {
        return out;
    };
    let prior = ShapePrior::from_label_map(annotations, axis, &slices, |v| v != 0, 0.0);
    let (w, h) = annotations.geometry().slice_dims(axis);
    for z in first..=last {
        out.set_slice(axis, z, &prior.mask(z, w, h).map(u16::from));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    /// A cylinder of radius r(z) along the slice axis, centred in a 32×32×20 grid.
    fn cone(radius: impl Fn(usize) -> f64) -> LabelMap {
        let g = Geometry::axis_aligned([32, 32, 20], [1.0, 1.0, 2.0]);
        let mut m = LabelMap::empty(g);
        for z in 0..20 {
            let r = radius(z);
            for y in 0..32 {
                for x in 0..32 {
                    let (dx, dy) = (x as f64 - 15.5, y as f64 - 15.5);
                    if dx.hypot(dy) <= r {
                        m.set([x, y, z], 1);
                    }
                }
            }
        }
        m
    }

    fn slice_area(m: &LabelMap, z: usize) -> usize {
        m.slice(Axis::K, z).data.iter().filter(|&&v| v != 0).count()
    }

    #[test]
    fn interpolation_grows_the_shape_linearly_between_annotations() {
        let truth = cone(|z| 2.0 + z as f64 * 0.6);
        let pred = shape_based_interpolation(&truth, Axis::K, &[2, 14]);
        // Midway the radius is about (3.2 + 10.4) / 2 = 6.8: area ≈ π·6.8² ≈ 145.
        let mid = slice_area(&pred, 8);
        assert!((120..=175).contains(&mid), "area {mid}");
        assert_eq!(slice_area(&pred, 2), slice_area(&truth, 2));
        // Gap 12 → half gap 6: the end slices are copied up to 6 slices beyond them.
        assert_eq!(slice_area(&pred, 19), slice_area(&truth, 14));
        assert_eq!(slice_area(&pred, 0), slice_area(&truth, 2));
    }

    #[test]
    fn nearest_copies_within_half_a_gap_of_the_annotated_range() {
        let truth = cone(|z| 2.0 + z as f64 * 0.5);
        let pred = nearest_slice(&truth, Axis::K, &[4, 8, 12]);
        // Gap 4 → half gap 2: slices 2..=14 filled, 1 and 15 empty.
        assert_eq!(slice_area(&pred, 2), slice_area(&truth, 4));
        assert_eq!(slice_area(&pred, 14), slice_area(&truth, 12));
        assert_eq!(slice_area(&pred, 1), 0);
        assert_eq!(slice_area(&pred, 15), 0);
        assert_eq!(slice_area(&pred, 9), slice_area(&truth, 8));
        assert_eq!(slice_area(&pred, 11), slice_area(&truth, 12));
    }

    #[test]
    fn copy_reaches_twenty_millimetres_from_a_single_annotation() {
        let truth = cone(|_| 5.0);
        // Slices are 2 mm apart: 20 mm is 10 slices each way from slice 7 (0..=17).
        let pred = copy_within(&truth, Axis::K, &[7], COPY_RANGE_MM);
        assert_eq!(slice_area(&pred, 17), slice_area(&truth, 7));
        assert_eq!(slice_area(&pred, 0), slice_area(&truth, 7));
        assert_eq!(slice_area(&pred, 18), 0);
        assert_eq!(pred.count(1), 18 * slice_area(&truth, 7));
    }

    #[test]
    fn a_single_annotation_fills_only_itself() {
        let truth = cone(|_| 5.0);
        for pred in [
            nearest_slice(&truth, Axis::K, &[7]),
            shape_based_interpolation(&truth, Axis::K, &[7]),
        ] {
            assert!(slice_area(&pred, 7) > 0);
            assert_eq!(pred.count(1), slice_area(&pred, 7));
        }
    }

    #[test]
    fn interpolating_towards_an_empty_slice_shrinks_the_shape() {
        let truth = cone(|z| if z <= 6 { 6.0 } else { 0.0 });
        let pred = shape_based_interpolation(&truth, Axis::K, &[4, 12]);
        let areas: Vec<_> = (4..=12).map(|z| slice_area(&pred, z)).collect();
        assert!(areas.windows(2).all(|w| w[1] <= w[0]), "{areas:?}");
        assert_eq!(*areas.last().unwrap(), 0);
    }
}
