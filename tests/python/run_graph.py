#!/usr/bin/env python3
"""A Python host using ctypes and the layout in plugin/abi/include/lct_plugin.h.

Loads the plugin, checks the table, lists the nodes with their ports, imports frames of its
own, copies a frame back out, runs SaveFrames on them and checks that stale handles are
refused. Then it generates two shots with the embedded model (LoadModel -> SceneContext ->
ShotGenerate) and takes the sampler's previews through the preview callback, writing each as
a PPM. Works with the shipped plugin (no test node needed) and with plugins older or newer
than the layout below: structs are read by the sizes the plugin declares (read_prefix).

    python3 tests/python/run_graph.py target/debug/liblct_plugin.so OUT_DIR

A model for compositor and node-editor integrations: the structures are those of
plugin/comfyui/lct_ctypes.py (standard library only), the calls are the raw C table's.
"""
import ctypes as C
import os
import sys

# The structures of the header, read by declared sizes: the binding the ComfyUI pack uses.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugin", "comfyui"))
from lct_ctypes import (  # noqa: E402
    COLOR_SPACE_SRGB, KIND_INT, KIND_STRING, LCT_OLDEST_ABI_VERSION, NODE_OUTPUT, SAMPLE_U8, STATUS_BAD_HANDLE,
    STATUS_OK, ExecuteOptions, FrameBuffer, FramesInfo, Handle, NodeDesc, Param, PluginApi, PortDesc, PreviewFn,
    ProgressFn, field_end, read_array, read_prefix)


def main(plugin_path, out_dir):
    library = C.CDLL(plugin_path)
    library.lct_plugin_entry.restype = C.c_void_p
    table = library.lct_plugin_entry()
    if not table:
        sys.exit("the plugin returned no table")
    struct_size, abi_version = C.cast(table, C.POINTER(C.c_uint32 * 2)).contents
    if abi_version < LCT_OLDEST_ABI_VERSION or struct_size < field_end(PluginApi, "live_handle_count"):
        sys.exit(f"incompatible plugin: abi {abi_version}, table {struct_size} bytes")
    api = read_prefix(PluginApi, table, struct_size)

    def check(status, what):
        if status != STATUS_OK:
            message = C.create_string_buffer(1024)
            api.last_error(message, len(message))
            sys.exit(f"{what} failed with status {status}: {message.value.decode()}")

    check(api.initialize(), "initialize")
    print(f"plugin {api.plugin_name.decode()} {api.plugin_version.decode()}, abi {api.abi_version}")
    for index in range(api.node_count()):
        desc = C.POINTER(NodeDesc)()
        check(api.node_describe(index, C.byref(desc)), "node_describe")
        address = C.cast(desc, C.c_void_p).value
        # ABI 1 descriptors end before struct_size; later ones declare their size.
        size = NodeDesc.struct_size.offset
        if abi_version >= 2:
            size = C.c_uint32.from_address(address + NodeDesc.struct_size.offset).value
        node = read_prefix(NodeDesc, address, size)
        stride = node.port_desc_size or C.sizeof(PortDesc)
        ports = lambda p, n: ", ".join(f"{q.name.decode()}: {q.kind_name.decode()}"
                                       for q in read_array(PortDesc, p, n, stride))
        flag = " output" if node.flags & NODE_OUTPUT else ""
        print(f"node {node.id.decode()} ({ports(node.inputs, node.input_count)}) -> "
              f"({ports(node.outputs, node.output_count)}){flag}")

    save = C.c_uint32()
    check(api.node_find(b"SaveFrames", C.byref(save)), "node_find")

    # Four frames of 32x24 RGB made here, as a compositor hands over a plate.
    count, width, height, channels = 4, 32, 24, 3
    plate = (C.c_uint8 * (count * width * height * channels))(*((i * 7) & 0xFF for i in range(
        count * width * height * channels)))
    source = FrameBuffer(C.cast(plate, C.c_void_p), len(plate), 0, count, width, height, channels, SAMPLE_U8,
                         COLOR_SPACE_SRGB)
    frames = Handle()
    check(api.frames_import(C.byref(source), C.byref(frames)), "frames_import")
    info = FramesInfo()
    check(api.frames_info(frames, C.byref(info)), "frames_info")
    print(f"frames {info.frame_count} x {info.width}x{info.height}x{info.channels}")

    pixels = (C.c_uint8 * (info.width * info.height * info.channels))()
    buffer = FrameBuffer(C.cast(pixels, C.c_void_p), len(pixels), 1, 1, 0, 0, 0, SAMPLE_U8, COLOR_SPACE_SRGB)
    check(api.frames_copy(frames, C.byref(buffer)), "frames_copy")
    print(f"frame 1 pixel (1,0) = {pixels[3]} {pixels[4]} {pixels[5]}")

    steps = []
    progress = ProgressFn(lambda user, node, step, total: steps.append(step) or 0)
    options = ExecuteOptions(C.sizeof(ExecuteOptions), 0, progress, None, out_dir.encode(), C.sizeof(Param))
    save_params = (Param * 2)(Param(b"name", KIND_STRING, 0, 0.0, b"from_python"), Param(b"columns", KIND_INT, 2))
    folder = Handle()
    inputs = (Handle * 1)(frames)
    check(api.node_execute(save.value, save_params, 2, inputs, 1, C.byref(options), C.byref(folder), 1),
          "SaveFrames")
    path = C.create_string_buffer(4096)
    length = C.c_size_t()
    check(api.value_read_string(folder, path, len(path), C.byref(length)), "value_read_string")
    print(f"saved to {path.value.decode()} (progress reached step {max(steps)})")

    check(api.value_release(folder), "value_release")
    assert api.value_release(folder) == STATUS_BAD_HANDLE, "releasing twice must be BAD_HANDLE"

    # Output folders stay inside the output root, whatever the string.
    for directory in (b"../escaped", out_dir.encode() + b"/../escaped", b"frames/../../escaped"):
        escape_params = (Param * 1)(Param(b"directory", KIND_STRING, 0, 0.0, directory))
        refused = Handle()
        status = api.node_execute(save.value, escape_params, 1, inputs, 1, C.byref(options),
                                  C.byref(refused), 1)
        message = C.create_string_buffer(1024)
        api.last_error(message, len(message))
        assert status != 0 and not refused.value, f"{directory!r} was accepted"
        print(f"escape {directory.decode()}: refused ({message.value.decode()})")
    # An appended function: past the table of plugins older than ABI 2 (read as NULL).
    if api.value_retain:
        second = Handle()
        check(api.value_retain(frames, C.byref(second)), "value_retain")
        check(api.value_release(second), "value_release")
        print("value_retain: provided")
    else:
        print(f"value_retain: not provided (ABI {abi_version} plugin)")
    check(api.value_release(frames), "value_release")

    # Previews arrived in ABI 3; an older plugin ignores the field.
    if abi_version >= 3:
        written = []

        def on_preview(user, node, step, total, buffer):
            preview = buffer.contents
            if preview.sample_format != SAMPLE_U8 or preview.channels != 3:
                return 1  # not what this host reads: stop
            w, h, shots = preview.width, preview.height, preview.frame_count
            pixels = C.string_at(preview.data, preview.capacity_bytes)  # a copy: ours to keep
            frame = w * h * 3
            rows = b"".join(pixels[shot * frame + y * w * 3:shot * frame + (y + 1) * w * 3]
                            for y in range(h) for shot in range(shots))
            with open(f"{out_dir}/preview_step{step:04}.ppm", "xb") as file:  # never replace
                file.write(b"P6\n%d %d\n255\n" % (w * shots, h) + rows)
            print(f"preview step {step}/{total}: {shots} shot(s) of {w}x{h}")
            written.append(step)
            return 0

        sampling = ExecuteOptions(C.sizeof(ExecuteOptions), 0, ProgressFn(), None, out_dir.encode(),
                                  C.sizeof(Param), 0, PreviewFn(on_preview))

        def run(node_id, params, inputs):
            index = C.c_uint32()
            check(api.node_find(node_id, C.byref(index)), node_id.decode())
            output = Handle()
            check(api.node_execute(index.value, (Param * len(params))(*params), len(params),
                                   (Handle * len(inputs))(*inputs), len(inputs), C.byref(sampling),
                                   C.byref(output), 1), node_id.decode())
            return output.value

        load_model, model = C.c_uint32(), Handle()
        check(api.node_find(b"LoadModel", C.byref(load_model)), "node_find")
        if api.node_execute(load_model.value, None, 0, None, 0, C.byref(sampling), C.byref(model), 1) != STATUS_OK:
            reason = C.create_string_buffer(1024)
            api.last_error(reason, len(reason))
            print(f"previews: skipped, no embedded model ({reason.value.decode()})")
            print(f"live handles: {api.live_handle_count()}")
            return
        model = model.value
        scene = run(b"SceneContext", [
            Param(b"global_prompt", KIND_STRING, 0, 0.0,
                  b"Environment: blue sky, green ground, low horizon, warm light, day."),
            Param(b"characters", KIND_STRING, 0, 0.0, b"Character 1: large red circle, striped."),
            Param(b"shots", KIND_STRING, 0, 0.0, b"[SHOT 1] wide shot of Character 1 moving right.\n"
                                                  b"[SHOT 2] close-up of Character 1 moving left."),
        ], [0, 0, 0])
        latent = run(b"ShotGenerate", [Param(b"steps", KIND_INT, 4), Param(b"preview_every", KIND_INT, 2),
                                       Param(b"frames", KIND_INT, 1)], [model, scene, 0, 0])
        print(f"previews written: {len(written)}")
        for handle in (latent, scene, model):
            check(api.value_release(handle), "value_release")
    print(f"live handles: {api.live_handle_count()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} PLUGIN OUT_DIR")
    main(sys.argv[1], sys.argv[2])
