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
//
// open_shared() opens the other implementation, the registry several chunkd instances share in
// PostgreSQL (io/registry_pg.hpp): the same contract, plus change notifications (on_change) and
// asynchronous reads (load) so that each instance can follow the others' writes.
#pragma once

#include <uv.h>

#include <cerrno>
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

// What a store reports for the metrics. The SQLite store is always connected and shares nothing.
struct RegistryStats {
  bool connected = true;            // the connection to a shared registry is up
  std::uint64_t reconnects = 0;     // connections re-established after one was lost
  std::uint64_t notifications = 0;  // other writers' changes reported through on_change
  std::uint64_t writes = 0;         // writes committed (put, create, erase)
  double write_seconds = 0;         // their total time from submission to commit
};

class RegistryStore {
 public:
  using Done = std::function<void(std::error_code)>;
  // `id` changed (put, created or erased) through another writer; nullopt: anything may have
  // changed (the store lost notifications, e.g. while reconnecting): reload everything.
  using Changed = std::function<void(const std::optional<std::string>& id)>;
  using Loaded = std::function<void(Expected<std::vector<StoredStream>>)>;

  static constexpr std::size_t kDefaultMaxPendingWrites = 1024;

  // Opens or creates <dir>/registry.sqlite3 (creating `dir`). Synchronous; for start-up. The
  // error's detail names the file and says what the operator can do.
  static Expected<std::unique_ptr<RegistryStore>> open(uv_loop_t* loop, const std::string& dir);
  // Same, with the bound on queued + running writes (put/erase); at least 1.
  static Expected<std::unique_ptr<RegistryStore>> open(uv_loop_t* loop, const std::string& dir,
                                                       std::size_t max_pending_writes);
  // The registry in PostgreSQL at `url` (a libpq connection URI), shared by every instance
  // given the same URL (io/registry_pg.hpp). Connects, creates or checks the schema and listens
  // for changes; synchronous, for start-up. The error's detail carries PostgreSQL's message.
  static Expected<std::unique_ptr<RegistryStore>> open_shared(
      uv_loop_t* loop, const std::string& url,
      std::size_t max_pending_writes = kDefaultMaxPendingWrites);
  virtual ~RegistryStore() = default;

  // Every stream, ordered by id. REQUIRES: no write pending (else device_or_resource_busy).
  virtual Expected<std::vector<StoredStream>> load_all() = 0;
  // Insert or replace the stream with this id (files included) in one transaction.
  virtual void put(StoredStream stream, Done done) = 0;
  // Insert the stream only when no stream has its id (one transaction, like put): fails with
  // std::errc::file_exists when one has, whoever wrote it.
  virtual void create(StoredStream stream, Done done) = 0;
  // What an update expects the stored stream to be: its version and updated_at as last read.
  struct Expectation {
    std::uint64_t version = 0;
    std::string updated_at;
  };
  // Replace the stream only while it is still as `expected` (one transaction, like put): fails
  // with changed_meanwhile() when another writer changed or erased it meanwhile. A store
  // nobody else writes just puts (its one writer serialises its own changes).
  virtual void update(StoredStream stream, Expectation expected, Done done) {
    (void)expected;
    put(std::move(stream), std::move(done));
  }
  virtual void erase(std::string id, Done done) = 0;
  virtual std::size_t pending_writes() const = 0;
  // Whether other writers share this registry (then on_change and load work).
  virtual bool shared() const { return false; }
  // Calls `changed` on the loop thread for every change another writer commits (never for this
  // store's own writes). A store nobody else writes never calls it.
  virtual void on_change(Changed changed) { (void)changed; }
  // Reads the stream `id` (a vector of zero or one) or, with nullopt, every stream ordered by id,
  // without blocking the loop; `done` runs on the loop thread, ordered with the writes submitted
  // around it. A store nobody else writes answers operation_not_supported.
  virtual void load(std::optional<std::string> id, Loaded done) {
    (void)id;
    done(fail(std::errc::operation_not_supported, "this registry is not shared"));
  }
  virtual RegistryStats stats() const { return {}; }
  // Waits for queued writes, closes the database, then calls `done` on the loop thread.
  virtual void close(std::function<void()> done) = 0;
};

// The error of an update whose stream another writer changed or erased since it was read:
// ESTALE in the generic category (std::errc has no name for it).
inline std::error_code changed_meanwhile() { return {ESTALE, std::generic_category()}; }

// The category of errors reported by SQLite (value: extended result code). Its
// default_error_condition maps SQLITE_FULL to no_space_on_device, SQLITE_IOERR to io_error,
// SQLITE_BUSY/LOCKED to resource_unavailable_try_again, SQLITE_NOMEM to not_enough_memory,
// SQLITE_READONLY/PERM/AUTH/CANTOPEN to permission_denied.
const std::error_category& sqlite_category();

}  // namespace chunkd::io
