//! Model configuration: serde (`config.json` beside `model.safetensors`) with named presets.

use crate::autoencoder::AutoencoderConfig;
use crate::error::{Error, Result};
use crate::layout::AttentionMask;
use crate::text_encoder::TextEncoderConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hyper-parameters of the scene transformer. Tensor shapes follow from these alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of joint (MMDiT) blocks.
    pub depth: usize,
    pub num_heads: usize,
    /// Hidden width of each MLP.
    pub mlp_hidden_size: usize,
    /// Channels of the autoencoder latent.
    pub latent_channels: usize,
    /// Spatial patch size; one video token covers `patch_size x patch_size` latent pixels.
    pub patch_size: usize,
    /// Width of the text encoder's token embeddings.
    pub text_dim: usize,
    /// Channels of each head given to the (frame, height, width) RoPE axes; they sum to the
    /// head dimension and each is even.
    pub rope_axes: [usize; 3],
    pub rope_theta: f64,
    /// Width of the sinusoidal timestep features fed to the timestep MLP.
    pub timestep_features: usize,
    /// Per-shot text length used in training; prompts are padded or truncated to it so the
    /// text-to-video RoPE offset matches training (LCT.md section 3).
    pub shot_text_len: usize,
    /// Text length of the global prompt segment.
    pub global_text_len: usize,
    /// Which mask the weights were tuned for: bidirectional (LCT) or context-causal (fine-tuned).
    pub attention: AttentionMask,
    /// Each segment's timestep embedding also gets its pooled prompt (the mean text embedding
    /// of the global prompt and, for a shot, its own prompt), as SD3-style base models add a
    /// pooled text vector to adaLN: the prompt reaches every token in one hop. Tensors
    /// `pooled_in` and `pooled_out`; absent from older checkpoints (false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pooled_text: bool,
    /// The prompt encoder shipped with the weights (tensors under `text_encoder.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoderConfig>,
    /// The frame autoencoder shipped with the weights (tensors under `autoencoder.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoencoder: Option<AutoencoderConfig>,
    /// The prompts of the image shots the weights were tuned with (LCT's identity and
    /// environment references); without them reference images get an empty prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_prompts: Option<ReferencePrompts>,
}

/// How a checkpoint's training captioned its reference images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferencePrompts {
    /// An image of a character alone (its identity).
    pub identity: String,
    /// An image of a place without characters (its environment).
    pub environment: String,
}

impl Config {
    /// Names accepted by [`Config::preset`].
    pub const PRESETS: [&'static str; 2] = ["tiny", "reference"];

    /// A few hundred parameters per layer: for unit tests.
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            mlp_hidden_size: 64,
            latent_channels: 4,
            patch_size: 1,
            text_dim: 16,
            rope_axes: [4, 6, 6],
            rope_theta: 10_000.0,
            timestep_features: 32,
            shot_text_len: 4,
            global_text_len: 6,
            attention: AttentionMask::Bidirectional,
            pooled_text: false,
            text_encoder: None,
            autoencoder: None,
            reference_prompts: None,
        }
    }

    /// The benchmark configuration: width 512, 8 layers, 8 heads (head dim 64).
    pub fn reference() -> Self {
        Self {
            hidden_size: 512,
            depth: 8,
            num_heads: 8,
            mlp_hidden_size: 2048,
            latent_channels: 16,
            patch_size: 2,
            text_dim: 256,
            rope_axes: [16, 24, 24],
            rope_theta: 10_000.0,
            timestep_features: 256,
            shot_text_len: 16,
            global_text_len: 16,
            attention: AttentionMask::Bidirectional,
            pooled_text: false,
            text_encoder: None,
            autoencoder: None,
            reference_prompts: None,
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        let cfg = match name {
            "tiny" => Self::tiny(),
            "reference" => Self::reference(),
            other => {
                return Err(Error::Config(format!(
                    "unknown preset '{other}'; known presets: {}",
                    Self::PRESETS.join(", ")
                )))
            }
        };
        Ok(cfg)
    }

    pub fn with_attention(mut self, attention: AttentionMask) -> Self {
        self.attention = attention;
        self
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Values carried by one video token: `latent_channels * patch_size^2`.
    pub fn patch_dim(&self) -> usize {
        self.latent_channels * self.patch_size * self.patch_size
    }

    /// Checks the relations between fields that the tensor shapes rely on.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        let positive = [
            ("hidden_size", self.hidden_size),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("mlp_hidden_size", self.mlp_hidden_size),
            ("latent_channels", self.latent_channels),
            ("patch_size", self.patch_size),
            ("text_dim", self.text_dim),
            ("timestep_features", self.timestep_features),
        ];
        for (name, value) in positive {
            if value == 0 {
                return fail(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return fail(format!(
                "hidden_size {} is not divisible by num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        let axes_sum: usize = self.rope_axes.iter().sum();
        if axes_sum != self.head_dim() {
            return fail(format!(
                "rope_axes {:?} sum to {axes_sum} but the head dimension is {}",
                self.rope_axes,
                self.head_dim()
            ));
        }
        if self.rope_axes.iter().any(|a| a % 2 != 0) {
            return fail(format!("rope_axes {:?} must all be even", self.rope_axes));
        }
        if !self.timestep_features.is_multiple_of(2) {
            return fail(format!(
                "timestep_features {} must be even",
                self.timestep_features
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return fail(format!("rope_theta {} must be > 1", self.rope_theta));
        }
        if let Some(te) = &self.text_encoder {
            let longest = self.shot_text_len.max(self.global_text_len);
            if te.max_len < longest {
                return fail(format!(
                    "text_encoder.max_len {} is shorter than the prompt length {longest}",
                    te.max_len
                ));
            }
        }
        if let Some(ae) = &self.autoencoder {
            let cell = ae.patch * self.patch_size;
            if ae.frame_size.iter().any(|s| s % cell != 0) {
                return fail(format!(
                    "autoencoder.frame_size {:?} must be a multiple of {cell} (autoencoder patch x transformer patch)",
                    ae.frame_size
                ));
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = lct_files::read_to_string(path, lct_files::FileKind::Json)?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("config serialises");
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}
