//! `icseg eval`: the simulated-annotator protocol over a data folder.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::inference::ModelArgs;
use crate::engine::{ChainOptions, Strategy};
use crate::eval::{self, Baseline, EvalOptions, NetworkPropagator, Propagator, Protocol};
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
    /// Methods to compare: nearest, interp, copy (baselines); network (the engine's
    /// default strategy: chained, nearest supports, shape prior); oneshot (the paper's:
    /// every slice against all annotated slices); prior (the shape prior alone, through
    /// the engine). Options follow a colon: `chain:nearest=2:memory=0:prior=0.3:taper=0.5:hold=10`,
    /// `oneshot:support=4`.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["nearest".to_string(), "interp".to_string(), "copy".to_string(), "network".to_string()])]
    pub methods: Vec<String>,
    /// Where the simulated user draws: `inner` (k slices inside the structure, its ends
    /// must be found) or `ends` (its first and last slice and k − 2 between; methods fill
    /// only between them).
    #[arg(long, default_value = "inner", value_parser = ["inner", "ends"])]
    pub protocol: String,
    /// Only label files with these roles (e.g. `oar`); all when absent.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Evaluate at most this many cases.
    #[arg(long)]
    pub max_cases: Option<usize>,
    /// Skip this many cases first (to split a long run).
    #[arg(long, default_value_t = 0)]
    pub skip_cases: usize,
    /// Slice axis (0, 1 or 2).
    #[arg(long, default_value_t = 2)]
    pub axis: usize,
    /// Write every result and the means as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Network weights, device and batching (for the network methods).
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A method option's on/off value: `1`/`true` or `0`/`false`.
fn flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A network method named on the command line: its strategy.
fn network_strategy(spec: &str) -> anyhow::Result<Option<Strategy>> {
    let mut parts = spec.split(':');
    let kind = parts.next().unwrap_or_default();
    let mut chain = ChainOptions::default();
    let mut support_size = None;
    let strategy_kind = match kind {
        "network" | "chain" => "chain",
        "prior" => {
            chain.prior_weight = 1.0;
            "chain"
        }
        "oneshot" => "oneshot",
        _ => return Ok(None),
    };
    for option in parts {
        let (key, value) = option
            .split_once('=')
            .with_context(|| format!("method option `{option}` in `{spec}` is not key=value"))?;
        let bad = || format!("`{value}` is not a valid value for {key} in `{spec}`");
        match (strategy_kind, key) {
            ("chain", "nearest") => chain.nearest = value.parse().with_context(bad)?,
            ("chain", "memory") => chain.memory = value.parse().with_context(bad)?,
            ("chain", "prior") => chain.prior_weight = value.parse().with_context(bad)?,
            ("chain", "intensity") => chain.intensity = value.parse().with_context(bad)?,
            ("chain", "taper") => chain.taper = value.parse().with_context(bad)?,
            ("chain", "hold") => chain.hold_mm = Some(value.parse().with_context(bad)?),
            ("chain", "between") => {
                chain.between = value
                    .parse()
                    .map_err(anyhow::Error::msg)
                    .with_context(bad)?
            }
            ("chain", "near") => chain.near_prior = flag(value).with_context(bad)?,
            ("chain", "guided") => chain.guided = flag(value).with_context(bad)?,
            ("chain", "refine") => chain.refine = flag(value).with_context(bad)?,
            ("oneshot", "support") => support_size = Some(value.parse().with_context(bad)?),
            _ => anyhow::bail!("unknown option `{key}` for method `{kind}` in `{spec}`"),
        }
    }
    anyhow::ensure!(chain.nearest >= 1, "nearest must be at least 1 in `{spec}`");
    anyhow::ensure!(
        support_size != Some(0),
        "support must be at least 1 in `{spec}`"
    );
    Ok(Some(match strategy_kind {
        "oneshot" => Strategy::OneShot { support_size },
        _ => Strategy::Chain(chain),
    }))
}

/// Runs `icseg eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let axis = Axis::from_index(args.axis).context("--axis must be 0, 1 or 2")?;
    anyhow::ensure!(
        args.k.iter().all(|&k| k >= 1),
        "--k values must be at least 1"
    );
    let protocol = match args.protocol.as_str() {
        "ends" => Protocol::Ends,
        _ => Protocol::Inner,
    };
    let cases = crate::dataset::discover_cases(&args.data)
        .with_context(|| format!("cannot list the data folder {}", args.data.display()))?;
    anyhow::ensure!(
        !cases.is_empty(),
        "no image/label NIfTI pairs found in {}",
        args.data.display()
    );
    let names = crate::dataset::load_label_names(&args.data);
    let mut owned: Vec<Box<dyn Propagator>> = Vec::new();
    for m in &args.methods {
        match m.as_str() {
            "nearest" => owned.push(Box::new(Baseline::NEAREST)),
            "interp" => owned.push(Box::new(Baseline::INTERP)),
            "copy" => owned.push(Box::new(Baseline::COPY)),
            spec => {
                let strategy = network_strategy(spec)?.with_context(|| {
                    format!("unknown method `{spec}` (known: nearest, interp, copy, network, chain, oneshot, prior)")
                })?;
                let net = NetworkPropagator::start(args.model.engine_config(), strategy, spec)
                    .context("cannot start the network for evaluation")?;
                let info = net.info();
                eprintln!(
                    "{spec}: {} on {}, weights {:?}, {strategy:?}",
                    info.model, info.device, info.weights
                );
                owned.push(Box::new(net));
            }
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
        skip_cases: args.skip_cases,
        protocol,
    };
    let total = cases
        .len()
        .saturating_sub(args.skip_cases)
        .min(args.max_cases.unwrap_or(usize::MAX));
    eprintln!(
        "evaluating {total} cases, protocol {}, k = {:?}, methods {:?}",
        protocol.name(),
        args.k,
        args.methods
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
    print!("{}", report.distance_table());
    eprintln!("evaluated in {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        crate::io::write_atomic(path, &json)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::interpolate::Between;

    #[test]
    fn method_specs_name_strategies_and_their_options() {
        assert_eq!(
            network_strategy("network").unwrap(),
            Some(Strategy::Chain(ChainOptions::default()))
        );
        let Some(Strategy::Chain(c)) = network_strategy("chain:memory=0:prior=0.25").unwrap()
        else {
            panic!("a chain")
        };
        assert_eq!((c.memory, c.prior_weight), (0, 0.25));
        let Some(Strategy::Chain(n)) = network_strategy("chain:near=0").unwrap() else {
            panic!("a chain")
        };
        assert!(!n.near_prior && ChainOptions::default().near_prior);
        assert!(network_strategy("chain:near=2").is_err());
        let Some(Strategy::Chain(r)) = network_strategy("prior:refine=0").unwrap() else {
            panic!("a chain")
        };
        assert!(!r.refine && ChainOptions::default().refine);
        let Some(Strategy::Chain(b)) = network_strategy("chain:between=nearest").unwrap() else {
            panic!("a chain")
        };
        assert_eq!(b.between, Between::Nearest);
        assert_eq!(ChainOptions::default().between, Between::Matched);
        assert!(network_strategy("chain:between=both").is_err());
        let Some(Strategy::Chain(p)) = network_strategy("prior").unwrap() else {
            panic!("a chain")
        };
        assert_eq!(p.prior_weight, 1.0);
        assert_eq!(
            network_strategy("oneshot:support=4").unwrap(),
            Some(Strategy::OneShot {
                support_size: Some(4)
            })
        );
        assert_eq!(network_strategy("nearest").unwrap(), None);
        assert!(network_strategy("chain:speed=3").is_err());
        assert!(network_strategy("chain:nearest=0").is_err());
        assert!(network_strategy("oneshot:support=x").is_err());
    }
}
