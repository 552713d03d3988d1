// Standard base64 (RFC 4648 §4 alphabet, '=' padding, no line breaks) on top of OpenSSL's
// EVP_EncodeBlock/EVP_DecodeBlock, for the `p` of JSON data replies and tests.
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

// As encode(), with one call into OpenSSL, for a caller that has a spare char after the encoding
// (the data-reply encoder, which writes a closing quote there next): `out` must hold
// encoded_length(in.size()) + 1 chars, and the one after the encoding is overwritten with a NUL.
// Returns 0 when `out` is too small or `in` is empty.
std::size_t encode_with_spare(std::span<const std::byte> in, std::span<char> out);

// Upper bound of the decoded size of `text`: 3 * (text.size() / 4).
constexpr std::size_t max_decoded_length(std::size_t chars) { return chars / 4 * 3; }

// Strict decode of `text`: its length is a multiple of 4, it holds only the standard alphabet,
// with at most two '=' and only at the very end (no whitespace, no line breaks, no URL-safe
// alphabet). Writes the decoded bytes to the front of `out`. Returns their number (the padding
// accounted for), or nullopt when `text` is not valid base64 or `out` is too small. Bits left over
// in the last character before the padding are ignored, as OpenSSL and device libraries do.
std::optional<std::size_t> decode(std::string_view text, std::span<std::byte> out);

}  // namespace chunkd::protocol::base64
