// The vocabulary of jobs (docs/jobs.md; the hosted service's Jobs API as OTA agents use it): the
// status of a job and of a thing's execution of it, which transitions are allowed and who may make
// them, and the records the MQTT side, the HTTP side and the store share.
//
// Execution statuses: QUEUED → IN_PROGRESS → SUCCEEDED | FAILED | REJECTED, set by the device
// (it may also go from QUEUED straight to a terminal status, and from IN_PROGRESS to IN_PROGRESS
// to report progress); TIMED_OUT, CANCELED and REMOVED are set by chunkd only (a time-out, a
// cancelled job or abort, a deleted job). SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELED and
// REMOVED are terminal: nothing leaves them.
//
// Pure: no I/O; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chunkd::protocol {

inline constexpr std::size_t kMaxJobIdChars = 64;  // [a-zA-Z0-9_-], as the hosted service
inline constexpr std::size_t kMaxStatusDetails = 10;
inline constexpr std::size_t kMaxStatusDetailChars = 1024;  // a key or a value
inline constexpr std::size_t kMaxJobDocumentBytes = 32u << 10;
inline constexpr std::size_t kMaxClientTokenChars = 64;

bool valid_job_id(std::string_view id);  // 1..64 of [a-zA-Z0-9_-]

enum class ExecutionStatus : std::uint8_t {
  Queued,
  InProgress,
  Succeeded,
  Failed,
  Rejected,
  TimedOut,
  Canceled,
  Removed,
};
inline constexpr std::size_t kExecutionStatusCount = 8;

std::string_view to_string(ExecutionStatus s);  // "QUEUED", "IN_PROGRESS", ...
std::optional<ExecutionStatus> execution_status_from_string(std::string_view text);
bool is_terminal(ExecutionStatus s);

// What an UpdateJobExecution from the device may do: `to` is IN_PROGRESS, SUCCEEDED, FAILED or
// REJECTED, and `from` is QUEUED or IN_PROGRESS.
bool device_may_set(ExecutionStatus from, ExecutionStatus to);
// What chunkd itself may do: TIMED_OUT from IN_PROGRESS (or QUEUED with a time-out started),
// CANCELED and REMOVED from any non-terminal status.
bool service_may_set(ExecutionStatus from, ExecutionStatus to);

enum class JobStatus : std::uint8_t { InProgress, Canceled, Completed, DeletionInProgress };
std::string_view to_string(JobStatus s);  // "IN_PROGRESS", "CANCELED", "COMPLETED", ...
std::optional<JobStatus> job_status_from_string(std::string_view text);

// statusDetails: at most kMaxStatusDetails string → string pairs, in the order received, keys
// unique.
using StatusDetails = std::vector<std::pair<std::string, std::string>>;

// One thing's execution of one job. Times are milliseconds since the Unix epoch (0: not yet).
struct JobExecution {
  std::string job_id;
  std::string thing;
  ExecutionStatus status = ExecutionStatus::Queued;
  StatusDetails status_details;
  std::int64_t queued_at_ms = 0;
  std::int64_t started_at_ms = 0;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t version_number = 1;  // +1 on every accepted update
  std::int64_t execution_number = 1;
  std::int64_t step_deadline_ms = 0;  // the step timer (stepTimeoutInMinutes), unix ms; 0: none
};

}  // namespace chunkd::protocol
