/* Plugins that misbehave in one way each, chosen by a compile definition (tests/CMakeLists.txt):
 *   PLANT_SEGV      writes through a null pointer          -> CRASH (SIGSEGV)
 *   PLANT_ABORT     calls abort()                           -> CRASH (SIGABRT)
 *   PLANT_HANG      never returns                           -> TIMEOUT
 *   PLANT_OVERRUN   writes one float before y               -> OVERRUN
 *   PLANT_OVERRUN_128  writes 128 bytes past the end of y   -> OVERRUN naming y (not the next tensor)
 *   PLANT_ERROR     returns NC_STATUS_ERROR with a message  -> ERROR
 *   PLANT_EXIT      calls exit(0) inside run                -> CRASH "the plugin exited with status 0"
 *   PLANT_MODIFY_X, _GAMMA, _BETA, _DY  adds 1 to the first element of that input (out of place)
 *                                                           -> FAIL "input modified" naming it
 *   PLANT_FORK      starts a grandchild that sleeps 30 s holding stdout (its pid written to
 *                   $NC_TEST_PIDFILE)                       -> ended with the worker's process group
 *   PLANT_CTOR_SEGV a library constructor that dereferences NULL  -> refused at load (exit 2)
 *   PLANT_CTOR_EXIT a library constructor that calls exit(0)      -> refused at load (exit 2)
 *   PLANT_BAD_ABI   claims ABI major 99                     -> refused at load (exit 2)
 *   PLANT_NO_ENTRY  exports no entry point                  -> refused at load (exit 2)
 *   PLANT_DECLARATIONS  declares the Keras convention, an f16 accumulator and pairwise sums
 *                       (and computes nothing)              -> the declarations reach normcheck
 *   PLANT_STATEFUL  ABI 1.1 init hook; every call returns ERROR with "call K, pid P, init I,
 *                   in_place F" (F: nc_run_args.in_place), and
 *                   the third call of a process crashes     -> one persistent worker, restarted
 *   PLANT_INIT_FAIL ABI 1.1 init hook that fails            -> refused at load (exit 2)
 *   PLANT_PROFILE   ABI 1.1: blocked sums over 8 accumulators, rho = 4, and a per-path profile
 *                   (layer_norm f32: pairwise; batch_norm NHWC: an f16 accumulator)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "normcheck/plugin.h"

#if defined(PLANT_CTOR_SEGV)
__attribute__((constructor)) static void crash_at_load(void) { *(volatile int*)(void*)(uintptr_t)8 = 1; }
#elif defined(PLANT_CTOR_EXIT)
__attribute__((constructor)) static void exit_at_load(void) { exit(0); }
#endif

static int64_t extent_bytes(const nc_tensor* t) {
  int64_t last = 0;
  for (int d = 0; d < t->rank; ++d) last += (t->dims[d] - 1) * t->strides[d];
  return (last + 1) * 4; /* f32 */
}

static void bump(const nc_tensor* t) {
  if (t->data) ((float*)t->data)[0] += 1.0f;
}

#if defined(PLANT_STATEFUL)
static int initialised = 0, calls = 0;
static char text[128];
static nc_status init(const char** message) {
  (void)message;
  ++initialised;
  return NC_STATUS_OK;
}
#elif defined(PLANT_INIT_FAIL)
static nc_status init(const char** message) {
  *message = "planted: no licence server";
  return NC_STATUS_ERROR;
}
#endif

#if defined(PLANT_PROFILE)
static int32_t precision(int32_t op, int32_t dtype, int32_t layout, nc_precision* out) {
  if (op == NC_OP_LAYER_NORM && dtype == NC_DTYPE_F32) {
    out->summation = NC_SUM_PAIRWISE;
    return 1;
  }
  if (op == NC_OP_BATCH_NORM && layout == NC_LAYOUT_NHWC) {
    out->accumulation_dtype = NC_DTYPE_F16;
    return 1;
  }
  return 0;
}
#endif

static nc_status run(const nc_run_args* a, uint32_t* produced, const char** message) {
  *produced = 0;
  (void)message;
  (void)extent_bytes;
  (void)bump;
#if defined(PLANT_SEGV)
  *(volatile int*)(void*)(uintptr_t)a->x.rank = 1; /* address 2..5: never mapped */
#elif defined(PLANT_ABORT)
  abort();
#elif defined(PLANT_HANG)
  for (volatile int spin = 0;; ++spin) {
  }
#elif defined(PLANT_OVERRUN)
  if (a->y.data) ((float*)a->y.data)[-1] = 1.0f;
  *produced = NC_OUT_Y;
#elif defined(PLANT_OVERRUN_128)
  if (a->y.data) memset((char*)a->y.data + extent_bytes(&a->y), 0x5A, 128);
  *produced = NC_OUT_Y;
#elif defined(PLANT_ERROR)
  *message = "planted error: out of workspace";
  return NC_STATUS_ERROR;
#elif defined(PLANT_EXIT)
  exit(0);
#elif defined(PLANT_MODIFY_X)
  if (!a->in_place) bump(&a->x);
#elif defined(PLANT_MODIFY_GAMMA)
  bump(&a->gamma);
#elif defined(PLANT_MODIFY_BETA)
  bump(&a->beta);
#elif defined(PLANT_MODIFY_DY)
  if (!a->in_place) bump(&a->dy);
#elif defined(PLANT_FORK)
  const pid_t pid = fork();
  if (pid == 0) {
    sleep(30);
    _exit(0);
  }
  const char* file = getenv("NC_TEST_PIDFILE");
  FILE* f = file ? fopen(file, "w") : NULL;
  if (f) {
    fprintf(f, "%d\n", (int)pid);
    fclose(f);
  }
#elif defined(PLANT_STATEFUL)
  if (++calls == 3) raise(SIGSEGV);
  snprintf(text, sizeof text, "call %d, pid %d, init %d, in_place %d", calls, (int)getpid(), initialised,
           (int)a->in_place);
  *message = text;
  return NC_STATUS_ERROR;
#endif
  (void)a;
  return NC_STATUS_OK;
}

#ifndef PLANT_NO_ENTRY
static const nc_plugin kPlugin = {
    .struct_size = sizeof(nc_plugin),
#ifdef PLANT_BAD_ABI
    .abi_major = 99,
#else
    .abi_major = NC_ABI_MAJOR,
#endif
    .abi_minor = NC_ABI_MINOR,
    .name = "misbehaving",
    .version = "0",
    .description = "a plugin that misbehaves on purpose",
    .ops = 0x1f,
    .passes = 0xf,
    .dtypes = 1u << NC_DTYPE_F32,
    .layouts = 0x3,
#ifdef PLANT_DECLARATIONS
    .convention = "keras",
    .accumulation_dtype = NC_DTYPE_F16,
    .summation = NC_SUM_PAIRWISE,
#elif defined(PLANT_PROFILE)
    .convention = NULL,
    .accumulation_dtype = -1,
    .summation = NC_SUM_BLOCKED,
    .block_count = 8,
    .rsqrt_error = 4,
    .precision = precision,
#else
    .convention = NULL,
    .accumulation_dtype = -1,
    .summation = NC_SUM_UNKNOWN,
#endif
#if defined(PLANT_STATEFUL) || defined(PLANT_INIT_FAIL)
    .init = init,
#endif
    .run = run,
};
const nc_plugin* normcheck_plugin_entry(void) { return &kPlugin; }
#else
int normcheck_plugin_entry_is_missing(void) { return run(NULL, NULL, NULL); }
#endif
