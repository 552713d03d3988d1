// The format-independent half of request decoding: field checks, bounds and their order, and the
// entry points that pick the JSON or CBOR walker. Rules: protocol/request.hpp.
#include "protocol/request.hpp"

#include <exception>
#include <limits>
#include <utility>

#include "base/text.hpp"
#include "protocol/request_internal.hpp"
#include "simdjson.h"

namespace chunkd::protocol {
namespace detail {
namespace {

std::string key_message(char key, std::string_view what) {
  std::string message(1, key);
  message.append(what);
  return message;
}

}  // namespace

Field field_from_key(std::string_view key) {
  if (key.size() != 1) return Field::Other;
  switch (key[0]) {
    case 'c':
      return Field::Token;
    case 's':
      return Field::Version;
    case 'f':
      return Field::FileId;
    case 'l':
      return Field::BlockSize;
    case 'o':
      return Field::Offset;
    case 'n':
      return Field::Count;
    case 'b':
      return Field::Bitmap;
    default:
      return Field::Other;
  }
}

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t value = 0;
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (kMax - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

std::optional<std::size_t> decode_hex(std::string_view text, std::vector<std::uint8_t>* out) {
  if (text.size() >= 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    text.remove_prefix(2);
  }
  if (text.size() % 2 != 0) return std::nullopt;
  for (char c : text) {
    if (base::hex_value(c) < 0) return std::nullopt;
  }
  const std::size_t bytes = text.size() / 2;
  if (out != nullptr) {
    out->resize(bytes);
    for (std::size_t i = 0; i < bytes; ++i) {
      (*out)[i] = static_cast<std::uint8_t>((base::hex_value(text[2 * i]) << 4) |
                                            base::hex_value(text[2 * i + 1]));
    }
  }
  return bytes;
}

RequestError make_error(ErrorCode code, std::string message) {
  return RequestError{code, std::move(message), std::nullopt};
}

void RequestBuilder::fail(std::string message) {
  if (!type_error_) type_error_ = std::move(message);
}

std::optional<std::uint64_t> RequestBuilder::integer(const Value& value, char key) {
  if (value.kind == ValueKind::Unsigned) return value.number;
  if (value.kind == ValueKind::Text) {
    if (auto parsed = parse_decimal(value.bytes)) return parsed;
  }
  fail(key_message(key, " must be a non-negative integer"));
  return std::nullopt;
}

void RequestBuilder::on_bitmap(const Value& value) {
  std::optional<std::size_t> size;
  if (value.kind == ValueKind::Bytes) {
    size = value.bytes.size();
  } else if (value.kind == ValueKind::Text) {
    size = decode_hex(value.bytes, nullptr);
    if (!size) {
      fail("b must be hex text with an even number of digits");
      return;
    }
  } else {
    fail(value.kind == ValueKind::Unsigned ? "b must be hex text, not a number"
                                           : "b must be hex text or a byte string");
    return;
  }
  if (*size > kMaxBitmapBytes) {  // last occurrence wins: too big
    bitmap_.reset();
    bitmap_oversize_bytes_ = *size;
    return;
  }
  bitmap_oversize_bytes_ = 0;
  std::vector<std::uint8_t> bitmap;
  if (value.kind == ValueKind::Bytes) {
    const auto* first = reinterpret_cast<const std::uint8_t*>(value.bytes.data());
    bitmap.assign(first, first + value.bytes.size());
  } else {
    decode_hex(value.bytes, &bitmap);
  }
  bitmap_ = std::move(bitmap);
}

void RequestBuilder::on_field(Field field, const Value& value) {
  if (describe_only_ && field != Field::Token) return;
  switch (field) {
    case Field::Token:
      token_.reset();
      if (value.kind != ValueKind::Text) {
        fail("c must be a string");
      } else if (value.bytes.size() > kMaxClientTokenBytes) {
        fail("c must be at most 64 bytes");
      } else if (!simdjson::validate_utf8(value.bytes.data(), value.bytes.size())) {
        fail("c must be valid UTF-8");
      } else {
        token_.emplace(value.bytes);
      }
      return;
    case Field::Version:
      if (auto v = integer(value, 's')) version_ = v;
      return;
    case Field::FileId:
      if (auto v = integer(value, 'f')) {
        if (*v > kMaxFileId) {
          fail("f must be 0..255");
        } else {
          file_id_ = v;
        }
      }
      return;
    case Field::BlockSize:
      if (auto v = integer(value, 'l')) block_size_ = v;
      return;
    case Field::Offset:
      if (auto v = integer(value, 'o')) offset_ = v;
      return;
    case Field::Count:
      if (auto v = integer(value, 'n')) count_ = v;
      return;
    case Field::Bitmap:
      on_bitmap(value);
      return;
    case Field::Other:
      return;
  }
}

RequestError RequestBuilder::error(ErrorCode code, std::string message) const {
  return RequestError{code, std::move(message), token_};
}

Expected<GetStreamRequest, RequestError> RequestBuilder::finish_get() {
  if (type_error_) return unexpected(error(ErrorCode::InvalidRequest, *type_error_));
  if (!file_id_) return unexpected(error(ErrorCode::InvalidRequest, "f is required"));
  if (!block_size_) return unexpected(error(ErrorCode::InvalidRequest, "l is required"));
  if (*block_size_ < kMinBlockSize || *block_size_ > kMaxBlockSize) {
    return unexpected(error(ErrorCode::BlockSizeOutOfBounds, "l must be 256..131072"));
  }
  if (offset_.value_or(0) > kMaxOffset) {
    return unexpected(error(ErrorCode::OffsetOutOfBounds, "o must be 0..98304"));
  }
  if (count_.value_or(0) > kMaxBlockCount) {
    return unexpected(error(ErrorCode::BlockCountLimitExceeded, "n must be 0..98304"));
  }
  if (bitmap_oversize_bytes_ != 0) {
    return unexpected(
        error(ErrorCode::BlockBitmapLimitExceeded, "b must be shorter than 12288 bytes"));
  }
  GetStreamRequest request;
  request.client_token = std::move(token_);
  request.version = version_;
  request.file_id = static_cast<std::uint32_t>(*file_id_);
  request.block_size = static_cast<std::uint32_t>(*block_size_);
  request.offset = static_cast<std::uint32_t>(offset_.value_or(0));
  request.count = static_cast<std::uint32_t>(count_.value_or(0));
  request.bitmap = std::move(bitmap_);
  return request;
}

Expected<DescribeStreamRequest, RequestError> RequestBuilder::finish_describe() {
  if (type_error_) return unexpected(error(ErrorCode::InvalidRequest, *type_error_));
  return DescribeStreamRequest{std::move(token_)};
}

}  // namespace detail

namespace {

ErrorCode syntax_code(Format format) {
  return format == Format::Json ? ErrorCode::InvalidJson : ErrorCode::InvalidCbor;
}

// Shared front half: size limit, empty payload, walk. nullopt: `builder` holds the fields.
std::optional<RequestError> walk(Format format, std::span<const std::byte> payload,
                                 detail::RequestBuilder& builder, bool empty_is_object) {
  if (payload.size() > kMaxRequestMessageBytes) {
    return detail::make_error(ErrorCode::InvalidRequest, "payload over 32768 bytes");
  }
  if (payload.empty()) {
    if (empty_is_object) return std::nullopt;
    return detail::make_error(syntax_code(format), format == Format::Json
                                                       ? "payload is not a JSON object"
                                                       : "payload is not a CBOR map");
  }
  return format == Format::Json ? detail::walk_json(payload, builder)
                                : detail::walk_cbor(payload, builder);
}

RequestError internal_error() {
  return detail::make_error(ErrorCode::InternalError, "request decoder out of memory");
}

}  // namespace

Expected<GetStreamRequest, RequestError> decode_get_request(Format format,
                                                            std::span<const std::byte> payload) {
  try {
    detail::RequestBuilder builder(/*describe_only=*/false);
    if (auto error = walk(format, payload, builder, /*empty_is_object=*/false)) {
      return unexpected(std::move(*error));
    }
    return builder.finish_get();
  } catch (const std::exception&) {  // allocation failure only; nothing else throws
    return unexpected(internal_error());
  }
}

Expected<DescribeStreamRequest, RequestError> decode_describe_request(
    Format format, std::span<const std::byte> payload) {
  try {
    detail::RequestBuilder builder(/*describe_only=*/true);
    if (auto error = walk(format, payload, builder, /*empty_is_object=*/true)) {
      return unexpected(std::move(*error));
    }
    return builder.finish_describe();
  } catch (const std::exception&) {
    return unexpected(internal_error());
  }
}

}  // namespace chunkd::protocol
