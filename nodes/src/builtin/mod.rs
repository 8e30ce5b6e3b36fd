//! The nodes that need no model. The model-backed nodes (LoadModel, ShotGenerate, ShotExtend,
//! KVCache, EncodeFrames, DecodeFrames) join them in [`crate::all_nodes`] once `lct-model` lands.

mod save_frames;
mod scene_context;
mod testing;

pub use save_frames::SaveFrames;
pub use scene_context::SceneContext;
pub use testing::{DebugPanic, Delay, TestPattern};
