//! Window/level: which intensities map to black and white.

use crate::volume::{Modality, Volume, nearest_rank, sorted_finite_sample};

/// A display window: values `centre ± width/2` span black to white.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowLevel {
    /// Value shown as mid-grey (the level).
    pub centre: f32,
    /// Range of values from black to white (> 0).
    pub width: f32,
}

/// Smallest window width accepted (keeps the mapping finite).
const MIN_WIDTH: f32 = 1e-3;

impl WindowLevel {
    /// A window from its centre and width (the width is kept positive).
    pub fn new(centre: f32, width: f32) -> Self {
        Self {
            centre,
            width: width.abs().max(MIN_WIDTH),
        }
    }

    /// The window spanning `[low, high]`.
    pub fn from_range(low: f32, high: f32) -> Self {
        Self::new((low + high) / 2.0, high - low)
    }

    /// The value shown as black.
    pub fn low(&self) -> f32 {
        self.centre - self.width / 2.0
    }

    /// The value shown as white.
    pub fn high(&self) -> f32 {
        self.centre + self.width / 2.0
    }

    /// Grey level in `[0, 1]` for value `v` (NaN → 0).
    pub fn apply(&self, v: f32) -> f32 {
        let g = (v - self.low()) / self.width;
        if g.is_nan() { 0.0 } else { g.clamp(0.0, 1.0) }
    }

    /// The 8-bit grey shown for value `v`.
    pub fn grey(&self, v: f32) -> u8 {
        (self.apply(v) * 255.0).round() as u8
    }

    /// The window after a mouse drag of `(dx, dy)` points: right widens, down raises the
    /// level (as in most PACS viewers); the speed follows the current width so that a
    /// 500-point drag roughly doubles or halves it.
    pub fn dragged(&self, dx: f32, dy: f32) -> Self {
        let scale = (self.width / 250.0).max(1e-3);
        Self::new(self.centre + dy * scale, self.width + dx * scale)
    }
}

/// Standard CT windows (Hounsfield units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtPreset {
    /// Abdomen/soft tissue: W 400, L 40.
    SoftTissue,
    /// Lung: W 1500, L −600.
    Lung,
    /// Bone: W 1800, L 400.
    Bone,
    /// Brain: W 80, L 40.
    Brain,
}

impl CtPreset {
    /// All presets in menu order.
    pub const ALL: [CtPreset; 4] = [Self::SoftTissue, Self::Lung, Self::Bone, Self::Brain];

    /// The window in HU.
    pub fn window(self) -> WindowLevel {
        match self {
            Self::SoftTissue => WindowLevel::new(40.0, 400.0),
            Self::Lung => WindowLevel::new(-600.0, 1500.0),
            Self::Bone => WindowLevel::new(400.0, 1800.0),
            Self::Brain => WindowLevel::new(40.0, 80.0),
        }
    }

    /// Menu label with the values.
    pub fn label(self) -> &'static str {
        match self {
            Self::SoftTissue => "Soft tissue (W 400 L 40)",
            Self::Lung => "Lung (W 1500 L -600)",
            Self::Bone => "Bone (W 1800 L 400)",
            Self::Brain => "Brain (W 80 L 40)",
        }
    }
}

/// The window a volume opens with: soft tissue for CT, else [`robust_window`].
pub fn initial_window(volume: &Volume) -> WindowLevel {
    match volume.modality {
        Modality::Ct => CtPreset::SoftTissue.window(),
        Modality::Mr | Modality::Other => robust_window(volume.voxels()),
    }
}

/// A robust automatic window for MR and other uncalibrated images: the 1st to 99.5th
/// percentile of the voxels, ignoring the background (the minimum value, when it fills
/// more than 5 % of the volume, as zero padding and air do) and non-finite values, so
/// neither the background nor a few very bright voxels (vessels, fat, artefacts) wash out
/// the tissue contrast. Works on a strided sample of at most ~2 M voxels.
pub fn robust_window(voxels: &[f32]) -> WindowLevel {
    let mut sample = sorted_finite_sample(voxels, 2_000_000);
    if sample.is_empty() {
        return WindowLevel::new(0.5, 1.0);
    }
    let min = sample[0];
    let at_min = sample.partition_point(|&v| v <= min);
    if at_min * 20 > sample.len() && at_min < sample.len() {
        sample.drain(..at_min);
    }
    let (lo, hi) = (nearest_rank(&sample, 0.01), nearest_rank(&sample, 0.995));
    if hi > lo {
        WindowLevel::from_range(lo, hi)
    } else {
        // A constant image: centre on it.
        WindowLevel::new(lo, (lo.abs() * 0.1).max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_maps_its_ends_to_black_and_white() {
        let w = WindowLevel::new(40.0, 400.0);
        assert_eq!(w.apply(-160.0), 0.0);
        assert_eq!(w.apply(240.0), 1.0);
        assert!((w.apply(40.0) - 0.5).abs() < 1e-6);
        assert_eq!(w.apply(-1000.0), 0.0);
        assert_eq!(w.apply(f32::NAN), 0.0);
        assert_eq!(w.grey(-160.0), 0);
        assert_eq!(w.grey(40.0), 128);
        assert_eq!(w.grey(240.0), 255);
    }

    #[test]
    fn a_ct_opens_in_the_soft_tissue_window_and_an_mr_in_the_robust_one() {
        use crate::volume::{Geometry, Modality, Volume};
        let g = Geometry::axis_aligned([10, 10, 1], [1.0; 3]);
        let voxels: Vec<f32> = (0..100).map(|n| n as f32).collect();
        let ct = Volume::new(g.clone(), voxels.clone(), Modality::Ct).unwrap();
        assert_eq!(initial_window(&ct), WindowLevel::new(40.0, 400.0));
        let mr = Volume::new(g, voxels.clone(), Modality::Mr).unwrap();
        assert_eq!(initial_window(&mr), robust_window(&voxels));
        // 0..=99 (the minimum fills 1 %, too little to be background): the 1st and
        // 99.5th percentiles.
        assert_eq!(initial_window(&mr).low(), 1.0);
        assert_eq!(initial_window(&mr).high(), 99.0);
    }

    #[test]
    fn dragging_right_widens_and_down_raises_the_level() {
        let w = WindowLevel::new(40.0, 400.0);
        let d = w.dragged(250.0, 0.0);
        assert_eq!(d.width, 800.0);
        let d = w.dragged(0.0, 100.0);
        assert_eq!(d.centre, 200.0);
        let narrow = w.dragged(-10_000.0, 0.0);
        assert!(narrow.width > 0.0);
    }

    #[test]
    fn ct_presets_have_the_usual_values() {
        assert_eq!(CtPreset::Lung.window().low(), -1350.0);
        assert_eq!(CtPreset::Brain.window().high(), 80.0);
        assert_eq!(CtPreset::Bone.window().centre, 400.0);
    }

    #[test]
    fn the_robust_window_ignores_background_and_outliers() {
        // 60 % zero background, tissue 100..=199, 0.2 % of extreme bright voxels.
        let mut v = vec![0.0f32; 60_000];
        v.extend((0..39_800).map(|n| 100.0 + (n % 100) as f32));
        v.extend(std::iter::repeat_n(50_000.0, 200));
        let w = robust_window(&v);
        assert!((99.0..=102.0).contains(&w.low()), "low {}", w.low());
        assert!((197.0..=200.0).contains(&w.high()), "high {}", w.high());
    }

    #[test]
    fn the_robust_window_survives_degenerate_images() {
        let w = robust_window(&[5.0; 100]);
        assert!(w.width > 0.0 && (w.centre - 5.0).abs() < 1e-6);
        let w = robust_window(&[f32::NAN; 10]);
        assert!(w.width > 0.0);
        let w = robust_window(&[]);
        assert!(w.width > 0.0);
    }
}
