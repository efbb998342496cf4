# Helpers shared by the folder CMakeLists.

# tern_glob(VAR dir PATTERN...): the .cc files in `dir` matching the patterns,
# excluding *_main.cc, re-globbed when files appear or vanish.
function(tern_glob var dir)
  set(files)
  foreach(pattern IN LISTS ARGN)
    file(GLOB matched CONFIGURE_DEPENDS "${dir}/${pattern}")
    list(APPEND files ${matched})
  endforeach()
  list(FILTER files EXCLUDE REGEX "_main\\.cc$")
  if(files)
    list(REMOVE_DUPLICATES files)
  endif()
  set(${var} ${files} PARENT_SCOPE)
endfunction()

# tern_library(name SOURCES... DEPS...): a static library rooted at the repo
# root for includes; an empty source list gives an INTERFACE library so a
# folder can exist before its first file.
function(tern_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  if(ARG_SOURCES)
    add_library(${name} STATIC ${ARG_SOURCES})
    target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()
