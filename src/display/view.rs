//! Slice views: which voxels a view shows, in which orientation, and where on screen.
//!
//! A view shows the slice perpendicular to one voxel axis through the cursor. Its
//! *display grid* has `n_u × n_v` pixels; display pixel `(u, v)` shows voxel
//! `base + u·du + v·dv`, where `du`, `dv` are signed unit steps along the two in-plane
//! voxel axes. They are chosen so that the image appears in radiological convention:
//! axial and coronal views have the patient's right on the screen's left, axial views
//! have anterior up, coronal and sagittal views have superior up, and sagittal views
//! have anterior on the left. The GPU shader, the CPU fallback and the pictures of
//! `icseg explain` use the same mapping.

use crate::volume::{Axis, Geometry};

/// Anatomical name of a view, from the patient axis closest to its normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    /// Normal along head–foot.
    Axial,
    /// Normal along front–back.
    Coronal,
    /// Normal along left–right.
    Sagittal,
}

impl Plane {
    /// "Axial", "Coronal", "Sagittal".
    pub fn name(self) -> &'static str {
        match self {
            Self::Axial => "Axial",
            Self::Coronal => "Coronal",
            Self::Sagittal => "Sagittal",
        }
    }
}

/// The plane a slice perpendicular to `axis` shows.
pub fn plane_of(geometry: &Geometry, axis: Axis) -> Plane {
    // The LPS component the axis' direction is most aligned with.
    let d = geometry.direction[axis.index()];
    let lps = (0..3)
        .max_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()))
        .unwrap_or(2);
    match lps {
        0 => Plane::Sagittal,
        1 => Plane::Coronal,
        _ => Plane::Axial,
    }
}

/// The voxel axes shown across slices, sorted axial, coronal, sagittal where possible.
pub fn axes_in_display_order(geometry: &Geometry) -> [Axis; 3] {
    let mut axes = Axis::ALL;
    axes.sort_by_key(|&a| match plane_of(geometry, a) {
        Plane::Axial => 0,
        Plane::Coronal => 1,
        Plane::Sagittal => 2,
    });
    axes
}

/// How display pixels map to voxels for one view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewMapping {
    /// The axis the view is perpendicular to.
    pub axis: Axis,
    /// Slice index along `axis`.
    pub slice: usize,
    /// Voxel axis along the display's horizontal direction.
    pub u_axis: usize,
    /// Whether the voxel index decreases as `u` grows.
    pub u_flip: bool,
    /// Voxel axis along the display's vertical direction (down).
    pub v_axis: usize,
    /// Whether the voxel index decreases as `v` grows.
    pub v_flip: bool,
    /// Display size in pixels.
    pub n_u: usize,
    /// Display size in pixels.
    pub n_v: usize,
    /// Pixel size in mm along `u` and `v`.
    pub spacing_mm: [f32; 2],
}

impl ViewMapping {
    /// The radiological mapping of slice `slice` perpendicular to `axis`.
    pub fn new(geometry: &Geometry, axis: Axis, slice: usize) -> Self {
        let (a, b) = axis.in_plane();
        let plane = plane_of(geometry, axis);
        // Patient (LPS) axis each display direction should follow, and its sign:
        // (horizontal lps, sign to the right), (vertical lps, sign downwards).
        let ((h_lps, h_sign), (v_lps, v_sign)) = match plane {
            Plane::Axial => ((0, 1.0), (1, 1.0)),     // right → L, down → P
            Plane::Coronal => ((0, 1.0), (2, -1.0)),  // right → L, down → I
            Plane::Sagittal => ((1, 1.0), (2, -1.0)), // right → P, down → I
        };
        let d = &geometry.direction;
        // Which in-plane voxel axis goes horizontal: the one better aligned with h_lps.
        let score = |ax: usize, lps: usize| d[ax][lps].abs();
        let keep = score(a, h_lps) + score(b, v_lps) >= score(b, h_lps) + score(a, v_lps);
        let (u_axis, v_axis) = if keep { (a, b) } else { (b, a) };
        let u_flip = d[u_axis][h_lps] * h_sign < 0.0;
        let v_flip = d[v_axis][v_lps] * v_sign < 0.0;
        Self {
            axis,
            slice,
            u_axis,
            u_flip,
            v_axis,
            v_flip,
            n_u: geometry.dims[u_axis],
            n_v: geometry.dims[v_axis],
            spacing_mm: [
                geometry.spacing_mm[u_axis] as f32,
                geometry.spacing_mm[v_axis] as f32,
            ],
        }
    }

    /// Physical size of the displayed slice in mm.
    pub fn size_mm(&self) -> [f32; 2] {
        [
            self.n_u as f32 * self.spacing_mm[0],
            self.n_v as f32 * self.spacing_mm[1],
        ]
    }

    /// Continuous voxel coordinate (pixel centres at integers) of display position
    /// `(u, v)` (display pixel `(0, 0)` covers `[0, 1) × [0, 1)`).
    pub fn voxel_at(&self, u: f32, v: f32) -> [f32; 3] {
        let mut p = [0.0; 3];
        p[self.axis.index()] = self.slice as f32;
        p[self.u_axis] = if self.u_flip {
            self.n_u as f32 - u - 0.5
        } else {
            u - 0.5
        };
        p[self.v_axis] = if self.v_flip {
            self.n_v as f32 - v - 0.5
        } else {
            v - 0.5
        };
        p
    }

    /// The voxel under display position `(u, v)`, `None` outside the slice.
    pub fn voxel_index_at(&self, u: f32, v: f32) -> Option<[usize; 3]> {
        if !(u >= 0.0 && v >= 0.0 && u < self.n_u as f32 && v < self.n_v as f32) {
            return None;
        }
        let c = self.voxel_at(u, v);
        Some(c.map(|x| x.round().max(0.0) as usize))
    }

    /// Display position (pixel centre) of a voxel's in-plane coordinates.
    pub fn display_of(&self, ijk: [f32; 3]) -> [f32; 2] {
        let u = if self.u_flip {
            self.n_u as f32 - 0.5 - ijk[self.u_axis]
        } else {
            ijk[self.u_axis] + 0.5
        };
        let v = if self.v_flip {
            self.n_v as f32 - 0.5 - ijk[self.v_axis]
        } else {
            ijk[self.v_axis] + 0.5
        };
        [u, v]
    }

    /// The voxel index of integer display pixel `(u, v)` (must be inside).
    #[inline]
    pub fn voxel_of_pixel(&self, u: usize, v: usize) -> [usize; 3] {
        let mut p = [0; 3];
        p[self.axis.index()] = self.slice;
        p[self.u_axis] = if self.u_flip { self.n_u - 1 - u } else { u };
        p[self.v_axis] = if self.v_flip { self.n_v - 1 - v } else { v };
        p
    }
}

/// Zoom and pan of one view. Zoom 1 fits the slice into the view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    /// Magnification relative to fitting the view.
    pub zoom: f32,
    /// Offset of the image centre from the view centre, in points.
    pub pan: [f32; 2],
}

impl Default for Camera {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: [0.0, 0.0],
        }
    }
}

/// Zoom limits.
pub const MIN_ZOOM: f32 = 0.25;
/// Zoom limits.
pub const MAX_ZOOM: f32 = 40.0;

impl Camera {
    /// Where the image lies in a view rectangle `[x0, y0, x1, y1]` (points): aspect
    /// from the pixel spacing, fitted, then zoomed and panned. Returns `[x0, y0, x1, y1]`.
    pub fn image_rect(&self, view: [f32; 4], mapping: &ViewMapping) -> [f32; 4] {
        let [w_mm, h_mm] = mapping.size_mm();
        let (vw, vh) = (view[2] - view[0], view[3] - view[1]);
        let fit = (vw / w_mm.max(1e-6)).min(vh / h_mm.max(1e-6));
        let scale = fit * self.zoom;
        let (w, h) = (w_mm * scale, h_mm * scale);
        let cx = (view[0] + view[2]) / 2.0 + self.pan[0];
        let cy = (view[1] + view[3]) / 2.0 + self.pan[1];
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    /// Zooms by `factor` keeping the screen point `anchor` fixed over the image.
    pub fn zoom_about(&mut self, factor: f32, anchor: [f32; 2], view: [f32; 4]) {
        let new_zoom = (self.zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
        let f = new_zoom / self.zoom;
        let cx = (view[0] + view[2]) / 2.0;
        let cy = (view[1] + view[3]) / 2.0;
        // The image centre moves away from the anchor by the zoom ratio.
        let (ix, iy) = (cx + self.pan[0], cy + self.pan[1]);
        let (nx, ny) = (
            anchor[0] + (ix - anchor[0]) * f,
            anchor[1] + (iy - anchor[1]) * f,
        );
        self.pan = [nx - cx, ny - cy];
        self.zoom = new_zoom;
    }
}

/// Screen point → display pixel coordinates for an image drawn at `image_rect`.
pub fn screen_to_display(p: [f32; 2], image_rect: [f32; 4], mapping: &ViewMapping) -> [f32; 2] {
    let u = (p[0] - image_rect[0]) / (image_rect[2] - image_rect[0]) * mapping.n_u as f32;
    let v = (p[1] - image_rect[1]) / (image_rect[3] - image_rect[1]) * mapping.n_v as f32;
    [u, v]
}

/// Display pixel coordinates → screen point.
pub fn display_to_screen(d: [f32; 2], image_rect: [f32; 4], mapping: &ViewMapping) -> [f32; 2] {
    [
        image_rect[0] + d[0] / mapping.n_u as f32 * (image_rect[2] - image_rect[0]),
        image_rect[1] + d[1] / mapping.n_v as f32 * (image_rect[3] - image_rect[1]),
    ]
}

/// The display box `[u0, v0, u1, v1]` (display pixel edges, clamped to the image) of a
/// box of slice pixels `[x0, y0, x1, y1]` given by its edges (`x`, `y` along the slice's
/// in-plane axes, pixel centres at integers: the whole slice is `[-0.5, -0.5, w - 0.5,
/// h - 0.5]`, as a [`crate::volume::Region`]).
pub fn display_box(mapping: &ViewMapping, slice_box: [f32; 4]) -> [f32; 4] {
    let (a, b) = mapping.axis.in_plane();
    let corner = |x: f32, y: f32| {
        let mut ijk = [0.0f32; 3];
        ijk[a] = x;
        ijk[b] = y;
        mapping.display_of(ijk)
    };
    let p = corner(slice_box[0], slice_box[1]);
    let q = corner(slice_box[2], slice_box[3]);
    let (nu, nv) = (mapping.n_u as f32, mapping.n_v as f32);
    [
        p[0].min(q[0]).clamp(0.0, nu),
        p[1].min(q[1]).clamp(0.0, nv),
        p[0].max(q[0]).clamp(0.0, nu),
        p[1].max(q[1]).clamp(0.0, nv),
    ]
}

/// Height over width (in mm) of display box `d`: the aspect a picture of it keeps.
pub fn box_aspect(d: [f32; 4], mapping: &ViewMapping) -> f32 {
    let w = (d[2] - d[0]).max(1e-6) * mapping.spacing_mm[0];
    let h = (d[3] - d[1]).max(1e-6) * mapping.spacing_mm[1];
    h / w
}

/// Where to draw the whole image so that display box `d` exactly fills the screen
/// rectangle `rect` (`[x0, y0, x1, y1]`): the image rectangle of a crop.
pub fn image_rect_showing(d: [f32; 4], rect: [f32; 4], mapping: &ViewMapping) -> [f32; 4] {
    let sx = (rect[2] - rect[0]) / (d[2] - d[0]).max(1e-6);
    let sy = (rect[3] - rect[1]) / (d[3] - d[1]).max(1e-6);
    [
        rect[0] - d[0] * sx,
        rect[1] - d[1] * sy,
        rect[0] + (mapping.n_u as f32 - d[0]) * sx,
        rect[1] + (mapping.n_v as f32 - d[1]) * sy,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NIfTI-style RAS volume (identity affine) seen in LPS: i → right, j → anterior.
    fn ras_geometry() -> Geometry {
        Geometry {
            dims: [10, 20, 30],
            spacing_mm: [1.0, 1.0, 2.0],
            origin_mm: [0.0; 3],
            direction: [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn planes_are_named_from_the_direction_cosines() {
        let g = ras_geometry();
        assert_eq!(plane_of(&g, Axis::K), Plane::Axial);
        assert_eq!(plane_of(&g, Axis::J), Plane::Coronal);
        assert_eq!(plane_of(&g, Axis::I), Plane::Sagittal);
        assert_eq!(axes_in_display_order(&g), [Axis::K, Axis::J, Axis::I]);
    }

    #[test]
    fn axial_views_put_the_patients_right_on_the_left_and_anterior_up() {
        let g = ras_geometry();
        let m = ViewMapping::new(&g, Axis::K, 4);
        // i points to the patient's right, which is on the screen's left: i grows leftwards.
        assert!(m.u_flip);
        assert_eq!(m.voxel_of_pixel(0, 0)[0], 9);
        // j points anterior; anterior is up, so j grows upwards.
        assert!(m.v_flip);
        assert_eq!(m.voxel_of_pixel(0, 0)[1], 19);
        assert_eq!(m.voxel_of_pixel(3, 5)[2], 4);
    }

    #[test]
    fn coronal_and_sagittal_views_have_superior_up() {
        let g = ras_geometry();
        let c = ViewMapping::new(&g, Axis::J, 0);
        assert_eq!((c.u_axis, c.v_axis), (0, 2));
        assert!(c.v_flip, "k points superior, which must be up");
        let s = ViewMapping::new(&g, Axis::I, 0);
        assert_eq!((s.u_axis, s.v_axis), (1, 2));
        // j points anterior; in sagittal views anterior is on the left.
        assert!(s.u_flip);
        assert_eq!(s.size_mm(), [20.0, 60.0]);
    }

    #[test]
    fn a_transposed_acquisition_is_shown_upright() {
        // Sagittal acquisition: i → posterior, j → inferior, k → left.
        let g = Geometry {
            dims: [8, 6, 4],
            spacing_mm: [1.0; 3],
            origin_mm: [0.0; 3],
            direction: [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]],
        };
        assert_eq!(plane_of(&g, Axis::K), Plane::Sagittal);
        let m = ViewMapping::new(&g, Axis::K, 0);
        assert_eq!(
            (m.u_axis, m.v_axis, m.u_flip, m.v_flip),
            (0, 1, false, false)
        );
        // The axial view of it is perpendicular to j and must be transposed: k horizontal.
        let a = ViewMapping::new(&g, Axis::J, 0);
        assert_eq!(plane_of(&g, Axis::J), Plane::Axial);
        assert_eq!((a.u_axis, a.v_axis), (2, 0));
    }

    #[test]
    fn display_and_voxel_coordinates_are_inverse() {
        let g = ras_geometry();
        let m = ViewMapping::new(&g, Axis::K, 7);
        for (u, v) in [(0.5f32, 0.5f32), (3.5, 12.5), (9.5, 19.5)] {
            let vox = m.voxel_at(u, v);
            assert_eq!(m.display_of(vox), [u, v]);
            let idx = m.voxel_index_at(u, v).unwrap();
            assert_eq!(idx, m.voxel_of_pixel(u as usize, v as usize));
        }
        assert_eq!(m.voxel_index_at(-0.1, 3.0), None);
        assert_eq!(m.voxel_index_at(10.0, 3.0), None);
    }

    #[test]
    fn the_image_keeps_its_physical_aspect_and_zooms_about_the_cursor() {
        let g = ras_geometry();
        let m = ViewMapping::new(&g, Axis::I, 0); // 20 mm × 60 mm
        let mut cam = Camera::default();
        let view = [0.0, 0.0, 300.0, 300.0];
        let r = cam.image_rect(view, &m);
        assert_eq!(r, [100.0, 0.0, 200.0, 300.0]);
        let anchor = [150.0, 75.0];
        let before = screen_to_display(anchor, r, &m);
        cam.zoom_about(2.0, anchor, view);
        let r2 = cam.image_rect(view, &m);
        let after = screen_to_display(anchor, r2, &m);
        assert!((before[0] - after[0]).abs() < 1e-4 && (before[1] - after[1]).abs() < 1e-4);
        assert_eq!(display_to_screen(after, r2, &m), anchor);
    }

    #[test]
    fn a_crop_box_fills_the_rectangle_it_is_drawn_in() {
        // A transposed, flipped sagittal-like mapping and a plain axial one.
        let g = Geometry::axis_aligned([40, 30, 20], [0.5, 1.0, 2.0]);
        for axis in [Axis::K, Axis::I, Axis::J] {
            let (w, h) = g.slice_dims(axis);
            let m = ViewMapping::new(&g, axis, 3);
            let whole = display_box(&m, [-0.5, -0.5, w as f32 - 0.5, h as f32 - 0.5]);
            assert_eq!(whole, [0.0, 0.0, m.n_u as f32, m.n_v as f32], "{axis:?}");
            let d = display_box(&m, [3.5, 4.5, 9.5, 14.5]);
            assert!(((d[2] - d[0]) * (d[3] - d[1]) - 60.0).abs() < 1e-3, "{d:?}");
            let rect = [100.0, 50.0, 300.0, 50.0 + 200.0 * box_aspect(d, &m)];
            let img = image_rect_showing(d, rect, &m);
            let tl = display_to_screen([d[0], d[1]], img, &m);
            let br = display_to_screen([d[2], d[3]], img, &m);
            for (got, want) in tl
                .iter()
                .chain(&br)
                .zip([rect[0], rect[1], rect[2], rect[3]])
            {
                assert!((got - want).abs() < 1e-3, "{axis:?}: {got} vs {want}");
            }
            // The mm aspect is kept: screen points per mm equal along both sides.
            let per_mm_u = (img[2] - img[0]) / m.size_mm()[0];
            let per_mm_v = (img[3] - img[1]) / m.size_mm()[1];
            assert!((per_mm_u - per_mm_v).abs() < 1e-3 * per_mm_u);
        }
    }
}
