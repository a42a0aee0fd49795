# Every dependency comes from a Debian package (scripts/bootstrap.sh installs them) or
# from the CUDA toolkit when one is present.
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 CONFIG REQUIRED)

include(${CMAKE_CURRENT_LIST_DIR}/JanusCaf.cmake)
# libcrypto: the node join handshake's HMAC (actors/node_protocol.h).
find_package(OpenSSL REQUIRED)

find_package(CapnProto CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBFABRIC REQUIRED IMPORTED_TARGET libfabric>=1.17)
# The C++ build of Lua: errors unwind as exceptions, so C++ destructors run (the C
# build longjmps over them).
pkg_check_modules(LUA REQUIRED IMPORTED_TARGET lua5.4-c++)
# The tokenizers' split regexes (PCRE2, JIT-compiled) and Unicode normalization (utf8proc).
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
# janus serve's HTTP server (runtime/serving/http_server.cc): Debian's compiled cpp-httplib;
# its pkg-config Cflags carry the feature macros the library was built with.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_library(READLINE_LIBRARY readline REQUIRED)
find_package(doctest CONFIG REQUIRED)
include(doctest)

# CUDA is optional: found at /usr/local/cuda (or on PATH) it is built, so it cannot rot
# even where no GPU exists to run it.
set(JANUS_HAVE_CUDA OFF)
if(JANUS_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Hopper machine code (sm_90a: wgmma, setmaxnreg) plus compute_90 PTX that newer
    # GPUs' drivers can compile; the architecture flags are set by hand because this
    # CMake does not know the 'a' suffix.
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(JANUS_CUDA_FLAGS -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
        --expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib)
    set(JANUS_HAVE_CUDA ON)
    message(STATUS "janus: CUDA ${CUDAToolkit_VERSION} found, building the CUDA backend")
  else()
    message(STATUS "janus: no CUDA toolkit, building CPU only")
  endif()
endif()
