add_library(runwarden_warnings INTERFACE)
add_library(runwarden::warnings ALIAS runwarden_warnings)
target_compile_options(runwarden_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
  -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough)
if(RUNWARDEN_WERROR)
  target_compile_options(runwarden_warnings INTERFACE -Werror)
endif()
# GCC 12 at -O2/-O3 reports -Wrestrict on std::string::replace inlined from libstdc++ (GCC
# bug 105651, a false positive): a Release build of the tests with RUNWARDEN_WERROR=ON
# failed on it. It stays a warning there; other compilers and levels are unaffected.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12)
  target_compile_options(runwarden_warnings INTERFACE -Wno-error=restrict)
endif()
