//! A Wan checkpoint folder as published in the diffusers layout: `transformer/config.json`
//! with `diffusion_pytorch_model.safetensors`, or its shards and their
//! `diffusion_pytorch_model.safetensors.index.json`. Memory-mapped; stored bf16 or fp16
//! weights are converted to the asked dtype as they load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::umt5::{UmT5Config, UmT5Encoder, WanTextEncoder, WanTokenizer};
use super::{WanTransformer, WanTransformerConfig, WanVae, WanVaeConfig};
use crate::weights::build_checked_mmap;
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
    let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
        path: index_path.clone(),
        source: std::io::Error::new(
            source.kind(),
            format!("neither {base} nor its shard index is here ({source})"),
        ),
    })?;
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
    let cfg = WanTransformerConfig::load(&component.join("config.json"))?;
    let files = weight_files(&component)?;
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
pub fn load_text_encoder(folder: &Path, dtype: DType, device: &Device) -> Result<WanTextEncoder> {
    let component = component(folder, "text_encoder");
    let cfg = UmT5Config::load(&component.join("config.json"))?;
    let files = weight_files(&component)?;
    let encoder = build_checked_mmap(&files, dtype, device, |vb| UmT5Encoder::new(&cfg, vb))?;
    let tokenizer = WanTokenizer::load(
        &folder.join("tokenizer").join("tokenizer.json"),
        WAN_TEXT_TOKENS,
    )?;
    Ok(WanTextEncoder { tokenizer, encoder })
}
