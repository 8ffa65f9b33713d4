//! Shared pieces of the inference commands (`propagate`, `explain`, `bench`): model and
//! device options, turning a label map into a support set, starting the engine.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use crate::engine::{
    ChainOptions, DeviceChoice, DeviceRequest, Engine, EngineConfig, EngineInfo, RoiMode, Strategy,
    SupportSet, WeightsChoice, WeightsStatus, default_weights_path,
};
use crate::model::ModelConfig;
use crate::volume::{Axis, LabelMap, LabelValue, Volume};

/// Model, weights and device options.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Trained weights (default: weights/icseg-<config>.bpk when present, else random
    /// initialisation).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Compute device.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// Network configuration: lite (128², for desktops) or paper (256², ~25 M params).
    #[arg(long, default_value = "lite", value_parser = parse_config)]
    pub config: ConfigName,
    /// Base top-K of the attention upsamplers (K0).
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
    /// Query slices per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Feed whole slices instead of a region around the annotations.
    #[arg(long)]
    pub full_slice: bool,
}

/// A named configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigName {
    /// [`ModelConfig::lite`].
    Lite,
    /// [`ModelConfig::paper`].
    Paper,
}

impl ConfigName {
    /// The configuration.
    pub fn config(self) -> ModelConfig {
        match self {
            Self::Lite => ModelConfig::lite(),
            Self::Paper => ModelConfig::paper(),
        }
    }
}

fn parse_config(s: &str) -> Result<ConfigName, String> {
    match s {
        "lite" => Ok(ConfigName::Lite),
        "paper" => Ok(ConfigName::Paper),
        other => Err(format!(
            "unknown configuration `{other}`; use lite or paper"
        )),
    }
}

impl ModelArgs {
    /// The engine configuration these options describe.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            device: DeviceRequest::Choice(self.device),
            model: self.config.config().with_top_k0(self.top_k.max(1)),
            weights: match &self.weights {
                Some(path) => WeightsChoice::File(path.clone()),
                None => WeightsChoice::Default,
            },
            batch_size: self.batch.max(1),
            roi: if self.full_slice {
                RoiMode::FullSlice
            } else {
                RoiMode::default()
            },
        }
    }
}

/// How a propagation uses the annotated slices (`engine::Strategy`).
#[derive(Clone, Debug, Args)]
pub struct StrategyArgs {
    /// `chain`: each slice is segmented with its nearest annotated slices and the slices
    /// predicted just before it, the structure ends at the first empty slice beyond the
    /// annotations, and the network is blended with shape-based interpolation.
    /// `oneshot`: the paper's, every slice against all annotated slices (or the
    /// --support-size most similar).
    #[arg(long, default_value = "chain", value_parser = ["chain", "oneshot"])]
    pub strategy: String,
    /// chain: annotated slices per query (the nearest).
    #[arg(long, default_value_t = ChainOptions::default().nearest)]
    pub nearest: usize,
    /// chain: predicted slices per query (the most recent on the way from the nearest
    /// annotation; 0 turns chaining off).
    #[arg(long, default_value_t = ChainOptions::default().memory)]
    pub memory: usize,
    /// chain: weight of the shape prior against the network (0 network only, 1 prior
    /// only).
    #[arg(long, default_value_t = ChainOptions::default().prior_weight)]
    pub prior_weight: f32,
    /// chain: how fast the prior closes beyond the outermost annotations (mm per mm).
    #[arg(long, default_value_t = ChainOptions::default().taper)]
    pub taper: f32,
    /// chain: how far beyond the outermost annotations the prior holds the end shape
    /// before closing (mm; default: half the mean gap between annotations, 25 mm with
    /// one annotation).
    #[arg(long)]
    pub hold_mm: Option<f32>,
    /// chain: the prior between two annotations: `interp` (shape-based interpolation),
    /// `nearest` (the nearer annotation copied) or `matched` (both, weighted pixel by
    /// pixel by how well each annotated slice's image matches, when guided).
    #[arg(long, default_value = "matched", value_parser = ["interp", "nearest", "matched"])]
    pub between: String,
    /// chain: carry each annotation's shape along a deformable registration of
    /// neighbouring slices (an image-guided prior) instead of copying it where it was
    /// drawn.
    #[arg(long, default_value_t = ChainOptions::default().guided, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub guided: bool,
    /// chain: weight of the structure's own intensity evidence (learned from the
    /// annotated slices) near the prior's boundary; 0 turns it off.
    #[arg(long, default_value_t = ChainOptions::default().intensity)]
    pub intensity: f32,
    /// chain: next to an annotation lean on the prior alone (one slice away) or mostly
    /// (two slices away) instead of the blend.
    #[arg(long, default_value_t = ChainOptions::default().near_prior, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub near_prior: bool,
    /// chain: register a guided prior's shapes once more against their own annotated
    /// slice from three slices away, where the image shows the structure's edge.
    #[arg(long, default_value_t = ChainOptions::default().refine, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refine: bool,
    /// oneshot: segment each slice with only the N annotated slices most similar to it
    /// (by the network's Attention Mapper Encoder embeddings, paper §4.3) when more are
    /// listed (default: every listed slice for every query).
    #[arg(long, value_name = "N", value_parser = parse_support_size)]
    pub support_size: Option<usize>,
}

impl StrategyArgs {
    /// The strategy these options describe.
    pub fn strategy(&self) -> anyhow::Result<Strategy> {
        anyhow::ensure!(self.nearest >= 1, "--nearest must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.prior_weight),
            "--prior-weight must lie between 0 and 1"
        );
        anyhow::ensure!(self.taper >= 0.0, "--taper must not be negative");
        anyhow::ensure!(self.intensity >= 0.0, "--intensity must not be negative");
        Ok(match self.strategy.as_str() {
            "oneshot" => Strategy::OneShot {
                support_size: self.support_size,
            },
            _ => Strategy::Chain(ChainOptions {
                nearest: self.nearest,
                memory: self.memory,
                prior_weight: self.prior_weight,
                taper: self.taper,
                hold_mm: self.hold_mm,
                between: self.between.parse().map_err(anyhow::Error::msg)?,
                guided: self.guided,
                intensity: self.intensity,
                near_prior: self.near_prior,
                refine: self.refine,
            }),
        })
    }
}

/// A comma-separated list of slice indices (`--slices 12,30,48`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceList(pub Vec<usize>);

impl std::str::FromStr for SliceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_slices(s).map(SliceList)
    }
}

/// A clicked pixel `X,Y` (`--pixel 120,87`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pixel(pub [usize; 2]);

impl std::str::FromStr for Pixel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_pixel(s).map(Pixel)
    }
}

/// Parses `12,30,48` into slice indices (sorted, without duplicates).
pub fn parse_slices(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(
            part.parse::<usize>()
                .map_err(|_| format!("`{part}` is not a slice index"))?,
        );
    }
    if out.is_empty() {
        return Err("list at least one slice, e.g. --slices 12,30,48".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses `X,Y` into a pixel.
pub fn parse_pixel(s: &str) -> Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [x, y] => match (x.parse(), y.parse()) {
            (Ok(x), Ok(y)) => Ok([x, y]),
            _ => Err(format!("`{s}` is not a pixel; write X,Y such as 120,87")),
        },
        _ => Err(format!("`{s}` is not a pixel; write X,Y such as 120,87")),
    }
}

/// Parses `--support-size N` (a positive number of slices).
pub fn parse_support_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("the support size must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of slices")),
    }
}

/// The axis from its index 0, 1, 2 (2 = the slice axis `k`).
pub fn axis_from_index(index: usize) -> anyhow::Result<Axis> {
    Axis::from_index(index).with_context(|| format!("--axis must be 0, 1 or 2, not {index}"))
}

/// Whether a label value counts as "inside": equal to `label`, or any nonzero value.
pub fn is_inside(value: LabelValue, label: Option<LabelValue>) -> bool {
    match label {
        Some(l) => value == l,
        None => value != 0,
    }
}

/// The support set of the listed slices of `labels`.
pub fn support_from_labels(
    volume: Arc<Volume>,
    labels: &LabelMap,
    axis: Axis,
    slices: &[usize],
    label: Option<LabelValue>,
) -> anyhow::Result<SupportSet> {
    let count = volume.geometry().slice_count(axis);
    if let Some(index) = slices.iter().copied().find(|&i| i >= count) {
        bail!("annotated slice {index} does not exist: the image has {count} slices on this axis");
    }
    Ok(SupportSet::from_label_map(
        volume,
        labels,
        axis,
        slices,
        |v| is_inside(v, label),
    ))
}

/// Starts the engine and waits for it to be ready; prints the device and the weights
/// on stderr.
pub fn start_engine(config: EngineConfig) -> anyhow::Result<(Engine, EngineInfo)> {
    let model = config.model.clone();
    let engine = Engine::start(config, Box::new(|| {}));
    let info = engine.wait_ready()?;
    eprintln!("device: {}", info.device);
    match &info.weights {
        WeightsStatus::Loaded(path) => eprintln!("weights: {}", path.display()),
        WeightsStatus::RandomInit => eprintln!(
            "weights: none found (looked for {}); running with RANDOM weights — predictions are meaningless until trained weights are given with --weights",
            default_weights_path(&model)
                .unwrap_or_else(|| PathBuf::from(format!("weights/icseg-{}.bpk", model.name())))
                .display()
        ),
    }
    Ok((engine, info))
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), when known.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_lists_parse_sorted_and_deduplicated() {
        assert_eq!(parse_slices("30, 12,48,12"), Ok(vec![12, 30, 48]));
        assert!(parse_slices("").is_err());
        assert!(parse_slices("1,x").is_err());
    }

    #[test]
    fn support_sizes_are_positive_counts() {
        assert_eq!(parse_support_size("8"), Ok(8));
        assert_eq!(parse_support_size(" 3 "), Ok(3));
        assert!(parse_support_size("0").unwrap_err().contains("at least 1"));
        assert!(parse_support_size("-2").is_err());
        assert!(parse_support_size("all").is_err());
    }

    #[test]
    fn pixels_parse() {
        assert_eq!(parse_pixel("120,87"), Ok([120, 87]));
        assert!(parse_pixel("120").is_err());
        assert!(parse_pixel("-1,3").is_err());
    }

    #[test]
    fn label_selection() {
        assert!(is_inside(3, None));
        assert!(!is_inside(0, None));
        assert!(is_inside(3, Some(3)));
        assert!(!is_inside(2, Some(3)));
    }

    #[test]
    fn peak_memory_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_memory_bytes().unwrap() > 1_000_000);
        }
    }
}
