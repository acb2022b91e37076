// The .npy reader (numpy.lib.format versions 1.0-3.0): include/normcheck/npy.hpp. Kept apart
// from the writer (npy.cpp) so that the fuzz harness (tests/fuzz/fuzz_npy.cpp) builds it alone,
// with no 16-bit float types.
#include <fmt/format.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>

#include "normcheck/error.hpp"
#include "normcheck/npy.hpp"

namespace normcheck {
namespace {

/// A cursor over the header text, a Python dict literal such as
/// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view s) : s_(s) {}
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    skip_ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c, const char* what) {
    if (!eat(c)) fail(std::string("expected ") + what);
  }
  std::string string_literal() {
    skip_ws();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("expected a quoted string");
    const char q = s_[i_++];
    const size_t start = i_;
    while (i_ < s_.size() && s_[i_] != q) {
      if (s_[i_] == '\\') fail("escapes in header strings are not supported");
      ++i_;
    }
    if (i_ >= s_.size()) fail("unterminated string");
    return std::string(s_.substr(start, i_++ - start));
  }
  bool boolean() {
    skip_ws();
    if (s_.substr(i_, 4) == "True") { i_ += 4; return true; }
    if (s_.substr(i_, 5) == "False") { i_ += 5; return false; }
    fail("fortran_order must be True or False");
    return false;
  }
  int64_t integer() {
    skip_ws();
    const size_t start = i_;
    int64_t v = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      const int digit = s_[i_++] - '0';
      if (v > (INT64_MAX - digit) / 10) fail("shape extent overflows 64 bits");
      v = v * 10 + digit;
    }
    if (i_ == start) fail("shape extents must be non-negative integers");
    if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix, written by old NumPy
    return v;
  }
  std::vector<int64_t> shape() {
    expect('(', "'(' opening the shape tuple");
    std::vector<int64_t> dims;
    if (eat(')')) return dims;
    while (true) {
      dims.push_back(integer());
      if (dims.size() > 32) fail("shape has more than 32 dims");
      if (eat(')')) return dims;
      expect(',', "',' or ')' in the shape tuple");
      if (eat(')')) return dims;
    }
  }
  bool at_end() {
    skip_ws();
    return i_ == s_.size();
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("header: " + what + " at offset " + std::to_string(i_));
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

void parse_descr(const std::string& d, NpyArray& a) {
  if (d.size() < 3) throw Error("descr '" + d + "' is not a simple dtype such as '<f4'");
  const char order = d[0];
  if (order != '<' && order != '>' && order != '|' && order != '=')
    throw Error("descr '" + d + "': byte order must be '<', '>', '|' or '='");
  a.kind = d[1];
  if (a.kind != 'f' && a.kind != 'u' && a.kind != 'i' && a.kind != 'b')
    throw Error("descr '" + d + "': only float ('f'), integer ('u', 'i') and bool ('b') arrays are read");
  const std::string size = d.substr(2);
  if (size != "1" && size != "2" && size != "4" && size != "8")
    throw Error("descr '" + d + "': element size must be 1, 2, 4 or 8 bytes");
  a.itemsize = size[0] - '0';
  a.big_endian = order == '>' && a.itemsize > 1;
}

void parse_header(std::string_view text, NpyArray& a) {
  HeaderParser h(text);
  h.expect('{', "'{' opening the header dict");
  bool have_descr = false, have_order = false, have_shape = false;
  while (!h.eat('}')) {
    const std::string key = h.string_literal();
    h.expect(':', "':' after a key");
    if (key == "descr" && !have_descr) {
      parse_descr(h.string_literal(), a);
      have_descr = true;
    } else if (key == "fortran_order" && !have_order) {
      a.fortran_order = h.boolean();
      have_order = true;
    } else if (key == "shape" && !have_shape) {
      a.shape = h.shape();
      have_shape = true;
    } else {
      h.fail("unexpected or repeated key '" + key + "' (structured dtypes are not read)");
    }
    if (!h.eat(',')) {
      h.expect('}', "',' or '}' in the header dict");
      break;
    }
  }
  if (!h.at_end()) h.fail("text after the header dict");
  if (!have_descr || !have_order || !have_shape)
    throw Error("header: needs the keys 'descr', 'fortran_order' and 'shape'");
}

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string NpyArray::descr() const {
  return std::string(itemsize == 1 ? "|" : big_endian ? ">" : "<") + kind + std::to_string(itemsize);
}

uint64_t NpyArray::raw(int64_t k) const {
  const unsigned char* p = data.data() + static_cast<size_t>(k) * static_cast<size_t>(itemsize);
  uint64_t v = 0;
  for (int b = 0; b < itemsize; ++b) {  // little-endian host (x86-64, aarch64)
    const int shift = 8 * (big_endian ? itemsize - 1 - b : b);
    v |= static_cast<uint64_t>(p[b]) << shift;
  }
  return v;
}

int64_t NpyArray::file_position(int64_t i) const {
  if (!fortran_order) return i;
  int64_t pos = 0, stride = 1;
  int64_t idx[32];  // parse_npy accepts at most 32 dims
  for (size_t d = shape.size(); d-- > 0;) {  // logical row-major digits
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  for (size_t d = 0; d < shape.size(); ++d) {  // Fortran: the first index varies fastest
    pos += idx[d] * stride;
    stride *= shape[d];
  }
  return pos;
}

NpyArray parse_npy(const unsigned char* bytes, size_t size) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(bytes, magic, 6) != 0) throw Error("not a .npy file (no \\x93NUMPY magic)");
  const int major = bytes[6];
  size_t header_len = 0, preamble = 0;
  if (major == 1) {
    header_len = bytes[8] | (size_t{bytes[9]} << 8);
    preamble = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw Error("truncated .npy preamble");
    header_len = bytes[8] | (size_t{bytes[9]} << 8) | (size_t{bytes[10]} << 16) | (size_t{bytes[11]} << 24);
    preamble = 12;
  } else {
    throw Error("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(bytes[7]));
  }
  if (header_len > (size_t{1} << 20)) throw Error("header longer than 1 MiB");
  if (header_len > size - preamble) throw Error("header runs past the end of the file");
  NpyArray a;
  parse_header(std::string_view(reinterpret_cast<const char*>(bytes + preamble), header_len), a);
  const size_t offset = preamble + header_len;
  uint64_t count = 1;
  for (auto d : a.shape) {
    const uint64_t e = static_cast<uint64_t>(d);
    if (e != 0 && count > (uint64_t{1} << 59) / e) throw Error("array size overflows");
    count *= e;
  }
  const uint64_t need = count * static_cast<uint64_t>(a.itemsize);  // ≤ 2^59 · 8 fits
  const uint64_t have = size - offset;
  if (need != have)
    throw Error(fmt::format("data holds {} bytes, the header's shape and dtype say {}", have, need));
  a.data.assign(bytes + offset, bytes + size);
  return a;
}

std::vector<unsigned char> read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path + ": " + std::strerror(errno));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error("error reading " + path);
  return bytes;
}

NpyArray read_npy(const std::string& path) {
  const auto bytes = read_file_bytes(path);
  try {
    return parse_npy(bytes.data(), bytes.size());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace normcheck
