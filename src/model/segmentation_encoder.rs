//! The simplified MSCAN of paper §3.1.2, used twice: as the Segmentation Encoder on the
//! query image (1 channel) and as the Support Set Encoder on support image + mask
//! (2 channels).
//!
//! Simplifications from MSCAN, as the paper states them: (i) no multi-scale
//! convolutional attention — a block is only `x += γ·FFN(LayerNorm(x))`; (ii) the
//! feed-forward networks use kernel 1 except the first one of each stage (kernel 3).
//! With a 3×3 stride-2 + 3×3 stem and 3×3 stride-2 patch embeddings, the receptive
//! fields at strides 2, 4, 8, 16, 32 are 7, 19, 43, 91 and 187 pixels — 2.7 %, 7.4 %,
//! 16.8 %, 35.5 % and 73 % of a 256-pixel input, exactly the paper's figures (a test
//! below computes them from the layers).

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use super::attention_mapper_encoder::ConvFeedForward;
use super::config::SimplifiedMscanConfig;
use super::layers::{LayerNorm2d, channel_scale, conv, conv_flops, conv_out_hw, layer_scale};

/// A block of the simplified MSCAN: `x += γ·FFN(LayerNorm(x))`.
#[derive(Module, Debug)]
struct FeedForwardBlock {
    norm: LayerNorm2d,
    ffn: ConvFeedForward,
    scale: Param<Tensor<1>>,
}

impl FeedForwardBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let f = self.ffn.forward(self.norm.forward(x.clone()));
        x + channel_scale(f, &self.scale)
    }
}

/// One stage: a 3×3 stride-2 patch embedding, blocks, and the output LayerNorm.
#[derive(Module, Debug)]
struct Stage {
    embed: Conv2d,
    embed_norm: LayerNorm2d,
    blocks: Vec<FeedForwardBlock>,
    norm_out: LayerNorm2d,
}

/// The simplified MSCAN encoder. See the module documentation.
#[derive(Module, Debug)]
pub struct SimplifiedMscan {
    stem: Vec<Conv2d>,
    stem_norms: Vec<LayerNorm2d>,
    stages: Vec<Stage>,
}

/// The Segmentation Encoder (query images, 1 channel).
pub type SegmentationEncoder = SimplifiedMscan;
/// The Support Set Encoder (support image and mask, 2 channels).
pub type SupportSetEncoder = SimplifiedMscan;

impl SimplifiedMscan {
    /// Builds an encoder for `in_channels` input channels.
    pub fn new(config: &SimplifiedMscanConfig, in_channels: usize, device: &Device) -> Self {
        let s = config.stem_width;
        let mut c_in = s;
        let stages = (0..4)
            .map(|n| {
                let c = config.widths[n];
                let blocks = (0..config.depths[n])
                    .map(|b| FeedForwardBlock {
                        norm: LayerNorm2d::new(c, device),
                        ffn: ConvFeedForward::new(
                            c,
                            config.mlp_ratio,
                            if b == 0 { 3 } else { 1 },
                            device,
                        ),
                        scale: layer_scale(c, 1e-2, device),
                    })
                    .collect();
                let stage = Stage {
                    embed: conv([c_in, c], [3, 3], 2, 1, device),
                    embed_norm: LayerNorm2d::new(c, device),
                    blocks,
                    norm_out: LayerNorm2d::new(c, device),
                };
                c_in = c;
                stage
            })
            .collect();
        Self {
            stem: vec![
                conv([in_channels, s], [3, 3], 2, 1, device),
                conv([s, s], [3, 3], 1, 1, device),
            ],
            stem_norms: vec![LayerNorm2d::new(s, device), LayerNorm2d::new(s, device)],
            stages,
        }
    }

    /// Encodes images into a pyramid at output strides 2, 4, 8, 16 and 32, each level
    /// leaving through a LayerNorm.
    ///
    /// # Shapes
    /// `[n, c_in, H, W]` → `[[n, stem, H/2, W/2], [n, c1, H/4, W/4], [n, c2, H/8, W/8],
    /// [n, c3, H/16, W/16], [n, c4, H/32, W/32]]`
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 5] {
        let x = gelu(self.stem_norms[0].forward(self.stem[0].forward(x)));
        let mut x = self.stem_norms[1].forward(self.stem[1].forward(x)); // [n, s, H/2, W/2]
        let mut levels = vec![x.clone()];
        for stage in &self.stages {
            x = stage.embed_norm.forward(stage.embed.forward(x));
            for block in &stage.blocks {
                x = block.forward(x);
            }
            x = stage.norm_out.forward(x);
            levels.push(x.clone());
        }
        levels
            .try_into()
            .expect("the encoder has a stem and four stages")
    }

    /// Receptive field in input pixels of each pyramid level (strides 2 to 32), from
    /// the kernels and strides of the convolutions. The LayerNorms' statistics, which
    /// span the whole image, are not counted.
    pub fn receptive_fields(&self) -> [usize; 5] {
        // r grows by (k − 1)·jump per layer; jump is the product of earlier strides.
        let mut r = 1;
        let mut jump = 1;
        let mut grow = |kernel: usize, stride: usize| {
            r += (kernel - 1) * jump;
            jump *= stride;
            r
        };
        let mut fields = [0; 5];
        for conv in &self.stem {
            fields[0] = grow(conv.kernel_size[0], conv.stride[0]);
        }
        for (n, stage) in self.stages.iter().enumerate() {
            fields[n + 1] = grow(stage.embed.kernel_size[0], stage.embed.stride[0]);
            for block in &stage.blocks {
                fields[n + 1] = grow(block.ffn.kernel(), 1);
            }
        }
        fields
    }

    /// Floating-point operations for one `size × size` input.
    pub fn flops(&self, size: usize) -> u64 {
        let mut hw = [size, size];
        let mut f = 0;
        for (conv, norm) in self.stem.iter().zip(&self.stem_norms) {
            f += conv_flops(conv, hw);
            hw = conv_out_hw(conv, hw);
            f += norm.flops([conv.weight.dims()[0], hw[0], hw[1]]);
        }
        for stage in &self.stages {
            f += conv_flops(&stage.embed, hw);
            hw = conv_out_hw(&stage.embed, hw);
            let c = stage.embed.weight.dims()[0];
            let chw = [c, hw[0], hw[1]];
            f += 2 * stage.embed_norm.flops(chw);
            for block in &stage.blocks {
                f += block.norm.flops(chw) + block.ffn.flops(chw) + 2 * (c * hw[0] * hw[1]) as u64;
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelConfig;
    use burn::tensor::TensorData;

    #[test]
    fn receptive_fields_match_the_papers_fov_ratios() {
        let device = Device::flex();
        let encoder = SimplifiedMscan::new(&ModelConfig::paper().encoder, 2, &device);
        let fields = encoder.receptive_fields();
        assert_eq!(fields, [7, 19, 43, 91, 187]);
        // The paper's percentages of a 256-pixel input (§3.1.2).
        for (pixels, percent) in fields.iter().zip([2.7, 7.4, 16.8, 35.5, 73.0]) {
            let got = *pixels as f64 / 256.0 * 100.0;
            assert!((got - percent).abs() < 0.1, "{got} vs {percent}");
        }
    }

    #[test]
    fn pyramid_has_five_levels_with_strides_2_to_32() {
        let device = Device::flex();
        let config = ModelConfig::tiny().encoder;
        let encoder = SimplifiedMscan::new(&config, 2, &device);
        let x = Tensor::<4>::from_data(TensorData::zeros::<f32, _>([3, 2, 64, 64]), &device);
        let levels = encoder.forward(x);
        let sizes: Vec<[usize; 4]> = levels.iter().map(|l| l.dims()).collect();
        assert_eq!(
            sizes,
            vec![
                [3, config.stem_width, 32, 32],
                [3, config.widths[0], 16, 16],
                [3, config.widths[1], 8, 8],
                [3, config.widths[2], 4, 4],
                [3, config.widths[3], 2, 2],
            ]
        );
    }
}
