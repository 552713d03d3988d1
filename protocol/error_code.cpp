#include "protocol/error_code.hpp"

#include <array>
#include <cstddef>

namespace chunkd::protocol {
namespace {

// In the enum's order; a code added to the enum without its name here fails to compile.
constexpr auto kNames = std::to_array<std::string_view>({
    "InvalidTopic",
    "InvalidJson",
    "InvalidCbor",
    "InvalidRequest",
    "ResourceNotFound",
    "VersionMismatch",
    "BlockSizeOutOfBounds",
    "OffsetOutOfBounds",
    "BlockCountLimitExceeded",
    "BlockBitmapLimitExceeded",
    "Unauthorized",
    "ETagMismatch",
    "RequestThrottled",
    "InternalError",
});
static_assert(kNames.size() == static_cast<std::size_t>(kErrorCodeCount));
static_assert(kNames[static_cast<std::size_t>(ErrorCode::RequestThrottled)] == "RequestThrottled");
static_assert(kNames[static_cast<std::size_t>(ErrorCode::InternalError)] == "InternalError");

}  // namespace

std::string_view to_string(ErrorCode code) {
  const auto i = static_cast<std::size_t>(code);
  return i < kNames.size() ? kNames[i] : kNames.back();
}

}  // namespace chunkd::protocol
