// The built-in backends. Each backend lives in backends/<name>/.
#include "naive/naive.hpp"
#include "normcheck/backend.hpp"

namespace normcheck {

void register_builtin_backends(BackendRegistry& r) {
  r.add("naive", "textbook two-pass in f32/f64; the embedded default",
        [] { return make_naive_backend(); });
}

}  // namespace normcheck
