add_library(runwarden_warnings INTERFACE)
add_library(runwarden::warnings ALIAS runwarden_warnings)
target_compile_options(runwarden_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
  -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough)
if(RUNWARDEN_WERROR)
  target_compile_options(runwarden_warnings INTERFACE -Werror)
endif()
