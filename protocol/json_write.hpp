// Private to protocol/: the small JSON writers the control-plane responses (control_encode.cpp,
// job_control_encode.cpp) and the jobs replies (jobs_reply.cpp) are built from. Each appends to
// `out`; every text goes through append_json_string (RFC 8259 escaping, invalid UTF-8 as U+FFFD).
// Not part of any contract; do not include outside protocol/.
#pragma once

#include <charconv>
#include <concepts>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/control.hpp"  // append_json_string

namespace chunkd::protocol::json {

// The control API's success envelope (SPEC.md §2): kSuccessOpen, the data's members, kSuccessClose.
inline constexpr std::string_view kSuccessOpen = R"({"success":true,"data":{)";
inline constexpr std::string_view kSuccessClose = "}}";

// Integers only: a bool or a char is not a JSON number here.
template <class T>
concept Integer = std::integral<T> && !std::same_as<T, bool> && !std::same_as<T, char>;

template <Integer Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(end - buf));
}

// The shortest text that reads back as the same double.
void append_double(std::string& out, double v);

// "key": (the key is one of ours: written as is).
void append_key(std::string& out, std::string_view key);

// "key":"value"
void append_field(std::string& out, std::string_view key, std::string_view value);

// "key":123
template <Integer Int>
void append_field(std::string& out, std::string_view key, Int value) {
  append_key(out, key);
  append_int(out, value);
}

// ,"key":value when `value` is set; nothing otherwise.
template <Integer Int>
void append_optional_field(std::string& out, std::string_view key,
                           const std::optional<Int>& value) {
  if (!value) return;
  out += ',';
  append_field(out, key, *value);
}

// ,"key":"value" when `value` is set; nothing otherwise.
void append_optional_field(std::string& out, std::string_view key,
                           const std::optional<std::string>& value);

// ,"key":"value" when `value` is not empty; nothing otherwise.
void append_nonempty_field(std::string& out, std::string_view key, std::string_view value);

// ["a","b",...]
void append_string_array(std::string& out, const std::vector<std::string>& values);

// "key":["a","b",...]
void append_strings(std::string& out, std::string_view key, const std::vector<std::string>& values);

// "key":[{...},{...},...]: one object per item, its members written by `members(item)` (which
// appends to the same `out`).
template <class T, class Members>
void append_objects(std::string& out, std::string_view key, const std::vector<T>& items,
                    Members&& members) {
  append_key(out, key);
  out += '[';
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '{';
    members(items[i]);
    out += '}';
  }
  out += ']';
}

// {"k1":"v1","k2":"v2",...}, in the order given.
void append_string_object(std::string& out,
                          const std::vector<std::pair<std::string, std::string>>& pairs);

}  // namespace chunkd::protocol::json
