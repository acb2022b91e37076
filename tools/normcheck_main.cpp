#include "cli.hpp"

int main(int argc, char** argv) {
  normcheck::BackendRegistry registry;
  normcheck::register_builtin_backends(registry);
  return normcheck::cli_main(argc, argv, registry);
}
