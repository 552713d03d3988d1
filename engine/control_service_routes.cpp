// The control API's routes: one table maps (path, method) to a route name (the metrics label)
// and the member that serves it; handle() applies the same checks to every route, in one order:
// path (404), auth (401), method (405 with Allow), shutting down (503), stream id (400). HEAD is
// served by the GET route (io::HttpServer drops the body, RFC 9110 §9.3.2). The auth check also
// runs as io::HttpServer's Authorize hook, on the head, so that a request without the token is
// answered before its body is read.
#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/text.hpp"
#include "engine/control_service.hpp"
#include "engine/control_service_internal.hpp"
#include "protocol/control.hpp"

namespace chunkd::engine {
namespace {

using control_detail::api_error;
using control_detail::json_response;
using control_detail::to_info;
using protocol::ApiError;
using protocol::ApiErrorCode;
using Responder = io::HttpServer::Responder;

constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4";

// The paths the API serves, and what every route on one of them shares.
enum class Resource { Collection, Item, Health, MetricsPage, Jobs };

struct ResourceRule {
  const char* allow;           // the Allow header of a 405
  bool needs_token;            // the bearer token, when one is configured
  bool refused_while_closing;  // 503 once close() started
};

const ResourceRule& rule_of(Resource resource) {
  static const ResourceRule collection{"GET, HEAD", true, true};
  static const ResourceRule item{"GET, HEAD, POST, PUT, DELETE", true, true};
  static const ResourceRule open_page{"GET, HEAD", false, false};
  static const ResourceRule jobs{"", true, true};  // the jobs service answers its own 405s
  switch (resource) {
    case Resource::Collection:
      return collection;
    case Resource::Jobs:
      return jobs;
    case Resource::Item:
      return item;
    default:
      return open_page;
  }
}

// The resource of `path`; `id` is the stream id of an Item ("/streams/" is an Item with an empty
// id, which the id check refuses naming streamId).
std::optional<Resource> match_resource(std::string_view path, std::string_view& id) {
  if (path == "/streams") return Resource::Collection;
  if (path.rfind("/streams/", 0) == 0 && path.find('/', 9) == std::string_view::npos) {
    id = path.substr(9);
    return Resource::Item;
  }
  if (path == "/jobs" || path.rfind("/jobs/", 0) == 0) return Resource::Jobs;
  if (path == "/healthz") return Resource::Health;
  if (path == "/metrics") return Resource::MetricsPage;
  return std::nullopt;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Constant time in the content of both: every byte of the expected token is compared whatever
// `given` holds (only the lengths, which are not secret here, decide the loop's shape).
bool constant_time_equal(std::string_view given, std::string_view expected) {
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

}  // namespace

struct ControlService::Route {
  Resource resource;
  std::string_view method;
  std::string_view name;  // the route label of chunkd_http_requests_total
  void (*serve)(ControlService& self, std::string_view id, const io::HttpRequest& request,
                Responder& respond);
};

const ControlService::Route* ControlService::find_route(int resource, std::string_view method) {
  using S = ControlService;
  using R = const io::HttpRequest&;
  static const Route routes[] = {
      {Resource::Collection, "GET", "list",
       [](S& self, std::string_view, R request, Responder& respond) {
         self.list(request, respond);
       }},
      {Resource::Item, "GET", "describe",
       [](S& self, std::string_view id, R, Responder& respond) { self.describe(id, respond); }},
      {Resource::Item, "POST", "create",
       [](S& self, std::string_view id, R request, Responder& respond) {
         self.create(std::string(id), request, respond);
       }},
      {Resource::Item, "PUT", "update",
       [](S& self, std::string_view id, R request, Responder& respond) {
         self.update(std::string(id), request, respond);
       }},
      {Resource::Item, "DELETE", "delete",
       [](S& self, std::string_view id, R, Responder& respond) {
         self.remove(std::string(id), respond);
       }},
      {Resource::Health, "GET", "healthz",
       [](S& self, std::string_view, R, Responder& respond) { self.health(respond); }},
      {Resource::MetricsPage, "GET", "metrics",
       [](S& self, std::string_view, R, Responder& respond) { self.metrics_page(respond); }},
      {Resource::Jobs, "*", "jobs",
       [](S& self, std::string_view, R request, Responder& respond) {
         self.jobs_->serve(request, std::move(respond));
       }},
  };
  for (const Route& route : routes) {
    if (static_cast<int>(route.resource) == resource &&
        (route.method == method || route.method == "*")) {
      return &route;
    }
  }
  return nullptr;
}

void ControlService::handle(io::HttpRequest&& request, Responder respond) {
  // Route first (for the metrics label), then auth, then the method.
  std::string_view id;
  const std::optional<Resource> resource = match_resource(request.path, id);
  const std::string_view method =
      request.method == "HEAD" ? std::string_view("GET") : std::string_view(request.method);
  const Route* route = resource ? find_route(static_cast<int>(*resource), method) : nullptr;
  Responder counted = [this, name = std::string(route ? route->name : "other"),
                       respond = std::move(respond)](io::HttpResponse r) {
    count_request(name, r.status);
    respond(std::move(r));
  };

  if (!resource || (*resource == Resource::Jobs && jobs_ == nullptr)) {
    counted(api_error(ApiErrorCode::NotFound, "no such resource: " + request.path));
    return;
  }
  const ResourceRule& rule = rule_of(*resource);
  if (rule.needs_token && !authorized(request)) {
    counted(unauthorized(request));
    return;
  }
  if (route == nullptr) {
    io::HttpResponse r =
        api_error(ApiErrorCode::MethodNotAllowed,
                  "method " + request.method + " is not allowed on " + request.path);
    r.headers.emplace_back("Allow", rule.allow);
    counted(std::move(r));
    return;
  }
  if (rule.refused_while_closing && closing_) {
    counted(api_error(ApiErrorCode::ServiceUnavailable, "chunkd is shutting down"));
    return;
  }
  if (*resource == Resource::Item) {
    if (auto problem = protocol::validate_stream_id(id)) {
      counted(api_error(*problem));
      return;
    }
  }
  route->serve(*this, id, request, counted);
}

std::optional<io::HttpResponse> ControlService::authorize(const io::HttpRequest& head) {
  std::string_view id;
  const std::optional<Resource> resource = match_resource(head.path, id);
  if (!resource || !rule_of(*resource).needs_token || authorized(head)) return std::nullopt;
  const std::string_view method =
      head.method == "HEAD" ? std::string_view("GET") : std::string_view(head.method);
  const Route* route = find_route(static_cast<int>(*resource), method);
  io::HttpResponse r = unauthorized(head);
  count_request(route ? route->name : "other", r.status);
  return r;
}

io::HttpResponse ControlService::unauthorized(const io::HttpRequest& request) {
  io::HttpResponse r =
      api_error(ApiErrorCode::Unauthorized,
                request.header("authorization") == nullptr
                    ? "this route needs an \"Authorization: Bearer <token>\" header"
                    : "the bearer token is not valid");
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

void ControlService::count_request(std::string_view route, int status) {
  metrics_
      .counter("chunkd_http_requests_total", "HTTP requests answered, by route and status.",
               "route=\"" + std::string(route) + "\",status=\"" + std::to_string(status) + "\"")
      .inc();
}

bool ControlService::authorized(const io::HttpRequest& request) const {
  if (options_.token.empty()) return true;
  const std::string* header = request.header("authorization");
  if (header == nullptr) return false;
  std::string_view value = trim(*header);
  return value.size() > 7 && base::iequals(value.substr(0, 6), "bearer") &&
         (value[6] == ' ' || value[6] == '\t') &&
         constant_time_equal(trim(value.substr(7)), options_.token);
}

void ControlService::health(Responder& respond) {
  store_.probe_storage();  // refreshes storage_problem() for the next check, off the loop thread
  if (closing_) {
    respond(api_error(ApiErrorCode::ServiceUnavailable, "chunkd is shutting down"));
  } else if (!store_.storage_problem().empty()) {
    respond(api_error(ApiErrorCode::ServiceUnavailable, "degraded: " + store_.storage_problem()));
  } else if (!registry_.stats().connected) {
    respond(api_error(ApiErrorCode::ServiceUnavailable,
                      "degraded: the shared registry is not reachable (reconnecting); streams "
                      "are served, but cannot be created, changed or deleted"));
  } else if (!ready_) {
    respond(api_error(ApiErrorCode::ServiceUnavailable,
                      "not connected and subscribed to the MQTT broker"));
  } else {
    respond(json_response(200, R"({"status":"ok"})"));
  }
}

void ControlService::metrics_page(Responder& respond) {
  io::HttpResponse r;
  r.status = 200;
  r.content_type = std::string(kMetricsContentType);
  r.body = metrics_.render();
  respond(std::move(r));
}

void ControlService::describe(std::string_view id, Responder& respond) {
  StreamSnapshot s = catalog_.find(id);
  std::optional<protocol::IngestProgressInfo> progress = progress_of(id);
  if (!s && progress) {
    respond(json_response(
        200, protocol::creating_response(id, control_detail::stream_arn(id), *progress)));
    return;
  }
  if (!s) {
    respond(api_error(ApiErrorCode::NotFound, "no stream " + std::string(id)));
    return;
  }
  protocol::StreamInfo info = to_info(*s);
  info.progress = std::move(progress);
  if (auto failure = health_ ? health_->health(*s) : std::nullopt) {
    info.health = {failure->state, failure->file_id, failure->extent, failure->cause};
  }
  respond(json_response(200, protocol::describe_response(info)));
}

void ControlService::list(const io::HttpRequest& request, Responder& respond) {
  auto query = protocol::parse_list_query(request.query);
  if (!query) {
    respond(api_error(query.error()));
    return;
  }
  std::optional<std::string_view> after;
  if (query->after_id) after = *query->after_id;
  std::vector<StreamSnapshot> page =
      catalog_.page(after, query->ascending, std::size_t{query->max_results} + 1);
  std::optional<std::string> next_token;
  if (page.size() > query->max_results) {
    page.resize(query->max_results);
    next_token = protocol::encode_next_token(page.back()->id);
  }
  std::vector<protocol::StreamInfo> infos;
  infos.reserve(page.size());
  for (const auto& s : page) {
    protocol::StreamInfo info;
    info.stream_id = s->id;
    info.stream_arn = control_detail::stream_arn(s->id);
    info.version = s->version;
    info.description = s->description;
    info.created_at = s->created_at;
    info.allowed_things = s->allowed_things;
    infos.push_back(std::move(info));
  }
  respond(json_response(200, protocol::list_response(infos, next_token)));
}

std::string ControlService::error_body(int status, std::string_view message) {
  // io::HttpServer sends only io::kServerErrorStatuses, each of which has its code (tested); any
  // other status would be a bug there, answered as an internal error rather than a wrong code.
  const ApiErrorCode code =
      protocol::api_error_for_status(status).value_or(ApiErrorCode::InternalError);
  return protocol::error_response(ApiError{code, std::string(message), {}});
}

}  // namespace chunkd::engine
