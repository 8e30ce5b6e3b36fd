//! A patch autoencoder: each `patch x patch` RGB patch of a frame maps linearly to
//! `latent_channels` values and back. Frames are encoded one by one (no temporal
//! compression), so a 1-frame reference image and a clip share one latent space. Its weights
//! can be fitted in closed form (PCA of patches) or trained.

use crate::error::{Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Spatial compression: one latent pixel per `patch x patch` image pixels.
    pub patch: usize,
    /// Frame size the model was trained on (height, width).
    pub frame_size: [usize; 2],
    /// The OCIO colour space the autoencoder reads and writes pixels in (its working space);
    /// frames are converted to it when encoded and tagged with it when decoded.
    #[serde(default = "default_working_color_space")]
    pub color_space: String,
}

/// sRGB-encoded Rec.709: what the procedural world renders and the embedded model learned.
pub fn default_working_color_space() -> String {
    "sRGB Encoded Rec.709 (sRGB)".into()
}

#[derive(Debug, Clone)]
pub struct Autoencoder {
    cfg: AutoencoderConfig,
    channels: usize,
    encoder: Linear,
    decoder: Linear,
}

impl Autoencoder {
    pub fn new(cfg: &AutoencoderConfig, latent_channels: usize, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch;
        if p == 0 || cfg.frame_size.iter().any(|&s| s == 0 || s % p != 0) {
            return Err(Error::Config(format!(
                "autoencoder frame_size {:?} must be positive multiples of patch {p}",
                cfg.frame_size
            )));
        }
        Ok(Self {
            encoder: linear(3 * p * p, latent_channels, vb.pp("encoder"))?,
            decoder: linear(latent_channels, 3 * p * p, vb.pp("decoder"))?,
            cfg: cfg.clone(),
            channels: latent_channels,
        })
    }

    pub fn config(&self) -> &AutoencoderConfig {
        &self.cfg
    }

    /// Channels of the latent it encodes to.
    pub fn latent_channels(&self) -> usize {
        self.channels
    }

    /// Latent `[1, C, T, H/p, W/p]` of frames `[T, 3, H, W]` with values in [0, 1], on the
    /// autoencoder's device whatever the frames' device.
    pub fn encode(&self, frames: &Tensor) -> Result<Tensor> {
        let p = self.cfg.patch;
        let (t, c, h, w) = frames.dims4().map_err(|_| {
            Error::Shape(format!("frames {:?} are not [T, 3, H, W]", frames.dims()))
        })?;
        if c != 3 || h % p != 0 || w % p != 0 {
            return Err(Error::Shape(format!(
                "frames {:?} need 3 channels and a size divisible by the patch {p}",
                frames.dims()
            )));
        }
        // Frames come from images on the host; the latent lives where the weights do.
        let patches = frames
            .to_device(self.encoder.weight().device())?
            .reshape(&[t, 3, h / p, p, w / p, p][..])?
            .permute(&[0, 2, 4, 1, 3, 5][..])?
            .reshape((t * (h / p) * (w / p), 3 * p * p))?;
        let latent = self.encoder.forward(&patches)?;
        Ok(latent
            .reshape((t, h / p, w / p, self.channels))?
            .permute((3, 0, 1, 2))?
            .unsqueeze(0)?
            .contiguous()?)
    }

    /// Frames `[T, 3, H, W]` in [0, 1] from a latent `[1, C, T, h, w]`.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let p = self.cfg.patch;
        let (b, c, t, h, w) = latent.dims5().map_err(|_| {
            Error::Shape(format!("latent {:?} is not [1, C, T, H, W]", latent.dims()))
        })?;
        if b != 1 || c != self.channels {
            return Err(Error::Shape(format!(
                "latent {:?} is not [1, {}, T, H, W]",
                latent.dims(),
                self.channels
            )));
        }
        let tokens = latent
            .squeeze(0)?
            .permute((1, 2, 3, 0))?
            .reshape((t * h * w, c))?;
        let patches = self.decoder.forward(&tokens)?;
        Ok(patches
            .reshape(&[t, h, w, 3, p, p][..])?
            .permute(&[0, 3, 1, 4, 2, 5][..])?
            .reshape((t, 3, h * p, w * p))?
            .clamp(0f32, 1f32)?)
    }
}
