# Seastar's rule: every header compiles on its own. One generated source per header,
# built as an object library that nothing links.
file(GLOB_RECURSE JANUS_HEADERS RELATIVE ${CMAKE_SOURCE_DIR}
  ${CMAKE_SOURCE_DIR}/runtime/*.h ${CMAKE_SOURCE_DIR}/actors/*.h ${CMAKE_SOURCE_DIR}/gpu/*.h
  ${CMAKE_SOURCE_DIR}/transport/*.h)
set(_checks)
foreach(h ${JANUS_HEADERS})
  string(MAKE_C_IDENTIFIER ${h} id)
  set(src ${CMAKE_BINARY_DIR}/header_check/${id}.cc)
  if(NOT EXISTS ${src})
    file(WRITE ${src} "#include \"${h}\"\n#include \"${h}\"\n")
  endif()
  list(APPEND _checks ${src})
endforeach()
add_library(janus_header_check OBJECT ${_checks})
target_include_directories(janus_header_check PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR} ${CMAKE_BINARY_DIR}/schemas)
target_link_libraries(janus_header_check PRIVATE caf::core CapnProto::capnp PkgConfig::LUA PkgConfig::LIBFABRIC nlohmann_json::nlohmann_json)
if(JANUS_HAVE_CUDA)
  target_link_libraries(janus_header_check PRIVATE CUDA::cudart)
endif()
