// The durable stream registry: SQLite in WAL mode with synchronous=FULL, so a write whose callback
// reported success survives kill -9 and power loss, and a half-written stream is never visible
// (each put/erase is one transaction).
//
// Writes run one at a time, in submission order, on the libuv thread pool (uv_queue_work), so the
// loop never waits for an fsync; their callbacks run on the loop thread. The write queue is bounded
// (`max_pending_writes`); over it, the callback gets std::errc::resource_unavailable_try_again at
// once. load_all() is synchronous and meant for start-up.
// Also: put/erase after close() get std::errc::operation_canceled at once; load_all() while a
// write is pending fails with std::errc::device_or_resource_busy; errors from SQLite carry
// sqlite_category() (value = extended result code). open() and load_all() return SQLite's message
// in the error's detail; a failed put/erase is logged with it here.
//
// Thread: the loop thread (the writes run on the pool, their callbacks on the loop).
// REQUIRES: destroy only after close()'s callback has run.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "base/expected.hpp"

namespace chunkd::io {

struct StoredFile {
  std::uint32_t file_id = 0;
  std::string bucket;
  std::string key;
  std::uint64_t size_bytes = 0;
  std::string digest;                   // XXH3-128 of the content, 32 lowercase hex digits
  std::uint32_t extent_bytes = 0;       // manifest granularity
  std::vector<std::uint64_t> manifest;  // XXH3-64 of each extent, in order
  // A file fetched from an S3 bucket: the object's ETag as the server sent it (quotes included)
  // and its versionId ("" when the bucket is not versioned). Both "" for a directory bucket.
  std::string source_etag;
  std::string source_version;
};

struct StoredStream {
  std::string id;
  std::uint64_t version = 0;
  std::string description;
  std::string role_arn;
  std::vector<std::pair<std::string, std::string>> tags;
  std::string created_at;  // RFC 3339 UTC
  std::string updated_at;
  std::vector<StoredFile> files;
  // The thing-name patterns allowed to read the stream; nullopt: every thing. Stored as given
  // (the control API validated them); an empty list is stored and loaded as an empty list.
  std::optional<std::vector<std::string>> allowed_things;
};

class RegistryStore {
 public:
  using Done = std::function<void(std::error_code)>;

  static constexpr std::size_t kDefaultMaxPendingWrites = 1024;

  // Opens or creates <dir>/registry.sqlite3 (creating `dir`). Synchronous; for start-up. The
  // error's detail names the file and says what the operator can do.
  static Expected<std::unique_ptr<RegistryStore>> open(uv_loop_t* loop, const std::string& dir);
  // Same, with the bound on queued + running writes (put/erase); at least 1.
  static Expected<std::unique_ptr<RegistryStore>> open(uv_loop_t* loop, const std::string& dir,
                                                       std::size_t max_pending_writes);
  virtual ~RegistryStore() = default;

  // Every stream, ordered by id. REQUIRES: no write pending (else device_or_resource_busy).
  virtual Expected<std::vector<StoredStream>> load_all() = 0;
  // Insert or replace the stream with this id (files included) in one transaction.
  virtual void put(StoredStream stream, Done done) = 0;
  virtual void erase(std::string id, Done done) = 0;
  virtual std::size_t pending_writes() const = 0;
  // Waits for queued writes, closes the database, then calls `done` on the loop thread.
  virtual void close(std::function<void()> done) = 0;
};

// The category of errors reported by SQLite (value: extended result code). Its
// default_error_condition maps SQLITE_FULL to no_space_on_device, SQLITE_IOERR to io_error,
// SQLITE_BUSY/LOCKED to resource_unavailable_try_again, SQLITE_NOMEM to not_enough_memory,
// SQLITE_READONLY/PERM/AUTH/CANTOPEN to permission_denied.
const std::error_category& sqlite_category();

}  // namespace chunkd::io
