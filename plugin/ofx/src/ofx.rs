//! The parts of the OpenFX 1.4 C API this plug-in uses, declared from the specification:
//! the host and plug-in structs, the property, image-effect, parameter, progress and message
//! suites (function order as the standard fixes it), and the names of actions and properties.
//! The test host compiles against the official headers, so a mismatch here fails there.

use std::ffi::{c_char, c_double, c_int, c_uint, c_void};

pub type OfxStatus = c_int;
pub type OfxTime = c_double;
pub type PropertySet = *mut c_void;
pub type EffectHandle = *mut c_void;
pub type ClipHandle = *mut c_void;
pub type ParamSet = *mut c_void;
pub type ParamHandle = *mut c_void;

pub const STAT_OK: OfxStatus = 0;
pub const STAT_FAILED: OfxStatus = 1;
pub const STAT_ERR_FATAL: OfxStatus = 2;
pub const STAT_ERR_MISSING_HOST_FEATURE: OfxStatus = 4;
pub const STAT_REPLY_NO: OfxStatus = 13;
pub const STAT_REPLY_DEFAULT: OfxStatus = 14;

#[repr(C)]
pub struct OfxHost {
    pub host: PropertySet,
    pub fetch_suite: unsafe extern "C" fn(PropertySet, *const c_char, c_int) -> *const c_void,
}

pub type EntryPoint =
    unsafe extern "C" fn(*const c_char, *const c_void, PropertySet, PropertySet) -> OfxStatus;

#[repr(C)]
pub struct OfxPlugin {
    pub plugin_api: *const c_char,
    pub api_version: c_int,
    pub plugin_identifier: *const c_char,
    pub plugin_version_major: c_uint,
    pub plugin_version_minor: c_uint,
    pub set_host: unsafe extern "C" fn(*mut OfxHost),
    pub main_entry: EntryPoint,
}

#[repr(C)]
pub struct OfxRectD {
    pub x1: c_double,
    pub y1: c_double,
    pub x2: c_double,
    pub y2: c_double,
}

#[repr(C)]
pub struct PropertySuiteV1 {
    pub set_pointer:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut c_void) -> OfxStatus,
    pub set_string:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *const c_char) -> OfxStatus,
    pub set_double: unsafe extern "C" fn(PropertySet, *const c_char, c_int, c_double) -> OfxStatus,
    pub set_int: unsafe extern "C" fn(PropertySet, *const c_char, c_int, c_int) -> OfxStatus,
    pub set_pointer_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *const *mut c_void) -> OfxStatus,
    pub set_string_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *const *const c_char) -> OfxStatus,
    pub set_double_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *const c_double) -> OfxStatus,
    pub set_int_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *const c_int) -> OfxStatus,
    pub get_pointer:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut *mut c_void) -> OfxStatus,
    pub get_string:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut *mut c_char) -> OfxStatus,
    pub get_double:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut c_double) -> OfxStatus,
    pub get_int: unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut c_int) -> OfxStatus,
    pub get_pointer_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut *mut c_void) -> OfxStatus,
    pub get_string_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut *mut c_char) -> OfxStatus,
    pub get_double_n:
        unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut c_double) -> OfxStatus,
    pub get_int_n: unsafe extern "C" fn(PropertySet, *const c_char, c_int, *mut c_int) -> OfxStatus,
    pub reset: unsafe extern "C" fn(PropertySet, *const c_char) -> OfxStatus,
    pub get_dimension: unsafe extern "C" fn(PropertySet, *const c_char, *mut c_int) -> OfxStatus,
}

#[repr(C)]
pub struct ImageEffectSuiteV1 {
    pub get_property_set: unsafe extern "C" fn(EffectHandle, *mut PropertySet) -> OfxStatus,
    pub get_param_set: unsafe extern "C" fn(EffectHandle, *mut ParamSet) -> OfxStatus,
    pub clip_define:
        unsafe extern "C" fn(EffectHandle, *const c_char, *mut PropertySet) -> OfxStatus,
    pub clip_get_handle: unsafe extern "C" fn(
        EffectHandle,
        *const c_char,
        *mut ClipHandle,
        *mut PropertySet,
    ) -> OfxStatus,
    pub clip_get_property_set: unsafe extern "C" fn(ClipHandle, *mut PropertySet) -> OfxStatus,
    pub clip_get_image:
        unsafe extern "C" fn(ClipHandle, OfxTime, *const OfxRectD, *mut PropertySet) -> OfxStatus,
    pub clip_release_image: unsafe extern "C" fn(PropertySet) -> OfxStatus,
    pub clip_get_region_of_definition:
        unsafe extern "C" fn(ClipHandle, OfxTime, *mut OfxRectD) -> OfxStatus,
    pub abort: unsafe extern "C" fn(EffectHandle) -> c_int,
    pub image_memory_alloc:
        unsafe extern "C" fn(EffectHandle, usize, *mut *mut c_void) -> OfxStatus,
    pub image_memory_free: unsafe extern "C" fn(*mut c_void) -> OfxStatus,
    pub image_memory_lock: unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> OfxStatus,
    pub image_memory_unlock: unsafe extern "C" fn(*mut c_void) -> OfxStatus,
}

/// `paramGetValue` and `paramSetValue` are C variadic functions: one out-pointer per
/// dimension of the parameter.
#[repr(C)]
pub struct ParameterSuiteV1 {
    pub param_define:
        unsafe extern "C" fn(ParamSet, *const c_char, *const c_char, *mut PropertySet) -> OfxStatus,
    pub param_get_handle: unsafe extern "C" fn(
        ParamSet,
        *const c_char,
        *mut ParamHandle,
        *mut PropertySet,
    ) -> OfxStatus,
    pub param_set_get_property_set: unsafe extern "C" fn(ParamSet, *mut PropertySet) -> OfxStatus,
    pub param_get_property_set: unsafe extern "C" fn(ParamHandle, *mut PropertySet) -> OfxStatus,
    pub param_get_value: unsafe extern "C" fn(ParamHandle, ...) -> OfxStatus,
    pub param_get_value_at_time: unsafe extern "C" fn(ParamHandle, OfxTime, ...) -> OfxStatus,
    // The rest of the suite (derivatives, keys, editing) is not called; kept as opaque slots.
    pub rest: [*const c_void; 12],
}

#[repr(C)]
pub struct ProgressSuiteV1 {
    pub progress_start: unsafe extern "C" fn(*mut c_void, *const c_char) -> OfxStatus,
    pub progress_update: unsafe extern "C" fn(*mut c_void, c_double) -> OfxStatus,
    pub progress_end: unsafe extern "C" fn(*mut c_void) -> OfxStatus,
}

#[repr(C)]
pub struct MessageSuiteV1 {
    pub message: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        *const c_char,
        *const c_char,
        ...
    ) -> OfxStatus,
}

/// NUL-terminated names from the standard.
pub mod names {
    macro_rules! names {
        ($($name:ident = $value:literal;)*) => {
            $(pub const $name: &std::ffi::CStr = $value;)*
        };
    }
    names! {
        IMAGE_EFFECT_PLUGIN_API = c"OfxImageEffectPluginAPI";
        PROPERTY_SUITE = c"OfxPropertySuite";
        IMAGE_EFFECT_SUITE = c"OfxImageEffectSuite";
        PARAMETER_SUITE = c"OfxParameterSuite";
        PROGRESS_SUITE = c"OfxProgressSuite";
        MESSAGE_SUITE = c"OfxMessageSuite";
        MESSAGE_ERROR = c"OfxMessageError";

        ACTION_LOAD = c"OfxActionLoad";
        ACTION_UNLOAD = c"OfxActionUnload";
        ACTION_DESCRIBE = c"OfxActionDescribe";
        ACTION_CREATE_INSTANCE = c"OfxActionCreateInstance";
        ACTION_DESTROY_INSTANCE = c"OfxActionDestroyInstance";
        ACTION_DESCRIBE_IN_CONTEXT = c"OfxImageEffectActionDescribeInContext";
        ACTION_GET_REGION_OF_DEFINITION = c"OfxImageEffectActionGetRegionOfDefinition";
        ACTION_GET_CLIP_PREFERENCES = c"OfxImageEffectActionGetClipPreferences";
        ACTION_GET_TIME_DOMAIN = c"OfxImageEffectActionGetTimeDomain";
        ACTION_RENDER = c"OfxImageEffectActionRender";

        PROP_LABEL = c"OfxPropLabel";
        PROP_TIME = c"OfxPropTime";
        PROP_INSTANCE_DATA = c"OfxPropInstanceData";
        PROP_GROUPING = c"OfxImageEffectPluginPropGrouping";
        PROP_SUPPORTED_CONTEXTS = c"OfxImageEffectPropSupportedContexts";
        PROP_SUPPORTED_PIXEL_DEPTHS = c"OfxImageEffectPropSupportedPixelDepths";
        PROP_SUPPORTED_COMPONENTS = c"OfxImageEffectPropSupportedComponents";
        PROP_SUPPORTS_TILES = c"OfxImageEffectPropSupportsTiles";
        PROP_HOST_FRAME_THREADING = c"OfxImageEffectPluginPropHostFrameThreading";
        PROP_RENDER_THREAD_SAFETY = c"OfxImageEffectPluginRenderThreadSafety";
        RENDER_INSTANCE_SAFE = c"OfxImageEffectRenderInstanceSafe";
        CONTEXT_GENERATOR = c"OfxImageEffectContextGenerator";
        CONTEXT_GENERAL = c"OfxImageEffectContextGeneral";
        OUTPUT_CLIP = c"Output";
        PROP_CLIP_OPTIONAL = c"OfxImageClipPropOptional";
        PROP_CLIP_CONNECTED = c"OfxImageClipPropConnected";
        PROP_FRAME_VARYING = c"OfxImageEffectFrameVarying";
        PROP_FRAME_RANGE = c"OfxImageEffectPropFrameRange";
        PROP_REGION_OF_DEFINITION = c"OfxImageEffectPropRegionOfDefinition";
        PROP_RENDER_WINDOW = c"OfxImageEffectPropRenderWindow";
        PROP_RENDER_SCALE = c"OfxImageEffectPropRenderScale";
        PROP_PIXEL_DEPTH = c"OfxImageEffectPropPixelDepth";
        PROP_COMPONENTS = c"OfxImageEffectPropComponents";
        IMAGE_DATA = c"OfxImagePropData";
        IMAGE_BOUNDS = c"OfxImagePropBounds";
        IMAGE_ROW_BYTES = c"OfxImagePropRowBytes";
        BIT_DEPTH_FLOAT = c"OfxBitDepthFloat";
        BIT_DEPTH_BYTE = c"OfxBitDepthByte";
        COMPONENT_RGBA = c"OfxImageComponentRGBA";
        COMPONENT_RGB = c"OfxImageComponentRGB";

        PARAM_TYPE_STRING = c"OfxParamTypeString";
        PARAM_TYPE_INTEGER = c"OfxParamTypeInteger";
        PARAM_TYPE_CHOICE = c"OfxParamTypeChoice";
        PARAM_DEFAULT = c"OfxParamPropDefault";
        PARAM_HINT = c"OfxParamPropHint";
        PARAM_MIN = c"OfxParamPropMin";
        PARAM_MAX = c"OfxParamPropMax";
        PARAM_DISPLAY_MIN = c"OfxParamPropDisplayMin";
        PARAM_DISPLAY_MAX = c"OfxParamPropDisplayMax";
        PARAM_ANIMATES = c"OfxParamPropAnimates";
        PARAM_STRING_MODE = c"OfxParamPropStringMode";
        STRING_MULTI_LINE = c"OfxParamStringIsMultiLine";
        STRING_SINGLE_LINE = c"OfxParamStringIsSingleLine";
        STRING_DIRECTORY_PATH = c"OfxParamStringIsDirectoryPath";
        PARAM_CHOICE_OPTION = c"OfxParamPropChoiceOption";
    }
}
