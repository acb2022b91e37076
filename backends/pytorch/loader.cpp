// Loads the pytorch backend module (libnormcheck_pytorch.so, backends/pytorch/pytorch.cpp) on
// first use, so that processes that never ask for the pytorch backend never load libtorch.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "normcheck/error.hpp"
#include "pytorch.hpp"

#ifndef NORMCHECK_PYTORCH_MODULE
#define NORMCHECK_PYTORCH_MODULE ""
#endif
#ifndef NORMCHECK_PYTORCH_MODULE_INSTALLED
#define NORMCHECK_PYTORCH_MODULE_INSTALLED ""
#endif

namespace normcheck {
namespace {

using Create = Backend* (*)();

/// Where the module may be: $NORMCHECK_PYTORCH_MODULE, next to the executable, the install
/// location relative to it (bin/../lib/normcheck/), and the build tree.
std::vector<std::string> candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("NORMCHECK_PYTORCH_MODULE"); env && *env) c.emplace_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    c.push_back((exe.parent_path() / "libnormcheck_pytorch.so").string());
    if (*NORMCHECK_PYTORCH_MODULE_INSTALLED)
      c.push_back((exe.parent_path() / ".." / NORMCHECK_PYTORCH_MODULE_INSTALLED).string());
  }
  if (*NORMCHECK_PYTORCH_MODULE) c.emplace_back(NORMCHECK_PYTORCH_MODULE);
  return c;
}

/// What `pytorch` is when the module cannot be loaded (a Python extension whose host does not
/// export normcheck's symbols, a moved build tree): every case UNSUPPORTED with the loader's
/// error, so that `normcheck list` and the other backends keep working.
class Unavailable final : public Backend {
 public:
  explicit Unavailable(std::string why) : why_(std::move(why)) {}
  std::string name() const override { return "pytorch"; }
  std::string version() const override { return "unavailable: " + why_; }
  std::string description() const override { return "the PyTorch backend (module not loaded)"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.notes = {why_};
    return c;
  }
  std::optional<std::string> unsupported_reason(const RunArgs&, Layout) const override { return why_; }
  RunResult run(const RunArgs&) override {
    RunResult r;
    r.ok = false;
    r.unsupported = true;
    r.message = why_;
    return r;
  }

 private:
  std::string why_;
};

/// dlopen once per process (libtorch is never unloaded); throws Error with every path tried.
Create load() {
  static std::once_flag once;
  static Create create = nullptr;
  static std::string why;
  std::call_once(once, [] {
    for (const std::string& path : candidates()) {
      if (!std::filesystem::exists(path)) continue;
      void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        why += std::string("; ") + dlerror();
        continue;
      }
      create = reinterpret_cast<Create>(dlsym(h, "normcheck_pytorch_backend_create"));
      if (create) return;
      why += "; " + path + ": no normcheck_pytorch_backend_create";
    }
  });
  if (!create)
    throw Error("the pytorch backend module libnormcheck_pytorch.so could not be loaded" +
                (why.empty() ? std::string(" (not found; set NORMCHECK_PYTORCH_MODULE)") : why));
  return create;
}

}  // namespace

std::unique_ptr<Backend> make_pytorch_backend() {
  try {
    return std::unique_ptr<Backend>(load()());
  } catch (const Error& e) {
    return std::make_unique<Unavailable>(e.what());
  }
}

}  // namespace normcheck
