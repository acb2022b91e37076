// normcheck — the differences between oneDNN's v2 (2.x) and v3 (3.x) C++ APIs, in one place.
//
// v2 builds an operation descriptor (`desc`) and then a primitive descriptor from it; v3 builds
// the primitive descriptor directly from the engine. Group normalization exists from 3.3 and the
// rms_norm flag from 3.9 (shared/research/conventions.md §2.3).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_version.h>

#include <unordered_map>

#define NORMCHECK_DNNL_AT_LEAST(major, minor) \
  (DNNL_VERSION_MAJOR > (major) || (DNNL_VERSION_MAJOR == (major) && DNNL_VERSION_MINOR >= (minor)))

#define NORMCHECK_DNNL_HAS_GROUP_NORM NORMCHECK_DNNL_AT_LEAST(3, 3)
#define NORMCHECK_DNNL_HAS_RMS_NORM NORMCHECK_DNNL_AT_LEAST(3, 9)

namespace normcheck::onednn_compat {


using dnnl::batch_normalization_backward;
using dnnl::batch_normalization_forward;
using dnnl::engine;
using dnnl::layer_normalization_backward;
using dnnl::layer_normalization_forward;
using dnnl::memory;
using dnnl::normalization_flags;
using dnnl::prop_kind;

inline batch_normalization_forward::primitive_desc bn_forward(const engine& e, prop_kind prop,
                                                              const memory::desc& src, float eps,
                                                              normalization_flags flags) {
#if DNNL_VERSION_MAJOR >= 3
  return {e, prop, src, src, eps, flags};
#else
  return {batch_normalization_forward::desc(prop, src, eps, flags), e};
#endif
}

inline batch_normalization_backward::primitive_desc bn_backward(
    const engine& e, prop_kind prop, const memory::desc& diff, const memory::desc& src, float eps,
    normalization_flags flags, const batch_normalization_forward::primitive_desc& hint) {
#if DNNL_VERSION_MAJOR >= 3
  return {e, prop, diff, diff, src, eps, flags, hint};
#else
  return {batch_normalization_backward::desc(prop, diff, src, eps, flags), e, hint};
#endif
}

inline layer_normalization_forward::primitive_desc ln_forward(const engine& e, prop_kind prop,
                                                              const memory::desc& src,
                                                              const memory::desc& stats, float eps,
                                                              normalization_flags flags) {
#if DNNL_VERSION_MAJOR >= 3
  return {e, prop, src, src, stats, eps, flags};
#else
  return {layer_normalization_forward::desc(prop, src, stats, eps, flags), e};
#endif
}

inline layer_normalization_backward::primitive_desc ln_backward(
    const engine& e, prop_kind prop, const memory::desc& diff, const memory::desc& src,
    const memory::desc& stats, float eps, normalization_flags flags,
    const layer_normalization_forward::primitive_desc& hint) {
#if DNNL_VERSION_MAJOR >= 3
  return {e, prop, diff, diff, src, stats, eps, flags, hint};
#else
  return {layer_normalization_backward::desc(prop, diff, src, stats, eps, flags), e, hint};
#endif
}

#if NORMCHECK_DNNL_HAS_GROUP_NORM
inline dnnl::group_normalization_forward::primitive_desc gn_forward(const engine& e, prop_kind prop,
                                                                    const memory::desc& src,
                                                                    memory::dim groups, float eps,
                                                                    normalization_flags flags) {
  return {e, prop, src, src, groups, eps, flags};
}
inline dnnl::group_normalization_backward::primitive_desc gn_backward(
    const engine& e, prop_kind prop, const memory::desc& diff, const memory::desc& src,
    memory::dim groups, float eps, normalization_flags flags,
    const dnnl::group_normalization_forward::primitive_desc& hint) {
  return {e, prop, diff, diff, src, groups, eps, flags, hint};
}
#endif

/// Backward with use_shift: whether SHIFT is an input differs by primitive and version (2.6.3
/// batch and layer norm require it; 3.7.2 layer norm requires it, batch norm refuses it with
/// "bad number of inputs (expected 5 got 6)"; exec_arg_md lists it either way). So ask the
/// primitive how many inputs it counts, and add SHIFT when it expects one more than given.
template <class PD>
void add_shift_if_counted(const PD& pd, std::unordered_map<int, memory>& args, const memory& shift) {
  int given = 0;
  for (const auto& kv : args)
    if (kv.first == DNNL_ARG_SRC || kv.first == DNNL_ARG_DIFF_DST || kv.first == DNNL_ARG_MEAN ||
        kv.first == DNNL_ARG_VARIANCE || kv.first == DNNL_ARG_SCALE)
      ++given;
  if (dnnl_primitive_desc_query_s32(pd.get(), dnnl_query_num_of_inputs_s32, 0) > given)
    args.insert({DNNL_ARG_SHIFT, shift});
}

/// Name of the CPU ISA the library dispatches to (dnnl::get_effective_cpu_isa()).
inline const char* effective_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

}  // namespace normcheck::onednn_compat
