//! Where a propagated structure ends along the slice axis.
//!
//! The network predicts every slice on its own, so far from the annotations it can
//! light up on a slice that merely looks similar (the other parotid, a vessel further
//! down). A structure is one run of slices: [`run_through_support`] keeps the
//! predicted slices between the first and last non-empty support slice, and beyond each
//! end only the unbroken run of non-empty predicted slices that continues from it; the
//! first empty predicted slice ends the structure on that side. This is not in the
//! paper; it is how a radiologist reads a propagation, and `icseg eval` measures it
//! together with the network (`docs/evaluation.md`).

use crate::volume::{Axis, Image2D, LabelMap};

/// The range of slices a structure occupies, given which slices are non-empty and which
/// were annotated: from the first to the last non-empty support slice, extended on each
/// side while the next slice is non-empty. `None` when no support slice is non-empty.
pub fn run_through_support(non_empty: &[bool], support: &[usize]) -> Option<(usize, usize)> {
    let n = non_empty.len();
    let anchors = support.iter().copied().filter(|&z| z < n && non_empty[z]);
    let first = anchors.clone().min()?;
    let last = anchors.max()?;
    let mut hi = last;
    while hi + 1 < n && non_empty[hi + 1] {
        hi += 1;
    }
    let mut lo = first;
    while lo > 0 && non_empty[lo - 1] {
        lo -= 1;
    }
    Some((lo, hi))
}

/// Clears the slices of `mask` along `axis` that are not connected, through a run of
/// non-empty slices, to a non-empty support slice (see [`run_through_support`]).
/// `support` lists the annotated slices (an empty annotation is not an anchor). With no
/// non-empty support slice everything is cleared. Returns the number of slices cleared.
pub fn keep_run_through_support(mask: &mut LabelMap, axis: Axis, support: &[usize]) -> usize {
    let n = mask.geometry().slice_count(axis);
    let non_empty: Vec<bool> = (0..n)
        .map(|z| mask.slice(axis, z).data.iter().any(|&v| v != 0))
        .collect();
    let keep = run_through_support(&non_empty, support);
    let outside = |z: usize| keep.is_none_or(|(lo, hi)| z < lo || z > hi);
    let doomed: Vec<usize> = (0..n).filter(|&z| non_empty[z] && outside(z)).collect();
    let (w, h) = mask.geometry().slice_dims(axis);
    let empty = Image2D::filled(w, h, 0);
    for &z in &doomed {
        mask.set_slice(axis, z, &empty);
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn mask_with(slices: &[usize]) -> LabelMap {
        let mut m = LabelMap::empty(Geometry::axis_aligned([3, 3, 12], [1.0; 3]));
        for &z in slices {
            m.set([1, 1, z], 1);
        }
        m
    }

    fn non_empty(m: &LabelMap) -> Vec<usize> {
        (0..12)
            .filter(|&z| m.slice(Axis::K, z).data.iter().any(|&v| v != 0))
            .collect()
    }

    #[test]
    fn keeps_the_run_through_the_support_and_drops_islands_beyond_its_ends() {
        // Support 4 and 6; predictions run 2..=8 with a gap at 9 and an island at 10-11
        // and another island at 0.
        let mut m = mask_with(&[0, 2, 3, 4, 5, 6, 7, 8, 10, 11]);
        let cleared = keep_run_through_support(&mut m, Axis::K, &[4, 6]);
        assert_eq!(non_empty(&m), vec![2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(cleared, 3);
    }

    #[test]
    fn slices_between_support_slices_are_kept_even_after_a_gap() {
        let mut m = mask_with(&[2, 3, 5, 8, 9]);
        keep_run_through_support(&mut m, Axis::K, &[2, 8]);
        assert_eq!(non_empty(&m), vec![2, 3, 5, 8, 9]);
    }

    #[test]
    fn empty_support_slices_are_not_anchors() {
        let mut m = mask_with(&[5, 6, 9, 10]);
        // Slice 8 is annotated but empty: only slice 5 anchors the run.
        keep_run_through_support(&mut m, Axis::K, &[5, 8]);
        assert_eq!(non_empty(&m), vec![5, 6]);
        let mut none = mask_with(&[1, 2]);
        assert_eq!(keep_run_through_support(&mut none, Axis::K, &[7]), 2);
        assert!(non_empty(&none).is_empty());
    }
}
