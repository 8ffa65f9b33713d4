//! `icseg eval`: the simulated-annotator protocol over a data folder.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::inference::ModelArgs;
use crate::eval::{
    self, EvalOptions, NearestSlice, NetworkPropagator, Propagator, ShapeInterpolation,
};
use crate::volume::Axis;

/// Arguments of `icseg eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder of image/label NIfTI pairs (`<case>_ct|image.nii.gz` with
    /// `<case>_oar|ptv|label.nii.gz`), searched recursively.
    #[arg(long)]
    pub data: PathBuf,
    /// Annotated slices per structure; several values give several columns.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 3, 5])]
    pub k: Vec<usize>,
    /// Methods to compare: nearest, interp, network.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["nearest".to_string(), "interp".to_string(), "network".to_string()])]
    pub methods: Vec<String>,
    /// Only label files with these roles (e.g. `oar`); all when absent.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Evaluate at most this many cases.
    #[arg(long)]
    pub max_cases: Option<usize>,
    /// Slice axis (0, 1 or 2).
    #[arg(long, default_value_t = 2)]
    pub axis: usize,
    /// Write every result and the means as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Network weights, device and batching (for the `network` method).
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs `icseg eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let axis = Axis::from_index(args.axis).context("--axis must be 0, 1 or 2")?;
    anyhow::ensure!(
        args.k.iter().all(|&k| k >= 1),
        "--k values must be at least 1"
    );
    let cases = eval::discover_cases(&args.data)
        .with_context(|| format!("cannot list the data folder {}", args.data.display()))?;
    anyhow::ensure!(
        !cases.is_empty(),
        "no image/label NIfTI pairs found in {}",
        args.data.display()
    );
    let names = eval::load_label_names(&args.data);
    let mut owned: Vec<Box<dyn Propagator>> = Vec::new();
    for m in &args.methods {
        match m.as_str() {
            "nearest" => owned.push(Box::new(NearestSlice)),
            "interp" => owned.push(Box::new(ShapeInterpolation)),
            "network" => {
                let net = NetworkPropagator::start(args.model.engine_config())
                    .context("cannot start the network for evaluation")?;
                let info = net.info();
                eprintln!(
                    "network: {} on {}, weights {:?}",
                    info.model, info.device, info.weights
                );
                owned.push(Box::new(net));
            }
            other => anyhow::bail!("unknown method `{other}` (known: nearest, interp, network)"),
        }
    }
    let mut methods: Vec<&mut dyn Propagator> = owned
        .iter_mut()
        .map(|m| &mut **m as &mut dyn Propagator)
        .collect();
    let options = EvalOptions {
        ks: args.k.clone(),
        axis,
        roles: args.roles.clone(),
        max_cases: args.max_cases,
    };
    let total = cases.len().min(args.max_cases.unwrap_or(usize::MAX));
    eprintln!(
        "evaluating {total} cases, k = {:?}, methods {:?}",
        args.k, args.methods
    );
    let started = std::time::Instant::now();
    let mut last_case = String::new();
    let mut done = 0;
    let report = eval::evaluate_cases(&cases, &names, &options, &mut methods, &mut |r| {
        if r.case != last_case {
            done += 1;
            last_case = r.case.clone();
            eprintln!(
                "[{done}/{total}] {} ({:.0} s)",
                r.case,
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        crate::io::write_atomic(path, &json)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
