// normcheck — running one case: generate inputs, call the backend, run the reference, compare.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "normcheck/backend.hpp"
#include "normcheck/compare.hpp"
#include "normcheck/problem.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/reference.hpp"

namespace normcheck {

struct SuppliedInputs;  // file_inputs.hpp

/// pass/fail: compared against the worst-case budget. warn: passed, but some tensor is above the
/// probabilistic budget (larger errors than random rounding explains). not_certifiable: the
/// declared precision profile has no first-order error bound at this reduction size
/// ((h + 4)·u > 0.05); outputs were compared but no verdict is claimed. unsupported: the backend
/// declined, with its reason. error: the backend returned an error. crash/timeout/overrun: an
/// isolated plugin call died of a signal, ran past its time limit, or wrote outside its output
/// buffers (docs/plugins.md).
/// nondeterministic: with --repeat N, outputs that differ bitwise between runs on identical
/// inputs (a failure; docs/cli.md "Determinism").
enum class Verdict { pass, fail, unsupported, error, crash, timeout, overrun, warn, not_certifiable, nondeterministic };
std::string_view to_string(Verdict);

struct CaseResult {
  Problem problem;
  std::string descriptor;  ///< canonical descriptor (the reproducer)
  std::string note;        ///< the suite's comment: what the case is and the expected behaviour
  Verdict verdict = Verdict::pass;
  /// One line: why it failed / is unsupported / errored. A pass may carry a note: elements not
  /// compared because the reference is undefined, or "weak check: …" (docs/comparison.md).
  std::string reason;
  std::vector<TensorComparison> tensors;
  double condition_number = 0;  ///< κ1 of the compared batch (compare.hpp)
  /// A pass whose tolerance is too wide to be informative in this dtype (docs/comparison.md).
  bool weak_check = false;
  double seconds = 0;           ///< wall time of the case (backend + reference + compare)
  /// Wall time inside the backend's run calls (every call of the case: training steps too);
  /// seconds − backend_seconds is normcheck's own cost (generation, reference, budgets, compare).
  double backend_seconds = 0;
  int index = 0;                ///< position in the whole (unsharded) run; merge orders by it
  /// A failing case: the bug signature its errors match (docs/comparison.md "Diagnosis"), or
  /// "unexplained"; "" for cases that did not fail.
  std::string suspected_cause;
  /// With --expect: the reason this case is a known failure ("" when it is not listed).
  std::string known_failure;
  /// Cases on supplied files (--input): " --input x=PATH …" for the reproducer; "" otherwise.
  std::string input_options;
};

/// The raw material of one compared case, for probes (`normcheck diagnose`).
struct CaseCapture {
  ReferenceInputs inputs;
  ReferenceResult reference;
  std::map<std::string, std::vector<double>> got;  ///< outputs the backend produced, by tensor name
  uint32_t produced = 0;                           ///< Output bits of the compared call
};

/// What the reference is given for problem p: the generated inputs in logical order, eps and the
/// running-statistics weights exactly as the backend receives them (make_run_args). The tensors
/// are converted on `threads` threads (0: every core); the result is the same for every count.
ReferenceInputs reference_inputs(const Problem& p, const GeneratedInputs& in, int threads = 1);

struct RunOptions {
  ReferenceKind reference = ReferenceKind::fast;  ///< fast exact reference, or the slow Boost one
  int reference_bits = 128;  ///< precision of the slow reference (128 or 256)
  int threads = 0;           ///< threads of the generation, fast reference, budgets and comparison; 0: all cores
  std::string dump_dir;  ///< when set, write .npy files of inputs and outputs per case
  CaseCapture* capture = nullptr;  ///< when set, filled for every case that reaches the comparison
  /// When set, applied to the generated inputs before the reference and the backend see them
  /// (metamorphic relations: permuted or shifted inputs).
  std::function<void(GeneratedInputs&)> transform_inputs;
  /// Tensors from .npy files (--input; file_inputs.hpp), used where the problem names them by
  /// digest (data=file:…, dy=file:…). run_case throws Error when they are missing or differ.
  const SuppliedInputs* inputs = nullptr;
};

/// The scalar part of a backend call for problem p: op, pass, shape, eps and momentum rounded to
/// the statistics dtype, running-statistics convention in new-weight form, x's dtype. Buffers are
/// left absent.
RunArgs make_run_args(const Problem& p);

/// Runs problem p on backend b. Never throws for backend failures (they become Verdict::error);
/// throws Error for invalid problems or unwritable dump directories.
CaseResult run_case(Backend& b, const Problem& p, const RunOptions& opt);

}  // namespace normcheck
