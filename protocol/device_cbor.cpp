// The CBOR half of the device side (device.cpp has the format-independent checks): request
// encoding with a small appending writer, and reply decoding through a small hand-written reader:
// definite lengths only (chunkd never sends indefinite ones), shortest or longer integer encodings
// both accepted, tags rejected where a typed value is expected, nesting of skipped values bounded.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/device_internal.hpp"
#include "protocol/reply.hpp"

namespace chunkd::protocol::detail {
namespace {

using wire::cbor_head_length;
using wire::write_cbor_head;

constexpr std::uint8_t kCborUnsigned = 0;
constexpr std::uint8_t kCborBytes = 2;
constexpr std::uint8_t kCborText = 3;
constexpr std::uint8_t kCborArray = 4;
constexpr std::uint8_t kCborMap = 5;
constexpr std::uint8_t kCborTag = 6;
constexpr std::uint8_t kCborSimple = 7;
constexpr int kMaxSkipDepth = 16;

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

// ---------------------------------------------------------------------------------------------
// Reading.

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

// One entry of `r`: a map with f (u32) and z (u64); keys of other names or types are skipped.
bool cbor_file_entry(CborReader& r, FileEntry& entry) {
  std::uint64_t pairs = 0;
  if (!r.container(kCborMap, pairs, "an entry of r")) return false;
  unsigned seen = 0;
  for (std::uint64_t j = 0; j < pairs; ++j) {
    std::string_view key;
    bool is_text = false;
    if (!r.key(key, is_text)) return false;
    std::uint64_t v = 0;
    bool ok = true;
    if (is_text && key == "f") {
      ok = (first_time(seen, kSeenF) || r.fail("r[]: duplicate key f")) &&
           r.unsigned_int(v, kU32, "r[].f");
      entry.file_id = static_cast<std::uint32_t>(v);
    } else if (is_text && key == "z") {
      ok = (first_time(seen, kSeenZ) || r.fail("r[]: duplicate key z")) &&
           r.unsigned_int(entry.size_bytes, kU64, "r[].z");
    } else {
      ok = r.skip();
    }
    if (!ok) return false;
  }
  if (seen != (kSeenF | kSeenZ)) return r.fail("an entry of r lacks f or z");
  return true;
}

// `r` of a CBOR description: an array of {"f":<u32>,"z":<u64>} maps.
bool cbor_files(CborReader& r, std::vector<FileEntry>& files) {
  std::uint64_t count = 0;
  if (!r.container(kCborArray, count, "r")) return false;
  for (std::uint64_t e = 0; e < count; ++e) {
    FileEntry entry{};
    if (!cbor_file_entry(r, entry)) return false;
    files.push_back(entry);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Requests.

std::vector<std::byte> encode_get_request_cbor(const GetStreamArgs& args) {
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

std::vector<std::byte> encode_describe_request_cbor(std::optional<std::string_view> client_token) {
  CborOut out;
  out.head(kCborMap, client_token ? 1 : 0);
  if (client_token) {
    out.text("c");
    out.text(*client_token);
  }
  return out.finish();
}

// ---------------------------------------------------------------------------------------------
// Replies.

Expected<DataReply, DeviceError> decode_data_cbor(std::span<const std::byte> in) {
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

Expected<DescriptionReply, DeviceError> decode_description_cbor(std::span<const std::byte> in) {
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
      ok = (first_time(seen, kSeenR) || r.fail("description: duplicate key r")) &&
           cbor_files(r, reply.files);
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

Expected<RejectedReply, DeviceError> decode_rejected_cbor(std::span<const std::byte> in) {
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

}  // namespace chunkd::protocol::detail
