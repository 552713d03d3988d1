// Fuzzes base64 encoding: every encoder this CPU runs (scalar, AVX2), and encode() and
// encode_with_spare(), must give exactly OpenSSL's EVP_EncodeBlock output for the input and for the
// input less its first byte (another alignment), write nothing past the encoding (exactly sized
// heap buffers, ASan), and decode back to the input through chunkd's strict decoder.
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "protocol/base64.hpp"

namespace {

namespace base64 = chunkd::protocol::base64;

void check(bool condition) {
  if (!condition) std::abort();
}

void check_empty() {
  char out[8] = {};
  for (const base64::Encoder encoder : {base64::Encoder::Scalar, base64::Encoder::Avx2}) {
    if (base64::encoder_supported(encoder)) check(base64::encode_with(encoder, {}, out) == 0);
  }
  check(base64::encode({}, out) == 0 && base64::encode_with_spare({}, out) == 0);
}

void check_input(std::span<const std::byte> in) {
  if (in.empty()) return check_empty();
  const std::size_t chars = base64::encoded_length(in.size());
  std::vector<char> expected(chars + 1);
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(expected.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  check(static_cast<std::size_t>(n) == chars);

  std::vector<char> out(chars);
  for (const base64::Encoder encoder : {base64::Encoder::Scalar, base64::Encoder::Avx2}) {
    if (!base64::encoder_supported(encoder)) continue;
    check(base64::encode_with(encoder, in, out) == chars);
    check(std::memcmp(out.data(), expected.data(), chars) == 0);
  }
  check(base64::encode(in, out) == chars);
  check(std::memcmp(out.data(), expected.data(), chars) == 0);
  std::vector<char> spare(chars + 1);
  check(base64::encode_with_spare(in, spare) == chars);
  check(std::memcmp(spare.data(), expected.data(), chars + 1) == 0);

  std::vector<std::byte> back(in.size());
  const auto decoded = base64::decode(std::string_view(out.data(), chars), back);
  check(decoded.has_value() && *decoded == in.size());
  check(std::memcmp(back.data(), in.data(), in.size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  check_input(in);
  if (size > 0) check_input(in.subspan(1));
  return 0;
}
