//! The nodes that need no model, and with the `test-nodes` feature the test nodes (category
//! `testing`), which the shipped plugin leaves out.

mod color_convert;
mod files;
mod load_image;
mod save_frames;
mod save_video;
mod scene_context;
#[cfg(feature = "test-nodes")]
mod testing;

pub use color_convert::ColorConvert;
pub use load_image::LoadImage;
pub use save_frames::SaveFrames;
pub use save_video::SaveVideo;
pub use scene_context::SceneContext;
#[cfg(feature = "test-nodes")]
pub use testing::{DebugPanic, Delay, TestPattern};
