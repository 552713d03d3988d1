// Control-plane bodies and envelopes (SPEC.md §2): CreateStream/UpdateStream validation with
// field-level details, the list query, the success/error envelopes and the code → HTTP table.
// Pure: no I/O; the engine fills StreamInfo and sends what these functions return.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"

namespace chunkd::protocol {

// The error codes of the envelope. Each code has exactly one HTTP status and each status chunkd
// answers with an error has exactly one code: kApiErrors is that table (checked at compile time;
// docs/control-api.md lists the same rows, checked by tests/protocol/control_test.cpp).
enum class ApiErrorCode : std::uint8_t {
  ValidationError,          // 400 (also a request the HTTP parser refuses as malformed)
  Unauthorized,             // 401
  NotFound,                 // 404
  MethodNotAllowed,         // 405 (a known route with the wrong method)
  RequestTimeout,           // 408 (the request was not received in time)
  AlreadyExists,            // 409
  LengthRequired,           // 411 (a body without Content-Length)
  PayloadTooLarge,          // 413
  LimitExceeded,            // 422
  RateLimited,              // 429
  HeadersTooLarge,          // 431
  InternalError,            // 500
  SourceAccessDenied,       // 502 (an S3 bucket refused chunkd's credentials)
  ServiceUnavailable,       // 503
  HttpVersionNotSupported,  // 505
  StorageFull,              // 507 (no space left for a stream's files in storage.data_dir)
};

struct ApiErrorInfo {
  ApiErrorCode code;
  std::string_view name;  // the envelope's "code"
  int http_status;
};

// Indexed by the enum's value.
inline constexpr ApiErrorInfo kApiErrors[] = {
    {ApiErrorCode::ValidationError, "VALIDATION_ERROR", 400},
    {ApiErrorCode::Unauthorized, "UNAUTHORIZED", 401},
    {ApiErrorCode::NotFound, "NOT_FOUND", 404},
    {ApiErrorCode::MethodNotAllowed, "METHOD_NOT_ALLOWED", 405},
    {ApiErrorCode::RequestTimeout, "REQUEST_TIMEOUT", 408},
    {ApiErrorCode::AlreadyExists, "ALREADY_EXISTS", 409},
    {ApiErrorCode::LengthRequired, "LENGTH_REQUIRED", 411},
    {ApiErrorCode::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413},
    {ApiErrorCode::LimitExceeded, "LIMIT_EXCEEDED", 422},
    {ApiErrorCode::RateLimited, "RATE_LIMITED", 429},
    {ApiErrorCode::HeadersTooLarge, "HEADERS_TOO_LARGE", 431},
    {ApiErrorCode::InternalError, "INTERNAL_ERROR", 500},
    {ApiErrorCode::SourceAccessDenied, "SOURCE_ACCESS_DENIED", 502},
    {ApiErrorCode::ServiceUnavailable, "SERVICE_UNAVAILABLE", 503},
    {ApiErrorCode::HttpVersionNotSupported, "HTTP_VERSION_NOT_SUPPORTED", 505},
    {ApiErrorCode::StorageFull, "STORAGE_FULL", 507},
};

namespace detail {
constexpr bool api_error_table_is_one_to_one() {
  constexpr std::size_t n = sizeof(kApiErrors) / sizeof(kApiErrors[0]);
  if (static_cast<std::size_t>(ApiErrorCode::StorageFull) + 1 != n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<std::size_t>(kApiErrors[i].code) != i) return false;
    if (kApiErrors[i].http_status < 400 || kApiErrors[i].http_status > 599) return false;
    for (std::size_t j = i + 1; j < n; ++j) {
      if (kApiErrors[i].http_status == kApiErrors[j].http_status) return false;
      if (kApiErrors[i].name == kApiErrors[j].name) return false;
    }
  }
  return true;
}
}  // namespace detail
static_assert(detail::api_error_table_is_one_to_one(),
              "kApiErrors: one row per ApiErrorCode, in enum order, one code per HTTP status");

std::string_view to_string(ApiErrorCode code);  // "VALIDATION_ERROR", ...
int http_status(ApiErrorCode code);
// The one code of an error status (4xx/5xx) chunkd sends; nullopt for any other status.
std::optional<ApiErrorCode> api_error_for_status(int status);

struct FieldProblem {
  std::string field;    // e.g. "files[1].fileId"
  std::string problem;  // human text
};

struct ApiError {
  ApiErrorCode code = ApiErrorCode::InternalError;
  std::string message;
  std::vector<FieldProblem> details;
};

inline constexpr std::size_t kMaxFilesPerStream = 50;
inline constexpr std::size_t kMaxDescriptionChars = 2028;
inline constexpr std::size_t kMinRoleArnChars = 20;
inline constexpr std::size_t kMaxRoleArnChars = 2048;
inline constexpr std::size_t kMaxTagKeyChars = 128;
inline constexpr std::size_t kMaxTagValueChars = 256;
inline constexpr std::size_t kMaxTags = 50;
inline constexpr std::uint32_t kMaxListResults = 250;
inline constexpr std::uint32_t kDefaultListResults = 100;
inline constexpr std::size_t kDeviceStreamIdBytes = 44;  // device libraries' buffer limit
// Added: bodies over this are PAYLOAD_TOO_LARGE (the HTTP layer caps them first); at most this
// many FieldProblems are listed in one error (the message still counts them all).
inline constexpr std::size_t kMaxControlBodyBytes = 1024 * 1024;
inline constexpr std::size_t kMaxErrorDetails = 100;

struct S3Location {
  std::string bucket;
  std::string key;
  std::optional<std::string> version;  // pins the content digest
};
struct StreamFileSpec {
  std::uint32_t file_id = 0;
  S3Location location;
};
struct Tag {
  std::string key;
  std::string value;
};

// Added: the things that may read a stream (protocol/thing_pattern.hpp); nullopt = every thing,
// else 1..kMaxAllowedThings distinct valid patterns.
using AllowedThings = std::optional<std::vector<std::string>>;

struct CreateStreamBody {
  std::string description;
  std::vector<StreamFileSpec> files;  // 1..50, unique ids
  std::string role_arn;
  std::vector<Tag> tags;
  AllowedThings allowed_things;
};
// Every field optional; at least one present. Present fields replace the stream's.
struct UpdateStreamBody {
  std::optional<std::string> description;
  std::optional<std::vector<StreamFileSpec>> files;
  std::optional<std::string> role_arn;
  // `allowedThings` was given: allowed_things replaces the stream's list (nullopt, from a JSON
  // null, removes it: every thing may read the stream again).
  bool sets_allowed_things = false;
  AllowedThings allowed_things;
};

// Validates the whole body and reports every problem found (not just the first) as details.
Expected<CreateStreamBody, ApiError> parse_create_stream(std::string_view json);
Expected<UpdateStreamBody, ApiError> parse_update_stream(std::string_view json);
// A streamId path segment (already percent-decoded by the caller if needed).
std::optional<ApiError> validate_stream_id(std::string_view stream_id);
// Added: the warning the create/update response carries for a valid id longer than
// kDeviceStreamIdBytes (accepted, but some device libraries cannot use it); nullopt otherwise.
std::optional<std::string> stream_id_warning(std::string_view stream_id);

struct ListQuery {
  std::uint32_t max_results = kDefaultListResults;
  std::optional<std::string> after_id;  // decoded from nextToken
  bool ascending = true;
};
// `query` is the raw query string without '?', e.g. "maxResults=10&nextToken=...".
Expected<ListQuery, ApiError> parse_list_query(std::string_view query);
std::string encode_next_token(std::string_view last_stream_id);  // opaque to clients

struct FileInfo {
  std::uint32_t file_id = 0;
  std::string bucket;
  std::string key;
  std::uint64_t size_bytes = 0;
  std::string digest;  // content digest, 32 lowercase hex digits
  // Fetched from an S3 bucket (etag non-empty): the object's ETag and versionId ("" when the bucket
  // is not versioned). Written as s3Location.version and a "source" object.
  std::string source_etag;
  std::string source_version;
};
// Whether devices can be served the stream's content (describe's "health").
struct StreamHealthInfo {
  std::string status = "ok";             // "ok", "corrupt" or "missing"
  std::optional<std::uint32_t> file_id;  // not ok: the file that failed verification
  std::uint32_t extent = 0;              // ... the extent, and why ("manifest_mismatch", ...)
  std::string cause;
};
// Added: a create or update ingesting its files, as describe shows it meanwhile.
struct IngestProgressInfo {
  std::string status;             // "CREATING" or "UPDATING"
  std::uint32_t file = 0;         // the index in `files` being ingested
  std::uint32_t files = 0;        // how many the request has
  std::uint64_t bytes_done = 0;   // of files[file]
  std::uint64_t bytes_total = 0;  // its size; 0 until known (an S3 object's first answer)
};
struct StreamInfo {
  std::string stream_id;
  std::string stream_arn;
  std::uint64_t version = 0;
  std::string description;
  std::string role_arn;
  std::vector<Tag> tags;
  std::vector<FileInfo> files;
  std::string created_at;  // RFC 3339 UTC
  std::string updated_at;
  StreamHealthInfo health;
  AllowedThings allowed_things;
  std::optional<IngestProgressInfo> progress;  // an update in progress
};

// {"success":true,"data":{...}} for create/update: id, streamId, streamArn, streamVersion,
// description, created_at, "allowedThings":[...] when the stream has a list, updated_at, "files"
// (as describe writes them) when a file was fetched from an S3 bucket (and "warnings":[...] when
// non-empty). describe and list carry allowedThings the same way.
std::string create_response(const StreamInfo& s, const std::vector<std::string>& warnings);
// describe: everything in StreamInfo (a file fetched from an S3 bucket with
// "s3Location":{"bucket","key","version"?} and "source":{"etag","versionId"?}); "health":"ok", or
// the status and a "healthDetail" object {fileId, extent, cause}.
std::string describe_response(const StreamInfo& s);
// describe of a stream whose create is still ingesting (not committed yet):
// {"id","streamId","streamArn","status":"CREATING","progress":{...}}. describe_response of a
// stream with `progress` appends the same "status" and "progress" after "health".
// "progress" is {"file","files","bytesDone","bytesTotal"}.
std::string creating_response(std::string_view stream_id, std::string_view stream_arn,
                              const IngestProgressInfo& progress);
// list: {"streams":[{id,streamId,streamArn,streamVersion,description,created_at,
// allowedThings?}...],"nextToken"?}
// `next_token` is written as given: pass encode_next_token(last id of the page), or nullopt on
// the last page.
std::string list_response(const std::vector<StreamInfo>& page,
                          const std::optional<std::string>& next_token);
// delete: {"success":true,"data":{"id":...}}
std::string delete_response(std::string_view stream_id);
// {"success":false,"error":{"code":...,"message":...,"details":[...]?}}
std::string error_response(const ApiError& error);

// Appends `s` to `out` as a JSON string literal with quotes, escaped per RFC 8259.
void append_json_string(std::string& out, std::string_view s);

}  // namespace chunkd::protocol
