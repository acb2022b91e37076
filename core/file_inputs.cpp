// Inputs from .npy files: include/normcheck/file_inputs.hpp, docs/descriptor.md.
#include "normcheck/file_inputs.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <openssl/evp.h>

#include <cstring>

#include "normcheck/error.hpp"
#include "normcheck/lowp.hpp"
#include "normcheck/partition.hpp"

namespace normcheck {
namespace {

const char* const kOtherRoles[] = {"dy", "gamma", "beta", "running_mean", "running_var"};

std::string& digest_field(FileInputs& f, const std::string& role) {
  if (role == "dy") return f.dy;
  if (role == "gamma") return f.gamma;
  if (role == "beta") return f.beta;
  if (role == "running_mean") return f.running_mean;
  return f.running_var;
}

/// What a role's file must hold for problem p.
struct Expected {
  DType dtype;
  std::vector<int64_t> dims;
};
Expected expected_for(const Problem& p, const std::string& role) {
  if (role == "x" || role == "dy") return {p.dtype, p.dims};
  if (role == "gamma" || role == "beta") return {stats_dtype(p.dtype), affine_shape(p)};
  return {stats_dtype(p.dtype), {p.channels()}};
}

std::string descr_for(DType t) {
  switch (t) {
    case DType::f32: return "'<f4'";
    case DType::f64: return "'<f8'";
    case DType::f16: return "'<f2' (or '<u2' holding the binary16 bits)";
    case DType::bf16: return "'<u2' holding the bfloat16 bits";
  }
  return "?";
}

bool dtype_matches(const NpyArray& a, DType t) {
  switch (t) {
    case DType::f32: return a.kind == 'f' && a.itemsize == 4;
    case DType::f64: return a.kind == 'f' && a.itemsize == 8;
    case DType::f16: return (a.kind == 'f' || a.kind == 'u') && a.itemsize == 2;
    case DType::bf16: return a.kind == 'u' && a.itemsize == 2;
  }
  return false;
}

std::string shape_text(const std::vector<int64_t>& d) {
  return d.empty() ? "()" : fmt::format("{}", fmt::join(d, "x"));
}

/// Checks one file against what p expects of the role; `label` names it ("--input x0=a.npy").
void check_file(const Problem& p, const std::string& role, const SuppliedTensor& t, const std::string& label) {
  const Expected e = expected_for(p, role);
  if (!dtype_matches(t.array, e.dtype))
    throw Error(fmt::format("{}: dtype '{}' does not match the descriptor: {} {} needs {}", label,
                            t.array.descr(), role, to_string(e.dtype), descr_for(e.dtype)));
  if (t.array.shape != e.dims)
    throw Error(fmt::format("{}: shape {} does not match the descriptor's {} shape {}{}", label,
                            shape_text(t.array.shape), role, shape_text(e.dims),
                            role == "x" || role == "dy" ? " (logical N×C×…, whatever the layout)" : ""));
}

/// Value of the element at file position k, exactly, for data of dtype t.
double element(const NpyArray& a, int64_t k, DType t) {
  const uint64_t r = a.raw(k);
  if (a.itemsize == 8) {
    double d;
    std::memcpy(&d, &r, 8);
    return d;
  }
  if (a.itemsize == 4) {
    const uint32_t u = static_cast<uint32_t>(r);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const uint16_t bits = static_cast<uint16_t>(r);
  if (t == DType::bf16) {
    bf16 b;
    b.bits = bits;
    return static_cast<float>(b);
  }
  f16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<double>(static_cast<float>(h));
}

/// The tensor of dtype/layout `like` holding the file's values in logical order.
void fill(Tensor& out, const NpyArray& a) {
  for (int64_t i = 0; i < out.numel(); ++i) out.set(i, element(a, a.file_position(i), out.dtype()));
}

std::string label_of(const std::string& role, size_t k, size_t nx, const SuppliedTensor& t) {
  const std::string name = role == "x" && nx > 1 ? fmt::format("x{}", k) : role;
  return fmt::format("--input {}={}", name, t.path);
}

}  // namespace

std::string sha256_hex(const unsigned char* bytes, size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes, size, md, &len, EVP_sha256(), nullptr) != 1 || len != 32)
    throw Error("SHA-256: OpenSSL EVP_Digest failed");
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

SuppliedTensor load_supplied(const std::string& path) {
  SuppliedTensor t;
  t.path = path;
  const auto bytes = read_file_bytes(path);
  try {
    t.array = parse_npy(bytes.data(), bytes.size());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  t.sha256 = sha256_hex(bytes.data(), bytes.size());
  return t;
}

void add_input(SuppliedInputs& in, const std::string& name, SuppliedTensor t) {
  if (name == "x") {
    in.x.push_back(std::move(t));
    return;
  }
  if (name.size() > 1 && name[0] == 'x' && name.find_first_not_of("0123456789", 1) == std::string::npos) {
    const size_t k = std::stoul(name.substr(1));
    if (k > 1000) throw Error(fmt::format("--input {}: at most 1001 calls", name));
    if (in.x.size() <= k) in.x.resize(k + 1);
    if (!in.x[k].path.empty()) throw Error(fmt::format("--input {} given twice (or mixed with plain x)", name));
    in.x[k] = std::move(t);
    return;
  }
  for (const char* r : kOtherRoles)
    if (name == r) {
      if (!in.other.emplace(name, std::move(t)).second) throw Error(fmt::format("--input {} given twice", name));
      return;
    }
  throw Error(fmt::format("--input {}=…: unknown tensor; known: x, x0, x1, …, dy, gamma, beta, running_mean, "
                          "running_var", name));
}

void add_input(SuppliedInputs& in, std::string_view spec) {
  const auto eq = spec.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == spec.size())
    throw Error(fmt::format("--input {}: expected NAME=FILE.npy (e.g. x=x.npy)", spec));
  const std::string name(spec.substr(0, eq));
  add_input(in, name, load_supplied(std::string(spec.substr(eq + 1))));
}

void bind_inputs(Problem& p, const SuppliedInputs& in) {
  for (size_t k = 0; k < in.x.size(); ++k)
    if (in.x[k].path.empty()) throw Error(fmt::format("--input x{} is missing (x0 … x{} are needed)", k, in.x.size() - 1));
  FileInputs f = p.files;
  if (!in.x.empty()) {
    std::vector<std::string> hx;
    for (const auto& t : in.x) hx.push_back(t.sha256);
    if (!f.x.empty() && f.x != hx)
      throw Error(fmt::format("the descriptor names x data=file:{}, but the --input x file(s) have SHA-256 {}: "
                              "not the data the descriptor was made with", fmt::join(f.x, ":"), fmt::join(hx, ":")));
    f.x = hx;
  } else if (!f.x.empty()) {
    throw Error(fmt::format("the descriptor names x by its file (data=file:{}…); give it with --input x=FILE.npy",
                            f.x[0].substr(0, 12)));
  }
  for (const std::string role : kOtherRoles) {
    std::string& h = digest_field(f, role);
    const auto it = in.other.find(role);
    if (it == in.other.end()) {
      if (!h.empty())
        throw Error(fmt::format("the descriptor names {} by its file ({}=file:{}…); give it with --input {}=FILE.npy",
                                role, role, h.substr(0, 12), role));
      continue;
    }
    if (!h.empty() && h != it->second.sha256)
      throw Error(fmt::format("the descriptor names {}=file:{}, but --input {}={} has SHA-256 {}: not the data the "
                              "descriptor was made with", role, h, role, it->second.path, it->second.sha256));
    h = it->second.sha256;
  }
  Problem q = p;
  q.files = f;
  try {
    validate(q);
  } catch (const Error& e) {
    throw Error(fmt::format("--input on '{}': {}", to_descriptor(p), e.what()));
  }
  for (size_t k = 0; k < in.x.size(); ++k) check_file(q, "x", in.x[k], label_of("x", k, in.x.size(), in.x[k]));
  for (const auto& [role, t] : in.other) check_file(q, role, t, label_of(role, 0, 1, t));
  p.files = std::move(f);
}

void apply_inputs(const Problem& p, const SuppliedInputs* in, GeneratedInputs& g) {
  if (!p.files.any()) return;
  if (!in) throw Error(fmt::format("'{}' names its inputs by file digest; give them with --input NAME=FILE.npy",
                                   to_descriptor(p)));
  Problem check = p;
  check.files = {};
  bind_inputs(check, *in);  // the same digests, shapes and dtypes, or an Error
  if (check.files.x != p.files.x || check.files.dy != p.files.dy || check.files.gamma != p.files.gamma ||
      check.files.beta != p.files.beta || check.files.running_mean != p.files.running_mean ||
      check.files.running_var != p.files.running_var)
    throw Error(fmt::format("'{}': the supplied files differ from the ones the descriptor names", to_descriptor(p)));
  for (size_t k = 0; k < in->x.size(); ++k) fill(g.batches.at(k), in->x[k].array);
  const std::pair<const char*, Tensor*> roles[] = {{"dy", &g.dy}, {"gamma", &g.gamma}, {"beta", &g.beta},
                                                   {"running_mean", &g.running_mean},
                                                   {"running_var", &g.running_var}};
  for (const auto& [role, t] : roles)
    if (auto it = in->other.find(role); it != in->other.end()) fill(*t, it->second.array);
}

std::string input_options(const Problem& p, const SuppliedInputs* in) {
  if (!in || !p.files.any()) return "";
  auto quote = [](const std::string& s) {
    if (s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_,=.:+-/") ==
        std::string::npos)
      return s;
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string s;
  for (size_t k = 0; k < in->x.size(); ++k)
    s += fmt::format(" --input {}={}", in->x.size() > 1 ? fmt::format("x{}", k) : "x", quote(in->x[k].path));
  for (const auto& [role, t] : in->other) s += fmt::format(" --input {}={}", role, quote(t.path));
  return s;
}

}  // namespace normcheck
