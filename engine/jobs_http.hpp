// The seam between the control API (engine/control_service.hpp) and the jobs service
// (engine/job_service.hpp): ControlService routes /jobs and /jobs/... here after its own checks
// (auth, shutting down), and asks before deleting a stream whether an unfinished job delivers it.
//
// Thread: loop thread only.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "io/http_server.hpp"

namespace chunkd::engine {

class JobsHttp {
 public:
  virtual ~JobsHttp() = default;
  // Serves a request for /jobs or a path under /jobs/ (methods, ids and bodies are its own to
  // check). Answers exactly once, through `respond`.
  virtual void serve(const io::HttpRequest& request, io::HttpServer::Responder respond) = 0;
  // The id of a job that is not finished and delivers `stream_id`, if any.
  virtual std::optional<std::string> job_using_stream(std::string_view stream_id) const = 0;
};

}  // namespace chunkd::engine
