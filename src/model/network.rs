//! The whole network (paper §3.1, Figure 1) and its split forward pass.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::attention::{AttentionUpsampler, CrossAttentionMapper};
use super::attention_mapper_encoder::AttentionMapperEncoder;
use super::config::ModelConfig;
use super::decoder::SegmentationDecoder;
use super::segmentation_encoder::{SegmentationEncoder, SupportSetEncoder};

/// Everything the query side needs that depends only on the support *images*: the
/// projected keys of the Cross Attention Mapper (with the register tokens) and the EMA
/// Attention Mapper Encoder features at strides 16 and 8, already projected through the
/// upsamplers' refinement networks. Changing only the masks keeps these (§3.1.1).
#[derive(Clone, Debug)]
pub struct SupportAttention {
    /// `[S·hw32 + R, d]`.
    pub(crate) keys: Tensor<2>,
    /// Upsampler inputs at strides 16 and 8: `[S·hw16, hidden]`, `[S·hw8, hidden]`.
    pub(crate) projected: [Tensor<2>; 2],
    /// Number of support slices `S`.
    pub(crate) count: usize,
}

/// The Support Set Encoder's features at strides 32, 16 and 8, already multiplied by
/// the Provided-Attention Blocks' `W_p` (`[S·hw_s, d_s]` each). Depend on images and
/// masks.
#[derive(Clone, Debug)]
pub struct SupportValues {
    pub(crate) values: [Tensor<2>; 3],
}

/// Everything computed once per support set ([`Model::encode_support`]).
#[derive(Clone, Debug)]
pub struct SupportFeatures {
    /// The image-only part (attention keys and refinement inputs).
    pub attention: SupportAttention,
    /// The image-and-mask part (Provided-Attention values).
    pub values: SupportValues,
}

impl SupportFeatures {
    /// Number of support slices `S`.
    pub fn support_count(&self) -> usize {
        self.attention.count
    }

    /// Waits until asynchronous backends (wgpu) have computed every tensor, by reading
    /// one value of each back. For timing.
    pub fn block_until_ready(&self) {
        let tensors = [&self.attention.keys]
            .into_iter()
            .chain(&self.attention.projected)
            .chain(&self.values.values);
        for t in tensors {
            let _ = t.clone().slice([0..1, 0..1]).into_data();
        }
    }
}

impl SupportAttention {
    /// Number of support slices `S`.
    pub fn support_count(&self) -> usize {
        self.count
    }
}

/// The Attention Mapper Encoder pyramid (strides 8, 16, 32) of a batch of queries
/// ([`Model::encode_query`]).
#[derive(Clone, Debug)]
pub struct QueryEncoding {
    pyramid: [Tensor<4>; 3],
}

impl QueryEncoding {
    /// The encodings of the queries at `rows` of this batch, in that order.
    pub fn select(&self, rows: &[usize]) -> QueryEncoding {
        let device = self.pyramid[0].device();
        let len = rows.len();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [len]),
            &device,
        );
        QueryEncoding {
            pyramid: self.pyramid.clone().map(|t| t.select(0, index.clone())),
        }
    }

    /// This batch followed by `other`.
    pub fn append(self, other: QueryEncoding) -> QueryEncoding {
        let [a, b, c] = self.pyramid;
        let [x, y, z] = other.pyramid;
        QueryEncoding {
            pyramid: [
                Tensor::cat(vec![a, x], 0),
                Tensor::cat(vec![b, y], 0),
                Tensor::cat(vec![c, z], 0),
            ],
        }
    }
}

/// One of the three attention stages the decoder uses (strides 32, 16, 8).
#[derive(Clone, Debug)]
pub struct AttentionStage {
    /// Output stride of this stage (32, 16 or 8).
    pub stride: usize,
    /// `[h, w]` of the query (and each support) grid at this stride.
    pub grid: [usize; 2],
    /// The attention map `[B, h·w, S·h·w]`; row `y·w + x` is query location `(x, y)`,
    /// column `n·h·w + y'·w + x'` is location `(x', y')` of support slice `n`.
    pub map: Tensor<3>,
    /// The attention mass of each query location `[B, h·w]` (the row sums, ≤ 1).
    pub mass: Tensor<2>,
}

/// What [`Model::forward_query`] returns.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// Mask logits `[B, 1, H, W]` (the paper's output is `sigmoid(logits)`).
    pub logits: Tensor<4>,
    /// Attention stages at strides 32, 16 and 8.
    pub attention: [AttentionStage; 3],
}

impl ModelOutput {
    /// Mask probabilities `sigmoid(logits)`, `[B, 1, H, W]`.
    pub fn probabilities(&self) -> Tensor<4> {
        sigmoid(self.logits.clone())
    }
}

/// The in-context cross-attention segmentation network.
///
/// Build one with [`ModelConfig::init`], load trained weights with
/// [`Model::load_weights`](super::Model::load_weights).
#[derive(Module, Debug)]
pub struct Model {
    attention_mapper_encoder: AttentionMapperEncoder,
    /// The EMA twin: same architecture, weights averaged by [`Model::ema_update`],
    /// never trained by gradients. Encodes the support images.
    ema_attention_mapper_encoder: AttentionMapperEncoder,
    cross_attention_mapper: CrossAttentionMapper,
    /// Upsamplers to strides 16 and 8.
    attention_upsamplers: Vec<AttentionUpsampler>,
    segmentation_encoder: SegmentationEncoder,
    support_set_encoder: SupportSetEncoder,
    decoder: SegmentationDecoder,
    #[module(skip)]
    config: ModelConfig,
}

impl ModelConfig {
    /// Builds a randomly initialised model. The EMA twin starts as a copy of the
    /// Attention Mapper Encoder and never requires gradients.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`ModelConfig::validate`]); configurations
    /// from files are validated before they get here.
    pub fn init(&self, device: &Device) -> Model {
        if let Err(e) = self.validate() {
            panic!("invalid model configuration: {e}");
        }
        let ame = &self.attention_mapper_encoder;
        let attention_mapper_encoder = AttentionMapperEncoder::new(ame, device);
        let ema_attention_mapper_encoder = AttentionMapperEncoder::new(ame, device);
        let model = Model {
            attention_mapper_encoder,
            ema_attention_mapper_encoder,
            cross_attention_mapper: CrossAttentionMapper::new(
                ame.widths[3],
                self.register_tokens,
                device,
            ),
            attention_upsamplers: vec![
                AttentionUpsampler::new(ame.widths[2], self.upsampler_hidden, device),
                AttentionUpsampler::new(ame.widths[1], self.upsampler_hidden, device),
            ],
            segmentation_encoder: SegmentationEncoder::new(&self.encoder, 1, device),
            support_set_encoder: SupportSetEncoder::new(&self.encoder, 2, device),
            decoder: SegmentationDecoder::new(self, device),
            config: self.clone(),
        };
        // θ_ema ← θ.
        model.ema_update(0.0)
    }
}

/// The rows of support slices `slices` (positions among `count` slices whose rows come
/// one slice after the other), then the last `tail` rows (the register tokens).
///
/// # Shapes
/// `[count·r + tail, c]` → `[slices.len()·r + tail, c]`
fn select_rows(rows: &Tensor<2>, slices: &[usize], count: usize, tail: usize) -> Tensor<2> {
    let [total, _] = rows.dims();
    let per_slice = (total - tail) / count.max(1);
    let mut indices: Vec<i64> = Vec::with_capacity(slices.len() * per_slice + tail);
    for &n in slices {
        assert!(n < count, "support position {n} of {count}");
        indices.extend((n * per_slice..(n + 1) * per_slice).map(|r| r as i64));
    }
    indices.extend((total - tail..total).map(|r| r as i64));
    let len = indices.len();
    let indices = Tensor::<1, Int>::from_data(TensorData::new(indices, [len]), &rows.device());
    rows.clone().select(0, indices)
}

/// The rows of `x` then those of `y`, each without its last `tail` rows, then the last
/// `tail` rows of `x` (the register tokens of the keys).
fn cat_rows(x: &Tensor<2>, y: &Tensor<2>, tail: usize) -> Tensor<2> {
    let body = |t: &Tensor<2>| {
        let [rows, cols] = t.dims();
        t.clone().slice([0..rows - tail, 0..cols])
    };
    let mut parts = vec![body(x), body(y)];
    if tail > 0 {
        let [rows, cols] = x.dims();
        parts.push(x.clone().slice([rows - tail..rows, 0..cols]));
    }
    Tensor::cat(parts, 0)
}

/// Collects a module's float parameters, flattened, in visiting order.
struct CollectParams {
    tensors: Vec<Tensor<1>>,
}

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.tensors.push(param.val().detach().flatten(0, D - 1));
    }
}

/// Replaces each float parameter `e` by `μ·e + (1 − μ)·o`, with `o` taken in visiting
/// order from an identically structured module.
struct BlendParams {
    online: std::vec::IntoIter<Tensor<1>>,
    mu: f64,
}

impl ModuleMapper for BlendParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let online = self
            .online
            .next()
            .expect("the EMA twin has the same parameters as the online encoder");
        let mu = self.mu;
        param.map(|ema| {
            let online: Tensor<D> = online.reshape(ema.shape());
            let ema = ema.detach();
            if mu == 0.0 {
                online
            } else if mu == 1.0 {
                ema
            } else {
                online * (1.0 - mu) + ema * mu
            }
        })
    }
}

impl Model {
    /// The configuration the model was built with (including the current K0).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Base top-K of the Attention Upsamplers (K = 4·K0 at stride 16, 16·K0 at stride 8).
    pub fn top_k0(&self) -> usize {
        self.config.top_k0
    }

    /// Sets K0 (paper: 5 then 24 during training, 8 at inference). Values below 1 are
    /// raised to 1.
    pub fn set_top_k0(&mut self, k0: usize) {
        self.config.top_k0 = k0.max(1);
    }

    /// [`Self::set_top_k0`] in builder style.
    pub fn with_top_k0(mut self, k0: usize) -> Self {
        self.set_top_k0(k0);
        self
    }

    /// The EMA update after an optimiser step: `θ_ema ← μ·θ_ema + (1 − μ)·θ` for every
    /// parameter of the Attention Mapper Encoder's twin. The twin stays gradient-free.
    pub fn ema_update(mut self, mu: f64) -> Self {
        let mut collect = CollectParams {
            tensors: Vec::new(),
        };
        self.attention_mapper_encoder.visit(&mut collect);
        let mut blend = BlendParams {
            online: collect.tensors.into_iter(),
            mu,
        };
        self.ema_attention_mapper_encoder =
            self.ema_attention_mapper_encoder.map(&mut blend).no_grad();
        debug_assert!(blend.online.next().is_none());
        self
    }

    /// Makes sure the EMA twin requires no gradient (after loading a record).
    pub(crate) fn freeze_ema(mut self) -> Self {
        self.ema_attention_mapper_encoder = self.ema_attention_mapper_encoder.no_grad();
        self
    }

    /// Sets the Cross Attention Mapper's `W_Q = W_K = I` (tests of the retrieval).
    #[cfg(test)]
    pub(crate) fn with_identity_attention_projections(mut self) -> Self {
        self.cross_attention_mapper = self.cross_attention_mapper.with_identity_projections();
        self
    }

    /// The EMA twin (read-only; for tests and training diagnostics).
    pub fn ema_attention_mapper_encoder(&self) -> &AttentionMapperEncoder {
        &self.ema_attention_mapper_encoder
    }

    /// The online Attention Mapper Encoder.
    pub fn attention_mapper_encoder(&self) -> &AttentionMapperEncoder {
        &self.attention_mapper_encoder
    }

    /// The Cross Attention Mapper.
    pub fn cross_attention_mapper(&self) -> &CrossAttentionMapper {
        &self.cross_attention_mapper
    }

    /// The Attention Upsamplers to strides 16 and 8.
    pub fn attention_upsamplers(&self) -> &[AttentionUpsampler] {
        &self.attention_upsamplers
    }

    /// Encodes the support *images* (EMA Attention Mapper Encoder, keys with register
    /// tokens, refinement inputs). Masks play no part (§3.1.1).
    ///
    /// # Shapes
    /// images `[S, 1, H, W]`
    pub fn encode_support_attention(&self, images: Tensor<4>) -> SupportAttention {
        let [s, _, _, _] = images.dims();
        let [sa8, sa16, sa32] = self.ema_attention_mapper_encoder.forward(images);
        SupportAttention {
            keys: self.cross_attention_mapper.keys(sa32), // [S·hw32 + R, d]
            projected: [
                self.attention_upsamplers[0].project_support(sa16), // [S·hw16, hidden]
                self.attention_upsamplers[1].project_support(sa8),  // [S·hw8, hidden]
            ],
            count: s,
        }
    }

    /// Encodes support images with their masks (Support Set Encoder) into the values the
    /// Provided-Attention Blocks read.
    ///
    /// # Shapes
    /// images `[S, 1, H, W]`, masks `[S, 1, H, W]` (0 or 1)
    pub fn encode_support_values(&self, images: Tensor<4>, masks: Tensor<4>) -> SupportValues {
        let [_, _, f8, f16, f32] = self
            .support_set_encoder
            .forward(Tensor::cat(vec![images, masks], 1));
        let pab = &self.decoder.provided_attention;
        SupportValues {
            values: [
                pab[0].project_support(f32), // [S·hw32, d32]
                pab[1].project_support(f16), // [S·hw16, d16]
                pab[2].project_support(f8),  // [S·hw8, d8]
            ],
        }
    }

    /// Everything that depends only on the support set.
    ///
    /// # Shapes
    /// images `[S, 1, H, W]`, masks `[S, 1, H, W]`
    pub fn encode_support(&self, images: Tensor<4>, masks: Tensor<4>) -> SupportFeatures {
        SupportFeatures {
            attention: self.encode_support_attention(images.clone()),
            values: self.encode_support_values(images, masks),
        }
    }

    /// Retrieval scores (paper §4.3): how well each support image serves each query
    /// image, by the Cross Attention Mapper's own similarity (see
    /// [`CrossAttentionMapper::similarity`]) between the query's coarsest Attention
    /// Mapper Encoder embeddings and the support keys. Higher is more similar.
    ///
    /// Each query is encoded on its own, so that its scores are the same to the last
    /// bit whatever else shares the batch (a slice gets the same support slices in a
    /// propagation of many slices and in the explanation of one click).
    ///
    /// # Shapes
    /// query `[B, 1, H, W]` → `[B, S]`
    pub fn support_similarity(&self, support: &SupportAttention, query: Tensor<4>) -> Tensor<2> {
        self.similarity_of(support, &self.encode_query(query))
    }

    /// The queries' Attention Mapper Encoder pyramids, each query encoded on its own (so
    /// a query's encoding does not depend on what shares its batch). Computed once, it
    /// serves both retrieval ([`Self::similarity_of`]) and segmentation
    /// ([`Self::forward_query_encoded`]).
    ///
    /// # Shapes
    /// query `[B, 1, H, W]`
    pub fn encode_query(&self, query: Tensor<4>) -> QueryEncoding {
        let [b, c, h, w] = query.dims();
        let mut levels: [Vec<Tensor<4>>; 3] = Default::default();
        for n in 0..b {
            let one = query.clone().slice([n..n + 1, 0..c, 0..h, 0..w]);
            for (level, t) in levels
                .iter_mut()
                .zip(self.attention_mapper_encoder.forward(one))
            {
                level.push(t);
            }
        }
        QueryEncoding {
            pyramid: levels.map(|l| Tensor::cat(l, 0)),
        }
    }

    /// [`Self::support_similarity`] of encoded queries.
    pub fn similarity_of(&self, support: &SupportAttention, query: &QueryEncoding) -> Tensor<2> {
        self.cross_attention_mapper
            .similarity(query.pyramid[2].clone(), support.keys.clone())
    }

    /// The image-only features of some of the support slices (`slices` are positions in
    /// the encoded set, in the order wanted), without encoding anything again: every
    /// slice is encoded on its own (no normalisation across the batch), so its rows
    /// are the same whichever set it was encoded with.
    ///
    /// # Panics
    /// If a position is out of range.
    pub fn select_support_attention(
        &self,
        support: &SupportAttention,
        slices: &[usize],
    ) -> SupportAttention {
        let registers = self.cross_attention_mapper.register_count();
        let n = support.count;
        SupportAttention {
            keys: select_rows(&support.keys, slices, n, registers), // [S'·hw32 + R, d]
            projected: support
                .projected
                .clone()
                .map(|p| select_rows(&p, slices, n, 0)), // [S'·hw16, ·], [S'·hw8, ·]
            count: slices.len(),
        }
    }

    /// [`Self::select_support_attention`] for all support features (the values too).
    ///
    /// # Panics
    /// If a position is out of range.
    pub fn select_support(&self, support: &SupportFeatures, slices: &[usize]) -> SupportFeatures {
        let n = support.attention.count;
        SupportFeatures {
            attention: self.select_support_attention(&support.attention, slices),
            values: SupportValues {
                values: support
                    .values
                    .values
                    .clone()
                    .map(|v| select_rows(&v, slices, n, 0)),
            },
        }
    }

    /// The support features of the slices of `a` followed by those of `b`, as if they
    /// had been encoded together: every slice is encoded on its own (convolutions and
    /// projections act per slice), so features encoded at different times can be
    /// joined. Chained propagation (`engine::chain`) encodes the annotated slices once
    /// and each predicted slice when it becomes a support.
    pub fn concat_support(&self, a: &SupportFeatures, b: &SupportFeatures) -> SupportFeatures {
        SupportFeatures {
            attention: self.concat_support_attention(&a.attention, &b.attention),
            values: SupportValues {
                values: [0, 1, 2].map(|i| cat_rows(&a.values.values[i], &b.values.values[i], 0)),
            },
        }
    }

    /// [`Self::concat_support`] for the image-only part. The register tokens of `a` are
    /// kept (they are parameters, the same in both).
    pub fn concat_support_attention(
        &self,
        a: &SupportAttention,
        b: &SupportAttention,
    ) -> SupportAttention {
        let registers = self.cross_attention_mapper.register_count();
        SupportAttention {
            keys: cat_rows(&a.keys, &b.keys, registers),
            projected: [
                cat_rows(&a.projected[0], &b.projected[0], 0),
                cat_rows(&a.projected[1], &b.projected[1], 0),
            ],
            count: a.count + b.count,
        }
    }

    /// The three attention stages from the query's Attention Mapper Encoder pyramid.
    fn attention_path(
        &self,
        support: &SupportAttention,
        [qa8, qa16, qa32]: [Tensor<4>; 3],
    ) -> [AttentionStage; 3] {
        let [b, _, h, w] = qa32.dims();
        let [key_rows, _] = support.keys.dims();
        let registers = self.cross_attention_mapper.register_count();
        assert_eq!(
            key_rows - registers,
            support.count * h * w,
            "support features were encoded at another input size than the query"
        );
        let k0 = self.config.top_k0;
        let a32 = self
            .cross_attention_mapper
            .forward(qa32, support.keys.clone()); // [B, hw32, S·hw32]
        let mass32 = a32.clone().sum_dim(2).reshape([b, h * w]);
        let up16 = self.attention_upsamplers[0].forward(
            a32.clone(),
            [h, w],
            qa16,
            support.projected[0].clone(),
            4 * k0,
        ); // [B, hw16, S·hw16]
        let up8 = self.attention_upsamplers[1].forward(
            up16.map.clone(),
            [2 * h, 2 * w],
            qa8,
            support.projected[1].clone(),
            16 * k0,
        ); // [B, hw8, S·hw8]
        [
            AttentionStage {
                stride: 32,
                grid: [h, w],
                map: a32,
                mass: mass32,
            },
            AttentionStage {
                stride: 16,
                grid: [2 * h, 2 * w],
                map: up16.map,
                mass: up16.mass,
            },
            AttentionStage {
                stride: 8,
                grid: [4 * h, 4 * w],
                map: up8.map,
                mass: up8.mass,
            },
        ]
    }

    /// Only the attention maps for a query (what the explanation view needs): the
    /// Attention Mapper Encoder, the Cross Attention Mapper and the two upsamplers.
    ///
    /// # Shapes
    /// query `[B, 1, H, W]`
    pub fn attention_maps(
        &self,
        support: &SupportAttention,
        query: Tensor<4>,
    ) -> [AttentionStage; 3] {
        let pyramid = self.attention_mapper_encoder.forward(query);
        self.attention_path(support, pyramid)
    }

    /// Segments a batch of query images against encoded support features.
    ///
    /// # Shapes
    /// query `[B, 1, H, W]` → logits `[B, 1, H, W]` and three attention stages.
    pub fn forward_query(&self, support: &SupportFeatures, query: Tensor<4>) -> ModelOutput {
        let pyramid = self.attention_mapper_encoder.forward(query.clone());
        self.segment(support, query, pyramid)
    }

    /// [`Self::forward_query`] with the queries' Attention Mapper Encoder pyramids
    /// already computed ([`Self::encode_query`], e.g. for retrieval).
    pub fn forward_query_encoded(
        &self,
        support: &SupportFeatures,
        query: Tensor<4>,
        encoding: &QueryEncoding,
    ) -> ModelOutput {
        self.segment(support, query, encoding.pyramid.clone())
    }

    /// The decoder path of [`Self::forward_query`] from the query and its pyramid.
    fn segment(
        &self,
        support: &SupportFeatures,
        query: Tensor<4>,
        pyramid: [Tensor<4>; 3],
    ) -> ModelOutput {
        let [e2, e4, e8, e16, e32] = self.segmentation_encoder.forward(query);
        let attention = self.attention_path(&support.attention, pyramid);
        let values = &support.values.values;
        let dec = &self.decoder;
        let pab = &dec.provided_attention;

        // Stage 1, stride 32: the coarse map.
        let x = dec.input_projection.forward(e32); // [B, d32, H/32, W/32]
        let x = pab[0].forward(x, attention[0].map.clone(), values[0].clone());
        let x = dec.stage(0, x);
        // Stage 2, stride 16.
        let x = dec.up(1, x, Some(e16)); // [B, d16, H/16, W/16]
        let x = pab[1].forward(x, attention[1].map.clone(), values[1].clone());
        let x = dec.stage(1, x);
        // Stage 3, stride 8.
        let x = dec.up(2, x, Some(e8)); // [B, d8, H/8, W/8]
        let x = pab[2].forward(x, attention[2].map.clone(), values[2].clone());
        let x = dec.stage(2, x);
        // Stages 4 and 5, strides 4 and 2: query skips only.
        let x = dec.stage(3, dec.up(3, x, Some(e4))); // [B, d4, H/4, W/4]
        let x = dec.stage(4, dec.up(4, x, Some(e2))); // [B, d2, H/2, W/2]
        // Final stage, stride 1.
        let x = dec.stage(5, dec.up(5, x, None)); // [B, d1, H, W]
        let logits = dec.head.forward(x); // [B, 1, H, W]
        ModelOutput { logits, attention }
    }

    /// Support encoding and query segmentation in one call.
    ///
    /// # Shapes
    /// support images and masks `[S, 1, H, W]`, query `[B, 1, H, W]`
    pub fn forward(
        &self,
        support_images: Tensor<4>,
        support_masks: Tensor<4>,
        query: Tensor<4>,
    ) -> ModelOutput {
        let support = self.encode_support(support_images, support_masks);
        self.forward_query(&support, query)
    }

    /// Parameters trained by gradient descent (everything but the EMA twin).
    pub fn trainable_param_count(&self) -> usize {
        self.num_params() - self.ema_attention_mapper_encoder.num_params()
    }

    /// Parameters of the EMA twin (stored in the weights, updated by averaging).
    pub fn ema_param_count(&self) -> usize {
        self.ema_attention_mapper_encoder.num_params()
    }

    /// Parameter counts per part, for reports: `(name, count)`.
    pub fn param_counts(&self) -> Vec<(&'static str, usize)> {
        vec![
            (
                "AttentionMapperEncoder",
                self.attention_mapper_encoder.num_params(),
            ),
            (
                "AttentionMapperEncoder (EMA twin)",
                self.ema_attention_mapper_encoder.num_params(),
            ),
            (
                "CrossAttentionMapper",
                self.cross_attention_mapper.num_params(),
            ),
            (
                "AttentionUpsampler ×2",
                self.attention_upsamplers
                    .iter()
                    .map(Module::num_params)
                    .sum(),
            ),
            (
                "SegmentationEncoder",
                self.segmentation_encoder.num_params(),
            ),
            ("SupportSetEncoder", self.support_set_encoder.num_params()),
            (
                "SegmentationDecoder (incl. PABs)",
                self.decoder.num_params(),
            ),
        ]
    }

    /// Estimated floating-point operations to segment one query slice against `s`
    /// support slices at the configured input size (support features cached).
    pub fn flops_per_query(&self, s: usize) -> u64 {
        let size = self.config.input_size;
        let hw = |stride: usize| (size / stride) * (size / stride);
        let k0 = self.config.top_k0;
        let pab = &self.decoder.provided_attention;
        self.attention_mapper_encoder.flops(size)
            + self.segmentation_encoder.flops(size)
            + self.cross_attention_mapper.flops(hw(32), s * hw(32))
            + self.attention_upsamplers[0].flops(hw(16), s * hw(16), 4 * k0)
            + self.attention_upsamplers[1].flops(hw(8), s * hw(8), 16 * k0)
            + pab[0].flops(hw(32), s * hw(32))
            + pab[1].flops(hw(16), s * hw(16))
            + pab[2].flops(hw(8), s * hw(8))
            + self.decoder.flops(size)
    }

    /// Estimated floating-point operations to encode `s` support slices.
    pub fn flops_support_encoding(&self, s: usize) -> u64 {
        let size = self.config.input_size;
        s as u64
            * (self.ema_attention_mapper_encoder.flops(size) + self.support_set_encoder.flops(size))
    }
}
