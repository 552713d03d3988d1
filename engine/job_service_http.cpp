// The jobs routes of the control API (docs/jobs.md "HTTP"): POST/GET/DELETE /jobs/{jobId},
// GET /jobs, GET /jobs/{jobId}/things, POST /jobs/{jobId}/cancel. HEAD wherever GET.
// Every change is answered once the JobWriter made it durable.
#include <algorithm>
#include <memory>
#include <utility>

#include "engine/control_service_internal.hpp"
#include "engine/job_service.hpp"
#include "io/log.hpp"
#include "protocol/job_control.hpp"

namespace chunkd::engine {
namespace {

using control_detail::api_error;
using control_detail::json_response;
using protocol::ApiErrorCode;
using Responder = io::HttpServer::Responder;

protocol::JobInfo info_of(const Job& job) {
  protocol::JobInfo info;
  info.job_id = job.plan.id;
  info.status = job.status;
  info.spec = job.plan.spec;
  info.document = job.plan.document;
  info.created_at_ms = job.plan.created_at_ms;
  info.last_updated_at_ms = job.last_updated_at_ms;
  info.completed_at_ms = job.completed_at_ms;
  info.reason_code = job.reason_code;
  info.comment = job.comment;
  info.executions_by_status = job.counts;
  info.waiting_things = job.waiting.size();
  return info;
}

io::HttpResponse method_not_allowed(const io::HttpRequest& request, const char* allow) {
  io::HttpResponse r = api_error(ApiErrorCode::MethodNotAllowed,
                                 "method " + request.method + " is not allowed on " + request.path);
  r.headers.emplace_back("Allow", allow);
  return r;
}

bool query_flag(std::string_view query, std::string_view name) {
  std::string wanted = std::string(name) + "=true";
  std::size_t at = 0;
  while (at <= query.size()) {
    std::size_t end = query.find('&', at);
    if (end == std::string_view::npos) end = query.size();
    if (query.substr(at, end - at) == wanted) return true;
    at = end + 1;
  }
  return false;
}

}  // namespace

namespace {

// `respond`, answering 503 if every copy is dropped unanswered: the service closed (chunkd stops,
// or a cluster instance lost the jobs lease) before the change the answer waited for was durable.
io::HttpServer::Responder answered_or_503(io::HttpServer::Responder respond) {
  struct Pending {
    io::HttpServer::Responder respond;
    ~Pending() {
      if (!respond) return;
      respond(api_error(ApiErrorCode::ServiceUnavailable,
                        "the jobs service stopped before this change was made durable; it may or "
                        "may not have been made: read the job before retrying"));
    }
  };
  auto pending = std::make_shared<Pending>();
  pending->respond = std::move(respond);
  return [pending](io::HttpResponse response) {
    auto answer = std::exchange(pending->respond, nullptr);
    answer(std::move(response));
  };
}

}  // namespace

void JobService::serve(const io::HttpRequest& request, Responder respond) {
  respond = answered_or_503(std::move(respond));
  std::string_view path = request.path;
  std::string_view method = request.method == "HEAD" ? "GET" : std::string_view(request.method);
  if (path == "/jobs") {
    if (method != "GET") return respond(method_not_allowed(request, "GET, HEAD"));
    return list_jobs(request, respond);
  }
  std::string_view rest = path.substr(6);  // after "/jobs/"
  std::string_view id = rest.substr(0, rest.find('/'));
  std::string_view sub = id.size() < rest.size() ? rest.substr(id.size()) : std::string_view();
  if (auto problem = protocol::validate_job_id(id)) return respond(api_error(*problem));
  if (closing_) return respond(api_error(ApiErrorCode::ServiceUnavailable, "chunkd is stopping"));
  if (sub.empty()) {
    if (method == "POST") return create_job(std::string(id), request, respond);
    if (method == "GET") return describe_job(id, respond);
    if (method == "DELETE") return delete_job(std::string(id), request, respond);
    return respond(method_not_allowed(request, "GET, HEAD, POST, DELETE"));
  }
  if (sub == "/things") {
    if (method != "GET") return respond(method_not_allowed(request, "GET, HEAD"));
    return list_executions(id, request, respond);
  }
  if (sub == "/cancel") {
    if (method != "POST") return respond(method_not_allowed(request, "POST"));
    return cancel_job(std::string(id), request, respond);
  }
  respond(api_error(ApiErrorCode::NotFound, "no such resource: " + request.path));
}

// The document devices get: the spec's, or the afr_ota one built from the stream's file.
Expected<std::string, protocol::ApiError> JobService::document_for(
    const protocol::JobSpec& spec) const {
  if (!spec.ota) return *spec.document;
  const protocol::OtaSpec& ota = *spec.ota;
  StreamSnapshot stream = catalog_.find(ota.stream_id);
  if (!stream) {
    return unexpected(protocol::ApiError{ApiErrorCode::ValidationError,
                                         "ota.streamId: no stream " + ota.stream_id,
                                         {{"ota.streamId", "no such stream"}}});
  }
  auto file = std::find_if(stream->files.begin(), stream->files.end(),
                           [&](const io::StoredFile& f) { return f.file_id == ota.file_id; });
  if (file == stream->files.end()) {
    return unexpected(protocol::ApiError{
        ApiErrorCode::ValidationError,
        "ota.fileId: stream " + ota.stream_id + " has no file " + std::to_string(ota.file_id),
        {{"ota.fileId", "no such file in the stream"}}});
  }
  return protocol::build_ota_document(ota, file->size_bytes);
}

void JobService::create_job(std::string id, const io::HttpRequest& request, Responder& respond) {
  if (book_.job(id) != nullptr || creating_.count(id) != 0) {
    return respond(api_error(ApiErrorCode::AlreadyExists, "job " + id + " already exists"));
  }
  auto spec = protocol::parse_create_job(request.body);
  if (!spec) return respond(api_error(spec.error()));
  if (book_.jobs() >= options_.max_jobs) {
    return respond(api_error(ApiErrorCode::LimitExceeded,
                             "at most " + std::to_string(options_.max_jobs) +
                                 " jobs are kept (jobs.max_jobs): delete finished ones first"));
  }
  std::uint64_t named = static_cast<std::uint64_t>(
      std::count_if(spec->targets.begin(), spec->targets.end(),
                    [](const std::string& t) { return !protocol::is_target_pattern(t); }));
  if (book_.executions() + named > options_.max_executions) {
    return respond(api_error(ApiErrorCode::LimitExceeded,
                             "at most " + std::to_string(options_.max_executions) +
                                 " executions are kept (jobs.max_executions)"));
  }
  auto document = document_for(*spec);
  if (!document) return respond(api_error(document.error()));
  if (writer_.full()) {
    return respond(api_error(ApiErrorCode::ServiceUnavailable,
                             "the registry is behind with jobs writes; retry"));
  }
  JobPlan plan;
  plan.id = id;
  plan.spec = std::move(*spec);
  plan.document = std::move(*document);
  plan.created_at_ms = unix_ms();
  std::vector<std::string> warnings = protocol::job_warnings(plan.spec);
  JobChanges changes = book_.create(std::move(plan), clock_.now_ms(), unix_ms());
  const Job& job = *book_.job(id);
  LOG_INFO("jobs", "job %s created for %zu targets (%llu released)", id.c_str(),
           job.plan.targets().size(), static_cast<unsigned long long>(changes.released));
  std::string body = protocol::job_create_response(info_of(job), warnings);
  Outgoing out;
  add_notifications(changes, out);
  creating_.insert(id);
  commit(std::move(changes), std::move(out),
         [this, id, body = std::move(body), respond = std::move(respond)]() mutable {
           creating_.erase(id);
           respond(json_response(201, std::move(body)));
         });
}

void JobService::describe_job(std::string_view id, Responder& respond) {
  const Job* job = book_.job(id);
  if (job == nullptr)
    return respond(api_error(ApiErrorCode::NotFound, "no job " + std::string(id)));
  std::string body = protocol::job_describe_response(info_of(*job));
  writer_.record({}, [body = std::move(body), respond = std::move(respond)]() mutable {
    respond(json_response(200, std::move(body)));
  });
}

void JobService::list_jobs(const io::HttpRequest& request, Responder& respond) {
  auto query = protocol::parse_job_list_query(request.query);
  if (!query) return respond(api_error(query.error()));
  std::vector<const Job*> all = book_.page(std::nullopt, book_.jobs());
  if (!query->ascending) std::reverse(all.begin(), all.end());
  std::vector<protocol::JobInfo> page;
  bool more = false;
  for (const Job* job : all) {
    const std::string& id = job->plan.id;
    if (query->after_id && (query->ascending ? id <= *query->after_id : id >= *query->after_id)) {
      continue;
    }
    if (page.size() == query->max_results) {
      more = true;
      break;
    }
    page.push_back(info_of(*job));
  }
  std::optional<std::string> next;
  if (more) next = protocol::encode_next_token(page.back().job_id);
  std::string body = protocol::job_list_response(page, next);
  writer_.record({}, [body = std::move(body), respond = std::move(respond)]() mutable {
    respond(json_response(200, std::move(body)));
  });
}

void JobService::list_executions(std::string_view id, const io::HttpRequest& request,
                                 Responder& respond) {
  const Job* job = book_.job(id);
  if (job == nullptr)
    return respond(api_error(ApiErrorCode::NotFound, "no job " + std::string(id)));
  auto query = protocol::parse_execution_list_query(request.query);
  if (!query) return respond(api_error(query.error()));
  const protocol::ListQuery& q = query->page;
  std::vector<protocol::JobExecution> page;
  bool more = false;
  auto take = [&](const protocol::JobExecution& e) {
    if (query->status && e.status != *query->status) return true;
    if (q.after_id && (q.ascending ? e.thing <= *q.after_id : e.thing >= *q.after_id)) return true;
    if (page.size() == q.max_results) {
      more = true;
      return false;
    }
    page.push_back(e);
    return true;
  };
  if (q.ascending) {
    for (auto it = job->executions.begin(); it != job->executions.end() && take(it->second); ++it) {
    }
  } else {
    for (auto it = job->executions.rbegin(); it != job->executions.rend() && take(it->second);
         ++it) {
    }
  }
  std::optional<std::string> next;
  if (more) next = protocol::encode_next_token(page.back().thing);
  std::string body = protocol::job_executions_response(page, next);
  writer_.record({}, [body = std::move(body), respond = std::move(respond)]() mutable {
    respond(json_response(200, std::move(body)));
  });
}

void JobService::cancel_job(std::string id, const io::HttpRequest& request, Responder& respond) {
  const Job* job = book_.job(id);
  if (job == nullptr) return respond(api_error(ApiErrorCode::NotFound, "no job " + id));
  auto asked = protocol::parse_cancel_job(request.body);  // docs/jobs.md "Cancel"
  if (!asked) return respond(api_error(asked.error()));
  bool force = asked->force || query_flag(request.query, "force");
  std::string reason = asked->reason_code.empty() ? "CANCELED" : std::move(asked->reason_code);
  std::string comment =
      asked->comment.empty() ? "canceled by the operator" : std::move(asked->comment);
  auto changes = book_.cancel(id, std::move(reason), std::move(comment), force, unix_ms());
  if (!changes) {
    return respond(api_error(ApiErrorCode::AlreadyExists,
                             "job " + id + " is " + std::string(protocol::to_string(job->status)) +
                                 ": only a job in progress can be canceled"));
  }
  LOG_INFO("jobs", "job %s canceled by the operator%s", id.c_str(), force ? " (force)" : "");
  std::string body = protocol::job_describe_response(info_of(*book_.job(id)));
  Outgoing out;
  add_notifications(*changes, out);
  commit(std::move(*changes), std::move(out),
         [body = std::move(body), respond = std::move(respond)]() mutable {
           respond(json_response(200, std::move(body)));
         });
}

void JobService::delete_job(std::string id, const io::HttpRequest& request, Responder& respond) {
  const Job* job = book_.job(id);
  if (job == nullptr) return respond(api_error(ApiErrorCode::NotFound, "no job " + id));
  if (job->status == protocol::JobStatus::InProgress && !query_flag(request.query, "force")) {
    return respond(
        api_error(ApiErrorCode::AlreadyExists,
                  "job " + id + " is in progress: cancel it first, or delete with ?force=true"));
  }
  JobChanges changes = book_.remove(id);
  LOG_INFO("jobs", "job %s deleted", id.c_str());
  Outgoing out;
  add_notifications(changes, out);
  commit(std::move(changes), std::move(out), [id, respond = std::move(respond)]() mutable {
    respond(json_response(200, "{\"success\":true,\"data\":{\"jobId\":\"" + id + "\"}}"));
  });
}

}  // namespace chunkd::engine
