#include "normcheck/tensor.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "normcheck/lowp.hpp"
#include "normcheck/memory.hpp"
#include "normcheck/parallel.hpp"

namespace normcheck {

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
  assign_large(storage_, static_cast<size_t>(numel_) * dtype_size(dtype_), static_cast<unsigned char>(0));
}

namespace {

/// f(T{}) for the storage type T of dtype t: the one dtype switch of get, set, read and write.
template <class F>
decltype(auto) with_storage_type(DType t, const F& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::f16: return f(f16{});
    case DType::bf16: return f(bf16{});
  }
  return f(double{});
}

/// The value of storage type T at element offset off of p, as a double (exact for every T).
template <class T>
double load(const unsigned char* p, int64_t off) {
  T x;
  std::memcpy(&x, p + sizeof(T) * off, sizeof(T));
  if constexpr (std::is_same_v<T, double>) return x;
  else return static_cast<double>(static_cast<float>(x));
}

/// v rounded to the storage type T: round to nearest even; bf16 through float, as every bf16
/// producer does.
template <class T>
T to_storage_type(double v) {
  if constexpr (std::is_same_v<T, bf16>) return bf16(static_cast<float>(v));
  else return static_cast<T>(v);
}

/// v rounded to the storage type T, written at element offset off of p.
template <class T>
void store(unsigned char* p, int64_t off, double v) {
  const T x = to_storage_type<T>(v);
  std::memcpy(p + sizeof(T) * off, &x, sizeof(T));
}

/// Calls f(k, element offset) for the logical elements lo + k, k < hi − lo, of a tensor with
/// these extents and strides (in elements): the coordinates of lo once, then an odometer over
/// the last dimension (no division per element).
template <class F>
void for_each_offset(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, int64_t lo, int64_t hi,
                     const F& f) {
  const int r = static_cast<int>(dims.size());
  if (r == 0) {
    for (int64_t k = 0; k < hi - lo; ++k) f(k, 0);
    return;
  }
  std::vector<int64_t> coord(static_cast<size_t>(r));
  int64_t off = 0;
  for (int64_t d = r - 1, i = lo; d >= 0; --d) {
    coord[d] = i % dims[d];
    off += coord[d] * strides[d];
    i /= dims[d];
  }
  const int64_t last = dims[r - 1], step = strides[r - 1];
  for (int64_t k = 0; k < hi - lo;) {
    const int64_t run = std::min(last - coord[r - 1], hi - lo - k);  // to the end of this row
    for (int64_t q = 0; q < run; ++q) f(k + q, off + q * step);
    k += run;
    off += run * step;
    coord[r - 1] += run;
    for (int d = r - 1; d > 0 && coord[d] == dims[d]; --d) {  // carry
      off -= coord[d] * strides[d];
      coord[d] = 0;
      ++coord[d - 1];
      off += strides[d - 1];
    }
  }
}

}  // namespace

double round_to(DType t, double v) {
  return with_storage_type(t, [&](auto type) {
    using T = decltype(type);
    if constexpr (std::is_same_v<T, double>) return v;
    else return static_cast<double>(static_cast<float>(to_storage_type<T>(v)));
  });
}

int64_t Tensor::element_offset(int64_t i) const {
  if (row_major_) return i;
  int64_t off = 0;
  for (int d = static_cast<int>(dims_.size()) - 1; d >= 0; --d) {
    off += (i % dims_[d]) * strides_[d];
    i /= dims_[d];
  }
  return off;
}

int64_t Tensor::offset_of(int64_t i) const { return element_offset(i) * static_cast<int64_t>(dtype_size(dtype_)); }

double Tensor::get(int64_t i) const {
  return with_storage_type(dtype_, [&](auto type) { return load<decltype(type)>(storage_.data(), element_offset(i)); });
}

void Tensor::set(int64_t i, double v) {
  with_storage_type(dtype_, [&](auto type) { store<decltype(type)>(storage_.data(), element_offset(i), v); });
}

void Tensor::write(int64_t lo, int64_t hi, const double* in) {
  if (hi <= lo) return;
  with_storage_type(dtype_, [&](auto type) {
    using T = decltype(type);
    unsigned char* p = storage_.data();
    if (row_major_) {
      for (int64_t i = lo; i < hi; ++i) store<T>(p, i, in[i - lo]);
      return;
    }
    for_each_offset(dims_, strides_, lo, hi, [&](int64_t k, int64_t off) { store<T>(p, off, in[k]); });
  });
}

std::vector<double> Tensor::to_vector(int threads) const {
  std::vector<double> out;
  assign_large(out, static_cast<size_t>(numel_));
  constexpr int64_t kRange = int64_t{1} << 16;
  parallel_for((numel_ + kRange - 1) / kRange, resolve_threads(threads), [&](int64_t r) {
    read(r * kRange, std::min(numel_, (r + 1) * kRange), out.data() + r * kRange);
  });
  return out;
}

void Tensor::read(int64_t lo, int64_t hi, double* out) const {
  if (hi <= lo) return;  // (an empty tensor's data pointer may be null: no memcpy from it)
  if (row_major_ && dtype_ == DType::f64) {
    std::memcpy(out, storage_.data() + 8 * lo, static_cast<size_t>(hi - lo) * 8);
    return;
  }
  with_storage_type(dtype_, [&](auto type) {
    using T = decltype(type);
    const unsigned char* p = storage_.data();
    if (row_major_) {
      for (int64_t i = lo; i < hi; ++i) out[i - lo] = load<T>(p, i);
      return;
    }
    for_each_offset(dims_, strides_, lo, hi, [&](int64_t k, int64_t off) { out[k] = load<T>(p, off); });
  });
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
