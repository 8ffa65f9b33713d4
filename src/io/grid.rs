//! Placing a label map read from a file onto the grid of the image it belongs to.
//!
//! Tools store the same voxel lattice in different axis orders: a label NIfTI written
//! by one program may run its rows bottom-up while the DICOM series runs them top-down.
//! Such a map still lies *on* the image grid: every label voxel centre coincides with an
//! image voxel centre. [`labels_onto_reference`] accepts exactly those maps (axes
//! permuted and/or flipped) and re-indexes them; anything that would need interpolation
//! is refused, because resampling a segmentation silently changes it.

use crate::volume::{Geometry, LabelMap};

/// Largest difference between direction cosines still taken as "parallel" (≈ 0.8°).
const DIRECTION_TOLERANCE: f64 = 1e-2;
/// Largest distance between corresponding voxel centres, as a fraction of the smallest
/// voxel spacing: well below half a voxel (a real shift), well above float rounding.
const POSITION_TOLERANCE_VOXELS: f64 = 0.1;

/// How reference axis `r` is read from the label map: source axis and whether it runs
/// backwards.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AxisMap {
    source_axis: usize,
    flipped: bool,
}

/// Re-indexes `labels` (on its own grid) onto `reference`, or explains in plain words
/// why its voxels do not coincide with the reference voxels.
pub fn labels_onto_reference(labels: &LabelMap, reference: &Geometry) -> Result<LabelMap, String> {
    let own = labels.geometry();
    let maps = axis_maps(own, reference)?;
    // Sizes must agree axis by axis.
    for (r, m) in maps.iter().enumerate() {
        if own.dims[m.source_axis] != reference.dims[r] {
            return Err(format!(
                "it has {} × {} × {} voxels, the image {} × {} × {}",
                own.dims[0],
                own.dims[1],
                own.dims[2],
                reference.dims[0],
                reference.dims[1],
                reference.dims[2]
            ));
        }
    }
    let source_index = |ref_ijk: [usize; 3]| -> [usize; 3] {
        let mut s = [0usize; 3];
        for (r, m) in maps.iter().enumerate() {
            let n = own.dims[m.source_axis];
            s[m.source_axis] = if m.flipped {
                n - 1 - ref_ijk[r]
            } else {
                ref_ijk[r]
            };
        }
        s
    };
    // Every corner of the reference grid must sit on the matching label voxel centre;
    // with parallel axes, matching corners means every voxel matches.
    let tol = POSITION_TOLERANCE_VOXELS
        * reference
            .spacing_mm
            .iter()
            .chain(&own.spacing_mm)
            .fold(f64::INFINITY, |a, &b| a.min(b));
    let mut worst: f64 = 0.0;
    for corner in 0..8 {
        let ref_ijk = [
            if corner & 1 == 0 {
                0
            } else {
                reference.dims[0] - 1
            },
            if corner & 2 == 0 {
                0
            } else {
                reference.dims[1] - 1
            },
            if corner & 4 == 0 {
                0
            } else {
                reference.dims[2] - 1
            },
        ];
        let src = source_index(ref_ijk);
        let p = reference.patient_from_voxel(ref_ijk.map(|v| v as f64));
        let q = own.patient_from_voxel(src.map(|v| v as f64));
        let d = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt();
        worst = worst.max(d);
    }
    if worst > tol {
        return Err(format!(
            "its voxels are shifted by up to {worst:.2} mm from the image voxels"
        ));
    }
    let identity = maps
        .iter()
        .enumerate()
        .all(|(r, m)| m.source_axis == r && !m.flipped);
    let out = if identity {
        labels.labels().to_vec()
    } else {
        let [nx, ny, nz] = reference.dims;
        let mut out = Vec::with_capacity(reference.voxel_count());
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let s = source_index([i, j, k]);
                    out.push(labels.get(s).unwrap_or(0));
                }
            }
        }
        out
    };
    LabelMap::new(reference.clone(), out).map_err(|e| e.to_string())
}

/// For each reference axis, the parallel or anti-parallel axis of `own`.
fn axis_maps(own: &Geometry, reference: &Geometry) -> Result<[AxisMap; 3], String> {
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let mut maps = [AxisMap {
        source_axis: 0,
        flipped: false,
    }; 3];
    let mut used = [false; 3];
    for (r, m) in maps.iter_mut().enumerate() {
        let found = (0..3).find(|&s| {
            !used[s]
                && (dot(own.direction[s], reference.direction[r]).abs() - 1.0).abs()
                    < DIRECTION_TOLERANCE
        });
        let Some(s) = found else {
            return Err(format!(
                "its orientation ({}) is rotated against the image ({})",
                own.orientation_code(),
                reference.orientation_code()
            ));
        };
        used[s] = true;
        *m = AxisMap {
            source_axis: s,
            flipped: dot(own.direction[s], reference.direction[r]) < 0.0,
        };
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Geometry {
        Geometry {
            dims: [4, 3, 2],
            spacing_mm: [0.5, 0.7, 2.0],
            origin_mm: [-10.0, 5.0, 100.0],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn a_map_with_flipped_rows_is_reindexed_onto_the_image() {
        let r = reference();
        // same lattice, j stored bottom-up
        let mut flipped = r.clone();
        flipped.direction[1] = [0.0, -1.0, 0.0];
        flipped.origin_mm = r.patient_from_voxel([0.0, 2.0, 0.0]);
        let mut m = LabelMap::empty(flipped);
        m.set([3, 0, 1], 5); // = reference [3, 2, 1]
        let on = labels_onto_reference(&m, &r).unwrap();
        assert_eq!(on.get([3, 2, 1]), Some(5));
        assert_eq!(on.count(5), 1);
        assert_eq!(on.geometry(), &r);
    }

    #[test]
    fn a_map_with_swapped_axes_is_reindexed() {
        let r = reference();
        let own = Geometry {
            dims: [3, 4, 2],
            spacing_mm: [0.7, 0.5, 2.0],
            origin_mm: r.origin_mm,
            direction: [r.direction[1], r.direction[0], r.direction[2]],
        };
        let mut m = LabelMap::empty(own);
        m.set([2, 1, 1], 9); // j=2, i=1
        let on = labels_onto_reference(&m, &r).unwrap();
        assert_eq!(on.get([1, 2, 1]), Some(9));
    }

    #[test]
    fn a_shifted_or_resized_or_rotated_map_is_refused() {
        let r = reference();
        let mut shifted = r.clone();
        shifted.origin_mm[0] += 0.25; // half a voxel
        let e = labels_onto_reference(&LabelMap::empty(shifted), &r).unwrap_err();
        assert!(e.contains("shifted"), "{e}");
        let mut bigger = r.clone();
        bigger.dims[2] = 3;
        assert!(labels_onto_reference(&LabelMap::empty(bigger), &r).is_err());
        let mut rotated = r.clone();
        let s = std::f64::consts::FRAC_1_SQRT_2;
        rotated.direction[0] = [s, s, 0.0];
        rotated.direction[1] = [-s, s, 0.0];
        let e = labels_onto_reference(&LabelMap::empty(rotated), &r).unwrap_err();
        assert!(e.contains("rotated"), "{e}");
        let mut spacing = r.clone();
        spacing.spacing_mm[2] = 2.5;
        assert!(labels_onto_reference(&LabelMap::empty(spacing), &r).is_err());
    }
}
