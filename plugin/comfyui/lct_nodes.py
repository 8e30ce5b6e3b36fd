"""ComfyUI node classes made from the lct plugin's own node descriptors.

Every node the plugin describes becomes one ComfyUI class, so a node added to the plugin
appears in ComfyUI without a change here. Sockets: MODEL, SCENE, LATENT and KV_CACHE travel
as `LctValue` handles under the types LCT_MODEL, LCT_SCENE, LCT_LATENT and LCT_KV_CACHE
(prefixed so that they never connect to ComfyUI's own MODEL and LATENT); FRAMES become
ComfyUI IMAGE tensors (batch x height x width x 3, float sRGB in 0..1) and back.

ComfyUI's conventions on top: output nodes that write under the output folder (a `directory`
and a `name` widget) number their files as ComfyUI's savers do and show what they wrote on the
node; lct's LoadImage picks from ComfyUI's input folder with upload; STRING widgets with
suggestions become lists that still take any text.

ComfyUI itself (`comfy.utils`, `comfy.model_management`, `folder_paths`) is imported when a
node runs, not at import, so the mapping can be built and tested without a ComfyUI install.
"""
import hashlib
import inspect
import os
import re
import sys

from . import lct_ctypes as abi

COMFY_TYPES = {abi.KIND_INT: "INT", abi.KIND_FLOAT: "FLOAT", abi.KIND_BOOL: "BOOLEAN",
               abi.KIND_STRING: "STRING", abi.KIND_ENUM: "STRING", abi.KIND_FRAMES: "IMAGE"}
HANDLE_KINDS = (abi.KIND_SCENE, abi.KIND_LATENT, abi.KIND_KV_CACHE, abi.KIND_MODEL)

# Widgets that name a file to read, shown as ComfyUI's LoadImage shows its `image`: a list of
# the files in ComfyUI's input folder with these extensions, and an upload button. The one
# place a node is known by name: descriptors do not say which files a path widget reads.
FILE_PICKERS = {("LoadImage", "path"): {
    "extensions": (".png", ".jpg", ".jpeg", ".exr"),
    "tooltip": "An image in ComfyUI's input folder (upload one with the button). Typed in an API "
               "workflow: a path relative to the input folder, also a sequence pattern with # for the "
               "frame number (shots/shot_####.exr) or a folder; no `..`, no absolute paths"}}
# What ComfyUI's frontend plays as a video on a node ("animated" results that are not WEBP or
# PNG); a GIF is shown as an image.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")
SHOWN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif") + VIDEO_EXTENSIONS
# The plugin's C function names, which its messages and lct_ctypes' start with.
FUNCTION_PREFIX = re.compile(r"^(?:(?:%s): )+" % "|".join(
    name for name, kind in abi.PluginApi._fields_ if hasattr(kind, "_argtypes_")))
ANNOTATION = re.compile(r"\s*\[(?:input|output|temp)\]$")


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


def comfy_message(message):
    """A plugin message as ComfyUI shows it: without the C function name it starts with
    (`node_execute: `) and without trailing whitespace."""
    return FUNCTION_PREFIX.sub("", str(message)).rstrip()


def widget_input(widget, node_id=None):
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
    picker = FILE_PICKERS.get((node_id, widget["name"]))
    if picker is not None:
        # ComfyUI's LoadImage: the input folder's files (not its subfolders) and an upload
        # button; no default, so a new node shows the first file.
        options.update(tooltip=picker["tooltip"], image_upload=True)
        return (input_files(picker["extensions"]), options)
    if widget["suggestions"] and widget["choices"]:
        # Names to offer, not a limit: VALIDATE_INPUTS lets any other text through.
        choices = list(widget["choices"])
        if widget["text_default"] and widget["text_default"] not in choices:
            choices.insert(0, widget["text_default"])
        options.update(default=widget["text_default"] or choices[0])
        return (choices, options)
    options.update(default=widget["text_default"], multiline=widget["multiline"])
    return ("STRING", options)


def widget_param(widget, value):
    kind = widget["kind"]
    if kind == abi.KIND_BOOL:
        return (widget["name"], abi.KIND_BOOL, 1 if value else 0)
    if kind in (abi.KIND_STRING, abi.KIND_ENUM):
        return (widget["name"], kind, str(value))
    return (widget["name"], kind, value)


def input_files(extensions):
    """The image files in ComfyUI's input folder, sorted, as ComfyUI's LoadImage lists them
    (files directly in the folder; uploads land there)."""
    import folder_paths
    folder = folder_paths.get_input_directory()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(name for name in names if name.lower().endswith(extensions)
                  and os.path.isfile(os.path.join(folder, name)))


def path_problem(value, widget, where, folder):
    """Why `value`, a path typed into `widget`, may not be used inside ComfyUI's `folder`
    ("input" or "output"), or None. A ComfyUI server is often reachable by others: no graph
    may name a file or folder outside ComfyUI's own."""
    text = ANNOTATION.sub("", str(value)) if folder == "input" else str(value)
    if os.path.isabs(text) or text.startswith(("/", "\\")) or os.path.splitdrive(text)[0]:
        why = f"{text!r} is an absolute path"
    elif ".." in re.split(r"[/\\]", text):
        why = f"{text!r} goes up with `..`"
    else:
        return None
    if folder == "output":
        return f"{where}: `{widget}` {why}: saving outside the output folder is not allowed."
    return (f"{where}: `{widget}` {why}: reading outside the input folder is not allowed; choose a "
            f"file in ComfyUI's input folder (or upload one) or give a path relative to it.")


def input_path(value, widget, where):
    """The file a picker's value names: an entry of ComfyUI's input folder, or a path typed
    relative to it (a sequence pattern or folder for LoadImage); ComfyUI's annotations
    (`name.png [output]`) are honoured as by its own LoadImage."""
    import folder_paths
    problem = path_problem(value, widget, where, "input")
    if problem:
        raise ValueError(problem)
    if not ANNOTATION.sub("", str(value)).strip():
        raise ValueError(f"{where}: `{widget}` is empty: choose a file in ComfyUI's input folder or "
                         f"upload one.")
    return folder_paths.get_annotated_filepath(str(value))


def saves_files(desc):
    """Whether the node writes files under the output folder with ComfyUI's numbering: an
    output node with `directory` and `name` STRING widgets (SaveFrames, SaveVideo)."""
    kinds = {w["name"]: w["kind"] for w in desc["widgets"]}
    return bool(desc["flags"] & abi.NODE_OUTPUT) and \
        kinds.get("directory") == kinds.get("name") == abi.KIND_STRING


def numbered_target(values, where):
    """`directory` and `name` for the plugin, numbered as ComfyUI's SaveImage numbers its files:
    `video` / `scene` become `video` / `scene_00001_` (the next number free in that folder),
    so the plugin writes `video/scene_00001_.mp4`; ComfyUI fills in `%year%`-style fields."""
    import folder_paths
    directory, name = str(values["directory"]), str(values["name"])
    for widget, value in (("directory", directory), ("name", name)):
        problem = path_problem(value, widget, where, "output")
        if problem:
            raise ValueError(problem)
    prefix = f"{directory.rstrip('/')}/{name}" if directory.strip("/") else name
    _, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_output_directory())
    return dict(values, directory=subfolder.replace(os.sep, "/"), name=f"{filename}_{counter:05}_")


def saved_results(path, output_directory):
    """ComfyUI's result entries ({filename, subfolder, type}) for what the plugin reports it
    wrote at `path`: that file, or the images in that folder; nothing outside the output
    folder."""
    root = os.path.realpath(output_directory)
    path = os.path.realpath(path)
    if os.path.isdir(path):
        folder, names = path, sorted(n for n in os.listdir(path) if n.lower().endswith(SHOWN_EXTENSIONS))
    elif os.path.isfile(path):
        folder, names = os.path.split(path)
        names = [names] if names.lower().endswith(SHOWN_EXTENSIONS) else []
    else:
        return []
    subfolder = os.path.relpath(folder, root)
    if subfolder == os.pardir or subfolder.startswith(os.pardir + os.sep) or os.path.isabs(subfolder):
        return []
    subfolder = "" if subfolder == os.curdir else subfolder.replace(os.sep, "/")
    return [{"filename": n, "subfolder": subfolder, "type": "output"} for n in names]


def ui_payload(entries):
    """What ComfyUI's frontend shows on an output node: images as SaveImage's, a video as core
    SaveVideo's (`animated` results that are neither WEBP nor PNG are played as video)."""
    if any(e["filename"].lower().endswith(VIDEO_EXTENSIONS) for e in entries):
        return {"images": entries, "animated": (True,)}
    return {"images": entries}


def file_hash(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def node_class(plugin, desc):
    """The ComfyUI class for one plugin node type."""
    index, node_id = desc["index"], desc["id"]
    display = desc["display_name"] or node_id
    outputs = desc["outputs"]
    pickers = [w["name"] for w in desc["widgets"] if (node_id, w["name"]) in FILE_PICKERS]
    suggested = [w["name"] for w in desc["widgets"] if w["suggestions"] and w["choices"]
                 and w["name"] not in pickers]
    targets = ["directory", "name"] if saves_files(desc) else []

    def input_types(cls):
        required, optional = {}, {}
        for port in desc["inputs"]:
            (optional if port["optional"] else required)[port["name"]] = (comfy_type(port), {"tooltip": port["tooltip"]})
        # Widgets in the descriptor's order (ComfyUI keeps the dict's order).
        for widget in desc["widgets"]:
            required[widget["name"]] = widget_input(widget, node_id)
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

    checked = pickers + suggested + targets
    if checked:
        def validate_inputs(cls, **values):
            # ComfyUI skips its own list check for the inputs this function names: a picked
            # or suggested name may be any text (a typed path, a custom OCIO config's names).
            for name in pickers:
                if name in values:
                    problem = path_problem(values[name], name, display, "input")
                    if problem:
                        return problem
            for name in targets:
                if name in values:
                    problem = path_problem(values[name], name, display, "output")
                    if problem:
                        return problem
            return True

        # ComfyUI reads the inputs a VALIDATE_INPUTS takes from its signature; a **kwargs
        # one would turn off its range checks of every other widget too.
        parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
        validate_inputs.__signature__ = inspect.Signature(
            [inspect.Parameter("cls", parameter)] +
            [inspect.Parameter(name, parameter, default=None) for name in checked if name.isidentifier()])
        attributes["VALIDATE_INPUTS"] = classmethod(validate_inputs)

    if pickers:
        def is_changed(cls, **values):
            # As ComfyUI's LoadImage: the picked file's contents; a folder or a sequence
            # pattern runs again every time.
            try:
                path = input_path(values.get(pickers[0], ""), pickers[0], display)
                if os.path.isfile(path):
                    return file_hash(path)
            except (OSError, ValueError):
                pass
            return float("nan")
        attributes["IS_CHANGED"] = classmethod(is_changed)
    elif desc["flags"] & abi.NODE_NOT_IDEMPOTENT:
        # Files on disk may change between runs: never reuse ComfyUI's cached result.
        attributes["IS_CHANGED"] = classmethod(lambda cls, **_: float("nan"))
    return type(f"Lct{node_id}", (), attributes), display


def execute_node(plugin, desc, values, comfy_node_id=None):
    """Runs the plugin node with ComfyUI's input values; returns ComfyUI's output tuple, or for
    a node that saves files {"ui": ..., "result": ...} showing them. An lct failure raises
    LctError with the plugin's message, an interrupt ComfyUI's own
    InterruptProcessingException."""
    import comfy.model_management as model_management
    import comfy.utils
    import folder_paths

    name = desc["display_name"] or desc["id"]
    output_directory = folder_paths.get_output_directory()
    values = dict(values)
    for widget in desc["widgets"]:
        if (desc["id"], widget["name"]) in FILE_PICKERS and widget["name"] in values:
            values[widget["name"]] = input_path(values[widget["name"]], widget["name"], name)
    if saves_files(desc):
        values = numbered_target(values, name)
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
                                     preview=preview, output_directory=output_directory, what=name)
        except abi.LctError as error:
            if error.cancelled and model_management.processing_interrupted():
                model_management.throw_exception_if_processing_interrupted()
            # ComfyUI shows the message as is: the node's own words, not the C call's name.
            raise abi.LctError(error.status, comfy_message(error)) from None
    finally:
        for handle in temporary:
            plugin.release(handle)

    results, saved = [], []
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
                if desc["flags"] & abi.NODE_OUTPUT:
                    saved.extend(saved_results(results[-1], output_directory))
        finally:
            plugin.release(handle)
    if desc["flags"] & abi.NODE_OUTPUT:
        return {"ui": ui_payload(saved), "result": tuple(results)}
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
