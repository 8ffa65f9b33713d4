//! Slice rendering: window/level, label overlays, heatmaps.
//!
//! Two implementations of the same picture:
//! - [`gpu`]: WGSL shaders (`shaders/slice.wgsl`) drawn through egui-wgpu's paint
//!   callback, sampling the whole volume and label map as 3-D textures, so scrolling,
//!   windowing and zooming cost a uniform update.
//! - [`cpu`]: the fallback where no wgpu render state exists (e.g. headless tests); it
//!   builds an egui texture at voxel resolution.
//!
//! Both follow [`crate::ui::view::ViewMapping`] for orientation and the rules here for
//! colours: grey from the window, then structures blended at their opacity, a solid
//! outline around every structure, and predicted slices hatched (stripes of full and
//! quarter opacity) so they never look like manual work. Heatmaps use [`heat_colour`].

pub mod cpu;
pub mod gpu;

use crate::session::{Session, SliceState};
use crate::volume::{Image2D, LabelValue};

use super::window::WindowLevel;

/// What a view draws besides the grey image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Look {
    /// The display window.
    pub window: WindowLevel,
    /// Draw structure overlays.
    pub show_labels: bool,
}

/// An attention heatmap over one slice of the working axis, values in `[0, 1]`, in that
/// slice's pixel coordinates (`Image2D` orientation).
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Working-axis slice it belongs to.
    pub slice: usize,
    /// Values in `[0, 1]`.
    pub values: Image2D<f32>,
}

/// Opacity of a heatmap at full value.
pub const HEAT_OPACITY: f32 = 0.75;

/// Colour map for heatmaps (dark purple → red → yellow, like "inferno").
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

/// Per label value: sRGB colour and overlay opacity (0 when hidden or not a structure).
pub fn label_lut(session: &Session) -> Vec<[u8; 4]> {
    let max = session
        .structures()
        .iter()
        .map(|s| s.value)
        .max()
        .unwrap_or(0);
    let mut lut = vec![[0u8; 4]; max as usize + 1];
    for s in session.structures() {
        let a = if s.style.visible {
            (s.style.opacity.clamp(0.0, 1.0) * 255.0).round() as u8
        } else {
            0
        };
        let [r, g, b] = s.style.colour;
        lut[s.value as usize] = [r, g, b, a];
    }
    lut
}

/// Whether `label` is a prediction (not yet reviewed) on working-axis slice `slice`.
pub fn is_predicted(session: &Session, label: LabelValue, slice: usize) -> bool {
    session
        .structure(label)
        .is_some_and(|s| s.state(slice) == SliceState::Predicted)
}

/// Blends `over` at opacity `alpha` onto `base` (sRGB, as egui does).
#[inline]
pub fn blend(base: [u8; 3], over: [u8; 3], alpha: f32) -> [u8; 3] {
    [0, 1, 2].map(|k| {
        (f32::from(base[k]) + (f32::from(over[k]) - f32::from(base[k])) * alpha).round() as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_colour_map_runs_from_dark_to_bright_yellow() {
        assert_eq!(heat_colour(0.0), [0, 0, 5]);
        assert_eq!(heat_colour(1.0), [252, 255, 163]);
        assert_eq!(heat_colour(f32::NAN), heat_colour(0.0));
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
    }
}
