// CHUNKD_ASSERT(cond): an invariant that is cheap to check, checked in every build (release too).
// A broken invariant is a bug: it prints the condition and where, then aborts, so the core dump
// shows the state that broke it. Operating errors (bad input, ENOENT, broker gone) are never
// asserted; they are values (base/expected.hpp).
#pragma once

#include <cstdio>
#include <cstdlib>

namespace chunkd::base {

[[noreturn]] inline void assert_failed(const char* condition, const char* file, int line,
                                       const char* function) noexcept {
  std::fprintf(stderr, "chunkd: invariant broken: %s (%s:%d, %s)\n", condition, file, line,
               function);
  std::fflush(stderr);
  std::abort();
}

}  // namespace chunkd::base

#define CHUNKD_ASSERT(cond)                                               \
  do {                                                                    \
    if (!(cond)) [[unlikely]]                                             \
      ::chunkd::base::assert_failed(#cond, __FILE__, __LINE__, __func__); \
  } while (false)
