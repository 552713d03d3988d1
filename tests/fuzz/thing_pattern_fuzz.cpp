// libFuzzer target for the thing-name pattern matcher (protocol/thing_pattern.hpp). The input, cut
// at its first NUL (or in its middle), is a pattern and a thing name of at most 128 bytes each, any
// bytes: the greedy matcher must agree with a plain dynamic-programming matcher, and a pattern that
// validates must also validate after a round trip through std::string (no hidden state).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/thing_pattern.hpp"

namespace {

using namespace chunkd::protocol;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "thing_pattern_fuzz: invariant failed: %s\n", what);
    std::abort();
  }
}

// The reference: row i says whether pattern[i..] matches name[j..], for every j; two rows kept.
// Quadratic, obviously right, for comparison only.
bool reference_match(std::string_view pattern, std::string_view name) {
  const std::size_t n = name.size();
  std::vector<char> next(n + 1, 0);  // pattern[i + 1..]
  std::vector<char> row(n + 1, 0);   // pattern[i..]
  next[n] = 1;
  for (std::size_t i = pattern.size(); i-- > 0;) {
    for (std::size_t j = n + 1; j-- > 0;) {
      if (pattern[i] == '*') {
        row[j] = static_cast<char>(next[j] || (j < n && row[j + 1]));
      } else {
        row[j] =
            static_cast<char>(j < n && (pattern[i] == '?' || pattern[i] == name[j]) && next[j + 1]);
      }
    }
    std::swap(row, next);
  }
  return next[0] != 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::size_t cut = input.find('\0');
  const bool has_nul = cut != std::string_view::npos;
  if (!has_nul) cut = input.size() / 2;
  const std::string_view pattern = input.substr(0, std::min(cut, kMaxThingPatternChars));
  const std::string_view name =
      input.substr(std::min(input.size(), cut + (has_nul ? 1 : 0))).substr(0, 128);
  check(thing_pattern_matches(pattern, name) == reference_match(pattern, name),
        "greedy wildcard match agrees with the reference");
  const bool valid = !thing_pattern_problem(pattern).has_value();
  check(valid == !thing_pattern_problem(std::string(pattern)).has_value(), "validation is pure");
  if (valid)
    check(thing_allowed(std::vector<std::string>{std::string(pattern)}, name) ==
              thing_pattern_matches(pattern, name),
          "a one-pattern list allows exactly what the pattern matches");
  return 0;
}
