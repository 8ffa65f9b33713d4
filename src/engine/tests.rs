//! Engine behaviour with the tiny network on a synthetic volume.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use burn::tensor::TensorData;

use super::preprocess::image_input;
use super::*;
use crate::volume::{Axis, Geometry, Modality, Volume};

/// A 72×60×12 CT with 2-mm pixels: soft tissue with a bright disc that drifts across
/// the slices. The region of interest around the disc is smaller than the slice.
fn phantom() -> (Arc<Volume>, Vec<Image2D<u8>>) {
    let dims = [72, 60, 12];
    let g = Geometry::axis_aligned(dims, [2.0, 2.0, 2.0]);
    let mut voxels = vec![40.0f32; g.voxel_count()];
    let mut masks = Vec::new();
    for k in 0..dims[2] {
        let mut mask = Image2D::filled(dims[0], dims[1], 0u8);
        let (cx, cy) = (30.0 + k as f64, 28.0);
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let inside = (i as f64 - cx).powi(2) + (j as f64 - cy).powi(2) <= 64.0;
                if inside {
                    voxels[i + dims[0] * (j + dims[1] * k)] = 300.0;
                    mask.set(i, j, 1);
                }
            }
        }
        masks.push(mask);
    }
    (
        Arc::new(Volume::new(g, voxels, Modality::Ct).unwrap()),
        masks,
    )
}

fn support(volume: &Arc<Volume>, masks: &[Image2D<u8>], indices: &[usize]) -> Arc<SupportSet> {
    Arc::new(SupportSet {
        volume: volume.clone(),
        axis: Axis::K,
        slices: indices
            .iter()
            .map(|&i| SupportSlice {
                index: i,
                mask: masks[i].clone(),
            })
            .collect(),
    })
}

fn tiny_config(batch_size: usize) -> EngineConfig {
    EngineConfig {
        device: DeviceRequest::Choice(DeviceChoice::Cpu),
        model: ModelConfig::tiny(),
        weights: WeightsChoice::Random,
        batch_size,
        roi: RoiMode::default(),
    }
}

/// An engine whose worker waits, after every event, until the test acknowledges it:
/// the test then decides exactly what the worker sees next.
fn lockstep_engine(config: EngineConfig) -> (Engine, Sender<()>) {
    let (ack_tx, ack_rx): (Sender<()>, Receiver<()>) = crossbeam_channel::unbounded();
    let engine = Engine::start(
        config,
        Box::new(move || {
            // Returns at once when the test has dropped its sender.
            let _ = ack_rx.recv();
        }),
    );
    (engine, ack_tx)
}

fn expect_ready(engine: &Engine) -> EngineInfo {
    match engine.events().recv().unwrap() {
        Event::Ready(info) => info,
        other => panic!("expected Ready, got {other:?}"),
    }
}

#[test]
fn propagation_reports_progress_slices_and_stats_in_order() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    let info = expect_ready(&engine);
    assert_eq!(info.weights, WeightsStatus::RandomInit);
    assert!(info.device.starts_with("CPU"), "{}", info.device);
    let slices: Vec<usize> = (0..12).filter(|i| ![3, 8].contains(i)).collect();
    let id = engine.submit(JobRequest::Propagate {
        support: support(&volume, &masks, &[3, 8]),
        slices: slices.clone(),
        strategy: Strategy::OneShot { support_size: None },
    });
    let mut predicted = Vec::new();
    let mut progress = Vec::new();
    loop {
        match engine.events().recv().unwrap() {
            Event::Progress {
                id: got,
                done,
                total,
            } => {
                assert_eq!((got, total), (id, 10));
                progress.push(done);
            }
            Event::SlicePredicted {
                id: got,
                slice,
                probabilities,
            } => {
                assert_eq!(got, id);
                assert_eq!((probabilities.width, probabilities.height), (72, 60));
                assert!(probabilities.data.iter().all(|p| (0.0..=1.0).contains(p)));
                predicted.push(slice);
            }
            Event::PropagationFinished { id: got, stats } => {
                assert_eq!(got, id);
                assert_eq!(
                    (stats.slices, stats.batches, stats.support_slices),
                    (10, 3, 2)
                );
                assert_eq!(stats.cache, CacheUse::Miss);
                assert!(stats.total >= stats.support_encoding);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(predicted, slices);
    assert_eq!(progress, vec![0, 4, 8, 10]);
}

/// Runs one propagation and returns its stats and probabilities by slice.
fn run(engine: &Engine, job: JobRequest) -> (PropagationStats, Vec<(usize, Image2D<f32>)>) {
    let id = engine.submit(job);
    let mut out = Vec::new();
    loop {
        match engine.events().recv().unwrap() {
            Event::SlicePredicted {
                id: got,
                slice,
                probabilities,
            } if got == id => out.push((slice, probabilities)),
            Event::PropagationFinished { id: got, stats } if got == id => return (stats, out),
            Event::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
}

#[test]
fn support_features_are_cached_by_content() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(8), Box::new(|| {}));
    expect_ready(&engine);
    let job = |s: Arc<SupportSet>| JobRequest::Propagate {
        support: s,
        slices: vec![5, 6],
        strategy: Strategy::OneShot { support_size: None },
    };
    let (first, a) = run(&engine, job(support(&volume, &masks, &[3, 8])));
    assert_eq!(first.cache, CacheUse::Miss);
    // The same content in a new allocation is still a hit.
    let (second, b) = run(&engine, job(support(&volume, &masks, &[3, 8])));
    assert_eq!(second.cache, CacheUse::Hit);
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    // Only a mask changed: the image features are reused.
    let mut edited = (*support(&volume, &masks, &[3, 8])).clone();
    edited.slices[0].mask.set(30, 28, 0);
    let (third, _) = run(&engine, job(Arc::new(edited)));
    assert_eq!(third.cache, CacheUse::ImagesCached);
    // Another slice: a miss.
    let (fourth, _) = run(&engine, job(support(&volume, &masks, &[2, 8])));
    assert_eq!(fourth.cache, CacheUse::Miss);
}

#[test]
fn batched_and_one_by_one_predictions_agree() {
    let (volume, masks) = phantom();
    let s = support(&volume, &masks, &[2, 9]);
    let slices: Vec<usize> = (3..9).collect();
    let job = || JobRequest::Propagate {
        support: s.clone(),
        slices: slices.clone(),
        strategy: Strategy::OneShot { support_size: None },
    };
    // The same random weights in both engines: save them and load them twice.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.bpk");
    ModelConfig::tiny()
        .init(&burn::tensor::Device::flex())
        .save_weights(&path)
        .unwrap();
    let mut results = Vec::new();
    for batch in [1, 6] {
        let mut config = tiny_config(batch);
        config.weights = WeightsChoice::File(path.clone());
        let engine = Engine::start(config, Box::new(|| {}));
        assert!(matches!(
            expect_ready(&engine).weights,
            WeightsStatus::Loaded(_)
        ));
        results.push(run(&engine, job()).1);
    }
    for ((sa, a), (sb, b)) in results[0].iter().zip(&results[1]) {
        assert_eq!(sa, sb);
        let diff = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "slice {sa}: {diff}");
    }
}

#[test]
fn cancelled_jobs_stop_between_batches_and_queued_ones_never_start() {
    let (volume, masks) = phantom();
    let (engine, ack) = lockstep_engine(tiny_config(1));
    expect_ready(&engine);
    ack.send(()).unwrap();
    let s = support(&volume, &masks, &[3]);
    let first = engine.submit(JobRequest::Propagate {
        support: s.clone(),
        slices: (0..12).collect(),
        strategy: Strategy::OneShot { support_size: None },
    });
    let second = engine.submit(JobRequest::Propagate {
        support: s,
        slices: vec![1],
        strategy: Strategy::OneShot { support_size: None },
    });
    engine.cancel(second);
    let mut predicted = 0;
    let mut cancelled = Vec::new();
    while cancelled.len() < 2 {
        let event = engine.events().recv().unwrap();
        match &event {
            Event::SlicePredicted { id, .. } => {
                assert_eq!(*id, first);
                predicted += 1;
                // Cancel the running job after its first slice.
                engine.cancel(first);
            }
            Event::Cancelled { id } => cancelled.push(*id),
            Event::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
        ack.send(()).unwrap();
    }
    assert_eq!(predicted, 1);
    assert_eq!(cancelled, vec![first, second]);
    drop(ack);
}

#[test]
fn cancel_all_covers_everything_submitted_so_far_but_not_later_jobs() {
    let (volume, masks) = phantom();
    let (engine, ack) = lockstep_engine(tiny_config(4));
    expect_ready(&engine);
    let s = support(&volume, &masks, &[3]);
    let old = engine.submit(JobRequest::Propagate {
        support: s.clone(),
        slices: vec![1, 2],
        strategy: Strategy::OneShot { support_size: None },
    });
    engine.cancel_all();
    let new = engine.submit(JobRequest::Propagate {
        support: s,
        slices: vec![4],
        strategy: Strategy::OneShot { support_size: None },
    });
    drop(ack); // run freely from now on
    let mut seen_old_cancelled = false;
    loop {
        match engine.events().recv().unwrap() {
            Event::Cancelled { id } => {
                assert_eq!(id, old);
                seen_old_cancelled = true;
            }
            Event::SlicePredicted { id, .. } => assert_eq!(id, new),
            Event::PropagationFinished { id, .. } => {
                assert_eq!(id, new);
                break;
            }
            Event::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen_old_cancelled);
    assert!(old < new, "generations increase");
}

#[test]
fn explanation_has_three_stages_with_a_map_per_support_slice() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let s = support(&volume, &masks, &[2, 5, 9]);
    let id = engine.submit(JobRequest::Explain {
        support: s.clone(),
        query_slice: 7,
        pixel: [37, 28],
        support_size: None,
    });
    let explanation = match engine.events().recv().unwrap() {
        Event::Explained {
            id: got,
            explanation,
        } if got == id => explanation,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(explanation.support_slices, vec![2, 5, 9]);
    let strides: Vec<usize> = explanation.stages.iter().map(|s| s.stride).collect();
    assert_eq!(strides, vec![32, 16, 8]);
    for stage in &explanation.stages {
        assert_eq!(stage.maps.len(), 3);
        let [h, w] = stage.grid;
        assert_eq!(h, 64 / stage.stride);
        assert!(stage.maps.iter().all(|m| (m.width, m.height) == (w, h)));
        let sum: f32 = stage.support_mass.iter().sum();
        assert!((sum - stage.query_mass).abs() < 1e-5);
        assert!(stage.query_mass > 0.0 && stage.query_mass <= 1.0 + 1e-6);
        assert!(stage.query_cell[0] < w && stage.query_cell[1] < h);
    }
    // Heatmaps come back onto a support slice's native grid, zero outside the region.
    let heat = explanation.native_heatmap(2, 0, 72, 60);
    assert_eq!((heat.width, heat.height), (72, 60));
    assert!(heat.data.iter().any(|&v| v > 0.0));

    // A second click on the same support set uses the cache.
    let id = engine.submit(JobRequest::Explain {
        support: s.clone(),
        query_slice: 7,
        pixel: [38, 29],
        support_size: None,
    });
    match engine.events().recv().unwrap() {
        Event::Explained {
            id: got,
            explanation,
        } if got == id => {
            assert_eq!(explanation.cache, CacheUse::Hit)
        }
        other => panic!("unexpected {other:?}"),
    }
    // A click outside the region of interest is a clear error.
    let id = engine.submit(JobRequest::Explain {
        support: s,
        query_slice: 7,
        pixel: [0, 0],
        support_size: None,
    });
    match engine.events().recv().unwrap() {
        Event::Failed {
            id: got,
            error: EngineError::PixelOutsideRegion { pixel },
        } => assert_eq!((got, pixel), (id, [0, 0])),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_missing_weights_file_fails_the_start_and_every_job() {
    let mut config = tiny_config(4);
    config.weights = WeightsChoice::File("/nonexistent/icseg.bpk".into());
    let engine = Engine::start(config, Box::new(|| {}));
    match engine.events().recv().unwrap() {
        Event::StartFailed(EngineError::Weights(WeightsError::NotFound { .. })) => {}
        other => panic!("unexpected {other:?}"),
    }
    let (volume, masks) = phantom();
    let id = engine.submit(JobRequest::Propagate {
        support: support(&volume, &masks, &[1]),
        slices: vec![2],
        strategy: Strategy::OneShot { support_size: None },
    });
    match engine.events().recv().unwrap() {
        Event::Failed {
            id: got,
            error: EngineError::Stopped,
        } => assert_eq!(got, id),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_supports_and_slices_are_reported_not_panicked() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let mut wrong = (*support(&volume, &masks, &[1])).clone();
    wrong.slices[0].mask = Image2D::filled(10, 10, 0);
    let id = engine.submit(JobRequest::Propagate {
        support: Arc::new(wrong),
        slices: vec![2],
        strategy: Strategy::OneShot { support_size: None },
    });
    let mut failures = Vec::new();
    let id2 = engine.submit(JobRequest::Propagate {
        support: support(&volume, &masks, &[1]),
        slices: vec![2, 99],
        strategy: Strategy::OneShot { support_size: None },
    });
    let id3 = engine.submit(JobRequest::Propagate {
        support: Arc::new(SupportSet {
            volume: volume.clone(),
            axis: Axis::K,
            slices: vec![],
        }),
        slices: vec![2],
        strategy: Strategy::OneShot { support_size: None },
    });
    while failures.len() < 3 {
        if let Event::Failed { id, error } = engine.events().recv().unwrap() {
            failures.push((id, error));
        }
    }
    assert!(matches!(failures[0], (i, EngineError::InvalidSupport { .. }) if i == id));
    assert!(
        matches!(failures[1], (i, EngineError::SliceOutOfRange { index: 99, count: 12 }) if i == id2)
    );
    assert!(matches!(failures[2], (i, EngineError::InvalidSupport { .. }) if i == id3));
}

/// The wgpu code path computes what the CPU computes. Slow where the only adapter is a
/// software one (kernel compilation takes minutes on lavapipe), hence ignored by
/// default: `cargo test --lib wgpu_path -- --ignored`.
#[test]
#[ignore = "compiles wgpu kernels: minutes on a software adapter"]
fn the_wgpu_path_matches_the_cpu() {
    let gpu = match select_device(DeviceChoice::Gpu) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    eprintln!("device: {}", gpu.description);
    let (volume, masks) = phantom();
    let s = support(&volume, &masks, &[2, 9]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.bpk");
    ModelConfig::tiny()
        .init(&burn::tensor::Device::flex())
        .save_weights(&path)
        .unwrap();
    let mut results = Vec::new();
    for device in [
        DeviceRequest::Existing(ComputeDevice::cpu()),
        DeviceRequest::Existing(gpu),
    ] {
        let mut config = tiny_config(4);
        config.device = device;
        config.weights = WeightsChoice::File(path.clone());
        let engine = Engine::start(config, Box::new(|| {}));
        expect_ready(&engine);
        results.push(
            run(
                &engine,
                JobRequest::Propagate {
                    support: s.clone(),
                    slices: vec![4, 5, 6],
                    strategy: Strategy::OneShot { support_size: None },
                },
            )
            .1,
        );
    }
    for ((slice, a), (_, b)) in results[0].iter().zip(&results[1]) {
        let diff = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-3, "slice {slice}: {diff}");
    }
}

#[test]
fn a_click_during_a_propagation_is_explained_before_the_propagation_ends() {
    let (volume, masks) = phantom();
    let (engine, ack) = lockstep_engine(tiny_config(1));
    expect_ready(&engine);
    ack.send(()).unwrap();
    let s = support(&volume, &masks, &[3, 8]);
    let propagation = engine.submit(JobRequest::Propagate {
        support: s.clone(),
        slices: (0..12).collect(),
        strategy: Strategy::OneShot { support_size: None },
    });
    let mut click = None;
    let mut order = Vec::new();
    loop {
        let event = engine.events().recv().unwrap();
        match &event {
            Event::SlicePredicted { id, .. } if *id == propagation && click.is_none() => {
                click = Some(engine.submit(JobRequest::Explain {
                    support: s.clone(),
                    query_slice: 5,
                    pixel: [37, 28],
                    support_size: None,
                }));
            }
            Event::Explained { id, .. } => order.push(("explained", *id)),
            Event::PropagationFinished { id, .. } => {
                order.push(("finished", *id));
                ack.send(()).unwrap();
                break;
            }
            Event::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
        ack.send(()).unwrap();
    }
    assert_eq!(
        order,
        vec![("explained", click.unwrap()), ("finished", propagation)]
    );
    drop(ack);
}

// ----- choosing support slices by similarity (paper §4.3) -----

/// Pixel value of pattern `kind` at `(i, j)` of a 64×64 slice, with a fixed texture per
/// kind (so two slices of one kind are exact copies).
fn pattern(kind: usize, i: usize, j: usize) -> f32 {
    let (x, y) = (i as f64, j as f64);
    let noise = {
        let mut h = (i as u64 * 73_856_093) ^ (j as u64 * 19_349_663) ^ (kind as u64 * 83_492_791);
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> 40) % 61) as f32 - 30.0
    };
    let inside = match kind {
        0 => (x - 24.0).powi(2) + (y - 28.0).powi(2) <= 100.0,
        1 => (36.0..52.0).contains(&x) && (10.0..26.0).contains(&y),
        2 => (i / 4).is_multiple_of(2),
        3 => {
            (x - 14.0).powi(2) + (y - 14.0).powi(2) <= 16.0
                || (x - 48.0).powi(2) + (y - 46.0).powi(2) <= 25.0
        }
        4 => {
            let r2 = (x - 40.0).powi(2) + (y - 40.0).powi(2);
            (144.0..=256.0).contains(&r2)
        }
        _ => false,
    };
    let base = if kind == 5 {
        (x + y) as f32 * 4.0 - 200.0
    } else {
        40.0
    };
    base + noise + if inside { 260.0 } else { 0.0 }
}

/// A 64×64×12 CT whose slices show different patterns: slice 6 (the query) and its
/// copies 3 and 10 show pattern 0; the support slices 1, 5, 8 and 11 show patterns
/// 1–4. Masks mark each pattern's bright part, except that copy 3 is annotated as
/// "nothing here" (an empty mask). Returns the volume and the support set.
fn retrieval_phantom() -> (Arc<Volume>, Arc<SupportSet>) {
    let dims = [64, 64, 12];
    let kinds = [5, 1, 5, 0, 5, 2, 0, 5, 3, 5, 0, 4];
    let g = Geometry::axis_aligned(dims, [1.0, 1.0, 3.0]);
    let mut voxels = vec![0.0f32; g.voxel_count()];
    for (k, &kind) in kinds.iter().enumerate() {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                voxels[i + dims[0] * (j + dims[1] * k)] = pattern(kind, i, j);
            }
        }
    }
    let volume = Arc::new(Volume::new(g, voxels, Modality::Ct).unwrap());
    let slices = [1, 3, 5, 8, 10, 11]
        .into_iter()
        .map(|index| {
            let image = volume.slice(Axis::K, index);
            let mut mask = image.map(|v| u8::from(v > 250.0));
            if index == 3 {
                mask = mask.map(|_| 0);
            }
            SupportSlice { index, mask }
        })
        .collect();
    let support = Arc::new(SupportSet {
        volume: volume.clone(),
        axis: Axis::K,
        slices,
    });
    (volume, support)
}

/// Replaces every randomly initialised parameter by values from a fixed hash (uniform in
/// ±1/√fan-in), keeping the constant ones (norm scales and shifts, the temperature, the
/// zeroed refinement outputs): the same network in every run, so that tests of the
/// retrieval do not depend on the luck of a random draw.
struct FixedParameters {
    seed: u64,
    parameter: u64,
}

impl burn::module::ModuleMapper for FixedParameters {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<D>> {
        self.parameter += 1;
        let (seed, parameter) = (self.seed, self.parameter);
        param.map(|t| {
            let dims = t.dims();
            let values = t.to_data().try_to_vec::<f32>().unwrap();
            if values.iter().all(|&v| v == values[0]) {
                return t;
            }
            let fan_in = if D >= 2 { values.len() / dims[0] } else { 16 };
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let fixed: Vec<f32> = (0..values.len() as u64)
                .map(|n| {
                    let mut h = seed ^ parameter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    h ^= n.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    h = (h ^ (h >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    h ^= h >> 29;
                    bound * (2.0 * ((h >> 11) as f32 / (1u64 << 53) as f32) - 1.0)
                })
                .collect();
            burn::tensor::Tensor::from_data(TensorData::new(fixed, dims), &t.device())
        })
    }
}

/// The tiny network with fixed parameters (the EMA twin equal to the online encoder);
/// with `identity`, `W_Q = W_K = I` so that the retrieval compares the encoder's
/// embeddings by their plain dot product.
fn fixed_model(identity: bool) -> Model {
    use burn::module::Module;
    let model = ModelConfig::tiny()
        .init(&burn::tensor::Device::flex())
        .map(&mut FixedParameters {
            seed: 2025,
            parameter: 0,
        })
        .ema_update(0.0);
    if identity {
        model.with_identity_attention_projections()
    } else {
        model
    }
}

/// [`fixed_model`] saved where an engine can load it.
fn fixed_weights(dir: &std::path::Path, identity: bool) -> std::path::PathBuf {
    let path = dir.join(if identity {
        "identity.bpk"
    } else {
        "fixed.bpk"
    });
    fixed_model(identity).save_weights(&path).unwrap();
    path
}

fn engine_with(weights: std::path::PathBuf, batch_size: usize, roi: RoiMode) -> Engine {
    let mut config = tiny_config(batch_size);
    config.weights = WeightsChoice::File(weights);
    config.roi = roi;
    let engine = Engine::start(config, Box::new(|| {}));
    assert!(matches!(
        expect_ready(&engine).weights,
        WeightsStatus::Loaded(_)
    ));
    engine
}

fn explain_job(engine: &Engine, job: JobRequest) -> Box<Explanation> {
    let id = engine.submit(job);
    loop {
        match engine.events().recv().unwrap() {
            Event::Explained {
                id: got,
                explanation,
            } if got == id => return explanation,
            Event::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
}

fn max_difference(a: &Image2D<f32>, b: &Image2D<f32>) -> f32 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn copies_of_the_query_are_chosen_first_whatever_their_masks() {
    let (_, support) = retrieval_phantom();
    let mut predictor = Predictor::new(fixed_model(true), ComputeDevice::cpu());
    let prepared = predictor
        .prepare_support(&support, RoiMode::default())
        .unwrap();
    let (attention, _) = predictor.support_attention(&prepared);
    // Slices 3, 6 and 10 show the same image; 3 and 10 are support slices (positions
    // 1 and 4), 3 annotated as empty, which plays no part: retrieval looks at images.
    let queries = [3, 6, 10];
    let scores = predictor
        .similarity_scores(&support, &prepared, &attention, &queries)
        .unwrap();
    for (row, query) in scores.iter().zip(queries) {
        assert_eq!(
            row[1], row[4],
            "query {query}: identical images tie exactly"
        );
        for other in [0, 2, 3, 5] {
            assert!(
                row[other] < row[1],
                "query {query}: slice {} scores {} against the copies' {}",
                support.slices[other].index,
                row[other],
                row[1]
            );
        }
    }
    let two = predictor
        .choose_supports(&support, &prepared, &attention, &queries, 2)
        .unwrap();
    assert_eq!(two, vec![vec![1, 4]; 3]);
    // One slice only: the copies tie and the one nearer to the query wins (slice 6 is
    // 3 slices from slice 3 and 4 from slice 10; slices 3 and 10 pick themselves).
    let one = predictor
        .choose_supports(&support, &prepared, &attention, &queries, 1)
        .unwrap();
    assert_eq!(one, vec![vec![1], vec![1], vec![4]]);
}

#[test]
fn similarity_ranks_as_the_cross_attention_mapper_attends() {
    // With the full support set as the support, equation 2 gives
    // ln A_ij = logit_ij − logsumexp_i, so for each candidate the mean over query
    // locations of its best ln A_ij is its score minus a constant shared by all
    // candidates: the score differences must equal these differences.
    let (volume, support) = retrieval_phantom();
    let model = fixed_model(false);
    let mut predictor = Predictor::new(fixed_model(false), ComputeDevice::cpu());
    let prepared = predictor
        .prepare_support(&support, RoiMode::default())
        .unwrap();
    let (attention, _) = predictor.support_attention(&prepared);
    let queries = [0, 6, 7];
    let scores = predictor
        .similarity_scores(&support, &prepared, &attention, &queries)
        .unwrap();
    let size = model.config().input_size;
    let n = support.slices.len();
    for (q, &query) in queries.iter().enumerate() {
        let input = image_input(
            &volume.slice(Axis::K, query),
            volume.modality,
            &prepared.region,
            size,
        );
        let image = burn::tensor::Tensor::<4>::from_data(
            TensorData::new(input.data, [1, 1, size, size]),
            &burn::tensor::Device::flex(),
        );
        let [coarse, _, _] = model.attention_maps(&attention, image);
        let [gh, gw] = coarse.grid;
        let cells = gh * gw;
        let map: Vec<f32> = coarse.map.into_data().try_to_vec().unwrap();
        let from_attention: Vec<f64> = (0..n)
            .map(|s| {
                (0..cells)
                    .map(|i| {
                        let row = &map[i * n * cells..(i + 1) * n * cells];
                        row[s * cells..(s + 1) * cells]
                            .iter()
                            .map(|&a| f64::from(a).ln())
                            .fold(f64::NEG_INFINITY, f64::max)
                    })
                    .sum::<f64>()
                    / cells as f64
            })
            .collect();
        for s in 1..n {
            let want = from_attention[s] - from_attention[0];
            let got = f64::from(scores[q][s] - scores[q][0]);
            assert!(
                (want - got).abs() < 1e-3,
                "query {query}, support {s}: {got} against {want}"
            );
        }
    }
}

#[test]
fn support_choices_are_deterministic_and_respect_the_limit() {
    let (_, support) = retrieval_phantom();
    let queries: Vec<usize> = (0..12).collect();
    let candidates = support.slices.len();
    let choose = |k: usize, one_by_one: bool| {
        // A fresh predictor each time: nothing remembered.
        let mut predictor = Predictor::new(fixed_model(false), ComputeDevice::cpu());
        let prepared = predictor
            .prepare_support(&support, RoiMode::default())
            .unwrap();
        let (attention, _) = predictor.support_attention(&prepared);
        if one_by_one {
            queries
                .iter()
                .map(|&q| {
                    predictor
                        .choose_supports(&support, &prepared, &attention, &[q], k)
                        .unwrap()
                        .remove(0)
                })
                .collect::<Vec<_>>()
        } else {
            predictor
                .choose_supports(&support, &prepared, &attention, &queries, k)
                .unwrap()
        }
    };
    // The scores of a slice do not depend on its batch, to the last bit.
    {
        let mut predictor = Predictor::new(fixed_model(false), ComputeDevice::cpu());
        let prepared = predictor
            .prepare_support(&support, RoiMode::default())
            .unwrap();
        let (attention, _) = predictor.support_attention(&prepared);
        let batched = predictor
            .similarity_scores(&support, &prepared, &attention, &queries)
            .unwrap();
        for &q in &queries {
            let alone = predictor
                .similarity_scores(&support, &prepared, &attention, &[q])
                .unwrap();
            assert_eq!(alone[0], batched[q], "query {q}");
        }
    }
    for k in 1..candidates {
        let batched = choose(k, false);
        assert_eq!(batched, choose(k, false), "k = {k}: the same choice twice");
        assert_eq!(batched, choose(k, true), "k = {k}: batched or one by one");
        for chosen in &batched {
            assert_eq!(chosen.len(), k);
            assert!(chosen.windows(2).all(|w| w[0] < w[1]));
            assert!(chosen.iter().all(|&p| p < candidates));
        }
        // More slices allowed never drops a slice chosen with fewer.
        if k > 1 {
            for (more, fewer) in batched.iter().zip(choose(k - 1, false)) {
                assert!(
                    fewer.iter().all(|p| more.contains(p)),
                    "{fewer:?} ⊄ {more:?}"
                );
            }
        }
    }
    assert_eq!(support_limit(Some(candidates), candidates).unwrap(), None);
    assert_eq!(support_limit(None, candidates).unwrap(), None);
    assert_eq!(
        support_limit(Some(candidates - 1), candidates).unwrap(),
        Some(candidates - 1)
    );
    assert!(support_limit(Some(0), candidates).is_err());
}

#[test]
fn a_propagation_with_more_supports_than_the_limit_matches_running_each_chosen_subset() {
    let (_, support) = retrieval_phantom();
    let dir = tempfile::tempdir().unwrap();
    // The whole slice as the region, so that a run with only the chosen slices sees
    // the same crop (the region follows the union of the support masks).
    let engine = engine_with(fixed_weights(dir.path(), true), 2, RoiMode::FullSlice);
    let targets = vec![0, 2, 4, 6, 7, 9];
    let (stats, predicted) = run(
        &engine,
        JobRequest::Propagate {
            support: support.clone(),
            slices: targets.clone(),
            strategy: Strategy::OneShot {
                support_size: Some(2),
            },
        },
    );
    assert_eq!(stats.support_slices, 6);
    assert_eq!(stats.support_size, Some(2));
    assert_eq!(stats.slices, targets.len());
    let mut slices: Vec<usize> = predicted.iter().map(|(s, _)| *s).collect();
    assert_eq!(slices[0], targets[0], "batches run in the order asked for");
    slices.sort_unstable();
    assert_eq!(slices, targets, "every slice predicted once");
    let mut grouped: Vec<usize> = stats
        .groups
        .iter()
        .flat_map(|g| g.queries.clone())
        .collect();
    grouped.sort_unstable();
    assert_eq!(grouped, targets, "every slice in exactly one group");
    for group in &stats.groups {
        assert_eq!(group.support.len(), 2);
    }
    for (a, b) in stats.groups.iter().zip(stats.groups.iter().skip(1)) {
        assert_ne!(a.support, b.support, "one group per distinct choice");
    }
    // Queries of one group share batches (batch size 2).
    let batches: usize = stats
        .groups
        .iter()
        .map(|g| g.queries.len().div_ceil(2))
        .sum();
    assert_eq!(stats.batches, batches);
    // Slice 6 got its two copies.
    let six = stats
        .groups
        .iter()
        .find(|g| g.queries.contains(&6))
        .unwrap();
    assert_eq!(six.support, vec![3, 10]);
    assert!(stats.groups.len() >= 2, "{:?}", stats.groups);

    // The same slices segmented with only their chosen support slices.
    for group in &stats.groups {
        let subset = Arc::new(SupportSet {
            volume: support.volume.clone(),
            axis: support.axis,
            slices: support
                .slices
                .iter()
                .filter(|s| group.support.contains(&s.index))
                .cloned()
                .collect(),
        });
        let (direct_stats, direct) = run(
            &engine,
            JobRequest::Propagate {
                support: subset,
                slices: group.queries.clone(),
                strategy: Strategy::OneShot { support_size: None },
            },
        );
        assert_eq!(direct_stats.support_size, None);
        for (slice, probabilities) in direct {
            let (_, retrieved) = predicted.iter().find(|(s, _)| *s == slice).unwrap();
            let diff = max_difference(retrieved, &probabilities);
            assert!(diff < 1e-4, "slice {slice}: {diff}");
        }
    }
}

#[test]
fn explanations_use_the_support_slices_their_query_was_propagated_with() {
    let (_, support) = retrieval_phantom();
    let dir = tempfile::tempdir().unwrap();
    let weights = fixed_weights(dir.path(), false);
    let targets: Vec<usize> = (0..12).collect();
    let explain = |engine: &Engine, slice: usize| {
        explain_job(
            engine,
            JobRequest::Explain {
                support: support.clone(),
                query_slice: slice,
                pixel: [24, 28],
                support_size: Some(3),
            },
        )
    };
    let propagate = |engine: &Engine| {
        run(
            engine,
            JobRequest::Propagate {
                support: support.clone(),
                slices: targets.clone(),
                strategy: Strategy::OneShot {
                    support_size: Some(3),
                },
            },
        )
        .0
    };
    // Propagation first, then clicks (the app's order) ...
    let engine = engine_with(weights.clone(), 4, RoiMode::default());
    let stats = propagate(&engine);
    for group in &stats.groups {
        for &slice in &group.queries {
            let explanation = explain(&engine, slice);
            assert_eq!(explanation.support_slices, group.support, "slice {slice}");
            assert_eq!(explanation.candidates, 6);
            for stage in &explanation.stages {
                assert_eq!(stage.maps.len(), 3);
                assert_eq!(stage.support_mass.len(), 3);
            }
        }
    }
    // ... and clicks first in a fresh engine, one query at a time.
    let engine = engine_with(weights, 4, RoiMode::default());
    let clicked: Vec<Vec<usize>> = targets
        .iter()
        .map(|&slice| explain(&engine, slice).support_slices)
        .collect();
    for group in &propagate(&engine).groups {
        for &slice in &group.queries {
            assert_eq!(clicked[slice], group.support, "slice {slice}");
        }
    }
}

#[test]
fn a_support_size_of_zero_is_refused_and_one_covering_the_set_changes_nothing() {
    let (_, support) = retrieval_phantom();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(fixed_weights(dir.path(), false), 4, RoiMode::default());
    let refused = [
        engine.submit(JobRequest::Propagate {
            support: support.clone(),
            slices: vec![2],
            strategy: Strategy::OneShot {
                support_size: Some(0),
            },
        }),
        engine.submit(JobRequest::Explain {
            support: support.clone(),
            query_slice: 2,
            pixel: [24, 28],
            support_size: Some(0),
        }),
    ];
    for id in refused {
        loop {
            match engine.events().recv().unwrap() {
                Event::Failed {
                    id: got,
                    error: EngineError::InvalidSupport { reason },
                } if got == id => {
                    assert!(reason.contains("at least 1"), "{reason}");
                    break;
                }
                Event::Progress { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let job = |support_size| JobRequest::Propagate {
        support: support.clone(),
        slices: vec![2, 6, 7],
        strategy: Strategy::OneShot { support_size },
    };
    let (all_stats, all) = run(&engine, job(None));
    assert_eq!(all_stats.groups.len(), 1);
    assert_eq!(all_stats.groups[0].support, vec![1, 3, 5, 8, 10, 11]);
    for size in [6, 50] {
        let (stats, same) = run(&engine, job(Some(size)));
        assert_eq!(
            stats.support_size, None,
            "{size} ≥ 6 support slices: no choice"
        );
        assert_eq!(stats.groups, all_stats.groups);
        for ((sa, a), (sb, b)) in all.iter().zip(&same) {
            assert_eq!(sa, sb);
            assert_eq!(a, b);
        }
    }
}

/// Runs a propagation to the end and returns each slice's probabilities (in arrival
/// order) and the stats.
fn run_to_end(
    engine: &Engine,
    support: Arc<SupportSet>,
    slices: Vec<usize>,
    strategy: Strategy,
) -> (Vec<(usize, Image2D<f32>)>, PropagationStats) {
    let id = engine.submit(JobRequest::Propagate {
        support,
        slices,
        strategy,
    });
    let mut predicted = Vec::new();
    loop {
        match engine.events().recv().unwrap() {
            Event::SlicePredicted {
                id: got,
                slice,
                probabilities,
            } if got == id => predicted.push((slice, probabilities)),
            Event::PropagationFinished { id: got, stats } if got == id => {
                return (predicted, stats);
            }
            Event::Failed { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
}

/// The support slices a chained query `z` was segmented with.
fn supports_used(stats: &PropagationStats, z: usize) -> Vec<usize> {
    stats
        .groups
        .iter()
        .find(|g| g.queries == vec![z])
        .expect("a queried slice")
        .support
        .clone()
}

#[test]
fn chained_propagation_stops_beyond_the_first_empty_slice_and_answers_every_slice() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    // The prior alone, closing fast: the disc (radius 16 mm) shrinks by 6 mm per
    // slice, so it is non-empty 1 and 2 slices from the annotation and empty at 3.
    let options = ChainOptions {
        nearest: 1,
        memory: 1,
        prior_weight: 1.0,
        taper: 3.0,
        hold_mm: Some(0.0),
        ..ChainOptions::default()
    };
    let targets: Vec<usize> = (0..12).filter(|&z| z != 5).collect();
    let (predicted, stats) = run_to_end(
        &engine,
        support(&volume, &masks, &[5]),
        targets.clone(),
        Strategy::Chain(options),
    );
    let mut answered: Vec<usize> = predicted.iter().map(|(z, _)| *z).collect();
    answered.sort_unstable();
    assert_eq!(answered, targets, "every slice is answered once");
    let non_empty: Vec<usize> = predicted
        .iter()
        .filter(|(_, p)| p.data.iter().any(|&v| is_inside(v)))
        .map(|(z, _)| *z)
        .collect();
    let mut non_empty = non_empty;
    non_empty.sort_unstable();
    assert_eq!(non_empty, vec![3, 4, 6, 7]);
    // Queried: distance 1, 2 and the first empty slice (3) on each side; beyond, nothing.
    let mut queried: Vec<usize> = stats
        .groups
        .iter()
        .flat_map(|g| g.queries.clone())
        .collect();
    queried.sort_unstable();
    assert_eq!(queried, vec![2, 3, 4, 6, 7, 8]);
    for (z, p) in &predicted {
        if !queried.contains(z) {
            assert!(
                p.data.iter().all(|&v| v == 0.0),
                "slice {z} was not queried"
            );
        }
    }
    // Each query used the annotation and the slice predicted just before it.
    let used = |z: usize| supports_used(&stats, z);
    assert_eq!(used(6), vec![5]);
    assert_eq!(used(7), vec![5, 6]);
    assert_eq!(used(3), vec![5, 4]);
}

#[test]
fn chained_queries_use_the_nearest_annotations_and_the_latest_predictions() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let options = ChainOptions {
        nearest: 1,
        memory: 2,
        prior_weight: 0.0,
        taper: 0.0,
        hold_mm: None,
        ..ChainOptions::default()
    };
    // Between the annotations every slice is predicted, whatever the network says.
    let targets: Vec<usize> = (3..9).collect();
    let (predicted, stats) = run_to_end(
        &engine,
        support(&volume, &masks, &[2, 9]),
        targets.clone(),
        Strategy::Chain(options),
    );
    assert_eq!(predicted.len(), 6);
    assert_eq!(stats.groups.len(), 6);
    let used = |z: usize| supports_used(&stats, z);
    assert_eq!(used(3), vec![2]);
    assert_eq!(used(5), vec![2, 4, 3]);
    assert_eq!(used(6), vec![9, 7, 8]);
    // Waves run outward from both annotations: 3 and 8 first, 5 and 6 last.
    let order: Vec<usize> = predicted.iter().map(|(z, _)| *z).collect();
    assert_eq!(order, vec![3, 8, 4, 7, 5, 6]);
}

#[test]
fn collect_thresholds_the_predictions_and_keeps_the_annotations() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let options = ChainOptions {
        nearest: 2,
        memory: 0,
        prior_weight: 1.0,
        taper: 0.0,
        hold_mm: None,
        ..ChainOptions::default()
    };
    let mut progress = Vec::new();
    let collected = collect(
        &engine,
        support(&volume, &masks, &[4, 7]),
        target_slices(12, &[4, 7], true),
        Strategy::Chain(options),
        &mut |done, total| progress.push((done, total)),
    )
    .unwrap();
    assert_eq!(progress.last(), Some(&(2, 2)));
    let mask = &collected.mask;
    let area = |z: usize| {
        mask.slice(Axis::K, z)
            .data
            .iter()
            .filter(|&&v| v != 0)
            .count()
    };
    let truth = |z: usize| masks[z].data.iter().filter(|&&v| v != 0).count();
    assert_eq!(area(4), truth(4));
    assert_eq!(area(7), truth(7));
    assert!(area(5) > 150 && area(6) > 150, "interpolated between");
    assert_eq!(
        area(3) + area(8),
        0,
        "bounded: nothing outside the annotations"
    );
    assert_eq!(collected.cleared, 0);
}

#[test]
fn target_slices_are_all_others_or_those_between_the_annotations() {
    assert_eq!(target_slices(6, &[2, 4], false), vec![0, 1, 3, 5]);
    assert_eq!(target_slices(10, &[2, 6], true), vec![3, 4, 5]);
    assert_eq!(target_slices(0, &[], false), Vec::<usize>::new());
}

#[test]
fn a_chained_slice_is_explained_with_the_annotations_and_memory_it_used() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let memory = vec![SupportSlice {
        index: 6,
        mask: masks[6].clone(),
    }];
    let id = engine.submit(JobRequest::ExplainChained {
        support: support(&volume, &masks, &[2, 5, 10]),
        query_slice: 7,
        pixel: [37, 28],
        nearest: 1,
        memory,
    });
    let explanation = match engine.events().recv().unwrap() {
        Event::Explained {
            id: got,
            explanation,
        } if got == id => explanation,
        other => panic!("expected an explanation, got {other:?}"),
    };
    assert_eq!(explanation.support_slices, vec![5, 6]);
    assert_eq!(explanation.candidates, 3);
    for stage in &explanation.stages {
        assert_eq!(stage.maps.len(), 2);
        assert!(stage.query_mass <= 1.0 + 1e-5);
    }
}

/// One slice from an annotation the prior weighs everything
/// ([`super::chain::prior_weight_at`]): the network is not run there, and those slices
/// come out exactly as the prior alone makes them; they keep their supports for an
/// explanation.
#[test]
fn the_network_is_not_run_next_to_an_annotation() {
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let run = |prior_weight: f32| {
        chain_between_two_annotations(
            &engine,
            ChainOptions {
                prior_weight,
                ..ChainOptions::default()
            },
        )
    };
    let (blend, stats) = run(ChainOptions::default().prior_weight);
    // 3 and 8 are next to the annotations 2 and 9; 4..=7 are two or more away.
    assert_eq!(stats.queried, 4);
    let grouped: usize = stats.groups.iter().map(|g| g.queries.len()).sum();
    assert_eq!(
        grouped, 6,
        "every slice keeps its supports: {:?}",
        stats.groups
    );
    let (prior_alone, alone_stats) = run(1.0);
    assert_eq!(alone_stats.queried, 0);
    for z in [3, 8] {
        assert_eq!(blend[z - 3].1, prior_alone[z - 3].1, "slice {z}");
    }
    assert_ne!(
        blend[1].1, prior_alone[1].1,
        "slice 4 blends the network in"
    );
}

/// The phantom annotated on slices 2 and 9, propagated to 3..=8 with `options`: the
/// probabilities in slice order, and the stats.
fn chain_between_two_annotations(
    engine: &Engine,
    options: ChainOptions,
) -> (Vec<(usize, Image2D<f32>)>, PropagationStats) {
    let (volume, masks) = phantom();
    let (mut predicted, stats) = run_to_end(
        engine,
        support(&volume, &masks, &[2, 9]),
        (3..9).collect(),
        Strategy::Chain(options),
    );
    predicted.sort_by_key(|(z, _)| *z);
    (predicted, stats)
}

#[test]
fn every_slice_is_blended_with_the_prior_built_beside_the_network() {
    let engine = Engine::start(tiny_config(2), Box::new(|| {}));
    expect_ready(&engine);
    let run = |prior_weight: f32| {
        chain_between_two_annotations(
            &engine,
            ChainOptions {
                prior_weight,
                intensity: 0.0,
                near_prior: false,
                ..ChainOptions::default()
            },
        )
    };
    let (network, _) = run(0.0);
    let (prior, prior_stats) = run(1.0);
    let (blend, stats) = run(0.7);
    assert!(stats.prior > Duration::ZERO && stats.prior_wait <= stats.prior);
    assert_eq!((prior_stats.queried, stats.queried), (0, 6));
    // In batches of 2 the network may answer before the prior is built: those slices
    // wait for it and are blended all the same.
    assert_eq!(blend.len(), 6);
    for ((z, b), ((_, n), (_, p))) in blend.iter().zip(network.iter().zip(&prior)) {
        for ((&b, &n), &p) in b.data.iter().zip(&n.data).zip(&p.data) {
            assert!((b - (0.3 * n + 0.7 * p)).abs() < 1e-5, "slice {z}");
        }
    }
}

#[test]
fn without_memory_the_slices_between_annotations_run_in_shared_batches() {
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let options = ChainOptions {
        nearest: 2,
        memory: 0,
        prior_weight: 0.0,
        taper: 0.0,
        hold_mm: None,
        ..ChainOptions::default()
    };
    let targets: Vec<usize> = (3..9).collect();
    let (predicted, stats) = run_to_end(
        &engine,
        support(&volume, &masks, &[2, 9]),
        targets,
        Strategy::Chain(options),
    );
    assert_eq!(predicted.len(), 6);
    // One group: every slice between 2 and 9 uses both; batches of 4.
    assert_eq!(stats.groups.len(), 1);
    assert_eq!(stats.groups[0].support, vec![2, 9]);
    assert_eq!(stats.queried, 6);
    assert_eq!(stats.batches, 2);
}

#[test]
fn the_guided_prior_follows_the_drifting_phantom_through_the_engine() {
    // The phantom's disc moves 1 px per slice; annotated on slices 2 and 9, the prior
    // alone (no network) fills 3–8. Carried along the registration it lands where the
    // image has the disc; copied, it stays where it was drawn.
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let dice = |guided: bool| {
        prior_dice_on_phantom(
            &engine,
            &volume,
            &masks,
            ChainOptions {
                guided,
                intensity: 0.0,
                ..prior_only()
            },
        )
    };
    let (plain, guided) = (dice(false), dice(true));
    assert!(
        guided > 0.9 && guided > plain + 0.05,
        "guided {guided:.3}, copied {plain:.3}"
    );
}

#[test]
fn intensity_evidence_pulls_a_copied_shape_onto_the_image() {
    // The same drifting disc (300 HU in 40 HU), copied without registration: the prior
    // misses it by up to 3 px. The intensities learned on the annotated slices pull
    // its edge back onto the disc.
    let (volume, masks) = phantom();
    let engine = Engine::start(tiny_config(4), Box::new(|| {}));
    expect_ready(&engine);
    let dice = |intensity: f32| {
        prior_dice_on_phantom(
            &engine,
            &volume,
            &masks,
            ChainOptions {
                guided: false,
                intensity,
                ..prior_only()
            },
        )
    };
    let (copied, pulled) = (dice(0.0), dice(1.0));
    assert!(
        pulled > copied + 0.03,
        "with intensities {pulled:.3}, copied {copied:.3}"
    );
}

/// The chain with the shape prior alone (no network), the nearer annotation carried.
fn prior_only() -> ChainOptions {
    ChainOptions {
        prior_weight: 1.0,
        between: crate::volume::interpolate::Between::Nearest,
        ..ChainOptions::default()
    }
}

/// Dice of a chained run with `options` on the phantom's slices 3–8, annotated on
/// slices 2 and 9.
fn prior_dice_on_phantom(
    engine: &Engine,
    volume: &Arc<Volume>,
    masks: &[Image2D<u8>],
    options: ChainOptions,
) -> f64 {
    let targets: Vec<usize> = (3..=8).collect();
    let (predicted, _) = run_to_end(
        engine,
        support(volume, masks, &[2, 9]),
        targets.clone(),
        Strategy::Chain(options),
    );
    assert_eq!(predicted.len(), targets.len());
    let (mut both, mut total) = (0usize, 0usize);
    for (z, p) in &predicted {
        for (v, &t) in p.data.iter().zip(&masks[*z].data) {
            let inside = is_inside(*v);
            both += usize::from(inside && t != 0);
            total += usize::from(inside) + usize::from(t != 0);
        }
    }
    2.0 * both as f64 / total as f64
}
