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
    /// lct's extension for small models (published checkpoints leave it off): the mean of the
    /// prompt tokens each video token may read (its cross-attention window), projected to the
    /// width and added to the timestep embedding, so that every adaLN modulation carries the
    /// prompt, not only cross-attention. Adds `condition_embedder.prompt_proj`.
    pub prompt_modulation: bool,
    /// lct's extension with `prompt_modulation` (published checkpoints leave it off, meaning
    /// 0): the prompt is pooled by this many learned queries (attention pooling over the same
    /// window), each free to pick its own words (one the shape, one the colour), where the
    /// mean gives every word 1/N of one vector. Adds `condition_embedder.prompt_queries`
    /// `[n, dim]`; `prompt_proj` then reads `n * dim`.
    pub prompt_queries: usize,
    /// lct's extension for pixel-space models (published checkpoints leave it off, meaning
    /// `"velocity"`): what the network's output is. `"sample"` predicts the clean sample, which
    /// the transformer turns into Wan's velocity itself, so that samplers, caches and losses
    /// stay the same: a clean frame is low-dimensional where a velocity of noisy pixels is not.
    pub prediction: WanPrediction,
}

/// Wan's timesteps run 0..1000 where the flow time runs 0..1.
pub const WAN_TIME_SCALE: f64 = 1000.0;

/// What a Wan network predicts (`prediction` in its config).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WanPrediction {
    /// The flow velocity `noise - sample`, as every published Wan.
    #[default]
    Velocity,
    /// The clean sample; its velocity is `(x_t - sample) / t`, with `t` held to at least
    /// [`WanPrediction::MIN_TIME`].
    Sample,
}

impl WanPrediction {
    /// Smallest flow time a sample prediction is divided by (the velocity stays bounded near
    /// the clean end).
    pub const MIN_TIME: f64 = 0.05;

    pub fn name(self) -> &'static str {
        match self {
            WanPrediction::Velocity => "velocity",
            WanPrediction::Sample => "sample",
        }
    }
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
            prompt_modulation: false,
            prompt_queries: 0,
            prediction: WanPrediction::Velocity,
        }
    }
}

/// A JSON file as `T`; a missing file or a bad field is an error naming the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = lct_files::read_to_string(path, lct_files::FileKind::Json)?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })
}

impl WanTransformerConfig {
    /// Reads and checks `config.json`; every refusal names the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
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
        if self.prediction == WanPrediction::Sample && self.out_channels() != self.in_channels {
            return Err(format!(
                "prediction \"sample\" needs out_channels ({}) equal to in_channels ({})",
                self.out_channels(),
                self.in_channels
            ));
        }
        if self.prompt_queries > 0 && !self.prompt_modulation {
            return Err(format!(
                "prompt_queries {} needs prompt_modulation (the pooled prompt they read)",
                self.prompt_queries
            ));
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

/// The original Wan repositories' `config.json` (`WanModel`), mapped onto diffusers' fields.
#[derive(Deserialize)]
struct OriginalConfig {
    model_type: String,
    dim: usize,
    ffn_dim: usize,
    freq_dim: usize,
    in_dim: usize,
    out_dim: usize,
    num_heads: usize,
    num_layers: usize,
    #[serde(default = "original_eps")]
    eps: f64,
    /// Not in the published files (umT5-XXL's 4096 and 1x2x2 patches); `WanModel` takes them.
    #[serde(default = "original_text_dim")]
    text_dim: usize,
    #[serde(default = "original_patch_size")]
    patch_size: [usize; 3],
}

fn original_text_dim() -> usize {
    4096
}

fn original_patch_size() -> [usize; 3] {
    [1, 2, 2]
}

fn original_eps() -> f64 {
    1e-6
}

impl WanTransformerConfig {
    /// Whether `config.json` is the original repositories' (`dim`, `num_heads`, ...) rather
    /// than diffusers'.
    pub fn is_original(path: &Path) -> bool {
        lct_files::read_to_string(path, lct_files::FileKind::Json)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|json| json.get("dim").is_some() && json.get("num_heads").is_some())
    }

    /// Reads an original `config.json` (text-to-video models: `t2v`, Wan 2.2's `ti2v`).
    pub fn load_original(path: &Path) -> Result<Self> {
        let original: OriginalConfig = read_json(path)?;
        if !matches!(original.model_type.as_str(), "t2v" | "ti2v") {
            return Err(Error::Config(format!(
                "{}: model_type \"{}\" is not covered (text-to-video \"t2v\" and \"ti2v\" are)",
                path.display(),
                original.model_type
            )));
        }
        if original.num_heads == 0 || !original.dim.is_multiple_of(original.num_heads) {
            return Err(Error::Config(format!(
                "{}: dim {} does not split into {} heads",
                path.display(),
                original.dim,
                original.num_heads
            )));
        }
        let config = Self {
            num_attention_heads: original.num_heads,
            attention_head_dim: original.dim / original.num_heads,
            in_channels: original.in_dim,
            out_channels: Some(original.out_dim),
            freq_dim: original.freq_dim,
            ffn_dim: original.ffn_dim,
            num_layers: original.num_layers,
            eps: original.eps,
            text_dim: original.text_dim,
            patch_size: original.patch_size,
            ..Self::default()
        };
        config
            .validate()
            .map_err(|message| Error::Config(format!("{}: {message}", path.display())))?;
        Ok(config)
    }
}

/// A tensor name of the original Wan layout as diffusers names it (the renaming of diffusers'
/// single-file loader for text-to-video models, applied in the same order).
pub fn diffusers_name(original: &str) -> String {
    const RENAMES: [(&str, &str); 18] = [
        (
            "time_embedding.0",
            "condition_embedder.time_embedder.linear_1",
        ),
        (
            "time_embedding.2",
            "condition_embedder.time_embedder.linear_2",
        ),
        (
            "text_embedding.0",
            "condition_embedder.text_embedder.linear_1",
        ),
        (
            "text_embedding.2",
            "condition_embedder.text_embedder.linear_2",
        ),
        ("time_projection.1", "condition_embedder.time_proj"),
        ("cross_attn", "attn2"),
        ("self_attn", "attn1"),
        (".o.", ".to_out.0."),
        (".q.", ".to_q."),
        (".k.", ".to_k."),
        (".v.", ".to_v."),
        ("head.modulation", "scale_shift_table"),
        ("head.head", "proj_out"),
        ("modulation", "scale_shift_table"),
        ("ffn.0", "ffn.net.0.proj"),
        ("ffn.2", "ffn.net.2"),
        // The cross-attention norm is norm3 there and norm2 here.
        ("norm2", "norm__swap"),
        ("norm3", "norm2"),
    ];
    let name = original
        .strip_prefix("model.diffusion_model.")
        .unwrap_or(original);
    RENAMES
        .iter()
        .fold(name.to_owned(), |name, (from, to)| name.replace(from, to))
        .replace("norm__swap", "norm3")
}
