//! Running the protocol over a data folder.

use super::*;
use crate::dataset::Case;

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
    /// Skip this many cases first.
    pub skip_cases: usize,
    /// Where the simulated user draws.
    pub protocol: Protocol,
}

/// Runs the protocol over `cases` for every method; `on_result` sees each structure's
/// result as it is scored (for progress output).
pub fn evaluate_cases(
    cases: &[Case],
    label_names: &std::collections::BTreeMap<(String, LabelValue), String>,
    options: &EvalOptions,
    methods: &mut [&mut dyn Propagator],
    on_result: &mut dyn FnMut(&TaskResult),
) -> Result<EvalReport, EvalError> {
    let mut report = EvalReport {
        methods: methods.iter().map(|m| m.name().to_string()).collect(),
        ks: options.ks.clone(),
        protocol: options.protocol,
        results: Vec::new(),
    };
    let chosen = cases
        .iter()
        .skip(options.skip_cases)
        .take(options.max_cases.unwrap_or(usize::MAX));
    for case in chosen {
        // One copy of the image per case, shared by every structure and method.
        let volume = Arc::new(
            crate::io::open_volume(&case.image)
                .map_err(|source| EvalError::Load {
                    what: "image".into(),
                    case: case.name.clone(),
                    source,
                })?
                .volume,
        );
        for source in &case.labels {
            if !options.roles.is_empty() && !options.roles.contains(&source.role) {
                continue;
            }
            let labels =
                crate::io::read_label_map(&source.path, volume.geometry()).map_err(|e| {
                    EvalError::Load {
                        what: format!("{} labels", source.role),
                        case: case.name.clone(),
                        source: e,
                    }
                })?;
            for (label, _) in labels.label_counts() {
                let truth = binary_mask(&labels, label);
                let name = label_names
                    .get(&(source.role.clone(), label))
                    .map(|n| format!("{} {label} {n}", source.role))
                    .unwrap_or_else(|| format!("{} {label}", source.role));
                for &k in &options.ks {
                    let Some((annotated, scores)) = evaluate_structure(
                        &volume,
                        &truth,
                        options.axis,
                        k,
                        options.protocol,
                        methods,
                    )?
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
                            .map(|(m, overlap)| MethodScore {
                                method: m.clone(),
                                dice: overlap.dice(),
                                by_distance: overlap.by_distance,
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
