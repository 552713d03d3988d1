// The OTA jobs service in a cluster (docs/cluster.md, docs/jobs.md): its state lives in the shared
// PostgreSQL registry ([registry] url), and exactly one chunkd instance at a time serves jobs: the
// holder of the jobs lease, a session-level advisory lock (key "chkdjob1") on one PostgreSQL
// session of its own. The jobs store writes on that very session, so an instance that lost the
// lock (its session is gone) cannot write any more: fencing comes with the session.
//
// The lease session: connected by open() (blocking, start-up only), then driven by libpq's
// asynchronous API on the loop (a uv_poll on PQsocket). A follower runs pg_try_advisory_lock every
// `retry_ms` and remembers the application_name of the holder's session (holder()). Once the lock
// is taken, everything is loaded on the same session (one REPEATABLE READ transaction: jobs by id,
// executions by job_id then thing, things, byte order as in the SQLite store), then on_acquired.
// When the session is lost (connection lost, server restart, terminated backend, a load that
// fails) the holder gets on_lost, the session is dropped (which releases the lock, if the server
// still held it) and a new one is connected with back-off (100 ms doubling to retry_ms, 5 s at
// most), which tries again. held() is true only between on_acquired and on_lost: never again
// without a new load. A host name in the URL is resolved by libpq with a blocking lookup when
// reconnecting (as in the shared registry): give an address to avoid it.
//
// The store (store()): JobStore's contract (io/job_store.hpp): each write is one statement (the
// function chunkd_write_jobs), so one transaction, acknowledged when committed; writes run one at
// a time in submission order; at most max_pending_writes pending (resource_unavailable_try_again at
// once), at most JobStore::kMaxBatchRows rows and kMaxJobWriteBytes of parameters per write
// (argument_list_too_long at once), a text with a NUL byte: invalid_argument at once. While the
// lease is not held every write fails at once with not_connected; after close(),
// operation_canceled. A write in flight when the session is lost fails with connection_aborted
// (it may or may not have committed: the next holder's load says). put_job of an existing id:
// file_exists; put_job (or an upsert to IN_PROGRESS) whose stream does not exist:
// no_such_file_or_directory (SQLSTATE CK404; the stream row is locked FOR SHARE until the commit,
// so a concurrent stream erase either waits and is refused, or wins and the job is refused); a
// job change naming a missing job fails the whole batch (io_error, logged). load_all() fails with
// operation_not_supported: the load comes with on_acquired. store().close() is close().
//
// Thread: the loop thread. REQUIRES: destroy only after close()'s callback has run.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/expected.hpp"
#include "io/job_store.hpp"

namespace chunkd::io {

// The parameters of one write, in bytes, at most (what PostgreSQL is sent, escaped).
inline constexpr std::size_t kMaxJobWriteBytes = std::size_t{64} << 20;

struct JobLeaseOptions {
  std::string url;  // libpq URI (registry.url)
  // This instance's name, set as the session's application_name (PostgreSQL keeps its first 63
  // bytes and shows a byte outside printable ASCII as '?': holder() reports it as it keeps it).
  std::string holder;
  std::uint64_t retry_ms = 1000;  // how often a follower tries to take the lease (and reconnects)
  std::size_t max_pending_writes = JobStore::kDefaultMaxPendingWrites;
};

struct JobLeaseStats {
  bool held = false;
  bool connected = false;          // the lease session is up (held or not)
  std::uint64_t acquisitions = 0;  // on_acquired calls
  std::uint64_t losses = 0;        // on_lost calls
  std::uint64_t writes_ok = 0;
  std::uint64_t writes_failed = 0;  // sent and failed, or failed with the session (not refusals)
};

class PgJobLease {
 public:
  // on_acquired: the lease is ours now; `jobs` is every job/execution/thing as committed at that
  //   moment (loaded on the lock-holding session AFTER the lock was taken). Writes through store()
  //   work from now on.
  // on_lost: the session that held the lease is gone (connection lost, server restart, terminated
  //   backend) or a write failed in a way that means the session is unusable: the caller must stop
  //   serving jobs at once. Writes in flight fail; later writes fail with std::errc::not_connected
  //   until on_acquired is called again (after a fresh load). The lease keeps trying to re-acquire.
  //   Not called by close().
  using Acquired = std::function<void(StoredJobs jobs)>;
  using Lost = std::function<void(std::string_view why)>;

  // Connects (blocking, start-up only), prepares the schema (as the shared registry does: under
  // the schema advisory lock), starts trying to take the lease on the loop. Error detail names
  // registry.url.
  static Expected<std::unique_ptr<PgJobLease>> open(uv_loop_t* loop, JobLeaseOptions options,
                                                    Acquired on_acquired, Lost on_lost);
  virtual ~PgJobLease() = default;

  virtual bool held() const = 0;
  // The application_name of the session that holds the lease, as last seen by a try that failed
  // ("" when unknown, or when this instance holds it).
  virtual const std::string& holder() const = 0;
  // The jobs store on the lease's session (see above).
  virtual JobStore& store() = 0;
  virtual JobLeaseStats stats() const = 0;
  // Waits for the writes already queued (while held), closes the session (which releases the
  // lease), closes the handles, then calls `done` on the loop thread. A second call is ignored.
  virtual void close(std::function<void()> done) = 0;
};

}  // namespace chunkd::io
