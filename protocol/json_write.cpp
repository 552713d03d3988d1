// The JSON writers of protocol/json_write.hpp and append_json_string (protocol/control.hpp).
// Pure: no I/O.
#include "protocol/json_write.hpp"

#include <charconv>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/text.hpp"
#include "protocol/control.hpp"

namespace chunkd::protocol {

// RFC 8259: '"' and '\' escaped, U+0000-U+001F escaped (short forms where they exist), DEL as
// \u007f; '/' and non-ASCII text pass through unchanged. Bytes that are not valid UTF-8 become
// U+FFFD, so the output is always valid JSON whatever the input.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x80) {
      const std::size_t len = base::utf8_sequence_length(s, i);
      if (len == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(s.substr(i, len));
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (b < 0x20 || b == 0x7F) {
          out += "\\u00";
          out += kHex[b >> 4];
          out += kHex[b & 0x0Fu];
        } else {
          out += c;
        }
        break;
    }
    ++i;
  }
  out += '"';
}

namespace json {

void append_double(std::string& out, double v) {
  char buf[40];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(end - buf));
}

void append_key(std::string& out, std::string_view key) {
  out += '"';
  out += key;
  out += "\":";
}

void append_field(std::string& out, std::string_view key, std::string_view value) {
  append_key(out, key);
  append_json_string(out, value);
}

void append_optional_field(std::string& out, std::string_view key,
                           const std::optional<std::string>& value) {
  if (!value) return;
  out += ',';
  append_field(out, key, *value);
}

void append_nonempty_field(std::string& out, std::string_view key, std::string_view value) {
  if (value.empty()) return;
  out += ',';
  append_field(out, key, value);
}

void append_string_array(std::string& out, const std::vector<std::string>& values) {
  out += '[';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, values[i]);
  }
  out += ']';
}

void append_strings(std::string& out, std::string_view key,
                    const std::vector<std::string>& values) {
  append_key(out, key);
  append_string_array(out, values);
}

void append_string_object(std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& pairs) {
  out += '{';
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, pairs[i].first);
    out += ':';
    append_json_string(out, pairs[i].second);
  }
  out += '}';
}

}  // namespace json
}  // namespace chunkd::protocol
