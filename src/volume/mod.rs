//! Volumes, label maps and their geometry.
//!
//! # Axis order (stated once, used everywhere)
//!
//! A voxel index is `[i, j, k]`:
//! - `i` runs along image columns (the in-plane "x" of a slice),
//! - `j` runs along image rows (the in-plane "y"),
//! - `k` runs across slices (the acquisition / slice axis, "z").
//!
//! Voxels are stored with `i` fastest: `index = i + nx * (j + ny * k)`. This is the
//! memory order of NIfTI and of a DICOM series stacked slice after slice, so loading
//! never transposes.
//!
//! # Patient space
//!
//! Positions are in millimetres in DICOM's patient coordinate system (LPS: +x towards
//! the patient's left, +y towards posterior, +z towards head). See
//! [`Geometry::patient_from_voxel`]. NIfTI's RAS world is converted on load/save.

pub mod extent;
mod geometry;
mod image2d;
pub mod interpolate;
mod labels;
pub mod likelihood;
pub mod register;
mod resample;

pub use geometry::{Axis, Geometry, GeometryError};
pub use image2d::Image2D;
pub use labels::{LabelMap, LabelValue};
pub use resample::{
    Region, paste_region_bilinear, resample_mask_nearest, resample_region_bilinear,
};

/// The probability at or above which a pixel belongs to the structure. The one
/// threshold of the project: the app's session, `icseg propagate`, `icseg eval` and
/// chained propagation's memory all turn probabilities into masks with [`is_inside`].
pub const MASK_THRESHOLD: f32 = 0.5;

/// Whether a pixel with probability `p` belongs to the structure ([`MASK_THRESHOLD`]).
pub fn is_inside(p: f32) -> bool {
    p >= MASK_THRESHOLD
}

/// The finite values of `values`, sorted, from every `len / max`-th one (all of them
/// when there are at most `2 · max`): a sample for robust intensity ranges.
pub fn sorted_finite_sample(values: &[f32], max: usize) -> Vec<f32> {
    let stride = (values.len() / max.max(1)).max(1);
    let mut sample: Vec<f32> = values
        .iter()
        .step_by(stride)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    sample.sort_unstable_by(f32::total_cmp);
    sample
}

/// The value at fraction `q` (0–1) of `sorted` (nearest rank); `sorted` must not be
/// empty.
pub fn nearest_rank(sorted: &[f32], q: f64) -> f32 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The kind of acquisition a volume came from, as far as it is known.
///
/// Drives sensible defaults (CT windows in Hounsfield units, percentile windows for MR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Modality {
    /// Computed tomography: voxel values are Hounsfield units.
    Ct,
    /// Magnetic resonance: arbitrary intensity units.
    Mr,
    /// Anything else or unknown.
    Other,
}

impl Modality {
    /// Parses a DICOM Modality (0008,0060) code.
    pub fn from_dicom_code(code: &str) -> Self {
        match code.trim() {
            "CT" => Self::Ct,
            "MR" => Self::Mr,
            _ => Self::Other,
        }
    }

    /// The DICOM code for this modality ("OT" when unknown).
    pub fn dicom_code(self) -> &'static str {
        match self {
            Self::Ct => "CT",
            Self::Mr => "MR",
            Self::Other => "OT",
        }
    }
}

/// A scalar 3-D image on a [`Geometry`], with voxel values as `f32` in physical units
/// (Hounsfield units for CT, after any rescale slope/intercept).
#[derive(Clone, Debug)]
pub struct Volume {
    geometry: Geometry,
    voxels: Vec<f32>,
    /// Acquisition modality, when known.
    pub modality: Modality,
}

impl Volume {
    /// Creates a volume; `voxels` must hold exactly `geometry.voxel_count()` values in the
    /// documented order (`i` fastest).
    pub fn new(
        geometry: Geometry,
        voxels: Vec<f32>,
        modality: Modality,
    ) -> Result<Self, GeometryError> {
        if voxels.len() != geometry.voxel_count() {
            return Err(GeometryError::VoxelCountMismatch {
                expected: geometry.voxel_count(),
                actual: voxels.len(),
            });
        }
        Ok(Self {
            geometry,
            voxels,
            modality,
        })
    }

    /// The grid this volume lives on.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Grid size `[nx, ny, nz]`.
    pub fn dims(&self) -> [usize; 3] {
        self.geometry.dims
    }

    /// All voxels, `i` fastest.
    pub fn voxels(&self) -> &[f32] {
        &self.voxels
    }

    /// Mutable access to all voxels, `i` fastest.
    pub fn voxels_mut(&mut self) -> &mut [f32] {
        &mut self.voxels
    }

    /// The value at `[i, j, k]`, or `None` outside the grid.
    pub fn get(&self, ijk: [usize; 3]) -> Option<f32> {
        self.geometry.linear_index(ijk).map(|n| self.voxels[n])
    }

    /// Copies the 2-D slice `index` perpendicular to `axis` (see [`Axis`] for its in-plane
    /// orientation). Slices along [`Axis::K`] are contiguous and cheapest.
    ///
    /// # Panics
    /// If `index` is out of range; check with [`Geometry::slice_count`].
    pub fn slice(&self, axis: Axis, index: usize) -> Image2D<f32> {
        geometry::extract_slice(&self.geometry, &self.voxels, axis, index)
    }

    /// Minimum and maximum voxel value (`(0, 0)` for an empty volume); NaNs are ignored.
    pub fn value_range(&self) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for &v in &self.voxels {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi { (0.0, 0.0) } else { (lo, hi) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: [usize; 3]) -> Volume {
        let g = Geometry::axis_aligned(dims, [1.0, 2.0, 3.0]);
        let v = (0..g.voxel_count()).map(|n| n as f32).collect();
        Volume::new(g, v, Modality::Ct).unwrap()
    }

    #[test]
    fn voxel_order_is_i_fastest() {
        let v = ramp([4, 3, 2]);
        assert_eq!(v.get([1, 0, 0]), Some(1.0));
        assert_eq!(v.get([0, 1, 0]), Some(4.0));
        assert_eq!(v.get([0, 0, 1]), Some(12.0));
        assert_eq!(v.get([4, 0, 0]), None);
    }

    #[test]
    fn slices_along_each_axis_have_documented_orientation() {
        let v = ramp([4, 3, 2]);
        let z = v.slice(Axis::K, 1);
        assert_eq!((z.width, z.height), (4, 3));
        assert_eq!(z.get(2, 1), v.get([2, 1, 1]).unwrap());
        let y = v.slice(Axis::J, 2);
        assert_eq!((y.width, y.height), (4, 2));
        assert_eq!(y.get(3, 1), v.get([3, 2, 1]).unwrap());
        let x = v.slice(Axis::I, 3);
        assert_eq!((x.width, x.height), (3, 2));
        assert_eq!(x.get(2, 1), v.get([3, 2, 1]).unwrap());
    }

    #[test]
    fn wrong_voxel_count_is_an_error() {
        let g = Geometry::axis_aligned([2, 2, 2], [1.0; 3]);
        assert!(matches!(
            Volume::new(g, vec![0.0; 7], Modality::Mr),
            Err(GeometryError::VoxelCountMismatch {
                expected: 8,
                actual: 7
            })
        ));
    }
}
