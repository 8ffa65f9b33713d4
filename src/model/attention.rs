//! The attention path: Cross Attention Mapper (equation 2), Attention Upsampler
//! (§3.1.2 steps 1–7) and Provided-Attention Block (equation 3).
//!
//! An attention map at output stride `s` is a tensor `[B, hw, S·hw]`: row `i` is query
//! location `i` (row-major, `i = y·w + x` on the `h × w` grid), column `j` is support
//! location `j = n·hw + y'·w + x'` of support slice `n`.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use super::layers::{from_rows, linear_flops, to_rows};

/// The Cross Attention Mapper (paper §3.1.1, equation 2): one-head attention from the
/// coarsest query features to the coarsest support features plus learnable register
/// tokens, whose columns are dropped after the softmax so that each row sums to at
/// most 1.
#[derive(Module, Debug)]
pub struct CrossAttentionMapper {
    /// `W_Q ∈ R^{d×d}`.
    query_projection: Linear,
    /// `W_K ∈ R^{d×d}`.
    key_projection: Linear,
    /// The synthetic tokens `t^s`, `[R, d]`.
    registers: Param<Tensor<2>>,
    /// `ln T`: the learnable softmax temperature, kept positive through `exp`.
    log_temperature: Param<Tensor<1>>,
    /// `d`, the feature channels (`δ = 0.1·d`).
    channels: usize,
}

impl CrossAttentionMapper {
    /// A mapper on `channels`-dimensional features with `registers` synthetic tokens.
    ///
    /// `W_Q` and `W_K` start as the identity (the paper does not say how they are
    /// initialised): equation 2 then begins as the plain cross-correlation of the
    /// Attention Mapper Encoder's features, so each query location attends to the
    /// support locations that look like it from the first step, and the support masks
    /// reach the decoder in the right places. Two independent random projections start
    /// as a random bilinear form, whose near-uniform attention carries no spatial
    /// information; on a 2-core CPU budget that run collapsed to empty predictions.
    pub fn new(channels: usize, registers: usize, device: &Device) -> Self {
        let identity = || {
            let mut linear = LinearConfig::new(channels, channels)
                .with_bias(false)
                .init(device);
            linear.weight = Param::from_tensor(Tensor::<2>::eye(channels, device));
            linear
        };
        Self {
            query_projection: identity(),
            key_projection: identity(),
            registers: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([registers.max(1), channels], device),
            log_temperature: Initializer::Zeros.init([1], device),
            channels,
        }
    }

    /// Number of register tokens `R`.
    pub fn register_count(&self) -> usize {
        self.registers.dims()[0]
    }

    /// The projected keys `[X^s; t^s]·W_K`: one row per support location, then one per
    /// register token. Depends only on the support images.
    ///
    /// # Shapes
    /// `[S, d, h, w]` → `[S·h·w + R, d]`
    pub fn keys(&self, support: Tensor<4>) -> Tensor<2> {
        let rows = to_rows(support); // [S·hw, d]
        let tokens = Tensor::cat(vec![rows, self.registers.val()], 0);
        self.key_projection.forward(tokens)
    }

    /// The argument of equation 2's softmax, `X^q·W_Q·([X^s; t^s]·W_K)ᵀ / (δ·T)`: one
    /// row per query location (of every batch item), one column per key.
    ///
    /// # Shapes
    /// query `[B, d, h, w]`, keys `[K, d]` → `[B·h·w, K]`
    fn logits(&self, query: Tensor<4>, keys: Tensor<2>) -> Tensor<2> {
        let q = self.query_projection.forward(to_rows(query)); // [B·hw, d]
        self.scale(q.matmul(keys.transpose()))
    }

    /// Equation 2's scaling of query–key products: `/ δ` with `δ = 0.1·d`, then `/ T`.
    fn scale<const D: usize>(&self, products: Tensor<D>) -> Tensor<D> {
        let delta = 0.1 * self.channels as f64;
        let inverse_temperature = self.log_temperature.val().neg().exp().reshape([1; D]);
        products.div_scalar(delta) * inverse_temperature
    }

    /// Equation 2: `A_i = softmax(X_i^q·W_Q·([X^s; t^s]·W_K)ᵀ / (δ·T))[: S·h·w]`.
    ///
    /// # Shapes
    /// query `[B, d, h, w]`, keys `[S·h·w + R, d]` → `[B, h·w, S·h·w]`
    pub fn forward(&self, query: Tensor<4>, keys: Tensor<2>) -> Tensor<3> {
        let [b, _, h, w] = query.dims();
        let [key_rows, _] = keys.dims();
        let support_columns = key_rows - self.register_count();
        let attention = softmax(self.logits(query, keys), 1); // [B·hw, S·hw + R]
        attention
            .slice([0..b * h * w, 0..support_columns])
            .reshape([b, h * w, support_columns])
    }

    /// Retrieval similarity (paper §4.3) of each query image to each support image: for
    /// every query location the best cross-correlation with any location of the support
    /// image — the value inside equation 2's softmax, so a nearest-neighbour search in
    /// the space the attention itself uses — averaged over the query locations. The
    /// register tokens take no part.
    ///
    /// Each (query, support image) pair gets its own `h·w × h·w` product, so a score
    /// does not depend, to the last bit, on which other images share the batch or where
    /// the support image sits in the set: identical images tie exactly.
    ///
    /// # Shapes
    /// query `[B, d, h, w]`, keys `[S·h·w + R, d]` → `[B, S]`
    pub fn similarity(&self, query: Tensor<4>, keys: Tensor<2>) -> Tensor<2> {
        let [b, _, h, w] = query.dims();
        let hw = h * w;
        let [key_rows, d] = keys.dims();
        let support_rows = key_rows - self.register_count();
        let s = support_rows / hw;
        let q = self
            .query_projection
            .forward(to_rows(query))
            .reshape([b, 1, hw, d]);
        let k = keys
            .slice([0..support_rows, 0..d])
            .reshape([1, s, hw, d])
            .swap_dims(2, 3); // [1, S, d, hw]
        let logits = self.scale(q.matmul(k)); // [B, S, hw, hw]
        logits
            .max_dim(3) // [B, S, hw, 1]: each query location's best match in the image
            .mean_dim(2) // [B, S, 1, 1]
            .reshape([b, s])
    }

    /// Sets `W_Q = W_K = I`, so that logits are plain dot products of the encoder's
    /// embeddings (for tests of the retrieval, where a random bilinear form would rank
    /// a copy of the query no higher than anything else).
    #[cfg(test)]
    pub(crate) fn with_identity_projections(mut self) -> Self {
        let d = self.channels;
        let device = self.query_projection.weight.val().device();
        let identity = || Param::from_tensor(Tensor::<2>::eye(d, &device));
        self.query_projection.weight = identity();
        self.key_projection.weight = identity();
        self
    }

    /// The temperature `T`.
    pub fn temperature(&self) -> f32 {
        self.log_temperature.val().exp().into_scalar()
    }

    /// Floating-point operations per query image with `support_locations` keys.
    pub fn flops(&self, query_locations: usize, support_locations: usize) -> u64 {
        let keys = support_locations + self.register_count();
        linear_flops(&self.query_projection, query_locations)
            + 2 * (query_locations * keys * self.channels) as u64
            + 5 * (query_locations * keys) as u64
    }
}

/// The Provided-Attention Block (paper §3.1.2, equation 3):
/// `X_i^q += (A_i·X^s)·W_p + b_p`.
///
/// Because `(A·X^s)·W_p = A·(X^s·W_p)`, the support side `X^s·W_p` is computed once per
/// support set ([`Self::project_support`]) and each query pays one product `A·V`.
#[derive(Module, Debug)]
pub struct ProvidedAttentionBlock {
    /// `W_p` and `b_p`.
    projection: Linear,
}

impl ProvidedAttentionBlock {
    /// A block reading `support_channels` support features into `query_channels`.
    pub fn new(support_channels: usize, query_channels: usize, device: &Device) -> Self {
        Self {
            projection: LinearConfig::new(support_channels, query_channels).init(device),
        }
    }

    /// `V = X^s·W_p`.
    ///
    /// # Shapes
    /// `[S, c_s, h, w]` → `[S·h·w, d]`
    pub fn project_support(&self, support: Tensor<4>) -> Tensor<2> {
        to_rows(support).matmul(self.projection.weight.val())
    }

    /// # Shapes
    /// x `[B, d, h, w]`, attention `[B, h·w, S·h·w]`, values `[S·h·w, d]` → `[B, d, h, w]`
    pub fn forward(&self, x: Tensor<4>, attention: Tensor<3>, values: Tensor<2>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let [_, _, columns] = attention.dims();
        let [_, d] = values.dims();
        let mut provided = attention.reshape([b * h * w, columns]).matmul(values); // [B·hw, d]
        if let Some(bias) = &self.projection.bias {
            provided = provided + bias.val().reshape([1, d]);
        }
        x + from_rows(provided, [b, h, w])
    }

    /// Floating-point operations per query image.
    pub fn flops(&self, query_locations: usize, support_locations: usize) -> u64 {
        let [_, d] = self.projection.weight.dims();
        2 * (query_locations * support_locations * d) as u64
    }
}

/// The result of one Attention Upsampler.
#[derive(Clone, Debug)]
pub struct UpsampledAttention {
    /// The refined map `[B, 4hw, S·4hw]`; each row sums to its mass.
    pub map: Tensor<3>,
    /// The upsampled attention mass `[B, 4hw]` (step 4).
    pub mass: Tensor<2>,
}

/// The Attention Upsampler (paper §3.1.2, steps 1–7): doubles the resolution of an
/// attention map on both the support and the query axis, keeps each query's attention
/// mass, and refines the top-K entries of each row with a small feed-forward network
/// over `[A_ij, query feature_i, support feature_j]`.
#[derive(Module, Debug)]
pub struct AttentionUpsampler {
    /// Logit of the nearest/bilinear mix `c` on the support axis (step 2).
    mix_support: Param<Tensor<1>>,
    /// Logit of the mix `c` on the query axis (step 3, and the mass in step 4).
    mix_query: Param<Tensor<1>>,
    /// The first FFN layer's weights for the attention value `A_ij` (`[hidden]`).
    attention_weight: Param<Tensor<1>>,
    /// The first FFN layer's weights (and bias) for the query feature.
    query_projection: Linear,
    /// The first FFN layer's weights for the support feature.
    support_projection: Linear,
    /// The FFN's output layer; starts at zero so refinement starts as the identity.
    output: Linear,
}

/// `c·nearest + (1 − c)·bilinear` 2× upsampling of `[n, ch, h, w]` (steps 2–4).
fn mix_upsample(x: Tensor<4>, c: Tensor<1>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let nearest = interpolate(
        x.clone(),
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
    );
    let bilinear = bilinear_up2(x);
    bilinear.clone() + (nearest - bilinear) * c.reshape([1, 1, 1, 1])
}

/// Bilinear 2× upsampling with half-pixel centres (`align_corners = false`, edges
/// clamped), written with elementwise operations: it equals burn's bilinear
/// `interpolate` (tested) but differentiates on every backend — burn's wgpu kernels
/// have no backward pass for bilinear interpolation, which training on a GPU needs.
///
/// # Shapes
/// `[n, c, h, w]` → `[n, c, 2h, 2w]`
fn bilinear_up2(x: Tensor<4>) -> Tensor<4> {
    let x = linear_up2_along(x, 3);
    linear_up2_along(x, 2)
}

/// Linear 2× upsampling of a 4-D tensor along `dim` (2 or 3): output `2i` is
/// `¾·x[i] + ¼·x[i−1]`, output `2i+1` is `¾·x[i] + ¼·x[i+1]` (indices clamped).
fn linear_up2_along(x: Tensor<4>, dim: usize) -> Tensor<4> {
    let dims = x.dims();
    let n = dims[dim];
    let (previous, next) = if n == 1 {
        (x.clone(), x.clone())
    } else {
        (
            Tensor::cat(
                vec![x.clone().narrow(dim, 0, 1), x.clone().narrow(dim, 0, n - 1)],
                dim,
            ),
            Tensor::cat(
                vec![
                    x.clone().narrow(dim, 1, n - 1),
                    x.clone().narrow(dim, n - 1, 1),
                ],
                dim,
            ),
        )
    };
    let even = x.clone() * 0.75 + previous * 0.25;
    let odd = x * 0.75 + next * 0.25;
    // Interleave: [.., n, ..] pairs (even, odd) → [.., 2n, ..].
    let mut out_dims = dims;
    out_dims[dim] = 2 * n;
    Tensor::stack::<5>(vec![even, odd], dim + 1).reshape(out_dims)
}

/// Indices of the `k` largest entries of each row of `map` `[B, n, m]` (any order
/// within a row), `[B, n, k]`. Selection is not differentiated; the values are gathered
/// from the map afterwards so gradients flow to them.
///
/// On the CPU backend this is a linear-time partial selection per row (burn's top-k sorts
/// each whole row, which dominated the CPU time of the stride-8 upsampler); other backends
/// use burn's top-k.
fn top_k_indices(map: &Tensor<3>, k: usize) -> Tensor<3, Int> {
    let device = map.device();
    if device != Device::flex() {
        return map.clone().detach().topk_with_indices(k, 2).1;
    }
    let [b, n, m] = map.dims();
    let values = map
        .clone()
        .inner()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data converts to f32");
    let mut indices: Vec<i64> = Vec::with_capacity(b * n * k);
    let mut order: Vec<u32> = Vec::with_capacity(m);
    for row in values.chunks_exact(m) {
        order.clear();
        order.extend(0..m as u32);
        // Descending: the k largest end up in order[..k].
        order.select_nth_unstable_by(k - 1, |&i, &j| row[j as usize].total_cmp(&row[i as usize]));
        indices.extend(order[..k].iter().map(|&i| i64::from(i)));
    }
    Tensor::from_data(TensorData::new(indices, [b, n, k]), &device)
}

/// Rescales each row of `map` `[B, n, m]` to sum to `mass` `[B, n, 1]`.
fn renormalise(map: Tensor<3>, mass: Tensor<3>) -> Tensor<3> {
    let sums = map.clone().sum_dim(2).clamp_min(1e-30);
    map * (mass / sums)
}

impl AttentionUpsampler {
    /// An upsampler for `channels`-dimensional attention features and a refinement
    /// network with `hidden` units.
    pub fn new(channels: usize, hidden: usize, device: &Device) -> Self {
        Self {
            mix_support: Initializer::Zeros.init([1], device),
            mix_query: Initializer::Zeros.init([1], device),
            attention_weight: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([hidden], device),
            query_projection: LinearConfig::new(channels, hidden).init(device),
            support_projection: LinearConfig::new(channels, hidden)
                .with_bias(false)
                .init(device),
            output: LinearConfig::new(hidden, 1)
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }

    /// The mix coefficients `c` (support axis, query axis), each in `[0, 1]`.
    pub fn mix(&self) -> (f32, f32) {
        (
            sigmoid(self.mix_support.val()).into_scalar(),
            sigmoid(self.mix_query.val()).into_scalar(),
        )
    }

    /// Projects the (EMA) support features at the finer stride through the FFN's first
    /// layer. Depends only on the support images.
    ///
    /// # Shapes
    /// `[S, c, 2h, 2w]` → `[S·4hw, hidden]`
    pub fn project_support(&self, support: Tensor<4>) -> Tensor<2> {
        self.support_projection.forward(to_rows(support))
    }

    /// Steps 1–4: upsamples `attention` `[B, hw, S·hw]` on an `h × w` grid to
    /// `[B, 4hw, S·4hw]` and rescales every row to the upsampled mass. Returns the map
    /// and the mass `[B, 4hw, 1]`.
    pub fn interpolate(&self, attention: Tensor<3>, [h, w]: [usize; 2]) -> (Tensor<3>, Tensor<3>) {
        let [b, hw, columns] = attention.dims();
        let s = columns / hw;
        let fine = 4 * hw;
        // Step 1: the attention mass of each query location.
        let mass = attention.clone().sum_dim(2); // [B, hw, 1]
        // Step 2: the support axis; (B·hw) is the batch, S the channels.
        let c_support = sigmoid(self.mix_support.val());
        let map = mix_upsample(attention.reshape([b * hw, s, h, w]), c_support); // [B·hw, S, 2h, 2w]
        let map = map.reshape([b, hw, s * fine]);
        // Step 3: the query axis, on the transposed map.
        let c_query = sigmoid(self.mix_query.val());
        let map = map.swap_dims(1, 2).reshape([b, s * fine, h, w]);
        let map = mix_upsample(map, c_query.clone()) // [B, S·4hw, 2h, 2w]
            .reshape([b, s * fine, fine])
            .swap_dims(1, 2); // [B, 4hw, S·4hw]
        // Step 4: the mass, upsampled the same way; rows rescaled to it.
        let mass = mix_upsample(mass.reshape([b, 1, h, w]), c_query).reshape([b, fine, 1]);
        (renormalise(map, mass.clone()), mass)
    }

    /// Steps 5–6: for each row, the `k` largest entries `A_ij` are multiplied by
    /// `1 + ELU(FFN([A_ij, q_i, s_j]))`; every other entry is left unchanged.
    ///
    /// The FFN's first layer on the concatenation is split into its three blocks of
    /// weights, so the support block is applied once per support set
    /// ([`Self::project_support`]). `A_ij` enters relative to uniform attention
    /// (multiplied by the number of columns) so its scale does not depend on `S·hw`.
    ///
    /// # Shapes
    /// map `[B, n, m]`, query `[B, c, 2h, 2w]` (n = 4hw), support `[m, hidden]` →
    /// `[B, n, m]`
    pub fn refine_top_k(
        &self,
        map: Tensor<3>,
        query: Tensor<4>,
        support: Tensor<2>,
        k: usize,
    ) -> Tensor<3> {
        let [b, n, m] = map.dims();
        let [_, hidden] = support.dims();
        let k = k.min(m);
        if k == 0 {
            return map;
        }
        let (values, indices) = if k < m {
            let indices = top_k_indices(&map, k); // [B, n, k]
            (map.clone().gather(2, indices.clone()), indices)
        } else {
            let all = Tensor::<1, Int>::arange(0..m as i64, &map.device())
                .reshape([1, 1, m])
                .expand([b, n, m]);
            (map.clone(), all)
        };
        let support_terms = support
            .select(0, indices.clone().reshape([b * n * k]))
            .reshape([b, n, k, hidden]);
        let query_terms = self
            .query_projection
            .forward(to_rows(query))
            .reshape([b, n, 1, hidden]);
        let attention_terms = (values.clone() * m as f32).reshape([b, n, k, 1])
            * self.attention_weight.val().reshape([1, 1, 1, hidden]);
        let hidden_units = relu(attention_terms + query_terms + support_terms);
        let y = self.output.forward(hidden_units).reshape([b, n, k]);
        // 1 + ELU(y), written so that it stays positive in floating point: for y ≤ 0
        // it is exp(y) (computing (exp(y) − 1) + 1 would round to 0 for y < −17), and
        // y is floored at −60 so exp never underflows (e^−60 ≈ 1e−26).
        let factor = y.clone().clamp_min(0.0) + y.clamp(-60.0, 0.0).exp();
        // A_ij ← A_ij·factor in place at the selected entries (indices are unique per
        // row); multiplying avoids the cancellation of adding `A·factor − A`.
        map.scatter(2, indices, factor, IndexingUpdateOp::Mul)
    }

    /// Steps 1–7.
    ///
    /// # Shapes
    /// attention `[B, hw, S·hw]` on an `h × w` grid, query features `[B, c, 2h, 2w]`,
    /// projected support features `[S·4hw, hidden]` → map `[B, 4hw, S·4hw]`, mass
    /// `[B, 4hw]`.
    pub fn forward(
        &self,
        attention: Tensor<3>,
        grid: [usize; 2],
        query: Tensor<4>,
        support: Tensor<2>,
        k: usize,
    ) -> UpsampledAttention {
        let (map, mass) = self.interpolate(attention, grid);
        let map = self.refine_top_k(map, query, support, k);
        // Step 7.
        let map = renormalise(map, mass.clone());
        let [b, n, _] = mass.dims();
        UpsampledAttention {
            map,
            mass: mass.reshape([b, n]),
        }
    }

    /// Floating-point operations per query image (n fine query locations, m support
    /// columns, k refined entries per row).
    pub fn flops(&self, n: usize, m: usize, k: usize) -> u64 {
        let [_, hidden] = self.query_projection.weight.dims();
        let k = k.min(m) as u64;
        let (n64, m64) = (n as u64, m as u64);
        // Interpolation (two modes, two axes), renormalisation twice, top-k by sorting.
        let interpolation = 2 * 2 * 8 * n64 * m64 + 2 * 3 * n64 * m64;
        let sort = n64 * m64 * (64 - m64.leading_zeros() as u64);
        let ffn = linear_flops(&self.query_projection, n)
            + n64 * k * (hidden as u64) * 12
            + linear_flops(&self.output, n * k as usize);
        interpolation + sort + ffn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn device() -> Device {
        Device::flex()
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn explicit_bilinear_upsampling_equals_burns_interpolate() {
        for [h, w] in [[4, 4], [3, 5], [1, 2], [2, 1]] {
            let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device());
            let reference = interpolate(
                x.clone(),
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size([2 * h, 2 * w]),
            );
            let ours = bilinear_up2(x);
            assert_eq!(ours.dims(), [2, 3, 2 * h, 2 * w]);
            let diff = (ours - reference).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "{h}×{w}: max difference {diff}");
        }
    }

    /// A random attention map with rows summing to less than 1.
    fn random_attention(b: usize, hw: usize, s: usize) -> Tensor<3> {
        let raw = Tensor::<3>::random(
            [b, hw, s * hw + 3],
            Distribution::Normal(0.0, 2.0),
            &device(),
        );
        softmax(raw, 2).slice([0..b, 0..hw, 0..s * hw])
    }

    #[test]
    fn cross_attention_rows_are_non_negative_and_sum_to_at_most_one() {
        let d = device();
        let mapper = CrossAttentionMapper::new(8, 3, &d);
        let support = Tensor::<4>::random([3, 8, 2, 2], Distribution::Normal(0.0, 3.0), &d);
        let query = Tensor::<4>::random([2, 8, 2, 2], Distribution::Normal(0.0, 3.0), &d);
        let keys = mapper.keys(support);
        assert_eq!(keys.dims(), [3 * 4 + 3, 8]);
        let a = mapper.forward(query, keys);
        assert_eq!(a.dims(), [2, 4, 12]);
        let sums = values(a.clone().sum_dim(2));
        assert!(values(a).iter().all(|&v| v >= 0.0));
        for s in sums {
            assert!(s > 0.0 && s <= 1.0 + 1e-6, "row sum {s}");
        }
    }

    #[test]
    fn registers_absorb_mass_when_the_support_does_not_match() {
        // A register token identical to the query and support keys orthogonal to it:
        // nearly all mass should go to the register.
        let d = device();
        let mut mapper = CrossAttentionMapper::new(4, 1, &d);
        let eye = Tensor::<2>::eye(4, &d);
        mapper.query_projection.weight = Param::from_tensor(eye.clone());
        mapper.key_projection.weight = Param::from_tensor(eye);
        mapper.registers = Param::from_tensor(Tensor::from_floats([[40.0, 0.0, 0.0, 0.0]], &d));
        let query = Tensor::<4>::from_floats([[[[1.0]], [[0.0]], [[0.0]], [[0.0]]]], &d);
        let support = Tensor::<4>::from_floats([[[[0.0]], [[1.0]], [[0.0]], [[0.0]]]], &d);
        let keys = mapper.keys(support);
        let a = mapper.forward(query, keys);
        let mass = values(a.sum_dim(2))[0];
        assert!(mass < 1e-3, "mass {mass}");
    }

    #[test]
    fn upsampler_preserves_each_querys_attention_mass() {
        let d = device();
        let up = AttentionUpsampler::new(6, 5, &d);
        // Make the refinement active (its output layer starts at zero).
        let mut up = up;
        up.output.weight =
            Param::from_tensor(Tensor::random([5, 1], Distribution::Normal(0.0, 1.0), &d));
        let (h, w, s, b) = (3, 2, 2, 2);
        let a = random_attention(b, h * w, s);
        let query = Tensor::<4>::random([b, 6, 2 * h, 2 * w], Distribution::Default, &d);
        let support = up.project_support(Tensor::random(
            [s, 6, 2 * h, 2 * w],
            Distribution::Default,
            &d,
        ));
        let coarse_mass = values(a.clone().sum_dim(2));
        let out = up.forward(a, [h, w], query, support, 5);
        assert_eq!(out.map.dims(), [b, 4 * h * w, s * 4 * h * w]);
        let row_sums = values(out.map.clone().sum_dim(2));
        let mass: Vec<f32> = out.mass.into_data().try_into_vec::<f32>().unwrap();
        // Steps 4 and 7: every row sums to the upsampled mass.
        for (r, m) in row_sums.iter().zip(&mass) {
            assert!((r - m).abs() < 1e-5, "{r} vs {m}");
        }
        // And the upsampled mass stays within the coarse masses' range (a convex mix).
        let lo = coarse_mass.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = coarse_mass.iter().cloned().fold(0.0, f32::max);
        assert!(mass.iter().all(|&m| m >= lo - 1e-6 && m <= hi + 1e-6));
        assert!(values(out.map).iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn with_pure_nearest_mixing_each_child_keeps_its_parents_mass() {
        let d = device();
        let mut up = AttentionUpsampler::new(4, 3, &d);
        // c = sigmoid(40) = 1: nearest only.
        up.mix_query = Param::from_tensor(Tensor::from_floats([40.0], &d));
        up.mix_support = Param::from_tensor(Tensor::from_floats([40.0], &d));
        let (h, w) = (2, 3);
        let a = random_attention(1, h * w, 2);
        let coarse: Vec<f32> = values(a.clone().sum_dim(2));
        let (_, mass) = up.interpolate(a, [h, w]);
        let fine = values(mass);
        for y in 0..2 * h {
            for x in 0..2 * w {
                let parent = coarse[(y / 2) * w + x / 2];
                assert!((fine[y * 2 * w + x] - parent).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn top_k_refinement_changes_only_k_entries_of_each_row() {
        let d = device();
        let mut up = AttentionUpsampler::new(4, 6, &d);
        up.output.weight =
            Param::from_tensor(Tensor::random([6, 1], Distribution::Normal(0.0, 2.0), &d));
        up.output.bias = Some(Param::from_tensor(Tensor::from_floats([0.7], &d)));
        let (b, n, m, k) = (2, 8, 40, 5);
        let map = softmax(
            Tensor::<3>::random([b, n, m], Distribution::Normal(0.0, 2.0), &d),
            2,
        );
        let query = Tensor::<4>::random([b, 4, 2, 4], Distribution::Default, &d);
        let support = Tensor::<2>::random([m, 6], Distribution::Default, &d);
        let before = values(map.clone());
        let after = values(up.refine_top_k(map, query, support, k));
        for row in 0..b * n {
            let r = row * m..(row + 1) * m;
            let old = &before[r.clone()];
            let new = &after[r];
            let changed: Vec<usize> = (0..m).filter(|&j| old[j] != new[j]).collect();
            assert_eq!(changed.len(), k, "row {row}");
            // The changed entries are exactly the row's k largest.
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&i, &j| old[j].total_cmp(&old[i]));
            let mut top: Vec<usize> = order[..k].to_vec();
            top.sort();
            assert_eq!(changed, top, "row {row}");
            // Factors 1 + ELU(y) are positive.
            assert!(changed.iter().all(|&j| new[j] > 0.0));
        }
    }

    #[test]
    fn refinement_starts_as_the_identity() {
        let d = device();
        let up = AttentionUpsampler::new(4, 6, &d);
        let map = softmax(
            Tensor::<3>::random([1, 4, 12], Distribution::Default, &d),
            2,
        );
        let out = up.refine_top_k(
            map.clone(),
            Tensor::random([1, 4, 2, 2], Distribution::Default, &d),
            Tensor::random([12, 6], Distribution::Default, &d),
            3,
        );
        out.into_data().assert_eq(&map.into_data(), true);
    }

    #[test]
    fn provided_attention_is_the_attention_weighted_support_projection() {
        let d = device();
        let block = ProvidedAttentionBlock::new(3, 2, &d);
        // One query location attending 0.25 / 0.5 to two support locations.
        let attention = Tensor::<3>::from_floats([[[0.25, 0.5]]], &d);
        let support = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3, 1, 1]),
            &d,
        );
        let x = Tensor::<4>::zeros([1, 2, 1, 1], &d);
        let values = block.project_support(support);
        let out: Vec<f32> = block
            .forward(x, attention, values)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        // (0.25·[1,2,3] + 0.5·[4,5,6])·W_p + b_p
        let mixed = [0.25 + 2.0, 0.5 + 2.5, 0.75 + 3.0];
        let wp: Vec<f32> = block
            .projection
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap(); // [3, 2]
        let bp: Vec<f32> = block
            .projection
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for o in 0..2 {
            let want: f32 = (0..3).map(|c| mixed[c] * wp[c * 2 + o]).sum::<f32>() + bp[o];
            assert!((out[o] - want).abs() < 1e-5, "{} vs {want}", out[o]);
        }
    }
}
