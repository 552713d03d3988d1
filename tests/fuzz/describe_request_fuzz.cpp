// Fuzzes decode_describe_request in both formats: the first input byte picks the format, the rest
// is the payload. Invariants: no crash or read out of bounds; a decoded token is at most 64 bytes;
// an error is InvalidJson / InvalidCbor or InvalidRequest; a syntax error never carries a token
// (an InvalidRequest may: with duplicate keys a bad `c` followed by a good one echoes the last).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "protocol/request.hpp"

namespace {

using namespace chunkd::protocol;

void check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Format format = (data[0] & 1) != 0 ? Format::Cbor : Format::Json;
  const auto payload =
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  auto result = decode_describe_request(format, payload);
  if (result) {
    check(!result->client_token || result->client_token->size() <= kMaxClientTokenBytes);
    check(!payload.empty() || !result->client_token);
    return 0;
  }
  const RequestError& error = result.error();
  const ErrorCode syntax = format == Format::Json ? ErrorCode::InvalidJson : ErrorCode::InvalidCbor;
  check(error.code == syntax || error.code == ErrorCode::InvalidRequest);
  check(error.code != syntax || !error.client_token);
  check(!error.client_token || error.client_token->size() <= kMaxClientTokenBytes);
  return 0;
}
