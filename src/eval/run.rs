//! Running the protocol over a data folder.

use super::*;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Numbers of annotated slices to simulate.
    pub ks: Vec<usize>,
    /// The slice axis.
    pub axis: Axis,
    /// Only these label roles (`oar`, `ptv`...), all when empty.
    pub roles: Vec<String>,
    /// Stop after this many cases.
    pub max_cases: Option<usize>,
}

/// Runs the protocol over `cases` for every method; `on_result` sees each structure's
/// result as it is scored (for progress output).
pub fn evaluate_cases(
    cases: &[Case],
    label_names: &std::collections::BTreeMap<(String, LabelValue), String>,
    options: &EvalOptions,
    methods: &mut [&mut dyn Propagator],
    on_result: &mut dyn FnMut(&TaskResult),
) -> anyhow::Result<EvalReport> {
    use anyhow::Context as _;
    let mut report = EvalReport {
        methods: methods.iter().map(|m| m.name().to_string()).collect(),
        ks: options.ks.clone(),
        results: Vec::new(),
    };
    for case in cases.iter().take(options.max_cases.unwrap_or(usize::MAX)) {
        let volume = crate::io::open_volume(&case.image)
            .with_context(|| format!("reading image of case {}", case.name))?
            .volume;
        for source in &case.labels {
            if !options.roles.is_empty() && !options.roles.contains(&source.role) {
                continue;
            }
            let labels = crate::io::read_label_map(&source.path, volume.geometry())
                .with_context(|| format!("reading {} labels of case {}", source.role, case.name))?;
            for (label, _) in labels.label_counts() {
                let truth = binary_mask(&labels, label);
                let name = label_names
                    .get(&(source.role.clone(), label))
                    .map(|n| format!("{} {label} {n}", source.role))
                    .unwrap_or_else(|| format!("{} {label}", source.role));
                for &k in &options.ks {
                    let Some((annotated, scores)) =
                        evaluate_structure(&volume, &truth, options.axis, k, methods)?
                    else {
                        continue;
                    };
                    let result = TaskResult {
                        dataset: case.dataset.clone(),
                        case: case.name.clone(),
                        label: name.clone(),
                        k,
                        extent: truth.slice_extent(options.axis, 1).unwrap_or((0, 0)),
                        annotated,
                        scores: report
                            .methods
                            .iter()
                            .zip(scores)
                            .map(|(m, dice)| MethodScore {
                                method: m.clone(),
                                dice,
                            })
                            .collect(),
                    };
                    on_result(&result);
                    report.results.push(result);
                }
            }
        }
    }
    Ok(report)
}
