# libtorch detection for the pytorch backend (backends/pytorch).
#
# normcheck_find_torch(<found-var> <why-var>): locates the ATen headers, libtorch_cpu and libc10
# itself (NORMCHECK_TORCH_ROOT, an install prefix, first; then the default search, which finds
# Debian's libtorch-dev under /usr). Torch's own CMake config (TorchConfig.cmake → Caffe2Config)
# is not used: it needs glog, gflags and protobuf configs, none of which the backend uses, and a
# failing find_package inside it would stop this configure. Defines the imported target
# normcheck::torch and sets NORMCHECK_TORCH_VERSION (torch/csrc/api/include/torch/version.h) and
# NORMCHECK_TORCH_PACKAGE (the Debian package version, when dpkg knows it). Sets <found-var> to
# TRUE, or FALSE with <why-var> holding one line: what is missing.

function(normcheck_find_torch found_var why_var)
  set(_hints)
  if(NORMCHECK_TORCH_ROOT)
    set(_hints HINTS "${NORMCHECK_TORCH_ROOT}/include" "${NORMCHECK_TORCH_ROOT}/lib")
  endif()
  find_path(NORMCHECK_TORCH_INCLUDE_DIR ATen/ops/native_batch_norm.h ${_hints})
  find_path(NORMCHECK_TORCH_API_INCLUDE_DIR torch/version.h ${_hints}
            PATH_SUFFIXES torch/csrc/api/include include/torch/csrc/api/include)
  find_library(NORMCHECK_TORCH_CPU_LIBRARY torch_cpu ${_hints})
  find_library(NORMCHECK_C10_LIBRARY c10 ${_hints})
  set(_missing)
  foreach(_v NORMCHECK_TORCH_INCLUDE_DIR NORMCHECK_TORCH_API_INCLUDE_DIR NORMCHECK_TORCH_CPU_LIBRARY NORMCHECK_C10_LIBRARY)
    if(NOT ${_v})
      list(APPEND _missing ${_v})
    endif()
  endforeach()
  if(_missing)
    list(JOIN _missing ", " _m)
    set(${found_var} FALSE PARENT_SCOPE)
    set(${why_var} "libtorch not found (${_m} not found; install libtorch-dev or set NORMCHECK_TORCH_ROOT)" PARENT_SCOPE)
    return()
  endif()
  file(STRINGS "${NORMCHECK_TORCH_API_INCLUDE_DIR}/torch/version.h" _lines REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
  set(_ver)
  foreach(_l IN LISTS _lines)
    string(REGEX REPLACE ".* ([0-9]+)$" "\\1" _n "${_l}")
    list(APPEND _ver ${_n})
  endforeach()
  list(JOIN _ver "." _ver)
  set(NORMCHECK_TORCH_VERSION "${_ver}" PARENT_SCOPE)
  set(_pkg "")
  if(NOT NORMCHECK_TORCH_ROOT)
    execute_process(COMMAND dpkg-query -W -f=\${Version} libtorch-dev OUTPUT_VARIABLE _pkg ERROR_QUIET
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
  endif()
  set(NORMCHECK_TORCH_PACKAGE "${_pkg}" PARENT_SCOPE)
  if(NOT TARGET normcheck::torch)
    add_library(normcheck::torch INTERFACE IMPORTED)
    set_target_properties(normcheck::torch PROPERTIES
      INTERFACE_LINK_LIBRARIES "${NORMCHECK_TORCH_CPU_LIBRARY};${NORMCHECK_C10_LIBRARY}")
    if(NOT NORMCHECK_TORCH_INCLUDE_DIR STREQUAL "/usr/include")
      set_target_properties(normcheck::torch PROPERTIES
        INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${NORMCHECK_TORCH_INCLUDE_DIR}")
    endif()
  endif()
  set(${found_var} TRUE PARENT_SCOPE)
endfunction()
