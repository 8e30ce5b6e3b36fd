//! The Wan 2.1 / 2.2 model family, one file per role as candle's families are laid out:
//! [`config`] (the published `config.json`), [`transformer`] (the DiT), [`vae`] (the video autoencoder), [`umt5`] (the text encoder and tokenizer), [`scene`] (LCT: a
//! scene's shots in one sequence, with the KV cache) and [`load`] (a checkpoint folder in the
//! diffusers layout). Checked against diffusers at tiny random
//! configs (`tests/wan.rs`, fixtures from `tests/fixtures/wan_reference.py`).

pub mod autoencoder;
pub mod config;
pub mod load;
pub mod sample;
pub mod scene;
pub mod train;
pub mod transformer;
pub mod umt5;
pub mod vae;

pub use autoencoder::{WanAutoencoder, PIXEL_SPACE_CLASS};
pub use config::{WanPrediction, WanTransformerConfig};
pub use load::{
    is_wan_checkpoint, load_text_encoder, load_transformer, load_vae, WanPipeline, LCT_MARKER,
    WAN_TEXT_TOKENS,
};
pub use sample::{wan_cache_history, wan_generate_autoregressive, wan_sample, WanHistory};
pub use scene::{WanSceneCache, WanShot};
pub use train::{
    SceneDraw, ShotDraw, WanBatch, WanTrainConfig, WanTrainer, WanTrainingScene, WanTrainingShot,
};
pub use transformer::{additive_mask, Masks, Rope as WanRope, WanTimestep, WanTransformer};
pub use umt5::{UmT5Config, UmT5Encoder, WanTextEncoder, WanTokenizer};
pub use vae::{WanVae, WanVaeConfig};
