// The data-plane error codes of SPEC.md §1.4, as sent in rejected/<fmt> replies.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chunkd::protocol {

enum class ErrorCode : std::uint8_t {
  InvalidTopic,
  InvalidJson,
  InvalidCbor,
  InvalidRequest,
  ResourceNotFound,
  VersionMismatch,
  BlockSizeOutOfBounds,
  OffsetOutOfBounds,
  BlockCountLimitExceeded,
  BlockBitmapLimitExceeded,
  Unauthorized,
  ETagMismatch,
  RequestThrottled,
  InternalError,
};
// InternalError stays last: the count follows the enum.
inline constexpr int kErrorCodeCount = static_cast<int>(ErrorCode::InternalError) + 1;

// "InvalidTopic", "ETagMismatch", ... exactly as on the wire.
std::string_view to_string(ErrorCode code);

// A request that cannot be served. `client_token` is set only when the request carried a valid
// token (at most 64 bytes), so the rejected reply may echo it.
struct RequestError {
  ErrorCode code;
  std::string message;
  std::optional<std::string> client_token;
};

}  // namespace chunkd::protocol
