// The shared registry's connection (io/registry_pg_store.hpp): its loss, the reconnection with
// back-off, the poll handle on its socket, close(), and open_shared().
#include <libpq-fe.h>

#include <algorithm>
#include <utility>

#include "io/log.hpp"
#include "io/registry_pg_store.hpp"

namespace chunkd::io {
namespace detail {

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
  conn_ = pg_connect_start(url_, nullptr);
  if (conn_ == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
    lost(pg_conn_message(conn_));
    return;
  }
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
  std::string error;
  if (const int events = pg_connect_step(conn_, error); events != 0) {
    if (events > 0) {
      watch(events);
    } else {
      lost(error);
    }
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
  if (handles_open_ > 0 || poll_.open_handles() > 0) return;
  closed_ = true;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (done) done();  // may destroy *this
}

}  // namespace detail

Expected<std::unique_ptr<RegistryStore>> RegistryStore::open_shared(
    uv_loop_t* loop, const std::string& url, std::size_t max_pending_writes) {
  using namespace detail;
  PGconn* conn = pg_connect(url, nullptr);
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    std::string message = pg_conn_message(conn);
    PQfinish(conn);
    return fail(std::errc::connection_refused,
                "registry.url: cannot connect to PostgreSQL: " + message);
  }
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
