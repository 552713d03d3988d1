// chunkd's base64 encoders (scalar and AVX2) against OpenSSL's EVP_EncodeBlock, byte for byte:
// every length 0..1024, the lengths around the AVX2 block (24 bytes in, 28 read), every alignment
// of input and output, and inputs that reach every character. Each encoding is also decoded back
// by OpenSSL's decoder and by chunkd's strict decoder (the device libraries' rules: standard
// alphabet, '=' padding, no line breaks). The AVX2 cases skip on a CPU without AVX2.
#include "protocol/base64.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

#include "tests/protocol/bytes.hpp"

namespace chunkd::protocol {
namespace base64 {
// Names the encoder in test output.
void PrintTo(Encoder encoder, std::ostream* os) {
  *os << (encoder == Encoder::Avx2 ? "Avx2" : "Scalar");
}
}  // namespace base64

namespace {

using base64::Encoder;
using test_bytes::Bytes;
using test_bytes::random_bytes;

// OpenSSL's encoding of `in` (without the NUL it appends).
std::string openssl_encode(std::span<const std::byte> in) {
  std::string out(base64::encoded_length(in.size()) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// OpenSSL's decoding of `text`, trimmed by the padding (EVP_DecodeBlock keeps its zero bytes).
Bytes openssl_decode(const std::string& text) {
  Bytes out(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return {};
  std::size_t size = static_cast<std::size_t>(n);
  if (!text.empty() && text.back() == '=') --size;
  if (text.size() > 1 && text[text.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

class Base64Encoder : public ::testing::TestWithParam<Encoder> {
 protected:
  void SetUp() override {
    if (!base64::encoder_supported(GetParam())) {
      GTEST_SKIP() << "this CPU has no AVX2: the AVX2 encoder cannot run here";
    }
  }

  // Encodes `in` into an exactly sized heap buffer (ASan sees any write past it), checks the
  // result against OpenSSL and returns it.
  std::string encode_checked(std::span<const std::byte> in) {
    std::vector<char> out(base64::encoded_length(in.size()));
    const std::size_t n = base64::encode_with(GetParam(), in, out);
    EXPECT_EQ(n, in.empty() ? 0 : out.size()) << "length " << in.size();
    std::string text(out.begin(), out.end());
    EXPECT_EQ(text, openssl_encode(in)) << "length " << in.size();
    return text;
  }
};

TEST_P(Base64Encoder, MatchesOpenSslForEveryLengthUpTo1024) {
  for (std::size_t size = 0; size <= 1024; ++size) {
    // An exactly sized input, so ASan sees any read past its end.
    const Bytes in = random_bytes(size, static_cast<unsigned>(size) + 1000);
    encode_checked(in);
  }
}

TEST_P(Base64Encoder, MatchesOpenSslAroundTheBlockSize) {
  // The AVX2 path takes 24 bytes per block while 28 are left; the scalar one 6 while 8 are left.
  for (std::size_t blocks = 0; blocks <= 8; ++blocks) {
    for (std::size_t extra = 0; extra <= 32; ++extra) {
      const std::size_t size = blocks * 24 + extra;
      for (const Bytes& in : {random_bytes(size, static_cast<unsigned>(size)), Bytes(size),
                              Bytes(size, std::byte{0xff})}) {
        encode_checked(in);
      }
    }
  }
}

TEST_P(Base64Encoder, MatchesOpenSslAtEveryAlignment) {
  const Bytes source = random_bytes(300, 7);
  std::vector<char> out(base64::encoded_length(300) + 64, '?');
  for (std::size_t in_offset = 0; in_offset < 32; ++in_offset) {
    for (std::size_t out_offset = 0; out_offset < 32; ++out_offset) {
      const std::span<const std::byte> in(source.data() + in_offset, 240 - in_offset % 3);
      std::fill(out.begin(), out.end(), '?');
      const std::size_t n =
          base64::encode_with(GetParam(), in, std::span(out).subspan(out_offset, 320));
      ASSERT_EQ(n, base64::encoded_length(in.size()));
      EXPECT_EQ(std::string(out.data() + out_offset, n), openssl_encode(in));
      // Nothing written before or after the encoding.
      EXPECT_EQ(std::string(out.data(), out_offset), std::string(out_offset, '?'));
      EXPECT_EQ(out[out_offset + n], '?');
    }
  }
}

TEST_P(Base64Encoder, ReachesEveryCharacter) {
  // The bytes 0..255 three times over, shifted by one each time, put every 6-bit value in every
  // position of a group.
  Bytes in;
  for (int round = 0; round < 3; ++round) {
    for (int b = 0; b < 256; ++b) in.push_back(std::byte((b + round) & 0xff));
  }
  const std::string text = encode_checked(in);
  for (const char c :
       std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")) {
    EXPECT_NE(text.find(c), std::string::npos) << c;
  }
}

TEST_P(Base64Encoder, MatchesOpenSslOnALargeInput) {
  const Bytes in = random_bytes((std::size_t{1} << 20) + 7, 42);
  encode_checked(in);
}

TEST_P(Base64Encoder, RoundTripsThroughOpenSslAndTheStrictDecoder) {
  for (std::size_t size = 1; size <= 200; ++size) {
    const Bytes in = random_bytes(size, static_cast<unsigned>(size) + 77);
    const std::string text = encode_checked(in);
    EXPECT_EQ(openssl_decode(text), in) << "length " << size;
    EXPECT_EQ(text.find_first_of("\r\n -_"), std::string::npos);
    Bytes back(size);
    ASSERT_EQ(base64::decode(text, back), size);
    EXPECT_EQ(back, in) << "length " << size;
  }
}

TEST_P(Base64Encoder, RefusesASmallBufferAndAnEmptyInput) {
  const Bytes in = random_bytes(100, 3);
  std::vector<char> out(base64::encoded_length(100) - 1, '?');
  EXPECT_EQ(base64::encode_with(GetParam(), in, out), 0u);
  EXPECT_EQ(std::string(out.begin(), out.end()), std::string(out.size(), '?'));
  EXPECT_EQ(base64::encode_with(GetParam(), {}, out), 0u);
}

INSTANTIATE_TEST_SUITE_P(Encoders, Base64Encoder, ::testing::Values(Encoder::Scalar, Encoder::Avx2),
                         [](const ::testing::TestParamInfo<Encoder>& info) {
                           return info.param == Encoder::Avx2 ? std::string("Avx2")
                                                              : std::string("Scalar");
                         });

TEST(Base64, TheScalarEncoderAlwaysRuns) {
  EXPECT_TRUE(base64::encoder_supported(Encoder::Scalar));
}

TEST(Base64, EncodeUsesAvx2WhenTheCpuHasIt) {
  const Encoder expected =
      base64::encoder_supported(Encoder::Avx2) ? Encoder::Avx2 : Encoder::Scalar;
  EXPECT_EQ(base64::active_encoder(), expected);
  // encode() and encode_with_spare() give the same bytes as the active encoder.
  const Bytes in = random_bytes(1000, 5);
  std::string a(base64::encoded_length(in.size()), '?');
  std::string b(a.size() + 1, '?');
  ASSERT_EQ(base64::encode(in, a), a.size());
  ASSERT_EQ(base64::encode_with_spare(in, b), a.size());
  EXPECT_EQ(a, openssl_encode(in));
  EXPECT_EQ(b, a + '\0');
}

}  // namespace
}  // namespace chunkd::protocol
