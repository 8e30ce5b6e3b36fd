"""ComfyUI node classes made from the lct plugin's own node descriptors.

Every node the plugin describes becomes one ComfyUI class, so a node added to the plugin
appears in ComfyUI without a change here. Sockets: MODEL, SCENE, LATENT and KV_CACHE travel
as `LctValue` handles under the types LCT_MODEL, LCT_SCENE, LCT_LATENT and LCT_KV_CACHE
(prefixed so that they never connect to ComfyUI's own MODEL and LATENT); FRAMES become
ComfyUI IMAGE tensors (batch x height x width x 3, float sRGB in 0..1) and back.

ComfyUI itself (`comfy.utils`, `comfy.model_management`, `folder_paths`) is imported when a
node runs, not at import, so the mapping can be built and tested without a ComfyUI install.
"""
import os
import sys

from . import lct_ctypes as abi

COMFY_TYPES = {abi.KIND_INT: "INT", abi.KIND_FLOAT: "FLOAT", abi.KIND_BOOL: "BOOLEAN",
               abi.KIND_STRING: "STRING", abi.KIND_ENUM: "STRING", abi.KIND_FRAMES: "IMAGE"}
HANDLE_KINDS = (abi.KIND_SCENE, abi.KIND_LATENT, abi.KIND_KV_CACHE, abi.KIND_MODEL)


def comfy_type(port):
    if port["kind"] in HANDLE_KINDS:
        return "LCT_" + port["kind_name"]
    return COMFY_TYPES[port["kind"]]


def find_plugin():
    """$LCT_PLUGIN, else `lib/liblct_plugin.so` in the pack, else the repository's release
    build when the pack is used from (or linked out of) a checkout."""
    name = {"darwin": "liblct_plugin.dylib", "win32": "lct_plugin.dll"}.get(sys.platform, "liblct_plugin.so")
    here = os.path.dirname(os.path.realpath(__file__))
    candidates = [os.environ.get("LCT_PLUGIN"), os.path.join(here, "lib", name),
                  os.path.join(here, "..", "..", "target", "release", name)]
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    tried = ", ".join(p for p in candidates if p)
    raise FileNotFoundError(f"lct: no plugin library found (tried {tried}); build it with "
                            f"`cargo build --release -p lct-plugin` or set LCT_PLUGIN")


class LctValue:
    """One plugin handle (a model, scene, latent or KV cache) on a ComfyUI edge. Released
    when ComfyUI drops the output that holds it."""

    def __init__(self, plugin, handle, kind_name):
        self.plugin, self.handle, self.kind_name = plugin, handle, kind_name

    def __repr__(self):
        return f"<lct {self.kind_name} {self.handle:#x}>"

    def __del__(self):
        handle, self.handle = self.handle, 0
        if handle:
            try:
                self.plugin.release(handle)
            except Exception:  # noqa: BLE001, interpreter shutdown: the process frees all
                pass


def _numpy():
    import numpy
    return numpy


def frames_to_image(plugin, handle):
    """A FRAMES handle as a ComfyUI IMAGE: float32 [frames, height, width, 3], sRGB display
    values in 0..1 (the plugin converts from the frames' own colour space)."""
    np = _numpy()
    data, count, height, width, channels = plugin.frames_copy(handle, abi.SAMPLE_F32, abi.COLOR_SPACE_SRGB)
    pixels = np.frombuffer(data, dtype=np.float32).reshape(count, height, width, channels)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    pixels = np.array(pixels[..., :3], copy=True)  # writable and contiguous, as torch wants
    try:
        import torch
    except ImportError:
        return pixels
    return torch.from_numpy(pixels)


def image_to_frames(plugin, image, where):
    """A ComfyUI IMAGE (torch tensor or numpy array [batch, height, width, channels], sRGB) as
    a new FRAMES handle tagged sRGB. Any other shape is an error naming the input."""
    np = _numpy()
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[3] not in (1, 3, 4) or 0 in pixels.shape:
        raise ValueError(f"{where}: expected an IMAGE of [batch, height, width, 1|3|4], got shape "
                         f"{list(pixels.shape)}")
    pixels = np.ascontiguousarray(pixels[..., :3] if pixels.shape[3] == 4 else pixels)
    count, height, width, channels = pixels.shape
    return plugin.frames_import(pixels.tobytes(), count, height, width, channels, abi.SAMPLE_F32,
                                abi.COLOR_SPACE_SRGB)


def preview_image(buffer):
    """The preview callback's 8-bit sRGB shots, side by side, as a PIL image."""
    from PIL import Image
    width, height, shots = buffer.width, buffer.height, buffer.frame_count
    data = abi.C.string_at(buffer.data, buffer.capacity_bytes)  # valid during the call only
    sheet = Image.new("RGB", (width * shots, height))
    frame = width * height * buffer.channels
    for shot in range(shots):
        tile = Image.frombytes("RGB", (width, height), data[shot * frame:(shot + 1) * frame])
        sheet.paste(tile, (shot * width, 0))
    return sheet


def widget_input(widget):
    options = {"tooltip": widget["tooltip"]}
    kind = widget["kind"]
    if kind == abi.KIND_INT:
        options.update(default=widget["int_default"], min=widget["int_min"], max=widget["int_max"],
                       step=max(widget["int_step"], 1))
        return ("INT", options)
    if kind == abi.KIND_FLOAT:
        # Descriptors carry f64; show the f32 widgets as typed (0.3, not 0.30000001192092896).
        options.update(default=round(widget["float_default"], 6), min=widget["float_min"],
                       max=widget["float_max"], step=widget["float_step"] or 0.01)
        return ("FLOAT", options)
    if kind == abi.KIND_BOOL:
        options.update(default=bool(widget["int_default"]))
        return ("BOOLEAN", options)
    if kind == abi.KIND_ENUM:
        options.update(default=widget["text_default"] or widget["choices"][0])
        return (widget["choices"], options)
    options.update(default=widget["text_default"], multiline=widget["multiline"])
    return ("STRING", options)


def widget_param(widget, value):
    kind = widget["kind"]
    if kind == abi.KIND_BOOL:
        return (widget["name"], abi.KIND_BOOL, 1 if value else 0)
    return (widget["name"], kind, value)


def node_class(plugin, desc):
    """The ComfyUI class for one plugin node type."""
    index, node_id = desc["index"], desc["id"]
    display = desc["display_name"] or node_id
    outputs = desc["outputs"]

    def input_types(cls):
        required, optional = {}, {}
        for port in desc["inputs"]:
            (optional if port["optional"] else required)[port["name"]] = (comfy_type(port), {"tooltip": port["tooltip"]})
        for widget in desc["widgets"]:
            required[widget["name"]] = widget_input(widget)
        types = {"required": required, "hidden": {"node_id": "UNIQUE_ID"}}
        if optional:
            types["optional"] = optional
        return types

    def run(self, node_id=None, **values):
        return execute_node(plugin, desc, values, node_id)

    attributes = {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(comfy_type(p) for p in outputs),
        "RETURN_NAMES": tuple(p["name"] for p in outputs),
        "OUTPUT_TOOLTIPS": tuple(p["tooltip"] for p in outputs),
        "FUNCTION": "run",
        "CATEGORY": desc["category"] or "lct",
        "DESCRIPTION": desc["description"],
        "OUTPUT_NODE": bool(desc["flags"] & abi.NODE_OUTPUT),
        "run": run,
        "lct_node_id": node_id,
        "lct_index": index,
    }
    if desc["flags"] & abi.NODE_NOT_IDEMPOTENT:
        # Files on disk may change between runs: never reuse ComfyUI's cached result.
        attributes["IS_CHANGED"] = classmethod(lambda cls, **_: float("nan"))
    return type(f"Lct{node_id}", (), attributes), display


def execute_node(plugin, desc, values, comfy_node_id=None):
    """Runs the plugin node with ComfyUI's input values; returns ComfyUI's output tuple. An
    lct failure raises LctError with the plugin's message, an interrupt ComfyUI's own
    InterruptProcessingException."""
    import comfy.model_management as model_management
    import comfy.utils
    import folder_paths

    name = desc["display_name"] or desc["id"]
    params = [widget_param(w, values[w["name"]]) for w in desc["widgets"] if w["name"] in values]
    inputs, temporary = [], []
    try:
        for port in desc["inputs"]:
            value = values.get(port["name"])
            if value is None:
                inputs.append(0)
            elif port["kind"] == abi.KIND_FRAMES:
                handle = image_to_frames(plugin, value, f"{name}: input '{port['name']}'")
                temporary.append(handle)
                inputs.append(handle)
            elif isinstance(value, LctValue):
                inputs.append(value.handle)
            else:
                raise TypeError(f"{name}: input '{port['name']}' expects {comfy_type(port)}, got "
                                f"{type(value).__name__}")

        bar = comfy.utils.ProgressBar(1, node_id=comfy_node_id)
        try:
            from comfy.cli_args import args
            preview_size = args.preview_size
        except Exception:  # noqa: BLE001, older ComfyUI: its default
            preview_size = 512
        last = {"step": 0, "total": 1}

        def progress(step, total):
            last.update(step=step, total=total)
            bar.update_absolute(step, total)
            return not model_management.processing_interrupted()

        def preview(step, total, buffer):
            bar.update_absolute(step, total, ("JPEG", preview_image(buffer), preview_size))
            return not model_management.processing_interrupted()

        try:
            handles = plugin.execute(desc["index"], params, inputs, len(desc["outputs"]), progress=progress,
                                     preview=preview, output_directory=folder_paths.get_output_directory(),
                                     what=name)
        except abi.LctError as error:
            if error.cancelled and model_management.processing_interrupted():
                model_management.throw_exception_if_processing_interrupted()
            raise
    finally:
        for handle in temporary:
            plugin.release(handle)

    results, ui_text = [], []
    for port, handle in zip(desc["outputs"], handles):
        if port["kind"] in HANDLE_KINDS:
            results.append(LctValue(plugin, handle, port["kind_name"]))
            continue
        try:
            if port["kind"] == abi.KIND_FRAMES:
                results.append(frames_to_image(plugin, handle))
            elif port["kind"] == abi.KIND_INT:
                results.append(plugin.read_int(handle))
            elif port["kind"] == abi.KIND_FLOAT:
                results.append(plugin.read_float(handle))
            else:
                results.append(plugin.read_string(handle))
                ui_text.append(results[-1])
        finally:
            plugin.release(handle)
    if desc["flags"] & abi.NODE_OUTPUT:
        return {"ui": {"text": ui_text}, "result": tuple(results)}
    return tuple(results)


def build_mappings(plugin):
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS for every node of `plugin`; class
    names are prefixed `lct.` so they never shadow ComfyUI's own (LoadImage, ...)."""
    classes, names = {}, {}
    for desc in plugin.nodes():
        cls, display = node_class(plugin, desc)
        key = f"lct.{desc['id']}"
        classes[key] = cls
        names[key] = f"{display} (lct)"
    return classes, names
