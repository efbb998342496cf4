# Helpers shared by the folder CMakeLists. Each folder is one library whose
# sources are listed by name in its own CMakeLists.txt.

# tern_library(name SOURCES... DEPS...): a static library; includes are
# rooted at the repository root ("gateway/http/http_server.h").
function(tern_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# tern_binary(name SOURCE DEPS...): a shipped program, built into bin/.
function(tern_binary name source)
  add_executable(${name} ${source})
  target_link_libraries(${name} PRIVATE ${ARGN})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
  install(TARGETS ${name} RUNTIME DESTINATION bin)
endfunction()

# tern_test(SOURCE DEPS...): tests/<dir>/<name>_test.cc becomes the program
# <dir with _>_<name>_test, linked with the library it tests (DEPS) and
# GoogleTest; every test case is registered with ctest. TERN_SOURCE_DIR lets
# tests read the tree's data files (tests/node_modules, deploy/).
function(tern_test source)
  get_filename_component(name ${source} NAME_WE)
  file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR}/tests ${CMAKE_CURRENT_SOURCE_DIR})
  string(REPLACE "/" "_" prefix "${rel}")
  set(target ${prefix}_${name})
  add_executable(${target} ${source})
  target_link_libraries(${target} PRIVATE ${ARGN} GTest::gtest_main GTest::gmock)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${target} PRIVATE TERN_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set_property(GLOBAL APPEND PROPERTY TERN_TEST_PROGRAMS ${target})
  gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
endfunction()
