// CBOR request payloads for tests/protocol/request_cbor*_test.cpp: Cbor builds one item by item
// with libcbor's encoders (every integer width, string kind and indefinite-length form chosen
// explicitly), and get() / describe() / code() decode it with protocol/request.hpp from an exactly
// sized heap copy, so ASan catches any read past the payload.
#pragma once

#include <cbor.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/request.hpp"

namespace chunkd::protocol::testing {

class Cbor {
 public:
  Cbor& map(std::size_t pairs) { return head(cbor_encode_map_start(pairs, buf_, sizeof buf_)); }
  Cbor& indef_map() { return head(cbor_encode_indef_map_start(buf_, sizeof buf_)); }
  Cbor& array(std::size_t items) { return head(cbor_encode_array_start(items, buf_, sizeof buf_)); }
  Cbor& indef_array() { return head(cbor_encode_indef_array_start(buf_, sizeof buf_)); }
  Cbor& brk() { return head(cbor_encode_break(buf_, sizeof buf_)); }
  Cbor& u8(std::uint8_t v) { return head(cbor_encode_uint8(v, buf_, sizeof buf_)); }
  Cbor& u16(std::uint16_t v) { return head(cbor_encode_uint16(v, buf_, sizeof buf_)); }
  Cbor& u32(std::uint32_t v) { return head(cbor_encode_uint32(v, buf_, sizeof buf_)); }
  Cbor& u64(std::uint64_t v) { return head(cbor_encode_uint64(v, buf_, sizeof buf_)); }
  Cbor& uint(std::uint64_t v) { return head(cbor_encode_uint(v, buf_, sizeof buf_)); }
  // CBOR negative integers encode -1 - v.
  Cbor& neg8(std::uint8_t v) { return head(cbor_encode_negint8(v, buf_, sizeof buf_)); }
  Cbor& neg16(std::uint16_t v) { return head(cbor_encode_negint16(v, buf_, sizeof buf_)); }
  Cbor& neg32(std::uint32_t v) { return head(cbor_encode_negint32(v, buf_, sizeof buf_)); }
  Cbor& neg64(std::uint64_t v) { return head(cbor_encode_negint64(v, buf_, sizeof buf_)); }
  Cbor& half(float v) { return head(cbor_encode_half(v, buf_, sizeof buf_)); }
  Cbor& single(float v) { return head(cbor_encode_single(v, buf_, sizeof buf_)); }
  Cbor& dbl(double v) { return head(cbor_encode_double(v, buf_, sizeof buf_)); }
  Cbor& boolean(bool v) { return head(cbor_encode_bool(v, buf_, sizeof buf_)); }
  Cbor& null() { return head(cbor_encode_null(buf_, sizeof buf_)); }
  Cbor& undef() { return head(cbor_encode_undef(buf_, sizeof buf_)); }
  Cbor& tag(std::uint64_t v) { return head(cbor_encode_tag(v, buf_, sizeof buf_)); }
  Cbor& text(std::string_view s) {
    head(cbor_encode_string_start(s.size(), buf_, sizeof buf_));
    return raw(s);
  }
  Cbor& bytes(std::string_view s) {
    head(cbor_encode_bytestring_start(s.size(), buf_, sizeof buf_));
    return raw(s);
  }
  Cbor& bytes(const std::vector<std::uint8_t>& v) {
    return bytes(std::string_view(reinterpret_cast<const char*>(v.data()), v.size()));
  }
  Cbor& indef_text() { return head(cbor_encode_indef_string_start(buf_, sizeof buf_)); }
  Cbor& indef_bytes() { return head(cbor_encode_indef_bytestring_start(buf_, sizeof buf_)); }
  Cbor& raw(std::string_view s) {
    for (char c : s) out_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  Cbor& raw_byte(std::uint8_t b) {
    out_.push_back(static_cast<std::byte>(b));
    return *this;
  }
  // Key/value shorthands for the common cases.
  Cbor& kv(std::string_view key, std::uint64_t value) { return text(key).uint(value); }
  Cbor& kv(std::string_view key, std::string_view value) { return text(key).text(value); }

  const std::vector<std::byte>& bytes_out() const { return out_; }

 private:
  Cbor& head(std::size_t written) {
    EXPECT_GT(written, 0u);
    for (std::size_t i = 0; i < written; ++i) out_.push_back(static_cast<std::byte>(buf_[i]));
    return *this;
  }
  unsigned char buf_[16] = {};
  std::vector<std::byte> out_;
};

// An exactly sized heap copy, so ASan catches any read past the payload.
inline Expected<GetStreamRequest, RequestError> get(const Cbor& cbor) {
  const std::vector<std::byte> copy = cbor.bytes_out();
  return decode_get_request(Format::Cbor, copy);
}

inline Expected<DescribeStreamRequest, RequestError> describe(const Cbor& cbor) {
  const std::vector<std::byte> copy = cbor.bytes_out();
  return decode_describe_request(Format::Cbor, copy);
}

inline ErrorCode code(const Cbor& cbor) {
  auto result = get(cbor);
  return result ? ErrorCode::InternalError : result.error().code;
}

// {"f":1,"l":1024, <one more pair>}
inline Cbor base_plus_one() { return std::move(Cbor().map(3).kv("f", 1).kv("l", 1024)); }

}  // namespace chunkd::protocol::testing
