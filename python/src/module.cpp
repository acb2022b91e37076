// normcheck's Python binding (the `normcheck._normcheck` extension; docs/python.md).
//
// Every judgement goes through the C++ entry points the CLI uses: parse_descriptor, bind_inputs
// (file_inputs.hpp), generate_inputs, and run_case (runner.hpp) with a CallbackBackend whose run()
// hands the call's inputs to a Python function and copies what it returns into the output
// buffers. The result is the CLI's own JSON case record (reports/report.cpp) and explain() text.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>

#include "normcheck/data.hpp"
#include "normcheck/error.hpp"
#include "normcheck/file_inputs.hpp"
#include "normcheck/lowp.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/report.hpp"
#include "normcheck/runner.hpp"
#include "normcheck/version.hpp"

namespace py = pybind11;
using namespace normcheck;

namespace {

/// NumPy dtype holding a tensor of dtype t: bf16 (no NumPy dtype) as float32, which holds it exactly.
py::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::f64: return py::dtype::of<double>();
    case DType::f16: return py::dtype("float16");
    default: return py::dtype::of<float>();
  }
}

int64_t element_offset(const TensorArg& a, int64_t i) {
  int64_t off = 0;
  for (int d = a.rank - 1; d >= 0; --d) {
    off += (i % a.dims[d]) * a.strides[d];
    i /= a.dims[d];
  }
  return off;
}

int64_t numel_of(const TensorArg& a) {
  int64_t n = 1;
  for (int d = 0; d < a.rank; ++d) n *= a.dims[d];
  return n;
}

double load(const TensorArg& a, int64_t i) {
  const auto* p = static_cast<const unsigned char*>(a.data) + element_offset(a, i) * dtype_size(a.dtype);
  switch (a.dtype) {
    case DType::f32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::f64: { double d; std::memcpy(&d, p, 8); return d; }
    case DType::f16: { f16 h; std::memcpy(&h, p, 2); return static_cast<double>(static_cast<float>(h)); }
    case DType::bf16: { bf16 b; std::memcpy(&b, p, 2); return static_cast<double>(static_cast<float>(b)); }
  }
  return 0;
}

void store(const TensorArg& a, int64_t i, double v) {
  auto* p = static_cast<unsigned char*>(a.data) + element_offset(a, i) * dtype_size(a.dtype);
  switch (a.dtype) {
    case DType::f32: { const float f = static_cast<float>(v); std::memcpy(p, &f, 4); return; }
    case DType::f64: std::memcpy(p, &v, 8); return;
    case DType::f16: { const f16 h = static_cast<f16>(v); std::memcpy(p, &h, 2); return; }
    case DType::bf16: { const bf16 b(static_cast<float>(v)); std::memcpy(p, &b, 2); return; }
  }
}

/// A copy of the buffer as a NumPy array of the logical shape, with the buffer's own strides
/// (NHWC stays channels-last in memory).
py::array to_numpy(const TensorArg& a) {
  std::vector<py::ssize_t> shape(a.dims, a.dims + a.rank), strides(a.rank);
  const py::dtype dt = numpy_dtype(a.dtype);
  for (int d = 0; d < a.rank; ++d) strides[d] = a.strides[d] * dt.itemsize();
  py::array out(dt, shape, strides);
  auto* base = static_cast<unsigned char*>(out.mutable_data());
  const int64_t n = numel_of(a);
  for (int64_t i = 0; i < n; ++i) {
    const double v = load(a, i);
    unsigned char* p = base + element_offset(a, i) * dt.itemsize();
    if (a.dtype == DType::f64) std::memcpy(p, &v, 8);
    else if (a.dtype == DType::f16) { const f16 h = static_cast<f16>(v); std::memcpy(p, &h, 2); }
    else { const float f = static_cast<float>(v); std::memcpy(p, &f, 4); }
  }
  return out;
}

std::vector<int64_t> squeezed(std::vector<int64_t> d) {
  std::erase(d, int64_t{1});
  return d;
}

/// Copies a user's array into an output buffer. The array's shape must equal the buffer's
/// logical shape up to extents of 1 ((N,) and (N, 1) both fit a per-row statistic). uint16 arrays
/// are read as the 16-bit pattern of an f16/bf16 buffer; anything else is converted to float64
/// (exact for float16/32/64) and rounded to the buffer's dtype.
void from_numpy(const std::string& name, const py::handle& obj, const TensorArg& out) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw Error(name + ": not convertible to a NumPy array");
  std::vector<int64_t> got(arr.shape(), arr.shape() + arr.ndim()), want(out.dims, out.dims + out.rank);
  if (squeezed(got) != squeezed(want))
    throw Error(fmt::format("output {}: shape ({}) does not match ({})", name, fmt::join(got, ", "), fmt::join(want, ", ")));
  const int64_t n = numel_of(out);
  if (arr.dtype().kind() == 'u' && arr.itemsize() == 2) {
    if (out.dtype != DType::f16 && out.dtype != DType::bf16)
      throw Error("output " + name + ": a uint16 array is read as f16/bf16 bits, but this output is " +
                  std::string(to_string(out.dtype)));
    auto bits = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    for (int64_t i = 0; i < n; ++i) {
      auto* p = static_cast<unsigned char*>(out.data) + element_offset(out, i) * 2;
      const uint16_t b = bits.data()[i];
      std::memcpy(p, &b, 2);
    }
    return;
  }
  auto vals = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (!vals) throw Error("output " + name + ": not a numeric array");
  for (int64_t i = 0; i < n; ++i) store(out, i, vals.data()[i]);
}

/// The backend of the Python package: each run() passes the call's inputs to `fn` as a dict of
/// NumPy arrays and scalars, and copies the returned outputs (a dict, or one array: y for forward,
/// dx for backward) into the output buffers.
class CallbackBackend final : public Backend {
 public:
  CallbackBackend(py::object fn, PrecisionProfile prof) : fn_(std::move(fn)), prof_(prof) {}
  std::string name() const override { return "python"; }
  std::string version() const override { return std::string("normcheck ") + kVersion + " Python callback"; }
  std::string description() const override { return "a Python function (normcheck.check_fn)"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.ops.assign(std::begin(kAllOps), std::end(kAllOps));
    c.passes.assign(std::begin(kAllPasses), std::end(kAllPasses));
    c.dtypes = {DType::f32, DType::f64, DType::f16, DType::bf16};
    c.layouts = {Layout::nchw, Layout::nhwc};
    c.precision = prof_;
    return c;
  }
  RunResult run(const RunArgs& a) override {
    RunResult r;
    try {
      r.produced = call(a);
    } catch (py::error_already_set& e) {
      pending_ = std::move(e);  // re-raised by the binding after run_case returns
      r.ok = false;
      r.message = "the Python function raised an exception";
    } catch (const Error& e) {  // an output of the wrong name or shape: raised after run_case
      pending_error_ = e.what();
      r.ok = false;
      r.message = e.what();
    } catch (const std::exception& e) {  // pybind11 cast errors
      r.ok = false;
      r.message = e.what();
    }
    return r;
  }
  std::optional<py::error_already_set> pending_;
  std::optional<std::string> pending_error_;

 private:
  uint32_t call(const RunArgs& a);
  py::object fn_;
  PrecisionProfile prof_;
};

uint32_t CallbackBackend::call(const RunArgs& a) {
  const bool rms = a.op == Op::rms_norm;
  py::dict in;
  in["op"] = std::string(to_string(a.op));
  in["pass"] = std::string(to_string(a.pass));
  in["dtype"] = std::string(to_string(a.x.dtype));
  in["eps"] = a.eps;
  in["norm_dims"] = a.norm_dims;
  in["groups"] = a.groups;
  in["batch_weight"] = a.batch_weight;
  in["running_var_unbiased"] = static_cast<bool>(a.running_var_unbiased);
  const bool fwd_train = a.pass == Pass::forward_training;
  const bool bwd = is_backward(a.pass);
  const std::pair<const char*, const TensorArg*> inputs[] = {
      {"x", &a.x}, {"dy", &a.dy}, {"gamma", &a.gamma}, {"beta", &a.beta},
      {"running_mean", &a.running_mean}, {"running_var", &a.running_var}};
  for (const auto& [k, t] : inputs)
    if (t->present() && (std::string(k) != "dy" || bwd)) in[k] = to_numpy(*t);
  if (a.pass == Pass::backward_training) {  // saved statistics are inputs of the backward
    if (a.mean.present()) in["mean"] = to_numpy(a.mean);
    in[rms ? "mean_square" : "variance"] = to_numpy(a.variance);
    in[rms ? "inv_rms" : "inv_std"] = to_numpy(a.inv_std);
  }
  py::object ret = fn_(in);
  py::dict out;
  if (py::isinstance<py::dict>(ret)) out = ret.cast<py::dict>();
  else if (!ret.is_none()) out[bwd ? "dx" : "y"] = ret;
  struct Slot { const char* name; const TensorArg* arg; uint32_t bit; bool allowed; };
  const Slot slots[] = {
      {"y", &a.y, kOutY, !bwd},
      {"mean", &a.mean, kOutMean, fwd_train},
      {rms ? "mean_square" : "variance", &a.variance, kOutVariance, fwd_train},
      {rms ? "inv_rms" : "inv_std", &a.inv_std, kOutInvStd, fwd_train},
      {"running_mean", &a.running_mean, kOutRunningMean, fwd_train},
      {"running_var", &a.running_var, kOutRunningVar, fwd_train},
      {"dx", &a.dx, kOutDx, bwd},
      {"dgamma", &a.dgamma, kOutDgamma, bwd},
      {"dbeta", &a.dbeta, kOutDbeta, bwd},
  };
  uint32_t produced = 0;
  for (const auto& [key, value] : out) {
    const std::string k = py::str(key);
    const Slot* s = nullptr;
    for (const auto& c : slots)
      if (k == c.name && c.allowed) s = &c;
    if (!s) throw Error(fmt::format("the function returned '{}', not an output of {} {}", k, to_string(a.op), to_string(a.pass)));
    if (!s->arg->present()) throw Error(fmt::format("'{}' is not an output of this case (affine=0 or not batch_norm)", k));
    from_numpy(k, value, *s->arg);
    produced |= s->bit;
  }
  // PyTorch semantics: running statistics updated in place in the arrays passed in.
  for (const char* k : {"running_mean", "running_var"})
    if (fwd_train && a.op == Op::batch_norm && !out.contains(k) && in.contains(k)) {
      from_numpy(k, in[k], std::string(k) == "running_mean" ? a.running_mean : a.running_var);
      produced |= std::string(k) == "running_mean" ? kOutRunningMean : kOutRunningVar;
    }
  return produced;
}

SuppliedInputs supplied_from(const std::map<std::string, std::vector<std::string>>& files) {
  SuppliedInputs s;
  for (const auto& [name, paths] : files)
    for (const auto& path : paths) add_input(s, name, load_supplied(path));
  return s;
}

Problem bound_problem(const std::string& descriptor, const SuppliedInputs& s) {
  Problem p = parse_descriptor(descriptor);
  bind_inputs(p, s);
  return p;
}

PrecisionProfile profile_from(const std::string& summation, int64_t block, double rsqrt_error) {
  PrecisionProfile prof;
  if (summation == "recursive") prof.summation = Summation::recursive;
  else if (summation == "pairwise") prof.summation = Summation::pairwise;
  else if (summation == "blocked") prof.summation = Summation::blocked;
  else if (summation == "compensated") prof.summation = Summation::compensated;
  else throw Error("summation=" + summation + " unknown; known: recursive, pairwise, blocked, compensated");
  if (prof.summation == Summation::blocked && block < 1) throw Error("summation=blocked needs block ≥ 1");
  prof.block = block;
  if (!(rsqrt_error > 0)) throw Error("rsqrt_error must be > 0 (units of u)");
  prof.rsqrt_error = rsqrt_error;
  return prof;
}

/// Runs the case through run_case; returns (canonical descriptor, JSON case record, explain text).
py::tuple run(py::object fn, const std::string& descriptor, const std::map<std::string, std::vector<std::string>>& files,
              const std::string& summation, int64_t block, double rsqrt_error, int reference_bits) {
  const SuppliedInputs s = supplied_from(files);
  const Problem p = bound_problem(descriptor, s);
  CallbackBackend b(std::move(fn), profile_from(summation, block, rsqrt_error));
  RunOptions opt;
  opt.reference_bits = reference_bits;
  opt.inputs = &s;
  CaseResult c = run_case(b, p, opt);
  if (b.pending_) throw std::move(*b.pending_);
  if (b.pending_error_) throw Error(*b.pending_error_);
  RunReport r;
  r.backend = "python";
  r.backend_name = b.name();
  r.normcheck_version = kVersion;
  r.reference_bits = reference_bits;
  const std::string exp = explain(c);
  r.cases.push_back(std::move(c));
  return py::make_tuple(to_descriptor(p), to_json_text(r), exp);
}

/// The inputs of a case, as run_case would pass them (generate_inputs, then the supplied files).
py::dict case_inputs(const std::string& descriptor, const std::map<std::string, std::vector<std::string>>& files) {
  const SuppliedInputs s = supplied_from(files);
  const Problem p = bound_problem(descriptor, s);
  const Partition part = make_partition(p);
  GeneratedInputs g = generate_inputs(p, part);
  apply_inputs(p, &s, g);
  py::dict d;
  d["descriptor"] = to_descriptor(p);
  py::list xs;
  for (auto& t : g.batches) xs.append(to_numpy(t.arg()));
  d["x"] = xs[py::len(xs) - 1];
  if (py::len(xs) > 1) d["x_steps"] = xs;
  const std::pair<const char*, Tensor*> others[] = {{"dy", &g.dy}, {"gamma", &g.gamma}, {"beta", &g.beta},
                                                    {"running_mean", &g.running_mean}, {"running_var", &g.running_var}};
  for (const auto& [k, t] : others)
    if (!t->empty()) d[k] = to_numpy(t->arg());
  d["eps"] = round_to(stats_dtype(p.dtype), p.eps);
  return d;
}

py::list suite_cases(const std::string& name_or_path) {
  py::list out;
  for (const auto& c : load_suite(name_or_path).cases) out.append(py::make_tuple(c.descriptor, c.note));
  return out;
}

}  // namespace

PYBIND11_MODULE(_normcheck, m) {
  m.doc() = "normcheck's C++ core (docs/python.md); use the normcheck package, not this module";
  static py::exception<Error> error(m, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr ep) {
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });
  m.attr("__version__") = kVersion;
  m.def("run", &run, py::arg("fn"), py::arg("descriptor"), py::arg("files"), py::arg("summation"),
        py::arg("block"), py::arg("rsqrt_error"), py::arg("reference_bits"));
  m.def("case_inputs", &case_inputs, py::arg("descriptor"), py::arg("files"));
  m.def("suite_cases", &suite_cases, py::arg("name_or_path"));
  m.def("canonical", [](const std::string& d) { return to_descriptor(parse_descriptor(d)); }, py::arg("descriptor"));
  m.def("sha256_file", [](const std::string& path) {
    const auto b = read_file_bytes(path);
    return sha256_hex(b.data(), b.size());
  }, py::arg("path"));
}
