# oneDNN detection for the onednn backend (backends/onednn).
#
# normcheck_find_dnnl(): the search itself. NORMCHECK_ONEDNN_ROOT (an install prefix holding
# lib/cmake/dnnl) first, then CMake's default search (Debian's libdnnl-dev). Sets dnnl_FOUND,
# dnnl_DIR, dnnl_VERSION and the DNNL::dnnl target, like find_package(dnnl CONFIG).
#
# normcheck_probe_dnnl(<ok-var> <why-var>): runs normcheck_find_dnnl() and the OpenMP search the
# backend needs in a child CMake configure (cmake/onednn-probe), so that a oneDNN whose package
# config fails cannot stop this configure. A failing find_package(... REQUIRED) inside a package
# config is fatal in CMake; bookworm's libdnnl-dev config calls find_package(OpenCL REQUIRED), and
# the package only Recommends the OpenCL headers. Sets <ok-var> to TRUE when the child configure
# succeeds (whether or not it found a oneDNN), else FALSE with <why-var> holding one line: the
# config that failed and its first error message. The child sees the search settings of this
# configure: NORMCHECK_ONEDNN_ROOT, dnnl_DIR, CMAKE_PREFIX_PATH, the CMAKE_*IGNORE* paths,
# CMAKE_DISABLE_FIND_PACKAGE_* / CMAKE_REQUIRE_FIND_PACKAGE_*, and OpenCL_*/OpenMP_*/TBB_* hints.

macro(normcheck_find_dnnl)
  if(NORMCHECK_ONEDNN_ROOT)
    find_package(dnnl CONFIG PATHS "${NORMCHECK_ONEDNN_ROOT}" NO_DEFAULT_PATH)
  endif()
  if(NOT dnnl_FOUND)
    find_package(dnnl CONFIG)
  endif()
endmacro()

function(normcheck_probe_dnnl ok_var why_var)
  set(_src "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/onednn-probe")
  set(_bin "${CMAKE_BINARY_DIR}/onednn-probe")
  file(REMOVE_RECURSE "${_bin}")  # a fresh cache: an OpenCL installed since the last run is seen
  set(_args -S "${_src}" -B "${_bin}" -G "${CMAKE_GENERATOR}")
  get_cmake_property(_vars VARIABLES)
  foreach(_v IN LISTS _vars)
    if(_v MATCHES "^(NORMCHECK_ONEDNN_ROOT|dnnl_DIR|dnnl_ROOT|CMAKE_PREFIX_PATH|CMAKE_FIND_ROOT_PATH|CMAKE_(SYSTEM_)?IGNORE_(PREFIX_)?PATH|CMAKE_(DISABLE|REQUIRE)_FIND_PACKAGE_.*|OpenCL_.*|OpenMP_.*|TBB_.*|CMAKE_MAKE_PROGRAM|CMAKE_CXX_COMPILER)$"
       AND NOT "${${_v}}" STREQUAL "" AND NOT "${${_v}}" MATCHES "-NOTFOUND$")
      string(REPLACE ";" "\\;" _value "${${_v}}")
      list(APPEND _args "-D${_v}=${_value}")
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_COMMAND}" ${_args}
                  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  if(_rc EQUAL 0)
    set(${ok_var} TRUE PARENT_SCOPE)
    return()
  endif()
  # One line: which config failed and its first error message.
  set(_where "oneDNN's CMake config")
  if(_err MATCHES "([^ \t\n]*dnnl-config\\.cmake)")
    set(_where "${CMAKE_MATCH_1}")
  endif()
  set(_what "exit ${_rc}; see ${_bin}")
  if(_err MATCHES "CMake Error[^\n]*\n(.*)")
    string(REGEX REPLACE "\nCall Stack.*" "" _what "${CMAKE_MATCH_1}")
    string(REGEX REPLACE "\n\n.*" "" _what "${_what}")
    string(REGEX REPLACE "[ \t\n]+" " " _what "${_what}")
    string(STRIP "${_what}" _what)
  endif()
  set(${ok_var} FALSE PARENT_SCOPE)
  set(${why_var} "${_where} failed: ${_what}" PARENT_SCOPE)
endfunction()
