// Private to the control service: what control_service.cpp (stream operations),
// control_service_ingest.cpp (opening, fetching and ingesting a create's or update's files) and
// control_service_routes.cpp (the route table) share: the reply envelopes of protocol/control.hpp
// as io::HttpResponse values, and ControlService::Op, one create, update or delete in progress.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/control_service.hpp"
#include "io/http_server.hpp"
#include "io/registry_store.hpp"
#include "io/safe_open.hpp"
#include "protocol/control.hpp"

namespace chunkd::engine::control_detail {

inline io::HttpResponse json_response(int status, std::string body) {
  io::HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

inline io::HttpResponse api_error(protocol::ApiErrorCode code, std::string message,
                                  std::vector<protocol::FieldProblem> details = {}) {
  protocol::ApiError error{code, std::move(message), std::move(details)};
  return json_response(protocol::http_status(code), protocol::error_response(error));
}

inline io::HttpResponse api_error(const protocol::ApiError& error) {
  return json_response(protocol::http_status(error.code), protocol::error_response(error));
}

// "files[i].s3Location.<leaf>": where a problem with a file of the request body is reported.
inline std::string file_field(std::size_t i, std::string_view leaf) {
  return "files[" + std::to_string(i) + "].s3Location." + std::string(leaf);
}

inline std::string stream_arn(std::string_view id) {
  return "arn:chunkd:stream/" + std::string(id);
}

inline protocol::StreamInfo to_info(const io::StoredStream& s) {
  protocol::StreamInfo info;
  info.stream_id = s.id;
  info.stream_arn = stream_arn(s.id);
  info.version = s.version;
  info.description = s.description;
  info.role_arn = s.role_arn;
  for (const auto& [key, value] : s.tags) info.tags.push_back({key, value});
  for (const auto& f : s.files) {
    info.files.push_back(
        {f.file_id, f.bucket, f.key, f.size_bytes, f.digest, f.source_etag, f.source_version});
  }
  info.created_at = s.created_at;
  info.updated_at = s.updated_at;
  info.allowed_things = s.allowed_things;
  return info;
}

}  // namespace chunkd::engine::control_detail

namespace chunkd::engine {

struct ControlService::Op {
  enum class Kind { Create = 0, Update = 1, Delete = 2 };
  ControlService* service = nullptr;
  Kind kind = Kind::Create;
  std::string id;
  std::string route;
  io::HttpServer::Responder respond;
  std::uint64_t started_ms = 0;
  bool holds_ingest_slot = false;

  // Create/update: the fields to set (update: only those given).
  std::optional<std::string> description;
  std::optional<std::string> role_arn;
  std::vector<protocol::Tag> tags;
  bool sets_allowed_things = false;
  protocol::AllowedThings allowed_things;
  bool replace_files = false;
  std::vector<protocol::StreamFileSpec> files;
  StreamSnapshot previous;  // update

  // Opening (thread pool), then ingesting one file at a time.
  uv_work_t work{};
  std::vector<int> dir_fds;
  std::vector<io::OpenedFile> opened;
  std::vector<std::error_code> open_errors;
  std::vector<IngestResult> ingested;
  std::vector<std::string> pinned;
  std::vector<char> from_s3;             // files[i] was fetched from an S3 bucket
  std::vector<io::S3Object> s3_objects;  // ... the object it got (ETag, versionId)
  std::uint64_t bytes = 0;
  std::shared_ptr<IngestProgress> progress;  // the current file's, while it is ingested

  std::shared_ptr<io::StoredStream> stream;  // what commit() writes
};

}  // namespace chunkd::engine
