// Private to protocol/: the format-independent half of request decoding. The JSON and CBOR
// decoders walk their document and hand every top-level (key, value) pair to a RequestBuilder,
// which checks types as it goes and applies the bounds at the end, in the order documented in
// protocol/request.hpp. Not part of any contract; do not include outside protocol/.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "protocol/request.hpp"

namespace chunkd::protocol::detail {

// A top-level value as the builder sees it, whatever the wire format.
enum class ValueKind : std::uint8_t {
  Unsigned,  // non-negative integer: `number`
  Negative,  // negative integer
  Float,     // any floating-point number, even integral (3.0)
  Bool,
  Null,       // JSON null, CBOR null and undefined
  Text,       // JSON string or CBOR text string: `bytes` (unescaped / concatenated)
  Bytes,      // CBOR byte string: `bytes`
  Container,  // array or map
  Tagged,     // CBOR tagged item
};

struct Value {
  ValueKind kind = ValueKind::Null;
  std::uint64_t number = 0;
  std::string_view bytes;
};

enum class Field : std::uint8_t { Token, Version, FileId, BlockSize, Offset, Count, Bitmap, Other };
Field field_from_key(std::string_view key);

// Collects the fields of one request. Every occurrence of a known key is type-checked; with
// duplicate keys the last occurrence wins (and any bad occurrence makes the request invalid).
class RequestBuilder {
 public:
  // A describe builder looks at `c` only; every other key is ignored.
  explicit RequestBuilder(bool describe_only) : describe_only_(describe_only) {}

  void on_field(Field field, const Value& value);

  Expected<GetStreamRequest, RequestError> finish_get();
  Expected<DescribeStreamRequest, RequestError> finish_describe();

 private:
  void fail(std::string message);  // a type error: InvalidRequest, first message kept
  std::optional<std::uint64_t> integer(const Value& value, char key);
  void on_bitmap(const Value& value);
  RequestError error(ErrorCode code, std::string message) const;

  bool describe_only_;
  std::optional<std::string> type_error_;  // first InvalidRequest message
  std::optional<std::string> token_;       // last `c`, when valid
  std::optional<std::uint64_t> version_, file_id_, block_size_, offset_, count_;
  std::optional<std::vector<std::uint8_t>> bitmap_;
  std::uint64_t bitmap_oversize_bytes_ = 0;  // non-zero: `b` decodes to this many (>= limit)
};

RequestError make_error(ErrorCode code, std::string message);

// Walk a whole payload (non-empty, within kMaxRequestMessageBytes) and feed every top-level pair
// of the object/map to `builder`. Return the syntax error (InvalidJson / InvalidCbor, never with a
// token) or nullopt when the payload was a well-formed object/map.
std::optional<RequestError> walk_json(std::span<const std::byte> payload, RequestBuilder& builder);
std::optional<RequestError> walk_cbor(std::span<const std::byte> payload, RequestBuilder& builder);

// Parses ASCII decimal digits only ("4", "0007"); no sign, space, point or exponent; must fit
// 64 bits. Used for quoted numbers in both formats.
std::optional<std::uint64_t> parse_decimal(std::string_view text);

// Hex text of a bitmap: optional "0x"/"0X", then an even number of [0-9a-fA-F] (either case).
// Returns the number of decoded bytes, or nullopt when malformed. Decodes into `out` only when
// `out` is non-null.
std::optional<std::size_t> decode_hex(std::string_view text, std::vector<std::uint8_t>* out);

}  // namespace chunkd::protocol::detail
