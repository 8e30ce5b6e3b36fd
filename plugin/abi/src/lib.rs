//! `lct-abi`: the contract between an lct plugin and any host, as `#[repr(C)]` types, plus the
//! plain-Rust rules both sides apply.
//!
//! Role: the single source of truth for the C boundary. The plugin (`lct-plugin`) fills an
//! [`LctPluginApi`] table; hosts (`lct-host`, C programs, Python ctypes) read it. The committed
//! header `include/lct_plugin.h` is generated from these definitions by [`c_header`]; a test
//! fails when it is stale (regenerate with `LCT_BLESS=1 cargo test -p lct-abi`). The [`widget`]
//! module is plain Rust, not C: the parameter value and the widget range check that the plugin
//! and every Rust host share, so the two sides cannot disagree.
//!
//! Invariants, so that either side may be the newer one:
//! - One exported C symbol, [`LCT_ENTRY_SYMBOL`], returns a pointer to a static
//!   [`LctPluginApi`] whose first two fields are `struct_size` and `abi_version`. Fields are only
//!   ever appended; every append bumps [`LCT_ABI_VERSION`]. A host loads any plugin whose
//!   `abi_version` is at least [`LCT_OLDEST_ABI_VERSION`] and whose table holds the version-1
//!   functions; a function appended later is absent when it is null or past the plugin's
//!   `struct_size`.
//! - Structs that may grow carry their size ([`LctExecuteOptions::struct_size`],
//!   [`LctNodeDesc::struct_size`]) and arrays of structs their element size
//!   ([`LctNodeDesc::port_desc_size`], [`LctExecuteOptions::param_size`]). A reader takes the
//!   fields inside the declared size and zero for the rest ([`read_prefix`], the one
//!   implementation of that rule), so every appended field means "as before" when zero. Never
//!   refuse a struct only because it is smaller; refuse sizes below the fields every version has
//!   ([`SizePrefixed::MIN_SIZE`]) or absurdly large ([`MAX_STRUCT_SIZE`]).
//! - Enumerations are `#[repr(transparent)]` integers with named constants, never Rust enums, so a
//!   value this version does not know (or garbage from C) is representable and never UB.
//! - Values never cross the boundary: they are opaque [`LctHandle`]s. Only frames are copied out,
//!   into an [`LctFrameBuffer`] tagged with its colour space.
//!
//! Must not depend on: anything. Both sides link this crate; it stays dependency-free.

use core::ffi::{c_char, c_void};

mod header;
mod size;
pub mod widget;

pub use header::{c_header, struct_sizes};
pub use size::{
    check_size, covered_len, read_array, read_prefix, stride_or_oldest, zeroed, SizeError,
    SizePrefixed, MAX_STRUCT_SIZE,
};

/// Version of the boundary's layout. Bumped on every append to a boundary struct.
///
/// - 1: the first table.
/// - 2: sizes that let structs grow: [`LctNodeDesc::struct_size`], `port_desc_size`,
///   `widget_desc_size`, [`LctExecuteOptions::param_size`]; [`LctPluginApi::value_retain`];
///   [`LctStatus::UNSUPPORTED`].
/// - 3: [`LctExecuteOptions::preview`], previews of long nodes' results as they run.
pub const LCT_ABI_VERSION: u32 = 3;

/// The oldest `abi_version` a host of this version still loads: everything since is appended.
pub const LCT_OLDEST_ABI_VERSION: u32 = 1;

/// Name of the one exported C entry point, of type [`LctPluginEntryFn`].
pub const LCT_ENTRY_SYMBOL: &str = "lct_plugin_entry";

/// Signature of [`LCT_ENTRY_SYMBOL`]: returns the plugin's static table (never freed), or null
/// when the plugin cannot provide one.
pub type LctPluginEntryFn = unsafe extern "C" fn() -> *const LctPluginApi;

/// Host progress callback, called by long-running nodes at every step (every sampler step).
///
/// `node_index` echoes [`LctExecuteOptions::node_index`] so one callback can serve a whole graph.
/// Return 0 to continue; any other value asks the node to stop, and the call then returns
/// [`LctStatus::CANCELLED`].
pub type LctProgressFn = unsafe extern "C" fn(
    user_data: *mut c_void,
    node_index: u32,
    step: u32,
    total_steps: u32,
) -> i32;

/// Host preview callback: sampling nodes call it every `preview_every` steps (a widget) with
/// the shots' current estimate, one frame per shot, 8-bit sRGB RGB
/// ([`LctSampleFormat::U8`], [`LctColorSpace::SRGB`]). `preview` and its pixels are valid only
/// during the call: copy what you keep. Return 0 to continue; any other value asks the node to
/// stop, as [`LctProgressFn`] does.
pub type LctPreviewFn = unsafe extern "C" fn(
    user_data: *mut c_void,
    node_index: u32,
    step: u32,
    total_steps: u32,
    preview: *const LctFrameBuffer,
) -> i32;

/// Rust types that have a spelling in the generated C header.
pub trait CType {
    /// The C type as written in a declaration before the name (`"uint32_t"`, `"const char*"`).
    fn c_type() -> String;
    /// Whether the C spelling already ends in `*` (decides where `const` goes when nesting).
    const IS_POINTER: bool = false;
}

/// Items that contribute a definition to the generated header.
pub trait CItem {
    /// Appends the C definition (with its doc comment) to `out`.
    fn c_definition(out: &mut String);
}

macro_rules! c_primitive {
    ($($rust:ty => $c:literal),* $(,)?) => {
        $(impl CType for $rust { fn c_type() -> String { $c.to_owned() } })*
    };
}
c_primitive!(u32 => "uint32_t", i32 => "int32_t", u64 => "uint64_t", i64 => "int64_t",
    f64 => "double", usize => "size_t", c_char => "char", c_void => "void");

impl<T: CType> CType for *const T {
    const IS_POINTER: bool = true;
    fn c_type() -> String {
        if T::IS_POINTER {
            format!("{} const*", T::c_type())
        } else {
            format!("const {}*", T::c_type())
        }
    }
}

impl<T: CType> CType for *mut T {
    const IS_POINTER: bool = true;
    fn c_type() -> String {
        format!("{}*", T::c_type())
    }
}

impl CType for Option<LctProgressFn> {
    fn c_type() -> String {
        "LctProgressFn".to_owned()
    }
}

impl CType for Option<LctPreviewFn> {
    fn c_type() -> String {
        "LctPreviewFn".to_owned()
    }
}

/// Writes `lines` (rustdoc lines, each starting with a space) as a C doc comment, dropping
/// rustdoc's link brackets.
fn push_doc(out: &mut String, indent: &str, lines: &[&str]) {
    let lines: Vec<String> = lines
        .iter()
        .map(|line| line.trim_end().replace("[`", "`").replace("`]", "`"))
        .collect();
    match lines.as_slice() {
        [] => {}
        [line] => out.push_str(&format!("{indent}/**{line} */\n")),
        _ => {
            out.push_str(&format!("{indent}/**\n"));
            for line in &lines {
                out.push_str(&format!("{indent} *{line}\n"));
            }
            out.push_str(&format!("{indent} */\n"));
        }
    }
}

/// An integer type with named constants: `#[repr(transparent)]` in Rust, a typedef plus
/// `#define`s in C.
macro_rules! c_enum {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident($repr:ty) as $prefix:literal {
            $( $(#[doc = $vdoc:literal])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[doc = $vdoc])* pub const $variant: Self = Self($value); )*
            /// Every named value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The constant's name (`"BAD_HANDLE"`), or `None` for a value this version does not
            /// name.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($variant)), )*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }

        impl CType for $name {
            fn c_type() -> String {
                stringify!($name).to_owned()
            }
        }

        impl CItem for $name {
            fn c_definition(out: &mut String) {
                push_doc(out, "", &[$($doc),*]);
                out.push_str(&format!("typedef {} {};\n", <$repr as CType>::c_type(), stringify!($name)));
                $(
                    push_doc(out, "", &[$($vdoc),*]);
                    out.push_str(&format!("#define {}_{} (({}){})\n", $prefix, stringify!($variant),
                        stringify!($name), $value));
                )*
                out.push('\n');
            }
        }
    };
}

/// A plain `#[repr(C)]` struct, mirrored field by field in C. Fields after `optional:` are
/// newer than the struct's minimum ([`SizePrefixed::MIN_SIZE`]): a reader treats those past the
/// size it was given as zero.
macro_rules! c_struct {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $fdoc:literal])* pub $field:ident : $ty:ty, )*
            $(
                optional:
                $( $(#[doc = $odoc:literal])* pub $ofield:ident : $oty:ty, )*
            )?
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
            $($( $(#[doc = $odoc])* pub $ofield: $oty, )*)?
        }

        // SAFETY: every field type is an integer, a float, a raw pointer, an optional function
        // pointer or a transparent integer, so any bytes (zero in particular) are a valid value;
        // the ends are computed by the compiler, in declaration (= offset) order.
        unsafe impl SizePrefixed for $name {
            const NAME: &'static str = stringify!($name);
            const MIN_SIZE: usize = last(&[$(core::mem::offset_of!($name, $field) + core::mem::size_of::<$ty>()),*]);
            const FIELD_ENDS: &'static [usize] = &[
                $(core::mem::offset_of!($name, $field) + core::mem::size_of::<$ty>(),)*
                $($(core::mem::offset_of!($name, $ofield) + core::mem::size_of::<$oty>(),)*)?
            ];
        }

        impl CType for $name {
            fn c_type() -> String {
                stringify!($name).to_owned()
            }
        }

        impl CItem for $name {
            fn c_definition(out: &mut String) {
                push_doc(out, "", &[$($doc),*]);
                out.push_str(&format!("typedef struct {} {{\n", stringify!($name)));
                $(
                    push_doc(out, "    ", &[$($fdoc),*]);
                    out.push_str(&format!("    {} {};\n", <$ty as CType>::c_type(), stringify!($field)));
                )*
                $(
                    out.push_str(OPTIONAL_FIELDS_COMMENT);
                    $(
                        push_doc(out, "    ", &[$($odoc),*]);
                        out.push_str(&format!("    {} {};\n", <$oty as CType>::c_type(), stringify!($ofield)));
                    )*
                )?
                out.push_str(&format!("}} {};\n\n", stringify!($name)));
            }
        }
    };
}

/// Marks, in the header, where a struct's optional (newer) fields begin.
const OPTIONAL_FIELDS_COMMENT: &str =
    "    /* Newer fields: read as zero when the declared size does not cover them. */\n";

/// The last element of a non-empty list, in a `const`.
const fn last(ends: &[usize]) -> usize {
    ends[ends.len() - 1]
}

/// The function table: data fields, then function pointers. The functions of ABI version 1 are
/// required; those under `appended:` name the version that added them and may be null (or lie
/// past a smaller `struct_size`) in an older plugin. Only ever appended to.
macro_rules! c_function_table {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident {
            $( $(#[doc = $ddoc:literal])* pub $dfield:ident : $dty:ty, )*
            functions:
            $( $(#[doc = $fdoc:literal])* fn $fname:ident ( $( $arg:ident : $aty:ty ),* $(,)? ) -> $ret:ty; )*
            appended:
            $( $(#[doc = $adoc:literal])* since $since:literal: fn $aname:ident ( $( $aarg:ident : $aaty:ty ),* $(,)? ) -> $aret:ty; )*
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            $( $(#[doc = $ddoc])* pub $dfield: $dty, )*
            $( $(#[doc = $fdoc])* pub $fname: Option<unsafe extern "C" fn($($arg: $aty),*) -> $ret>, )*
            $( $(#[doc = $adoc])* pub $aname: Option<unsafe extern "C" fn($($aarg: $aaty),*) -> $aret>, )*
        }

        // SAFETY: integers, pointers and optional function pointers only; ends by the compiler.
        unsafe impl SizePrefixed for $name {
            const NAME: &'static str = stringify!($name);
            const MIN_SIZE: usize = last(&[$(core::mem::offset_of!($name, $fname) + core::mem::size_of::<usize>()),*]);
            const FIELD_ENDS: &'static [usize] = &[
                $(core::mem::offset_of!($name, $dfield) + core::mem::size_of::<$dty>(),)*
                $(core::mem::offset_of!($name, $fname) + core::mem::size_of::<usize>(),)*
                $(core::mem::offset_of!($name, $aname) + core::mem::size_of::<usize>(),)*
            ];
        }

        impl $name {
            /// Names of the function fields, in table order.
            pub const FUNCTION_NAMES: &'static [&'static str] =
                &[$(stringify!($fname),)* $(stringify!($aname),)*];

            /// Each function with the ABI version that added it and the table size that covers it.
            pub const FUNCTION_VERSIONS: &'static [(&'static str, u32, usize)] = &[
                $((stringify!($fname), 1, core::mem::offset_of!($name, $fname) + core::mem::size_of::<usize>()),)*
                $((stringify!($aname), $since, core::mem::offset_of!($name, $aname) + core::mem::size_of::<usize>()),)*
            ];

            /// Names of the required (ABI version 1) functions that are null: a host must refuse
            /// such a table. Appended functions may be null; they are then absent.
            pub fn missing_functions(&self) -> Vec<&'static str> {
                let mut missing = Vec::new();
                $( if self.$fname.is_none() { missing.push(stringify!($fname)); } )*
                missing
            }

            /// Whether the function `name` is present (non-null); `None` for a name this version
            /// of the table does not have.
            pub fn has_function(&self, name: &str) -> Option<bool> {
                match name {
                    $( stringify!($fname) => Some(self.$fname.is_some()), )*
                    $( stringify!($aname) => Some(self.$aname.is_some()), )*
                    _ => None,
                }
            }

            /// The smallest table a plugin of ABI version `version` may declare: every function
            /// of that version (or of this one, when it is newer) must fit.
            pub fn size_for_version(version: u32) -> usize {
                Self::FUNCTION_VERSIONS
                    .iter()
                    .filter(|(_, since, _)| *since <= version)
                    .map(|(_, _, end)| *end)
                    .max()
                    .unwrap_or(0)
                    .max(Self::MIN_SIZE)
            }
        }

        impl CItem for $name {
            fn c_definition(out: &mut String) {
                push_doc(out, "", &[$($doc),*]);
                out.push_str(&format!("typedef struct {} {{\n", stringify!($name)));
                $(
                    push_doc(out, "    ", &[$($ddoc),*]);
                    out.push_str(&format!("    {} {};\n", <$dty as CType>::c_type(), stringify!($dfield)));
                )*
                $(
                    push_doc(out, "    ", &[$($fdoc),*]);
                    let args: Vec<String> = vec![$(format!("{} {}", <$aty as CType>::c_type(), stringify!($arg))),*];
                    let args = if args.is_empty() { "void".to_owned() } else { args.join(", ") };
                    out.push_str(&format!("    {} (*{})({});\n", <$ret as CType>::c_type(), stringify!($fname), args));
                )*
                out.push_str(APPENDED_FUNCTIONS_COMMENT);
                $(
                    let since = format!(" Since ABI version {}.", $since);
                    let mut doc: Vec<&str> = vec![$($adoc),*];
                    doc.push(&since);
                    push_doc(out, "    ", &doc);
                    let args: Vec<String> = vec![$(format!("{} {}", <$aaty as CType>::c_type(), stringify!($aarg))),*];
                    let args = if args.is_empty() { "void".to_owned() } else { args.join(", ") };
                    out.push_str(&format!("    {} (*{})({});\n", <$aret as CType>::c_type(), stringify!($aname), args));
                )*
                out.push_str(&format!("}} {};\n\n", stringify!($name)));
            }
        }
    };
}

/// Marks, in the header, where the optional (appended) functions begin.
const APPENDED_FUNCTIONS_COMMENT: &str =
    "    /* Appended functions: absent (NULL, or past struct_size) in older plugins;\n       \
     check with LCT_HAS_FUNCTION before calling. */\n";

c_enum! {
    /// Result of every table function that can fail. On anything but `OK` the calling thread's
    /// last error message (see `last_error`) says what and where.
    pub struct LctStatus(i32) as "LCT_STATUS" {
        /// Success.
        OK = 0,
        /// A null pointer, malformed string, unknown parameter name or wrong argument count.
        INVALID_ARGUMENT = 1,
        /// The handle is not live: never issued, already released, or from another plugin.
        BAD_HANDLE = 2,
        /// A value or parameter of the wrong kind (a STRING where FRAMES was expected).
        WRONG_KIND = 3,
        /// A parameter, index or frame range outside what is allowed.
        OUT_OF_RANGE = 4,
        /// The progress callback asked to stop; nothing was produced and no handle leaked.
        CANCELLED = 5,
        /// The plugin panicked; the panic was caught at the boundary and the plugin is still usable.
        PANICKED = 6,
        /// A bug in the plugin (an invariant did not hold).
        INTERNAL = 7,
        /// No node type with that id or index.
        NOT_FOUND = 8,
        /// The caller's buffer is too small; the required size was reported where possible.
        BUFFER_TOO_SMALL = 9,
        /// The node ran and failed (an I/O error, an invalid scene...).
        NODE_FAILED = 10,
        /// The plugin does not provide the function: its table is older than the function. Hosts
        /// report it without calling anything (since ABI version 2).
        UNSUPPORTED = 11,
    }
}

c_enum! {
    /// Kind of a value, a port or a widget. Port kinds are spelled in UPPERCASE, as node editors
    /// expect.
    pub struct LctValueKind(u32) as "LCT_KIND" {
        /// No value / not a valid kind.
        NONE = 0,
        /// 64-bit signed integer.
        INT = 1,
        /// 64-bit float.
        FLOAT = 2,
        /// Boolean (read as an int, 0 or 1).
        BOOL = 3,
        /// UTF-8 text.
        STRING = 4,
        /// One of a widget's fixed choices (UTF-8 text).
        ENUM = 5,
        /// A scene: global prompt, characters, shot plan, optional reference frames.
        SCENE = 6,
        /// A scene's shot latents with their timesteps and positions (stays on the plugin's device).
        LATENT = 7,
        /// A prefix view of cached keys and values (stays on the plugin's device).
        KV_CACHE = 8,
        /// A sequence of images; the only kind whose contents are copied out.
        FRAMES = 9,
        /// A loaded model.
        MODEL = 10,
    }
}

impl LctValueKind {
    /// Whether widgets (parameters) may have this kind.
    pub fn is_widget_kind(self) -> bool {
        matches!(
            self,
            Self::INT | Self::FLOAT | Self::BOOL | Self::STRING | Self::ENUM
        )
    }
}

c_enum! {
    /// Colour space of frame samples.
    pub struct LctColorSpace(u32) as "LCT_COLOR_SPACE" {
        /// Unspecified. In a copy request: "as stored".
        UNSPECIFIED = 0,
        /// sRGB transfer function and primaries (what PNG viewers expect).
        SRGB = 1,
        /// Linear light with sRGB / Rec.709 primaries.
        LINEAR = 2,
        /// Scene-linear ACEScg (AP1 primaries), what compositing pipelines work in.
        ACESCG = 3,
        /// Another OCIO colour space (its name: `value_read_string` on the FRAMES); copy the frames
        /// with SRGB, LINEAR or ACESCG as the target to have them converted.
        OTHER = 4,
    }
}

c_enum! {
    /// Storage of one sample in an [`LctFrameBuffer`].
    pub struct LctSampleFormat(u32) as "LCT_SAMPLE" {
        /// Not a valid format.
        NONE = 0,
        /// 8-bit unsigned, 0..255 maps to 0.0..1.0.
        U8 = 1,
        /// 32-bit float, nominal range 0.0..1.0.
        F32 = 2,
    }
}

impl LctSampleFormat {
    /// Bytes per sample, or 0 for an unknown format.
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F32 => 4,
            _ => 0,
        }
    }
}

c_enum! {
    /// Bit flags of an [`LctNodeDesc`].
    pub struct LctNodeFlags(u32) as "LCT_NODE" {
        /// No flag.
        NONE = 0,
        /// An output node (writes files, shows results): evaluated when a graph names no targets.
        OUTPUT = 1,
        /// Same inputs may give different results: never served from a cache.
        NOT_IDEMPOTENT = 2,
    }
}

c_enum! {
    /// Bit flags of an [`LctPortDesc`].
    pub struct LctPortFlags(u32) as "LCT_PORT" {
        /// No flag: the input is required.
        NONE = 0,
        /// The input may be left unconnected (pass [`LctHandle::NULL`]).
        OPTIONAL = 1,
    }
}

c_enum! {
    /// Bit flags of an [`LctWidgetDesc`].
    pub struct LctWidgetFlags(u32) as "LCT_WIDGET" {
        /// No flag.
        NONE = 0,
        /// A STRING widget meant for multi-line text (prompts).
        MULTILINE = 1,
        /// A STRING widget whose `choices` are names to offer (an OCIO config's colour spaces,
        /// displays or views), not a limit: any text is accepted (ABI 3, added later; older
        /// plugins never set it).
        SUGGESTIONS = 2,
    }
}

macro_rules! flag_ops {
    ($($name:ident),*) => {$(
        impl $name {
            /// Whether every bit of `other` is set in `self`.
            pub fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
        }
        impl core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }
    )*};
}
flag_ops!(LctNodeFlags, LctPortFlags, LctWidgetFlags);

/// Opaque reference to an immutable value owned by the plugin. `0` is never a live handle.
///
/// Handles carry a generation, so a released or forged handle is reported as
/// [`LctStatus::BAD_HANDLE`] instead of aliasing a newer value.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct LctHandle(pub u64);

impl LctHandle {
    /// The null handle: "no value" (an unconnected optional input).
    pub const NULL: Self = Self(0);
}

impl CType for LctHandle {
    fn c_type() -> String {
        "LctHandle".to_owned()
    }
}

impl CItem for LctHandle {
    fn c_definition(out: &mut String) {
        push_doc(
            out,
            "",
            &[
                " Opaque reference to an immutable value owned by the plugin; 0 is never live.",
                " Release every handle you receive with `value_release`.",
            ],
        );
        out.push_str("typedef uint64_t LctHandle;\n#define LCT_NULL_HANDLE ((LctHandle)0)\n\n");
    }
}

/// The preview callback typedef in C (after LctFrameBuffer, which it points to).
pub struct PreviewFnTypedef;

impl CItem for PreviewFnTypedef {
    fn c_definition(out: &mut String) {
        push_doc(
            out,
            "",
            &[
                " Host preview callback: sampling nodes call it every `preview_every` steps (a",
                " widget) with the shots' current estimate, one frame per shot, 8-bit sRGB RGB",
                " (LCT_SAMPLE_U8, LCT_COLOR_SPACE_SRGB). `preview` and its pixels are valid only",
                " during the call: copy what you keep. Return 0 to continue, non-zero to abort",
                " (as LctProgressFn).",
            ],
        );
        out.push_str(
            "typedef int32_t (*LctPreviewFn)(void* user_data, uint32_t node_index, uint32_t step, \
             uint32_t total_steps, const LctFrameBuffer* preview);\n\n",
        );
    }
}

/// The progress callback typedef in C.
pub struct ProgressFnTypedef;

impl CItem for ProgressFnTypedef {
    fn c_definition(out: &mut String) {
        push_doc(
            out,
            "",
            &[
                " Host progress callback, called by long-running nodes at every step.",
                " `node_index` echoes LctExecuteOptions.node_index. Return 0 to continue, non-zero",
                " to abort (the call then returns LCT_STATUS_CANCELLED).",
            ],
        );
        out.push_str(
            "typedef int32_t (*LctProgressFn)(void* user_data, uint32_t node_index, uint32_t step, \
             uint32_t total_steps);\n\n",
        );
    }
}

c_struct! {
    /// An input or output socket of a node type. Strings are static and UTF-8.
    pub struct LctPortDesc {
        /// Port name, unique among the node's inputs (or outputs), e.g. "scene".
        pub name: *const c_char,
        /// The kind in UPPERCASE ("FRAMES"), as node editors label sockets.
        pub kind_name: *const c_char,
        /// The kind as a number.
        pub kind: LctValueKind,
        /// LCT_PORT_* flags.
        pub flags: LctPortFlags,
        /// One line for a tooltip.
        pub tooltip: *const c_char,
    }
}

c_struct! {
    /// A parameter of a node type with its default and limits.
    ///
    /// INT and BOOL use the `int_*` fields (BOOL: 0 or 1), FLOAT the `float_*` fields, STRING and
    /// ENUM `text_default`; ENUM lists its `choices`, and so does a STRING widget flagged
    /// LCT_WIDGET_SUGGESTIONS (names to offer, not a limit). Unused fields are zero / null.
    pub struct LctWidgetDesc {
        /// Parameter name, unique within the node, e.g. "steps".
        pub name: *const c_char,
        /// INT, FLOAT, BOOL, STRING or ENUM.
        pub kind: LctValueKind,
        /// LCT_WIDGET_* flags.
        pub flags: LctWidgetFlags,
        /// One line for a tooltip.
        pub tooltip: *const c_char,
        /// Default of an INT or BOOL widget.
        pub int_default: i64,
        /// Smallest allowed INT.
        pub int_min: i64,
        /// Largest allowed INT.
        pub int_max: i64,
        /// Suggested INT increment for a UI.
        pub int_step: i64,
        /// Default of a FLOAT widget.
        pub float_default: f64,
        /// Smallest allowed FLOAT.
        pub float_min: f64,
        /// Largest allowed FLOAT.
        pub float_max: f64,
        /// Suggested FLOAT increment for a UI.
        pub float_step: f64,
        /// Default of a STRING or ENUM widget.
        pub text_default: *const c_char,
        /// The allowed values of an ENUM widget; the suggested values of a STRING widget
        /// flagged LCT_WIDGET_SUGGESTIONS.
        pub choices: *const *const c_char,
        /// Number of entries in `choices`.
        pub choice_count: usize,
    }
}

c_struct! {
    /// Static description of a node type, readable before anything runs. Valid as long as the
    /// library is loaded (plugins are never unloaded).
    ///
    /// Growth: its size is `struct_size` when the plugin's `abi_version` is 2 or more; an ABI 1
    /// plugin's descriptors end before `struct_size`. Read `inputs`, `outputs` and `widgets` with
    /// the element sizes given here (`(const char*)inputs + i * port_desc_size`), not as C arrays
    /// of this header's structs, and only the fields this header knows of each element.
    pub struct LctNodeDesc {
        /// CamelCase id, stable across versions ("SceneContext").
        pub id: *const c_char,
        /// Bumped when the node's results change for the same inputs (invalidates caches).
        pub version: u32,
        /// LCT_NODE_* flags.
        pub flags: LctNodeFlags,
        /// Name for menus ("Scene Context").
        pub display_name: *const c_char,
        /// Slash-separated menu path ("lct/scene").
        pub category: *const c_char,
        /// What the node does, a sentence or two.
        pub description: *const c_char,
        /// Input ports, in the order `node_execute` expects their handles.
        pub inputs: *const LctPortDesc,
        /// Number of input ports.
        pub input_count: usize,
        /// Output ports, in the order `node_execute` writes their handles.
        pub outputs: *const LctPortDesc,
        /// Number of output ports.
        pub output_count: usize,
        /// Widgets (parameters).
        pub widgets: *const LctWidgetDesc,
        /// Number of widgets.
        pub widget_count: usize,
        optional:
        /// sizeof(LctNodeDesc) as the plugin knows it (ABI 2).
        pub struct_size: u32,
        /// Bytes from one element of `inputs` and `outputs` to the next (ABI 2); 0 means the
        /// ABI 1 size of LctPortDesc.
        pub port_desc_size: u32,
        /// Bytes from one element of `widgets` to the next (ABI 2); 0 means the ABI 1 size of
        /// LctWidgetDesc.
        pub widget_desc_size: u32,
        /// Zero. Ends the struct at a field, not padding, so a field appended later never lands
        /// in bytes an older writer left unset.
        pub reserved: u32,
    }
}

impl LctNodeDesc {
    /// Reads the descriptor at `ptr` from a plugin of ABI version `plugin_abi`: an ABI 1
    /// descriptor ends before `struct_size`, a later one declares its size there.
    ///
    /// # Safety
    /// `ptr` must point to a descriptor from a plugin of that version (for ABI 2 and later,
    /// valid for reads of the size it declares).
    pub unsafe fn read(ptr: *const Self, plugin_abi: u32) -> Result<Self, SizeError> {
        let declared = if plugin_abi < 2 {
            Self::MIN_SIZE
        } else {
            // SAFETY: an ABI 2 descriptor has the field; unaligned reads are allowed.
            (unsafe {
                ptr.cast::<u8>()
                    .add(core::mem::offset_of!(Self, struct_size))
                    .cast::<u32>()
                    .read_unaligned()
            }) as usize
        };
        // SAFETY: valid for the declared size per the caller's contract.
        unsafe { read_prefix(ptr, declared) }
    }

    /// Bytes between elements of `inputs` and `outputs`.
    pub fn port_stride(&self) -> usize {
        stride_or_oldest::<LctPortDesc>(self.port_desc_size)
    }

    /// Bytes between elements of `widgets`.
    pub fn widget_stride(&self) -> usize {
        stride_or_oldest::<LctWidgetDesc>(self.widget_desc_size)
    }
}

c_struct! {
    /// One parameter value passed to `node_execute`. Widgets not mentioned take their default.
    ///
    /// `kind` says which field is read and must be the widget's kind (an INT is also accepted
    /// for a FLOAT widget; STRING and ENUM are not interchangeable): INT and BOOL read
    /// `int_value` (a BOOL is 0 or 1, anything else is LCT_STATUS_OUT_OF_RANGE), FLOAT reads
    /// `float_value`, STRING and ENUM read `text_value` (UTF-8, NUL terminated).
    pub struct LctParam {
        /// The widget's name.
        pub name: *const c_char,
        /// Kind of the value supplied.
        pub kind: LctValueKind,
        /// INT or BOOL value.
        pub int_value: i64,
        /// FLOAT value.
        pub float_value: f64,
        /// STRING or ENUM value.
        pub text_value: *const c_char,
    }
}

c_struct! {
    /// Optional settings of one `node_execute` call. Set `struct_size` to `sizeof(LctExecuteOptions)`;
    /// fields are only ever appended. The plugin reads the fields inside `struct_size` and takes
    /// zero for the rest, so a host built against an older header passes its smaller struct.
    pub struct LctExecuteOptions {
        /// sizeof(LctExecuteOptions) as the host knows it; at least 4 (this field).
        pub struct_size: u32,
        optional:
        /// Echoed to `progress` and `preview` so one callback can serve a whole graph.
        pub node_index: u32,
        /// Called at every step of long nodes; may be null.
        pub progress: Option<LctProgressFn>,
        /// Passed back to `progress` and `preview` untouched.
        pub user_data: *mut c_void,
        /// Base directory for relative output paths (SaveFrames); null means the current directory.
        pub output_directory: *const c_char,
        /// Bytes from one element of `node_execute`'s `params` to the next (ABI 2); 0 means the
        /// ABI 1 size of LctParam.
        pub param_size: u32,
        /// Zero. Ends the struct at a field, not padding (see LctNodeDesc.reserved).
        pub reserved: u32,
        /// Called with a decoded look at the result every `preview_every` steps of sampling
        /// nodes (ABI 3); may be null, and then no preview is made.
        pub preview: Option<LctPreviewFn>,
    }
}

impl LctExecuteOptions {
    /// Bytes between elements of `node_execute`'s `params`.
    pub fn param_stride(&self) -> usize {
        stride_or_oldest::<LctParam>(self.param_size)
    }
}

c_struct! {
    /// Dimensions of a FRAMES value.
    pub struct LctFramesInfo {
        /// Number of frames.
        pub frame_count: u32,
        /// Width in pixels.
        pub width: u32,
        /// Height in pixels.
        pub height: u32,
        /// Channels per pixel (3 = RGB, 4 = RGBA).
        pub channels: u32,
        /// Colour space the samples are stored in.
        pub color_space: LctColorSpace,
    }
}

c_struct! {
    /// Pixels crossing the boundary: frame-major, rows top to bottom, channels interleaved, no
    /// padding. Size in bytes = frame_count * height * width * channels * bytes per sample.
    ///
    /// `frames_copy`: the host sets `data`, `capacity_bytes`, `first_frame`, `frame_count` (0 = all
    /// from `first_frame`), `sample_format` and `color_space` (UNSPECIFIED = as stored); the plugin
    /// fills in the rest and converts. `frames_import`: the host sets every field.
    pub struct LctFrameBuffer {
        /// The pixels.
        pub data: *mut c_void,
        /// Size of `data` in bytes.
        pub capacity_bytes: usize,
        /// Index of the first frame in the buffer.
        pub first_frame: u32,
        /// Number of frames in the buffer.
        pub frame_count: u32,
        /// Width in pixels.
        pub width: u32,
        /// Height in pixels.
        pub height: u32,
        /// Channels per pixel (3 or 4).
        pub channels: u32,
        /// LCT_SAMPLE_U8 or LCT_SAMPLE_F32.
        pub sample_format: LctSampleFormat,
        /// Colour space of the samples in `data`.
        pub color_space: LctColorSpace,
    }
}

c_function_table! {
    /// The plugin's root function table, returned by `lct_plugin_entry`.
    ///
    /// A host reads `struct_size` and `abi_version` before anything else, requires
    /// `abi_version >= LCT_OLDEST_ABI_VERSION` and a table that holds every function of that
    /// version, then calls `initialize`. Functions appended since ABI 1 may be absent. Every
    /// function is thread-safe, catches panics (LCT_STATUS_PANICKED), and on failure records a
    /// message for the calling thread, readable with `last_error`. Out-pointers are written
    /// only on LCT_STATUS_OK.
    pub struct LctPluginApi {
        /// sizeof(LctPluginApi) as compiled into the plugin.
        pub struct_size: u32,
        /// LCT_ABI_VERSION the plugin was built with.
        pub abi_version: u32,
        /// Plugin name, static UTF-8.
        pub plugin_name: *const c_char,
        /// Plugin version, static UTF-8; part of every cache signature.
        pub plugin_version: *const c_char,
        functions:
        /// Prepares the node registry. Call once after checking the table; calling again is harmless.
        fn initialize() -> LctStatus;
        /// Copies the calling thread's last error message (UTF-8, NUL terminated, truncated to
        /// `capacity`) and returns its full length in bytes without the NUL; 0 when the last call
        /// succeeded, even if host callbacks made failing calls during it. `buffer` may be null
        /// to ask for the length.
        fn last_error(buffer: *mut c_char, capacity: usize) -> usize;
        /// Number of node types.
        fn node_count() -> u32;
        /// Points `out_desc` at the static descriptor of node type `index` (0..node_count).
        fn node_describe(index: u32, out_desc: *mut *const LctNodeDesc) -> LctStatus;
        /// Finds a node type by id; LCT_STATUS_NOT_FOUND if there is none.
        fn node_find(id: *const c_char, out_index: *mut u32) -> LctStatus;
        /// Runs node type `index`. `params` are spaced `options->param_size` bytes apart (the
        /// ABI 1 size of LctParam when `options` is null or gives 0). `inputs` holds one handle
        /// per input port, in port order (LCT_NULL_HANDLE for an unconnected optional port);
        /// trailing optional ports may be left out (`input_count` smaller), as a host written
        /// before a node gained an optional input does. The call does not take ownership of
        /// them. On success one new handle per output port is
        /// written to `outputs`; the caller owns them. `options` may be null. On failure no
        /// handle is created.
        fn node_execute(
            index: u32,
            params: *const LctParam,
            param_count: usize,
            inputs: *const LctHandle,
            input_count: usize,
            options: *const LctExecuteOptions,
            outputs: *mut LctHandle,
            output_capacity: usize,
        ) -> LctStatus;
        /// The part of `input` (on input port `port`) that node type `index` with these `params`
        /// depends on, as a hash. Usually the value's content hash; a node may narrow it (a shot
        /// generator depends on the prompts up to its shot only) so that caches are not
        /// invalidated by edits it ignores. `params` have the ABI 1 layout of LctParam (there is
        /// no options struct to declare another): a version that grows LctParam must append a
        /// variant of this function that takes the element size.
        fn node_input_signature(
            index: u32,
            params: *const LctParam,
            param_count: usize,
            port: u32,
            input: LctHandle,
            out_signature: *mut u64,
        ) -> LctStatus;
        /// Kind of a value.
        fn value_kind(handle: LctHandle, out_kind: *mut LctValueKind) -> LctStatus;
        /// Shape of a value: FRAMES [frames, height, width, channels], MODEL [parameters, frame
        /// height, frame width], SCENE [shots], STRING and ENUM [bytes], scalars rank 0. Writes
        /// the rank to `out_rank` and up to `capacity` dims; LCT_STATUS_BUFFER_TOO_SMALL (rank
        /// still written) when `capacity` is less than the rank.
        fn value_shape(handle: LctHandle, out_dims: *mut u64, capacity: usize, out_rank: *mut usize) -> LctStatus;
        /// Content hash of a value, stable for a given plugin build.
        fn value_hash(handle: LctHandle, out_hash: *mut u64) -> LctStatus;
        /// Reads an INT or BOOL value.
        fn value_read_int(handle: LctHandle, out_value: *mut i64) -> LctStatus;
        /// Reads a FLOAT (or INT) value.
        fn value_read_float(handle: LctHandle, out_value: *mut f64) -> LctStatus;
        /// Copies a STRING or ENUM value (of a FRAMES value: the OCIO name of its colour space)
        /// like `last_error` does, writes its length in bytes (without the NUL) to `out_len`
        /// (required, like every out-pointer); LCT_STATUS_BUFFER_TOO_SMALL if it was truncated.
        fn value_read_string(handle: LctHandle, buffer: *mut c_char, capacity: usize, out_len: *mut usize) -> LctStatus;
        /// Releases a handle. The value lives on while other handles or running nodes use it.
        fn value_release(handle: LctHandle) -> LctStatus;
        /// Dimensions and colour space of a FRAMES value.
        fn frames_info(handle: LctHandle, out_info: *mut LctFramesInfo) -> LctStatus;
        /// Copies frames out of a FRAMES value into the host's buffer (see LctFrameBuffer).
        fn frames_copy(handle: LctHandle, buffer: *mut LctFrameBuffer) -> LctStatus;
        /// Creates a FRAMES value from the host's pixels (a reference image, a plate).
        fn frames_import(buffer: *const LctFrameBuffer, out_handle: *mut LctHandle) -> LctStatus;
        /// Number of live handles in this process; for leak checks.
        fn live_handle_count() -> u64;
        appended:
        /// Writes a second handle to the same value to `out_handle`; release each handle on its
        /// own. For hosts that give one value to several owners.
        since 2: fn value_retain(handle: LctHandle, out_handle: *mut LctHandle) -> LctStatus;
    }
}
