//! Label maps: integer segmentations on a volume's grid.

use super::geometry::{extract_slice, write_slice};
use super::{Axis, Geometry, GeometryError, Image2D};

/// The value stored per voxel of a [`LabelMap`]: 0 is background, 1..=65535 are
/// structures. Files keep their own width (u8 when every label fits, u16 otherwise).
pub type LabelValue = u16;

/// An integer label per voxel on a [`Geometry`] (several structures at once).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMap {
    geometry: Geometry,
    labels: Vec<LabelValue>,
}

impl LabelMap {
    /// An all-background label map on `geometry`.
    pub fn empty(geometry: Geometry) -> Self {
        let n = geometry.voxel_count();
        Self {
            geometry,
            labels: vec![0; n],
        }
    }

    /// Wraps a label buffer laid out like [`super::Volume`]'s voxels.
    pub fn new(geometry: Geometry, labels: Vec<LabelValue>) -> Result<Self, GeometryError> {
        if labels.len() != geometry.voxel_count() {
            return Err(GeometryError::VoxelCountMismatch {
                expected: geometry.voxel_count(),
                actual: labels.len(),
            });
        }
        Ok(Self { geometry, labels })
    }

    /// The grid.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Replaces the grid's placement (origin, spacing, direction) keeping its size, e.g.
    /// to put a label file on the exact geometry of the image it belongs to.
    pub fn with_geometry(mut self, geometry: Geometry) -> Result<Self, GeometryError> {
        if geometry.dims != self.geometry.dims {
            return Err(GeometryError::GridMismatch {
                what: format!("size {:?} vs {:?}", self.geometry.dims, geometry.dims),
            });
        }
        self.geometry = geometry;
        Ok(self)
    }

    /// All labels, `i` fastest.
    pub fn labels(&self) -> &[LabelValue] {
        &self.labels
    }

    /// Mutable access to all labels.
    pub fn labels_mut(&mut self) -> &mut [LabelValue] {
        &mut self.labels
    }

    /// Label at `[i, j, k]`, `None` outside.
    pub fn get(&self, ijk: [usize; 3]) -> Option<LabelValue> {
        self.geometry.linear_index(ijk).map(|n| self.labels[n])
    }

    /// Sets the label at `[i, j, k]`; ignored outside the grid.
    pub fn set(&mut self, ijk: [usize; 3], value: LabelValue) {
        if let Some(n) = self.geometry.linear_index(ijk) {
            self.labels[n] = value;
        }
    }

    /// Copies one slice (orientation as in [`Axis`]).
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn slice(&self, axis: Axis, index: usize) -> Image2D<LabelValue> {
        extract_slice(&self.geometry, &self.labels, axis, index)
    }

    /// Overwrites one slice.
    ///
    /// # Panics
    /// If `index` is out of range or the image has the wrong size.
    pub fn set_slice(&mut self, axis: Axis, index: usize, image: &Image2D<LabelValue>) {
        write_slice(&self.geometry, &mut self.labels, axis, index, image);
    }

    /// A 0/1 mask of the voxels equal to `label` on one slice.
    pub fn slice_mask(&self, axis: Axis, index: usize, label: LabelValue) -> Image2D<u8> {
        self.slice(axis, index).map(|v| u8::from(v == label))
    }

    /// The non-zero labels present, ascending, with their voxel counts.
    pub fn label_counts(&self) -> Vec<(LabelValue, usize)> {
        let mut counts = vec![0usize; LabelValue::MAX as usize + 1];
        for &v in &self.labels {
            counts[v as usize] += 1;
        }
        counts
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, c)| **c > 0)
            .map(|(v, c)| (v as LabelValue, *c))
            .collect()
    }

    /// Number of voxels equal to `label`.
    pub fn count(&self, label: LabelValue) -> usize {
        self.labels.iter().filter(|&&v| v == label).count()
    }

    /// Largest label value (0 for an empty map).
    pub fn max_label(&self) -> LabelValue {
        self.labels.iter().copied().max().unwrap_or(0)
    }

    /// The first and last slice index along `axis` containing `label`, if any.
    pub fn slice_extent(&self, axis: Axis, label: LabelValue) -> Option<(usize, usize)> {
        let [nx, ny, _] = self.geometry.dims;
        let mut lo = usize::MAX;
        let mut hi = 0;
        for (n, &v) in self.labels.iter().enumerate() {
            if v == label {
                let ijk = [n % nx, (n / nx) % ny, n / (nx * ny)];
                let s = ijk[axis.index()];
                lo = lo.min(s);
                hi = hi.max(s);
            }
        }
        (lo != usize::MAX).then_some((lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_extent_of_a_label() {
        let g = Geometry::axis_aligned([4, 4, 6], [1.0; 3]);
        let mut m = LabelMap::empty(g);
        m.set([1, 1, 2], 3);
        m.set([2, 1, 4], 3);
        m.set([0, 0, 0], 7);
        assert_eq!(m.label_counts(), vec![(3, 2), (7, 1)]);
        assert_eq!(m.slice_extent(Axis::K, 3), Some((2, 4)));
        assert_eq!(m.slice_extent(Axis::I, 3), Some((1, 2)));
        assert_eq!(m.slice_extent(Axis::K, 9), None);
        assert_eq!(
            m.slice_mask(Axis::K, 2, 3)
                .data
                .iter()
                .map(|&v| v as u32)
                .sum::<u32>(),
            1
        );
        assert_eq!(m.max_label(), 7);
    }
}
