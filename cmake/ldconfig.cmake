# Run by `cmake --install` (make install) after the libraries are in place
# (cmake/install.cmake, evr_install_ldconfig), with EVR_LIBDIR set.
#
# When the libdir is one the dynamic linker searches (a directory that
# `ldconfig -v -N` lists: /usr/local/lib on Debian) and this is the real
# install (root, no DESTDIR), runs ldconfig, so that a program linked with
# -levring runs at once. Otherwise it says what to do: a packager's DESTDIR
# install leaves ldconfig to the package's triggers; another prefix needs
# LD_LIBRARY_PATH or an /etc/ld.so.conf.d entry.

cmake_policy(SET CMP0057 NEW) # if(IN_LIST): install scripts run with no policies set
set(libdir "${EVR_LIBDIR}")
if(NOT IS_ABSOLUTE "${libdir}")
  set(libdir "${CMAKE_INSTALL_PREFIX}/${libdir}")
endif()
get_filename_component(libdir "${libdir}" REALPATH)

find_program(evr_ldconfig ldconfig PATHS /sbin /usr/sbin)
set(searched "")
if(evr_ldconfig)
  # Its directory lines are "DIR: (from FILE:LINE)"; the libraries under them start with a tab.
  execute_process(COMMAND "${evr_ldconfig}" -v -N OUTPUT_VARIABLE scan ERROR_QUIET)
  string(REPLACE "\n" ";" lines "${scan}")
  foreach(line IN LISTS lines)
    if(line MATCHES "^(/[^:]*):")
      get_filename_component(dir "${CMAKE_MATCH_1}" REALPATH)
      list(APPEND searched "${dir}")
    endif()
  endforeach()
endif()
execute_process(COMMAND id -u OUTPUT_VARIABLE uid OUTPUT_STRIP_TRAILING_WHITESPACE)

if(NOT evr_ldconfig OR NOT libdir IN_LIST searched)
  message(STATUS "evring: ${libdir} is not in the dynamic linker's search path: run programs with "
                 "LD_LIBRARY_PATH=${libdir}, or add it to /etc/ld.so.conf.d/ and run ldconfig")
elseif(NOT "$ENV{DESTDIR}" STREQUAL "")
  message(STATUS "evring: DESTDIR install: ldconfig is left to the package's install")
elseif(NOT uid STREQUAL "0")
  message(STATUS "evring: not root: run ldconfig as root so that programs find libevring.so.0 in ${libdir}")
else()
  message(STATUS "evring: running ldconfig (${libdir} is in the dynamic linker's search path)")
  execute_process(COMMAND "${evr_ldconfig}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "evring: ldconfig failed (status ${rc})")
  endif()
endif()
