//! Deformable registration of neighbouring slices (Thirion's demons with symmetric
//! forces), used to carry an annotated shape from slice to slice along the image
//! ([`super::interpolate::ShapePrior::guided`]).
//!
//! Neighbouring slices of one volume are aligned up to a small in-plane motion of the
//! anatomy (the spinal cord drifts, a gland widens, the mandible bends). Demons find a
//! smooth displacement field `u` with `moving(x + u(x)) ≈ fixed(x)`; a shape drawn on
//! the moving slice then lands on the fixed one as `shape(x + u(x))`. Chained through
//! the slices between an annotation and a target, the annotation follows the image
//! instead of being copied where it was.
//!
//! The update is Thirion's, with the symmetric gradient (fixed and warped moving image
//! averaged) and the normalisation `|∇|² + (m − f)²`, which makes it independent of
//! the intensity scale; the step is bounded, smoothed as a fluid (`fluid_sigma`), and
//! the whole field is smoothed as an elastic regulariser (`diffusion_sigma`).

use super::{Axis, Image2D, Modality, Volume};

/// Demons settings. [`Default`]: chosen on six OpenKBP validation patients with a
/// prototype (`docs/evaluation.md`, "Lever 3b").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demons {
    /// Update iterations.
    pub iterations: usize,
    /// Gaussian smoothing of each update (pixels): the fluid regulariser.
    pub fluid_sigma: f32,
    /// Gaussian smoothing of the whole field after each update (pixels).
    pub diffusion_sigma: f32,
    /// Largest displacement one update may add at a pixel (pixels).
    pub max_step: f32,
}

impl Default for Demons {
    fn default() -> Self {
        Self {
            iterations: 30,
            fluid_sigma: 1.0,
            diffusion_sigma: 1.5,
            max_step: 0.5,
        }
    }
}

/// Fixed-point steps of [`Displacement::inverse`].
pub const INVERSE_ITERATIONS: usize = 6;

/// A displacement field in pixels: the sample for pixel `(x, y)` is taken at
/// `(x + dx, y + dy)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Displacement {
    /// Displacement along x (columns).
    pub dx: Image2D<f32>,
    /// Displacement along y (rows).
    pub dy: Image2D<f32>,
}

impl Displacement {
    /// No displacement.
    pub fn zero(width: usize, height: usize) -> Self {
        Self {
            dx: Image2D::filled(width, height, 0.0),
            dy: Image2D::filled(width, height, 0.0),
        }
    }

    /// `image` resampled along the field (bilinear, edges replicated).
    ///
    /// # Panics
    /// If `image` and the field differ in size (a programming error).
    pub fn warp(&self, image: &Image2D<f32>) -> Image2D<f32> {
        let (w, h) = (image.width, image.height);
        assert_eq!((w, h), (self.dx.width, self.dx.height), "field size");
        let mut out = Image2D::filled(w, h, 0.0);
        for y in 0..h {
            for x in 0..w {
                let i = x + w * y;
                let sx = (x as f32 + self.dx.data[i]).clamp(0.0, (w - 1) as f32);
                let sy = (y as f32 + self.dy.data[i]).clamp(0.0, (h - 1) as f32);
                out.data[i] = bilinear(image, sx, sy);
            }
        }
        out
    }

    /// The field that undoes this one: `v` with `v(y) = −u(y + v(y))`, so that a
    /// warp along `v` after a warp along `u` gives back the image where the field is
    /// smooth. Found by fixed-point iteration from `−u` ([`INVERSE_ITERATIONS`] steps,
    /// each a warp of the two components; enough for fields that move less than a
    /// pixel per pixel, as the demons' smoothed fields do).
    pub fn inverse(&self) -> Displacement {
        let negated = |image: &Image2D<f32>| image.map(|v| -v);
        let mut inverse = Displacement {
            dx: negated(&self.dx),
            dy: negated(&self.dy),
        };
        for _ in 0..INVERSE_ITERATIONS {
            inverse = Displacement {
                dx: negated(&inverse.warp(&self.dx)),
                dy: negated(&inverse.warp(&self.dy)),
            };
        }
        inverse
    }

    /// The largest displacement magnitude (pixels).
    pub fn max_magnitude(&self) -> f32 {
        self.dx
            .data
            .iter()
            .zip(&self.dy.data)
            .map(|(a, b)| a.hypot(*b))
            .fold(0.0, f32::max)
    }
}

impl Displacement {
    /// The field on a grid `factor` times finer, `width`×`height` pixels: sampled
    /// bilinearly at the fine pixels' centres and scaled to fine pixels. Identity for
    /// `factor` 1 and a field of that size.
    pub fn upsample(&self, factor: usize, width: usize, height: usize) -> Displacement {
        if factor <= 1 && (width, height) == (self.dx.width, self.dx.height) {
            return self.clone();
        }
        let f = factor.max(1) as f32;
        let (cw, ch) = (self.dx.width, self.dx.height);
        let sample = |img: &Image2D<f32>| {
            let mut out = Image2D::filled(width, height, 0.0);
            for y in 0..height {
                let sy = ((y as f32 + 0.5) / f - 0.5).clamp(0.0, (ch - 1) as f32);
                for x in 0..width {
                    let sx = ((x as f32 + 0.5) / f - 0.5).clamp(0.0, (cw - 1) as f32);
                    out.set(x, y, f * bilinear(img, sx, sy));
                }
            }
            out
        };
        Displacement {
            dx: sample(&self.dx),
            dy: sample(&self.dy),
        }
    }
}

/// `image` reduced by `factor` in both directions (the mean of each `factor`×`factor`
/// block; partial blocks at the right and bottom edges average what they hold).
pub fn downsample(image: &Image2D<f32>, factor: usize) -> Image2D<f32> {
    if factor <= 1 {
        return image.clone();
    }
    let (w, h) = (image.width.div_ceil(factor), image.height.div_ceil(factor));
    let mut sum = vec![0.0f32; w * h];
    let mut count = vec![0u32; w * h];
    for y in 0..image.height {
        for x in 0..image.width {
            let i = x / factor + w * (y / factor);
            sum[i] += image.get(x, y);
            count[i] += 1;
        }
    }
    Image2D::new(
        w,
        h,
        sum.iter().zip(&count).map(|(s, &c)| s / c as f32).collect(),
    )
}

/// Finest in-plane pixel (mm) registration works at: the settings were measured on
/// 1 mm (brain MR) to 3.9 mm grids (OpenKBP CT); finer grids are reduced to it.
pub const REGISTRATION_PIXEL_MM: f64 = 1.0;
/// Largest side (pixels) of the region registration works on after the reduction.
/// 96 registers a 512 × 512 CT's large structure at half the cost of 128 with the same
/// Dice (`docs/evaluation.md`, "Speed"; 64 loses 0.004–0.008 on MR).
pub const REGISTRATION_MAX_SIDE: usize = 96;

/// The reduction factor for registering a `width`×`height` region of pixels
/// `pixel_mm` wide: [`REGISTRATION_PIXEL_MM`] and [`REGISTRATION_MAX_SIDE`].
pub fn registration_factor(pixel_mm: f64, width: usize, height: usize) -> usize {
    let by_mm = (REGISTRATION_PIXEL_MM / pixel_mm.max(1e-6))
        .floor()
        .max(1.0) as usize;
    let by_side = width.max(height).div_ceil(REGISTRATION_MAX_SIDE).max(1);
    by_mm.max(by_side)
}

/// Bilinear sample at a position inside the image.
fn bilinear(image: &Image2D<f32>, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = (
        (x0 + 1).min(image.width - 1),
        (y0 + 1).min(image.height - 1),
    );
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let top = image.get(x0, y0) * (1.0 - fx) + image.get(x1, y0) * fx;
    let bottom = image.get(x0, y1) * (1.0 - fx) + image.get(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Central-difference gradient (one-sided at the border), as (d/dx, d/dy).
fn gradient(image: &Image2D<f32>) -> (Image2D<f32>, Image2D<f32>) {
    let (w, h) = (image.width, image.height);
    let mut gx = Image2D::filled(w, h, 0.0);
    let mut gy = Image2D::filled(w, h, 0.0);
    let diff = |a: f32, b: f32, span: usize| {
        if span == 0 {
            0.0
        } else {
            (b - a) / span as f32
        }
    };
    for y in 0..h {
        for x in 0..w {
            let (xl, xr) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let (yu, yd) = (y.saturating_sub(1), (y + 1).min(h - 1));
            gx.set(x, y, diff(image.get(xl, y), image.get(xr, y), xr - xl));
            gy.set(x, y, diff(image.get(x, yu), image.get(x, yd), yd - yu));
        }
    }
    (gx, gy)
}

impl Demons {
    /// The field that carries `moving` onto `fixed`: `moving(x + u(x)) ≈ fixed(x)`.
    ///
    /// # Panics
    /// If the two images differ in size (a programming error).
    pub fn register(&self, fixed: &Image2D<f32>, moving: &Image2D<f32>) -> Displacement {
        let (w, h) = (fixed.width, fixed.height);
        assert_eq!((w, h), (moving.width, moving.height), "image sizes");
        let (fgx, fgy) = gradient(fixed);
        let mut field = Displacement::zero(w, h);
        for _ in 0..self.iterations {
            let warped = field.warp(moving);
            let (mgx, mgy) = gradient(&warped);
            let mut ux = Image2D::filled(w, h, 0.0);
            let mut uy = Image2D::filled(w, h, 0.0);
            for i in 0..w * h {
                let diff = warped.data[i] - fixed.data[i];
                let gx = 0.5 * (fgx.data[i] + mgx.data[i]);
                let gy = 0.5 * (fgy.data[i] + mgy.data[i]);
                let denom = gx * gx + gy * gy + diff * diff;
                if denom < 1e-9 {
                    continue;
                }
                let (mut sx, mut sy) = (-diff * gx / denom, -diff * gy / denom);
                let norm = sx.hypot(sy);
                if norm > self.max_step {
                    sx *= self.max_step / norm;
                    sy *= self.max_step / norm;
                }
                ux.data[i] = sx;
                uy.data[i] = sy;
            }
            let (ux, uy) = (
                ux.gaussian_blur(self.fluid_sigma),
                uy.gaussian_blur(self.fluid_sigma),
            );
            for i in 0..w * h {
                field.dx.data[i] += ux.data[i];
                field.dy.data[i] += uy.data[i];
            }
            field.dx = field.dx.gaussian_blur(self.diffusion_sigma);
            field.dy = field.dy.gaussian_blur(self.diffusion_sigma);
        }
        field
    }
}

/// CT window for registration (HU): soft tissue, where the structures' edges are.
pub const CT_REGISTRATION_WINDOW_HU: (f32, f32) = (-200.0, 300.0);
/// Percentiles of an MR (or unknown) volume that span its registration window.
pub const MR_REGISTRATION_PERCENTILES: (f64, f64) = (1.0, 99.0);

/// The intensity window `(low, high)` registration maps to [0, 1] for `volume`: a
/// soft-tissue window for CT, the 1st to 99th percentile otherwise (sampled).
pub fn registration_window(volume: &Volume) -> (f32, f32) {
    if volume.modality == Modality::Ct {
        return CT_REGISTRATION_WINDOW_HU;
    }
    let sample = super::sorted_finite_sample(volume.voxels(), 200_000);
    if sample.is_empty() {
        return (0.0, 1.0);
    }
    let at = |p: f64| super::nearest_rank(&sample, p / 100.0);
    let (lo, hi) = (
        at(MR_REGISTRATION_PERCENTILES.0),
        at(MR_REGISTRATION_PERCENTILES.1),
    );
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

/// Slice `index` of `volume` along `axis` mapped through `window` to [0, 1] (NaN to 0).
pub fn registration_slice(
    volume: &Volume,
    axis: Axis,
    index: usize,
    window: (f32, f32),
) -> Image2D<f32> {
    let span = (window.1 - window.0).max(1e-6);
    volume.slice(axis, index).map(|v| {
        if v.is_finite() {
            ((v - window.0) / span).clamp(0.0, 1.0)
        } else {
            0.0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth blob (Gaussian bump) centred at `(cx, cy)` on a 40×40 image.
    fn blob(cx: f32, cy: f32) -> Image2D<f32> {
        let mut img = Image2D::filled(40, 40, 0.0);
        for y in 0..40 {
            for x in 0..40 {
                let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                img.set(x, y, (-d2 / (2.0 * 16.0)).exp());
            }
        }
        img
    }

    #[test]
    fn demons_recover_a_small_shift_and_carry_a_shape_with_it() {
        let fixed = blob(21.5, 20.0);
        let moving = blob(20.0, 20.0);
        let field = Demons {
            iterations: 60,
            ..Demons::default()
        }
        .register(&fixed, &moving);
        // Near the blob's centre the field points 1.5 px back along x, not along y.
        let i = 21 + 40 * 20;
        assert!(
            (field.dx.data[i] + 1.5).abs() < 0.4,
            "dx = {}",
            field.dx.data[i]
        );
        assert!(field.dy.data[i].abs() < 0.2, "dy = {}", field.dy.data[i]);
        // The warped moving image is closer to the fixed one than before.
        let err = |a: &Image2D<f32>| -> f32 {
            a.data
                .iter()
                .zip(&fixed.data)
                .map(|(p, q)| (p - q).powi(2))
                .sum()
        };
        assert!(err(&field.warp(&moving)) < 0.2 * err(&moving));
    }

    #[test]
    fn identical_images_give_no_displacement() {
        let img = blob(18.0, 22.0);
        let field = Demons::default().register(&img, &img);
        assert!(field.max_magnitude() < 1e-6);
        assert_eq!(Displacement::zero(40, 40).warp(&img), img);
    }

    #[test]
    fn fine_grids_are_registered_reduced_and_the_field_scaled_back() {
        assert_eq!(registration_factor(3.9, 60, 60), 1);
        assert_eq!(registration_factor(0.8, 60, 60), 1);
        assert_eq!(registration_factor(0.45, 60, 60), 2);
        assert_eq!(registration_factor(3.9, 250, 100), 3, "bounded side");
        let img = Image2D::new(3, 2, vec![1.0, 3.0, 5.0, 3.0, 5.0, 7.0]);
        assert_eq!(downsample(&img, 2).data, vec![3.0, 6.0]);
        // A coarse shift of 1 px is 2 fine pixels.
        let mut coarse = Displacement::zero(4, 4);
        coarse.dx.data.fill(1.0);
        let fine = coarse.upsample(2, 8, 7);
        assert_eq!((fine.dx.width, fine.dx.height), (8, 7));
        assert!(fine.dx.data.iter().all(|&v| (v - 2.0).abs() < 1e-6));
        assert!(fine.dy.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_inverse_field_undoes_a_smooth_deformation() {
        // A swirl that moves the middle of the image by up to 2 px and the border not
        // at all, like the demons' smoothed fields between neighbouring slices.
        let mut field = Displacement::zero(40, 40);
        for y in 0..40 {
            for x in 0..40 {
                let bump = (std::f32::consts::PI * x as f32 / 39.0).sin()
                    * (std::f32::consts::PI * y as f32 / 39.0).sin();
                field.dx.set(x, y, 2.0 * bump);
                field.dy.set(x, y, -bump);
            }
        }
        // How far `v` is from undoing `u`: the largest |v(y) + u(y + v(y))| (pixels).
        let residual = |v: &Displacement| {
            let (ux, uy) = (v.warp(&field.dx), v.warp(&field.dy));
            (0..ux.data.len())
                .map(|i| (v.dx.data[i] + ux.data[i]).hypot(v.dy.data[i] + uy.data[i]))
                .fold(0.0f32, f32::max)
        };
        let negated = Displacement {
            dx: field.dx.map(|v| -v),
            dy: field.dy.map(|v| -v),
        };
        let (inverse, naive) = (residual(&field.inverse()), residual(&negated));
        assert!(inverse < 0.01, "inverse: {inverse} px");
        assert!(naive > 0.1, "the negated field is no inverse: {naive} px");
        // An image warped there and back comes back up to the resampling's blur.
        let img = blob(17.0, 22.0);
        let back = field.inverse().warp(&field.warp(&img));
        let error = back
            .data
            .iter()
            .zip(&img.data)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(error < 0.03, "there and back: {error}");
    }

    #[test]
    fn a_constant_field_shifts_the_image() {
        let img = blob(20.0, 20.0);
        let mut field = Displacement::zero(40, 40);
        field.dx.data.fill(2.0);
        let shifted = field.warp(&img);
        assert!((shifted.get(18, 20) - img.get(20, 20)).abs() < 1e-6);
    }
}
