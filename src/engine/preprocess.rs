//! Slice preprocessing shared by inference and training: the region of interest (ROI)
//! policy, resampling to the model grid, and intensity normalisation.
//!
//! Training must call the same functions ([`model_input`], [`mask_input`],
//! [`support_region`]) so that it sees exactly what inference sees.
//!
//! # Region of interest
//!
//! Small structures in a 512² CT would shrink to a few pixels at 128² or 256², so the
//! slices are cropped around the support masks: the union bounding box of all support
//! masks, grown by a margin, made square *in millimetres* (so anisotropic sagittal or
//! coronal slices are not distorted), at least a minimum size, centred on the box and
//! shifted to stay inside the slice where it fits. The same region is used for every
//! support and query slice of a propagation. Probabilities are pasted back at the
//! native resolution. When every support mask is empty, or in full-slice mode, the
//! region is the whole slice, letterboxed to a square.
//!
//! # Intensities
//!
//! Normalised per slice on the model-input crop (after resampling):
//! - CT: clipped to the wide window [−1000, 1000] HU (air to dense bone; metal and
//!   anything brighter saturate), then z-scored.
//! - MR and unknown modalities: clipped to the 0.5th and 99.5th percentiles of the
//!   crop (arbitrary units, outliers from vessels or artefacts), then z-scored.
//!
//! The z-score makes the input zero-mean and unit-variance whatever the scanner; a
//! constant crop becomes all zeros. Pixels outside the slice are filled with the slice's
//! minimum (air in CT, background in MR) before normalisation.

use crate::volume::{
    Axis, Image2D, Modality, Region, Volume, resample_mask_nearest, resample_region_bilinear,
};

/// CT intensity window in Hounsfield units, applied before the z-score.
pub const CT_WINDOW_HU: (f32, f32) = (-1000.0, 1000.0);

/// Percentiles that bound MR (and unknown-modality) intensities before the z-score.
pub const MR_PERCENTILES: (f64, f64) = (0.5, 99.5);

/// How the region of interest is chosen from the support masks. Lengths are in
/// millimetres so the policy means the same thing at every resolution.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoiPolicy {
    /// Context added on each side of the masks' bounding box, as a fraction of the box's
    /// larger side.
    pub margin_fraction: f64,
    /// The least context on each side, in mm.
    pub min_margin_mm: f64,
    /// The least side of the square region, in mm.
    pub min_side_mm: f64,
    /// The least side of the region in native pixels (guards against extreme
    /// upsampling of coarse images).
    pub min_side_px: f64,
}

impl Default for RoiPolicy {
    fn default() -> Self {
        Self {
            margin_fraction: 0.3,
            min_margin_mm: 10.0,
            min_side_mm: 64.0,
            min_side_px: 32.0,
        }
    }
}

/// Whole slices or a region around the support masks.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RoiMode {
    /// Crop around the support masks' union bounding box.
    Auto(RoiPolicy),
    /// The whole slice, letterboxed to a square.
    FullSlice,
}

impl Default for RoiMode {
    fn default() -> Self {
        Self::Auto(RoiPolicy::default())
    }
}

/// Inclusive bounding box `(x_min, y_min, x_max, y_max)` of the nonzero pixels of all
/// masks, or `None` when all are empty.
pub fn masks_bounding_box<'a>(
    masks: impl IntoIterator<Item = &'a Image2D<u8>>,
) -> Option<(usize, usize, usize, usize)> {
    let mut bbox: Option<(usize, usize, usize, usize)> = None;
    for mask in masks {
        for y in 0..mask.height {
            let row = &mask.data[y * mask.width..(y + 1) * mask.width];
            let (Some(first), Some(last)) = (
                row.iter().position(|&v| v != 0),
                row.iter().rposition(|&v| v != 0),
            ) else {
                continue;
            };
            bbox = Some(match bbox {
                None => (first, y, last, y),
                Some((x0, y0, x1, y1)) => (x0.min(first), y0.min(y), x1.max(last), y1.max(y)),
            });
        }
    }
    bbox
}

/// The whole `width × height` slice as a square in millimetres (the shorter side is
/// padded symmetrically).
pub fn full_slice_region(width: usize, height: usize, spacing_mm: (f64, f64)) -> Region {
    let (sx, sy) = positive_spacing(spacing_mm);
    let side_mm = (width as f64 * sx).max(height as f64 * sy);
    centred_square(
        (width as f64 - 1.0) / 2.0,
        (height as f64 - 1.0) / 2.0,
        side_mm,
        (sx, sy),
    )
}

fn positive_spacing((sx, sy): (f64, f64)) -> (f64, f64) {
    let fix = |s: f64| if s.is_finite() && s > 0.0 { s } else { 1.0 };
    (fix(sx), fix(sy))
}

/// A square of `side_mm` centred on pixel coordinate `(cx, cy)`.
fn centred_square(cx: f64, cy: f64, side_mm: f64, (sx, sy): (f64, f64)) -> Region {
    let width = side_mm / sx;
    let height = side_mm / sy;
    Region {
        x0: cx - width / 2.0 + 0.0,
        y0: cy - height / 2.0 + 0.0,
        width,
        height,
    }
}

/// Moves `start` so that `[start, start + len)` lies inside `[-0.5, n − 0.5)` when it
/// fits; otherwise centres it on the slice.
fn keep_inside(start: f64, len: f64, n: usize) -> f64 {
    let lo = -0.5;
    let hi = n as f64 - 0.5;
    if len <= hi - lo {
        start.clamp(lo, hi - len)
    } else {
        lo - (len - (hi - lo)) / 2.0
    }
}

/// The region of interest for a support set on slices of `width × height` pixels with
/// pixel spacing `spacing_mm = (x, y)` (see the module documentation).
pub fn support_region<'a>(
    masks: impl IntoIterator<Item = &'a Image2D<u8>>,
    width: usize,
    height: usize,
    spacing_mm: (f64, f64),
    mode: RoiMode,
) -> Region {
    let policy = match mode {
        RoiMode::FullSlice => return full_slice_region(width, height, spacing_mm),
        RoiMode::Auto(policy) => policy,
    };
    let Some((x_min, y_min, x_max, y_max)) = masks_bounding_box(masks) else {
        return full_slice_region(width, height, spacing_mm);
    };
    let (sx, sy) = positive_spacing(spacing_mm);
    let box_mm = ((x_max - x_min + 1) as f64 * sx).max((y_max - y_min + 1) as f64 * sy);
    let margin_mm = (box_mm * policy.margin_fraction).max(policy.min_margin_mm);
    let full_side_mm = (width as f64 * sx).max(height as f64 * sy);
    let side_mm = (box_mm + 2.0 * margin_mm)
        .max(policy.min_side_mm)
        .max(policy.min_side_px * sx.min(sy))
        .min(full_side_mm);
    let cx = (x_min + x_max) as f64 / 2.0;
    let cy = (y_min + y_max) as f64 / 2.0;
    let mut region = centred_square(cx, cy, side_mm, (sx, sy));
    region.x0 = keep_inside(region.x0, region.width, width);
    region.y0 = keep_inside(region.y0, region.height, height);
    region
}

/// The `p`-th percentile (0–100) of finite values (nearest rank); `None` when there is
/// none.
fn percentile(values: &mut [f32], p: f64) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    let (_, v, _) = values.select_nth_unstable_by(rank, f32::total_cmp);
    Some(*v)
}

/// Normalises model-input intensities in place (see the module documentation).
pub fn normalise_intensities(pixels: &mut [f32], modality: Modality) {
    let finite: Vec<f32> = pixels.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = match modality {
        Modality::Ct => CT_WINDOW_HU,
        Modality::Mr | Modality::Other => {
            let mut sorted = finite.clone();
            match (
                percentile(&mut sorted, MR_PERCENTILES.0),
                percentile(&mut sorted, MR_PERCENTILES.1),
            ) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => (0.0, 0.0),
            }
        }
    };
    for v in pixels.iter_mut() {
        *v = if v.is_finite() { v.clamp(lo, hi) } else { lo };
    }
    let n = pixels.len().max(1) as f64;
    let mean = pixels.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = pixels
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    for v in pixels.iter_mut() {
        *v = if std > 1e-6 {
            ((*v as f64 - mean) / std) as f32
        } else {
            0.0
        };
    }
}

/// The lowest finite value of an image (0 when there is none).
fn min_finite(image: &Image2D<f32>) -> f32 {
    let m = image
        .data
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::INFINITY, f32::min);
    if m.is_finite() { m } else { 0.0 }
}

/// The model input for slice `index` across `axis` of `volume`: `region` resampled
/// bilinearly to `size × size` and normalised (see the module documentation).
///
/// # Panics
/// If `index` is out of range.
pub fn model_input(
    volume: &Volume,
    axis: Axis,
    index: usize,
    region: &Region,
    size: usize,
) -> Image2D<f32> {
    image_input(&volume.slice(axis, index), volume.modality, region, size)
}

/// [`model_input`] for a slice already extracted.
pub fn image_input(
    slice: &Image2D<f32>,
    modality: Modality,
    region: &Region,
    size: usize,
) -> Image2D<f32> {
    let fill = min_finite(slice);
    let mut image = resample_region_bilinear(slice, region, size, size, Some(fill));
    normalise_intensities(&mut image.data, modality);
    image
}

/// A support mask on the model grid (nearest neighbour), as 0.0/1.0.
pub fn mask_input(mask: &Image2D<u8>, region: &Region, size: usize) -> Image2D<f32> {
    resample_mask_nearest(mask, region, size, size).map(|v| f32::from(u8::from(v != 0)))
}

/// The native-pixel position `(x, y)` of a slice in model-grid pixel units (edges at
/// integers: model pixel `u` spans `[u, u + 1)`), or `None` when it lies outside
/// `region`.
pub fn native_to_model(region: &Region, size: usize, x: f64, y: f64) -> Option<(f64, f64)> {
    let u = (x - region.x0) * size as f64 / region.width;
    let v = (y - region.y0) * size as f64 / region.height;
    let inside = (0.0..size as f64).contains(&u) && (0.0..size as f64).contains(&v);
    inside.then_some((u, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, paste_region_bilinear};

    fn mask_with_box(
        w: usize,
        h: usize,
        x: std::ops::Range<usize>,
        y: std::ops::Range<usize>,
    ) -> Image2D<u8> {
        let mut m = Image2D::filled(w, h, 0u8);
        for yy in y {
            for xx in x.clone() {
                m.set(xx, yy, 1);
            }
        }
        m
    }

    #[test]
    fn bounding_box_is_the_union_over_masks() {
        let a = mask_with_box(20, 20, 2..5, 3..4);
        let b = mask_with_box(20, 20, 10..12, 15..18);
        let empty = Image2D::filled(20, 20, 0u8);
        assert_eq!(masks_bounding_box([&a, &b, &empty]), Some((2, 3, 11, 17)));
        assert_eq!(masks_bounding_box([&empty]), None);
    }

    #[test]
    fn region_is_square_in_millimetres_with_margin_and_centred_on_the_masks() {
        // 512² CT, 0.8 mm pixels, a 20-pixel structure around (300, 200).
        let m = mask_with_box(512, 512, 290..310, 190..210);
        let r = support_region([&m], 512, 512, (0.8, 0.8), RoiMode::default());
        assert!((r.width - r.height).abs() < 1e-9);
        // 16 mm box: margin max(0.3·16, 10) = 10 mm, side max(36, 64, 32·0.8) = 64 mm.
        assert!((r.width * 0.8 - 64.0).abs() < 1e-9, "{r:?}");
        let (cx, cy) = (r.x0 + r.width / 2.0, r.y0 + r.height / 2.0);
        assert!((cx - 299.5).abs() < 1e-9 && (cy - 199.5).abs() < 1e-9);
        // A big structure gets 30 % context on each side.
        let big = mask_with_box(512, 512, 100..300, 150..250);
        let r = support_region([&big], 512, 512, (0.8, 0.8), RoiMode::default());
        assert!((r.width - 200.0 * 1.6).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn anisotropic_pixels_give_a_region_that_is_square_in_mm_not_in_pixels() {
        // A coronal slice: 1 mm in x, 3 mm in y.
        let m = mask_with_box(200, 100, 80..120, 40..60);
        let r = support_region([&m], 200, 100, (1.0, 3.0), RoiMode::default());
        assert!((r.width * 1.0 - r.height * 3.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn region_is_shifted_inside_the_slice_when_it_fits() {
        let m = mask_with_box(512, 512, 0..10, 500..512);
        let r = support_region([&m], 512, 512, (1.0, 1.0), RoiMode::default());
        assert!(r.x0 >= -0.5 && r.y0 + r.height <= 511.5 + 1e-9, "{r:?}");
    }

    #[test]
    fn empty_supports_and_full_slice_mode_use_the_whole_slice() {
        let empty = Image2D::filled(300, 200, 0u8);
        let r = support_region([&empty], 300, 200, (1.0, 1.0), RoiMode::default());
        assert_eq!(r, full_slice_region(300, 200, (1.0, 1.0)));
        // 300 × 200 letterboxed: 300 wide, 300 high, centred vertically.
        assert_eq!((r.x0, r.width, r.height), (-0.5, 300.0, 300.0));
        assert!((r.y0 - (-50.5)).abs() < 1e-9);
        let m = mask_with_box(300, 200, 10..20, 10..20);
        assert_eq!(
            support_region([&m], 300, 200, (1.0, 1.0), RoiMode::FullSlice),
            r
        );
    }

    #[test]
    fn ct_is_windowed_then_z_scored() {
        let mut px = vec![-3000.0, -1000.0, 0.0, 1000.0, 3000.0, f32::NAN];
        normalise_intensities(&mut px, Modality::Ct);
        // After clipping: [-1000, -1000, 0, 1000, 1000, -1000] → mean -1000/6.
        let mean: f32 = px.iter().sum::<f32>() / 6.0;
        let var: f32 = px.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 6.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4);
        assert_eq!(px[0], px[1], "values below the window saturate");
        assert_eq!(px[3], px[4], "values above the window saturate");
        assert_eq!(px[5], px[0], "NaN counts as the window's low end");
    }

    #[test]
    fn mr_outliers_are_clipped_at_percentiles() {
        let mut px: Vec<f32> = (0..1000).map(|v| v as f32).collect();
        px[999] = 1e9; // one hot pixel
        normalise_intensities(&mut px, Modality::Mr);
        // The outlier is clipped to the 99.5th percentile, so it equals its neighbours.
        assert_eq!(px[999], px[995]);
        assert!(px[999] < 2.0);
    }

    #[test]
    fn constant_slices_become_zeros() {
        let mut px = vec![42.0; 50];
        normalise_intensities(&mut px, Modality::Mr);
        assert!(px.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_small_structure_survives_the_round_trip_through_the_model_grid() {
        // 512² slice with a 7-pixel disc: at 128² over the full slice it would shrink to
        // under 2 pixels; through the ROI it grows on the model grid and comes back.
        let mut mask = Image2D::filled(512, 512, 0u8);
        for y in 0..512 {
            for x in 0..512 {
                let (dx, dy) = (x as f64 - 250.0, y as f64 - 260.0);
                if dx * dx + dy * dy <= 9.0 {
                    mask.set(x, y, 1);
                }
            }
        }
        let area = mask.data.iter().filter(|&&v| v == 1).count();
        let region = support_region([&mask], 512, 512, (0.7, 0.7), RoiMode::default());
        let on_grid = mask_input(&mask, &region, 128);
        let grid_area = on_grid.data.iter().filter(|&&v| v > 0.5).count();
        assert!(
            grid_area as f64 > 1.5 * area as f64,
            "{grid_area} vs {area}"
        );
        let full = full_slice_region(512, 512, (0.7, 0.7));
        let full_area = mask_input(&mask, &full, 128)
            .data
            .iter()
            .filter(|&&v| v > 0.5)
            .count();
        assert!(full_area * 10 < grid_area, "{full_area} vs {grid_area}");
        let back =
            paste_region_bilinear(&on_grid, &region, 512, 512, 0.0).map(|p| u8::from(p >= 0.5));
        let overlap = back
            .data
            .iter()
            .zip(&mask.data)
            .filter(|(a, b)| **a == 1 && **b == 1)
            .count();
        let union = back
            .data
            .iter()
            .zip(&mask.data)
            .filter(|(a, b)| **a == 1 || **b == 1)
            .count();
        assert!(overlap as f64 / union as f64 > 0.7, "IoU {overlap}/{union}");
    }

    #[test]
    fn model_input_is_the_normalised_crop_of_the_slice() {
        let g = Geometry::axis_aligned([8, 6, 3], [1.0, 1.0, 2.0]);
        let voxels: Vec<f32> = (0..g.voxel_count())
            .map(|n| (n % 48) as f32 * 10.0 - 200.0)
            .collect();
        let v = Volume::new(g, voxels, Modality::Ct).unwrap();
        let region = Region::full(8, 6);
        let input = model_input(&v, Axis::K, 1, &region, 32);
        assert_eq!((input.width, input.height), (32, 32));
        let mean: f32 = input.data.iter().sum::<f32>() / input.data.len() as f32;
        assert!(mean.abs() < 1e-4);
        // Bright pixels stay brighter: the bottom-right corner of the ramp is the maximum.
        assert!(input.get(31, 31) > input.get(0, 0));
    }

    #[test]
    fn native_pixels_map_into_the_model_grid() {
        let region = Region {
            x0: 99.5,
            y0: 49.5,
            width: 64.0,
            height: 64.0,
        };
        let (u, v) = native_to_model(&region, 128, 100.0, 50.0).unwrap();
        assert!((u - 1.0).abs() < 1e-9 && (v - 1.0).abs() < 1e-9);
        assert!(native_to_model(&region, 128, 99.0, 60.0).is_none());
        assert!(native_to_model(&region, 128, 164.0, 60.0).is_none());
    }
}
