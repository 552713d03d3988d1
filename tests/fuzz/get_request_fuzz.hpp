// The GetStream fuzz body shared by the JSON and CBOR targets. Invariants: no crash or read out of
// bounds (ASan/UBSan); a decoded request is within the stateless bounds; an error has one of the
// decoder's codes and never a token over 64 bytes; select_blocks on a decoded request yields
// ascending blocks inside the file, at most n of them, with at most 131072 bytes of payload.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "protocol/request.hpp"

namespace chunkd::fuzz {

using namespace chunkd::protocol;  // NOLINT(google-build-using-namespace): fuzz-only header

inline void check(bool condition) {
  if (!condition) std::abort();
}

inline void check_selection(const GetStreamRequest& request, std::uint64_t file_size,
                            std::vector<std::uint32_t>& blocks) {
  const std::optional<ErrorCode> error = select_blocks(request, file_size, blocks);
  if (error) {
    check(*error == ErrorCode::OffsetOutOfBounds && blocks.empty());
    return;
  }
  check(!blocks.empty());
  check(blocks.front() >= request.offset);
  check(blocks.back() < block_count(file_size, request.block_size));
  check(std::adjacent_find(blocks.begin(), blocks.end(), [](std::uint32_t a, std::uint32_t b) {
          return a >= b;
        }) == blocks.end());
  if (request.count != 0) check(blocks.size() <= request.count);
  std::uint64_t payload = 0;
  for (std::uint32_t block : blocks) {
    const std::uint64_t start = std::uint64_t{block} * request.block_size;
    payload += std::min<std::uint64_t>(request.block_size, file_size - start);
  }
  check(payload <= kMaxRequestPayloadBytes);
}

inline int fuzz_get_request(Format format, const std::uint8_t* data, std::size_t size) {
  const ErrorCode malformed =
      format == Format::Json ? ErrorCode::InvalidJson : ErrorCode::InvalidCbor;
  static std::vector<std::uint32_t> blocks;
  const auto payload = std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size);
  auto result = decode_get_request(format, payload);
  if (!result) {
    const RequestError& error = result.error();
    check(error.code == malformed || error.code == ErrorCode::InvalidRequest ||
          error.code == ErrorCode::BlockSizeOutOfBounds ||
          error.code == ErrorCode::OffsetOutOfBounds ||
          error.code == ErrorCode::BlockCountLimitExceeded ||
          error.code == ErrorCode::BlockBitmapLimitExceeded);
    check(!error.client_token || error.client_token->size() <= kMaxClientTokenBytes);
    check(error.code != malformed || !error.client_token);
    check(!error.message.empty());
    return 0;
  }
  const GetStreamRequest& request = *result;
  check(request.file_id <= kMaxFileId);
  check(request.block_size >= kMinBlockSize && request.block_size <= kMaxBlockSize);
  check(request.offset <= kMaxOffset && request.count <= kMaxBlockCount);
  check(!request.bitmap || request.bitmap->size() <= kMaxBitmapBytes);
  check(!request.client_token || request.client_token->size() <= kMaxClientTokenBytes);
  for (std::uint64_t file_size :
       {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{255}, std::uint64_t{4096},
        std::uint64_t{1000003}, std::uint64_t{100} << 20, std::uint64_t{1} << 40}) {
    check_selection(request, file_size, blocks);
  }
  return 0;
}

}  // namespace chunkd::fuzz
