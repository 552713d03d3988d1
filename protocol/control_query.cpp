// Control-plane list query (SPEC.md §2): the query string of a list request and its opaque
// nextToken ("v1:" + the last streamId of the page, base64url without padding). Every problem found
// is reported as a FieldProblem, never just the first. Pure: no I/O, no clock.
#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
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

std::optional<std::string> decode_next_token(std::string_view token, detail::IdRule valid_id) {
  if (token.size() > kMaxTokenChars) return std::nullopt;
  auto raw = b64url_decode(token);
  if (!raw || raw->size() <= kTokenPrefix.size() || !raw->starts_with(kTokenPrefix)) {
    return std::nullopt;
  }
  std::string id = raw->substr(kTokenPrefix.size());
  if (!valid_id(id)) return std::nullopt;
  return id;
}

// --- query parameters ---------------------------------------------------------------------------

// Each apply_* checks one parameter's percent-decoded value, sets it in `out` or reports it.
void apply_max_results(std::string_view field, const std::string& value, detail::IdRule,
                       ListQuery& out, Problems& problems) {
  const bool digits = !value.empty() && std::all_of(value.begin(), value.end(),
                                                    [](char c) { return c >= '0' && c <= '9'; });
  std::uint64_t n = 0;
  if (!digits) {
    problems.add(std::string(field), "must be an integer");
  } else if (auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
             ec != std::errc{} || n < 1 || n > kMaxListResults) {
    problems.add(std::string(field), "must be between 1 and " + std::to_string(kMaxListResults));
  } else {
    out.max_results = static_cast<std::uint32_t>(n);
  }
}

void apply_next_token(std::string_view field, const std::string& value, detail::IdRule valid_id,
                      ListQuery& out, Problems& problems) {
  if (value.empty()) return;  // "nextToken=" is the first page
  if (auto id = decode_next_token(value, valid_id)) {
    out.after_id = std::move(*id);
  } else {
    problems.add(std::string(field), "is not a valid token (use the nextToken of a previous page)");
  }
}

void apply_ascending(std::string_view field, const std::string& value, detail::IdRule,
                     ListQuery& out, Problems& problems) {
  if (base::iequals(value, "true")) {
    out.ascending = true;
  } else if (base::iequals(value, "false")) {
    out.ascending = false;
  } else {
    problems.add(std::string(field), "must be true or false");
  }
}

struct QueryParam {
  std::string_view name;
  void (*apply)(std::string_view field, const std::string& value, detail::IdRule valid_id,
                ListQuery& out, Problems& problems);
};

// The known parameters, in the order their problems are reported.
constexpr std::array<QueryParam, 3> kQueryParams{{
    {"maxResults", apply_max_results},
    {"nextToken", apply_next_token},
    {"isAscendingOrder", apply_ascending},
}};

// The raw (still percent-encoded) value of each of kQueryParams, when given.
using RawParams = std::array<std::optional<std::string_view>, kQueryParams.size()>;

// Splits `query` at '&' and '='. The last occurrence of each known key (kQueryParams, then
// `extra`) wins; unknown keys and keys that do not percent-decode are ignored.
RawParams split_query(std::string_view query, std::span<detail::ExtraQueryParam> extra) {
  RawParams raw;
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
    for (std::size_t i = 0; i < kQueryParams.size(); ++i) {
      if (*key == kQueryParams[i].name) raw[i] = value;
    }
    for (detail::ExtraQueryParam& param : extra) {
      if (*key == param.name) param.raw = value;
    }
  }
  return raw;
}

}  // namespace

std::string encode_next_token(std::string_view last_stream_id) {
  std::string raw(kTokenPrefix);
  raw += last_stream_id;
  return b64url_encode(raw);
}

namespace detail {

ListQuery parse_list_query(std::string_view query, IdRule valid_id,
                           std::span<ExtraQueryParam> extra, Problems& problems) {
  const RawParams raw = split_query(query, extra);
  ListQuery out;
  for (std::size_t i = 0; i < kQueryParams.size(); ++i) {
    if (!raw[i]) continue;
    const std::string_view field = kQueryParams[i].name;
    const auto value = base::percent_decode(*raw[i], true);
    if (!value) {
      problems.add(std::string(field), "is not validly percent-encoded");
      continue;
    }
    kQueryParams[i].apply(field, *value, valid_id, out, problems);
  }
  for (ExtraQueryParam& param : extra) {
    if (!param.raw) continue;
    param.value = base::percent_decode(*param.raw, true);
    if (!param.value) problems.add(std::string(param.name), "is not validly percent-encoded");
  }
  return out;
}

}  // namespace detail

Expected<ListQuery, ApiError> parse_list_query(std::string_view query) {
  Problems problems;
  ListQuery out = detail::parse_list_query(query, valid_stream_id, {}, problems);
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("query", "invalid parameter"));
  }
  return out;
}

}  // namespace chunkd::protocol
