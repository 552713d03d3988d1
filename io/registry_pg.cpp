// RegistryStore on PostgreSQL (io/registry_pg.hpp): one libpq connection in nonblocking mode,
// driven by a uv_poll on its socket; one operation in flight at a time, the others queued.
//
// States: Ready (connected, LISTENing: operations run), Connecting (PQconnectPoll in progress,
// then the LISTEN runs as the first operation), Down (waiting for the back-off timer), and
// closing (after close(): the queue drains, then the handles close and `done` runs).
#include "io/registry_pg.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"

namespace chunkd::io {
namespace detail {
namespace {

constexpr std::uint64_t kFirstBackoffMs = 100;
constexpr std::uint64_t kMaxBackoffMs = 5000;
constexpr std::uint64_t kConnectTimeoutMs = 10000;

struct PgOp {
  enum class Kind { Put, Create, Erase, Load, Listen };
  Kind kind = Kind::Put;
  std::string id;  // Put/Create/Erase: the stream; Load: the stream or "" (every stream)
  PgParams params;
  RegistryStore::Done done;
  RegistryStore::Loaded loaded;
  std::uint64_t submitted_ns = 0;
  // Filled while its results arrive: the first failure, else the rows of a load.
  PGresult* rows = nullptr;
  PGresult* failure = nullptr;

  ~PgOp() {
    PQclear(rows);
    PQclear(failure);
  }
  bool is_write() const { return kind == Kind::Put || kind == Kind::Create || kind == Kind::Erase; }
  const char* verb() const {
    switch (kind) {
      case Kind::Put:
        return "put";
      case Kind::Create:
        return "create";
      case Kind::Erase:
        return "erase";
      case Kind::Load:
        return "load";
      default:
        return "listen on";
    }
  }
};

class PgRegistryStore final : public RegistryStore {
 public:
  PgRegistryStore(uv_loop_t* loop, std::string url, PGconn* conn, std::size_t max_pending)
      : loop_(loop), url_(std::move(url)), conn_(conn), max_pending_(max_pending) {}

  ~PgRegistryStore() override {
    if (started_ && !closed_) LOG_ERROR("registry", "store destroyed before close() finished");
    if (conn_ != nullptr) PQfinish(conn_);
  }

  // Nonblocking mode and the poll and timer handles. False when libuv refuses them.
  Expected<void> start();

  Expected<std::vector<StoredStream>> load_all() override;
  void put(StoredStream stream, Done done) override {
    submit_write(PgOp::Kind::Put, std::move(stream), std::move(done));
  }
  void create(StoredStream stream, Done done) override {
    submit_write(PgOp::Kind::Create, std::move(stream), std::move(done));
  }
  void erase(std::string id, Done done) override;
  std::size_t pending_writes() const override { return pending_writes_; }
  bool shared() const override { return true; }
  void on_change(Changed changed) override { changed_ = std::move(changed); }
  void load(std::optional<std::string> id, Loaded done) override;
  RegistryStats stats() const override { return stats_; }
  void close(std::function<void()> done) override;

 private:
  enum class State { Ready, Connecting, Down };

  // Why an operation submitted now is refused, or std::errc{}.
  std::errc refusal(bool write) const;
  void submit_write(PgOp::Kind kind, StoredStream stream, Done done);
  void enqueue(std::unique_ptr<PgOp> op);
  void pump();
  bool send(PgOp& op);
  void flush();
  void on_io(int status, int events);
  void read_results();
  void finish_running();
  // `message`: what went wrong, for a load's error detail.
  void complete(std::unique_ptr<PgOp> op, std::error_code error, const std::string& message);
  void deliver_notifications();

  void lost(const std::string& why);
  void fail_queued(std::errc code);
  void schedule_reconnect();
  void reconnect();
  void continue_connect();
  void connected();

  // Watches the connection's socket for `events` (re-creating the poll handle when libpq
  // changed socket); 0 stops watching.
  void watch(int events);
  void drop_poll();
  void drop_connection();
  void maybe_closed();

  uv_loop_t* loop_;
  std::string url_;
  PGconn* conn_;
  std::size_t max_pending_;
  State state_ = State::Ready;
  bool started_ = false;
  bool closing_ = false;
  bool closed_ = false;
  std::function<void()> close_done_;
  int handles_open_ = 0;

  uv_poll_t* poll_ = nullptr;
  int poll_fd_ = -1;
  int poll_events_ = 0;
  uv_timer_t* timer_ = nullptr;
  std::uint64_t backoff_ms_ = kFirstBackoffMs;

  std::deque<std::unique_ptr<PgOp>> queue_;
  std::unique_ptr<PgOp> running_;
  std::size_t pending_writes_ = 0;
  Changed changed_;
  RegistryStats stats_;
};

// PostgreSQL's notices (e.g. "relation already exists, skipping") go to the debug log, not stderr.
void log_notice(void*, const char* message) {
  std::string text = message;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  LOG_DEBUG("registry", "PostgreSQL: %s", text.c_str());
}

Expected<void> PgRegistryStore::start() {
  if (PQsetnonblocking(conn_, 1) != 0) {
    return fail(std::errc::io_error, "registry: nonblocking mode: " + pg_conn_message(conn_));
  }
  watch(UV_READABLE);
  if (poll_ == nullptr) {
    return fail(std::errc::io_error, "registry: cannot watch the PostgreSQL connection's socket");
  }
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  handles_open_++;
  started_ = true;
  return {};
}

Expected<std::vector<StoredStream>> PgRegistryStore::load_all() {
  if (closing_) return fail(std::errc::operation_canceled, "registry: closed");
  if (running_ || !queue_.empty()) {
    return fail(std::errc::device_or_resource_busy,
                "registry: load_all() while writes are pending");
  }
  if (state_ != State::Ready) {
    return fail(std::errc::not_connected, "registry: not connected to PostgreSQL (reconnecting)");
  }
  const char* id = nullptr;
  // PQexecParams blocks even in nonblocking mode: meant for start-up.
  PGresult* result = PQexecParams(conn_, kPgLoadSql, 1, nullptr, &id, nullptr, nullptr, 0);
  Expected<std::vector<StoredStream>> out = fail(std::errc::io_error);
  if (PQresultStatus(result) == PGRES_TUPLES_OK) {
    out = pg_parse_streams(result);
  } else {
    const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    out = fail(state ? pg_errc(state) : std::errc::connection_aborted,
               "registry: load: " + (result ? pg_result_message(result) : pg_conn_message(conn_)));
  }
  PQclear(result);
  deliver_notifications();  // any that arrived meanwhile
  return out;
}

std::errc PgRegistryStore::refusal(bool write) const {
  if (closing_) return std::errc::operation_canceled;
  if (state_ != State::Ready) return std::errc::not_connected;
  if (write && pending_writes_ >= max_pending_) return std::errc::resource_unavailable_try_again;
  return std::errc{};
}

void PgRegistryStore::submit_write(PgOp::Kind kind, StoredStream stream, Done done) {
  if (const std::errc why = refusal(true); why != std::errc{}) {
    done(std::make_error_code(why));
    return;
  }
  auto op = std::make_unique<PgOp>();
  op->kind = kind;
  op->id = stream.id;
  op->done = std::move(done);
  std::string problem;
  if (!pg_put_params(stream, kind == PgOp::Kind::Create, op->params, problem)) {
    LOG_ERROR("registry", "%s", problem.c_str());
    op->done(std::make_error_code(std::errc::invalid_argument));
    return;
  }
  enqueue(std::move(op));
}

void PgRegistryStore::erase(std::string id, Done done) {
  if (const std::errc why = refusal(true); why != std::errc{}) {
    done(std::make_error_code(why));
    return;
  }
  auto op = std::make_unique<PgOp>();
  op->kind = PgOp::Kind::Erase;
  op->params.values.emplace_back(id);
  op->id = std::move(id);
  op->done = std::move(done);
  enqueue(std::move(op));
}

void PgRegistryStore::load(std::optional<std::string> id, Loaded done) {
  if (const std::errc why = refusal(false); why != std::errc{}) {
    done(fail(why, "registry: not connected to PostgreSQL"));
    return;
  }
  auto op = std::make_unique<PgOp>();
  op->kind = PgOp::Kind::Load;
  op->id = id.value_or("");
  op->params.values.push_back(std::move(id));
  op->loaded = std::move(done);
  enqueue(std::move(op));
}

void PgRegistryStore::enqueue(std::unique_ptr<PgOp> op) {
  op->submitted_ns = uv_hrtime();
  if (op->is_write()) pending_writes_++;
  queue_.push_back(std::move(op));
  pump();
}

void PgRegistryStore::pump() {
  if (running_ || queue_.empty() || conn_ == nullptr || state_ == State::Down) return;
  if (state_ == State::Connecting && queue_.front()->kind != PgOp::Kind::Listen) return;
  running_ = std::move(queue_.front());
  queue_.pop_front();
  if (!send(*running_)) {
    lost("cannot send a statement: " + pg_conn_message(conn_));
    return;
  }
  flush();
}

bool PgRegistryStore::send(PgOp& op) {
  if (op.kind == PgOp::Kind::Listen) {
    return PQsendQuery(conn_, (std::string("LISTEN ") + kPgChannel).c_str()) == 1;
  }
  std::vector<const char*> values;
  for (const auto& v : op.params.values) values.push_back(v ? v->c_str() : nullptr);
  const char* sql = op.kind == PgOp::Kind::Erase  ? kPgEraseSql
                    : op.kind == PgOp::Kind::Load ? kPgLoadSql
                                                  : kPgPutSql;
  return PQsendQueryParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(),
                           nullptr, nullptr, 0) == 1;
}

// Sends what libpq buffered; watches for writability while some is left.
void PgRegistryStore::flush() {
  const int rc = PQflush(conn_);
  if (rc < 0) {
    lost("cannot send: " + pg_conn_message(conn_));
    return;
  }
  watch(rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

void PgRegistryStore::on_io(int status, int events) {
  if (status < 0) {
    lost(std::string("socket: ") + uv_strerror(status));
    return;
  }
  if (state_ == State::Connecting && !running_ && queue_.empty()) {
    continue_connect();
    return;
  }
  if ((events & UV_WRITABLE) != 0) {
    flush();
    if (conn_ == nullptr) return;
  }
  if ((events & UV_READABLE) != 0) {
    if (PQconsumeInput(conn_) == 0) {
      lost(pg_conn_message(conn_));
      return;
    }
    read_results();
    if (conn_ == nullptr) return;
    deliver_notifications();
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_BAD) lost(pg_conn_message(conn_));
  }
}

// Collects the running operation's results; once libpq says there are no more, finishes it.
void PgRegistryStore::read_results() {
  while (running_ && conn_ != nullptr && PQisBusy(conn_) == 0) {
    PGresult* result = PQgetResult(conn_);
    if (result == nullptr) {
      finish_running();
      continue;
    }
    const ExecStatusType status = PQresultStatus(result);
    const bool ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    PGresult*& slot = ok ? running_->rows : running_->failure;
    if (slot == nullptr && (ok || running_->failure == nullptr)) {
      slot = result;
    } else {
      PQclear(result);
    }
  }
}

void PgRegistryStore::finish_running() {
  std::unique_ptr<PgOp> op = std::move(running_);
  std::error_code error;
  std::string message;
  if (op->failure != nullptr) {
    const char* state = PQresultErrorField(op->failure, PG_DIAG_SQLSTATE);
    error = std::make_error_code(pg_errc(state != nullptr ? state : ""));
    message = pg_result_message(op->failure);
    if (error != std::errc::file_exists) {
      LOG_ERROR("registry", "%s stream '%s' in PostgreSQL: %s", op->verb(), op->id.c_str(),
                message.c_str());
    }
  } else if (op->rows == nullptr) {
    error = std::make_error_code(std::errc::io_error);
    message = "PostgreSQL sent no result";
  }
  if (op->kind == PgOp::Kind::Listen) {
    if (error) {
      lost("LISTEN failed");
      return;
    }
    connected();
    return;
  }
  complete(std::move(op), error, message);
  pump();
  maybe_closed();
}

// Runs the operation's callback with `error` (or its rows). The callback may submit more or
// close(): close()'s own callback runs later, from a handle's close callback, never in here.
void PgRegistryStore::complete(std::unique_ptr<PgOp> op, std::error_code error,
                               const std::string& message) {
  if (op->is_write()) {
    CHUNKD_ASSERT(pending_writes_ > 0);
    pending_writes_--;
    if (!error) {
      stats_.writes++;
      stats_.write_seconds += static_cast<double>(uv_hrtime() - op->submitted_ns) / 1e9;
    }
    Done done = std::move(op->done);
    op.reset();
    done(error);
  } else {
    Loaded loaded = std::move(op->loaded);
    Expected<std::vector<StoredStream>> result =
        error ? Expected<std::vector<StoredStream>>(fail(error, "registry: load: " + message))
              : pg_parse_streams(op->rows);
    op.reset();
    loaded(std::move(result));
  }
}

// Other connections' NOTIFYs (ours are skipped: this instance applied its own writes).
void PgRegistryStore::deliver_notifications() {
  std::vector<std::string> ids;
  const int self = PQbackendPID(conn_);
  while (PGnotify* notify = PQnotifies(conn_)) {
    if (notify->be_pid != self) ids.emplace_back(notify->extra);
    PQfreemem(notify);
  }
  for (const std::string& id : ids) {
    if (closing_ || !changed_) return;
    stats_.notifications++;
    changed_(id);
  }
}

void PgRegistryStore::lost(const std::string& why) {
  const bool was_ready = state_ == State::Ready;
  if (was_ready) {
    LOG_WARN("registry", "the connection to PostgreSQL is lost: %s; reconnecting", why.c_str());
  } else {
    LOG_DEBUG("registry", "connecting to PostgreSQL failed: %s", why.c_str());
  }
  drop_connection();
  state_ = State::Down;
  stats_.connected = false;
  if (running_) {
    std::unique_ptr<PgOp> op = std::move(running_);
    if (op->is_write()) {
      LOG_ERROR("registry",
                "%s stream '%s': the connection was lost before PostgreSQL answered; the write "
                "may or may not have been committed",
                op->verb(), op->id.c_str());
    }
    if (op->kind != PgOp::Kind::Listen) {
      complete(std::move(op), std::make_error_code(std::errc::connection_aborted),
               "the connection to PostgreSQL was lost");
    }
  }
  fail_queued(std::errc::not_connected);
  schedule_reconnect();
  maybe_closed();
}

void PgRegistryStore::fail_queued(std::errc code) {
  while (!queue_.empty() && !running_) {
    std::unique_ptr<PgOp> op = std::move(queue_.front());
    queue_.pop_front();
    complete(std::move(op), std::make_error_code(code),
             code == std::errc::not_connected ? "not connected to PostgreSQL" : "closed");
  }
}

void PgRegistryStore::schedule_reconnect() {
  if (closing_ || timer_ == nullptr) return;
  uv_timer_start(
      timer_,
      [](uv_timer_t* timer) {
        auto* self = static_cast<PgRegistryStore*>(timer->data);
        if (self->state_ == State::Connecting) {
          self->lost("no answer within " + std::to_string(kConnectTimeoutMs) + " ms");
        } else {
          self->reconnect();
        }
      },
      backoff_ms_, 0);
  backoff_ms_ = std::min(backoff_ms_ * 2, kMaxBackoffMs);
}

void PgRegistryStore::reconnect() {
  conn_ = PQconnectStart(url_.c_str());
  if (conn_ == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
    lost(pg_conn_message(conn_));
    return;
  }
  PQsetNoticeProcessor(conn_, log_notice, nullptr);
  state_ = State::Connecting;
  uv_timer_start(
      timer_,
      [](uv_timer_t* timer) {
        auto* self = static_cast<PgRegistryStore*>(timer->data);
        self->lost("no answer within " + std::to_string(kConnectTimeoutMs) + " ms");
      },
      kConnectTimeoutMs, 0);
  watch(UV_WRITABLE);  // as if PQconnectPoll had said PGRES_POLLING_WRITING
}

void PgRegistryStore::continue_connect() {
  // libpq may close the socket and open another (the next address) with the same number: a new
  // poll handle for every step, so libuv never keeps a registration of a closed socket.
  drop_poll();
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_READING:
      watch(UV_READABLE);
      return;
    case PGRES_POLLING_WRITING:
      watch(UV_WRITABLE);
      return;
    case PGRES_POLLING_OK:
      break;
    default:
      lost(pg_conn_message(conn_));
      return;
  }
  if (PQsetnonblocking(conn_, 1) != 0) {
    lost("nonblocking mode: " + pg_conn_message(conn_));
    return;
  }
  auto listen = std::make_unique<PgOp>();
  listen->kind = PgOp::Kind::Listen;
  queue_.push_front(std::move(listen));
  pump();
}

// The LISTEN of a new connection succeeded: ready again, and whatever changed meanwhile is lost.
void PgRegistryStore::connected() {
  uv_timer_stop(timer_);
  state_ = State::Ready;
  stats_.connected = true;
  stats_.reconnects++;
  backoff_ms_ = kFirstBackoffMs;
  LOG_INFO("registry", "reconnected to PostgreSQL; reloading every stream");
  pump();
  if (!closing_ && changed_) changed_(std::nullopt);
  maybe_closed();
}

void PgRegistryStore::watch(int events) {
  const int fd = conn_ != nullptr ? PQsocket(conn_) : -1;
  if (poll_ != nullptr && (fd != poll_fd_ || events == 0)) drop_poll();
  if (events == 0 || fd < 0) return;
  if (poll_ == nullptr) {
    auto* poll = new uv_poll_t;
    if (uv_poll_init_socket(loop_, poll, fd) != 0) {
      delete poll;
      return;
    }
    poll->data = this;
    poll_ = poll;
    poll_fd_ = fd;
    poll_events_ = 0;
    handles_open_++;
  }
  if (events == poll_events_) return;
  poll_events_ = events;
  uv_poll_start(poll_, events, [](uv_poll_t* handle, int status, int ready) {
    static_cast<PgRegistryStore*>(handle->data)->on_io(status, ready);
  });
}

void PgRegistryStore::drop_poll() {
  if (poll_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* handle) {
    auto* self = static_cast<PgRegistryStore*>(handle->data);
    delete reinterpret_cast<uv_poll_t*>(handle);
    self->handles_open_--;
    self->maybe_closed();
  });
  poll_ = nullptr;
  poll_fd_ = -1;
  poll_events_ = 0;
}

// Stops watching the socket (before libpq closes it), then closes the connection.
void PgRegistryStore::drop_connection() {
  drop_poll();
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

void PgRegistryStore::close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  close_done_ = std::move(done);
  maybe_closed();
}

// Once closing and nothing is queued or running: closes the connection and the handles; once
// every handle is closed, runs close()'s callback.
void PgRegistryStore::maybe_closed() {
  if (!closing_ || closed_ || running_) return;
  if (!queue_.empty() && state_ != State::Down) return;
  fail_queued(std::errc::operation_canceled);
  drop_connection();
  if (timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* handle) {
      auto* self = static_cast<PgRegistryStore*>(handle->data);
      delete reinterpret_cast<uv_timer_t*>(handle);
      self->handles_open_--;
      self->maybe_closed();
    });
    timer_ = nullptr;
  }
  if (handles_open_ > 0) return;
  closed_ = true;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (done) done();  // may destroy *this
}

}  // namespace
}  // namespace detail

Expected<std::unique_ptr<RegistryStore>> RegistryStore::open_shared(
    uv_loop_t* loop, const std::string& url, std::size_t max_pending_writes) {
  using namespace detail;
  PGconn* conn = PQconnectdb(url.c_str());
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    std::string message = pg_conn_message(conn);
    PQfinish(conn);
    return fail(std::errc::connection_refused,
                "registry.url: cannot connect to PostgreSQL: " + message);
  }
  PQsetNoticeProcessor(conn, log_notice, nullptr);
  auto store = std::make_unique<PgRegistryStore>(loop, url, conn,
                                                 max_pending_writes == 0 ? 1 : max_pending_writes);
  // On failure the destructor closes the connection.
  if (auto schema = prepare_pg_schema(conn); !schema) return Unexpected{schema.error()};
  PGresult* listen = PQexec(conn, (std::string("LISTEN ") + kPgChannel).c_str());
  const bool listening = PQresultStatus(listen) == PGRES_COMMAND_OK;
  std::string message = listening ? "" : pg_result_message(listen);
  PQclear(listen);
  if (!listening) return fail(std::errc::io_error, "registry: cannot LISTEN: " + message);
  if (auto started = store->start(); !started) return Unexpected{started.error()};
  return std::unique_ptr<RegistryStore>(std::move(store));
}

}  // namespace chunkd::io
