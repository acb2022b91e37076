/* layer_norm forward_training on bf16 data the way PyTorch 1.13's CPU bf16 layer_norm keeps its
 * tensors: gamma and beta rounded to bf16, the statistics computed in f32 from a double two-pass
 * sum, y from the f32 statistics, and mean, variance and 1/sigma stored rounded to bf16 (written
 * into normcheck's f32 buffers). Contiguous (NCHW) tensors only.
 *   PLANT_DECLARED  declares params = NC_PARAMS_DATA_DTYPE (ABI 1.1)  -> PASS
 *   (otherwise)     declares nothing                                  -> FAIL: the statistics are
 *                   off by a bf16 rounding, far outside an f32 budget
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "normcheck/plugin.h"

static float from_bf16(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
static uint16_t to_bf16(float f) { /* round to nearest even; inputs here are finite */
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}
static float round_bf16(float f) { return from_bf16(to_bf16(f)); }

static nc_status run(const nc_run_args* a, uint32_t* produced, const char** message) {
  if (a->op != NC_OP_LAYER_NORM || a->pass != NC_PASS_FORWARD_TRAINING || a->x.dtype != NC_DTYPE_BF16) {
    *message = "layer_norm forward_training bf16 only";
    return NC_STATUS_UNSUPPORTED;
  }
  int64_t numel = 1, inner = 1;
  for (int d = 0; d < a->rank; ++d) numel *= a->dims[d];
  for (int d = a->rank - a->norm_dims; d < a->rank; ++d) inner *= a->dims[d];
  const uint16_t* x = (const uint16_t*)a->x.data;
  uint16_t* y = (uint16_t*)a->y.data;
  const float* gamma = (const float*)a->gamma.data;
  const float* beta = (const float*)a->beta.data;
  for (int64_t row = 0; row < numel / inner; ++row) {
    const uint16_t* xr = x + row * inner;
    double sum = 0, sq = 0;
    for (int64_t k = 0; k < inner; ++k) sum += from_bf16(xr[k]);
    const float mean = (float)(sum / (double)inner);
    for (int64_t k = 0; k < inner; ++k) {
      const double d = (double)from_bf16(xr[k]) - mean;
      sq += d * d;
    }
    const float var = (float)(sq / (double)inner);
    const float rstd = 1.0f / sqrtf(var + (float)a->eps);
    for (int64_t k = 0; k < inner; ++k) {
      const float g = gamma ? round_bf16(gamma[k]) : 1.0f, b = beta ? round_bf16(beta[k]) : 0.0f;
      y[row * inner + k] = to_bf16((from_bf16(xr[k]) - mean) * rstd * g + b);
    }
    if (a->mean.data) ((float*)a->mean.data)[row] = round_bf16(mean);
    if (a->variance.data) ((float*)a->variance.data)[row] = round_bf16(var);
    if (a->inv_std.data) ((float*)a->inv_std.data)[row] = round_bf16(rstd);
  }
  *produced = NC_OUT_Y | (a->mean.data ? NC_OUT_MEAN : 0) | (a->variance.data ? NC_OUT_VARIANCE : 0) |
              (a->inv_std.data ? NC_OUT_INV_STD : 0);
  return NC_STATUS_OK;
}

static const nc_plugin kPlugin = {
    .struct_size = sizeof(nc_plugin),
    .abi_major = NC_ABI_MAJOR,
    .abi_minor = NC_ABI_MINOR,
    .name = "bf16_params",
    .version = "1",
    .description = "bf16 layer_norm keeping gamma, beta and the saved statistics in bf16",
    .ops = 1u << NC_OP_LAYER_NORM,
    .passes = 0xf, /* backward: declined by normcheck when declared, by the plugin otherwise */
    .dtypes = 1u << NC_DTYPE_BF16,
    .layouts = 1u << NC_LAYOUT_NCHW,
    .convention = NULL,
    .accumulation_dtype = NC_DTYPE_F64,
    .summation = NC_SUM_RECURSIVE,
    .run = run,
#ifdef PLANT_DECLARED
    .params = NC_PARAMS_DATA_DTYPE,
#endif
};

const nc_plugin* normcheck_plugin_entry(void) { return &kPlugin; }
