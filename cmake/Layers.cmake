# The layering, enforced by the build: each library exports an include root that holds only its
# own folder (a symbolic link under build/include/<folder>/), so `#include "engine/x.hpp"` from io/
# does not compile. Who may include whom follows from the link graph:
#   base ← protocol ← engine,   base ← io ← engine,   base ← protocol ← tools
# tools/check-layers says the same before anything compiles.
function(chunkd_export_folder target visibility folder)
  set(root ${PROJECT_BINARY_DIR}/include/${folder})
  file(MAKE_DIRECTORY ${root})
  if(NOT EXISTS ${root}/${folder})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${folder} ${root}/${folder} SYMBOLIC)
  endif()
  target_include_directories(${target} ${visibility} ${root})
endfunction()
