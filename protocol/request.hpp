// Decoding of device requests (SPEC.md §1.1, §1.3) from JSON (simdjson) and CBOR (libcbor), and
// block selection. Every byte sequence yields either a request or a typed RequestError: no
// exception escapes, no read past the buffer, allocation bounded by the input size.
// Thread-safe: the JSON decoder keeps one parser per thread (thread_local), nothing else is shared.
//
// Decoding rules (decisions marked * are ours where SPEC.md is silent):
// - Payload over kMaxRequestMessageBytes* → InvalidRequest, before any parsing. The limit leaves
//   BlockBitmapLimitExceeded reachable in both formats (a 12288-byte bitmap is 24576 hex chars).
// - Not a JSON object → InvalidJson; not a CBOR map → InvalidCbor: syntax errors, truncation,
//   trailing bytes after the object/map, JSON nesting deeper than 32*, CBOR nesting deeper than
//   16*, a CBOR declared length larger than the payload, JSON integers beyond 64 bits* (simdjson
//   rejects them). Well-formed CBOR indefinite-length maps, arrays and strings are accepted*
//   (string chunks are concatenated); a top-level CBOR tag is accepted only if it is the
//   self-describe tag 55799*. Empty GetStream payload → InvalidJson / InvalidCbor; empty
//   DescribeStream payload → {} in both formats.
// - Unknown keys are ignored (also non-text CBOR keys). Duplicate keys*: every occurrence is
//   type-checked and the last one wins.
// - Integers: JSON numbers without fraction or exponent, CBOR unsigned integers of any width, or
//   a JSON string / CBOR text string of ASCII decimal digits only ("4", "007"; no sign, space or
//   point*). Negative numbers, floats (even 3.0), bools, null, arrays, maps, byte strings, tagged
//   CBOR items → InvalidRequest. JSON -0 is the integer 0* (simdjson reads it so).
// - `c`: a string (CBOR: valid UTF-8 text) of at most 64 bytes after unescaping, else
//   InvalidRequest. `f` over 255 → InvalidRequest*. `s` is any 64-bit unsigned integer.
// - `b`: JSON string or CBOR text string of hex, "0x"/"0X" optional, digits of either case; an odd
//   number of digits or a non-hex character → InvalidRequest* (no padding guessed: byte k of the
//   text is b[k]). CBOR byte string: the bytes as they are. Empty bitmap: selects nothing.
// - Check order when several things are wrong: first every type/presence error (InvalidRequest:
//   wrong types, token, missing f or l, f over 255), then l (BlockSizeOutOfBounds), o
//   (OffsetOutOfBounds), n (BlockCountLimitExceeded), b (BlockBitmapLimitExceeded).
// - RequestError::client_token is set when the payload's (last) `c` was a valid token, whatever
//   else is wrong, except for InvalidJson / InvalidCbor / oversize payloads (nothing is trusted).
// - DescribeStream: only `c` is looked at, with the same rules; other keys are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/expected.hpp"
#include "protocol/error_code.hpp"
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
// Largest request payload decoded (both formats); larger → InvalidRequest without parsing.
inline constexpr std::size_t kMaxRequestMessageBytes = 32768;

// A GetStream request after the stateless checks of §1.1/§1.4 (types, key presence, and the
// bounds of l, o, n, b and the token). What needs the stream (version, file id, file size) is
// checked later: see select_blocks().
struct GetStreamRequest {
  std::optional<std::string> client_token;
  std::optional<std::uint64_t> version;             // `s`
  std::uint32_t file_id = 0;                        // `f`, 0..255
  std::uint32_t block_size = 0;                     // `l`, 256..131072
  std::uint32_t offset = 0;                         // `o`, 0..98304
  std::uint32_t count = 0;                          // `n` as given, 0 when absent; 0..98304
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
// The payload cap counts real block lengths: the blocks are kept in order while their lengths sum
// to at most 131072, so a short last block of the file is sent when it still fits. An empty file
// has no blocks: every request for it is OffsetOutOfBounds. Precondition: `request` came from a
// decoder (a block size outside 256..131072 returns BlockSizeOutOfBounds defensively).
std::optional<ErrorCode> select_blocks(const GetStreamRequest& request,
                                       std::uint64_t file_size_bytes,
                                       std::vector<std::uint32_t>& blocks);

// Number of blocks of `block_size` in a file (the last one may be short).
std::uint64_t block_count(std::uint64_t file_size_bytes, std::uint32_t block_size);

}  // namespace chunkd::protocol
