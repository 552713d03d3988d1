// Private to io/: the write queue the SQLite stores (io/registry_store.cpp, io/job_store.cpp)
// share. Writes run one at a time, in submission order, on the libuv thread pool
// (uv_queue_work), so the loop never waits for an fsync; their callbacks run on the loop thread.
// Bounded: at most `max_pending` writes queued or running. close() runs its pool-side step after
// every queued write, then its callback on the loop.
//
// One write at a time is what makes a SQLITE_OPEN_NOMUTEX connection safe: the next write is
// queued only from the previous one's after-work callback, and libuv's work queue orders the
// hand-offs, so each thread sees the connection as the previous one left it. The store's own
// loop-thread use of the connection (load_all) must check busy() first.
//
// Thread: the loop thread (the writes run on the pool). REQUIRES: the owner calls
// abort_if_running() before it closes the connection in its destructor.
#pragma once

#include <uv.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

namespace chunkd::io::detail {

class SqliteWriter {
 public:
  using Done = std::function<void(std::error_code)>;
  // Runs on a pool thread: the write itself. Returns its error and then describes it in
  // `message` (logged here, on the loop thread, before `done` is called; an error with an empty
  // message is a refusal the caller expects, e.g. a create of an existing id, and is not logged).
  using Write = std::function<std::error_code(std::string& message)>;

  // `component` names the store in logs and messages ("registry", "jobs"); a string literal.
  SqliteWriter(uv_loop_t* loop, const char* component, std::size_t max_pending);
  SqliteWriter(const SqliteWriter&) = delete;
  SqliteWriter& operator=(const SqliteWriter&) = delete;

  // Why a write submitted now would be refused: operation_canceled after close(),
  // resource_unavailable_try_again at the bound; std::errc{} when it would be accepted.
  std::errc refusal() const;
  // Queues `write`; when refused, calls `done` at once with refusal().
  void submit(Write write, Done done);
  // Writes accepted and not yet called back.
  std::size_t pending() const { return pending_; }
  // A write (or the close) queued or running.
  bool busy() const { return running_ != nullptr || !queue_.empty(); }
  bool closing() const { return closing_; }
  // After the queued writes, runs `on_pool` on a pool thread, then `done` on the loop thread
  // (which may destroy the owner). A second close() is ignored.
  void close(std::function<void()> on_pool, std::function<void()> done);
  // Logs and aborts when a write is running: its thread still uses the connection.
  void abort_if_running() const;

 private:
  struct Job {
    bool is_close = false;
    Write write;
    Done done;
    std::function<void()> close_on_pool;
    std::function<void()> close_done;
    std::error_code error;  // set by the worker
    std::string message;    // set by the worker with the error
  };

  void start_next();
  static void on_work(uv_work_t* request) noexcept;
  static void on_after_work(uv_work_t* request, int status) noexcept;

  uv_loop_t* loop_;
  const char* component_;
  std::size_t max_pending_;
  std::size_t pending_ = 0;
  std::deque<std::unique_ptr<Job>> queue_;
  std::unique_ptr<Job> running_;  // the job on the pool, if any
  uv_work_t work_{};
  bool closing_ = false;
};

}  // namespace chunkd::io::detail
