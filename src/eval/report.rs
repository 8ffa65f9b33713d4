//! Evaluation results: per-structure records, per-label and per-dataset means, and the
//! text table `icseg eval` prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Distances (slices from the nearest annotated slice) the report breaks Dice down by.
pub const DISTANCES: usize = 8;

/// The score of one method on one structure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodScore {
    /// Method name.
    pub method: String,
    /// Dice over the non-annotated slices.
    pub dice: f64,
    /// `[intersection, |pred| + |truth|]` in voxels on the slices at distance `d` =
    /// 1..=[`DISTANCES`] from the nearest annotated slice (index `d − 1`).
    #[serde(default)]
    pub by_distance: Vec<[u64; 2]>,
}

/// One structure of one case at one `k`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskResult {
    /// Dataset (folder) name.
    pub dataset: String,
    /// Case name.
    pub case: String,
    /// Label display name, e.g. `oar 1 Brainstem`.
    pub label: String,
    /// Annotated slices.
    pub k: usize,
    /// First and last slice of the structure.
    pub extent: (usize, usize),
    /// The slices the simulated user annotated.
    pub annotated: Vec<usize>,
    /// One score per method, in [`EvalReport::methods`] order.
    pub scores: Vec<MethodScore>,
}

/// Everything `icseg eval` measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvalReport {
    /// Method names in column order.
    pub methods: Vec<String>,
    /// The `k` values evaluated.
    pub ks: Vec<usize>,
    /// The annotation protocol.
    #[serde(default)]
    pub protocol: super::Protocol,
    /// All structure results.
    pub results: Vec<TaskResult>,
}

/// Mean Dice per `(k, method)`.
pub type ScoresByColumn = BTreeMap<(usize, String), f64>;

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

impl EvalReport {
    /// Mean Dice per `(dataset, label)` → per `(k, method)`, with the structure count.
    pub fn per_label(&self) -> BTreeMap<(String, String), (usize, ScoresByColumn)> {
        type Samples = BTreeMap<(usize, String), Vec<f64>>;
        let mut groups: BTreeMap<(String, String), Samples> = BTreeMap::new();
        for r in &self.results {
            let g = groups
                .entry((r.dataset.clone(), r.label.clone()))
                .or_default();
            for s in &r.scores {
                g.entry((r.k, s.method.clone())).or_default().push(s.dice);
            }
        }
        groups
            .into_iter()
            .map(|(key, g)| {
                let n = g.values().map(Vec::len).max().unwrap_or(0);
                (
                    key,
                    (n, g.into_iter().map(|(k, v)| (k, mean(&v))).collect()),
                )
            })
            .collect()
    }

    /// Mean Dice over all structures of a dataset, for one `k` and method.
    pub fn dataset_mean(&self, dataset: &str, k: usize, method: &str) -> f64 {
        let v: Vec<f64> = self
            .results
            .iter()
            .filter(|r| r.dataset == dataset && r.k == k)
            .filter_map(|r| r.scores.iter().find(|s| s.method == method).map(|s| s.dice))
            .collect();
        mean(&v)
    }

    /// The datasets present, sorted.
    pub fn datasets(&self) -> Vec<String> {
        let mut d: Vec<String> = self.results.iter().map(|r| r.dataset.clone()).collect();
        d.sort();
        d.dedup();
        d
    }

    /// Dice pooled over all structures at `k` for `method` on the slices at distance
    /// `d` = 1..=[`DISTANCES`] from the nearest annotated slice (index `d − 1`): voxels
    /// summed first, so large structures weigh more. NaN where no structure reaches.
    pub fn dice_by_distance(&self, k: usize, method: &str) -> Vec<f64> {
        let mut sums = vec![[0u64; 2]; DISTANCES];
        for r in self.results.iter().filter(|r| r.k == k) {
            for s in r.scores.iter().filter(|s| s.method == method) {
                for (acc, v) in sums.iter_mut().zip(&s.by_distance) {
                    acc[0] += v[0];
                    acc[1] += v[1];
                }
            }
        }
        // No voxel at that distance in either mask: nothing to score (NaN, "—").
        sums.into_iter()
            .map(|s| {
                if s[1] == 0 {
                    f64::NAN
                } else {
                    super::dice_of(s)
                }
            })
            .collect()
    }

    /// Dice by distance from the nearest annotated slice, one row per `k` and method.
    pub fn distance_table(&self) -> String {
        let mut out = String::new();
        let header: String = (1..=DISTANCES)
            .map(|d| format!(" {:>6}", format!("d={d}")))
            .collect();
        let _ = writeln!(
            out,
            "Dice by distance to the nearest annotated slice (pooled voxels)"
        );
        let _ = writeln!(out, "{:<28}{header}", "method@k");
        for &k in &self.ks {
            for m in &self.methods {
                let cells: String = self
                    .dice_by_distance(k, m)
                    .iter()
                    .map(|v| {
                        if v.is_nan() {
                            format!(" {:>6}", "—")
                        } else {
                            format!(" {v:>6.3}")
                        }
                    })
                    .collect();
                let _ = writeln!(out, "{:<28}{cells}", format!("{m}@{k}"));
            }
        }
        out
    }

    /// The per-label table followed by the dataset means, as printed by `icseg eval`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let columns: Vec<(usize, &str)> = self
            .ks
            .iter()
            .flat_map(|&k| self.methods.iter().map(move |m| (k, m.as_str())))
            .collect();
        let header: String = columns
            .iter()
            .map(|(k, m)| format!(" {:>11}", format!("{m}@{k}")))
            .collect();
        let per_label = self.per_label();
        for dataset in self.datasets() {
            let _ = writeln!(out, "dataset {dataset}");
            let _ = writeln!(out, "{:<28} {:>4}{header}", "label", "n");
            for ((d, label), (n, scores)) in &per_label {
                if *d != dataset {
                    continue;
                }
                let cells: String = columns
                    .iter()
                    .map(|(k, m)| {
                        format!(
                            " {:>11.3}",
                            scores
                                .get(&(*k, m.to_string()))
                                .copied()
                                .unwrap_or(f64::NAN)
                        )
                    })
                    .collect();
                let _ = writeln!(out, "{label:<28} {n:>4}{cells}");
            }
            let n =
                self.results.iter().filter(|r| r.dataset == dataset).count() / self.ks.len().max(1);
            let cells: String = columns
                .iter()
                .map(|(k, m)| format!(" {:>11.3}", self.dataset_mean(&dataset, *k, m)))
                .collect();
            let _ = writeln!(out, "{:<28} {n:>4}{cells}\n", "MEAN");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(label: &str, k: usize, a: f64, b: f64) -> TaskResult {
        TaskResult {
            dataset: "val".into(),
            case: "pt_1".into(),
            label: label.into(),
            k,
            extent: (0, 9),
            annotated: vec![5],
            scores: vec![
                MethodScore {
                    method: "nearest".into(),
                    dice: a,
                    by_distance: vec![[1, 4], [0, 0]],
                },
                MethodScore {
                    method: "interp".into(),
                    dice: b,
                    by_distance: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn means_are_per_label_and_per_dataset() {
        let report = EvalReport {
            methods: vec!["nearest".into(), "interp".into()],
            ks: vec![1, 3],
            protocol: crate::eval::Protocol::Inner,
            results: vec![
                result("a", 1, 0.2, 0.0),
                result("a", 3, 0.6, 0.8),
                result("b", 3, 0.4, 0.6),
                result("b", 1, 0.4, 0.0),
            ],
        };
        assert!((report.dataset_mean("val", 3, "interp") - 0.7).abs() < 1e-12);
        assert!((report.dataset_mean("val", 1, "nearest") - 0.3).abs() < 1e-12);
        let per_label = report.per_label();
        let (n, a) = &per_label[&("val".to_string(), "a".to_string())];
        assert_eq!(*n, 1);
        assert!((a[&(3, "nearest".to_string())] - 0.6).abs() < 1e-12);
        let table = report.table();
        assert!(table.contains("nearest@3"));
        assert!(table.contains("MEAN"));
        assert!(table.contains("0.700"), "{table}");
        // Two structures at k = 3, each [1, 4] at d = 1: pooled 2·2 / 8.
        let by_d = report.dice_by_distance(3, "nearest");
        assert!((by_d[0] - 0.5).abs() < 1e-12);
        assert!(by_d[1].is_nan(), "nothing at d = 2 on either side");
        assert!(report.distance_table().contains("nearest@3"));
    }
}
