// The HTTP side of jobs (docs/jobs.md "## HTTP"): the body of `POST /jobs/{jobId}`, the afr_ota
// job document chunkd builds for an OTA job, the list queries of `GET /jobs` and
// `GET /jobs/{jobId}/things`, and the responses of those routes, in the control API's envelope
// (protocol/control.hpp: the same errors, VALIDATION_ERROR details naming each field path).
//
// Choices where the hosted service is silent or does not apply are marked `*`.
// Pure: no I/O, no clock (times come in as milliseconds since the Unix epoch); any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "protocol/control.hpp"
#include "protocol/jobs.hpp"

namespace chunkd::protocol {

inline constexpr std::size_t kMaxJobTargets = 100;  // * the hosted service allows 100 too
inline constexpr std::uint32_t kMaxRolloutPerMinute = 1000;
inline constexpr std::size_t kMaxAbortCriteria = 4;                   // * one per failure type
inline constexpr std::uint32_t kMaxInProgressTimeoutMinutes = 10080;  // 7 days
// The OTA agent decodes `sig-sha256-ecdsa` into a 384-byte buffer (3072-bit RSA); an ECDSA P-256
// DER signature is 8..72 bytes.
inline constexpr std::size_t kMinOtaSignatureBytes = 8;
inline constexpr std::size_t kMaxOtaSignatureBytes = 384;
inline constexpr std::size_t kMaxOtaPathChars = 1024;  // * filePath, certFile
// The agent's demo drops blocks when thing name + stream id exceed its receive buffer.
inline constexpr std::size_t kDeviceTopicNamesChars = 67;

// `ota`: what chunkd turns into the afr_ota document (build_ota_document).
struct OtaSpec {
  std::string stream_id;      // valid_stream_id
  std::uint32_t file_id = 0;  // 0..255, a file of the stream
  std::string file_path;      // where the device stores the file: 1..1024, no control characters
  std::string signature;      // base64 (standard, padded) of 8..384 bytes: the DER signature
  std::string cert_file;      // the signer's certificate on the device: 1..1024, no control chars
  std::optional<std::uint32_t> file_type;   // `fileType`; the agent reads a uint32
  std::optional<std::uint32_t> attributes;  // `attr`: the agent reads file attributes as uint32
  bool operator==(const OtaSpec&) const = default;
};

enum class AbortFailureType : std::uint8_t { Failed, Rejected, TimedOut, All };
std::string_view to_string(AbortFailureType t);  // "FAILED", "REJECTED", "TIMED_OUT", "ALL"

// abortConfig.criteriaList[]: cancel the job (action CANCEL, the only action) once at least
// `min_executed_things` executions have finished and more than `threshold_percentage` of them
// ended as `failure_type` (ALL: FAILED, REJECTED or TIMED_OUT).
struct AbortCriterion {
  AbortFailureType failure_type = AbortFailureType::All;
  double threshold_percentage = 100;      // 0 < x <= 100
  std::uint32_t min_executed_things = 1;  // >= 1
  bool operator==(const AbortCriterion&) const = default;
};

// A valid `POST /jobs/{jobId}` body.
struct JobSpec {
  // 1..kMaxJobTargets distinct entries, each a thing name or a thing-name pattern with '*'/'?'
  // (protocol/thing_pattern.hpp); a thing ARN ("arn:...:thing/<name>") is kept as its name.
  std::vector<std::string> targets;
  // Exactly one of the two: `document`, any JSON object of at most kMaxJobDocumentBytes, kept
  // minified; or `ota`.
  std::optional<std::string> document;
  std::optional<OtaSpec> ota;
  std::string description;                          // at most kMaxDescriptionChars
  std::optional<std::uint32_t> maximum_per_minute;  // 1..kMaxRolloutPerMinute; none: no limit
  std::vector<AbortCriterion> abort_criteria;       // at most one per failure type
  std::optional<std::uint32_t> in_progress_timeout_minutes;  // 1..kMaxInProgressTimeoutMinutes
  bool operator==(const JobSpec&) const = default;
};

// Validates the whole body and reports every problem found as details (as parse_create_stream).
Expected<JobSpec, ApiError> parse_create_job(std::string_view json);
// The body that parse_create_job turns back into `spec` (the store keeps a job's spec this way).
std::string encode_job_spec(const JobSpec& spec);
// `POST /jobs/{jobId}/cancel`: every key optional, an empty body is `{}`.
inline constexpr std::size_t kMaxReasonCodeChars = 128;
struct CancelJobBody {
  std::string reason_code;  // 0..128 of A-Z 0-9 '_' (the hosted service's rule)
  std::string comment;      // at most kMaxDescriptionChars, no control characters
  bool force = false;  // also cancel executions IN_PROGRESS (else only QUEUED ones are canceled)
};
Expected<CancelJobBody, ApiError> parse_cancel_job(std::string_view json);

// A jobId path segment: VALIDATION_ERROR naming `jobId`, or nullopt when valid_job_id.
std::optional<ApiError> validate_job_id(std::string_view job_id);
// Whether a target is a pattern (contains '*' or '?') rather than one thing's name.
bool is_target_pattern(std::string_view target);

// Warnings the create response carries (accepted, but some devices will fail): a stream id over
// kDeviceStreamIdBytes; a named target whose name plus the stream id is over
// kDeviceTopicNamesChars.
std::vector<std::string> job_warnings(const JobSpec& spec);

// {"afr_ota":{"protocols":["MQTT"],"streamname":...,"files":[{"filepath":...,"filesize":N,
// "fileid":N,"certfile":...,"sig-sha256-ecdsa":...,"fileType":N?,"attr":N?}]}}, minified: the
// document the OTA agent parses. VALIDATION_ERROR when the file is larger than the agent's
// uint32 `filesize` can say.
Expected<std::string, ApiError> build_ota_document(const OtaSpec& ota,
                                                   std::uint64_t file_size_bytes);

// --- list queries ---------------------------------------------------------------------------

// `GET /jobs`: maxResults, nextToken, isAscendingOrder as parse_list_query; the token holds a
// job id.
Expected<ListQuery, ApiError> parse_job_list_query(std::string_view query);
// `GET /jobs/{jobId}/things`: the same, the token holds a thing name; `status=<execution status>`
// keeps only executions in it.
struct ExecutionListQuery {
  ListQuery page;
  std::optional<ExecutionStatus> status;
};
Expected<ExecutionListQuery, ApiError> parse_execution_list_query(std::string_view query);

// --- responses ------------------------------------------------------------------------------

// What the engine knows of a job. Times: milliseconds since the Unix epoch, 0 for "not yet";
// written as RFC 3339 UTC strings, as the streams' times.
struct JobInfo {
  std::string job_id;
  JobStatus status = JobStatus::InProgress;
  JobSpec spec;
  std::string document;  // the job document devices get: a JSON object, written as is
  std::int64_t created_at_ms = 0;
  std::int64_t last_updated_at_ms = 0;
  std::int64_t completed_at_ms = 0;
  std::string reason_code;  // set when canceled or aborted ("" otherwise)
  std::string comment;
  std::array<std::uint64_t, kExecutionStatusCount> executions_by_status{};  // by enum value
  std::uint64_t waiting_things = 0;  // * targets matched but not released yet (the rollout rate)
};

// {"success":true,"data":{jobId, status, createdAt, "warnings":[...]?}}
std::string job_create_response(const JobInfo& job, const std::vector<std::string>& warnings);
// {"success":true,"data":{jobId, status, description, targets, document (an object) or ota,
// rollout/abort/timeout config when set, createdAt, lastUpdatedAt, completedAt?, reasonCode?,
// comment?, jobProcessDetails:{numberOfQueuedThings, numberOfInProgressThings, ...,
// numberOfWaitingThings}}}
std::string job_describe_response(const JobInfo& job);
// {"success":true,"data":{"jobs":[{jobId, status, description, createdAt, lastUpdatedAt,
// completedAt?}...],"nextToken"?}}; pass encode_next_token(last job id) or nullopt.
std::string job_list_response(const std::vector<JobInfo>& page,
                              const std::optional<std::string>& next_token);
// {"success":true,"data":{"executions":[{thingName, status, statusDetails, versionNumber,
// executionNumber, queuedAt, startedAt?, lastUpdatedAt}...],"nextToken"?}}; pass
// encode_next_token(last thing name) or nullopt.
std::string job_executions_response(const std::vector<JobExecution>& page,
                                    const std::optional<std::string>& next_token);

// "2026-11-27T10:00:00Z" (RFC 3339 UTC, second precision) for milliseconds since the epoch.
std::string rfc3339_from_ms(std::int64_t unix_ms);

}  // namespace chunkd::protocol
