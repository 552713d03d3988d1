#include "protocol/reply.hpp"

#include <array>
#include <charconv>
#include <cstring>
#include <limits>

#include "base/assert.hpp"
#include "protocol/base64.hpp"

namespace chunkd::protocol {
namespace wire {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Size of the escape of each byte: 0 when it passes through, 2 for \n and the like, 6 for \u00xx.
constexpr std::array<std::uint8_t, 256> make_escape_sizes() {
  std::array<std::uint8_t, 256> sizes{};
  for (std::size_t c = 0; c < 0x20; ++c) sizes[c] = 6;
  for (const char c : {'"', '\\', '\b', '\f', '\n', '\r', '\t'}) {
    sizes[static_cast<unsigned char>(c)] = 2;
  }
  return sizes;
}
constexpr std::array<std::uint8_t, 256> kEscapeSize = make_escape_sizes();

char* write_escape(char* out, unsigned char c) {
  *out++ = '\\';
  switch (c) {
    case '"':
      *out++ = '"';
      break;
    case '\\':
      *out++ = '\\';
      break;
    case '\b':
      *out++ = 'b';
      break;
    case '\f':
      *out++ = 'f';
      break;
    case '\n':
      *out++ = 'n';
      break;
    case '\r':
      *out++ = 'r';
      break;
    case '\t':
      *out++ = 't';
      break;
    default:
      std::memcpy(out, "u00", 3);
      out[3] = kHex[c >> 4];
      out[4] = kHex[c & 0xf];
      out += 5;
  }
  return out;
}

template <class T>
std::byte* put_big_endian(std::byte* out, T v) {
  if constexpr (sizeof(T) == 2) v = __builtin_bswap16(v);
  if constexpr (sizeof(T) == 4) v = __builtin_bswap32(v);
  if constexpr (sizeof(T) == 8) v = __builtin_bswap64(v);
  std::memcpy(out, &v, sizeof v);
  return out + sizeof v;
}

// Inlined into the data-reply encoder (the block path): one branch per size class, no loop left
// after unrolling.
inline std::byte* put_cbor_head(std::byte* out, std::uint8_t major_type, std::uint64_t argument) {
  const auto major = static_cast<std::uint8_t>(major_type << 5);
  if (argument < 24) {
    *out = std::byte(major | argument);
    return out + 1;
  }
  if (argument <= 0xff) {
    out[0] = std::byte(major | 24u);
    out[1] = std::byte(argument);
    return out + 2;
  }
  if (argument <= 0xffff) {
    *out = std::byte(major | 25u);
    return put_big_endian(out + 1, static_cast<std::uint16_t>(argument));
  }
  if (argument <= 0xffffffff) {
    *out = std::byte(major | 26u);
    return put_big_endian(out + 1, static_cast<std::uint32_t>(argument));
  }
  *out = std::byte(major | 27u);
  return put_big_endian(out + 1, argument);
}

}  // namespace

std::size_t json_escaped_length(std::string_view text) {
  std::size_t length = text.size();
  for (const char c : text) {
    const std::uint8_t size = kEscapeSize[static_cast<unsigned char>(c)];
    if (size != 0) length += size - 1u;
  }
  return length;
}

char* write_json_escaped(char* out, std::string_view text) {
  // Runs of bytes that pass through are copied whole; most tokens are a single run.
  auto copy = [&out](const char* from, const char* to) {
    const auto n = static_cast<std::size_t>(to - from);
    if (n != 0) std::memcpy(out, from, n);  // `from` may be null when n is 0
    out += n;
  };
  const char* run = text.data();
  const char* const end = run + text.size();
  for (const char* c = run; c != end; ++c) {
    const auto u = static_cast<unsigned char>(*c);
    if (kEscapeSize[u] == 0) continue;
    copy(run, c);
    out = write_escape(out, u);
    run = c + 1;
  }
  copy(run, end);
  return out;
}

std::size_t cbor_head_length(std::uint64_t argument) {
  if (argument < 24) return 1;
  if (argument <= 0xff) return 2;
  if (argument <= 0xffff) return 3;
  if (argument <= 0xffffffff) return 5;
  return 9;
}

std::byte* write_cbor_head(std::byte* out, std::uint8_t major_type, std::uint64_t argument) {
  return put_cbor_head(out, major_type, argument);
}

}  // namespace wire

namespace {

using wire::cbor_head_length;
using wire::json_escaped_length;
using wire::write_json_escaped;
// The inlined head writer, for the encoders below.
std::byte* put_head(std::byte* out, std::uint8_t major_type, std::uint64_t argument) {
  return wire::put_cbor_head(out, major_type, argument);
}

constexpr std::uint8_t kCborUnsigned = 0;
constexpr std::uint8_t kCborBytes = 2;
constexpr std::uint8_t kCborText = 3;
constexpr std::uint8_t kCborArray = 4;
constexpr std::uint8_t kCborMap = 5;

// A CBOR data reply without its token and payload bytes: map head, 4 or 5 one-letter keys, the
// token's text head and four integer/byte-string heads of at most 9 bytes each.
constexpr std::size_t kMaxCborDataHeader = 1 + 2 + 9 + 4 * (2 + 9);

std::size_t decimal_digits(std::uint64_t v) {
  std::size_t digits = 1;
  while (v >= 10) {
    v /= 10;
    ++digits;
  }
  return digits;
}

char* put(char* out, std::string_view text) {
  std::memcpy(out, text.data(), text.size());
  return out + text.size();
}

char* put_decimal(char* out, std::uint64_t v) {
  // Callers size the buffer with decimal_digits(v); 20 digits always fit a uint64.
  return std::to_chars(out, out + 20, v).ptr;
}

std::byte* put_bytes(std::byte* out, const void* data, std::size_t size) {
  if (size != 0) std::memcpy(out, data, size);
  return out + size;
}

// Copies a short text (a client token: at most 64 bytes in practice) with fixed-size, inlined
// moves instead of a call into the C library.
std::byte* put_short(std::byte* out, const char* from, std::size_t n) {
  if (n >= 16) {
    for (std::size_t k = 0; k + 16 <= n; k += 16) std::memcpy(out + k, from + k, 16);
    std::memcpy(out + n - 16, from + n - 16, 16);  // the tail, overlapping
  } else if (n >= 8) {
    std::memcpy(out, from, 8);
    std::memcpy(out + n - 8, from + n - 8, 8);
  } else {
    for (std::size_t k = 0; k < n; ++k) out[k] = std::byte(static_cast<unsigned char>(from[k]));
  }
  return out + n;
}

// A key of one ASCII character as a CBOR text string: 0x61 <char>.
std::byte* put_cbor_key(std::byte* out, char key) {
  *out++ = std::byte{0x61};
  *out++ = std::byte(static_cast<unsigned char>(key));
  return out;
}

std::byte* put_cbor_text(std::byte* out, std::string_view text) {
  out = put_head(out, kCborText, text.size());
  return put_bytes(out, text.data(), text.size());
}

// Growable output for the rare replies (description, rejected): sized exactly up front.
class Sink {
 public:
  explicit Sink(std::size_t size) : bytes_(size) { CHUNKD_ASSERT(size > 0); }
  char* chars() {
    CHUNKD_ASSERT(bytes_.data() != nullptr);  // sized > 0 at construction
    return reinterpret_cast<char*>(bytes_.data());
  }
  std::byte* data() { return bytes_.data(); }
  std::vector<std::byte> finish(const void* end) {
    bytes_.resize(static_cast<std::size_t>(static_cast<const std::byte*>(end) - bytes_.data()));
    return std::move(bytes_);
  }

 private:
  std::vector<std::byte> bytes_;
};

std::size_t json_string_size(std::string_view text) { return 2 + json_escaped_length(text); }

char* put_json_string(char* out, std::string_view text) {
  *out++ = '"';
  out = write_json_escaped(out, text);
  *out++ = '"';
  return out;
}

}  // namespace

std::size_t data_reply_max_bytes(Format format, std::size_t payload_bytes,
                                 std::size_t token_bytes) {
  constexpr std::size_t kLimit = std::numeric_limits<std::size_t>::max() / 8;
  if (payload_bytes > kLimit || token_bytes > kLimit)
    return std::numeric_limits<std::size_t>::max();
  if (format == Format::Cbor) {
    return kMaxCborDataHeader + token_bytes + payload_bytes;
  }
  // {"c":"<6*token>","f":<20>,"l":<20>,"i":<20>,"p":"<base64>"}
  return 30 + 6 * token_bytes + 3 * 20 + base64::encoded_length(payload_bytes);
}

std::size_t cbor_data_header_bytes(std::optional<std::string_view> client_token,
                                   std::uint32_t file_id, std::uint32_t block_index,
                                   std::size_t payload_bytes) {
  std::size_t bytes = 1 + 2 + cbor_head_length(file_id) + 2 + cbor_head_length(payload_bytes) + 2 +
                      cbor_head_length(block_index) + 2 + cbor_head_length(payload_bytes);
  if (client_token) bytes += 2 + cbor_head_length(client_token->size()) + client_token->size();
  return bytes;
}

namespace {

// A one-letter key, then the head of an unsigned integer or a byte string.
std::byte* put_key_head(std::byte* out, char key, std::uint8_t major_type, std::uint64_t v) {
  out[0] = std::byte{0x61};
  out[1] = std::byte(static_cast<unsigned char>(key));
  return put_head(out + 2, major_type, v);
}

// Writes the header of a CBOR data reply for `length` payload bytes at `p`, which has room.
std::byte* put_data_cbor_header(std::byte* p, const char* token, std::size_t token_bytes,
                                bool has_token, std::uint32_t file_id, std::uint32_t block_index,
                                std::size_t length) {
  if (has_token) {
    p[0] = std::byte{0xa5};  // definite map of 5 pairs
    p[1] = std::byte{0x61};
    p[2] = std::byte{'c'};
    p = put_short(put_head(p + 3, kCborText, token_bytes), token, token_bytes);
  } else {
    *p++ = std::byte{0xa4};  // definite map of 4 pairs
  }
  p = put_key_head(p, 'f', kCborUnsigned, file_id);
  p = put_key_head(p, 'l', kCborUnsigned, length);
  p = put_key_head(p, 'i', kCborUnsigned, block_index);
  return put_key_head(p, 'p', kCborBytes, length);
}

std::size_t encode_data_cbor(std::span<std::byte> out, const char* token, std::size_t token_bytes,
                             bool has_token, std::uint32_t file_id, std::uint32_t block_index,
                             std::span<const std::byte> payload) {
  const std::size_t length = payload.size();
  // Callers size `out` with data_reply_max_bytes, so the exact size is only worked out when the
  // buffer is tighter than the largest possible header.
  if (out.size() < kMaxCborDataHeader + token_bytes + length) {
    std::optional<std::string_view> t;
    if (has_token) t.emplace(token, token_bytes);
    if (out.size() < cbor_data_header_bytes(t, file_id, block_index, length) + length) return 0;
  }
  std::byte* p =
      put_data_cbor_header(out.data(), token, token_bytes, has_token, file_id, block_index, length);
  p = put_bytes(p, payload.data(), length);
  return static_cast<std::size_t>(p - out.data());
}

std::size_t encode_data_json(std::span<std::byte> out,
                             const std::optional<std::string_view>& client_token,
                             std::uint32_t file_id, std::uint32_t block_index,
                             std::span<const std::byte> payload) {
  const std::uint64_t length = payload.size();
  const std::size_t b64 = base64::encoded_length(payload.size());
  const std::size_t token_bytes = client_token ? client_token->size() : 0;
  // As for CBOR, the exact size is only worked out when `out` is tighter than the bound.
  if (out.size() < data_reply_max_bytes(Format::Json, payload.size(), token_bytes)) {
    // {"f":F,"l":L,"i":I,"p":"B"} is 23 chars around the numbers and the base64.
    std::size_t need =
        23 + decimal_digits(file_id) + decimal_digits(length) + decimal_digits(block_index) + b64;
    if (client_token) need += 7 + json_escaped_length(*client_token);  // "c":"T",
    if (out.size() < need) return 0;
  }
  char* const begin = reinterpret_cast<char*>(out.data());
  char* p = begin;
  *p++ = '{';
  if (client_token) {
    p = put(p, R"("c":")");
    p = write_json_escaped(p, *client_token);
    p = put(p, R"(",)");
  }
  p = put_decimal(put(p, R"("f":)"), file_id);
  p = put_decimal(put(p, R"(,"l":)"), length);
  p = put_decimal(put(p, R"(,"i":)"), block_index);
  p = put(p, R"(,"p":")");
  // The closing quote follows the base64, so encode_with_spare may leave its NUL there.
  p += base64::encode_with_spare(payload, std::span<char>(p, b64 + 1));
  p = put(p, R"("})");
  return static_cast<std::size_t>(p - begin);
}

}  // namespace

std::size_t encode_data_reply(Format format, std::span<std::byte> out,
                              std::optional<std::string_view> client_token, std::uint32_t file_id,
                              std::uint32_t block_index, std::span<const std::byte> payload) {
  if (format == Format::Cbor) {
    const bool has_token = client_token.has_value();
    return encode_data_cbor(out, has_token ? client_token->data() : nullptr,
                            has_token ? client_token->size() : 0, has_token, file_id, block_index,
                            payload);
  }
  return encode_data_json(out, client_token, file_id, block_index, payload);
}

std::size_t encode_cbor_data_header(std::span<std::byte> out,
                                    std::optional<std::string_view> client_token,
                                    std::uint32_t file_id, std::uint32_t block_index,
                                    std::size_t payload_bytes) {
  const std::size_t bytes =
      cbor_data_header_bytes(client_token, file_id, block_index, payload_bytes);
  if (out.size() < bytes) return 0;
  const bool has_token = client_token.has_value();
  put_data_cbor_header(out.data(), has_token ? client_token->data() : nullptr,
                       has_token ? client_token->size() : 0, has_token, file_id, block_index,
                       payload_bytes);
  return bytes;
}

std::vector<std::byte> encode_description(Format format,
                                          std::optional<std::string_view> client_token,
                                          std::uint64_t version, std::string_view description,
                                          std::span<const FileEntry> files) {
  if (format == Format::Cbor) {
    std::size_t need = 1 + 2 + cbor_head_length(version) + 2 +
                       cbor_head_length(description.size()) + description.size() + 2 +
                       cbor_head_length(files.size());
    if (client_token) need += 2 + cbor_head_length(client_token->size()) + client_token->size();
    for (const FileEntry& f : files) {
      need += 1 + 2 + cbor_head_length(f.file_id) + 2 + cbor_head_length(f.size_bytes);
    }
    Sink sink(need);
    std::byte* p = sink.data();
    p = put_head(p, kCborMap, client_token ? 4 : 3);
    if (client_token) p = put_cbor_text(put_cbor_key(p, 'c'), *client_token);
    p = put_head(put_cbor_key(p, 's'), kCborUnsigned, version);
    p = put_cbor_text(put_cbor_key(p, 'd'), description);
    p = put_head(put_cbor_key(p, 'r'), kCborArray, files.size());
    for (const FileEntry& f : files) {
      p = put_head(p, kCborMap, 2);
      p = put_head(put_cbor_key(p, 'f'), kCborUnsigned, f.file_id);
      p = put_head(put_cbor_key(p, 'z'), kCborUnsigned, f.size_bytes);
    }
    return sink.finish(p);
  }

  // {"c":T,"s":V,"d":D,"r":[{"f":F,"z":Z},...]}
  std::size_t need = 1 + 4 + decimal_digits(version) + 5 + json_string_size(description) + 6 + 2;
  if (client_token) need += 4 + json_string_size(*client_token) + 1;
  for (const FileEntry& f : files) {
    need += 1 + 5 + decimal_digits(f.file_id) + 5 + decimal_digits(f.size_bytes) + 1;
  }
  Sink sink(need);
  char* p = sink.chars();
  *p++ = '{';
  if (client_token) p = put(put_json_string(put(p, R"("c":)"), *client_token), ",");
  p = put_decimal(put(p, R"("s":)"), version);
  p = put_json_string(put(p, R"(,"d":)"), description);
  p = put(p, R"(,"r":[)");
  for (std::size_t k = 0; k < files.size(); ++k) {
    if (k != 0) *p++ = ',';
    p = put_decimal(put(p, R"({"f":)"), files[k].file_id);
    p = put_decimal(put(p, R"(,"z":)"), files[k].size_bytes);
    *p++ = '}';
  }
  p = put(p, "]}");
  return sink.finish(p);
}

std::vector<std::byte> encode_rejected(Format format, std::optional<std::string_view> client_token,
                                       ErrorCode code, std::string_view message) {
  const std::string_view code_text = to_string(code);
  if (format == Format::Cbor) {
    constexpr std::string_view kClientToken = "clientToken";
    constexpr std::string_view kCode = "code";
    constexpr std::string_view kMessage = "message";
    auto text_size = [](std::string_view t) { return cbor_head_length(t.size()) + t.size(); };
    std::size_t need = 1 + text_size(kCode) + text_size(code_text) + 2 + text_size(code_text) +
                       text_size(kMessage) + text_size(message) + 2 + text_size(message);
    if (client_token) need += text_size(kClientToken) + 2 + 2 * text_size(*client_token);
    Sink sink(need);
    std::byte* p = sink.data();
    p = put_head(p, kCborMap, client_token ? 6 : 4);
    if (client_token) {
      p = put_cbor_text(put_cbor_text(p, kClientToken), *client_token);
      p = put_cbor_text(put_cbor_key(p, 'c'), *client_token);
    }
    p = put_cbor_text(put_cbor_text(p, kCode), code_text);
    p = put_cbor_text(put_cbor_key(p, 'o'), code_text);
    p = put_cbor_text(put_cbor_text(p, kMessage), message);
    p = put_cbor_text(put_cbor_key(p, 'm'), message);
    return sink.finish(p);
  }

  // {"clientToken":T,"c":T,"code":C,"o":C,"message":M,"m":M}
  std::size_t need =
      1 + 7 + 2 * json_string_size(code_text) + 5 + 11 + 2 * json_string_size(message) + 5 + 1;
  if (client_token) need += 14 + 5 + 2 * json_string_size(*client_token) + 2;
  Sink sink(need);
  char* p = sink.chars();
  *p++ = '{';
  if (client_token) {
    p = put_json_string(put(p, R"("clientToken":)"), *client_token);
    p = put_json_string(put(p, R"(,"c":)"), *client_token);
    *p++ = ',';
  }
  p = put_json_string(put(p, R"("code":)"), code_text);
  p = put_json_string(put(p, R"(,"o":)"), code_text);
  p = put_json_string(put(p, R"(,"message":)"), message);
  p = put_json_string(put(p, R"(,"m":)"), message);
  *p++ = '}';
  return sink.finish(p);
}

}  // namespace chunkd::protocol
