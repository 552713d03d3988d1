// Private to protocol/: the format-independent half of the device side (device.cpp) and the
// entry points of its JSON (device_json.cpp) and CBOR (device_cbor.cpp) halves. Each format file
// walks its own document and hands the keys it found to the checks here, so both formats agree
// on required keys, duplicates and `l`. Not part of any contract; do not include outside
// protocol/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/expected.hpp"
#include "protocol/device.hpp"

namespace chunkd::protocol::detail {

// A device cannot reply to a bad reply: decode errors are a plain message.
using DeviceError = std::string;

template <class T>
Expected<T, DeviceError> failure(std::string message) {
  return unexpected(std::move(message));
}

constexpr std::uint64_t kU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kU64 = std::numeric_limits<std::uint64_t>::max();

// Bits of the keys seen so far, per kind of map (for required and duplicate keys).
constexpr unsigned kSeenC = 1, kSeenF = 2, kSeenL = 4, kSeenI = 8, kSeenP = 16;  // data
constexpr unsigned kSeenS = 2, kSeenD = 4, kSeenR = 8;                           // description
constexpr unsigned kSeenZ = 4;                                                   // r[] entry

// Marks `bit` seen in `seen`; false when it was seen before.
inline bool first_time(unsigned& seen, unsigned bit) {
  if ((seen & bit) != 0) return false;
  seen |= bit;
  return true;
}

// The checks after the last key of a data reply: f, l, i and p present, `l` == payload length.
Expected<DataReply, DeviceError> finish_data(DataReply reply, unsigned seen, std::uint64_t length);

// Rejected replies carry each value twice (long and short key); both must agree when both are
// present.
struct RejectedFields {
  std::optional<std::string_view> client_token, c, code, o, message, m;
};
// Which field of RejectedFields a key names, or nullptr.
std::optional<std::string_view>* rejected_field(RejectedFields& f, std::string_view key);
// The checks after the last key of a rejected reply: long and short keys agree, code present.
Expected<RejectedReply, DeviceError> finish_rejected(const RejectedFields& f);

// device_json.cpp
std::vector<std::byte> encode_get_request_json(const GetStreamArgs& args);
std::vector<std::byte> encode_describe_request_json(std::optional<std::string_view> client_token);
Expected<DataReply, DeviceError> decode_data_json(std::span<const std::byte> in);
Expected<DescriptionReply, DeviceError> decode_description_json(std::span<const std::byte> in);
Expected<RejectedReply, DeviceError> decode_rejected_json(std::span<const std::byte> in);

// device_cbor.cpp
std::vector<std::byte> encode_get_request_cbor(const GetStreamArgs& args);
std::vector<std::byte> encode_describe_request_cbor(std::optional<std::string_view> client_token);
Expected<DataReply, DeviceError> decode_data_cbor(std::span<const std::byte> in);
Expected<DescriptionReply, DeviceError> decode_description_cbor(std::span<const std::byte> in);
Expected<RejectedReply, DeviceError> decode_rejected_cbor(std::span<const std::byte> in);

}  // namespace chunkd::protocol::detail
