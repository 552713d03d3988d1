// Control-plane responses (SPEC.md §2): the success/error envelopes and the error-code → HTTP
// status table (the JSON writers are protocol/json_write.hpp). Pure: no I/O, no clock.
#include <algorithm>
#include <cstddef>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"
#include "protocol/json_write.hpp"

namespace chunkd::protocol {
namespace {

using json::append_field;
using json::append_nonempty_field;
using json::append_objects;
using json::append_optional_field;
using json::kSuccessClose;
using json::kSuccessOpen;

// id, streamId, streamArn, streamVersion, description, created_at and, when the stream has a
// list, allowedThings: the summary every stream-returning response starts with (no braces).
void append_summary(std::string& out, const StreamInfo& s) {
  append_field(out, "id", s.stream_id);
  out += ',';
  append_field(out, "streamId", s.stream_id);
  out += ',';
  append_field(out, "streamArn", s.stream_arn);
  out += ',';
  append_field(out, "streamVersion", s.version);
  out += ',';
  append_field(out, "description", s.description);
  out += ',';
  append_field(out, "created_at", s.created_at);
  if (s.allowed_things) {
    out += ',';
    json::append_strings(out, "allowedThings", *s.allowed_things);
  }
}

// "files":[{fileId, s3Location{bucket, key, version?}, sizeBytes, digest, source?}...]
void append_files(std::string& out, const std::vector<FileInfo>& files) {
  append_objects(out, "files", files, [&out](const FileInfo& f) {
    append_field(out, "fileId", f.file_id);
    out += ",\"s3Location\":{";
    append_field(out, "bucket", f.bucket);
    out += ',';
    append_field(out, "key", f.key);
    append_nonempty_field(out, "version", f.source_version);
    out += "},";
    append_field(out, "sizeBytes", f.size_bytes);
    out += ',';
    append_field(out, "digest", f.digest);
    if (!f.source_etag.empty()) {
      out += ",\"source\":{";
      append_field(out, "etag", f.source_etag);
      append_nonempty_field(out, "versionId", f.source_version);
      out += '}';
    }
  });
}

// ,"status":...,"progress":{"file","files","bytesDone","bytesTotal"}
void append_progress(std::string& out, const IngestProgressInfo& p) {
  out += ',';
  append_field(out, "status", p.status);
  out += ",\"progress\":{";
  append_field(out, "file", p.file);
  out += ',';
  append_field(out, "files", p.files);
  out += ',';
  append_field(out, "bytesDone", p.bytes_done);
  out += ',';
  append_field(out, "bytesTotal", p.bytes_total);
  out += '}';
}

}  // namespace

std::string_view to_string(ApiErrorCode code) {
  const auto i = static_cast<std::size_t>(code);
  // A value outside the enum is a bug upstream: answer as an internal error.
  return i < std::size(kApiErrors) ? kApiErrors[i].name : "INTERNAL_ERROR";
}

int http_status(ApiErrorCode code) {
  const auto i = static_cast<std::size_t>(code);
  return i < std::size(kApiErrors) ? kApiErrors[i].http_status : 500;
}

std::optional<ApiErrorCode> api_error_for_status(int status) {
  for (const ApiErrorInfo& info : kApiErrors) {
    if (info.http_status == status) return info.code;
  }
  return std::nullopt;
}

std::string create_response(const StreamInfo& s, const std::vector<std::string>& warnings) {
  std::string out(kSuccessOpen);
  append_summary(out, s);
  out += ',';
  append_field(out, "updated_at", s.updated_at);
  const bool fetched = std::any_of(s.files.begin(), s.files.end(),
                                   [](const FileInfo& f) { return !f.source_etag.empty(); });
  if (fetched) {
    out += ',';
    append_files(out, s.files);
  }
  if (!warnings.empty()) {
    out += ',';
    json::append_strings(out, "warnings", warnings);
  }
  out += kSuccessClose;
  return out;
}

std::string describe_response(const StreamInfo& s) {
  std::string out(kSuccessOpen);
  append_summary(out, s);
  out += ',';
  append_field(out, "updated_at", s.updated_at);
  out += ',';
  append_field(out, "roleArn", s.role_arn);
  out += ',';
  append_objects(out, "tags", s.tags, [&out](const Tag& tag) {
    append_field(out, "Key", tag.key);
    out += ',';
    append_field(out, "Value", tag.value);
  });
  out += ',';
  append_files(out, s.files);
  out += ',';
  append_field(out, "health", s.health.status);
  if (s.health.file_id) {
    out += ",\"healthDetail\":{";
    append_field(out, "fileId", *s.health.file_id);
    out += ',';
    append_field(out, "extent", s.health.extent);
    out += ',';
    append_field(out, "cause", s.health.cause);
    out += '}';
  }
  if (s.progress) append_progress(out, *s.progress);
  out += kSuccessClose;
  return out;
}

std::string creating_response(std::string_view stream_id, std::string_view stream_arn,
                              const IngestProgressInfo& progress) {
  std::string out(kSuccessOpen);
  append_field(out, "id", stream_id);
  out += ',';
  append_field(out, "streamId", stream_id);
  out += ',';
  append_field(out, "streamArn", stream_arn);
  append_progress(out, progress);
  out += kSuccessClose;
  return out;
}

std::string list_response(const std::vector<StreamInfo>& page,
                          const std::optional<std::string>& next_token) {
  std::string out(kSuccessOpen);
  append_objects(out, "streams", page, [&out](const StreamInfo& s) { append_summary(out, s); });
  append_optional_field(out, "nextToken", next_token);
  out += kSuccessClose;
  return out;
}

std::string delete_response(std::string_view stream_id) {
  std::string out(kSuccessOpen);
  append_field(out, "id", stream_id);
  out += kSuccessClose;
  return out;
}

std::string error_response(const ApiError& error) {
  std::string out(R"({"success":false,"error":{)");
  append_field(out, "code", to_string(error.code));
  out += ',';
  append_field(out, "message", error.message);
  if (!error.details.empty()) {
    out += ',';
    append_objects(out, "details", error.details, [&out](const FieldProblem& d) {
      append_field(out, "field", d.field);
      out += ',';
      append_field(out, "problem", d.problem);
    });
  }
  out += "}}";
  return out;
}

}  // namespace chunkd::protocol
