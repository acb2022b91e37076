#include "cudnn.hpp"

#include <cuda_runtime.h>
#include <cudnn.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>


namespace normcheck {
namespace {

using cudnn_plan::BnMode;
using cudnn_plan::Desc;
using cudnn_plan::NormMode;
using cudnn_plan::Variant;

/// A cuDNN call that failed; status keeps the category (CUDNN_STATUS_NOT_SUPPORTED* is UNSUPPORTED).
struct CudnnError : std::runtime_error {
  CudnnError(cudnnStatus_t s, const std::string& what) : std::runtime_error(what), status(s) {}
  cudnnStatus_t status;
};

void check(cudnnStatus_t s, const char* what) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  char last[512] = {};
  cudnnGetLastErrorString(last, sizeof last);
  throw CudnnError(s, fmt::format("{}: {} (status {}){}{}", what, cudnnGetErrorString(s), static_cast<int>(s),
                                  last[0] ? ": " : "", last));
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(fmt::format("{}: {} ({})", what, cudaGetErrorString(e), cudaGetErrorName(e)));
}

bool is_not_supported(cudnnStatus_t s) { return CUDNN_STATUS_CATEGORY(s) == CUDNN_STATUS_NOT_SUPPORTED; }

cudnnDataType_t data_type(DType t) {
  switch (t) {
    case DType::f16: return CUDNN_DATA_HALF;
    case DType::bf16: return CUDNN_DATA_BFLOAT16;
    case DType::f64: return CUDNN_DATA_DOUBLE;
    default: return CUDNN_DATA_FLOAT;
  }
}

/// Bytes a strided tensor spans: from element 0 to its last element.
size_t extent_bytes(const TensorArg& t) {
  int64_t last = 0;
  for (int d = 0; d < t.rank; ++d) last += (t.dims[d] - 1) * t.strides[d];
  return static_cast<size_t>(last + 1) * static_cast<size_t>(dtype_size(t.dtype));
}

/// One device allocation, freed with the object.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) check_cuda(cudaMalloc(&p_, bytes), "cudaMalloc");
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(o.bytes_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  void* get() const { return p_; }
  void upload(const void* host) {
    if (p_) check_cuda(cudaMemcpy(p_, host, bytes_, cudaMemcpyHostToDevice), "cudaMemcpy host → device");
  }
  void download(void* host) const {
    if (p_) check_cuda(cudaMemcpy(host, p_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy device → host");
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

/// A device copy of a present tensor (its strided extent), or an empty buffer.
DeviceBuffer staged(const TensorArg& t, bool copy_in) {
  if (!t.present()) return {};
  DeviceBuffer b(extent_bytes(t));
  if (copy_in) b.upload(t.data);
  return b;
}

/// gamma or beta on the device: the caller's, or `fill` (1 or 0) per element when absent.
DeviceBuffer staged_param(const TensorArg& t, int64_t n, DType sdt, double fill) {
  if (t.present()) return staged(t, true);
  const size_t es = static_cast<size_t>(dtype_size(sdt));
  std::vector<unsigned char> host(static_cast<size_t>(n) * es);
  for (int64_t i = 0; i < n; ++i) {
    if (sdt == DType::f64) std::memcpy(&host[i * es], &fill, es);
    else {
      const float f = static_cast<float>(fill);
      std::memcpy(&host[i * es], &f, es);
    }
  }
  DeviceBuffer b(host.size());
  b.upload(host.data());
  return b;
}

/// A legacy cudnnTensorDescriptor_t.
class TensorDescriptor {
 public:
  TensorDescriptor() { check(cudnnCreateTensorDescriptor(&d_), "cudnnCreateTensorDescriptor"); }
  TensorDescriptor(const Desc& d, cudnnDataType_t t) : TensorDescriptor() {
    int dims[kMaxRank], strides[kMaxRank];
    for (int i = 0; i < d.rank; ++i) {
      dims[i] = static_cast<int>(d.dims[i]);
      strides[i] = static_cast<int>(d.strides[i]);
    }
    check(cudnnSetTensorNdDescriptor(d_, t, d.rank, dims, strides), "cudnnSetTensorNdDescriptor");
  }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  ~TensorDescriptor() { cudnnDestroyTensorDescriptor(d_); }
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

/// A graph-API (backend) descriptor.
class BackendDesc {
 public:
  explicit BackendDesc(cudnnBackendDescriptorType_t t) { check(cudnnBackendCreateDescriptor(t, &d_), "cudnnBackendCreateDescriptor"); }
  BackendDesc(BackendDesc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;
  ~BackendDesc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  cudnnBackendDescriptor_t get() const { return d_; }
  void set(cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, int64_t n, const void* v, const char* what) {
    check(cudnnBackendSetAttribute(d_, a, t, n, v), what);
  }
  void set_desc(cudnnBackendAttributeName_t a, const BackendDesc& v, const char* what) {
    cudnnBackendDescriptor_t raw = v.get();
    set(a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw, what);
  }
  void finalize(const char* what) { check(cudnnBackendFinalize(d_), what); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

/// Unique ids of the graph tensors (variant pack keys).
enum Uid : int64_t {
  kX = 1, kY, kScale, kBias, kMean, kInvVar, kEps, kDy, kDx, kDscale, kDbias,
  kFactor, kRunningMeanIn, kRunningVarIn, kRunningMeanOut, kRunningVarOut
};

/// A scalar passed by value (epsilon, the exponential-average factor) in the stats dtype.
class ByValue {
 public:
  ByValue(double v, DType t) : f_(static_cast<float>(v)), d_(v), wide_(t == DType::f64) {}
  void* get() { return wide_ ? static_cast<void*>(&d_) : static_cast<void*>(&f_); }

 private:
  float f_;
  double d_;
  bool wide_;
};

BackendDesc graph_tensor(Uid uid, const Desc& d, cudnnDataType_t t, bool by_value = false) {
  BackendDesc td(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t id = uid, align = 16;
  td.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &t, "tensor data type");
  td.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, d.rank, d.dims, "tensor dims");
  td.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, d.rank, d.strides, "tensor strides");
  td.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id, "tensor uid");
  td.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
  if (by_value) {
    const bool yes = true;
    td.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor by value");
  }
  td.finalize("cudnnBackendFinalize(tensor)");
  return td;
}

cudnnBackendNormMode_t norm_mode(NormMode m) {
  switch (m) {
    case NormMode::layer_norm: return CUDNN_LAYER_NORM;
    case NormMode::instance_norm: return CUDNN_INSTANCE_NORM;
    case NormMode::batch_norm: return CUDNN_BATCH_NORM;
    case NormMode::group_norm: return CUDNN_GROUP_NORM;
    case NormMode::rms_norm: return CUDNN_RMS_NORM;
  }
  return CUDNN_LAYER_NORM;
}

cudnnBatchNormMode_t bn_mode(BnMode m) {
  switch (m) {
    case BnMode::per_activation: return CUDNN_BATCHNORM_PER_ACTIVATION;
    case BnMode::spatial: return CUDNN_BATCHNORM_SPATIAL;
    case BnMode::spatial_persistent: return CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
  }
  return CUDNN_BATCHNORM_SPATIAL;
}

/// CUDA events around the library's launches on the default stream.
class KernelTimer {
 public:
  KernelTimer() {
    check_cuda(cudaEventCreate(&start_), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  KernelTimer(const KernelTimer&) = delete;
  KernelTimer& operator=(const KernelTimer&) = delete;
  ~KernelTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  void start() { check_cuda(cudaEventRecord(start_, nullptr), "cudaEventRecord"); }
  /// Seconds since start(), after the launches finished.
  double stop() {
    check_cuda(cudaEventRecord(stop_, nullptr), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return ms * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

/// What the machine offers: the device, or why there is none.
struct DeviceInfo {
  bool usable = false;
  std::string why;          ///< when !usable
  std::string description;  ///< name, compute capability, driver
};

DeviceInfo probe_device() {
  DeviceInfo d;
  int runtime = 0, driver = 0, count = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);  // 0 when no driver is installed
  const std::string drv = driver ? fmt::format("driver CUDA {}.{}", driver / 1000, driver % 1000 / 10) : "no CUDA driver";
  d.description = fmt::format("CUDA runtime {}.{}, {}", runtime / 1000, runtime % 1000 / 10, drv);
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    d.why = fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
    return d;
  }
  if (count == 0) {
    d.why = "cudaGetDeviceCount found 0 devices";
    return d;
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess || cudaSetDevice(0) != cudaSuccess) {
    d.why = "device 0 cannot be selected";
    return d;
  }
  d.usable = true;
  d.description += fmt::format(", device 0 {} (compute capability {}.{}, {} SMs, {:.1f} GiB)", p.name, p.major,
                               p.minor, p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1 << 30));
  return d;
}

class CudnnBackend final : public Backend {
 public:
  explicit CudnnBackend(Variant v) : variant_(v), dev_(probe_device()) {
    if (!dev_.usable) return;
    const cudnnStatus_t s = cudnnCreate(&handle_);
    if (s != CUDNN_STATUS_SUCCESS) {
      dev_.usable = false;
      dev_.why = fmt::format("cudnnCreate: {} (status {})", cudnnGetErrorString(s), static_cast<int>(s));
      handle_ = nullptr;
    }
  }
  ~CudnnBackend() override {
    if (handle_) cudnnDestroy(handle_);
  }

  std::string name() const override { return std::string(cudnn_plan::backend_name(variant_)); }

  std::string version() const override {
    const size_t v = cudnnGetVersion();
    std::string s = fmt::format("cuDNN {}.{}.{} (built against {}.{}.{}), {}", v / 10000, v % 10000 / 100, v % 100,
                                CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL, dev_.description);
    if (!dev_.usable) s += "; cannot run: " + cudnn_plan::no_device_reason(dev_.why);
    return s;
  }

  std::string description() const override {
    switch (variant_) {
      case Variant::persistent: return "cuDNN batch_norm with CUDNN_BATCHNORM_SPATIAL_PERSISTENT (GPU, staged buffers)";
      case Variant::graph: return "cuDNN batch_norm through the graph API's CUDNN_BATCH_NORM (GPU, staged buffers)";
      default: return "cuDNN legacy batch-norm API and graph-API layer/RMS/instance norm (GPU, staged buffers)";
    }
  }

  Capabilities capabilities() const override {
    Capabilities c = cudnn_plan::capabilities(variant_);
    if (!dev_.usable) c.notes.insert(c.notes.begin(), "every case UNSUPPORTED here: " + cudnn_plan::no_device_reason(dev_.why));
    return c;
  }

  std::optional<std::string> unsupported_reason(const RunArgs& a, Layout layout) const override {
    if (!dev_.usable) return cudnn_plan::no_device_reason(dev_.why);
    if (auto why = cudnn_plan::unsupported_reason(a, layout, variant_)) return why;
    return Backend::unsupported_reason(a, layout);
  }

  std::optional<double> last_kernel_seconds() const override { return last_kernel_seconds_; }

  /// Best of 5 device-to-device copies of 512 MiB (cudaMemcpy), counted as read + write.
  std::optional<double> device_bandwidth() override {
    if (!dev_.usable) return std::nullopt;
    try {
      const size_t bytes = size_t{512} << 20;
      DeviceBuffer src(bytes), dst(bytes);
      check_cuda(cudaMemset(src.get(), 1, bytes), "cudaMemset");
      KernelTimer timer;
      double best = 0;
      for (int trial = 0; trial < 5; ++trial) {
        timer.start();
        check_cuda(cudaMemcpy(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy device → device");
        best = std::max(best, 2.0 * static_cast<double>(bytes) / timer.stop());
      }
      return best;
    } catch (const std::exception& e) {
      fmt::print(stderr, "normcheck cudnn: device bandwidth not measured ({}); host STREAM is the roofline\n", e.what());
      return std::nullopt;
    }
  }

  RunResult run(const RunArgs& a) override {
    RunResult r;
    last_kernel_seconds_.reset();
    if (!dev_.usable) {
      r.ok = false;
      r.unsupported = true;
      r.message = cudnn_plan::no_device_reason(dev_.why);
      return r;
    }
    try {
      r.produced = a.op == Op::batch_norm && variant_ != Variant::graph ? run_batch_norm(a) : run_graph(a);
    } catch (const CudnnError& e) {
      r.ok = false;
      r.unsupported = is_not_supported(e.status);
      r.message = e.what();
    } catch (const std::exception& e) {
      r.ok = false;
      r.message = e.what();
    }
    return r;
  }

 private:
  /// The descriptor cuDNN derives for the parameters must be the one normcheck planned.
  static void check_derived(const TensorDescriptor& x, const cudnn_plan::BnPlan& p) {
    TensorDescriptor derived;
    check(cudnnDeriveBNTensorDescriptor(derived.get(), x.get(), bn_mode(p.mode)), "cudnnDeriveBNTensorDescriptor");
    cudnnDataType_t t;
    int n = 0, dims[8], strides[8];
    check(cudnnGetTensorNdDescriptor(derived.get(), 8, &t, &n, dims, strides), "cudnnGetTensorNdDescriptor");
    for (int i = 0; i < n && i < p.param.rank; ++i)
      if (dims[i] != p.param.dims[i])
        throw std::runtime_error(fmt::format("cudnnDeriveBNTensorDescriptor gives dim {} = {}, normcheck planned {}",
                                             i, dims[i], p.param.dims[i]));
  }

  /// What every legacy batch-norm call shares: the plan, x and the parameter descriptors, the
  /// blend factors (float, or double for f64 data, cudnn_ops.h), x and gamma on the device.
  struct BnCall {
    cudnn_plan::BnPlan plan;
    DType sdt;
    cudnnDataType_t dt;
    TensorDescriptor xd, pd;
    double one_d = 1, zero_d = 0;
    float one_f = 1, zero_f = 0;
    DeviceBuffer x, gamma;
    cudnnBatchNormMode_t mode;
    BnCall(const RunArgs& a, Variant v)
        : plan(cudnn_plan::plan_batch_norm(a, v)), sdt(stats_dtype(a.x.dtype)), dt(data_type(a.x.dtype)),
          xd(plan.x, dt), pd(plan.param, data_type(sdt)), x(staged(a.x, true)),
          gamma(staged_param(a.gamma, a.dims[1], sdt, 1)), mode(bn_mode(plan.mode)) {
      check_derived(xd, plan);
    }
    const void* one() const { return sdt == DType::f64 ? static_cast<const void*>(&one_d) : &one_f; }
    const void* zero() const { return sdt == DType::f64 ? static_cast<const void*>(&zero_d) : &zero_f; }
    size_t param_bytes(const RunArgs& a) const { return static_cast<size_t>(a.dims[1]) * dtype_size(sdt); }
  };

  uint32_t run_batch_norm(const RunArgs& a) {
    BnCall call(a, variant_);
    return a.pass == Pass::backward_training ? bn_backward(a, call) : bn_forward(a, call);
  }

  uint32_t bn_backward(const RunArgs& a, BnCall& k) {
    const TensorDescriptor dyd(cudnn_plan::desc_of(a.dy), k.dt), dxd(cudnn_plan::desc_of(a.dx), k.dt);
    DeviceBuffer dy = staged(a.dy, true), dx = staged(a.dx, false), mean = staged(a.mean, true),
                 inv = staged(a.inv_std, true), dg(k.param_bytes(a)), db(k.param_bytes(a));
    KernelTimer timer;
    timer.start();
    check(cudnnBatchNormalizationBackward(handle_, k.mode, k.one(), k.zero(), k.one(), k.zero(), k.xd.get(), k.x.get(),
                                          dyd.get(), dy.get(), dxd.get(), dx.get(), k.pd.get(), k.gamma.get(), dg.get(),
                                          db.get(), a.eps, mean.get(), inv.get()),
          "cudnnBatchNormalizationBackward");
    last_kernel_seconds_ = timer.stop();
    dx.download(a.dx.data);
    if (!a.affine) return kOutDx;
    dg.download(a.dgamma.data);
    db.download(a.dbeta.data);
    return kOutDx | kOutDgamma | kOutDbeta;
  }

  uint32_t bn_forward(const RunArgs& a, BnCall& k) {
    const TensorDescriptor yd(cudnn_plan::desc_of(a.y), k.dt);
    DeviceBuffer beta = staged_param(a.beta, a.dims[1], k.sdt, 0), y = staged(a.y, false);
    DeviceBuffer rm = staged(a.running_mean, true), rv = staged(a.running_var, true);
    KernelTimer timer;
    if (a.pass == Pass::forward_inference) {
      timer.start();
      check(cudnnBatchNormalizationForwardInference(handle_, k.mode, k.one(), k.zero(), k.xd.get(), k.x.get(), yd.get(),
                                                    y.get(), k.pd.get(), k.gamma.get(), beta.get(), rm.get(), rv.get(),
                                                    a.eps),
            "cudnnBatchNormalizationForwardInference");
      last_kernel_seconds_ = timer.stop();
      y.download(a.y.data);
      return kOutY;
    }
    DeviceBuffer mean = staged(a.mean, false), inv = staged(a.inv_std, false);
    timer.start();
    check(cudnnBatchNormalizationForwardTraining(handle_, k.mode, k.one(), k.zero(), k.xd.get(), k.x.get(), yd.get(),
                                                 y.get(), k.pd.get(), k.gamma.get(), beta.get(),
                                                 k.plan.exponential_average_factor, rm.get(), rv.get(), a.eps,
                                                 mean.get(), inv.get()),
          "cudnnBatchNormalizationForwardTraining");
    last_kernel_seconds_ = timer.stop();
    y.download(a.y.data);
    uint32_t produced = kOutY;
    if (a.mean.present()) {
      mean.download(a.mean.data);
      produced |= kOutMean;
    }
    if (a.inv_std.present()) {
      inv.download(a.inv_std.data);
      produced |= kOutInvStd;
    }
    if (a.running_mean.present() && a.running_var.present()) {
      rm.download(a.running_mean.data);
      rv.download(a.running_var.data);
      produced |= kOutRunningMean | kOutRunningVar;
    }
    return produced;
  }

  /// The data view of another data tensor (y, dy, dx) of the same case.
  static Desc view_of(const RunArgs& a, const TensorArg& t) {
    RunArgs b = a;
    b.x = t;
    return cudnn_plan::plan_graph(b).x;
  }

  /// The execution plan of a one-operation graph: the first engine config of heuristic mode A (then
  /// FALLBACK) whose plan finalizes. Prints the choice once per distinct plan (provenance).
  BackendDesc build_plan(const BackendDesc& op, const std::string& key) {
    BackendDesc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    cudnnBackendDescriptor_t raw_op = op.get();
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw_op, "operation graph ops");
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_, "operation graph handle");
    graph.finalize("cudnnBackendFinalize(operation graph)");
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      BackendDesc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph");
      heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
      heur.finalize("cudnnBackendFinalize(heuristics)");
      int64_t count = 0;
      check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                     nullptr),
            "heuristics result count");
      std::vector<BackendDesc> cfgs;
      std::vector<cudnnBackendDescriptor_t> raw;
      for (int64_t i = 0; i < count; ++i) {
        cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        raw.push_back(cfgs.back().get());
      }
      int64_t got = 0;
      if (count > 0)
        check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                       &got, raw.data()),
              "heuristics results");
      for (int64_t i = 0; i < got; ++i) {
        BackendDesc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_, "plan handle");
        plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[i], "plan engine config");
        last = cudnnBackendFinalize(plan.get());
        if (last != CUDNN_STATUS_SUCCESS) continue;
        if (printed_.insert(key).second) report_engine(key, cfgs[i], mode, i, got);
        return plan;
      }
    }
    check(last == CUDNN_STATUS_SUCCESS ? CUDNN_STATUS_NOT_SUPPORTED : last,
          "no engine config of CUDNN_HEUR_MODE_A or FALLBACK finalizes an execution plan");
    throw std::logic_error("unreachable");
  }

  static void report_engine(const std::string& key, const BackendDesc& cfg, cudnnBackendHeurMode_t mode, int64_t i,
                            int64_t n) {
    int64_t index = -1, count = 0;
    try {
      BackendDesc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      cudnnBackendDescriptor_t raw = engine.get();
      check(cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &raw),
            "engine of config");
      check(cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &count, &index),
            "engine global index");
    } catch (const std::exception&) {
    }
    fmt::print(stderr, "normcheck cudnn: {}: engine global index {} (config {} of {} from {})\n", key, index, i + 1, n,
               mode == CUDNN_HEUR_MODE_A ? "CUDNN_HEUR_MODE_A" : "CUDNN_HEUR_MODE_FALLBACK");
  }

  BackendDesc norm_forward(const cudnn_plan::GraphPlan& g, const RunArgs& a, cudnnDataType_t dt, cudnnDataType_t st) {
    BackendDesc op(CUDNN_BACKEND_OPERATION_NORM_FORWARD_DESCRIPTOR);
    const cudnnBackendNormMode_t mode = norm_mode(g.mode);
    const cudnnBackendNormFwdPhase_t phase = CUDNN_NORM_FWD_TRAINING;
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode, "norm mode");
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_PHASE, CUDNN_TYPE_NORM_FWD_PHASE, 1, &phase, "norm phase");
    const Desc scalar = cudnn_plan::packed({1, 1});
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_XDESC, graph_tensor(kX, g.x, dt), "norm x");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_YDESC, graph_tensor(kY, view_of(a, a.y), dt), "norm y");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_SCALE_DESC, graph_tensor(kScale, g.scale, st), "norm scale");
    if (g.bias) op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_BIAS_DESC, graph_tensor(kBias, g.scale, st), "norm bias");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_EPSILON_DESC, graph_tensor(kEps, scalar, st, true), "norm epsilon");
    if (g.mean) op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_MEAN_DESC, graph_tensor(kMean, g.stats, st), "norm mean");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_INV_VARIANCE_DESC, graph_tensor(kInvVar, g.stats, st), "norm inv_variance");
    if (g.running) {  // batch_norm: running statistics in and out, factor by value
      op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_EXP_AVG_FACTOR_DESC, graph_tensor(kFactor, scalar, st, true), "norm factor");
      op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_INPUT_RUNNING_MEAN_DESC, graph_tensor(kRunningMeanIn, g.stats, st), "running mean in");
      op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_INPUT_RUNNING_VAR_DESC, graph_tensor(kRunningVarIn, g.stats, st), "running var in");
      op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_OUTPUT_RUNNING_MEAN_DESC, graph_tensor(kRunningMeanOut, g.stats, st), "running mean out");
      op.set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_OUTPUT_RUNNING_VAR_DESC, graph_tensor(kRunningVarOut, g.stats, st), "running var out");
    }
    op.finalize("cudnnBackendFinalize(NORM_FORWARD)");
    return op;
  }

  BackendDesc norm_backward(const cudnn_plan::GraphPlan& g, const RunArgs& a, cudnnDataType_t dt, cudnnDataType_t st) {
    BackendDesc op(CUDNN_BACKEND_OPERATION_NORM_BACKWARD_DESCRIPTOR);
    const cudnnBackendNormMode_t mode = norm_mode(g.mode);
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode, "norm mode");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_XDESC, graph_tensor(kX, g.x, dt), "norm x");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DYDESC, graph_tensor(kDy, view_of(a, a.dy), dt), "norm dy");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DXDESC, graph_tensor(kDx, view_of(a, a.dx), dt), "norm dx");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_SCALE_DESC, graph_tensor(kScale, g.scale, st), "norm scale");
    if (g.mean) op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_MEAN_DESC, graph_tensor(kMean, g.stats, st), "norm mean");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_INV_VARIANCE_DESC, graph_tensor(kInvVar, g.stats, st), "norm inv_variance");
    op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DSCALE_DESC, graph_tensor(kDscale, g.scale, st), "norm dscale");
    if (g.bias) op.set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DBIAS_DESC, graph_tensor(kDbias, g.scale, st), "norm dbias");
    op.finalize("cudnnBackendFinalize(NORM_BACKWARD)");
    return op;
  }

  /// Runs plan on the (uid, device pointer) pairs, with its workspace, timed by CUDA events.
  void execute(const BackendDesc& plan, std::vector<int64_t> uids, std::vector<void*> ptrs) {
    int64_t ws = 0, n = 0;
    check(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws),
          "plan workspace size");
    DeviceBuffer workspace(static_cast<size_t>(ws));
    void* wp = workspace.get();
    BackendDesc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data(), "variant uids");
    pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(ptrs.size()), ptrs.data(),
             "variant pointers");
    pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &wp, "variant workspace");
    pack.finalize("cudnnBackendFinalize(variant pack)");
    KernelTimer timer;
    timer.start();
    check(cudnnBackendExecute(handle_, plan.get(), pack.get()), "cudnnBackendExecute");
    last_kernel_seconds_ = timer.stop();
  }

  /// What both graph passes share: the plan, the dtypes, the plan key printed with the engine
  /// choice, x and gamma (ones without affine) on the device.
  struct GraphCall {
    cudnn_plan::GraphPlan g;
    DType sdt;
    cudnnDataType_t dt, st;
    std::string key;
    DeviceBuffer x, gamma;
    explicit GraphCall(const RunArgs& a)
        : g(cudnn_plan::plan_graph(a)), sdt(stats_dtype(a.x.dtype)), dt(data_type(a.x.dtype)), st(data_type(sdt)),
          key(fmt::format("{} {} {} x({})", cudnn_plan::to_string(g.mode), to_string(a.pass), to_string(a.x.dtype),
                          fmt::join(g.x.dims, g.x.dims + g.x.rank, "×"))),
          x(staged(a.x, true)), gamma(staged_param(a.gamma, g.scale.numel(), sdt, 1)) {}
    size_t bytes(const Desc& d) const { return static_cast<size_t>(d.numel()) * dtype_size(sdt); }
  };

  uint32_t run_graph(const RunArgs& a) {
    GraphCall call(a);
    return a.pass == Pass::backward_training ? graph_backward(a, call) : graph_forward(a, call);
  }

  uint32_t graph_backward(const RunArgs& a, GraphCall& k) {
    const cudnn_plan::GraphPlan& g = k.g;
    DeviceBuffer dy = staged(a.dy, true), dx = staged(a.dx, false), mean = staged(a.mean, true),
                 inv = staged(a.inv_std, true), dg(k.bytes(g.scale)), db(k.bytes(g.scale));
    const BackendDesc plan = build_plan(norm_backward(g, a, k.dt, k.st), k.key);
    std::vector<int64_t> uids = {kX, kDy, kDx, kScale, kInvVar, kDscale};
    std::vector<void*> ptrs = {k.x.get(), dy.get(), dx.get(), k.gamma.get(), inv.get(), dg.get()};
    if (g.mean) uids.push_back(kMean), ptrs.push_back(mean.get());
    if (g.bias) uids.push_back(kDbias), ptrs.push_back(db.get());
    execute(plan, uids, ptrs);
    dx.download(a.dx.data);
    if (!a.affine) return kOutDx;
    dg.download(a.dgamma.data);
    if (!a.dbeta.present()) return kOutDx | kOutDgamma;
    db.download(a.dbeta.data);
    return kOutDx | kOutDgamma | kOutDbeta;
  }

  uint32_t graph_forward(const RunArgs& a, GraphCall& k) {
    const cudnn_plan::GraphPlan& g = k.g;
    DeviceBuffer beta = staged_param(a.beta, g.scale.numel(), k.sdt, 0), y = staged(a.y, false),
                 mean(k.bytes(g.stats)), inv(k.bytes(g.stats));
    DeviceBuffer rm_in = staged(a.running_mean, g.running), rv_in = staged(a.running_var, g.running),
                 rm_out = staged(a.running_mean, false), rv_out = staged(a.running_var, false);
    const BackendDesc plan = build_plan(norm_forward(g, a, k.dt, k.st), k.key);
    ByValue eps(a.eps, k.sdt), factor(a.batch_weight, k.sdt);  // by value: host pointers in the variant pack
    std::vector<int64_t> uids = {kX, kY, kScale, kEps, kInvVar};
    std::vector<void*> ptrs = {k.x.get(), y.get(), k.gamma.get(), eps.get(), inv.get()};
    if (g.bias) uids.push_back(kBias), ptrs.push_back(beta.get());
    if (g.mean) uids.push_back(kMean), ptrs.push_back(mean.get());
    if (g.running) {
      uids.insert(uids.end(), {kFactor, kRunningMeanIn, kRunningVarIn, kRunningMeanOut, kRunningVarOut});
      ptrs.insert(ptrs.end(), {factor.get(), rm_in.get(), rv_in.get(), rm_out.get(), rv_out.get()});
    }
    execute(plan, uids, ptrs);
    y.download(a.y.data);
    uint32_t produced = kOutY;
    if (g.mean && a.mean.present()) {
      mean.download(a.mean.data);
      produced |= kOutMean;
    }
    if (a.inv_std.present()) {
      inv.download(a.inv_std.data);
      produced |= kOutInvStd;
    }
    if (g.running) {
      rm_out.download(a.running_mean.data);
      rv_out.download(a.running_var.data);
      produced |= kOutRunningMean | kOutRunningVar;
    }
    return produced;
  }

  Variant variant_;
  DeviceInfo dev_;
  cudnnHandle_t handle_ = nullptr;
  std::set<std::string> printed_;  ///< plans whose engine choice was already reported
  std::optional<double> last_kernel_seconds_;
};

}  // namespace

std::unique_ptr<Backend> make_cudnn_backend(Variant v) { return std::make_unique<CudnnBackend>(v); }

}  // namespace normcheck
