#include "protocol/base64.hpp"

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <cstring>

namespace chunkd::protocol::base64 {
namespace {

// EVP_EncodeBlock/EVP_DecodeBlock take an int length: work in chunks well below INT_MAX.
constexpr std::size_t kEncodeChunkBytes = std::size_t{3} << 26;  // a multiple of 3
constexpr std::size_t kDecodeChunkChars = std::size_t{4} << 26;  // a multiple of 4

const unsigned char* as_uchars(const std::byte* p) {
  return reinterpret_cast<const unsigned char*>(p);
}

// EVP_EncodeBlock writes a NUL after its output. `out` must have room for it.
void encode_unchecked(const std::byte* in, std::size_t bytes, char* out) {
  while (bytes > 0) {
    const std::size_t chunk = bytes < kEncodeChunkBytes ? bytes : kEncodeChunkBytes;
    const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out), as_uchars(in),
                                        static_cast<int>(chunk));
    in += chunk;
    bytes -= chunk;
    out += written;
  }
}

constexpr std::array<bool, 256> make_alphabet() {
  std::array<bool, 256> table{};
  for (char c = 'A'; c <= 'Z'; ++c) table[static_cast<unsigned char>(c)] = true;
  for (char c = 'a'; c <= 'z'; ++c) table[static_cast<unsigned char>(c)] = true;
  for (char c = '0'; c <= '9'; ++c) table[static_cast<unsigned char>(c)] = true;
  table['+'] = true;
  table['/'] = true;
  return table;
}
constexpr std::array<bool, 256> kAlphabet = make_alphabet();

}  // namespace

std::size_t encode(std::span<const std::byte> in, std::span<char> out) {
  const std::size_t bytes = in.size();
  const std::size_t chars = encoded_length(bytes);
  if (bytes == 0 || out.size() < chars) return 0;
  // Everything but the last (1..3 byte) group goes straight into `out`: the NUL that
  // EVP_EncodeBlock appends lands where the last group's characters go. The last group goes
  // through a small scratch buffer so `out` may be exactly `chars` long.
  const std::size_t body_bytes = (bytes - 1) / 3 * 3;
  encode_unchecked(in.data(), body_bytes, out.data());
  std::array<char, 5> tail{};
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(tail.data()), as_uchars(in.data() + body_bytes),
                  static_cast<int>(bytes - body_bytes));
  std::memcpy(out.data() + (chars - 4), tail.data(), 4);
  return chars;
}

std::size_t encode_with_spare(std::span<const std::byte> in, std::span<char> out) {
  const std::size_t chars = encoded_length(in.size());
  if (in.empty() || out.size() < chars + 1) return 0;
  encode_unchecked(in.data(), in.size(), out.data());
  return chars;
}

std::optional<std::size_t> decode(std::string_view text, std::span<std::byte> out) {
  const std::size_t chars = text.size();
  if (chars % 4 != 0) return std::nullopt;
  if (chars == 0) return std::size_t{0};
  std::size_t padding = 0;
  if (text[chars - 1] == '=') padding = text[chars - 2] == '=' ? 2 : 1;
  for (std::size_t i = 0; i < chars - padding; ++i) {
    if (!kAlphabet[static_cast<unsigned char>(text[i])]) return std::nullopt;
  }
  const std::size_t decoded = chars / 4 * 3 - padding;
  if (out.size() < decoded) return std::nullopt;

  // All quanta but the last decode straight into `out` (3 bytes per 4 characters, no padding in
  // them); the last one, which may carry padding, goes through a scratch buffer.
  const auto* src = reinterpret_cast<const unsigned char*>(text.data());
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  std::size_t body_chars = chars - 4;
  while (body_chars > 0) {
    const std::size_t chunk = body_chars < kDecodeChunkChars ? body_chars : kDecodeChunkChars;
    const int written = EVP_DecodeBlock(dst, src, static_cast<int>(chunk));
    if (written < 0) return std::nullopt;
    src += chunk;
    dst += written;
    body_chars -= chunk;
  }
  // EVP_DecodeBlock decodes '=' as zero bits; the padding count says how many bytes are real.
  std::array<unsigned char, 4> last{};
  std::memcpy(last.data(), src, 4);
  for (auto& c : last) {
    if (c == '=') c = 'A';
  }
  std::array<unsigned char, 3> tail{};
  if (EVP_DecodeBlock(tail.data(), last.data(), 4) != 3) return std::nullopt;
  std::memcpy(dst, tail.data(), 3 - padding);
  return decoded;
}

}  // namespace chunkd::protocol::base64
