//! Finding image/label NIfTI pairs in a data folder.
//!
//! Layout (that of `shared/data/volumes`): in each folder, files named
//! `<case>_<role>.nii[.gz]`, where the image role is `ct`, `image` or `img` and every
//! other file of the same case with a label role (`oar`, `ptv`, `label`, `labels`, `seg`,
//! `mask`) is a label map on the image's grid. Folders are searched recursively; the
//! folder path relative to the data root names the dataset (`openkbp/validation`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::volume::LabelValue;

const IMAGE_ROLES: &[&str] = &["ct", "image", "img"];
const LABEL_ROLES: &[&str] = &["oar", "ptv", "label", "labels", "seg", "mask"];

/// One label file of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSource {
    /// The role part of the file name (`oar`, `ptv`, `label`...).
    pub role: String,
    /// The file.
    pub path: PathBuf,
}

/// An image with its label files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Dataset name: the folder relative to the data root (the root's own name for
    /// files directly inside it).
    pub dataset: String,
    /// Case name (file-name prefix, e.g. `pt_201`).
    pub name: String,
    /// The image file.
    pub image: PathBuf,
    /// Its label maps.
    pub labels: Vec<LabelSource>,
}

/// One structure of one case: the unit the protocol scores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Index into the case list.
    pub case: usize,
    /// Index into the case's label files.
    pub label_file: usize,
    /// The label value in that file.
    pub label: LabelValue,
}

fn split_name(file: &Path) -> Option<(String, String)> {
    let name = file.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))?;
    let (case, role) = stem.rsplit_once('_')?;
    Some((case.to_string(), role.to_ascii_lowercase()))
}

/// Finds all cases under `root`, sorted by dataset then case name.
pub fn discover_cases(root: &Path) -> std::io::Result<Vec<Case>> {
    let mut folders = vec![root.to_path_buf()];
    let mut cases = Vec::new();
    while let Some(dir) = folders.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let mut by_case: BTreeMap<String, (Option<PathBuf>, Vec<LabelSource>)> = BTreeMap::new();
        for path in entries {
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let Some((case, role)) = split_name(&path) else {
                continue;
            };
            let entry = by_case.entry(case).or_default();
            if IMAGE_ROLES.contains(&role.as_str()) {
                entry.0 = Some(path);
            } else if LABEL_ROLES.contains(&role.as_str()) {
                entry.1.push(LabelSource { role, path });
            }
        }
        let dataset = dir
            .strip_prefix(root)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| root.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| ".".into());
        for (name, (image, labels)) in by_case {
            if let Some(image) = image.filter(|_| !labels.is_empty()) {
                cases.push(Case {
                    dataset: dataset.clone(),
                    name,
                    image,
                    labels,
                });
            }
        }
    }
    cases.sort_by(|a, b| {
        (&a.dataset, natural_key(&a.name)).cmp(&(&b.dataset, natural_key(&b.name)))
    });
    Ok(cases)
}

/// Sort key that orders `pt_9` before `pt_10`.
fn natural_key(name: &str) -> (String, u64) {
    let digits: String = name
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let n = digits
        .chars()
        .rev()
        .collect::<String>()
        .parse()
        .unwrap_or(0);
    (
        name.trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string(),
        n,
    )
}

/// Human names for label values, per label role, from a `summary.json` in `root` or up to
/// two folders above it (OpenKBP's `labels` for `oar`, `ptv_labels` for `ptv`). Missing
/// or unreadable files give no names.
pub fn load_label_names(root: &Path) -> BTreeMap<(String, LabelValue), String> {
    let mut names = BTreeMap::new();
    let Some(summary) = root
        .ancestors()
        .take(3)
        .map(|d| d.join("summary.json"))
        .find(|p| p.is_file())
    else {
        return names;
    };
    let Ok(text) = std::fs::read_to_string(summary) else {
        return names;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return names;
    };
    for (key, role) in [("labels", "oar"), ("ptv_labels", "ptv")] {
        if let Some(map) = json.get(key).and_then(|m| m.as_object()) {
            for (value, name) in map {
                if let (Ok(v), Some(n)) = (value.parse::<LabelValue>(), name.as_str()) {
                    names.insert((role.to_string(), v), n.to_string());
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_images_with_their_label_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("set/validation");
        std::fs::create_dir_all(&sub).unwrap();
        for f in [
            "pt_10_ct.nii.gz",
            "pt_10_oar.nii.gz",
            "pt_9_ct.nii.gz",
            "pt_9_ptv.nii.gz",
            "pt_9_oar.nii.gz",
            "pt_8_ct.nii.gz",
            "notes.txt",
        ] {
            std::fs::write(sub.join(f), b"").unwrap();
        }
        std::fs::write(dir.path().join("t1_image.nii"), b"").unwrap();
        std::fs::write(dir.path().join("t1_label.nii"), b"").unwrap();
        let cases = discover_cases(dir.path()).unwrap();
        let names: Vec<_> = cases
            .iter()
            .map(|c| (c.dataset.as_str(), c.name.as_str(), c.labels.len()))
            .collect();
        let root_name = dir.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(
            names,
            vec![
                (root_name, "t1", 1),
                ("set/validation", "pt_9", 2),
                ("set/validation", "pt_10", 1)
            ]
        );
        assert_eq!(cases[1].labels[0].role, "oar");
    }

    #[test]
    fn reads_openkbp_label_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("summary.json"),
            r#"{"labels": {"1": "Brainstem"}, "ptv_labels": {"3": "PTV70"}}"#,
        )
        .unwrap();
        let sub = dir.path().join("validation");
        std::fs::create_dir(&sub).unwrap();
        let names = load_label_names(&sub);
        assert_eq!(
            names.get(&("oar".into(), 1)).map(String::as_str),
            Some("Brainstem")
        );
        assert_eq!(
            names.get(&("ptv".into(), 3)).map(String::as_str),
            Some("PTV70")
        );
    }
}
