//! Growth both ways: an older host's smaller structs against the real plugin, and plugins one
//! version older and one version newer than this host, loaded by the real loader.
//!
//! The older and newer plugins are `fixtures/versioned_plugin.c` built against the committed
//! header (a small working plugin with one node type, Sum); skipped without a C compiler.

use std::ffi::{c_void, CStr, CString};
use std::ptr::null;
use std::sync::atomic::{AtomicU32, Ordering};

use lct_abi::{
    LctExecuteOptions, LctHandle, LctParam, LctPluginApi, LctProgressFn, LctStatus, LctValueKind,
    LCT_ABI_VERSION,
};
use lct_host::{EvalOptions, Evaluator, Graph, ParamValue, Plugin, Value, WidgetLimits};
use lct_integration_tests::{fixture_plugin, plugin};

macro_rules! f {
    ($api:expr, $name:ident) => {
        $api.$name.expect(stringify!($name))
    };
}

fn last_error(api: &LctPluginApi) -> String {
    let mut buffer = [0u8; 1024];
    unsafe { f!(api, last_error)(buffer.as_mut_ptr().cast(), buffer.len()) };
    CStr::from_bytes_until_nul(&buffer)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn int_param(name: &'static CStr, value: i64) -> LctParam {
    LctParam {
        name: name.as_ptr(),
        kind: LctValueKind::INT,
        int_value: value,
        float_value: 0.0,
        text_value: null(),
    }
}

/// Counts calls in the `u32` its user data points to.
unsafe extern "C" fn count_steps(user_data: *mut c_void, _: u32, _: u32, _: u32) -> i32 {
    unsafe { &*user_data.cast::<AtomicU32>() }.fetch_add(1, Ordering::SeqCst);
    0
}

/// Runs node `id` of the real plugin through its raw table; its one output, or the status and
/// message.
fn execute_raw(
    id: &CStr,
    params: *const LctParam,
    param_count: usize,
    inputs: &[LctHandle],
    options: *const LctExecuteOptions,
) -> Result<LctHandle, (LctStatus, String)> {
    let plugin = plugin();
    let api = plugin.raw_api();
    let mut index = 0;
    assert_eq!(
        unsafe { f!(api, node_find)(id.as_ptr(), &mut index) },
        LctStatus::OK
    );
    let mut out = LctHandle::NULL;
    let status = unsafe {
        f!(api, node_execute)(
            index,
            params,
            param_count,
            inputs.as_ptr(),
            inputs.len(),
            options,
            &mut out,
            1,
        )
    };
    match status {
        LctStatus::OK => Ok(out),
        _ => Err((status, last_error(api))),
    }
}

fn release(handle: LctHandle) {
    let plugin = plugin();
    assert_eq!(
        unsafe { f!(plugin.raw_api(), value_release)(handle) },
        LctStatus::OK
    );
}

fn frame_dims(handle: LctHandle) -> (u32, u32, u32) {
    let plugin = plugin();
    let mut info = lct_abi::zeroed::<lct_abi::LctFramesInfo>();
    assert_eq!(
        unsafe { f!(plugin.raw_api(), frames_info)(handle, &mut info) },
        LctStatus::OK
    );
    (info.frame_count, info.width, info.height)
}

/// `LctExecuteOptions` as an ABI 1 host declares it: no `param_size`.
#[repr(C)]
#[allow(dead_code)] // read only by the plugin, through the pointer
struct OptionsV1 {
    struct_size: u32,
    node_index: u32,
    progress: Option<LctProgressFn>,
    user_data: *mut c_void,
    output_directory: *const std::ffi::c_char,
}

/// An older host's options and whatever happens to follow them in its memory: bytes that
/// would be a fatal `param_size` of 3 if the plugin read past the declared size.
#[repr(C)]
#[allow(dead_code)] // read only by the plugin, through the pointer
struct OldHostStack {
    options: OptionsV1,
    after: [u32; 4],
}

#[test]
fn an_abi_1_host_runs_nodes_with_its_smaller_options() {
    let steps = AtomicU32::new(0);
    let out = tempfile::tempdir().unwrap();
    let directory = CString::new(out.path().to_str().unwrap()).unwrap();
    let stack = OldHostStack {
        options: OptionsV1 {
            struct_size: std::mem::size_of::<OptionsV1>() as u32,
            node_index: 0,
            progress: Some(count_steps),
            user_data: std::ptr::from_ref(&steps).cast_mut().cast(),
            output_directory: directory.as_ptr(),
        },
        after: [3; 4],
    };
    let options = std::ptr::from_ref(&stack.options).cast::<LctExecuteOptions>();
    let params = [
        int_param(c"frames", 2),
        int_param(c"width", 16),
        int_param(c"height", 8),
    ];
    let frames = execute_raw(c"TestPattern", params.as_ptr(), 3, &[], options).unwrap();
    assert_eq!(frame_dims(frames), (2, 16, 8));
    assert_eq!(steps.load(Ordering::SeqCst), 2, "progress once per frame");
    // The fields it has are used: SaveFrames writes under its output directory.
    let folder = execute_raw(c"SaveFrames", null(), 0, &[frames], options).unwrap();
    let mut path = [0u8; 4096];
    let mut len = 0;
    let plugin = plugin();
    assert_eq!(
        unsafe {
            f!(plugin.raw_api(), value_read_string)(
                folder,
                path.as_mut_ptr().cast(),
                path.len(),
                &mut len,
            )
        },
        LctStatus::OK
    );
    let path = std::str::from_utf8(&path[..len]).unwrap();
    assert!(path.starts_with(out.path().to_str().unwrap()), "{path}");
    release(folder);
    release(frames);
}

#[test]
fn fields_past_the_declared_size_take_their_defaults() {
    let steps = AtomicU32::new(0);
    // Declares only `struct_size` and `node_index`: the callback after them must not be used.
    let options = LctExecuteOptions {
        struct_size: 8,
        node_index: 0,
        progress: Some(count_steps),
        user_data: std::ptr::from_ref(&steps).cast_mut().cast(),
        output_directory: c"/nonexistent/never/used".as_ptr(),
        param_size: 3,
        reserved: 0,
        preview: None,
    };
    let params = [int_param(c"frames", 2), int_param(c"width", 16)];
    let frames = execute_raw(c"TestPattern", params.as_ptr(), 2, &[], &options).unwrap();
    assert_eq!(frame_dims(frames), (2, 16, 48));
    assert_eq!(steps.load(Ordering::SeqCst), 0);
    release(frames);
    // Only the size field at all: every setting at its default.
    let options = LctExecuteOptions {
        struct_size: 4,
        ..options
    };
    let frames = execute_raw(c"TestPattern", params.as_ptr(), 2, &[], &options).unwrap();
    release(frames);
}

#[test]
fn option_sizes_that_are_no_sizes_are_named_errors() {
    let mut options = lct_abi::zeroed::<LctExecuteOptions>();
    options.struct_size = 2;
    let (status, message) = execute_raw(c"TestPattern", null(), 0, &[], &options).unwrap_err();
    assert_eq!(status, LctStatus::INVALID_ARGUMENT);
    assert_eq!(
        message,
        "node_execute: options.struct_size: LctExecuteOptions declared as 2 bytes, less than the \
         4 bytes every version of it has"
    );
    options.struct_size = u32::MAX;
    let (status, message) = execute_raw(c"TestPattern", null(), 0, &[], &options).unwrap_err();
    assert_eq!(status, LctStatus::INVALID_ARGUMENT);
    assert!(
        message.contains("4294967295 bytes") && message.contains("not a size"),
        "{message}"
    );
}

#[test]
fn a_newer_hosts_larger_options_and_params_are_read_by_their_sizes() {
    /// `LctParam` and `LctExecuteOptions` as a later header might grow them.
    #[repr(C)]
    #[allow(dead_code)] // the new fields are read by no one: this plugin does not know them
    struct ParamV3 {
        known: LctParam,
        future: [u64; 2],
    }
    #[repr(C)]
    #[allow(dead_code)] // as above
    struct OptionsV3 {
        known: LctExecuteOptions,
        future: [u64; 2],
    }
    let grown = |param| ParamV3 {
        known: param,
        future: [u64::MAX; 2],
    };
    let params = [
        grown(int_param(c"frames", 3)),
        grown(int_param(c"width", 24)),
        grown(int_param(c"height", 16)),
    ];
    let mut options = OptionsV3 {
        known: LctExecuteOptions {
            struct_size: std::mem::size_of::<OptionsV3>() as u32,
            param_size: std::mem::size_of::<ParamV3>() as u32,
            ..lct_abi::zeroed()
        },
        future: [u64::MAX; 2],
    };
    let frames = execute_raw(c"TestPattern", &params[0].known, 3, &[], &options.known).unwrap();
    assert_eq!(frame_dims(frames), (3, 24, 16));
    release(frames);
    options.known.param_size = 8;
    let (status, message) =
        execute_raw(c"TestPattern", &params[0].known, 3, &[], &options.known).unwrap_err();
    assert_eq!(status, LctStatus::INVALID_ARGUMENT);
    assert!(
        message.contains("LctParam declared as 8 bytes"),
        "{message}"
    );
}

#[test]
fn a_retained_handle_is_the_callers_own() {
    let plugin = plugin();
    assert!(plugin.provides("value_retain"));
    let node = plugin.node("TestPattern").unwrap();
    let params = [("frames".to_owned(), ParamValue::Int(2))];
    let value = plugin
        .execute(node, &params, &[], None, &mut |_, _| true)
        .unwrap()
        .remove(0);
    let handle = value.retain_handle().unwrap();
    assert_ne!(handle, value.handle());
    drop(value);
    assert_eq!(
        frame_dims(handle).0,
        2,
        "the value outlives its first handle"
    );
    release(handle);
}

/// Runs the fixture's Sum node: `[sum, offset]`.
fn sum(plugin: &Plugin, offset: i64, mode: &str, inputs: [Option<&Value>; 2]) -> Vec<Value> {
    let params = [
        ("offset".to_owned(), ParamValue::Int(offset)),
        ("mode".to_owned(), ParamValue::Text(mode.to_owned())),
    ];
    let node = plugin.node("Sum").expect("the fixture's node type");
    plugin
        .execute(node, &params, &inputs, None, &mut |_, _| true)
        .unwrap()
}

/// The fixture's node type, read by this host: the same whatever the plugin's version.
fn check_sum_descriptor(plugin: &Plugin) {
    let sum = plugin.node("Sum").expect("the fixture's node type");
    let names = |ports: &[lct_host::Port]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&sum.inputs), ["a", "b"]);
    assert_eq!(names(&sum.outputs), ["sum", "offset"]);
    assert!(sum
        .inputs
        .iter()
        .all(|p| p.optional && p.kind_name == "INT"));
    assert_eq!(sum.outputs[1].tooltip, "The offset widget");
    assert_eq!(sum.widgets.len(), 2);
    assert_eq!(sum.widgets[0].name, "offset");
    assert_eq!(sum.widgets[0].default, ParamValue::Int(7));
    assert_eq!(
        sum.widgets[0].limits,
        WidgetLimits::Int {
            min: -100,
            max: 100,
            step: 1
        }
    );
    assert_eq!(sum.widgets[1].name, "mode");
    assert_eq!(
        sum.widgets[1].limits,
        WidgetLimits::Choices(vec!["plus".into(), "minus".into()])
    );
}

/// Runs Sum twice, the second fed by the first, through the safe API and the evaluator.
fn check_sum_runs(plugin: &Plugin) {
    let first = sum(plugin, 5, "plus", [None, None]);
    assert_eq!(first[0].read_int().unwrap(), 5);
    let second = sum(plugin, 1, "minus", [Some(&first[0]), Some(&first[1])]);
    assert_eq!(second[0].read_int().unwrap(), 1 - 5 - 5);

    let mut graph = Graph::new();
    graph.add("x", "Sum").param("offset", 2);
    graph
        .add("y", "Sum")
        .param("mode", "minus")
        .input("a", "x", "sum");
    graph.output("y");
    let validated = plugin.validate(&graph).unwrap();
    let evaluation = Evaluator::new(plugin)
        .evaluate(&validated, &EvalOptions::default())
        .unwrap();
    assert_eq!(
        evaluation.output("y", "sum").unwrap().read_int().unwrap(),
        5
    );
    // The same range rule as the plugin's, before anything runs.
    graph.node_mut("x").unwrap().param("offset", 101);
    let error = plugin.validate(&graph).unwrap_err();
    assert_eq!(
        error.to_string(),
        "node `x` (Sum): widget `offset` is 101, outside -100..=100"
    );
}

#[test]
fn a_plugin_one_version_older_loads_and_lacks_only_the_newer_functions() {
    let (_dir, library) = fixture_plugin("versioned_plugin.c", "OLDER_PLUGIN");
    let plugin = Plugin::load(&library).expect("an ABI 1 plugin loads");
    assert_eq!(plugin.abi_version(), 1);
    assert!(plugin.provides("node_execute"));
    assert!(
        !plugin.provides("value_retain"),
        "value_retain lies past the ABI 1 table: absent"
    );
    assert!(plugin.raw_api().value_retain.is_none());
    check_sum_descriptor(&plugin);
    check_sum_runs(&plugin);
    let value = sum(&plugin, 3, "plus", [None, None]).remove(0);
    let error = value.retain_handle().unwrap_err();
    assert_eq!(error.status, LctStatus::UNSUPPORTED);
    assert_eq!(
        error.message,
        "plugin versioned-fixture 0.0.1 (ABI version 1) does not provide `value_retain`, added \
         in ABI version 2"
    );
    drop(value);
    assert_eq!(plugin.live_handles(), 0);
}

#[test]
fn a_plugin_one_version_newer_with_larger_descriptors_is_read_by_their_sizes() {
    let (_dir, library) = fixture_plugin("versioned_plugin.c", "NEWER_PLUGIN");
    let plugin = Plugin::load(&library).expect("a newer plugin loads");
    assert_eq!(plugin.abi_version(), LCT_ABI_VERSION + 1);
    assert!(plugin.provides("value_retain"));
    check_sum_descriptor(&plugin);
    check_sum_runs(&plugin);
    let value = sum(&plugin, 9, "plus", [None, None]).remove(0);
    let retained = value.retain_handle().unwrap();
    drop(value);
    let api = plugin.raw_api();
    let mut read = 0;
    assert_eq!(
        unsafe { f!(api, value_read_int)(retained, &mut read) },
        LctStatus::OK
    );
    assert_eq!(read, 9);
    assert_eq!(unsafe { f!(api, value_release)(retained) }, LctStatus::OK);
    assert_eq!(plugin.live_handles(), 0);
}
