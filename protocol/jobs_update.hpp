// The pure decisions of the jobs MQTT API (docs/jobs.md "MQTT"): which execution is a thing's
// next, what an UpdateJobExecution or a StartNextPendingJobExecution does to an execution, and
// which rejected code answers when it may not. The engine's job service looks executions up,
// calls these, stores the result durably, then answers; nothing here touches a store or a clock.
//
// Decisions (the hosted service's, where its documentation says; * where it is silent):
// - statusDetails in a request REPLACE the stored ones; absent, the stored ones are kept
//   ("if not specified, the statusDetails are unchanged"). {} clears them. So after the OTA
//   agent's {"self_test":"ready","updatedBy":…} the execution holds exactly that, which the
//   agent reads back after its reboot.
// - Update checks, in order: executionNumber given and not the execution's → ResourceNotFound*;
//   expectedVersion given and not the execution's versionNumber → VersionMismatch; the execution
//   in a terminal status → InvalidStateTransition (the hosted service's own example is
//   SUCCEEDED → IN_PROGRESS; TerminalStateReached is documented for describing, not updating);
//   a status the device may not set from the current one (device_may_set) → InvalidStateTransition.
//   IN_PROGRESS → IN_PROGRESS is a progress report and is accepted.
// - An accepted update: the new status, versionNumber + 1, lastUpdatedAt = now, startedAt = now
//   when the execution leaves QUEUED* (first IN_PROGRESS, or straight to an outcome).
// - Step timer: a terminal status cancels it; stepTimeoutInMinutes -1 cancels it; N sets it to
//   now + N minutes; absent keeps it.
// - Start-next: no pending execution → accepted with no execution; the next one QUEUED → it
//   becomes IN_PROGRESS as an update would make it; already IN_PROGRESS* → returned unchanged
//   (its statusDetails and step timer too): the device resumes what it had started.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/expected.hpp"
#include "protocol/jobs.hpp"
#include "protocol/jobs_request.hpp"

namespace chunkd::protocol {

// The order of a thing's pending executions: IN_PROGRESS before QUEUED, then by queuedAt, then
// by job id. Executions in a terminal status sort after every pending one.
bool pending_before(const JobExecution& a, const JobExecution& b);

// The thing's next execution ($next): the first pending one in pending_before order; null when
// none of `executions` is pending.
const JobExecution* select_next(std::span<const JobExecution> executions);

struct StepTimer {
  enum class Action : std::uint8_t { Keep, Cancel, Set };
  Action action = Action::Keep;
  std::int64_t deadline_ms = 0;  // Set: when the execution times out
};

struct JobsRejection {
  JobsErrorCode code;
  std::string message;
  // The rejected reply carries the current execution state (encode_jobs_rejected) for
  // InvalidStateTransition and VersionMismatch.
};

struct UpdateOutcome {
  JobExecution execution;  // the record to store before answering (step_deadline_ms set too)
  StepTimer step_timer;
};

Expected<UpdateOutcome, JobsRejection> decide_update(const JobExecution& current,
                                                     const UpdateRequest& request,
                                                     std::int64_t now_ms);

struct StartNextOutcome {
  std::optional<JobExecution> execution;  // none: nothing pending
  bool changed = false;                   // true: store `execution` before answering
  StepTimer step_timer;
};

// REQUIRES: `next` is null or pending (select_next's answer).
StartNextOutcome decide_start_next(const JobExecution* next, const StartNextRequest& request,
                                   std::int64_t now_ms);

// DescribeJobExecution of `execution` (found by job id): executionNumber given and not the
// execution's → ResourceNotFound*.
std::optional<JobsRejection> check_describe(const JobExecution& execution,
                                            const DescribeRequest& request);

}  // namespace chunkd::protocol
