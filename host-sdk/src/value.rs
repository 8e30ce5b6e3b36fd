//! Values on the host side: shared owners of plugin handles, released when the last owner goes.

use std::fmt;
use std::sync::Arc;

use lct_abi::{
    LctColorSpace, LctFrameBuffer, LctFramesInfo, LctHandle, LctSampleFormat, LctStatus,
    LctValueKind,
};

use crate::plugin::{call, Plugin, PluginError};

/// An immutable value living in the plugin. Clones share one handle; the handle is released
/// when the last clone is dropped (so a cache and a running evaluation can share it safely).
#[derive(Clone)]
pub struct Value(Arc<ValueInner>);

struct ValueInner {
    plugin: Plugin,
    handle: LctHandle,
    kind: LctValueKind,
}

impl Drop for ValueInner {
    fn drop(&mut self) {
        // Cannot fail for a handle we own; nothing useful to do if it did.
        let _ = unsafe { call!(self.plugin.0.api_ref(), value_release(self.handle)) };
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({} {:#x})", self.0.kind, self.0.handle.0)
    }
}

/// Frames copied out of the plugin, or to import into it ([`Plugin::import_frames`]):
/// frame-major, rows top to bottom, channels interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames<T> {
    pub frame_count: u32,
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub color_space: LctColorSpace,
    pub pixels: Vec<T>,
}

/// 8-bit frames.
pub type FramesData = Frames<u8>;
/// 32-bit float frames, for hosts that keep scene-linear values (compositors).
pub type FloatFrames = Frames<f32>;

impl Value {
    /// Takes ownership of a handle the plugin just returned.
    pub(crate) fn adopt(plugin: &Plugin, handle: LctHandle) -> Result<Value, PluginError> {
        let mut kind = LctValueKind::NONE;
        let status = unsafe { call!(plugin.0.api_ref(), value_kind(handle, &mut kind)) };
        let value = Value(Arc::new(ValueInner {
            plugin: plugin.clone(),
            handle,
            kind,
        }));
        plugin.check(status)?;
        Ok(value)
    }

    pub fn handle(&self) -> LctHandle {
        self.0.handle
    }
    pub fn kind(&self) -> LctValueKind {
        self.0.kind
    }

    fn plugin(&self) -> &Plugin {
        &self.0.plugin
    }

    pub fn content_hash(&self) -> Result<u64, PluginError> {
        let mut hash = 0;
        let status = unsafe {
            call!(
                self.plugin().0.api_ref(),
                value_hash(self.0.handle, &mut hash)
            )
        };
        self.plugin().check(status).map(|()| hash)
    }

    pub fn shape(&self) -> Result<Vec<u64>, PluginError> {
        let mut dims = [0u64; 8];
        let mut rank = 0;
        let status = unsafe {
            call!(
                self.plugin().0.api_ref(),
                value_shape(self.0.handle, dims.as_mut_ptr(), dims.len(), &mut rank)
            )
        };
        self.plugin().check(status)?;
        Ok(dims[..rank].to_vec())
    }

    pub fn read_int(&self) -> Result<i64, PluginError> {
        let mut value = 0;
        let status = unsafe {
            call!(
                self.plugin().0.api_ref(),
                value_read_int(self.0.handle, &mut value)
            )
        };
        self.plugin().check(status).map(|()| value)
    }

    pub fn read_float(&self) -> Result<f64, PluginError> {
        let mut value = 0.0;
        let status = unsafe {
            call!(
                self.plugin().0.api_ref(),
                value_read_float(self.0.handle, &mut value)
            )
        };
        self.plugin().check(status).map(|()| value)
    }

    pub fn read_string(&self) -> Result<String, PluginError> {
        let api = self.plugin().0.api_ref();
        let mut len = 0;
        let status = unsafe {
            call!(
                api,
                value_read_string(self.0.handle, std::ptr::null_mut(), 0, &mut len)
            )
        };
        if status != LctStatus::BUFFER_TOO_SMALL {
            self.plugin().check(status)?;
        }
        let mut buffer = vec![0u8; len + 1];
        let status = unsafe {
            call!(
                api,
                value_read_string(
                    self.0.handle,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    &mut len
                )
            )
        };
        self.plugin().check(status)?;
        buffer.truncate(len);
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    /// A second plugin handle to this value, owned by the caller, who releases it with the
    /// table's `value_release`: for handing a value to code outside this crate (a C library
    /// that takes ownership of handles). Needs `value_retain` (ABI 2); from an older plugin
    /// an `UNSUPPORTED` error, and nothing is called.
    pub fn retain_handle(&self) -> Result<LctHandle, PluginError> {
        let plugin = self.plugin();
        let retain = plugin.function(plugin.0.api_ref().value_retain, "value_retain")?;
        let mut handle = LctHandle::NULL;
        // SAFETY: a live handle we own and a valid out-pointer.
        let status = unsafe { retain(self.0.handle, &mut handle) };
        plugin.check(status).map(|()| handle)
    }

    /// Copies every frame out as 8-bit samples in `color_space` (`UNSPECIFIED`: as stored).
    pub fn read_frames(&self, color_space: LctColorSpace) -> Result<FramesData, PluginError> {
        self.copy_frames(0, 0, LctSampleFormat::U8, color_space)
    }

    /// Copies `frame_count` frames from `first_frame` (0: all from there) as 32-bit float
    /// samples in `color_space` (`UNSPECIFIED`: as stored).
    pub fn read_frames_f32(
        &self,
        first_frame: u32,
        frame_count: u32,
        color_space: LctColorSpace,
    ) -> Result<FloatFrames, PluginError> {
        self.copy_frames(first_frame, frame_count, LctSampleFormat::F32, color_space)
    }

    fn copy_frames<T: Copy + Default>(
        &self,
        first_frame: u32,
        frame_count: u32,
        sample_format: LctSampleFormat,
        color_space: LctColorSpace,
    ) -> Result<Frames<T>, PluginError> {
        let api = self.plugin().0.api_ref();
        let mut info = LctFramesInfo {
            frame_count: 0,
            width: 0,
            height: 0,
            channels: 0,
            color_space: LctColorSpace::UNSPECIFIED,
        };
        let status = unsafe { call!(api, frames_info(self.0.handle, &mut info)) };
        self.plugin().check(status)?;
        let available = info.frame_count.saturating_sub(first_frame);
        let count = if frame_count == 0 {
            available
        } else {
            frame_count.min(available)
        };
        let size =
            count as usize * info.width as usize * info.height as usize * info.channels as usize;
        let mut pixels = vec![T::default(); size];
        let mut buffer = LctFrameBuffer {
            data: pixels.as_mut_ptr().cast(),
            capacity_bytes: std::mem::size_of_val(pixels.as_slice()),
            first_frame,
            frame_count: count,
            width: 0,
            height: 0,
            channels: 0,
            sample_format,
            color_space,
        };
        let status = unsafe { call!(api, frames_copy(self.0.handle, &mut buffer)) };
        self.plugin().check(status)?;
        Ok(Frames {
            frame_count: buffer.frame_count,
            width: info.width,
            height: info.height,
            channels: info.channels,
            color_space: buffer.color_space,
            pixels,
        })
    }
}
