"""ctypes binding of the lct plugin's C contract (plugin/abi/include/lct_plugin.h).

Standard library only, so that any Python host can use it: the ComfyUI pack beside it and
tests/python/run_graph.py do. Structs are read by the sizes the plugin declares
(`read_prefix`), so plugins older or newer than this layout load; a failing call raises
`LctError` with the plugin's own message.
"""
import ctypes as C

LCT_ABI_VERSION, LCT_OLDEST_ABI_VERSION = 3, 1

STATUS_OK, STATUS_BAD_HANDLE, STATUS_CANCELLED = 0, 2, 5
STATUS_NAMES = {0: "OK", 1: "INVALID_ARGUMENT", 2: "BAD_HANDLE", 3: "WRONG_KIND", 4: "OUT_OF_RANGE",
                5: "CANCELLED", 6: "PANICKED", 7: "INTERNAL", 8: "NOT_FOUND", 9: "BUFFER_TOO_SMALL",
                10: "NODE_FAILED", 11: "UNSUPPORTED"}

KIND_NONE, KIND_INT, KIND_FLOAT, KIND_BOOL, KIND_STRING, KIND_ENUM = 0, 1, 2, 3, 4, 5
KIND_SCENE, KIND_LATENT, KIND_KV_CACHE, KIND_FRAMES, KIND_MODEL = 6, 7, 8, 9, 10
NODE_OUTPUT, NODE_NOT_IDEMPOTENT = 1, 2
PORT_OPTIONAL = 1
WIDGET_MULTILINE = 1
# A STRING widget with `choices`: names to offer (from the OCIO config), not a limit; any text goes.
WIDGET_SUGGESTIONS = 2
SAMPLE_U8, SAMPLE_F32 = 1, 2
COLOR_SPACE_UNSPECIFIED, COLOR_SPACE_SRGB, COLOR_SPACE_LINEAR, COLOR_SPACE_ACESCG = 0, 1, 2, 3

Status = C.c_int32
Kind = C.c_uint32
Handle = C.c_uint64
ProgressFn = C.CFUNCTYPE(C.c_int32, C.c_void_p, C.c_uint32, C.c_uint32, C.c_uint32)


class PortDesc(C.Structure):
    _fields_ = [("name", C.c_char_p), ("kind_name", C.c_char_p), ("kind", Kind),
                ("flags", C.c_uint32), ("tooltip", C.c_char_p)]


class WidgetDesc(C.Structure):
    _fields_ = [("name", C.c_char_p), ("kind", Kind), ("flags", C.c_uint32), ("tooltip", C.c_char_p),
                ("int_default", C.c_int64), ("int_min", C.c_int64), ("int_max", C.c_int64),
                ("int_step", C.c_int64), ("float_default", C.c_double), ("float_min", C.c_double),
                ("float_max", C.c_double), ("float_step", C.c_double), ("text_default", C.c_char_p),
                ("choices", C.POINTER(C.c_char_p)), ("choice_count", C.c_size_t)]


class NodeDesc(C.Structure):
    _fields_ = [("id", C.c_char_p), ("version", C.c_uint32), ("flags", C.c_uint32),
                ("display_name", C.c_char_p), ("category", C.c_char_p), ("description", C.c_char_p),
                ("inputs", C.POINTER(PortDesc)), ("input_count", C.c_size_t),
                ("outputs", C.POINTER(PortDesc)), ("output_count", C.c_size_t),
                ("widgets", C.POINTER(WidgetDesc)), ("widget_count", C.c_size_t),
                # ABI 2
                ("struct_size", C.c_uint32), ("port_desc_size", C.c_uint32),
                ("widget_desc_size", C.c_uint32), ("reserved", C.c_uint32)]


class Param(C.Structure):
    _fields_ = [("name", C.c_char_p), ("kind", Kind), ("int_value", C.c_int64),
                ("float_value", C.c_double), ("text_value", C.c_char_p)]


class FramesInfo(C.Structure):
    _fields_ = [("frame_count", C.c_uint32), ("width", C.c_uint32), ("height", C.c_uint32),
                ("channels", C.c_uint32), ("color_space", C.c_uint32)]


class FrameBuffer(C.Structure):
    _fields_ = [("data", C.c_void_p), ("capacity_bytes", C.c_size_t), ("first_frame", C.c_uint32),
                ("frame_count", C.c_uint32), ("width", C.c_uint32), ("height", C.c_uint32),
                ("channels", C.c_uint32), ("sample_format", C.c_uint32), ("color_space", C.c_uint32)]


# Previews (ABI 3): the buffer and its pixels are valid only during the call.
PreviewFn = C.CFUNCTYPE(C.c_int32, C.c_void_p, C.c_uint32, C.c_uint32, C.c_uint32, C.POINTER(FrameBuffer))


class ExecuteOptions(C.Structure):
    _fields_ = [("struct_size", C.c_uint32), ("node_index", C.c_uint32), ("progress", ProgressFn),
                ("user_data", C.c_void_p), ("output_directory", C.c_char_p),
                # ABI 2
                ("param_size", C.c_uint32), ("reserved", C.c_uint32),
                # ABI 3
                ("preview", PreviewFn)]


def fn(restype, *args):
    return C.CFUNCTYPE(restype, *args)


class PluginApi(C.Structure):
    _fields_ = [
        ("struct_size", C.c_uint32), ("abi_version", C.c_uint32),
        ("plugin_name", C.c_char_p), ("plugin_version", C.c_char_p),
        ("initialize", fn(Status)),
        ("last_error", fn(C.c_size_t, C.c_char_p, C.c_size_t)),
        ("node_count", fn(C.c_uint32)),
        ("node_describe", fn(Status, C.c_uint32, C.POINTER(C.POINTER(NodeDesc)))),
        ("node_find", fn(Status, C.c_char_p, C.POINTER(C.c_uint32))),
        ("node_execute", fn(Status, C.c_uint32, C.POINTER(Param), C.c_size_t, C.POINTER(Handle), C.c_size_t,
                            C.POINTER(ExecuteOptions), C.POINTER(Handle), C.c_size_t)),
        ("node_input_signature", fn(Status, C.c_uint32, C.POINTER(Param), C.c_size_t, C.c_uint32, Handle,
                                    C.POINTER(C.c_uint64))),
        ("value_kind", fn(Status, Handle, C.POINTER(Kind))),
        ("value_shape", fn(Status, Handle, C.POINTER(C.c_uint64), C.c_size_t, C.POINTER(C.c_size_t))),
        ("value_hash", fn(Status, Handle, C.POINTER(C.c_uint64))),
        ("value_read_int", fn(Status, Handle, C.POINTER(C.c_int64))),
        ("value_read_float", fn(Status, Handle, C.POINTER(C.c_double))),
        ("value_read_string", fn(Status, Handle, C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t))),
        ("value_release", fn(Status, Handle)),
        ("frames_info", fn(Status, Handle, C.POINTER(FramesInfo))),
        ("frames_copy", fn(Status, Handle, C.POINTER(FrameBuffer))),
        ("frames_import", fn(Status, C.POINTER(FrameBuffer), C.POINTER(Handle))),
        ("live_handle_count", fn(C.c_uint64)),
        # Appended in ABI 2: absent from older plugins.
        ("value_retain", fn(Status, Handle, C.POINTER(Handle))),
    ]


def field_end(cls, name):
    field = getattr(cls, name)
    return field.offset + field.size


def read_prefix(cls, address, declared):
    """The struct at `address` as its writer declared it, `declared` bytes: the fields wholly
    inside, zero for the rest (the rule of lct-abi's read_prefix)."""
    value = cls()
    covered = max([field_end(cls, f[0]) for f in cls._fields_ if field_end(cls, f[0]) <= declared],
                  default=0)
    C.memmove(C.addressof(value), address, covered)
    return value


def read_array(cls, pointer, count, stride):
    address = C.cast(pointer, C.c_void_p).value
    return [read_prefix(cls, address + i * stride, stride) for i in range(count)]


def text(raw):
    return raw.decode("utf-8", "replace") if raw else ""


class LctError(RuntimeError):
    """A call into the plugin failed; `status` is the LctStatus, the message the plugin's."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status

    @property
    def cancelled(self):
        return self.status == STATUS_CANCELLED


class Plugin:
    """The plugin's function table, loaded once per process; values as integer handles."""

    def __init__(self, path):
        self.path = str(path)
        self._library = C.CDLL(self.path)
        self._library.lct_plugin_entry.restype = C.c_void_p
        table = self._library.lct_plugin_entry()
        if not table:
            raise LctError(None, f"{self.path}: lct_plugin_entry returned no table")
        struct_size, abi_version = C.cast(table, C.POINTER(C.c_uint32 * 2)).contents
        if abi_version < LCT_OLDEST_ABI_VERSION or struct_size < field_end(PluginApi, "live_handle_count"):
            raise LctError(None, f"{self.path}: incompatible plugin (ABI {abi_version}, table of "
                                 f"{struct_size} bytes; this host reads ABI {LCT_OLDEST_ABI_VERSION}.."
                                 f"{LCT_ABI_VERSION})")
        self.abi_version = abi_version
        self.api = read_prefix(PluginApi, table, struct_size)
        self.name = text(self.api.plugin_name)
        self.version = text(self.api.plugin_version)
        self.check(self.api.initialize(), "initialize")

    def last_error(self):
        message = C.create_string_buffer(4096)
        self.api.last_error(message, len(message))
        return text(message.value)

    def check(self, status, what):
        if status != STATUS_OK:
            name = STATUS_NAMES.get(status, str(status))
            raise LctError(status, f"{what}: {self.last_error() or name}")

    def nodes(self):
        """Every node type as a dict: id, display_name, category, description, flags, and
        inputs / outputs / widgets as lists of dicts."""
        return [self.describe(index) for index in range(self.api.node_count())]

    def describe(self, index):
        desc = C.POINTER(NodeDesc)()
        self.check(self.api.node_describe(index, C.byref(desc)), "node_describe")
        address = C.cast(desc, C.c_void_p).value
        # ABI 1 descriptors end before struct_size; later ones declare their size.
        size = NodeDesc.struct_size.offset
        if self.abi_version >= 2:
            size = C.c_uint32.from_address(address + NodeDesc.struct_size.offset).value
        node = read_prefix(NodeDesc, address, size)
        port_stride = node.port_desc_size or C.sizeof(PortDesc)
        widget_stride = node.widget_desc_size or C.sizeof(WidgetDesc)

        def ports(pointer, count):
            return [{"name": text(p.name), "kind_name": text(p.kind_name), "kind": p.kind,
                     "optional": bool(p.flags & PORT_OPTIONAL), "tooltip": text(p.tooltip)}
                    for p in read_array(PortDesc, pointer, count, port_stride)]

        widgets = []
        for w in read_array(WidgetDesc, node.widgets, node.widget_count, widget_stride):
            widgets.append({
                "name": text(w.name), "kind": w.kind, "flags": w.flags,
                "multiline": bool(w.flags & WIDGET_MULTILINE),
                "suggestions": w.kind == KIND_STRING and bool(w.flags & WIDGET_SUGGESTIONS),
                "tooltip": text(w.tooltip), "int_default": w.int_default, "int_min": w.int_min,
                "int_max": w.int_max, "int_step": w.int_step, "float_default": w.float_default,
                "float_min": w.float_min, "float_max": w.float_max, "float_step": w.float_step,
                "text_default": text(w.text_default),
                "choices": [text(w.choices[i]) for i in range(w.choice_count)],
            })
        return {"index": index, "id": text(node.id), "version": node.version, "flags": node.flags,
                "display_name": text(node.display_name), "category": text(node.category),
                "description": text(node.description),
                "inputs": ports(node.inputs, node.input_count),
                "outputs": ports(node.outputs, node.output_count), "widgets": widgets}

    def execute(self, index, params, inputs, output_count, progress=None, preview=None,
                output_directory=None, what=None):
        """Runs node type `index`. `params`: (name, kind, value) triples; `inputs`: one handle
        per input port (0 for an absent optional one); `progress(step, total)` and
        `preview(step, total, frame_buffer)` return True to go on. Returns the output handles."""
        keep = []  # the encoded strings must outlive the call
        array = (Param * max(len(params), 1))()
        for slot, (name, kind, value) in zip(array, params):
            slot.name = name.encode()
            slot.kind = kind
            if kind in (KIND_STRING, KIND_ENUM):
                keep.append(str(value).encode())
                slot.text_value = keep[-1]
            elif kind == KIND_FLOAT:
                slot.float_value = float(value)
            else:
                slot.int_value = int(value)
        failure = []

        def guarded(callback):
            # An exception must not unwind through the plugin's stack: it stops the node.
            def call(*args):
                try:
                    return 0 if callback(*args) else 1
                except BaseException as error:  # noqa: BLE001, re-raised after the call
                    failure.append(error)
                    return 1
            return call

        progress_fn = ProgressFn(guarded(lambda _u, _n, step, total: progress(step, total))) \
            if progress else ProgressFn()
        preview_fn = PreviewFn(guarded(lambda _u, _n, step, total, buffer: preview(step, total, buffer.contents))) \
            if preview else PreviewFn()
        size = C.sizeof(ExecuteOptions) if self.abi_version >= 3 else ExecuteOptions.preview.offset
        options = ExecuteOptions(size, index, progress_fn, None,
                                 str(output_directory).encode() if output_directory else None,
                                 C.sizeof(Param), 0, preview_fn)
        handles = (Handle * max(len(inputs), 1))(*inputs)
        outputs = (Handle * max(output_count, 1))()
        status = self.api.node_execute(index, array, len(params), handles, len(inputs), C.byref(options),
                                       outputs, output_count)
        if failure:
            for handle in outputs[:output_count]:
                if handle:
                    self.release(handle)
            raise failure[0]
        if status != STATUS_OK:
            # The plugin's message names the node and what was wrong with it.
            raise LctError(status, self.last_error() or f"{what or index}: {STATUS_NAMES.get(status, status)}")
        return [outputs[i] for i in range(output_count)]

    def release(self, handle):
        self.check(self.api.value_release(handle), "value_release")

    def kind(self, handle):
        kind = Kind()
        self.check(self.api.value_kind(handle, C.byref(kind)), "value_kind")
        return kind.value

    def read_int(self, handle):
        value = C.c_int64()
        self.check(self.api.value_read_int(handle, C.byref(value)), "value_read_int")
        return value.value

    def read_float(self, handle):
        value = C.c_double()
        self.check(self.api.value_read_float(handle, C.byref(value)), "value_read_float")
        return value.value

    def read_string(self, handle):
        length = C.c_size_t()
        buffer = C.create_string_buffer(4096)
        status = self.api.value_read_string(handle, buffer, len(buffer), C.byref(length))
        if status == 9:  # BUFFER_TOO_SMALL: the length is known now
            buffer = C.create_string_buffer(length.value + 1)
            status = self.api.value_read_string(handle, buffer, len(buffer), C.byref(length))
        self.check(status, "value_read_string")
        return buffer.raw[:length.value].decode("utf-8", "replace")

    def frames_info(self, handle):
        info = FramesInfo()
        self.check(self.api.frames_info(handle, C.byref(info)), "frames_info")
        return info

    def frames_copy(self, handle, sample_format=SAMPLE_F32, color_space=COLOR_SPACE_SRGB):
        """All frames as (bytes, frame_count, height, width, channels), converted to
        `color_space` (UNSPECIFIED: as stored)."""
        info = self.frames_info(handle)
        sample_bytes = 4 if sample_format == SAMPLE_F32 else 1
        size = info.frame_count * info.height * info.width * info.channels * sample_bytes
        pixels = C.create_string_buffer(max(size, 1))
        buffer = FrameBuffer(C.cast(pixels, C.c_void_p), size, 0, info.frame_count, 0, 0, 0, sample_format,
                             color_space)
        self.check(self.api.frames_copy(handle, C.byref(buffer)), "frames_copy")
        return pixels.raw[:size], info.frame_count, info.height, info.width, info.channels

    def frames_import(self, data, frame_count, height, width, channels, sample_format=SAMPLE_F32,
                      color_space=COLOR_SPACE_SRGB):
        """A FRAMES handle from frame-major, interleaved pixels (`data`: bytes-like)."""
        pixels = C.create_string_buffer(bytes(data), len(data))
        buffer = FrameBuffer(C.cast(pixels, C.c_void_p), len(data), 0, frame_count, width, height, channels,
                             sample_format, color_space)
        handle = Handle()
        self.check(self.api.frames_import(C.byref(buffer), C.byref(handle)), "frames_import")
        return handle.value

    def live_handle_count(self):
        return self.api.live_handle_count()
