#include "mutants.hpp"

#include "naive/naive.hpp"

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
  };
  for (const Mutant& m : kMutants) {
    r.add(m.name, m.summary, [m] {
      NaiveFlaws f;
      f.*m.flaw = true;
      return make_naive_backend(f, m.name);
    });
  }
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

}  // namespace

std::unique_ptr<Backend> perturb_y(std::unique_ptr<Backend> inner, int64_t index, float delta) {
  return std::make_unique<PerturbY>(std::move(inner), index, delta);
}

}  // namespace normcheck::testing
