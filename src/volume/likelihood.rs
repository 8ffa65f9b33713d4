//! What one structure looks like in this very study: an intensity model learned from
//! its annotated slices, used to pull the propagated boundary onto the image
//! (`engine::chain`, `ChainOptions::intensity`).
//!
//! On the annotated slices the inside of the structure and a ring just outside it
//! (the tissue the boundary separates it from, within [`RING_MM`](super::interpolate::RING_MM)) give two intensity
//! histograms. Their log ratio says, for any pixel of the volume, how much more its
//! intensity looks like the inside than like the surroundings: bone around the
//! spinal cord, muscle around the parotids, air around the mandible. Where inside and
//! surroundings look alike (a planning volume drawn with margins) the ratio is near
//! zero and nothing changes.
//!
//! Not in the paper: classical in-context evidence added to the network's and the
//! shape prior's (`docs/engine.md`).

use super::interpolate::{sample_inside_and_ring, signed_distance};
use super::{Image2D, nearest_rank};

/// Histogram bins between the sampled 1st and 99th percentiles.
const BINS: usize = 48;

/// Smoothing of the histograms (bins): a kernel density estimate.
const SMOOTH_BINS: f32 = 1.5;

/// The log ratio is bounded to ± this, so that no intensity alone decides a pixel.
pub const MAX_LOG_RATIO: f32 = 3.0;

/// Fewest pixels each class needs for a model.
const MIN_PIXELS: usize = 8;

/// Inside-versus-surroundings intensity model of one structure (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct IntensityModel {
    /// Intensity of the first bin's lower edge.
    low: f32,
    /// Width of a bin (intensity units).
    bin_width: f32,
    /// Log ratio of the smoothed inside and surroundings densities, per bin.
    log_ratio: Vec<f32>,
}

impl IntensityModel {
    /// Learns the model from annotated `(image, mask)` slices (mask nonzero = inside)
    /// with in-plane `pixel_mm`. `None` when the inside or the surroundings have fewer
    /// than a handful of pixels, or all intensities are equal.
    pub fn learn<'a>(
        slices: impl IntoIterator<Item = (&'a Image2D<f32>, &'a Image2D<u8>)>,
        pixel_mm: (f64, f64),
    ) -> Option<Self> {
        let (mut inside, mut ring) = (Vec::new(), Vec::new());
        for (image, mask) in slices {
            if image.width != mask.width || image.height != mask.height {
                continue;
            }
            if !mask.data.iter().any(|&v| v != 0) {
                continue;
            }
            let sdf = signed_distance(mask, pixel_mm);
            sample_inside_and_ring(image, &sdf, &mut inside, &mut ring);
        }
        if inside.len() < MIN_PIXELS || ring.len() < MIN_PIXELS {
            return None;
        }
        let mut pooled: Vec<f32> = inside.iter().chain(&ring).copied().collect();
        pooled.sort_unstable_by(f32::total_cmp);
        let (low, high) = (nearest_rank(&pooled, 0.01), nearest_rank(&pooled, 0.99));
        if high <= low {
            return None;
        }
        let bin_width = (high - low) / BINS as f32;
        let density = |values: &[f32]| {
            let mut counts = Image2D::filled(BINS, 1, 0.0f32);
            for &v in values {
                counts.data[bin(low, bin_width, v)] += 1.0;
            }
            let smooth = counts.gaussian_blur(SMOOTH_BINS);
            let total: f32 = smooth.data.iter().sum();
            // A floor of half a count per bin: a bin neither class reached says nothing.
            let floor = 0.5 / values.len() as f32;
            smooth
                .data
                .into_iter()
                .map(|c| c / total + floor)
                .collect::<Vec<f32>>()
        };
        let (p_in, p_ring) = (density(&inside), density(&ring));
        let log_ratio = p_in
            .iter()
            .zip(&p_ring)
            .map(|(a, b)| (a / b).ln().clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))
            .collect();
        Some(Self {
            low,
            bin_width,
            log_ratio,
        })
    }

    /// How much more intensity `v` looks like the inside than the surroundings (natural
    /// log of the density ratio, within ±[`MAX_LOG_RATIO`]); 0 for NaN.
    pub fn log_ratio(&self, v: f32) -> f32 {
        if v.is_finite() {
            self.log_ratio[bin(self.low, self.bin_width, v)]
        } else {
            0.0
        }
    }

    /// [`Self::log_ratio`] of every pixel of `image`.
    pub fn log_ratio_image(&self, image: &Image2D<f32>) -> Image2D<f32> {
        image.map(|v| self.log_ratio(v))
    }
}

/// The bin of `v` (values outside the range go to the end bins).
fn bin(low: f32, width: f32, v: f32) -> usize {
    (((v - low) / width).floor().max(0.0) as usize).min(BINS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disc (radius 6 px) of `value_in` on `value_out`, both with the same fine
    /// texture (0–9 added in a pattern unrelated to the disc).
    fn disc(cx: f32, value_in: f32, value_out: f32) -> (Image2D<f32>, Image2D<u8>) {
        let (w, h) = (40, 40);
        let mut image = Image2D::filled(w, h, 0.0);
        let mut mask = Image2D::filled(w, h, 0u8);
        for y in 0..h {
            for x in 0..w {
                let r = ((x as f32 - cx).powi(2) + (y as f32 - 20.0).powi(2)).sqrt();
                let i = x + w * y;
                mask.data[i] = u8::from(r < 6.0);
                let texture = ((7 * x + 13 * y) % 10) as f32;
                image.data[i] = if r < 6.0 { value_in } else { value_out } + texture;
            }
        }
        (image, mask)
    }

    #[test]
    fn inside_intensities_score_high_and_surroundings_low() {
        let (image, mask) = disc(20.0, 100.0, 0.0);
        let model = IntensityModel::learn([(&image, &mask)], (1.0, 1.0)).unwrap();
        assert!(model.log_ratio(104.0) > 2.0, "{}", model.log_ratio(104.0));
        assert!(model.log_ratio(4.0) < -2.0, "{}", model.log_ratio(4.0));
        assert_eq!(model.log_ratio(f32::NAN), 0.0);
        // A shifted disc on another slice: its pixels are told apart by intensity alone.
        let (other, other_mask) = disc(14.0, 100.0, 0.0);
        let ratio = model.log_ratio_image(&other);
        for (r, m) in ratio.data.iter().zip(&other_mask.data) {
            assert_eq!(*r > 0.0, *m != 0);
        }
    }

    #[test]
    fn a_structure_that_looks_like_its_surroundings_gets_no_evidence() {
        let (image, mask) = disc(20.0, 50.0, 50.0);
        let model = IntensityModel::learn([(&image, &mask)], (1.0, 1.0)).unwrap();
        assert!(
            model.log_ratio(50.0).abs() < 0.5,
            "{}",
            model.log_ratio(50.0)
        );
    }

    #[test]
    fn no_model_without_an_inside_or_with_mismatched_slices() {
        let (image, mask) = disc(20.0, 100.0, 0.0);
        let empty = Image2D::filled(40, 40, 0u8);
        assert!(IntensityModel::learn([(&image, &empty)], (1.0, 1.0)).is_none());
        let small = Image2D::filled(10, 10, 1u8);
        assert!(IntensityModel::learn([(&image, &small)], (1.0, 1.0)).is_none());
        assert!(IntensityModel::learn([(&image, &mask)], (1.0, 1.0)).is_some());
    }
}
