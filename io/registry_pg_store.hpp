// Private to io/registry_pg*.cpp: the shared registry's store class (io/registry_pg.hpp says
// what it does). registry_pg.cpp runs the operations (queue, send, results, notifications);
// registry_pg_connection.cpp keeps the connection (loss, reconnect with back-off, the socket's
// poll handle, close) and opens the store.
//
// States: Ready (connected, LISTENing: operations run), Connecting (PQconnectPoll in progress,
// then the LISTEN runs as the first operation), Down (waiting for the back-off timer), and
// closing (after close(): the queue drains, then the handles close and `done` runs).
//
// Thread: the loop thread.
#pragma once

#include <libpq-fe.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/pg_session.hpp"
#include "io/registry_pg.hpp"
#include "io/registry_store.hpp"

namespace chunkd::io::detail {

struct PgOp {
  enum class Kind { Put, Create, Update, Erase, Load, Listen };
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
  bool is_write() const { return kind != Kind::Load && kind != Kind::Listen; }
  const char* verb() const {
    switch (kind) {
      case Kind::Put:
        return "put";
      case Kind::Create:
        return "create";
      case Kind::Update:
        return "update";
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
      : loop_(loop),
        url_(std::move(url)),
        conn_(conn),
        max_pending_(max_pending),
        poll_(
            loop, this,
            [](void* self, int status, int events) {
              static_cast<PgRegistryStore*>(self)->on_io(status, events);
            },
            [](void* self) { static_cast<PgRegistryStore*>(self)->maybe_closed(); }) {}

  ~PgRegistryStore() override {
    if (started_ && !closed_) LOG_ERROR("registry", "store destroyed before close() finished");
    if (conn_ != nullptr) PQfinish(conn_);
  }

  // Nonblocking mode and the poll and timer handles. False when libuv refuses them.
  Expected<void> start();

  Expected<std::vector<StoredStream>> load_all() override;
  void put(StoredStream stream, Done done) override {
    submit_write(PgOp::Kind::Put, std::move(stream), std::nullopt, std::move(done));
  }
  void update(StoredStream stream, Expectation expected, Done done) override {
    submit_write(PgOp::Kind::Update, std::move(stream), std::move(expected), std::move(done));
  }
  void create(StoredStream stream, Done done) override {
    submit_write(PgOp::Kind::Create, std::move(stream), std::nullopt, std::move(done));
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
  void submit_write(PgOp::Kind kind, StoredStream stream, std::optional<Expectation> expected,
                    Done done);
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

  // Watches the connection's socket for `events`; 0 stops watching.
  void watch(int events) { poll_.watch(conn_, events); }
  void drop_poll() { poll_.drop(); }
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
  int handles_open_ = 0;  // the timer (the poll handles: poll_.open_handles())

  PgPoll poll_;
  uv_timer_t* timer_ = nullptr;
  std::uint64_t backoff_ms_ = kFirstBackoffMs;

  std::deque<std::unique_ptr<PgOp>> queue_;
  std::unique_ptr<PgOp> running_;
  std::size_t pending_writes_ = 0;
  Changed changed_;
  RegistryStats stats_;
};

}  // namespace chunkd::io::detail
