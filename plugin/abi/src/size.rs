//! Growth both ways: reading a struct whose size travels with it.
//!
//! The rule (Win32's `cbSize`, OpenFX's property sets, abi_stable's prefix types): a reader
//! takes the fields wholly inside the size the writer declared and treats the rest as zero, so
//! a newer reader accepts an older writer's smaller struct and an older reader a newer writer's
//! larger one. Every field added later is therefore defined so that zero means "as before"
//! (null, none, the oldest layout). A size below the fields every version has, or one larger
//! than any struct of this ABI will ever be, is refused as garbage.
//!
//! [`read_prefix`] is the one place that applies the rule; [`read_array`] applies it to each
//! element of an array whose element size (stride) is declared beside it.

use core::fmt;

/// Larger than any struct of this ABI will ever be: a declared size above it is not a size
/// (an uninitialised field, a pointer read as a size).
pub const MAX_STRUCT_SIZE: usize = 1 << 16;

/// A `#[repr(C)]` boundary struct that can be read from a prefix of another version of itself.
///
/// # Safety
/// Every bit pattern, all zeros in particular, must be a valid value of the type (integers,
/// floats, raw pointers, optional function pointers, transparent integers), and
/// [`FIELD_ENDS`](Self::FIELD_ENDS) must list the true end offset of every field, ascending.
pub unsafe trait SizePrefixed: Copy {
    /// The type's name, for messages.
    const NAME: &'static str;
    /// Bytes of the fields every version has: the smallest size a writer may declare.
    const MIN_SIZE: usize;
    /// Offset just past each field, in declaration order.
    const FIELD_ENDS: &'static [usize];
}

/// A declared size or array that cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeError {
    /// Smaller than the fields every version has.
    TooSmall {
        name: &'static str,
        declared: usize,
        minimum: usize,
    },
    /// Larger than [`MAX_STRUCT_SIZE`]: garbage, not a size.
    TooLarge {
        name: &'static str,
        declared: usize,
        maximum: usize,
    },
    /// A null array pointer with a non-zero count.
    NullArray { name: &'static str, count: usize },
    /// `count * stride` does not fit in memory.
    ArrayTooLarge {
        name: &'static str,
        count: usize,
        stride: usize,
    },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooSmall {
                name,
                declared,
                minimum,
            } => write!(
                f,
                "{name} declared as {declared} bytes, less than the {minimum} bytes every \
                 version of it has"
            ),
            Self::TooLarge {
                name,
                declared,
                maximum,
            } => write!(
                f,
                "{name} declared as {declared} bytes, more than the {maximum} any version may \
                 have (garbage, not a size)"
            ),
            Self::NullArray { name, count } => {
                write!(f, "{count} {name} elements at a null pointer")
            }
            Self::ArrayTooLarge {
                name,
                count,
                stride,
            } => write!(
                f,
                "{count} {name} elements of {stride} bytes do not fit in memory"
            ),
        }
    }
}

impl core::error::Error for SizeError {}

/// Checks a declared size of a `T` against the rule, without reading anything.
pub fn check_size<T: SizePrefixed>(declared: usize) -> Result<(), SizeError> {
    if declared < T::MIN_SIZE {
        return Err(SizeError::TooSmall {
            name: T::NAME,
            declared,
            minimum: T::MIN_SIZE,
        });
    }
    if declared > MAX_STRUCT_SIZE {
        return Err(SizeError::TooLarge {
            name: T::NAME,
            declared,
            maximum: MAX_STRUCT_SIZE,
        });
    }
    Ok(())
}

/// How many leading bytes of a `T` a writer that declared `declared` bytes provides: up to the
/// end of its last field that fits whole (a field cut by the size is not read).
pub fn covered_len<T: SizePrefixed>(declared: usize) -> usize {
    T::FIELD_ENDS
        .iter()
        .copied()
        .take_while(|&end| end <= declared)
        .last()
        .unwrap_or(0)
}

/// Reads the `T` at `ptr` from a writer that declared it `declared` bytes long: the fields
/// wholly inside `declared`, zero for the rest.
///
/// # Safety
/// `ptr` must be valid for reads of `min(declared, size_of::<T>())` bytes; it need not be
/// aligned.
pub unsafe fn read_prefix<T: SizePrefixed>(ptr: *const T, declared: usize) -> Result<T, SizeError> {
    check_size::<T>(declared)?;
    let len = covered_len::<T>(declared);
    let mut value = zeroed::<T>();
    // SAFETY: `len <= size_of::<T>()` bytes, readable per the caller's contract, into a
    // distinct local of `size_of::<T>()` bytes; any bytes are a valid `T` (the `SizePrefixed`
    // contract).
    unsafe {
        core::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            core::ptr::from_mut(&mut value).cast::<u8>(),
            len,
        )
    };
    Ok(value)
}

/// A `T` with every field zero: null pointers, absent functions, every optional field at its
/// default.
pub fn zeroed<T: SizePrefixed>() -> T {
    // SAFETY: all-zero bytes are a valid `T` (the `SizePrefixed` contract).
    unsafe { core::mem::zeroed() }
}

/// The element size an array declares, with zero meaning the oldest layout: `T::MIN_SIZE`
/// rounded up to `T`'s alignment, the size of a version-1 element.
pub fn stride_or_oldest<T: SizePrefixed>(declared: u32) -> usize {
    match declared {
        0 => T::MIN_SIZE.next_multiple_of(core::mem::align_of::<T>()),
        size => size as usize,
    }
}

/// Reads `count` elements of `T` spaced `stride` bytes apart, each by [`read_prefix`].
///
/// # Safety
/// When `count > 0`, `ptr` must be null or valid for reads of `count * stride` bytes; it need
/// not be aligned.
pub unsafe fn read_array<T: SizePrefixed>(
    ptr: *const T,
    count: usize,
    stride: usize,
) -> Result<Vec<T>, SizeError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    check_size::<T>(stride)?;
    if ptr.is_null() {
        return Err(SizeError::NullArray {
            name: T::NAME,
            count,
        });
    }
    if count
        .checked_mul(stride)
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(SizeError::ArrayTooLarge {
            name: T::NAME,
            count,
            stride,
        });
    }
    (0..count)
        .map(|i| {
            // SAFETY: inside the `count * stride` bytes the caller vouches for.
            let element = unsafe { ptr.cast::<u8>().add(i * stride) }.cast::<T>();
            unsafe { read_prefix(element, stride) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LctExecuteOptions, LctNodeDesc, LctParam, LctPortDesc};

    #[test]
    fn a_size_inside_a_field_reads_only_the_fields_before_it() {
        let node_index_end = core::mem::offset_of!(LctExecuteOptions, node_index) + 4;
        assert_eq!(
            covered_len::<LctExecuteOptions>(node_index_end + 3),
            node_index_end
        );
        assert_eq!(
            covered_len::<LctExecuteOptions>(4096),
            *LctExecuteOptions::FIELD_ENDS.last().unwrap()
        );
        assert_eq!(LctExecuteOptions::MIN_SIZE, 4);
    }

    #[test]
    fn a_short_struct_reads_as_its_prefix_and_zeros() {
        let mut options: LctExecuteOptions = unsafe { core::mem::zeroed() };
        options.struct_size = 8;
        options.node_index = 7;
        options.user_data = 0x1234 as *mut _;
        options.param_size = 99;
        let read = unsafe { read_prefix(&options, 8) }.unwrap();
        assert_eq!(read.node_index, 7);
        assert!(read.user_data.is_null());
        assert_eq!(read.param_size, 0);
    }

    #[test]
    fn garbage_sizes_are_refused_with_the_numbers() {
        let options: LctExecuteOptions = unsafe { core::mem::zeroed() };
        let error = unsafe { read_prefix(&options, 3) }.unwrap_err();
        assert_eq!(
            error.to_string(),
            "LctExecuteOptions declared as 3 bytes, less than the 4 bytes every version of it has"
        );
        let error = unsafe { read_prefix(&options, u32::MAX as usize) }.unwrap_err();
        assert!(matches!(error, SizeError::TooLarge { .. }), "{error}");
        let error = unsafe { read_array::<LctParam>(core::ptr::null(), 2, 40) }.unwrap_err();
        assert_eq!(
            error,
            SizeError::NullArray {
                name: "LctParam",
                count: 2
            }
        );
    }

    #[test]
    fn arrays_are_read_by_their_declared_stride() {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Grown {
            port: LctPortDesc,
            future: [u64; 3],
        }
        let port = |kind| LctPortDesc {
            name: core::ptr::null(),
            kind_name: core::ptr::null(),
            kind,
            flags: crate::LctPortFlags::NONE,
            tooltip: core::ptr::null(),
        };
        let grown = [
            Grown {
                port: port(crate::LctValueKind::INT),
                future: [u64::MAX; 3],
            },
            Grown {
                port: port(crate::LctValueKind::FRAMES),
                future: [u64::MAX; 3],
            },
        ];
        let read = unsafe { read_array(&grown[0].port, 2, core::mem::size_of::<Grown>()) }.unwrap();
        assert_eq!(read[1].kind, crate::LctValueKind::FRAMES);
        assert_eq!(
            stride_or_oldest::<LctPortDesc>(0),
            core::mem::size_of::<LctPortDesc>()
        );
        assert_eq!(
            LctNodeDesc::MIN_SIZE,
            core::mem::offset_of!(LctNodeDesc, struct_size)
        );
    }
}
