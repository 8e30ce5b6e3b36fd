//! Loading a plugin: the checks that refuse a broken or mismatched library, the owned copy of
//! its node descriptors, and the thin unsafe layer that calls its table.

use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lct_abi::widget::WidgetRule;
use lct_abi::{
    read_array, read_prefix, LctExecuteOptions, LctFrameBuffer, LctHandle, LctNodeDesc,
    LctNodeFlags, LctParam, LctPluginApi, LctPluginEntryFn, LctPortDesc, LctPortFlags,
    LctPreviewFn, LctSampleFormat, LctStatus, LctValueKind, LctWidgetDesc, LctWidgetFlags,
    SizeError, LCT_ABI_VERSION, LCT_ENTRY_SYMBOL, LCT_OLDEST_ABI_VERSION,
};

use crate::graph::ParamValue;
use crate::value::Value;

/// Why a plugin was refused. Each variant names the library and, for version problems, both
/// versions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot open plugin {path}: {source}")]
    Open {
        path: PathBuf,
        source: libloading::Error,
    },
    #[error("{path} is not an lct plugin: it does not export `{symbol}` ({source})")]
    MissingEntry {
        path: PathBuf,
        symbol: &'static str,
        source: libloading::Error,
    },
    #[error("plugin {path}: `{symbol}` returned no function table")]
    NullTable { path: PathBuf, symbol: &'static str },
    #[error(
        "plugin {path} was built for lct ABI version {plugin_abi}, older than version \
         {oldest_abi}, the oldest this host (ABI version {host_abi}) loads; rebuild the plugin \
         against lct-abi {host_abi}"
    )]
    AbiTooOld {
        path: PathBuf,
        plugin_abi: u32,
        oldest_abi: u32,
        host_abi: u32,
    },
    #[error(
        "plugin {path}: function table is {plugin_size} bytes but ABI version {plugin_abi} needs at \
         least {required_size} (this host: ABI version {host_abi}); the plugin is corrupt or was \
         built from a mismatched lct-abi"
    )]
    TableTooSmall {
        path: PathBuf,
        plugin_size: u32,
        required_size: u32,
        plugin_abi: u32,
        host_abi: u32,
    },
    /// A `struct_size` that is no size at all (larger than any version may be).
    #[error(
        "plugin {path}: function table (ABI version {plugin_abi}): {source}; the plugin is corrupt"
    )]
    BadTableSize {
        path: PathBuf,
        plugin_abi: u32,
        source: SizeError,
    },
    #[error("plugin {path}: function table (ABI version {plugin_abi}) has null entries: {}", functions.join(", "))]
    MissingFunctions {
        path: PathBuf,
        plugin_abi: u32,
        functions: Vec<&'static str>,
    },
    #[error("plugin {path} panicked during initialisation: {message}")]
    InitPanicked { path: PathBuf, message: String },
    #[error("plugin {path} failed to initialise ({status}): {message}")]
    InitFailed {
        path: PathBuf,
        status: LctStatus,
        message: String,
    },
    #[error("plugin {path}: descriptor of node type {index}: {reason}")]
    BadDescriptor {
        path: PathBuf,
        index: u32,
        reason: String,
    },
}

/// A failed call into the plugin: its status and its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct PluginError {
    pub status: LctStatus,
    pub message: String,
}

/// An input or output port of a node type.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub kind: LctValueKind,
    /// UPPERCASE kind name as the plugin spells it.
    pub kind_name: String,
    pub optional: bool,
    pub tooltip: String,
}

/// Limits of a widget.
#[derive(Clone, Debug, PartialEq)]
pub enum WidgetLimits {
    Int {
        min: i64,
        max: i64,
        step: i64,
    },
    Float {
        min: f64,
        max: f64,
        step: f64,
    },
    Bool,
    /// Any text; `suggestions` are names a UI may offer (an OCIO config's colour spaces,
    /// displays or views), not a limit.
    Text {
        multiline: bool,
        suggestions: Vec<String>,
    },
    Choices(Vec<String>),
}

impl WidgetLimits {
    /// The rule lct-abi checks a value against: the one the plugin applies too.
    pub fn rule(&self) -> WidgetRule<'_, String> {
        match *self {
            Self::Int { min, max, .. } => WidgetRule::Int { min, max },
            Self::Float { min, max, .. } => WidgetRule::Float { min, max },
            Self::Bool => WidgetRule::Bool,
            Self::Text { .. } => WidgetRule::Text,
            Self::Choices(ref choices) => WidgetRule::Choices(choices),
        }
    }
}

/// A parameter of a node type.
#[derive(Clone, Debug, PartialEq)]
pub struct Widget {
    pub name: String,
    pub kind: LctValueKind,
    pub tooltip: String,
    pub default: ParamValue,
    pub limits: WidgetLimits,
}

/// An owned copy of a plugin's node descriptor.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeType {
    /// Position in the plugin's table; what `node_execute` takes.
    pub index: u32,
    pub id: String,
    pub version: u32,
    pub display_name: String,
    pub category: String,
    pub description: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub widgets: Vec<Widget>,
    pub is_output: bool,
    pub not_idempotent: bool,
}

impl NodeType {
    pub fn input(&self, name: &str) -> Option<(usize, &Port)> {
        self.inputs.iter().enumerate().find(|(_, p)| p.name == name)
    }
    pub fn output(&self, name: &str) -> Option<(usize, &Port)> {
        self.outputs
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
    }
    pub fn widget(&self, name: &str) -> Option<&Widget> {
        self.widgets.iter().find(|w| w.name == name)
    }
}

/// A loaded plugin. Cheap to clone and shareable between threads. The library is never
/// unloaded: descriptors and live values point into it.
#[derive(Clone)]
pub struct Plugin(pub(crate) Arc<PluginInner>);

pub(crate) struct PluginInner {
    path: PathBuf,
    /// The plugin's table as far as it reaches: functions past its `struct_size` are `None`.
    api: LctPluginApi,
    abi_version: u32,
    name: String,
    version: String,
    nodes: Vec<NodeType>,
}

impl PluginInner {
    pub(crate) fn api_ref(&self) -> &LctPluginApi {
        &self.api
    }
}

// SAFETY: the table is an immutable copy of function pointers and pointers to static strings;
// the ABI requires every table function to be thread-safe.
unsafe impl Send for PluginInner {}
unsafe impl Sync for PluginInner {}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plugin({} {} at {})",
            self.0.name,
            self.0.version,
            self.0.path.display()
        )
    }
}

/// Calls a required (ABI version 1) table function; presence was checked at load, so the
/// `expect` cannot fire. Appended functions go through [`Plugin::function`] instead.
macro_rules! call {
    ($api:expr, $function:ident($($arg:expr),* $(,)?)) => {
        ($api.$function.expect(concat!("checked at load: ", stringify!($function))))($($arg),*)
    };
}
pub(crate) use call;

/// # Safety
/// `ptr` must be null or a NUL-terminated string that lives as long as the library.
unsafe fn text(ptr: *const c_char, what: &str) -> Result<String, String> {
    if ptr.is_null() {
        return Err(format!("{what} is null"));
    }
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map(str::to_owned)
        .map_err(|e| format!("{what} is not UTF-8: {e}"))
}

/// # Safety
/// `ptr` must be null or valid for `len` reads.
unsafe fn items<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], String> {
    match (ptr.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(format!("{what} is null but its count is {len}")),
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(ptr, len) }),
    }
}

unsafe fn port(raw: &LctPortDesc, what: &str) -> Result<Port, String> {
    let name = unsafe { text(raw.name, &format!("{what} name")) }?;
    Ok(Port {
        kind: raw.kind,
        kind_name: unsafe { text(raw.kind_name, &format!("{what} `{name}` kind name")) }?,
        optional: raw.flags.contains(LctPortFlags::OPTIONAL),
        tooltip: unsafe { text(raw.tooltip, &format!("{what} `{name}` tooltip")) }?,
        name,
    })
}

unsafe fn widget(raw: &LctWidgetDesc) -> Result<Widget, String> {
    let name = unsafe { text(raw.name, "widget name") }?;
    let what = format!("widget `{name}`");
    let text_default = || unsafe { text(raw.text_default, &format!("{what} default")) };
    let (default, limits) = match raw.kind {
        LctValueKind::INT => (
            ParamValue::Int(raw.int_default),
            WidgetLimits::Int {
                min: raw.int_min,
                max: raw.int_max,
                step: raw.int_step,
            },
        ),
        LctValueKind::FLOAT => (
            ParamValue::Float(raw.float_default),
            WidgetLimits::Float {
                min: raw.float_min,
                max: raw.float_max,
                step: raw.float_step,
            },
        ),
        LctValueKind::BOOL => (ParamValue::Bool(raw.int_default != 0), WidgetLimits::Bool),
        LctValueKind::STRING => {
            let suggestions = if raw.flags.contains(LctWidgetFlags::SUGGESTIONS) {
                unsafe {
                    items(
                        raw.choices,
                        raw.choice_count,
                        &format!("{what} suggestions"),
                    )
                }?
                .iter()
                .map(|&c| unsafe { text(c, &format!("{what} suggestion")) })
                .collect::<Result<Vec<_>, _>>()?
            } else {
                Vec::new()
            };
            (
                ParamValue::Text(text_default()?),
                WidgetLimits::Text {
                    multiline: raw.flags.contains(LctWidgetFlags::MULTILINE),
                    suggestions,
                },
            )
        }
        LctValueKind::ENUM => {
            let choices =
                unsafe { items(raw.choices, raw.choice_count, &format!("{what} choices")) }?
                    .iter()
                    .map(|&c| unsafe { text(c, &format!("{what} choice")) })
                    .collect::<Result<Vec<_>, _>>()?;
            (
                ParamValue::Text(text_default()?),
                WidgetLimits::Choices(choices),
            )
        }
        other => {
            return Err(format!(
                "{what} has kind {other}, which is not a widget kind"
            ))
        }
    };
    Ok(Widget {
        kind: raw.kind,
        tooltip: unsafe { text(raw.tooltip, &format!("{what} tooltip")) }?,
        default,
        limits,
        name,
    })
}

/// Reads the descriptor at `raw` by the sizes a plugin of ABI version `plugin_abi` declares.
///
/// # Safety
/// `raw` must be a descriptor returned by `node_describe` of such a plugin.
unsafe fn node_type(
    index: u32,
    raw: *const LctNodeDesc,
    plugin_abi: u32,
) -> Result<NodeType, String> {
    let desc = unsafe { LctNodeDesc::read(raw, plugin_abi) }.map_err(|e| e.to_string())?;
    let ports = |ptr, len, what: &str| -> Result<Vec<Port>, String> {
        unsafe { read_array(ptr, len, desc.port_stride()) }
            .map_err(|e| format!("{what}s: {e}"))?
            .iter()
            .map(|p| unsafe { port(p, what) })
            .collect()
    };
    Ok(NodeType {
        index,
        id: unsafe { text(desc.id, "id") }?,
        version: desc.version,
        display_name: unsafe { text(desc.display_name, "display name") }?,
        category: unsafe { text(desc.category, "category") }?,
        description: unsafe { text(desc.description, "description") }?,
        inputs: ports(desc.inputs, desc.input_count, "input")?,
        outputs: ports(desc.outputs, desc.output_count, "output")?,
        widgets: unsafe { read_array(desc.widgets, desc.widget_count, desc.widget_stride()) }
            .map_err(|e| format!("widgets: {e}"))?
            .iter()
            .map(|w| unsafe { widget(w) })
            .collect::<Result<_, _>>()?,
        is_output: desc.flags.contains(LctNodeFlags::OUTPUT),
        not_idempotent: desc.flags.contains(LctNodeFlags::NOT_IDEMPOTENT),
    })
}

/// A look at a running node's result, as the plugin handed it over (copied): 8-bit RGB for
/// the sRGB display, one frame per shot being generated, frame-major, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub width: u32,
    pub height: u32,
    pub frame_count: u32,
    pub rgb: Vec<u8>,
}

/// Where a node's previews go: `(step, total, preview)`, returning `false` to abort.
pub type PreviewFn<'a> = &'a mut dyn FnMut(u32, u32, &Preview) -> bool;

/// Callback state handed to the plugin as `user_data`.
struct CallbackState<'a> {
    progress: &'a mut dyn FnMut(u32, u32) -> bool,
    preview: Option<PreviewFn<'a>>,
}

/// 0 when `callback` ran and returned `true`. A panicking host callback must not unwind into
/// the plugin: it counts as "abort".
fn continue_status(callback: impl FnOnce() -> bool) -> i32 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
        Ok(true) => 0,
        _ => 1,
    }
}

unsafe extern "C" fn progress_trampoline(
    user_data: *mut c_void,
    _node_index: u32,
    step: u32,
    total: u32,
) -> i32 {
    // SAFETY: `user_data` is the `CallbackState` that `execute` keeps alive for the call.
    let state = unsafe { &mut *user_data.cast::<CallbackState>() };
    continue_status(|| (state.progress)(step, total))
}

unsafe extern "C" fn preview_trampoline(
    user_data: *mut c_void,
    _node_index: u32,
    step: u32,
    total: u32,
    buffer: *const LctFrameBuffer,
) -> i32 {
    // SAFETY: as in `progress_trampoline`; the plugin passes a buffer valid for this call.
    let state = unsafe { &mut *user_data.cast::<CallbackState>() };
    let Some(preview) = (unsafe { copy_preview(buffer) }) else {
        return 1;
    };
    match state.preview.as_mut() {
        Some(sink) => continue_status(|| sink(step, total, &preview)),
        None => 0,
    }
}

/// The preview in `buffer`, or `None` when it is not the documented 8-bit RGB layout.
///
/// # Safety
/// `buffer` null or valid, its `data` valid for `capacity_bytes`.
unsafe fn copy_preview(buffer: *const LctFrameBuffer) -> Option<Preview> {
    let buffer = unsafe { buffer.as_ref() }?;
    let size = [buffer.frame_count, buffer.width, buffer.height, 3]
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d as usize))?;
    let documented = buffer.channels == 3
        && buffer.sample_format == LctSampleFormat::U8
        && buffer.capacity_bytes == size
        && !buffer.data.is_null();
    if !documented {
        return None;
    }
    // SAFETY: checked non-null; the plugin guarantees `capacity_bytes` readable bytes.
    let rgb = unsafe { std::slice::from_raw_parts(buffer.data.cast::<u8>(), size) }.to_vec();
    Some(Preview {
        width: buffer.width,
        height: buffer.height,
        frame_count: buffer.frame_count,
        rgb,
    })
}

/// Parameters converted for a C call; owns the strings the `LctParam`s point to.
pub(crate) struct RawParams {
    params: Vec<LctParam>,
    _strings: Vec<CString>,
}

impl RawParams {
    pub(crate) fn new(
        node: &NodeType,
        values: &[(String, ParamValue)],
    ) -> Result<Self, PluginError> {
        let invalid = |message: String| PluginError {
            status: LctStatus::INVALID_ARGUMENT,
            message,
        };
        let mut strings = Vec::new();
        let mut params = Vec::new();
        for (name, value) in values {
            let c_name = CString::new(name.as_str())
                .map_err(|_| invalid(format!("parameter name {name:?} contains NUL")))?;
            let mut param = LctParam {
                name: c_name.as_ptr(),
                kind: LctValueKind::NONE,
                int_value: 0,
                float_value: 0.0,
                text_value: std::ptr::null(),
            };
            strings.push(c_name);
            match value {
                ParamValue::Int(v) => (param.kind, param.int_value) = (LctValueKind::INT, *v),
                ParamValue::Bool(v) => {
                    (param.kind, param.int_value) = (LctValueKind::BOOL, *v as i64)
                }
                ParamValue::Float(v) => (param.kind, param.float_value) = (LctValueKind::FLOAT, *v),
                ParamValue::Text(v) => {
                    let c_text = CString::new(v.as_str())
                        .map_err(|_| invalid(format!("parameter `{name}` contains NUL")))?;
                    param.kind = match node.widget(name) {
                        Some(w) if w.kind == LctValueKind::ENUM => LctValueKind::ENUM,
                        _ => LctValueKind::STRING,
                    };
                    param.text_value = c_text.as_ptr();
                    strings.push(c_text);
                }
            }
            params.push(param);
        }
        Ok(Self {
            params,
            _strings: strings,
        })
    }
}

impl Plugin {
    /// Loads the plugin at `path`, checks its table and reads its node descriptors.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        let path = path.as_ref().to_path_buf();
        // SAFETY: loading runs the library's initialisers; that is the point of a plugin.
        let library =
            unsafe { libloading::Library::new(&path) }.map_err(|source| LoadError::Open {
                path: path.clone(),
                source,
            })?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: LctPluginEntryFn =
            *unsafe { library.get::<LctPluginEntryFn>(LCT_ENTRY_SYMBOL.as_bytes()) }.map_err(
                |source| LoadError::MissingEntry {
                    path: path.clone(),
                    symbol: LCT_ENTRY_SYMBOL,
                    source,
                },
            )?;
        // Never unloaded: descriptors, values and the table point into the library.
        std::mem::forget(library);
        let table = unsafe { entry() };
        if table.is_null() {
            return Err(LoadError::NullTable {
                path,
                symbol: LCT_ENTRY_SYMBOL,
            });
        }
        // Only the first two fields are guaranteed to exist: read them alone first.
        let (struct_size, plugin_abi) = unsafe {
            let header = table.cast::<u32>();
            (header.read_unaligned(), header.add(1).read_unaligned())
        };
        if plugin_abi < LCT_OLDEST_ABI_VERSION {
            return Err(LoadError::AbiTooOld {
                path,
                plugin_abi,
                oldest_abi: LCT_OLDEST_ABI_VERSION,
                host_abi: LCT_ABI_VERSION,
            });
        }
        // Every function of the plugin's version (as far as this host knows them) must fit; an
        // older plugin's smaller table is fine, its newer functions are absent.
        let required_size = LctPluginApi::size_for_version(plugin_abi.min(LCT_ABI_VERSION));
        if (struct_size as usize) < required_size {
            return Err(LoadError::TableTooSmall {
                path,
                plugin_size: struct_size,
                required_size: required_size as u32,
                plugin_abi,
                host_abi: LCT_ABI_VERSION,
            });
        }
        // SAFETY: the plugin says its table is `struct_size` bytes. Reads the prefix both sides
        // know; functions past it stay `None`.
        let api = match unsafe { read_prefix(table, struct_size as usize) } {
            Ok(api) => api,
            Err(source) => {
                return Err(LoadError::BadTableSize {
                    path,
                    plugin_abi,
                    source,
                })
            }
        };
        let missing = api.missing_functions();
        if !missing.is_empty() {
            return Err(LoadError::MissingFunctions {
                path,
                plugin_abi,
                functions: missing,
            });
        }
        let status = unsafe { call!(api, initialize()) };
        if status != LctStatus::OK {
            let message = last_error(&api);
            return Err(if status == LctStatus::PANICKED {
                LoadError::InitPanicked { path, message }
            } else {
                LoadError::InitFailed {
                    path,
                    status,
                    message,
                }
            });
        }
        let bad = |index: u32, reason: String| LoadError::BadDescriptor {
            path: path.clone(),
            index,
            reason,
        };
        let name = unsafe { text(api.plugin_name, "plugin_name") }.map_err(|r| bad(0, r))?;
        let version =
            unsafe { text(api.plugin_version, "plugin_version") }.map_err(|r| bad(0, r))?;
        let count = unsafe { call!(api, node_count()) };
        let mut nodes = Vec::with_capacity(count as usize);
        for index in 0..count {
            let mut raw: *const LctNodeDesc = std::ptr::null();
            let status = unsafe { call!(api, node_describe(index, &mut raw)) };
            if status != LctStatus::OK || raw.is_null() {
                return Err(bad(
                    index,
                    format!("node_describe returned {status}: {}", last_error(&api)),
                ));
            }
            nodes.push(unsafe { node_type(index, raw, plugin_abi) }.map_err(|r| bad(index, r))?);
        }
        Ok(Plugin(Arc::new(PluginInner {
            path,
            api,
            abi_version: plugin_abi,
            name,
            version,
            nodes,
        })))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }
    pub fn name(&self) -> &str {
        &self.0.name
    }
    pub fn version(&self) -> &str {
        &self.0.version
    }

    /// The ABI version the plugin was built with; may be older or newer than this host's.
    pub fn abi_version(&self) -> u32 {
        self.0.abi_version
    }

    /// Whether the plugin's table has `function` (a name from
    /// [`LctPluginApi::FUNCTION_NAMES`]). Every ABI 1 function is always there; one appended
    /// later is missing from an older plugin.
    pub fn provides(&self, function: &str) -> bool {
        self.0.api.has_function(function) == Some(true)
    }

    /// An appended table function, or an `UNSUPPORTED` error naming it and both versions when
    /// the plugin's table predates it (the host calls nothing then).
    pub(crate) fn function<F>(
        &self,
        function: Option<F>,
        name: &'static str,
    ) -> Result<F, PluginError> {
        function.ok_or_else(|| {
            let since = LctPluginApi::FUNCTION_VERSIONS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or(0, |(_, since, _)| *since);
            PluginError {
                status: LctStatus::UNSUPPORTED,
                message: format!(
                    "plugin {} {} (ABI version {}) does not provide `{name}`, added in ABI \
                     version {since}",
                    self.0.name, self.0.version, self.0.abi_version
                ),
            }
        })
    }

    pub fn nodes(&self) -> &[NodeType] {
        &self.0.nodes
    }
    pub fn node(&self, id: &str) -> Option<&NodeType> {
        self.0.nodes.iter().find(|n| n.id == id)
    }

    /// The raw C table, for hosts that need a call the safe API does not wrap (and for tests
    /// that feed it garbage). Calling it is `unsafe`. A copy of the plugin's table as far as its
    /// `struct_size` reaches: functions it does not have are `None`.
    pub fn raw_api(&self) -> &LctPluginApi {
        &self.0.api
    }

    /// Number of live handles in the plugin (all hosts in this process together).
    pub fn live_handles(&self) -> u64 {
        unsafe { call!(self.0.api, live_handle_count()) }
    }

    pub(crate) fn same_as(&self, other: &Plugin) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn check(&self, status: LctStatus) -> Result<(), PluginError> {
        if status == LctStatus::OK {
            Ok(())
        } else {
            Err(PluginError {
                status,
                message: last_error(&self.0.api),
            })
        }
    }

    /// Runs one node. `inputs` holds one entry per input port; `progress(step, total)` returns
    /// `false` to abort (the call then fails with `CANCELLED`).
    pub fn execute(
        &self,
        node: &NodeType,
        params: &[(String, ParamValue)],
        inputs: &[Option<&Value>],
        output_directory: Option<&Path>,
        progress: &mut dyn FnMut(u32, u32) -> bool,
    ) -> Result<Vec<Value>, PluginError> {
        self.execute_with_preview(node, params, inputs, output_directory, progress, None)
    }

    /// [`Self::execute`], also taking the node's previews when `preview` is given (sampling
    /// nodes make one every `preview_every` steps); it returns `false` to abort.
    pub fn execute_with_preview<'a>(
        &self,
        node: &NodeType,
        params: &[(String, ParamValue)],
        inputs: &[Option<&Value>],
        output_directory: Option<&Path>,
        progress: &'a mut dyn FnMut(u32, u32) -> bool,
        preview: Option<PreviewFn<'a>>,
    ) -> Result<Vec<Value>, PluginError> {
        let raw = RawParams::new(node, params)?;
        let handles: Vec<LctHandle> = inputs
            .iter()
            .map(|v| v.map_or(LctHandle::NULL, |v| v.handle()))
            .collect();
        let directory = output_directory
            .map(|d| CString::new(d.to_string_lossy().as_bytes()))
            .transpose()
            .map_err(|_| PluginError {
                status: LctStatus::INVALID_ARGUMENT,
                message: "output directory contains NUL".into(),
            })?;
        let wants_preview = preview.is_some();
        let mut state = CallbackState { progress, preview };
        let options = LctExecuteOptions {
            struct_size: std::mem::size_of::<LctExecuteOptions>() as u32,
            node_index: node.index,
            progress: Some(progress_trampoline),
            user_data: (&mut state as *mut CallbackState).cast(),
            output_directory: directory.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
            param_size: std::mem::size_of::<LctParam>() as u32,
            reserved: 0,
            preview: wants_preview.then_some(preview_trampoline as LctPreviewFn),
        };
        let mut outputs = vec![LctHandle::NULL; node.outputs.len()];
        let status = unsafe {
            call!(
                self.0.api,
                node_execute(
                    node.index,
                    raw.params.as_ptr(),
                    raw.params.len(),
                    handles.as_ptr(),
                    handles.len(),
                    &options,
                    outputs.as_mut_ptr(),
                    outputs.len(),
                )
            )
        };
        self.check(status)?;
        outputs.into_iter().map(|h| Value::adopt(self, h)).collect()
    }

    /// A new FRAMES value from the host's pixels (a plate, a reference image); the plugin
    /// checks that `frames.pixels` holds exactly the frames the dimensions say.
    pub fn import_frames(&self, frames: &crate::FloatFrames) -> Result<Value, PluginError> {
        let buffer = lct_abi::LctFrameBuffer {
            data: frames.pixels.as_ptr() as *mut std::ffi::c_void,
            capacity_bytes: std::mem::size_of_val(frames.pixels.as_slice()),
            first_frame: 0,
            frame_count: frames.frame_count,
            width: frames.width,
            height: frames.height,
            channels: frames.channels,
            sample_format: lct_abi::LctSampleFormat::F32,
            color_space: frames.color_space,
        };
        let mut handle = LctHandle::NULL;
        // SAFETY: the buffer describes `frames.pixels`, which outlives the call; the plugin
        // only reads it.
        let status = unsafe { call!(self.0.api, frames_import(&buffer, &mut handle)) };
        self.check(status)?;
        Value::adopt(self, handle)
    }

    /// What `node` with `params` depends on in `value` on input `port` (see the ABI's
    /// `node_input_signature`).
    pub fn input_signature(
        &self,
        node: &NodeType,
        params: &[(String, ParamValue)],
        port: usize,
        value: &Value,
    ) -> Result<u64, PluginError> {
        let raw = RawParams::new(node, params)?;
        let mut signature = 0;
        let status = unsafe {
            call!(
                self.0.api,
                node_input_signature(
                    node.index,
                    raw.params.as_ptr(),
                    raw.params.len(),
                    port as u32,
                    value.handle(),
                    &mut signature,
                )
            )
        };
        self.check(status)?;
        Ok(signature)
    }
}

/// The calling thread's last error message from the plugin.
fn last_error(api: &LctPluginApi) -> String {
    let len = unsafe { call!(api, last_error(std::ptr::null_mut(), 0)) };
    if len == 0 {
        return "(the plugin gave no message)".to_owned();
    }
    let mut buffer = vec![0u8; len + 1];
    unsafe { call!(api, last_error(buffer.as_mut_ptr().cast(), buffer.len())) };
    buffer.truncate(len);
    String::from_utf8_lossy(&buffer).into_owned()
}
