// Jobs reply encoding (shapes in protocol/jobs_reply.hpp).
#include "protocol/jobs_reply.hpp"

#include <algorithm>

#include "base/assert.hpp"
#include "protocol/json_write.hpp"

namespace chunkd::protocol {
namespace {

std::int64_t seconds(std::int64_t ms) { return std::max<std::int64_t>(ms, 0) / 1000; }

// `,"key":` (or without the comma for the first member).
void key(std::string& out, std::string_view name, bool first = false) {
  if (!first) out += ',';
  json::append_key(out, name);
}

void member(std::string& out, std::string_view name, std::string_view text, bool first = false) {
  if (!first) out += ',';
  json::append_field(out, name, text);
}

void member(std::string& out, std::string_view name, std::int64_t v, bool first = false) {
  if (!first) out += ',';
  json::append_field(out, name, v);
}

void append_document(std::string& out, std::string_view document) {
  CHUNKD_ASSERT(document.size() >= 2 && document.front() == '{' && document.back() == '}');
  out += document;
}

void append_timestamp_and_token(std::string& out, std::int64_t now_ms,
                                const std::optional<std::string>& client_token) {
  member(out, "timestamp", seconds(now_ms));
  if (client_token) member(out, "clientToken", *client_token);
}

// {status, statusDetails, versionNumber}
void append_state(std::string& out, const JobExecution& e) {
  member(out, "status", to_string(e.status), true);
  key(out, "statusDetails");
  json::append_string_object(out, e.status_details);
  member(out, "versionNumber", e.version_number);
}

void append_execution(std::string& out, const JobExecution& e, JobDocument document) {
  out += '{';
  member(out, "jobId", e.job_id, true);
  member(out, "thingName", e.thing);
  member(out, "status", to_string(e.status));
  key(out, "statusDetails");
  json::append_string_object(out, e.status_details);
  member(out, "queuedAt", seconds(e.queued_at_ms));
  if (e.started_at_ms > 0) member(out, "startedAt", seconds(e.started_at_ms));
  member(out, "lastUpdatedAt", seconds(e.last_updated_at_ms));
  member(out, "versionNumber", e.version_number);
  member(out, "executionNumber", e.execution_number);
  if (document) {
    key(out, "jobDocument");
    append_document(out, *document);
  }
  out += '}';
}

void append_summary(std::string& out, const JobExecution& e) {
  out += '{';
  member(out, "jobId", e.job_id, true);
  member(out, "queuedAt", seconds(e.queued_at_ms));
  if (e.started_at_ms > 0) member(out, "startedAt", seconds(e.started_at_ms));
  member(out, "lastUpdatedAt", seconds(e.last_updated_at_ms));
  member(out, "versionNumber", e.version_number);
  member(out, "executionNumber", e.execution_number);
  out += '}';
}

// "name":[summaries of the executions in `status`], or nothing when there is none.
void append_summaries(std::string& out, std::string_view name,
                      std::span<const JobExecution> executions, ExecutionStatus status, bool& first,
                      bool always) {
  bool open = false;
  for (const JobExecution& e : executions) {
    if (e.status != status) continue;
    if (!open) {
      key(out, name, first);
      out += '[';
      first = false;
      open = true;
    } else {
      out += ',';
    }
    append_summary(out, e);
  }
  if (!open && always) {
    key(out, name, first);
    out += '[';
    first = false;
    open = true;
  }
  if (open) out += ']';
}

}  // namespace

void encode_jobs_rejected(std::string& out, JobsErrorCode code, std::string_view message,
                          const std::optional<std::string>& client_token, std::int64_t now_ms,
                          const JobExecution* state) {
  out += '{';
  member(out, "code", to_string(code), true);
  member(out, "message", message);
  if (client_token) member(out, "clientToken", *client_token);
  member(out, "timestamp", seconds(now_ms));
  const bool with_state =
      code == JobsErrorCode::InvalidStateTransition || code == JobsErrorCode::VersionMismatch;
  if (state != nullptr && with_state) {
    key(out, "executionState");
    out += '{';
    append_state(out, *state);
    out += '}';
  }
  out += '}';
}

void encode_get_pending_accepted(std::string& out, const std::optional<std::string>& client_token,
                                 std::int64_t now_ms, std::span<const JobExecution> pending) {
  out += '{';
  bool first = true;
  append_summaries(out, "inProgressJobs", pending, ExecutionStatus::InProgress, first, true);
  append_summaries(out, "queuedJobs", pending, ExecutionStatus::Queued, first, true);
  append_timestamp_and_token(out, now_ms, client_token);
  out += '}';
}

void encode_execution_accepted(std::string& out, const std::optional<std::string>& client_token,
                               std::int64_t now_ms, const JobExecution* execution,
                               JobDocument document) {
  out += '{';
  member(out, "timestamp", seconds(now_ms), true);
  if (client_token) member(out, "clientToken", *client_token);
  if (execution != nullptr) {
    key(out, "execution");
    append_execution(out, *execution, document);
  }
  out += '}';
}

void encode_update_accepted(std::string& out, const std::optional<std::string>& client_token,
                            std::int64_t now_ms, const JobExecution* state, JobDocument document) {
  out += '{';
  if (state != nullptr) {
    key(out, "executionState", true);
    out += '{';
    append_state(out, *state);
    out += "},";
  }
  if (document) {
    key(out, "jobDocument", true);
    append_document(out, *document);
    out += ',';
  }
  member(out, "timestamp", seconds(now_ms), true);
  if (client_token) member(out, "clientToken", *client_token);
  out += '}';
}

void encode_notify_next(std::string& out, std::int64_t now_ms, const JobExecution* next,
                        JobDocument document) {
  encode_execution_accepted(out, std::nullopt, now_ms, next, document);
}

void encode_notify(std::string& out, std::int64_t now_ms, std::span<const JobExecution> pending) {
  out += '{';
  member(out, "timestamp", seconds(now_ms), true);
  key(out, "jobs");
  out += '{';
  const auto listed = pending.first(std::min(pending.size(), kMaxNotifyExecutions));
  bool first = true;
  append_summaries(out, "IN_PROGRESS", listed, ExecutionStatus::InProgress, first, false);
  append_summaries(out, "QUEUED", listed, ExecutionStatus::Queued, first, false);
  out += "}}";
}

}  // namespace chunkd::protocol
