// HttpServer serving requests, against the blocking test client (tests/io/http_test_fixture.hpp:
// the server's loop on its own thread): GET and POST with headers, keep-alive, pipelining (answered
// in order, handed to the handler one at a time), requests split across reads, asynchronous,
// late, dropped and throwing responders, percent-decoded paths, IPv6, and listen errors.
#include "io/http_server.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/io/http_test_fixture.hpp"
#include "tests/support/http_client.hpp"

namespace chunkd::io {
namespace {

TEST_F(HttpServerTest, SimpleGet) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.connected()) << client.error();
  HttpClientResponse r = client.request("GET", "/hello?x=1&y=2");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.reason, "OK");
  EXPECT_EQ(r.body, "GET /hello?x=1&y=2\n");
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_EQ(*r.header("content-type"), "text/plain");
  ASSERT_NE(r.header("content-length"), nullptr);
  EXPECT_EQ(*r.header("content-length"), std::to_string(r.body.size()));
  ASSERT_NE(r.header("x-peer"), nullptr);
  EXPECT_EQ(r.header("x-peer")->rfind("127.0.0.1:", 0), 0u) << *r.header("x-peer");
  EXPECT_EQ(r.header("connection"), nullptr);
}

TEST_F(HttpServerTest, SimplePostWithHeaders) {
  std::string seen_custom;
  handler_ = [&](HttpRequest&& request, HttpServer::Responder respond) {
    seen_custom = request.header("x-custom-header") ? *request.header("x-custom-header") : "-";
    for (const auto& [name, value] : request.headers) {
      EXPECT_TRUE(std::none_of(name.begin(), name.end(), [](char c) {
        return c >= 'A' && c <= 'Z';
      })) << name;
    }
    HttpResponse response;
    response.status = 201;
    response.body = "{\"got\":" + std::to_string(request.body.size()) + "}";
    response.headers.emplace_back("Location", request.path);
    respond(std::move(response));
  };
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  HttpClientResponse r = client.request("POST", "/streams/x", "{\"description\":\"d\"}",
                                        {{"X-Custom-Header", "Value 1"}});
  ASSERT_EQ(r.status, 201) << r.error;
  EXPECT_EQ(r.reason, "Created");
  EXPECT_EQ(r.body, "{\"got\":19}");
  EXPECT_EQ(*r.header("content-type"), "application/json");
  EXPECT_EQ(*r.header("location"), "/streams/x");
  EXPECT_EQ(loop_.call([&] { return seen_custom; }), "Value 1");
}

TEST_F(HttpServerTest, KeepAliveThreeRequestsOnOneConnection) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  for (int i = 0; i < 3; ++i) {
    HttpClientResponse r = client.request("POST", "/r" + std::to_string(i), "body");
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.body, "POST /r" + std::to_string(i) + "?\nbody");
  }
  EXPECT_EQ(client.connects(), 1);
  EXPECT_EQ(stats().connections_accepted, 1u);
  EXPECT_EQ(stats().requests, 3u);
  EXPECT_EQ(open_connections(), 1u);
}

TEST_F(HttpServerTest, PipelinedRequestsAnsweredInOrder) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  std::string batch;
  for (int i = 0; i < 20; ++i) {
    if (i % 2 == 0) {
      batch += "GET /p" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
    } else {
      std::string body = "body" + std::to_string(i);
      batch += "POST /p" + std::to_string(i) +
               " HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    }
  }
  ASSERT_TRUE(client.send_raw(batch)) << client.error();
  for (int i = 0; i < 20; ++i) {
    HttpClientResponse r = client.read_response();
    ASSERT_EQ(r.status, 200) << r.error;
    std::string expected = i % 2 == 0
                               ? "GET /p" + std::to_string(i) + "?\n"
                               : "POST /p" + std::to_string(i) + "?\nbody" + std::to_string(i);
    EXPECT_EQ(r.body, expected);
  }
  EXPECT_EQ(stats().requests, 20u);
}

TEST_F(HttpServerTest, RequestsSplitAcrossManyReads) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  std::string two =
      "POST /split%2Fme?a=b HTTP/1.1\r\nX-Tag: one\r\nContent-Length: 11\r\n\r\nhello world"
      "GET /second HTTP/1.1\r\nX-Tag: two\r\n\r\n";
  for (char byte : two) {
    ASSERT_TRUE(client.send_raw(std::string(1, byte))) << client.error();
    std::this_thread::sleep_for(1ms);
  }
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "POST /split/me?a=b\nhello world");
  EXPECT_EQ(*r.header("x-tag"), "one");
  r = client.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "GET /second?\n");
  EXPECT_EQ(*r.header("x-tag"), "two");
}

TEST_F(HttpServerTest, PipelinedRequestsGoToTheHandlerOneAtATime) {
  park_requests();
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(
      client.send_raw("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"));
  for (std::size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(wait_until([&] { return pending_.size() == i + 1; }));
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(pending_count(), i + 1) << "a request reached the handler before the previous answer";
    answer(i, text("answer " + std::to_string(i + 1)));
  }
  for (int i = 1; i <= 3; ++i) {
    HttpClientResponse r = client.read_response();
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.body, "answer " + std::to_string(i));
  }
  EXPECT_EQ(loop_.call([&] { return paths_; }), (std::vector<std::string>{"/1", "/2", "/3"}));
}

TEST_F(HttpServerTest, AsyncResponderAnswersAfterATimer) {
  handler_ = [this](HttpRequest&& request, HttpServer::Responder respond) {
    respond_later(loop_.loop(), std::move(respond), text("later " + request.path), 50);
  };
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  for (int i = 0; i < 2; ++i) {
    HttpClientResponse r = client.request("GET", "/t" + std::to_string(i));
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.body, "later /t" + std::to_string(i));
  }
  EXPECT_EQ(client.connects(), 1);
}

TEST_F(HttpServerTest, HandlerTimeCountsNeitherAsRequestNorIdleTime) {
  HttpLimits limits;
  limits.request_timeout_ms = 100;
  limits.idle_timeout_ms = 100;
  handler_ = [this](HttpRequest&&, HttpServer::Responder respond) {
    respond_later(loop_.loop(), std::move(respond), text("slow handler"), 600);
  };
  ASSERT_FALSE(start(limits));
  HttpClient client("127.0.0.1", port_);
  HttpClientResponse r = client.request("GET", "/slow");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "slow handler");
  EXPECT_EQ(stats().timeouts, 0u);
}

TEST_F(HttpServerTest, ResponderAfterClientResetIsDropped) {
  park_requests();
  ASSERT_FALSE(start());
  {
    HttpClient client("127.0.0.1", port_);
    ASSERT_TRUE(client.send_raw("GET /gone HTTP/1.1\r\n\r\n"));
    ASSERT_TRUE(wait_until([&] { return pending_.size() == 1; }));
    client.reset();
  }
  ASSERT_TRUE(wait_until([&] { return server_->open_connections() == 0; }));
  answer(0, text("nobody listens"));  // must not crash or touch freed memory
  EXPECT_EQ(stats().responses_dropped, 1u);
  HttpClient again("127.0.0.1", port_);
  ASSERT_TRUE(again.send_raw("GET /next HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(wait_until([&] { return pending_.size() == 2; }));
  answer(1, text("fine"));
  HttpClientResponse r = again.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "fine");
}

TEST_F(HttpServerTest, HalfClosedClientStillGetsItsResponse) {
  park_requests();
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.send_raw("GET /half HTTP/1.1\r\n\r\n"));
  client.shutdown_write();
  ASSERT_TRUE(wait_until([&] { return pending_.size() == 1; }));
  answer(0, text("still here"));
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "still here");
  EXPECT_TRUE(client.wait_closed());
  EXPECT_TRUE(wait_until([&] { return server_->open_connections() == 0; }));
}

TEST_F(HttpServerTest, DroppedResponderAnswers500) {
  handler_ = [](HttpRequest&&, HttpServer::Responder) {};
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  for (int i = 0; i < 2; ++i) {
    HttpClientResponse r = client.request("GET", "/dropped");
    ASSERT_EQ(r.status, 500) << r.error;
    EXPECT_NE(r.body.find("\"status\":500"), std::string::npos) << r.body;
  }
  EXPECT_EQ(client.connects(), 1);
}

TEST_F(HttpServerTest, ThrowingHandlerAnswers500) {
  handler_ = [](HttpRequest&&, HttpServer::Responder) { throw std::runtime_error("boom"); };
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  HttpClientResponse r = client.request("GET", "/throws");
  ASSERT_EQ(r.status, 500) << r.error;
  EXPECT_EQ(*r.header("content-type"), "application/json");
}

TEST_F(HttpServerTest, PathIsPercentDecodedAndBadEscapesAre400) {
  std::string seen_path;
  std::string seen_query;
  handler_ = [&](HttpRequest&& request, HttpServer::Responder respond) {
    seen_path = request.path;
    seen_query = request.query;
    respond(text("ok"));
  };
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  HttpClientResponse r = client.request("GET", "/streams/a%20b%2Fc%41%e2%82%ac?x=%20&y=1#frag");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(loop_.call([&] { return seen_path; }), "/streams/a b/cA\xe2\x82\xac");
  EXPECT_EQ(loop_.call([&] { return seen_query; }), "x=%20&y=1");
  r = client.request("GET", "http://example.invalid:8080/abs%2Dform?q");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(loop_.call([&] { return seen_path; }), "/abs-form");
  EXPECT_EQ(loop_.call([&] { return seen_query; }), "q");

  for (const char* bad : {"/a%00b", "/a%zzb", "/a%4", "/a%", "/a%0g"}) {
    HttpClient one("127.0.0.1", port_);
    HttpClientResponse e = one.request("GET", bad);
    EXPECT_EQ(e.status, 400) << bad << ": " << e.error;
    EXPECT_TRUE(one.wait_closed()) << bad;
  }
}

TEST_F(HttpServerTest, ListensOnIpv6Loopback) {
  std::error_code ec = start({}, "::1");
  if (ec) GTEST_SKIP() << "no IPv6 loopback: " << ec.message();
  HttpClient client("::1", port_);
  if (!client.connected()) GTEST_SKIP() << "cannot connect to ::1: " << client.error();
  HttpClientResponse r = client.request("GET", "/six");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.header("x-peer")->rfind("[::1]:", 0), 0u) << *r.header("x-peer");
}

// Without the fixture: listen errors, close() without listen(), all on the test thread.
TEST(HttpServerListen, ErrorsAreReportedAndCloseStillCompletes) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  auto handler = [](HttpRequest&&, HttpServer::Responder respond) { respond(HttpResponse{}); };
  int done = 0;
  {
    HttpServer first(&loop, {}, handler, &error_json);
    HttpServer second(&loop, {}, handler, &error_json);
    HttpServer third(&loop, {}, handler, &error_json);
    HttpServer never(&loop, {}, handler, &error_json);
    ASSERT_TRUE(first.listen("127.0.0.1", 0));
    EXPECT_NE(first.port(), 0);
    std::error_code ec = second.listen("127.0.0.1", first.port()).error().code;
    EXPECT_EQ(ec, std::errc::address_in_use) << ec.message();
    EXPECT_EQ(ec, std::error_code(-UV_EADDRINUSE, std::system_category()));
    EXPECT_EQ(third.listen("not-an-address", 0).error().code, std::errc::invalid_argument);
    first.close([&] { ++done; });
    second.close([&] { ++done; });
    third.close([&] { ++done; });
    never.close([&] { ++done; });
    EXPECT_EQ(done, 0);  // always completes later, on the loop
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(done, 4);
  }
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace chunkd::io
