//! # lct-world: a procedural scene world for Long Context Tuning
//!
//! A small, fully deterministic world for training and evaluating a small LCT model (multi-shot
//! video generation with consistency across shots):
//!
//! - [`spec`]: the vocabulary (characters, environments, actions, framings) and
//!   [`sample_scene`], which draws a [`SceneSpec`] from a seed, with a documented held-out split
//!   of (character, environment) pairs ([`is_held_out`]);
//! - [`render`]: supersampled RGB `f32` frames (64x64 by default), shots as [`Clip`]s whose time
//!   continues from shot to shot, identity and environment reference images, contact sheets;
//! - [`caption`]: two-tier captions (global prompt + per-shot prompts that only say
//!   "Character 1"), the closed [`vocabulary`] and a word-level [`tokenize`]r;
//! - [`detect`]: detectors that read colour, shape, pattern, framing, environment, lighting,
//!   motion and sharpness back FROM PIXELS, and the scene consistency metrics built on them.
//!
//! This crate is the data and evaluation side only: it must not depend on candle or on any other
//! `lct` crate but `lct-text` (the prompt word rule it shares with the model's text encoder, so
//! captions tokenise the same in training and at inference), so the model can be swapped
//! without touching the world and vice versa.

pub mod caption;
pub mod detect;
pub mod render;
mod rng;
pub mod spec;

pub use caption::{
    captions, describe_character, describe_environment, detokenize, environment_reference_prompt,
    global_prompt, global_prompt_omitting, identity_reference_prompt, shot_prompt, split_words,
    tokenize, tokenize_padded, vocabulary, Attribute, CaptionMode, SceneCaptions, PAD_ID,
};
pub use detect::{
    colour_balance, continues, cross_scene_agreement, detect_action, detect_character,
    detect_character_with, detect_environment, environment_consistency,
    identity_attribute_consistency, identity_consistency, laplacian_variance,
    metrics_from_readings, motion_continuity, read_scene, read_shot, scene_metrics, sharpness,
    text_alignment, tone_consistency, CharacterReading, EnvironmentReading, SceneMetrics,
    SceneReading, ShotReading,
};
pub use render::{
    contact_sheet, render_environment_reference, render_identity_reference, render_scene,
    render_shot, scene_contact_sheet, Clip, Frame,
};
pub use spec::{
    is_held_out, sample_scene, sample_scene_with, Action, Camera, Character, CharacterState,
    Colour, Environment, Framing, Ground, Horizon, Pattern, SceneSpec, Shape, Size, Sky, Split,
    TimeOfDay, Tone, WorldConfig, MAX_SHOTS,
};

/// Errors of the world crate.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("unknown word {word:?}; the vocabulary is: {vocabulary}")]
    UnknownWord { word: String, vocabulary: String },
    #[error("token id {0} is not in the vocabulary")]
    UnknownTokenId(u32),
    #[error("invalid world config: {0}")]
    InvalidConfig(String),
    #[error("shot index {index} is out of range: the scene has {shots} shot(s)")]
    ShotIndex { index: usize, shots: usize },
    #[error("could not write image {path}: {source}")]
    Image {
        path: String,
        #[source]
        source: image::ImageError,
    },
    #[error("i/o error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not serialise {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}
