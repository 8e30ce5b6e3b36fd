//! `lct-plugin`: the dynamic library hosts load.
//!
//! Role: the only crate that knows both sides. It exports one C symbol, `lct_plugin_entry`,
//! returning the static [`LctPluginApi`] table from `lct-abi`, and implements that table on top
//! of `lct-nodes`: static node descriptors, node execution, values as handles.
//!
//! Invariants:
//! - Every exported function runs inside the panic firewall ([`firewall::guard`]): no panic or
//!   error crosses the boundary as anything but a status and a per-thread message.
//! - Every pointer argument is checked for null and alignment and every count for size before
//!   use; handles are generation-checked. A host can only crash us by passing pointers that are
//!   non-null but invalid, which no boundary can detect.
//! - A failed `node_execute` creates no handle; values only become handles on success.
//! - Growth both ways: `options` is read by its `struct_size` and `params` by
//!   `options.param_size` through `lct_abi::read_prefix`, so an older host's smaller structs
//!   work with defaults; descriptors declare their own and their elements' sizes.
//!
//! Feature `test-nodes` (off in shipped builds; the integration tests turn it on): adds the test
//! nodes of `lct-nodes` and a hook: when the environment variable
//! `LCT_PLUGIN_TEST_PANIC_IN_INIT` is set, `initialize` panics (caught by the firewall), so
//! hosts can test their handling of a plugin that fails to initialise. Without the feature
//! nothing reads the environment.
//!
//! Must not depend on: `lct-host` (hosts and plugins only share `lct-abi`).

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use lct_abi::{
    read_array, read_prefix, LctColorSpace, LctExecuteOptions, LctFrameBuffer, LctFramesInfo,
    LctHandle, LctNodeDesc, LctParam, LctPluginApi, LctSampleFormat, LctStatus, LctValueKind,
    LCT_ABI_VERSION,
};
use lct_nodes::{
    ColorConfig, ColorSpace, ExecContext, Frames, Inputs, Node, ParamValue, Params, Preview, Value,
};

pub mod firewall;
mod handles;
mod registry;

use firewall::{guard, guard_value, Failure, Result};
use handles::handles;
use registry::{abi_kind, registry};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Environment variable that makes `initialize` panic; for host tests only.
#[cfg(feature = "test-nodes")]
pub const TEST_PANIC_IN_INIT_VAR: &str = "LCT_PLUGIN_TEST_PANIC_IN_INIT";

struct StaticApi(LctPluginApi);
// SAFETY: the table holds function pointers and pointers to static strings only.
unsafe impl Sync for StaticApi {}

static API: StaticApi = StaticApi(LctPluginApi {
    struct_size: std::mem::size_of::<LctPluginApi>() as u32,
    abi_version: LCT_ABI_VERSION,
    plugin_name: c"lct".as_ptr(),
    plugin_version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast(),
    initialize: Some(initialize),
    last_error: Some(last_error),
    node_count: Some(node_count),
    node_describe: Some(node_describe),
    node_find: Some(node_find),
    node_execute: Some(node_execute),
    node_input_signature: Some(node_input_signature),
    value_kind: Some(value_kind),
    value_shape: Some(value_shape),
    value_hash: Some(value_hash),
    value_read_int: Some(value_read_int),
    value_read_float: Some(value_read_float),
    value_read_string: Some(value_read_string),
    value_release: Some(value_release),
    frames_info: Some(frames_info),
    frames_copy: Some(frames_copy),
    frames_import: Some(frames_import),
    live_handle_count: Some(live_handle_count),
    value_retain: Some(value_retain),
});

/// The table, for Rust callers that link this crate (its own tests).
pub fn api() -> &'static LctPluginApi {
    &API.0
}

/// The one exported entry point. Does no work, so it cannot fail.
#[no_mangle]
pub extern "C" fn lct_plugin_entry() -> *const LctPluginApi {
    &API.0
}

// ---------------------------------------------------------------------------------------------
// Pointer checks: everything C hands us goes through these.

/// # Safety
/// `ptr` must be null or valid for writes of a `T`.
unsafe fn out_ref<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(Failure::invalid(format!("`{name}` is null or misaligned")));
    }
    // SAFETY: non-null and aligned, valid per the caller's contract.
    Ok(unsafe { &mut *ptr })
}

/// # Safety
/// `ptr` must be null or valid for reads of `len` `T`s.
unsafe fn in_slice<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "`{name}` is null or misaligned but its count is {len}"
        )));
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Failure::invalid(format!(
            "count {len} of `{name}` is impossibly large"
        )));
    }
    // SAFETY: non-null, aligned, size checked; valid per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// `ptr` must be null or point to a NUL-terminated string.
unsafe fn in_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("`{name}` is null")));
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|e| Failure::invalid(format!("`{name}` is not UTF-8: {e}")))
}

/// The options of a `node_execute` call: the fields inside the host's `struct_size`, zero
/// (the defaults) for the rest; all defaults when `options` is null.
///
/// # Safety
/// `options` must be null or valid for reads of the size it declares.
unsafe fn read_options(options: *const LctExecuteOptions) -> Result<LctExecuteOptions> {
    if options.is_null() {
        return Ok(lct_abi::zeroed());
    }
    // Only the size field is sure to exist: read it alone first.
    let declared = unsafe { options.cast::<u32>().read_unaligned() } as usize;
    unsafe { read_prefix(options, declared) }
        .map_err(|e| Failure::invalid(format!("options.struct_size: {e}")))
}

/// # Safety
/// `params` must be null or valid for `count` elements `stride` bytes apart, and every
/// `name` / `text_value` as [`in_str`].
unsafe fn read_params(
    node: &'static lct_nodes::NodeDescriptor,
    params: *const LctParam,
    count: usize,
    stride: usize,
) -> Result<Params> {
    let raw = unsafe { read_array(params, count, stride) }
        .map_err(|e| Failure::invalid(format!("params (param_size {stride}): {e}")))?;
    let mut given = Vec::with_capacity(raw.len());
    for (i, param) in raw.iter().enumerate() {
        let name = unsafe { in_str(param.name, &format!("params[{i}].name")) }?;
        // STRING and ENUM are one Rust type: hold the kind given to the widget's exactly.
        if let Some(widget) = node.widgets.iter().find(|w| w.name == name) {
            let declared = abi_kind(widget.spec.kind());
            let text_kinds = [LctValueKind::STRING, LctValueKind::ENUM];
            if text_kinds.contains(&param.kind)
                && text_kinds.contains(&declared)
                && param.kind != declared
            {
                return Err(Failure::new(
                    LctStatus::WRONG_KIND,
                    format!(
                        "{}: widget `{name}` is {declared}, got a {} value",
                        node.id, param.kind
                    ),
                ));
            }
        }
        let value = match param.kind {
            LctValueKind::INT => ParamValue::Int(param.int_value),
            LctValueKind::FLOAT => ParamValue::Float(param.float_value),
            LctValueKind::BOOL => match param.int_value {
                0 => ParamValue::Bool(false),
                1 => ParamValue::Bool(true),
                other => {
                    return Err(Failure::new(
                        LctStatus::OUT_OF_RANGE,
                        format!(
                        "{}: parameter `{name}` is BOOL with int_value {other}; a BOOL is 0 or 1",
                        node.id
                    ),
                    ))
                }
            },
            LctValueKind::STRING | LctValueKind::ENUM => ParamValue::Text(
                unsafe {
                    in_str(
                        param.text_value,
                        &format!("params[{i}].text_value ({name})"),
                    )
                }?
                .to_owned(),
            ),
            other => {
                return Err(Failure::new(
                    LctStatus::WRONG_KIND,
                    format!(
                        "{}: parameter `{name}` has kind {other}, which no widget takes",
                        node.id
                    ),
                ))
            }
        };
        given.push((name, value));
    }
    Ok(Params::resolve(node, given)?)
}

fn lookup(handle: LctHandle) -> Result<Value> {
    handles().get(handle)
}

fn frames_of(handle: LctHandle) -> Result<std::sync::Arc<Frames>> {
    match lookup(handle)? {
        Value::Frames(frames) => Ok(frames),
        other => Err(Failure::new(
            LctStatus::WRONG_KIND,
            format!("handle {:#x} is {}, not FRAMES", handle.0, other.kind()),
        )),
    }
}

fn color_space_to_abi(space: &ColorSpace) -> LctColorSpace {
    if *space == ColorSpace::srgb() {
        LctColorSpace::SRGB
    } else if *space == ColorSpace::linear() {
        LctColorSpace::LINEAR
    } else if *space == ColorSpace::acescg() {
        LctColorSpace::ACESCG
    } else {
        LctColorSpace::OTHER
    }
}

fn color_space_from_abi(space: LctColorSpace, field: &str) -> Result<ColorSpace> {
    match space {
        LctColorSpace::SRGB => Ok(ColorSpace::srgb()),
        LctColorSpace::LINEAR => Ok(ColorSpace::linear()),
        LctColorSpace::ACESCG => Ok(ColorSpace::acescg()),
        other => Err(Failure::invalid(format!(
            "`{field}` is {other}, expected SRGB, LINEAR or ACESCG"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// The table's functions, in table order.

unsafe extern "C" fn initialize() -> LctStatus {
    guard("initialize", || {
        #[cfg(feature = "test-nodes")]
        if std::env::var_os(TEST_PANIC_IN_INIT_VAR).is_some() {
            panic!(
                "{TEST_PANIC_IN_INIT_VAR} is set: failing initialisation on purpose (test hook)"
            );
        }
        registry();
        Ok(())
    })
}

unsafe extern "C" fn last_error(buffer: *mut c_char, capacity: usize) -> usize {
    // Not through `guard`: that would clear the message we are asked for.
    std::panic::catch_unwind(|| {
        let message = firewall::last_error();
        // SAFETY: `buffer` is null or valid for `capacity` bytes per the table's contract.
        unsafe { firewall::copy_c_string(&message, buffer, capacity) };
        message.len()
    })
    .unwrap_or(0)
}

unsafe extern "C" fn node_count() -> u32 {
    guard_value("node_count", 0, || registry().len() as u32)
}

unsafe extern "C" fn node_describe(index: u32, out_desc: *mut *const LctNodeDesc) -> LctStatus {
    guard("node_describe", || {
        let out = unsafe { out_ref(out_desc, "out_desc") }?;
        *out = registry().descriptor(index)?;
        Ok(())
    })
}

unsafe extern "C" fn node_find(id: *const c_char, out_index: *mut u32) -> LctStatus {
    guard("node_find", || {
        let id = unsafe { in_str(id, "id") }?;
        let out = unsafe { out_ref(out_index, "out_index") }?;
        *out = registry().find(id).ok_or_else(|| {
            Failure::new(LctStatus::NOT_FOUND, format!("no node type with id {id:?}"))
        })?;
        Ok(())
    })
}

/// Looks up the input handles of `node`, in port order. Trailing optional ports may be left
/// out: a host written when a node had fewer inputs passes fewer (SceneContext gained `model`).
fn input_values(node: &dyn Node, handles_in: &[LctHandle]) -> Result<Vec<Option<Value>>> {
    let d = node.descriptor();
    let omitted_are_optional = d
        .inputs
        .get(handles_in.len()..)
        .is_some_and(|rest| rest.iter().all(|port| port.optional));
    if !omitted_are_optional {
        let ports: Vec<_> = d.inputs.iter().map(|p| p.name).collect();
        return Err(Failure::invalid(format!(
            "{} takes {} input handles ({}; trailing optional ones may be left out), got {}",
            d.id,
            d.inputs.len(),
            ports.join(", "),
            handles_in.len()
        )));
    }
    let table = handles();
    let padded = handles_in
        .iter()
        .copied()
        .chain(std::iter::repeat(LctHandle::NULL));
    d.inputs
        .iter()
        .zip(padded)
        .map(|(port, handle)| {
            if handle == LctHandle::NULL {
                return Ok(None);
            }
            table.get(handle).map(Some).map_err(|f| {
                Failure::new(
                    f.status,
                    format!("{} input `{}`: {}", d.id, port.name, f.message),
                )
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // the C signature
unsafe extern "C" fn node_execute(
    index: u32,
    params: *const LctParam,
    param_count: usize,
    inputs: *const LctHandle,
    input_count: usize,
    options: *const LctExecuteOptions,
    outputs: *mut LctHandle,
    output_capacity: usize,
) -> LctStatus {
    guard("node_execute", || {
        let node = registry().node(index)?;
        let d = node.descriptor();
        let options = unsafe { read_options(options) }?;
        let params = unsafe { read_params(d, params, param_count, options.param_stride()) }?;
        let values = input_values(node, unsafe { in_slice(inputs, input_count, "inputs") }?)?;
        let inputs = Inputs::new(d, &values)?;
        if output_capacity < d.outputs.len() {
            return Err(Failure::new(
                LctStatus::BUFFER_TOO_SMALL,
                format!(
                    "{} has {} outputs, `output_capacity` is {output_capacity}",
                    d.id,
                    d.outputs.len()
                ),
            ));
        }
        if !d.outputs.is_empty() && (outputs.is_null() || !outputs.is_aligned()) {
            return Err(Failure::invalid("`outputs` is null or misaligned"));
        }
        let directory = match options.output_directory.is_null() {
            true => None,
            false => Some(PathBuf::from(unsafe {
                in_str(options.output_directory, "options.output_directory")
            }?)),
        };
        let mut progress = |step: u32, total: u32| match options.progress {
            Some(callback) => {
                // SAFETY: the host's callback, called with the user data it gave us.
                (unsafe { callback(options.user_data, options.node_index, step, total) }) == 0
            }
            None => true,
        };
        let mut preview = |step: u32, total: u32, preview: &Preview| match options.preview {
            Some(callback) => {
                let buffer = LctFrameBuffer {
                    // The host only reads it (the callback takes a const pointer).
                    data: preview.rgb.as_ptr().cast_mut().cast(),
                    capacity_bytes: preview.rgb.len(),
                    first_frame: 0,
                    frame_count: preview.frame_count,
                    width: preview.width,
                    height: preview.height,
                    channels: 3,
                    sample_format: LctSampleFormat::U8,
                    color_space: LctColorSpace::SRGB,
                };
                // SAFETY: the host's callback, with its user data and a buffer that outlives
                // the call.
                (unsafe { callback(options.user_data, options.node_index, step, total, &buffer) })
                    == 0
            }
            None => true,
        };
        let mut ctx = ExecContext::new(d.id, &mut progress, directory.as_deref());
        if options.preview.is_some() {
            ctx = ctx.with_preview(&mut preview);
        }
        let produced = node.execute(&mut ctx, &params, &inputs)?;
        let kinds_match = produced.len() == d.outputs.len()
            && produced
                .iter()
                .zip(d.outputs)
                .all(|(v, p)| v.kind() == p.kind);
        if !kinds_match {
            let found: Vec<_> = produced.iter().map(|v| v.kind().name()).collect();
            let declared: Vec<_> = d.outputs.iter().map(|p| p.kind.name()).collect();
            return Err(Failure::new(
                LctStatus::INTERNAL,
                format!(
                    "{} returned [{}], declared [{}]",
                    d.id,
                    found.join(", "),
                    declared.join(", ")
                ),
            ));
        }
        let mut table = handles();
        for (i, value) in produced.into_iter().enumerate() {
            // SAFETY: checked non-null and aligned above; capacity >= output count.
            unsafe { outputs.add(i).write(table.insert(value)) };
        }
        Ok(())
    })
}

unsafe extern "C" fn node_input_signature(
    index: u32,
    params: *const LctParam,
    param_count: usize,
    port: u32,
    input: LctHandle,
    out_signature: *mut u64,
) -> LctStatus {
    guard("node_input_signature", || {
        let node = registry().node(index)?;
        let d = node.descriptor();
        // No options here: the ABI 1 layout, as the table documents.
        let stride = lct_abi::stride_or_oldest::<LctParam>(0);
        let params = unsafe { read_params(d, params, param_count, stride) }?;
        let port_desc = d.inputs.get(port as usize).ok_or_else(|| {
            Failure::new(
                LctStatus::OUT_OF_RANGE,
                format!("{} has {} inputs, no port {port}", d.id, d.inputs.len()),
            )
        })?;
        let value = lookup(input)?;
        if value.kind() != port_desc.kind {
            return Err(Failure::new(
                LctStatus::WRONG_KIND,
                format!(
                    "{} input `{}` expects {}, got {}",
                    d.id,
                    port_desc.name,
                    port_desc.kind,
                    value.kind()
                ),
            ));
        }
        let out = unsafe { out_ref(out_signature, "out_signature") }?;
        *out = node.input_signature(&params, port as usize, &value);
        Ok(())
    })
}

unsafe extern "C" fn value_kind(handle: LctHandle, out_kind: *mut LctValueKind) -> LctStatus {
    guard("value_kind", || {
        let kind = abi_kind(lookup(handle)?.kind());
        *unsafe { out_ref(out_kind, "out_kind") }? = kind;
        Ok(())
    })
}

unsafe extern "C" fn value_shape(
    handle: LctHandle,
    out_dims: *mut u64,
    capacity: usize,
    out_rank: *mut usize,
) -> LctStatus {
    guard("value_shape", || {
        let shape = lookup(handle)?.shape();
        *unsafe { out_ref(out_rank, "out_rank") }? = shape.len();
        if capacity < shape.len() {
            return Err(Failure::new(
                LctStatus::BUFFER_TOO_SMALL,
                format!(
                    "the shape has rank {}, `capacity` is {capacity}",
                    shape.len()
                ),
            ));
        }
        if !shape.is_empty() {
            if out_dims.is_null() || !out_dims.is_aligned() {
                return Err(Failure::invalid("`out_dims` is null or misaligned"));
            }
            // SAFETY: non-null, aligned, and `capacity >= shape.len()` elements per the contract.
            unsafe { std::ptr::copy_nonoverlapping(shape.as_ptr(), out_dims, shape.len()) };
        }
        Ok(())
    })
}

unsafe extern "C" fn value_hash(handle: LctHandle, out_hash: *mut u64) -> LctStatus {
    guard("value_hash", || {
        let hash = lookup(handle)?.content_hash();
        *unsafe { out_ref(out_hash, "out_hash") }? = hash;
        Ok(())
    })
}

fn wrong_kind(handle: LctHandle, value: &Value, expected: &str) -> Failure {
    Failure::new(
        LctStatus::WRONG_KIND,
        format!("handle {:#x} is {}, not {expected}", handle.0, value.kind()),
    )
}

unsafe extern "C" fn value_read_int(handle: LctHandle, out_value: *mut i64) -> LctStatus {
    guard("value_read_int", || {
        let value = lookup(handle)?;
        let int = match value {
            Value::Int(v) => v,
            Value::Bool(v) => v as i64,
            ref other => return Err(wrong_kind(handle, other, "INT or BOOL")),
        };
        *unsafe { out_ref(out_value, "out_value") }? = int;
        Ok(())
    })
}

unsafe extern "C" fn value_read_float(handle: LctHandle, out_value: *mut f64) -> LctStatus {
    guard("value_read_float", || {
        let value = lookup(handle)?;
        let float = match value {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            ref other => return Err(wrong_kind(handle, other, "FLOAT or INT")),
        };
        *unsafe { out_ref(out_value, "out_value") }? = float;
        Ok(())
    })
}

unsafe extern "C" fn value_read_string(
    handle: LctHandle,
    buffer: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> LctStatus {
    guard("value_read_string", || {
        let value = lookup(handle)?;
        let text = match &value {
            Value::String(text) | Value::Enum(text) => text.clone(),
            Value::Frames(frames) => frames.color_space().name().into(),
            other => return Err(wrong_kind(handle, other, "STRING, ENUM or FRAMES")),
        };
        // Refused like every other null out-pointer, before anything is written.
        let out_len = unsafe { out_ref(out_len, "out_len") }?;
        *out_len = text.len();
        if capacity > 0 && buffer.is_null() {
            return Err(Failure::invalid("`buffer` is null but `capacity` is not 0"));
        }
        // SAFETY: `buffer` is valid for `capacity` bytes per the contract.
        if unsafe { firewall::copy_c_string(&text, buffer, capacity) } {
            Ok(())
        } else {
            Err(Failure::new(
                LctStatus::BUFFER_TOO_SMALL,
                format!(
                    "the text needs {} bytes with its NUL, `capacity` is {capacity}",
                    text.len() + 1
                ),
            ))
        }
    })
}

unsafe extern "C" fn value_release(handle: LctHandle) -> LctStatus {
    guard("value_release", || handles().release(handle))
}

unsafe extern "C" fn frames_info(handle: LctHandle, out_info: *mut LctFramesInfo) -> LctStatus {
    guard("frames_info", || {
        let frames = frames_of(handle)?;
        *unsafe { out_ref(out_info, "out_info") }? = LctFramesInfo {
            frame_count: frames.frame_count(),
            width: frames.width(),
            height: frames.height(),
            channels: frames.channels(),
            color_space: color_space_to_abi(frames.color_space()),
        };
        Ok(())
    })
}

unsafe extern "C" fn frames_copy(handle: LctHandle, buffer: *mut LctFrameBuffer) -> LctStatus {
    guard("frames_copy", || {
        let frames = frames_of(handle)?;
        let request = unsafe { out_ref(buffer, "buffer") }?;
        let sample_bytes = request.sample_format.bytes();
        if sample_bytes == 0 {
            return Err(Failure::invalid(format!(
                "`buffer.sample_format` is {}, expected U8 or F32",
                request.sample_format
            )));
        }
        let target = match request.color_space {
            LctColorSpace::UNSPECIFIED => frames.color_space().clone(),
            other => color_space_from_abi(other, "buffer.color_space")?,
        };
        let total = frames.frame_count();
        let first = request.first_frame;
        let count = if request.frame_count == 0 {
            total.saturating_sub(first)
        } else {
            request.frame_count
        };
        if first >= total || count > total - first {
            return Err(Failure::new(
                LctStatus::OUT_OF_RANGE,
                format!(
                    "frames {first}..{} requested, the value has {total}",
                    first as u64 + count as u64
                ),
            ));
        }
        let samples = count as usize * frames.frame_len();
        let needed = samples * sample_bytes;
        if request.capacity_bytes < needed {
            return Err(Failure::new(
                LctStatus::BUFFER_TOO_SMALL,
                format!(
                    "{count} frames need {needed} bytes, `capacity_bytes` is {}",
                    request.capacity_bytes
                ),
            ));
        }
        if request.data.is_null() {
            return Err(Failure::invalid("`buffer.data` is null"));
        }
        // SAFETY: `data` is valid for `capacity_bytes >= needed` bytes per the contract; bytes
        // have no alignment requirement.
        let out = unsafe { std::slice::from_raw_parts_mut(request.data.cast::<u8>(), needed) };
        let input = frames
            .samples_in(first, count, &target, &ColorConfig::default_config())
            .map_err(|e| Failure::invalid(e.to_string()))?;
        match request.sample_format {
            LctSampleFormat::U8 => {
                for (dst, &s) in out.iter_mut().zip(&input) {
                    *dst = lct_nodes::to_u8(s);
                }
            }
            _ => {
                for (dst, &s) in out.chunks_exact_mut(4).zip(&input) {
                    dst.copy_from_slice(&s.to_ne_bytes());
                }
            }
        }
        request.frame_count = count;
        request.width = frames.width();
        request.height = frames.height();
        request.channels = frames.channels();
        request.color_space = color_space_to_abi(&target);
        Ok(())
    })
}

unsafe extern "C" fn frames_import(
    buffer: *const LctFrameBuffer,
    out_handle: *mut LctHandle,
) -> LctStatus {
    guard("frames_import", || {
        if buffer.is_null() || !buffer.is_aligned() {
            return Err(Failure::invalid("`buffer` is null or misaligned"));
        }
        // SAFETY: non-null and aligned, valid per the contract.
        let b = unsafe { buffer.read() };
        let space = color_space_from_abi(b.color_space, "buffer.color_space")?;
        let sample_bytes = b.sample_format.bytes();
        if sample_bytes == 0 {
            return Err(Failure::invalid(format!(
                "`buffer.sample_format` is {}, expected U8 or F32",
                b.sample_format
            )));
        }
        let samples = [b.frame_count, b.width, b.height, b.channels]
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n as usize))
            .filter(|&n| {
                n.checked_mul(sample_bytes)
                    .is_some_and(|bytes| bytes <= isize::MAX as usize)
            })
            .ok_or_else(|| Failure::new(LctStatus::OUT_OF_RANGE, "frame dimensions overflow"))?;
        let needed = samples * sample_bytes;
        if b.capacity_bytes < needed {
            return Err(Failure::new(
                LctStatus::BUFFER_TOO_SMALL,
                format!(
                    "{} frames of {}x{}x{} need {needed} bytes, `capacity_bytes` is {}",
                    b.frame_count, b.width, b.height, b.channels, b.capacity_bytes
                ),
            ));
        }
        let bytes = unsafe { in_slice(b.data.cast::<u8>().cast_const(), needed, "buffer.data") }?;
        let values: Vec<f32> = match b.sample_format {
            LctSampleFormat::U8 => bytes.iter().map(|&v| v as f32 / 255.0).collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        let frames = Frames::new(b.width, b.height, b.channels, space, values)
            .map_err(|e| Failure::invalid(e.to_string()))?;
        let out = unsafe { out_ref(out_handle, "out_handle") }?;
        *out = handles().insert(Value::Frames(std::sync::Arc::new(frames)));
        Ok(())
    })
}

unsafe extern "C" fn live_handle_count() -> u64 {
    guard_value("live_handle_count", 0, || handles().live())
}

unsafe extern "C" fn value_retain(handle: LctHandle, out_handle: *mut LctHandle) -> LctStatus {
    guard("value_retain", || {
        let value = lookup(handle)?;
        let out = unsafe { out_ref(out_handle, "out_handle") }?;
        *out = handles().insert(value);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> String {
        let mut buffer = [0 as c_char; 512];
        let len = unsafe { last_error(buffer.as_mut_ptr(), buffer.len()) };
        let text = unsafe { CStr::from_ptr(buffer.as_ptr()) }
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(len, text.len());
        text
    }

    fn param(name: &'static CStr, kind: LctValueKind, int_value: i64) -> LctParam {
        LctParam {
            name: name.as_ptr(),
            kind,
            int_value,
            float_value: 0.0,
            text_value: std::ptr::null(),
        }
    }

    /// The one parameter SceneContext needs to run.
    fn one_shot() -> LctParam {
        LctParam {
            text_value: c"a wide shot".as_ptr(),
            ..param(c"shots", LctValueKind::STRING, 0)
        }
    }

    /// Runs a node without inputs or options; returns the status and its one output.
    fn run(id: &CStr, params: &[LctParam]) -> (LctStatus, LctHandle) {
        let mut index = 0;
        assert_eq!(unsafe { node_find(id.as_ptr(), &mut index) }, LctStatus::OK);
        let mut out = LctHandle::NULL;
        let status = unsafe {
            node_execute(
                index,
                params.as_ptr(),
                params.len(),
                std::ptr::null(),
                0,
                std::ptr::null(),
                &mut out,
                1,
            )
        };
        (status, out)
    }

    #[test]
    #[cfg(feature = "test-nodes")]
    fn a_panicking_node_is_reported_and_the_plugin_stays_usable() {
        let (status, out) = run(c"DebugPanic", &[param(c"panic", LctValueKind::BOOL, 1)]);
        assert_eq!(status, LctStatus::PANICKED);
        assert_eq!(
            error(),
            "node_execute: panicked: DebugPanic was asked to panic"
        );
        assert_eq!(out, LctHandle::NULL);
        let (status, out) = run(c"DebugPanic", &[]);
        assert_eq!(status, LctStatus::OK, "{}", error());
        assert_eq!(error(), "");
        let mut value = -1;
        assert_eq!(unsafe { value_read_int(out, &mut value) }, LctStatus::OK);
        assert_eq!(value, 0);
        assert_eq!(unsafe { value_release(out) }, LctStatus::OK);
        assert_eq!(unsafe { value_release(out) }, LctStatus::BAD_HANDLE);
    }

    /// What `cargo build -p lct-plugin` ships (and `cargo test --workspace` tests: nothing in
    /// the workspace turns the feature on): a menu without the test nodes.
    #[test]
    #[cfg(not(feature = "test-nodes"))]
    fn the_shipped_plugin_lists_no_test_nodes() {
        for id in [c"TestPattern", c"Delay", c"DebugPanic"] {
            let mut index = u32::MAX;
            assert_eq!(
                unsafe { node_find(id.as_ptr(), &mut index) },
                LctStatus::NOT_FOUND,
                "{id:?}"
            );
        }
        for index in 0..unsafe { node_count() } {
            let node = registry().node(index).unwrap().descriptor();
            assert!(!node.category.starts_with("testing"), "{}", node.id);
        }
        assert!(registry().find("SaveFrames").is_some());
    }

    #[test]
    #[cfg(feature = "test-nodes")]
    fn the_test_build_lists_the_test_nodes() {
        for id in ["TestPattern", "Delay", "DebugPanic"] {
            assert!(registry().find(id).is_some(), "{id}");
        }
    }

    #[test]
    fn errors_name_the_node_and_the_widget() {
        let (status, _) = run(c"SaveFrames", &[param(c"columns", LctValueKind::INT, 0)]);
        assert_eq!(status, LctStatus::OUT_OF_RANGE);
        assert_eq!(
            error(),
            "node_execute: SaveFrames: widget `columns` is 0, outside 1..=64"
        );
    }

    /// SceneContext's three optional FRAMES inputs (identity, environment, reference), unset.
    const NO_INPUTS: [LctHandle; 3] = [LctHandle::NULL; 3];

    #[test]
    fn short_options_take_defaults_and_garbage_sizes_are_refused() {
        unsafe extern "C" fn never(_: *mut std::ffi::c_void, _: u32, _: u32, _: u32) -> i32 {
            panic!("a callback past the host's struct_size was called")
        }
        let mut index = 0;
        assert_eq!(
            unsafe { node_find(c"SceneContext".as_ptr(), &mut index) },
            LctStatus::OK
        );
        let shots = [one_shot()];
        let execute = |options: &LctExecuteOptions| {
            let mut out = LctHandle::NULL;
            let status = unsafe {
                node_execute(
                    index,
                    shots.as_ptr(),
                    1,
                    NO_INPUTS.as_ptr(),
                    NO_INPUTS.len(),
                    options,
                    &mut out,
                    1,
                )
            };
            if status == LctStatus::OK {
                assert_eq!(unsafe { value_release(out) }, LctStatus::OK);
            }
            status
        };
        let mut options = LctExecuteOptions {
            struct_size: 8,
            node_index: 0,
            progress: Some(never),
            user_data: std::ptr::null_mut(),
            output_directory: c"/nonexistent".as_ptr(),
            param_size: 0,
            reserved: 0,
            preview: None,
        };
        assert_eq!(execute(&options), LctStatus::OK, "{}", error());
        options.struct_size = 3;
        assert_eq!(execute(&options), LctStatus::INVALID_ARGUMENT);
        assert!(
            error().contains("options.struct_size: LctExecuteOptions declared as 3 bytes"),
            "{}",
            error()
        );
        options.struct_size = u32::MAX;
        assert_eq!(execute(&options), LctStatus::INVALID_ARGUMENT);
    }

    #[test]
    fn the_table_is_complete() {
        assert!(api().missing_functions().is_empty());
        for name in LctPluginApi::FUNCTION_NAMES {
            assert_eq!(api().has_function(name), Some(true), "{name}");
        }
        assert_eq!(
            api().struct_size as usize,
            std::mem::size_of::<LctPluginApi>()
        );
    }

    #[test]
    fn a_retained_handle_outlives_the_original() {
        let mut index = 0;
        assert_eq!(
            unsafe { node_find(c"SceneContext".as_ptr(), &mut index) },
            LctStatus::OK
        );
        let mut scene = LctHandle::NULL;
        let shots = [one_shot()];
        let status = unsafe {
            node_execute(
                index,
                shots.as_ptr(),
                1,
                NO_INPUTS.as_ptr(),
                NO_INPUTS.len(),
                std::ptr::null(),
                &mut scene,
                1,
            )
        };
        assert_eq!(status, LctStatus::OK, "{}", error());
        let mut second = LctHandle::NULL;
        assert_eq!(unsafe { value_retain(scene, &mut second) }, LctStatus::OK);
        assert_ne!(second, scene);
        assert_eq!(unsafe { value_release(scene) }, LctStatus::OK);
        let mut kind = LctValueKind::NONE;
        assert_eq!(unsafe { value_kind(second, &mut kind) }, LctStatus::OK);
        assert_eq!(kind, LctValueKind::SCENE);
        assert_eq!(unsafe { value_release(second) }, LctStatus::OK);
        assert_eq!(
            unsafe { value_retain(second, &mut scene) },
            LctStatus::BAD_HANDLE
        );
    }
}
