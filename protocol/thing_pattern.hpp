// Thing-name patterns: which things may read a stream (a stream's `allowedThings`, SPEC.md §1.4
// Unauthorized, docs/control-api.md "Device access").
//
// A pattern is 1..kMaxThingPatternChars characters of the thing-name alphabet (a-z A-Z 0-9 ':'
// '_' '-') and the wildcards '*' (any run of characters, the empty run too) and '?' (exactly one
// character). Everything else is literal and case-sensitive, as thing names are. A stream has
// either no list (every thing may read it) or 1..kMaxAllowedThings distinct patterns.
//
// Matching is the greedy wildcard match with one backtrack point (the last '*'): no recursion, at
// most pattern × name steps (128 × 128) whatever the input, so a hostile thing name cannot make it
// expensive. Pure; any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chunkd::protocol {

inline constexpr std::size_t kMaxAllowedThings = 32;
inline constexpr std::size_t kMaxThingPatternChars = 128;

// The problem text for an invalid pattern ("must be between 1 and 128 characters", "must contain
// only ..."), or nullopt when `pattern` is valid.
std::optional<std::string> thing_pattern_problem(std::string_view pattern);

// Whether `thing` matches `pattern` as a whole. REQUIRES: nothing (any bytes give an answer).
bool thing_pattern_matches(std::string_view pattern, std::string_view thing);

// Whether `thing` may read a stream whose list is `allowed`: no list, or a pattern matching it.
bool thing_allowed(const std::optional<std::vector<std::string>>& allowed, std::string_view thing);

}  // namespace chunkd::protocol
