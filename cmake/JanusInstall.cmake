# `cmake --install` puts the public headers under include/janus (the same paths as in the
# tree, so code includes "actors/deployment.h" in and out of it), the layer libraries, the
# janus command and a CMake package: find_package(janus REQUIRED) + janus::janus.
#
# Public headers are the layers an embedding program may use directly: none of them
# includes CAF, CUDA or Cap'n Proto (scripts/check_layers.py checks it). The actors'
# internals, the CUDA launchers and the applications stay private.
include(CMakePackageConfigHelpers)
set(JANUS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/janus)

set(_public_globs runtime/base/*.h runtime/model/*.h runtime/scheduling/*.h runtime/config/*.h
  gpu/cpu/*.h gpu/backend/*.h transport/*.h actors/deployment.h actors/request_events.h actors/node.h)
foreach(g ${_public_globs})
  file(GLOB _hs RELATIVE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/${g})
  foreach(h ${_hs})
    get_filename_component(dir ${h} DIRECTORY)
    install(FILES ${h} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/janus/${dir} COMPONENT janus)
  endforeach()
endforeach()

install(TARGETS ${JANUS_LIBRARIES} janus_embed EXPORT janusTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS janus RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT janusTargets NAMESPACE janus:: DESTINATION ${JANUS_CMAKE_DIR})

# The dependencies' imported targets the exported libraries name, made again for the
# consumer from the same Debian packages (cmake/janusConfig.cmake.in).
configure_package_config_file(cmake/janusConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/janusConfig.cmake
  INSTALL_DESTINATION ${JANUS_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/janusConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/janusConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/janusConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/JanusCaf.cmake
  DESTINATION ${JANUS_CMAKE_DIR})
