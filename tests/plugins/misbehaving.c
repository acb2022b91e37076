/* Plugins that misbehave in one way each, chosen by a compile definition (tests/CMakeLists.txt):
 *   PLANT_SEGV      writes through a null pointer          -> CRASH (SIGSEGV)
 *   PLANT_ABORT     calls abort()                           -> CRASH (SIGABRT)
 *   PLANT_HANG      never returns                           -> TIMEOUT
 *   PLANT_OVERRUN   writes one float before y               -> OVERRUN
 *   PLANT_ERROR     returns NC_STATUS_ERROR with a message  -> ERROR
 *   PLANT_BAD_ABI   claims ABI major 99                     -> refused at load (exit 2)
 *   PLANT_NO_ENTRY  exports no entry point                  -> refused at load (exit 2)
 *   PLANT_DECLARATIONS  declares the Keras convention, an f16 accumulator and pairwise sums
 *                       (and computes nothing)              -> the declarations reach normcheck
 */
#include <stdlib.h>

#include "normcheck/plugin.h"

static nc_status run(const nc_run_args* a, uint32_t* produced, const char** message) {
  *produced = 0;
  (void)message;
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
#elif defined(PLANT_ERROR)
  *message = "planted error: out of workspace";
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
#else
    .convention = NULL,
    .accumulation_dtype = -1,
    .summation = NC_SUM_UNKNOWN,
#endif
    .run = run,
};
const nc_plugin* normcheck_plugin_entry(void) { return &kPlugin; }
#else
int normcheck_plugin_entry_is_missing(void) { return run(NULL, NULL, NULL); }
#endif
