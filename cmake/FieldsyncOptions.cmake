# Warnings, sanitizers and ccache for every fieldsync target.
option(FIELDSYNC_WERROR "Treat warnings as errors" OFF)
set(FIELDSYNC_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address,undefined")
# libFuzzer build of the fuzz targets (scripts/fuzz.sh, build-fuzz): clang only.
option(FIELDSYNC_FUZZ "Build fuzz/ as libFuzzer targets with ASan+UBSan (clang)" OFF)

# lld links the g++ builds' test executables (Debug, sanitizers) about three times faster than
# the default ld.bfd; used where it is installed (scripts/install-deps.sh installs it). The
# fuzz build (clang) keeps its linker.
option(FIELDSYNC_LLD "Link the g++ builds with lld when it is installed" ON)
if(FIELDSYNC_LLD AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  include(CheckLinkerFlag)
  check_linker_flag(CXX -fuse-ld=lld FIELDSYNC_HAVE_LLD)
  if(FIELDSYNC_HAVE_LLD)
    add_link_options(-fuse-ld=lld)
  endif()
endif()

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  add_compile_options(-Wall -Wextra -Wpedantic -Wshadow=local -Wnon-virtual-dtor)
else()  # clang (the fuzz build) has no -Wshadow=local
  add_compile_options(-Wall -Wextra -Wpedantic -Wnon-virtual-dtor)
endif()
# Every Asio user must see the same Asio: mixing translation units with and without this
# define is an ODR violation (seen as "cannot listen: Bad file descriptor" at start).
add_compile_definitions(BOOST_ASIO_NO_DEPRECATED)
if(FIELDSYNC_WERROR)
  add_compile_options(-Werror)
endif()
if(FIELDSYNC_SANITIZE)
  add_compile_options(-fsanitize=${FIELDSYNC_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${FIELDSYNC_SANITIZE})
  # Tests that cannot run under a sanitizer runtime (fd exhaustion) skip on this.
  add_compile_definitions(FIELDSYNC_SANITIZED=1)
  if(FIELDSYNC_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # g++ 12 warns (-Wtsan) at every std::atomic_thread_fence, which Asio's std_fenced_block
    # uses: TSan does not model fences. Asio's hand-offs between threads go through mutexes,
    # which TSan does see; the warning would only stop the -Werror build.
    add_compile_options(-Wno-tsan)
  endif()
endif()
if(FIELDSYNC_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "FIELDSYNC_FUZZ=ON needs clang (-DCMAKE_CXX_COMPILER=clang++)")
  endif()
  # Every library gets coverage instrumentation; the fuzz targets link libFuzzer's main.
  # -fno-sanitize=function: clang's function-type check (part of "undefined" in C++) puts
  # prologue data into the functions CoroSplit clones from a coroutine, and clang 14 then
  # fails ipc/http_server.cpp with "Cannot represent a difference across sections"
  # (llvm-project#49689), with or without the coverage flag. Every other UBSan check stays on.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=function
                      -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# Every fieldsync library: headers included as "storage/store.hpp" from the repo root.
function(fieldsync_library name)
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()
