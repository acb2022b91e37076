# CUDA runtime + cuDNN detection for the cudnn backend (backends/cudnn).
#
# normcheck_find_cudnn(<found-var> <why-var>): looks for cuda_runtime.h, libcudart, cudnn.h
# (with cudnn_backend.h, i.e. cuDNN ≥ 8) and libcudnn. With NORMCHECK_CUDA_ROOT set, only under
# that prefix (include/, lib64/, lib/); otherwise under $CUDA_PATH, /usr/local/cuda, the newest
# /usr/local/cuda-* and the system directories (NVIDIA's Debian packages). NORMCHECK_CUDNN_ROOT
# adds a separate cuDNN prefix. On success defines the imported targets normcheck::cudart and
# normcheck::cudnn, sets NORMCHECK_CUDNN_VERSION ("9.19.0") and <found-var> TRUE; otherwise
# <found-var> FALSE and <why-var> one line saying what is missing where. Only headers and shared
# libraries are needed: no nvcc, no GPU (the backend compiles as plain C++).

function(normcheck_find_cudnn found_var why_var)
  set(${found_var} FALSE PARENT_SCOPE)
  set(_roots "")
  set(_no_default "")
  if(NORMCHECK_CUDA_ROOT)
    list(APPEND _roots "${NORMCHECK_CUDA_ROOT}")
    set(_no_default NO_DEFAULT_PATH)
    set(_where "NORMCHECK_CUDA_ROOT=${NORMCHECK_CUDA_ROOT}")
  else()
    if(DEFINED ENV{CUDA_PATH})
      list(APPEND _roots "$ENV{CUDA_PATH}")
    endif()
    list(APPEND _roots /usr/local/cuda)
    file(GLOB _versioned LIST_DIRECTORIES true /usr/local/cuda-*)
    list(SORT _versioned COMPARE NATURAL ORDER DESCENDING)
    list(APPEND _roots ${_versioned})
    set(_where "$CUDA_PATH, /usr/local/cuda, /usr/local/cuda-* and the system paths")
  endif()
  set(_cudnn_roots ${_roots})
  if(NORMCHECK_CUDNN_ROOT)
    list(PREPEND _cudnn_roots "${NORMCHECK_CUDNN_ROOT}")
  endif()
  # Fresh searches each configure: a root changed on the command line is honoured.
  foreach(_v NORMCHECK_CUDART_INCLUDE NORMCHECK_CUDART_LIB NORMCHECK_CUDNN_INCLUDE NORMCHECK_CUDNN_LIB)
    unset(${_v} CACHE)
  endforeach()
  find_path(NORMCHECK_CUDART_INCLUDE cuda_runtime.h HINTS ${_roots} PATH_SUFFIXES include ${_no_default})
  find_library(NORMCHECK_CUDART_LIB cudart HINTS ${_roots} PATH_SUFFIXES lib64 lib ${_no_default})
  find_path(NORMCHECK_CUDNN_INCLUDE cudnn_backend.h HINTS ${_cudnn_roots} PATH_SUFFIXES include ${_no_default})
  find_library(NORMCHECK_CUDNN_LIB cudnn HINTS ${_cudnn_roots} PATH_SUFFIXES lib64 lib ${_no_default})
  set(_missing "")
  foreach(_v NORMCHECK_CUDART_INCLUDE NORMCHECK_CUDART_LIB NORMCHECK_CUDNN_INCLUDE NORMCHECK_CUDNN_LIB)
    if(NOT ${_v})
      list(APPEND _missing ${_v})
    endif()
  endforeach()
  if(_missing)
    string(REPLACE ";" ", " _missing "${_missing}")
    string(REPLACE "NORMCHECK_CUDART_INCLUDE" "cuda_runtime.h" _missing "${_missing}")
    string(REPLACE "NORMCHECK_CUDART_LIB" "libcudart" _missing "${_missing}")
    string(REPLACE "NORMCHECK_CUDNN_INCLUDE" "cudnn_backend.h" _missing "${_missing}")
    string(REPLACE "NORMCHECK_CUDNN_LIB" "libcudnn" _missing "${_missing}")
    set(${why_var} "no ${_missing} in ${_where}" PARENT_SCOPE)
    return()
  endif()
  file(STRINGS "${NORMCHECK_CUDNN_INCLUDE}/cudnn_version.h" _ver REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ")
  string(REGEX REPLACE ".*CUDNN_MAJOR ([0-9]+).*CUDNN_MINOR ([0-9]+).*CUDNN_PATCHLEVEL ([0-9]+).*" "\\1.\\2.\\3" _ver "${_ver}")
  if(_ver VERSION_LESS 9)
    set(${why_var} "cuDNN ${_ver} in ${NORMCHECK_CUDNN_INCLUDE} is older than 9 (the backend uses cuDNN 9's graph norm API)" PARENT_SCOPE)
    return()
  endif()
  if(NOT TARGET normcheck::cudart)
    add_library(normcheck::cudart SHARED IMPORTED GLOBAL)
    set_target_properties(normcheck::cudart PROPERTIES IMPORTED_LOCATION "${NORMCHECK_CUDART_LIB}"
                          INTERFACE_INCLUDE_DIRECTORIES "${NORMCHECK_CUDART_INCLUDE}")
    add_library(normcheck::cudnn SHARED IMPORTED GLOBAL)
    set_target_properties(normcheck::cudnn PROPERTIES IMPORTED_LOCATION "${NORMCHECK_CUDNN_LIB}"
                          INTERFACE_INCLUDE_DIRECTORIES "${NORMCHECK_CUDNN_INCLUDE}")
  endif()
  set(NORMCHECK_CUDNN_VERSION "${_ver}" PARENT_SCOPE)
  set(${found_var} TRUE PARENT_SCOPE)
endfunction()
