// Private to io/: the pieces of libpq on the loop that the shared registry (io/registry_pg*.cpp)
// and the jobs lease (io/job_lease_pg*.cpp) share: the poll handle on a connection's socket, and
// the steps of an asynchronous connect.
//
// Thread: the loop thread.
#pragma once

#include <libpq-fe.h>
#include <uv.h>

#include <cstdint>
#include <string>

namespace chunkd::io::detail {

// Reconnection back-off: from kFirstBackoffMs doubling to a cap; each attempt bounded.
inline constexpr std::uint64_t kFirstBackoffMs = 100;
inline constexpr std::uint64_t kMaxBackoffMs = 5000;
inline constexpr std::uint64_t kConnectTimeoutMs = 10000;

// PostgreSQL's notices (e.g. "relation already exists, skipping") go to the debug log.
void log_pg_notice(void* unused, const char* message);

// The uv_poll handle on a connection's socket. watch() re-creates it when libpq changed socket
// (a reconnect, or the next address of a connect), so libuv never keeps a registration of a
// closed socket. A dropped handle closes asynchronously: `closed(owner)` runs once it is gone.
// REQUIRES: the owner outlives every handle (waits for open_handles() == 0 before it goes).
class PgPoll {
 public:
  using Ready = void (*)(void* owner, int status, int events);
  using Closed = void (*)(void* owner);

  PgPoll(uv_loop_t* loop, void* owner, Ready ready, Closed closed)
      : loop_(loop), owner_(owner), ready_(ready), closed_(closed) {}
  PgPoll(const PgPoll&) = delete;
  PgPoll& operator=(const PgPoll&) = delete;

  // Watches `conn`'s socket for `events` (UV_READABLE, UV_WRITABLE); 0 stops watching.
  void watch(const PGconn* conn, int events);
  // Stops watching and closes the handle (before libpq closes the socket).
  void drop();
  // Sends what libpq buffered, then watches for input (and writability while output is left).
  // False, `error` set, when the connection failed.
  bool flush(PGconn* conn, std::string& error);
  // A readiness event of a connected session: flushes when writable, reads what arrived when
  // readable (then PQisBusy/PQgetResult/PQnotifies have it). False, `error` set, when the socket
  // or the connection failed.
  bool exchange(PGconn* conn, int status, int events, std::string& error);
  bool active() const { return poll_ != nullptr; }
  // Handles created and not closed yet (the active one and those closing).
  int open_handles() const { return open_; }

 private:
  uv_loop_t* loop_;
  void* owner_;
  Ready ready_;
  Closed closed_;
  uv_poll_t* poll_ = nullptr;
  int fd_ = -1;
  int events_ = 0;
  int open_ = 0;
};

// Starts connecting to `url` (a libpq URI or conninfo) without waiting; `application_name`
// (nullptr: libpq's default) names the session in pg_stat_activity. PostgreSQL's notices go to
// the debug log. The connection may be CONNECTION_BAD already (see pg_conn_message).
PGconn* pg_connect_start(const std::string& url, const char* application_name);
// Blocking connect, for start-up; same parameters.
PGconn* pg_connect(const std::string& url, const char* application_name);
// One step of PQconnectPoll: the events to wait for before the next step, 0 once connected (then
// in nonblocking mode), -1 when the attempt failed (`error` says why).
int pg_connect_step(PGconn* conn, std::string& error);

}  // namespace chunkd::io::detail
