// Encoders for the replies chunkd publishes (SPEC.md §1.2-§1.4).
// Data replies are written into a caller-provided buffer with no heap allocation per call
// (the block path); description and rejected replies are rare and return a fresh buffer.
// JSON strings are escaped per RFC 8259 (no "\/"), base64 is standard with padding, no line breaks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "protocol/error_code.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {

// Upper bound of the encoded size of a data reply, for sizing buffers.
std::size_t data_reply_max_bytes(Format format, std::size_t payload_bytes,
                                 std::size_t token_bytes);

// Encodes one block. Returns the number of bytes written, or 0 when `out` is too small.
std::size_t encode_data_reply(Format format, std::span<std::byte> out,
                              std::optional<std::string_view> client_token, std::uint32_t file_id,
                              std::uint32_t block_index, std::span<const std::byte> payload);

struct FileEntry {
  std::uint32_t file_id;
  std::uint64_t size_bytes;
};

std::vector<std::byte> encode_description(Format format,
                                          std::optional<std::string_view> client_token,
                                          std::uint64_t version, std::string_view description,
                                          std::span<const FileEntry> files);

std::vector<std::byte> encode_rejected(Format format, std::optional<std::string_view> client_token,
                                       ErrorCode code, std::string_view message);

}  // namespace chunkd::protocol
