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
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "normcheck/backend.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/problem.hpp"
#include "normcheck/reference.hpp"
#include "normcheck/tensor.hpp"

namespace normcheck {

struct WorstElement {
  int64_t index = -1;            ///< logical index; -1 when the tensor has no compared element
  std::vector<int64_t> coords;   ///< the same as coordinates over the tensor's dims
  double got = 0, expected = 0, abs_err = 0, tol = 0;
};

/// The largest term of an element's budget (tolerance-model.md §3.4), reported for the worst
/// element of every tensor.
enum class BudgetTerm : uint8_t {
  mean_shift,        ///< |gamma|·r·E_μ: the mean error every stable algorithm makes (∝ h·u·κ1)
  inv_std,           ///< |gamma·x̂|·δ_r: the variance-sum and inverse-sqrt error
  fold_cancellation, ///< |gamma|·r·2u(|x| + |μ|): folded scale/shift forms cancel x·scale against shift
  element_rounding,  ///< the few roundings of the element-wise arithmetic
  output_rounding,   ///< half an ulp of the output dtype (the rounding hull)
  reduction,         ///< a sum over the reduction set (statistics, dx, dgamma, dbeta)
  running_update,    ///< the running-statistics update across training steps
};
std::string_view to_string(BudgetTerm);

struct TensorComparison {
  std::string name;               ///< y, mean, variance, inv_std, running_mean, …
  DType dtype = DType::f32;       ///< the dtype the backend wrote it in
  std::vector<int64_t> dims;
  int64_t numel = 0;
  int64_t over_tolerance = 0;     ///< finite elements with |err| > tol
  int64_t nonfinite_mismatch = 0; ///< non-finite got vs finite ref, or non-finite class differs
  int64_t undefined = 0;          ///< skipped: reference undefined
  /// finite elements with |err| > kProbabilisticFailFactor × the probabilistic budget: a FAIL
  /// even within the worst-case budget (docs/comparison.md "Verdicts")
  int64_t over_probabilistic = 0;
  double max_abs_err = 0;
  double max_rel_err = 0;         ///< |err| / |ref| over elements with ref ≠ 0
  double max_ulp = 0;             ///< distance in ULPs of dtype between got and ref rounded to dtype
  double worst_ratio = 0;         ///< max |err| / tol (∞ on a non-finite mismatch): the verdict's ratio
  /// max |err| / probabilistic budget (γ_h → λ√h·u, s = 1; Higham & Mary 2019). Above 1 on a
  /// passing tensor: WARN (errors larger than random rounding explains, within the worst case).
  double worst_ratio_prob = 0;
  /// max over elements of max(0, |err| − ½ulp_out(ref)) / (tol − ½ulp_out(ref)): the error left
  /// after the unavoidable output rounding (tolerance-model.md §3.3); informative for f16/bf16,
  /// where worst_ratio sits near 1 for every correct kernel.
  double worst_ratio_acc = 0;
  BudgetTerm dominant = BudgetTerm::reduction;  ///< largest budget term at the worst element
  WorstElement worst;             ///< the element with the largest ratio
  bool pass = true;
  bool warn = false;              ///< pass && worst_ratio_prob > 1
};

/// An error more than this many times its probabilistic budget FAILs, even within the worst case.
/// The probabilistic budget uses λ = sqrt(2·ln(2·h·N/p_fail)), so under Higham & Mary's model
/// (2019, Thm. 2.4: independent mean-zero roundings) it is exceeded with probability at most
/// 2hN·exp(−λ²/2) = p_fail. F times it, to first order the bound at F·λ, is exceeded with
/// probability at most 2hN·exp(−F²λ²/2) ≤ p_fail^(F²) = 10⁻⁴⁸ for F = 4; the factor leaves room
/// for correlated rounding of correct kernels on structured data (docs/comparison.md).
inline constexpr double kProbabilisticFailFactor = 4;

/// The budgets of one tensor: the worst-case tolerance per element (the verdict), the
/// probabilistic one (the WARN tier), and the dominant term (per element, or one for all).
struct TensorBudget {
  const std::vector<double>* worst_case = nullptr;
  const std::vector<double>* probabilistic = nullptr;  ///< nullptr: no WARN tier
  const std::vector<BudgetTerm>* terms = nullptr;      ///< nullptr: `term` for every element
  BudgetTerm term = BudgetTerm::reduction;
  /// The exact value is undefined where the reference is non-finite although every input is finite
  /// (0/0, or 1/0 for eps = 0 on a zero-variance set): such elements are skipped and counted.
  bool nonfinite_reference_undefined = false;
};

/// Half the spacing of dtype t at |v|: half the gap from |v| rounded to t to the next value of t
/// away from zero (the subnormal spacing near zero); 0 for non-finite v. The output-rounding
/// term of every budget (tolerance-model.md §3.3). Units: the value's own.
double half_ulp(DType t, double v);

/// Compares got against ref element by element (all logical order, same length).
/// undefined_all marks every element as undefined. Non-finite values: a finite reference needs a
/// finite result within budget; a ±Inf reference accepts the same infinity or NaN (compensated
/// and updating algorithms compute Inf − Inf where a plain sum keeps Inf); a NaN reference needs NaN.
/// `threads` ≥ 1 threads compare ranges of 2^16 elements; the result is the same for every count.
TensorComparison compare_tensor(std::string name, DType dtype, std::vector<int64_t> dims,
                                const std::vector<double>& ref, const std::vector<double>& got,
                                const TensorBudget& budget, bool undefined_all = false, int threads = 1);

/// Which budget: the backend's precision profile, and worst-case (s = 2, γ_h; the verdict) or
/// probabilistic (s = 1, γ_h → λ√h·u with λ = sqrt(2·ln(2·h·N/p_fail)); the WARN tier).
struct BudgetModel {
  PrecisionProfile profile;
  bool probabilistic = false;
  double p_fail = 1e-3;
  int threads = 1;  ///< threads for the per-set loops; the budgets are the same for every count
  /// false: make_tolerances leaves Tolerances::y, y_terms and dx empty (run_case compares those
  /// through ElementBudgets, which computes the same doubles range by range).
  bool per_element = true;
};

/// Tolerances per output tensor (same names as ReferenceResult fields), from the rule above.
struct Tolerances {
  std::vector<double> y, mean, variance, inv_std, running_mean, running_var, dx, dgamma, dbeta;
  std::vector<BudgetTerm> y_terms;  ///< dominant term of every y element
  /// Certifiability (tolerance-model.md §1): false when (h + 4)·u > 0.05 for a reduction of this
  /// case under the declared profile; no first-order guarantee exists then.
  bool certifiable = true;
  std::string not_certifiable_reason;
  double lambda = 0;  ///< the probabilistic model's λ (0 for worst case)
  /// The tolerances of the tensor reported as `name` (rms_norm's mean_square and inv_rms
  /// included); nullptr for an unknown name.
  const std::vector<double>* of(std::string_view name) const;
};
Tolerances make_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                           const ReferenceResult& ref, const BudgetModel& model = {});

/// One element's budgets (units of the output).
struct ElementBudget {
  double tol = 0;        ///< worst case (the verdict)
  double tol_prob = 0;   ///< probabilistic (the WARN tier); 0 when not asked for
  BudgetTerm term = BudgetTerm::reduction;  ///< the largest term of the worst-case budget
  double hull = 0;       ///< half an ulp of the output dtype at the reference (a term of both)
};

/// The budgets of the case's per-element output — y in forward passes, dx in backward ones —
/// computed range by range from O(sets) constants, so that no budget array of the tensor's size
/// is held (issue 11: memory of the data only). The doubles are bit for bit those make_tolerances
/// stores in Tolerances::y / y_terms / dx under the same BudgetModel (make_tolerances fills them
/// from this class). Keeps references to its arguments, which must outlive it. O(sets) memory;
/// the construction of a backward case reads every element once (the per-set sums of §2.6).
class ElementBudgets {
 public:
  /// worst: the verdict's model; probabilistic (may be null): the WARN tier's.
  ElementBudgets(const Problem& p, const Partition& part, const ReferenceInputs& in, const ReferenceResult& ref,
                 const BudgetModel& worst, const BudgetModel* probabilistic = nullptr);
  ~ElementBudgets();
  ElementBudgets(const ElementBudgets&) = delete;
  ElementBudgets& operator=(const ElementBudgets&) = delete;
  /// The budgets of logical elements [lo, hi) into out[0 .. hi − lo).
  void fill(int64_t lo, int64_t hi, ElementBudget* out) const;
  bool has_probabilistic() const;

 private:
  struct Tier;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// compare_tensor of a backend's output tensor (read range by range, in its own dtype and
/// layout, without a whole-tensor copy) against ref with budgets computed on the fly: the same
/// TensorComparison as compare_tensor(name, got.dtype(), got.dims(), ref, got.to_vector(), budget)
/// with the budget arrays make_tolerances would store.
TensorComparison compare_tensor(std::string name, const Tensor& got, const std::vector<double>& ref,
                                const ElementBudgets& budgets, bool nonfinite_reference_undefined, int threads = 1);

/// The backend's saved statistics, logical order (empty: not reported).
struct SavedStatistics {
  std::vector<double> mean, variance, inv_std;
};

/// y against gamma·(x − μ̃)·r̃ + beta with the backend's own saved μ̃ and r̃ (r̃ = 1/sqrt(ṽ + eps)
/// when only the variance was saved), reported as tensor "y_vs_saved_stats". Its budget has the
/// element-wise roundings only, s·[2u·|gamma|·r̃·(|x| + |μ̃|) + (ρ + 4)·u·|gamma·x̂| + 2u·|beta|] plus
/// half an ulp of y, with neither the depth h nor the mean-shift term in it: the check stays sharp
/// on weak data (docs/comparison.md "Weak checks"). std::nullopt when the statistics y needs were
/// not saved (or the pass is not forward_training).
std::optional<TensorComparison> compare_with_saved_statistics(const Problem& p, const Partition& part,
                                                              const ReferenceInputs& in, const std::vector<double>& y,
                                                              const SavedStatistics& saved,
                                                              const PrecisionProfile& profile);
/// The same, reading y from the backend's tensor range by range (no whole-tensor copy, and the
/// prediction and its budget computed per range of 2^16 elements) on `threads` threads.
std::optional<TensorComparison> compare_with_saved_statistics(const Problem& p, const Partition& part,
                                                              const ReferenceInputs& in, const Tensor& y,
                                                              const SavedStatistics& saved,
                                                              const PrecisionProfile& profile, int threads = 1);

/// Distance between a and b in units in the last place of dtype t (both rounded to t first);
/// ∞ if either is non-finite and they differ.
double ulp_distance(DType t, double a, double b);

/// Largest condition number κ1 = r·M1 = mean|x| / sqrt(v + eps) over the compared batch's sets
/// (tolerance-model.md §1). f32 cannot resolve x̂ better than about u·κ1.
double condition_number(const ReferenceResult& ref);

}  // namespace normcheck
