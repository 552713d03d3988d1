// Encoders for the replies chunkd publishes (SPEC.md §1.2-§1.4).
// Data replies are written into a caller-provided buffer with no heap allocation per call
// (the block path); description and rejected replies are rare and return a fresh buffer.
// JSON strings are escaped per RFC 8259 (no "\/"), base64 is standard with padding, no line breaks.
// Client tokens and other texts are arbitrary bytes: JSON escapes '"', '\\' and the control
// characters below 0x20 (short escapes \b \f \n \r \t, else \u00xx), never '/', and passes every
// other byte through unchanged, bytes >= 0x80 included even when they are not valid UTF-8: a device
// compares its echoed token byte for byte, and any rewriting (\u00XX, U+FFFD) would change it. CBOR
// puts the same bytes in a text string. Pure and thread-safe.
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
std::size_t data_reply_max_bytes(Format format, std::size_t payload_bytes, std::size_t token_bytes);

// Encodes one block. Returns the number of bytes written, or 0 when `out` is too small.
std::size_t encode_data_reply(Format format, std::span<std::byte> out,
                              std::optional<std::string_view> client_token, std::uint32_t file_id,
                              std::uint32_t block_index, std::span<const std::byte> payload);

// Bytes a CBOR data reply holds before its payload, which follows them verbatim (one memcpy).
// Lets the block path choose where the payload lands: start `out` that many bytes before the
// chosen spot. On some CPUs (AMD EPYC here, glibc's rep-movsb path) a copy of a few KiB or more
// runs 3.5-30x slower when (destination - source) mod 4096 is 1..31, which a 17-21 byte header
// over a page-aligned source and buffer hits; a payload at the source's offset modulo 64 avoids
// it (bench/README.md).
std::size_t cbor_data_header_bytes(std::optional<std::string_view> client_token,
                                   std::uint32_t file_id, std::uint32_t block_index,
                                   std::size_t payload_bytes);

// Writes only that header (cbor_data_header_bytes of them; 0 when `out` is too small): the reply
// is the header followed by the payload's bytes, which a gathered write can take from where they
// are (the block path sends cache extent slices this way, with no copy in user space).
std::size_t encode_cbor_data_header(std::span<std::byte> out,
                                    std::optional<std::string_view> client_token,
                                    std::uint32_t file_id, std::uint32_t block_index,
                                    std::size_t payload_bytes);

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

// Building blocks of the encoders, shared with the device codec (device.cpp) and tests.
namespace wire {
// Length of `text` once JSON-escaped as above (without the quotes); at most 6 * text.size().
std::size_t json_escaped_length(std::string_view text);
// Writes the escaped form of `text` (without quotes) at `out`, which must have room for
// json_escaped_length(text) chars; returns one past the last char written.
char* write_json_escaped(char* out, std::string_view text);
// Size of a CBOR item head (initial byte plus shortest argument) carrying `argument`: 1, 2, 3,
// 5, 9.
std::size_t cbor_head_length(std::uint64_t argument);
// Writes a CBOR head of `major_type` (0..7) with the shortest encoding of `argument`; `out` must
// have room for cbor_head_length(argument) bytes. Returns one past the last byte written.
std::byte* write_cbor_head(std::byte* out, std::uint8_t major_type, std::uint64_t argument);
}  // namespace wire

}  // namespace chunkd::protocol
