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
 * Ownership. Every buffer in nc_run_args is owned by normcheck and is valid only during the
 * call; the plugin must not keep pointers to it. Buffers are host memory unless the plugin
 * declares memory_kind = NC_MEMORY_CUDA (ABI 1.1), in which case they are device memory on
 * device_id. Inputs are read-only: normcheck compares them against its own copy after every
 * call and reports a change as a FAIL ("input modified"). Strings returned by the plugin
 * (name, version, description, messages) are owned by the plugin and must stay valid until the
 * library is unloaded (static storage is the simple choice).
 *
 * Threads and processes. normcheck loads the plugin in a worker process of its own, calls `init`
 * (ABI 1.1, optional) once there, and then calls `run` from one thread at a time, on buffers in
 * shared memory (docs/plugins.md: a crash, hang, exit or buffer overrun is reported, not fatal,
 * and the worker is restarted). A plugin may use threads inside a call. The worker is its own
 * process group; processes the plugin starts are ended with the worker.
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
#define NC_ABI_MINOR 1
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

/* ABI 1.1: where the buffers of nc_run_args live (nc_plugin.memory_kind, nc_run_args.memory_kind). */
enum { NC_MEMORY_HOST = 0, NC_MEMORY_CUDA = 1 };

/* ABI 1.1: where gamma, beta and the saved statistics are kept for f16/bf16 data (nc_plugin.params,
   nc_precision.params). normcheck passes them as f32 either way; NC_PARAMS_DATA_DTYPE says the
   library rounds them to the data dtype inside (PyTorch 1.13's bf16 layer_norm and group_norm), and
   the error budget adds that rounding. */
enum { NC_PARAMS_STATS_DTYPE = 0, NC_PARAMS_DATA_DTYPE = 1 };

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
  /* ABI 1.1 (present when struct_size covers them; normcheck always passes them). */
  int32_t in_place;    /* 1 when y is x's buffer (forward) or dx is dy's (backward) */
  int32_t memory_kind; /* NC_MEMORY_* of every data pointer above */
  int32_t device_id;   /* CUDA device ordinal when memory_kind is NC_MEMORY_CUDA */
  int32_t reserved_1_1;
} nc_run_args;

/* ABI 1.1: the precision profile of one op x dtype x layout (nc_plugin.precision). The query
   receives it filled with the table-wide values of nc_plugin and changes what differs. */
typedef struct nc_precision {
  int32_t accumulation_dtype; /* NC_DTYPE_* of the reductions, or -1 when not declared */
  int32_t summation;          /* NC_SUM_* */
  int64_t block_count;        /* NC_SUM_BLOCKED: the number P of partial accumulators (>= 1) */
  double rsqrt_error;         /* rho: error of 1/sqrt(v + eps) in units of u of the statistics dtype;
                                 0 = not declared (2: sqrt then divide, each correctly rounded) */
  int32_t params;             /* NC_PARAMS_* for f16/bf16 data */
  int32_t reserved;
} nc_precision;

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
  /* What the plugin claims about itself. Recorded in reports, and the error budget is computed for
     it (docs/comparison.md "Precision profiles"; undeclared means the safe worst case).
     convention: the running-statistics convention it follows natively ("pytorch", "keras", …),
       or NULL when it applies batch_weight and running_var_unbiased from nc_run_args as asked
       (`--convention native` takes it).
     accumulation_dtype: NC_DTYPE_* of its reductions, or -1 when not declared; an f16 or bf16
       accumulator is budgeted with its own unit roundoff.
     summation: NC_SUM_* order of its reductions (pairwise and compensated set the budget's depth;
       blocked needs block_count, ABI 1.1; undeclared is budgeted as recursive, the worst case). */
  const char* convention;
  int32_t accumulation_dtype;
  int32_t summation;
  /* Runs one call. On NC_STATUS_OK, *produced holds NC_OUT_* bits; otherwise *message may point
     to a plugin-owned, NUL-terminated explanation. Must not be NULL. */
  nc_status (*run)(const nc_run_args* args, uint32_t* produced, const char** message);

  /* ABI 1.1. A 1.0 plugin's struct_size ends before these; normcheck then reads none of them. */
  int64_t block_count; /* NC_SUM_BLOCKED: the number P of partial accumulators; 0: not declared */
  double rsqrt_error;  /* rho in units of u (see nc_precision); 0: not declared */
  int32_t memory_kind; /* NC_MEMORY_HOST (0), or NC_MEMORY_CUDA: run receives device pointers on
                          device_id; normcheck stages host <-> device around every call */
  int32_t device_id;
  int32_t params;      /* NC_PARAMS_*: gamma, beta and saved statistics of f16/bf16 data kept in f32
                          (0, the default) or in the data dtype */
  int32_t reserved_1_1;
  /* Optional (NULL: none). Called once in the worker after loading, before any run (and again in a
     restarted worker). NC_STATUS_OK, or the plugin is refused at load with *message (exit 2). */
  nc_status (*init)(const char** message);
  /* Optional (NULL: none). The precision profile of one path: fills *out and returns 1, or
     returns 0 to use the table-wide accumulation_dtype/summation/block_count/rsqrt_error. Asked
     once per op x dtype x layout at load time (codes NC_OP_*, NC_DTYPE_*, NC_LAYOUT_*); *out
     starts with the table-wide values. */
  int32_t (*precision)(int32_t op, int32_t dtype, int32_t layout, nc_precision* out);
} nc_plugin;

/* The one symbol a plugin exports. */
typedef const nc_plugin* (*nc_plugin_entry_fn)(void);
#define NC_PLUGIN_ENTRY_SYMBOL "normcheck_plugin_entry"

#ifdef __cplusplus
}
#endif

#endif /* NORMCHECK_PLUGIN_H */
