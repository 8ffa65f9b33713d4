//! Engine behaviour with the tiny network on a synthetic volume.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

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
    });
    let second = engine.submit(JobRequest::Propagate {
        support: s,
        slices: vec![1],
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
    });
    engine.cancel_all();
    let new = engine.submit(JobRequest::Propagate {
        support: s,
        slices: vec![4],
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
    });
    let mut failures = Vec::new();
    let id2 = engine.submit(JobRequest::Propagate {
        support: support(&volume, &masks, &[1]),
        slices: vec![2, 99],
    });
    let id3 = engine.submit(JobRequest::Propagate {
        support: Arc::new(SupportSet {
            volume: volume.clone(),
            axis: Axis::K,
            slices: vec![],
        }),
        slices: vec![2],
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
