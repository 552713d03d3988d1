// Helpers shared by control_service.cpp (stream operations) and control_service_routes.cpp (the
// route table): the reply envelopes of protocol/control.hpp as io::HttpResponse values.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/http_server.hpp"
#include "io/registry_store.hpp"
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
