// The JSON half of the device side (device.cpp has the format-independent checks): request
// encoding with a small appending writer, and reply decoding through simdjson's DOM, which
// validates UTF-8: a reply carrying a non-UTF-8 token is rejected here even though chunkd passes
// such bytes through (see reply.hpp).
#include <simdjson.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/base64.hpp"
#include "protocol/device_internal.hpp"
#include "protocol/reply.hpp"

namespace chunkd::protocol::detail {
namespace {

using wire::json_escaped_length;
using wire::write_json_escaped;

class JsonOut {
 public:
  void raw(std::string_view text) {
    const auto* p = reinterpret_cast<const std::byte*>(text.data());
    bytes_.insert(bytes_.end(), p, p + text.size());
  }
  void key(std::string_view name) {
    if (!first_) raw(",");
    first_ = false;
    raw("\"");
    raw(name);
    raw("\":");
  }
  void string(std::string_view text) {
    const std::size_t at = bytes_.size();
    bytes_.resize(at + 2 + json_escaped_length(text));
    char* p = reinterpret_cast<char*>(bytes_.data() + at);
    *p++ = '"';
    p = write_json_escaped(p, text);
    *p = '"';
  }
  void number(std::uint64_t v) {
    char digits[20];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    raw(std::string_view(digits, static_cast<std::size_t>(end - digits)));
  }
  std::vector<std::byte> finish() { return std::move(bytes_); }

 private:
  std::vector<std::byte> bytes_;
  bool first_ = true;
};

std::string hex_lower(std::span<const std::uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (const std::uint8_t b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading helpers.

// Parses `in` as a JSON object into `object`, with `parser` owning the document.
bool parse_json_object(simdjson::dom::parser& parser, std::span<const std::byte> in,
                       simdjson::dom::object& object, std::string& error) {
  if (in.empty()) {  // also keeps a null data() away from simdjson's memcpy
    error = "JSON: empty reply";
    return false;
  }
  simdjson::dom::element root;
  if (const auto e =
          parser.parse(reinterpret_cast<const char*>(in.data()), in.size(), true).get(root)) {
    error = std::string("JSON: ") + simdjson::error_message(e);
    return false;
  }
  if (root.get_object().get(object)) {
    error = "JSON: the reply is not an object";
    return false;
  }
  return true;
}

bool json_uint(simdjson::dom::element value, std::uint64_t max, std::uint64_t& out,
               const char* what, std::string& error) {
  std::uint64_t v = 0;
  if (value.get_uint64().get(v)) {
    error = std::string(what) + " is not an unsigned integer";
    return false;
  }
  if (v > max) {
    error = std::string(what) + " is out of range";
    return false;
  }
  out = v;
  return true;
}

bool json_text(simdjson::dom::element value, std::string_view& out, const char* what,
               std::string& error) {
  if (value.get_string().get(out)) {
    error = std::string(what) + " is not a string";
    return false;
  }
  return true;
}

// `r` of a JSON description: an array of {"f":<u32>,"z":<u64>} objects.
bool json_files(simdjson::dom::element value, std::vector<FileEntry>& files, std::string& error) {
  simdjson::dom::array entries;
  if (value.get_array().get(entries)) {
    error = "r is not an array";
    return false;
  }
  for (const auto entry : entries) {
    simdjson::dom::object object;
    if (entry.get_object().get(object)) {
      error = "an entry of r is not an object";
      return false;
    }
    unsigned seen = 0;
    FileEntry parsed{};
    for (const auto field : object) {
      std::uint64_t v = 0;
      if (field.key == "f") {
        if (!first_time(seen, kSeenF)) error = "r[]: duplicate key f";
        if (!error.empty() || !json_uint(field.value, kU32, v, "r[].f", error)) return false;
        parsed.file_id = static_cast<std::uint32_t>(v);
      } else if (field.key == "z") {
        if (!first_time(seen, kSeenZ)) error = "r[]: duplicate key z";
        if (!error.empty() || !json_uint(field.value, kU64, parsed.size_bytes, "r[].z", error)) {
          return false;
        }
      }
    }
    if (seen != (kSeenF | kSeenZ)) {
      error = "an entry of r lacks f or z";
      return false;
    }
    files.push_back(parsed);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Requests.

std::vector<std::byte> encode_get_request_json(const GetStreamArgs& args) {
  JsonOut out;
  out.raw("{");
  if (args.client_token) {
    out.key("c");
    out.string(*args.client_token);
  }
  if (args.version) {
    out.key("s");
    out.number(*args.version);
  }
  out.key("f");
  out.number(args.file_id);
  out.key("l");
  out.number(args.block_size);
  if (args.offset) {
    out.key("o");
    out.number(*args.offset);
  }
  if (args.count) {
    out.key("n");
    out.number(*args.count);
  }
  if (args.bitmap) {
    out.key("b");
    out.string(hex_lower(*args.bitmap));
  }
  out.raw("}");
  return out.finish();
}

std::vector<std::byte> encode_describe_request_json(std::optional<std::string_view> client_token) {
  JsonOut out;
  out.raw("{");
  if (client_token) {
    out.key("c");
    out.string(*client_token);
  }
  out.raw("}");
  return out.finish();
}

// ---------------------------------------------------------------------------------------------
// Replies.

Expected<DataReply, DeviceError> decode_data_json(std::span<const std::byte> in) {
  simdjson::dom::parser parser;
  simdjson::dom::object object;
  std::string error;
  if (!parse_json_object(parser, in, object, error)) return failure<DataReply>(error);
  DataReply reply;
  unsigned seen = 0;
  std::uint64_t length = 0;
  for (const auto field : object) {
    const std::string_view key = field.key;
    std::uint64_t v = 0;
    bool ok = true;
    if (key == "c") {
      std::string_view token;
      ok = first_time(seen, kSeenC) && json_text(field.value, token, "c", error);
      if (ok) reply.client_token.emplace(token);
    } else if (key == "f") {
      ok = first_time(seen, kSeenF) && json_uint(field.value, kU32, v, "f", error);
      reply.file_id = static_cast<std::uint32_t>(v);
    } else if (key == "l") {
      ok = first_time(seen, kSeenL) && json_uint(field.value, kU32, length, "l", error);
    } else if (key == "i") {
      ok = first_time(seen, kSeenI) && json_uint(field.value, kU32, v, "i", error);
      reply.block_index = static_cast<std::uint32_t>(v);
    } else if (key == "p") {
      std::string_view text;
      ok = first_time(seen, kSeenP) && json_text(field.value, text, "p", error);
      if (ok) {
        reply.payload.resize(base64::max_decoded_length(text.size()));
        const auto decoded = base64::decode(text, reply.payload);
        if (!decoded) return failure<DataReply>("p is not valid base64");
        reply.payload.resize(*decoded);
      }
    }
    if (!ok) {
      return failure<DataReply>(error.empty() ? "data reply: duplicate key " + std::string(key)
                                              : error);
    }
  }
  return finish_data(std::move(reply), seen, length);
}

Expected<DescriptionReply, DeviceError> decode_description_json(std::span<const std::byte> in) {
  simdjson::dom::parser parser;
  simdjson::dom::object object;
  std::string error;
  if (!parse_json_object(parser, in, object, error)) return failure<DescriptionReply>(error);
  DescriptionReply reply;
  unsigned seen = 0;
  for (const auto field : object) {
    const std::string_view key = field.key;
    bool ok = true;
    if (key == "c") {
      std::string_view token;
      ok = first_time(seen, kSeenC) && json_text(field.value, token, "c", error);
      if (ok) reply.client_token.emplace(token);
    } else if (key == "s") {
      ok = first_time(seen, kSeenS) && json_uint(field.value, kU64, reply.version, "s", error);
    } else if (key == "d") {
      std::string_view text;
      ok = first_time(seen, kSeenD) && json_text(field.value, text, "d", error);
      if (ok) reply.description.assign(text);
    } else if (key == "r") {
      ok = first_time(seen, kSeenR) && json_files(field.value, reply.files, error);
    }
    if (!ok) {
      return failure<DescriptionReply>(
          error.empty() ? "description: duplicate key " + std::string(key) : error);
    }
  }
  if ((seen & (kSeenS | kSeenR)) != (kSeenS | kSeenR)) {
    return failure<DescriptionReply>("description lacks s or r");
  }
  return reply;
}

Expected<RejectedReply, DeviceError> decode_rejected_json(std::span<const std::byte> in) {
  simdjson::dom::parser parser;
  simdjson::dom::object object;
  std::string error;
  if (!parse_json_object(parser, in, object, error)) return failure<RejectedReply>(error);
  RejectedFields fields;
  for (const auto field : object) {
    std::optional<std::string_view>* slot = rejected_field(fields, field.key);
    if (slot == nullptr) continue;
    if (slot->has_value()) {
      return failure<RejectedReply>("rejected: duplicate key " + std::string(field.key));
    }
    std::string_view text;
    if (!json_text(field.value, text, "a rejected value", error)) {
      return failure<RejectedReply>(error + " (" + std::string(field.key) + ")");
    }
    slot->emplace(text);
  }
  return finish_rejected(fields);
}

}  // namespace chunkd::protocol::detail
