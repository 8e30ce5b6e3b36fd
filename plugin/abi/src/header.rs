//! Generation of `include/lct_plugin.h` from the Rust definitions.
//!
//! The list in [`c_header`] is the only place that decides what the header contains and in
//! which order (definitions before use).

use crate::{
    CItem, LctColorSpace, LctExecuteOptions, LctFrameBuffer, LctFramesInfo, LctHandle, LctNodeDesc,
    LctNodeFlags, LctParam, LctPluginApi, LctPortDesc, LctPortFlags, LctSampleFormat, LctStatus,
    LctValueKind, LctWidgetDesc, LctWidgetFlags, PreviewFnTypedef, ProgressFnTypedef,
    LCT_ABI_VERSION, LCT_ENTRY_SYMBOL, LCT_OLDEST_ABI_VERSION,
};

/// The complete C header, byte for byte what `plugin/abi/include/lct_plugin.h` must contain.
pub fn c_header() -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "/*
 * lct_plugin.h: the C interface of an lct plugin (ABI version {LCT_ABI_VERSION}).
 *
 * GENERATED from plugin/abi/src/lib.rs by lct-abi; do not edit.
 * Regenerate with: LCT_BLESS=1 cargo test -p lct-abi
 *
 * Usage: dlopen the plugin, dlsym(\"{LCT_ENTRY_SYMBOL}\"), call it, check struct_size and
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
extern \"C\" {{
#endif

/** Version of the boundary's layout; fields are only ever appended. */
#define LCT_ABI_VERSION {LCT_ABI_VERSION}u
/** The oldest abi_version a host built with this header loads. */
#define LCT_OLDEST_ABI_VERSION {LCT_OLDEST_ABI_VERSION}u
/** Name of the exported entry symbol. */
#define LCT_ENTRY_SYMBOL \"{LCT_ENTRY_SYMBOL}\"

/** Whether a `type` declared `size` bytes long holds all of `field`. */
#define LCT_HAS_FIELD(type, field, size) \\
    (offsetof(type, field) + sizeof(((type*)0)->field) <= (size_t)(size))
/** Whether the table `api` provides the function `name` (appended functions may be absent). */
#define LCT_HAS_FUNCTION(api, name) \\
    (LCT_HAS_FIELD(LctPluginApi, name, (api)->struct_size) && (api)->name != NULL)

"
    ));
    LctStatus::c_definition(&mut out);
    LctValueKind::c_definition(&mut out);
    LctColorSpace::c_definition(&mut out);
    LctSampleFormat::c_definition(&mut out);
    LctNodeFlags::c_definition(&mut out);
    LctPortFlags::c_definition(&mut out);
    LctWidgetFlags::c_definition(&mut out);
    LctHandle::c_definition(&mut out);
    ProgressFnTypedef::c_definition(&mut out);
    LctPortDesc::c_definition(&mut out);
    LctWidgetDesc::c_definition(&mut out);
    LctNodeDesc::c_definition(&mut out);
    LctParam::c_definition(&mut out);
    LctFramesInfo::c_definition(&mut out);
    LctFrameBuffer::c_definition(&mut out);
    PreviewFnTypedef::c_definition(&mut out);
    LctExecuteOptions::c_definition(&mut out);
    LctPluginApi::c_definition(&mut out);
    out.push_str(&format!(
        "/** Type of the entry point: returns the plugin's static table, or NULL. */
typedef const LctPluginApi* (*LctPluginEntryFn)(void);

/** The entry point, when linking against the plugin directly instead of using dlsym. */
const LctPluginApi* {LCT_ENTRY_SYMBOL}(void);

#ifdef __cplusplus
}}
#endif

#endif /* LCT_PLUGIN_H */
"
    ));
    out
}

/// `sizeof` of every struct in the header, for the layout test that compiles the header with a
/// C compiler and compares.
pub fn struct_sizes() -> Vec<(&'static str, usize)> {
    use core::mem::size_of;
    vec![
        ("LctPortDesc", size_of::<LctPortDesc>()),
        ("LctWidgetDesc", size_of::<LctWidgetDesc>()),
        ("LctNodeDesc", size_of::<LctNodeDesc>()),
        ("LctParam", size_of::<LctParam>()),
        ("LctExecuteOptions", size_of::<LctExecuteOptions>()),
        ("LctFramesInfo", size_of::<LctFramesInfo>()),
        ("LctFrameBuffer", size_of::<LctFrameBuffer>()),
        ("LctPluginApi", size_of::<LctPluginApi>()),
    ]
}
