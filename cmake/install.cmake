# Installation: the pkg-config files and the CMake package. Included by the
# top-level CMakeLists.txt after GNUInstallDirs; producer/ and consumer/ call
# evr_install_pkgconfig, the top level calls evr_install_package once every
# library is defined.
#
# What `cmake --install build --prefix P` (make install PREFIX=P) lays out:
#   P/lib/libevring.so.0.1.0, libevring-consumer.so.0.1.0   (+ .so.0, .so links)
#   P/include/evring/*.h                                   public headers only
#   P/bin/evring, evring-demo                               the tools
#   P/lib/pkgconfig/evring.pc, evring-consumer.pc
#   P/lib/cmake/evring/evringConfig.cmake, ...Version.cmake, evringTargets*.cmake
# (lib and include are CMAKE_INSTALL_LIBDIR and CMAKE_INSTALL_INCLUDEDIR.)

include(CMakePackageConfigHelpers)

# Installs a pkg-config file from template (NAME.pc.in beside the caller).
# The template's @PROJECT_VERSION@ is filled in now; its prefix, libdir and
# includedir lines take @EVR_PC_PREFIX@, @EVR_PC_LIBDIR@ and @EVR_PC_INCLUDEDIR@.
# The prefix is the one given at install time (cmake --install --prefix), not
# the one configured, so the file is written when installing, straight to its
# destination (under DESTDIR when that is set), and listed in the manifest.
function(evr_install_pkgconfig template)
  get_filename_component(name "${template}" NAME_WLE)
  foreach(dir LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
      set(EVR_PC_${dir} "${CMAKE_INSTALL_${dir}}")
    else()
      set(EVR_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
    endif()
  endforeach()
  set(EVR_PC_PREFIX "@EVR_PC_PREFIX@") # kept for the install-time pass
  set(staged "${CMAKE_CURRENT_BINARY_DIR}/${name}.in")
  configure_file("${template}" "${staged}" @ONLY)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(dest "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
  else()
    set(dest "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig")
  endif()
  install(CODE "
    set(EVR_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    set(evr_pc \"${dest}/${name}\")
    message(STATUS \"Installing: \$ENV{DESTDIR}\${evr_pc}\")
    configure_file(\"${staged}\" \"\$ENV{DESTDIR}\${evr_pc}\" @ONLY)
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${evr_pc}\") # as file(INSTALL): without DESTDIR
  ")
endfunction()

# The CMake package: find_package(evring) gives evring::evring (the producer
# library) and evring::consumer. Call after both are installed with
# EXPORT evringTargets.
function(evr_install_package)
  set(dest "${CMAKE_INSTALL_LIBDIR}/cmake/evring")
  install(EXPORT evringTargets NAMESPACE evring:: DESTINATION "${dest}")
  configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/evringConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/evringConfig.cmake" INSTALL_DESTINATION "${dest}")
  # Before 1.0 a minor release may change the API: 0.1 does not satisfy 0.2.
  if(PROJECT_VERSION_MAJOR EQUAL 0)
    set(compat SameMinorVersion)
  else()
    set(compat SameMajorVersion)
  endif()
  write_basic_package_version_file("${PROJECT_BINARY_DIR}/evringConfigVersion.cmake"
    VERSION "${PROJECT_VERSION}" COMPATIBILITY ${compat})
  install(FILES "${PROJECT_BINARY_DIR}/evringConfig.cmake" "${PROJECT_BINARY_DIR}/evringConfigVersion.cmake"
    DESTINATION "${dest}")
endfunction()

# After the libraries are installed, cmake/ldconfig.cmake (its comment says
# when it runs ldconfig). Call last in the top-level CMakeLists.txt: install
# rules run in the order they are declared, subdirectories' included.
function(evr_install_ldconfig)
  install(CODE "set(EVR_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
include(\"${PROJECT_SOURCE_DIR}/cmake/ldconfig.cmake\")")
endfunction()
