/* A plugin taking CUDA device buffers (ABI 1.1 memory_kind = NC_MEMORY_CUDA, device 0), built
 * without nvcc: it checks with cudaPointerGetAttributes that every buffer it receives is device
 * memory, copies the tensors to the host, runs examples/plugin-c's kernel there, and copies the
 * results back. Where a CUDA device is present, a correct staging round trip makes it pass like
 * the example itself; a host pointer where a device one was promised is an ERROR. The CUDA
 * runtime is the one the worker found (looked up with dlopen, so this builds without CUDA).
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#define normcheck_plugin_entry normcheck_example_entry /* the example's own table is unused */
#include "normcheck_example.c"
#undef normcheck_plugin_entry

typedef struct {
  int type; /* enum cudaMemoryType: 0 unregistered, 1 host, 2 device, 3 managed */
  int device;
  void* device_pointer;
  void* host_pointer;
  long reserved[8];
} pointer_attributes;

static int (*memcpy_)(void*, const void*, size_t, int);
static int (*attributes_)(pointer_attributes*, const void*);
enum { kHostToDevice = 1, kDeviceToHost = 2 };

static nc_status init(const char** message) {
  const char* libs[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
  void* h = NULL;
  for (int i = 0; i < 3 && !h; ++i) h = dlopen(libs[i], RTLD_NOW | RTLD_GLOBAL);
  if (h) {
    *(void**)&memcpy_ = dlsym(h, "cudaMemcpy");
    *(void**)&attributes_ = dlsym(h, "cudaPointerGetAttributes");
  }
  /* Without a runtime the plugin still loads: normcheck then reports every case UNSUPPORTED. */
  (void)message;
  return NC_STATUS_OK;
}

static int64_t extent_bytes(const nc_tensor* t) {
  int64_t last = 0;
  for (int d = 0; d < t->rank; ++d) last += (t->dims[d] - 1) * t->strides[d];
  return (last + 1) * 4; /* f32 */
}

static nc_status staged_run(const nc_run_args* a, uint32_t* produced, const char** message) {
  if (!memcpy_ || !attributes_) {
    *message = "the CUDA runtime was not found";
    return NC_STATUS_ERROR;
  }
  nc_run_args h = *a;
  nc_tensor* hs[] = {&h.x, &h.y, &h.dy, &h.dx, &h.gamma, &h.beta, &h.dgamma, &h.dbeta,
                     &h.mean, &h.variance, &h.inv_std, &h.running_mean, &h.running_var};
  const nc_tensor* ds[] = {&a->x, &a->y, &a->dy, &a->dx, &a->gamma, &a->beta, &a->dgamma, &a->dbeta,
                           &a->mean, &a->variance, &a->inv_std, &a->running_mean, &a->running_var};
  nc_status st = NC_STATUS_OK;
  *produced = 0;
  for (int i = 0; i < 13; ++i) hs[i]->data = NULL;
  for (int i = 0; i < 13 && st == NC_STATUS_OK; ++i) {
    if (!ds[i]->data) continue;
    pointer_attributes attr;
    memset(&attr, 0, sizeof attr);
    if (attributes_(&attr, ds[i]->data) != 0 || attr.type != 2 || a->memory_kind != NC_MEMORY_CUDA) {
      *message = "a buffer is not CUDA device memory";
      st = NC_STATUS_ERROR;
      break;
    }
    /* In place, y shares x's buffer (dx dy's): stage it once. */
    for (int j = 0; j < i; ++j)
      if (ds[j]->data == ds[i]->data) hs[i]->data = hs[j]->data;
    if (hs[i]->data) continue;
    hs[i]->data = malloc((size_t)extent_bytes(ds[i]));
    if (!hs[i]->data || memcpy_(hs[i]->data, ds[i]->data, (size_t)extent_bytes(ds[i]), kDeviceToHost) != 0) {
      *message = "cudaMemcpy to the host failed";
      st = NC_STATUS_ERROR;
    }
  }
  if (st == NC_STATUS_OK) st = run(&h, produced, message);
  for (int i = 0; i < 13; ++i) {
    int first = 1;
    for (int j = 0; j < i; ++j) first &= !(ds[j]->data && ds[j]->data == ds[i]->data);
    if (!ds[i]->data || !hs[i]->data || !first) continue;
    if (st == NC_STATUS_OK && memcpy_(ds[i]->data, hs[i]->data, (size_t)extent_bytes(ds[i]), kHostToDevice) != 0) {
      *message = "cudaMemcpy to the device failed";
      st = NC_STATUS_ERROR;
    }
    free(hs[i]->data);
  }
  return st;
}

static const nc_plugin kStaged = {
    .struct_size = sizeof(nc_plugin),
    .abi_major = NC_ABI_MAJOR,
    .abi_minor = NC_ABI_MINOR,
    .name = "cuda_staged",
    .version = "1",
    .description = "examples/plugin-c on CUDA device buffers, staged to the host inside the plugin",
    .ops = (1u << NC_OP_BATCH_NORM) | (1u << NC_OP_LAYER_NORM),
    .passes = 0xf,
    .dtypes = 1u << NC_DTYPE_F32,
    .layouts = (1u << NC_LAYOUT_NCHW) | (1u << NC_LAYOUT_NHWC),
    .convention = NULL,
    .accumulation_dtype = NC_DTYPE_F64,
    .summation = NC_SUM_RECURSIVE,
    .run = staged_run,
    .memory_kind = NC_MEMORY_CUDA,
    .device_id = 0,
    .init = init,
};

const nc_plugin* normcheck_plugin_entry(void) { return &kStaged; }
