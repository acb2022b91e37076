/* FROZEN COPY of include/normcheck/plugin.h at ABI 1.0 (normcheck 0.x, before ABI 1.1 appended
 * fields). tests/CMakeLists.txt builds examples/plugin-c against it, so the test suite holds a
 * real 1.0 plugin binary and checks that it still loads and passes. Do not edit. */
/* normcheck plugin ABI — the C interface a third-party backend implements.
 *
 * A plugin is a shared library exporting one function:
 *
 *     const nc_plugin* normcheck_plugin_entry(void);
 *
 * which returns a pointer to a static, immutable table: the ABI version the plugin was built
 * against, its name and version, its capabilities, and its run function. normcheck loads it with
 * `normcheck --backend ./libmine.so` (or a bare name found on NORMCHECK_PLUGIN_PATH).
 *
 * Compatibility promise. NC_ABI_MAJOR changes only when a field changes meaning or is removed;
 * normcheck refuses a plugin whose abi_major differs from its own (exit code 2). A minor
 * version only appends fields at the end of nc_plugin and nc_run_args and adds enum values;
 * a plugin built against an older minor keeps working, and `struct_size` tells each side how
 * much of the other's struct exists.
 *
 * Ownership. Every buffer in nc_run_args is owned by normcheck, is host memory, and is valid
 * only during the call; the plugin must not keep pointers to it. Strings returned by the plugin
 * (name, version, description, messages) are owned by the plugin and must stay valid until the
 * library is unloaded (static storage is the simple choice).
 *
 * Threads. normcheck calls `run` from one thread at a time, in a child process it forks for the
 * call (docs/plugins.md: a crash, hang or buffer overrun is reported, not fatal). A plugin may
 * use threads inside a call.
 *
 * Data. Tensors are described by logical dims (N, C, spatial... for data tensors) and strides
 * in elements; dtype codes are NC_DTYPE_*. Statistics, gamma/beta and their gradients are f32
 * for f32/f16/bf16 data and f64 for f64 data. What each pass reads and writes is documented at
 * normcheck::RunArgs (include/normcheck/backend.hpp), which this struct mirrors field for field.
 */
#ifndef NORMCHECK_PLUGIN_H
#define NORMCHECK_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NC_ABI_MAJOR 1
#define NC_ABI_MINOR 0
#define NC_MAX_RANK 5

/* Ops, passes, dtypes and layouts: the same codes as normcheck::Op, Pass, DType, Layout. */
enum { NC_OP_BATCH_NORM = 0, NC_OP_LAYER_NORM = 1, NC_OP_INSTANCE_NORM = 2, NC_OP_GROUP_NORM = 3,
       NC_OP_RMS_NORM = 4 };
enum { NC_PASS_FORWARD_TRAINING = 0, NC_PASS_FORWARD_INFERENCE = 1, NC_PASS_BACKWARD_TRAINING = 2,
       NC_PASS_BACKWARD_INFERENCE = 3 };
enum { NC_DTYPE_F32 = 0, NC_DTYPE_F64 = 1, NC_DTYPE_F16 = 2, NC_DTYPE_BF16 = 3 };
enum { NC_LAYOUT_NCHW = 0, NC_LAYOUT_NHWC = 1 };

/* Bits of the `produced` mask the plugin sets for the outputs it wrote. */
enum {
  NC_OUT_Y = 1u << 0, NC_OUT_MEAN = 1u << 1, NC_OUT_VARIANCE = 1u << 2, NC_OUT_INV_STD = 1u << 3,
  NC_OUT_RUNNING_MEAN = 1u << 4, NC_OUT_RUNNING_VAR = 1u << 5, NC_OUT_DX = 1u << 6,
  NC_OUT_DGAMMA = 1u << 7, NC_OUT_DBETA = 1u << 8
};

/* How a plugin orders its reductions (its precision profile, with accumulation_dtype). */
enum { NC_SUM_UNKNOWN = 0, NC_SUM_RECURSIVE = 1, NC_SUM_PAIRWISE = 2, NC_SUM_BLOCKED = 3,
       NC_SUM_COMPENSATED = 4 };

/* What `run` returns. */
typedef enum {
  NC_STATUS_OK = 0,          /* outputs written, `produced` set */
  NC_STATUS_UNSUPPORTED = 1, /* the plugin declines this problem; reported as UNSUPPORTED */
  NC_STATUS_ERROR = 2        /* the plugin failed; reported as ERROR with the message */
} nc_status;

/* A buffer: data == NULL means absent. dims are logical; strides are in elements. */
typedef struct nc_tensor {
  void* data;
  int32_t dtype;
  int32_t rank;
  int64_t dims[NC_MAX_RANK];
  int64_t strides[NC_MAX_RANK];
} nc_tensor;

/* One call. Mirrors normcheck::RunArgs. */
typedef struct nc_run_args {
  uint32_t struct_size; /* sizeof(nc_run_args) of the caller */
  int32_t op;
  int32_t pass;
  int32_t rank;
  int64_t dims[NC_MAX_RANK];
  int32_t norm_dims;    /* layer_norm / rms_norm: trailing dims normalized */
  int64_t groups;       /* group_norm */
  double eps;           /* already rounded to the statistics dtype */
  int32_t affine;
  /* batch_norm running statistics, new-weight form: R <- (1 - batch_weight)*R + batch_weight*stat,
     running_var with the unbiased variance v*m/(m-1) when running_var_unbiased. */
  double batch_weight;
  int32_t running_var_unbiased;
  nc_tensor x, y, dy, dx, gamma, beta, dgamma, dbeta;
  nc_tensor mean, variance, inv_std, running_mean, running_var;
} nc_run_args;

typedef struct nc_plugin {
  uint32_t struct_size; /* sizeof(nc_plugin) of the plugin */
  uint32_t abi_major;   /* NC_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;
  const char* name;
  const char* version;
  const char* description;
  /* Capabilities, as bit masks over the codes above (bit 1u << code). */
  uint32_t ops;
  uint32_t passes;
  uint32_t dtypes;
  uint32_t layouts;
  /* What the plugin claims about itself. Recorded and shown by normcheck; the comparison of this
     version does not use them yet (a later version sizes its error budget from them).
     convention: the running-statistics convention it follows natively ("pytorch", "keras", …),
       or NULL when it applies batch_weight and running_var_unbiased from nc_run_args as asked.
     accumulation_dtype: NC_DTYPE_* of its reductions, or -1 when not declared.
     summation: NC_SUM_* order of its reductions. */
  const char* convention;
  int32_t accumulation_dtype;
  int32_t summation;
  /* Runs one call. On NC_STATUS_OK, *produced holds NC_OUT_* bits; otherwise *message may point
     to a plugin-owned, NUL-terminated explanation. Must not be NULL. */
  nc_status (*run)(const nc_run_args* args, uint32_t* produced, const char** message);
} nc_plugin;

/* The one symbol a plugin exports. */
typedef const nc_plugin* (*nc_plugin_entry_fn)(void);
#define NC_PLUGIN_ENTRY_SYMBOL "normcheck_plugin_entry"

#ifdef __cplusplus
}
#endif

#endif /* NORMCHECK_PLUGIN_H */
