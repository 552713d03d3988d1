// The jobs lease's statements (io/job_lease_pg_internal.hpp): one in flight on the nonblocking
// session, results collected as the socket becomes readable; the writes of store(), queued behind
// it while the lease is held.
#include <utility>

#include "base/assert.hpp"
#include "io/job_lease_pg_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {

// ---- store() ----

Expected<StoredJobs> PgLeaseJobStore::load_all() {
  return fail(std::errc::operation_not_supported,
              "jobs: in PostgreSQL the jobs are loaded when the jobs lease is taken");
}

void PgLeaseJobStore::put_job(StoredJob job, std::vector<StoredExecution> executions, Done done) {
  JobBatch batch;
  std::string id = job.id;
  batch.upserts.push_back(std::move(job));
  batch.executions = std::move(executions);
  lease_.submit("put job", std::move(id), true, batch, std::move(done));
}

void PgLeaseJobStore::apply(JobBatch batch, Done done) {
  lease_.submit("apply a batch to jobs", "", false, batch, std::move(done));
}

void PgLeaseJobStore::erase_job(std::string job_id, Done done) {
  JobBatch batch;
  batch.deleted.push_back(job_id);
  lease_.submit("erase job", std::move(job_id), false, batch, std::move(done));
}

std::size_t PgLeaseJobStore::pending_writes() const { return lease_.pending_writes(); }

void PgLeaseJobStore::close(std::function<void()> done) { lease_.close(std::move(done)); }

// ---- writes ----

void PgJobLeaseImpl::submit(const char* verb, std::string id, bool insert, const JobBatch& batch,
                            JobStore::Done done) {
  std::errc refused{};
  if (closing_) {
    refused = std::errc::operation_canceled;
  } else if (state_ != State::Held) {
    refused = std::errc::not_connected;
  } else if (pending_writes() >= options_.max_pending_writes) {
    refused = std::errc::resource_unavailable_try_again;
  } else if (batch.things.size() + batch.deleted.size() + batch.upserts.size() + batch.jobs.size() +
                 batch.executions.size() >
             JobStore::kMaxBatchRows) {
    refused = std::errc::argument_list_too_long;
  }
  auto write = std::make_unique<PgJobWrite>();
  std::string problem;
  if (refused == std::errc{}) refused = pg_job_write_params(insert, batch, write->params, problem);
  if (refused != std::errc{}) {
    if (!problem.empty()) {
      LOG_ERROR("jobs", "%s: %s", PgJobWrite{verb, id, {}, {}}.what().c_str(), problem.c_str());
    }
    done(std::make_error_code(refused));
    return;
  }
  write->verb = verb;
  write->id = std::move(id);
  write->done = std::move(done);
  queue_.push_back(std::move(write));
  pump();
}

void PgJobLeaseImpl::pump() {
  if (running_ != Running::None || queue_.empty() || state_ != State::Held) return;
  writing_ = std::move(queue_.front());
  queue_.pop_front();
  send(Running::Write, kPgWriteJobsSql, &writing_->params);
}

// Runs the write's callback: committed, or why not. The callback may submit more or close().
void PgJobLeaseImpl::finish_write(std::error_code error, const std::string& message) {
  CHUNKD_ASSERT(writing_ != nullptr);
  std::unique_ptr<PgJobWrite> write = std::move(writing_);
  if (error) {
    stats_.writes_failed++;
    const bool expected =
        error == std::errc::file_exists || error == std::errc::no_such_file_or_directory;
    if (!message.empty() && !expected) {
      LOG_ERROR("jobs", "%s in PostgreSQL: %s", write->what().c_str(), message.c_str());
    }
  } else {
    stats_.writes_ok++;
  }
  JobStore::Done done = std::move(write->done);
  write.reset();
  done(error);
}

void PgJobLeaseImpl::fail_queued(std::errc code) {
  while (!queue_.empty()) {
    std::unique_ptr<PgJobWrite> write = std::move(queue_.front());
    queue_.pop_front();
    write->done(std::make_error_code(code));
  }
}

// ---- statements ----

// Sends `sql` (with `params`, or none: then it may hold several statements). False, the session
// dropped, when libpq cannot.
bool PgJobLeaseImpl::send(Running what, const char* sql, const PgParams* params) {
  CHUNKD_ASSERT(running_ == Running::None && conn_ != nullptr);
  int sent = 0;
  if (params == nullptr) {
    sent = PQsendQuery(conn_, sql);
  } else {
    std::vector<const char*> values;
    for (const auto& v : params->values) values.push_back(v ? v->c_str() : nullptr);
    sent = PQsendQueryParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(),
                             nullptr, nullptr, 0);
  }
  running_ = what;
  if (sent != 1) {
    lost("cannot send a statement: " + pg_conn_message(conn_));
    return false;
  }
  flush();
  return conn_ != nullptr;
}

// Sends what libpq buffered; watches for writability while some is left.
void PgJobLeaseImpl::flush() {
  if (std::string error; !poll_.flush(conn_, error)) lost(error);
}

void PgJobLeaseImpl::on_io(int status, int events) {
  if (status >= 0 && state_ == State::Connecting) {
    continue_connect();
    return;
  }
  if (std::string error; !poll_.exchange(conn_, status, events, error)) {
    lost(error);
    return;
  }
  if ((events & UV_READABLE) != 0) {
    read_results();
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_BAD) lost(pg_conn_message(conn_));
  }
}

// Collects the running statement's results; once libpq says there are no more, finishes it.
// Results nobody waits for (none are expected) are dropped.
void PgJobLeaseImpl::read_results() {
  while (conn_ != nullptr && PQisBusy(conn_) == 0) {
    PGresult* result = PQgetResult(conn_);
    if (result == nullptr) {
      if (running_ == Running::None) return;
      finish_running();
      continue;
    }
    if (running_ == Running::None || results_.size() >= 8) {
      PQclear(result);
    } else {
      results_.push_back(result);
    }
  }
}

void PgJobLeaseImpl::finish_running() {
  const Running what = running_;
  running_ = Running::None;
  if (what == Running::Try) {
    on_tried();
    return;
  }
  if (what == Running::Load) {
    on_loaded();
    return;
  }
  std::string sqlstate;
  const std::string failed = failure(sqlstate);
  const bool no_result = failed.empty() && results_.empty();
  clear_results();
  const std::errc code = no_result ? std::errc::io_error : pg_errc(sqlstate);
  if (!failed.empty() &&
      (code == std::errc::connection_aborted || PQstatus(conn_) == CONNECTION_BAD)) {
    lost(failed);  // fails the write as in flight
    return;
  }
  finish_write(failed.empty() && !no_result ? std::error_code{} : std::make_error_code(code),
               no_result ? "PostgreSQL sent no result" : failed);
  pump();
  maybe_closed();
}

std::string PgJobLeaseImpl::failure(std::string& sqlstate) const {
  for (const PGresult* result : results_) {
    const ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) continue;
    const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
    sqlstate = state != nullptr ? state : "";
    return pg_result_message(result);
  }
  return "";
}

void PgJobLeaseImpl::clear_results() {
  for (PGresult* result : results_) PQclear(result);
  results_.clear();
}

}  // namespace chunkd::io::detail
