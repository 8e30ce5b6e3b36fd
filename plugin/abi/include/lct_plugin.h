/*
 * lct_plugin.h: the C interface of an lct plugin (ABI version 3).
 *
 * GENERATED from plugin/abi/src/lib.rs by lct-abi; do not edit.
 * Regenerate with: LCT_BLESS=1 cargo test -p lct-abi
 *
 * Usage: dlopen the plugin, dlsym("lct_plugin_entry"), call it, check struct_size and
 * abi_version, call initialize(), then describe and execute nodes. Values are opaque handles;
 * release every handle you receive. Every function reports failures through LctStatus and a
 * per-thread message from last_error(); none of them unwinds or aborts on bad input.
 *
 * Growth both ways: either side may be the newer one. Structs that grow carry their size and
 * arrays their element size; read the fields inside the declared size (LCT_HAS_FIELD), treat
 * the rest as zero, and step through arrays by the declared element size. Appended functions
 * may be absent from an older plugin (LCT_HAS_FUNCTION).
 */
#ifndef LCT_PLUGIN_H
#define LCT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Version of the boundary's layout; fields are only ever appended. */
#define LCT_ABI_VERSION 3u
/** The oldest abi_version a host built with this header loads. */
#define LCT_OLDEST_ABI_VERSION 1u
/** Name of the exported entry symbol. */
#define LCT_ENTRY_SYMBOL "lct_plugin_entry"

/** Whether a `type` declared `size` bytes long holds all of `field`. */
#define LCT_HAS_FIELD(type, field, size) \
    (offsetof(type, field) + sizeof(((type*)0)->field) <= (size_t)(size))
/** Whether the table `api` provides the function `name` (appended functions may be absent). */
#define LCT_HAS_FUNCTION(api, name) \
    (LCT_HAS_FIELD(LctPluginApi, name, (api)->struct_size) && (api)->name != NULL)

/**
 * Result of every table function that can fail. On anything but `OK` the calling thread's
 * last error message (see `last_error`) says what and where.
 */
typedef int32_t LctStatus;
/** Success. */
#define LCT_STATUS_OK ((LctStatus)0)
/** A null pointer, malformed string, unknown parameter name or wrong argument count. */
#define LCT_STATUS_INVALID_ARGUMENT ((LctStatus)1)
/** The handle is not live: never issued, already released, or from another plugin. */
#define LCT_STATUS_BAD_HANDLE ((LctStatus)2)
/** A value or parameter of the wrong kind (a STRING where FRAMES was expected). */
#define LCT_STATUS_WRONG_KIND ((LctStatus)3)
/** A parameter, index or frame range outside what is allowed. */
#define LCT_STATUS_OUT_OF_RANGE ((LctStatus)4)
/** The progress callback asked to stop; nothing was produced and no handle leaked. */
#define LCT_STATUS_CANCELLED ((LctStatus)5)
/** The plugin panicked; the panic was caught at the boundary and the plugin is still usable. */
#define LCT_STATUS_PANICKED ((LctStatus)6)
/** A bug in the plugin (an invariant did not hold). */
#define LCT_STATUS_INTERNAL ((LctStatus)7)
/** No node type with that id or index. */
#define LCT_STATUS_NOT_FOUND ((LctStatus)8)
/** The caller's buffer is too small; the required size was reported where possible. */
#define LCT_STATUS_BUFFER_TOO_SMALL ((LctStatus)9)
/** The node ran and failed (an I/O error, an invalid scene...). */
#define LCT_STATUS_NODE_FAILED ((LctStatus)10)
/**
 * The plugin does not provide the function: its table is older than the function. Hosts
 * report it without calling anything (since ABI version 2).
 */
#define LCT_STATUS_UNSUPPORTED ((LctStatus)11)

/**
 * Kind of a value, a port or a widget. Port kinds are spelled in UPPERCASE, as node editors
 * expect.
 */
typedef uint32_t LctValueKind;
/** No value / not a valid kind. */
#define LCT_KIND_NONE ((LctValueKind)0)
/** 64-bit signed integer. */
#define LCT_KIND_INT ((LctValueKind)1)
/** 64-bit float. */
#define LCT_KIND_FLOAT ((LctValueKind)2)
/** Boolean (read as an int, 0 or 1). */
#define LCT_KIND_BOOL ((LctValueKind)3)
/** UTF-8 text. */
#define LCT_KIND_STRING ((LctValueKind)4)
/** One of a widget's fixed choices (UTF-8 text). */
#define LCT_KIND_ENUM ((LctValueKind)5)
/** A scene: global prompt, characters, shot plan, optional reference frames. */
#define LCT_KIND_SCENE ((LctValueKind)6)
/** A scene's shot latents with their timesteps and positions (stays on the plugin's device). */
#define LCT_KIND_LATENT ((LctValueKind)7)
/** A prefix view of cached keys and values (stays on the plugin's device). */
#define LCT_KIND_KV_CACHE ((LctValueKind)8)
/** A sequence of images; the only kind whose contents are copied out. */
#define LCT_KIND_FRAMES ((LctValueKind)9)
/** A loaded model. */
#define LCT_KIND_MODEL ((LctValueKind)10)

/** Colour space of frame samples. */
typedef uint32_t LctColorSpace;
/** Unspecified. In a copy request: "as stored". */
#define LCT_COLOR_SPACE_UNSPECIFIED ((LctColorSpace)0)
/** sRGB transfer function and primaries (what PNG viewers expect). */
#define LCT_COLOR_SPACE_SRGB ((LctColorSpace)1)
/** Linear light with sRGB / Rec.709 primaries. */
#define LCT_COLOR_SPACE_LINEAR ((LctColorSpace)2)
/** Scene-linear ACEScg (AP1 primaries), what compositing pipelines work in. */
#define LCT_COLOR_SPACE_ACESCG ((LctColorSpace)3)
/**
 * Another OCIO colour space (its name: `value_read_string` on the FRAMES); copy the frames
 * with SRGB, LINEAR or ACESCG as the target to have them converted.
 */
#define LCT_COLOR_SPACE_OTHER ((LctColorSpace)4)

/** Storage of one sample in an `LctFrameBuffer`. */
typedef uint32_t LctSampleFormat;
/** Not a valid format. */
#define LCT_SAMPLE_NONE ((LctSampleFormat)0)
/** 8-bit unsigned, 0..255 maps to 0.0..1.0. */
#define LCT_SAMPLE_U8 ((LctSampleFormat)1)
/** 32-bit float, nominal range 0.0..1.0. */
#define LCT_SAMPLE_F32 ((LctSampleFormat)2)

/** Bit flags of an `LctNodeDesc`. */
typedef uint32_t LctNodeFlags;
/** No flag. */
#define LCT_NODE_NONE ((LctNodeFlags)0)
/** An output node (writes files, shows results): evaluated when a graph names no targets. */
#define LCT_NODE_OUTPUT ((LctNodeFlags)1)
/** Same inputs may give different results: never served from a cache. */
#define LCT_NODE_NOT_IDEMPOTENT ((LctNodeFlags)2)

/** Bit flags of an `LctPortDesc`. */
typedef uint32_t LctPortFlags;
/** No flag: the input is required. */
#define LCT_PORT_NONE ((LctPortFlags)0)
/** The input may be left unconnected (pass `LctHandle::NULL`). */
#define LCT_PORT_OPTIONAL ((LctPortFlags)1)

/** Bit flags of an `LctWidgetDesc`. */
typedef uint32_t LctWidgetFlags;
/** No flag. */
#define LCT_WIDGET_NONE ((LctWidgetFlags)0)
/** A STRING widget meant for multi-line text (prompts). */
#define LCT_WIDGET_MULTILINE ((LctWidgetFlags)1)
/**
 * A STRING widget whose `choices` are names to offer (an OCIO config's colour spaces,
 * displays or views), not a limit: any text is accepted (ABI 3, added later; older
 * plugins never set it).
 */
#define LCT_WIDGET_SUGGESTIONS ((LctWidgetFlags)2)

/**
 * Opaque reference to an immutable value owned by the plugin; 0 is never live.
 * Release every handle you receive with `value_release`.
 */
typedef uint64_t LctHandle;
#define LCT_NULL_HANDLE ((LctHandle)0)

/**
 * Host progress callback, called by long-running nodes at every step.
 * `node_index` echoes LctExecuteOptions.node_index. Return 0 to continue, non-zero
 * to abort (the call then returns LCT_STATUS_CANCELLED).
 */
typedef int32_t (*LctProgressFn)(void* user_data, uint32_t node_index, uint32_t step, uint32_t total_steps);

/** An input or output socket of a node type. Strings are static and UTF-8. */
typedef struct LctPortDesc {
    /** Port name, unique among the node's inputs (or outputs), e.g. "scene". */
    const char* name;
    /** The kind in UPPERCASE ("FRAMES"), as node editors label sockets. */
    const char* kind_name;
    /** The kind as a number. */
    LctValueKind kind;
    /** LCT_PORT_* flags. */
    LctPortFlags flags;
    /** One line for a tooltip. */
    const char* tooltip;
} LctPortDesc;

/**
 * A parameter of a node type with its default and limits.
 *
 * INT and BOOL use the `int_*` fields (BOOL: 0 or 1), FLOAT the `float_*` fields, STRING and
 * ENUM `text_default`; ENUM lists its `choices`, and so does a STRING widget flagged
 * LCT_WIDGET_SUGGESTIONS (names to offer, not a limit). Unused fields are zero / null.
 */
typedef struct LctWidgetDesc {
    /** Parameter name, unique within the node, e.g. "steps". */
    const char* name;
    /** INT, FLOAT, BOOL, STRING or ENUM. */
    LctValueKind kind;
    /** LCT_WIDGET_* flags. */
    LctWidgetFlags flags;
    /** One line for a tooltip. */
    const char* tooltip;
    /** Default of an INT or BOOL widget. */
    int64_t int_default;
    /** Smallest allowed INT. */
    int64_t int_min;
    /** Largest allowed INT. */
    int64_t int_max;
    /** Suggested INT increment for a UI. */
    int64_t int_step;
    /** Default of a FLOAT widget. */
    double float_default;
    /** Smallest allowed FLOAT. */
    double float_min;
    /** Largest allowed FLOAT. */
    double float_max;
    /** Suggested FLOAT increment for a UI. */
    double float_step;
    /** Default of a STRING or ENUM widget. */
    const char* text_default;
    /**
     * The allowed values of an ENUM widget; the suggested values of a STRING widget
     * flagged LCT_WIDGET_SUGGESTIONS.
     */
    const char* const* choices;
    /** Number of entries in `choices`. */
    size_t choice_count;
} LctWidgetDesc;

/**
 * Static description of a node type, readable before anything runs. Valid as long as the
 * library is loaded (plugins are never unloaded).
 *
 * Growth: its size is `struct_size` when the plugin's `abi_version` is 2 or more; an ABI 1
 * plugin's descriptors end before `struct_size`. Read `inputs`, `outputs` and `widgets` with
 * the element sizes given here (`(const char*)inputs + i * port_desc_size`), not as C arrays
 * of this header's structs, and only the fields this header knows of each element.
 */
typedef struct LctNodeDesc {
    /** CamelCase id, stable across versions ("SceneContext"). */
    const char* id;
    /** Bumped when the node's results change for the same inputs (invalidates caches). */
    uint32_t version;
    /** LCT_NODE_* flags. */
    LctNodeFlags flags;
    /** Name for menus ("Scene Context"). */
    const char* display_name;
    /** Slash-separated menu path ("lct/scene"). */
    const char* category;
    /** What the node does, a sentence or two. */
    const char* description;
    /** Input ports, in the order `node_execute` expects their handles. */
    const LctPortDesc* inputs;
    /** Number of input ports. */
    size_t input_count;
    /** Output ports, in the order `node_execute` writes their handles. */
    const LctPortDesc* outputs;
    /** Number of output ports. */
    size_t output_count;
    /** Widgets (parameters). */
    const LctWidgetDesc* widgets;
    /** Number of widgets. */
    size_t widget_count;
    /* Newer fields: read as zero when the declared size does not cover them. */
    /** sizeof(LctNodeDesc) as the plugin knows it (ABI 2). */
    uint32_t struct_size;
    /**
     * Bytes from one element of `inputs` and `outputs` to the next (ABI 2); 0 means the
     * ABI 1 size of LctPortDesc.
     */
    uint32_t port_desc_size;
    /**
     * Bytes from one element of `widgets` to the next (ABI 2); 0 means the ABI 1 size of
     * LctWidgetDesc.
     */
    uint32_t widget_desc_size;
    /**
     * Zero. Ends the struct at a field, not padding, so a field appended later never lands
     * in bytes an older writer left unset.
     */
    uint32_t reserved;
} LctNodeDesc;

/**
 * One parameter value passed to `node_execute`. Widgets not mentioned take their default.
 *
 * `kind` says which field is read and must be the widget's kind (an INT is also accepted
 * for a FLOAT widget; STRING and ENUM are not interchangeable): INT and BOOL read
 * `int_value` (a BOOL is 0 or 1, anything else is LCT_STATUS_OUT_OF_RANGE), FLOAT reads
 * `float_value`, STRING and ENUM read `text_value` (UTF-8, NUL terminated).
 */
typedef struct LctParam {
    /** The widget's name. */
    const char* name;
    /** Kind of the value supplied. */
    LctValueKind kind;
    /** INT or BOOL value. */
    int64_t int_value;
    /** FLOAT value. */
    double float_value;
    /** STRING or ENUM value. */
    const char* text_value;
} LctParam;

/** Dimensions of a FRAMES value. */
typedef struct LctFramesInfo {
    /** Number of frames. */
    uint32_t frame_count;
    /** Width in pixels. */
    uint32_t width;
    /** Height in pixels. */
    uint32_t height;
    /** Channels per pixel (3 = RGB, 4 = RGBA). */
    uint32_t channels;
    /** Colour space the samples are stored in. */
    LctColorSpace color_space;
} LctFramesInfo;

/**
 * Pixels crossing the boundary: frame-major, rows top to bottom, channels interleaved, no
 * padding. Size in bytes = frame_count * height * width * channels * bytes per sample.
 *
 * `frames_copy`: the host sets `data`, `capacity_bytes`, `first_frame`, `frame_count` (0 = all
 * from `first_frame`), `sample_format` and `color_space` (UNSPECIFIED = as stored); the plugin
 * fills in the rest and converts. `frames_import`: the host sets every field.
 */
typedef struct LctFrameBuffer {
    /** The pixels. */
    void* data;
    /** Size of `data` in bytes. */
    size_t capacity_bytes;
    /** Index of the first frame in the buffer. */
    uint32_t first_frame;
    /** Number of frames in the buffer. */
    uint32_t frame_count;
    /** Width in pixels. */
    uint32_t width;
    /** Height in pixels. */
    uint32_t height;
    /** Channels per pixel (3 or 4). */
    uint32_t channels;
    /** LCT_SAMPLE_U8 or LCT_SAMPLE_F32. */
    LctSampleFormat sample_format;
    /** Colour space of the samples in `data`. */
    LctColorSpace color_space;
} LctFrameBuffer;

/**
 * Host preview callback: sampling nodes call it every `preview_every` steps (a
 * widget) with the shots' current estimate, one frame per shot, 8-bit sRGB RGB
 * (LCT_SAMPLE_U8, LCT_COLOR_SPACE_SRGB). `preview` and its pixels are valid only
 * during the call: copy what you keep. Return 0 to continue, non-zero to abort
 * (as LctProgressFn).
 */
typedef int32_t (*LctPreviewFn)(void* user_data, uint32_t node_index, uint32_t step, uint32_t total_steps, const LctFrameBuffer* preview);

/**
 * Optional settings of one `node_execute` call. Set `struct_size` to `sizeof(LctExecuteOptions)`;
 * fields are only ever appended. The plugin reads the fields inside `struct_size` and takes
 * zero for the rest, so a host built against an older header passes its smaller struct.
 */
typedef struct LctExecuteOptions {
    /** sizeof(LctExecuteOptions) as the host knows it; at least 4 (this field). */
    uint32_t struct_size;
    /* Newer fields: read as zero when the declared size does not cover them. */
    /** Echoed to `progress` and `preview` so one callback can serve a whole graph. */
    uint32_t node_index;
    /** Called at every step of long nodes; may be null. */
    LctProgressFn progress;
    /** Passed back to `progress` and `preview` untouched. */
    void* user_data;
    /** Base directory for relative output paths (SaveFrames); null means the current directory. */
    const char* output_directory;
    /**
     * Bytes from one element of `node_execute`'s `params` to the next (ABI 2); 0 means the
     * ABI 1 size of LctParam.
     */
    uint32_t param_size;
    /** Zero. Ends the struct at a field, not padding (see LctNodeDesc.reserved). */
    uint32_t reserved;
    /**
     * Called with a decoded look at the result every `preview_every` steps of sampling
     * nodes (ABI 3); may be null, and then no preview is made.
     */
    LctPreviewFn preview;
} LctExecuteOptions;

/**
 * The plugin's root function table, returned by `lct_plugin_entry`.
 *
 * A host reads `struct_size` and `abi_version` before anything else, requires
 * `abi_version >= LCT_OLDEST_ABI_VERSION` and a table that holds every function of that
 * version, then calls `initialize`. Functions appended since ABI 1 may be absent. Every
 * function is thread-safe, catches panics (LCT_STATUS_PANICKED), and on failure records a
 * message for the calling thread, readable with `last_error`. Out-pointers are written
 * only on LCT_STATUS_OK.
 */
typedef struct LctPluginApi {
    /** sizeof(LctPluginApi) as compiled into the plugin. */
    uint32_t struct_size;
    /** LCT_ABI_VERSION the plugin was built with. */
    uint32_t abi_version;
    /** Plugin name, static UTF-8. */
    const char* plugin_name;
    /** Plugin version, static UTF-8; part of every cache signature. */
    const char* plugin_version;
    /** Prepares the node registry. Call once after checking the table; calling again is harmless. */
    LctStatus (*initialize)(void);
    /**
     * Copies the calling thread's last error message (UTF-8, NUL terminated, truncated to
     * `capacity`) and returns its full length in bytes without the NUL; 0 when the last call
     * succeeded, even if host callbacks made failing calls during it. `buffer` may be null
     * to ask for the length.
     */
    size_t (*last_error)(char* buffer, size_t capacity);
    /** Number of node types. */
    uint32_t (*node_count)(void);
    /** Points `out_desc` at the static descriptor of node type `index` (0..node_count). */
    LctStatus (*node_describe)(uint32_t index, const LctNodeDesc** out_desc);
    /** Finds a node type by id; LCT_STATUS_NOT_FOUND if there is none. */
    LctStatus (*node_find)(const char* id, uint32_t* out_index);
    /**
     * Runs node type `index`. `params` are spaced `options->param_size` bytes apart (the
     * ABI 1 size of LctParam when `options` is null or gives 0). `inputs` holds one handle
     * per input port, in port order (LCT_NULL_HANDLE for an unconnected optional port);
     * trailing optional ports may be left out (`input_count` smaller), as a host written
     * before a node gained an optional input does. The call does not take ownership of
     * them. On success one new handle per output port is
     * written to `outputs`; the caller owns them. `options` may be null. On failure no
     * handle is created.
     */
    LctStatus (*node_execute)(uint32_t index, const LctParam* params, size_t param_count, const LctHandle* inputs, size_t input_count, const LctExecuteOptions* options, LctHandle* outputs, size_t output_capacity);
    /**
     * The part of `input` (on input port `port`) that node type `index` with these `params`
     * depends on, as a hash. Usually the value's content hash; a node may narrow it (a shot
     * generator depends on the prompts up to its shot only) so that caches are not
     * invalidated by edits it ignores. `params` have the ABI 1 layout of LctParam (there is
     * no options struct to declare another): a version that grows LctParam must append a
     * variant of this function that takes the element size.
     */
    LctStatus (*node_input_signature)(uint32_t index, const LctParam* params, size_t param_count, uint32_t port, LctHandle input, uint64_t* out_signature);
    /** Kind of a value. */
    LctStatus (*value_kind)(LctHandle handle, LctValueKind* out_kind);
    /**
     * Shape of a value: FRAMES [frames, height, width, channels], MODEL [parameters, frame
     * height, frame width], SCENE [shots], STRING and ENUM [bytes], scalars rank 0. Writes
     * the rank to `out_rank` and up to `capacity` dims; LCT_STATUS_BUFFER_TOO_SMALL (rank
     * still written) when `capacity` is less than the rank.
     */
    LctStatus (*value_shape)(LctHandle handle, uint64_t* out_dims, size_t capacity, size_t* out_rank);
    /** Content hash of a value, stable for a given plugin build. */
    LctStatus (*value_hash)(LctHandle handle, uint64_t* out_hash);
    /** Reads an INT or BOOL value. */
    LctStatus (*value_read_int)(LctHandle handle, int64_t* out_value);
    /** Reads a FLOAT (or INT) value. */
    LctStatus (*value_read_float)(LctHandle handle, double* out_value);
    /**
     * Copies a STRING or ENUM value (of a FRAMES value: the OCIO name of its colour space)
     * like `last_error` does, writes its length in bytes (without the NUL) to `out_len`
     * (required, like every out-pointer); LCT_STATUS_BUFFER_TOO_SMALL if it was truncated.
     */
    LctStatus (*value_read_string)(LctHandle handle, char* buffer, size_t capacity, size_t* out_len);
    /** Releases a handle. The value lives on while other handles or running nodes use it. */
    LctStatus (*value_release)(LctHandle handle);
    /** Dimensions and colour space of a FRAMES value. */
    LctStatus (*frames_info)(LctHandle handle, LctFramesInfo* out_info);
    /** Copies frames out of a FRAMES value into the host's buffer (see LctFrameBuffer). */
    LctStatus (*frames_copy)(LctHandle handle, LctFrameBuffer* buffer);
    /** Creates a FRAMES value from the host's pixels (a reference image, a plate). */
    LctStatus (*frames_import)(const LctFrameBuffer* buffer, LctHandle* out_handle);
    /** Number of live handles in this process; for leak checks. */
    uint64_t (*live_handle_count)(void);
    /* Appended functions: absent (NULL, or past struct_size) in older plugins;
       check with LCT_HAS_FUNCTION before calling. */
    /**
     * Writes a second handle to the same value to `out_handle`; release each handle on its
     * own. For hosts that give one value to several owners.
     * Since ABI version 2.
     */
    LctStatus (*value_retain)(LctHandle handle, LctHandle* out_handle);
} LctPluginApi;

/** Type of the entry point: returns the plugin's static table, or NULL. */
typedef const LctPluginApi* (*LctPluginEntryFn)(void);

/** The entry point, when linking against the plugin directly instead of using dlsym. */
const LctPluginApi* lct_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* LCT_PLUGIN_H */
