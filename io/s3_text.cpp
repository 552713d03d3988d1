#include "io/s3_text.hpp"

#include <charconv>

namespace chunkd::io {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool printable(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

std::string decode_entities(std::string_view s) {
  static constexpr std::pair<std::string_view, char> kEntities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  while (!s.empty()) {
    bool replaced = false;
    if (s.front() == '&') {
      for (const auto& [entity, c] : kEntities) {
        if (s.substr(0, entity.size()) == entity) {
          out.push_back(c);
          s.remove_prefix(entity.size());
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) {
      char c = s.front();
      out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
      s.remove_prefix(1);
    }
  }
  return out;
}

std::string element(std::string_view body, std::string_view name) {
  const std::string open = "<" + std::string(name) + ">";
  const std::string close = "</" + std::string(name) + ">";
  std::size_t begin = body.find(open);
  if (begin == std::string_view::npos) return {};
  begin += open.size();
  std::size_t end = body.find(close, begin);
  if (end == std::string_view::npos) return {};
  return decode_entities(body.substr(begin, std::min<std::size_t>(end - begin, 256)));
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

Expected<S3Credentials, std::string> parse_shared_credentials(std::string_view text,
                                                              std::string_view profile) {
  S3Credentials out;
  bool in_profile = false;
  bool seen_profile = false;
  std::size_t line_no = 0;
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        return unexpected("line " + std::to_string(line_no) + ": a section header needs ']'");
      }
      in_profile = trim(line.substr(1, line.size() - 2)) == profile;
      seen_profile = seen_profile || in_profile;
      continue;
    }
    std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      return unexpected("line " + std::to_string(line_no) + ": expected key = value");
    }
    if (!in_profile) continue;
    std::string_view key = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    std::string* slot = nullptr;
    if (key == "aws_access_key_id") slot = &out.access_key_id;
    if (key == "aws_secret_access_key") slot = &out.secret_access_key;
    if (key == "aws_session_token") slot = &out.session_token;
    if (slot == nullptr) continue;
    if (value.size() > 4096 || !printable(value)) {
      return unexpected("line " + std::to_string(line_no) + ": " + std::string(key) +
                        " must be 1 to 4096 printable characters without spaces");
    }
    *slot = std::string(value);
  }
  if (!seen_profile) return unexpected("no [" + std::string(profile) + "] profile");
  if (out.access_key_id.empty() || out.secret_access_key.empty()) {
    return unexpected("profile [" + std::string(profile) +
                      "] needs aws_access_key_id and aws_secret_access_key");
  }
  return out;
}

S3ErrorBody parse_s3_error(std::string_view body) {
  return {element(body, "Code"), element(body, "Message")};
}

std::string s3_uri_encode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    bool unreserved = (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') ||
                      u == '-' || u == '_' || u == '.' || u == '~';
    if (unreserved || (keep_slash && u == '/')) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

std::optional<ContentRange> parse_content_range(std::string_view value) {
  value = trim(value);
  if (value.substr(0, 6) != "bytes ") return std::nullopt;
  value.remove_prefix(6);
  std::size_t dash = value.find('-');
  std::size_t slash = value.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  ContentRange r;
  if (!parse_u64(value.substr(0, dash), r.first) ||
      !parse_u64(value.substr(dash + 1, slash - dash - 1), r.last) || r.last < r.first) {
    return std::nullopt;
  }
  std::string_view total = value.substr(slash + 1);
  if (total != "*") {
    std::uint64_t t = 0;
    if (!parse_u64(total, t) || t <= r.last) return std::nullopt;
    r.total = t;
  }
  return r;
}

}  // namespace chunkd::io
