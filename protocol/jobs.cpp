#include "protocol/jobs.hpp"

#include <array>

namespace chunkd::protocol {
namespace {

constexpr std::array<std::string_view, kExecutionStatusCount> kExecutionNames = {
    "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED", "REMOVED",
};
constexpr std::array<std::string_view, 4> kJobNames = {"IN_PROGRESS", "CANCELED", "COMPLETED",
                                                       "DELETION_IN_PROGRESS"};

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

}  // namespace

bool valid_job_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxJobIdChars) return false;
  for (char c : id) {
    if (!id_char(c)) return false;
  }
  return true;
}

std::string_view to_string(ExecutionStatus s) {
  return kExecutionNames[static_cast<std::size_t>(s)];
}

std::optional<ExecutionStatus> execution_status_from_string(std::string_view text) {
  for (std::size_t i = 0; i < kExecutionNames.size(); ++i) {
    if (kExecutionNames[i] == text) return static_cast<ExecutionStatus>(i);
  }
  return std::nullopt;
}

bool is_terminal(ExecutionStatus s) {
  return s != ExecutionStatus::Queued && s != ExecutionStatus::InProgress;
}

bool device_may_set(ExecutionStatus from, ExecutionStatus to) {
  if (is_terminal(from)) return false;
  switch (to) {
    case ExecutionStatus::InProgress:
    case ExecutionStatus::Succeeded:
    case ExecutionStatus::Failed:
    case ExecutionStatus::Rejected:
      return true;
    default:
      return false;
  }
}

bool service_may_set(ExecutionStatus from, ExecutionStatus to) {
  if (is_terminal(from)) return false;
  return to == ExecutionStatus::TimedOut || to == ExecutionStatus::Canceled ||
         to == ExecutionStatus::Removed;
}

std::string_view to_string(JobStatus s) { return kJobNames[static_cast<std::size_t>(s)]; }

std::optional<JobStatus> job_status_from_string(std::string_view text) {
  for (std::size_t i = 0; i < kJobNames.size(); ++i) {
    if (kJobNames[i] == text) return static_cast<JobStatus>(i);
  }
  return std::nullopt;
}

}  // namespace chunkd::protocol
