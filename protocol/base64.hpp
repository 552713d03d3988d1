// Standard base64 (RFC 4648 §4 alphabet, '=' padding, no line breaks), for the `p` of JSON data
// replies and tests: exactly what device libraries decode. Encoding is chunkd's own (an AVX2 path,
// chosen at run time when the CPU has it, and a portable table-driven one; both produce the same
// bytes as OpenSSL's EVP_EncodeBlock); decoding goes through OpenSSL's EVP_DecodeBlock.
// Pure, allocation-free: every function writes into a caller buffer. Thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>

namespace chunkd::protocol::base64 {

// Exact length of the encoding of `bytes` input bytes: 4 * ceil(bytes / 3).
constexpr std::size_t encoded_length(std::size_t bytes) { return (bytes + 2) / 3 * 4; }

// Encodes `in` into the first encoded_length(in.size()) bytes of `out` (no NUL terminator is
// left behind, bytes past the encoding are untouched). Returns the number of characters written,
// or 0 when `out` is too small (an empty input also returns 0).
std::size_t encode(std::span<const std::byte> in, std::span<char> out);

// As encode(), for a caller that has a spare char after the encoding (the data-reply encoder,
// which writes a closing quote there next): `out` must hold encoded_length(in.size()) + 1 chars,
// and the one after the encoding is overwritten with a NUL (as EVP_EncodeBlock did).
// Returns 0 when `out` is too small or `in` is empty.
std::size_t encode_with_spare(std::span<const std::byte> in, std::span<char> out);

// The encoder implementations. encode() uses active_encoder(); tests and benchmarks pick one.
enum class Encoder {
  Scalar,  // portable: 6 bytes to 8 characters through a 4096-entry pair table
  Avx2,    // x86-64 with AVX2: 24 bytes to 32 characters per step, the rest as Scalar
};

// Whether `encoder` runs on this CPU (Scalar always does; Avx2 when the CPU and the OS support
// AVX2, never on other architectures).
bool encoder_supported(Encoder encoder);

// The encoder encode() uses: the fastest supported one, chosen once at the first call.
Encoder active_encoder();

// As encode(), with the given implementation. REQUIRES: encoder_supported(encoder).
std::size_t encode_with(Encoder encoder, std::span<const std::byte> in, std::span<char> out);

// Upper bound of the decoded size of `text`: 3 * (text.size() / 4).
constexpr std::size_t max_decoded_length(std::size_t chars) { return chars / 4 * 3; }

// Strict decode of `text`: its length is a multiple of 4, it holds only the standard alphabet,
// with at most two '=' and only at the very end (no whitespace, no line breaks, no URL-safe
// alphabet). Writes the decoded bytes to the front of `out`. Returns their number (the padding
// accounted for), or nullopt when `text` is not valid base64 or `out` is too small. Bits left over
// in the last character before the padding are ignored, as OpenSSL and device libraries do.
std::optional<std::size_t> decode(std::string_view text, std::span<std::byte> out);

}  // namespace chunkd::protocol::base64
