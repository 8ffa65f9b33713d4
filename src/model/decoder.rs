//! The Segmentation Decoder (paper §3.1.2, Figure 2): five stages plus a final
//! full-resolution stage.
//!
//! | stage | stride | input | support |
//! |---|---|---|---|
//! | 1 | 32 | 1×1 projection of the query's stride-32 features | PAB with the coarse map |
//! | 2 | 16 | transposed conv + skip | Attention Upsampler → PAB |
//! | 3 | 8 | transposed conv + skip | Attention Upsampler → PAB |
//! | 4 | 4 | transposed conv + skip | — |
//! | 5 | 2 | transposed conv + skip | — |
//! | final | 1 | transposed conv | — ; 1×1 projector to one channel |
//!
//! A skip is merged by adding its 1×1 projection (equivalent to concatenation followed
//! by a 1×1 convolution, and cheaper).

use burn::module::Module;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::{Device, Tensor};

use super::attention::ProvidedAttentionBlock;
use super::config::ModelConfig;
use super::layers::{ResidualBlock, conv, conv_flops, up_conv, up_conv_flops};

/// The residual blocks of one decoder stage.
#[derive(Module, Debug)]
pub struct DecoderStage {
    blocks: Vec<ResidualBlock>,
}

impl DecoderStage {
    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for block in &self.blocks {
            x = block.forward(x);
        }
        x
    }
}

/// The Segmentation Decoder. The model drives it stage by stage (the attention stages
/// need the upsampled maps between them), so its parts are crate-visible.
#[derive(Module, Debug)]
pub struct SegmentationDecoder {
    /// 1×1 projection of the Segmentation Encoder's stride-32 features.
    pub(crate) input_projection: Conv2d,
    /// Provided-Attention Blocks of stages 1–3 (strides 32, 16, 8).
    pub(crate) provided_attention: Vec<ProvidedAttentionBlock>,
    /// Transposed convolutions into stages 2–5 and the final stage.
    pub(crate) upsample: Vec<ConvTranspose2d>,
    /// 1×1 projections of the query skips at strides 16, 8, 4, 2.
    pub(crate) skip_projections: Vec<Conv2d>,
    /// Residual blocks of stages 1–5 and the final stage.
    pub(crate) stages: Vec<DecoderStage>,
    /// The final convolutional projector to one channel (the mask logit).
    pub(crate) head: Conv2d,
}

impl SegmentationDecoder {
    /// Builds the decoder for `config`.
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let widths = config.decoder.widths;
        let enc = &config.encoder;
        // Query skip channels at strides 32, 16, 8, 4, 2.
        let skip_channels = [
            enc.widths[3],
            enc.widths[2],
            enc.widths[1],
            enc.widths[0],
            enc.stem_width,
        ];
        // Support Set Encoder channels at strides 32, 16, 8.
        let support_channels = [enc.widths[3], enc.widths[2], enc.widths[1]];
        Self {
            input_projection: conv([skip_channels[0], widths[0]], [1, 1], 1, 1, device),
            provided_attention: (0..3)
                .map(|n| ProvidedAttentionBlock::new(support_channels[n], widths[n], device))
                .collect(),
            upsample: (0..5)
                .map(|n| up_conv([widths[n], widths[n + 1]], device))
                .collect(),
            skip_projections: (1..5)
                .map(|n| conv([skip_channels[n], widths[n]], [1, 1], 1, 1, device))
                .collect(),
            stages: widths
                .iter()
                .map(|&w| DecoderStage {
                    blocks: (0..config.decoder.blocks_per_stage)
                        .map(|_| ResidualBlock::new(w, device))
                        .collect(),
                })
                .collect(),
            head: conv([widths[5], 1], [1, 1], 1, 1, device),
        }
    }

    /// Stage `n` (0-based) residual blocks.
    pub(crate) fn stage(&self, n: usize, x: Tensor<4>) -> Tensor<4> {
        self.stages[n].forward(x)
    }

    /// Upsamples into stage `n` (1..=5) and merges the query skip where there is one.
    pub(crate) fn up(&self, n: usize, x: Tensor<4>, skip: Option<Tensor<4>>) -> Tensor<4> {
        let x = self.upsample[n - 1].forward(x);
        match skip {
            Some(skip) => x + self.skip_projections[n - 1].forward(skip),
            None => x,
        }
    }

    /// Floating-point operations of the convolutional part for one `size × size`
    /// query (the Provided-Attention Blocks are counted by the model).
    pub fn flops(&self, size: usize) -> u64 {
        let side = |stride: usize| size / stride;
        let strides = [32, 16, 8, 4, 2, 1];
        let mut f = conv_flops(&self.input_projection, [side(32), side(32)]);
        for (n, stage) in self.stages.iter().enumerate() {
            let s = side(strides[n]);
            if n > 0 {
                f += up_conv_flops(&self.upsample[n - 1], [s / 2, s / 2]);
                if n < 5 {
                    f += conv_flops(&self.skip_projections[n - 1], [s, s]);
                }
            }
            let c = if n == 0 {
                self.input_projection.weight.dims()[0]
            } else {
                self.upsample[n - 1].weight.dims()[1]
            };
            for block in &stage.blocks {
                f += block.flops([c, s, s]);
            }
        }
        f + conv_flops(&self.head, [size, size])
    }
}
