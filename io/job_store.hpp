// The durable store of jobs and their executions (docs/jobs.md): the `jobs` and `job_executions`
// tables of the registry database (<dir>/registry.sqlite3, the file RegistryStore uses, on a
// connection of its own), with the registry's durability rule: WAL, synchronous=FULL, and a
// write's callback reports success only once its transaction is committed, so an acknowledged
// write survives kill -9 and power loss, and a half-applied batch is never visible.
//
// Writes run one at a time, in submission order, on the libuv thread pool (uv_queue_work); their
// callbacks run on the loop thread. Bounds: at most `max_pending_writes` writes queued or running
// (over it, the callback gets std::errc::resource_unavailable_try_again at once), at most
// kMaxBatchRows rows per write (over it, std::errc::argument_list_too_long at once). After close()
// writes get std::errc::operation_canceled at once. load_all() is synchronous, for start-up, and
// fails with std::errc::device_or_resource_busy while a write is pending. SQLite errors carry
// sqlite_category() (value = extended result code); a failed write is logged with SQLite's message.
//
// The store does not interpret what it keeps: statuses are the protocol's names ("QUEUED", ...),
// the spec and document are JSON text, all checked by the engine before they are written.
//
// Thread: the loop thread. REQUIRES: destroy only after close()'s callback has run.
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

// Times are milliseconds since the Unix epoch; 0 means "not yet".
struct StoredJob {
  std::string id;
  std::string spec;                      // the job's create body as chunkd re-reads it (JSON text)
  std::string document;                  // the job document devices get (JSON text)
  std::optional<std::string> stream_id;  // an OTA job's stream: not deletable while unfinished
  std::string status;                    // "IN_PROGRESS", "CANCELED", "COMPLETED", ...
  std::string reason_code;               // "" unless canceled or aborted
  std::string comment;
  std::int64_t created_at_ms = 0;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t completed_at_ms = 0;
  bool operator==(const StoredJob&) const = default;
};

struct StoredExecution {
  std::string job_id;
  std::string thing;
  std::string status;                                               // "QUEUED", "IN_PROGRESS", ...
  std::vector<std::pair<std::string, std::string>> status_details;  // in order, as given
  std::int64_t queued_at_ms = 0;
  std::int64_t started_at_ms = 0;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t version_number = 1;
  std::int64_t execution_number = 1;
  std::int64_t step_deadline_ms = 0;  // the step timer; 0: none
  bool operator==(const StoredExecution&) const = default;
};

// A job's mutable columns, as set by a cancel, an abort or the completion of its last execution.
struct JobStatusChange {
  std::string job_id;
  std::string status;
  std::string reason_code;
  std::string comment;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t completed_at_ms = 0;
};

// What the engine changes at once (a rollout release, an abort, a device's update): applied in
// one transaction, all or nothing, in this order: `things` are remembered; `deleted` jobs are
// erased with their executions; `upserts` are inserted or replace the whole row with their id; each
// job change needs its job to exist (else the whole batch fails); each execution is inserted or
// replaces the row with its (job_id, thing).
struct JobBatch {
  std::vector<std::string> things;  // remembered (inserted unless known)
  std::vector<std::string> deleted;
  std::vector<StoredJob> upserts;
  std::vector<JobStatusChange> jobs;
  std::vector<StoredExecution> executions;
};

struct StoredJobs {
  std::vector<StoredJob> jobs;              // ordered by id
  std::vector<StoredExecution> executions;  // ordered by job_id, then thing
  std::vector<std::string> things;          // remembered things, ordered
};

class JobStore {
 public:
  using Done = std::function<void(std::error_code)>;

  static constexpr std::size_t kDefaultMaxPendingWrites = 1024;
  static constexpr std::size_t kMaxBatchRows = 100'000;

  // Opens or creates <dir>/registry.sqlite3 (creating `dir`, bringing the schema to the current
  // version). Synchronous; for start-up. The error's detail names the file and what to do.
  static Expected<std::unique_ptr<JobStore>> open(
      uv_loop_t* loop, const std::string& dir,
      std::size_t max_pending_writes = kDefaultMaxPendingWrites);
  virtual ~JobStore() = default;

  // Every job and execution. REQUIRES: no write pending (else device_or_resource_busy).
  virtual Expected<StoredJobs> load_all() = 0;
  // Inserts a new job and its first executions (a job with this id already: SQLITE_CONSTRAINT).
  virtual void put_job(StoredJob job, std::vector<StoredExecution> executions, Done done) = 0;
  virtual void apply(JobBatch batch, Done done) = 0;
  // Deletes the job and its executions (an unknown id succeeds).
  virtual void erase_job(std::string job_id, Done done) = 0;
  virtual std::size_t pending_writes() const = 0;
  // Waits for queued writes, closes the database, then calls `done` on the loop thread.
  virtual void close(std::function<void()> done) = 0;
};

}  // namespace chunkd::io
