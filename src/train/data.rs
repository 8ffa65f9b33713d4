//! Training volumes held in memory, with the structures that episodes are drawn from.

use std::path::Path;

use super::TrainError;

use crate::dataset::discover_cases;
use crate::volume::{Axis, LabelMap, LabelValue, Volume};

/// One labelled structure of a training volume, along one axis.
#[derive(Clone, Debug)]
pub struct LabelledStructure {
    /// Index of the label map in [`TrainVolume::label_maps`].
    pub map: usize,
    /// The label value.
    pub label: LabelValue,
    /// A name shared by the same structure in every volume of a dataset
    /// (`openkbp/train/oar/3`), used to find cross-patient queries.
    pub key: String,
    /// Slices (along [`Axis::K`]) that contain the label.
    pub slices: Vec<usize>,
}

/// A volume with its label maps.
pub struct TrainVolume {
    /// Dataset (folder) name.
    pub dataset: String,
    /// Case name.
    pub name: String,
    /// The image.
    pub volume: Volume,
    /// Its label maps (OpenKBP: organs at risk and target volumes).
    pub label_maps: Vec<LabelMap>,
    /// Every structure with at least [`MIN_SLICES`] slices along [`Axis::K`].
    pub structures: Vec<LabelledStructure>,
}

/// Structures present on fewer slices than this are not used for training.
pub const MIN_SLICES: usize = 3;

/// Slices along `axis` on which `labels` contains `label`, ascending.
pub fn slices_with_label(labels: &LabelMap, axis: Axis, label: LabelValue) -> Vec<usize> {
    let g = labels.geometry();
    let [nx, ny, _] = g.dims;
    let mut present = vec![false; g.slice_count(axis)];
    for (n, &v) in labels.labels().iter().enumerate() {
        if v == label {
            let ijk = [n % nx, (n / nx) % ny, n / (nx * ny)];
            present[ijk[axis.index()]] = true;
        }
    }
    present
        .iter()
        .enumerate()
        .filter(|(_, p)| **p)
        .map(|(z, _)| z)
        .collect()
}

impl TrainVolume {
    /// Builds the structure list of a loaded volume.
    pub fn new(
        dataset: String,
        name: String,
        volume: Volume,
        label_maps: Vec<(String, LabelMap)>,
    ) -> Self {
        let mut structures = Vec::new();
        for (map, (role, labels)) in label_maps.iter().enumerate() {
            for (label, _) in labels.label_counts() {
                let slices = slices_with_label(labels, Axis::K, label);
                if slices.len() >= MIN_SLICES {
                    structures.push(LabelledStructure {
                        map,
                        label,
                        key: format!("{dataset}/{role}/{label}"),
                        slices,
                    });
                }
            }
        }
        Self {
            dataset,
            name,
            volume,
            label_maps: label_maps.into_iter().map(|(_, m)| m).collect(),
            structures,
        }
    }
}

/// Loads every image/label pair under `root` (layout of [`crate::dataset::discover_cases`]),
/// at most `max_cases` of them, reporting progress through `on_case`.
pub fn load_volumes(
    root: &Path,
    max_cases: Option<usize>,
    on_case: &mut dyn FnMut(usize, usize),
) -> Result<Vec<TrainVolume>, TrainError> {
    let cases = discover_cases(root).map_err(TrainError::io("list", root))?;
    let total = cases.len().min(max_cases.unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(total);
    for (n, case) in cases.into_iter().take(total).enumerate() {
        on_case(n, total);
        let volume = crate::io::open_volume(&case.image)
            .map_err(|source| TrainError::Case {
                case: case.name.clone(),
                what: "the image".into(),
                source,
            })?
            .volume;
        let mut maps = Vec::new();
        for source in &case.labels {
            let labels =
                crate::io::read_label_map(&source.path, volume.geometry()).map_err(|e| {
                    TrainError::Case {
                        case: case.name.clone(),
                        what: format!("the {} labels", source.role),
                        source: e,
                    }
                })?;
            maps.push((source.role.clone(), labels));
        }
        out.push(TrainVolume::new(case.dataset, case.name, volume, maps));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn structures_list_the_slices_holding_each_label() {
        let g = Geometry::axis_aligned([4, 4, 8], [1.0; 3]);
        let mut labels = LabelMap::empty(g.clone());
        for z in [1, 2, 3, 6] {
            labels.set([1, 1, z], 2);
        }
        labels.set([0, 0, 0], 5); // on one slice only: too short to train on
        let volume = Volume::new(g.clone(), vec![0.0; 128], crate::volume::Modality::Ct).unwrap();
        let tv = TrainVolume::new(
            "set".into(),
            "pt_1".into(),
            volume,
            vec![("oar".into(), labels)],
        );
        assert_eq!(tv.structures.len(), 1);
        assert_eq!(tv.structures[0].slices, vec![1, 2, 3, 6]);
        assert_eq!(tv.structures[0].key, "set/oar/2");
    }
}
