// Device side of the stream protocol. Encoders build requests the way device libraries do; decoders
// check replies as strictly as device decoders do (types, required keys, `l` == payload length),
// and a little more (duplicate keys and trailing bytes are errors), so tests catch any drift in
// what chunkd publishes.
//
// Each format has its own file: device_json.cpp (simdjson's DOM) and device_cbor.cpp (a small
// hand-written reader). This file dispatches on the format and holds the checks both formats
// share (required keys, `l`, the rejected reply's long and short keys). Nothing allocates more
// than the input size.
#include "protocol/device.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/device_internal.hpp"

namespace chunkd::protocol {
namespace detail {

Expected<DataReply, DeviceError> finish_data(DataReply reply, unsigned seen, std::uint64_t length) {
  const unsigned required = kSeenF | kSeenL | kSeenI | kSeenP;
  if ((seen & required) != required) return failure<DataReply>("data reply lacks f, l, i or p");
  if (length != reply.payload.size()) {
    return failure<DataReply>("data reply: l does not match the payload length");
  }
  reply.length = static_cast<std::uint32_t>(length);
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

Expected<RejectedReply, DeviceError> finish_rejected(const RejectedFields& f) {
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

}  // namespace detail

std::vector<std::byte> encode_get_request(Format format, const GetStreamArgs& args) {
  return format == Format::Cbor ? detail::encode_get_request_cbor(args)
                                : detail::encode_get_request_json(args);
}

std::vector<std::byte> encode_describe_request(Format format,
                                               std::optional<std::string_view> client_token) {
  return format == Format::Cbor ? detail::encode_describe_request_cbor(client_token)
                                : detail::encode_describe_request_json(client_token);
}

Expected<DataReply, std::string> decode_data_reply(Format format, std::span<const std::byte> in) {
  return format == Format::Cbor ? detail::decode_data_cbor(in) : detail::decode_data_json(in);
}

Expected<DescriptionReply, std::string> decode_description(Format format,
                                                           std::span<const std::byte> in) {
  return format == Format::Cbor ? detail::decode_description_cbor(in)
                                : detail::decode_description_json(in);
}

Expected<RejectedReply, std::string> decode_rejected(Format format, std::span<const std::byte> in) {
  return format == Format::Cbor ? detail::decode_rejected_cbor(in)
                                : detail::decode_rejected_json(in);
}

}  // namespace chunkd::protocol
