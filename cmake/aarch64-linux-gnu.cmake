# CMake toolchain file: cross-compiles fieldsync for 64-bit ARM (aarch64) on a Debian 12 amd64
# machine with Debian's cross compiler (crossbuild-essential-arm64: aarch64-linux-gnu-g++) and
# a sysroot holding the arm64 libraries and headers (scripts/cross-arm64.sh makes both).
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DFIELDSYNC_ARM64_SYSROOT=/path/to/sysroot
#
# The sysroot is an arm64 Debian 12 tree (mmdebstrap --variant=extract --arch=arm64); every
# library, CMake package and pkg-config file is looked up in it only, never on the build machine.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# The sysroot: -DFIELDSYNC_ARM64_SYSROOT=... (kept in the cache) or $FIELDSYNC_ARM64_SYSROOT.
# try_compile() projects read this file again: they get the value through the variable below.
if(NOT FIELDSYNC_ARM64_SYSROOT AND DEFINED ENV{FIELDSYNC_ARM64_SYSROOT})
  set(FIELDSYNC_ARM64_SYSROOT "$ENV{FIELDSYNC_ARM64_SYSROOT}")
endif()
if(NOT FIELDSYNC_ARM64_SYSROOT OR NOT IS_DIRECTORY "${FIELDSYNC_ARM64_SYSROOT}/usr/include")
  message(FATAL_ERROR "aarch64-linux-gnu.cmake: set FIELDSYNC_ARM64_SYSROOT to an arm64 sysroot "
                      "(scripts/cross-arm64.sh makes one); got '${FIELDSYNC_ARM64_SYSROOT}'")
endif()
set(FIELDSYNC_ARM64_SYSROOT "${FIELDSYNC_ARM64_SYSROOT}" CACHE PATH "The arm64 sysroot")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES FIELDSYNC_ARM64_SYSROOT)

set(CMAKE_SYSROOT "${FIELDSYNC_ARM64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${FIELDSYNC_ARM64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # build tools run here
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config (FindPkgConfig): the sysroot's .pc files only, their paths prefixed with it.
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_LIBDIR}
    "${FIELDSYNC_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${FIELDSYNC_ARM64_SYSROOT}/usr/lib/pkgconfig:${FIELDSYNC_ARM64_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${FIELDSYNC_ARM64_SYSROOT}")
