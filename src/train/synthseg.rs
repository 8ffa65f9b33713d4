//! SynthSeg-style training volumes (Billot et al., *Medical Image Analysis* 86, 2023):
//! images of random contrast synthesised from brain label maps, so the network learns
//! to follow a structure's shape across contrasts rather than one CT window.
//!
//! For each label map and each contrast: every label gets its own random mean intensity
//! and spread (a Gaussian mixture, the background too), the image is multiplied by a
//! smooth random bias field and passed through a random gamma. Blur and noise are added
//! per episode by the in-task augmentations ([`super::augment::InTaskAugment`]).
//! SynthSeg also simulates a random acquisition resolution; we do not (yet).
//!
//! Every contrast of one label map is its own volume; all share the map's structure
//! keys (`synthseg/label/<value>`), so cross-patient queries pair one subject's
//! ventricle in one contrast with another subject's in another.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::TrainError;
use super::data::TrainVolume;
use super::synthetic::{gaussian, smooth_noise};
use crate::volume::{LabelMap, Modality, Volume};

/// Reads a label map stored as any NIfTI data type (some of the shared maps are float32:
/// values are rounded).
pub fn read_label_map(path: &Path) -> Result<LabelMap, TrainError> {
    let case = |source| TrainError::Case {
        case: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        what: "the label map".into(),
        source,
    };
    let volume = crate::io::open_volume(path).map_err(case)?.volume;
    let labels = volume
        .voxels()
        .iter()
        .map(|&v| v.round().clamp(0.0, f32::from(u16::MAX)) as u16)
        .collect();
    Ok(LabelMap::new(volume.geometry().clone(), labels).expect("same grid as the volume"))
}

/// Synthesises one image of random contrast from `labels` (deterministic for `seed`).
pub fn synthesise(labels: &LabelMap, seed: u64) -> Volume {
    let mut rng = StdRng::seed_from_u64(seed);
    let classes = usize::from(labels.max_label()) + 1;
    let means: Vec<f32> = (0..classes)
        .map(|_| rng.random_range(10.0..240.0))
        .collect();
    let spreads: Vec<f32> = (0..classes).map(|_| rng.random_range(1.0..20.0)).collect();
    // The background is dark in most MR contrasts: keep it so two times out of three.
    let mut means = means;
    if rng.random_bool(2.0 / 3.0) {
        means[0] = rng.random_range(0.0..20.0);
    }
    let dims = labels.geometry().dims;
    let bias = smooth_noise(dims, [4, 4, 4], &mut rng);
    let bias_gain: f32 = rng.random_range(0.0..0.35);
    let gamma = (0.25 * gaussian(&mut rng)).exp();
    let mut voxels: Vec<f32> = labels
        .labels()
        .iter()
        .zip(&bias)
        .map(|(&l, &b)| {
            let l = usize::from(l);
            let v = (means[l] + spreads[l] * gaussian(&mut rng)).max(0.0);
            v * (bias_gain * b).exp()
        })
        .collect();
    let max = voxels.iter().copied().fold(0.0f32, f32::max).max(1e-6);
    for v in &mut voxels {
        *v = 255.0 * (*v / max).powf(gamma);
    }
    Volume::new(labels.geometry().clone(), voxels, Modality::Mr).expect("sizes match")
}

/// Loads up to `max_maps` label maps (`*.nii.gz`, sorted by name) from `dir` and
/// synthesises `contrasts` images of each, reporting each map loaded.
pub fn load(
    dir: &Path,
    max_maps: usize,
    contrasts: usize,
    seed: u64,
    on_map: &mut dyn FnMut(usize, usize),
) -> Result<Vec<TrainVolume>, TrainError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(TrainError::io("list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".nii.gz") || n.ends_with(".nii"))
        })
        .collect();
    files.sort();
    files.truncate(max_maps);
    let mut out = Vec::new();
    for (m, path) in files.iter().enumerate() {
        on_map(m, files.len());
        let labels = read_label_map(path)?;
        let name = format!("synthseg{m}");
        // The structures of a map are the same in every contrast: list them once.
        let mut structures = None;
        for c in 0..contrasts.max(1) {
            let seed = seed.wrapping_mul(7919).wrapping_add((m * 64 + c) as u64);
            let image = synthesise(&labels, seed);
            let name = format!("{name}c{c}");
            let volume = match &structures {
                Some(structures) => TrainVolume {
                    dataset: "synthseg".into(),
                    name,
                    volume: image,
                    label_maps: vec![labels.clone()],
                    structures: Vec::clone(structures),
                },
                None => TrainVolume::new(
                    "synthseg".into(),
                    name,
                    image,
                    vec![("label".into(), labels.clone())],
                ),
            };
            structures.get_or_insert_with(|| volume.structures.clone());
            out.push(volume);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn two_label_map() -> LabelMap {
        let g = Geometry::axis_aligned([16, 16, 6], [1.0; 3]);
        let mut labels = LabelMap::empty(g);
        for z in 0..6 {
            for y in 4..12 {
                for x in 2..8 {
                    labels.set([x, y, z], 4);
                }
                for x in 9..14 {
                    labels.set([x, y, z], 17);
                }
            }
        }
        labels
    }

    fn label_mean(v: &Volume, labels: &LabelMap, label: u16) -> f32 {
        let (sum, n) = labels
            .labels()
            .iter()
            .zip(v.voxels())
            .filter(|(l, _)| **l == label)
            .fold((0.0, 0), |(s, n), (_, &x)| (s + x, n + 1));
        sum / n as f32
    }

    #[test]
    fn each_label_gets_its_own_contrast_and_seeds_change_it() {
        let labels = two_label_map();
        let a = synthesise(&labels, 1);
        let b = synthesise(&labels, 2);
        assert_eq!(a.voxels(), synthesise(&labels, 1).voxels(), "deterministic");
        assert_eq!(a.dims(), labels.geometry().dims);
        assert!(
            a.voxels()
                .iter()
                .all(|v| v.is_finite() && (0.0..=255.0).contains(v))
        );
        // Two labels differ in mean in each image, and the contrast differs between seeds.
        let (a4, a17) = (label_mean(&a, &labels, 4), label_mean(&a, &labels, 17));
        let (b4, b17) = (label_mean(&b, &labels, 4), label_mean(&b, &labels, 17));
        assert!((a4 - a17).abs() > 1.0, "{a4} {a17}");
        assert!((a4 - a17) != (b4 - b17), "contrasts differ between seeds");
    }

    #[test]
    fn contrasts_of_one_map_share_its_structures() {
        let dir = tempfile::tempdir().unwrap();
        crate::io::write_label_map(&dir.path().join("map.nii.gz"), &two_label_map()).unwrap();
        let volumes = load(dir.path(), 10, 3, 0, &mut |_, _| {}).unwrap();
        assert_eq!(volumes.len(), 3);
        let keys: Vec<&str> = volumes[0]
            .structures
            .iter()
            .map(|s| s.key.as_str())
            .collect();
        assert_eq!(keys, ["synthseg/label/4", "synthseg/label/17"]);
        for v in &volumes[1..] {
            assert_eq!(v.structures.len(), 2);
            assert_eq!(v.structures[1].slices, (0..6).collect::<Vec<_>>());
            assert_ne!(v.volume.voxels(), volumes[0].volume.voxels());
        }
    }
}
