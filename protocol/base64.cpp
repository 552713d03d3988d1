#include "protocol/base64.hpp"

#include <openssl/evp.h>

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>

#include "base/assert.hpp"

#if defined(__x86_64__) || defined(__i386__)
#define CHUNKD_BASE64_X86 1
#include <immintrin.h>
#else
#define CHUNKD_BASE64_X86 0
#endif

namespace chunkd::protocol::base64 {
namespace {

// EVP_DecodeBlock takes an int length: decode in chunks well below INT_MAX.
constexpr std::size_t kDecodeChunkChars = std::size_t{4} << 26;  // a multiple of 4

constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// --- Scalar encoder
// -------------------------------------------------------------------------------

// kPairs[v], for 12 bits v: the characters of v's high and low 6 bits, in that order.
using Pair = std::array<char, 2>;
constexpr std::array<Pair, 4096> make_pairs() {
  std::array<Pair, 4096> table{};
  for (std::size_t v = 0; v < table.size(); ++v) table[v] = {kDigits[v >> 6], kDigits[v & 63]};
  return table;
}
constexpr std::array<Pair, 4096> kPairs = make_pairs();

void put_pair(char* out, std::uint64_t twelve_bits) {
  std::memcpy(out, kPairs[twelve_bits & 0xfff].data(), 2);
}

// The 8 bytes at `in` as a big-endian number: the first byte in the top bits.
std::uint64_t load_be64(const unsigned char* in) {
  std::uint64_t v = 0;
  std::memcpy(&v, in, 8);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
  return v;
}

// Encodes `bytes` bytes (any number) with padding. 6 bytes go to 8 characters per step, from one
// 64-bit load while 8 bytes are left to read; then 3 to 4; then the padded last group.
void encode_scalar(const unsigned char* in, std::size_t bytes, char* out) {
  while (bytes >= 8) {
    const std::uint64_t v = load_be64(in) >> 16;  // the next 6 bytes, in the low 48 bits
    put_pair(out, v >> 36);
    put_pair(out + 2, v >> 24);
    put_pair(out + 4, v >> 12);
    put_pair(out + 6, v);
    in += 6;
    bytes -= 6;
    out += 8;
  }
  while (bytes >= 3) {
    const std::uint64_t v = std::uint64_t{in[0]} << 16 | std::uint64_t{in[1]} << 8 | in[2];
    put_pair(out, v >> 12);
    put_pair(out + 2, v);
    in += 3;
    bytes -= 3;
    out += 4;
  }
  if (bytes == 0) return;
  const unsigned a = in[0];
  const unsigned b = bytes == 2 ? in[1] : 0;
  out[0] = kDigits[a >> 2];
  out[1] = kDigits[(a & 3) << 4 | b >> 4];
  out[2] = bytes == 2 ? kDigits[(b & 15) << 2] : '=';
  out[3] = '=';
}

// --- AVX2 encoder
// ---------------------------------------------------------------------------------
#if CHUNKD_BASE64_X86

// Encodes whole 24-byte blocks into 32 characters each while 28 bytes are left to read (each block
// reads 12 bytes past its own 16-byte load), and returns how many bytes it encoded (a multiple of
// 24). Per 128-bit lane, 12 bytes become 16 six-bit indices, then 16 characters:
// 1. a byte shuffle gives each 32-bit word the group a b c of its 3 bytes as [b a c b], so its low
//    16 bits are a:b and its high 16 bits b:c (little-endian);
// 2. the indices a>>2 and (b&15)<<2|c>>6 are masked in place and moved to bytes 0 and 2 by a
//    multiply-high (x * 2^6 >> 16 and x * 2^10 >> 16); (a&3)<<4|b>>4 and c&63 to bytes 1 and 3 by a
//    multiply-low (x * 2^4 and x * 2^8);
// 3. each index is turned into its character by adding an offset looked up per range: A-Z +65,
//    a-z +71, 0-9 -4, '+' -19, '/' -16. The range number is 0 for A-Z, 1 for a-z and 2..13 for
//    the indices 52..63 (a saturating subtract of 51, plus one where the index is above 25).
__attribute__((target("avx2"))) std::size_t encode_avx2_blocks(const unsigned char* in,
                                                               std::size_t bytes, char* out) {
  const __m256i spread = _mm256_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,  //
                                          1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
  const __m256i mask_02 = _mm256_set1_epi32(0x0fc0fc00);
  const __m256i shift_02 = _mm256_set1_epi32(0x04000040);
  const __m256i mask_13 = _mm256_set1_epi32(0x003f03f0);
  const __m256i shift_13 = _mm256_set1_epi32(0x01000010);
  const __m256i offsets =
      _mm256_setr_epi8(65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 0, 0,  //
                       65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 0, 0);
  const __m256i above_digits = _mm256_set1_epi8(51);
  const __m256i above_upper = _mm256_set1_epi8(25);
  std::size_t done = 0;
  for (; bytes >= 28 && done <= bytes - 28; done += 24) {
    const __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + done));
    const __m128i high = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + done + 12));
    const __m256i groups =
        _mm256_shuffle_epi8(_mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1), spread);
    const __m256i indices_02 = _mm256_mulhi_epu16(_mm256_and_si256(groups, mask_02), shift_02);
    const __m256i indices_13 = _mm256_mullo_epi16(_mm256_and_si256(groups, mask_13), shift_13);
    const __m256i indices = _mm256_or_si256(indices_02, indices_13);
    const __m256i range = _mm256_sub_epi8(_mm256_subs_epu8(indices, above_digits),
                                          _mm256_cmpgt_epi8(indices, above_upper));
    const __m256i chars = _mm256_add_epi8(indices, _mm256_shuffle_epi8(offsets, range));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + done / 3 * 4), chars);
  }
  return done;
}

void encode_avx2(const unsigned char* in, std::size_t bytes, char* out) {
  const std::size_t done = encode_avx2_blocks(in, bytes, out);
  encode_scalar(in + done, bytes - done, out + done / 3 * 4);
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") != 0;
}

#else

void encode_avx2(const unsigned char*, std::size_t, char*) { CHUNKD_ASSERT(false); }
bool cpu_has_avx2() { return false; }

#endif

// --- Dispatch
// -------------------------------------------------------------------------------------

using EncodeFn = void (*)(const unsigned char* in, std::size_t bytes, char* out);

EncodeFn encoder_function(Encoder encoder) {
  return encoder == Encoder::Avx2 ? encode_avx2 : encode_scalar;
}

// encode()'s function, looked up once.
EncodeFn active_function() {
  static const EncodeFn function = encoder_function(active_encoder());
  return function;
}

// Writes the encoding of `in` into `out` after checking the sizes; `spare` more chars must fit.
std::size_t encode_checked(EncodeFn function, std::span<const std::byte> in, std::span<char> out,
                           std::size_t spare) {
  const std::size_t chars = encoded_length(in.size());
  if (in.empty() || out.size() < chars + spare) return 0;
  function(reinterpret_cast<const unsigned char*>(in.data()), in.size(), out.data());
  return chars;
}

constexpr std::array<bool, 256> make_alphabet() {
  std::array<bool, 256> table{};
  for (const char c : std::string_view(kDigits, 64)) table[static_cast<unsigned char>(c)] = true;
  return table;
}
constexpr std::array<bool, 256> kAlphabet = make_alphabet();

}  // namespace

bool encoder_supported(Encoder encoder) {
  static const bool avx2 = cpu_has_avx2();
  return encoder == Encoder::Scalar || avx2;
}

Encoder active_encoder() {
  return encoder_supported(Encoder::Avx2) ? Encoder::Avx2 : Encoder::Scalar;
}

std::size_t encode_with(Encoder encoder, std::span<const std::byte> in, std::span<char> out) {
  CHUNKD_ASSERT(encoder_supported(encoder));
  return encode_checked(encoder_function(encoder), in, out, 0);
}

std::size_t encode(std::span<const std::byte> in, std::span<char> out) {
  return encode_checked(active_function(), in, out, 0);
}

std::size_t encode_with_spare(std::span<const std::byte> in, std::span<char> out) {
  const std::size_t chars = encode_checked(active_function(), in, out, 1);
  if (chars != 0) out[chars] = '\0';
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
