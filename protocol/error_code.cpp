#include "protocol/error_code.hpp"

namespace chunkd::protocol {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidTopic:
      return "InvalidTopic";
    case ErrorCode::InvalidJson:
      return "InvalidJson";
    case ErrorCode::InvalidCbor:
      return "InvalidCbor";
    case ErrorCode::InvalidRequest:
      return "InvalidRequest";
    case ErrorCode::ResourceNotFound:
      return "ResourceNotFound";
    case ErrorCode::VersionMismatch:
      return "VersionMismatch";
    case ErrorCode::BlockSizeOutOfBounds:
      return "BlockSizeOutOfBounds";
    case ErrorCode::OffsetOutOfBounds:
      return "OffsetOutOfBounds";
    case ErrorCode::BlockCountLimitExceeded:
      return "BlockCountLimitExceeded";
    case ErrorCode::BlockBitmapLimitExceeded:
      return "BlockBitmapLimitExceeded";
    case ErrorCode::Unauthorized:
      return "Unauthorized";
    case ErrorCode::ETagMismatch:
      return "ETagMismatch";
    case ErrorCode::RequestThrottled:
      return "RequestThrottled";
    case ErrorCode::InternalError:
      return "InternalError";
  }
  return "InternalError";
}

}  // namespace chunkd::protocol
