// Why a worker process: a plugin is arbitrary native code. In-process, a SIGSEGV, abort() or
// exit() would end normcheck and lose the report, and a hang would stall it. One worker process
// per plugin (worker.hpp) loads the library once and serves every call on buffers in a shared
// arena, laid out as
//   [CallBlock][guard][tensor 1][guard][guard][tensor 2][guard] …
// The parent copies every tensor in, lets the worker run the call with a deadline, then checks
// every guard zone (a write outside a tensor's extent is an OVERRUN naming it), compares every
// input with its own copy (a changed input is a FAIL), and copies the outputs back. A worker
// that crashed, hung or overran is ended and a fresh one serves the next call.
#include "plugin_backend.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <string_view>
#include <vector>

#include "normcheck/plugin.h"
#include "worker.hpp"

namespace normcheck {
namespace {

using plugin::Declarations;
using plugin::Worker;

/// Bytes of each guard zone: a whole page, so a write well past a tensor (e.g. 128 B past y)
/// still lands in that tensor's own zone rather than in its neighbour.
constexpr size_t kGuard = 4096;

/// The guard pattern: pseudo-random bytes, so no constant a plugin writes goes unnoticed.
const std::array<unsigned char, kGuard + 64>& guard_pattern() {
  static const auto pattern = [] {
    std::array<unsigned char, kGuard + 64> p{};
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (auto& b : p) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      b = static_cast<unsigned char>(s >> 24);
    }
    return p;
  }();
  return pattern;
}

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

/// The 13 tensors of a call: where each lives in RunArgs and in nc_run_args, its name, and the
/// input an in-place output may alias (-1: none).
struct Slot {
  TensorArg RunArgs::*arg;
  nc_tensor nc_run_args::*c;
  const char* name;
  int alias_of;
};
constexpr int kX = 0, kDy = 2;
constexpr Slot kSlots[] = {
    {&RunArgs::x, &nc_run_args::x, "x", -1},
    {&RunArgs::y, &nc_run_args::y, "y", kX},
    {&RunArgs::dy, &nc_run_args::dy, "dy", -1},
    {&RunArgs::dx, &nc_run_args::dx, "dx", kDy},
    {&RunArgs::gamma, &nc_run_args::gamma, "gamma", -1},
    {&RunArgs::beta, &nc_run_args::beta, "beta", -1},
    {&RunArgs::dgamma, &nc_run_args::dgamma, "dgamma", -1},
    {&RunArgs::dbeta, &nc_run_args::dbeta, "dbeta", -1},
    {&RunArgs::mean, &nc_run_args::mean, "mean", -1},
    {&RunArgs::variance, &nc_run_args::variance, "variance", -1},
    {&RunArgs::inv_std, &nc_run_args::inv_std, "inv_std", -1},
    {&RunArgs::running_mean, &nc_run_args::running_mean, "running_mean", -1},
    {&RunArgs::running_var, &nc_run_args::running_var, "running_var", -1},
};
constexpr int kCount = static_cast<int>(std::size(kSlots));

/// Whether the pass writes slot i (RunArgs documents the passes): forward_training writes y, the
/// saved statistics and the running statistics (in place); forward_inference y; the backward
/// passes dx, dgamma and dbeta. Everything else present is an input and must come back unchanged.
bool written(int i, Pass pass) {
  const std::string_view n = kSlots[i].name;
  switch (pass) {
    case Pass::forward_training:
      return n == "y" || n == "mean" || n == "variance" || n == "inv_std" || n == "running_mean" ||
             n == "running_var";
    case Pass::forward_inference: return n == "y";
    case Pass::backward_training:
    case Pass::backward_inference: return n == "dx" || n == "dgamma" || n == "dbeta";
  }
  return false;
}

/// Bytes a strided tensor spans: (largest offset + 1) · element size.
size_t extent_bytes(const TensorArg& t) {
  int64_t last = 0;
  for (int d = 0; d < t.rank; ++d) last += (t.dims[d] - 1) * t.strides[d];
  return static_cast<size_t>(last + 1) * static_cast<size_t>(dtype_size(t.dtype));
}

RunResult fail(std::string message, RunResult::Fault fault = RunResult::Fault::none) {
  RunResult r;
  r.ok = false;
  r.fault = fault;
  r.message = std::move(message);
  return r;
}

/// Maps the plugin's status to a RunResult.
RunResult from_status(int32_t status, uint32_t produced, const char* message) {
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

/// Where each tensor of one call lives in the arena. An output that aliases its input in place
/// (y over x, dx over dy) shares the input's place, so the plugin sees one buffer, as the
/// caller has.
struct ArenaLayout {
  const TensorArg* src[kCount] = {};
  bool shared[kCount] = {};
  size_t lo[kCount] = {}, offset[kCount] = {}, bytes[kCount] = {}, hi[kCount] = {};
  size_t total = plugin::kArenaHeader;

  explicit ArenaLayout(const RunArgs& a) {
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
      lo[i] = total;
      offset[i] = align64(total + kGuard);
      bytes[i] = extent_bytes(*src[i]);
      hi[i] = offset[i] + bytes[i] + kGuard;
      total = hi[i];
    }
  }
  bool own(int i) const { return src[i]->present() && !shared[i]; }
};

/// "y (past the end of its 60 bytes, up to 128 bytes past it)" for each tensor whose guard zones
/// changed; "" when all are intact.
std::string overruns(const ArenaLayout& L, const unsigned char* arena) {
  const auto& pat = guard_pattern();
  std::vector<std::string> hits;
  for (int i = 0; i < kCount; ++i) {
    if (!L.own(i)) continue;
    const unsigned char* lo = arena + L.lo[i];
    const size_t lo_len = L.offset[i] - L.lo[i];
    const unsigned char* hi = arena + L.offset[i] + L.bytes[i];
    size_t first_lo = lo_len, last_hi = 0;
    if (std::memcmp(lo, pat.data(), lo_len) != 0)  // memcmp first: the byte scan only on a hit
      for (size_t k = 0; k < lo_len && first_lo == lo_len; ++k)
        if (lo[k] != pat[k]) first_lo = k;
    if (std::memcmp(hi, pat.data(), kGuard) != 0)
      for (size_t k = 0; k < kGuard; ++k)
        if (hi[k] != pat[k]) last_hi = k + 1;
    if (first_lo < lo_len)
      hits.push_back(fmt::format("{} (before its start, from {} bytes before it)", kSlots[i].name, lo_len - first_lo));
    if (last_hi > 0)
      hits.push_back(fmt::format("{} (past the end of its {} bytes, up to {} bytes past it)", kSlots[i].name,
                                 L.bytes[i], last_hi));
  }
  std::string s;
  for (const auto& h : hits) s += (s.empty() ? "" : "; ") + h;
  return s;
}

/// The first input the pass must not write that differs from normcheck's copy; "" when none.
std::string modified_input(const ArenaLayout& L, const unsigned char* arena, Pass pass) {
  for (int i = 0; i < kCount; ++i) {
    if (!L.own(i) || written(i, pass)) continue;
    const int alias = i == kX ? 1 : i == kDy ? 3 : -1;  // in place, x is y's buffer (dy is dx's)
    if (alias >= 0 && L.shared[alias]) continue;
    const auto* got = arena + L.offset[i];
    const auto* want = static_cast<const unsigned char*>(L.src[i]->data);
    if (std::memcmp(got, want, L.bytes[i]) == 0) continue;
    size_t k = 0;
    while (got[k] == want[k]) ++k;
    return fmt::format("input modified: the plugin wrote to {}, an input of {} (first changed byte {} of {})",
                       kSlots[i].name, to_string(pass), k, L.bytes[i]);
  }
  return "";
}

class PluginBackend final : public Backend {
 public:
  /// Isolated: calls go to `worker`. In process: `handle` and `table` are the library loaded here.
  PluginBackend(std::unique_ptr<Worker> worker, void* handle, const nc_plugin* table, const Declarations& decl,
                std::string path, double timeout)
      : worker_(std::move(worker)), handle_(handle), p_(table), d_(decl), path_(std::move(path)), timeout_(timeout) {}
  ~PluginBackend() override {
    worker_.reset();
    if (handle_) dlclose(handle_);
  }

  std::string name() const override { return d_.name[0] ? d_.name : path_; }
  std::string version() const override {
    return fmt::format("{} (plugin {}, ABI {}.{})", d_.version[0] ? d_.version : "?", path_, d_.abi_major,
                       d_.abi_minor);
  }
  std::string description() const override { return d_.description; }
  Capabilities capabilities() const override;
  PrecisionProfile precision(Op op, DType dtype, Layout layout) const override;
  std::optional<std::string> unsupported_reason(const RunArgs& args, Layout layout) const override {
    if (auto why = Backend::unsupported_reason(args, layout)) return why;
    const bool low = args.x.dtype == DType::f16 || args.x.dtype == DType::bf16;
    if (low && is_backward(args.pass) && precision(args.op, args.x.dtype, layout).params_in_data_dtype)
      return "the plugin keeps gamma and the statistics in the data dtype, and normcheck has no backward budget "
             "for that yet (forward passes only)";
    if (d_.memory_kind == NC_MEMORY_CUDA && !worker_)
      return "the plugin takes CUDA device buffers, which only the worker stages (run without --in-process)";
    if (d_.memory_kind == NC_MEMORY_CUDA && d_.device_problem[0])
      return fmt::format("the plugin takes CUDA device buffers (device {}), and they cannot be staged here: {}",
                         d_.device_id, d_.device_problem);
    return std::nullopt;
  }
  RunResult run(const RunArgs& a) override { return worker_ ? run_isolated(a) : run_in_process(a); }

 private:
  static PrecisionProfile to_profile(int32_t acc, int32_t sum, int64_t block, double rsqrt, int32_t params);
  static nc_run_args to_c(const RunArgs& a);
  RunResult run_in_process(const RunArgs& a) const;
  RunResult run_isolated(const RunArgs& a);

  std::unique_ptr<Worker> worker_;
  void* handle_;
  const nc_plugin* p_;
  Declarations d_;
  std::string path_;
  double timeout_;
};

PrecisionProfile PluginBackend::to_profile(int32_t acc, int32_t sum, int64_t block, double rsqrt, int32_t params) {
  PrecisionProfile p;
  p.params_in_data_dtype = params == NC_PARAMS_DATA_DTYPE;
  if (sum == NC_SUM_PAIRWISE) p.summation = Summation::pairwise;
  if (sum == NC_SUM_COMPENSATED) p.summation = Summation::compensated;
  if (sum == NC_SUM_BLOCKED && block >= 1) {  // without a block count: recursive, the safe depth
    p.summation = Summation::blocked;
    p.block = block;
  }
  if (acc == NC_DTYPE_F16 || acc == NC_DTYPE_BF16) p.accumulation = static_cast<DType>(acc);
  if (rsqrt > 0) p.rsqrt_error = rsqrt;
  return p;
}

Capabilities PluginBackend::capabilities() const {
  Capabilities c;
  for (Op o : kAllOps)
    if (d_.ops & (1u << static_cast<int>(o))) c.ops.push_back(o);
  for (Pass s : kAllPasses)
    if (d_.passes & (1u << static_cast<int>(s))) c.passes.push_back(s);
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16})
    if (d_.dtypes & (1u << static_cast<int>(t))) c.dtypes.push_back(t);
  for (Layout l : {Layout::nchw, Layout::nhwc})
    if (d_.layouts & (1u << static_cast<int>(l))) c.layouts.push_back(l);
  c.notes = {worker_ ? fmt::format("calls run in a worker process of their own; per-call timeout {} s", timeout_)
                     : std::string("calls run in normcheck's own process (--in-process): no isolation")};
  static constexpr const char* kSum[] = {"not declared", "recursive", "pairwise", "blocked", "compensated"};
  const int sum = d_.summation >= 0 && d_.summation <= 4 ? d_.summation : 0;
  const int acc = d_.accumulation_dtype;
  c.precision = to_profile(acc, d_.summation, d_.block_count, d_.rsqrt_error, d_.params);
  if (d_.has_convention) c.convention = d_.convention;
  c.notes.push_back(fmt::format(
      "declares: running statistics {}, accumulation {}, summation {}{}{} (the error budget uses the "
      "summation and a 16-bit accumulation; blocked without a block count is budgeted as recursive)",
      d_.has_convention ? fmt::format("by the {} convention", d_.convention) : std::string("as normcheck asks"),
      acc >= 0 && acc <= 3 ? std::string(to_string(static_cast<DType>(acc))) : std::string("not declared"), kSum[sum],
      sum == NC_SUM_BLOCKED && d_.block_count > 0 ? fmt::format(" over {} accumulators", d_.block_count) : "",
      d_.rsqrt_error > 0 ? fmt::format(", inverse sqrt error {}·u", d_.rsqrt_error) : ""));
  if (d_.params == NC_PARAMS_DATA_DTYPE)
    c.notes.push_back("keeps gamma, beta and the saved statistics of f16/bf16 data in the data dtype (budgeted)");
  bool per_path = false;
  for (const auto& op : d_.has_profile)
    for (const auto& dt : op)
      for (int has : dt) per_path |= has != 0;
  if (per_path) c.notes.push_back("declares a precision profile per op, dtype and layout (ABI 1.1 precision query)");
  if (d_.memory_kind == NC_MEMORY_CUDA)
    c.notes.push_back(fmt::format("takes CUDA device buffers on device {}; normcheck stages host <-> device{}",
                                  d_.device_id, d_.device_problem[0] ? std::string(" (unavailable: ") + d_.device_problem + ")" : ""));
  return c;
}

PrecisionProfile PluginBackend::precision(Op op, DType dtype, Layout layout) const {
  const int o = static_cast<int>(op), t = static_cast<int>(dtype), l = static_cast<int>(layout);
  if (o < 0 || o >= plugin::kOps || t < 0 || t >= plugin::kDtypes || l < 0 || l >= plugin::kLayouts ||
      !d_.has_profile[o][t][l])
    return capabilities().precision;
  const nc_precision& p = d_.profile[o][t][l];
  return to_profile(p.accumulation_dtype, p.summation, p.block_count, p.rsqrt_error, p.params);
}

nc_run_args PluginBackend::to_c(const RunArgs& a) {
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
  c.in_place = (a.y.present() && a.y.data == a.x.data) || (a.dx.present() && a.dx.data == a.dy.data);
  c.memory_kind = NC_MEMORY_HOST;
  return c;
}

RunResult PluginBackend::run_in_process(const RunArgs& a) const {
  // The inputs' hashes before and after: a plugin writing an input is caught here too.
  const ArenaLayout L(a);
  std::vector<size_t> before(kCount);
  auto digest = [&](int i) {
    return std::hash<std::string_view>{}(std::string_view(static_cast<const char*>(L.src[i]->data), L.bytes[i]));
  };
  for (int i = 0; i < kCount; ++i)
    if (L.own(i) && !written(i, a.pass)) before[i] = digest(i);
  const nc_run_args c = to_c(a);
  uint32_t produced = 0;
  const char* message = nullptr;
  const nc_status st = p_->run(&c, &produced, &message);
  RunResult r = from_status(st, produced, message);
  for (int i = 0; i < kCount && r.ok; ++i) {
    if (!L.own(i) || written(i, a.pass) || (i == kX && L.shared[1]) || (i == kDy && L.shared[3])) continue;
    if (digest(i) != before[i])
      r = fail(fmt::format("input modified: the plugin wrote to {}, an input of {}", kSlots[i].name, to_string(a.pass)),
               RunResult::Fault::input_modified);
  }
  return r;
}

RunResult PluginBackend::run_isolated(const RunArgs& a) {
  const ArenaLayout L(a);
  std::string why;
  unsigned char* arena = worker_->arena(L.total, why);
  if (!arena) return fail(why);
  const auto& pat = guard_pattern();
  nc_run_args c = to_c(a);
  for (int i = 0; i < kCount; ++i) {
    if (!L.src[i]->present()) continue;
    if (!L.shared[i]) {
      std::memcpy(arena + L.lo[i], pat.data(), L.offset[i] - L.lo[i]);
      std::memcpy(arena + L.offset[i], L.src[i]->data, L.bytes[i]);
      std::memcpy(arena + L.offset[i] + L.bytes[i], pat.data(), kGuard);
    }
    (c.*kSlots[i].c).data = reinterpret_cast<void*>(static_cast<uintptr_t>(L.offset[i]));  // an offset
  }
  c.memory_kind = d_.memory_kind;
  c.device_id = d_.device_id;
  auto* blk = new (arena) plugin::CallBlock{};
  blk->args = c;
  blk->status = -1;

  const Worker::Outcome o = worker_->call(L.total, timeout_);
  if (o.kind == Worker::Kind::timeout)
    return fail(fmt::format("TIMEOUT: the call ran longer than {} s and was killed (a new worker serves the next call)",
                            timeout_),
                RunResult::Fault::timeout);
  if (o.kind == Worker::Kind::crash)
    return fail(fmt::format("CRASH: the plugin {} (a new worker serves the next call)", o.message),
                RunResult::Fault::crash);
  arena = worker_->arena(L.total, why);
  if (std::string hit = overruns(L, arena); !hit.empty()) {
    worker_->stop();  // its heap may be corrupt too
    return fail("OVERRUN: the plugin wrote outside tensor " + hit + " (a new worker serves the next call)",
                RunResult::Fault::overrun);
  }
  blk = reinterpret_cast<plugin::CallBlock*>(arena);
  blk->message[sizeof blk->message - 1] = 0;
  RunResult r = from_status(blk->status, blk->produced, blk->message);
  if (!r.ok) return r;
  if (std::string m = modified_input(L, arena, a.pass); !m.empty()) return fail(m, RunResult::Fault::input_modified);
  // Copy back what the pass writes; an in-place output goes back over its input.
  for (int i = 0; i < kCount; ++i)
    if (L.src[i]->present() && written(i, a.pass)) std::memcpy(L.src[i]->data, arena + L.offset[i], L.bytes[i]);
  return r;
}

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

/// Loads the library into this process (--in-process, bench), after a worker has proven that
/// loading it, its table and its init hook are safe. Throws Error.
std::unique_ptr<Backend> load_in_process(const std::string& path, const Declarations& d, double timeout) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw Error(fmt::format("plugin {}: cannot load: {}", path, dlerror()));
  auto entry = reinterpret_cast<nc_plugin_entry_fn>(dlsym(h, NC_PLUGIN_ENTRY_SYMBOL));
  const nc_plugin* table = entry ? entry() : nullptr;
  if (!table) {
    dlclose(h);
    throw Error(fmt::format("plugin {}: loaded in a worker but not in process", path));
  }
  if (d.has_init) {
    const char* message = nullptr;
    if (table->init(&message) != NC_STATUS_OK) {
      dlclose(h);
      throw Error(fmt::format("plugin {}: its init hook failed: {}", path, message ? message : "(no message)"));
    }
  }
  return std::make_unique<PluginBackend>(nullptr, h, table, d, path, timeout);
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
  if (isolate && !(timeout_seconds > 0)) throw Error("--timeout must be > 0 seconds");
  // An explicit relative path, so dlopen does not search the library path instead.
  const std::string open_path = path.find('/') == std::string::npos ? "./" + path : path;
  // Loading runs the library's constructors and its entry function: always first in a worker,
  // so a crash, exit() or hang there is a one-line error rather than normcheck's own end.
  const double load_timeout = timeout_seconds > 0 ? timeout_seconds : 60;
  auto worker = std::make_unique<Worker>(open_path, load_timeout);
  const Declarations d = worker->declarations();
  if (!isolate) {
    worker.reset();
    return load_in_process(open_path, d, timeout_seconds);
  }
  return std::make_unique<PluginBackend>(std::move(worker), nullptr, nullptr, d, path, timeout_seconds);
}

}  // namespace normcheck
