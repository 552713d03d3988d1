#include "engine/job_book.hpp"

#include <algorithm>
#include <charconv>
#include <utility>

#include "base/assert.hpp"
#include "protocol/thing_pattern.hpp"

namespace chunkd::engine {
namespace {

using protocol::ExecutionStatus;
using protocol::JobExecution;
using protocol::JobStatus;

constexpr std::uint64_t kWindowMs = 60'000;

bool is_pattern(std::string_view target) {
  return target.find_first_of("*?") != std::string_view::npos;
}

std::size_t index(ExecutionStatus s) { return static_cast<std::size_t>(s); }

// Earlier in a thing's queue: IN_PROGRESS before QUEUED, then queue time, then job.
bool queued_before(const Job& ja, const JobExecution& a, const Job& jb, const JobExecution& b) {
  bool a_running = a.status == ExecutionStatus::InProgress;
  bool b_running = b.status == ExecutionStatus::InProgress;
  if (a_running != b_running) return a_running;
  if (a.queued_at_ms != b.queued_at_ms) return a.queued_at_ms < b.queued_at_ms;
  if (ja.plan.created_at_ms != jb.plan.created_at_ms) {
    return ja.plan.created_at_ms < jb.plan.created_at_ms;
  }
  return a.job_id < b.job_id;
}

bool failure_of(protocol::AbortFailureType type, ExecutionStatus s) {
  using protocol::AbortFailureType;
  switch (type) {
    case AbortFailureType::Failed:
      return s == ExecutionStatus::Failed;
    case AbortFailureType::Rejected:
      return s == ExecutionStatus::Rejected;
    case AbortFailureType::TimedOut:
      return s == ExecutionStatus::TimedOut;
    case AbortFailureType::All:
      return s == ExecutionStatus::Failed || s == ExecutionStatus::Rejected ||
             s == ExecutionStatus::TimedOut;
  }
  return false;
}

// "50", "12.5": the shortest text that reads back as the same number.
std::string percent_text(double value) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return ec == std::errc() ? std::string(buf, end) : std::string("?");
}

// The job's in-progress time-out (`limit_ms`, 0: none) or the execution's step timer ran out.
bool timed_out(const JobExecution& e, std::int64_t limit_ms, std::int64_t unix_ms) {
  if (protocol::is_terminal(e.status)) return false;
  if (e.step_deadline_ms != 0 && unix_ms >= e.step_deadline_ms) return true;
  return limit_ms != 0 && e.status == ExecutionStatus::InProgress &&
         unix_ms - e.started_at_ms >= limit_ms;
}

}  // namespace

bool Job::has_pattern() const {
  return std::any_of(plan.targets().begin(), plan.targets().end(),
                     [](const std::string& t) { return is_pattern(t); });
}

std::uint64_t Job::terminal_count() const {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (protocol::is_terminal(static_cast<ExecutionStatus>(i))) n += counts[i];
  }
  return n;
}

void JobChanges::merge(JobChanges other) {
  for (auto& e : other.executions) executions.push_back(std::move(e));
  jobs.merge(other.jobs);
  deleted.merge(other.deleted);
  seen.merge(other.seen);
  notify_next.merge(other.notify_next);
  aborted.merge(other.aborted);
  released += other.released;
  timed_out += other.timed_out;
}

JobChanges JobBook::create(JobPlan plan, std::uint64_t now, std::int64_t unix_ms) {
  CHUNKD_ASSERT(jobs_.find(plan.id) == jobs_.end());
  auto job = std::make_unique<Job>();
  job->plan = std::move(plan);
  job->last_updated_at_ms = unix_ms;
  Job& j = *job;
  jobs_.emplace(j.plan.id, std::move(job));
  match_targets(j);
  JobChanges changes;
  changes.jobs.insert(j.plan.id);
  release(j, now, unix_ms, changes);
  return changes;
}

void JobBook::restore(Job job, std::uint64_t now, std::int64_t unix_ms) {
  CHUNKD_ASSERT(jobs_.find(job.plan.id) == jobs_.end());
  auto owned = std::make_unique<Job>(std::move(job));
  Job& j = *owned;
  j.counts = {};
  j.waiting.clear();
  j.waiting_set.clear();
  j.releases.clear();
  std::vector<std::int64_t> recent;
  for (auto& [thing, e] : j.executions) {
    j.counts[index(e.status)]++;
    by_thing_[thing].push_back(&e);
    execution_count_++;
    std::int64_t age = unix_ms - e.queued_at_ms;
    if (age >= 0 && static_cast<std::uint64_t>(age) < kWindowMs) recent.push_back(age);
  }
  // The releases of the last minute still count against the rollout rate after a restart.
  std::sort(recent.rbegin(), recent.rend());
  for (std::int64_t age : recent) {
    std::uint64_t a = static_cast<std::uint64_t>(age);
    j.releases.push_back(now > a ? now - a : 0);
  }
  jobs_.emplace(j.plan.id, std::move(owned));
  if (j.status == JobStatus::InProgress) match_targets(j);
}

void JobBook::match_targets(Job& job) {
  auto wait = [&job](const std::string& thing) {
    if (job.executions.count(thing) != 0 || job.waiting_set.count(thing) != 0) return;
    job.waiting.push_back(thing);
    job.waiting_set.insert(thing);
  };
  for (const std::string& target : job.plan.targets()) {
    if (!is_pattern(target)) wait(target);
  }
  for (const std::string& thing : things_) {
    for (const std::string& target : job.plan.targets()) {
      if (is_pattern(target) && protocol::thing_pattern_matches(target, thing)) {
        wait(thing);
        break;
      }
    }
  }
}

JobChanges JobBook::thing_seen(std::string_view thing, std::uint64_t now, std::int64_t unix_ms) {
  JobChanges changes;
  if (!things_.emplace(thing).second) return changes;
  changes.seen.emplace(thing);
  for (auto& [id, job] : jobs_) {
    if (job->status != JobStatus::InProgress || !job->has_pattern()) continue;
    if (job->executions.count(thing) != 0 || job->waiting_set.count(thing) != 0) continue;
    for (const std::string& target : job->plan.targets()) {
      if (is_pattern(target) && protocol::thing_pattern_matches(target, thing)) {
        job->waiting.emplace_back(thing);
        job->waiting_set.emplace(thing);
        release(*job, now, unix_ms, changes);
        break;
      }
    }
  }
  return changes;
}

void JobBook::release(Job& job, std::uint64_t now, std::int64_t unix_ms, JobChanges& changes) {
  while (!job.releases.empty() && now - job.releases.front() >= kWindowMs) {
    job.releases.pop_front();
  }
  while (!job.waiting.empty() && job.status == JobStatus::InProgress &&
         (job.plan.max_per_minute() == 0 || job.releases.size() < job.plan.max_per_minute())) {
    std::string thing = std::move(job.waiting.front());
    job.waiting.pop_front();
    job.waiting_set.erase(thing);
    auto before = next_pending_id(thing);
    JobExecution e;
    e.job_id = job.plan.id;
    e.thing = thing;
    e.queued_at_ms = unix_ms;
    e.last_updated_at_ms = unix_ms;
    auto [it, inserted] = job.executions.emplace(thing, std::move(e));
    CHUNKD_ASSERT(inserted);
    by_thing_[thing].push_back(&it->second);
    execution_count_++;
    job.counts[index(ExecutionStatus::Queued)]++;
    job.releases.push_back(now);
    changes.executions.push_back(it->second);
    changes.released++;
    note_pending_change(thing, before, changes);
  }
}

JobChanges JobBook::tick(std::uint64_t now, std::int64_t unix_ms) {
  JobChanges changes;
  for (auto& [id, job] : jobs_) {
    if (job->status != JobStatus::InProgress) continue;
    release(*job, now, unix_ms, changes);
    const std::int64_t limit_ms = std::int64_t{job->plan.timeout_minutes()} * 60'000;
    for (auto& [thing, e] : job->executions) {
      if (!timed_out(e, limit_ms, unix_ms)) continue;
      auto before = next_pending_id(thing);
      set_status(*job, e, ExecutionStatus::TimedOut, unix_ms, changes);
      changes.timed_out++;
      note_pending_change(thing, before, changes);
    }
    after_terminal(*job, unix_ms, changes);
  }
  return changes;
}

JobChanges JobBook::update(const JobExecution& next, std::int64_t unix_ms) {
  Job* job = find(next.job_id);
  CHUNKD_ASSERT(job != nullptr);
  auto it = job->executions.find(next.thing);
  CHUNKD_ASSERT(it != job->executions.end());
  JobExecution& e = it->second;
  CHUNKD_ASSERT(protocol::device_may_set(e.status, next.status));
  JobChanges changes;
  auto before = next_pending_id(next.thing);
  job->counts[index(e.status)]--;
  job->counts[index(next.status)]++;
  bool terminal = protocol::is_terminal(next.status);
  e = next;
  changes.executions.push_back(e);
  note_pending_change(next.thing, before, changes);
  if (terminal) after_terminal(*job, unix_ms, changes);
  return changes;
}

void JobBook::set_status(Job& job, JobExecution& e, ExecutionStatus to, std::int64_t unix_ms,
                         JobChanges& changes) {
  CHUNKD_ASSERT(protocol::service_may_set(e.status, to));
  job.counts[index(e.status)]--;
  job.counts[index(to)]++;
  e.status = to;
  e.step_deadline_ms = 0;
  e.last_updated_at_ms = unix_ms;
  e.version_number++;
  changes.executions.push_back(e);
}

void JobBook::after_terminal(Job& job, std::int64_t unix_ms, JobChanges& changes) {
  if (job.status != JobStatus::InProgress) return;
  std::uint64_t executed = job.terminal_count();
  for (const protocol::AbortCriterion& c : job.plan.spec.abort_criteria) {
    if (executed == 0 || executed < c.min_executed_things) continue;
    std::uint64_t failures = 0;
    for (std::size_t i = 0; i < job.counts.size(); ++i) {
      if (failure_of(c.failure_type, static_cast<ExecutionStatus>(i))) failures += job.counts[i];
    }
    if (static_cast<double>(failures) * 100.0 <
        c.threshold_percentage * static_cast<double>(executed)) {
      continue;
    }
    job.status = JobStatus::Canceled;
    job.reason_code = "ABORTED";
    job.comment = std::to_string(failures) + " of " + std::to_string(executed) +
                  " executed things failed, at or over the abort threshold of " +
                  percent_text(c.threshold_percentage) + "%";
    job.last_updated_at_ms = unix_ms;
    job.completed_at_ms = unix_ms;
    changes.jobs.insert(job.plan.id);
    changes.aborted.insert(job.plan.id);
    cancel_remaining(job, false, unix_ms, changes);
    return;
  }
  maybe_complete(job, unix_ms, changes);
}

void JobBook::maybe_complete(Job& job, std::int64_t unix_ms, JobChanges& changes) {
  if (job.status != JobStatus::InProgress || job.has_pattern() || !job.waiting.empty()) return;
  if (job.terminal_count() != job.executions.size()) return;
  job.status = JobStatus::Completed;
  job.last_updated_at_ms = unix_ms;
  job.completed_at_ms = unix_ms;
  changes.jobs.insert(job.plan.id);
}

std::optional<JobChanges> JobBook::cancel(std::string_view id, std::string reason_code,
                                          std::string comment, bool force, std::int64_t unix_ms) {
  Job* job = find(id);
  if (job == nullptr || job->status != JobStatus::InProgress) return std::nullopt;
  JobChanges changes;
  job->status = JobStatus::Canceled;
  job->reason_code = std::move(reason_code);
  job->comment = std::move(comment);
  job->last_updated_at_ms = unix_ms;
  job->completed_at_ms = unix_ms;
  changes.jobs.insert(job->plan.id);
  cancel_remaining(*job, force, unix_ms, changes);
  return changes;
}

void JobBook::cancel_remaining(Job& job, bool force, std::int64_t unix_ms, JobChanges& changes) {
  job.waiting.clear();
  job.waiting_set.clear();
  for (auto& [thing, e] : job.executions) {
    bool cancel =
        e.status == ExecutionStatus::Queued || (force && e.status == ExecutionStatus::InProgress);
    if (!cancel) continue;
    auto before = next_pending_id(thing);
    set_status(job, e, ExecutionStatus::Canceled, unix_ms, changes);
    note_pending_change(thing, before, changes);
  }
}

JobChanges JobBook::remove(std::string_view id) {
  JobChanges changes;
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return changes;
  Job& job = *it->second;
  std::vector<std::pair<std::string, std::optional<std::string>>> before;
  for (auto& [thing, e] : job.executions) before.emplace_back(thing, next_pending_id(thing));
  for (auto& [thing, e] : job.executions) {
    auto& list = by_thing_[thing];
    list.erase(std::remove(list.begin(), list.end(), &e), list.end());
    if (list.empty()) by_thing_.erase(thing);
    execution_count_--;
  }
  changes.deleted.insert(job.plan.id);
  jobs_.erase(it);
  for (auto& [thing, was] : before) note_pending_change(thing, was, changes);
  return changes;
}

Job* JobBook::find(std::string_view id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

const Job* JobBook::job(std::string_view id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

const JobExecution* JobBook::execution(std::string_view thing, std::string_view id) const {
  const Job* j = job(id);
  if (j == nullptr) return nullptr;
  auto it = j->executions.find(thing);
  return it == j->executions.end() ? nullptr : &it->second;
}

std::vector<const JobExecution*> JobBook::pending(std::string_view thing) const {
  std::vector<const JobExecution*> out;
  auto it = by_thing_.find(thing);
  if (it == by_thing_.end()) return out;
  for (const JobExecution* e : it->second) {
    if (!protocol::is_terminal(e->status)) out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [this](const JobExecution* a, const JobExecution* b) {
    return queued_before(*job(a->job_id), *a, *job(b->job_id), *b);
  });
  return out;
}

const JobExecution* JobBook::next_pending(std::string_view thing) const {
  auto list = pending(thing);
  return list.empty() ? nullptr : list.front();
}

std::optional<std::string> JobBook::next_pending_id(std::string_view thing) const {
  const JobExecution* e = next_pending(thing);
  if (e == nullptr) return std::nullopt;
  return e->job_id;
}

void JobBook::note_pending_change(std::string_view thing, const std::optional<std::string>& before,
                                  JobChanges& changes) const {
  if (next_pending_id(thing) != before) changes.notify_next.emplace(thing);
}

std::vector<const Job*> JobBook::page(std::optional<std::string_view> after,
                                      std::size_t limit) const {
  std::vector<const Job*> out;
  auto it = after ? jobs_.upper_bound(*after) : jobs_.begin();
  for (; it != jobs_.end() && out.size() < limit; ++it) out.push_back(it->second.get());
  return out;
}

std::optional<std::string> JobBook::job_using_stream(std::string_view stream_id) const {
  for (const auto& [id, job] : jobs_) {
    if (job->status == JobStatus::InProgress && job->plan.stream_id() == stream_id) return id;
  }
  return std::nullopt;
}

std::size_t JobBook::jobs_in(JobStatus status) const {
  return static_cast<std::size_t>(
      std::count_if(jobs_.begin(), jobs_.end(),
                    [status](const auto& kv) { return kv.second->status == status; }));
}

std::array<std::uint64_t, protocol::kExecutionStatusCount> JobBook::counts() const {
  std::array<std::uint64_t, protocol::kExecutionStatusCount> total{};
  for (const auto& [id, job] : jobs_) {
    for (std::size_t i = 0; i < total.size(); ++i) total[i] += job->counts[i];
  }
  return total;
}

}  // namespace chunkd::engine
