//! The panic firewall: every exported function runs its body through [`guard`], which turns
//! errors and panics into a status plus a per-thread message. Nothing unwinds into C.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use lct_abi::LctStatus;
use lct_nodes::NodeError;

thread_local! {
    // Per thread, like errno: concurrent callers never see each other's messages.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A failed call: the status to return and what to tell the caller.
#[derive(Debug)]
pub struct Failure {
    pub status: LctStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: LctStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(LctStatus::INVALID_ARGUMENT, message)
    }
}

impl From<NodeError> for Failure {
    fn from(error: NodeError) -> Self {
        let status = match &error {
            NodeError::UnknownWidget { .. }
            | NodeError::DuplicateWidget { .. }
            | NodeError::MissingInput { .. }
            | NodeError::InputCount { .. } => LctStatus::INVALID_ARGUMENT,
            NodeError::WidgetKind { .. } | NodeError::InputKind { .. } => LctStatus::WRONG_KIND,
            NodeError::OutOfRange { .. } | NodeError::NotAChoice { .. } => LctStatus::OUT_OF_RANGE,
            NodeError::Cancelled { .. } => LctStatus::CANCELLED,
            _ => LctStatus::NODE_FAILED,
        };
        Self::new(status, error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

fn set_last_error(message: String) {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = message);
}

/// Runs `body` for the exported function `function`: catches panics, records the message of
/// any failure prefixed with the function's name, and leaves the thread's last error empty on
/// success. Cleared after the body, not only before: a host callback the body calls (progress,
/// preview) may call into the plugin and fail, and that message must not outlive this
/// successful call (the header: "0 when the last call succeeded").
pub fn guard(function: &str, body: impl FnOnce() -> Result<()>) -> LctStatus {
    set_last_error(String::new());
    let outcome = catch_unwind(AssertUnwindSafe(body));
    set_last_error(String::new());
    match outcome {
        Ok(Ok(())) => LctStatus::OK,
        Ok(Err(failure)) => {
            set_last_error(format!("{function}: {}", failure.message));
            failure.status
        }
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
            set_last_error(format!("{function}: panicked: {reason}"));
            LctStatus::PANICKED
        }
    }
}

/// [`guard`] for functions that return a plain value: `fallback` when the body panics.
pub fn guard_value<T>(function: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    let mut result = None;
    guard(function, || {
        result = Some(body());
        Ok(())
    });
    result.unwrap_or(fallback)
}

/// Copies `text` into a C buffer of `capacity` bytes, truncated at a character boundary and
/// NUL terminated. Returns whether all of it fit.
///
/// # Safety
/// `buffer` must be null or valid for `capacity` bytes of writes.
pub unsafe fn copy_c_string(text: &str, buffer: *mut c_char, capacity: usize) -> bool {
    if buffer.is_null() || capacity == 0 {
        return text.is_empty() && !buffer.is_null();
    }
    let mut len = text.len().min(capacity - 1);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    // SAFETY: the caller guarantees `capacity` writable bytes; we write `len + 1 <= capacity`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buffer.cast::<u8>(), len);
        *buffer.add(len) = 0;
    }
    len == text.len()
}

/// The calling thread's last error message.
pub fn last_error() -> String {
    LAST_ERROR.with(|slot| slot.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_the_body_is_a_status_and_a_message() {
        let status = guard("probe", || panic!("probe was asked to panic"));
        assert_eq!(status, LctStatus::PANICKED);
        assert_eq!(last_error(), "probe: panicked: probe was asked to panic");
        assert_eq!(guard("probe", || Ok(())), LctStatus::OK);
        assert_eq!(last_error(), "");
        assert_eq!(guard_value("probe", 7, || -> u32 { panic!("again") }), 7);
    }
}
