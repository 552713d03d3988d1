// The device side of the stream protocol: request encoders and reply decoders, as the device
// libraries implement them. Used by the fleet simulator (tools/chunkload) and by tests.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "protocol/reply.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {

struct GetStreamArgs {
  std::optional<std::string> client_token;
  std::optional<std::uint64_t> version;
  std::uint32_t file_id = 0;
  std::uint32_t block_size = 0;
  std::optional<std::uint32_t> offset;
  std::optional<std::uint32_t> count;
  std::optional<std::vector<std::uint8_t>> bitmap;  // JSON: hex text; CBOR: byte string
};
std::vector<std::byte> encode_get_request(Format format, const GetStreamArgs& args);
std::vector<std::byte> encode_describe_request(Format format,
                                               std::optional<std::string_view> client_token);

struct DataReply {
  std::optional<std::string> client_token;
  std::uint32_t file_id = 0;
  std::uint32_t length = 0;  // `l`
  std::uint32_t block_index = 0;
  std::vector<std::byte> payload;
};
struct DescriptionReply {
  std::optional<std::string> client_token;
  std::uint64_t version = 0;
  std::string description;
  std::vector<FileEntry> files;
};
struct RejectedReply {
  std::optional<std::string> client_token;
  std::string code;
  std::string message;
};

// Decode errors are a plain message: a device cannot reply to a bad reply.
Expected<DataReply, std::string> decode_data_reply(Format format, std::span<const std::byte> in);
Expected<DescriptionReply, std::string> decode_description(Format format,
                                                           std::span<const std::byte> in);
Expected<RejectedReply, std::string> decode_rejected(Format format, std::span<const std::byte> in);

}  // namespace chunkd::protocol
