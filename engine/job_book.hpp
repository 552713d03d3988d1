// JobBook: the jobs chunkd knows and every thing's execution of them, in memory, with the policy
// that moves them: rollout at no more than maximumPerMinute, in-progress time-outs, abort criteria,
// cancel, delete, and which thing's next pending execution changed (so it hears notify-next).
//
// The book decides and remembers; it does no I/O. The job service (engine/job_service.hpp) reads
// it to answer devices and operators, writes what changed (Changes) to the store, and only then
// acknowledges. A change is applied here first, so the next decision sees it.
//
// Rollout: the things a job targets wait in order (thing names in the order given, then things
// matching a pattern in the order they appear) and are released, as a QUEUED execution, while
// fewer than maximumPerMinute releases happened in the last 60 s (a sliding window, so no 60 s
// interval ever holds more). A pattern also matches things that appear later (thing_seen), so a
// job with a pattern never completes by itself; a job of names only completes when every target
// was released and every execution is terminal.
//
// Things known: every thing that talked to the jobs API (thing_seen), remembered across restarts
// (remember()), so that a pattern job created later reaches a device that asked once and waits.
//
// Next pending execution of a thing: its earliest-queued IN_PROGRESS one, else its earliest-queued
// QUEUED one (ties by job creation time, then job id).
//
// Abort: after each terminal change, for each criterion: when at least minNumberOfExecutedThings
// executions are terminal and failures of its type are at least thresholdPercentage of them, the
// job is canceled (reason "ABORTED"); QUEUED executions are canceled and things still waiting for
// release are dropped (they never had an execution); IN_PROGRESS ones carry on (as a cancel
// without force).
//
// Time-outs: an IN_PROGRESS execution older than the job's inProgressTimeoutInMinutes (from its
// startedAt), or any pending one past its step timer (stepTimeoutInMinutes of the device's last
// start-next or update), becomes TIMED_OUT at the next tick.
//
// Times: `now` is monotonic ms (releases), `unix_ms` wall-clock ms (what executions record and the
// time-outs compare). Thread: loop thread only.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/job_control.hpp"
#include "protocol/jobs.hpp"

namespace chunkd::engine {

// What an operator asked for (POST /jobs/{jobId}); never changes after creation.
struct JobPlan {
  std::string id;
  protocol::JobSpec spec;          // targets: thing names and patterns (protocol/thing_pattern.hpp)
  std::string document;            // a JSON object: the spec's, or the one built from its `ota`
  std::int64_t created_at_ms = 0;  // unix

  const std::vector<std::string>& targets() const { return spec.targets; }
  std::uint32_t max_per_minute() const { return spec.maximum_per_minute.value_or(0); }  // 0: none
  std::uint32_t timeout_minutes() const { return spec.in_progress_timeout_minutes.value_or(0); }
  // An OTA job's stream ("" for others).
  std::string_view stream_id() const { return spec.ota ? spec.ota->stream_id : std::string_view(); }
};

struct Job {
  JobPlan plan;
  protocol::JobStatus status = protocol::JobStatus::InProgress;
  std::string reason_code;  // "ABORTED", "CANCELED" (with the operator's comment) or ""
  std::string comment;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t completed_at_ms = 0;
  std::map<std::string, protocol::JobExecution, std::less<>> executions;  // by thing
  // Derived, not stored:
  std::array<std::uint64_t, protocol::kExecutionStatusCount> counts{};
  std::deque<std::string> waiting;  // targets matched and not released yet
  std::set<std::string, std::less<>> waiting_set;
  std::deque<std::uint64_t> releases;  // monotonic ms of the releases in the last 60 s

  bool has_pattern() const;
  std::uint64_t terminal_count() const;
};

// What one call changed: to store before acknowledging, and whom to tell.
struct JobChanges {
  std::vector<protocol::JobExecution> executions;  // new or changed, whole records
  std::set<std::string> jobs;                      // ids whose job record changed
  std::set<std::string> deleted;                   // ids of jobs removed (with their executions)
  std::set<std::string> seen;                      // things newly known (remembered)
  std::set<std::string> notify_next;               // things whose next pending execution changed
  std::set<std::string> aborted;                   // ids of jobs aborted by their criteria
  std::uint64_t released = 0;
  std::uint64_t timed_out = 0;
  bool empty() const {
    return executions.empty() && jobs.empty() && deleted.empty() && seen.empty();
  }
  void merge(JobChanges other);
};

class JobBook {
 public:
  // A new job; its first releases happen at once. REQUIRES: no job with plan.id (asserted).
  JobChanges create(JobPlan plan, std::uint64_t now, std::int64_t unix_ms);
  // A job and its executions as stored (start-up). Releases wait for the next tick().
  void restore(Job job, std::uint64_t now, std::int64_t unix_ms);

  // A thing talked to chunkd: pattern targets of running jobs now match it.
  JobChanges thing_seen(std::string_view thing, std::uint64_t now, std::int64_t unix_ms);
  bool known(std::string_view thing) const { return things_.count(thing) != 0; }
  std::size_t known_things() const { return things_.size(); }
  // A thing remembered from an earlier run (start-up, before restore()).
  void remember(std::string thing) { things_.insert(std::move(thing)); }

  // Releases due, time-outs due. Call about once a second.
  JobChanges tick(std::uint64_t now, std::int64_t unix_ms);

  // Replaces an execution with its next state (decided by protocol/jobs_update.hpp). REQUIRES:
  // the execution exists and `next` is what the rules allow from it (asserted).
  JobChanges update(const protocol::JobExecution& next, std::int64_t unix_ms);

  // Cancels a running job: QUEUED executions (IN_PROGRESS ones too with `force`); things waiting
  // for release are dropped. False when the job is not IN_PROGRESS.
  std::optional<JobChanges> cancel(std::string_view id, std::string reason_code,
                                   std::string comment, bool force, std::int64_t unix_ms);
  // Forgets a job and its executions; their things' next pending may change.
  JobChanges remove(std::string_view id);

  const Job* job(std::string_view id) const;
  const protocol::JobExecution* execution(std::string_view thing, std::string_view id) const;
  const protocol::JobExecution* next_pending(std::string_view thing) const;
  // A thing's IN_PROGRESS then QUEUED executions, each in queue order.
  std::vector<const protocol::JobExecution*> pending(std::string_view thing) const;
  // Up to `limit` jobs by id, strictly after `after` when given.
  std::vector<const Job*> page(std::optional<std::string_view> after, std::size_t limit) const;
  // Whether a job that is not finished delivers `stream_id` (its stream must not be deleted).
  std::optional<std::string> job_using_stream(std::string_view stream_id) const;

  std::size_t jobs() const { return jobs_.size(); }
  std::size_t jobs_in(protocol::JobStatus status) const;
  std::uint64_t executions() const { return execution_count_; }
  std::array<std::uint64_t, protocol::kExecutionStatusCount> counts() const;

 private:
  Job* find(std::string_view id);
  void match_targets(Job& job);
  void release(Job& job, std::uint64_t now, std::int64_t unix_ms, JobChanges& changes);
  void set_status(Job& job, protocol::JobExecution& e, protocol::ExecutionStatus to,
                  std::int64_t unix_ms, JobChanges& changes);
  void after_terminal(Job& job, std::int64_t unix_ms, JobChanges& changes);
  void cancel_remaining(Job& job, bool force, std::int64_t unix_ms, JobChanges& changes);
  void maybe_complete(Job& job, std::int64_t unix_ms, JobChanges& changes);
  void note_pending_change(std::string_view thing, const std::optional<std::string>& before,
                           JobChanges& changes) const;
  std::optional<std::string> next_pending_id(std::string_view thing) const;

  std::map<std::string, std::unique_ptr<Job>, std::less<>> jobs_;
  // thing → its executions, any job
  std::map<std::string, std::vector<protocol::JobExecution*>, std::less<>> by_thing_;
  std::set<std::string, std::less<>> things_;
  std::uint64_t execution_count_ = 0;
};

}  // namespace chunkd::engine
