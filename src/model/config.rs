//! Configurations of the network and its parts (`#[derive(Config)]`, serialisable).
//!
//! Widths and depths are choices the paper leaves open; `docs/model.md` gives the
//! reasons next to the paper's section numbers.

use burn::config::Config;

/// The Attention Mapper Encoder (paper §3.1.1): an MSCAN (SegNeXt) encoder on images.
///
/// Stage `n` (n = 1..4) runs at output stride `2^(n+1)` (4, 8, 16, 32); the stem (two
/// 3×3 stride-2 convolutions) is stage 1's patch embedding. The encoder returns the
/// outputs of stages 2–4 (strides 8, 16, 32).
#[derive(Config, Debug, PartialEq)]
pub struct AttentionMapperEncoderConfig {
    /// Channels of stages 1–4 (MSCAN-T: 32, 64, 160, 256).
    pub widths: [usize; 4],
    /// Blocks per stage (MSCAN-T: 3, 3, 5, 2).
    pub depths: [usize; 4],
    /// Hidden-width multiplier of each stage's feed-forward network (MSCAN-T: 8, 8, 4, 4).
    pub mlp_ratios: [usize; 4],
}

/// The simplified MSCAN shared by the Segmentation Encoder (1 input channel) and the
/// Support Set Encoder (2 channels: image and mask), paper §3.1.2.
///
/// A stem to stride 2, then four stages to strides 4, 8, 16, 32. No multi-scale
/// convolutional attention; every feed-forward network has depthwise kernel 1 except the
/// first of each stage (kernel 3).
#[derive(Config, Debug, PartialEq)]
pub struct SimplifiedMscanConfig {
    /// Channels of the stem output (stride 2).
    pub stem_width: usize,
    /// Channels of stages 1–4 (strides 4, 8, 16, 32).
    pub widths: [usize; 4],
    /// Blocks per stage.
    pub depths: [usize; 4],
    /// Hidden-width multiplier of the feed-forward networks.
    pub mlp_ratio: usize,
}

/// The Segmentation Decoder (paper §3.1.2, Figure 2).
#[derive(Config, Debug, PartialEq)]
pub struct SegmentationDecoderConfig {
    /// Channels of the decoder at output strides 32, 16, 8, 4, 2 and 1.
    pub widths: [usize; 6],
    /// Residual blocks per stage.
    #[config(default = 1)]
    pub blocks_per_stage: usize,
}

/// The whole network.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// Side of the square model input in pixels (paper: 256); a multiple of 32.
    pub input_size: usize,
    /// Attention Mapper Encoder (and its EMA twin).
    pub attention_mapper_encoder: AttentionMapperEncoderConfig,
    /// Segmentation Encoder and Support Set Encoder (same architecture, 1 and 2 input
    /// channels).
    pub encoder: SimplifiedMscanConfig,
    /// Segmentation Decoder.
    pub decoder: SegmentationDecoderConfig,
    /// Learnable synthetic (register) tokens appended to the support keys (equation 2).
    #[config(default = 4)]
    pub register_tokens: usize,
    /// Hidden width of the Attention Upsampler's refinement feed-forward network.
    #[config(default = 32)]
    pub upsampler_hidden: usize,
    /// Base top-K of the Attention Upsamplers (K0; K = 4·K0 at stride 16 and 16·K0 at
    /// stride 8). Paper: 5 then 24 in training, 8 at inference. Changeable at run time
    /// with [`super::Model::set_top_k0`].
    #[config(default = 8)]
    pub top_k0: usize,
}

impl ModelConfig {
    /// The paper's configuration: 256×256 input, about 25 M trainable parameters
    /// (the EMA twin of the Attention Mapper Encoder comes on top and is not trained).
    pub fn paper() -> Self {
        Self::new(
            256,
            AttentionMapperEncoderConfig::new([32, 64, 160, 256], [3, 3, 5, 2], [8, 8, 4, 4]),
            SimplifiedMscanConfig::new(32, [64, 128, 256, 512], [2, 2, 4, 2], 4),
            SegmentationDecoderConfig::new([256, 192, 128, 64, 32, 16]),
        )
        .with_register_tokens(8)
        .with_upsampler_hidden(64)
    }

    /// The desktop configuration: 128×128 input and narrow layers, sized so that a
    /// 2-core CPU propagates a structure through 100 slices in well under 20 s.
    pub fn lite() -> Self {
        Self::new(
            128,
            AttentionMapperEncoderConfig::new([16, 32, 64, 128], [1, 1, 2, 1], [4, 4, 4, 4]),
            SimplifiedMscanConfig::new(12, [24, 48, 96, 160], [1, 1, 2, 1], 4),
            SegmentationDecoderConfig::new([128, 96, 64, 32, 16, 8]),
        )
        .with_register_tokens(4)
        .with_upsampler_hidden(32)
    }

    /// A very small configuration for unit tests (64×64 input, a few thousand
    /// parameters). Not for real use.
    pub fn tiny() -> Self {
        Self::new(
            64,
            AttentionMapperEncoderConfig::new([4, 8, 8, 16], [1, 1, 1, 1], [2, 2, 2, 2]),
            SimplifiedMscanConfig::new(4, [4, 8, 8, 16], [1, 1, 1, 1], 2),
            SegmentationDecoderConfig::new([16, 8, 8, 4, 4, 4]),
        )
        .with_register_tokens(2)
        .with_upsampler_hidden(8)
        .with_top_k0(2)
    }

    /// Checks the numbers fit together; the model constructor calls this.
    pub fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(format!(
                "input_size must be a positive multiple of 32, got {}",
                self.input_size
            ));
        }
        let all_widths = self
            .attention_mapper_encoder
            .widths
            .iter()
            .chain(&self.encoder.widths)
            .chain(&self.decoder.widths)
            .chain([&self.encoder.stem_width]);
        if all_widths.clone().any(|&w| w == 0) {
            return Err("every width must be positive".into());
        }
        if self.attention_mapper_encoder.mlp_ratios.contains(&0) || self.encoder.mlp_ratio == 0 {
            return Err("MLP ratios must be positive".into());
        }
        if self.top_k0 == 0 {
            return Err("top_k0 must be at least 1".into());
        }
        if self.upsampler_hidden == 0 {
            return Err("upsampler_hidden must be positive".into());
        }
        Ok(())
    }

    /// A short name for messages: `lite`, `paper`, `tiny` or `custom`.
    pub fn name(&self) -> &'static str {
        let same_layers = |other: &ModelConfig| {
            // K0 is a run-time setting and does not change the weights.
            let mut a = self.clone();
            a.top_k0 = other.top_k0;
            a == *other
        };
        if same_layers(&Self::lite()) {
            "lite"
        } else if same_layers(&Self::paper()) {
            "paper"
        } else if same_layers(&Self::tiny()) {
            "tiny"
        } else {
            "custom"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_configs_validate_and_know_their_names() {
        for (config, name) in [
            (ModelConfig::lite(), "lite"),
            (ModelConfig::paper(), "paper"),
            (ModelConfig::tiny(), "tiny"),
        ] {
            config.validate().unwrap();
            assert_eq!(config.name(), name);
            assert_eq!(config.clone().with_top_k0(24).name(), name);
        }
        assert_eq!(ModelConfig::lite().with_register_tokens(7).name(), "custom");
    }

    #[test]
    fn input_size_must_be_a_multiple_of_32() {
        let with_size = |input_size| ModelConfig {
            input_size,
            ..ModelConfig::tiny()
        };
        assert!(with_size(72).validate().is_err());
        assert!(with_size(0).validate().is_err());
        assert!(with_size(96).validate().is_ok());
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = ModelConfig::paper().with_top_k0(24);
        let json = serde_json::to_string(&config).unwrap();
        let back: ModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}
