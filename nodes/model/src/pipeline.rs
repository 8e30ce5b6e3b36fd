//! Everything a checkpoint directory holds: the scene transformer and, when its config has
//! them, the text encoder (prompts to embeddings) and the autoencoder (frames to latents).

use crate::autoencoder::Autoencoder;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::text_encoder::TextEncoder;
use crate::transformer::SceneTransformer;
use candle_core::Tensor;
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub transformer: SceneTransformer,
    pub text_encoder: Option<TextEncoder>,
    pub autoencoder: Option<Autoencoder>,
}

impl Pipeline {
    /// Transformer tensors at the root, the others under `text_encoder.` and `autoencoder.`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let text_encoder = cfg
            .text_encoder
            .as_ref()
            .map(|te| TextEncoder::new(te, cfg.text_dim, vb.pp("text_encoder")))
            .transpose()?;
        let autoencoder = cfg
            .autoencoder
            .as_ref()
            .map(|ae| Autoencoder::new(ae, cfg.latent_channels, vb.pp("autoencoder")))
            .transpose()?;
        Ok(Self {
            transformer: SceneTransformer::new(cfg, vb)?,
            text_encoder,
            autoencoder,
        })
    }

    pub fn config(&self) -> &Config {
        self.transformer.config()
    }

    pub fn text_encoder(&self) -> Result<&TextEncoder> {
        self.text_encoder
            .as_ref()
            .ok_or(Error::MissingComponent("text encoder"))
    }

    pub fn autoencoder(&self) -> Result<&Autoencoder> {
        self.autoencoder
            .as_ref()
            .ok_or(Error::MissingComponent("autoencoder"))
    }

    /// `[1, shot_text_len, text_dim]` embeddings of a shot prompt.
    pub fn encode_shot_prompt(&self, text: &str) -> Result<Tensor> {
        self.text_encoder()?
            .encode(text, self.config().shot_text_len)
    }

    /// `[1, global_text_len, text_dim]` embeddings of the global prompt.
    pub fn encode_global_prompt(&self, text: &str) -> Result<Tensor> {
        self.text_encoder()?
            .encode(text, self.config().global_text_len)
    }

    /// Latent shape `[C, T, H, W]` of a shot of `frames` frames at the trained frame size.
    pub fn shot_latent_dims(&self, frames: usize) -> Result<[usize; 4]> {
        let ae = self.autoencoder()?;
        let [h, w] = ae.config().frame_size;
        let p = ae.config().patch;
        Ok([self.config().latent_channels, frames, h / p, w / p])
    }
}
