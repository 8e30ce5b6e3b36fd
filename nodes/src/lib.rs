//! `lct-nodes`: the node library of lct, independent of C and of graphs.
//!
//! Role: the [`Node`] trait (a static [`NodeDescriptor`] plus `execute`), the port and widget
//! schema, the closed set of [`Value`] kinds, colour conversion, and the nodes themselves.
//! A node is close to a plain function: validated [`Params`] and typed [`Inputs`] in, values
//! out, progress and abort through [`ExecContext`]. That keeps every node testable alone.
//!
//! To add a node: write a unit struct with a `static NodeDescriptor`, implement [`Node`] for
//! it, and list it in [`all_nodes`]. The plugin crate exposes it through the C table; hosts see
//! it without any other change.
//!
//! Test nodes: `TestPattern`, `Delay` and `DebugPanic` (model-free frames, a slow step loop, a
//! node that panics) exist only with the `test-nodes` feature, so the shipped plugin's menu
//! does not offer them. Host and plugin tests turn it on.
//!
//! Must not depend on: `lct-plugin`, `lct-host` (nodes know nothing of C or graph evaluation).
//! Uses only the plain-Rust vocabulary of `lct-abi` ([`ParamValue`] and the widget rule check
//! in `lct_abi::widget`, shared with hosts), never its `#[repr(C)]` types. May depend on
//! `lct-model` (the model-backed nodes), `image`, `exr`, `ocio` (colour management), `gif`,
//! `openh264` and `mp4` (video out).

pub mod builtin;
pub mod color;
pub mod model;
pub mod model_values;
mod node;
pub mod output_root;
mod value;

pub use color::{to_u8, ColorConfig, ColorError, ColorSpace};
pub use node::{
    run_node, ConfigList, ExecContext, Inputs, Node, NodeDescriptor, NodeError, ParamValue, Params,
    PortDescriptor, Preview, PreviewSink, WidgetDescriptor, WidgetSpec,
};
pub use value::{Frames, FramesError, Scene, StableHasher, Value, ValueKind};

/// Every node type this library provides, in menu order.
pub fn all_nodes() -> Vec<Box<dyn Node>> {
    vec![
        Box::new(model::LoadModel),
        Box::new(builtin::LoadImage),
        Box::new(builtin::SceneContext),
        Box::new(model::ShotGenerate),
        Box::new(model::ShotExtend),
        Box::new(model::KvCacheNode),
        Box::new(model::EncodeFrames),
        Box::new(model::DecodeFrames),
        Box::new(builtin::ColorConvert),
        Box::new(builtin::SaveFrames),
        Box::new(builtin::SaveVideo),
        #[cfg(feature = "test-nodes")]
        Box::new(builtin::TestPattern),
        #[cfg(feature = "test-nodes")]
        Box::new(builtin::Delay),
        #[cfg(feature = "test-nodes")]
        Box::new(builtin::DebugPanic),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Catches descriptor mistakes (duplicate ids or port names, defaults outside their
    /// range) for every node, including ones added later.
    #[test]
    fn every_descriptor_is_consistent() {
        let mut ids = HashSet::new();
        for node in all_nodes() {
            let d = node.descriptor();
            assert!(ids.insert(d.id), "duplicate node id {}", d.id);
            assert!(
                d.id.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{}",
                d.id
            );
            for ports in [d.inputs, d.outputs] {
                let names: HashSet<_> = ports.iter().map(|p| p.name).collect();
                assert_eq!(names.len(), ports.len(), "{}: duplicate port name", d.id);
            }
            let names: HashSet<_> = d.widgets.iter().map(|w| w.name).collect();
            assert_eq!(
                names.len(),
                d.widgets.len(),
                "{}: duplicate widget name",
                d.id
            );
            // Resolving no parameters checks every default against its own limits.
            Params::resolve(d, []).unwrap_or_else(|e| panic!("{}: bad default: {e}", d.id));
            for widget in d.widgets {
                match widget.spec {
                    WidgetSpec::Int {
                        default, min, max, ..
                    } => {
                        assert!(min <= default && default <= max, "{}.{}", d.id, widget.name)
                    }
                    WidgetSpec::Float {
                        default, min, max, ..
                    } => {
                        assert!(min <= default && default <= max, "{}.{}", d.id, widget.name)
                    }
                    WidgetSpec::Enum { default, choices } => {
                        assert!(choices.contains(&default), "{}.{}", d.id, widget.name)
                    }
                    _ => {}
                }
            }
        }
    }
}
