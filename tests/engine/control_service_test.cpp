// The control service's HTTP surface (engine/control_service.hpp) against a real registry,
// content store and thread-pool file reader: routes and methods, HEAD, the bearer token and its
// rotation, /healthz and readiness, /metrics, closing, and the error bodies of every status.
#include "engine/control_service.hpp"

#include <cerrno>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/content_store.hpp"
#include "io/http_server.hpp"
#include "protocol/control.hpp"
#include "tests/engine/control_service_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_F(ControlServiceTest, UnknownPathsAndMethods) {
  auto r = call("GET", "/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Json(r.body).str("/error/code"), "NOT_FOUND");
  EXPECT_EQ(call("GET", "/streams/a/b").status, 404);

  r = call("PATCH", "/streams/a");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(Json(r.body).str("/error/code"), "METHOD_NOT_ALLOWED");
  ASSERT_NE(find_header(r, "Allow"), nullptr);
  EXPECT_EQ(*find_header(r, "Allow"), "GET, HEAD, POST, PUT, DELETE");
  r = call("POST", "/streams");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(*find_header(r, "Allow"), "GET, HEAD");
  r = call("DELETE", "/healthz");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(*find_header(r, "Allow"), "GET, HEAD");
  EXPECT_EQ(call("PUT", "/metrics").status, 405);
}

TEST_F(ControlServiceTest, EmptyStreamIdIsAValidationErrorNotA404) {
  for (const char* method : {"GET", "POST", "PUT", "DELETE"}) {
    auto r = call(method, "/streams/", R"({"description":"x"})");
    EXPECT_EQ(r.status, 400) << method;
    Json j(r.body);
    EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR") << method;
    EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"streamId"}) << method << r.body;
    EXPECT_EQ(j.str("/error/details/0/problem"), "must not be empty") << method;
  }
  EXPECT_EQ(catalog_->size(), 0u);
}

// HEAD is served by the GET route: same status, headers and body (io::HttpServer drops the body
// on the wire), counted under the GET route's name.
TEST_F(ControlServiceTest, HeadIsAnsweredLikeGet) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  control_->set_ready(true);
  for (const char* path : {"/streams", "/streams/a", "/streams/missing", "/healthz"}) {
    const auto get = call("GET", path);
    const auto head = call("HEAD", path);
    EXPECT_EQ(head.status, get.status) << path;
    EXPECT_EQ(head.content_type, get.content_type) << path;
    EXPECT_EQ(head.body.size(), get.body.size()) << path;
    EXPECT_EQ(head.headers, get.headers) << path;
  }
  const auto head = call("HEAD", "/metrics");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.content_type, "text/plain; version=0.0.4");
  EXPECT_EQ(
      metrics_->counter_value("chunkd_http_requests_total", R"(route="describe",status="200")"),
      2u);
  EXPECT_EQ(
      metrics_->counter_value("chunkd_http_requests_total", R"(route="describe",status="404")"),
      2u);
}

TEST_F(ControlServiceTest, RefusedRequestsAreCounted) {
  control_->count_refused(431);
  control_->count_refused(400);
  control_->count_refused(431);
  const std::string m = call("GET", "/metrics").body;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"refused\",status=\"431\"} 2\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"refused\",status=\"400\"} 1\n"),
            std::string::npos)
      << m;
}

TEST_F(ControlServiceTest, BearerTokenIsRequiredOnStreamRoutes) {
  restart(Options{.token = "t0ken-value"});
  io::HttpRequest none = request("GET", "/streams");
  auto r = call(std::move(none));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Json(r.body).str("/error/code"), "UNAUTHORIZED");
  ASSERT_NE(find_header(r, "WWW-Authenticate"), nullptr);
  EXPECT_EQ(*find_header(r, "WWW-Authenticate"), "Bearer");

  for (std::string value : {"Bearer wrong", "Bearer t0ken-valu", "Bearer t0ken-value2",
                            "Basic t0ken-value", "t0ken-value", "Bearer", "Bearer "}) {
    auto req = request("POST", "/streams/a", create_body({file_json(0, "app.bin")}));
    req.headers.emplace_back("authorization", value);
    r = call(std::move(req));
    EXPECT_EQ(r.status, 401) << value;
  }
  EXPECT_EQ(catalog_->size(), 0u);
  // Wrong method on a stream route without a token: still 401 first.
  EXPECT_EQ(call("PATCH", "/streams/a").status, 401);

  token_ = "t0ken-value";
  EXPECT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  auto lower = request("GET", "/streams/a");
  lower.headers.clear();
  lower.headers.emplace_back("authorization", "bearer   t0ken-value ");
  EXPECT_EQ(call(std::move(lower)).status, 200);

  token_.clear();
  EXPECT_EQ(call("GET", "/metrics").status, 200);
  EXPECT_EQ(call("GET", "/healthz").status, 503);
  EXPECT_EQ(call("GET", "/nope").status, 404);
}

TEST_F(ControlServiceTest, AuthorizeDecidesOnTheHeadAlone) {
  restart(Options{.token = "t0ken-value"});
  // A create without the token: 401 from the head (no body yet), counted like handle()'s.
  io::HttpRequest head = request("POST", "/streams/a");
  head.headers.clear();
  std::optional<io::HttpResponse> early = control_->authorize(head);
  ASSERT_TRUE(early.has_value());
  EXPECT_EQ(early->status, 401);
  EXPECT_EQ(Json(early->body).str("/error/code"), "UNAUTHORIZED");
  ASSERT_NE(find_header(*early, "WWW-Authenticate"), nullptr);
  EXPECT_EQ(metrics_->counter_value("chunkd_http_requests_total", R"(route="create",status="401")"),
            1u);
  // The token, an open page, an unknown path: nothing to say before the body.
  head.headers.emplace_back("authorization", "Bearer t0ken-value");
  EXPECT_FALSE(control_->authorize(head).has_value());
  EXPECT_FALSE(control_->authorize(request("GET", "/healthz")).has_value());
  EXPECT_FALSE(control_->authorize(request("GET", "/nope")).has_value());
}

TEST_F(ControlServiceTest, HealthzFollowsReadiness) {
  auto r = call("GET", "/healthz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Json(r.body).str("/error/code"), "SERVICE_UNAVAILABLE");
  control_->set_ready(true);
  r = call("GET", "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"status":"ok"})");
  control_->set_ready(false);
  EXPECT_EQ(call("GET", "/healthz").status, 503);
}

TEST_F(ControlServiceTest, HealthzIsDegradedWhileDataDirIsNotWritable) {
  Options options;
  options.writable_errno->store(EROFS);
  restart(options);
  control_->set_ready(true);
  auto r = call("GET", "/healthz");
  EXPECT_EQ(r.status, 503);
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "SERVICE_UNAVAILABLE");
  EXPECT_NE(j.str("/error/message").find("degraded: storage.data_dir"), std::string::npos)
      << r.body;
  EXPECT_NE(j.str("/error/message").find("not writable"), std::string::npos) << r.body;
  // Writable again: a probe started after the change (off the loop thread) clears it. The probe
  // the first /healthz started may still be running with the old answer, and a probe is not
  // started while one runs, so each turn moves the clock past the interval and asks again.
  options.writable_errno->store(0);
  run_until([&] {
    clock_.advance_ms(ContentStore::kProbeIntervalMs);
    store_->probe_storage();
    return store_->storage_problem().empty();
  });
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(ControlServiceTest, MetricsPage) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "fw.bin")})).status, 201);
  call("GET", "/streams/zzz");
  auto r = call("GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
  const std::string& m = r.body;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"create\",status=\"201\"} 1\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"describe\",status=\"404\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("chunkd_streams 1\n"), std::string::npos);
  EXPECT_NE(m.find("chunkd_store_blobs 1\n"), std::string::npos);
  EXPECT_NE(m.find("chunkd_store_bytes " + std::to_string(fw_.size()) + "\n"), std::string::npos);
  EXPECT_NE(m.find("chunkd_ingest_bytes_total " + std::to_string(fw_.size()) + "\n"),
            std::string::npos);
  EXPECT_NE(m.find("chunkd_ingest_seconds_total"), std::string::npos);
}

TEST_F(ControlServiceTest, ClosingRefusesNewRequestsAndCancelsIngests) {
  auto pending = send(request("POST", "/streams/a", create_body({file_json(0, "fw.bin")})));
  bool control_closed = false;
  bool store_closed = false;
  control_->close([&] { control_closed = true; });
  store_->close([&] { store_closed = true; });
  auto r = call("GET", "/streams");
  EXPECT_EQ(r.status, 503);
  auto answer = wait(pending);
  EXPECT_EQ(answer.status, 503) << answer.body;
  run_until([&] { return control_closed && store_closed; });
  EXPECT_EQ(catalog_->size(), 0u);
}

// A reload rotates the token: the new one works at once, the old one is refused.
TEST_F(ControlServiceTest, SetTokenRotatesTheToken) {
  restart(Options{.token = "old-token"});
  token_ = "old-token";
  EXPECT_EQ(call("GET", "/streams").status, 200);
  control_->set_token("new-token");
  EXPECT_EQ(call("GET", "/streams").status, 401);
  token_ = "new-token";
  EXPECT_EQ(call("GET", "/streams").status, 200);
  control_->set_token("");
  token_.clear();
  EXPECT_EQ(call("GET", "/streams").status, 200);
}

TEST_F(ControlServiceTest, ErrorBodyForServerMadeResponses) {
  Json j(ControlService::error_body(413, "body too large"));
  EXPECT_EQ(j.str("/error/code"), "PAYLOAD_TOO_LARGE");
  EXPECT_EQ(j.str("/error/message"), "body too large");
  EXPECT_EQ(Json(ControlService::error_body(400, "bad")).str("/error/code"), "VALIDATION_ERROR");
  EXPECT_EQ(Json(ControlService::error_body(408, "slow")).str("/error/code"), "REQUEST_TIMEOUT");
  EXPECT_EQ(Json(ControlService::error_body(411, "len")).str("/error/code"), "LENGTH_REQUIRED");
  EXPECT_EQ(Json(ControlService::error_body(431, "big")).str("/error/code"), "HEADERS_TOO_LARGE");
  EXPECT_EQ(Json(ControlService::error_body(503, "x")).str("/error/code"), "SERVICE_UNAVAILABLE");
  EXPECT_EQ(Json(ControlService::error_body(500, "x")).str("/error/code"), "INTERNAL_ERROR");
  EXPECT_EQ(Json(ControlService::error_body(505, "v")).str("/error/code"),
            "HTTP_VERSION_NOT_SUPPORTED");
}

// Every error status chunkd can send (the ones io::HttpServer makes itself and the ones of the
// API's codes) carries exactly one code, and that code's status is the status sent.
TEST_F(ControlServiceTest, EveryErrorStatusHasItsOneCode) {
  std::set<int> statuses(std::begin(io::kServerErrorStatuses), std::end(io::kServerErrorStatuses));
  for (const protocol::ApiErrorInfo& info : protocol::kApiErrors) statuses.insert(info.http_status);
  std::set<std::string> codes;
  for (int status : statuses) {
    const auto code = protocol::api_error_for_status(status);
    ASSERT_TRUE(code.has_value()) << status << " has no code";
    EXPECT_EQ(protocol::http_status(*code), status);
    Json j(ControlService::error_body(status, "m"));
    ASSERT_TRUE(j.ok) << status;
    EXPECT_EQ(j.str("/error/code"), protocol::to_string(*code)) << status;
    EXPECT_EQ(j.str("/error/message"), "m");
    EXPECT_TRUE(codes.insert(j.str("/error/code")).second) << status << " shares its code";
  }
}

}  // namespace
}  // namespace chunkd::engine
