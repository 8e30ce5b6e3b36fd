//! Hostile calls through the raw C table: random and stale handles, wrong kinds, null
//! pointers, garbage parameters, thousands of times. The process must survive, every bad call
//! must fail with a status (never OK), and no handle may leak.
//!
//! Its own binary (own process) because it checks the plugin's process-wide handle count.

use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};

use lct_abi::{
    LctColorSpace, LctExecuteOptions, LctFrameBuffer, LctFramesInfo, LctHandle, LctNodeDesc,
    LctParam, LctPluginApi, LctSampleFormat, LctStatus, LctValueKind,
};
use lct_integration_tests::{plugin, Rng};

macro_rules! f {
    ($api:expr, $name:ident) => {
        $api.$name.expect(stringify!($name))
    };
}

unsafe extern "C" fn abort_at_once(_: *mut std::ffi::c_void, _: u32, _: u32, _: u32) -> i32 {
    1
}

/// Lets nodes of up to 16 steps finish (so some calls succeed), aborts longer ones.
unsafe extern "C" fn continue_short_runs(
    _: *mut std::ffi::c_void,
    _: u32,
    _: u32,
    total: u32,
) -> i32 {
    i32::from(total > 16)
}

const NAMES: &[&CStr] = &[
    c"frames",
    c"width",
    c"height",
    c"seed",
    c"color_space",
    c"steps",
    c"step_ms",
    c"panic",
    c"message",
    c"shots",
    c"global_prompt",
    c"name",
    c"directory",
    c"columns",
    c"",
    c"nonsense",
];
const TEXTS: &[&CStr] = &[
    c"SRGB",
    c"LINEAR",
    c"",
    c"one\ntwo",
    c"[1,2]",
    c"..",
    c"a/b",
    c"[\"x\"]",
];
const INVALID_UTF8: &[u8] = b"\xff\xfe\0";

struct Hostile<'a> {
    api: &'a LctPluginApi,
    rng: Rng,
    /// Live handles we own (valid inputs for later calls).
    owned: Vec<LctHandle>,
    /// Handles we released (stale).
    stale: Vec<LctHandle>,
    out_dir: std::ffi::CString,
}

impl Hostile<'_> {
    fn handle(&mut self) -> LctHandle {
        match self.rng.below(6) {
            0 if !self.owned.is_empty() => {
                self.owned[self.rng.below(self.owned.len() as u64) as usize]
            }
            1 if !self.stale.is_empty() => {
                self.stale[self.rng.below(self.stale.len() as u64) as usize]
            }
            2 => LctHandle(self.rng.below(64)),
            3 => LctHandle(0),
            _ => LctHandle(self.rng.next_u64()),
        }
    }

    fn is_owned(&self, handle: LctHandle) -> bool {
        self.owned.contains(&handle)
    }

    fn param(&mut self) -> LctParam {
        let name = match self.rng.below(12) {
            0 => null(),
            1 => INVALID_UTF8.as_ptr().cast(),
            _ => NAMES[self.rng.below(NAMES.len() as u64) as usize].as_ptr(),
        };
        let text = match self.rng.below(6) {
            0 => null(),
            1 => INVALID_UTF8.as_ptr().cast(),
            _ => TEXTS[self.rng.below(TEXTS.len() as u64) as usize].as_ptr(),
        };
        let int_value = match self.rng.below(3) {
            0 => self.rng.next_u64() as i64,
            _ => self.rng.below(12) as i64 - 2,
        };
        let float_value = match self.rng.below(4) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            _ => self.rng.below(100) as f64 / 7.0,
        };
        LctParam {
            name,
            kind: LctValueKind(self.rng.below(14) as u32),
            int_value,
            float_value,
            text_value: text,
        }
    }

    fn execute(&mut self) {
        let count = unsafe { f!(self.api, node_count)() };
        let index = self.rng.below(count as u64 + 3) as u32;
        // A third of the calls are well-formed apart from the parameters (often defaults), so
        // that some succeed and feed valid, then stale, handles into later calls.
        let well_formed = self.rng.chance(3);
        let params: Vec<LctParam> = (0..self.rng.below(if well_formed { 2 } else { 5 }))
            .map(|_| self.param())
            .collect();
        let index = if well_formed {
            self.rng.below(count as u64) as u32
        } else {
            index
        };
        let input_count = if well_formed {
            let mut desc: *const LctNodeDesc = null();
            assert_eq!(
                unsafe { f!(self.api, node_describe)(index, &mut desc) },
                LctStatus::OK
            );
            unsafe { (*desc).input_count as u64 }
        } else {
            self.rng.below(3)
        };
        let inputs: Vec<LctHandle> = (0..input_count)
            .map(|_| match self.owned.is_empty() || self.rng.chance(3) {
                true => self.handle(),
                false => self.owned[self.rng.below(self.owned.len() as u64) as usize],
            })
            .collect();
        let options = LctExecuteOptions {
            struct_size: if self.rng.chance(8) {
                3
            } else {
                std::mem::size_of::<LctExecuteOptions>() as u32
            },
            node_index: 0,
            progress: Some(if self.rng.chance(2) {
                abort_at_once
            } else {
                continue_short_runs
            }),
            user_data: null_mut(),
            output_directory: self.out_dir.as_ptr(),
            // Smaller than an LctParam (0: the default); a larger stride would make the plugin
            // read past our array, which no boundary can detect.
            param_size: if self.rng.chance(8) {
                self.rng.below(std::mem::size_of::<LctParam>() as u64) as u32
            } else {
                std::mem::size_of::<LctParam>() as u32
            },
            reserved: 0,
            preview: None,
        };
        let mut outputs = [LctHandle::NULL; 4];
        let output_capacity = if well_formed {
            4
        } else {
            self.rng.below(3) as usize
        };
        let params_ptr = if self.rng.chance(10) {
            null()
        } else {
            params.as_ptr()
        };
        let inputs_ptr = if self.rng.chance(10) {
            null()
        } else {
            inputs.as_ptr()
        };
        let outputs_ptr = if !well_formed && self.rng.chance(10) {
            null_mut()
        } else {
            outputs.as_mut_ptr()
        };
        let status = unsafe {
            f!(self.api, node_execute)(
                index,
                params_ptr,
                params.len(),
                inputs_ptr,
                inputs.len(),
                &options,
                outputs_ptr,
                output_capacity,
            )
        };
        if status == LctStatus::OK {
            // Legitimate by chance: keep the outputs as valid handles for later calls.
            let mut desc: *const LctNodeDesc = null();
            assert_eq!(
                unsafe { f!(self.api, node_describe)(index, &mut desc) },
                LctStatus::OK
            );
            let produced = unsafe { (*desc).output_count };
            self.owned.extend(&outputs[..produced]);
        } else {
            assert!(
                outputs.iter().all(|h| *h == LctHandle::NULL),
                "a failed call wrote handles"
            );
        }
    }

    fn inspect(&mut self) {
        let handle = self.handle();
        let owned = self.is_owned(handle);
        let null_out = self.rng.chance(4);
        let api = self.api;
        let status = unsafe {
            match self.rng.below(9) {
                0 => {
                    let mut kind = LctValueKind::NONE;
                    f!(api, value_kind)(handle, if null_out { null_mut() } else { &mut kind })
                }
                1 => {
                    let mut dims = [0u64; 4];
                    let mut rank = 0usize;
                    let capacity = self.rng.below(6) as usize;
                    let dims_ptr = if null_out {
                        null_mut()
                    } else {
                        dims.as_mut_ptr()
                    };
                    f!(api, value_shape)(handle, dims_ptr, capacity.min(4), &mut rank)
                }
                2 => {
                    let mut hash = 0;
                    f!(api, value_hash)(handle, if null_out { null_mut() } else { &mut hash })
                }
                3 => {
                    let mut value = 0;
                    f!(api, value_read_int)(handle, if null_out { null_mut() } else { &mut value })
                }
                4 => {
                    let mut value = 0.0;
                    f!(api, value_read_float)(
                        handle,
                        if null_out { null_mut() } else { &mut value },
                    )
                }
                5 => {
                    let mut buffer = [0 as c_char; 8];
                    let mut len = 0;
                    let capacity = self.rng.below(10) as usize;
                    let buffer_ptr = if null_out {
                        null_mut()
                    } else {
                        buffer.as_mut_ptr()
                    };
                    f!(api, value_read_string)(handle, buffer_ptr, capacity.min(8), &mut len)
                }
                6 => {
                    let mut info = LctFramesInfo {
                        frame_count: 0,
                        width: 0,
                        height: 0,
                        channels: 0,
                        color_space: LctColorSpace::UNSPECIFIED,
                    };
                    f!(api, frames_info)(handle, if null_out { null_mut() } else { &mut info })
                }
                7 => {
                    let mut data = vec![0u8; self.rng.below(40_000) as usize];
                    let mut buffer = LctFrameBuffer {
                        data: if null_out {
                            null_mut()
                        } else {
                            data.as_mut_ptr().cast()
                        },
                        capacity_bytes: data.len(),
                        first_frame: self.rng.below(10) as u32,
                        frame_count: self.rng.below(4) as u32,
                        width: 0,
                        height: 0,
                        channels: 0,
                        sample_format: LctSampleFormat(self.rng.below(4) as u32),
                        color_space: LctColorSpace(self.rng.below(4) as u32),
                    };
                    f!(api, frames_copy)(handle, &mut buffer)
                }
                _ => {
                    let mut desc: *const LctNodeDesc = null();
                    let index = self.rng.below(12) as u32;
                    f!(api, node_describe)(index, if null_out { null_mut() } else { &mut desc })
                }
            }
        };
        // Random, zero and stale handles are never valid.
        if !owned && status == LctStatus::OK {
            let mut kind = LctValueKind::NONE;
            let live = unsafe { f!(api, value_kind)(handle, &mut kind) } == LctStatus::OK;
            assert!(
                !live || handle == LctHandle::NULL,
                "a handle we do not own ({:#x}) is live",
                handle.0
            );
        }
    }

    fn import(&mut self) {
        let mut data = vec![0u8; self.rng.below(2_000) as usize];
        let buffer = LctFrameBuffer {
            data: if self.rng.chance(6) {
                null_mut()
            } else {
                data.as_mut_ptr().cast()
            },
            // Never more than the real size: a lying capacity is outside what any boundary can check.
            capacity_bytes: self.rng.below(data.len() as u64 + 1) as usize,
            first_frame: 0,
            frame_count: self.rng.below(3) as u32,
            width: if self.rng.chance(8) {
                u32::MAX
            } else {
                self.rng.below(12) as u32
            },
            height: self.rng.below(12) as u32,
            channels: self.rng.below(6) as u32,
            sample_format: LctSampleFormat(self.rng.below(4) as u32),
            color_space: LctColorSpace(self.rng.below(4) as u32),
        };
        let mut handle = LctHandle::NULL;
        let buffer_ptr: *const LctFrameBuffer = if self.rng.chance(10) { null() } else { &buffer };
        let status = unsafe { f!(self.api, frames_import)(buffer_ptr, &mut handle) };
        if status == LctStatus::OK {
            self.owned.push(handle);
        }
    }

    fn release(&mut self) {
        if !self.owned.is_empty() && self.rng.chance(2) {
            let handle = self
                .owned
                .swap_remove(self.rng.below(self.owned.len() as u64) as usize);
            assert_eq!(
                unsafe { f!(self.api, value_release)(handle) },
                LctStatus::OK
            );
            self.stale.push(handle);
        } else {
            let handle = self.handle();
            if !self.is_owned(handle) {
                assert_ne!(
                    unsafe { f!(self.api, value_release)(handle) },
                    LctStatus::OK
                );
            }
        }
    }
}

#[test]
fn thousands_of_hostile_calls_never_crash_or_leak() {
    let plugin = plugin();
    let api = plugin.raw_api();
    let baseline = plugin.live_handles();
    let out = tempfile::tempdir().unwrap();
    let mut hostile = Hostile {
        api,
        rng: Rng(0x5eed_1234_abcd_ef01),
        owned: Vec::new(),
        stale: Vec::new(),
        out_dir: std::ffi::CString::new(out.path().to_str().unwrap()).unwrap(),
    };
    // Seed the pool with real values of several kinds.
    for id in [c"TestPattern", c"DebugPanic"] {
        let mut index = 0;
        assert_eq!(
            unsafe { f!(api, node_find)(id.as_ptr(), &mut index) },
            LctStatus::OK
        );
        let mut out = LctHandle::NULL;
        let status =
            unsafe { f!(api, node_execute)(index, null(), 0, null(), 0, null(), &mut out, 1) };
        assert_eq!(status, LctStatus::OK);
        hostile.owned.push(out);
    }
    // Scaled with the number of node types (12 now): each gets enough well-formed calls to
    // create, release and then reuse (stale) handles.
    for call in 0..12_000 {
        match call % 5 {
            0 => hostile.execute(),
            1 | 2 => hostile.inspect(),
            3 => hostile.import(),
            _ => hostile.release(),
        }
    }
    // Odd pointers outside the random loop.
    unsafe {
        assert_eq!(
            f!(api, node_find)(null(), null_mut()),
            LctStatus::INVALID_ARGUMENT
        );
        let mut index = 0;
        assert_eq!(
            f!(api, node_find)(INVALID_UTF8.as_ptr().cast(), &mut index),
            LctStatus::INVALID_ARGUMENT
        );
        assert_eq!(
            f!(api, node_find)(c"NoSuchNode".as_ptr(), &mut index),
            LctStatus::NOT_FOUND
        );
        assert_eq!(
            f!(api, frames_copy)(LctHandle(1), null_mut()),
            LctStatus::BAD_HANDLE
        );
        assert!(f!(api, last_error)(null_mut(), 100) > 0);
        // A misaligned out-pointer is refused, not written.
        let mut words = [0u64; 2];
        let misaligned = (words.as_mut_ptr() as *mut u8).add(1) as *mut u64;
        let mut pattern = 0;
        assert_eq!(
            f!(api, node_find)(c"TestPattern".as_ptr(), &mut pattern),
            LctStatus::OK
        );
        let mut value = LctHandle::NULL;
        assert_eq!(
            f!(api, node_execute)(pattern, null(), 0, null(), 0, null(), &mut value, 1),
            LctStatus::OK
        );
        assert_eq!(
            f!(api, value_hash)(value, misaligned),
            LctStatus::INVALID_ARGUMENT
        );
        hostile.owned.push(value);
    }
    assert!(
        hostile.stale.len() > 50,
        "the run exercised few stale handles: {} stale, {} owned",
        hostile.stale.len(),
        hostile.owned.len()
    );
    for handle in hostile.owned.drain(..) {
        assert_eq!(unsafe { f!(api, value_release)(handle) }, LctStatus::OK);
    }
    assert_eq!(
        plugin.live_handles(),
        baseline,
        "hostile calls leaked handles"
    );
    // Still fully usable.
    assert!(plugin
        .validate(
            &lct_host::Graph::from_json(
                r#"{"nodes":{"p":{"type":"TestPattern"}},"outputs":["p"]}"#
            )
            .unwrap()
        )
        .is_ok());
}
