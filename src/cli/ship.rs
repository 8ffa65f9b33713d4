//! `icseg ship`: put a training run's best weights into `weights/` with a manifest that
//! says how they were made (configuration, data, steps, time, device, seed) and how they
//! score (`icseg eval`'s table).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::eval::EvalReport;
use crate::model::Model;
use crate::train::{RunFiles, TrainState};

/// Arguments of `icseg ship`.
#[derive(Debug, Args)]
pub struct ShipArgs {
    /// The training run folder (`icseg train --out`).
    #[arg(long)]
    pub run: PathBuf,
    /// Ship `latest.bpk` instead of the best validated checkpoint.
    #[arg(long)]
    pub latest: bool,
    /// `icseg eval --json` output of these weights on the validation data.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// The weights folder.
    #[arg(long, default_value = "weights")]
    pub out: PathBuf,
    /// The data root the manifest names training folders relative to (default:
    /// `$ICSEG_DATA`, else `../shared/data`).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
}

/// Runs `icseg ship`.
pub fn run(args: ShipArgs) -> anyhow::Result<()> {
    let files = RunFiles::new(&args.run);
    let mut state: TrainState = serde_json::from_slice(
        &std::fs::read(&files.state)
            .with_context(|| format!("cannot read {}", files.state.display()))?,
    )
    .context("the run's state.json is damaged")?;
    // The manifest names data folders relative to the data root, not as the machine
    // that trained saw them.
    let data_root = args
        .data_root
        .clone()
        .or_else(|| std::env::var_os("ICSEG_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    for d in &mut state.config.data {
        *d = relative_to(&data_root, d);
    }
    if let Some(v) = &mut state.config.validation_data {
        *v = relative_to(&data_root, v);
    }
    let source = if args.latest {
        &files.latest
    } else {
        &files.best
    };
    let config = &state.config.model;
    // Check the file really holds this configuration before shipping it.
    Model::load_weights(config, source, &burn::tensor::Device::flex())
        .with_context(|| format!("{} is not loadable", source.display()))?;
    let bytes = std::fs::read(source)?;
    std::fs::create_dir_all(&args.out)?;
    let target = args.out.join(format!("icseg-{}.bpk", config.name()));
    crate::io::write_atomic(&target, &bytes)
        .with_context(|| format!("cannot write {}", target.display()))?;

    let eval: Option<EvalReport> = match &args.eval {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
            )
            .context("the evaluation JSON is damaged")?,
        ),
        None => None,
    };
    let shipped_step = if args.latest {
        Some(state.step)
    } else {
        state.best_step
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Shipped weights\n");
    let _ = writeln!(
        md,
        "`{}` ({:.1} MB): the `{}` configuration, produced by `icseg train` and copied here by \
         `icseg ship` from the {} checkpoint (step {}). Generated file — do not edit by hand.\n",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default(),
        bytes.len() as f64 / 1e6,
        config.name(),
        if args.latest {
            "latest"
        } else {
            "best validated"
        },
        shipped_step.map_or("?".into(), |s| s.to_string()),
    );
    let c = &state.config;
    let _ = writeln!(md, "## How it was trained\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| data (under the data root, `$ICSEG_DATA`) | {} |",
        c.data.join(", ")
    );
    let _ = writeln!(
        md,
        "| validation data | {} |",
        c.validation_data.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        md,
        "| synthetic episodes | {:.0} % |",
        100.0 * c.synthetic_rate
    );
    let _ = writeln!(
        md,
        "| steps | {} of {} planned, {} episodes per step, {} queries per episode, S = {}..={} |",
        state.step,
        c.steps,
        c.episodes_per_step,
        c.episodes.queries,
        c.episodes.support_range.0,
        c.episodes.support_range.1
    );
    let _ = writeln!(
        md,
        "| optimiser | AdamW, peak lr {:.1e}, weight decay {:.0e}, warm-up {} steps, halved at 48 % and 65 % of the run |",
        c.learning_rate, c.weight_decay, c.warmup_steps
    );
    let _ = writeln!(md, "| EMA μ | {} |", c.ema_mu);
    let _ = writeln!(md, "| seed | {} |", c.seed);
    let _ = writeln!(md, "| wall time | {:.1} h |", state.wall_seconds / 3600.0);
    let _ = writeln!(
        md,
        "| devices (per session) | {} |",
        state.devices.join("; ")
    );
    let _ = writeln!(
        md,
        "\nReproduce: `icseg train --config {} --steps {} --seed {} --synthetic-rate {} --data <each data folder> --val-data <validation folder> --out RUN` (resume with `--resume`), then `icseg ship --run RUN --eval EVAL.json`.\n",
        config.name(),
        c.steps,
        c.seed,
        c.synthetic_rate
    );
    let _ = writeln!(md, "## Validation during training\n");
    let _ = writeln!(
        md,
        "Fixed episodes from the validation folder: Dice on slices holding the structure, share of empty slices left empty, and the selection score 0.8·Dice + 0.2·empty.\n"
    );
    let _ = writeln!(
        md,
        "| step | loss | Dice | empty | score |\n|---|---|---|---|---|"
    );
    for v in &state.validations {
        let mark = if Some(v.step) == state.best_step {
            " **best**"
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "| {}{mark} | {:.4} | {:.4} | {:.3} | {:.4} |",
            v.step,
            v.loss,
            v.dice,
            v.empty_correct,
            v.score()
        );
    }
    if let Some(report) = &eval {
        let _ = writeln!(md, "\n## `icseg eval` on the validation data\n");
        let _ = writeln!(
            md,
            "Dice over all non-annotated slices, `k` simulated annotations per structure (see docs/evaluation.md).\n"
        );
        let _ = writeln!(md, "```\n{}```", report.table());
    }
    let _ = writeln!(
        md,
        "\n## Configuration\n\n```json\n{}\n```",
        serde_json::to_string_pretty(config)?
    );
    crate::io::write_atomic(&args.out.join("MANIFEST.md"), md.as_bytes())?;
    let manifest = serde_json::json!({
        "file": target.file_name().and_then(|n| n.to_str()),
        "bytes": bytes.len(),
        "shipped_step": shipped_step,
        "train_state": state,
        "eval_means": eval.as_ref().map(|r| {
            r.datasets().iter().map(|d| {
                let cols: serde_json::Map<String, serde_json::Value> = r.ks.iter().flat_map(|&k| r.methods.iter().map(move |m| (k, m)))
                    .map(|(k, m)| (format!("{m}@{k}"), serde_json::json!(r.dataset_mean(d, k, m))))
                    .collect();
                (d.clone(), serde_json::Value::Object(cols))
            }).collect::<serde_json::Map<_, _>>()
        }),
    });
    crate::io::write_atomic(
        &args.out.join("manifest.json"),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    eprintln!(
        "shipped {} and {}",
        target.display(),
        args.out.join("MANIFEST.md").display()
    );
    Ok(())
}

/// `path` relative to `root` when it lies inside it (compared as written, then with
/// both resolved), otherwise `path` as given.
fn relative_to(root: &Path, path: &str) -> String {
    let p = Path::new(path);
    let stripped = p
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.components().any(|c| c == Component::ParentDir))
        .map(Path::to_path_buf)
        .or_else(|| {
            let (root, p) = (root.canonicalize().ok()?, p.canonicalize().ok()?);
            p.strip_prefix(root).ok().map(Path::to_path_buf)
        });
    match stripped {
        Some(r) if !r.as_os_str().is_empty() => r.display().to_string(),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_folders_are_named_relative_to_the_data_root() {
        let root = Path::new("/work/shared/data");
        assert_eq!(
            relative_to(root, "/work/shared/data/volumes/openkbp/train"),
            "volumes/openkbp/train"
        );
        assert_eq!(relative_to(root, "/elsewhere/cases"), "/elsewhere/cases");
        assert_eq!(relative_to(root, "/work/shared/data"), "/work/shared/data");
        // The same folder written through another path is found once resolved.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/volumes/x")).unwrap();
        let written = dir.path().join("data/../data/volumes/x");
        assert_eq!(
            relative_to(&dir.path().join("data"), &written.display().to_string()),
            "volumes/x"
        );
    }
}
