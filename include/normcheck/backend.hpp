// normcheck — the backend interface.
//
// Every backend (naive, oneDNN, cuDNN, a dlopen'ed plugin) implements Backend. The run call takes
// a RunArgs: a plain struct of scalars and TensorArg buffer descriptions (pointer, dtype, logical
// dims, strides in elements). It holds no C++ types, so the C plugin ABI (a later version) can
// mirror it field for field. Buffers are host memory owned by the caller and valid for the call;
// a device backend stages them to device memory itself.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "normcheck/types.hpp"

namespace normcheck {

inline constexpr int kMaxRank = 5;

/// A buffer description. data == nullptr means "absent". dims are logical (N, C, spatial… for
/// data tensors); strides are in elements, per logical dim, and may describe NHWC or any
/// non-overlapping strided layout.
struct TensorArg {
  void* data = nullptr;
  DType dtype = DType::f32;
  int32_t rank = 0;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};
  bool present() const { return data != nullptr; }
};

/// Bits of RunResult::produced: which outputs the backend wrote.
enum Output : uint32_t {
  kOutY = 1u << 0,
  kOutMean = 1u << 1,          ///< saved batch mean (not for rms_norm)
  kOutVariance = 1u << 2,      ///< saved biased batch variance (rms_norm: mean square)
  kOutInvStd = 1u << 3,        ///< saved 1/sqrt(variance + eps) (rms_norm: 1/sqrt(ms + eps))
  kOutRunningMean = 1u << 4,   ///< updated running_mean (in place)
  kOutRunningVar = 1u << 5,    ///< updated running_var (in place)
  kOutDx = 1u << 6,
  kOutDgamma = 1u << 7,
  kOutDbeta = 1u << 8,
};

/// Everything one call needs. Which tensors are present depends on the pass:
///   forward_training:   in x, gamma, beta, running_mean/var (batch_norm; updated in place);
///                       out y, mean, variance, inv_std (write what you compute, set `produced`)
///   forward_inference:  in x, gamma, beta, running_mean, running_var; out y
///   backward_training:  in x, dy, gamma, mean, variance, inv_std (all three given, exact to the
///                       stats dtype; use the ones your kernel takes); out dx, dgamma, dbeta
///   backward_inference: in x, dy, gamma, running_mean, running_var; out dx, dgamma, dbeta
/// gamma/beta/dgamma/dbeta are absent when affine is false; beta/dbeta are absent for rms_norm.
/// Statistics tensors have the shape stats_shape(), gamma/beta affine_shape() (partition.hpp).
struct RunArgs {
  Op op = Op::batch_norm;
  Pass pass = Pass::forward_training;
  int32_t rank = 0;
  int64_t dims[kMaxRank] = {};  ///< logical N, C, spatial…
  int32_t norm_dims = 1;        ///< layer_norm / rms_norm
  int64_t groups = 0;           ///< group_norm
  double eps = 0;               ///< already rounded to the stats dtype
  int32_t affine = 1;
  /// Running-statistics update for batch_norm forward_training, already in new-weight form:
  ///   running_mean ← (1 − batch_weight)·running_mean + batch_weight·mean
  ///   running_var  ← (1 − batch_weight)·running_var  + batch_weight·var_b
  /// where var_b is the unbiased variance·m/(m−1) if running_var_unbiased else the biased one.
  /// PyTorch: batch_weight = momentum, unbiased. Keras: batch_weight = 1 − momentum, biased.
  double batch_weight = 0.1;
  int32_t running_var_unbiased = 1;

  TensorArg x, y, dy, dx, gamma, beta, dgamma, dbeta;
  TensorArg mean, variance, inv_std, running_mean, running_var;
};

struct RunResult {
  bool ok = true;
  /// With !ok: the library declined the problem (e.g. oneDNN's `unimplemented`). The case is
  /// reported UNSUPPORTED with `message`, never a pass or an error.
  bool unsupported = false;
  /// With !ok: how an isolated call (a plugin in a worker process) went wrong. input_modified:
  /// the backend wrote to an input of the pass (reported as FAIL, "input modified").
  enum class Fault { none, crash, timeout, overrun, input_modified };
  Fault fault = Fault::none;
  std::string message;    ///< the backend's own error text when !ok
  uint32_t produced = 0;  ///< Output bits
};

/// How a backend orders its reductions (shared/research/tolerance-model.md §1). The error
/// budget of a sum of k terms grows with the depth h of its summation tree.
enum class Summation : int32_t {
  recursive,    ///< one accumulator: h = k − 1 (also Welford and any unknown order: the worst case)
  pairwise,     ///< a balanced tree: h = ⌈log2 k⌉
  blocked,      ///< P partial accumulators, then a tree: h = ⌈k/P⌉ − 1 + ⌈log2 P⌉
  compensated,  ///< Kahan/Neumaier: |error| ≤ (2u + O(k·u²))·Σ|x|, i.e. h = 2 (Higham 2002 §4.3)
};
std::string_view to_string(Summation);

/// The precision profile a backend declares; the error budget is computed for it
/// (docs/comparison.md "Precision profiles"). Defaults are the most permissive correct kernel:
/// recursive sums in the statistics dtype, a correctly rounded sqrt and divide.
struct PrecisionProfile {
  Summation summation = Summation::recursive;
  int64_t block = 0;       ///< blocked: number of partial accumulators P (≥ 1)
  /// ρ: relative error of the inverse square root in units of u (2 for sqrt then divide, each
  /// correctly rounded; 2q for an rsqrt accurate to q ulp, e.g. 4 for CUDA's rsqrtf).
  double rsqrt_error = 2;
  /// Dtype of the reductions when coarser than the statistics dtype (an f16 accumulator);
  /// std::nullopt: the statistics dtype (f32 for f16/bf16 data).
  std::optional<DType> accumulation;
  /// f16/bf16 data: the backend keeps gamma, beta and the saved statistics in the data dtype
  /// (PyTorch 1.13's bf16 layer_norm and group_norm) although they are passed and returned as
  /// f32. The forward budget adds their rounding to the data dtype (docs/plugins.md, ABI 1.1
  /// `params`); backward passes have no such budget yet.
  bool params_in_data_dtype = false;
  /// Unit roundoff of the reductions for data whose statistics dtype is `stats`: that dtype's,
  /// or the declared accumulator's when it is coarser.
  double unit_roundoff(DType stats) const;
  /// Depth h of a sum of k terms under this profile, k ≥ 1, with u = unit_roundoff(…) (the
  /// depth of compensated sums depends on it).
  double depth(double k, double u) const;
};

/// What a backend can run. "Unsupported" is an answer (reported as UNSUPPORTED with the
/// reason), never an error.
struct Capabilities {
  std::vector<Op> ops;
  std::vector<Pass> passes;
  std::vector<DType> dtypes;
  std::vector<Layout> layouts;
  /// What the backend computes itself and what it leaves to normcheck, one line each, for
  /// `normcheck list` and reports (e.g. "running statistics: normcheck's arithmetic on oneDNN's
  /// mean and variance").
  std::vector<std::string> notes;
  /// The running-statistics convention the backend follows natively (conventions/conventions.json
  /// name), or "" when it follows whatever RunArgs asks for (naive) or keeps none (oneDNN).
  std::string convention;
  PrecisionProfile precision;
};

class Backend {
 public:
  virtual ~Backend() = default;
  /// Short name used with --backend.
  virtual std::string name() const = 0;
  /// Version of the backend and of the library behind it, e.g. "oneDNN 3.7.2 (avx2)".
  virtual std::string version() const = 0;
  /// One line: what this backend is.
  virtual std::string description() const = 0;
  virtual Capabilities capabilities() const = 0;
  /// The precision profile of one op × dtype × layout (a library may sum differently per path;
  /// plugin ABI 1.1 declares it per path). Default: capabilities().precision.
  virtual PrecisionProfile precision(Op, DType, Layout) const { return capabilities().precision; }
  /// Finer check for one problem; std::nullopt when supported, otherwise the reason.
  /// The default checks op, pass, dtype and layout against capabilities().
  virtual std::optional<std::string> unsupported_reason(const RunArgs& args, Layout layout) const;
  /// Runs one call. Must not throw; errors come back in RunResult. Exception: Interrupted
  /// (interrupt.hpp) when a call waited on (a plugin's worker) was abandoned at a signal.
  virtual RunResult run(const RunArgs& args) = 0;
  /// Device backends (cuDNN): seconds the last successful run() spent in the library's kernels,
  /// timed on the device (CUDA events around the launches; staging and planning excluded).
  /// std::nullopt, the default: `normcheck bench` times the whole call on the host clock.
  virtual std::optional<double> last_kernel_seconds() const { return std::nullopt; }
  /// Device backends: the device memory bandwidth in bytes per second (a device-to-device copy,
  /// read + write bytes), which `normcheck bench` then takes as the roofline instead of host
  /// STREAM. std::nullopt, the default: host STREAM.
  virtual std::optional<double> device_bandwidth() { return std::nullopt; }
  /// Threads one call uses. Default 1: a single-threaded backend.
  virtual int threads() const { return 1; }
  /// Asks later calls to use n ≥ 1 threads; returns the count they will use (a single-threaded
  /// backend returns 1 whatever n is).
  virtual int set_threads(int /*n*/) { return 1; }
};

/// Constructs backends by name. The normcheck binary registers the built-in backends; tests
/// register planted-bug backends (mutants) as well.
class BackendRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Backend>()>;
  void add(std::string name, std::string summary, Factory f);
  /// Throws Error("unknown backend 'x'; known: a, b") when absent.
  std::unique_ptr<Backend> create(const std::string& name) const;
  struct Entry {
    std::string name, summary;
    Factory factory;
  };
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

/// Registers naive (and any other built-in backend compiled in) into r.
void register_builtin_backends(BackendRegistry& r);

}  // namespace normcheck
