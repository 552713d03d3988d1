// The pure jobs decisions (rules in protocol/jobs_update.hpp).
#include "protocol/jobs_update.hpp"

#include <algorithm>
#include <tuple>

#include "base/assert.hpp"

namespace chunkd::protocol {
namespace {

constexpr std::int64_t kMinuteMs = 60 * 1000;

int pending_rank(ExecutionStatus s) {
  if (s == ExecutionStatus::InProgress) return 0;
  if (s == ExecutionStatus::Queued) return 1;
  return 2;
}

std::string number_text(std::int64_t n) { return std::to_string(n); }

StepTimer step_timer_for(ExecutionStatus status, const std::optional<std::int64_t>& minutes,
                         std::int64_t now_ms) {
  if (is_terminal(status) || minutes == kCancelStepTimeout) {
    return {StepTimer::Action::Cancel, 0};
  }
  if (minutes) return {StepTimer::Action::Set, now_ms + *minutes * kMinuteMs};
  return {};
}

void set_step_deadline(JobExecution& e, const StepTimer& timer) {
  if (timer.action == StepTimer::Action::Cancel) e.step_deadline_ms = 0;
  if (timer.action == StepTimer::Action::Set) e.step_deadline_ms = timer.deadline_ms;
}

// Moves `e` to `status` at `now_ms`, with `details` replacing the stored ones when given.
void apply(JobExecution& e, ExecutionStatus status, const std::optional<StatusDetails>& details,
           std::int64_t now_ms) {
  if (e.status == ExecutionStatus::Queued && status != ExecutionStatus::Queued &&
      e.started_at_ms == 0) {
    e.started_at_ms = now_ms;
  }
  e.status = status;
  if (details) e.status_details = *details;
  e.version_number += 1;
  e.last_updated_at_ms = now_ms;
}

std::optional<JobsRejection> check_execution_number(const JobExecution& e,
                                                    const std::optional<std::int64_t>& number) {
  if (!number || *number == e.execution_number) return std::nullopt;
  return JobsRejection{
      JobsErrorCode::ResourceNotFound,
      "job " + e.job_id + " has no execution number " + number_text(*number) + " for this thing"};
}

}  // namespace

bool pending_before(const JobExecution& a, const JobExecution& b) {
  return std::forward_as_tuple(pending_rank(a.status), a.queued_at_ms, a.job_id) <
         std::forward_as_tuple(pending_rank(b.status), b.queued_at_ms, b.job_id);
}

const JobExecution* select_next(std::span<const JobExecution> executions) {
  const auto it = std::min_element(executions.begin(), executions.end(), pending_before);
  if (it == executions.end() || is_terminal(it->status)) return nullptr;
  return &*it;
}

Expected<UpdateOutcome, JobsRejection> decide_update(const JobExecution& current,
                                                     const UpdateRequest& request,
                                                     std::int64_t now_ms) {
  if (auto rejection = check_execution_number(current, request.execution_number)) {
    return unexpected(std::move(*rejection));
  }
  if (request.expected_version && *request.expected_version != current.version_number) {
    return unexpected(JobsRejection{JobsErrorCode::VersionMismatch,
                                    "expectedVersion " + number_text(*request.expected_version) +
                                        " is not the execution's version " +
                                        number_text(current.version_number)});
  }
  if (is_terminal(current.status)) {
    return unexpected(JobsRejection{JobsErrorCode::InvalidStateTransition,
                                    "the execution is " + std::string(to_string(current.status)) +
                                        ", a terminal status: it cannot be updated"});
  }
  if (!device_may_set(current.status, request.status)) {
    return unexpected(JobsRejection{JobsErrorCode::InvalidStateTransition,
                                    "a device cannot move an execution from " +
                                        std::string(to_string(current.status)) + " to " +
                                        std::string(to_string(request.status))});
  }
  UpdateOutcome outcome{current, {}};
  apply(outcome.execution, request.status, request.status_details, now_ms);
  outcome.step_timer = step_timer_for(request.status, request.step_timeout_minutes, now_ms);
  set_step_deadline(outcome.execution, outcome.step_timer);
  return outcome;
}

StartNextOutcome decide_start_next(const JobExecution* next, const StartNextRequest& request,
                                   std::int64_t now_ms) {
  StartNextOutcome outcome;
  if (next == nullptr) return outcome;
  CHUNKD_ASSERT(!is_terminal(next->status));  // REQUIRES: select_next's answer
  outcome.execution = *next;
  if (next->status == ExecutionStatus::InProgress) return outcome;  // resumed as it is
  apply(*outcome.execution, ExecutionStatus::InProgress, request.status_details, now_ms);
  outcome.changed = true;
  outcome.step_timer =
      step_timer_for(ExecutionStatus::InProgress, request.step_timeout_minutes, now_ms);
  set_step_deadline(*outcome.execution, outcome.step_timer);
  return outcome;
}

std::optional<JobsRejection> check_describe(const JobExecution& execution,
                                            const DescribeRequest& request) {
  return check_execution_number(execution, request.execution_number);
}

}  // namespace chunkd::protocol
