#!/usr/bin/env python3
"""The ComfyUI pack against the real plugin, without a ComfyUI install.

ComfyUI's three modules the pack calls at run time (comfy.utils.ProgressBar,
comfy.model_management's interrupt flag, folder_paths with its input and output folders and
file numbering) are stood in for by small recorders with ComfyUI's signatures; everything else
is the pack and the built plugin. Nothing is written outside OUT_DIR: ComfyUI's input and
output folders are OUT_DIR/input and OUT_DIR/output.

    python3 plugin/comfyui/tests/test_pack.py target/debug/liblct_plugin.so OUT_DIR

Needs numpy and Pillow (Debian: python3-numpy python3-pil). Prints one line per check.
"""
import gc
import hashlib
import importlib.util
import inspect
import os
import re
import sys
import types

import numpy as np

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Recorder:
    """What ComfyUI's progress hook would have received."""
    updates = []
    interrupt_after_step = None


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total, self.node_id = total, node_id

    def update_absolute(self, value, total=None, preview=None):
        Recorder.updates.append((value, total, preview))
        if Recorder.interrupt_after_step is not None and value >= Recorder.interrupt_after_step:
            model_management.interrupt_processing = True


class InterruptProcessingException(Exception):
    pass


def processing_interrupted():
    return model_management.interrupt_processing


def throw_exception_if_processing_interrupted():
    if model_management.interrupt_processing:
        model_management.interrupt_processing = False
        raise InterruptProcessingException()


comfy = types.ModuleType("comfy")
utils = types.ModuleType("comfy.utils")
utils.ProgressBar = ProgressBar
model_management = types.ModuleType("comfy.model_management")
model_management.interrupt_processing = False
model_management.processing_interrupted = processing_interrupted
model_management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
model_management.InterruptProcessingException = InterruptProcessingException
folder_paths = types.ModuleType("folder_paths")


def get_annotated_filepath(name, default_dir=None):
    """ComfyUI's: `name [output]` / `[input]` / `[temp]` pick the folder, else the input one."""
    for tag, folder in ((" [output]", folder_paths.get_output_directory),
                        (" [input]", folder_paths.get_input_directory)):
        if name.endswith(tag):
            return os.path.join(folder(), name[:-len(tag)])
    return os.path.join(default_dir or folder_paths.get_input_directory(), name)


def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
    """ComfyUI's contract: (full_output_folder, filename, counter, subfolder, filename_prefix),
    the counter one past the highest `filename_NNNNN_...` in the folder, made if missing."""
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("Saving image outside the output folder is not allowed.")
    os.makedirs(full_output_folder, exist_ok=True)
    taken = [int(m.group(1)) for n in os.listdir(full_output_folder)
             if (m := re.match(re.escape(filename) + r"_(\d+)_", n))]
    return full_output_folder, filename, max(taken, default=0) + 1, subfolder, filename_prefix


folder_paths.get_annotated_filepath = get_annotated_filepath
folder_paths.get_save_image_path = get_save_image_path
comfy.utils, comfy.model_management = utils, model_management
sys.modules.update({"comfy": comfy, "comfy.utils": utils, "comfy.model_management": model_management,
                    "folder_paths": folder_paths})


def load_pack(plugin_path):
    os.environ["LCT_PLUGIN"] = plugin_path
    spec = importlib.util.spec_from_file_location("lct_pack", os.path.join(PACK, "__init__.py"),
                                                  submodule_search_locations=[PACK])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["lct_pack"] = pack
    spec.loader.exec_module(pack)
    return pack


def widget_defaults(node):
    """The widgets' defaults, as ComfyUI fills a new node."""
    return {name: spec[1]["default"] for name, spec in node.INPUT_TYPES()["required"].items()
            if "default" in spec[1]}


def expect_error(call, *needles):
    try:
        call()
    except Exception as error:  # noqa: BLE001, the type is checked by the caller's needles
        message = f"{type(error).__name__}: {error}"
        for needle in needles:
            assert needle in message, f"{needle!r} not in {message!r}"
        return message
    raise AssertionError(f"no error; expected one naming {needles}")


def expect_refused(call, *needles):
    """An error naming `needles` that does not start with a C function name (node_execute: )
    and does not end in a newline: the message as ComfyUI shows it."""
    message = expect_error(call, *needles)
    text = message.split(": ", 1)[1]
    assert not re.match(r"^(node_|value_|frames_)\w*: ", text), message
    assert text == text.rstrip(), repr(message)
    return message


def as_numpy(image):
    return image.numpy() if hasattr(image, "numpy") else image


def main(plugin_path, out_dir):
    output_dir, input_dir = os.path.join(out_dir, "output"), os.path.join(out_dir, "input")
    os.makedirs(output_dir, exist_ok=True)
    os.makedirs(input_dir, exist_ok=True)
    folder_paths.get_output_directory = lambda: output_dir
    folder_paths.get_input_directory = lambda: input_dir
    pack = load_pack(plugin_path)
    plugin, abi = pack.PLUGIN, pack.lct_ctypes
    classes = pack.NODE_CLASS_MAPPINGS

    # 1. Every plugin node, from its descriptor: sockets, widgets with their ranges.
    descs = plugin.nodes()
    assert sorted(classes) == sorted(f"lct.{d['id']}" for d in descs), sorted(classes)
    for desc in descs:
        cls = classes[f"lct.{desc['id']}"]
        types_ = cls.INPUT_TYPES()
        assert len(cls.RETURN_TYPES) == len(desc["outputs"])
        for widget in desc["widgets"]:
            spec = types_["required"][widget["name"]]
            picker = (desc["id"], widget["name"]) in pack.lct_nodes.FILE_PICKERS
            assert spec[1]["tooltip"] == widget["tooltip"] or picker and "input folder" in spec[1]["tooltip"], \
                widget["name"]
        for port in desc["inputs"]:
            section = "optional" if port["optional"] else "required"
            assert port["name"] in types_[section], (desc["id"], port["name"])
        # Widgets in the descriptor's order, after the sockets.
        widgets = [w["name"] for w in desc["widgets"]]
        assert [n for n in types_["required"] if n in widgets] == widgets, (desc["id"], list(types_["required"]))
    generate = classes["lct.ShotGenerate"]
    inputs = generate.INPUT_TYPES()
    assert inputs["required"]["model"][0] == "LCT_MODEL"
    assert inputs["optional"]["kv_cache"][0] == "LCT_KV_CACHE"
    assert inputs["required"]["steps"] == ("INT", {"tooltip": inputs["required"]["steps"][1]["tooltip"],
                                                   "default": 20, "min": 1, "max": 500, "step": 1})
    assert inputs["required"]["mode"][0] == ["joint", "autoregressive"]
    assert inputs["required"]["history_tc"][1]["default"] == 0.3
    assert generate.RETURN_TYPES == ("LCT_LATENT",) and generate.CATEGORY == "lct/sampling"
    assert classes["lct.SaveFrames"].OUTPUT_NODE and not generate.OUTPUT_NODE
    assert classes["lct.DecodeFrames"].RETURN_TYPES == ("IMAGE",)
    assert hasattr(classes["lct.LoadImage"], "IS_CHANGED")
    print(f"descriptors: {len(classes)} nodes mapped")
    load_model_widgets = list(classes["lct.LoadModel"].INPUT_TYPES()["required"])
    assert load_model_widgets == ["path", "width", "height", "precision"], load_model_widgets
    print(f"widget order: LoadModel {', '.join(load_model_widgets)} (the descriptor's)")

    # 2. Suggested names (OCIO colour spaces, displays, views) as lists that take any text:
    # ComfyUI skips its list check for the inputs VALIDATE_INPUTS names.
    suggested = []
    for desc in descs:
        cls = classes[f"lct.{desc['id']}"]
        required = cls.INPUT_TYPES()["required"]
        checked = []
        if hasattr(cls, "VALIDATE_INPUTS"):
            spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)  # as ComfyUI reads it
            assert spec.varkw is None, desc["id"]  # a **kwargs one turns off every range check
            checked = spec.args
        for widget in desc["widgets"]:
            spec = required[widget["name"]]
            if widget["suggestions"]:
                assert isinstance(spec[0], list) and set(widget["choices"]) <= set(spec[0]), (desc["id"], spec)
                assert spec[1]["default"] == widget["text_default"], (desc["id"], spec)
                assert widget["name"] in checked, (desc["id"], widget["name"], checked)
                assert cls.VALIDATE_INPUTS(**{widget["name"]: "Some Custom OCIO Space"}) is True
                suggested.append(f"{desc['id']}.{widget['name']}")
            elif widget["kind"] in (abi.KIND_ENUM, abi.KIND_INT, abi.KIND_FLOAT):
                # ComfyUI still checks lists and ranges of every other widget.
                assert widget["name"] not in checked, (desc["id"], widget["name"])
    expected = {"LoadImage.color_space", "ColorConvert.to", "SaveFrames.display", "SaveFrames.view",
                "SaveFrames.exr_color_space", "SaveVideo.display", "SaveVideo.view"}
    assert expected <= set(suggested), suggested
    assert classes["lct.LoadImage"].INPUT_TYPES()["required"]["color_space"][0][0] == "auto"
    print(f"suggestions: {len(suggested)} widgets as lists taking any text ({', '.join(sorted(suggested))})")

    # Every parameter goes with its widget's own kind (STRING for suggested names, BOOL 0 / 1).
    sent = []
    execute = plugin.execute

    def recording(index, params, *args, **kwargs):
        sent.append((index, list(params)))
        return execute(index, params, *args, **kwargs)

    plugin.execute = recording
    baseline = plugin.live_handle_count()

    # 3. IMAGE -> FRAMES -> IMAGE, and through ACEScg and back (colour space respected).
    rng = np.random.default_rng(7)
    image = rng.random((2, 24, 32, 3), dtype=np.float32)
    frames = pack.lct_nodes.image_to_frames(plugin, image, "test")
    assert plugin.frames_info(frames).color_space == abi.COLOR_SPACE_SRGB
    back = as_numpy(pack.lct_nodes.frames_to_image(plugin, frames))
    assert back.shape == (2, 24, 32, 3) and back.dtype == np.float32
    assert np.abs(back - image).max() <= 1e-6, np.abs(back - image).max()
    plugin.release(frames)
    convert = classes["lct.ColorConvert"]()
    widgets = dict(widget_defaults(convert), to="ACEScg")
    (acescg,) = convert.run(frames=image, **widgets)
    acescg = as_numpy(acescg)
    assert ("to", abi.KIND_STRING, "ACEScg") in sent[-1][1], sent[-1]
    # Shown as sRGB again the ACEScg frames are the same picture, within 1/255.
    assert np.abs(acescg - image).max() <= 1 / 255, np.abs(acescg - image).max()
    print(f"IMAGE round trip: max error {np.abs(back - image).max():.1e}, through ACEScg "
          f"{np.abs(acescg - image).max():.1e}")
    expect_error(lambda: convert.run(frames=np.zeros((2, 3)), **widgets), "input 'frames'", "[2, 3]")
    message = expect_refused(lambda: convert.run(frames=image, **dict(widgets, to="No Such Space")),
                             "LctError", "No Such Space")
    print(f"error: {message}")

    # 4. An lct error is an exception with the plugin's message, naming the file; without the
    # C function's name in front and without a trailing newline.
    load_image = classes["lct.LoadImage"]()
    defaults = widget_defaults(load_image)
    message = expect_refused(lambda: load_image.run(**dict(defaults, path="no_such_image.png")), "LctError",
                             os.path.join(input_dir, "no_such_image.png"))
    print(f"error: {message}")
    truncated = os.path.join(input_dir, "truncated.png")
    with open(truncated, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n\0\0")
    message = expect_refused(lambda: load_image.run(**dict(defaults, path="truncated.png")), "LctError", truncated)
    print(f"error: {message}")
    assert plugin.live_handle_count() == baseline, "an error leaked handles"
    print("errors: the plugin's message without `node_execute: ` in front or a newline at the end")

    # 5. LoadImage picks from ComfyUI's input folder (with upload), as ComfyUI's LoadImage does;
    # a typed path stays inside it.
    from PIL import Image
    picture = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(os.path.join(input_dir, "a.png"))
    Image.fromarray(picture).save(os.path.join(input_dir, "b.jpg"))
    with open(os.path.join(input_dir, "notes.txt"), "w") as file:
        file.write("not an image")
    os.makedirs(os.path.join(input_dir, "sub"), exist_ok=True)
    Image.fromarray(picture[::-1]).save(os.path.join(input_dir, "sub", "c.png"))
    outside = os.path.join(out_dir, "outside.png")
    Image.fromarray(picture).save(outside)
    loader = classes["lct.LoadImage"]
    files, options = loader.INPUT_TYPES()["required"]["path"]
    assert files == ["a.png", "b.jpg", "truncated.png"] and options["image_upload"] is True, (files, options)
    (loaded,) = load_image.run(**dict(defaults, path="a.png"))
    assert np.abs(as_numpy(loaded)[0] * 255 - picture).max() < 1, "a.png came back changed"
    (typed,) = load_image.run(**dict(defaults, path="sub/c.png"))
    assert as_numpy(typed).shape == (1, 24, 32, 3)
    assert loader.VALIDATE_INPUTS(path="sub/c.png", color_space="auto") is True
    refused = []
    for typed_path, why in (("../outside.png", "goes up with `..`"), (outside, "is an absolute path")):
        problem = loader.VALIDATE_INPUTS(path=typed_path)
        assert isinstance(problem, str) and why in problem, problem
        refused.append(expect_refused(lambda: load_image.run(**dict(defaults, path=typed_path)), why,
                                      "reading outside the input folder is not allowed"))
    digest = hashlib.sha256(open(os.path.join(input_dir, "a.png"), "rb").read()).hexdigest()
    assert loader.IS_CHANGED(path="a.png") == digest
    print(f"LoadImage: lists {files} of the input folder with image_upload; a.png and typed sub/c.png load; "
          f"IS_CHANGED is the file's sha256")
    for message in refused:
        print(f"LoadImage refused: {message}")

    # 6. SaveFrames and SaveVideo number their files as ComfyUI's savers and show them on the
    # node (ComfyUI's "images" / "animated" results).
    save_frames = classes["lct.SaveFrames"]()
    frame_widgets = dict(widget_defaults(save_frames), name="comfy_pack", contact_sheet=True)
    sent.clear()
    out = save_frames.run(frames=image, **frame_widgets)
    (index, params), = sent
    kinds = {w["name"]: w["kind"] for w in descs[index]["widgets"]}
    assert all(kind == kinds[name] for name, kind, _ in params), params
    assert dict((n, v) for n, _, v in params)["contact_sheet"] == 1, params
    folder = out["result"][0]
    assert folder == os.path.join(os.path.realpath(output_dir), "frames", "comfy_pack_00001_"), folder
    names = sorted(os.listdir(folder))
    assert out["ui"] == {"images": [{"filename": n, "subfolder": "frames/comfy_pack_00001_", "type": "output"}
                                    for n in names]}, out["ui"]
    counts = {name: sum(k == kind for _, k, _ in params) for name, kind in
              (("STRING", abi.KIND_STRING), ("ENUM", abi.KIND_ENUM), ("INT", abi.KIND_INT), ("BOOL", abi.KIND_BOOL))}
    print(f"params: SaveFrames' {len(params)} widgets sent with their own kinds "
          f"({', '.join(f'{n} {c}' for n, c in counts.items() if c)}; contact_sheet as 1), ColorConvert.to "
          f"as STRING")
    print(f"SaveFrames: ui images {[e['filename'] for e in out['ui']['images']]} in "
          f"{out['ui']['images'][0]['subfolder']}")
    again = save_frames.run(frames=image, **dict(frame_widgets, format="exr"))
    assert again["ui"] == {"images": [{"filename": "contact_sheet.png", "subfolder": "frames/comfy_pack_00002_",
                                       "type": "output"}]}, again
    print(f"SaveFrames exr: ui images {again['ui']['images']}")

    save_video = classes["lct.SaveVideo"]()
    video_widgets = dict(widget_defaults(save_video))
    video = save_video.run(frames=image, **video_widgets)
    entry = {"filename": "scene_00001_.mp4", "subfolder": "video", "type": "output"}
    assert video["ui"] == {"images": [entry], "animated": (True,)}, video
    assert video["result"][0] == os.path.join(os.path.realpath(output_dir), "video", "scene_00001_.mp4"), video
    print(f"SaveVideo: ui {video['ui']}")
    gif = save_video.run(frames=image, **dict(video_widgets, format="gif"))
    assert gif["ui"] == {"images": [dict(entry, filename="scene_00002_.gif")]}, gif
    print(f"SaveVideo gif: ui {gif['ui']}")

    # 7. Nothing outside the output folder: `..` and absolute paths refused by the pack before
    # anything is made (ComfyUI's wording), a link leading out refused by the plugin.
    escaped, absolute = os.path.join(out_dir, "escaped"), os.path.join(out_dir, "absolute")
    target = os.path.join(out_dir, "link_target")
    os.makedirs(target)
    os.symlink(target, os.path.join(output_dir, "link"))
    before = sorted(os.listdir(out_dir))
    refusals = []
    for node, widgets in ((save_video, video_widgets), (save_frames, frame_widgets)):
        for directory, why in (("../escaped", "goes up with `..`"), (absolute, "is an absolute path")):
            problem = type(node).VALIDATE_INPUTS(directory=directory)
            assert isinstance(problem, str) and why in problem, problem
            refusals.append(expect_refused(lambda: node.run(frames=image, **dict(widgets, directory=directory)),
                                           why, "saving outside the output folder is not allowed"))
        refusals.append(expect_refused(lambda: node.run(frames=image, **dict(widgets, directory="link")),
                                       "LctError", "outside the output root"))
    expect_refused(lambda: save_video.run(frames=image, **dict(video_widgets, name="../escaped")), "`..`")
    assert sorted(os.listdir(out_dir)) == before and not os.listdir(target), (os.listdir(out_dir), os.listdir(target))
    assert not os.path.exists(escaped) and not os.path.exists(absolute)
    print(f"outside the output folder: '../escaped', an absolute path and a link out refused for SaveVideo "
          f"and SaveFrames; nothing written outside OUT_DIR/output")
    for message in refusals[:3]:
        print(f"refused: {message}")
    plugin.execute = execute
    assert plugin.live_handle_count() == baseline, "a refusal leaked handles"

    # 8. A generation: progress, previews, and ComfyUI's interrupt within one step.
    scene_node = classes["lct.SceneContext"]()
    try:
        (model,) = classes["lct.LoadModel"]().run(path="", width=0, height=0, precision="f32")
    except abi.LctError as error:
        print(f"generation: skipped, no embedded model ({error})")
        return
    (scene,) = scene_node.run(
        global_prompt="Environment: blue sky, green ground, low horizon, warm light, day.",
        characters="Character 1: large red circle, striped.",
        shots="[SHOT 1] wide shot of Character 1 moving right.\n[SHOT 2] close-up of Character 1 moving left.")
    sampler = widget_defaults(generate)
    sampler.update(steps=4, preview_every=2, frames=2, mode="joint")
    plaid = dict(global_prompt="Environment: plaid sky.", characters="", shots="[SHOT 1] wide shot.")
    # With the model connected, SceneContext itself names the word it does not know.
    message = expect_refused(lambda: scene_node.run(model=model, **plaid), "LctError", "SceneContext", "plaid")
    print(f"error: {message}")
    (unknown,) = scene_node.run(**plaid)
    message = expect_refused(lambda: generate().run(model=model, scene=unknown, **sampler), "LctError", "plaid")
    print(f"error: {message}")
    unknown = None  # released with its last reference
    Recorder.updates.clear()
    (latent,) = generate().run(model=model, scene=scene, **sampler)
    steps = [u[0] for u in Recorder.updates if u[2] is None]
    previews = [(u[0], u[2]) for u in Recorder.updates if u[2] is not None]
    assert steps == [1, 2, 3, 4], steps
    assert [s for s, _ in previews] == [2, 4], previews
    kind, picture, size = previews[-1][1]
    assert kind == "JPEG" and picture.size == (2 * 64, 64) and size > 0, (kind, picture.size)
    (decoded,) = classes["lct.DecodeFrames"]().run(model=model, latent=latent)
    decoded = as_numpy(decoded)
    assert decoded.shape == (4, 64, 64, 3), decoded.shape
    # The last preview is the result: shot 2's middle frame (frame 1 of 0..1) as shown.
    shown = np.asarray(picture.convert("RGB"), dtype=np.float32)[:, 64:] / 255
    assert np.abs(shown - decoded[3]).mean() < 0.05, np.abs(shown - decoded[3]).mean()
    print(f"generation: progress {steps}, previews at {[s for s, _ in previews]} of {picture.size}")

    out = save_frames.run(frames=decoded, **frame_widgets)
    folder = out["result"][0]
    assert folder.startswith(os.path.realpath(output_dir)) and os.path.isdir(folder), out
    assert len(out["ui"]["images"]) == len(os.listdir(folder)), out
    print(f"SaveFrames wrote {len(os.listdir(folder))} files into the output directory")

    Recorder.updates.clear()
    Recorder.interrupt_after_step = 1
    expect_error(lambda: generate().run(model=model, scene=scene, **dict(sampler, seed=1)),
                 "InterruptProcessingException")
    Recorder.interrupt_after_step = None
    assert not model_management.interrupt_processing, "the interrupt was not taken"
    reached = max(u[0] for u in Recorder.updates)
    assert reached == 1, f"the sampler went on to step {reached} after the interrupt at step 1"
    print(f"interrupt: stopped at step {reached} of 4")

    # 9. Handles go when ComfyUI drops its outputs.
    assert plugin.live_handle_count() > baseline
    model = scene = latent = None
    gc.collect()
    assert plugin.live_handle_count() == baseline, (plugin.live_handle_count(), baseline)
    print(f"handles: back to {baseline} after the outputs are dropped")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} PLUGIN OUT_DIR")
    main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
