#include "mutants.hpp"

#include "naive/naive.hpp"

#include <cmath>
#include <limits>
#include <vector>

namespace normcheck::testing {

void register_mutant_backends(BackendRegistry& r) {
  struct Mutant {
    const char* name;
    const char* summary;
    bool NaiveFlaws::*flaw;
  };
  static constexpr Mutant kMutants[] = {
      {"mutant_unbiased_variance", "planted bug: unbiased variance inside the normalization",
       &NaiveFlaws::unbiased_normalization},
      {"mutant_eps_outside_sqrt", "planted bug: 1/(sqrt(v) + eps)", &NaiveFlaws::eps_outside_sqrt},
      {"mutant_storage_accumulation", "planted bug: sums kept in the data dtype (f16/bf16 accumulator)",
       &NaiveFlaws::storage_accumulation},
      {"mutant_swapped_momentum", "planted bug: momentum weights the old running value",
       &NaiveFlaws::swapped_momentum},
      {"mutant_one_pass_variance", "planted bug: variance as E[x²] − E[x]² in f32",
       &NaiveFlaws::one_pass_variance},
      {"mutant_biased_running_var", "planted bug: running_var without the Bessel correction",
       &NaiveFlaws::biased_running_var},
      {"mutant_dgamma_missing_mean", "planted bug: dgamma = Σ dy·x·inv_std (the −mean term dropped)",
       &NaiveFlaws::dgamma_missing_mean},
      {"mutant_ignore_strides", "planted bug: data read and written as dense NCHW whatever the strides",
       &NaiveFlaws::ignore_strides},
      {"mutant_gn_affine_per_group", "planted bug: group_norm gamma/beta indexed by group, not channel",
       &NaiveFlaws::gn_affine_per_group},
      {"mutant_gamma_after_beta", "planted bug (no signature): y = gamma·(x̂ + beta)", &NaiveFlaws::gamma_after_beta},
      {"mutant_mean_subtracted_twice", "planted bug (no signature): y from (x − 2·mean)·r",
       &NaiveFlaws::mean_subtracted_twice},
      {"mutant_dx_r_squared", "planted bug (no signature): dx scaled by r² instead of r", &NaiveFlaws::dx_r_squared},
      {"mutant_variance_m_plus_1", "planted bug (no signature): variance = Σ(x − mean)²/(m + 1)",
       &NaiveFlaws::variance_m_plus_1},
      {"mutant_beta_by_set", "planted bug (no signature): beta indexed by reduction set, not affine entry",
       &NaiveFlaws::beta_by_set},
  };
  for (const Mutant& m : kMutants) {
    r.add(m.name, m.summary, [m] {
      NaiveFlaws f;
      f.*m.flaw = true;
      return make_naive_backend(f, m.name);
    });
  }
}

void register_correct_variants(BackendRegistry& r) {
  struct Variant {
    const char* name;
    const char* summary;
    NaiveVariant v;
  };
  static const Variant kVariants[] = {
      {"variant_f64", "correct: naive arithmetic in f64 for every dtype", {Summation::recursive, false, true}},
      {"variant_pairwise", "correct: two-pass, pairwise sums (declares pairwise)", {Summation::pairwise, false, false}},
      {"variant_kahan", "correct: two-pass, compensated sums (declares compensated)",
       {Summation::compensated, false, false}},
      {"variant_welford", "correct: Welford one-pass updating (declares recursive)", {Summation::recursive, true, false}},
      {"variant_blocked8", "correct: two-pass, 8 blocked accumulators (declares blocked, P = 8)",
       {Summation::blocked, false, false, 8}},
      {"variant_blocked64", "correct: two-pass, 64 blocked accumulators (declares blocked, P = 64)",
       {Summation::blocked, false, false, 64}},
      {"variant_rsqrt_newton", "correct: a 12-bit rsqrt estimate plus Newton steps (declares rsqrt_error 6)",
       {Summation::recursive, false, false, 0, true}},
      {"variant_folded_affine", "correct: y = x·scale + shift, scale = gamma·r, shift = beta − mean·scale",
       {Summation::recursive, false, false, 0, false, true}},
  };
  for (const Variant& v : kVariants)
    r.add(v.name, v.summary, [v] { return make_naive_backend({}, v.name, v.v); });
}

const std::vector<std::string>& correct_variant_names() {
  static const std::vector<std::string> names = {"naive",           "variant_f64",       "variant_pairwise",
                                                 "variant_kahan",   "variant_welford",   "variant_blocked8",
                                                 "variant_blocked64", "variant_rsqrt_newton", "variant_folded_affine"};
  return names;
}

namespace {

class PerturbY final : public Backend {
 public:
  PerturbY(std::unique_ptr<Backend> inner, int64_t index, float delta)
      : inner_(std::move(inner)), index_(index), delta_(delta) {}
  std::string name() const override { return inner_->name() + "+perturbed"; }
  std::string version() const override { return inner_->version(); }
  std::string description() const override { return inner_->description() + ", one y element perturbed"; }
  Capabilities capabilities() const override { return inner_->capabilities(); }
  std::optional<std::string> unsupported_reason(const RunArgs& a, Layout l) const override {
    return inner_->unsupported_reason(a, l);
  }
  RunResult run(const RunArgs& a) override {
    RunResult r = inner_->run(a);
    if (r.ok && a.y.present()) static_cast<float*>(a.y.data)[index_] += delta_;
    return r;
  }

 private:
  std::unique_ptr<Backend> inner_;
  int64_t index_;
  float delta_;
};

/// Correct to within one ulp, but not bitwise reproducible: every second call (counted per
/// backend object) moves the last physical element of y, or of dx in a backward pass, one ulp
/// towards +∞ (f32 and f64 outputs; others are left alone), as a reduction whose order depends on
/// thread timing would.
class Nondeterministic final : public Backend {
 public:
  explicit Nondeterministic(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "mutant_nondeterministic"; }
  std::string version() const override { return inner_->version(); }
  std::string description() const override { return inner_->description() + ", one ulp off on every second call"; }
  Capabilities capabilities() const override { return inner_->capabilities(); }
  std::optional<std::string> unsupported_reason(const RunArgs& a, Layout l) const override {
    return inner_->unsupported_reason(a, l);
  }
  RunResult run(const RunArgs& a) override {
    RunResult r = inner_->run(a);
    const bool backward = a.pass == Pass::backward_training || a.pass == Pass::backward_inference;
    const TensorArg& out = backward ? a.dx : a.y;
    if (!r.ok || !out.present() || ++calls_ % 2 != 0) return r;
    int64_t last = 0;  // the physical offset of the element with the largest logical index
    for (int d = 0; d < out.rank; ++d) last += (out.dims[d] - 1) * out.strides[d];
    if (out.dtype == DType::f32) {
      float& v = static_cast<float*>(out.data)[last];
      v = std::nextafter(v, std::numeric_limits<float>::infinity());
    } else if (out.dtype == DType::f64) {
      double& v = static_cast<double*>(out.data)[last];
      v = std::nextafter(v, std::numeric_limits<double>::infinity());
    }
    return r;
  }

 private:
  std::unique_ptr<Backend> inner_;
  int64_t calls_ = 0;
};

}  // namespace

std::unique_ptr<Backend> nondeterministic(std::unique_ptr<Backend> inner) {
  return std::make_unique<Nondeterministic>(std::move(inner));
}

void register_nondeterministic_backend(BackendRegistry& r) {
  r.add("mutant_nondeterministic",
        "planted fault: every second call moves the last element of y (forward) or dx (backward) by one ulp",
        [] { return nondeterministic(make_naive_backend({}, "naive")); });
}

std::unique_ptr<Backend> perturb_y(std::unique_ptr<Backend> inner, int64_t index, float delta) {
  return std::make_unique<PerturbY>(std::move(inner), index, delta);
}

}  // namespace normcheck::testing
