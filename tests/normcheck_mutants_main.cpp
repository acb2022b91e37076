// The normcheck CLI with the planted-bug backends registered too (test builds only).
#include "cli.hpp"
#include "mutants.hpp"

int main(int argc, char** argv) {
  normcheck::BackendRegistry registry;
  normcheck::register_builtin_backends(registry);
  normcheck::testing::register_mutant_backends(registry);
  normcheck::testing::register_correct_variants(registry);
  normcheck::testing::register_nondeterministic_backend(registry);
  return normcheck::cli_main(argc, argv, registry);
}
