//! # lct-model: the Long Context Tuning engine
//!
//! A candle model family: [`Config`] with presets, a [`SceneTransformer`] (MMDiT) built from a
//! `VarBuilder` whose paths are the checkpoint's tensor names, the [`SceneLayout`] that packs a
//! scene and owns the RoPE and mask conventions, blocked attention, the [`KvView`] cache, the
//! rectified-flow [`sampler`], and the [`train`]ing step. [`wan`] is a second family on the same
//! masks, attention and sampler settings: Wan 2.1 / 2.2 checkpoints as published (the DiT, the
//! video VAE, umT5 with its `tokenizers` tokenizer), LCT scenes on them, and their tuning.
//!
//! Role and limits: pure computation on tensors. It knows nothing of node graphs, handles or
//! the C ABI, and chooses no device or dtype itself (they come from the weights or the
//! caller). It must not depend on `lct-nodes`, `lct-abi`, `lct-plugin` or `lct-host` (only on
//! `lct-text`, the shared prompt word rule; `libmimalloc-sys` serves only
//! [`keep_freed_pages`], an allocator setting for processes that train; `tokenizers` only
//! reads Wan's `tokenizer.json`).

pub mod attention;
pub mod autoencoder;
pub mod config;
pub mod error;
pub mod fused;
pub mod kv_cache;
pub mod layout;
pub mod noise;
pub mod optim;
pub mod pipeline;
pub mod rope;
pub mod sampler;
pub mod text_encoder;
pub mod train;
pub mod transformer;
pub mod wan;
pub mod weights;

pub use attention::{attention, MaskSpec};
pub use autoencoder::{default_working_color_space, Autoencoder, AutoencoderConfig};
pub use config::{Config, ReferencePrompts};
pub use error::{Error, Result};
pub use kv_cache::{KvPool, KvView, SegmentKv};
pub use layout::{AttentionMask, SceneLayout, Segment, SegmentKind, SegmentSpec, ShotRole};
pub use pipeline::Pipeline;
pub use sampler::{
    cache_history, generate_autoregressive, sample, HistoryMode, SamplerConfig, SceneRequest,
    ShotInput, StepControl, StepInfo,
};
pub use text_encoder::{TextEncoder, TextEncoderConfig};
pub use train::{
    fixed_shot_losses, keep_freed_pages, StepStats, TrainConfig, Trainer, TrainingScene,
    TrainingShot,
};
pub use transformer::{SceneBatch, SceneOutput, SceneTransformer};
pub use weights::{
    init_model, init_pipeline, init_tensors, load_model, load_pipeline, save_checkpoint, Init,
};
