//! Resampling a rectangular region of a slice to a model resolution and back.
//!
//! Coordinates are continuous pixel coordinates with pixel centres at integers
//! (pixel `(x, y)` covers `[x − 0.5, x + 0.5)`). A [`Region`] may extend past the image;
//! what lies outside is filled as each function documents.

use super::Image2D;

/// An axis-aligned rectangle of a slice in pixel units: its top-left *edge* is at
/// `(x0, y0)`, so the region `{x0: -0.5, y0: -0.5, width: w, height: h}` is exactly a
/// `w × h` image.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    /// Left edge.
    pub x0: f64,
    /// Top edge.
    pub y0: f64,
    /// Width in pixels.
    pub width: f64,
    /// Height in pixels.
    pub height: f64,
}

impl Region {
    /// The region covering a whole `width × height` image.
    pub fn full(width: usize, height: usize) -> Self {
        Self {
            x0: -0.5,
            y0: -0.5,
            width: width as f64,
            height: height as f64,
        }
    }

    /// Source coordinate of the centre of output pixel `(u, v)` of an `out_w × out_h` grid.
    #[inline]
    fn source_of(&self, u: usize, v: usize, out_w: usize, out_h: usize) -> (f64, f64) {
        (
            self.x0 + (u as f64 + 0.5) * self.width / out_w as f64,
            self.y0 + (v as f64 + 0.5) * self.height / out_h as f64,
        )
    }

    /// Output-grid coordinate of native pixel `(x, y)` for an `out_w × out_h` grid.
    #[inline]
    fn target_of(&self, x: usize, y: usize, out_w: usize, out_h: usize) -> (f64, f64) {
        (
            (x as f64 - self.x0) * out_w as f64 / self.width - 0.5,
            (y as f64 - self.y0) * out_h as f64 / self.height - 0.5,
        )
    }
}

/// Bilinear sample at continuous `(x, y)`; coordinates are clamped to the image
/// (edge replication).
#[inline]
fn bilinear(img: &Image2D<f32>, x: f64, y: f64) -> f32 {
    let xm = (img.width - 1) as f64;
    let ym = (img.height - 1) as f64;
    let x = x.clamp(0.0, xm);
    let y = y.clamp(0.0, ym);
    let x0 = x.floor() as usize;
    let y0 = y.floor() as usize;
    let x1 = (x0 + 1).min(img.width - 1);
    let y1 = (y0 + 1).min(img.height - 1);
    let fx = (x - x0 as f64) as f32;
    let fy = (y - y0 as f64) as f32;
    let top = img.get(x0, y0) * (1.0 - fx) + img.get(x1, y0) * fx;
    let bottom = img.get(x0, y1) * (1.0 - fx) + img.get(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

fn inside(img_w: usize, img_h: usize, x: f64, y: f64) -> bool {
    x >= -0.5 && y >= -0.5 && x < img_w as f64 - 0.5 && y < img_h as f64 - 0.5
}

/// Samples `region` of `src` onto an `out_w × out_h` grid with bilinear interpolation
/// (for intensities). Output pixels whose centre falls outside `src` get `fill`, or
/// the nearest edge value when `fill` is `None`.
pub fn resample_region_bilinear(
    src: &Image2D<f32>,
    region: &Region,
    out_w: usize,
    out_h: usize,
    fill: Option<f32>,
) -> Image2D<f32> {
    let mut out = Vec::with_capacity(out_w * out_h);
    for v in 0..out_h {
        for u in 0..out_w {
            let (x, y) = region.source_of(u, v, out_w, out_h);
            let value = match fill {
                Some(f) if !inside(src.width, src.height, x, y) => f,
                _ => bilinear(src, x, y),
            };
            out.push(value);
        }
    }
    Image2D::new(out_w, out_h, out)
}

/// Samples `region` of a mask onto an `out_w × out_h` grid with nearest-neighbour
/// interpolation; outside the mask is 0.
pub fn resample_mask_nearest(
    src: &Image2D<u8>,
    region: &Region,
    out_w: usize,
    out_h: usize,
) -> Image2D<u8> {
    let mut out = Vec::with_capacity(out_w * out_h);
    for v in 0..out_h {
        for u in 0..out_w {
            let (x, y) = region.source_of(u, v, out_w, out_h);
            let value = if inside(src.width, src.height, x, y) {
                src.get((x + 0.5).floor() as usize, (y + 0.5).floor() as usize)
            } else {
                0
            };
            out.push(value);
        }
    }
    Image2D::new(out_w, out_h, out)
}

/// The inverse of [`resample_region_bilinear`] for probabilities: pastes a model-grid
/// image that covers `region` back onto a `native_w × native_h` slice with bilinear
/// interpolation. Native pixels outside `region` get `outside`.
pub fn paste_region_bilinear(
    model: &Image2D<f32>,
    region: &Region,
    native_w: usize,
    native_h: usize,
    outside: f32,
) -> Image2D<f32> {
    let mut out = Vec::with_capacity(native_w * native_h);
    for y in 0..native_h {
        for x in 0..native_w {
            let inside_region = (x as f64) >= region.x0
                && (y as f64) >= region.y0
                && (x as f64) < region.x0 + region.width
                && (y as f64) < region.y0 + region.height;
            out.push(if inside_region {
                let (u, v) = region.target_of(x, y, model.width, model.height);
                bilinear(model, u, v)
            } else {
                outside
            });
        }
    }
    Image2D::new(native_w, native_h, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smooth(w: usize, h: usize) -> Image2D<f32> {
        let data = (0..w * h)
            .map(|n| {
                let (x, y) = ((n % w) as f32, (n / w) as f32);
                (x * 0.2).sin() * 50.0 + y * 1.5
            })
            .collect();
        Image2D::new(w, h, data)
    }

    #[test]
    fn full_region_at_native_size_is_identity() {
        let img = smooth(17, 11);
        let out = resample_region_bilinear(&img, &Region::full(17, 11), 17, 11, None);
        for (a, b) in out.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn intensity_round_trip_through_a_finer_model_grid_is_close() {
        let img = smooth(40, 30);
        let region = Region {
            x0: 4.5,
            y0: 2.5,
            width: 24.0,
            height: 24.0,
        };
        let model = resample_region_bilinear(&img, &region, 64, 64, None);
        let back = paste_region_bilinear(&model, &region, 40, 30, f32::NAN);
        let mut compared = 0;
        for y in 4..26 {
            for x in 6..28 {
                let (a, b) = (back.get(x, y), img.get(x, y));
                assert!((a - b).abs() < 0.6, "({x},{y}) {a} vs {b}");
                compared += 1;
            }
        }
        assert!(compared > 400);
        assert!(
            back.get(0, 0).is_nan(),
            "outside the region keeps the outside value"
        );
    }

    #[test]
    fn mask_round_trip_through_an_integer_upsampling_is_exact() {
        let mut mask = Image2D::filled(32, 32, 0u8);
        for y in 10..20 {
            for x in 5..17 {
                mask.set(x, y, 1);
            }
        }
        let region = Region::full(32, 32);
        let up = resample_mask_nearest(&mask, &region, 64, 64);
        assert_eq!(up.data.iter().filter(|&&v| v == 1).count(), 4 * 120);
        let probs = up.map(f32::from);
        let back = paste_region_bilinear(&probs, &region, 32, 32, 0.0).map(|p| u8::from(p >= 0.5));
        assert_eq!(back, mask);
    }

    #[test]
    fn fill_value_is_used_outside_the_source() {
        let img = Image2D::filled(4, 4, 7.0);
        let region = Region {
            x0: -4.5,
            y0: -0.5,
            width: 8.0,
            height: 4.0,
        };
        let out = resample_region_bilinear(&img, &region, 8, 4, Some(-1000.0));
        assert_eq!(out.get(0, 0), -1000.0);
        assert_eq!(out.get(7, 3), 7.0);
    }
}
