// JobWriter: makes what the JobBook changed durable before anyone hears of it (group commit).
//
// The job service applies a change to the book first (so the next decision sees it), then
// record()s the change with what to do once it is durable: the MQTT accepted reply, notify-next,
// the HTTP answer. While one batch is being written, later changes gather in the next one, and a
// batch is written in one store transaction: many devices' updates cost one fsync. Everything
// recorded runs its `then` in order, after its own batch and every earlier one are committed, so
// an answer never shows state that a crash could lose — also an answer that changed nothing
// (record() with no changes waits for the writes it may have read).
//
// A failed write is retried with back-off (250 ms doubling to 8 s) until it succeeds; the book
// stays ahead of the store meanwhile and answers wait. Records are whole (upserts of the job's and
// execution's latest state), so a retry is harmless. waiting() is bounded by the caller: over
// `max_waiting`, full() says so and the caller refuses new work (RequestThrottled, 503).
//
// Metrics (when given): chunkd_jobs_store_writes_total{result}, chunkd_jobs_store_batch_records
// (the last batch's size).
//
// Thread: loop thread only. close() before destruction.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "engine/job_book.hpp"
#include "engine/metrics.hpp"

namespace chunkd::engine {

// A job's own record, without its executions.
struct JobHeader {
  JobPlan plan;
  protocol::JobStatus status = protocol::JobStatus::InProgress;
  std::string reason_code;
  std::string comment;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t completed_at_ms = 0;
};
JobHeader header_of(const Job& job);

// One transaction: delete `deleted` (with their executions), then upsert `jobs`, then upsert
// `executions` (whose jobs exist).
struct JobBatch {
  std::vector<std::string> things;  // newly known things, remembered first
  std::vector<std::string> deleted;
  std::vector<JobHeader> jobs;
  std::vector<protocol::JobExecution> executions;
  std::size_t size() const {
    return things.size() + deleted.size() + jobs.size() + executions.size();
  }
};

class JobWriter {
 public:
  using Done = std::function<void(std::error_code error)>;
  using Store = std::function<void(const JobBatch& batch, Done done)>;
  static constexpr std::uint64_t kFirstRetryMs = 250;
  static constexpr std::uint64_t kMaxRetryMs = 8000;

  // `store` writes one batch in one transaction and calls `done` once, later, on the loop thread.
  // `metrics` may be null.
  JobWriter(uv_loop_t* loop, const JobBook& book, Store store, std::size_t max_waiting,
            Metrics* metrics);
  ~JobWriter();
  JobWriter(const JobWriter&) = delete;
  JobWriter& operator=(const JobWriter&) = delete;

  // Writes `changes` (read from the book when the batch is written) and then runs `then`.
  void record(JobChanges changes, std::function<void()> then);

  std::size_t waiting() const { return open_thens_.size() + writing_thens_.size(); }
  bool full() const { return waiting() >= max_waiting_; }
  bool failing() const { return retry_ms_ != 0; }

  // Waits for the batch being written (and its retries while `give_up_ms` has not passed), drops
  // what was not written (its `then`s never run), then `done`.
  void close(std::uint64_t give_up_ms, std::function<void()> done);

 private:
  struct Pending {
    std::set<std::string> things;
    std::set<std::string> deleted;
    std::set<std::string> jobs;
    std::map<std::pair<std::string, std::string>, protocol::JobExecution>
        executions;  // by job, thing
    bool empty() const {
      return things.empty() && deleted.empty() && jobs.empty() && executions.empty();
    }
  };
  void start_write();
  void written(std::error_code error);
  void maybe_closed();
  JobBatch build(const Pending& pending) const;

  uv_loop_t* loop_;
  const JobBook& book_;
  Store store_;
  std::size_t max_waiting_;
  Metrics* metrics_;
  Pending open_;
  std::vector<std::function<void()>> open_thens_;
  Pending writing_;
  std::vector<std::function<void()>> writing_thens_;
  bool write_in_flight_ = false;
  std::uint64_t retry_ms_ = 0;  // 0: the last write succeeded
  bool retry_pending_ = false;
  uv_timer_t* retry_timer_;  // freed by its close callback
  bool closing_ = false;
  std::uint64_t close_deadline_ms_ = 0;
  std::function<void()> close_done_;
};

}  // namespace chunkd::engine
