// normcheck — the problem model and its descriptor string.
//
// A Problem says everything needed to reproduce a case: op, pass, dtype, layout, logical shape,
// normalized dims / groups, eps, affine, running-stat convention and momentum, number of
// training steps, input distribution and seed. Its descriptor string is the CLI input, the key
// in reports and the reproducer. Grammar and defaults: docs/descriptor.md.
//
//   batch_norm,pass=forward_training,dtype=f32,shape=2x3x5x5
//   group_norm,pass=backward_training,dtype=f64,shape=2x6x4x4,groups=3,layout=nhwc
//   layer_norm,pass=forward_training,dtype=f32,shape=4x8x6,norm_dims=2,data=normal:1e4:1e-2
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "normcheck/types.hpp"

namespace normcheck {

/// How input values are drawn (before rounding to the data dtype). All draws use normcheck's
/// own generators (generate.hpp), so a seed gives the same values on every platform.
struct Distribution {
  enum class Kind : int32_t { normal, uniform, constant };
  Kind kind = Kind::normal;
  double a = 0.0;  ///< normal: mean;   uniform: low;  constant: the value
  double b = 1.0;  ///< normal: std;    uniform: high; constant: unused
};

/// Values planted into the compared batch (the last call's x) after drawing.
enum class Special : int32_t {
  none,       ///< nothing planted
  nan,        ///< x at logical index 0 is NaN
  inf,        ///< x at logical index 0 is +Inf
  const_set,  ///< every element of the first reduction set equals that set's first element
  /// Mixed magnitudes (tolerance-model.md §4 G7): every 97th element (logical index) is ±2^20,
  /// alternating in sign (±2^14 for f16, whose range ends at 65504).
  spikes,
  /// Cancelling pairs (G7): in every reduction set of ≥ 2 elements, the first element is +L and
  /// the last −L, L = 2^24 (2^14 for f16); a recursive sum loses the small terms between them.
  cancel,
};

/// How dy is drawn for backward passes.
struct GradientSpec {
  enum class Kind : int32_t { normal, common };
  /// normal: dy ~ N(0, 1). common (G6, a common-mode gradient): dy = a + b·x̂ + 10⁻³·N(0, 1) per
  /// reduction set, with x̂ from the set's exact mean and inv_std, which makes dx a small
  /// difference of large terms.
  Kind kind = Kind::normal;
  double a = 0, b = 0;
};

/// Tensors supplied from .npy files instead of generated (`--input NAME=FILE.npy`,
/// docs/descriptor.md "Your own tensors"): the SHA-256 of each whole file, as 64 lower-case hex
/// digits (what `sha256sum FILE` prints). An empty string (empty x) means generated.
struct FileInputs {
  std::vector<std::string> x;  ///< one per backend call (num_calls), in call order
  std::string dy, gamma, beta, running_mean, running_var;
  bool any() const {
    return !x.empty() || !dy.empty() || !gamma.empty() || !beta.empty() || !running_mean.empty() ||
           !running_var.empty();
  }
};

struct Problem {
  Op op = Op::batch_norm;
  Pass pass = Pass::forward_training;
  DType dtype = DType::f32;
  Layout layout = Layout::nchw;
  /// Logical shape N × C × [D ×] [H ×] [W]: rank 2 to 5, every extent ≥ 1, in elements.
  std::vector<int64_t> dims;
  /// layer_norm / rms_norm: number of trailing dims in normalized_shape (1 … rank-1).
  int norm_dims = 1;
  /// group_norm: number of channel groups; must divide C. 0 when not group_norm.
  int64_t groups = 0;
  /// Added to the variance (or mean square) inside the square root; ≥ 0. Rounded to the
  /// statistics dtype before use, by the backend and the reference alike.
  double eps = 1e-5;
  /// Learnable gamma (weight, scale) and beta (bias, shift). rms_norm has gamma only.
  bool affine = true;
  /// batch_norm only: name of the running-statistics convention (conventions/conventions.json).
  std::string convention = "pytorch";
  /// batch_norm only: momentum in the convention's own meaning (new-weight for PyTorch,
  /// old-weight for Keras). Defaults to the convention's default.
  double momentum = 0.1;
  /// batch_norm only: `momentum=cumulative`, a cumulative moving average: training step k (from 1)
  /// weighs the batch by 1/k (PyTorch momentum=None: 1/num_batches_tracked; cuDNN factor 1/(1+n)).
  /// Only for conventions that have one (conventions.json cumulative_average).
  bool cumulative_average = false;
  /// batch_norm forward passes: training steps (forward_training calls, each on a fresh batch)
  /// before the compared call. forward_training: the last step is the compared call (≥ 1).
  /// forward_inference: steps run first, then inference on a fresh batch; 0 means the running
  /// statistics are drawn from the distribution instead of trained.
  int steps = 1;
  Distribution data;
  Special special = Special::none;
  GradientSpec dy;  ///< backward passes: how dy is drawn
  /// Run in place: y is written over x (forward), dx over dy (backward).
  bool inplace = false;
  uint64_t seed = 1;
  /// Tensors from files (descriptor fields data=file:…, dy=file:…, gamma=file:…, …).
  FileInputs files;

  int rank() const { return static_cast<int>(dims.size()); }
  /// The product of dims. Throws Error when it overflows int64 (validate() refuses such shapes).
  int64_t numel() const;
  int64_t channels() const { return dims.at(1); }
};

/// The largest numel() validate() accepts.
inline constexpr int64_t kMaxElements = int64_t{1} << 31;

/// Parses a descriptor. Throws Error with a one-line message naming the offending field.
/// The result is validated (see validate()).
Problem parse_descriptor(std::string_view text);

/// The canonical descriptor: op first, then pass, dtype, shape, then every field that differs
/// from its default, in a fixed order. parse_descriptor(to_descriptor(p)) == p, and a canonical
/// string prints back identically.
std::string to_descriptor(const Problem& p);

/// Throws Error if the combination is meaningless (e.g. forward_inference for layer_norm,
/// groups not dividing C, negative eps, momentum outside [0, 1]).
void validate(const Problem& p);

/// Estimated peak memory, in bytes, of one run of p: what run_case holds at once (the inputs of
/// every call as backend tensors and as the reference's doubles, the outputs, the reference's
/// working values, the two tolerance arrays, per-set statistics of every call). The one place
/// the memory model lives; a double, so it never overflows (finite for every valid problem).
///
/// Model (measured with /usr/bin/time on normcheck 0.1.0, 2^20 and 2^21 elements; the estimate
/// is 5–15 % above the measured peak):
///   bytes = 16 MiB
///         + numel · (calls · (dtype_size + 8)  +  100  [+ 16 backward]  [+ 16 at 256 bits])
///         + num_sets · calls · 224
/// (40 instead of 100 B/element for the fast reference, reference_bits = 0)
/// where calls = num_calls(p) (training steps and the compared call), 100 B/element covers the
/// outputs, the reference (y or dx as double, x̂ at `reference_bits`, a set index) and the two
/// tolerance arrays, and 224 B/set the per-set statistics (double and multi-precision).
/// When the reference changes its storage, change the constants here.
/// reference_bits: 0 for the fast reference, else the slow reference's 128 or 256.
double memory_estimate_bytes(const Problem& p, int reference_bits = 128);

/// Memory this process may still take, in bytes: MemAvailable from /proc/meminfo, else the
/// physical memory (sysconf _SC_PHYS_PAGES · _SC_PAGESIZE); 0 when neither is known.
double available_memory_bytes();

/// "" when p fits in `available` bytes (available_memory_bytes() when negative), else a one-line
/// refusal giving the estimate and the machine's memory.
std::string memory_refusal(const Problem& p, int reference_bits = 128, double available = -1);

/// Formats a double in the shortest form that parses back to the same value, with the exponent
/// written without padding (1e-05 → 1e-5). Used in descriptors and reports.
std::string format_number(double v);

}  // namespace normcheck
