#include "normcheck/tensor.hpp"

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "normcheck/lowp.hpp"

namespace normcheck {

double round_to(DType t, double v) {
  switch (t) {
    case DType::f32: return static_cast<double>(static_cast<float>(v));
    case DType::f64: return v;
    case DType::f16: return static_cast<double>(static_cast<float>(static_cast<f16>(v)));
    case DType::bf16: return static_cast<double>(static_cast<float>(bf16(static_cast<float>(v))));
  }
  return v;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> dims, Layout layout)
    : dtype_(dtype), dims_(std::move(dims)) {
  const int r = static_cast<int>(dims_.size());
  strides_.assign(r, 1);
  numel_ = 1;
  for (auto d : dims_) numel_ *= d;
  // Physical order: nchw = logical order; nhwc = N, spatial..., C.
  std::vector<int> order(r);
  for (int i = 0; i < r; ++i) order[i] = i;
  if (layout == Layout::nhwc && r >= 3) {
    order.erase(order.begin() + 1);
    order.push_back(1);
  }
  int64_t s = 1;
  for (int k = r - 1; k >= 0; --k) {
    strides_[order[k]] = s;
    s *= dims_[order[k]];
  }
  int64_t inner = 1;  // row-major: stride of d = product of the extents after d (extent-1 dims aside)
  for (int d = r - 1; d >= 0; --d) {
    if (dims_[d] > 1 && strides_[d] != inner) row_major_ = false;
    inner *= dims_[d];
  }
  storage_.assign(static_cast<size_t>(numel_) * dtype_size(dtype_), 0);
}

int64_t Tensor::offset_of(int64_t i) const {
  if (row_major_) return i * static_cast<int64_t>(dtype_size(dtype_));
  int64_t off = 0;
  for (int d = static_cast<int>(dims_.size()) - 1; d >= 0; --d) {
    off += (i % dims_[d]) * strides_[d];
    i /= dims_[d];
  }
  return off * dtype_size(dtype_);
}

double Tensor::get(int64_t i) const {
  const unsigned char* p = storage_.data() + offset_of(i);
  switch (dtype_) {
    case DType::f32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::f64: { double d; std::memcpy(&d, p, 8); return d; }
    case DType::f16: { f16 h; std::memcpy(&h, p, 2); return static_cast<double>(static_cast<float>(h)); }
    case DType::bf16: { bf16 b; std::memcpy(&b, p, 2); return static_cast<double>(static_cast<float>(b)); }
  }
  return 0;
}

namespace {

/// v rounded to the storage type T (round to nearest even; bf16 through float, as every bf16
/// producer does), written at p.
template <class T>
void store(unsigned char* p, double v) {
  T x;
  if constexpr (std::is_same_v<T, bf16>) x = bf16(static_cast<float>(v));
  else x = static_cast<T>(v);
  std::memcpy(p, &x, sizeof(T));
}

}  // namespace

void Tensor::set(int64_t i, double v) { write(i, i + 1, &v); }

void Tensor::write(int64_t lo, int64_t hi, const double* in) {
  if (hi <= lo) return;
  auto write_as = [&](auto type) {
    using T = decltype(type);
    for (int64_t i = lo; i < hi; ++i) store<T>(storage_.data() + offset_of(i), in[i - lo]);
  };
  switch (dtype_) {
    case DType::f32: write_as(float{}); return;
    case DType::f64: write_as(double{}); return;
    case DType::f16: write_as(f16{}); return;
    case DType::bf16: write_as(bf16{}); return;
  }
}

std::vector<double> Tensor::to_vector() const {
  std::vector<double> out(numel_);
  read(0, numel_, out.data());
  return out;
}

void Tensor::read(int64_t lo, int64_t hi, double* out) const {
  if (hi <= lo) return;  // (an empty tensor's data pointer may be null: no memcpy from it)
  if (row_major_ && dtype_ == DType::f32) {  // the common case without a switch and an offset per element
    const unsigned char* p = storage_.data();
    for (int64_t i = lo; i < hi; ++i) {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      out[i - lo] = f;
    }
    return;
  }
  if (row_major_ && dtype_ == DType::f64) {
    std::memcpy(out, storage_.data() + 8 * lo, static_cast<size_t>(hi - lo) * 8);
    return;
  }
  for (int64_t i = lo; i < hi; ++i) out[i - lo] = get(i);
}

TensorArg Tensor::arg() {
  TensorArg a;
  if (storage_.empty()) return a;
  a.data = storage_.data();
  a.dtype = dtype_;
  a.rank = static_cast<int32_t>(dims_.size());
  for (int d = 0; d < a.rank; ++d) {
    a.dims[d] = dims_[d];
    a.strides[d] = strides_[d];
  }
  return a;
}

}  // namespace normcheck
