# Strict warnings for chunkd's own targets only; third-party headers come in as SYSTEM.
function(chunkd_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
    -Wold-style-cast -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion -Wformat=2
    -Wimplicit-fallthrough)
  if(CHUNKD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
