// The jobs lease's session (io/job_lease_pg_internal.hpp): the try, the load that makes the lease
// held, the loss, the reconnection with back-off, close(), and open().
#include <algorithm>
#include <utility>

#include "base/assert.hpp"
#include "io/job_lease_pg_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io {
namespace detail {

PgJobLeaseImpl::PgJobLeaseImpl(uv_loop_t* loop, JobLeaseOptions options, Acquired on_acquired,
                               Lost on_lost, PGconn* conn)
    : loop_(loop),
      options_(std::move(options)),
      on_acquired_(std::move(on_acquired)),
      on_lost_(std::move(on_lost)),
      conn_(conn),
      poll_(
          loop, this,
          [](void* self, int status, int events) {
            static_cast<PgJobLeaseImpl*>(self)->on_io(status, events);
          },
          [](void* self) { static_cast<PgJobLeaseImpl*>(self)->maybe_closed(); }) {}

PgJobLeaseImpl::~PgJobLeaseImpl() {
  if (started_ && !closed_) LOG_ERROR("jobs", "jobs lease destroyed before close() finished");
  clear_results();
  if (conn_ != nullptr) PQfinish(conn_);
}

Expected<void> PgJobLeaseImpl::start() {
  if (PQsetnonblocking(conn_, 1) != 0) {
    return fail(std::errc::io_error, "jobs lease: nonblocking mode: " + pg_conn_message(conn_));
  }
  poll_.watch(conn_, UV_READABLE);
  if (!poll_.active()) {
    return fail(std::errc::io_error, "jobs lease: cannot watch the PostgreSQL connection's socket");
  }
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  timers_open_++;
  started_ = true;
  stats_.connected = true;
  try_lease();
  return {};
}

JobLeaseStats PgJobLeaseImpl::stats() const {
  JobLeaseStats out = stats_;
  out.held = held();
  return out;
}

void PgJobLeaseImpl::arm_timer(std::uint64_t ms) {
  if (timer_ == nullptr) return;
  uv_timer_start(
      timer_, [](uv_timer_t* timer) { static_cast<PgJobLeaseImpl*>(timer->data)->on_timer(); }, ms,
      0);
}

void PgJobLeaseImpl::on_timer() {
  switch (state_) {
    case State::Down:
      reconnect();
      return;
    case State::Connecting:
      lost("no answer within " + std::to_string(kConnectTimeoutMs) + " ms");
      return;
    case State::Trying:
      if (running_ == Running::None) try_lease();
      return;
    default:
      return;
  }
}

void PgJobLeaseImpl::try_lease() {
  state_ = State::Trying;
  if (!closing_) send(Running::Try, pg_try_lease_sql().c_str(), nullptr);
}

// The try's row: the lock is ours (load everything), or someone else's (remember who; again
// after retry_ms).
void PgJobLeaseImpl::on_tried() {
  std::string sqlstate;
  const std::string failed = failure(sqlstate);
  const PGresult* row = results_.empty() ? nullptr : results_.front();
  if (!failed.empty() || row == nullptr || PQntuples(row) != 1 || PQnfields(row) != 2) {
    lost("the try for the jobs lease failed: " + (failed.empty() ? "no row" : failed));
    return;
  }
  const bool got = pg_text(row, 0, 0) == "t";
  const std::string seen = PQgetisnull(row, 0, 1) ? "" : pg_text(row, 0, 1);
  clear_results();
  if (got) {
    holder_.clear();
    state_ = State::Loading;
    send(Running::Load, kPgLoadJobsSql, nullptr);
    return;
  }
  if (seen != holder_ && !seen.empty()) {
    LOG_INFO("jobs", "the jobs lease is held by '%s'; trying again every %llu ms", seen.c_str(),
             static_cast<unsigned long long>(options_.retry_ms));
  }
  holder_ = seen;
  arm_timer(options_.retry_ms);
}

// The load on the lock-holding session: now the lease is held.
void PgJobLeaseImpl::on_loaded() {
  std::string sqlstate;
  const std::string failed = failure(sqlstate);
  if (!failed.empty() || results_.size() != 6) {
    lost("loading the jobs failed: " + (failed.empty() ? "not 6 results" : failed));
    return;
  }
  Expected<StoredJobs> jobs = pg_parse_jobs(results_[1], results_[2], results_[3], results_[4]);
  clear_results();
  if (!jobs) {
    LOG_ERROR("jobs", "%s", jobs.error().message().c_str());
    lost("the jobs in PostgreSQL are not valid");
    return;
  }
  state_ = State::Held;
  stats_.acquisitions++;
  LOG_INFO("jobs", "jobs lease taken; %zu jobs, %zu executions loaded", jobs->jobs.size(),
           jobs->executions.size());
  if (on_acquired_) on_acquired_(std::move(*jobs));
}

// The session is gone (or unusable): drop it; the holder stops serving; connect again later.
void PgJobLeaseImpl::lost(const std::string& why) {
  const bool was_holding = state_ == State::Held || state_ == State::Loading;
  const bool was_connected = state_ != State::Down && state_ != State::Connecting;
  drop_session();
  state_ = State::Down;
  stats_.connected = false;
  if (was_holding) {
    stats_.losses++;
    LOG_WARN("jobs", "jobs lease lost: %s; serving no jobs until it is taken again", why.c_str());
  } else if (was_connected) {
    LOG_WARN("jobs", "the jobs lease's connection to PostgreSQL is lost: %s", why.c_str());
  } else {
    LOG_DEBUG("jobs", "connecting to PostgreSQL for the jobs lease failed: %s", why.c_str());
  }
  schedule_reconnect();
  // Every callback sees the lease not held: writes they submit fail at once.
  if (was_holding && !closing_ && on_lost_) on_lost_(why);
  if (writing_) {
    LOG_ERROR("jobs",
              "%s: the session was lost before PostgreSQL answered; the write may or may not "
              "have been committed",
              writing_->what().c_str());
    finish_write(std::make_error_code(std::errc::connection_aborted), "");
  }
  fail_queued(std::errc::not_connected);
  maybe_closed();
}

void PgJobLeaseImpl::schedule_reconnect() {
  if (closing_) return;
  arm_timer(backoff_ms_);
  const std::uint64_t cap = std::max<std::uint64_t>(options_.retry_ms, kFirstBackoffMs);
  backoff_ms_ = std::min(backoff_ms_ * 2, std::min(cap, kMaxBackoffMs));
}

void PgJobLeaseImpl::reconnect() {
  conn_ = pg_connect_start(options_.url, options_.holder.c_str());
  if (conn_ == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
    lost(pg_conn_message(conn_));
    return;
  }
  state_ = State::Connecting;
  arm_timer(kConnectTimeoutMs);
  poll_.watch(conn_, UV_WRITABLE);  // as if PQconnectPoll had said PGRES_POLLING_WRITING
}

void PgJobLeaseImpl::continue_connect() {
  poll_.drop();  // libpq may have moved to another socket with the same number
  std::string error;
  if (const int events = pg_connect_step(conn_, error); events != 0) {
    if (events > 0) {
      poll_.watch(conn_, events);
    } else {
      lost(error);
    }
    return;
  }
  if (timer_ != nullptr) uv_timer_stop(timer_);
  backoff_ms_ = kFirstBackoffMs;
  stats_.connected = true;
  LOG_INFO("jobs", "connected to PostgreSQL for the jobs lease");
  poll_.watch(conn_, UV_READABLE);
  try_lease();
}

// Stops watching the socket (before libpq closes it), then closes the session: the server
// releases the lock if it still held it.
void PgJobLeaseImpl::drop_session() {
  poll_.drop();
  clear_results();
  running_ = Running::None;
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

void PgJobLeaseImpl::close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  close_done_ = std::move(done);
  maybe_closed();
}

// Once closing and no write is queued or running: closes the session and the handles; once every
// handle is closed, runs close()'s callback.
void PgJobLeaseImpl::maybe_closed() {
  if (!closing_ || closed_ || writing_ || !queue_.empty()) return;
  if (state_ == State::Held) LOG_INFO("jobs", "jobs lease released");
  drop_session();
  state_ = State::Down;
  stats_.connected = false;
  if (timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* handle) {
      auto* self = static_cast<PgJobLeaseImpl*>(handle->data);
      delete reinterpret_cast<uv_timer_t*>(handle);
      self->timers_open_--;
      self->maybe_closed();
    });
    timer_ = nullptr;
  }
  if (timers_open_ > 0 || poll_.open_handles() > 0) return;
  closed_ = true;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (done) done();  // may destroy *this
}

}  // namespace detail

Expected<std::unique_ptr<PgJobLease>> PgJobLease::open(uv_loop_t* loop, JobLeaseOptions options,
                                                       Acquired on_acquired, Lost on_lost) {
  using namespace detail;
  PGconn* conn = pg_connect(options.url, options.holder.c_str());
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    std::string message = pg_conn_message(conn);
    PQfinish(conn);
    return fail(std::errc::connection_refused,
                "registry.url: cannot connect to PostgreSQL for the jobs lease: " + message);
  }
  if (options.max_pending_writes == 0) options.max_pending_writes = 1;
  if (options.retry_ms == 0) options.retry_ms = 1;
  auto lease = std::make_unique<PgJobLeaseImpl>(loop, std::move(options), std::move(on_acquired),
                                                std::move(on_lost), conn);
  // On failure the destructor closes the connection.
  if (auto schema = prepare_pg_schema(conn); !schema) {
    return fail(schema.error().code, "registry.url: " + schema.error().detail);
  }
  if (auto started = lease->start(); !started) return Unexpected{started.error()};
  return std::unique_ptr<PgJobLease>(std::move(lease));
}

}  // namespace chunkd::io
