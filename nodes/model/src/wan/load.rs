//! A Wan checkpoint folder as published in the diffusers layout: `transformer/config.json`
//! with `diffusion_pytorch_model.safetensors`, or its shards and their
//! `diffusion_pytorch_model.safetensors.index.json`. Memory-mapped; stored bf16 or fp16
//! weights are converted to the asked dtype as they load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::diffusers_name;
use super::umt5::{UmT5Config, UmT5Encoder, WanTextEncoder, WanTokenizer};
use super::{WanTransformer, WanTransformerConfig, WanVae, WanVaeConfig};
use crate::weights::{build_checked_mmap, build_checked_mmap_renamed};
use crate::{Error, Result};

const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
const TRANSFORMERS_WEIGHTS: &str = "model.safetensors";
/// Wan's text context length (diffusers' `WanPipeline` `max_sequence_length`).
pub const WAN_TEXT_TOKENS: usize = 512;

/// The safetensors files of a component folder: `diffusion_pytorch_model.safetensors` (diffusers)
/// or `model.safetensors` (transformers), or the shards their index names (each must exist).
pub fn weight_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let base = if folder.join(TRANSFORMERS_WEIGHTS).is_file()
        || folder
            .join(format!("{TRANSFORMERS_WEIGHTS}.index.json"))
            .is_file()
    {
        TRANSFORMERS_WEIGHTS
    } else {
        WEIGHTS
    };
    weight_files_named(folder, base)
}

fn weight_files_named(folder: &Path, base: &str) -> Result<Vec<PathBuf>> {
    let single = folder.join(base);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = folder.join(format!("{base}.index.json"));
    if !index_path.exists() {
        return Err(Error::Io {
            path: index_path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("neither {base} nor its shard index is here"),
            ),
        });
    }
    let text = lct_files::read_to_string(&index_path, lct_files::FileKind::Json)?;
    let index: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index_path.clone(),
        source,
    })?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: no \"weight_map\" object",
                index_path.display()
            ))
        })?;
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards
        .into_iter()
        .map(|name| {
            let path = folder.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Io {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("shard named by {} is missing", index_path.display()),
                    ),
                })
            }
        })
        .collect()
}

/// A component folder of a checkpoint (`folder/<name>/`), or `folder` itself when it is the
/// component (it has the config but no such subfolder).
fn component(folder: &Path, name: &str) -> PathBuf {
    if folder.join(name).is_dir() {
        folder.join(name)
    } else {
        folder.to_path_buf()
    }
}

/// The transformer of a Wan checkpoint folder (`folder/transformer/`, or the component
/// folder itself), in `dtype` on `device`.
pub fn load_transformer(folder: &Path, dtype: DType, device: &Device) -> Result<WanTransformer> {
    let component = component(folder, "transformer");
    let config = component.join("config.json");
    let files = weight_files(&component)?;
    if WanTransformerConfig::is_original(&config) {
        // The original repositories' layout: their config fields and tensor names.
        let cfg = WanTransformerConfig::load_original(&config)?;
        return build_checked_mmap_renamed(&files, &diffusers_name, dtype, device, |vb| {
            WanTransformer::new(&cfg, vb)
        });
    }
    let cfg = WanTransformerConfig::load(&config)?;
    build_checked_mmap(&files, dtype, device, |vb| WanTransformer::new(&cfg, vb))
}

/// The video autoencoder of a Wan checkpoint folder (`folder/vae/`, or the component folder).
pub fn load_vae(folder: &Path, dtype: DType, device: &Device) -> Result<WanVae> {
    let component = component(folder, "vae");
    let cfg = WanVaeConfig::load(&component.join("config.json"))?;
    let files = weight_files(&component)?;
    build_checked_mmap(&files, dtype, device, |vb| WanVae::new(&cfg, vb))
}

/// The umT5 encoder (`folder/text_encoder/`) and its tokenizer (`folder/tokenizer/tokenizer.json`).
///
/// umT5-XXL is 5.7B parameters (23 GB in f32) and runs once per prompt, so it computes in the
/// half precision it is published in (bf16 for Wan) even when `dtype` is f32; its output is
/// given in `dtype`.
pub fn load_text_encoder(folder: &Path, dtype: DType, device: &Device) -> Result<WanTextEncoder> {
    let component = component(folder, "text_encoder");
    let cfg = UmT5Config::load(&component.join("config.json"))?;
    let files = weight_files(&component)?;
    let compute = match stored_dtype(&files[0])? {
        Some(half @ (DType::BF16 | DType::F16)) if dtype == DType::F32 => half,
        _ => dtype,
    };
    let encoder = build_checked_mmap(&files, compute, device, |vb| UmT5Encoder::new(&cfg, vb))?;
    let tokenizer = WanTokenizer::load(
        &folder.join("tokenizer").join("tokenizer.json"),
        read_text_tokens(folder)?,
    )?;
    Ok(WanTextEncoder {
        tokenizer,
        encoder,
        output_dtype: dtype,
    })
}

/// The dtype of the first tensor of a safetensors file (from its header).
fn stored_dtype(path: &Path) -> Result<Option<DType>> {
    // SAFETY: mapped read-only and dropped before returning.
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(|e| {
        Error::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        }
    })?;
    let dtype = file.tensors().first().map(|(_, view)| view.dtype());
    Ok(match dtype {
        Some(safetensors::Dtype::BF16) => Some(DType::BF16),
        Some(safetensors::Dtype::F16) => Some(DType::F16),
        Some(safetensors::Dtype::F32) => Some(DType::F32),
        _ => None,
    })
}

/// A whole Wan checkpoint: transformer, VAE, text encoder and tokenizer, with the scheduler's
/// timestep shift and the attention mask LCT runs its scenes with.
pub struct WanPipeline {
    pub transformer: WanTransformer,
    pub vae: super::WanAutoencoder,
    pub text: WanTextEncoder,
    /// `scheduler/scheduler_config.json`'s `shift` (or `flow_shift`), else 1.
    pub shift: f32,
    /// `lct.json`'s `"attention"` (written by `lct-train` after LCT tuning): bidirectional for
    /// a checkpoint as published, context-causal after the context-causal fine-tune.
    pub attention: crate::AttentionMask,
    /// `lct.json`'s `"frame_size"` `[height, width]`: the size a small model was trained at,
    /// used where the user sets none (published Wan checkpoints declare none).
    pub frame_size: Option<[usize; 2]>,
    pub folder: PathBuf,
}

/// The file that marks a Wan checkpoint tuned by lct, beside `model_index.json`.
pub const LCT_MARKER: &str = "lct.json";

/// Whether `folder` is a Wan checkpoint in the diffusers layout (`model_index.json` naming a
/// Wan pipeline, or a `transformer/config.json` of a Wan transformer).
pub fn is_wan_checkpoint(folder: &Path) -> bool {
    let read = |path: PathBuf| {
        lct_files::read_to_string(&path, lct_files::FileKind::Json).unwrap_or_default()
    };
    WanTransformerConfig::is_original(&folder.join("config.json"))
        || read(folder.join("model_index.json")).contains("\"Wan")
        || read(folder.join("model_index.json")).contains("\"SkyReelsV2")
        || {
            let transformer = read(folder.join("transformer").join("config.json"));
            transformer.contains("\"WanTransformer3DModel\"")
                || transformer.contains("\"SkyReelsV2Transformer3DModel\"")
        }
}

impl WanPipeline {
    pub fn load(folder: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if WanTransformerConfig::is_original(&folder.join("config.json")) {
            return Err(Error::Config(format!(
                "{}: an original-layout Wan repository; its VAE and text encoder are PyTorch \
                 pickles (.pth), which lct does not read. Use the repository's -Diffusers \
                 version; an original-layout transformer (config.json and safetensors) can go \
                 into a diffusers checkpoint's transformer/ folder",
                folder.display()
            )));
        }
        let index = folder.join("model_index.json");
        if !index.is_file() && !folder.join("transformer").is_dir() {
            return Err(Error::Io {
                path: index,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a Wan checkpoint folder in the diffusers layout (no model_index.json, no transformer/)",
                ),
            });
        }
        if folder.join("transformer_2").is_dir() {
            return Err(Error::Config(format!(
                "{}: two transformers (transformer_2/, Wan 2.2 A14B's high- and low-noise \
                 experts) are not covered yet; Wan 2.1 T2V and Wan 2.2 TI2V 5B are",
                folder.display()
            )));
        }
        let transformer = load_transformer(folder, dtype, device)?;
        let vae = super::WanAutoencoder::load(&component(folder, "vae"), device)?;
        let text = load_text_encoder(folder, dtype, device)?;
        if vae.latent_channels() != transformer.config().in_channels {
            return Err(Error::Config(format!(
                "{}: the autoencoder's {} latent channels are not the transformer's in_channels {}",
                folder.display(),
                vae.latent_channels(),
                transformer.config().in_channels
            )));
        }
        if text.encoder.config().d_model != transformer.config().text_dim {
            return Err(Error::Config(format!(
                "{}: the text encoder's d_model {} is not the transformer's text_dim {}",
                folder.display(),
                text.encoder.config().d_model,
                transformer.config().text_dim
            )));
        }
        Ok(Self {
            transformer,
            vae,
            text,
            shift: read_shift(folder)?,
            attention: read_attention(folder)?,
            frame_size: read_frame_size(folder)?,
            folder: folder.to_path_buf(),
        })
    }

    /// Frames `[T, 3, H, W]` in 0..1 (sRGB-encoded, as Wan was trained) to the transformer's
    /// normalised latents `[1, C, t, h, w]`, f32 whatever the model computes in.
    pub fn encode_frames(&self, frames: &Tensor) -> Result<Tensor> {
        let video = ((frames.to_dtype(DType::F32)? * 2.0)? - 1.0)?
            .permute((1, 0, 2, 3))?
            .unsqueeze(0)?;
        Ok(self.vae.encode(&video)?.to_dtype(DType::F32)?)
    }

    /// Normalised latents `[1, C, t, h, w]` (any float dtype) to frames `[T, 3, H, W]` in
    /// 0..1 (f32).
    pub fn decode_frames(&self, latents: &Tensor) -> Result<Tensor> {
        let latents = latents.to_dtype(DType::F32)?;
        let video = self.vae.decode(&latents)?;
        Ok(((video.squeeze(0)?.permute((1, 0, 2, 3))? + 1.0)? * 0.5)?.to_dtype(DType::F32)?)
    }

    /// Latent `[channels, frames, height, width]` of a shot of `frames` video frames at
    /// `height` x `width` pixels.
    pub fn latent_dims(&self, frames: usize, height: usize, width: usize) -> Result<[usize; 4]> {
        let cell = self.vae.spatial_cell();
        let [_, ph, pw] = self.transformer.config().patch_size;
        if !height.is_multiple_of(cell * ph) || !width.is_multiple_of(cell * pw) {
            return Err(Error::Shape(format!(
                "Wan frames are a multiple of {} pixels wide and {} high; {width}x{height} is not",
                cell * pw,
                cell * ph
            )));
        }
        Ok([
            self.vae.latent_channels(),
            self.vae.latent_frames(frames)?,
            height / cell,
            width / cell,
        ])
    }
}

/// An optional JSON file: `None` when absent.
fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    super::config::read_json(path).map(Some)
}

fn read_shift(folder: &Path) -> Result<f32> {
    let path = folder.join("scheduler").join("scheduler_config.json");
    let Some(config) = read_optional_json(&path)? else {
        return Ok(1.0);
    };
    let shift = ["flow_shift", "shift"]
        .iter()
        .find_map(|key| config.get(*key).and_then(|v| v.as_f64()))
        .unwrap_or(1.0);
    if !(shift.is_finite() && shift > 0.0) {
        return Err(Error::Config(format!(
            "{}: shift {shift} must be positive",
            path.display()
        )));
    }
    Ok(shift as f32)
}

/// The prompt length the text encoder pads to: `lct.json`'s `"text_tokens"` (a small model's
/// short prompts), else Wan's 512.
fn read_text_tokens(folder: &Path) -> Result<usize> {
    let path = folder.join(LCT_MARKER);
    let Some(marker) = read_optional_json(&path)? else {
        return Ok(WAN_TEXT_TOKENS);
    };
    match marker.get("text_tokens") {
        None => Ok(WAN_TEXT_TOKENS),
        Some(value) => match value.as_u64() {
            Some(tokens @ 1..=512) => Ok(tokens as usize),
            _ => Err(Error::Config(format!(
                "{}: text_tokens {value} is not a count from 1 to 512",
                path.display()
            ))),
        },
    }
}

fn read_frame_size(folder: &Path) -> Result<Option<[usize; 2]>> {
    let path = folder.join(LCT_MARKER);
    let Some(marker) = read_optional_json(&path)? else {
        return Ok(None);
    };
    let Some(value) = marker.get("frame_size") else {
        return Ok(None);
    };
    let sides: Option<Vec<usize>> = value.as_array().map(|sides| {
        sides
            .iter()
            .filter_map(|side| side.as_u64().filter(|&s| (1..=16384).contains(&s)))
            .map(|side| side as usize)
            .collect()
    });
    match sides.as_deref() {
        Some(&[height, width]) => Ok(Some([height, width])),
        _ => Err(Error::Config(format!(
            "{}: frame_size {value} is not [height, width] in pixels",
            path.display()
        ))),
    }
}

fn read_attention(folder: &Path) -> Result<crate::AttentionMask> {
    let path = folder.join(LCT_MARKER);
    let Some(marker) = read_optional_json(&path)? else {
        return Ok(crate::AttentionMask::Bidirectional);
    };
    match marker.get("attention").and_then(|v| v.as_str()) {
        None | Some("bidirectional") => Ok(crate::AttentionMask::Bidirectional),
        Some("context_causal") => Ok(crate::AttentionMask::ContextCausal),
        Some(other) => Err(Error::Config(format!(
            "{}: attention \"{other}\" is neither \"bidirectional\" nor \"context_causal\"",
            path.display()
        ))),
    }
}
