#!/usr/bin/env python3
"""The ComfyUI pack against the real plugin, without a ComfyUI install.

ComfyUI's three modules the pack calls at run time (comfy.utils.ProgressBar,
comfy.model_management's interrupt flag, folder_paths) are stood in for by small recorders
with ComfyUI's signatures; everything else is the pack and the built plugin.

    python3 plugin/comfyui/tests/test_pack.py target/debug/liblct_plugin.so OUT_DIR

Needs numpy and Pillow (Debian: python3-numpy python3-pil). Prints one line per check.
"""
import gc
import importlib.util
import os
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


def main(plugin_path, out_dir):
    folder_paths.get_output_directory = lambda: out_dir
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
            assert spec[1]["tooltip"] == widget["tooltip"], widget["name"]
        for port in desc["inputs"]:
            section = "optional" if port["optional"] else "required"
            assert port["name"] in types_[section], (desc["id"], port["name"])
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

    baseline = plugin.live_handle_count()

    # 2. IMAGE -> FRAMES -> IMAGE, and through ACEScg and back (colour space respected).
    rng = np.random.default_rng(7)
    image = rng.random((2, 24, 32, 3), dtype=np.float32)
    frames = pack.lct_nodes.image_to_frames(plugin, image, "test")
    assert plugin.frames_info(frames).color_space == abi.COLOR_SPACE_SRGB
    back = pack.lct_nodes.frames_to_image(plugin, frames)
    back = back.numpy() if hasattr(back, "numpy") else back
    assert back.shape == (2, 24, 32, 3) and back.dtype == np.float32
    assert np.abs(back - image).max() <= 1e-6, np.abs(back - image).max()
    plugin.release(frames)
    convert = classes["lct.ColorConvert"]()
    widgets = dict(widget_defaults(convert), to="ACEScg")
    (acescg,) = convert.run(frames=image, **widgets)
    acescg = acescg.numpy() if hasattr(acescg, "numpy") else acescg
    # Shown as sRGB again the ACEScg frames are the same picture, within 1/255.
    assert np.abs(acescg - image).max() <= 1 / 255, np.abs(acescg - image).max()
    print(f"IMAGE round trip: max error {np.abs(back - image).max():.1e}, through ACEScg "
          f"{np.abs(acescg - image).max():.1e}")
    expect_error(lambda: convert.run(frames=np.zeros((2, 3)), **widgets), "input 'frames'", "[2, 3]")

    # 3. An lct error is an exception with the plugin's message, naming the file.
    load_image = classes["lct.LoadImage"]()
    defaults = widget_defaults(load_image)
    missing = os.path.join(out_dir, "no_such_image.png")
    message = expect_error(lambda: load_image.run(**dict(defaults, path=missing)), "LctError", missing)
    print(f"error: {message}")
    truncated = os.path.join(out_dir, "truncated.png")
    with open(truncated, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n\0\0")
    message = expect_error(lambda: load_image.run(**dict(defaults, path=truncated)), "LctError", truncated)
    print(f"error: {message}")
    scene_node = classes["lct.SceneContext"]()
    assert plugin.live_handle_count() == baseline, "an error leaked handles"

    # 4. A generation: progress, previews, and ComfyUI's interrupt within one step.
    try:
        (model,) = classes["lct.LoadModel"]().run(path="")
    except abi.LctError as error:
        print(f"generation: skipped, no embedded model ({error})")
        return
    (scene,) = scene_node.run(
        global_prompt="Environment: blue sky, green ground, low horizon, warm light, day.",
        characters="Character 1: large red circle, striped.",
        shots="[SHOT 1] wide shot of Character 1 moving right.\n[SHOT 2] close-up of Character 1 moving left.")
    sampler = widget_defaults(generate)
    sampler.update(steps=4, preview_every=2, frames=2, mode="joint")
    (unknown,) = scene_node.run(global_prompt="Environment: plaid sky.", characters="", shots="[SHOT 1] wide shot.")
    message = expect_error(lambda: generate().run(model=model, scene=unknown, **sampler), "LctError", "plaid")
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
    decoded = decoded.numpy() if hasattr(decoded, "numpy") else decoded
    assert decoded.shape == (4, 64, 64, 3), decoded.shape
    # The last preview is the result: shot 2's middle frame (frame 1 of 0..1) as shown.
    shown = np.asarray(picture.convert("RGB"), dtype=np.float32)[:, 64:] / 255
    assert np.abs(shown - decoded[3]).mean() < 0.05, np.abs(shown - decoded[3]).mean()
    print(f"generation: progress {steps}, previews at {[s for s, _ in previews]} of {picture.size}")

    saved = classes["lct.SaveFrames"]()
    out = saved.run(frames=decoded, **dict(widget_defaults(saved), name="comfy_pack"))
    folder = out["result"][0]
    assert folder.startswith(out_dir) and os.path.isdir(folder) and out["ui"]["text"] == [folder], out
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

    # 5. Handles go when ComfyUI drops its outputs.
    assert plugin.live_handle_count() > baseline
    model = scene = latent = None
    gc.collect()
    assert plugin.live_handle_count() == baseline, (plugin.live_handle_count(), baseline)
    print(f"handles: back to {baseline} after the outputs are dropped")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} PLUGIN OUT_DIR")
    main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
