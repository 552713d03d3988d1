// Decoding of the jobs requests devices publish (docs/jobs.md "MQTT"), JSON with simdjson. Every
// byte sequence yields a request or a typed JobsRequestError: no exception escapes, no read past
// the buffer, allocation bounded by the input size. Thread-safe: one parser per thread.
//
// Decoding rules (decisions marked * are ours where the hosted service's documentation is
// silent):
// - A payload over kMaxJobsRequestBytes* → InvalidRequest, before any parsing. An empty payload*
//   is read as {} (OTA agents send {"clientToken":"..."}, other clients sometimes nothing).
// - Not a JSON object (syntax error, trailing bytes, invalid UTF-8, nesting deeper than 32*,
//   integers beyond 64 bits, an array or a scalar) → InvalidJson.
// - Unknown keys are ignored (the documented "jobId" and "thingName" of a describe payload
//   too: the topic names both). Keys of another request kind are unknown keys. Duplicate keys*:
//   every occurrence is checked, the last one wins.
// - A null value* is the same as the key being absent.
// - clientToken: a string of at most kMaxClientTokenChars bytes after unescaping.
// - Integers (expectedVersion, executionNumber, stepTimeoutInMinutes): a JSON integer, or a
//   string of ASCII decimal digits (the embedded jobs library sends "expectedVersion":"3").
//   Floats (even 3.0), bools, other strings, arrays, objects → InvalidRequest. expectedVersion
//   is 0..2^63-1; executionNumber 1..2^63-1; stepTimeoutInMinutes 1..10080, or -1 in an update
//   (cancels the step timer), as the hosted service.
// - Booleans (includeJobDocument, includeJobExecutionState): JSON true or false only.
// - status (update, required): one of the eight execution status names (which ones a device may
//   set is decided later, see jobs_update.hpp).
// - statusDetails: an object of at most kMaxStatusDetails entries; keys 1..128 of
//   [a-zA-Z0-9:_-]; values strings of 1..1024 characters (code points) with no control
//   character (U+0000-U+001F, U+007F-U+009F), as the hosted service's [^\p{C}]+ for the
//   characters that break device parsers. A repeated key keeps its first position, last value.
// - Every violation is InvalidRequest with a message naming the field; the first one wins, then
//   a missing status. JobsRequestError::client_token is set when the (last) clientToken was
//   valid, whatever else is wrong, except for InvalidJson and oversize payloads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/expected.hpp"
#include "protocol/jobs.hpp"

namespace chunkd::protocol {

// The codes of a jobs "rejected" reply, exactly as on the wire (to_string).
enum class JobsErrorCode : std::uint8_t {
  InvalidTopic,
  InvalidJson,
  InvalidRequest,
  InvalidStateTransition,
  ResourceNotFound,
  VersionMismatch,
  TerminalStateReached,
  RequestThrottled,
  InternalError,
};
inline constexpr int kJobsErrorCodeCount = static_cast<int>(JobsErrorCode::InternalError) + 1;
std::string_view to_string(JobsErrorCode code);  // "InvalidTopic", ...

inline constexpr std::size_t kMaxJobsRequestBytes = 32768;
inline constexpr std::size_t kMaxStatusDetailKeyChars = 128;
inline constexpr std::int64_t kMaxStepTimeoutMinutes = 10080;  // 7 days
inline constexpr std::int64_t kCancelStepTimeout = -1;         // update only

struct JobsRequestError {
  JobsErrorCode code;  // InvalidJson or InvalidRequest
  std::string message;
  std::optional<std::string> client_token;
};

struct GetPendingRequest {
  std::optional<std::string> client_token;
};

struct StartNextRequest {
  std::optional<std::string> client_token;
  std::optional<StatusDetails> status_details;       // absent: unchanged
  std::optional<std::int64_t> step_timeout_minutes;  // 1..10080
};

struct DescribeRequest {
  std::optional<std::string> client_token;
  std::optional<std::int64_t> execution_number;
  bool include_job_document = true;
};

struct UpdateRequest {
  std::optional<std::string> client_token;
  ExecutionStatus status = ExecutionStatus::InProgress;
  std::optional<StatusDetails> status_details;  // absent: unchanged
  std::optional<std::int64_t> expected_version;
  std::optional<std::int64_t> execution_number;
  bool include_job_execution_state = false;
  bool include_job_document = false;
  std::optional<std::int64_t> step_timeout_minutes;  // 1..10080, or kCancelStepTimeout
};

using JobsPayload = std::span<const std::byte>;

Expected<GetPendingRequest, JobsRequestError> decode_jobs_get_pending(JobsPayload payload);
Expected<StartNextRequest, JobsRequestError> decode_jobs_start_next(JobsPayload payload);
Expected<DescribeRequest, JobsRequestError> decode_jobs_describe(JobsPayload payload);
Expected<UpdateRequest, JobsRequestError> decode_jobs_update(JobsPayload payload);

// A statusDetails key or value as the rules above require (also for the HTTP side and tests).
bool valid_status_detail_key(std::string_view key);
bool valid_status_detail_value(std::string_view value);

}  // namespace chunkd::protocol
