//! `icseg bench`: parameter counts, estimated FLOPs, speed and memory of the network
//! configurations on the chosen device, through the engine's own code path
//! ([`Predictor`]) on a synthetic 512×512 CT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::inference::peak_memory_bytes;
use crate::engine::{
    self, ChainOptions, DeviceChoice, DeviceRequest, Engine, EngineConfig, Predictor, RoiMode,
    Strategy, SupportSet, WeightsChoice, load_model, select_device,
};
use crate::model::ModelConfig;
use crate::volume::{Axis, Geometry, Image2D, LabelMap, Modality, Volume};

/// Arguments of `icseg bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Compute device.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceChoice))]
    pub device: DeviceChoice,
    /// Configurations to measure, comma-separated: lite, paper.
    #[arg(long, default_value = "lite,paper")]
    pub configs: String,
    /// Support slices.
    #[arg(long, default_value_t = 8)]
    pub support: usize,
    /// Query slices propagated with the lite configuration.
    #[arg(long, default_value_t = 100)]
    pub slices: usize,
    /// Query slices propagated with the paper configuration (slow on a CPU).
    #[arg(long, default_value_t = 16)]
    pub paper_slices: usize,
    /// Query slices per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed explanation clicks (median reported).
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Also run one batch on the CPU with the same weights and report the largest
    /// probability difference (checks a GPU against the reference backend).
    #[arg(long)]
    pub check_against_cpu: bool,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct ConfigBench {
    config: String,
    input_size: usize,
    trainable_params: usize,
    ema_twin_params: usize,
    params_by_part: Vec<(String, usize)>,
    gflops_per_query_slice: f64,
    gflops_support_encoding: f64,
    support_slices: usize,
    batch: usize,
    support_encoding_ms: f64,
    ms_per_query_slice_inference: f64,
    ms_per_query_slice_end_to_end: f64,
    propagated_slices: usize,
    propagate_seconds_incl_support: f64,
    explain_latency_ms_median: f64,
    explain_latency_ms_min: f64,
    max_abs_difference_to_cpu: Option<f32>,
    peak_memory_mb_so_far: Option<f64>,
}

/// Chained propagation (the app's default strategy) through the engine.
#[derive(Debug, serde::Serialize)]
struct ChainBench {
    weights: String,
    structure_slices: usize,
    annotated_slices: Vec<usize>,
    queried_slices: usize,
    seconds: f64,
    ms_per_queried_slice: f64,
    /// Where the time went, from the engine's report (seconds).
    support_encoding: f64,
    /// Building the prior, beside the network; `prior_wait` of it held the
    /// propagation up.
    prior: f64,
    prior_wait: f64,
    network: f64,
    /// Of `network`: preparing the query slices and pasting the results back.
    network_preparation: f64,
    network_pasting: f64,
    blend: f64,
}

#[derive(Debug, serde::Serialize)]
struct BenchReport {
    device: String,
    is_gpu: bool,
    native_slice: [usize; 2],
    configs: Vec<ConfigBench>,
    chain: Option<ChainBench>,
    peak_memory_mb: Option<f64>,
}

/// The masks of [`synthetic_ct`] as a label map (1 = organ) on the volume's grid.
fn label_map(volume: &Volume, masks: &[Image2D<u8>]) -> LabelMap {
    let mut labels = LabelMap::empty(volume.geometry().clone());
    for (z, m) in masks.iter().enumerate() {
        labels.set_slice(Axis::K, z, &m.map(u16::from));
    }
    labels
}

/// A synthetic 512×512 CT: a body ellipse of soft tissue with a brighter organ that
/// changes size from slice to slice, and noise.
fn synthetic_ct(slices: usize) -> (Arc<Volume>, Vec<Image2D<u8>>) {
    let (w, h) = (512usize, 512usize);
    let g = Geometry::axis_aligned([w, h, slices], [0.8, 0.8, 2.0]);
    let mut voxels = vec![-1000.0f32; g.voxel_count()];
    let mut masks = Vec::with_capacity(slices);
    let mut noise = 12345u32;
    for k in 0..slices {
        let mut mask = Image2D::filled(w, h, 0u8);
        let r = 40.0 + 15.0 * (k as f64 / slices as f64 * std::f64::consts::PI).sin();
        for j in 0..h {
            for i in 0..w {
                let (x, y) = (i as f64 - 256.0, j as f64 - 256.0);
                let body = (x / 220.0).powi(2) + (y / 160.0).powi(2) <= 1.0;
                let organ = (x - 60.0).powi(2) + (y + 20.0).powi(2) <= r * r;
                noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let n = (noise >> 16) as f32 / 65536.0 * 20.0 - 10.0;
                let v = if organ {
                    mask.set(i, j, 1);
                    80.0
                } else if body {
                    30.0
                } else {
                    -1000.0
                };
                voxels[i + w * (j + h * k)] = v + n;
            }
        }
        masks.push(mask);
    }
    (
        Arc::new(Volume::new(g, voxels, Modality::Ct).expect("sizes match")),
        masks,
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_config(
    config: ModelConfig,
    args: &BenchArgs,
    device: &crate::engine::ComputeDevice,
    query_slices: usize,
) -> anyhow::Result<ConfigBench> {
    let name = config.name().to_string();
    eprintln!(
        "[{name}] building the model and a synthetic 512×512×{} CT",
        query_slices + args.support
    );
    let (model, _) = load_model(&config, &WeightsChoice::Random, &device.device)?;
    let trainable = model.trainable_param_count();
    let ema = model.ema_param_count();
    let params_by_part = model
        .param_counts()
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    let flops_query = model.flops_per_query(args.support);
    let flops_support = model.flops_support_encoding(args.support);
    let weights = if args.check_against_cpu {
        Some(model.weights_to_bytes().map_err(|e| anyhow::anyhow!(e))?)
    } else {
        None
    };
    let mut predictor = Predictor::new(model, device.clone());

    let total = query_slices + args.support;
    let (volume, masks) = synthetic_ct(total);
    // Support slices spread evenly; the others are queries.
    let support_idx: Vec<usize> = (0..args.support)
        .map(|n| (n * total + total / 2) / args.support.max(1))
        .collect();
    let queries: Vec<usize> = (0..total).filter(|i| !support_idx.contains(i)).collect();
    let support = SupportSet::from_label_map(
        volume.clone(),
        &label_map(&volume, &masks),
        Axis::K,
        &support_idx,
        |v| v != 0,
    );
    let roi = RoiMode::default();

    // Warm-up (first kernels, autotuning on GPUs).
    let prepared = predictor.prepare_support(&support, roi)?;
    let (features, _) = predictor.support_features(&prepared);
    predictor.predict_batch(
        &features,
        &volume,
        Axis::K,
        &queries[..args.batch.min(queries.len())],
        &prepared.region,
    )?;

    // Support encoding, cold cache.
    let mut encodings = Vec::new();
    for _ in 0..3 {
        predictor.clear_cache();
        let t = Instant::now();
        let prepared = predictor.prepare_support(&support, roi)?;
        let (features, _) = predictor.support_features(&prepared);
        // GPU backends run asynchronously: wait for the results.
        features.block_until_ready();
        encodings.push(t.elapsed());
    }
    let support_encoding = median(encodings);

    // Propagation of every query slice, including support encoding.
    eprintln!(
        "[{name}] propagating {} slices with S = {}",
        queries.len(),
        args.support
    );
    predictor.clear_cache();
    let t = Instant::now();
    let prepared = predictor.prepare_support(&support, roi)?;
    let (features, _) = predictor.support_features(&prepared);
    let mut inference = Duration::ZERO;
    for batch in queries.chunks(args.batch.max(1)) {
        let (_, timings) =
            predictor.predict_batch(&features, &volume, Axis::K, batch, &prepared.region)?;
        inference += timings.inference;
    }
    let propagate = t.elapsed();

    // Explanation clicks, support cached.
    let query = queries[queries.len() / 2];
    let pixel = [316, 236];
    predictor.explain(&support, roi, query, pixel, None)?;
    let mut clicks = Vec::new();
    for _ in 0..args.repeat.max(1) {
        clicks.push(
            predictor
                .explain(&support, roi, query, pixel, None)?
                .latency,
        );
    }
    clicks.sort();

    // The same batch on the CPU with the same weights.
    let max_abs_difference_to_cpu = match &weights {
        None => None,
        Some(bytes) => {
            eprintln!("[{name}] checking one batch against the CPU");
            let batch = &queries[..args.batch.min(queries.len())];
            let (on_device, _) =
                predictor.predict_batch(&features, &volume, Axis::K, batch, &prepared.region)?;
            let cpu_model = crate::model::Model::load_weights_from_bytes(
                &config,
                bytes,
                std::path::Path::new("<memory>"),
                &burn::tensor::Device::flex(),
            )?;
            let mut cpu = Predictor::new(cpu_model, crate::engine::ComputeDevice::cpu());
            let cpu_prepared = cpu.prepare_support(&support, roi)?;
            let (cpu_features, _) = cpu.support_features(&cpu_prepared);
            let (on_cpu, _) =
                cpu.predict_batch(&cpu_features, &volume, Axis::K, batch, &cpu_prepared.region)?;
            Some(
                on_device
                    .iter()
                    .zip(&on_cpu)
                    .flat_map(|(a, b)| a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()))
                    .fold(0.0f32, f32::max),
            )
        }
    };

    let per_slice_end_to_end =
        (propagate.saturating_sub(support_encoding)).as_secs_f64() * 1000.0 / queries.len() as f64;
    Ok(ConfigBench {
        config: name,
        input_size: config.input_size,
        trainable_params: trainable,
        ema_twin_params: ema,
        params_by_part,
        gflops_per_query_slice: flops_query as f64 / 1e9,
        gflops_support_encoding: flops_support as f64 / 1e9,
        support_slices: args.support,
        batch: args.batch,
        support_encoding_ms: ms(support_encoding),
        ms_per_query_slice_inference: ms(inference) / queries.len() as f64,
        ms_per_query_slice_end_to_end: per_slice_end_to_end,
        propagated_slices: queries.len(),
        propagate_seconds_incl_support: propagate.as_secs_f64(),
        explain_latency_ms_median: ms(clicks[clicks.len() / 2]),
        explain_latency_ms_min: ms(clicks[0]),
        max_abs_difference_to_cpu,
        peak_memory_mb_so_far: peak_memory_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    })
}

/// Propagates a structure spanning `slices` slices of the synthetic CT from three
/// annotated slices with the chained strategy, through the engine as the app does, with
/// the shipped lite weights (random ones when none are found: then the structure may
/// end early and fewer slices are queried, which the report says).
fn bench_chain(
    args: &BenchArgs,
    device: &crate::engine::ComputeDevice,
    slices: usize,
) -> anyhow::Result<ChainBench> {
    let (volume, masks) = synthetic_ct(slices);
    let labels = label_map(&volume, &masks);
    let annotated: Vec<usize> = (0..3).map(|i| (2 * i + 1) * slices / 6).collect();
    let engine = Engine::start(
        EngineConfig {
            device: DeviceRequest::Existing(device.clone()),
            model: ModelConfig::lite(),
            weights: WeightsChoice::Default,
            batch_size: args.batch.max(1),
            roi: RoiMode::default(),
        },
        Box::new(|| {}),
    );
    let weights = format!("{:?}", engine.wait_ready()?.weights);
    let support = Arc::new(SupportSet::from_label_map(
        volume.clone(),
        &labels,
        Axis::K,
        &annotated,
        |v| v != 0,
    ));
    let targets = engine::target_slices(slices, &annotated, false);
    let strategy = Strategy::Chain(ChainOptions::default());
    // Warm-up on a copy of the job (first kernels, caches).
    engine::collect(
        &engine,
        support.clone(),
        targets.clone(),
        strategy,
        &mut |_, _| {},
    )?;
    engine.submit(engine::JobRequest::ClearCache);
    let t = Instant::now();
    let collected = engine::collect(&engine, support, targets, strategy, &mut |_, _| {})?;
    let seconds = t.elapsed().as_secs_f64();
    let stats = &collected.stats;
    let queried = stats.queried;
    let t = &stats.timings;
    Ok(ChainBench {
        weights,
        structure_slices: slices,
        annotated_slices: annotated,
        queried_slices: queried,
        seconds,
        ms_per_queried_slice: seconds * 1000.0 / queried.max(1) as f64,
        support_encoding: stats.support_encoding.as_secs_f64(),
        prior: stats.prior.as_secs_f64(),
        prior_wait: stats.prior_wait.as_secs_f64(),
        network: (t.preprocessing + t.inference + t.postprocessing).as_secs_f64(),
        network_preparation: t.preprocessing.as_secs_f64(),
        network_pasting: t.postprocessing.as_secs_f64(),
        blend: stats.blend.as_secs_f64(),
    })
}

/// Runs `icseg bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let device = select_device(args.device)?;
    eprintln!("device: {}", device.description);
    let mut configs = Vec::new();
    for name in args
        .configs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (config, slices) = match name {
            "lite" => (ModelConfig::lite(), args.slices),
            "paper" => (ModelConfig::paper(), args.paper_slices),
            other => anyhow::bail!("unknown configuration `{other}`; use lite or paper"),
        };
        let bench = bench_config(config, &args, &device, slices.max(1))?;
        print_bench(&bench);
        configs.push(bench);
    }
    eprintln!("[chain] propagating a {}-slice structure", args.slices);
    let chain = bench_chain(&args, &device, args.slices.max(6))?;
    println!(
        "== chained propagation (lite, {}) ==\npropagate a {}-slice structure from slices {:?}: {:.2} s ({} slices queried, {:.1} ms each, incl. support encoding)",
        chain.weights,
        chain.structure_slices,
        chain.annotated_slices,
        chain.seconds,
        chain.queried_slices,
        chain.ms_per_queried_slice
    );
    println!(
        "  support encoding {:.2} s, shape prior and intensity model {:.2} s built beside the network (waited for {:.2} s), network {:.2} s (of which preparing the slices {:.2} s and pasting the results {:.2} s), blend {:.2} s, the rest {:.2} s",
        chain.support_encoding,
        chain.prior,
        chain.prior_wait,
        chain.network,
        chain.network_preparation,
        chain.network_pasting,
        chain.blend,
        chain.seconds - chain.support_encoding - chain.prior_wait - chain.network - chain.blend
    );
    let report = BenchReport {
        device: device.description.clone(),
        is_gpu: device.is_gpu,
        native_slice: [512, 512],
        configs,
        chain: Some(chain),
        peak_memory_mb: peak_memory_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    };
    if let Some(path) = &args.out {
        crate::io::write_atomic(path, &serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    if let Some(mb) = report.peak_memory_mb {
        println!("peak memory (whole run): {mb:.0} MB");
    }
    Ok(())
}

fn print_bench(b: &ConfigBench) {
    println!(
        "== {} ({}×{} input, S = {}, batch {}) ==",
        b.config, b.input_size, b.input_size, b.support_slices, b.batch
    );
    println!(
        "parameters: {:.2} M trainable + {:.2} M EMA twin",
        b.trainable_params as f64 / 1e6,
        b.ema_twin_params as f64 / 1e6
    );
    for (part, n) in &b.params_by_part {
        println!("  {part:<36} {:>10}", n);
    }
    println!(
        "estimated GFLOPs: {:.2} per query slice, {:.2} per support encoding",
        b.gflops_per_query_slice, b.gflops_support_encoding
    );
    println!("support encoding:        {:>9.1} ms", b.support_encoding_ms);
    println!(
        "query slice (network):   {:>9.1} ms",
        b.ms_per_query_slice_inference
    );
    println!(
        "query slice (end to end):{:>9.1} ms",
        b.ms_per_query_slice_end_to_end
    );
    println!(
        "propagate {} slices:     {:>9.2} s (incl. support encoding)",
        b.propagated_slices, b.propagate_seconds_incl_support
    );
    println!(
        "explain latency:         {:>9.1} ms median ({:.1} min), support cached",
        b.explain_latency_ms_median, b.explain_latency_ms_min
    );
    if let Some(d) = b.max_abs_difference_to_cpu {
        println!("max |p_device − p_cpu|:  {d:>9.2e} (one batch, same weights)");
    }
}
