// Descriptor grammar and defaults: docs/descriptor.md.
#include "normcheck/problem.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

#include <unistd.h>

#include <fstream>

#include "normcheck/data.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/partition.hpp"

namespace normcheck {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

/// A decimal (or inf/nan) number, the whole text: no white space, no leading '+', no hex.
/// std::from_chars, unlike strtod, skips no leading white space and reports out-of-range values.
double parse_double(std::string_view key, std::string_view text) {
  double v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != text.data() + text.size())
    throw Error(fmt::format("{}={} is not a number", key, text));
  if (ec == std::errc::result_out_of_range)
    throw Error(fmt::format("{}={} is out of the range of a double", key, text));
  return v;
}

/// A decimal integer in [lo, hi], the whole text; anything outside is an error, never truncated.
int64_t parse_int(std::string_view key, std::string_view text, int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != text.data() + text.size())
    throw Error(fmt::format("{}={} is not an integer", key, text));
  if (ec == std::errc::result_out_of_range || v < lo || v > hi)
    throw Error(fmt::format("{}={} is out of range [{}, {}]", key, text, lo, hi));
  return v;
}

std::vector<int64_t> parse_shape(std::string_view text) {
  std::vector<int64_t> dims;
  for (auto part : split(text, 'x')) dims.push_back(parse_int("shape", part));
  return dims;
}

Distribution parse_distribution(std::string_view text) {
  auto parts = split(text, ':');
  Distribution d;
  auto need = [&](size_t n) {
    if (parts.size() != n)
      throw Error(fmt::format("data={} must be normal:MEAN:STD, uniform:LOW:HIGH or "
                              "constant:VALUE", text));
  };
  if (parts[0] == "normal") {
    need(3);
    d.kind = Distribution::Kind::normal;
  } else if (parts[0] == "uniform") {
    need(3);
    d.kind = Distribution::Kind::uniform;
  } else if (parts[0] == "constant") {
    need(2);
    d.kind = Distribution::Kind::constant;
    d.a = parse_double("data", parts[1]);
    d.b = 0;
    return d;
  } else {
    need(0);
  }
  d.a = parse_double("data", parts[1]);
  d.b = parse_double("data", parts[2]);
  return d;
}

std::string to_string(const Distribution& d) {
  switch (d.kind) {
    case Distribution::Kind::normal: return "normal:" + format_number(d.a) + ":" + format_number(d.b);
    case Distribution::Kind::uniform: return "uniform:" + format_number(d.a) + ":" + format_number(d.b);
    case Distribution::Kind::constant: return "constant:" + format_number(d.a);
  }
  return "?";
}

bool operator==(const Distribution& x, const Distribution& y) {
  return x.kind == y.kind && x.a == y.a && (x.kind == Distribution::Kind::constant || x.b == y.b);
}

std::string_view to_string(Special s) {
  switch (s) {
    case Special::none: return "none";
    case Special::nan: return "nan";
    case Special::inf: return "inf";
    case Special::const_set: return "const_set";
    case Special::spikes: return "spikes";
    case Special::cancel: return "cancel";
  }
  return "?";
}

GradientSpec parse_gradient(std::string_view text) {
  GradientSpec g;
  if (text == "normal") return g;
  const std::string t(text);
  const auto c1 = t.find(':'), c2 = c1 == std::string::npos ? c1 : t.find(':', c1 + 1);
  if (t.rfind("common:", 0) != 0 || c2 == std::string::npos)
    throw Error(fmt::format("dy={} must be normal or common:A:B (dy = A + B·x̂ + 1e-3·N(0, 1))", text));
  g.kind = GradientSpec::Kind::common;
  g.a = parse_double("dy", t.substr(c1 + 1, c2 - c1 - 1));
  g.b = parse_double("dy", t.substr(c2 + 1));
  return g;
}

Special parse_special(std::string_view s) {
  for (Special v : {Special::none, Special::nan, Special::inf, Special::const_set, Special::spikes, Special::cancel})
    if (to_string(v) == s) return v;
  throw Error(fmt::format("special={} unknown; known: none, nan, inf, const_set, spikes, cancel", s));
}

/// FIELD=file:H[:H…]: SHA-256 digests of .npy files (the x field takes one per call).
std::vector<std::string> parse_file_hashes(std::string_view key, std::string_view val, bool many) {
  std::vector<std::string> out;
  const auto parts = split(val.substr(5), ':');
  if (!many && parts.size() != 1)
    throw Error(fmt::format("{}=file:SHA256 takes one digest", key));
  for (auto h : parts) {
    if (h.size() != 64 || h.find_first_not_of("0123456789abcdef") != std::string_view::npos)
      throw Error(fmt::format("{}=file:{}: a file is named by its SHA-256, 64 lower-case hex digits "
                              "(sha256sum's output)", key, h));
    out.emplace_back(h);
  }
  return out;
}

bool is_file_field(std::string_view val) { return val.rfind("file:", 0) == 0; }

int default_steps(Pass pass) { return pass == Pass::forward_training ? 1 : 0; }

bool is_per_row(Op op) { return op == Op::layer_norm || op == Op::rms_norm; }

/// The text with bytes outside printable ASCII written as \xHH, so an error message stays one
/// printable line.
std::string escape_bytes(std::string_view text) {
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += ch;
  }
  return out;
}

}  // namespace

int64_t checked_numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (auto d : dims) {
    if (d < 0) throw Error("shape: every extent must be ≥ 1");
    if (__builtin_mul_overflow(n, d, &n))
      throw Error(fmt::format("shape={} has more than 2^63 elements", fmt::join(dims, "x")));
  }
  return n;
}

int64_t Problem::numel() const { return checked_numel(dims); }

std::string format_number(double v) {
  const std::string s = fmt::format("{}", v);  // shortest round-trip form
  const auto e = s.find('e');
  if (e == std::string::npos) return s;
  std::string_view exp = std::string_view(s).substr(e + 1);
  const bool neg = !exp.empty() && exp.front() == '-';
  if (!exp.empty() && (exp.front() == '-' || exp.front() == '+')) exp.remove_prefix(1);
  while (exp.size() > 1 && exp.front() == '0') exp.remove_prefix(1);
  return fmt::format("{}e{}{}", std::string_view(s).substr(0, e), neg ? "-" : "", exp);
}

Problem parse_descriptor(std::string_view text) {
  if (text.empty()) throw Error("descriptor: empty; expected e.g. batch_norm,shape=2x3x4x4");
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7f)  // space, \t \n \v \f \r and the other control characters
      throw Error(fmt::format("descriptor '{}': contains white space or a control character (byte 0x{:02x}); "
                              "descriptors have no white space",
                              escape_bytes(text), c));
    if (c >= 0x80)
      throw Error(fmt::format("descriptor '{}': contains a non-ASCII byte (0x{:02x}); descriptors are ASCII",
                              escape_bytes(text), c));
  }
  auto fields = split(text, ',');
  Problem p;
  try {
    p.op = parse_op(fields[0]);
  } catch (const Error& e) {
    throw Error(fmt::format("descriptor '{}': must start with the op: {}", text, e.what()));
  }
  std::set<std::string, std::less<>> seen;
  bool have_shape = false, have_steps = false, have_momentum = false;
  try {
    for (size_t i = 1; i < fields.size(); ++i) {
      auto f = fields[i];
      auto eq = f.find('=');
      if (eq == std::string_view::npos || eq == 0)
        throw Error(fmt::format("field '{}' is not key=value", f));
      auto key = f.substr(0, eq);
      auto val = f.substr(eq + 1);
      if (!seen.insert(std::string(key)).second) throw Error(fmt::format("{} given twice", key));
      auto only_for = [&](bool ok, std::string_view ops) {
        if (!ok)
          throw Error(fmt::format("{} applies to {} only, not {}", key, ops, to_string(p.op)));
      };
      if (key == "pass") p.pass = parse_pass(val);
      else if (key == "dtype") p.dtype = parse_dtype(val);
      else if (key == "layout") p.layout = parse_layout(val);
      else if (key == "shape") { p.dims = parse_shape(val); have_shape = true; }
      else if (key == "norm_dims") {
        only_for(is_per_row(p.op), "layer_norm and rms_norm");
        p.norm_dims = static_cast<int>(parse_int(key, val, 0, std::numeric_limits<int>::max()));
      } else if (key == "groups") {
        only_for(p.op == Op::group_norm, "group_norm");
        p.groups = parse_int(key, val);
      } else if (key == "eps") p.eps = parse_double(key, val);
      else if (key == "affine") {
        if (val != "0" && val != "1") throw Error(fmt::format("affine={} must be 0 or 1", val));
        p.affine = val == "1";
      } else if (key == "inplace") {
        if (val != "0" && val != "1") throw Error(fmt::format("inplace={} must be 0 or 1", val));
        p.inplace = val == "1";
      } else if (key == "convention") {
        only_for(p.op == Op::batch_norm, "batch_norm");
        p.convention = std::string(val);
        running_stats_convention(p.convention);
      } else if (key == "momentum") {
        only_for(p.op == Op::batch_norm, "batch_norm");
        if (val == "cumulative") {
          p.cumulative_average = true;
        } else {
          p.momentum = parse_double(key, val);
          have_momentum = true;
        }
      } else if (key == "steps") {
        only_for(p.op == Op::batch_norm, "batch_norm");
        p.steps = static_cast<int>(parse_int(key, val, 0, std::numeric_limits<int>::max()));
        have_steps = true;
      } else if (key == "data" && is_file_field(val)) p.files.x = parse_file_hashes(key, val, true);
      else if (key == "data") p.data = parse_distribution(val);
      else if (key == "special") p.special = parse_special(val);
      else if (key == "dy" && is_file_field(val)) p.files.dy = parse_file_hashes(key, val, false)[0];
      else if (key == "dy") p.dy = parse_gradient(val);
      else if (key == "gamma" || key == "beta" || key == "running_mean" || key == "running_var") {
        if (!is_file_field(val)) throw Error(fmt::format("{}={} must be file:SHA256 (--input {}=FILE.npy)", key, val, key));
        const std::string h = parse_file_hashes(key, val, false)[0];
        (key == "gamma" ? p.files.gamma : key == "beta" ? p.files.beta
         : key == "running_mean" ? p.files.running_mean : p.files.running_var) = h;
      }
      else if (key == "seed") {
        p.seed = static_cast<uint64_t>(parse_int(key, val, 0));
      } else {
        throw Error(fmt::format("unknown key '{}'; known: pass, dtype, layout, shape, norm_dims, "
                                "groups, eps, affine, inplace, convention, momentum, steps, data, special, dy, gamma, beta, "
                                "running_mean, running_var, seed",
                                key));
      }
    }
    if (!have_shape) throw Error("shape=NxCx... is required");
    if (!have_momentum) p.momentum = running_stats_convention(p.convention).default_momentum;
    if (!have_steps) p.steps = default_steps(p.pass);
    validate(p);
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind("descriptor", 0) == 0) throw;
    throw Error(fmt::format("descriptor '{}': {}", text, msg));
  }
  return p;
}

namespace {

/// Which tensors may come from files, and how many x files a problem takes.
void validate_file_inputs(const Problem& p) {
  const FileInputs& f = p.files;
  if (!f.x.empty()) {
    const int calls = p.pass == Pass::forward_inference                        ? p.steps + 1
                      : p.pass == Pass::forward_training && p.op == Op::batch_norm ? p.steps
                                                                               : 1;
    if (static_cast<int>(f.x.size()) != calls)
      throw Error(fmt::format("data=file: names {} x file(s), the problem makes {} call(s) (one x per "
                              "call: x0, x1, …)", f.x.size(), calls));
    if (p.special != Special::none) throw Error("special applies to generated data, not data=file");
  }
  if (!f.dy.empty() && !is_backward(p.pass)) throw Error("dy=file applies to backward passes only");
  if ((!f.gamma.empty() || !f.beta.empty()) && !p.affine) throw Error("gamma/beta=file need affine=1");
  if (!f.beta.empty() && p.op == Op::rms_norm) throw Error("rms_norm has no beta");
  if ((!f.running_mean.empty() || !f.running_var.empty()) &&
      (p.op != Op::batch_norm || p.pass == Pass::backward_training))
    throw Error("running_mean/running_var=file apply to batch_norm passes that read running statistics");
}

}  // namespace

void validate(const Problem& p) {
  if (p.rank() < 2 || p.rank() > 5)
    throw Error(fmt::format("shape must have 2 to 5 dims (N, C, up to 3 spatial), got {}", p.rank()));
  for (auto d : p.dims)
    if (d < 1) throw Error("every shape extent must be ≥ 1");
  if (checked_numel(p.dims) > kMaxElements)
    throw Error(fmt::format("shape={} has {} elements, more than 2^31; this version handles up to 2^31",
                            fmt::join(p.dims, "x"), checked_numel(p.dims)));
  if (is_per_row(p.op)) {
    if (p.norm_dims < 1 || p.norm_dims > p.rank() - 1)
      throw Error(fmt::format("norm_dims={} must be between 1 and rank-1 = {}", p.norm_dims, p.rank() - 1));
  } else if (p.norm_dims != 1) {
    throw Error("norm_dims applies to layer_norm and rms_norm only");
  }
  if (p.op == Op::group_norm) {
    if (p.groups < 1 || p.channels() % p.groups != 0)
      throw Error(fmt::format("groups={} must be ≥ 1 and divide C = {}", p.groups, p.channels()));
  } else if (p.groups != 0) {
    throw Error("groups applies to group_norm only");
  }
  if (!(p.eps >= 0) || !std::isfinite(p.eps)) throw Error("eps must be finite and ≥ 0");
  if (p.op != Op::batch_norm && (p.pass == Pass::forward_inference || p.pass == Pass::backward_inference))
    throw Error(fmt::format("pass {} uses running statistics, which only batch_norm keeps; {} "
                            "normalizes with the statistics of its input in every mode",
                            to_string(p.pass), to_string(p.op)));
  if (!(p.momentum >= 0 && p.momentum <= 1)) throw Error("momentum must be in [0, 1]");
  running_stats_convention(p.convention);
  if (p.cumulative_average && find_convention(p.convention).cumulative_average == "none")
    throw Error(fmt::format("momentum=cumulative: convention {} has no cumulative moving average", p.convention));
  if (p.op == Op::batch_norm) {
    if (p.pass == Pass::forward_training && p.steps < 1)
      throw Error("steps must be ≥ 1 for forward_training (the last step is compared)");
    if (p.pass == Pass::forward_inference && p.steps < 0) throw Error("steps must be ≥ 0");
    if (is_backward(p.pass) && p.steps != 0)
      throw Error("steps applies to forward passes only");
    if (p.steps > 1000) throw Error("steps must be ≤ 1000");
  }
  if (p.dy.kind == GradientSpec::Kind::common && !is_backward(p.pass))
    throw Error("dy applies to backward passes only");
  if (!std::isfinite(p.dy.a) || !std::isfinite(p.dy.b)) throw Error("dy=common:A:B needs finite A and B");
  if (p.data.kind == Distribution::Kind::normal && !(p.data.b >= 0))
    throw Error("data=normal:MEAN:STD needs STD ≥ 0");
  if (p.data.kind == Distribution::Kind::uniform && !(p.data.a <= p.data.b))
    throw Error("data=uniform:LOW:HIGH needs LOW ≤ HIGH");
  if (!std::isfinite(p.data.a) || !std::isfinite(p.data.b))
    throw Error("data parameters must be finite (use special=nan or special=inf to plant them)");
  validate_file_inputs(p);
}

namespace {

/// The file fields in canonical order: data (after special), dy, gamma, beta, running_mean,
/// running_var. data=file is printed here, after data= and special=, which it excludes.
void append_file_fields(const FileInputs& f, std::string& s) {
  if (!f.x.empty()) s += ",data=file:" + fmt::format("{}", fmt::join(f.x, ":"));
  if (!f.dy.empty()) s += ",dy=file:" + f.dy;
  if (!f.gamma.empty()) s += ",gamma=file:" + f.gamma;
  if (!f.beta.empty()) s += ",beta=file:" + f.beta;
  if (!f.running_mean.empty()) s += ",running_mean=file:" + f.running_mean;
  if (!f.running_var.empty()) s += ",running_var=file:" + f.running_var;
}

}  // namespace

std::string to_descriptor(const Problem& p) {
  std::string s = fmt::format("{},pass={},dtype={},shape=", to_string(p.op), to_string(p.pass),
                              to_string(p.dtype));
  for (size_t i = 0; i < p.dims.size(); ++i) s += fmt::format("{}{}", i ? "x" : "", p.dims[i]);
  if (p.layout != Layout::nchw) s += fmt::format(",layout={}", to_string(p.layout));
  if (is_per_row(p.op) && p.norm_dims != 1) s += fmt::format(",norm_dims={}", p.norm_dims);
  if (p.op == Op::group_norm) s += fmt::format(",groups={}", p.groups);
  if (p.eps != 1e-5) s += ",eps=" + format_number(p.eps);
  if (!p.affine) s += ",affine=0";
  if (p.inplace) s += ",inplace=1";
  if (p.op == Op::batch_norm) {
    if (p.convention != "pytorch") s += ",convention=" + p.convention;
    if (p.cumulative_average)
      s += ",momentum=cumulative";
    else if (p.momentum != find_convention(p.convention).default_momentum)
      s += ",momentum=" + format_number(p.momentum);
    if (p.steps != default_steps(p.pass)) s += fmt::format(",steps={}", p.steps);
  }
  if (!(p.data == Distribution{})) s += ",data=" + to_string(p.data);
  if (p.special != Special::none) s += fmt::format(",special={}", to_string(p.special));
  if (p.dy.kind == GradientSpec::Kind::common)
    s += ",dy=common:" + format_number(p.dy.a) + ":" + format_number(p.dy.b);
  append_file_fields(p.files, s);
  if (p.seed != 1) s += fmt::format(",seed={}", p.seed);
  return s;
}

double memory_estimate_bytes(const Problem& p, int reference_bits) {
  // The constants of the model in problem.hpp (measured; update them with the reference).
  constexpr double kFixed = 16.0 * (1 << 20);
  // reference_bits 0: the fast exact reference (docs/reference.md), measured at 50 B/element for
  // f32 forward_training and 67 for backward_training on 2^22 elements (/usr/bin/time, naive).
  const double kPerElement = reference_bits == 0 ? 40 : 100;
  constexpr double kPerElementBackward = 16, kPerElement256Bits = 16;
  constexpr double kPerInputElementAsDouble = 8;  // ReferenceInputs keeps every call's x as double
  constexpr double kPerSetPerCall = 224;
  const double n = static_cast<double>(checked_numel(p.dims));
  const double calls = num_calls(p);
  const double sets = static_cast<double>(checked_numel(stats_shape(p)));  // not make_partition: O(numel)
  double per_element = calls * (dtype_size(p.dtype) + kPerInputElementAsDouble) + kPerElement;
  if (is_backward(p.pass)) per_element += kPerElementBackward;
  if (reference_bits > 128) per_element += kPerElement256Bits;
  return kFixed + n * per_element + sets * calls * kPerSetPerCall;
}

double available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0;
}

std::string memory_refusal(const Problem& p, int reference_bits, double available) {
  if (available < 0) available = available_memory_bytes();
  const double need = memory_estimate_bytes(p, reference_bits);
  if (available <= 0 || need <= available) return "";
  constexpr double GiB = 1024.0 * 1024 * 1024;
  return fmt::format("not run: needs about {:.1f} GiB of memory (estimate: memory_estimate_bytes, docs/cli.md), "
                     "the machine has {:.1f} GiB available (/proc/meminfo MemAvailable)",
                     need / GiB, available / GiB);
}

}  // namespace normcheck
