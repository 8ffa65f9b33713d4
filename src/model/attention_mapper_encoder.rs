//! The Attention Mapper Encoder (paper §3.1.1): an MSCAN (SegNeXt, Guo et al. 2022)
//! encoder on images only. Its EMA twin — the same module with averaged weights —
//! encodes the support images.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use super::config::AttentionMapperEncoderConfig;
use super::layers::{LayerNorm2d, channel_scale, conv, conv_flops, conv_out_hw, layer_scale};

/// MSCAN's multi-scale convolutional attention: a 5×5 depthwise convolution, three
/// strip-convolution branches (1×7/7×1, 1×11/11×1, 1×21/21×1), summed, mixed by a 1×1
/// convolution and used as a multiplicative gate on the input.
#[derive(Module, Debug)]
pub struct MultiScaleConvAttention {
    local: Conv2d,
    strips: Vec<Conv2d>,
    mix: Conv2d,
}

impl MultiScaleConvAttention {
    fn new(c: usize, device: &Device) -> Self {
        let mut strips = Vec::new();
        for k in [7, 11, 21] {
            strips.push(conv([c, c], [1, k], 1, c, device));
            strips.push(conv([c, c], [k, 1], 1, c, device));
        }
        Self {
            local: conv([c, c], [5, 5], 1, c, device),
            strips,
            mix: conv([c, c], [1, 1], 1, 1, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let local = self.local.forward(x.clone());
        let mut attention = local.clone();
        for pair in self.strips.chunks(2) {
            attention = attention + pair[1].forward(pair[0].forward(local.clone()));
        }
        self.mix.forward(attention) * x
    }

    fn flops(&self, [c, h, w]: [usize; 3]) -> u64 {
        let mut f = conv_flops(&self.local, [h, w]) + conv_flops(&self.mix, [h, w]);
        for s in &self.strips {
            f += conv_flops(s, [h, w]);
        }
        f + 5 * (c * h * w) as u64
    }
}

/// MSCAN's attention sub-block: 1×1 conv → GELU → multi-scale gate → 1×1 conv, plus
/// the input.
#[derive(Module, Debug)]
struct SpatialAttention {
    proj_in: Conv2d,
    gate: MultiScaleConvAttention,
    proj_out: Conv2d,
}

impl SpatialAttention {
    fn new(c: usize, device: &Device) -> Self {
        Self {
            proj_in: conv([c, c], [1, 1], 1, 1, device),
            gate: MultiScaleConvAttention::new(c, device),
            proj_out: conv([c, c], [1, 1], 1, 1, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = gelu(self.proj_in.forward(x.clone()));
        self.proj_out.forward(self.gate.forward(y)) + x
    }

    fn flops(&self, [c, h, w]: [usize; 3]) -> u64 {
        conv_flops(&self.proj_in, [h, w])
            + self.gate.flops([c, h, w])
            + conv_flops(&self.proj_out, [h, w])
            + 10 * (c * h * w) as u64
    }
}

/// MSCAN's feed-forward network: 1×1 conv → depthwise k×k conv → GELU → 1×1 conv.
/// Shared with the simplified MSCAN, which uses `k = 1` for all but the first block of a
/// stage.
#[derive(Module, Debug)]
pub struct ConvFeedForward {
    fc_in: Conv2d,
    depthwise: Conv2d,
    fc_out: Conv2d,
}

impl ConvFeedForward {
    /// A network on `c` channels with `c·ratio` hidden channels and a depthwise kernel
    /// of `kernel × kernel`.
    pub fn new(c: usize, ratio: usize, kernel: usize, device: &Device) -> Self {
        let hidden = c * ratio;
        Self {
            fc_in: conv([c, hidden], [1, 1], 1, 1, device),
            depthwise: conv([hidden, hidden], [kernel, kernel], 1, hidden, device),
            fc_out: conv([hidden, c], [1, 1], 1, 1, device),
        }
    }

    /// # Shapes
    /// `[n, c, h, w]` → `[n, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.depthwise.forward(self.fc_in.forward(x));
        self.fc_out.forward(gelu(y))
    }

    /// Side of the depthwise kernel.
    pub fn kernel(&self) -> usize {
        self.depthwise.kernel_size[0]
    }

    /// Floating-point operations for one `[c, h, w]` input.
    pub fn flops(&self, [_, h, w]: [usize; 3]) -> u64 {
        let [hidden, _, _, _] = self.fc_in.weight.dims();
        conv_flops(&self.fc_in, [h, w])
            + conv_flops(&self.depthwise, [h, w])
            + conv_flops(&self.fc_out, [h, w])
            + 8 * (hidden * h * w) as u64
    }
}

/// One MSCAN block: `x += γ₁·Attention(Norm(x)); x += γ₂·FFN(Norm(x))`.
#[derive(Module, Debug)]
struct MscanBlock {
    norm_attention: LayerNorm2d,
    attention: SpatialAttention,
    scale_attention: Param<Tensor<1>>,
    norm_ffn: LayerNorm2d,
    ffn: ConvFeedForward,
    scale_ffn: Param<Tensor<1>>,
}

impl MscanBlock {
    fn new(c: usize, mlp_ratio: usize, device: &Device) -> Self {
        Self {
            norm_attention: LayerNorm2d::new(c, device),
            attention: SpatialAttention::new(c, device),
            scale_attention: layer_scale(c, 1e-2, device),
            norm_ffn: LayerNorm2d::new(c, device),
            ffn: ConvFeedForward::new(c, mlp_ratio, 3, device),
            scale_ffn: layer_scale(c, 1e-2, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self
            .attention
            .forward(self.norm_attention.forward(x.clone()));
        let x = x + channel_scale(a, &self.scale_attention);
        let f = self.ffn.forward(self.norm_ffn.forward(x.clone()));
        x + channel_scale(f, &self.scale_ffn)
    }

    fn flops(&self, chw: [usize; 3]) -> u64 {
        let [c, h, w] = chw;
        2 * self.norm_attention.flops(chw)
            + self.attention.flops(chw)
            + self.ffn.flops(chw)
            + 4 * (c * h * w) as u64
    }
}

/// One MSCAN stage: a patch embedding that halves the resolution, blocks, and a final
/// LayerNorm (every pyramid output leaves through a LayerNorm, §3.1.2).
#[derive(Module, Debug)]
struct MscanStage {
    /// Stage 1: two 3×3 stride-2 convolutions (MSCAN's stem); later stages: one.
    embed: Vec<Conv2d>,
    embed_norms: Vec<LayerNorm2d>,
    blocks: Vec<MscanBlock>,
    norm_out: LayerNorm2d,
}

impl MscanStage {
    fn new(c_in: usize, c: usize, depth: usize, mlp_ratio: usize, stem: bool, d: &Device) -> Self {
        let (embed, embed_norms) = if stem {
            (
                vec![
                    conv([c_in, c / 2], [3, 3], 2, 1, d),
                    conv([c / 2, c], [3, 3], 2, 1, d),
                ],
                vec![LayerNorm2d::new(c / 2, d), LayerNorm2d::new(c, d)],
            )
        } else {
            (
                vec![conv([c_in, c], [3, 3], 2, 1, d)],
                vec![LayerNorm2d::new(c, d)],
            )
        };
        Self {
            embed,
            embed_norms,
            blocks: (0..depth)
                .map(|_| MscanBlock::new(c, mlp_ratio, d))
                .collect(),
            norm_out: LayerNorm2d::new(c, d),
        }
    }

    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        let last = self.embed.len() - 1;
        for (n, (conv, norm)) in self.embed.iter().zip(&self.embed_norms).enumerate() {
            x = norm.forward(conv.forward(x));
            if n < last {
                x = gelu(x);
            }
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.norm_out.forward(x)
    }

    /// Flops and output `[c, h, w]` for an input of `[c, h, w]`.
    fn flops(&self, [_, mut h, mut w]: [usize; 3]) -> (u64, [usize; 3]) {
        let mut f = 0;
        let mut c = 0;
        for (conv, norm) in self.embed.iter().zip(&self.embed_norms) {
            f += conv_flops(conv, [h, w]);
            [h, w] = conv_out_hw(conv, [h, w]);
            c = conv.weight.dims()[0];
            f += norm.flops([c, h, w]);
        }
        for block in &self.blocks {
            f += block.flops([c, h, w]);
        }
        (f + self.norm_out.flops([c, h, w]), [c, h, w])
    }
}

/// The Attention Mapper Encoder: MSCAN stages to strides 4, 8, 16 and 32; the pyramid
/// at strides 8, 16 and 32 drives the attention maps.
#[derive(Module, Debug)]
pub struct AttentionMapperEncoder {
    stages: Vec<MscanStage>,
}

impl AttentionMapperEncoder {
    /// Builds the encoder for 1-channel images.
    pub fn new(config: &AttentionMapperEncoderConfig, device: &Device) -> Self {
        let mut c_in = 1;
        let stages = (0..4)
            .map(|n| {
                let c = config.widths[n];
                let stage = MscanStage::new(
                    c_in,
                    c,
                    config.depths[n],
                    config.mlp_ratios[n],
                    n == 0,
                    device,
                );
                c_in = c;
                stage
            })
            .collect();
        Self { stages }
    }

    /// Encodes images into features at output strides 8, 16 and 32 (each LayerNormed).
    ///
    /// # Shapes
    /// `[n, 1, H, W]` → `[[n, c2, H/8, W/8], [n, c3, H/16, W/16], [n, c4, H/32, W/32]]`
    pub fn forward(&self, images: Tensor<4>) -> [Tensor<4>; 3] {
        let x4 = self.stages[0].forward(images); // [n, c1, H/4, W/4]
        let x8 = self.stages[1].forward(x4); // [n, c2, H/8, W/8]
        let x16 = self.stages[2].forward(x8.clone()); // [n, c3, H/16, W/16]
        let x32 = self.stages[3].forward(x16.clone()); // [n, c4, H/32, W/32]
        [x8, x16, x32]
    }

    /// Floating-point operations for one `size × size` image.
    pub fn flops(&self, size: usize) -> u64 {
        let mut chw = [1, size, size];
        let mut total = 0;
        for stage in &self.stages {
            let (f, out) = stage.flops(chw);
            total += f;
            chw = out;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelConfig;
    use burn::tensor::Distribution;

    #[test]
    fn pyramid_has_strides_8_16_32_and_the_configured_widths() {
        let device = Device::flex();
        let config = ModelConfig::tiny().attention_mapper_encoder;
        let encoder = AttentionMapperEncoder::new(&config, &device);
        let x = Tensor::<4>::random([2, 1, 64, 64], Distribution::Default, &device);
        let [a, b, c] = encoder.forward(x);
        assert_eq!(a.dims(), [2, config.widths[1], 8, 8]);
        assert_eq!(b.dims(), [2, config.widths[2], 4, 4]);
        assert_eq!(c.dims(), [2, config.widths[3], 2, 2]);
        assert!(encoder.flops(64) > 0);
    }
}
