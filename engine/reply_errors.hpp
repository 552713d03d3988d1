// The one table from operating errors (std::errc, CacheError) to the protocol's error codes and
// to the scheduler's "transient" decision, and the message sent with each rejection code.
//
// Decisions recorded here:
// - A block cache mismatch (bytes not matching the manifest, a short blob, an extent past the
//   manifest) is ETagMismatch: the file no longer is what the stream recorded.
// - Running out of room (cache buffers, descriptors, reader queue, memory) is transient: the
//   job waits for a read in flight to free room, and is answered RequestThrottled only when
//   nothing is in flight.
// - Anything else (a missing blob, an I/O error, the cache closed) is InternalError.
// Pure functions; any thread.
#pragma once

#include <string_view>
#include <system_error>

#include "protocol/error_code.hpp"

namespace chunkd::engine {

struct ReplyError {
  protocol::ErrorCode code = protocol::ErrorCode::InternalError;
  bool transient = false;  // retry once a read in flight completes
};

ReplyError classify(std::error_code error);
std::string_view message_for(protocol::ErrorCode code);

}  // namespace chunkd::engine
