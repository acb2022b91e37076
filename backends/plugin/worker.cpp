// The persistent plugin worker (worker.hpp). Protocol, over one AF_UNIX socketpair:
//   worker → parent   Declarations (once, after loading; error[] set when refused)
//   parent → worker   Request {capacity, used}   (the call is in the arena's CallBlock)
//   worker → parent   one byte                   (status, produced, message are in the CallBlock)
// The arena is a memfd both map MAP_SHARED; the worker remaps it only when its capacity changes.
#include "worker.hpp"

#include <dlfcn.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "normcheck/error.hpp"
#include "normcheck/interrupt.hpp"

namespace normcheck::plugin {
namespace {

struct Request {
  uint64_t capacity;  ///< bytes of the memfd the worker should map
  uint64_t used;      ///< bytes of the call's layout (what a device plugin's staging copies)
};

constexpr nc_tensor nc_run_args::*kTensors[] = {
    &nc_run_args::x,      &nc_run_args::y,        &nc_run_args::dy,      &nc_run_args::dx,
    &nc_run_args::gamma,  &nc_run_args::beta,     &nc_run_args::dgamma,  &nc_run_args::dbeta,
    &nc_run_args::mean,   &nc_run_args::variance, &nc_run_args::inv_std, &nc_run_args::running_mean,
    &nc_run_args::running_var};

template <size_t N>
void copy_string(char (&dst)[N], const char* src) {
  std::snprintf(dst, N, "%s", src ? src : "");
}

bool send_all(int fd, const void* p, size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool recv_all(int fd, void* p, size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

/// The CUDA runtime, found at run time (the plugin links it; normcheck does not need to). Only
/// the worker of a plugin declaring NC_MEMORY_CUDA uses it.
struct Cuda {
  int (*get_device_count)(int*) = nullptr;
  int (*set_device)(int) = nullptr;
  int (*malloc_)(void**, size_t) = nullptr;
  int (*free_)(void*) = nullptr;
  int (*memcpy_)(void*, const void*, size_t, int) = nullptr;
  int (*synchronize)() = nullptr;
  const char* (*error_string)(int) = nullptr;
  unsigned char* device = nullptr;
  size_t device_bytes = 0;
  static constexpr int kHostToDevice = 1, kDeviceToHost = 2;

  std::string why(const char* what, int err) const {
    return fmt::format("{} failed: CUDA error {} ({})", what, err, error_string ? error_string(err) : "?");
  }
  /// Loads the runtime and selects `device_id`; returns "" or why device buffers cannot be staged.
  std::string open(int device_id) {
    void* h = nullptr;
    for (const char* lib : {"libcudart.so.13", "libcudart.so.12", "libcudart.so"})
      if ((h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD)) != nullptr) break;
    for (const char* lib : {"libcudart.so.13", "libcudart.so.12", "libcudart.so"})
      if (!h && (h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL)) != nullptr) break;
    if (!h) return "the CUDA runtime (libcudart.so) cannot be loaded";
    auto sym = [h](auto& fn, const char* name) { fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name)); };
    sym(get_device_count, "cudaGetDeviceCount");
    sym(set_device, "cudaSetDevice");
    sym(malloc_, "cudaMalloc");
    sym(free_, "cudaFree");
    sym(memcpy_, "cudaMemcpy");
    sym(synchronize, "cudaDeviceSynchronize");
    sym(error_string, "cudaGetErrorString");
    if (!get_device_count || !set_device || !malloc_ || !free_ || !memcpy_ || !synchronize)
      return "the CUDA runtime lacks cudaMalloc/cudaMemcpy/cudaSetDevice";
    int count = 0;
    if (int e = get_device_count(&count)) return why("cudaGetDeviceCount", e) + ": no usable CUDA device";
    if (device_id < 0 || device_id >= count)
      return fmt::format("the plugin asks for CUDA device {}, and {} device{} visible", device_id, count,
                         count == 1 ? " is" : "s are");
    if (int e = set_device(device_id)) return why("cudaSetDevice", e);
    return "";
  }
  /// Copies the arena's data region [begin, used) to the device; returns "" or the error.
  std::string stage_in(const unsigned char* arena, size_t begin, size_t used) {
    if (device_bytes < used) {
      if (device) free_(device);
      device = nullptr;
      device_bytes = 0;
      void* p = nullptr;
      if (int e = malloc_(&p, used)) return why("cudaMalloc", e);
      device = static_cast<unsigned char*>(p);
      device_bytes = used;
    }
    if (int e = memcpy_(device + begin, arena + begin, used - begin, kHostToDevice)) return why("cudaMemcpy", e);
    return "";
  }
  std::string stage_out(unsigned char* arena, size_t begin, size_t used) {
    if (int e = synchronize()) return why("cudaDeviceSynchronize", e);
    if (int e = memcpy_(arena + begin, device + begin, used - begin, kDeviceToHost)) return why("cudaMemcpy", e);
    return "";
  }
};

constexpr size_t kHeader = kArenaHeader;

/// One call in the worker: fixes the offsets up to pointers, runs, writes the answer.
void serve_one(const nc_plugin* t, unsigned char* base, size_t used, Cuda* cuda) {
  auto* blk = reinterpret_cast<CallBlock*>(base);
  nc_run_args a = blk->args;
  unsigned char* data = base;
  std::string staging;
  if (cuda) {
    staging = cuda->stage_in(base, kHeader, used);
    data = cuda->device;
  }
  if (!staging.empty()) {
    blk->produced = 0;
    copy_string(blk->message, ("staging the buffers to the device: " + staging).c_str());
    blk->status = NC_STATUS_ERROR;
    return;
  }
  for (auto m : kTensors)
    if ((a.*m).data) (a.*m).data = data + reinterpret_cast<uintptr_t>((a.*m).data);
  uint32_t produced = 0;
  const char* message = nullptr;
  const nc_status st = t->run(&a, &produced, &message);
  if (cuda) staging = cuda->stage_out(base, kHeader, used);
  blk->produced = produced;
  copy_string(blk->message, message);
  blk->status = static_cast<int32_t>(st);
  if (!staging.empty()) {
    copy_string(blk->message, ("staging the buffers back from the device: " + staging).c_str());
    blk->status = NC_STATUS_ERROR;
  }
}

/// The worker process: load, report, serve until the socket closes.
[[noreturn]] void worker_main(const std::string& path, int sock, int memfd) {
  static Declarations d{};
  const nc_plugin* t = nullptr;
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    copy_string(d.error, fmt::format("cannot load: {}", dlerror()).c_str());
  } else if (auto entry = reinterpret_cast<nc_plugin_entry_fn>(dlsym(h, NC_PLUGIN_ENTRY_SYMBOL)); !entry) {
    copy_string(d.error, fmt::format("does not export {} (see include/normcheck/plugin.h)", NC_PLUGIN_ENTRY_SYMBOL).c_str());
  } else if ((t = entry()) == nullptr) {
    copy_string(d.error, fmt::format("{}() returned NULL", NC_PLUGIN_ENTRY_SYMBOL).c_str());
  } else {
    read_table(t, path, &d);
  }
  if (!d.error[0] && d.has_init) {
    const char* message = nullptr;
    if (t->init(&message) != NC_STATUS_OK)
      copy_string(d.error, fmt::format("its init hook failed: {}", message ? message : "(no message)").c_str());
  }
  static Cuda cuda;
  bool staged = false;
  if (!d.error[0] && d.memory_kind == NC_MEMORY_CUDA) {
    copy_string(d.device_problem, cuda.open(d.device_id).c_str());
    staged = !d.device_problem[0];
  }
  if (!send_all(sock, &d, sizeof d) || d.error[0]) _exit(0);
  unsigned char* base = nullptr;
  size_t mapped = 0;
  for (;;) {
    Request rq{};
    if (!recv_all(sock, &rq, sizeof rq)) _exit(0);
    if (rq.capacity != mapped) {
      if (base) munmap(base, mapped);
      void* m = mmap(nullptr, rq.capacity, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
      if (m == MAP_FAILED) _exit(71);  // reported by the parent as "exited with status 71"
      base = static_cast<unsigned char*>(m);
      mapped = rq.capacity;
    }
    serve_one(t, base, rq.used, staged ? &cuda : nullptr);
    const char done = 1;
    if (!send_all(sock, &done, 1)) _exit(0);
  }
}

/// Closes every descriptor except 0, 1, 2 and the two the worker uses (a grandchild must not
/// hold normcheck's report files or pipes open).
void close_other_fds(int a, int b) {
  if (a > b) std::swap(a, b);
  auto close_between = [](int lo, int hi) {  // [lo, hi]
    if (lo <= hi) close_range(static_cast<unsigned>(lo), static_cast<unsigned>(hi), 0);
  };
  close_between(3, a - 1);
  close_between(a + 1, b - 1);
  close_range(static_cast<unsigned>(b + 1), ~0u, 0);
}

double seconds_until(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(t - std::chrono::steady_clock::now()).count();
}

}  // namespace

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return fmt::format("SIG{} ({})", abbrev ? abbrev : "?", strsignal(sig));
}

void read_table(const nc_plugin* t, const std::string& path, Declarations* d) {
  (void)path;
  if (t->abi_major != NC_ABI_MAJOR) {
    copy_string(d->error, fmt::format("built for plugin ABI {}.{}, this normcheck speaks {}.{}; rebuild it against "
                                      "this normcheck's plugin.h",
                                      t->abi_major, t->abi_minor, NC_ABI_MAJOR, NC_ABI_MINOR).c_str());
    return;
  }
  if (t->struct_size < kPluginSize10 || !t->run) {
    copy_string(d->error, "its nc_plugin table is incomplete (struct_size too small or run is NULL)");
    return;
  }
  d->struct_size = t->struct_size;
  d->abi_major = t->abi_major;
  d->abi_minor = t->abi_minor;
  d->ops = t->ops, d->passes = t->passes, d->dtypes = t->dtypes, d->layouts = t->layouts;
  d->accumulation_dtype = t->accumulation_dtype;
  d->summation = t->summation;
  copy_string(d->name, t->name);
  copy_string(d->version, t->version);
  copy_string(d->description, t->description);
  d->has_convention = t->convention != nullptr;
  copy_string(d->convention, t->convention);
  // ABI 1.1: read only what the plugin's struct_size covers.
  auto covers = [t](size_t end) { return t->struct_size >= end; };
  if (!covers(offsetof(nc_plugin, precision) + sizeof t->precision)) return;
  d->block_count = t->block_count;
  d->rsqrt_error = t->rsqrt_error;
  d->memory_kind = t->memory_kind;
  d->device_id = t->device_id;
  d->params = t->params;
  d->has_init = t->init != nullptr;
  if (!t->precision) return;
  for (int op = 0; op < kOps; ++op)
    for (int dt = 0; dt < kDtypes; ++dt)
      for (int l = 0; l < kLayouts; ++l) {
        if (!(t->ops >> op & 1) || !(t->dtypes >> dt & 1) || !(t->layouts >> l & 1)) continue;
        nc_precision p{t->accumulation_dtype, t->summation, t->block_count, t->rsqrt_error, t->params, 0};
        if (t->precision(op, dt, l, &p)) {
          d->has_profile[op][dt][l] = 1;
          d->profile[op][dt][l] = p;
        }
      }
}

Worker::Worker(std::string path, double load_timeout) : path_(std::move(path)), load_timeout_(load_timeout) {
  memfd_ = memfd_create("normcheck-plugin-arena", MFD_CLOEXEC);
  if (memfd_ < 0) throw Error(fmt::format("plugin {}: memfd_create failed: {}", path_, strerror(errno)));
  try {
    spawn();
  } catch (...) {
    close(memfd_);
    throw;
  }
}

Worker::~Worker() {
  stop();
  if (map_) munmap(map_, map_bytes_);
  if (memfd_ >= 0) close(memfd_);
}

void Worker::spawn() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw Error(fmt::format("plugin {}: socketpair failed: {}", path_, strerror(errno)));
  std::fflush(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    throw Error(fmt::format("plugin {}: fork failed: {}", path_, strerror(errno)));
  }
  if (pid == 0) {
    setpgid(0, 0);  // its own group: a terminal's Ctrl-C reaches normcheck only; ending it ends the group
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    // A fault in the plugin is reported by its signal: drop any handler normcheck runs under (a
    // sanitizer's, a debugger's, the CLI's interrupt handler) so the default action ends the worker.
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS, SIGINT, SIGTERM, SIGHUP, SIGPIPE})
      signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    close(sv[0]);
    close_other_fds(sv[1], memfd_);
    worker_main(path_, sv[1], memfd_);
  }
  setpgid(pid, pid);  // also here, so the group exists before the parent may signal it
  close(sv[1]);
  sock_ = sv[0];
  pid_ = pid;

  Declarations d{};
  const Wait w = wait_readable(load_timeout_);
  const bool got = w == Wait::readable && recv_all(sock_, &d, sizeof d);
  if (w == Wait::timeout) {
    stop();
    throw Error(fmt::format("plugin {}: loading did not finish within {} s (a constructor, {}() or init hangs)", path_,
                            load_timeout_, NC_PLUGIN_ENTRY_SYMBOL));
  }
  if (!got) {
    const std::string how = reap();
    throw Error(fmt::format("plugin {}: the library {} while loading (in a constructor, {}() or init)", path_, how,
                            NC_PLUGIN_ENTRY_SYMBOL));
  }
  if (d.error[0]) {
    stop();
    throw Error(fmt::format("plugin {}: {}", path_, d.error));
  }
  if (!started_once_) decl_ = d;  // a restarted worker keeps the first declarations
  started_once_ = true;
}

Worker::Wait Worker::wait_readable(double seconds) {
  seconds = std::min(seconds, 1e7);  // a --timeout of 1e300 s still fits a steady_clock duration
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  for (;;) {
    if (interrupted()) {
      stop();
      throw Interrupted{};
    }
    const double left = seconds_until(deadline);
    if (left <= 0) return Wait::timeout;
    pollfd p{sock_, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(std::clamp(left * 1000, 1.0, 50.0)));
    if (r < 0 && errno != EINTR) return Wait::dead;
    if (r > 0) return (p.revents & POLLIN) ? Wait::readable : Wait::dead;
    // The worker may have died with its socket still held open by a process it started.
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid_)
      return Wait::dead;
  }
}

std::string Worker::reap() {
  if (pid_ <= 0) return "ended";
  kill(-pid_, SIGKILL);  // the group: the worker (not reaped yet, so its id cannot be reused) and its children
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  close(sock_);
  sock_ = -1;
  pid_ = -1;
  if (WIFSIGNALED(status)) return "died of " + signal_name(WTERMSIG(status));
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  return "ended";
}

void Worker::stop() {
  if (pid_ > 0) reap();
}

unsigned char* Worker::arena(size_t bytes, std::string& why) {
  if (bytes <= map_bytes_) return map_;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t cap = std::max({bytes, 2 * map_bytes_, size_t{1} << 20});
  cap = (cap + page - 1) / page * page;
  if (ftruncate(memfd_, static_cast<off_t>(cap)) != 0) {
    why = fmt::format("cannot grow the shared arena to {} bytes: {}", cap, strerror(errno));
    return nullptr;
  }
  void* m = mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  if (m == MAP_FAILED) {
    why = fmt::format("cannot map the shared arena of {} bytes: {}", cap, strerror(errno));
    return nullptr;
  }
  if (map_) munmap(map_, map_bytes_);
  map_ = static_cast<unsigned char*>(m);
  map_bytes_ = cap;
  return map_;
}

Worker::Outcome Worker::call(size_t bytes, double timeout) {
  if (pid_ <= 0) {
    try {
      spawn();
      ++restarts_;
    } catch (const Error& e) {
      return {Kind::crash, fmt::format("could not be restarted: {}", e.what())};
    }
  }
  const Request rq{map_bytes_, bytes};
  Wait w = send_all(sock_, &rq, sizeof rq) ? wait_readable(timeout) : Wait::dead;
  if (w == Wait::readable) {
    char done = 0;
    if (recv(sock_, &done, 1, 0) == 1) return {Kind::ok, ""};
    w = Wait::dead;
  }
  if (w == Wait::timeout) {
    stop();
    return {Kind::timeout, ""};
  }
  // The socket closed: give the worker a moment to finish dying, so its own status is reported.
  for (int i = 0; i < 200; ++i) {
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid_) break;
    usleep(5000);
  }
  return {Kind::crash, reap()};
}

}  // namespace normcheck::plugin
