// Decoding of device requests (SPEC.md §1.1, §1.3) from JSON (simdjson) and CBOR (libcbor), and
// block selection. Every byte sequence yields either a request or a typed RequestError: no
// exception escapes, no read past the buffer, allocation bounded by the input size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "protocol/error_code.hpp"
#include "protocol/expected.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {

inline constexpr std::size_t kMaxClientTokenBytes = 64;
inline constexpr std::uint32_t kMinBlockSize = 256;
inline constexpr std::uint32_t kMaxBlockSize = 131072;
inline constexpr std::uint32_t kMaxRequestPayloadBytes = 131072;  // per request, all blocks
inline constexpr std::uint32_t kMaxOffset = 98304;
inline constexpr std::uint32_t kMaxBlockCount = 98304;
inline constexpr std::size_t kMaxBitmapBytes = 12287;  // 12288 or more: BlockBitmapLimitExceeded
inline constexpr std::uint32_t kMaxFileId = 255;

// A GetStream request after the stateless checks of §1.1/§1.4 (types, key presence, and the
// bounds of l, o, n, b and the token). What needs the stream (version, file id, file size) is
// checked later: see select_blocks().
struct GetStreamRequest {
  std::optional<std::string> client_token;
  std::optional<std::uint64_t> version;  // `s`
  std::uint32_t file_id = 0;             // `f`, 0..255
  std::uint32_t block_size = 0;          // `l`, 256..131072
  std::uint32_t offset = 0;              // `o`, 0..98304
  std::uint32_t count = 0;               // `n` as given, 0 when absent; 0..98304
  std::optional<std::vector<std::uint8_t>> bitmap;  // `b`, decoded bytes, < 12288 bytes
};

struct DescribeStreamRequest {
  std::optional<std::string> client_token;
};

Expected<GetStreamRequest, RequestError> decode_get_request(Format format,
                                                            std::span<const std::byte> payload);
Expected<DescribeStreamRequest, RequestError> decode_describe_request(
    Format format, std::span<const std::byte> payload);

// Applies the selection rules of §1.1 for a file of `file_size_bytes`: without a bitmap blocks
// o..o+N-1 (N = n, or 131072/l when n is 0); with a bitmap its set bits in ascending order, at most
// n of them when n > 0; blocks past EOF dropped; then at most 131072 bytes of block payload.
// Fills `blocks` (cleared first; capacity reused) with ascending block indices, or returns
// OffsetOutOfBounds when no requested block lies inside the file.
std::optional<ErrorCode> select_blocks(const GetStreamRequest& request,
                                       std::uint64_t file_size_bytes,
                                       std::vector<std::uint32_t>& blocks);

// Number of blocks of `block_size` in a file (the last one may be short).
std::uint64_t block_count(std::uint64_t file_size_bytes, std::uint32_t block_size);

}  // namespace chunkd::protocol
