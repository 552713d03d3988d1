// Job responses, the stored form of a job's spec and the afr_ota document
// (protocol/job_control.hpp). Pure: no I/O, no clock.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"
#include "protocol/job_control.hpp"
#include "protocol/jobs.hpp"
#include "protocol/json_write.hpp"

namespace chunkd::protocol {
namespace {

// jobProcessDetails' key for each ExecutionStatus, by enum value.
constexpr std::array<std::string_view, kExecutionStatusCount> kCountKeys = {
    "numberOfQueuedThings",   "numberOfInProgressThings", "numberOfSucceededThings",
    "numberOfFailedThings",   "numberOfRejectedThings",   "numberOfTimedOutThings",
    "numberOfCanceledThings", "numberOfRemovedThings",
};

using json::append_double;
using json::append_field;
using json::append_key;
using json::append_objects;
using json::append_optional_field;
using json::append_strings;
using json::kSuccessClose;
using json::kSuccessOpen;

void append_time(std::string& out, std::string_view key, std::int64_t unix_ms) {
  append_field(out, key, rfc3339_from_ms(unix_ms));
}

// A JSON object written as is ("{}" when empty: the engine always has one).
void append_object(std::string& out, std::string_view key, std::string_view json) {
  append_key(out, key);
  out += json.empty() ? std::string_view("{}") : json;
}

void append_ota(std::string& out, const OtaSpec& ota) {
  out += R"("ota":{)";
  append_field(out, "streamId", ota.stream_id);
  out += ',';
  append_field(out, "fileId", ota.file_id);
  out += ',';
  append_field(out, "filePath", ota.file_path);
  out += ',';
  append_field(out, "signature", ota.signature);
  out += ',';
  append_field(out, "certFile", ota.cert_file);
  append_optional_field(out, "fileType", ota.file_type);
  append_optional_field(out, "attributes", ota.attributes);
  out += '}';
}

// ,"jobExecutionsRolloutConfig":{...},"abortConfig":{...},"timeoutConfig":{...}, each when set.
void append_configs(std::string& out, const JobSpec& spec) {
  if (spec.maximum_per_minute) {
    out += R"(,"jobExecutionsRolloutConfig":{)";
    append_field(out, "maximumPerMinute", *spec.maximum_per_minute);
    out += '}';
  }
  if (!spec.abort_criteria.empty()) {
    out += R"(,"abortConfig":{)";
    append_objects(out, "criteriaList", spec.abort_criteria, [&out](const AbortCriterion& c) {
      append_field(out, "failureType", to_string(c.failure_type));
      out += R"(,"action":"CANCEL","thresholdPercentage":)";
      append_double(out, c.threshold_percentage);
      out += ',';
      append_field(out, "minNumberOfExecutedThings", c.min_executed_things);
    });
    out += '}';
  }
  if (spec.in_progress_timeout_minutes) {
    out += R"(,"timeoutConfig":{)";
    append_field(out, "inProgressTimeoutInMinutes", *spec.in_progress_timeout_minutes);
    out += '}';
  }
}

// jobId, status, description, createdAt, lastUpdatedAt, completedAt when completed: what every
// job-returning response starts with (no braces).
void append_job_summary(std::string& out, const JobInfo& job) {
  append_field(out, "jobId", job.job_id);
  out += ',';
  append_field(out, "status", to_string(job.status));
  out += ',';
  append_field(out, "description", job.spec.description);
  out += ',';
  append_time(out, "createdAt", job.created_at_ms);
  out += ',';
  append_time(out, "lastUpdatedAt", job.last_updated_at_ms);
  if (job.completed_at_ms != 0) {
    out += ',';
    append_time(out, "completedAt", job.completed_at_ms);
  }
}

// Days since 1970-01-01 → civil year, month, day (the proleptic Gregorian calendar).
void civil_from_days(std::int64_t days, std::int64_t& y, unsigned& m, unsigned& d) {
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

void append_padded(std::string& out, std::int64_t v, int width) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  if (v < 0) out += '-';
  for (int i = static_cast<int>(digits.size()); i < width; ++i) out += '0';
  out += digits;
}

}  // namespace

std::string rfc3339_from_ms(std::int64_t unix_ms) {
  constexpr std::int64_t kDayMs = 86'400'000;
  std::int64_t days = unix_ms / kDayMs;
  std::int64_t ms_of_day = unix_ms % kDayMs;
  if (ms_of_day < 0) {
    ms_of_day += kDayMs;
    --days;
  }
  std::int64_t year = 0;
  unsigned month = 0;
  unsigned day = 0;
  civil_from_days(days, year, month, day);
  const std::int64_t seconds = ms_of_day / 1000;
  std::string out;
  append_padded(out, year, 4);
  out += '-';
  append_padded(out, month, 2);
  out += '-';
  append_padded(out, day, 2);
  out += 'T';
  append_padded(out, seconds / 3600, 2);
  out += ':';
  append_padded(out, seconds / 60 % 60, 2);
  out += ':';
  append_padded(out, seconds % 60, 2);
  out += 'Z';
  return out;
}

std::string encode_job_spec(const JobSpec& spec) {
  std::string out = "{";
  append_strings(out, "targets", spec.targets);
  out += ',';
  if (spec.ota) {
    append_ota(out, *spec.ota);
  } else {
    append_object(out, "document", spec.document.value_or("{}"));
  }
  out += ',';
  append_field(out, "description", spec.description);
  append_configs(out, spec);
  out += '}';
  return out;
}

Expected<std::string, ApiError> build_ota_document(const OtaSpec& ota,
                                                   std::uint64_t file_size_bytes) {
  if (file_size_bytes > UINT32_MAX) {
    return unexpected(ApiError{ApiErrorCode::ValidationError,
                               "file " + std::to_string(ota.file_id) + " of stream '" +
                                   ota.stream_id + "' is " + std::to_string(file_size_bytes) +
                                   " bytes: the OTA agent reads filesize as 32 bits",
                               {{"ota.fileId", "must name a file of at most 4294967295 bytes"}}});
  }
  std::string out = R"({"afr_ota":{"protocols":["MQTT"],)";
  append_field(out, "streamname", ota.stream_id);
  out += R"(,"files":[{)";
  append_field(out, "filepath", ota.file_path);
  out += ',';
  append_field(out, "filesize", file_size_bytes);
  out += ',';
  append_field(out, "fileid", ota.file_id);
  out += ',';
  append_field(out, "certfile", ota.cert_file);
  out += ',';
  append_field(out, "sig-sha256-ecdsa", ota.signature);
  append_optional_field(out, "fileType", ota.file_type);
  append_optional_field(out, "attr", ota.attributes);
  out += "}]}}";
  return out;
}

std::string job_create_response(const JobInfo& job, const std::vector<std::string>& warnings) {
  std::string out(kSuccessOpen);
  append_field(out, "jobId", job.job_id);
  out += ',';
  append_field(out, "status", to_string(job.status));
  out += ',';
  append_time(out, "createdAt", job.created_at_ms);
  if (!warnings.empty()) {
    out += ',';
    append_strings(out, "warnings", warnings);
  }
  out += kSuccessClose;
  return out;
}

std::string job_describe_response(const JobInfo& job) {
  std::string out(kSuccessOpen);
  append_job_summary(out, job);
  json::append_nonempty_field(out, "reasonCode", job.reason_code);
  json::append_nonempty_field(out, "comment", job.comment);
  out += ',';
  append_strings(out, "targets", job.spec.targets);
  out += ',';
  append_object(out, "document", job.document);
  if (job.spec.ota) {
    out += ',';
    append_ota(out, *job.spec.ota);
  }
  append_configs(out, job.spec);
  out += R"(,"jobProcessDetails":{)";
  for (std::size_t i = 0; i < kExecutionStatusCount; ++i) {
    if (i > 0) out += ',';
    append_field(out, kCountKeys[i], job.executions_by_status[i]);
  }
  out += ',';
  append_field(out, "numberOfWaitingThings", job.waiting_things);
  out += '}';
  out += kSuccessClose;
  return out;
}

std::string job_list_response(const std::vector<JobInfo>& page,
                              const std::optional<std::string>& next_token) {
  std::string out(kSuccessOpen);
  append_objects(out, "jobs", page, [&out](const JobInfo& job) { append_job_summary(out, job); });
  append_optional_field(out, "nextToken", next_token);
  out += kSuccessClose;
  return out;
}

std::string job_executions_response(const std::vector<JobExecution>& page,
                                    const std::optional<std::string>& next_token) {
  std::string out(kSuccessOpen);
  append_objects(out, "executions", page, [&out](const JobExecution& e) {
    append_field(out, "thingName", e.thing);
    out += ',';
    append_field(out, "status", to_string(e.status));
    out += ',';
    append_key(out, "statusDetails");
    json::append_string_object(out, e.status_details);
    out += ',';
    append_field(out, "versionNumber", e.version_number);
    out += ',';
    append_field(out, "executionNumber", e.execution_number);
    out += ',';
    append_time(out, "queuedAt", e.queued_at_ms);
    if (e.started_at_ms != 0) {
      out += ',';
      append_time(out, "startedAt", e.started_at_ms);
    }
    out += ',';
    append_time(out, "lastUpdatedAt", e.last_updated_at_ms);
  });
  append_optional_field(out, "nextToken", next_token);
  out += kSuccessClose;
  return out;
}

}  // namespace chunkd::protocol
