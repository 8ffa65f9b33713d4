//! How a slice is drawn, without a window system: window/level ([`WindowLevel`], the CT
//! presets and the automatic window), the orientation of a view ([`view`]: radiological
//! convention, zoom and pan), the heat colour map of attention maps, overlay blending,
//! and RGB pictures saved as PNG.
//!
//! The app's two renderers (the WGSL shader `shaders/slice.wgsl` mirrors these rules,
//! the CPU fallback calls them) and `icseg explain` draw with the same functions, so an
//! explanation saved from the command line looks like the panel in the app: the same
//! window, the same colour map at the same opacity, structures filled and outlined the
//! same way.

pub mod view;
mod window;

use std::path::Path;

use image::ImageEncoder as _;

use crate::volume::Image2D;
use view::ViewMapping;

pub use window::{CtPreset, WindowLevel, initial_window, robust_window};

/// Opacity of a heatmap at full value (`t = 1`); lower values are more transparent.
pub const HEAT_OPACITY: f32 = 0.75;

/// Opacity of a structure's outline (its fill uses the structure's own opacity).
pub const OUTLINE_OPACITY: f32 = 0.9;

/// Colour map for heatmaps (dark purple → red → yellow, like "inferno"); `t` in
/// `[0, 1]`, NaN as 0.
pub fn heat_colour(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 0.02],
        [0.34, 0.06, 0.43],
        [0.73, 0.21, 0.33],
        [0.98, 0.55, 0.04],
        [0.99, 1.0, 0.64],
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f32;
    let c = |k: usize| STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f;
    [0, 1, 2].map(|k| (c(k) * 255.0).round() as u8)
}

/// Blends `over` at opacity `alpha` onto `base` (sRGB, as egui does).
#[inline]
pub fn blend(base: [u8; 3], over: [u8; 3], alpha: f32) -> [u8; 3] {
    [0, 1, 2].map(|k| {
        (f32::from(base[k]) + (f32::from(over[k]) - f32::from(base[k])) * alpha).round() as u8
    })
}

/// `rgb` under a heatmap value `t` in `[0, 1]`: the heat colour at `HEAT_OPACITY × t`.
/// Zero, negative and non-finite values leave `rgb` as it is.
#[inline]
pub fn heat_over(rgb: [u8; 3], t: f32) -> [u8; 3] {
    if t.is_finite() && t > 0.0 {
        blend(rgb, heat_colour(t), HEAT_OPACITY * t.min(1.0))
    } else {
        rgb
    }
}

/// Attention values scaled into `[0, 1]` by `1 / peak`, so that the strongest location
/// of the maps sharing `peak` (one stage over all its support slices) is 1; all zero
/// when `peak` is not positive.
pub fn heat_scaled(values: &Image2D<f32>, peak: f32) -> Image2D<f32> {
    let scale = if peak > 0.0 { 1.0 / peak } else { 0.0 };
    values.map(|v| (v * scale).clamp(0.0, 1.0))
}

/// A structure's overlay colour: sRGB and its opacity as 8 bits (0 when hidden).
pub fn overlay_rgba(colour: [u8; 3], opacity: f32, visible: bool) -> [u8; 4] {
    let [r, g, b] = colour;
    let a = if visible {
        (opacity.clamp(0.0, 1.0) * 255.0).round() as u8
    } else {
        0
    };
    [r, g, b, a]
}

/// The opacity a structure pixel is drawn with: its overlay alpha, raised to
/// [`OUTLINE_OPACITY`] on its outline (a pixel with a 4-neighbour outside it).
#[inline]
pub fn structure_alpha(alpha: u8, on_outline: bool) -> f32 {
    let alpha = f32::from(alpha) / 255.0;
    if on_outline {
        alpha.max(OUTLINE_OPACITY)
    } else {
        alpha
    }
}

/// Why a picture could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The PNG encoder failed.
    #[error("could not encode the picture as PNG ({0})")]
    Encode(#[from] image::ImageError),
    /// The file could not be written.
    #[error("could not write the picture ({source}): {}", path.display())]
    Write {
        /// The PNG file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// An 8-bit sRGB picture, 3 bytes per pixel, `x` fastest (the orientation of
/// [`Image2D`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `3 × width × height` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A slice in grey through `window`.
    pub fn grey(image: &Image2D<f32>, window: WindowLevel) -> Self {
        let data = image
            .data
            .iter()
            .flat_map(|&v| [window.grey(v); 3])
            .collect();
        Self {
            width: image.width,
            height: image.height,
            data,
        }
    }

    /// The colour at `(x, y)`.
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (x + self.width * y);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Sets the colour at `(x, y)`.
    pub fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        let i = 3 * (x + self.width * y);
        self.data[i..i + 3].copy_from_slice(&rgb);
    }

    /// Blends `colour` at opacity `alpha` onto the pixel at `(x, y)`.
    pub fn blend(&mut self, x: usize, y: usize, colour: [u8; 3], alpha: f32) {
        self.set(x, y, blend(self.get(x, y), colour, alpha));
    }

    /// Lays a heatmap (values in `[0, 1]`, same size) over the picture with
    /// [`heat_over`].
    pub fn overlay_heat(&mut self, heat: &Image2D<f32>) {
        for y in 0..self.height.min(heat.height) {
            for x in 0..self.width.min(heat.width) {
                self.set(x, y, heat_over(self.get(x, y), heat.get(x, y)));
            }
        }
    }

    /// Draws a structure (`mask` nonzero, same size) as the app does: filled with
    /// `rgba` (colour and 8-bit opacity, see [`overlay_rgba`]) and outlined at
    /// [`OUTLINE_OPACITY`].
    pub fn overlay_structure(&mut self, mask: &Image2D<u8>, rgba: [u8; 4]) {
        let [r, g, b, a] = rgba;
        if a == 0 {
            return;
        }
        let (w, h) = (self.width.min(mask.width), self.height.min(mask.height));
        let inside = |x: usize, y: usize| mask.get(x, y) != 0;
        for y in 0..h {
            for x in 0..w {
                if !inside(x, y) {
                    continue;
                }
                let outline = (x > 0 && !inside(x - 1, y))
                    || (x + 1 < w && !inside(x + 1, y))
                    || (y > 0 && !inside(x, y - 1))
                    || (y + 1 < h && !inside(x, y + 1));
                self.blend(x, y, [r, g, b], structure_alpha(a, outline));
            }
        }
    }

    /// The picture of a slice (in [`Image2D`] orientation) turned the way a view shows
    /// it: `mapping` of that slice (radiological convention, see [`view`]).
    pub fn oriented(&self, mapping: &ViewMapping) -> Self {
        let (a, b) = mapping.axis.in_plane();
        let mut out = Self {
            width: mapping.n_u,
            height: mapping.n_v,
            data: vec![0; 3 * mapping.n_u * mapping.n_v],
        };
        for v in 0..mapping.n_v {
            for u in 0..mapping.n_u {
                let ijk = mapping.voxel_of_pixel(u, v);
                out.set(u, v, self.get(ijk[a], ijk[b]));
            }
        }
        out
    }

    /// The part `[u0, v0, u1, v1)` (pixels, clamped to the picture) of the picture.
    pub fn crop(&self, [u0, v0, u1, v1]: [usize; 4]) -> Self {
        let (u1, v1) = (u1.min(self.width), v1.min(self.height));
        let (u0, v0) = (u0.min(u1), v0.min(v1));
        let mut out = Self {
            width: u1 - u0,
            height: v1 - v0,
            data: Vec::with_capacity(3 * (u1 - u0) * (v1 - v0)),
        };
        for v in v0..v1 {
            out.data.extend_from_slice(
                &self.data[3 * (u0 + self.width * v)..3 * (u1 + self.width * v)],
            );
        }
        out
    }

    /// The app's marker of a clicked location: a ring of radius 4 pixels about `(x, y)`.
    pub fn draw_ring(&mut self, [px, py]: [usize; 2]) {
        const COLOUR: [u8; 3] = [0, 255, 160];
        for y in py.saturating_sub(5)..(py + 6).min(self.height) {
            for x in px.saturating_sub(5)..(px + 6).min(self.width) {
                let d = ((x as f32 - px as f32).powi(2) + (y as f32 - py as f32).powi(2)).sqrt();
                if (d - 4.0).abs() <= 0.75 {
                    self.set(x, y, COLOUR);
                }
            }
        }
    }

    /// The picture as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, PngError> {
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes).write_image(
            &self.data,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(bytes)
    }

    /// Saves the picture as a PNG file, atomically.
    pub fn save_png(&self, path: &Path) -> Result<(), PngError> {
        crate::files::write_atomic(path, &self.to_png()?).map_err(|source| PngError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_colour_map_runs_from_dark_to_bright_yellow() {
        assert_eq!(heat_colour(0.0), [0, 0, 5]);
        assert_eq!(heat_colour(0.5), [186, 54, 84]);
        assert_eq!(heat_colour(1.0), [252, 255, 163]);
        assert_eq!(heat_colour(f32::NAN), heat_colour(0.0));
        assert_eq!(heat_colour(7.0), heat_colour(1.0));
        let lum = |c: [u8; 3]| c.iter().map(|&v| u32::from(v)).sum::<u32>();
        let mut last = 0;
        for n in 0..=20 {
            let l = lum(heat_colour(n as f32 / 20.0));
            assert!(l >= last, "brightness rises monotonically");
            last = l;
        }
    }

    #[test]
    fn blending_mixes_in_proportion() {
        assert_eq!(blend([0, 0, 0], [200, 100, 50], 0.5), [100, 50, 25]);
        assert_eq!(blend([10, 20, 30], [200, 100, 50], 0.0), [10, 20, 30]);
        assert_eq!(blend([10, 20, 30], [200, 100, 50], 1.0), [200, 100, 50]);
    }

    #[test]
    fn heat_is_laid_on_in_proportion_to_its_value() {
        let grey = [128; 3];
        assert_eq!(heat_over(grey, 0.0), grey);
        assert_eq!(heat_over(grey, -1.0), grey);
        assert_eq!(heat_over(grey, f32::NAN), grey);
        // Full value: 75 % of the brightest colour.
        assert_eq!(heat_over(grey, 1.0), [221, 223, 154]);
        assert_eq!(heat_over(grey, 1.0), blend(grey, heat_colour(1.0), 0.75));
        // Half value: half the opacity.
        assert_eq!(heat_over(grey, 0.5), blend(grey, heat_colour(0.5), 0.375));
    }

    #[test]
    fn attention_is_scaled_by_the_stage_peak() {
        let values = Image2D::new(3, 1, vec![0.0, 0.25, 0.5f32]);
        assert_eq!(heat_scaled(&values, 0.5).data, [0.0, 0.5, 1.0]);
        // A map below the stage's peak stays below 1.
        assert_eq!(heat_scaled(&values, 1.0).data, [0.0, 0.25, 0.5]);
        assert_eq!(heat_scaled(&values, 0.0).data, [0.0; 3]);
    }

    #[test]
    fn a_ct_slice_is_drawn_in_grey_through_the_window() {
        // Air, fat, water, soft tissue, bone in HU through the soft-tissue preset.
        let slice = Image2D::new(5, 1, vec![-1000.0, -100.0, 0.0, 40.0, 1000.0]);
        let rgb = RgbImage::grey(&slice, CtPreset::SoftTissue.window());
        let greys: Vec<u8> = (0..5).map(|x| rgb.get(x, 0)[0]).collect();
        assert_eq!(greys, [0, 38, 102, 128, 255]);
        assert_eq!(rgb.get(3, 0), [128; 3]);
    }

    #[test]
    fn structures_are_filled_at_their_opacity_and_outlined() {
        let black = Image2D::filled(5, 5, -1000.0f32);
        let mut rgb = RgbImage::grey(&black, CtPreset::SoftTissue.window());
        let mut mask = Image2D::filled(5, 5, 0u8);
        for y in 1..4 {
            for x in 1..4 {
                mask.set(x, y, 1);
            }
        }
        let red = overlay_rgba([255, 0, 0], 0.5, true);
        assert_eq!(red, [255, 0, 0, 128]);
        rgb.overlay_structure(&mask, red);
        // Centre: 128/255 of red; the ring around it: 90 %; outside: untouched.
        assert_eq!(rgb.get(2, 2), [128, 0, 0]);
        assert_eq!(rgb.get(1, 2), [230, 0, 0]);
        assert_eq!(rgb.get(0, 0), [0, 0, 0]);
        // A mask filling the picture has no outline at the picture's border.
        let mut full = RgbImage::grey(&black, CtPreset::SoftTissue.window());
        full.overlay_structure(&Image2D::filled(5, 5, 1u8), red);
        assert_eq!(full.get(0, 0), [128, 0, 0]);
        // Hidden structures are not drawn.
        let mut hidden = RgbImage::grey(&black, CtPreset::SoftTissue.window());
        hidden.overlay_structure(&mask, overlay_rgba([255, 0, 0], 0.5, false));
        assert_eq!(hidden.get(2, 2), [0, 0, 0]);
    }

    #[test]
    fn a_heatmap_colours_its_pixels_only() {
        let slice = Image2D::filled(3, 2, 40.0f32);
        let mut rgb = RgbImage::grey(&slice, CtPreset::SoftTissue.window());
        let mut heat = Image2D::filled(3, 2, 0.0f32);
        heat.set(1, 1, 1.0);
        rgb.overlay_heat(&heat);
        assert_eq!(rgb.get(1, 1), [221, 223, 154]);
        assert_eq!(rgb.get(0, 0), [128; 3]);
    }

    #[test]
    fn pictures_are_turned_as_the_view_shows_them() {
        use crate::volume::{Axis, Geometry};
        // An axial slice whose first voxel axis runs to the patient's right (as NIfTI
        // volumes often do): the view flips it so that the patient's left is on the
        // screen's right.
        let mut g = Geometry::axis_aligned([3, 2, 1], [1.0; 3]);
        g.direction[0] = [-1.0, 0.0, 0.0];
        let slice = Image2D::new(3, 2, vec![-160.0, 40.0, 240.0, 240.0, 240.0, 240.0]);
        let rgb = RgbImage::grey(&slice, CtPreset::SoftTissue.window());
        let shown = rgb.oriented(&ViewMapping::new(&g, Axis::K, 0));
        let row: Vec<u8> = (0..3).map(|u| shown.get(u, 0)[0]).collect();
        assert_eq!(row, [255, 128, 0]);
        assert_eq!(shown.get(0, 1), [255; 3]);
        // Already in radiological order: unchanged.
        let plain = Geometry::axis_aligned([3, 2, 1], [1.0; 3]);
        assert_eq!(rgb.oriented(&ViewMapping::new(&plain, Axis::K, 0)), rgb);
    }

    #[test]
    fn pictures_are_saved_as_png() {
        let slice = Image2D::new(2, 1, vec![-1000.0f32, 1000.0]);
        let rgb = RgbImage::grey(&slice, CtPreset::SoftTissue.window());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slice.png");
        rgb.save_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (2, 1));
        assert_eq!(decoded.as_raw(), &rgb.data);
        let missing = dir.path().join("no-such-folder").join("x.png");
        assert!(matches!(
            rgb.save_png(&missing),
            Err(PngError::Write { .. })
        ));
    }
}
