#include "engine/reply_errors.hpp"

#include <array>

#include "engine/block_cache.hpp"

namespace chunkd::engine {
namespace {

using protocol::ErrorCode;

struct Row {
  std::error_condition match;  // compared with ==, so std::errc matches any generic errno
  ReplyError mapped;
};

const std::array<Row, 8>& table() {
  static const std::array<Row, 8> rows{{
      {make_error_code(CacheError::ManifestMismatch).default_error_condition(),
       {ErrorCode::ETagMismatch, false}},
      {make_error_code(CacheError::ShortRead).default_error_condition(),
       {ErrorCode::ETagMismatch, false}},
      {make_error_code(CacheError::NoManifestEntry).default_error_condition(),
       {ErrorCode::ETagMismatch, false}},
      {std::errc::no_buffer_space, {ErrorCode::RequestThrottled, true}},
      {std::errc::too_many_files_open, {ErrorCode::RequestThrottled, true}},
      {std::errc::too_many_files_open_in_system, {ErrorCode::RequestThrottled, true}},
      {std::errc::resource_unavailable_try_again, {ErrorCode::RequestThrottled, true}},
      {std::errc::not_enough_memory, {ErrorCode::RequestThrottled, true}},
  }};
  return rows;
}

}  // namespace

ReplyError classify(std::error_code error) {
  for (const Row& row : table()) {
    if (error == row.match) return row.mapped;
  }
  return {ErrorCode::InternalError, false};
}

std::string_view message_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidTopic:
      return "unknown request verb or format";
    case ErrorCode::ResourceNotFound:
      return "no such stream or file";
    case ErrorCode::VersionMismatch:
      return "stream version does not match";
    case ErrorCode::OffsetOutOfBounds:
      return "no requested block lies inside the file";
    case ErrorCode::Unauthorized:
      return "this thing may not read the stream";
    case ErrorCode::ETagMismatch:
      return "the file no longer matches what the stream recorded";
    case ErrorCode::RequestThrottled:
      return "too many requests queued; retry later";
    case ErrorCode::InternalError:
      return "internal error";
    default:
      return protocol::to_string(code);
  }
}

}  // namespace chunkd::engine
