//! `lct-host`: everything a Rust host needs to use an lct plugin, and the `lct` command line.
//!
//! Role, in layers (as wgpu does it): `lct-abi` holds the shared `#[repr(C)]` types and widget
//! rules; [`plugin`] is the thin unsafe layer that loads a library, checks its table
//! (`abi_version` not older than `LCT_OLDEST_ABI_VERSION`, a `struct_size` that holds that
//! version's functions, every ABI 1 function present, then `initialize`), reads descriptors by
//! the sizes the plugin declares, and calls it. An older plugin loads: functions appended after
//! its version are absent ([`Plugin::provides`], `UNSUPPORTED` when used). The safe API on
//! top is [`Plugin`] (descriptors, single-node execution), [`Graph`] (a builder and a JSON
//! format), [`Plugin::validate`] (all graph errors, before anything runs) and [`Evaluator`]
//! (pruned topological evaluation, an output cache keyed by content signatures, progress events
//! and cancellation on crossbeam channels, safe to share between threads).
//!
//! Invariants: a loaded library is never unloaded (descriptors and values point into it);
//! every plugin handle this crate receives is owned by exactly one [`Value`] allocation and
//! released when its last clone drops (a handle from [`Value::retain_handle`] is the caller's).
//!
//! Must not depend on: `lct-plugin`, `lct-nodes`, `lct-model`. A host knows only the ABI, so it
//! can load any plugin that implements it.

pub mod eval;
pub mod graph;
pub mod plugin;
pub mod scene;
pub mod validate;
pub mod value;

pub use eval::{EvalError, EvalOptions, Evaluation, Evaluator, Event};
pub use graph::{Connection, Graph, GraphFileError, NodeSpec, ParamValue};
pub use lct_abi::{LctColorSpace as ColorSpace, LctStatus as Status, LctValueKind as ValueKind};
pub use plugin::{
    LoadError, NodeType, Plugin, PluginError, Port, Preview, PreviewFn, Widget, WidgetLimits,
};
pub use validate::{GraphError, GraphErrorKind, ValidatedGraph};
pub use value::{FloatFrames, Frames, FramesData, Value};

use std::path::PathBuf;

/// File name of the lct plugin on this platform (`liblct_plugin.so`, `lct_plugin.dll`...).
pub fn plugin_file_name() -> String {
    format!(
        "{}lct_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Where to find the plugin when none is named: `$LCT_PLUGIN`, else next to the running
/// executable (where cargo puts both), else its parent directory (test binaries live in
/// `target/<profile>/deps`).
pub fn default_plugin_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LCT_PLUGIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(plugin_file_name()))
        .find(|candidate| candidate.is_file())
}
