//! What a Wan checkpoint's `vae/` folder holds: Wan's video VAE, or pixel space.
//!
//! Pixel space is lct's extension of the family for models small enough to denoise pixels
//! (the embedded model): `vae/config.json` declares `"_class_name": "LctPixelSpace"` and has no
//! weights; its latents are the frames themselves, scaled to -1..1, one latent frame per video
//! frame and one latent pixel per pixel (the transformer's patches do the rest). Published
//! checkpoints never declare it, so they load exactly as before.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{WanVae, WanVaeConfig};
use crate::{Error, Result};

/// The `_class_name` that declares pixel space.
pub const PIXEL_SPACE_CLASS: &str = "LctPixelSpace";

/// A Wan checkpoint's autoencoder.
pub enum WanAutoencoder {
    /// Wan 2.1's or 2.2's video VAE (boxed: its layer list dwarfs the other variant).
    Vae(Box<WanVae>),
    /// Frames as latents: `channels` (3) at full resolution, every frame its own.
    Pixels { channels: usize },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelSpaceConfig {
    #[serde(rename = "_class_name")]
    _class_name: String,
    channels: usize,
}

impl WanAutoencoder {
    /// The autoencoder of `component` (a `vae/` folder): pixel space when its config declares
    /// it, else the VAE with its weights.
    pub fn load(component: &Path, device: &Device) -> Result<Self> {
        let config_path = component.join("config.json");
        let json: serde_json::Value = super::config::read_json(&config_path)?;
        if json.get("_class_name").and_then(|v| v.as_str()) == Some(PIXEL_SPACE_CLASS) {
            let config: PixelSpaceConfig = super::config::read_json(&config_path)?;
            if config.channels != 3 {
                return Err(Error::Config(format!(
                    "{}: pixel space has 3 channels (RGB), not {}",
                    config_path.display(),
                    config.channels
                )));
            }
            return Ok(Self::Pixels {
                channels: config.channels,
            });
        }
        let cfg = WanVaeConfig::load(&config_path)?;
        let files = super::load::weight_files(component)?;
        // The VAE runs in f32 whatever the transformer does, as Wan's own pipelines run it
        // (0.5 GB; its convolutions are sensitive to half precision).
        Ok(Self::Vae(Box::new(crate::weights::build_checked_mmap(
            &files,
            DType::F32,
            device,
            |vb| WanVae::new(&cfg, vb),
        )?)))
    }

    /// Channels of a latent.
    pub fn latent_channels(&self) -> usize {
        match self {
            Self::Vae(vae) => vae.config().z_dim,
            Self::Pixels { channels } => *channels,
        }
    }

    /// Pixels per latent pixel, along each side.
    pub fn spatial_cell(&self) -> usize {
        match self {
            Self::Vae(vae) => vae.config().scale_factor_spatial,
            Self::Pixels { .. } => 1,
        }
    }

    /// Latent frames of a clip of `frames` video frames (the VAE: 1 + 4k frames only).
    pub fn latent_frames(&self, frames: usize) -> Result<usize> {
        match self {
            Self::Vae(vae) => vae.latent_frames(frames),
            Self::Pixels { .. } if frames == 0 => {
                Err(Error::Shape("a clip has at least 1 frame, not 0".into()))
            }
            Self::Pixels { .. } => Ok(frames),
        }
    }

    /// Video `[1, 3, T, H, W]` in -1..1 (f32) to normalised latents `[1, C, t, h, w]`.
    pub fn encode(&self, video: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vae(vae) => vae.normalize(&vae.encode(video)?),
            Self::Pixels { .. } => Ok(video.clone()),
        }
    }

    /// Normalised latents `[1, C, t, h, w]` (f32) to video `[1, 3, T, H, W]` in about -1..1.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vae(vae) => vae.decode(&vae.denormalize(latents)?),
            Self::Pixels { .. } => Ok(latents.clamp(-1f32, 1f32)?),
        }
    }
}
