/* A small OpenFX host, written from the OpenFX 1.4 specification against its official headers
 * (tests/ofx/openfx, BSD-3-Clause), to test the "LCT Scene" bundle the way a compositor
 * loads it: find the binary in the bundle, load and describe the plug-in, describe it in the
 * generator context, create an instance, ask its region of definition and time domain, render
 * frames into float and byte RGBA images, abort a render, and read its error messages.
 *
 *   cc -std=c99 -I tests/ofx/openfx tests/ofx/ofx_host.c -ldl -o ofx_host
 *   ./ofx_host path/to/lct.ofx.bundle OUT_DIR
 *
 * Prints one line per check; exits non-zero on the first one that fails. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ofxCore.h"
#include "ofxImageEffect.h"
#include "ofxMessage.h"
#include "ofxParam.h"
#include "ofxProgress.h"
#include "ofxProperty.h"

#define FAIL(...) do { fprintf(stderr, "FAILED: " __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)
#define CHECK(cond, ...) do { if (!(cond)) FAIL(__VA_ARGS__); } while (0)

/* ---- property sets: named, typed, multi-dimensional values ---------------------------- */

enum { P_INT, P_DOUBLE, P_STRING, P_POINTER };
#define MAX_DIM 8
typedef struct Property {
    char *name;
    int type, dimension;
    int ints[MAX_DIM];
    double doubles[MAX_DIM];
    char *strings[MAX_DIM];
    void *pointers[MAX_DIM];
} Property;
struct OfxPropertySetStruct {
    Property *items;
    int count, capacity;
};
typedef struct OfxPropertySetStruct PropSet;

static PropSet *props_new(void) { return calloc(1, sizeof(PropSet)); }

static Property *prop_find(PropSet *set, const char *name) {
    for (int i = 0; i < set->count; i++)
        if (strcmp(set->items[i].name, name) == 0) return &set->items[i];
    return NULL;
}

static Property *prop_slot(PropSet *set, const char *name, int type, int index) {
    if (!set || !name || index < 0 || index >= MAX_DIM) return NULL;
    Property *p = prop_find(set, name);
    if (!p) {
        if (set->count == set->capacity) {
            set->capacity = set->capacity ? set->capacity * 2 : 16;
            set->items = realloc(set->items, sizeof(Property) * set->capacity);
        }
        p = &set->items[set->count++];
        memset(p, 0, sizeof *p);
        p->name = strdup(name);
        p->type = type;
    }
    if (p->type != type) return NULL;
    if (index + 1 > p->dimension) p->dimension = index + 1;
    return p;
}

static OfxStatus set_pointer(OfxPropertySetHandle s, const char *n, int i, void *v) {
    Property *p = prop_slot(s, n, P_POINTER, i);
    if (!p) return kOfxStatErrBadIndex;
    p->pointers[i] = v;
    return kOfxStatOK;
}
static OfxStatus set_string(OfxPropertySetHandle s, const char *n, int i, const char *v) {
    Property *p = prop_slot(s, n, P_STRING, i);
    if (!p) return kOfxStatErrBadIndex;
    free(p->strings[i]);
    p->strings[i] = strdup(v ? v : "");
    return kOfxStatOK;
}
static OfxStatus set_double(OfxPropertySetHandle s, const char *n, int i, double v) {
    Property *p = prop_slot(s, n, P_DOUBLE, i);
    if (!p) return kOfxStatErrBadIndex;
    p->doubles[i] = v;
    return kOfxStatOK;
}
static OfxStatus set_int(OfxPropertySetHandle s, const char *n, int i, int v) {
    Property *p = prop_slot(s, n, P_INT, i);
    if (!p) return kOfxStatErrBadIndex;
    p->ints[i] = v;
    return kOfxStatOK;
}
static OfxStatus set_pointer_n(OfxPropertySetHandle s, const char *n, int c, void *const *v) {
    for (int i = 0; i < c; i++) if (set_pointer(s, n, i, v[i])) return kOfxStatErrBadIndex;
    return kOfxStatOK;
}
static OfxStatus set_string_n(OfxPropertySetHandle s, const char *n, int c, const char *const *v) {
    for (int i = 0; i < c; i++) if (set_string(s, n, i, v[i])) return kOfxStatErrBadIndex;
    return kOfxStatOK;
}
static OfxStatus set_double_n(OfxPropertySetHandle s, const char *n, int c, const double *v) {
    for (int i = 0; i < c; i++) if (set_double(s, n, i, v[i])) return kOfxStatErrBadIndex;
    return kOfxStatOK;
}
static OfxStatus set_int_n(OfxPropertySetHandle s, const char *n, int c, const int *v) {
    for (int i = 0; i < c; i++) if (set_int(s, n, i, v[i])) return kOfxStatErrBadIndex;
    return kOfxStatOK;
}
static Property *prop_get(OfxPropertySetHandle s, const char *n, int type, int i, OfxStatus *status) {
    Property *p = s && n ? prop_find(s, n) : NULL;
    *status = !p ? kOfxStatErrUnknown : p->type != type ? kOfxStatErrValue
            : (i < 0 || i >= p->dimension) ? kOfxStatErrBadIndex : kOfxStatOK;
    return *status == kOfxStatOK ? p : NULL;
}
static OfxStatus get_pointer(OfxPropertySetHandle s, const char *n, int i, void **v) {
    OfxStatus st; Property *p = prop_get(s, n, P_POINTER, i, &st);
    if (p) *v = p->pointers[i];
    return st;
}
static OfxStatus get_string(OfxPropertySetHandle s, const char *n, int i, char **v) {
    OfxStatus st; Property *p = prop_get(s, n, P_STRING, i, &st);
    if (p) *v = p->strings[i];
    return st;
}
static OfxStatus get_double(OfxPropertySetHandle s, const char *n, int i, double *v) {
    OfxStatus st; Property *p = prop_get(s, n, P_DOUBLE, i, &st);
    if (p) *v = p->doubles[i];
    return st;
}
static OfxStatus get_int(OfxPropertySetHandle s, const char *n, int i, int *v) {
    OfxStatus st; Property *p = prop_get(s, n, P_INT, i, &st);
    if (p) *v = p->ints[i];
    return st;
}
static OfxStatus get_pointer_n(OfxPropertySetHandle s, const char *n, int c, void **v) {
    for (int i = 0; i < c; i++) { OfxStatus st = get_pointer(s, n, i, &v[i]); if (st) return st; }
    return kOfxStatOK;
}
static OfxStatus get_string_n(OfxPropertySetHandle s, const char *n, int c, char **v) {
    for (int i = 0; i < c; i++) { OfxStatus st = get_string(s, n, i, &v[i]); if (st) return st; }
    return kOfxStatOK;
}
static OfxStatus get_double_n(OfxPropertySetHandle s, const char *n, int c, double *v) {
    for (int i = 0; i < c; i++) { OfxStatus st = get_double(s, n, i, &v[i]); if (st) return st; }
    return kOfxStatOK;
}
static OfxStatus get_int_n(OfxPropertySetHandle s, const char *n, int c, int *v) {
    for (int i = 0; i < c; i++) { OfxStatus st = get_int(s, n, i, &v[i]); if (st) return st; }
    return kOfxStatOK;
}
static OfxStatus prop_reset(OfxPropertySetHandle s, const char *n) {
    Property *p = s && n ? prop_find(s, n) : NULL;
    if (!p) return kOfxStatErrUnknown;
    p->dimension = 0;
    return kOfxStatOK;
}
static OfxStatus get_dimension(OfxPropertySetHandle s, const char *n, int *c) {
    Property *p = s && n ? prop_find(s, n) : NULL;
    if (!p) return kOfxStatErrUnknown;
    *c = p->dimension;
    return kOfxStatOK;
}

static OfxPropertySuiteV1 property_suite = {
    set_pointer, set_string, set_double, set_int, set_pointer_n, set_string_n, set_double_n,
    set_int_n, get_pointer, get_string, get_double, get_int, get_pointer_n, get_string_n,
    get_double_n, get_int_n, prop_reset, get_dimension};

/* ---- parameters ----------------------------------------------------------------------- */

#define MAX_PARAMS 32
struct OfxParamStruct {
    char *name, *type;
    PropSet *props;
    int int_value;
    char *string_value;
};
struct OfxParamSetStruct {
    struct OfxParamStruct params[MAX_PARAMS];
    int count;
    PropSet *props;
};
typedef struct OfxParamStruct Param;
typedef struct OfxParamSetStruct ParamSet;

static Param *param_find(ParamSet *set, const char *name) {
    for (int i = 0; i < set->count; i++)
        if (strcmp(set->params[i].name, name) == 0) return &set->params[i];
    return NULL;
}

static OfxStatus param_define(OfxParamSetHandle set, const char *type, const char *name,
                              OfxPropertySetHandle *props) {
    if (!set || !type || !name) return kOfxStatErrBadHandle;
    if (param_find(set, name)) return kOfxStatErrExists;
    if (set->count == MAX_PARAMS) return kOfxStatErrMemory;
    if (strcmp(type, kOfxParamTypeString) && strcmp(type, kOfxParamTypeInteger) &&
        strcmp(type, kOfxParamTypeChoice))
        return kOfxStatErrUnsupported;
    Param *p = &set->params[set->count++];
    p->name = strdup(name);
    p->type = strdup(type);
    p->props = props_new();
    set_string(p->props, kOfxParamPropType, 0, type);
    set_string(p->props, kOfxPropName, 0, name);
    if (props) *props = p->props;
    return kOfxStatOK;
}
static OfxStatus param_get_handle(OfxParamSetHandle set, const char *name, OfxParamHandle *param,
                                  OfxPropertySetHandle *props) {
    Param *p = set && name ? param_find(set, name) : NULL;
    if (!p) return kOfxStatErrUnknown;
    *param = p;
    if (props) *props = p->props;
    return kOfxStatOK;
}
static OfxStatus param_set_get_property_set(OfxParamSetHandle set, OfxPropertySetHandle *props) {
    *props = set->props;
    return kOfxStatOK;
}
static OfxStatus param_get_property_set(OfxParamHandle param, OfxPropertySetHandle *props) {
    *props = param->props;
    return kOfxStatOK;
}
static OfxStatus param_read(Param *p, va_list args) {
    if (!strcmp(p->type, kOfxParamTypeString)) *va_arg(args, char **) = p->string_value;
    else *va_arg(args, int *) = p->int_value;
    return kOfxStatOK;
}
static OfxStatus param_get_value(OfxParamHandle param, ...) {
    va_list args;
    va_start(args, param);
    OfxStatus status = param_read(param, args);
    va_end(args);
    return status;
}
static OfxStatus param_get_value_at_time(OfxParamHandle param, OfxTime time, ...) {
    (void)time; /* nothing animates in this host */
    va_list args;
    va_start(args, time);
    OfxStatus status = param_read(param, args);
    va_end(args);
    return status;
}
/* What the effect must not need: animation, keys and editing. */
static OfxStatus no_derivative(OfxParamHandle p, OfxTime t, ...) { (void)p; (void)t; return kOfxStatErrUnsupported; }
static OfxStatus no_integral(OfxParamHandle p, OfxTime a, OfxTime b, ...) { (void)p; (void)a; (void)b; return kOfxStatErrUnsupported; }
static OfxStatus no_set(OfxParamHandle p, ...) { (void)p; return kOfxStatErrUnsupported; }
static OfxStatus no_set_at(OfxParamHandle p, OfxTime t, ...) { (void)p; (void)t; return kOfxStatErrUnsupported; }
static OfxStatus no_num_keys(OfxParamHandle p, unsigned int *n) { (void)p; (void)n; return kOfxStatErrUnsupported; }
static OfxStatus no_key_time(OfxParamHandle p, unsigned int i, OfxTime *t) { (void)p; (void)i; (void)t; return kOfxStatErrUnsupported; }
static OfxStatus no_key_index(OfxParamHandle p, OfxTime t, int d, int *i) { (void)p; (void)t; (void)d; (void)i; return kOfxStatErrUnsupported; }
static OfxStatus no_delete_key(OfxParamHandle p, OfxTime t) { (void)p; (void)t; return kOfxStatErrUnsupported; }
static OfxStatus no_delete_keys(OfxParamHandle p) { (void)p; return kOfxStatErrUnsupported; }
static OfxStatus no_copy(OfxParamHandle a, OfxParamHandle b, OfxTime t, const OfxRangeD *r) { (void)a; (void)b; (void)t; (void)r; return kOfxStatErrUnsupported; }
static OfxStatus no_edit_begin(OfxParamSetHandle s, const char *n) { (void)s; (void)n; return kOfxStatErrUnsupported; }
static OfxStatus no_edit_end(OfxParamSetHandle s) { (void)s; return kOfxStatErrUnsupported; }

static OfxParameterSuiteV1 parameter_suite = {
    param_define, param_get_handle, param_set_get_property_set, param_get_property_set,
    param_get_value, param_get_value_at_time, no_derivative, no_integral, no_set, no_set_at,
    no_num_keys, no_key_time, no_key_index, no_delete_key, no_delete_keys, no_copy, no_edit_begin,
    no_edit_end};

/* The instance's parameter values, set by this host as a user would. */
static void param_set_int(ParamSet *set, const char *name, int value) {
    Param *p = param_find(set, name);
    CHECK(p, "no parameter %s", name);
    p->int_value = value;
}
static void param_set_string(ParamSet *set, const char *name, const char *value) {
    Param *p = param_find(set, name);
    CHECK(p, "no parameter %s", name);
    free(p->string_value);
    p->string_value = strdup(value);
}

/* ---- clips, images and the effect ----------------------------------------------------- */

#define MAX_CLIPS 4
struct OfxImageClipStruct {
    char *name;
    PropSet *props;
    int connected;
    float fill[3]; /* a connected input's image: one colour */
};
typedef struct OfxImageClipStruct Clip;

struct OfxImageEffectStruct {
    PropSet *props;
    ParamSet params;
    Clip clips[MAX_CLIPS];
    int clip_count;
};
typedef struct OfxImageEffectStruct Effect;

/* What the next output image looks like, and what came back. */
static int output_width = 96, output_height = 80, output_byte = 0;
static void *output_data;
static int images_out; /* fetched minus released */

/* Abort and progress bookkeeping. */
static int abort_after_updates = -1, progress_updates, aborts_answered;
static char last_message[4096];

static Effect *effect_new(void) {
    Effect *e = calloc(1, sizeof(Effect));
    e->props = props_new();
    e->params.props = props_new();
    set_string(e->props, kOfxPropType, 0, kOfxTypeImageEffectInstance);
    return e;
}

static OfxStatus get_property_set(OfxImageEffectHandle e, OfxPropertySetHandle *props) {
    if (!e) return kOfxStatErrBadHandle;
    *props = e->props;
    return kOfxStatOK;
}
static OfxStatus get_param_set(OfxImageEffectHandle e, OfxParamSetHandle *set) {
    if (!e) return kOfxStatErrBadHandle;
    *set = &e->params;
    return kOfxStatOK;
}
static Clip *clip_find(Effect *e, const char *name) {
    for (int i = 0; i < e->clip_count; i++)
        if (strcmp(e->clips[i].name, name) == 0) return &e->clips[i];
    return NULL;
}
static OfxStatus clip_define(OfxImageEffectHandle e, const char *name, OfxPropertySetHandle *props) {
    if (!e || !name) return kOfxStatErrBadHandle;
    if (clip_find(e, name)) return kOfxStatErrExists;
    if (e->clip_count == MAX_CLIPS) return kOfxStatErrMemory;
    Clip *c = &e->clips[e->clip_count++];
    c->name = strdup(name);
    c->props = props_new();
    set_string(c->props, kOfxPropName, 0, name);
    if (props) *props = c->props;
    return kOfxStatOK;
}
static OfxStatus clip_get_handle(OfxImageEffectHandle e, const char *name, OfxImageClipHandle *clip,
                                 OfxPropertySetHandle *props) {
    Clip *c = e && name ? clip_find(e, name) : NULL;
    if (!c) return kOfxStatErrUnknown;
    set_int(c->props, kOfxImageClipPropConnected, 0, c->connected || !strcmp(name, kOfxImageEffectOutputClipName));
    *clip = c;
    if (props) *props = c->props;
    return kOfxStatOK;
}
static OfxStatus clip_get_property_set(OfxImageClipHandle clip, OfxPropertySetHandle *props) {
    *props = clip->props;
    return kOfxStatOK;
}
static OfxStatus clip_get_image(OfxImageClipHandle clip, OfxTime time, const OfxRectD *region,
                                OfxPropertySetHandle *image) {
    (void)time; (void)region;
    int output = !strcmp(clip->name, kOfxImageEffectOutputClipName);
    if (!output && !clip->connected) return kOfxStatFailed;
    PropSet *p = props_new();
    int w = output ? output_width : 40, h = output ? output_height : 30;
    int byte = output && output_byte;
    int row = w * 4 * (byte ? 1 : 4);
    unsigned char *data = calloc((size_t)h, (size_t)row);
    /* Fill so that an untouched pixel shows: the effect must write every pixel it owns. */
    if (output) memset(data, 0x7f, (size_t)h * (size_t)row);
    else
        for (int i = 0; i < w * h; i++) {
            float *px = (float *)data + i * 4;
            px[0] = clip->fill[0]; px[1] = clip->fill[1]; px[2] = clip->fill[2]; px[3] = 1;
        }
    int bounds[4] = {0, 0, w, h};
    set_int_n(p, kOfxImagePropBounds, 4, bounds);
    set_int(p, kOfxImagePropRowBytes, 0, row);
    set_pointer(p, kOfxImagePropData, 0, data);
    set_string(p, kOfxImageEffectPropPixelDepth, 0, byte ? kOfxBitDepthByte : kOfxBitDepthFloat);
    set_string(p, kOfxImageEffectPropComponents, 0, kOfxImageComponentRGBA);
    set_double(p, kOfxImagePropPixelAspectRatio, 0, 1.0);
    if (output) output_data = data;
    images_out++;
    *image = p;
    return kOfxStatOK;
}
static OfxStatus clip_release_image(OfxPropertySetHandle image) {
    if (!image) return kOfxStatErrBadHandle;
    void *data = NULL;
    get_pointer(image, kOfxImagePropData, 0, &data);
    if (data != output_data) free(data); /* the output's pixels are read after the render */
    images_out--;
    return kOfxStatOK;
}
static OfxStatus clip_get_rod(OfxImageClipHandle clip, OfxTime time, OfxRectD *bounds) {
    (void)clip; (void)time;
    bounds->x1 = bounds->y1 = 0; bounds->x2 = 40; bounds->y2 = 30;
    return kOfxStatOK;
}
static int effect_abort(OfxImageEffectHandle e) {
    (void)e;
    aborts_answered++;
    return abort_after_updates >= 0 && progress_updates >= abort_after_updates;
}

static OfxStatus no_alloc(OfxImageEffectHandle e, size_t n, OfxImageMemoryHandle *m) { (void)e; (void)n; *m = NULL; return kOfxStatErrMemory; }
static OfxStatus no_free(OfxImageMemoryHandle m) { (void)m; return kOfxStatErrBadHandle; }
static OfxStatus no_lock(OfxImageMemoryHandle m, void **p) { (void)m; *p = NULL; return kOfxStatErrBadHandle; }
static OfxStatus no_unlock(OfxImageMemoryHandle m) { (void)m; return kOfxStatErrBadHandle; }

static OfxImageEffectSuiteV1 image_effect_suite = {
    get_property_set, get_param_set, clip_define, clip_get_handle, clip_get_property_set,
    clip_get_image, clip_release_image, clip_get_rod, effect_abort, no_alloc, no_free, no_lock,
    no_unlock};

static OfxStatus progress_start(void *e, const char *label) { (void)e; (void)label; return kOfxStatOK; }
static OfxStatus progress_update(void *e, double fraction) {
    (void)e; (void)fraction;
    progress_updates++;
    return kOfxStatOK;
}
static OfxStatus progress_end(void *e) { (void)e; return kOfxStatOK; }
static OfxProgressSuiteV1 progress_suite = {progress_start, progress_update, progress_end};

static OfxStatus message(void *handle, const char *type, const char *id, const char *format, ...) {
    (void)handle; (void)id;
    va_list args;
    va_start(args, format);
    int n = snprintf(last_message, sizeof last_message, "%s: ", type);
    vsnprintf(last_message + n, sizeof last_message - (size_t)n, format, args);
    va_end(args);
    return kOfxStatOK;
}
static OfxMessageSuiteV1 message_suite = {message};

static const void *fetch_suite(OfxPropertySetHandle host, const char *name, int version) {
    (void)host;
    if (version != 1) return NULL;
    if (!strcmp(name, kOfxPropertySuite)) return &property_suite;
    if (!strcmp(name, kOfxImageEffectSuite)) return &image_effect_suite;
    if (!strcmp(name, kOfxParameterSuite)) return &parameter_suite;
    if (!strcmp(name, kOfxProgressSuite)) return &progress_suite;
    if (!strcmp(name, kOfxMessageSuite)) return &message_suite;
    return NULL;
}

/* ---- the checks ----------------------------------------------------------------------- */

static OfxPlugin *plugin;

static OfxStatus run(const char *action, Effect *e, PropSet *in, PropSet *out) {
    return plugin->mainEntry(action, e, in, out);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Renders `time` into a fresh output image; returns the status. */
static OfxStatus render(Effect *e, double time) {
    PropSet *in = props_new();
    set_double(in, kOfxPropTime, 0, time);
    int window[4] = {0, 0, output_width, output_height};
    set_int_n(in, kOfxImageEffectPropRenderWindow, 4, window);
    double scale[2] = {1, 1};
    set_double_n(in, kOfxImageEffectPropRenderScale, 2, scale);
    set_string(in, kOfxImageEffectPropFieldToRender, 0, "OfxImageFieldNone");
    free(output_data);
    output_data = NULL;
    last_message[0] = 0;
    return run(kOfxImageEffectActionRender, e, in, NULL);
}

static float out_at(int x, int y, int c) {
    if (output_byte) return ((unsigned char *)output_data)[(y * output_width + x) * 4 + c] / 255.0f;
    return ((float *)output_data)[(y * output_width + x) * 4 + c];
}

/* The rendered frame as a PPM (top row first), 8-bit, clamped. */
static void write_ppm(const char *path) {
    FILE *f = fopen(path, "wx");
    CHECK(f, "cannot create %s (it must not exist)", path);
    fprintf(f, "P6\n%d %d\n255\n", output_width, output_height);
    for (int y = output_height - 1; y >= 0; y--)
        for (int x = 0; x < output_width; x++)
            for (int c = 0; c < 3; c++) {
                float v = out_at(x, y, c);
                fputc((int)lroundf((v < 0 ? 0 : v > 1 ? 1 : v) * 255), f);
            }
    fclose(f);
}

int main(int argc, char **argv) {
    CHECK(argc == 3, "usage: %s BUNDLE OUT_DIR", argv[0]);
    char path[4096];
    snprintf(path, sizeof path, "%s/Contents/Linux-x86-64/lct.ofx", argv[1]);
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK(library, "dlopen %s: %s", path, dlerror());
    int (*count)(void) = NULL;
    OfxPlugin *(*get)(int) = NULL;
    /* The POSIX way to turn dlsym's void* into a function pointer. */
    *(void **)(&count) = dlsym(library, "OfxGetNumberOfPlugins");
    *(void **)(&get) = dlsym(library, "OfxGetPlugin");
    CHECK(count && get, "the binary lacks OfxGetNumberOfPlugins / OfxGetPlugin");
    CHECK(count() == 1, "%d plug-ins, expected 1", count());
    plugin = get(0);
    CHECK(plugin && !strcmp(plugin->pluginApi, kOfxImageEffectPluginApi) && plugin->apiVersion == 1,
          "not an image effect plug-in of API version 1");
    printf("plugin %s %u.%u (%s v%d)\n", plugin->pluginIdentifier, plugin->pluginVersionMajor,
           plugin->pluginVersionMinor, plugin->pluginApi, plugin->apiVersion);

    static OfxHost host;
    host.host = props_new();
    set_string(host.host, kOfxPropName, 0, "org.lct.testhost");
    host.fetchSuite = fetch_suite;
    plugin->setHost(&host);
    CHECK(run(kOfxActionLoad, NULL, NULL, NULL) == kOfxStatOK, "load failed");

    Effect *descriptor = effect_new();
    CHECK(run(kOfxActionDescribe, descriptor, NULL, NULL) == kOfxStatOK, "describe failed");
    char *label = NULL, *contexts[2] = {0};
    get_string(descriptor->props, kOfxPropLabel, 0, &label);
    get_string_n(descriptor->props, kOfxImageEffectPropSupportedContexts, 2, contexts);
    CHECK(label && contexts[0], "describe set no label or contexts");
    printf("describe: \"%s\", contexts %s %s\n", label, contexts[0], contexts[1] ? contexts[1] : "");

    PropSet *in = props_new();
    set_string(in, kOfxImageEffectPropContext, 0, kOfxImageEffectContextGenerator);
    CHECK(run(kOfxImageEffectActionDescribeInContext, descriptor, in, NULL) == kOfxStatOK,
          "describe in context failed: %s", last_message);
    printf("clips:");
    for (int i = 0; i < descriptor->clip_count; i++) {
        int optional = 0;
        get_int(descriptor->clips[i].props, kOfxImageClipPropOptional, 0, &optional);
        printf(" %s%s", descriptor->clips[i].name, optional ? " (optional)" : "");
    }
    printf("\nparams:");
    for (int i = 0; i < descriptor->params.count; i++) printf(" %s", descriptor->params.params[i].name);
    printf("\n");

    /* The instance: the descriptor's clips and parameters, at their defaults. */
    Effect *instance = effect_new();
    instance->clip_count = descriptor->clip_count;
    for (int i = 0; i < descriptor->clip_count; i++) {
        instance->clips[i].name = descriptor->clips[i].name;
        instance->clips[i].props = props_new();
    }
    for (int i = 0; i < descriptor->params.count; i++) {
        Param *from = &descriptor->params.params[i];
        Param *to = &instance->params.params[instance->params.count++];
        to->name = from->name;
        to->type = from->type;
        to->props = from->props;
        char *text = NULL;
        if (!strcmp(from->type, kOfxParamTypeString)) {
            get_string(from->props, kOfxParamPropDefault, 0, &text);
            to->string_value = strdup(text ? text : "");
        } else {
            get_int(from->props, kOfxParamPropDefault, 0, &to->int_value);
        }
    }
    set_string(instance->props, kOfxImageEffectPropContext, 0, kOfxImageEffectContextGenerator);
    CHECK(run(kOfxActionCreateInstance, instance, NULL, NULL) == kOfxStatOK, "create instance failed");

    param_set_int(&instance->params, "steps", 4);
    param_set_int(&instance->params, "frames", 2);
    param_set_int(&instance->params, "seed", 3);

    PropSet *out = props_new();
    CHECK(run(kOfxImageEffectActionGetRegionOfDefinition, instance, in, out) == kOfxStatOK,
          "region of definition failed: %s", last_message);
    double rod[4];
    get_double_n(out, kOfxImageEffectPropRegionOfDefinition, 4, rod);
    printf("region of definition: %g %g %g %g\n", rod[0], rod[1], rod[2], rod[3]);
    out = props_new();
    CHECK(run(kOfxImageEffectActionGetTimeDomain, instance, NULL, out) == kOfxStatOK,
          "time domain failed: %s", last_message);
    double range[2];
    get_double_n(out, kOfxImageEffectPropFrameRange, 2, range);
    printf("time domain: %g %g\n", range[0], range[1]);

    /* Shot 2, frame 1 (shot 0: the scene's frames one after another; here time 3). */
    param_set_int(&instance->params, "shot", 2);
    progress_updates = 0;
    double start = now();
    OfxStatus status = render(instance, 1);
    CHECK(status == kOfxStatOK, "render failed (%d): %s", status, last_message);
    double seconds = now() - start;
    int w = (int)rod[2], h = (int)rod[3];
    double sum[3] = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) sum[c] += out_at(x, y, c);
    CHECK(out_at(0, 0, 3) == 1.0f && out_at(w - 1, h - 1, 3) == 1.0f, "alpha inside the frame is not 1");
    CHECK(out_at(output_width - 1, output_height - 1, 3) == 0.0f && out_at(w, 0, 0) == 0.0f,
          "outside the region of definition is not transparent black");
    float first[3] = {out_at(5, 5, 0), out_at(5, 5, 1), out_at(5, 5, 2)};
    printf("render shot 2 frame 1: %d progress updates, mean rgb %.3f %.3f %.3f, %.2f s\n", progress_updates,
           sum[0] / (w * h), sum[1] / (w * h), sum[2] / (w * h), seconds);
    snprintf(path, sizeof path, "%s/ofx_shot2_frame1.ppm", argv[2]);
    write_ppm(path);
    float *linear = malloc((size_t)w * h * 3 * sizeof(float));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) linear[(y * w + x) * 3 + c] = out_at(x, y, c);

    /* The same scene again: from the instance's cache, no sampling. */
    progress_updates = 0;
    CHECK(render(instance, 1) == kOfxStatOK, "second render failed: %s", last_message);
    CHECK(progress_updates == 0, "the cached scene was sampled again");
    CHECK(out_at(5, 5, 0) == first[0] && out_at(5, 5, 2) == first[2], "the cached render differs");
    param_set_int(&instance->params, "shot", 0);
    CHECK(render(instance, 3) == kOfxStatOK && progress_updates == 0, "shot 0 time 3 was not cached");
    CHECK(out_at(5, 5, 0) == first[0] && out_at(5, 5, 1) == first[1], "shot 0 time 3 is not shot 2 frame 1");
    printf("cached: shot 2 frame 1 again and shot 0 at time 3 without sampling\n");

    /* 8-bit output in sRGB: the same picture as the float (scene-linear Rec.709) one. */
    output_byte = 1;
    param_set_int(&instance->params, "shot", 2);
    CHECK(render(instance, 1) == kOfxStatOK, "byte render failed: %s", last_message);
    double worst = 0;
    for (int i = 0; i < w * h * 3; i++) {
        double l = linear[i] < 0 ? 0 : linear[i];
        double encoded = l <= 0.0031308 ? 12.92 * l : 1.055 * pow(l, 1 / 2.4) - 0.055;
        double d = fabs(encoded - out_at((i / 3) % w, (i / 3) / w, i % 3));
        if (encoded <= 1 && d > worst) worst = d;
    }
    CHECK(worst <= 1.5 / 255, "byte sRGB and float linear disagree by %g", worst);
    printf("byte output: sRGB encoding of the float output within %.4f\n", worst);
    output_byte = 0;

    /* A connected Identity clip is part of the scene: a new scene is made. */
    Clip *identity = clip_find(instance, "Identity");
    CHECK(identity, "no Identity clip");
    identity->connected = 1;
    identity->fill[0] = 0.8f; identity->fill[1] = 0.05f; identity->fill[2] = 0.05f;
    progress_updates = 0;
    CHECK(render(instance, 1) == kOfxStatOK, "render with an identity clip failed: %s", last_message);
    CHECK(progress_updates > 0, "connecting the Identity clip did not make a new scene");
    printf("identity clip: new scene (%d progress updates), pixel (5,5) %.3f %.3f %.3f (was %.3f %.3f %.3f)\n",
           progress_updates, out_at(5, 5, 0), out_at(5, 5, 1), out_at(5, 5, 2), first[0], first[1], first[2]);
    identity->connected = 0;

    /* Abort after the 2nd sampler step of 50: the render stops within one step. */
    param_set_int(&instance->params, "seed", 11);
    param_set_int(&instance->params, "steps", 50);
    progress_updates = 0;
    abort_after_updates = 2;
    start = now();
    status = render(instance, 0);
    seconds = now() - start;
    CHECK(status != kOfxStatOK, "the aborted render reported success");
    CHECK(progress_updates <= 3, "the render went on for %d steps after the abort at 2", progress_updates);
    CHECK(last_message[0] == 0, "an abort posted an error: %s", last_message);
    printf("abort: render returned %d after %d of 50 steps (%.2f s)\n", status, progress_updates, seconds);
    abort_after_updates = -1;

    /* Errors reach the host's message suite and fail the render, never the process. */
    param_set_int(&instance->params, "steps", 4);
    param_set_string(&instance->params, "global_prompt", "Environment: plaid sky.");
    status = render(instance, 0);
    CHECK(status == kOfxStatFailed && strstr(last_message, "plaid"), "unknown word: %d %s", status, last_message);
    printf("error: %.120s\n", last_message);
    param_set_string(&instance->params, "global_prompt", "Environment: blue sky, green ground.");
    param_set_int(&instance->params, "shot", 9);
    status = render(instance, 0);
    CHECK(status == kOfxStatFailed && strstr(last_message, "shot 9"), "shot 9: %d %s", status, last_message);
    printf("error: %s\n", last_message);
    param_set_int(&instance->params, "shot", 1);
    param_set_string(&instance->params, "model", "/no/such/checkpoint");
    status = render(instance, 0);
    CHECK(status == kOfxStatFailed && strstr(last_message, "/no/such/checkpoint"), "model: %d %s", status,
          last_message);
    printf("error: %.160s\n", last_message);

    CHECK(images_out == 0, "%d images not released", images_out);
    CHECK(run(kOfxActionDestroyInstance, instance, NULL, NULL) == kOfxStatOK, "destroy instance failed");
    CHECK(run(kOfxActionUnload, NULL, NULL, NULL) == kOfxStatOK, "unload failed");
    printf("done\n");
    return 0;
}
