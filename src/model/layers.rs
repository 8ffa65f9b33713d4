//! Building blocks shared by the encoders and the decoder.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, Linear, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

/// LayerNorm as the paper defines it (§3.1.2): a z-score over channels, height and width
/// together, for each sample independently, followed by a per-channel scale and shift.
///
/// (A GroupNorm with one group; the affine is per channel so that the layer does not
/// depend on the input size.)
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    norm: GroupNorm,
}

impl LayerNorm2d {
    /// A norm for `channels` channels (scale 1, shift 0).
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            norm: GroupNormConfig::new(1, channels)
                .with_epsilon(1e-5)
                .init(device),
        }
    }

    /// # Shapes
    /// `[n, c, h, w]` → `[n, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.norm.forward(x)
    }

    /// Floating-point operations for an `[1, c, h, w]` input (about 8 per element).
    pub fn flops(&self, [c, h, w]: [usize; 3]) -> u64 {
        8 * (c * h * w) as u64
    }
}

/// A 2-D convolution with "same" padding for odd kernels.
pub fn conv(
    channels: [usize; 2],
    kernel: [usize; 2],
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new(channels, kernel)
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(
            kernel[0] / 2,
            kernel[1] / 2,
            kernel[0] / 2,
            kernel[1] / 2,
        ))
        .init(device)
}

/// A 2-D convolution whose weights and bias start at zero (the last layer of a residual
/// branch, so the branch starts as the identity — paper §3.1.2).
pub fn zero_conv(channels: [usize; 2], kernel: [usize; 2], device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, kernel)
        .with_padding(PaddingConfig2d::Explicit(
            kernel[0] / 2,
            kernel[1] / 2,
            kernel[0] / 2,
            kernel[1] / 2,
        ))
        .with_initializer(Initializer::Zeros)
        .init(device)
}

/// The decoder's upsampling layer: a transposed convolution with kernel 3 and stride 2
/// (paper §3.1.2) that exactly doubles height and width.
pub fn up_conv(channels: [usize; 2], device: &Device) -> ConvTranspose2d {
    ConvTranspose2dConfig::new(channels, [3, 3])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_padding_out([1, 1])
        .init(device)
}

/// Output size of `conv` for an `h × w` input.
pub fn conv_out_hw(conv: &Conv2d, [h, w]: [usize; 2]) -> [usize; 2] {
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    // All our convolutions pad kernel/2 on each side.
    [
        (h + 2 * (kh / 2) - kh) / sh + 1,
        (w + 2 * (kw / 2) - kw) / sw + 1,
    ]
}

/// Floating-point operations (2 per multiply-add) of `conv` on an `h × w` input.
pub fn conv_flops(conv: &Conv2d, hw: [usize; 2]) -> u64 {
    let [c_out, c_in_per_group, kh, kw] = conv.weight.dims();
    let [oh, ow] = conv_out_hw(conv, hw);
    2 * (c_out * c_in_per_group * kh * kw * oh * ow) as u64
}

/// Floating-point operations of a transposed convolution on an `h × w` input.
pub fn up_conv_flops(conv: &ConvTranspose2d, [h, w]: [usize; 2]) -> u64 {
    let [c_in, c_out_per_group, kh, kw] = conv.weight.dims();
    2 * (c_in * c_out_per_group * kh * kw * h * w) as u64
}

/// Floating-point operations of `linear` applied to `rows` vectors.
pub fn linear_flops(linear: &Linear, rows: usize) -> u64 {
    let [d_in, d_out] = linear.weight.dims();
    2 * (rows * d_in * d_out) as u64
}

/// A per-channel scale (MSCAN's layer scale), applied to `[n, c, h, w]`.
pub fn channel_scale(x: Tensor<4>, scale: &Param<Tensor<1>>) -> Tensor<4> {
    let [c] = scale.dims();
    x * scale.val().reshape([1, c, 1, 1])
}

/// A per-channel learnable scale initialised to `value`.
pub fn layer_scale(channels: usize, value: f64, device: &Device) -> Param<Tensor<1>> {
    Initializer::Constant { value }.init([channels], device)
}

/// The decoder's residual block: `x + conv3×3(GELU(conv3×3(LayerNorm(x))))`, whose last
/// convolution starts at zero so the block starts as the identity (paper §3.1.2).
#[derive(Module, Debug)]
pub struct ResidualBlock {
    norm: LayerNorm2d,
    conv_in: Conv2d,
    conv_out: Conv2d,
}

impl ResidualBlock {
    /// A block on `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            norm: LayerNorm2d::new(channels, device),
            conv_in: conv([channels, channels], [3, 3], 1, 1, device),
            conv_out: zero_conv([channels, channels], [3, 3], device),
        }
    }

    /// # Shapes
    /// `[n, c, h, w]` → `[n, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv_in.forward(self.norm.forward(x.clone()));
        x + self.conv_out.forward(gelu(y))
    }

    /// Floating-point operations for one `[c, h, w]` input.
    pub fn flops(&self, [c, h, w]: [usize; 3]) -> u64 {
        self.norm.flops([c, h, w])
            + conv_flops(&self.conv_in, [h, w])
            + conv_flops(&self.conv_out, [h, w])
            + 10 * (c * h * w) as u64
    }
}

/// Flattens a feature map to one row per location: `[n, c, h, w]` → `[n·h·w, c]`,
/// locations in row-major order (`index = y·w + x`) within each sample.
pub fn to_rows(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n * h * w, c])
}

/// The inverse of [`to_rows`]: `[n·h·w, c]` → `[n, c, h, w]`.
pub fn from_rows(rows: Tensor<2>, [n, h, w]: [usize; 3]) -> Tensor<4> {
    let [_, c] = rows.dims();
    rows.reshape([n, h, w, c]).permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn layer_norm_z_scores_each_sample_over_channels_height_and_width() {
        let device = Device::flex();
        let norm = LayerNorm2d::new(3, &device);
        let x = Tensor::<4>::random([2, 3, 5, 4], Distribution::Normal(7.0, 3.0), &device);
        // Make the second sample very different to show samples are independent.
        let x = Tensor::cat(
            vec![x.clone().narrow(0, 0, 1), x.narrow(0, 1, 1) * 100.0 - 50.0],
            0,
        );
        let y = norm.forward(x);
        for n in 0..2 {
            let sample = y.clone().narrow(0, n, 1).reshape([60]);
            let mean: f32 = sample.clone().mean().into_scalar();
            let var: f32 = sample.var(0).into_scalar();
            assert!(mean.abs() < 1e-4, "mean {mean}");
            // `var` is unbiased: 60/59 of the population variance 1.
            assert!((var - 60.0 / 59.0).abs() < 1e-3, "var {var}");
        }
    }

    #[test]
    fn residual_block_starts_as_identity() {
        let device = Device::flex();
        let block = ResidualBlock::new(4, &device);
        let x = Tensor::<4>::random([1, 4, 6, 6], Distribution::Default, &device);
        let y = block.forward(x.clone());
        y.into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn up_conv_doubles_the_size() {
        let device = Device::flex();
        let up = up_conv([3, 5], &device);
        let y = up.forward(Tensor::zeros([2, 3, 4, 7], &device));
        assert_eq!(y.dims(), [2, 5, 8, 14]);
    }

    #[test]
    fn rows_round_trip_and_use_row_major_locations() {
        let device = Device::flex();
        let x = Tensor::<1, burn::tensor::Int>::arange(0..24, &device)
            .float()
            .reshape([1, 2, 3, 4]);
        let rows = to_rows(x.clone());
        assert_eq!(rows.dims(), [12, 2]);
        // Location (y=1, x=2) is row 1·4+2 = 6; its channel 1 is x[0,1,1,2] = 12+6.
        let v: f32 = rows.clone().slice([6..7, 1..2]).into_scalar();
        assert_eq!(v, 18.0);
        from_rows(rows, [1, 3, 4])
            .into_data()
            .assert_eq(&x.into_data(), true);
    }
}
