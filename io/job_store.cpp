// JobStore on SQLite: one connection of its own to the registry database, one write at a time on
// the libuv thread pool. The threading argument is RegistryStore's (io/registry_store.cpp): the
// connection is SQLITE_OPEN_NOMUTEX and exactly one thread touches it at any moment — the loop
// thread for open() and load_all() (refused while a write is queued or running), one pool thread
// per write, the next write queued only from the previous one's after-work callback. Contention
// with RegistryStore's connection is SQLite's file locking plus the busy time-out.
#include "io/job_store.hpp"

#include <sqlite3.h>

#include <climits>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "io/log.hpp"
#include "io/registry_sqlite.hpp"
#include "io/registry_store.hpp"
#include "io/sqlite_writer.hpp"

namespace chunkd::io {
namespace detail {
namespace {

// job_executions.status_details: for each pair, the key's and the value's byte count as 32-bit
// little-endian, each followed by its bytes. An empty list is an empty blob.
void encode_details(const std::vector<std::pair<std::string, std::string>>& details,
                    std::vector<unsigned char>& out) {
  out.clear();
  auto put = [&out](std::string_view s) {
    const auto n = static_cast<std::uint32_t>(s.size());
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<unsigned char>(n >> (8 * b)));
    out.insert(out.end(), s.begin(), s.end());
  };
  for (const auto& [key, value] : details) {
    put(key);
    put(value);
  }
}

// False when the blob is not a whole number of pairs.
bool decode_details(const void* data, int bytes,
                    std::vector<std::pair<std::string, std::string>>& out) {
  if (bytes < 0) return false;
  const auto* p = static_cast<const unsigned char*>(data);
  const auto size = static_cast<std::size_t>(bytes);
  std::size_t at = 0;
  auto take = [&](std::string& s) {
    if (size - at < 4) return false;
    std::uint32_t n = 0;
    for (std::size_t b = 0; b < 4; ++b) n |= std::uint32_t{p[at + b]} << (8 * b);
    at += 4;
    if (size - at < n) return false;
    s.assign(reinterpret_cast<const char*>(p + at), n);
    at += n;
    return true;
  };
  out.clear();
  while (at < size) {
    std::pair<std::string, std::string> pair;
    if (!take(pair.first) || !take(pair.second)) return false;
    out.push_back(std::move(pair));
  }
  return true;
}

// Binds the next parameters of one statement, steps it and resets it, keeping the first error:
// Statement(db, stmt).text(a).integer(b).run("what", message).
class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}

  // The text or blob is owned by the caller until run() returns: SQLite need not copy it.
  Statement& text(std::string_view s) {
    if (s.size() > static_cast<std::size_t>(INT_MAX)) return fail(SQLITE_TOOBIG);
    return check(sqlite3_bind_text(stmt_, ++index_, s.data(), static_cast<int>(s.size()), nullptr));
  }
  Statement& optional_text(const std::optional<std::string>& s) {
    return s ? text(*s) : check(sqlite3_bind_null(stmt_, ++index_));
  }
  Statement& integer(std::int64_t v) { return check(sqlite3_bind_int64(stmt_, ++index_, v)); }
  Statement& blob(const std::vector<unsigned char>& b) {
    if (b.size() > static_cast<std::size_t>(INT_MAX)) return fail(SQLITE_TOOBIG);
    // An empty blob, not NULL.
    return check(b.empty() ? sqlite3_bind_zeroblob(stmt_, ++index_, 0)
                           : sqlite3_bind_blob(stmt_, ++index_, b.data(),
                                               static_cast<int>(b.size()), nullptr));
  }

  // SQLITE_OK when every bind and the step succeeded; else the code, with `message` set.
  int run(std::string_view what, std::string& message) {
    if (rc_ == SQLITE_OK) {
      const int rc = sqlite3_step(stmt_);
      if (rc != SQLITE_DONE && rc != SQLITE_ROW) rc_ = rc;
    }
    if (rc_ != SQLITE_OK) message = std::string(what) + sqlite_cause(db_, rc_);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return rc_;
  }

 private:
  Statement& check(int rc) {
    if (rc_ == SQLITE_OK && rc != SQLITE_OK) rc_ = rc;
    return *this;
  }
  Statement& fail(int rc) {
    ++index_;
    return check(rc);
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int index_ = 0;
  int rc_ = SQLITE_OK;
};

enum Sql : std::size_t {
  kBegin,
  kBeginRead,
  kCommit,
  kRollback,
  kInsertJob,
  kUpsertJob,
  kUpdateJob,
  kUpsertExecution,
  kDeleteExecutions,
  kDeleteJob,
  kSelectJobs,
  kSelectExecutions,
  kInsertThing,
  kSelectThings,
  kSqlCount,
};

constexpr const char* kSql[kSqlCount] = {
    "BEGIN IMMEDIATE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "INSERT INTO jobs (id, spec, document, stream_id, status, reason_code, comment, created_at_ms, "
    "last_updated_at_ms, completed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    // Not INSERT OR REPLACE: its delete would cascade to the job's executions.
    "INSERT INTO jobs (id, spec, document, stream_id, status, reason_code, comment, "
    "created_at_ms, last_updated_at_ms, completed_at_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO UPDATE SET "
    "spec = excluded.spec, document = excluded.document, stream_id = excluded.stream_id, "
    "status = excluded.status, reason_code = excluded.reason_code, comment = excluded.comment, "
    "created_at_ms = excluded.created_at_ms, last_updated_at_ms = excluded.last_updated_at_ms, "
    "completed_at_ms = excluded.completed_at_ms",
    "UPDATE jobs SET status = ?2, reason_code = ?3, comment = ?4, last_updated_at_ms = ?5, "
    "completed_at_ms = ?6 WHERE id = ?1",
    "INSERT INTO job_executions (job_id, thing, status, status_details, queued_at_ms, "
    "started_at_ms, last_updated_at_ms, version_number, execution_number, step_deadline_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (job_id, thing) DO UPDATE SET "
    "status = excluded.status, status_details = excluded.status_details, "
    "queued_at_ms = excluded.queued_at_ms, started_at_ms = excluded.started_at_ms, "
    "last_updated_at_ms = excluded.last_updated_at_ms, "
    "version_number = excluded.version_number, execution_number = excluded.execution_number, "
    "step_deadline_ms = excluded.step_deadline_ms",
    "DELETE FROM job_executions WHERE job_id = ?1",
    "DELETE FROM jobs WHERE id = ?1",
    "SELECT id, spec, document, stream_id, status, reason_code, comment, created_at_ms, "
    "last_updated_at_ms, completed_at_ms FROM jobs ORDER BY id",
    "SELECT job_id, thing, status, status_details, queued_at_ms, started_at_ms, "
    "last_updated_at_ms, version_number, execution_number, step_deadline_ms FROM job_executions "
    "ORDER BY job_id, thing",
    "INSERT OR IGNORE INTO job_things (thing) VALUES (?1)",
    "SELECT thing FROM job_things ORDER BY thing",
};

class SqliteJobStore final : public JobStore {
 public:
  SqliteJobStore(uv_loop_t* loop, sqlite3* db, std::string path, std::size_t max_pending_writes)
      : db_(db), path_(std::move(path)), writer_(loop, "jobs", max_pending_writes) {}

  ~SqliteJobStore() override {
    writer_.abort_if_running();
    if (db_ == nullptr) return;
    if (ready_) LOG_WARN("jobs", "store destroyed without close(); closing %s", path_.c_str());
    close_db();
  }

  Expected<void> prepare_all() {
    for (std::size_t i = 0; i < kSqlCount; ++i) {
      const int rc =
          sqlite3_prepare_v3(db_, kSql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts_[i], nullptr);
      if (rc != SQLITE_OK) {
        return fail(sqlite_error(rc), "jobs in " + path_ + ": cannot prepare \"" + kSql[i] + "\"" +
                                          sqlite_cause(db_, rc));
      }
    }
    ready_ = true;
    return {};
  }

  Expected<StoredJobs> load_all() override {
    if (db_ == nullptr || writer_.closing()) {
      return fail(std::errc::operation_canceled, "jobs in " + path_ + ": the store is closed");
    }
    if (writer_.busy()) {
      return fail(std::errc::device_or_resource_busy,
                  "jobs in " + path_ + ": load_all() while writes are pending");
    }
    StoredJobs out;
    std::string message;
    int rc = statement(kBeginRead).run("BEGIN", message);
    if (rc == SQLITE_OK) rc = load_rows(out, message);
    std::string ignored;
    statement(rc == SQLITE_OK ? kCommit : kRollback).run("end read", ignored);
    if (rc != SQLITE_OK) return fail(sqlite_error(rc), "load jobs from " + path_ + ": " + message);
    return out;
  }

  void put_job(StoredJob job, std::vector<StoredExecution> executions, Done done) override {
    Write w;
    w.kind = Write::Kind::Put;
    w.id = job.id;
    w.job = std::move(job);
    w.batch.executions = std::move(executions);
    enqueue(std::move(w), std::move(done));
  }

  void apply(JobBatch batch, Done done) override {
    Write w;
    w.kind = Write::Kind::Apply;
    w.batch = std::move(batch);
    enqueue(std::move(w), std::move(done));
  }

  void erase_job(std::string job_id, Done done) override {
    Write w;
    w.kind = Write::Kind::Erase;
    w.id = std::move(job_id);
    enqueue(std::move(w), std::move(done));
  }

  std::size_t pending_writes() const override { return writer_.pending(); }

  void close(std::function<void()> done) override {
    writer_.close([this] { close_db(); }, std::move(done));
  }

 private:
  struct Write {
    enum class Kind { Put, Apply, Erase };
    Kind kind = Kind::Put;
    std::string id;       // Put, Erase
    StoredJob job;        // Put
    JobBatch batch;       // Put (its executions), Apply
    std::string message;  // set by the worker with the error
  };

  Statement statement(Sql which) { return Statement(db_, stmts_[which]); }

  void enqueue(Write w, Done done) {
    const std::size_t rows = w.batch.things.size() + w.batch.deleted.size() +
                             w.batch.upserts.size() + w.batch.jobs.size() +
                             w.batch.executions.size();
    if (writer_.refusal() == std::errc{} && rows > kMaxBatchRows) {
      done(std::make_error_code(std::errc::argument_list_too_long));
      return;
    }
    writer_.submit(
        [this, w = std::move(w)](std::string& message) mutable {
          std::error_code error = transact(w);
          message = std::move(w.message);
          return error;
        },
        std::move(done));
  }

  // ---- worker thread ----

  // One write in one transaction: committed whole, or rolled back and described.
  std::error_code transact(Write& w) {
    std::string message;
    int rc = statement(kBegin).run("BEGIN IMMEDIATE", message);
    if (rc == SQLITE_OK) {
      switch (w.kind) {
        case Write::Kind::Put:
          rc = write_job(w.job, message);
          break;
        case Write::Kind::Erase:
          rc = write_erase(w.id, message);
          break;
        default:
          rc = write_batch_jobs(w.batch, message);
          break;
      }
    }
    if (rc == SQLITE_OK && w.kind != Write::Kind::Erase) {
      rc = write_executions(w.batch.executions, message);
    }
    if (rc == SQLITE_OK) rc = statement(kCommit).run("COMMIT", message);
    if (rc == SQLITE_OK) return {};
    if (sqlite3_get_autocommit(db_) == 0) {
      std::string ignored;
      statement(kRollback).run("ROLLBACK", ignored);
    }
    static constexpr const char* kWhat[] = {"put job", "apply a batch to jobs", "erase job"};
    w.message = kWhat[static_cast<int>(w.kind)];
    if (!w.id.empty()) w.message += " '" + w.id + "'";
    w.message += " in " + path_ + ": " + message;
    return sqlite_error(rc);
  }

  int write_job(const StoredJob& j, std::string& message, Sql how = kInsertJob) {
    return statement(how)
        .text(j.id)
        .text(j.spec)
        .text(j.document)
        .optional_text(j.stream_id)
        .text(j.status)
        .text(j.reason_code)
        .text(j.comment)
        .integer(j.created_at_ms)
        .integer(j.last_updated_at_ms)
        .integer(j.completed_at_ms)
        .run("insert job", message);
  }

  int write_batch_jobs(const JobBatch& batch, std::string& message) {
    for (const std::string& thing : batch.things) {
      if (int rc = statement(kInsertThing).text(thing).run("remember thing", message);
          rc != SQLITE_OK) {
        return rc;
      }
    }
    for (const std::string& id : batch.deleted) {
      if (int rc = write_erase(id, message); rc != SQLITE_OK) return rc;
    }
    for (const StoredJob& job : batch.upserts) {
      if (int rc = write_job(job, message, kUpsertJob); rc != SQLITE_OK) return rc;
    }
    return write_changes(batch.jobs, message);
  }

  int write_changes(const std::vector<JobStatusChange>& changes, std::string& message) {
    for (const JobStatusChange& c : changes) {
      const int rc = statement(kUpdateJob)
                         .text(c.job_id)
                         .text(c.status)
                         .text(c.reason_code)
                         .text(c.comment)
                         .integer(c.last_updated_at_ms)
                         .integer(c.completed_at_ms)
                         .run("update job", message);
      if (rc != SQLITE_OK) return rc;
      if (sqlite3_changes(db_) == 0) {
        message = "update job: no job '" + c.job_id + "'";
        return SQLITE_CONSTRAINT;
      }
    }
    return SQLITE_OK;
  }

  int write_executions(const std::vector<StoredExecution>& executions, std::string& message) {
    for (const StoredExecution& e : executions) {
      encode_details(e.status_details, details_bytes_);
      const int rc = statement(kUpsertExecution)
                         .text(e.job_id)
                         .text(e.thing)
                         .text(e.status)
                         .blob(details_bytes_)
                         .integer(e.queued_at_ms)
                         .integer(e.started_at_ms)
                         .integer(e.last_updated_at_ms)
                         .integer(e.version_number)
                         .integer(e.execution_number)
                         .integer(e.step_deadline_ms)
                         .run("write execution", message);
      if (rc != SQLITE_OK) {
        message += " (job '" + e.job_id + "', thing '" + e.thing + "')";
        return rc;
      }
    }
    return SQLITE_OK;
  }

  int write_erase(const std::string& id, std::string& message) {
    const int rc = statement(kDeleteExecutions).text(id).run("delete executions", message);
    if (rc != SQLITE_OK) return rc;
    return statement(kDeleteJob).text(id).run("delete job", message);
  }

  void close_db() {
    for (sqlite3_stmt*& stmt : stmts_) {
      sqlite3_finalize(stmt);
      stmt = nullptr;
    }
    const int rc = sqlite3_close(db_);
    if (rc != SQLITE_OK) {
      LOG_ERROR("jobs", "closing %s: %s", path_.c_str(), sqlite3_errmsg(db_));
      sqlite3_close_v2(db_);  // let SQLite finish the close once it can
    }
    db_ = nullptr;
  }

  int load_rows(StoredJobs& out, std::string& message) {
    sqlite3_stmt* jobs = stmts_[kSelectJobs];
    std::unordered_set<std::string> ids;
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(jobs)) == SQLITE_ROW) {
      StoredJob j;
      j.id = column_text(jobs, 0);
      j.spec = column_text(jobs, 1);
      j.document = column_text(jobs, 2);
      if (sqlite3_column_type(jobs, 3) != SQLITE_NULL) j.stream_id = column_text(jobs, 3);
      j.status = column_text(jobs, 4);
      j.reason_code = column_text(jobs, 5);
      j.comment = column_text(jobs, 6);
      j.created_at_ms = sqlite3_column_int64(jobs, 7);
      j.last_updated_at_ms = sqlite3_column_int64(jobs, 8);
      j.completed_at_ms = sqlite3_column_int64(jobs, 9);
      ids.insert(j.id);
      out.jobs.push_back(std::move(j));
    }
    sqlite3_reset(jobs);
    if (rc != SQLITE_DONE) {
      message = "read jobs" + sqlite_cause(db_, rc);
      return rc;
    }
    rc = load_executions(ids, out.executions, message);
    if (rc != SQLITE_OK) return rc;
    return load_things(out.things, message);
  }

  int load_things(std::vector<std::string>& out, std::string& message) {
    sqlite3_stmt* rows = stmts_[kSelectThings];
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) out.push_back(column_text(rows, 0));
    sqlite3_reset(rows);
    if (rc != SQLITE_DONE) {
      message = "read things" + sqlite_cause(db_, rc);
      return rc;
    }
    return SQLITE_OK;
  }

  int load_executions(const std::unordered_set<std::string>& job_ids,
                      std::vector<StoredExecution>& out, std::string& message) {
    sqlite3_stmt* rows = stmts_[kSelectExecutions];
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
      StoredExecution e;
      e.job_id = column_text(rows, 0);
      e.thing = column_text(rows, 1);
      e.status = column_text(rows, 2);
      const bool details_ok = decode_details(sqlite3_column_blob(rows, 3),
                                             sqlite3_column_bytes(rows, 3), e.status_details);
      if (!details_ok || job_ids.count(e.job_id) == 0) {
        message = (details_ok ? "execution of unknown job '" : "status details of job '") +
                  e.job_id + "' thing '" + e.thing + "'";
        sqlite3_reset(rows);
        return SQLITE_CORRUPT;
      }
      e.queued_at_ms = sqlite3_column_int64(rows, 4);
      e.started_at_ms = sqlite3_column_int64(rows, 5);
      e.last_updated_at_ms = sqlite3_column_int64(rows, 6);
      e.version_number = sqlite3_column_int64(rows, 7);
      e.execution_number = sqlite3_column_int64(rows, 8);
      e.step_deadline_ms = sqlite3_column_int64(rows, 9);
      out.push_back(std::move(e));
    }
    sqlite3_reset(rows);
    if (rc != SQLITE_DONE) {
      message = "read job executions" + sqlite_cause(db_, rc);
      return rc;
    }
    return SQLITE_OK;
  }

  sqlite3* db_;
  std::string path_;
  SqliteWriter writer_;
  bool ready_ = false;                        // open() finished
  std::vector<unsigned char> details_bytes_;  // worker scratch
  sqlite3_stmt* stmts_[kSqlCount] = {};
};

}  // namespace
}  // namespace detail

Expected<std::unique_ptr<JobStore>> JobStore::open(uv_loop_t* loop, const std::string& dir,
                                                   std::size_t max_pending_writes) {
  using namespace detail;
  std::string path;
  auto opened = open_registry_database(dir, " for jobs", path);
  if (!opened) return Unexpected{opened.error()};
  sqlite3* db = *opened;
  auto store = std::make_unique<SqliteJobStore>(loop, db, path,
                                                max_pending_writes == 0 ? 1 : max_pending_writes);
  // On failure the destructor closes the connection.
  if (auto ready = store->prepare_all(); !ready) return Unexpected{ready.error()};
  return std::unique_ptr<JobStore>(std::move(store));
}

}  // namespace chunkd::io
