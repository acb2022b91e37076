#include "mutants.hpp"

#include "naive/naive.hpp"

namespace normcheck::testing {

void register_mutant_backends(BackendRegistry& r) {
  r.add("mutant_unbiased_variance", "planted bug: unbiased variance inside the normalization", [] {
    NaiveFlaws f;
    f.unbiased_normalization = true;
    return make_naive_backend(f, "mutant_unbiased_variance");
  });
  r.add("mutant_eps_outside_sqrt", "planted bug: 1/(sqrt(v) + eps)", [] {
    NaiveFlaws f;
    f.eps_outside_sqrt = true;
    return make_naive_backend(f, "mutant_eps_outside_sqrt");
  });
  r.add("mutant_swapped_momentum", "planted bug: momentum weights the old running value", [] {
    NaiveFlaws f;
    f.swapped_momentum = true;
    return make_naive_backend(f, "mutant_swapped_momentum");
  });
}

}  // namespace normcheck::testing
