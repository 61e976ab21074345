# -DEVR_FUZZ=ON: the libFuzzer build that `make fuzz` configures in build-fuzz
# with CC=clang. Every target is compiled with libFuzzer's coverage
# instrumentation and ASan+UBSan, so the libraries tests/fuzz links are
# instrumented too; only tests/fuzz's targets are built from it.
if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "evring: missing dependency: install the Debian package clang (EVR_FUZZ needs CC=clang)")
endif()
if(NOT EVR_SANITIZE STREQUAL "")
  message(FATAL_ERROR "evring: EVR_FUZZ brings its own sanitizers: configure it without EVR_SANITIZE")
endif()

# libFuzzer is in compiler-rt, packaged apart from clang.
include(CheckCSourceCompiles)
set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer")
set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=fuzzer")
set(CMAKE_REQUIRED_QUIET ON)
check_c_source_compiles("
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return (int)(size && data[0]) * 0; }
" EVR_HAVE_LIBFUZZER)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_LINK_OPTIONS)
unset(CMAKE_REQUIRED_QUIET)
if(NOT EVR_HAVE_LIBFUZZER)
  string(REGEX MATCH "^[0-9]+" EVR_CLANG_MAJOR "${CMAKE_C_COMPILER_VERSION}")
  message(FATAL_ERROR "evring: missing dependency: install the Debian package libclang-rt-${EVR_CLANG_MAJOR}-dev (libFuzzer)")
endif()

add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer)
add_link_options(-fsanitize=address,undefined)
