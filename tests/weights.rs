//! The shipped weights (`weights/icseg-lite.bpk`, produced by `icseg train` and
//! `icseg ship`) load into the architecture and actually segment real anatomy.

use std::sync::{Arc, Mutex, MutexGuard};

use icseg::engine::{
    ChainOptions, DeviceChoice, DeviceRequest, EngineConfig, Strategy, WeightsChoice, WeightsStatus,
};
use icseg::eval::{NetworkPropagator, Protocol, binary_mask, evaluate_structure};
use icseg::model::ModelConfig;
use icseg::testing::shared_data;
use icseg::volume::Axis;
use icseg::volume::{LabelMap, Volume};

fn shipped_weights() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/icseg-lite.bpk")
}

/// The CPU backend's random numbers, seeded, for one test at a time: "random weights"
/// are then the same weights in every run (unseeded, one draw in about twenty lifted
/// the random blend below to 0.599, past its bound), and no other test of this file
/// draws from the same generator meanwhile.
fn seeded_random_numbers() -> MutexGuard<'static, ()> {
    static RANDOM: Mutex<()> = Mutex::new(());
    let guard = RANDOM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    burn::tensor::Device::flex().seed(2025);
    guard
}

#[test]
fn shipped_weights_match_the_lite_architecture() {
    let path = shipped_weights();
    assert!(path.is_file(), "{} is missing", path.display());
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 50_000_000, "weights file of {size} bytes");
    let _random = seeded_random_numbers();
    let device = burn::tensor::Device::flex();
    let model = icseg::model::Model::load_weights(&ModelConfig::lite(), &path, &device)
        .expect("the shipped weights load into the lite configuration");
    // Loading is bit-exact with what was trained: the learned temperature is not the
    // initial value, so these are trained weights, not a fresh initialisation.
    let t = model.cross_attention_mapper().temperature();
    assert!(
        (t - 1.0).abs() > 1e-4,
        "temperature {t} is still the initial 1.0"
    );
}

/// Held-out validation patient pt_201 and its mandible (OAR label 7) as a 0/1 mask;
/// `None` (test skipped) without the shared data.
fn pt_201_mandible() -> Option<(Arc<Volume>, LabelMap)> {
    let dir = shared_data("volumes/openkbp/validation")?;
    let image = Arc::new(
        icseg::io::open_volume(&dir.join("pt_201_ct.nii.gz"))
            .unwrap()
            .volume,
    );
    let labels =
        icseg::io::read_label_map(&dir.join("pt_201_oar.nii.gz"), image.geometry()).unwrap();
    const MANDIBLE: u16 = 7;
    Some((image, binary_mask(&labels, MANDIBLE)))
}

/// The Dice of propagating `truth` from three slices (the evaluation's `inner`
/// protocol) with `weights` and `strategy` on the CPU, and the weights the engine ran.
fn dice_from_three_slices(
    image: &Arc<Volume>,
    truth: &LabelMap,
    weights: WeightsChoice,
    strategy: Strategy,
) -> (f64, WeightsStatus) {
    let _random = seeded_random_numbers();
    let mut network = NetworkPropagator::start(
        EngineConfig {
            device: DeviceRequest::Choice(DeviceChoice::Cpu),
            weights,
            ..EngineConfig::default()
        },
        strategy,
        "network",
    )
    .expect("the engine starts");
    let status = network.info().weights.clone();
    let (slices, scores) = evaluate_structure(
        image,
        truth,
        Axis::K,
        3,
        Protocol::Inner,
        &mut [&mut network],
    )
    .unwrap()
    .expect("the mandible spans at least six slices");
    assert_eq!(slices.len(), 3);
    (scores[0].dice(), status)
}

/// A held-out validation patient (never trained on), its mandible annotated on three
/// slices as the evaluation's simulated user does: the shipped network must find the
/// mandible on every other slice well above what it needs to be useful, and above the
/// same network with random weights.
#[test]
fn shipped_weights_segment_the_mandible_of_a_validation_ct_from_three_slices() {
    let Some((image, truth)) = pt_201_mandible() else {
        return;
    };
    // The network alone, as the paper runs it (the chained strategy's shape prior would
    // score without any weights).
    let oneshot = Strategy::OneShot { support_size: None };
    let dice_with = |weights| dice_from_three_slices(&image, &truth, weights, oneshot);
    let (trained, status) = dice_with(WeightsChoice::File(shipped_weights()));
    assert!(matches!(status, WeightsStatus::Loaded(_)), "{status:?}");
    let (random, _) = dice_with(WeightsChoice::Random);
    println!("mandible Dice from 3 slices: shipped {trained:.3}, random weights {random:.3}");
    assert!(
        trained >= TRAINED_FLOOR,
        "shipped weights: Dice {trained:.3}"
    );
    assert!(
        trained >= random + 0.2,
        "shipped {trained:.3} vs random {random:.3}"
    );
}

/// `icseg eval` measured 0.562 for this structure and annotation with the shipped
/// weights (nearest-slice baseline 0.670, random weights ≈ 0.0; `docs/evaluation.md`).
/// The floor leaves 0.11 for floating-point differences between CPUs and backends while
/// still failing for weights that do not segment (random, stale or mismatched ones).
const TRAINED_FLOOR: f64 = 0.45;

/// Blended with the plain shape-based interpolation (no registration, no intensity
/// evidence, the same weight at every distance; the chained defaults before the
/// guided prior), the shipped network earns its share: on the same mandible the
/// blend scores clearly above the interpolation it is blended with
/// (measured: 0.648 against 0.549 for the interpolation alone and 0.562 for the paper's
/// one-shot propagation; `docs/evaluation.md`), and random weights do not. With the
/// default guided prior the network's share is smaller (0.699 against 0.705 for the
/// guided prior alone on this mandible, +0.003 over all validation patients), too small
/// to tell weights apart.
#[test]
fn the_shipped_network_adds_to_the_shape_prior_in_chained_propagation() {
    let Some((image, truth)) = pt_201_mandible() else {
        return;
    };
    let dice_with = |weights, strategy| dice_from_three_slices(&image, &truth, weights, strategy).0;
    let interpolating = ChainOptions {
        prior_weight: 0.6,
        between: icseg::volume::interpolate::Between::Interpolate,
        guided: false,
        intensity: 0.0,
        near_prior: false,
        ..ChainOptions::default()
    };
    let chain = Strategy::Chain(interpolating);
    let prior_only = Strategy::Chain(ChainOptions {
        prior_weight: 1.0,
        ..interpolating
    });
    let shipped = WeightsChoice::File(shipped_weights());
    let blended = dice_with(shipped.clone(), chain);
    let prior = dice_with(shipped, prior_only);
    let random = dice_with(WeightsChoice::Random, chain);
    println!(
        "mandible, chained: shipped {blended:.3}, prior alone {prior:.3}, random weights {random:.3}"
    );
    assert!(
        blended >= prior + 0.05,
        "blend {blended:.3} vs prior {prior:.3}"
    );
    assert!(
        blended >= random + 0.05,
        "shipped {blended:.3} vs random {random:.3}"
    );
}
