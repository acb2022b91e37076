// normcheck — comparison of a backend's outputs with the reference.
//
// The one place where pass/fail is decided. The rule (docs/comparison.md) gives every element i
// of output tensor T a tolerance
//     tol_i = c_T · u · scale_i + ½·ulp(|ref_i|)
// where u is the unit roundoff of the backend's dtype (the stats dtype for statistics and
// gamma/beta gradients), scale_i is the element's natural scale built from exact per-set
// quantities (mean shift |gamma|·r·M1, |gamma·x̂|, |beta|, …; shared/research/tolerance-model.md §2)
// and c_T = 2·(m + 4) for outputs that go through a reduction of m elements (worst-case depth
// of a recursive sum, safety factor 2), 2·8 for purely element-wise outputs.
// An element fails if |got − ref| > tol_i, or if got is non-finite while ref is finite, or if ref
// is non-finite and got is not the same (NaN ↔ NaN, +Inf ↔ +Inf). Elements whose reference is
// mathematically undefined (unbiased variance of one value) are skipped and counted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "normcheck/partition.hpp"
#include "normcheck/problem.hpp"
#include "normcheck/reference.hpp"

namespace normcheck {

struct WorstElement {
  int64_t index = -1;            ///< logical index; -1 when the tensor has no compared element
  std::vector<int64_t> coords;   ///< the same as coordinates over the tensor's dims
  double got = 0, expected = 0, abs_err = 0, tol = 0;
};

struct TensorComparison {
  std::string name;               ///< y, mean, variance, inv_std, running_mean, …
  DType dtype = DType::f32;       ///< the dtype the backend wrote it in
  std::vector<int64_t> dims;
  int64_t numel = 0;
  int64_t over_tolerance = 0;     ///< finite elements with |err| > tol
  int64_t nonfinite_mismatch = 0; ///< non-finite got vs finite ref, or non-finite class differs
  int64_t undefined = 0;          ///< skipped: reference undefined
  double max_abs_err = 0;
  double max_rel_err = 0;         ///< |err| / |ref| over elements with ref ≠ 0
  double max_ulp = 0;             ///< distance in ULPs of dtype between got and ref rounded to dtype
  double worst_ratio = 0;         ///< max |err| / tol (∞ on a non-finite mismatch)
  WorstElement worst;             ///< the element with the largest ratio
  bool pass = true;
};

/// Compares got against ref element by element with tolerances tol (all logical order, same
/// length). undefined_all marks every element as undefined.
TensorComparison compare_tensor(std::string name, DType dtype, std::vector<int64_t> dims,
                                const std::vector<double>& ref, const std::vector<double>& got,
                                const std::vector<double>& tol, bool undefined_all = false);

/// Tolerances per output tensor (same names as ReferenceResult fields), from the rule above.
struct Tolerances {
  std::vector<double> y, mean, variance, inv_std, running_mean, running_var, dx, dgamma, dbeta;
};
Tolerances make_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                           const ReferenceResult& ref);

/// Distance between a and b in units in the last place of dtype t (both rounded to t first);
/// ∞ if either is non-finite and they differ.
double ulp_distance(DType t, double a, double b);

/// Largest condition number κ1 = r·M1 = mean|x| / sqrt(v + eps) over the compared batch's sets
/// (tolerance-model.md §1). f32 cannot resolve x̂ better than about u·κ1.
double condition_number(const ReferenceResult& ref);

}  // namespace normcheck
