//! Slice rendering: window/level, label overlays, heatmaps.
//!
//! Two implementations of the same picture:
//! - [`gpu`]: WGSL shaders (`shaders/slice.wgsl`) drawn through egui-wgpu's paint
//!   callback, sampling the whole volume and label map as 3-D textures, so scrolling,
//!   windowing and zooming cost a uniform update.
//! - [`cpu`]: the fallback where no wgpu render state exists (e.g. headless tests); it
//!   builds an egui texture at voxel resolution.
//!
//! Both follow [`crate::display::view::ViewMapping`] for orientation and the rules here for
//! colours: grey from the window, then structures blended at their opacity, a solid
//! outline around every structure, and predicted slices hatched (stripes of full and
//! quarter opacity) so they never look like manual work. The colours, opacities and blending
//! are [`crate::display`]'s, shared with `icseg explain`.

pub mod cpu;
pub mod gpu;

use crate::session::{Session, SliceState};
use crate::volume::{Image2D, LabelValue};

use crate::display::{WindowLevel, overlay_rgba};

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
        lut[s.value as usize] = overlay_rgba(s.style.colour, s.style.opacity, s.style.visible);
    }
    lut
}

/// Whether `label` is a prediction (not yet reviewed) on working-axis slice `slice`.
pub fn is_predicted(session: &Session, label: LabelValue, slice: usize) -> bool {
    session
        .structure(label)
        .is_some_and(|s| s.state(slice) == SliceState::Predicted)
}
