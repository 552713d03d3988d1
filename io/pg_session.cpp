// The pieces of libpq on the loop shared by the registry and the jobs lease (io/pg_session.hpp).
#include "io/pg_session.hpp"

#include "io/registry_pg.hpp"

namespace chunkd::io::detail {

void PgPoll::watch(const PGconn* conn, int events) {
  const int fd = conn != nullptr ? PQsocket(conn) : -1;
  if (poll_ != nullptr && (fd != fd_ || events == 0)) drop();
  if (events == 0 || fd < 0) return;
  if (poll_ == nullptr) {
    auto* poll = new uv_poll_t;
    if (uv_poll_init_socket(loop_, poll, fd) != 0) {
      delete poll;
      return;
    }
    poll->data = this;
    poll_ = poll;
    fd_ = fd;
    events_ = 0;
    open_++;
  }
  if (events == events_) return;
  events_ = events;
  uv_poll_start(poll_, events, [](uv_poll_t* handle, int status, int ready) {
    auto* self = static_cast<PgPoll*>(handle->data);
    self->ready_(self->owner_, status, ready);
  });
}

void PgPoll::drop() {
  if (poll_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* handle) {
    auto* self = static_cast<PgPoll*>(handle->data);
    delete reinterpret_cast<uv_poll_t*>(handle);
    self->open_--;
    self->closed_(self->owner_);
  });
  poll_ = nullptr;
  fd_ = -1;
  events_ = 0;
}

bool PgPoll::flush(PGconn* conn, std::string& error) {
  const int rc = PQflush(conn);
  if (rc < 0) {
    error = "cannot send: " + pg_conn_message(conn);
    return false;
  }
  watch(conn, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
  return true;
}

bool PgPoll::exchange(PGconn* conn, int status, int events, std::string& error) {
  if (status < 0) {
    error = std::string("socket: ") + uv_strerror(status);
    return false;
  }
  if ((events & UV_WRITABLE) != 0 && !flush(conn, error)) return false;
  if ((events & UV_READABLE) != 0 && PQconsumeInput(conn) == 0) {
    error = pg_conn_message(conn);
    return false;
  }
  return true;
}

namespace {

PGconn* connect_with(const std::string& url, const char* application_name, bool wait) {
  // The URI's own settings, then application_name over any it names.
  const char* keywords[] = {"dbname", application_name ? "application_name" : nullptr, nullptr};
  const char* values[] = {url.c_str(), application_name, nullptr};
  PGconn* conn =
      wait ? PQconnectdbParams(keywords, values, 1) : PQconnectStartParams(keywords, values, 1);
  if (conn != nullptr) PQsetNoticeProcessor(conn, log_pg_notice, nullptr);
  return conn;
}

}  // namespace

PGconn* pg_connect_start(const std::string& url, const char* application_name) {
  return connect_with(url, application_name, false);
}

PGconn* pg_connect(const std::string& url, const char* application_name) {
  return connect_with(url, application_name, true);
}

int pg_connect_step(PGconn* conn, std::string& error) {
  switch (PQconnectPoll(conn)) {
    case PGRES_POLLING_READING:
      return UV_READABLE;
    case PGRES_POLLING_WRITING:
      return UV_WRITABLE;
    case PGRES_POLLING_OK:
      break;
    default:
      error = pg_conn_message(conn);
      return -1;
  }
  if (PQsetnonblocking(conn, 1) != 0) {
    error = "nonblocking mode: " + pg_conn_message(conn);
    return -1;
  }
  return 0;
}

}  // namespace chunkd::io::detail
