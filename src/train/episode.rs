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
//!
//! A share of episodes (`p_chain`) is drawn instead as the chained propagation of
//! [`crate::engine::chain`] uses the network: an annotator's `k` slices (spread over
//! the structure, or its first and last slice plus evenly spaced ones), the region of
//! interest around all of them, and queries that share their `nearest` annotated slices
//! as the support set — between two annotations, or beyond the outermost one up to a few
//! slices past the structure's end, where propagation must learn to stop. Those end
//! zones are drawn more often than their share of slices.

use rand::RngExt;
use rand::rngs::StdRng;

use super::augment::{AugmentConfig, InTaskAugment, TaskAugment};
use super::data::{LabelledStructure, TrainVolume};
use crate::engine::chain::nearest_positions;
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
    /// Share of episodes drawn as chained propagation uses the network (0 in runs
    /// from before chaining).
    #[serde(default)]
    pub p_chain: f64,
    /// Annotated slices per chained query (`ChainOptions::nearest`).
    #[serde(default = "default_chain_nearest")]
    pub chain_nearest: usize,
    /// Draw the in-task augmentation once per volume of an episode instead of per
    /// image (false in runs from before).
    #[serde(default)]
    pub shared_in_task: bool,
    /// Every episode has exactly `chain_nearest` supports and `queries` queries
    /// ([`Self::fits`]; the draw is repeated otherwise): one tensor shape for the whole
    /// run, so that a GPU compiles and autotunes its kernels once instead of for every
    /// new shape (`docs/training.md`, "What one window on an H200 gave").
    #[serde(default)]
    pub fixed_shapes: bool,
}

impl EpisodeConfig {
    /// Whether `episode` has the shape this configuration asks for: any shape, or with
    /// [`Self::fixed_shapes`] exactly `chain_nearest` supports and `queries` queries.
    pub fn fits(&self, episode: &Episode) -> bool {
        self.fits_counts(episode.support_images.len(), episode.query_images.len())
    }

    /// [`Self::fits`] for an episode of `supports` supports and `queries` queries.
    fn fits_counts(&self, supports: usize, queries: usize) -> bool {
        !self.fixed_shapes || (supports == self.fixed_support_size() && queries == self.queries)
    }

    /// The support size of every episode with [`Self::fixed_shapes`].
    fn fixed_support_size(&self) -> usize {
        self.chain_nearest.max(1)
    }
}

fn default_chain_nearest() -> usize {
    2
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
            p_chain: 0.5,
            chain_nearest: 2,
            shared_in_task: true,
            fixed_shapes: false,
        }
    }
}

/// Model-ready inputs of one episode (all `size × size`).
#[derive(Clone, Debug, Default)]
pub struct Episode {
    /// Normalised support images.
    pub support_images: Vec<Image2D<f32>>,
    /// Support masks (0/1).
    pub support_masks: Vec<Image2D<f32>>,
    /// Normalised query images.
    pub query_images: Vec<Image2D<f32>>,
    /// Query targets (0/1).
    pub query_masks: Vec<Image2D<f32>>,
    /// Whether each query comes from another volume than the supports.
    pub query_other_volume: Vec<bool>,
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
    let mode = if rng.random_bool(cfg.p_full_slice) {
        RoiMode::FullSlice
    } else {
        RoiMode::default()
    };
    if rng.random_bool(cfg.p_chain) {
        return sample_chain_episode(&view, mode, cfg, rng);
    }
    let s = if cfg.fixed_shapes {
        cfg.fixed_support_size()
    } else {
        rng.random_range(cfg.support_range.0..=cfg.support_range.1)
    };
    let support = spread_slices(&structure.slices, s, rng);
    let region = view.region(&support, mode);
    let n = tv.volume.geometry().slice_count(Axis::K);
    let (lo, hi) = (structure.slices[0], *structure.slices.last().unwrap_or(&0));
    let margin = ((hi - lo + 1) / 4).max(2);

    let mut ep = Episode::default();
    for &z in &support {
        let (i, m) = view.pair(z, &region, cfg.size);
        ep.support_images.push(i);
        ep.support_masks.push(m);
    }
    for _ in 0..cfg.queries {
        let r: f64 = rng.random();
        let other_volume = r < cfg.p_cross_patient;
        let (image, mask) = if other_volume {
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
        ep.query_other_volume.push(other_volume);
    }
    if ep.query_images.is_empty() {
        return None;
    }
    augment_episode(&mut ep, &cfg.augment, cfg.shared_in_task, rng);
    Some(ep)
}

/// Draws the annotator's slices of a chained episode: `k` (1–5) spread over the
/// structure, or (a third of the time, `k` ≥ 2) its first and last slice with the rest
/// spread between, as the evaluation's `ends` protocol annotates.
fn chain_annotations(slices: &[usize], rng: &mut StdRng) -> Vec<usize> {
    let k = rng.random_range(1..=5usize).min(slices.len());
    let mut annotated = spread_slices(slices, k, rng);
    if k >= 2 && rng.random_bool(1.0 / 3.0) {
        annotated[0] = slices[0];
        *annotated.last_mut().expect("k >= 2") = *slices.last().expect("non-empty");
        annotated.dedup();
    }
    annotated
}

/// Slices beyond the outermost annotations drawn as chained queries reach past the
/// structure's ends by this many slices (where propagation must learn to stop).
const CHAIN_END_MARGIN: usize = 3;

/// Share of chained episodes whose queries lie near an end of the structure beyond the
/// outermost annotation (more than their share of slices: that is where chaining fails).
const P_CHAIN_END: f64 = 0.35;

/// The slices of one chained episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainDraw {
    /// The annotator's slices (ascending).
    pub annotated: Vec<usize>,
    /// The supports: the `nearest` annotated slices of every query (ascending).
    pub support: Vec<usize>,
    /// The query slices (the first one drawn, then others answered with the same
    /// supports).
    pub queries: Vec<usize>,
}

/// Draws a chained episode's slices for a structure on `slices` (ascending, non-empty)
/// of a volume of `n` slices: annotations, then a query slice (near an end beyond the
/// outermost annotation with probability [`P_CHAIN_END`] when there is one), its
/// `nearest` annotated slices as supports, and up to `queries - 1` more slices with the
/// same nearest annotated slices.
pub fn chain_draw(
    slices: &[usize],
    n: usize,
    nearest: usize,
    queries: usize,
    rng: &mut StdRng,
) -> Option<ChainDraw> {
    let annotated = chain_annotations(slices, rng);
    let (lo, hi) = (*slices.first()?, *slices.last()?);
    let (first, last) = (*annotated.first()?, *annotated.last()?);
    let span = lo.saturating_sub(CHAIN_END_MARGIN)..=(hi + CHAIN_END_MARGIN).min(n.checked_sub(1)?);
    let candidates: Vec<usize> = span.filter(|z| !annotated.contains(z)).collect();
    let near_end: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&z| {
            (z < first || z > last) && z.abs_diff(lo).min(z.abs_diff(hi)) <= CHAIN_END_MARGIN
        })
        .collect();
    let pool = if !near_end.is_empty() && rng.random_bool(P_CHAIN_END) {
        &near_end
    } else {
        &candidates
    };
    let anchor = *pool.get(rng.random_range(0..pool.len().max(1)))?;
    let nearest = nearest.max(1);
    let positions = nearest_positions(&annotated, anchor, nearest);
    let mut others: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&z| z != anchor && nearest_positions(&annotated, z, nearest) == positions)
        .collect();
    let mut picked = vec![anchor];
    while picked.len() < queries && !others.is_empty() {
        picked.push(others.swap_remove(rng.random_range(0..others.len())));
    }
    Some(ChainDraw {
        support: positions.iter().map(|&p| annotated[p]).collect(),
        annotated,
        queries: picked,
    })
}

/// A chained episode (see the module documentation): the region of interest around
/// all annotations, as the engine crops.
fn sample_chain_episode(
    view: &View<'_>,
    mode: RoiMode,
    cfg: &EpisodeConfig,
    rng: &mut StdRng,
) -> Option<Episode> {
    let n = view.tv.volume.geometry().slice_count(Axis::K);
    let draw = chain_draw(
        &view.structure.slices,
        n,
        cfg.chain_nearest,
        cfg.queries,
        rng,
    )?;
    // A draw of the wrong shape is turned down before its images are prepared.
    if !cfg.fits_counts(draw.support.len(), draw.queries.len()) {
        return None;
    }
    let region = view.region(&draw.annotated, mode);
    let mut ep = Episode::default();
    for &z in &draw.support {
        let (i, m) = view.pair(z, &region, cfg.size);
        ep.support_images.push(i);
        ep.support_masks.push(m);
    }
    for &z in &draw.queries {
        let (i, m) = view.pair(z, &region, cfg.size);
        ep.query_images.push(i);
        ep.query_masks.push(m);
        ep.query_other_volume.push(false);
    }
    augment_episode(&mut ep, &cfg.augment, cfg.shared_in_task, rng);
    Some(ep)
}

/// Applies one task augmentation to the whole episode, and in-task augmentations: with
/// `shared`, one draw for the supports and every query of the same volume and one per
/// query from another volume; otherwise one per image.
pub fn augment_episode(ep: &mut Episode, cfg: &AugmentConfig, shared: bool, rng: &mut StdRng) {
    let task = TaskAugment::sample(cfg, rng);
    let same_volume = InTaskAugment::sample(cfg, rng);
    let supports = ep
        .support_images
        .iter_mut()
        .zip(ep.support_masks.iter_mut())
        .map(|pair| (pair, false));
    let queries = ep
        .query_images
        .iter_mut()
        .zip(ep.query_masks.iter_mut())
        .zip(ep.query_other_volume.iter().copied());
    for ((image, mask), other_volume) in supports.chain(queries) {
        task.apply(image, mask);
        let in_task = if shared && !other_volume {
            same_volume
        } else {
            InTaskAugment::sample(cfg, rng)
        };
        in_task.apply(image, mask, rng);
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

    #[test]
    fn chained_queries_share_their_nearest_annotations_and_reach_past_the_ends() {
        let mut rng = StdRng::seed_from_u64(3);
        let slices: Vec<usize> = (20..60).collect();
        let (mut beyond, mut between) = (0, 0);
        for _ in 0..300 {
            let d = chain_draw(&slices, 100, 2, 6, &mut rng).expect("draw");
            assert!((1..=5).contains(&d.annotated.len()));
            assert!(d.annotated.iter().all(|z| slices.contains(z)));
            assert!(!d.queries.is_empty() && d.queries.len() <= 6);
            for &q in &d.queries {
                assert!((17..=62).contains(&q), "query {q} beyond the margin");
                assert!(!d.annotated.contains(&q));
                let nearest: Vec<usize> = nearest_positions(&d.annotated, q, 2)
                    .into_iter()
                    .map(|p| d.annotated[p])
                    .collect();
                assert_eq!(nearest, d.support, "query {q} of {:?}", d.annotated);
                if !(20..60).contains(&q) {
                    beyond += 1;
                } else if q > d.annotated[0] && q < *d.annotated.last().unwrap() {
                    between += 1;
                }
            }
        }
        // Slices past the structure's ends (empty targets) are drawn often, not rarely.
        assert!(beyond > 150, "{beyond} queries past the ends");
        assert!(between > 300, "{between} queries between annotations");
    }

    #[test]
    fn shared_in_task_augmentation_transforms_a_volumes_slices_alike() {
        let mut image = Image2D::filled(24, 24, 0.0f32);
        let mut mask = Image2D::filled(24, 24, 0.0f32);
        for y in 6..14 {
            for x in 8..18 {
                image.data[y * 24 + x] = 1.0 + x as f32 * 0.1;
                mask.data[y * 24 + x] = 1.0;
            }
        }
        let ep = Episode {
            support_images: vec![image.clone()],
            support_masks: vec![mask.clone()],
            query_images: vec![image.clone(), image],
            query_masks: vec![mask.clone(), mask],
            query_other_volume: vec![false, true],
        };
        let cfg = AugmentConfig {
            flip: 0.5,
            rot90: 0.5,
            intensity_flip: 0.0,
            edge_target: 0.0,
            affine: 1.0,
            contrast: 1.0,
            blur: 1.0,
            noise: 0.0,
        };
        let mut differs = 0;
        for seed in 0..10 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut shared = ep.clone();
            augment_episode(&mut shared, &cfg, true, &mut rng);
            assert_eq!(shared.support_images[0], shared.query_images[0]);
            assert_eq!(shared.support_masks[0], shared.query_masks[0]);
            differs += usize::from(shared.support_masks[0] != shared.query_masks[1]);
            let mut independent = ep.clone();
            augment_episode(&mut independent, &cfg, false, &mut rng);
            assert_ne!(independent.support_images[0], independent.query_images[0]);
        }
        // The query from another patient gets its own rotation and scale.
        assert!(differs >= 9, "{differs}");
    }
}
