//! The paper's properties, checked on the whole network with the tiny configuration
//! and random inputs.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Tensor};

use super::*;

const SIZE: usize = 64;

fn images(n: usize, seed_shift: f64, device: &Device) -> Tensor<4> {
    Tensor::<4>::random(
        [n, 1, SIZE, SIZE],
        Distribution::Normal(seed_shift, 1.0),
        device,
    )
}

fn masks(n: usize, device: &Device) -> Tensor<4> {
    Tensor::<4>::random([n, 1, SIZE, SIZE], Distribution::Bernoulli(0.3), device)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Adds noise to every parameter so that zero-initialised layers (residual branches,
/// the upsamplers' output layers) no longer block gradients or hide differences.
struct Perturb;

impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            let autodiff = t.is_autodiff();
            let require_grad = t.is_require_grad();
            let plain = t.inner();
            let noise = Tensor::random(
                plain.shape(),
                Distribution::Normal(0.0, 0.05),
                &plain.device(),
            );
            let noisy = plain + noise;
            if autodiff {
                // A fresh leaf, tracked again when it was.
                noisy.autodiff().set_require_grad(require_grad)
            } else {
                noisy
            }
        })
    }
}

fn perturbed(model: Model) -> Model {
    model.map(&mut Perturb).freeze_ema()
}

#[test]
fn every_attention_row_is_non_negative_and_sums_to_at_most_one() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device));
    let out = model.forward(
        images(3, 0.0, &device),
        masks(3, &device),
        images(2, 0.5, &device),
    );
    assert_eq!(out.logits.dims(), [2, 1, SIZE, SIZE]);
    let strides: Vec<usize> = out.attention.iter().map(|a| a.stride).collect();
    assert_eq!(strides, [32, 16, 8]);
    for stage in &out.attention {
        let [gh, gw] = stage.grid;
        assert_eq!((gh, gw), (SIZE / stage.stride, SIZE / stage.stride));
        assert_eq!(stage.map.dims(), [2, gh * gw, 3 * gh * gw]);
        let values = to_vec(stage.map.clone());
        assert!(values.iter().all(|&v| v >= 0.0), "stride {}", stage.stride);
        let sums = to_vec(stage.map.clone().sum_dim(2));
        let mass = to_vec(stage.mass.clone());
        for (s, m) in sums.iter().zip(&mass) {
            assert!(*s <= 1.0 + 1e-5, "stride {} row sum {s}", stage.stride);
            assert!(
                (s - m).abs() < 1e-5,
                "stride {} sum {s} vs mass {m}",
                stage.stride
            );
        }
    }
}

#[test]
fn attention_maps_do_not_change_when_only_the_support_masks_change() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device));
    let support_images = images(3, 0.0, &device);
    let query = images(2, 0.2, &device);
    let a = model.forward(support_images.clone(), masks(3, &device), query.clone());
    let b = model.forward(support_images, masks(3, &device), query);
    for (x, y) in a.attention.iter().zip(&b.attention) {
        x.map.to_data().assert_eq(&y.map.to_data(), true);
    }
    // The masks do reach the segmentation.
    assert!(max_abs_diff(a.logits, b.logits) > 1e-6);
}

#[test]
fn support_features_encoded_apart_and_joined_equal_those_encoded_together() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device));
    let (imgs, msks) = (images(3, 0.0, &device), masks(3, &device));
    let together = model.encode_support(imgs.clone(), msks.clone());
    let first = model.encode_support(imgs.clone().slice(0..2), msks.clone().slice(0..2));
    let last = model.encode_support(imgs.slice(2..3), msks.slice(2..3));
    let joined = model.concat_support(&first, &last);
    assert_eq!(joined.support_count(), 3);
    let query = images(2, 0.4, &device);
    let a = model.forward_query(&together, query.clone());
    let b = model.forward_query(&joined, query);
    assert!(max_abs_diff(a.logits, b.logits) < 1e-4);
    for (x, y) in a.attention.iter().zip(&b.attention) {
        assert!(max_abs_diff(x.map.clone(), y.map.clone()) < 1e-5);
    }
}

#[test]
fn attention_maps_alone_equal_those_of_the_full_forward_pass() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device));
    let support = model.encode_support(images(2, 0.0, &device), masks(2, &device));
    let query = images(1, 0.3, &device);
    let full = model.forward_query(&support, query.clone());
    let only = model.attention_maps(&support.attention, query);
    for (x, y) in full.attention.iter().zip(&only) {
        x.map.to_data().assert_eq(&y.map.to_data(), true);
        x.mass.to_data().assert_eq(&y.mass.to_data(), true);
    }
}

#[test]
fn any_support_size_from_1_to_16_runs_with_the_same_weights() {
    let device = Device::flex();
    let model = ModelConfig::tiny().init(&device);
    let query = images(1, 0.0, &device);
    for s in 1..=16 {
        let support = model.encode_support(images(s, 0.0, &device), masks(s, &device));
        assert_eq!(support.support_count(), s);
        let out = model.forward_query(&support, query.clone());
        assert_eq!(out.logits.dims(), [1, 1, SIZE, SIZE]);
        assert_eq!(out.attention[2].map.dims(), [1, 64, s * 64]);
        let p = to_vec(out.probabilities());
        assert!(
            p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
            "S = {s}"
        );
    }
}

#[test]
fn a_batch_of_queries_equals_the_queries_run_one_by_one() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device));
    let support = model.encode_support(images(3, 0.0, &device), masks(3, &device));
    let batch = images(3, 0.4, &device);
    let together = model.forward_query(&support, batch.clone());
    for n in 0..3 {
        let alone = model.forward_query(&support, batch.clone().narrow(0, n, 1));
        let logits = together.logits.clone().narrow(0, n, 1);
        assert!(max_abs_diff(logits, alone.logits) < 1e-4, "query {n}");
        for (t, a) in together.attention.iter().zip(&alone.attention) {
            let [_, rows, cols] = t.map.dims();
            let part = t.map.clone().slice([n..n + 1, 0..rows, 0..cols]);
            assert!(
                max_abs_diff(part, a.map.clone()) < 1e-6,
                "stride {}",
                t.stride
            );
        }
    }
}

/// A float parameter: its dotted path, its value (flattened), whether it requires a
/// gradient and its gradient (flattened) in a given backward pass.
struct ParamInfo {
    path: String,
    value: Tensor<1>,
    require_grad: bool,
    grad: Option<Tensor<1>>,
}

struct ParamsWithPaths<'a> {
    path: Vec<String>,
    grads: Option<&'a Gradients>,
    found: Vec<ParamInfo>,
}

impl ModuleVisitor for ParamsWithPaths<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // The leaf itself: gradients are looked up on it, not on a reshaped copy.
        let leaf = param.val();
        self.found.push(ParamInfo {
            path: self.path.join("."),
            require_grad: leaf.is_require_grad(),
            grad: self
                .grads
                .and_then(|g| leaf.grad(g))
                .map(|g| g.flatten(0, D - 1)),
            value: leaf.inner().flatten(0, D - 1),
        });
    }
}

fn param_infos<M: Module>(module: &M, grads: Option<&Gradients>) -> Vec<ParamInfo> {
    let mut v = ParamsWithPaths {
        path: Vec::new(),
        grads,
        found: Vec::new(),
    };
    module.visit(&mut v);
    v.found
}

/// `(path, value)` of every float parameter.
fn params_with_paths<M: Module>(module: &M) -> Vec<(String, Tensor<1>)> {
    param_infos(module, None)
        .into_iter()
        .map(|p| (p.path, p.value))
        .collect()
}

#[test]
fn every_parameter_but_the_ema_twin_receives_a_gradient() {
    let device = Device::flex().autodiff();
    let model = perturbed(ModelConfig::tiny().with_top_k0(1).init(&device));
    let out = model.forward(
        images(2, 0.0, &device),
        masks(2, &device),
        images(2, 0.3, &device),
    );
    let target = masks(2, &device);
    // A loss that depends on every output pixel.
    let loss = (out.probabilities() - target).powi_scalar(2).mean();
    let grads = loss.backward();
    let mut ema = 0;
    let mut trained = 0;
    for ParamInfo {
        path,
        grad,
        require_grad,
        ..
    } in param_infos(&model, Some(&grads))
    {
        if path.starts_with("ema_attention_mapper_encoder") {
            assert!(grad.is_none(), "the EMA twin received a gradient at {path}");
            assert!(!require_grad, "{path} requires a gradient");
            ema += 1;
        } else {
            assert!(require_grad, "{path} does not require a gradient");
            let grad = grad.unwrap_or_else(|| panic!("no gradient for {path}"));
            let norm: f32 = grad.abs().sum().into_scalar();
            assert!(norm > 0.0, "zero gradient for {path}");
            trained += 1;
        }
    }
    assert!(
        ema > 10 && trained > 2 * ema,
        "{ema} EMA and {trained} trained tensors"
    );
}

#[test]
fn ema_update_follows_its_formula() {
    let device = Device::flex();
    let model = ModelConfig::tiny().init(&device);
    // At initialisation the twin is a copy.
    let online = params_with_paths(model.attention_mapper_encoder());
    let twin = params_with_paths(model.ema_attention_mapper_encoder());
    assert_eq!(online.len(), twin.len());
    for ((_, o), (_, e)) in online.iter().zip(&twin) {
        o.to_data().assert_eq(&e.to_data(), true);
    }
    // Move the online encoder away from the twin, then average with μ = 0.9.
    let moved = model.map(&mut Perturb).freeze_ema();
    let online = params_with_paths(moved.attention_mapper_encoder());
    let before = params_with_paths(moved.ema_attention_mapper_encoder());
    let updated = moved.clone().ema_update(0.9);
    let after = params_with_paths(updated.ema_attention_mapper_encoder());
    let mut compared = 0;
    for ((o, b), (path, a)) in online.iter().zip(&before).zip(&after) {
        let want = b.1.clone() * 0.9 + o.1.clone() * 0.1;
        assert!(max_abs_diff(want, a.clone()) < 1e-6, "{path}");
        assert!(
            max_abs_diff(b.1.clone(), a.clone()) > 0.0,
            "{path} did not move"
        );
        compared += 1;
    }
    assert!(compared > 10);
    // The online encoder is untouched by the update.
    for ((_, x), (_, y)) in online
        .iter()
        .zip(params_with_paths(updated.attention_mapper_encoder()))
    {
        x.to_data().assert_eq(&y.to_data(), true);
    }
}

#[test]
fn ema_twin_stays_gradient_free_after_updates_on_an_autodiff_device() {
    let device = Device::flex().autodiff();
    let model = ModelConfig::tiny().init(&device).ema_update(0.5);
    let out = model.forward(
        images(1, 0.0, &device),
        masks(1, &device),
        images(1, 0.0, &device),
    );
    let grads = out.logits.sum().backward();
    let twin = param_infos(model.ema_attention_mapper_encoder(), Some(&grads));
    assert!(!twin.is_empty());
    for p in twin {
        assert!(!p.require_grad, "{} requires a gradient", p.path);
        assert!(p.grad.is_none(), "{} got a gradient", p.path);
    }
    // While the online encoder, fed the query, does get gradients.
    let online = param_infos(model.attention_mapper_encoder(), Some(&grads));
    assert!(online.iter().all(|p| p.grad.is_some()));
}

#[test]
fn top_k0_is_a_run_time_setting() {
    let device = Device::flex();
    let mut model = perturbed(ModelConfig::tiny().init(&device));
    assert_eq!(model.top_k0(), 2);
    let support = model.encode_support(images(2, 0.0, &device), masks(2, &device));
    let query = images(1, 0.0, &device);
    let a = model.forward_query(&support, query.clone());
    model.set_top_k0(24);
    assert_eq!(model.top_k0(), 24);
    let b = model.forward_query(&support, query);
    // Same coarse map, different refinement.
    a.attention[0]
        .map
        .to_data()
        .assert_eq(&b.attention[0].map.to_data(), true);
    assert!(max_abs_diff(a.attention[2].map.clone(), b.attention[2].map.clone()) > 0.0);
}

#[test]
fn save_then_load_is_bit_exact() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device)).ema_update(0.7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.bpk");
    model.save_weights(&path).unwrap();
    let loaded = Model::load_weights(&ModelConfig::tiny(), &path, &device).unwrap();
    let a = params_with_paths(&model);
    let b = params_with_paths(&loaded);
    assert_eq!(a.len(), b.len());
    for ((pa, ta), (pb, tb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb);
        let (va, vb) = (to_vec(ta.clone()), to_vec(tb.clone()));
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{pa} differs"
        );
    }
    assert_eq!(Model::weights_config(&path).unwrap(), ModelConfig::tiny());
    // And the loaded model computes the same thing.
    let si = images(2, 0.0, &device);
    let sm = masks(2, &device);
    let q = images(1, 0.0, &device);
    let x = model.forward(si.clone(), sm.clone(), q.clone()).logits;
    let y = loaded.forward(si, sm, q).logits;
    x.to_data().assert_eq(&y.to_data(), true);
}

#[test]
fn loading_weights_of_another_configuration_is_a_typed_error() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.bpk");
    ModelConfig::tiny()
        .init(&device)
        .save_weights(&path)
        .unwrap();
    let err = Model::load_weights(&ModelConfig::lite(), &path, &device).unwrap_err();
    match &err {
        WeightsError::ConfigMismatch {
            expected, found, ..
        } => {
            assert_eq!((expected.as_str(), found.as_str()), ("lite", "tiny"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().ends_with(path.to_str().unwrap()));
    // K0 is not part of the identity of the weights.
    assert!(Model::load_weights(&ModelConfig::tiny().with_top_k0(8), &path, &device).is_ok());
}

#[test]
fn missing_and_damaged_weight_files_are_typed_errors() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.bpk");
    assert!(matches!(
        Model::load_weights(&ModelConfig::tiny(), &missing, &device),
        Err(WeightsError::NotFound { .. })
    ));
    let garbage = dir.path().join("garbage.bpk");
    std::fs::write(&garbage, b"definitely not weights").unwrap();
    assert!(matches!(
        Model::load_weights(&ModelConfig::tiny(), &garbage, &device),
        Err(WeightsError::NotWeights { .. })
    ));
    // A real file cut short.
    let good = dir.path().join("good.bpk");
    ModelConfig::tiny()
        .init(&device)
        .save_weights(&good)
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.bpk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load_weights(&ModelConfig::tiny(), &cut, &device).unwrap_err();
    assert!(
        matches!(
            err,
            WeightsError::NotWeights { .. } | WeightsError::Incompatible { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn parameter_counts_of_the_named_configurations() {
    let device = Device::flex();
    let paper = ModelConfig::paper().init(&device);
    let trainable = paper.trainable_param_count();
    // The paper: "approximately 25M".
    assert!(
        (22_000_000..28_000_000).contains(&trainable),
        "paper: {trainable} {:?}",
        paper.param_counts()
    );
    let lite = ModelConfig::lite().init(&device);
    assert!(lite.trainable_param_count() < trainable / 4);
    let parts: usize = lite.param_counts().iter().map(|(_, n)| n).sum();
    assert_eq!(parts, lite.trainable_param_count() + lite.ema_param_count());
    assert!(lite.flops_per_query(8) < paper.flops_per_query(8));
}

/// Square blobs: bright squares on a noisy background; the mask marks the square.
fn square_batch(n: usize, device: &Device, seed: &mut u64) -> (Tensor<4>, Tensor<4>) {
    let mut images = vec![0.0f32; n * SIZE * SIZE];
    let mut masks = vec![0.0f32; n * SIZE * SIZE];
    let mut next = || {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) as usize
    };
    for s in 0..n {
        let side = 10 + next() % 16;
        let (x0, y0) = (next() % (SIZE - side), next() % (SIZE - side));
        for y in 0..SIZE {
            for x in 0..SIZE {
                let i = s * SIZE * SIZE + y * SIZE + x;
                let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
                images[i] = if inside { 1.0 } else { -0.5 } + (next() % 100) as f32 / 200.0;
                masks[i] = f32::from(u8::from(inside));
            }
        }
    }
    let shape = [n, 1, SIZE, SIZE];
    (
        Tensor::from_data(burn::tensor::TensorData::new(images, shape), device),
        Tensor::from_data(burn::tensor::TensorData::new(masks, shape), device),
    )
}

#[test]
fn the_training_api_lowers_the_loss_and_moves_the_ema_twin() {
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::activation::log_sigmoid;

    let device = Device::flex().autodiff();
    let mut model = ModelConfig::tiny().init(&device);
    let twin_before = params_with_paths(model.ema_attention_mapper_encoder());
    let mut optim = AdamWConfig::new().init();
    let mut seed = 7;
    let mut losses = Vec::new();
    for _ in 0..40 {
        let (support_images, support_masks) = square_batch(2, &device, &mut seed);
        let (query, target) = square_batch(2, &device, &mut seed);
        let out = model.forward(support_images, support_masks, query);
        // Binary cross-entropy on logits.
        let logits = out.logits;
        let loss = -(target.clone() * log_sigmoid(logits.clone())
            + (target.neg() + 1.0) * log_sigmoid(logits.neg()))
        .mean();
        losses.push(loss.clone().inner().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
        model = model.ema_update(0.9);
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.6 * first, "loss {first} → {last}: {losses:?}");
    // The twin followed the online encoder by averaging, not by gradients.
    let twin_after = params_with_paths(model.ema_attention_mapper_encoder());
    let moved = twin_before
        .iter()
        .zip(&twin_after)
        .filter(|((_, a), (_, b))| max_abs_diff(a.clone(), b.clone()) > 0.0)
        .count();
    assert!(
        moved > twin_before.len() / 2,
        "{moved} of {} moved",
        twin_before.len()
    );
    assert!(
        param_infos(model.ema_attention_mapper_encoder(), None)
            .iter()
            .all(|p| !p.require_grad)
    );
}

#[test]
fn a_query_encoded_once_segments_as_the_plain_forward_pass_does() {
    let device = Device::flex();
    let model = perturbed(ModelConfig::tiny().init(&device));
    let support = model.encode_support(images(2, 0.0, &device), masks(2, &device));
    let query = images(3, 0.3, &device);
    let encoding = model.encode_query(query.clone());
    let plain = model.forward_query(&support, query.clone());
    let encoded = model.forward_query_encoded(&support, query.clone(), &encoding);
    assert!(max_abs_diff(plain.logits, encoded.logits.clone()) < 1e-4);
    // Retrieval scores from the kept encoding are those of support_similarity.
    let a = model.support_similarity(&support.attention, query.clone());
    let b = model.similarity_of(&support.attention, &encoding);
    a.to_data().assert_eq(&b.to_data(), true);
    // Selecting rows of the encoding segments those queries alone.
    let one = encoding.select(&[2]);
    let third = query.slice(2..3);
    let alone = model.forward_query_encoded(&support, third, &one);
    let logits = encoded.logits.slice(2..3);
    assert!(max_abs_diff(alone.logits, logits) < 1e-4);
}
