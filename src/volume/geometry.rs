//! The voxel grid: size, spacing, origin and orientation in patient space.

use super::Image2D;

/// One of the three voxel axes; see the module docs for the axis order.
///
/// Used to name the axis a slice is *perpendicular* to. In-plane orientation of the
/// extracted [`Image2D`] (pixel `x` to the right, `y` downwards):
///
/// | slice across | width (x) | height (y) |
/// |---|---|---|
/// | [`Axis::K`] (axial for a usual CT) | `i` | `j` |
/// | [`Axis::J`] (coronal)              | `i` | `k` |
/// | [`Axis::I`] (sagittal)             | `j` | `k` |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Axis {
    /// Columns.
    I = 0,
    /// Rows.
    J = 1,
    /// Slices.
    K = 2,
}

impl Axis {
    /// All three axes in index order.
    pub const ALL: [Axis; 3] = [Axis::I, Axis::J, Axis::K];

    /// The axis with index 0, 1 or 2.
    pub fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }

    /// Index 0, 1 or 2.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The voxel axes along a slice's width and height (see the table above).
    pub fn in_plane(self) -> (usize, usize) {
        match self {
            Axis::K => (0, 1),
            Axis::J => (0, 2),
            Axis::I => (1, 2),
        }
    }
}

/// Errors about grids that do not fit together.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeometryError {
    /// Voxel buffer and grid size disagree.
    #[error("the image holds {actual} voxels but its grid needs {expected}")]
    VoxelCountMismatch {
        /// Voxels the grid needs.
        expected: usize,
        /// Voxels supplied.
        actual: usize,
    },
    /// Two objects that must share a grid do not.
    #[error("the grids differ: {what}")]
    GridMismatch {
        /// Which property differs.
        what: String,
    },
    /// Spacing must be positive and finite, the direction matrix invertible.
    #[error("invalid geometry: {0}")]
    Invalid(String),
}

/// A voxel grid in patient space.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    /// Grid size `[nx, ny, nz]`.
    pub dims: [usize; 3],
    /// Distance between voxel centres along `i`, `j`, `k` in millimetres.
    pub spacing_mm: [f64; 3],
    /// Patient-space (LPS, mm) position of the centre of voxel `[0, 0, 0]`.
    pub origin_mm: [f64; 3],
    /// Direction cosines: `direction[a]` is the LPS unit vector along voxel axis `a`.
    pub direction: [[f64; 3]; 3],
}

impl Geometry {
    /// A grid at the origin with identity orientation.
    pub fn axis_aligned(dims: [usize; 3], spacing_mm: [f64; 3]) -> Self {
        Self {
            dims,
            spacing_mm,
            origin_mm: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    /// Checks that spacing is positive and finite and the direction matrix is invertible.
    pub fn validate(&self) -> Result<(), GeometryError> {
        if self.spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(GeometryError::Invalid(format!(
                "voxel spacing must be positive, got {:?} mm",
                self.spacing_mm
            )));
        }
        if self.origin_mm.iter().any(|o| !o.is_finite()) {
            return Err(GeometryError::Invalid(
                "the origin is not a finite position".into(),
            ));
        }
        let det = det3(&self.direction);
        if !det.is_finite() || det.abs() < 1e-6 {
            return Err(GeometryError::Invalid(
                "the orientation matrix is singular".into(),
            ));
        }
        Ok(())
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.dims.iter().product()
    }

    /// Linear index of `[i, j, k]` in the voxel buffer, `None` outside the grid.
    pub fn linear_index(&self, [i, j, k]: [usize; 3]) -> Option<usize> {
        let [nx, ny, nz] = self.dims;
        (i < nx && j < ny && k < nz).then(|| i + nx * (j + ny * k))
    }

    /// Number of slices perpendicular to `axis`.
    pub fn slice_count(&self, axis: Axis) -> usize {
        self.dims[axis.index()]
    }

    /// `(width, height)` of a slice perpendicular to `axis`.
    pub fn slice_dims(&self, axis: Axis) -> (usize, usize) {
        let (a, b) = axis.in_plane();
        (self.dims[a], self.dims[b])
    }

    /// Pixel spacing `(x, y)` in mm of a slice perpendicular to `axis`.
    pub fn slice_spacing_mm(&self, axis: Axis) -> (f64, f64) {
        let (a, b) = axis.in_plane();
        (self.spacing_mm[a], self.spacing_mm[b])
    }

    /// The voxel under pixel `(x, y)` of slice `index` perpendicular to `axis`.
    pub fn voxel_from_slice(&self, axis: Axis, index: usize, x: usize, y: usize) -> [usize; 3] {
        let (a, b) = axis.in_plane();
        let mut ijk = [0; 3];
        ijk[axis.index()] = index;
        ijk[a] = x;
        ijk[b] = y;
        ijk
    }

    /// Maps a (continuous) voxel index to patient space (LPS, mm):
    ///
    /// `p = origin + Σ_a direction[a] · spacing[a] · ijk[a]`
    ///
    /// This is DICOM's equation C.7.6.2.1-1 with the row/column cosines as
    /// `direction[0]`/`direction[1]` and the slice normal (times the slice spacing) as
    /// `direction[2]`.
    pub fn patient_from_voxel(&self, ijk: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin_mm;
        for (a, d) in self.direction.iter().enumerate() {
            for (pc, dc) in p.iter_mut().zip(d) {
                *pc += dc * self.spacing_mm[a] * ijk[a];
            }
        }
        p
    }

    /// The inverse of [`Self::patient_from_voxel`] (continuous voxel index).
    pub fn voxel_from_patient(&self, p: [f64; 3]) -> [f64; 3] {
        // Columns of M are direction[a] * spacing[a]; solve M · ijk = p − origin.
        let m: [[f64; 3]; 3] = std::array::from_fn(|r| {
            std::array::from_fn(|c| self.direction[c][r] * self.spacing_mm[c])
        });
        let d = [
            p[0] - self.origin_mm[0],
            p[1] - self.origin_mm[1],
            p[2] - self.origin_mm[2],
        ];
        solve3(&m, d)
    }

    /// Whether `other` describes the same grid (sizes equal, spacing/origin within
    /// `tol_mm`, direction cosines within 1e-3).
    pub fn check_same_grid(&self, other: &Geometry, tol_mm: f64) -> Result<(), GeometryError> {
        if self.dims != other.dims {
            return Err(GeometryError::GridMismatch {
                what: format!("size {:?} vs {:?}", self.dims, other.dims),
            });
        }
        let close = |a: &[f64; 3], b: &[f64; 3], tol: f64| {
            a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
        };
        if !close(&self.spacing_mm, &other.spacing_mm, tol_mm) {
            return Err(GeometryError::GridMismatch {
                what: format!("spacing {:?} vs {:?} mm", self.spacing_mm, other.spacing_mm),
            });
        }
        if !close(&self.origin_mm, &other.origin_mm, tol_mm.max(1e-3)) {
            return Err(GeometryError::GridMismatch {
                what: format!("origin {:?} vs {:?} mm", self.origin_mm, other.origin_mm),
            });
        }
        if !(0..3).all(|a| close(&self.direction[a], &other.direction[a], 1e-3)) {
            return Err(GeometryError::GridMismatch {
                what: "orientation".into(),
            });
        }
        Ok(())
    }

    /// The voxel axis closest to the patient's axis `lps` (0 = left-right, 1 =
    /// anterior-posterior, 2 = head-foot). Used to name views "axial", "coronal", "sagittal".
    pub fn axis_closest_to_patient(&self, lps: usize) -> Axis {
        let best = (0..3)
            .max_by(|&a, &b| {
                self.direction[a][lps]
                    .abs()
                    .total_cmp(&self.direction[b][lps].abs())
            })
            .unwrap_or(2);
        Axis::from_index(best).unwrap_or(Axis::K)
    }

    /// A three-letter orientation code such as "LPS" or "RAS": for each voxel axis the
    /// patient direction it points towards.
    pub fn orientation_code(&self) -> String {
        self.direction
            .iter()
            .map(|d| {
                let (a, v) = d
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                    .unwrap_or((0, &1.0));
                match (a, *v >= 0.0) {
                    (0, true) => 'L',
                    (0, false) => 'R',
                    (1, true) => 'P',
                    (1, false) => 'A',
                    (_, true) => 'S',
                    (_, false) => 'I',
                }
            })
            .collect()
    }
}

/// Copies slice `index` perpendicular to `axis` out of a voxel buffer laid out on `g`.
pub(super) fn extract_slice<T: Copy + Default>(
    g: &Geometry,
    voxels: &[T],
    axis: Axis,
    index: usize,
) -> Image2D<T> {
    let [nx, ny, nz] = g.dims;
    assert!(
        index < g.dims[axis.index()],
        "slice {index} out of range for {axis:?}"
    );
    match axis {
        Axis::K => {
            let start = nx * ny * index;
            Image2D::new(nx, ny, voxels[start..start + nx * ny].to_vec())
        }
        Axis::J => {
            let mut out = Vec::with_capacity(nx * nz);
            for k in 0..nz {
                let start = nx * (index + ny * k);
                out.extend_from_slice(&voxels[start..start + nx]);
            }
            Image2D::new(nx, nz, out)
        }
        Axis::I => {
            let mut out = Vec::with_capacity(ny * nz);
            for k in 0..nz {
                for j in 0..ny {
                    out.push(voxels[index + nx * (j + ny * k)]);
                }
            }
            Image2D::new(ny, nz, out)
        }
    }
}

/// Writes `image` into slice `index` perpendicular to `axis` of a voxel buffer on `g`.
pub(super) fn write_slice<T: Copy>(
    g: &Geometry,
    voxels: &mut [T],
    axis: Axis,
    index: usize,
    image: &Image2D<T>,
) {
    let [nx, ny, nz] = g.dims;
    assert_eq!(
        (image.width, image.height),
        g.slice_dims(axis),
        "slice size mismatch"
    );
    match axis {
        Axis::K => {
            let start = nx * ny * index;
            voxels[start..start + nx * ny].copy_from_slice(&image.data);
        }
        Axis::J => {
            for k in 0..nz {
                let start = nx * (index + ny * k);
                voxels[start..start + nx].copy_from_slice(&image.data[k * nx..(k + 1) * nx]);
            }
        }
        Axis::I => {
            for k in 0..nz {
                for j in 0..ny {
                    voxels[index + nx * (j + ny * k)] = image.data[j + ny * k];
                }
            }
        }
    }
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Solves `m · x = b` by Cramer's rule (3×3, well conditioned by construction).
fn solve3(m: &[[f64; 3]; 3], b: [f64; 3]) -> [f64; 3] {
    let det = det3(m);
    let mut x = [0.0; 3];
    for (c, xc) in x.iter_mut().enumerate() {
        let mut mc = *m;
        for r in 0..3 {
            mc[r][c] = b[r];
        }
        *xc = det3(&mc) / det;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        Geometry {
            dims: [10, 20, 30],
            spacing_mm: [0.5, 0.75, 2.0],
            origin_mm: [-100.0, 20.0, 5.5],
            direction: [[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn patient_from_voxel_follows_the_dicom_formula() {
        let g = oblique();
        let p = g.patient_from_voxel([2.0, 0.0, 0.0]);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((p[0] - (-100.0 + 2.0 * 0.5 * s)).abs() < 1e-12);
        assert!((p[1] - (20.0 + 2.0 * 0.5 * s)).abs() < 1e-12);
        let p = g.patient_from_voxel([0.0, 0.0, 3.0]);
        assert!((p[2] - 11.5).abs() < 1e-12);
    }

    #[test]
    fn voxel_from_patient_inverts_patient_from_voxel() {
        let g = oblique();
        let ijk = [3.25, 7.5, 12.0];
        let back = g.voxel_from_patient(g.patient_from_voxel(ijk));
        for a in 0..3 {
            assert!((back[a] - ijk[a]).abs() < 1e-9, "{back:?}");
        }
    }

    #[test]
    fn orientation_code_names_patient_directions() {
        let mut g = Geometry::axis_aligned([1, 1, 1], [1.0; 3]);
        assert_eq!(g.orientation_code(), "LPS");
        g.direction = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(g.orientation_code(), "RAS");
    }

    #[test]
    fn validate_rejects_zero_spacing_and_singular_direction() {
        let mut g = Geometry::axis_aligned([2, 2, 2], [1.0, 0.0, 1.0]);
        assert!(g.validate().is_err());
        g.spacing_mm = [1.0; 3];
        g.direction[2] = [1.0, 0.0, 0.0];
        assert!(g.validate().is_err());
    }

    #[test]
    fn write_slice_is_the_inverse_of_extract_slice() {
        let g = Geometry::axis_aligned([3, 4, 5], [1.0; 3]);
        let src: Vec<u16> = (0..60).collect();
        for axis in Axis::ALL {
            let mut dst = vec![0u16; 60];
            for n in 0..g.slice_count(axis) {
                let s = extract_slice(&g, &src, axis, n);
                write_slice(&g, &mut dst, axis, n, &s);
            }
            assert_eq!(dst, src, "{axis:?}");
        }
    }
}
