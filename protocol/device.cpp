// Device side of the stream protocol. Encoders build requests the way device libraries do; decoders
// check replies as strictly as device decoders do (types, required keys, `l` == payload length),
// and a little more (duplicate keys and trailing bytes are errors), so tests catch any drift in
// what chunkd publishes.
//
// JSON goes through simdjson's DOM (which validates UTF-8: a reply carrying a non-UTF-8 token is
// rejected here even though chunkd passes such bytes through, see reply.hpp). CBOR goes through a
// small hand-written reader: definite lengths only (chunkd never sends indefinite ones), shortest
// or longer integer encodings both accepted, tags rejected where a typed value is expected,
// nesting of skipped values bounded. Nothing allocates more than the input size.
#include "protocol/device.hpp"

#include <simdjson.h>

#include <charconv>
#include <cstring>
#include <limits>

#include "protocol/base64.hpp"

namespace chunkd::protocol {
namespace {

using wire::cbor_head_length;
using wire::json_escaped_length;
using wire::write_cbor_head;
using wire::write_json_escaped;

constexpr std::uint8_t kCborUnsigned = 0;
constexpr std::uint8_t kCborBytes = 2;
constexpr std::uint8_t kCborText = 3;
constexpr std::uint8_t kCborArray = 4;
constexpr std::uint8_t kCborMap = 5;
constexpr std::uint8_t kCborTag = 6;
constexpr std::uint8_t kCborSimple = 7;
constexpr int kMaxSkipDepth = 16;

// ---------------------------------------------------------------------------------------------
// Request encoding: small appending writers over a byte vector.

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

class CborOut {
 public:
  void head(std::uint8_t major, std::uint64_t argument) {
    const std::size_t at = bytes_.size();
    bytes_.resize(at + cbor_head_length(argument));
    write_cbor_head(bytes_.data() + at, major, argument);
  }
  void text(std::string_view t) {
    head(kCborText, t.size());
    const auto* p = reinterpret_cast<const std::byte*>(t.data());
    bytes_.insert(bytes_.end(), p, p + t.size());
  }
  void bytes(std::span<const std::uint8_t> b) {
    head(kCborBytes, b.size());
    const auto* p = reinterpret_cast<const std::byte*>(b.data());
    bytes_.insert(bytes_.end(), p, p + b.size());
  }
  void number(std::uint64_t v) { head(kCborUnsigned, v); }
  std::vector<std::byte> finish() { return std::move(bytes_); }

 private:
  std::vector<std::byte> bytes_;
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
// CBOR reading.

struct CborHead {
  std::uint8_t major = 0;
  std::uint8_t info = 0;  // additional information (low 5 bits)
  std::uint64_t argument = 0;
};

class CborReader {
 public:
  explicit CborReader(std::span<const std::byte> in)
      : p_(reinterpret_cast<const std::uint8_t*>(in.data())), end_(p_ + in.size()) {}

  bool at_end() const { return p_ == end_; }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  const std::string& error() const { return error_; }

  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  bool head(CborHead& h) {
    if (p_ == end_) return fail("CBOR: truncated item");
    const std::uint8_t initial = *p_++;
    h.major = static_cast<std::uint8_t>(initial >> 5);
    h.info = static_cast<std::uint8_t>(initial & 0x1f);
    if (h.info < 24) {
      h.argument = h.info;
      return true;
    }
    std::size_t size = 0;
    switch (h.info) {
      case 24:
        size = 1;
        break;
      case 25:
        size = 2;
        break;
      case 26:
        size = 4;
        break;
      case 27:
        size = 8;
        break;
      case 31:
        return fail("CBOR: indefinite-length items are not supported");
      default:
        return fail("CBOR: reserved additional information");
    }
    if (remaining() < size) return fail("CBOR: truncated item head");
    h.argument = 0;
    for (std::size_t i = 0; i < size; ++i) h.argument = (h.argument << 8) | *p_++;
    return true;
  }

  // The next item must be an unsigned integer that fits `max`.
  bool unsigned_int(std::uint64_t& value, std::uint64_t max, const char* what) {
    CborHead h;
    if (!head(h)) return false;
    if (h.major != kCborUnsigned) return fail(std::string(what) + " is not an unsigned integer");
    if (h.argument > max) return fail(std::string(what) + " is out of range");
    value = h.argument;
    return true;
  }

  // The next item must be a string of `major` (text or bytes); returns a view into the input.
  bool string(std::uint8_t major, std::span<const std::uint8_t>& out, const char* what) {
    CborHead h;
    if (!head(h)) return false;
    if (h.major != major) {
      return fail(std::string(what) +
                  (major == kCborText ? " is not a text string" : " is not a byte string"));
    }
    if (h.argument > remaining()) return fail(std::string(what) + ": truncated string");
    out = std::span<const std::uint8_t>(p_, static_cast<std::size_t>(h.argument));
    p_ += h.argument;
    return true;
  }
  bool text(std::string_view& out, const char* what) {
    std::span<const std::uint8_t> s;
    if (!string(kCborText, s, what)) return false;
    out = std::string_view(reinterpret_cast<const char*>(s.data()), s.size());
    return true;
  }

  // The next item must be a container of `major` (array or map); returns its declared count.
  bool container(std::uint8_t major, std::uint64_t& count, const char* what) {
    CborHead h;
    if (!head(h)) return false;
    if (h.major != major) {
      return fail(std::string(what) + (major == kCborMap ? " is not a map" : " is not an array"));
    }
    count = h.argument;
    return true;
  }

  // Skips one item of any type. Every item consumes at least one byte, so a huge declared count
  // ends at the end of the input; nesting is bounded.
  bool skip(int depth = 0) {
    if (depth > kMaxSkipDepth) return fail("CBOR: nesting too deep");
    CborHead h;
    if (!head(h)) return false;
    switch (h.major) {
      case kCborBytes:
      case kCborText:
        if (h.argument > remaining()) return fail("CBOR: truncated string");
        p_ += h.argument;
        return true;
      case kCborArray:
        for (std::uint64_t k = 0; k < h.argument; ++k) {
          if (!skip(depth + 1)) return false;
        }
        return true;
      case kCborMap:
        for (std::uint64_t k = 0; k < h.argument; ++k) {
          if (!skip(depth + 1) || !skip(depth + 1)) return false;
        }
        return true;
      case kCborTag:
        return skip(depth + 1);
      case kCborSimple:
        if (h.info == 24 && h.argument < 32) return fail("CBOR: invalid simple value");
        return true;
      default:
        return true;  // unsigned and negative integers: the head is all
    }
  }

  // Reads a map key: sets `key` for a text key, or skips a key of another type and leaves
  // `is_text` false (device decoders look keys up by text and ignore the others).
  bool key(std::string_view& key_text, bool& is_text) {
    if (p_ == end_) return fail("CBOR: truncated map");
    is_text = (*p_ >> 5) == kCborText;
    if (is_text) return text(key_text, "map key");
    return skip();
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  std::string error_;
};

// ---------------------------------------------------------------------------------------------
// JSON reading helpers.

using Error = std::string;

template <class T>
Expected<T, Error> failure(std::string message) {
  return unexpected(std::move(message));
}

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

// Marks `bit` seen in `seen`; false when it was seen before.
bool first_time(unsigned& seen, unsigned bit) {
  if ((seen & bit) != 0) return false;
  seen |= bit;
  return true;
}

constexpr std::uint64_t kU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kU64 = std::numeric_limits<std::uint64_t>::max();

// Bits of the keys seen so far, per kind of map (for required and duplicate keys).
constexpr unsigned kSeenC = 1, kSeenF = 2, kSeenL = 4, kSeenI = 8, kSeenP = 16;  // data
constexpr unsigned kSeenS = 2, kSeenD = 4, kSeenR = 8;                           // description
constexpr unsigned kSeenZ = 4;                                                   // r[] entry

// ---------------------------------------------------------------------------------------------
// Data reply.

Expected<DataReply, Error> finish_data(DataReply reply, unsigned seen, std::uint64_t length) {
  const unsigned required = kSeenF | kSeenL | kSeenI | kSeenP;
  if ((seen & required) != required) return failure<DataReply>("data reply lacks f, l, i or p");
  if (length != reply.payload.size()) {
    return failure<DataReply>("data reply: l does not match the payload length");
  }
  reply.length = static_cast<std::uint32_t>(length);
  return reply;
}

Expected<DataReply, Error> decode_data_json(std::span<const std::byte> in) {
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

Expected<DataReply, Error> decode_data_cbor(std::span<const std::byte> in) {
  CborReader r(in);
  DataReply reply;
  unsigned seen = 0;
  std::uint64_t length = 0;
  std::uint64_t pairs = 0;
  if (!r.container(kCborMap, pairs, "data reply")) return failure<DataReply>(r.error());
  for (std::uint64_t k = 0; k < pairs; ++k) {
    std::string_view key;
    bool is_text = false;
    if (!r.key(key, is_text)) return failure<DataReply>(r.error());
    std::uint64_t v = 0;
    bool ok = true;
    if (!is_text) {
      ok = r.skip();
    } else if (key == "c") {
      std::string_view token;
      ok =
          (first_time(seen, kSeenC) || r.fail("data reply: duplicate key c")) && r.text(token, "c");
      if (ok) reply.client_token.emplace(token);
    } else if (key == "f") {
      ok = (first_time(seen, kSeenF) || r.fail("data reply: duplicate key f")) &&
           r.unsigned_int(v, kU32, "f");
      reply.file_id = static_cast<std::uint32_t>(v);
    } else if (key == "l") {
      ok = (first_time(seen, kSeenL) || r.fail("data reply: duplicate key l")) &&
           r.unsigned_int(length, kU32, "l");
    } else if (key == "i") {
      ok = (first_time(seen, kSeenI) || r.fail("data reply: duplicate key i")) &&
           r.unsigned_int(v, kU32, "i");
      reply.block_index = static_cast<std::uint32_t>(v);
    } else if (key == "p") {
      std::span<const std::uint8_t> bytes;
      ok = (first_time(seen, kSeenP) || r.fail("data reply: duplicate key p")) &&
           r.string(kCborBytes, bytes, "p");
      if (ok) {
        const auto* b = reinterpret_cast<const std::byte*>(bytes.data());
        reply.payload.assign(b, b + bytes.size());
      }
    } else {
      ok = r.skip();
    }
    if (!ok) return failure<DataReply>(r.error());
  }
  if (!r.at_end()) return failure<DataReply>("CBOR: trailing bytes after the reply");
  return finish_data(std::move(reply), seen, length);
}

// ---------------------------------------------------------------------------------------------
// Description.

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

Expected<DescriptionReply, Error> decode_description_json(std::span<const std::byte> in) {
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

Expected<DescriptionReply, Error> decode_description_cbor(std::span<const std::byte> in) {
  CborReader r(in);
  DescriptionReply reply;
  unsigned seen = 0;
  std::uint64_t pairs = 0;
  if (!r.container(kCborMap, pairs, "description")) return failure<DescriptionReply>(r.error());
  for (std::uint64_t k = 0; k < pairs; ++k) {
    std::string_view key;
    bool is_text = false;
    if (!r.key(key, is_text)) return failure<DescriptionReply>(r.error());
    bool ok = true;
    if (!is_text) {
      ok = r.skip();
    } else if (key == "c") {
      std::string_view token;
      ok = (first_time(seen, kSeenC) || r.fail("description: duplicate key c")) &&
           r.text(token, "c");
      if (ok) reply.client_token.emplace(token);
    } else if (key == "s") {
      ok = (first_time(seen, kSeenS) || r.fail("description: duplicate key s")) &&
           r.unsigned_int(reply.version, kU64, "s");
    } else if (key == "d") {
      std::string_view text;
      ok =
          (first_time(seen, kSeenD) || r.fail("description: duplicate key d")) && r.text(text, "d");
      if (ok) reply.description.assign(text);
    } else if (key == "r") {
      std::uint64_t count = 0;
      ok = (first_time(seen, kSeenR) || r.fail("description: duplicate key r")) &&
           r.container(kCborArray, count, "r");
      for (std::uint64_t e = 0; ok && e < count; ++e) {
        std::uint64_t file_pairs = 0;
        ok = r.container(kCborMap, file_pairs, "an entry of r");
        unsigned file_seen = 0;
        FileEntry parsed{};
        for (std::uint64_t j = 0; ok && j < file_pairs; ++j) {
          std::string_view file_key;
          bool file_key_is_text = false;
          ok = r.key(file_key, file_key_is_text);
          if (!ok) break;
          std::uint64_t v = 0;
          if (file_key_is_text && file_key == "f") {
            ok = (first_time(file_seen, kSeenF) || r.fail("r[]: duplicate key f")) &&
                 r.unsigned_int(v, kU32, "r[].f");
            parsed.file_id = static_cast<std::uint32_t>(v);
          } else if (file_key_is_text && file_key == "z") {
            ok = (first_time(file_seen, kSeenZ) || r.fail("r[]: duplicate key z")) &&
                 r.unsigned_int(parsed.size_bytes, kU64, "r[].z");
          } else {
            ok = r.skip();
          }
        }
        if (ok && file_seen != (kSeenF | kSeenZ)) ok = r.fail("an entry of r lacks f or z");
        if (ok) reply.files.push_back(parsed);
      }
    } else {
      ok = r.skip();
    }
    if (!ok) return failure<DescriptionReply>(r.error());
  }
  if (!r.at_end()) return failure<DescriptionReply>("CBOR: trailing bytes after the reply");
  if ((seen & (kSeenS | kSeenR)) != (kSeenS | kSeenR)) {
    return failure<DescriptionReply>("description lacks s or r");
  }
  return reply;
}

// ---------------------------------------------------------------------------------------------
// Rejected.

// Rejected replies carry each value twice (long and short key); both must agree when both are
// present.
struct RejectedFields {
  std::optional<std::string_view> client_token, c, code, o, message, m;
};

Expected<RejectedReply, Error> finish_rejected(const RejectedFields& f) {
  auto pick = [](const std::optional<std::string_view>& a, const std::optional<std::string_view>& b,
                 std::optional<std::string>& out) {
    if (a && b && *a != *b) return false;
    if (a)
      out.emplace(*a);
    else if (b)
      out.emplace(*b);
    return true;
  };
  RejectedReply reply;
  std::optional<std::string> code;
  std::optional<std::string> message;
  if (!pick(f.client_token, f.c, reply.client_token)) {
    return failure<RejectedReply>("rejected: clientToken and c differ");
  }
  if (!pick(f.code, f.o, code)) return failure<RejectedReply>("rejected: code and o differ");
  if (!pick(f.message, f.m, message)) {
    return failure<RejectedReply>("rejected: message and m differ");
  }
  if (!code) return failure<RejectedReply>("rejected reply lacks code");
  reply.code = std::move(*code);
  if (message) reply.message = std::move(*message);
  return reply;
}

// Which field of RejectedFields a key names, or nullptr.
std::optional<std::string_view>* rejected_field(RejectedFields& f, std::string_view key) {
  if (key == "clientToken") return &f.client_token;
  if (key == "c") return &f.c;
  if (key == "code") return &f.code;
  if (key == "o") return &f.o;
  if (key == "message") return &f.message;
  if (key == "m") return &f.m;
  return nullptr;
}

Expected<RejectedReply, Error> decode_rejected_json(std::span<const std::byte> in) {
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

Expected<RejectedReply, Error> decode_rejected_cbor(std::span<const std::byte> in) {
  CborReader r(in);
  RejectedFields fields;
  std::uint64_t pairs = 0;
  if (!r.container(kCborMap, pairs, "rejected reply")) return failure<RejectedReply>(r.error());
  for (std::uint64_t k = 0; k < pairs; ++k) {
    std::string_view key;
    bool is_text = false;
    if (!r.key(key, is_text)) return failure<RejectedReply>(r.error());
    std::optional<std::string_view>* slot = is_text ? rejected_field(fields, key) : nullptr;
    bool ok = true;
    if (slot == nullptr) {
      ok = r.skip();
    } else if (slot->has_value()) {
      ok = r.fail("rejected: duplicate key " + std::string(key));
    } else {
      std::string_view text;
      ok = r.text(text, "a rejected value");
      if (ok) slot->emplace(text);
    }
    if (!ok) return failure<RejectedReply>(r.error());
  }
  if (!r.at_end()) return failure<RejectedReply>("CBOR: trailing bytes after the reply");
  return finish_rejected(fields);
}

}  // namespace

std::vector<std::byte> encode_get_request(Format format, const GetStreamArgs& args) {
  if (format == Format::Cbor) {
    CborOut out;
    const std::uint64_t pairs = 2u + (args.client_token ? 1u : 0u) + (args.version ? 1u : 0u) +
                                (args.offset ? 1u : 0u) + (args.count ? 1u : 0u) +
                                (args.bitmap ? 1u : 0u);
    out.head(kCborMap, pairs);
    if (args.client_token) {
      out.text("c");
      out.text(*args.client_token);
    }
    if (args.version) {
      out.text("s");
      out.number(*args.version);
    }
    out.text("f");
    out.number(args.file_id);
    out.text("l");
    out.number(args.block_size);
    if (args.offset) {
      out.text("o");
      out.number(*args.offset);
    }
    if (args.count) {
      out.text("n");
      out.number(*args.count);
    }
    if (args.bitmap) {
      out.text("b");
      out.bytes(*args.bitmap);
    }
    return out.finish();
  }
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

std::vector<std::byte> encode_describe_request(Format format,
                                               std::optional<std::string_view> client_token) {
  if (format == Format::Cbor) {
    CborOut out;
    out.head(kCborMap, client_token ? 1 : 0);
    if (client_token) {
      out.text("c");
      out.text(*client_token);
    }
    return out.finish();
  }
  JsonOut out;
  out.raw("{");
  if (client_token) {
    out.key("c");
    out.string(*client_token);
  }
  out.raw("}");
  return out.finish();
}

Expected<DataReply, std::string> decode_data_reply(Format format, std::span<const std::byte> in) {
  return format == Format::Cbor ? decode_data_cbor(in) : decode_data_json(in);
}

Expected<DescriptionReply, std::string> decode_description(Format format,
                                                           std::span<const std::byte> in) {
  return format == Format::Cbor ? decode_description_cbor(in) : decode_description_json(in);
}

Expected<RejectedReply, std::string> decode_rejected(Format format, std::span<const std::byte> in) {
  return format == Format::Cbor ? decode_rejected_cbor(in) : decode_rejected_json(in);
}

}  // namespace chunkd::protocol
