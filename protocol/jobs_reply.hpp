// Encoders for the jobs messages chunkd publishes (docs/jobs.md "MQTT"), in the hosted service's
// shapes. Each appends one JSON object to `out` (no DOM; `out` is not cleared, so a caller can
// reuse one buffer). Every text goes through append_json_string (RFC 8259 escaping; bytes that
// are not UTF-8 become U+FFFD), so the output is valid JSON whatever the inputs; a client token
// decoded by jobs_request.hpp is valid UTF-8 and echoes byte for byte.
//
// Times: JobExecution keeps milliseconds; every time on the wire ("timestamp", queuedAt,
// startedAt, lastUpdatedAt) is whole SECONDS since the epoch, as the hosted service sends them
// and as OTA agents read "timestamp" (a 32-bit unsigned). `now_ms` is passed in: no clock here.
//
// An execution object is, in this order: jobId, thingName, status, statusDetails (always, {}
// when empty), queuedAt, startedAt (only once started), lastUpdatedAt, versionNumber,
// executionNumber, then jobDocument (when given) inserted raw. OTA agents look up
// execution.jobId, execution.jobDocument (an object) and execution.statusDetails by key path,
// whatever the order; a message with no "execution" key means nothing is pending.
//
// Pure and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "protocol/jobs.hpp"
#include "protocol/jobs_request.hpp"

namespace chunkd::protocol {

// A jobs/notify message lists at most this many pending executions, as the hosted service.
inline constexpr std::size_t kMaxNotifyExecutions = 15;

// The job document of an execution, when the reply carries it. REQUIRES: a JSON object, valid
// and at most kMaxJobDocumentBytes (the store checked it); inserted as it is.
using JobDocument = std::optional<std::string_view>;

// .../rejected: {"code","message","clientToken"?,"timestamp","executionState"?}. The execution
// state ({status, statusDetails, versionNumber}) is written only for InvalidStateTransition and
// VersionMismatch, and only when `state` is given.
void encode_jobs_rejected(std::string& out, JobsErrorCode code, std::string_view message,
                          const std::optional<std::string>& client_token, std::int64_t now_ms,
                          const JobExecution* state = nullptr);

// jobs/get/accepted: {"inProgressJobs":[...],"queuedJobs":[...],"timestamp","clientToken"?}
// with one summary per execution ({jobId, queuedAt, startedAt?, lastUpdatedAt, versionNumber,
// executionNumber}), split by status in the order given; executions in other statuses are
// skipped.
void encode_get_pending_accepted(std::string& out, const std::optional<std::string>& client_token,
                                 std::int64_t now_ms, std::span<const JobExecution> pending);

// <jobId|$next>/get/accepted and start-next/accepted:
// {"clientToken"?,"timestamp","execution"?}; no "execution" when `execution` is null (nothing
// pending).
void encode_execution_accepted(std::string& out, const std::optional<std::string>& client_token,
                               std::int64_t now_ms, const JobExecution* execution,
                               JobDocument document);

// <jobId>/update/accepted: {"executionState"?,"jobDocument"?,"timestamp","clientToken"?}; the
// state when includeJobExecutionState asked for it (pass the updated execution), the document
// when includeJobDocument did.
void encode_update_accepted(std::string& out, const std::optional<std::string>& client_token,
                            std::int64_t now_ms, const JobExecution* state, JobDocument document);

// jobs/notify-next: {"timestamp","execution"?}; no "execution" when nothing is pending.
void encode_notify_next(std::string& out, std::int64_t now_ms, const JobExecution* next,
                        JobDocument document);

// jobs/notify: {"timestamp","jobs":{"IN_PROGRESS":[...],"QUEUED":[...]}} with the summaries of
// the first kMaxNotifyExecutions pending executions in the order given (IN_PROGRESS first, then
// by queuedAt, is the caller's order); an empty list is left out, so nothing pending is
// {"timestamp":N,"jobs":{}}.
void encode_notify(std::string& out, std::int64_t now_ms, std::span<const JobExecution> pending);

}  // namespace chunkd::protocol
