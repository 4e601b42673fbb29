# Shared target settings and helpers for tessera's CMake targets.
include_guard(GLOBAL)

# Compile options for project code only (third-party headers are SYSTEM includes).
function(tessera_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  set(_warn -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)
  if(TESSERA_WERROR)
    list(APPEND _warn -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${_warn}>)
endfunction()

# tessera_add_test(NAME name SOURCES a.cc... LIBS lib... [LABELS unit...] [TIMEOUT s])
# One gtest binary; each TEST becomes a ctest entry carrying LABELS.
function(tessera_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  tessera_target_defaults(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_link_libraries(${T_NAME} PRIVATE tessera_test_util)
  # CLI tests run the built binary, so it must be current.
  add_dependencies(${T_NAME} tessera)
  gtest_discover_tests(${T_NAME}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT})
endfunction()
