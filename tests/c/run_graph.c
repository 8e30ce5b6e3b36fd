/*
 * A C host using nothing but lct_plugin.h: load the plugin with dlopen, check the table,
 * list the nodes with their ports, import frames of its own, copy a pixel back out, and run
 * SaveFrames on them. Then it generates two shots with the embedded model (LoadModel ->
 * SceneContext -> ShotGenerate), taking the sampler's previews through the preview callback
 * and writing each as a PPM. Works with the shipped plugin (it needs no test node) and with
 * plugins older or newer than its header: it reads descriptors by the sizes they declare and
 * checks for appended functions before calling them.
 *
 *   cc -std=c99 -I plugin/abi/include tests/c/run_graph.c -ldl -o run_graph
 *   ./run_graph target/debug/liblct_plugin.so OUT_DIR
 *
 * Prints what it does; exits non-zero with the plugin's message on any failure.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lct_plugin.h"

static const LctPluginApi* api;

/* Element `i` of an array whose elements are `stride` bytes apart (the plugin's own size). */
static const void* element(const void* base, size_t stride, size_t i) {
    return (const char*)base + i * stride;
}

static void print_ports(const LctPortDesc* ports, size_t count, size_t stride) {
    for (size_t p = 0; p < count; p++) {
        const LctPortDesc* port = element(ports, stride, p);
        printf("%s%s: %s", p ? ", " : "", port->name, port->kind_name);
    }
}

static void check(LctStatus status, const char* what) {
    if (status != LCT_STATUS_OK) {
        char message[1024];
        api->last_error(message, sizeof message);
        fprintf(stderr, "%s failed with status %d: %s\n", what, (int)status, message);
        exit(1);
    }
}

static int32_t on_progress(void* user_data, uint32_t node_index, uint32_t step, uint32_t total) {
    (void)node_index;
    *(uint32_t*)user_data = step;
    (void)total;
    return 0; /* continue */
}

/* Where previews go: the output directory and how many were written. */
typedef struct PreviewSink {
    const char* directory;
    uint32_t written;
} PreviewSink;

/* A preview is valid only during the call: write it out (PPM: a header, then the RGB bytes),
 * the shots side by side. */
static int32_t on_preview(void* user_data, uint32_t node_index, uint32_t step, uint32_t total,
                          const LctFrameBuffer* preview) {
    (void)node_index;
    PreviewSink* sink = user_data;
    if (preview->sample_format != LCT_SAMPLE_U8 || preview->channels != 3) {
        return 1; /* not what this host reads: stop */
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/preview_step%04u.ppm", sink->directory, step);
    FILE* file = fopen(path, "wbx"); /* never replace a file */
    if (!file) {
        return 1;
    }
    uint32_t w = preview->width, h = preview->height, shots = preview->frame_count;
    const unsigned char* pixels = preview->data;
    fprintf(file, "P6\n%u %u\n255\n", w * shots, h);
    for (uint32_t y = 0; y < h; y++) {
        for (uint32_t shot = 0; shot < shots; shot++) {
            fwrite(pixels + (((size_t)shot * h + y) * w) * 3, 3, w, file);
        }
    }
    fclose(file);
    printf("preview step %u/%u: %u shot(s) of %ux%u\n", step, total, shots, w, h);
    sink->written++;
    return 0;
}

static LctParam text_param(const char* name, const char* value) {
    LctParam p;
    memset(&p, 0, sizeof p);
    p.name = name;
    p.kind = LCT_KIND_STRING;
    p.text_value = value;
    return p;
}

/* Runs node `id` with one output, failing loudly. */
static LctHandle run_node(const char* id, const LctParam* params, size_t param_count,
                          const LctHandle* inputs, size_t input_count, const LctExecuteOptions* options) {
    uint32_t index;
    check(api->node_find(id, &index), id);
    LctHandle output;
    check(api->node_execute(index, params, param_count, inputs, input_count, options, &output, 1), id);
    return output;
}

static LctParam int_param(const char* name, int64_t value) {
    LctParam p;
    memset(&p, 0, sizeof p);
    p.name = name;
    p.kind = LCT_KIND_INT;
    p.int_value = value;
    return p;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PLUGIN OUT_DIR\n", argv[0]);
        return 2;
    }
    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    LctPluginEntryFn entry;
    /* The POSIX way to turn dlsym's void* into a function pointer. */
    *(void**)(&entry) = dlsym(library, LCT_ENTRY_SYMBOL);
    if (!entry) {
        fprintf(stderr, "no %s in %s\n", LCT_ENTRY_SYMBOL, argv[1]);
        return 1;
    }
    api = entry();
    /* Any version since the oldest loads; the ABI 1 functions must all be inside the table. */
    if (!api || api->abi_version < LCT_OLDEST_ABI_VERSION ||
        !LCT_HAS_FIELD(LctPluginApi, live_handle_count, api->struct_size)) {
        fprintf(stderr, "incompatible plugin\n");
        return 1;
    }
    check(api->initialize(), "initialize");
    printf("plugin %s %s, abi %u\n", api->plugin_name, api->plugin_version, api->abi_version);

    uint32_t count = api->node_count();
    for (uint32_t i = 0; i < count; i++) {
        const LctNodeDesc* node;
        check(api->node_describe(i, &node), "node_describe");
        /* ABI 1 descriptors end before struct_size; their arrays have this header's sizes. */
        size_t port_stride = sizeof(LctPortDesc);
        if (api->abi_version >= 2 && LCT_HAS_FIELD(LctNodeDesc, port_desc_size, node->struct_size) &&
            node->port_desc_size != 0) {
            port_stride = node->port_desc_size;
        }
        if (port_stride < sizeof(LctPortDesc)) {
            fprintf(stderr, "node %s: ports of %zu bytes are older than this host\n", node->id, port_stride);
            return 1;
        }
        printf("node %s (", node->id);
        print_ports(node->inputs, node->input_count, port_stride);
        printf(") -> (");
        print_ports(node->outputs, node->output_count, port_stride);
        printf(")%s\n", (node->flags & LCT_NODE_OUTPUT) ? " output" : "");
    }

    uint32_t save;
    check(api->node_find("SaveFrames", &save), "node_find SaveFrames");

    /* Four frames of 32x24 RGB made here, as a compositor hands over a plate. */
    const uint32_t frame_count = 4, width = 32, height = 24, channels = 3;
    size_t frame_bytes = (size_t)width * height * channels;
    unsigned char* plate = malloc(frame_count * frame_bytes);
    for (size_t i = 0; i < frame_count * frame_bytes; i++) {
        plate[i] = (unsigned char)((i * 7) & 0xff);
    }
    LctFrameBuffer source;
    memset(&source, 0, sizeof source);
    source.data = plate;
    source.capacity_bytes = frame_count * frame_bytes;
    source.frame_count = frame_count;
    source.width = width;
    source.height = height;
    source.channels = channels;
    source.sample_format = LCT_SAMPLE_U8;
    source.color_space = LCT_COLOR_SPACE_SRGB;
    LctHandle frames;
    check(api->frames_import(&source, &frames), "frames_import");
    free(plate);

    LctFramesInfo info;
    check(api->frames_info(frames, &info), "frames_info");
    printf("frames %u x %ux%ux%u colour space %u\n", info.frame_count, info.width, info.height, info.channels,
           info.color_space);

    unsigned char* pixels = malloc(frame_bytes);
    LctFrameBuffer buffer;
    memset(&buffer, 0, sizeof buffer);
    buffer.data = pixels;
    buffer.capacity_bytes = frame_bytes;
    buffer.first_frame = 1;
    buffer.frame_count = 1;
    buffer.sample_format = LCT_SAMPLE_U8;
    buffer.color_space = LCT_COLOR_SPACE_SRGB;
    check(api->frames_copy(frames, &buffer), "frames_copy");
    printf("frame 1 pixel (1,0) = %u %u %u\n", pixels[3], pixels[4], pixels[5]);
    free(pixels);

    uint32_t last_step = 0;
    LctExecuteOptions options;
    memset(&options, 0, sizeof options);
    options.struct_size = sizeof options;
    options.progress = on_progress;
    options.user_data = &last_step;
    options.output_directory = argv[2];
    options.param_size = sizeof(LctParam);
    LctParam save_params[2];
    memset(save_params, 0, sizeof save_params);
    save_params[0].name = "name";
    save_params[0].kind = LCT_KIND_STRING;
    save_params[0].text_value = "from_c";
    save_params[1] = int_param("columns", 2);
    LctHandle folder;
    check(api->node_execute(save, save_params, 2, &frames, 1, &options, &folder, 1), "SaveFrames");
    char path[4096];
    size_t length;
    check(api->value_read_string(folder, path, sizeof path, &length), "value_read_string");
    printf("saved to %s (progress reached step %u)\n", path, last_step);

    /* A stale handle is an error, not a crash. */
    check(api->value_release(folder), "value_release");
    if (api->value_release(folder) != LCT_STATUS_BAD_HANDLE) {
        fprintf(stderr, "releasing twice did not report BAD_HANDLE\n");
        return 1;
    }
    char message[256];
    api->last_error(message, sizeof message);
    printf("second release: %s\n", message);
    /* An appended function: absent from plugins older than ABI 2. */
    if (LCT_HAS_FUNCTION(api, value_retain)) {
        LctHandle second;
        check(api->value_retain(frames, &second), "value_retain");
        check(api->value_release(second), "value_release");
        printf("value_retain: provided\n");
    } else {
        printf("value_retain: not provided (ABI %u plugin)\n", api->abi_version);
    }
    check(api->value_release(frames), "value_release");

    /* Previews arrived in ABI 3; an older plugin ignores the field. */
    if (api->abi_version >= 3) {
        PreviewSink sink = {argv[2], 0};
        LctExecuteOptions sampling = options;
        sampling.preview = on_preview;
        sampling.user_data = &sink;
        sampling.progress = NULL;
        uint32_t load_model;
        check(api->node_find("LoadModel", &load_model), "node_find LoadModel");
        LctHandle model;
        if (api->node_execute(load_model, NULL, 0, NULL, 0, &sampling, &model, 1) != LCT_STATUS_OK) {
            char reason[1024];
            api->last_error(reason, sizeof reason);
            printf("previews: skipped, no embedded model (%s)\n", reason);
            goto done;
        }
        LctParam scene_params[3] = {
            text_param("global_prompt", "Environment: blue sky, green ground, low horizon, warm light, day."),
            text_param("characters", "Character 1: large red circle, striped."),
            text_param("shots", "[SHOT 1] wide shot of Character 1 moving right.\n"
                                "[SHOT 2] close-up of Character 1 moving left."),
        };
        LctHandle scene_inputs[3] = {LCT_NULL_HANDLE, LCT_NULL_HANDLE, LCT_NULL_HANDLE};
        LctHandle scene = run_node("SceneContext", scene_params, 3, scene_inputs, 3, &sampling);
        LctParam generate_params[3] = {int_param("steps", 4), int_param("preview_every", 2),
                                       int_param("frames", 1)};
        LctHandle generate_inputs[4] = {model, scene, LCT_NULL_HANDLE, LCT_NULL_HANDLE};
        LctHandle latent = run_node("ShotGenerate", generate_params, 3, generate_inputs, 4, &sampling);
        printf("previews written: %u\n", sink.written);
        LctHandle handles[3] = {latent, scene, model};
        for (int i = 0; i < 3; i++) {
            check(api->value_release(handles[i]), "value_release");
        }
    }
done:
    printf("live handles: %llu\n", (unsigned long long)api->live_handle_count());
    return 0;
}
