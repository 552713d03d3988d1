// Control-plane list query (SPEC.md §2): the query string of a list request and its opaque
// nextToken ("v1:" + the last streamId of the page, base64url without padding). Every problem found
// is reported as a FieldProblem, never just the first. Pure: no I/O, no clock.
#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "base/text.hpp"
#include "protocol/control.hpp"
#include "protocol/control_internal.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {
namespace {

using detail::Problems;

constexpr std::string_view kTokenPrefix = "v1:";
// base64url of "v1:" + a 128-byte id is at most 175 characters: longer tokens are refused unread.
constexpr std::size_t kMaxTokenChars = 4 * ((3 + kMaxStreamIdBytes + 2) / 3);

// --- base64url (RFC 4648 §5, no padding) ---------------------------------------------------------

constexpr std::string_view kB64Url =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int b64url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

std::string b64url_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    acc = (acc << 8) | static_cast<unsigned char>(c);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kB64Url[(acc >> bits) & 0x3Fu];
    }
    acc &= (1u << bits) - 1u;
  }
  if (bits > 0) out += kB64Url[(acc << (6 - bits)) & 0x3Fu];
  return out;
}

// Strict: URL-safe alphabet only, no padding, and the unused low bits of the last character
// zero, so every byte string has exactly one accepted encoding.
std::optional<std::string> b64url_decode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = b64url_value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFFu);
    }
    acc &= (1u << bits) - 1u;
  }
  if (acc != 0) return std::nullopt;
  return out;
}

std::optional<std::string> decode_next_token(std::string_view token) {
  if (token.size() > kMaxTokenChars) return std::nullopt;
  auto raw = b64url_decode(token);
  if (!raw || raw->size() <= kTokenPrefix.size() || !raw->starts_with(kTokenPrefix)) {
    return std::nullopt;
  }
  std::string id = raw->substr(kTokenPrefix.size());
  if (!valid_stream_id(id)) return std::nullopt;
  return id;
}

}  // namespace

std::string encode_next_token(std::string_view last_stream_id) {
  std::string raw(kTokenPrefix);
  raw += last_stream_id;
  return b64url_encode(raw);
}

Expected<ListQuery, ApiError> parse_list_query(std::string_view query) {
  // Last occurrence of each known key wins; unknown keys and undecodable keys are ignored.
  std::optional<std::string_view> max_results_raw;
  std::optional<std::string_view> next_token_raw;
  std::optional<std::string_view> ascending_raw;
  std::size_t pos = 0;
  while (pos <= query.size()) {
    std::size_t end = query.find('&', pos);
    if (end == std::string_view::npos) end = query.size();
    const std::string_view pair = query.substr(pos, end - pos);
    pos = end + 1;
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    const auto key = base::percent_decode(pair.substr(0, eq), true);
    const std::string_view value = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    if (!key) continue;
    if (*key == "maxResults") {
      max_results_raw = value;
    } else if (*key == "nextToken") {
      next_token_raw = value;
    } else if (*key == "isAscendingOrder") {
      ascending_raw = value;
    }
  }

  ListQuery out;
  Problems problems;
  const auto decoded = [&](std::string_view raw, const char* field) -> std::optional<std::string> {
    auto v = base::percent_decode(raw, true);
    if (!v) problems.add(field, "is not validly percent-encoded");
    return v;
  };
  if (max_results_raw) {
    if (auto v = decoded(*max_results_raw, "maxResults")) {
      const bool digits = !v->empty() && std::all_of(v->begin(), v->end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
      std::uint64_t n = 0;
      if (!digits) {
        problems.add("maxResults", "must be an integer");
      } else if (auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
                 ec != std::errc{} || n < 1 || n > kMaxListResults) {
        problems.add("maxResults", "must be between 1 and " + std::to_string(kMaxListResults));
      } else {
        out.max_results = static_cast<std::uint32_t>(n);
      }
    }
  }
  if (next_token_raw) {
    if (auto v = decoded(*next_token_raw, "nextToken"); v && !v->empty()) {
      if (auto id = decode_next_token(*v)) {
        out.after_id = std::move(*id);
      } else {
        problems.add("nextToken", "is not a valid token (use the nextToken of a previous page)");
      }
    }
  }
  if (ascending_raw) {
    if (auto v = decoded(*ascending_raw, "isAscendingOrder")) {
      if (base::iequals(*v, "true")) {
        out.ascending = true;
      } else if (base::iequals(*v, "false")) {
        out.ascending = false;
      } else {
        problems.add("isAscendingOrder", "must be true or false");
      }
    }
  }
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("query", "invalid parameter"));
  }
  return out;
}

}  // namespace chunkd::protocol
