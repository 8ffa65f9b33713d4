//! The synchronous core of the engine: support encoding with a cache, batched query
//! inference, and explanations. The worker thread ([`super::Engine`]) drives it; the
//! benchmark calls it directly. Both therefore time the same code.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorData};

use super::preprocess::{RoiMode, image_input, mask_input, native_to_model, support_region};
use super::retrieval::most_similar;
use super::{ComputeDevice, EngineError, Timings};
use crate::model::{Model, QueryEncoding, SupportAttention, SupportFeatures, SupportValues};
use crate::volume::{Axis, Image2D, LabelMap, LabelValue, Region, Volume, paste_region_bilinear};

/// One annotated slice of a support set.
#[derive(Clone, Debug)]
pub struct SupportSlice {
    /// Slice index along the support set's axis.
    pub index: usize,
    /// The user's mask on that slice (nonzero = inside). An all-zero mask is a real
    /// "nothing here" annotation.
    pub mask: Image2D<u8>,
}

/// The annotated slices of one structure in one volume.
#[derive(Clone, Debug)]
pub struct SupportSet {
    /// The image volume.
    pub volume: Arc<Volume>,
    /// The axis the slices are taken across.
    pub axis: Axis,
    /// The annotated slices (at least one).
    pub slices: Vec<SupportSlice>,
}

impl SupportSet {
    /// The slices `slices` of `labels` (a label map on the volume's grid) as a support
    /// set: a voxel is inside where `inside(value)`. Every index must exist along
    /// `axis` (callers check user input first; [`Self::validate`] reports it too).
    pub fn from_label_map(
        volume: Arc<Volume>,
        labels: &LabelMap,
        axis: Axis,
        slices: &[usize],
        inside: impl Fn(LabelValue) -> bool,
    ) -> Self {
        let slices = slices
            .iter()
            .map(|&index| SupportSlice {
                index,
                mask: labels.slice(axis, index).map(|v| u8::from(inside(v))),
            })
            .collect();
        Self {
            volume,
            axis,
            slices,
        }
    }

    /// A binary label map on the volume's grid holding the support masks (1 inside) on
    /// their slices and 0 elsewhere: the start of a propagated mask.
    pub fn annotation_map(&self) -> LabelMap {
        let mut map = LabelMap::empty(self.volume.geometry().clone());
        for s in &self.slices {
            map.set_slice(
                self.axis,
                s.index,
                &s.mask.map(|v| LabelValue::from(v != 0)),
            );
        }
        map
    }

    /// Checks indices and mask sizes against the volume.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.slices.is_empty() {
            return Err(EngineError::InvalidSupport {
                reason: "no annotated slice; annotate at least one slice".into(),
            });
        }
        let count = self.volume.geometry().slice_count(self.axis);
        let (w, h) = self.volume.geometry().slice_dims(self.axis);
        for s in &self.slices {
            if s.index >= count {
                return Err(EngineError::SliceOutOfRange {
                    index: s.index,
                    count,
                });
            }
            if (s.mask.width, s.mask.height) != (w, h) {
                return Err(EngineError::InvalidSupport {
                    reason: format!(
                        "the mask of slice {} is {}×{} but the slices are {w}×{h}",
                        s.index, s.mask.width, s.mask.height
                    ),
                });
            }
        }
        Ok(())
    }

    /// The region of interest this support set implies under `mode`.
    pub fn region(&self, mode: RoiMode) -> Region {
        let g = self.volume.geometry();
        let (w, h) = g.slice_dims(self.axis);
        support_region(
            self.slices.iter().map(|s| &s.mask),
            w,
            h,
            g.slice_spacing_mm(self.axis),
            mode,
        )
    }
}

/// The number of support slices each query gets, when `support_size` asks for fewer
/// than the `count` there are: `Ok(Some(k))` means "choose `k` per query by
/// similarity", `Ok(None)` means "use them all".
pub fn support_limit(
    support_size: Option<usize>,
    count: usize,
) -> Result<Option<usize>, EngineError> {
    match support_size {
        Some(0) => Err(EngineError::InvalidSupport {
            reason: "the support size must be at least 1".into(),
        }),
        Some(k) if k < count => Ok(Some(k)),
        _ => Ok(None),
    }
}

/// Query slices resampled and normalised for the model ([`Predictor::query_inputs`]),
/// and, once scored for retrieval, their Attention Mapper Encoder pyramids: kept so
/// that a slice is prepared and encoded once even when it is scored and then predicted.
#[derive(Clone, Debug)]
pub struct QueryInputs {
    /// The slice indices, in order.
    pub slices: Vec<usize>,
    /// `slices.len() × size × size` model inputs.
    data: Vec<f32>,
    size: usize,
    /// The queries' encodings, when retrieval computed them.
    encoding: Option<QueryEncoding>,
}

impl QueryInputs {
    /// The inputs of `slices` (each must be among these), in that order.
    pub fn select(&self, slices: &[usize]) -> QueryInputs {
        let plane = self.size * self.size;
        let mut data = Vec::with_capacity(slices.len() * plane);
        let mut rows = Vec::with_capacity(slices.len());
        for z in slices {
            let n = self
                .slices
                .iter()
                .position(|s| s == z)
                .expect("a prepared slice");
            data.extend_from_slice(&self.data[n * plane..(n + 1) * plane]);
            rows.push(n);
        }
        QueryInputs {
            slices: slices.to_vec(),
            data,
            size: self.size,
            encoding: self.encoding.as_ref().map(|e| e.select(&rows)),
        }
    }

    /// These inputs followed by `other`'s (encodings kept only when both have them).
    pub fn append(&mut self, other: QueryInputs) {
        self.slices.extend(other.slices);
        self.data.extend(other.data);
        self.encoding = match (self.encoding.take(), other.encoding) {
            (Some(a), Some(b)) => Some(a.append(b)),
            _ => None,
        };
    }
}

/// Whether support features came from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum CacheUse {
    /// Images and masks were both cached: nothing was encoded.
    Hit,
    /// The images were cached (only the masks changed): only the Support Set Encoder
    /// ran.
    ImagesCached,
    /// Everything was encoded.
    Miss,
}

/// A support set turned into model inputs.
pub struct PreparedSupport {
    /// The region of interest (native pixels of the support slices).
    pub region: Region,
    images: Vec<f32>,
    masks: Vec<f32>,
    count: usize,
    image_key: u64,
    mask_key: u64,
}

const CACHE_ENTRIES: usize = 4;

/// A tiny most-recently-used cache.
struct Recent<T> {
    entries: Vec<(u64, T)>,
}

impl<T: Clone> Recent<T> {
    fn get(&mut self, key: u64) -> Option<T> {
        let pos = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(pos);
        let value = entry.1.clone();
        self.entries.insert(0, entry);
        Some(value)
    }

    fn put(&mut self, key: u64, value: T) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.insert(0, (key, value));
        self.entries.truncate(CACHE_ENTRIES);
    }
}

fn hash_floats(parts: &[&[f32]], size: usize) -> u64 {
    let mut h = DefaultHasher::new();
    size.hash(&mut h);
    for part in parts {
        part.len().hash(&mut h);
        for v in *part {
            v.to_bits().hash(&mut h);
        }
    }
    h.finish()
}

/// One attention stage of an explanation.
#[derive(Clone, Debug)]
pub struct ExplainedStage {
    /// Output stride (32, 16 or 8).
    pub stride: usize,
    /// Grid `[h, w]` at this stride.
    pub grid: [usize; 2],
    /// The clicked query location on that grid, `[x, y]`.
    pub query_cell: [usize; 2],
    /// Attention mass of the clicked location (≤ 1; the rest went to the register
    /// tokens).
    pub query_mass: f32,
    /// One `w × h` heatmap per support slice: the attention the clicked location pays
    /// to each of that slice's locations.
    pub maps: Vec<Image2D<f32>>,
    /// Attention mass each support slice receives (sums to `query_mass`).
    pub support_mass: Vec<f32>,
}

/// What the network looked at for one query pixel.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The query slice.
    pub query_slice: usize,
    /// The clicked pixel `[x, y]` of the query slice.
    pub pixel: [usize; 2],
    /// Support slice indices, in the order of the maps.
    pub support_slices: Vec<usize>,
    /// The region of interest the maps cover on every slice.
    pub region: Region,
    /// Model input size the region was resampled to.
    pub model_size: usize,
    /// Stages at strides 32, 16 and 8.
    pub stages: Vec<ExplainedStage>,
    /// Support slices the ones above were chosen from (more than
    /// `support_slices.len()` when a support size made the engine pick the most
    /// similar ones, as a propagation of the query slice would).
    pub candidates: usize,
    /// From the request to the maps on the host.
    pub latency: Duration,
    /// Whether the support features came from the cache.
    pub cache: CacheUse,
}

impl Explanation {
    /// Heatmap of `stage` for support slice number `n` (position in
    /// [`Self::support_slices`]) at the native `width × height` of the support slice;
    /// zero outside the region of interest.
    pub fn native_heatmap(
        &self,
        stage: usize,
        n: usize,
        width: usize,
        height: usize,
    ) -> Image2D<f32> {
        let grid_map = &self.stages[stage].maps[n];
        // Grid cells to model pixels: each cell covers stride × stride pixels.
        let on_model = crate::volume::resample_region_bilinear(
            grid_map,
            &Region::full(grid_map.width, grid_map.height),
            self.model_size,
            self.model_size,
            None,
        );
        paste_region_bilinear(&on_model, &self.region, width, height, 0.0)
    }
}

/// `SliceOutOfRange` unless `index` exists across the support set's axis.
fn check_slice(support: &SupportSet, index: usize) -> Result<(), EngineError> {
    let count = support.volume.geometry().slice_count(support.axis);
    if index >= count {
        return Err(EngineError::SliceOutOfRange { index, count });
    }
    Ok(())
}

/// Model, device and support cache.
pub struct Predictor {
    model: Model,
    device: ComputeDevice,
    attention_cache: Recent<SupportAttention>,
    values_cache: Recent<SupportValues>,
}

impl Predictor {
    /// A predictor for `model`, which must already live on `device.device`.
    pub fn new(model: Model, device: ComputeDevice) -> Self {
        Self {
            model,
            device,
            attention_cache: Recent {
                entries: Vec::new(),
            },
            values_cache: Recent {
                entries: Vec::new(),
            },
        }
    }

    /// The network it runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The device the network lives on.
    pub fn device(&self) -> &ComputeDevice {
        &self.device
    }

    /// Model input size.
    pub fn input_size(&self) -> usize {
        self.model.config().input_size
    }

    /// Forgets all cached support features.
    pub fn clear_cache(&mut self) {
        self.attention_cache.entries.clear();
        self.values_cache.entries.clear();
    }

    /// Resamples and normalises the support slices and their masks.
    pub fn prepare_support(
        &self,
        support: &SupportSet,
        roi: RoiMode,
    ) -> Result<PreparedSupport, EngineError> {
        support.validate()?;
        let size = self.input_size();
        let region = support.region(roi);
        let indices: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
        let images = self
            .query_inputs(&support.volume, support.axis, &indices, &region)?
            .data;
        let masks = self.mask_inputs(support.slices.iter().map(|s| &s.mask), &region);
        let image_key = hash_floats(&[&images], size);
        let mask_key = hash_floats(&[&images, &masks], size);
        Ok(PreparedSupport {
            region,
            count: support.slices.len(),
            images,
            masks,
            image_key,
            mask_key,
        })
    }

    fn tensor(&self, data: Vec<f32>, n: usize) -> Tensor<4> {
        let size = self.input_size();
        Tensor::from_data(
            TensorData::new(data, [n, 1, size, size]),
            &self.device.device,
        )
    }

    /// The image-only support features, from the cache when possible.
    pub fn support_attention(&mut self, prepared: &PreparedSupport) -> (SupportAttention, bool) {
        if let Some(hit) = self.attention_cache.get(prepared.image_key) {
            return (hit, true);
        }
        let images = self.tensor(prepared.images.clone(), prepared.count);
        let features = self.model.encode_support_attention(images);
        self.attention_cache
            .put(prepared.image_key, features.clone());
        (features, false)
    }

    /// All support features, from the cache when possible.
    pub fn support_features(&mut self, prepared: &PreparedSupport) -> (SupportFeatures, CacheUse) {
        let (attention, images_cached) = self.support_attention(prepared);
        if let Some(values) = self.values_cache.get(prepared.mask_key) {
            let cache = if images_cached {
                CacheUse::Hit
            } else {
                CacheUse::ImagesCached
            };
            return (SupportFeatures { attention, values }, cache);
        }
        let images = self.tensor(prepared.images.clone(), prepared.count);
        let masks = self.tensor(prepared.masks.clone(), prepared.count);
        let values = self.model.encode_support_values(images, masks);
        self.values_cache.put(prepared.mask_key, values.clone());
        let cache = if images_cached {
            CacheUse::ImagesCached
        } else {
            CacheUse::Miss
        };
        (SupportFeatures { attention, values }, cache)
    }

    /// Retrieval scores (paper §4.3) of query slices `queries` (one batch) against
    /// every slice of `support`: `scores[q][n]` for query `queries[q]` and support slice
    /// `support.slices[n]`, higher is more similar ([`Model::support_similarity`]).
    /// `prepared` and `attention` are `support`'s ([`Self::prepare_support`],
    /// [`Self::support_attention`]).
    pub fn similarity_scores(
        &self,
        support: &SupportSet,
        prepared: &PreparedSupport,
        attention: &SupportAttention,
        queries: &[usize],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut inputs =
            self.query_inputs(&support.volume, support.axis, queries, &prepared.region)?;
        self.similarity_of(attention, &mut inputs, prepared.count)
    }

    /// [`Self::similarity_scores`] of prepared query inputs against `count` support
    /// slices; encodes the queries and keeps their encodings in `inputs`.
    fn similarity_of(
        &self,
        attention: &SupportAttention,
        inputs: &mut QueryInputs,
        count: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let n = inputs.slices.len();
        let encoding = self.model.encode_query(self.tensor(inputs.data.clone(), n));
        let similarity = self.model.similarity_of(attention, &encoding);
        inputs.encoding = Some(encoding);
        let scores: Vec<f32> =
            similarity
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| EngineError::Compute {
                    message: format!("{e:?}"),
                })?;
        Ok(scores
            .chunks_exact(count.max(1))
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The support slices for each query of `queries` (one batch): the positions in
    /// `support.slices` of the `k` candidates with the highest
    /// [`Self::similarity_scores`], ties and order as in [`most_similar`].
    ///
    /// The scores of a slice do not depend on the other slices of the batch (see
    /// [`Model::support_similarity`]), so a slice gets the same support slices in a
    /// propagation and in an explanation, whatever the batch size.
    pub fn choose_supports(
        &self,
        support: &SupportSet,
        prepared: &PreparedSupport,
        attention: &SupportAttention,
        queries: &[usize],
        k: usize,
    ) -> Result<Vec<Vec<usize>>, EngineError> {
        let mut inputs =
            self.query_inputs(&support.volume, support.axis, queries, &prepared.region)?;
        self.choose_for(support, attention, &mut inputs, k)
    }

    /// [`Self::choose_supports`] for prepared query inputs, which keep the queries'
    /// encodings for the prediction (a propagation prepares and encodes each query once).
    pub fn choose_for(
        &self,
        support: &SupportSet,
        attention: &SupportAttention,
        inputs: &mut QueryInputs,
        k: usize,
    ) -> Result<Vec<Vec<usize>>, EngineError> {
        let candidates: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
        let scores = self.similarity_of(attention, inputs, candidates.len())?;
        Ok(inputs
            .slices
            .iter()
            .zip(&scores)
            .map(|(&q, row)| most_similar(row, &candidates, q, k))
            .collect())
    }

    /// Encodes slices of `volume` across `axis` with their masks as support features,
    /// in `region` (that of the support set they join), without the cache. Chained
    /// propagation turns each predicted slice into a support this way.
    pub fn encode_slices(
        &self,
        volume: &Volume,
        axis: Axis,
        slices: &[(usize, &Image2D<u8>)],
        region: &Region,
    ) -> SupportFeatures {
        let indices: Vec<usize> = slices.iter().map(|(z, _)| *z).collect();
        let images = self.images_of(volume, axis, &indices, region);
        let masks = self.mask_inputs(slices.iter().map(|(_, m)| *m), region);
        self.model.encode_support(
            self.tensor(images, slices.len()),
            self.tensor(masks, slices.len()),
        )
    }

    /// The model inputs of `slices` of `volume` across `axis` cropped to `region`: the
    /// one place query and support images are resampled and normalised
    /// ([`image_input`]). Every index must exist.
    pub fn query_inputs(
        &self,
        volume: &Volume,
        axis: Axis,
        slices: &[usize],
        region: &Region,
    ) -> Result<QueryInputs, EngineError> {
        let count = volume.geometry().slice_count(axis);
        if let Some(&bad) = slices.iter().find(|&&i| i >= count) {
            return Err(EngineError::SliceOutOfRange { index: bad, count });
        }
        Ok(QueryInputs {
            slices: slices.to_vec(),
            data: self.images_of(volume, axis, slices, region),
            size: self.input_size(),
            encoding: None,
        })
    }

    fn images_of(
        &self,
        volume: &Volume,
        axis: Axis,
        slices: &[usize],
        region: &Region,
    ) -> Vec<f32> {
        let size = self.input_size();
        let mut data = Vec::with_capacity(slices.len() * size * size);
        for &i in slices {
            data.extend(image_input(&volume.slice(axis, i), volume.modality, region, size).data);
        }
        data
    }

    fn mask_inputs<'a>(
        &self,
        masks: impl Iterator<Item = &'a Image2D<u8>>,
        region: &Region,
    ) -> Vec<f32> {
        let size = self.input_size();
        masks
            .flat_map(|m| mask_input(m, region, size).data)
            .collect()
    }

    /// Segments query slices of `volume` across `axis` (one batch): probabilities at
    /// native slice resolution, in the order of `slices`.
    pub fn predict_batch(
        &self,
        features: &SupportFeatures,
        volume: &Volume,
        axis: Axis,
        slices: &[usize],
        region: &Region,
    ) -> Result<(Vec<Image2D<f32>>, Timings), EngineError> {
        let start = Instant::now();
        let inputs = self.query_inputs(volume, axis, slices, region)?;
        let preprocessing = start.elapsed();
        let (w, h) = volume.geometry().slice_dims(axis);
        let (out, mut timings) = self.predict_inputs(features, &inputs, region, (w, h))?;
        timings.preprocessing = preprocessing;
        Ok((out, timings))
    }

    /// [`Self::predict_batch`] for prepared query inputs; probabilities on a native
    /// `w × h` slice grid.
    pub fn predict_inputs(
        &self,
        features: &SupportFeatures,
        inputs: &QueryInputs,
        region: &Region,
        (w, h): (usize, usize),
    ) -> Result<(Vec<Image2D<f32>>, Timings), EngineError> {
        let size = self.input_size();
        let mut timings = Timings::default();
        let start = Instant::now();
        let query = self.tensor(inputs.data.clone(), inputs.slices.len());
        let output = match &inputs.encoding {
            Some(encoding) => self.model.forward_query_encoded(features, query, encoding),
            None => self.model.forward_query(features, query),
        };
        let probabilities: Vec<f32> = output
            .probabilities()
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| EngineError::Compute {
                message: format!("{e:?}"),
            })?;
        timings.inference = start.elapsed();

        let start = Instant::now();
        let out = probabilities
            .chunks_exact(size * size)
            .map(|p| {
                paste_region_bilinear(&Image2D::new(size, size, p.to_vec()), region, w, h, 0.0)
            })
            .collect();
        timings.postprocessing = start.elapsed();
        Ok((out, timings))
    }

    /// The attention maps for `pixel` `[x, y]` of query slice `query_slice`. With a
    /// `support_size` below the number of support slices, the maps cover the slices a
    /// propagation of `query_slice` would use ([`Self::choose_supports`]).
    pub fn explain(
        &mut self,
        support: &SupportSet,
        roi: RoiMode,
        query_slice: usize,
        pixel: [usize; 2],
        support_size: Option<usize>,
    ) -> Result<Explanation, EngineError> {
        let start = Instant::now();
        let limit = support_limit(support_size, support.slices.len())?;
        let prepared = self.prepare_support(support, roi)?;
        let (all, cached) = self.support_attention(&prepared);
        check_slice(support, query_slice)?;
        let (attention, positions) = match limit {
            Some(k) => {
                let positions = self
                    .choose_supports(support, &prepared, &all, &[query_slice], k)?
                    .remove(0);
                (
                    self.model.select_support_attention(&all, &positions),
                    positions,
                )
            }
            None => (all, (0..support.slices.len()).collect()),
        };
        let slices = positions.iter().map(|&p| support.slices[p].index).collect();
        let click = (query_slice, pixel);
        self.explain_with(support, &prepared, attention, slices, click, start, cached)
    }

    /// The attention maps for `pixel` of `query_slice` as a chained propagation
    /// (`super::chain`) segmented it: with its `nearest` annotated slices and the
    /// predicted `memory` slices (with the masks predicted for them) it used, in the
    /// region of the annotated slices.
    pub fn explain_chained(
        &mut self,
        support: &SupportSet,
        roi: RoiMode,
        query_slice: usize,
        pixel: [usize; 2],
        nearest: usize,
        memory: &[SupportSlice],
    ) -> Result<Explanation, EngineError> {
        let start = Instant::now();
        let prepared = self.prepare_support(support, roi)?;
        let (all, cached) = self.support_attention(&prepared);
        check_slice(support, query_slice)?;
        for m in memory {
            check_slice(support, m.index)?;
        }
        let annotated: Vec<usize> = support.slices.iter().map(|s| s.index).collect();
        let positions = super::chain::nearest_positions(&annotated, query_slice, nearest);
        let mut attention = self.model.select_support_attention(&all, &positions);
        let mut slices: Vec<usize> = positions.iter().map(|&p| annotated[p]).collect();
        if !memory.is_empty() {
            let indices: Vec<usize> = memory.iter().map(|m| m.index).collect();
            let images = self.images_of(&support.volume, support.axis, &indices, &prepared.region);
            let encoded = self
                .model
                .encode_support_attention(self.tensor(images, memory.len()));
            attention = self.model.concat_support_attention(&attention, &encoded);
            slices.extend(memory.iter().map(|m| m.index));
        }
        let click = (query_slice, pixel);
        self.explain_with(support, &prepared, attention, slices, click, start, cached)
    }

    /// The maps of one click with the given support attention (whose slices are
    /// `support_slices`, in order).
    #[allow(clippy::too_many_arguments)]
    fn explain_with(
        &self,
        support: &SupportSet,
        prepared: &PreparedSupport,
        attention: SupportAttention,
        support_slices: Vec<usize>,
        (query_slice, pixel): (usize, [usize; 2]),
        start: Instant,
        cached: bool,
    ) -> Result<Explanation, EngineError> {
        let volume = &support.volume;
        let size = self.input_size();
        let region = prepared.region;
        let (u, v) = native_to_model(&region, size, pixel[0] as f64, pixel[1] as f64)
            .ok_or(EngineError::PixelOutsideRegion { pixel })?;
        let query = self.images_of(volume, support.axis, &[query_slice], &region);
        let stages = self.model.attention_maps(&attention, self.tensor(query, 1));
        let s = support_slices.len();
        let mut explained = Vec::with_capacity(3);
        for stage in stages {
            let [gh, gw] = stage.grid;
            let cx = ((u / stage.stride as f64) as usize).min(gw - 1);
            let cy = ((v / stage.stride as f64) as usize).min(gh - 1);
            let row = cy * gw + cx;
            let cells = gh * gw;
            let values: Vec<f32> = stage
                .map
                .slice([0..1, row..row + 1, 0..s * cells])
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| EngineError::Compute {
                    message: format!("{e:?}"),
                })?;
            let maps: Vec<Image2D<f32>> = values
                .chunks_exact(cells)
                .map(|c| Image2D::new(gw, gh, c.to_vec()))
                .collect();
            let support_mass: Vec<f32> = maps.iter().map(|m| m.data.iter().sum()).collect();
            explained.push(ExplainedStage {
                stride: stage.stride,
                grid: stage.grid,
                query_cell: [cx, cy],
                query_mass: support_mass.iter().sum(),
                maps,
                support_mass,
            });
        }
        Ok(Explanation {
            query_slice,
            pixel,
            support_slices,
            region,
            model_size: size,
            stages: explained,
            candidates: support.slices.len(),
            latency: start.elapsed(),
            cache: if cached {
                CacheUse::Hit
            } else {
                CacheUse::Miss
            },
        })
    }
}
