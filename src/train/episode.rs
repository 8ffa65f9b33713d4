//! Training episodes: a support set and query slices with their target masks, prepared
//! exactly as the engine prepares inference inputs (same region of interest, same
//! resampling and normalisation, see [`crate::engine::preprocess`]).
//!
//! An episode picks a volume and a structure, `S` support slices spread over the
//! structure as an annotator would spread them, and queries of three kinds:
//! - *propagation* (most): another slice of the same volume, anywhere from a margin
//!   before the structure to a margin after it, so the network learns where the
//!   structure ends (slices past the ends have empty targets);
//! - *outside*: a slice of the same volume away from the structure (empty target);
//! - *cross-patient*: a slice of another volume of the same dataset holding the same
//!   structure (the paper's setting), cropped around that volume's own structure.

use rand::RngExt;
use rand::rngs::StdRng;

use super::augment::{AugmentConfig, TaskAugment, augment_in_task};
use super::data::{LabelledStructure, TrainVolume};
use crate::engine::preprocess::{RoiMode, mask_input, model_input, support_region};
use crate::volume::{Axis, Image2D, Region};

/// How episodes are drawn.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpisodeConfig {
    /// Model input side in pixels.
    pub size: usize,
    /// Smallest and largest support size `S` (uniform).
    pub support_range: (usize, usize),
    /// Queries per episode (they share the support set).
    pub queries: usize,
    /// Share of queries from another patient.
    pub p_cross_patient: f64,
    /// Share of queries away from the structure.
    pub p_outside: f64,
    /// Share of episodes cropped to the full slice instead of the support ROI.
    pub p_full_slice: f64,
    /// Augmentations.
    pub augment: AugmentConfig,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        Self {
            size: 128,
            support_range: (1, 8),
            queries: 4,
            p_cross_patient: 0.15,
            p_outside: 0.1,
            p_full_slice: 0.1,
            augment: AugmentConfig::default(),
        }
    }
}

/// Model-ready inputs of one episode (all `size × size`).
#[derive(Clone, Debug)]
pub struct Episode {
    /// Normalised support images.
    pub support_images: Vec<Image2D<f32>>,
    /// Support masks (0/1).
    pub support_masks: Vec<Image2D<f32>>,
    /// Normalised query images.
    pub query_images: Vec<Image2D<f32>>,
    /// Query targets (0/1).
    pub query_masks: Vec<Image2D<f32>>,
}

/// `count` slices out of `slices` (ascending, non-empty) spread like an annotator's:
/// one near each of `count` evenly spaced positions, jittered within its stratum.
pub fn spread_slices(slices: &[usize], count: usize, rng: &mut StdRng) -> Vec<usize> {
    let count = count.clamp(1, slices.len());
    let mut picked: Vec<usize> = (0..count)
        .map(|i| {
            let t = (i as f64 + rng.random_range(0.2..0.8)) / count as f64;
            slices[((t * slices.len() as f64) as usize).min(slices.len() - 1)]
        })
        .collect();
    picked.dedup();
    picked
}

/// Everything needed to crop and normalise slices of one volume for one structure.
struct View<'a> {
    tv: &'a TrainVolume,
    structure: &'a LabelledStructure,
}

impl View<'_> {
    fn mask(&self, z: usize) -> Image2D<u8> {
        self.tv.label_maps[self.structure.map].slice_mask(Axis::K, z, self.structure.label)
    }

    fn region(&self, slices: &[usize], mode: RoiMode) -> Region {
        let masks: Vec<_> = slices.iter().map(|&z| self.mask(z)).collect();
        let (w, h) = self.tv.volume.geometry().slice_dims(Axis::K);
        let spacing = self.tv.volume.geometry().slice_spacing_mm(Axis::K);
        support_region(&masks, w, h, spacing, mode)
    }

    fn pair(&self, z: usize, region: &Region, size: usize) -> (Image2D<f32>, Image2D<f32>) {
        (
            model_input(&self.tv.volume, Axis::K, z, region, size),
            mask_input(&self.mask(z), region, size),
        )
    }
}

/// Draws one episode from `volumes`. `by_key` maps a structure key to every
/// `(volume, structure)` holding it (for cross-patient queries).
pub fn sample_episode(
    volumes: &[TrainVolume],
    by_key: &std::collections::HashMap<String, Vec<(usize, usize)>>,
    cfg: &EpisodeConfig,
    rng: &mut StdRng,
) -> Option<Episode> {
    let candidates: Vec<usize> = (0..volumes.len())
        .filter(|&v| !volumes[v].structures.is_empty())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let v = candidates[rng.random_range(0..candidates.len())];
    let tv = &volumes[v];
    let structure = &tv.structures[rng.random_range(0..tv.structures.len())];
    let view = View { tv, structure };
    let s = rng.random_range(cfg.support_range.0..=cfg.support_range.1);
    let support = spread_slices(&structure.slices, s, rng);
    let mode = if rng.random_bool(cfg.p_full_slice) {
        RoiMode::FullSlice
    } else {
        RoiMode::default()
    };
    let region = view.region(&support, mode);
    let n = tv.volume.geometry().slice_count(Axis::K);
    let (lo, hi) = (structure.slices[0], *structure.slices.last().unwrap_or(&0));
    let margin = ((hi - lo + 1) / 4).max(2);

    let mut ep = Episode {
        support_images: Vec::new(),
        support_masks: Vec::new(),
        query_images: Vec::new(),
        query_masks: Vec::new(),
    };
    for &z in &support {
        let (i, m) = view.pair(z, &region, cfg.size);
        ep.support_images.push(i);
        ep.support_masks.push(m);
    }
    for _ in 0..cfg.queries {
        let r: f64 = rng.random();
        let (image, mask) = if r < cfg.p_cross_patient {
            let others: Vec<&(usize, usize)> = by_key
                .get(&structure.key)
                .map(|o| o.iter().filter(|(ov, _)| *ov != v).collect())
                .unwrap_or_default();
            if others.is_empty() {
                continue;
            }
            let &(ov, os) = others[rng.random_range(0..others.len())];
            let other = View {
                tv: &volumes[ov],
                structure: &volumes[ov].structures[os],
            };
            // Crop the other patient as inference would with its own annotations.
            let own_support = spread_slices(&other.structure.slices, s, rng);
            let other_region = other.region(&own_support, mode);
            let z = other.structure.slices[rng.random_range(0..other.structure.slices.len())];
            other.pair(z, &other_region, cfg.size)
        } else if r < cfg.p_cross_patient + cfg.p_outside {
            let away: Vec<usize> = (0..n)
                .filter(|&z| z + margin < lo || z > hi + margin)
                .collect();
            if away.is_empty() {
                continue;
            }
            view.pair(away[rng.random_range(0..away.len())], &region, cfg.size)
        } else {
            let first = lo.saturating_sub(margin);
            let last = (hi + margin).min(n - 1);
            let choices: Vec<usize> = (first..=last).filter(|z| !support.contains(z)).collect();
            if choices.is_empty() {
                continue;
            }
            view.pair(
                choices[rng.random_range(0..choices.len())],
                &region,
                cfg.size,
            )
        };
        ep.query_images.push(image);
        ep.query_masks.push(mask);
    }
    if ep.query_images.is_empty() {
        return None;
    }
    augment_episode(&mut ep, &cfg.augment, rng);
    Some(ep)
}

/// Applies one task augmentation to the whole episode and in-task augmentations to each
/// image.
pub fn augment_episode(ep: &mut Episode, cfg: &AugmentConfig, rng: &mut StdRng) {
    let task = TaskAugment::sample(cfg, rng);
    let pairs = ep
        .support_images
        .iter_mut()
        .zip(ep.support_masks.iter_mut())
        .chain(ep.query_images.iter_mut().zip(ep.query_masks.iter_mut()));
    for (image, mask) in pairs {
        task.apply(image, mask);
        augment_in_task(cfg, image, mask, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::synthetic::synthetic_volume;
    use rand::SeedableRng;

    #[test]
    fn spread_slices_covers_the_structure_in_order() {
        let mut rng = StdRng::seed_from_u64(0);
        let slices: Vec<usize> = (10..40).collect();
        for _ in 0..20 {
            let picked = spread_slices(&slices, 3, &mut rng);
            assert_eq!(picked.len(), 3);
            assert!(
                picked[0] < 20 && (20..30).contains(&picked[1]) && picked[2] >= 30,
                "{picked:?}"
            );
        }
        assert_eq!(spread_slices(&[5, 6], 8, &mut rng).len(), 2);
    }

    #[test]
    fn episodes_have_model_sized_inputs_and_binary_targets() {
        let mut rng = StdRng::seed_from_u64(1);
        let volumes: Vec<TrainVolume> = (0..2)
            .map(|seed| {
                let (v, l) = synthetic_volume([40, 40, 16], 2, seed);
                TrainVolume::new(
                    "syn".into(),
                    format!("s{seed}"),
                    v,
                    vec![("label".into(), l)],
                )
            })
            .collect();
        let mut by_key: std::collections::HashMap<String, Vec<(usize, usize)>> = Default::default();
        for (vi, tv) in volumes.iter().enumerate() {
            for (si, s) in tv.structures.iter().enumerate() {
                by_key.entry(s.key.clone()).or_default().push((vi, si));
            }
        }
        let cfg = EpisodeConfig {
            size: 32,
            ..Default::default()
        };
        let mut supports = 0;
        for _ in 0..10 {
            let ep = sample_episode(&volumes, &by_key, &cfg, &mut rng).expect("episode");
            assert_eq!(ep.support_images.len(), ep.support_masks.len());
            assert!(!ep.support_images.is_empty() && ep.support_images.len() <= 8);
            assert_eq!(ep.query_images.len(), ep.query_masks.len());
            for img in ep.support_images.iter().chain(&ep.query_images) {
                assert_eq!((img.width, img.height), (32, 32));
                assert!(img.data.iter().all(|v| v.is_finite()));
            }
            for m in ep.support_masks.iter().chain(&ep.query_masks) {
                assert!(m.data.iter().all(|&v| v == 0.0 || v == 1.0));
            }
            supports += ep
                .support_masks
                .iter()
                .filter(|m| m.data.contains(&1.0))
                .count();
        }
        assert!(supports > 10, "support masks show the structure");
    }
}
