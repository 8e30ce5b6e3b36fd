//! A Wan checkpoint folder as published in the diffusers layout: `transformer/config.json`
//! with `diffusion_pytorch_model.safetensors`, or its shards and their
//! `diffusion_pytorch_model.safetensors.index.json`. Memory-mapped; stored bf16 or fp16
//! weights are converted to the asked dtype as they load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::{WanTransformer, WanTransformerConfig};
use crate::{Error, Result};

const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// The safetensors files of a diffusers component folder: one file, or the shards its index
/// names (each must exist).
pub fn weight_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let single = folder.join(WEIGHTS);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = folder.join(format!("{WEIGHTS}.index.json"));
    let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io {
        path: index_path.clone(),
        source: std::io::Error::new(
            source.kind(),
            format!("neither {WEIGHTS} nor its shard index is here ({source})"),
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

/// The transformer of a Wan checkpoint folder (`folder/transformer/`, or the component
/// folder itself), in `dtype` on `device`.
pub fn load_transformer(folder: &Path, dtype: DType, device: &Device) -> Result<WanTransformer> {
    let component = if folder.join("transformer").is_dir() {
        folder.join("transformer")
    } else {
        folder.to_path_buf()
    };
    let cfg = WanTransformerConfig::load(&component.join("config.json"))?;
    let files = weight_files(&component)?;
    // SAFETY: the files are memory-mapped read-only; lct does not write them while loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
    WanTransformer::new(&cfg, vb)
}
