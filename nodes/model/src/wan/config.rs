//! The Wan transformer's `config.json` as diffusers publishes it (`WanTransformer3DModel`, and
//! `SkyReelsV2Transformer3DModel`, the same architecture with block-causal attention).

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The fields of a published `transformer/config.json`; absent fields take diffusers'
/// defaults, unknown ones (`_class_name`, `_diffusers_version`, ...) are ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct WanTransformerConfig {
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    pub text_dim: usize,
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    pub cross_attn_norm: bool,
    pub qk_norm: Option<String>,
    pub eps: f64,
    /// Image conditioning (the I2V models): not covered yet, refused by name.
    pub image_dim: Option<usize>,
    pub added_kv_proj_dim: Option<usize>,
    pub rope_max_seq_len: usize,
    pub pos_embed_seq_len: Option<usize>,
    /// SkyReels-V2: frames per causal block (1: full attention, as Wan).
    pub num_frame_per_block: usize,
    /// SkyReels-V2's fps embedding: not covered yet, refused by name.
    pub inject_sample_info: bool,
}

impl Default for WanTransformerConfig {
    fn default() -> Self {
        // diffusers' defaults: the Wan 2.1 T2V 14B transformer.
        Self {
            patch_size: [1, 2, 2],
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some("rms_norm_across_heads".into()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
            pos_embed_seq_len: None,
            num_frame_per_block: 1,
            inject_sample_info: false,
        }
    }
}

impl WanTransformerConfig {
    /// Reads and checks `config.json`; every refusal names the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })?;
        config
            .validate()
            .map_err(|message| Error::Config(format!("{}: {message}", path.display())))?;
        Ok(config)
    }

    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Channels of each head's RoPE given to (frame, height, width): height and width take
    /// `2 * (head_dim / 6)` each, frames the rest.
    pub fn rope_split(&self) -> [usize; 3] {
        let spatial = 2 * (self.attention_head_dim / 6);
        [self.attention_head_dim - 2 * spatial, spatial, spatial]
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.image_dim.is_some() || self.added_kv_proj_dim.is_some() {
            return Err("image conditioning (image_dim / added_kv_proj_dim, the I2V models) is not supported yet".into());
        }
        if self.inject_sample_info {
            return Err(
                "inject_sample_info (SkyReels-V2's fps embedding) is not supported yet".into(),
            );
        }
        if self.num_frame_per_block == 0 {
            return Err("num_frame_per_block must be positive".into());
        }
        if self.pos_embed_seq_len.is_some() {
            return Err(
                "pos_embed_seq_len (image position embeddings) is not supported yet".into(),
            );
        }
        match self.qk_norm.as_deref() {
            Some("rms_norm_across_heads") => {}
            other => {
                return Err(format!(
                    "qk_norm {other:?} is not supported (only \"rms_norm_across_heads\")"
                ))
            }
        }
        let zero = [
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("in_channels", self.in_channels),
            ("text_dim", self.text_dim),
            ("ffn_dim", self.ffn_dim),
            ("rope_max_seq_len", self.rope_max_seq_len),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.patch_size.contains(&0) {
            return Err(format!("patch_size {:?} must be positive", self.patch_size));
        }
        if self.freq_dim == 0 || !self.freq_dim.is_multiple_of(2) {
            return Err(format!(
                "freq_dim {} must be even and positive",
                self.freq_dim
            ));
        }
        if self.rope_split().iter().any(|d| !d.is_multiple_of(2)) {
            return Err(format!(
                "attention_head_dim {} splits into RoPE parts {:?}; each must be even",
                self.attention_head_dim,
                self.rope_split()
            ));
        }
        Ok(())
    }
}
