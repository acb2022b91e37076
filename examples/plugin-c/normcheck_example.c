/* A small, correct normcheck plugin in plain C99: batch_norm and layer_norm, every pass, f32,
 * any strides (NCHW, NHWC). Build: `make` (see Makefile), then
 *     normcheck --backend ./libnormcheck_example.so --suite edge
 * Statistics are accumulated in double: two-pass mean and biased variance (Ioffe & Szegedy
 * 2015, Alg. 1; Ba et al. 2016, eq. 4), backward dx = r*(g - mean(g) - xhat*mean(g*xhat)).
 */
#include <math.h>
#include <stddef.h>

#include "normcheck/plugin.h"

/* Element offset of logical index i in a strided tensor. */
static int64_t offset_of(const nc_tensor* t, int64_t i) {
  int64_t off = 0;
  for (int d = t->rank - 1; d >= 0; --d) {
    off += (i % t->dims[d]) * t->strides[d];
    i /= t->dims[d];
  }
  return off;
}
#define AT(t, i) (((float*)(t)->data)[offset_of((t), (i))])
#define AFF(t, j) (((float*)(t)->data)[(j) * (t)->strides[(t)->rank - 1]])

/* Reduction sets. batch_norm: set = channel, members (n, spatial); layer_norm: set = row. */
typedef struct {
  int bn;
  int64_t sets, m, C, spatial;
} partition;

static partition make_partition(const nc_run_args* a) {
  partition p;
  int64_t numel = 1, inner = 1;
  for (int d = 0; d < a->rank; ++d) numel *= a->dims[d];
  for (int d = a->rank - a->norm_dims; d < a->rank; ++d) inner *= a->dims[d];
  p.bn = a->op == NC_OP_BATCH_NORM;
  p.C = a->dims[1];
  p.spatial = numel / (a->dims[0] * a->dims[1]);
  p.sets = p.bn ? p.C : numel / inner;
  p.m = p.bn ? numel / p.C : inner;
  return p;
}
/* Logical index of the k-th member of set s, and its gamma/beta index. */
static int64_t member(const partition* p, int64_t s, int64_t k) {
  return p->bn ? ((k / p->spatial) * p->C + s) * p->spatial + k % p->spatial : s * p->m + k;
}
static int64_t affine_index(const partition* p, int64_t s, int64_t k) { return p->bn ? s : k; }

static nc_status run(const nc_run_args* a, uint32_t* produced, const char** message) {
  if (a->x.dtype != NC_DTYPE_F32) {
    *message = "this example handles f32 only";
    return NC_STATUS_UNSUPPORTED;
  }
  const partition p = make_partition(a);
  const int global = a->pass == NC_PASS_FORWARD_INFERENCE || a->pass == NC_PASS_BACKWARD_INFERENCE;
  const int backward = a->pass == NC_PASS_BACKWARD_TRAINING || a->pass == NC_PASS_BACKWARD_INFERENCE;
  *produced = 0;
  if (backward && a->dgamma.data) { /* accumulated over the sets below */
    const int64_t n_affine = p.bn ? p.C : p.m;
    for (int64_t j = 0; j < n_affine; ++j) {
      AFF(&a->dgamma, j) = 0;
      if (a->dbeta.data) AFF(&a->dbeta, j) = 0;
    }
  }
  for (int64_t s = 0; s < p.sets; ++s) {
    double mean = 0, var = 0;
    if (global) {
      mean = AFF(&a->running_mean, s);
      var = AFF(&a->running_var, s);
    } else if (backward) {
      mean = AFF(&a->mean, s);
      var = AFF(&a->variance, s);
    } else {
      for (int64_t k = 0; k < p.m; ++k) mean += AT(&a->x, member(&p, s, k));
      mean /= (double)p.m;
      for (int64_t k = 0; k < p.m; ++k) {
        const double d = AT(&a->x, member(&p, s, k)) - mean;
        var += d * d;
      }
      var /= (double)p.m;
    }
    const double r = 1.0 / sqrt(var + a->eps);
    if (!backward) {
      for (int64_t k = 0; k < p.m; ++k) {
        const int64_t i = member(&p, s, k), j = affine_index(&p, s, k);
        const double g = a->gamma.data ? AFF(&a->gamma, j) : 1.0, b = a->beta.data ? AFF(&a->beta, j) : 0.0;
        AT(&a->y, i) = (float)(g * (AT(&a->x, i) - mean) * r + b);
      }
      *produced |= NC_OUT_Y;
      if (!global) {
        AFF(&a->mean, s) = (float)mean;
        AFF(&a->variance, s) = (float)var;
        AFF(&a->inv_std, s) = (float)r;
        *produced |= NC_OUT_MEAN | NC_OUT_VARIANCE | NC_OUT_INV_STD;
        if (a->running_mean.data && a->running_var.data) {
          const double f = a->batch_weight;
          const double vb = a->running_var_unbiased ? var * p.m / (p.m - 1) : var;
          AFF(&a->running_mean, s) = (float)((1 - f) * AFF(&a->running_mean, s) + f * mean);
          AFF(&a->running_var, s) = (float)((1 - f) * AFF(&a->running_var, s) + f * vb);
          *produced |= NC_OUT_RUNNING_MEAN | NC_OUT_RUNNING_VAR;
        }
      }
      continue;
    }
    double sum_g = 0, sum_gx = 0;
    for (int64_t k = 0; k < p.m; ++k) {
      const int64_t i = member(&p, s, k), j = affine_index(&p, s, k);
      const double gam = a->gamma.data ? AFF(&a->gamma, j) : 1.0;
      const double g = AT(&a->dy, i) * gam, xhat = (AT(&a->x, i) - mean) * r;
      sum_g += g;
      sum_gx += g * xhat;
    }
    for (int64_t k = 0; k < p.m; ++k) {
      const int64_t i = member(&p, s, k), j = affine_index(&p, s, k);
      const double gam = a->gamma.data ? AFF(&a->gamma, j) : 1.0;
      const double dy = AT(&a->dy, i), g = dy * gam, xhat = (AT(&a->x, i) - mean) * r;
      if (a->dgamma.data) AFF(&a->dgamma, j) += (float)(dy * xhat);
      if (a->dbeta.data) AFF(&a->dbeta, j) += (float)dy;
      AT(&a->dx, i) = (float)(global ? r * g : r * (g - sum_g / p.m - xhat * sum_gx / p.m));
    }
    *produced |= NC_OUT_DX | (a->dgamma.data ? NC_OUT_DGAMMA | NC_OUT_DBETA : 0u);
  }
  return NC_STATUS_OK;
}

static const nc_plugin kPlugin = {
    .struct_size = sizeof(nc_plugin),
    .abi_major = NC_ABI_MAJOR,
    .abi_minor = NC_ABI_MINOR,
    .name = "normcheck_example",
    .version = "1.0",
    .description = "example plugin in C: batch_norm and layer_norm, f32, any strides",
    .ops = (1u << NC_OP_BATCH_NORM) | (1u << NC_OP_LAYER_NORM),
    .passes = (1u << NC_PASS_FORWARD_TRAINING) | (1u << NC_PASS_FORWARD_INFERENCE) |
              (1u << NC_PASS_BACKWARD_TRAINING) | (1u << NC_PASS_BACKWARD_INFERENCE),
    .dtypes = 1u << NC_DTYPE_F32,
    .layouts = (1u << NC_LAYOUT_NCHW) | (1u << NC_LAYOUT_NHWC),
    .convention = NULL, /* applies batch_weight / running_var_unbiased as normcheck asks */
    .accumulation_dtype = NC_DTYPE_F64,
    .summation = NC_SUM_RECURSIVE,
    .run = run,
};

const nc_plugin* normcheck_plugin_entry(void) { return &kPlugin; }
