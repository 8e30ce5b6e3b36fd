//! The nodes that need no model, and with the `test-nodes` feature the test nodes (category
//! `testing`), which the shipped plugin leaves out.

mod save_frames;
mod scene_context;
#[cfg(feature = "test-nodes")]
mod testing;

pub use save_frames::SaveFrames;
pub use scene_context::SceneContext;
#[cfg(feature = "test-nodes")]
pub use testing::{DebugPanic, Delay, TestPattern};
