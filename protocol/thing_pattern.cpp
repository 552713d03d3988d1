// Thing-name patterns (protocol/thing_pattern.hpp): validation and the wildcard match.
#include "protocol/thing_pattern.hpp"

#include <algorithm>

namespace chunkd::protocol {
namespace {

// The thing-name alphabet of valid_thing_name (topic.hpp) plus the two wildcards.
bool pattern_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
         c == '_' || c == '-' || c == '*' || c == '?';
}

}  // namespace

std::optional<std::string> thing_pattern_problem(std::string_view pattern) {
  // Every accepted character is ASCII, so bytes count characters; a longer or non-ASCII string
  // fails one of the two checks below either way.
  if (pattern.empty() || pattern.size() > kMaxThingPatternChars) {
    return "must be between 1 and " + std::to_string(kMaxThingPatternChars) + " characters";
  }
  if (!std::all_of(pattern.begin(), pattern.end(), pattern_char)) {
    return std::string(
        "must contain only letters a-z A-Z, digits 0-9, ':', '_', '-' and the wildcards '*' and "
        "'?'");
  }
  return std::nullopt;
}

// Walks both strings once; on a mismatch after a '*', the '*' takes one more character of the
// name and matching resumes after it. Only the last '*' needs remembering: whatever an earlier
// '*' would absorb instead, the last one can absorb too.
bool thing_pattern_matches(std::string_view pattern, std::string_view thing) {
  std::size_t p = 0;
  std::size_t t = 0;
  std::size_t star = std::string_view::npos;  // index of the last '*' seen in the pattern
  std::size_t star_t = 0;                     // where in the name that '*' stops absorbing
  while (t < thing.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_t = t;
    } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == thing[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_t;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool thing_allowed(const std::optional<std::vector<std::string>>& allowed, std::string_view thing) {
  if (!allowed) return true;
  return std::any_of(allowed->begin(), allowed->end(), [thing](const std::string& pattern) {
    return thing_pattern_matches(pattern, thing);
  });
}

}  // namespace chunkd::protocol
