//! The model-backed nodes: LoadModel, ShotGenerate, ShotExtend, KVCache, EncodeFrames and
//! DecodeFrames. They turn graph values into engine requests (`lct_model::sampler`, or
//! `lct_model::wan` for Wan checkpoints, through [`Backend`]) and back.

mod backend;
mod frames;
mod generate;
mod load;

pub use backend::{Backend, KvState, WanBackend, WAN_DEFAULT_FRAME};
pub use frames::{DecodeFrames, EncodeFrames};
pub(crate) use generate::global_prompt;
pub use generate::{KvCacheNode, ShotExtend, ShotGenerate};
pub use load::LoadModel;

use crate::node::NodeError;

/// Engine errors name what was wrong; the node adds which node it was.
pub(crate) fn engine_error(node: &'static str) -> impl Fn(lct_model::Error) -> NodeError {
    move |error| match error {
        lct_model::Error::Cancelled { step, total } => NodeError::Cancelled {
            node,
            step: step as u32,
            total: total as u32,
        },
        other => NodeError::Failed {
            node,
            message: other.to_string(),
        },
    }
}

pub(crate) fn tensor_error(node: &'static str) -> impl Fn(candle_core::Error) -> NodeError {
    move |error| NodeError::Failed {
        node,
        message: format!("tensor operation failed: {error}"),
    }
}

/// The value on a node's MODEL port (named `model` on every model-backed node).
pub(crate) fn model_input<'a>(
    inputs: &crate::node::Inputs<'a>,
    node: &'static str,
) -> Result<&'a std::sync::Arc<crate::model_values::ModelValue>, NodeError> {
    match inputs.get("model")? {
        Some(crate::value::Value::Model(model)) => Ok(model),
        _ => Err(NodeError::Failed {
            node,
            message: "bug: the MODEL port holds no model".into(),
        }),
    }
}
