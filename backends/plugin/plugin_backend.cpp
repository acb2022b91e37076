// Why a child process per call: a plugin is arbitrary native code. In-process, a SIGSEGV or
// abort() would end normcheck and lose the report, and a hang would stall it. fork() gives the call
// its own address space for the price of one fork per call (about 0.1 ms here, small next to the
// reference), without a protocol to keep in sync: the child shares only one anonymous
// MAP_SHARED arena with the parent, laid out as
//   [result block][canary][tensor 1][canary][canary][tensor 2][canary] …
// The parent copies inputs in, forks, waits with a deadline, then checks every canary (a write
// outside a tensor's extent is an OVERRUN) and copies outputs back.
#include "plugin_backend.hpp"

#include <dlfcn.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <thread>
#include <vector>

#include "normcheck/plugin.h"

namespace normcheck {
namespace {

constexpr size_t kCanary = 64;  // bytes on each side of every tensor
constexpr unsigned char kCanaryByte = 0xA5;
constexpr size_t kMessageBytes = 1024;

struct ResultBlock {
  int32_t status;
  uint32_t produced;
  char message[kMessageBytes];
};

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

/// The 13 tensors of a call: where each lives in RunArgs and in nc_run_args, its name, whether the
/// plugin writes it (and so it is copied back), and the input it may alias in place (-1: none).
struct Slot {
  TensorArg RunArgs::*arg;
  nc_tensor nc_run_args::*c;
  const char* name;
  bool written;
  int alias_of;
};
constexpr int kX = 0, kDy = 2;
constexpr Slot kSlots[] = {
    {&RunArgs::x, &nc_run_args::x, "x", false, -1},
    {&RunArgs::y, &nc_run_args::y, "y", true, kX},
    {&RunArgs::dy, &nc_run_args::dy, "dy", false, -1},
    {&RunArgs::dx, &nc_run_args::dx, "dx", true, kDy},
    {&RunArgs::gamma, &nc_run_args::gamma, "gamma", false, -1},
    {&RunArgs::beta, &nc_run_args::beta, "beta", false, -1},
    {&RunArgs::dgamma, &nc_run_args::dgamma, "dgamma", true, -1},
    {&RunArgs::dbeta, &nc_run_args::dbeta, "dbeta", true, -1},
    {&RunArgs::mean, &nc_run_args::mean, "mean", true, -1},
    {&RunArgs::variance, &nc_run_args::variance, "variance", true, -1},
    {&RunArgs::inv_std, &nc_run_args::inv_std, "inv_std", true, -1},
    {&RunArgs::running_mean, &nc_run_args::running_mean, "running_mean", true, -1},
    {&RunArgs::running_var, &nc_run_args::running_var, "running_var", true, -1},
};
constexpr int kCount = static_cast<int>(std::size(kSlots));

/// Bytes a strided tensor spans: (largest offset + 1) · element size.
size_t extent_bytes(const TensorArg& t) {
  int64_t last = 0;
  for (int d = 0; d < t.rank; ++d) last += (t.dims[d] - 1) * t.strides[d];
  return static_cast<size_t>(last + 1) * static_cast<size_t>(dtype_size(t.dtype));
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return fmt::format("SIG{} ({})", abbrev ? abbrev : "?", strsignal(sig));
}

class PluginBackend final : public Backend {
 public:
  PluginBackend(void* handle, const nc_plugin* table, std::string path, double timeout, bool isolate)
      : handle_(handle), p_(table), path_(std::move(path)), timeout_(timeout), isolate_(isolate) {}
  ~PluginBackend() override { dlclose(handle_); }

  std::string name() const override { return p_->name ? p_->name : path_; }
  std::string version() const override {
    return fmt::format("{} (plugin {}, ABI {}.{})", p_->version ? p_->version : "?", path_, p_->abi_major,
                       p_->abi_minor);
  }
  std::string description() const override { return p_->description ? p_->description : ""; }
  Capabilities capabilities() const override {
    Capabilities c;
    for (Op o : kAllOps)
      if (p_->ops & (1u << static_cast<int>(o))) c.ops.push_back(o);
    for (Pass s : kAllPasses)
      if (p_->passes & (1u << static_cast<int>(s))) c.passes.push_back(s);
    for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16})
      if (p_->dtypes & (1u << static_cast<int>(t))) c.dtypes.push_back(t);
    for (Layout l : {Layout::nchw, Layout::nhwc})
      if (p_->layouts & (1u << static_cast<int>(l))) c.layouts.push_back(l);
    c.notes = {isolate_ ? fmt::format("each call runs in a forked child; per-call timeout {} s", timeout_)
                        : std::string("calls run in normcheck's own process (--in-process): no isolation")};
    static constexpr const char* kSum[] = {"not declared", "recursive", "pairwise", "blocked", "compensated"};
    const int sum = p_->summation >= 0 && p_->summation <= 4 ? p_->summation : 0;
    const int acc = p_->accumulation_dtype;
    if (sum == NC_SUM_PAIRWISE) c.precision.summation = Summation::pairwise;
    if (sum == NC_SUM_COMPENSATED) c.precision.summation = Summation::compensated;
    // NC_SUM_BLOCKED carries no block count in ABI 1.0: budgeted as recursive, the safe depth.
    if (acc == static_cast<int>(DType::f16) || acc == static_cast<int>(DType::bf16))
      c.precision.accumulation = static_cast<DType>(acc);
    if (p_->convention) c.convention = p_->convention;
    c.notes.push_back(fmt::format(
        "declares: running statistics {}, accumulation {}, summation {} (the error budget uses the "
        "summation and a 16-bit accumulation; blocked without a block count is budgeted as recursive)",
        p_->convention ? fmt::format("by the {} convention", p_->convention) : std::string("as normcheck asks"),
        acc >= 0 && acc <= 3 ? std::string(to_string(static_cast<DType>(acc))) : std::string("not declared"),
        kSum[sum]));
    return c;
  }

  RunResult run(const RunArgs& a) override { return isolate_ ? run_isolated(a) : run_in_process(a); }

 private:
  /// The C view of a call, pointing at the caller's buffers.
  static nc_run_args to_c(const RunArgs& a) {
    nc_run_args c{};
    c.struct_size = sizeof(nc_run_args);
    c.op = static_cast<int32_t>(a.op);
    c.pass = static_cast<int32_t>(a.pass);
    c.rank = a.rank;
    std::memcpy(c.dims, a.dims, sizeof c.dims);
    c.norm_dims = a.norm_dims;
    c.groups = a.groups;
    c.eps = a.eps;
    c.affine = a.affine;
    c.batch_weight = a.batch_weight;
    c.running_var_unbiased = a.running_var_unbiased;
    for (const Slot& slot : kSlots) {
      const TensorArg& src = a.*slot.arg;
      if (!src.present()) continue;
      nc_tensor& dst = c.*slot.c;
      dst.data = src.data;
      dst.dtype = static_cast<int32_t>(src.dtype);
      dst.rank = src.rank;
      std::memcpy(dst.dims, src.dims, sizeof dst.dims);
      std::memcpy(dst.strides, src.strides, sizeof dst.strides);
    }
    return c;
  }

  /// Maps the plugin's status to a RunResult.
  static RunResult from_status(int32_t status, uint32_t produced, const char* message) {
    switch (status) {
      case NC_STATUS_OK: {
        RunResult r;
        r.produced = produced;
        return r;
      }
      case NC_STATUS_UNSUPPORTED: {
        RunResult r = fail(message && message[0] ? message : "the plugin declined the problem");
        r.unsupported = true;
        return r;
      }
      case NC_STATUS_ERROR: return fail(message && message[0] ? message : "the plugin returned NC_STATUS_ERROR");
      default: return fail(fmt::format("the plugin returned the unknown status {}", status));
    }
  }

  RunResult run_in_process(const RunArgs& a) const {
    const nc_run_args c = to_c(a);
    uint32_t produced = 0;
    const char* message = nullptr;
    const nc_status st = p_->run(&c, &produced, &message);
    return from_status(st, produced, message);
  }

  RunResult run_isolated(const RunArgs& a) {
    // Every tensor has a canary zone of its own on each side, so a stray write names its tensor.
    // An output that aliases its input in place (y over x, dx over dy) shares the input's place,
    // so the plugin sees one buffer, as the caller has.
    const TensorArg* src[kCount];
    bool shared[kCount] = {};
    size_t offset[kCount] = {}, bytes[kCount] = {};
    size_t total = align64(sizeof(ResultBlock));
    for (int i = 0; i < kCount; ++i) {
      src[i] = &(a.*kSlots[i].arg);
      if (!src[i]->present()) continue;
      const int in = kSlots[i].alias_of;
      if (in >= 0 && src[in]->present() && src[in]->data == src[i]->data) {
        shared[i] = true;
        offset[i] = offset[in];
        bytes[i] = bytes[in];
        continue;
      }
      bytes[i] = extent_bytes(*src[i]);
      offset[i] = total + kCanary;
      total = align64(offset[i] + bytes[i]) + kCanary;
    }
    void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return fail(fmt::format("mmap of {} bytes failed: {}", total, strerror(errno)));
    auto* arena = static_cast<unsigned char*>(mem);
    std::memset(arena, kCanaryByte, total);
    auto* result = new (arena) ResultBlock{-1, 0, {}};

    nc_run_args c = to_c(a);
    for (int i = 0; i < kCount; ++i) {
      if (!src[i]->present()) continue;
      if (!shared[i]) std::memcpy(arena + offset[i], src[i]->data, bytes[i]);
      (c.*kSlots[i].c).data = arena + offset[i];
    }

    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      munmap(mem, total);
      return fail(fmt::format("fork failed: {}", strerror(errno)));
    }
    if (pid == 0) {  // child: one call, then _exit without running the parent's atexit handlers
      // A fault in the plugin is reported by its signal: drop any handler normcheck runs under
      // (a sanitizer's, a debugger's) so the kernel's default action ends the child.
      for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS}) signal(sig, SIG_DFL);
      uint32_t produced = 0;
      const char* message = nullptr;
      const nc_status st = p_->run(&c, &produced, &message);
      result->produced = produced;
      if (message) std::snprintf(result->message, kMessageBytes, "%s", message);
      result->status = static_cast<int32_t>(st);
      _exit(0);
    }

    RunResult r = wait_child(pid);
    if (r.ok) {
      for (int i = 0; i < kCount && r.ok; ++i) {
        if (!src[i]->present() || shared[i]) continue;
        const unsigned char* lo = arena + offset[i] - kCanary;
        const unsigned char* hi = arena + offset[i] + bytes[i];
        const size_t hi_len = align64(offset[i] + bytes[i]) - (offset[i] + bytes[i]) + kCanary;
        auto intact = [](const unsigned char* p, size_t n) {
          for (size_t k = 0; k < n; ++k)
            if (p[k] != kCanaryByte) return false;
          return true;
        };
        const bool below = !intact(lo, kCanary), above = !intact(hi, hi_len);
        if (below || above) {
          r = fail(fmt::format("OVERRUN: the plugin wrote outside tensor {}, {} its {} bytes", kSlots[i].name,
                               below ? "before" : "past the end of", bytes[i]));
          r.fault = RunResult::Fault::overrun;
        }
      }
    }
    if (r.ok) {
      r = from_status(result->status, result->produced, result->message);
      if (r.ok) {
        // Copy back what the plugin writes; an in-place output goes back over its input.
        for (int i = 0; i < kCount; ++i)
          if (src[i]->present() && kSlots[i].written) std::memcpy(src[i]->data, arena + offset[i], bytes[i]);
      }
    }
    munmap(mem, total);
    return r;
  }

  static RunResult fail(std::string message) {
    RunResult r;
    r.ok = false;
    r.message = std::move(message);
    return r;
  }

  RunResult wait_child(pid_t pid) const {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(timeout_);
    auto pause = std::chrono::microseconds(20);
    int status = 0;
    while (true) {
      const pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (w < 0) return fail(fmt::format("waitpid failed: {}", strerror(errno)));
      if (clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        RunResult r = fail(fmt::format("TIMEOUT: the call ran longer than {} s and was killed", timeout_));
        r.fault = RunResult::Fault::timeout;
        return r;
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(10000));
    }
    if (WIFSIGNALED(status)) {
      RunResult r = fail(fmt::format("CRASH: the plugin died of {}", signal_name(WTERMSIG(status))));
      r.fault = RunResult::Fault::crash;
      return r;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      RunResult r = fail(fmt::format("CRASH: the plugin called exit({})", WEXITSTATUS(status)));
      r.fault = RunResult::Fault::crash;
      return r;
    }
    return RunResult{};
  }

  void* handle_;
  const nc_plugin* p_;
  std::string path_;
  double timeout_;
  bool isolate_;
};

std::string find_on_plugin_path(const std::string& name) {
  const char* env = std::getenv("NORMCHECK_PLUGIN_PATH");
  if (!env) return "";
  std::string dirs = env;
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start);
    const std::string dir = dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    for (const std::string& file : {name, "lib" + name + ".so", name + ".so"}) {
      const auto p = std::filesystem::path(dir.empty() ? "." : dir) / file;
      if (std::filesystem::is_regular_file(p)) return p.string();
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return "";
}

}  // namespace

bool looks_like_plugin(const std::string& spec) {
  return spec.find('/') != std::string::npos ||
         (spec.size() > 3 && spec.compare(spec.size() - 3, 3, ".so") == 0);
}

std::unique_ptr<Backend> load_plugin(const std::string& path_or_name, double timeout_seconds, bool isolate) {
  std::string path = path_or_name;
  if (!looks_like_plugin(path_or_name)) {
    path = find_on_plugin_path(path_or_name);
    if (path.empty()) return nullptr;
  }
  if (!std::filesystem::exists(path)) throw Error(fmt::format("plugin {}: no such file", path));
  if (!(timeout_seconds > 0)) throw Error("--timeout must be > 0 seconds");
  // An explicit relative path, so dlopen does not search the library path instead.
  const std::string open_path = path.find('/') == std::string::npos ? "./" + path : path;
  void* h = dlopen(open_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw Error(fmt::format("plugin {}: cannot load: {}", path, dlerror()));
  auto entry = reinterpret_cast<nc_plugin_entry_fn>(dlsym(h, NC_PLUGIN_ENTRY_SYMBOL));
  auto refuse = [&](const std::string& why) {
    dlclose(h);
    throw Error(fmt::format("plugin {}: {}", path, why));
  };
  if (!entry) refuse(fmt::format("does not export {} (see include/normcheck/plugin.h)", NC_PLUGIN_ENTRY_SYMBOL));
  const nc_plugin* table = entry();
  if (!table) refuse(fmt::format("{}() returned NULL", NC_PLUGIN_ENTRY_SYMBOL));
  if (table->abi_major != NC_ABI_MAJOR)
    refuse(fmt::format("built for plugin ABI {}.{}, this normcheck speaks {}.{}; rebuild it against this "
                       "normcheck's plugin.h", table->abi_major, table->abi_minor, NC_ABI_MAJOR, NC_ABI_MINOR));
  if (table->struct_size < sizeof(nc_plugin) || !table->run)
    refuse("its nc_plugin table is incomplete (struct_size too small or run is NULL)");
  return std::make_unique<PluginBackend>(h, table, path, timeout_seconds, isolate);
}

}  // namespace normcheck
