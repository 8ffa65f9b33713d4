//! The in-context cross-attention segmentation network of Ciusdel et al. (2025),
//! section 3.1, in burn. Names follow the paper; `docs/model.md` records every choice
//! the paper leaves open.
//!
//! # Data flow (`B` query slices, `S` support slices, `H × W` input)
//!
//! ```text
//! support images ──EMA AttentionMapperEncoder──► sa8, sa16, sa32 ─┐      (images only)
//! query ───────────AttentionMapperEncoder──────► qa8, qa16, qa32 ─┤
//!                         CrossAttentionMapper(qa32, sa32) ──► A32 [B, hw32, S·hw32]
//!                         AttentionUpsampler(A32, qa16, sa16) ──► A16
//!                         AttentionUpsampler(A16, qa8,  sa8)  ──► A8
//! support images + masks ──SupportSetEncoder──► f8, f16, f32 ──┐
//! query ───────────SegmentationEncoder──► e2 … e32 ──► SegmentationDecoder
//!                         (ProvidedAttentionBlocks read f_s through A_s) ──► logits
//! ```
//!
//! # Use
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use icseg::model::ModelConfig;
//!
//! let device = Device::flex();
//! let model = ModelConfig::lite().init(&device);
//! let images = Tensor::<4>::zeros([8, 1, 128, 128], &device);
//! let masks = Tensor::<4>::zeros([8, 1, 128, 128], &device);
//! let support = model.encode_support(images, masks); // once per support set
//! let query = Tensor::<4>::zeros([4, 1, 128, 128], &device);
//! let out = model.forward_query(&support, query); // per batch of query slices
//! let probabilities = out.probabilities(); // [4, 1, 128, 128]
//! ```
//!
//! Training runs the same calls on `device.clone().autodiff()`; gradients reach every
//! parameter except the EMA twin, which [`Model::ema_update`] moves after each step.

mod attention;
mod attention_mapper_encoder;
mod config;
mod decoder;
mod layers;
mod network;
mod segmentation_encoder;
mod weights;

#[cfg(test)]
mod tests;

pub use attention::{
    AttentionUpsampler, CrossAttentionMapper, ProvidedAttentionBlock, UpsampledAttention,
};
pub use attention_mapper_encoder::AttentionMapperEncoder;
pub use config::{
    AttentionMapperEncoderConfig, ModelConfig, SegmentationDecoderConfig, SimplifiedMscanConfig,
};
pub use decoder::SegmentationDecoder;
pub use network::{
    AttentionStage, Model, ModelOutput, QueryEncoding, SupportAttention, SupportFeatures,
    SupportValues,
};
pub use segmentation_encoder::{SegmentationEncoder, SimplifiedMscan, SupportSetEncoder};
pub use weights::WeightsError;
