//! lct as an OpenFX generator for compositors (Nuke, Resolve/Fusion, Natron, Flame): one
//! effect, "LCT Scene", whose parameters are a scene's prompts, the shot to show, seed and
//! steps, with optional Identity and Environment input clips. It renders the requested frame
//! of the requested shot through the lct plugin's own nodes over its C table (`lct-host`),
//! keeps the last scene per instance, and stops within one sampler step when the host aborts.
//!
//! Must not depend on the nodes or the engine: like every host, it loads `liblct_plugin.so`
//! (beside the `.ofx` in the bundle, or `$LCT_PLUGIN`). Nothing may unwind into the host:
//! every action runs under `catch_unwind`, and errors go to the host's message suite.

mod ofx;
mod scene;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, RwLock};

use lct_host::ColorSpace;
use ofx::names::*;
use ofx::*;
use scene::{Failure, Reference, Scene, SceneRequest};

struct Suites {
    property: &'static PropertySuiteV1,
    effect: &'static ImageEffectSuiteV1,
    param: &'static ParameterSuiteV1,
    progress: Option<&'static ProgressSuiteV1>,
    message: Option<&'static MessageSuiteV1>,
}

// SAFETY: the suites are tables of host function pointers, valid from Load to Unload and
// callable from any thread the host renders on.
unsafe impl Send for Suites {}
unsafe impl Sync for Suites {}

static HOST: AtomicPtr<OfxHost> = AtomicPtr::new(std::ptr::null_mut());
static SUITES: RwLock<Option<Suites>> = RwLock::new(None);

struct PluginStruct(OfxPlugin);
// SAFETY: immutable, and its pointers are to static NUL-terminated strings.
unsafe impl Sync for PluginStruct {}

static PLUGIN: PluginStruct = PluginStruct(OfxPlugin {
    plugin_api: IMAGE_EFFECT_PLUGIN_API.as_ptr(),
    api_version: 1,
    plugin_identifier: c"org.lct.LCTScene".as_ptr(),
    plugin_version_major: 1,
    plugin_version_minor: 0,
    set_host,
    main_entry,
});

/// # Safety
/// Called by OpenFX hosts only.
#[no_mangle]
pub unsafe extern "C" fn OfxGetNumberOfPlugins() -> c_int {
    1
}

/// # Safety
/// Called by OpenFX hosts only.
#[no_mangle]
pub unsafe extern "C" fn OfxGetPlugin(nth: c_int) -> *const OfxPlugin {
    if nth == 0 {
        &PLUGIN.0
    } else {
        std::ptr::null()
    }
}

unsafe extern "C" fn set_host(host: *mut OfxHost) {
    HOST.store(host, Ordering::Release);
}

/// The folder this binary was loaded from (the bundle's `Contents/Linux-x86-64/`).
pub(crate) fn own_directory() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`.
    let found = unsafe { libc::dladdr(set_host as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    let file = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(file.to_string_lossy().into_owned());
    std::fs::canonicalize(&path)
        .unwrap_or(path)
        .parent()
        .map(PathBuf::from)
}

unsafe extern "C" fn main_entry(
    action: *const c_char,
    handle: *const c_void,
    in_args: PropertySet,
    out_args: PropertySet,
) -> OfxStatus {
    if action.is_null() {
        return STAT_FAILED;
    }
    let action = unsafe { CStr::from_ptr(action) };
    let handle = handle as EffectHandle;
    catch_unwind(AssertUnwindSafe(|| {
        match dispatch(action, handle, in_args, out_args) {
            Ok(status) => status,
            Err(message) => {
                report(handle, &message);
                STAT_FAILED
            }
        }
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        report(
            handle,
            &format!("LCT Scene: internal error in {action:?}: {what}"),
        );
        STAT_ERR_FATAL
    })
}

/// Posts an error on the host's message suite (and to stderr when the host has none).
fn report(handle: EffectHandle, message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let suites = SUITES.read().unwrap_or_else(|e| e.into_inner());
    match suites.as_ref().and_then(|s| s.message) {
        // SAFETY: a printf-style call with one string argument for "%s".
        Some(suite) => unsafe {
            (suite.message)(
                handle,
                MESSAGE_ERROR.as_ptr(),
                std::ptr::null(),
                c"%s".as_ptr(),
                text.as_ptr(),
            );
        },
        None => eprintln!("{message}"),
    }
}

fn dispatch(
    action: &CStr,
    handle: EffectHandle,
    in_args: PropertySet,
    out_args: PropertySet,
) -> Result<OfxStatus, String> {
    if action == ACTION_LOAD {
        return load();
    }
    if action == ACTION_UNLOAD {
        *SUITES.write().unwrap_or_else(|e| e.into_inner()) = None;
        return Ok(STAT_OK);
    }
    let guard = SUITES.read().unwrap_or_else(|e| e.into_inner());
    let suites = guard
        .as_ref()
        .ok_or("LCT Scene: an action before OfxActionLoad")?;
    let effect = Effect { suites, handle };
    if action == ACTION_DESCRIBE {
        effect.describe()
    } else if action == ACTION_DESCRIBE_IN_CONTEXT {
        effect.describe_in_context()
    } else if action == ACTION_CREATE_INSTANCE {
        effect.create_instance()
    } else if action == ACTION_DESTROY_INSTANCE {
        effect.destroy_instance()
    } else if action == ACTION_GET_REGION_OF_DEFINITION {
        effect.region_of_definition(Props::new(suites, in_args), Props::new(suites, out_args))
    } else if action == ACTION_GET_CLIP_PREFERENCES {
        Props::new(suites, out_args).set_int(PROP_FRAME_VARYING, 0, 1)?;
        Ok(STAT_OK)
    } else if action == ACTION_GET_TIME_DOMAIN {
        effect.time_domain(Props::new(suites, out_args))
    } else if action == ACTION_RENDER {
        effect.render(Props::new(suites, in_args))
    } else {
        Ok(STAT_REPLY_DEFAULT)
    }
}

fn load() -> Result<OfxStatus, String> {
    let host = HOST.load(Ordering::Acquire);
    if host.is_null() {
        return Ok(STAT_ERR_MISSING_HOST_FEATURE);
    }
    // SAFETY: the host set a valid OfxHost before Load, as the standard requires.
    let host = unsafe { &*host };
    let fetch = |name: &CStr, version: c_int| unsafe {
        (host.fetch_suite)(host.host, name.as_ptr(), version)
    };
    let property = fetch(PROPERTY_SUITE, 1) as *const PropertySuiteV1;
    let effect = fetch(IMAGE_EFFECT_SUITE, 1) as *const ImageEffectSuiteV1;
    let param = fetch(PARAMETER_SUITE, 1) as *const ParameterSuiteV1;
    if property.is_null() || effect.is_null() || param.is_null() {
        eprintln!("LCT Scene: the host lacks the property, image effect or parameter suite (v1)");
        return Ok(STAT_ERR_MISSING_HOST_FEATURE);
    }
    let progress = fetch(PROGRESS_SUITE, 1) as *const ProgressSuiteV1;
    let message = fetch(MESSAGE_SUITE, 1) as *const MessageSuiteV1;
    // SAFETY: non-null suite pointers from the host live until Unload.
    *SUITES.write().unwrap_or_else(|e| e.into_inner()) = Some(unsafe {
        Suites {
            property: &*property,
            effect: &*effect,
            param: &*param,
            progress: progress.as_ref(),
            message: message.as_ref(),
        }
    });
    Ok(STAT_OK)
}

/// A property set with the host's property suite.
struct Props<'a> {
    suite: &'a PropertySuiteV1,
    set: PropertySet,
}

fn check(status: OfxStatus, what: &str, name: &CStr) -> Result<(), String> {
    if status == STAT_OK {
        Ok(())
    } else {
        Err(format!(
            "LCT Scene: the host refused {what} {name:?} (status {status})"
        ))
    }
}

impl<'a> Props<'a> {
    fn new(suites: &'a Suites, set: PropertySet) -> Self {
        Props {
            suite: suites.property,
            set,
        }
    }
    fn set_str(&self, name: &CStr, index: c_int, value: &CStr) -> Result<(), String> {
        check(
            unsafe { (self.suite.set_string)(self.set, name.as_ptr(), index, value.as_ptr()) },
            "setting",
            name,
        )
    }
    fn set_strs(&self, name: &CStr, values: &[&CStr]) -> Result<(), String> {
        values
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| self.set_str(name, i as c_int, v))
    }
    fn set_int(&self, name: &CStr, index: c_int, value: c_int) -> Result<(), String> {
        check(
            unsafe { (self.suite.set_int)(self.set, name.as_ptr(), index, value) },
            "setting",
            name,
        )
    }
    fn set_double(&self, name: &CStr, index: c_int, value: f64) -> Result<(), String> {
        check(
            unsafe { (self.suite.set_double)(self.set, name.as_ptr(), index, value) },
            "setting",
            name,
        )
    }
    fn set_pointer(&self, name: &CStr, value: *mut c_void) -> Result<(), String> {
        check(
            unsafe { (self.suite.set_pointer)(self.set, name.as_ptr(), 0, value) },
            "setting",
            name,
        )
    }
    fn int(&self, name: &CStr, index: c_int) -> Result<c_int, String> {
        let mut value = 0;
        check(
            unsafe { (self.suite.get_int)(self.set, name.as_ptr(), index, &mut value) },
            "reading",
            name,
        )?;
        Ok(value)
    }
    fn double(&self, name: &CStr, index: c_int) -> Result<f64, String> {
        let mut value = 0.0;
        check(
            unsafe { (self.suite.get_double)(self.set, name.as_ptr(), index, &mut value) },
            "reading",
            name,
        )?;
        Ok(value)
    }
    fn string(&self, name: &CStr) -> Result<String, String> {
        let mut value: *mut c_char = std::ptr::null_mut();
        check(
            unsafe { (self.suite.get_string)(self.set, name.as_ptr(), 0, &mut value) },
            "reading",
            name,
        )?;
        if value.is_null() {
            return Ok(String::new());
        }
        Ok(unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned())
    }
    fn pointer(&self, name: &CStr) -> Result<*mut c_void, String> {
        let mut value = std::ptr::null_mut();
        check(
            unsafe { (self.suite.get_pointer)(self.set, name.as_ptr(), 0, &mut value) },
            "reading",
            name,
        )?;
        Ok(value)
    }
}

/// The effect's parameters, in the order hosts show them.
enum ParamKind {
    Text {
        default: &'static CStr,
        multiline: bool,
    },
    Directory,
    Int {
        default: c_int,
        min: c_int,
        max: c_int,
    },
    Choice {
        options: &'static [&'static CStr],
        default: c_int,
    },
}

struct ParamSpec {
    name: &'static CStr,
    label: &'static CStr,
    hint: &'static CStr,
    kind: ParamKind,
}

const MODES: &[&CStr] = &[c"joint", c"autoregressive"];
const COLOR_SPACES: &[&CStr] = &[c"Linear Rec.709 (sRGB)", c"ACEScg", c"sRGB (as generated)"];

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: c"global_prompt",
        label: c"Global prompt",
        hint: c"What every shot shares: environment, light, story (the embedded model knows only its world's words)",
        kind: ParamKind::Text {
            default: c"Environment: blue sky, green ground, low horizon, warm light, day. Story: Character 1 moves right.",
            multiline: true,
        },
    },
    ParamSpec {
        name: c"characters",
        label: c"Characters",
        hint: c"One character per line",
        kind: ParamKind::Text { default: c"Character 1: large red circle, striped.", multiline: true },
    },
    ParamSpec {
        name: c"shots",
        label: c"Shots",
        hint: c"One prompt per shot, one per line",
        kind: ParamKind::Text {
            default: c"[SHOT 1] wide shot of Character 1 moving right.\n[SHOT 2] medium shot of Character 1 moving right.\n[SHOT 3] close-up of Character 1 moving right.",
            multiline: true,
        },
    },
    ParamSpec {
        name: c"shot",
        label: c"Shot",
        hint: c"The shot to show (1-based); 0 shows every shot one after another",
        kind: ParamKind::Int { default: 0, min: 0, max: 256 },
    },
    ParamSpec {
        name: c"frames",
        label: c"Frames per shot",
        hint: c"Frames generated for each shot",
        kind: ParamKind::Int { default: 4, min: 1, max: 64 },
    },
    ParamSpec {
        name: c"seed",
        label: c"Seed",
        hint: c"Noise seed: the same seed, prompts and model give the same frames",
        kind: ParamKind::Int { default: 0, min: 0, max: c_int::MAX },
    },
    ParamSpec {
        name: c"steps",
        label: c"Steps",
        hint: c"Sampler steps from noise to image",
        kind: ParamKind::Int { default: 20, min: 1, max: 500 },
    },
    ParamSpec {
        name: c"mode",
        label: c"Mode",
        hint: c"joint: all shots attend to each other while denoising; autoregressive: shot by shot",
        kind: ParamKind::Choice { options: MODES, default: 0 },
    },
    ParamSpec {
        name: c"color_space",
        label: c"Colour space",
        hint: c"Colour space of the output and input clips' float pixels (8-bit images are always sRGB)",
        kind: ParamKind::Choice { options: COLOR_SPACES, default: 0 },
    },
    ParamSpec {
        name: c"model",
        label: c"Model",
        hint: c"An lct checkpoint folder; empty for the embedded model",
        kind: ParamKind::Directory,
    },
];

/// Instance data: the last generated scene.
struct Instance {
    scene: Mutex<Option<Scene>>,
}

struct Effect<'a> {
    suites: &'a Suites,
    handle: EffectHandle,
}

/// Pixels of an image the host handed over.
struct Image<'a> {
    props: Props<'a>,
    data: *mut u8,
    bounds: [c_int; 4],
    row_bytes: isize,
    float: bool,
    channels: usize,
}

impl<'a> Effect<'a> {
    fn props(&self) -> Result<Props<'a>, String> {
        let mut set = std::ptr::null_mut();
        let status = unsafe { (self.suites.effect.get_property_set)(self.handle, &mut set) };
        check(status, "the property set of", c"the effect")?;
        Ok(Props::new(self.suites, set))
    }

    fn describe(&self) -> Result<OfxStatus, String> {
        let props = self.props()?;
        props.set_str(PROP_LABEL, 0, c"LCT Scene")?;
        props.set_str(PROP_GROUPING, 0, c"lct")?;
        props.set_strs(
            PROP_SUPPORTED_CONTEXTS,
            &[CONTEXT_GENERATOR, CONTEXT_GENERAL],
        )?;
        props.set_strs(
            PROP_SUPPORTED_PIXEL_DEPTHS,
            &[BIT_DEPTH_FLOAT, BIT_DEPTH_BYTE],
        )?;
        props.set_int(PROP_SUPPORTS_TILES, 0, 0)?;
        props.set_int(PROP_HOST_FRAME_THREADING, 0, 0)?;
        props.set_str(PROP_RENDER_THREAD_SAFETY, 0, RENDER_INSTANCE_SAFE)?;
        Ok(STAT_OK)
    }

    fn describe_in_context(&self) -> Result<OfxStatus, String> {
        for (name, optional) in [
            (OUTPUT_CLIP, false),
            (c"Identity", true),
            (c"Environment", true),
        ] {
            let mut set = std::ptr::null_mut();
            let status =
                unsafe { (self.suites.effect.clip_define)(self.handle, name.as_ptr(), &mut set) };
            check(status, "defining clip", name)?;
            let clip = Props::new(self.suites, set);
            clip.set_strs(PROP_SUPPORTED_COMPONENTS, &[COMPONENT_RGBA, COMPONENT_RGB])?;
            if optional {
                clip.set_int(PROP_CLIP_OPTIONAL, 0, 1)?;
            }
        }
        let mut param_set = std::ptr::null_mut();
        check(
            unsafe { (self.suites.effect.get_param_set)(self.handle, &mut param_set) },
            "the parameter set of",
            c"the effect",
        )?;
        for spec in PARAMS {
            let kind = match spec.kind {
                ParamKind::Text { .. } | ParamKind::Directory => PARAM_TYPE_STRING,
                ParamKind::Int { .. } => PARAM_TYPE_INTEGER,
                ParamKind::Choice { .. } => PARAM_TYPE_CHOICE,
            };
            let mut set = std::ptr::null_mut();
            let status = unsafe {
                (self.suites.param.param_define)(
                    param_set,
                    kind.as_ptr(),
                    spec.name.as_ptr(),
                    &mut set,
                )
            };
            check(status, "defining parameter", spec.name)?;
            let param = Props::new(self.suites, set);
            param.set_str(PROP_LABEL, 0, spec.label)?;
            param.set_str(PARAM_HINT, 0, spec.hint)?;
            match &spec.kind {
                ParamKind::Text { default, multiline } => {
                    param.set_str(PARAM_DEFAULT, 0, default)?;
                    let mode = if *multiline {
                        STRING_MULTI_LINE
                    } else {
                        STRING_SINGLE_LINE
                    };
                    param.set_str(PARAM_STRING_MODE, 0, mode)?;
                    param.set_int(PARAM_ANIMATES, 0, 0)?;
                }
                ParamKind::Directory => {
                    param.set_str(PARAM_DEFAULT, 0, c"")?;
                    param.set_str(PARAM_STRING_MODE, 0, STRING_DIRECTORY_PATH)?;
                    param.set_int(PARAM_ANIMATES, 0, 0)?;
                }
                ParamKind::Int { default, min, max } => {
                    param.set_int(PARAM_DEFAULT, 0, *default)?;
                    param.set_int(PARAM_MIN, 0, *min)?;
                    param.set_int(PARAM_MAX, 0, *max)?;
                    param.set_int(PARAM_DISPLAY_MIN, 0, *min)?;
                    param.set_int(PARAM_DISPLAY_MAX, 0, (*max).min(1000))?;
                    param.set_int(PARAM_ANIMATES, 0, 0)?;
                }
                ParamKind::Choice { options, default } => {
                    param.set_strs(PARAM_CHOICE_OPTION, options)?;
                    param.set_int(PARAM_DEFAULT, 0, *default)?;
                    param.set_int(PARAM_ANIMATES, 0, 0)?;
                }
            }
        }
        Ok(STAT_OK)
    }

    fn create_instance(&self) -> Result<OfxStatus, String> {
        let instance = Box::new(Instance {
            scene: Mutex::new(None),
        });
        self.props()?
            .set_pointer(PROP_INSTANCE_DATA, Box::into_raw(instance).cast())?;
        Ok(STAT_OK)
    }

    fn destroy_instance(&self) -> Result<OfxStatus, String> {
        let props = self.props()?;
        let pointer = props.pointer(PROP_INSTANCE_DATA)?;
        if !pointer.is_null() {
            props.set_pointer(PROP_INSTANCE_DATA, std::ptr::null_mut())?;
            // SAFETY: made by Box::into_raw in create_instance and cleared above.
            drop(unsafe { Box::from_raw(pointer.cast::<Instance>()) });
        }
        Ok(STAT_OK)
    }

    fn instance(&self) -> Result<&'a Instance, String> {
        let pointer = self.props()?.pointer(PROP_INSTANCE_DATA)?;
        // SAFETY: set in create_instance and live until destroy_instance.
        unsafe { pointer.cast::<Instance>().as_ref() }
            .ok_or_else(|| "LCT Scene: an instance action on an instance not created".into())
    }

    fn param_handle(&self, name: &CStr) -> Result<ParamHandle, String> {
        let mut param_set = std::ptr::null_mut();
        check(
            unsafe { (self.suites.effect.get_param_set)(self.handle, &mut param_set) },
            "the parameter set of",
            c"the effect",
        )?;
        let mut param = std::ptr::null_mut();
        let status = unsafe {
            (self.suites.param.param_get_handle)(
                param_set,
                name.as_ptr(),
                &mut param,
                std::ptr::null_mut(),
            )
        };
        check(status, "parameter", name)?;
        Ok(param)
    }

    fn int_param(&self, name: &CStr, time: f64) -> Result<c_int, String> {
        let mut value: c_int = 0;
        let param = self.param_handle(name)?;
        // SAFETY: an integer parameter takes one `int*`.
        let status = unsafe {
            (self.suites.param.param_get_value_at_time)(param, time, &mut value as *mut c_int)
        };
        check(status, "the value of", name)?;
        Ok(value)
    }

    fn string_param(&self, name: &CStr, time: f64) -> Result<String, String> {
        let mut value: *mut c_char = std::ptr::null_mut();
        let param = self.param_handle(name)?;
        // SAFETY: a string parameter takes one `char**`; the host owns the string.
        let status = unsafe {
            (self.suites.param.param_get_value_at_time)(param, time, &mut value as *mut *mut c_char)
        };
        check(status, "the value of", name)?;
        if value.is_null() {
            return Ok(String::new());
        }
        Ok(unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned())
    }

    fn color_space(&self, time: f64) -> Result<ColorSpace, String> {
        Ok(match self.int_param(c"color_space", time)? {
            1 => ColorSpace::ACESCG,
            2 => ColorSpace::SRGB,
            _ => ColorSpace::LINEAR,
        })
    }

    fn request(&self, time: f64, frame_size: Option<(u32, u32)>) -> Result<SceneRequest, Failure> {
        let mode = self.int_param(c"mode", time)?;
        let mut request = SceneRequest {
            model: self.string_param(c"model", time)?,
            global_prompt: self.string_param(c"global_prompt", time)?,
            characters: self.string_param(c"characters", time)?,
            shots: self.string_param(c"shots", time)?,
            mode: MODES
                .get(mode as usize)
                .unwrap_or(&MODES[0])
                .to_string_lossy()
                .into_owned(),
            frames: self.int_param(c"frames", time)?.clamp(1, 64) as i64,
            seed: self.int_param(c"seed", time)?.max(0) as i64,
            steps: self.int_param(c"steps", time)?.clamp(1, 500) as i64,
            identity: None,
            environment: None,
        };
        if let Some(size) = frame_size {
            let color_space = self.color_space(time)?;
            request.identity = self.reference(c"Identity", time, size, color_space)?;
            request.environment = self.reference(c"Environment", time, size, color_space)?;
        }
        Ok(request)
    }

    fn region_of_definition(&self, _in_args: Props, out_args: Props) -> Result<OfxStatus, String> {
        let model = self.string_param(c"model", 0.0)?;
        let (width, height) = scene::load_model(&model)
            .and_then(|m| scene::frame_size(&m))
            .map_err(failure_message)?;
        for (i, v) in [0.0, 0.0, width as f64, height as f64]
            .into_iter()
            .enumerate()
        {
            out_args.set_double(PROP_REGION_OF_DEFINITION, i as c_int, v)?;
        }
        Ok(STAT_OK)
    }

    fn time_domain(&self, out_args: Props) -> Result<OfxStatus, String> {
        let request = self.request(0.0, None).map_err(failure_message)?;
        let shot = self.int_param(c"shot", 0.0)?;
        let shots = if shot > 0 {
            1
        } else {
            scene::shot_count(&request).map_err(failure_message)?.max(1)
        };
        let last = (shots as i64 * request.frames - 1) as f64;
        out_args.set_double(PROP_FRAME_RANGE, 0, 0.0)?;
        out_args.set_double(PROP_FRAME_RANGE, 1, last)?;
        Ok(STAT_OK)
    }

    fn render(&self, in_args: Props) -> Result<OfxStatus, String> {
        let time = in_args.double(PROP_TIME, 0)?;
        let window: Vec<c_int> = (0..4)
            .map(|i| in_args.int(PROP_RENDER_WINDOW, i))
            .collect::<Result<_, _>>()?;
        let scale = (
            in_args.double(PROP_RENDER_SCALE, 0)?,
            in_args.double(PROP_RENDER_SCALE, 1)?,
        );
        let instance = self.instance()?;
        let output = self
            .clip_image(OUTPUT_CLIP, time)?
            .ok_or("LCT Scene: the host gave no output image")?;
        let result = self.render_into(instance, &output, time, &window, scale);
        self.release(output);
        match result {
            Ok(()) => Ok(STAT_OK),
            // The host asked to stop: no message, and the image is not valid.
            Err(Failure::Aborted) => Ok(STAT_FAILED),
            Err(Failure::Error(message)) => Err(message),
        }
    }

    fn render_into(
        &self,
        instance: &Instance,
        output: &Image,
        time: f64,
        window: &[c_int],
        scale: (f64, f64),
    ) -> Result<(), Failure> {
        let model = self.string_param(c"model", time)?;
        let frame_size = scene::frame_size(&scene::load_model(&model)?)?;
        let request = self.request(time, Some(frame_size))?;
        let shot = self.int_param(c"shot", time)?.max(0) as u32;
        let color_space = if output.float {
            self.color_space(time)?
        } else {
            ColorSpace::SRGB
        };

        let mut cache = instance.scene.lock().unwrap_or_else(|e| e.into_inner());
        let progress_suite = self.suites.progress;
        if let Some(progress) = progress_suite {
            unsafe { (progress.progress_start)(self.handle, c"LCT Scene: generating".as_ptr()) };
        }
        let effect_suite = self.suites.effect;
        let handle = self.handle;
        let mut on_step = |step: u32, total: u32| {
            let go_on = unsafe { (effect_suite.abort)(handle) } == 0;
            let shown = progress_suite.is_none_or(|p| {
                let fraction = step as f64 / total.max(1) as f64;
                let status = unsafe { (p.progress_update)(handle, fraction) };
                status != STAT_REPLY_NO // the host's progress bar asked to stop
            });
            go_on && shown
        };
        let generated = scene::scene(&mut cache, &request, &mut on_step);
        if let Some(progress) = progress_suite {
            unsafe { (progress.progress_end)(self.handle) };
        }
        let scene = generated?;
        let index = scene.frame_at(shot, time)?;
        let frame = scene.frames.read_frames_f32(index, 1, color_space)?;
        write_frame(output, &frame, window, scale);
        Ok(())
    }

    fn clip_image(&self, name: &CStr, time: f64) -> Result<Option<Image<'a>>, String> {
        let mut clip = std::ptr::null_mut();
        let status = unsafe {
            (self.suites.effect.clip_get_handle)(
                self.handle,
                name.as_ptr(),
                &mut clip,
                std::ptr::null_mut(),
            )
        };
        check(status, "clip", name)?;
        let mut set = std::ptr::null_mut();
        let status =
            unsafe { (self.suites.effect.clip_get_image)(clip, time, std::ptr::null(), &mut set) };
        if status != STAT_OK || set.is_null() {
            return Ok(None); // kOfxStatFailed: no image at this time (an unconnected clip)
        }
        let props = Props::new(self.suites, set);
        let image = (|| {
            let depth = props.string(PROP_PIXEL_DEPTH)?;
            let components = props.string(PROP_COMPONENTS)?;
            let float = match depth.as_str() {
                "OfxBitDepthFloat" => true,
                "OfxBitDepthByte" => false,
                other => return Err(format!("LCT Scene: clip {name:?} has pixel depth {other}; this effect reads float and byte")),
            };
            let channels = match components.as_str() {
                "OfxImageComponentRGBA" => 4,
                "OfxImageComponentRGB" => 3,
                other => return Err(format!("LCT Scene: clip {name:?} has components {other}; this effect reads RGBA and RGB")),
            };
            let bounds = [
                props.int(IMAGE_BOUNDS, 0)?,
                props.int(IMAGE_BOUNDS, 1)?,
                props.int(IMAGE_BOUNDS, 2)?,
                props.int(IMAGE_BOUNDS, 3)?,
            ];
            let row_bytes = props.int(IMAGE_ROW_BYTES, 0)? as isize;
            let data = props.pointer(IMAGE_DATA)?.cast::<u8>();
            let sample = if float { 4 } else { 1 };
            let width = (bounds[2] - bounds[0]).max(0) as isize;
            if data.is_null()
                || row_bytes.unsigned_abs() < (width * channels as isize * sample) as usize
            {
                return Err(format!("LCT Scene: clip {name:?} gave an image without pixels or with rows of {row_bytes} bytes for {width} pixels"));
            }
            Ok((data, bounds, row_bytes, float, channels))
        })();
        match image {
            Ok((data, bounds, row_bytes, float, channels)) => Ok(Some(Image {
                props,
                data,
                bounds,
                row_bytes,
                float,
                channels,
            })),
            Err(message) => {
                unsafe { (self.suites.effect.clip_release_image)(set) };
                Err(message)
            }
        }
    }

    fn release(&self, image: Image) {
        unsafe { (self.suites.effect.clip_release_image)(image.props.set) };
    }

    /// An input clip's image at `time`, resampled to the model's frame size (nearest), or
    /// `None` when the clip is not connected.
    fn reference(
        &self,
        name: &CStr,
        time: f64,
        (width, height): (u32, u32),
        color_space: ColorSpace,
    ) -> Result<Option<Reference>, String> {
        let mut clip = std::ptr::null_mut();
        let mut clip_props = std::ptr::null_mut();
        let status = unsafe {
            (self.suites.effect.clip_get_handle)(
                self.handle,
                name.as_ptr(),
                &mut clip,
                &mut clip_props,
            )
        };
        if status != STAT_OK {
            return Ok(None); // a host context without this clip
        }
        if Props::new(self.suites, clip_props)
            .int(PROP_CLIP_CONNECTED, 0)
            .unwrap_or(0)
            == 0
        {
            return Ok(None);
        }
        let Some(image) = self.clip_image(name, time)? else {
            return Ok(None);
        };
        let [x1, y1, x2, y2] = image.bounds;
        let (source_width, source_height) = ((x2 - x1).max(0) as u32, (y2 - y1).max(0) as u32);
        if source_width == 0 || source_height == 0 {
            self.release(image);
            return Err(format!("LCT Scene: clip {name:?} gave an empty image"));
        }
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        for row in 0..height {
            // Our rows run top to bottom, OFX's from the bottom up.
            let source_y =
                y1 + ((height - 1 - row) as u64 * source_height as u64 / height as u64) as i32;
            for column in 0..width {
                let source_x = x1 + (column as u64 * source_width as u64 / width as u64) as i32;
                let rgb = read_pixel(&image, source_x, source_y);
                pixels.extend_from_slice(&rgb);
            }
        }
        let color_space = if image.float {
            color_space
        } else {
            ColorSpace::SRGB
        };
        self.release(image);
        Ok(Some(Reference {
            width,
            height,
            color_space,
            pixels,
        }))
    }
}

fn failure_message(failure: Failure) -> String {
    match failure {
        Failure::Aborted => "LCT Scene: stopped".into(),
        Failure::Error(message) => message,
    }
}

fn pixel_pointer(image: &Image, x: i32, y: i32) -> *mut u8 {
    let sample = if image.float { 4 } else { 1 };
    let row = (y - image.bounds[1]) as isize * image.row_bytes;
    let column = (x - image.bounds[0]) as isize * (image.channels * sample) as isize;
    image.data.wrapping_offset(row + column)
}

fn read_pixel(image: &Image, x: i32, y: i32) -> [f32; 3] {
    let pointer = pixel_pointer(image, x, y);
    // SAFETY: (x, y) lies inside the image's bounds, whose rows the host laid out as told.
    unsafe {
        if image.float {
            let p = pointer.cast::<f32>();
            [
                p.read_unaligned(),
                p.add(1).read_unaligned(),
                p.add(2).read_unaligned(),
            ]
        } else {
            [
                *pointer as f32 / 255.0,
                *pointer.add(1) as f32 / 255.0,
                *pointer.add(2) as f32 / 255.0,
            ]
        }
    }
}

/// Writes `frame` (top-down RGB at full resolution) into the output image over `window`,
/// at the render scale (nearest sample); outside the frame, transparent black.
fn write_frame(image: &Image, frame: &lct_host::FloatFrames, window: &[c_int], scale: (f64, f64)) {
    let [bx1, by1, bx2, by2] = image.bounds;
    let (x1, y1) = (window[0].max(bx1), window[1].max(by1));
    let (x2, y2) = (window[2].min(bx2), window[3].min(by2));
    let (width, height) = (frame.width as i64, frame.height as i64);
    for y in y1..y2 {
        let source_y = ((y as f64 + 0.5) / scale.1).floor() as i64;
        for x in x1..x2 {
            let source_x = ((x as f64 + 0.5) / scale.0).floor() as i64;
            let inside = (0..width).contains(&source_x) && (0..height).contains(&source_y);
            let rgba = if inside {
                let row = (height - 1 - source_y) as usize; // bottom-up to top-down
                let at = (row * frame.width as usize + source_x as usize) * frame.channels as usize;
                [
                    frame.pixels[at],
                    frame.pixels[at + 1],
                    frame.pixels[at + 2],
                    1.0,
                ]
            } else {
                [0.0; 4]
            };
            let pointer = pixel_pointer(image, x, y);
            // SAFETY: (x, y) is inside the image's bounds.
            unsafe {
                for (c, value) in rgba.iter().take(image.channels).enumerate() {
                    if image.float {
                        pointer.cast::<f32>().add(c).write_unaligned(*value);
                    } else {
                        *pointer.add(c) = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
}
