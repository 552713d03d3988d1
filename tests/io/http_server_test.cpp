// HttpServer against the blocking test client: the server's loop runs on its own thread; the test
// thread talks HTTP to it and hands work to the loop thread with post()/call().
#include "io/http_server.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
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

TEST_F(HttpServerTest, BodyOverLimitIs413WithoutReadingIt) {
  HttpLimits limits;
  limits.max_body_bytes = 1024;
  bool called = false;
  handler_ = [&](HttpRequest&&, HttpServer::Responder respond) {
    called = true;
    respond(text("no"));
  };
  ASSERT_FALSE(start(limits));
  HttpClient client("127.0.0.1", port_);
  // Only the header is sent: the answer must come without the body.
  ASSERT_TRUE(client.send_raw("POST /streams/big HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"));
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 413) << r.error;
  EXPECT_EQ(*r.header("content-type"), "application/json");
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_NE(r.body.find("\"status\":413"), std::string::npos) << r.body;
  // A human message, no internal prefix.
  EXPECT_NE(r.body.find("\"message\":\"the request body exceeds 1024 bytes\""), std::string::npos)
      << r.body;
  EXPECT_EQ(r.body.find("too_large_body"), std::string::npos) << r.body;
  EXPECT_TRUE(client.wait_closed());
  EXPECT_FALSE(loop_.call([&] { return called; }));
}

TEST_F(HttpServerTest, BodyOverLimitSentAnywayStillGets413) {
  HttpLimits limits;
  limits.max_body_bytes = 1024;
  ASSERT_FALSE(start(limits));
  HttpClient client("127.0.0.1", port_);
  std::string body(200 * 1024, 'x');
  HttpClientResponse r = client.request("POST", "/streams/big", body);
  ASSERT_EQ(r.status, 413) << r.error;
  EXPECT_TRUE(client.wait_closed());
}

TEST_F(HttpServerTest, BodyOfExactlyTheLimitIsAccepted) {
  HttpLimits limits;
  limits.max_body_bytes = 1024;
  ASSERT_FALSE(start(limits));
  HttpClient client("127.0.0.1", port_);
  std::string body(1024, 'b');
  HttpClientResponse r = client.request("POST", "/exact", body);
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "POST /exact?\n" + body);
}

TEST_F(HttpServerTest, HeaderOverLimitIs431) {
  HttpLimits limits;
  limits.max_header_bytes = 1024;
  ASSERT_FALSE(start(limits));
  {
    HttpClient client("127.0.0.1", port_);
    HttpClientResponse r = client.request("GET", "/h", "", {{"X-Big", std::string(2000, 'v')}});
    ASSERT_EQ(r.status, 431) << r.error;
    EXPECT_NE(r.body.find("\"status\":431"), std::string::npos) << r.body;
    EXPECT_TRUE(client.wait_closed());
  }
  {
    HttpClient client("127.0.0.1", port_);
    HttpClient::Headers many;
    for (int i = 0; i < 100; ++i) many.emplace_back("X-H" + std::to_string(i), "0123456789");
    HttpClientResponse r = client.request("GET", "/h", "", many);
    ASSERT_EQ(r.status, 431) << r.error;
    EXPECT_TRUE(client.wait_closed());
  }
  {
    HttpClient client("127.0.0.1", port_);
    HttpClientResponse r = client.request("GET", "/" + std::string(2000, 'u'));
    ASSERT_EQ(r.status, 431) << r.error;
  }
  {
    HttpClient client("127.0.0.1", port_);
    HttpClientResponse r = client.request("GET", "/h", "", {{"X-Fits", std::string(500, 'v')}});
    EXPECT_EQ(r.status, 200) << r.error;
  }
}

TEST_F(HttpServerTest, GarbageIs400AndCloses) {
  ASSERT_FALSE(start());
  const char* inputs[] = {
      "HELLO WORLD\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  // a TLS ClientHello
  };
  for (const char* input : inputs) {
    HttpClient client("127.0.0.1", port_);
    ASSERT_TRUE(client.send_raw(input));
    HttpClientResponse r = client.read_response();
    EXPECT_EQ(r.status, 400) << r.error << " for input " << input;
    EXPECT_NE(r.body.find("\"status\":400"), std::string::npos) << r.body;
    EXPECT_TRUE(client.wait_closed());
  }
  EXPECT_EQ(stats().requests, 0u);
}

TEST_F(HttpServerTest, ChunkedRequestIs411) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.send_raw(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 411) << r.error;
  EXPECT_EQ(r.reason, "Length Required");
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_TRUE(client.wait_closed());
}

TEST_F(HttpServerTest, HttpVersionsOtherThan10And11Are505) {
  bool called = false;
  handler_ = [&](HttpRequest&&, HttpServer::Responder respond) {
    called = true;
    respond(text("no"));
  };
  ASSERT_FALSE(start());
  for (const char* line : {"GET / HTTP/9.9\r\n", "GET / HTTP/2.0\r\n", "GET / HTTP/1.2\r\n",
                           "GET / HTTP/0.9\r\n", "GET /\r\n"}) {
    HttpClient client("127.0.0.1", port_);
    ASSERT_TRUE(client.send_raw(std::string(line) + "Host: v\r\n\r\n"));
    HttpClientResponse r = client.read_response();
    EXPECT_EQ(r.status, 505) << r.error << " for " << line;
    EXPECT_EQ(r.reason, "HTTP Version Not Supported") << line;
    EXPECT_NE(r.body.find("\"status\":505"), std::string::npos) << r.body;
    ASSERT_NE(r.header("connection"), nullptr) << line;
    EXPECT_EQ(*r.header("connection"), "close");
    EXPECT_TRUE(client.wait_closed()) << line;
  }
  EXPECT_EQ(loop_.call([&] { return refused_; }), std::vector<int>(5, 505));
  EXPECT_FALSE(loop_.call([&] { return called; }));
  // 1.0 and 1.1 are served.
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.send_raw("GET /one HTTP/1.1\r\n\r\nGET /zero HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(client.read_response().status, 200);
  EXPECT_EQ(client.read_response().status, 200);
}

// RFC 9110 §9.3.2: HEAD gets the head of the response, Content-Length of its body included, and
// no body; the next request on the connection is read from the right place.
TEST_F(HttpServerTest, HeadAnswersTheHeadWithoutTheBody) {
  std::vector<std::string> methods;
  handler_ = [&](HttpRequest&& request, HttpServer::Responder respond) {
    methods.push_back(request.method);
    respond(text("the body of " + request.path));  // as for GET: the server drops it
  };
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(
      client.send_raw("HEAD /h HTTP/1.1\r\n\r\nGET /h HTTP/1.1\r\nConnection: close\r\n\r\n"));
  const std::string wire = client.read_until_closed();
  const std::string get_body = "the body of /h";
  const std::size_t second = wire.find("HTTP/1.1 200 OK\r\n", 1);
  ASSERT_NE(second, std::string::npos) << wire;
  const std::string head_response = wire.substr(0, second);
  EXPECT_EQ(head_response.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << wire;
  EXPECT_NE(head_response.find("Content-Length: " + std::to_string(get_body.size()) + "\r\n"),
            std::string::npos)
      << head_response;
  EXPECT_EQ(head_response.size(), head_response.find("\r\n\r\n") + 4) << "a body: " << wire;
  EXPECT_EQ(wire.substr(wire.size() - get_body.size()), get_body) << wire;
  EXPECT_EQ(loop_.call([&] { return methods; }), (std::vector<std::string>{"HEAD", "GET"}));

  // A response the server makes itself to a HEAD has no body either.
  HttpClient refused("127.0.0.1", port_);
  ASSERT_TRUE(refused.send_raw("HEAD /h HTTP/9.9\r\n\r\n"));
  const std::string error = refused.read_until_closed();
  EXPECT_EQ(error.rfind("HTTP/1.1 505 ", 0), 0u) << error;
  EXPECT_EQ(error.size(), error.find("\r\n\r\n") + 4) << "a body: " << error;
  EXPECT_EQ(error.find("Content-Length: 0\r\n"), std::string::npos) << error;
  EXPECT_NE(error.find("Content-Length: "), std::string::npos) << error;
}

// Each request the server refuses itself reaches the observer once, with its status; requests
// that reach the handler do not.
TEST_F(HttpServerTest, RefusedRequestsAreReportedWithTheirStatus) {
  HttpLimits limits;
  limits.max_body_bytes = 16;
  limits.max_header_bytes = 1024;
  limits.request_timeout_ms = 200;
  ASSERT_FALSE(start(limits));
  const std::pair<const char*, int> cases[] = {
      {"HELLO WORLD\r\n\r\n", 400},
      {"GET /a%zz HTTP/1.1\r\n\r\n", 400},
      {"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411},
      {"POST /b HTTP/1.1\r\nContent-Length: 17\r\n\r\n", 413},
      {"GET /h HTTP/1.1\r\nX-Big: ", 431},  // + 2000 bytes below
      {"GET / HTTP/3.0\r\n\r\n", 505},
      {"GET /never-finished HTTP/1.1\r\n", 408},
  };
  std::vector<int> expected;
  for (const auto& [input, status] : cases) {
    HttpClient client("127.0.0.1", port_);
    std::string bytes = input;
    if (status == 431) bytes += std::string(2000, 'v') + "\r\n\r\n";
    ASSERT_TRUE(client.send_raw(bytes));
    EXPECT_EQ(client.read_response().status, status) << input;
    EXPECT_TRUE(client.wait_closed()) << input;
    expected.push_back(status);
  }
  HttpClient ok("127.0.0.1", port_);
  EXPECT_EQ(ok.request("GET", "/fine").status, 200);
  EXPECT_EQ(loop_.call([&] { return refused_; }), expected);
  EXPECT_EQ(stats().error_responses, expected.size());
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionIsClosed) {
  HttpLimits limits;
  limits.idle_timeout_ms = 100;
  ASSERT_FALSE(start(limits));
  HttpClient client("127.0.0.1", port_);
  HttpClientResponse r = client.request("GET", "/once");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(client.wait_closed());
  HttpClient silent("127.0.0.1", port_);  // never sends anything
  EXPECT_TRUE(silent.wait_closed());
  EXPECT_GE(stats().timeouts, 2u);
}

TEST_F(HttpServerTest, SlowClientGets408) {
  HttpLimits limits;
  limits.request_timeout_ms = 500;
  ASSERT_FALSE(start(limits));
  HttpClient client("127.0.0.1", port_);
  std::string request =
      "GET /slow HTTP/1.1\r\nHost: trickle\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
  bool answered = false;
  for (char byte : request) {
    if (readable_now(client)) {
      answered = true;
      break;
    }
    if (!client.send_raw(std::string(1, byte))) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(answered || readable_now(client)) << "the whole request trickled in unanswered";
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 408) << r.error;
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_TRUE(client.wait_closed());
  EXPECT_EQ(stats().requests, 0u);
}

TEST_F(HttpServerTest, ConnectionsOverTheLimitGet503WhenNoneIsIdle) {
  park_requests();
  HttpLimits limits;
  limits.max_connections = 5;
  ASSERT_FALSE(start(limits));
  std::vector<HttpClient> clients;
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back("127.0.0.1", port_);
    ASSERT_TRUE(clients.back().send_raw("GET /c" + std::to_string(i) + " HTTP/1.1\r\n\r\n"));
  }
  ASSERT_TRUE(wait_until([&] { return pending_.size() == 5; }));  // every slot busy, none idle
  HttpClient sixth("127.0.0.1", port_);
  HttpClientResponse refused = sixth.read_response();
  ASSERT_EQ(refused.status, 503) << refused.error;
  EXPECT_EQ(*refused.header("connection"), "close");
  EXPECT_NE(refused.body.find("\"status\":503"), std::string::npos) << refused.body;
  EXPECT_TRUE(sixth.wait_closed());
  EXPECT_EQ(stats().connections_rejected, 1u);
  EXPECT_EQ(stats().connections_evicted, 0u);
  EXPECT_EQ(open_connections(), 5u);
  // The five still work; one leaving makes room for a new one.
  answer(4, text("still"));
  EXPECT_EQ(clients[4].read_response().status, 200);
  clients[4].close();
  ASSERT_TRUE(wait_until([&] { return server_->open_connections() == 4; }));
  loop_.call([&] { handler_ = &echo; });
  HttpClient seventh("127.0.0.1", port_);
  HttpClientResponse r = seventh.request("GET", "/room");
  EXPECT_EQ(r.status, 200) << r.error;
  for (std::size_t i = 0; i < 4; ++i) answer(i, text("late"));
}

TEST_F(HttpServerTest, ThousandKeepAliveConnectionsAtOnce) {
  constexpr std::size_t kClients = 1000;
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  const rlim_t needed = 2 * kClients + 200;
  if (limit.rlim_cur < needed) {
    limit.rlim_cur = std::min<rlim_t>(needed, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < needed) GTEST_SKIP() << "RLIMIT_NOFILE too low: " << limit.rlim_cur;

  std::size_t max_open = 0;
  handler_ = [&](HttpRequest&& request, HttpServer::Responder respond) {
    max_open = std::max(max_open, server_->open_connections());
    respond(text(request.path));
  };
  HttpLimits limits;
  limits.max_connections = kClients;
  limits.max_connections_per_client = kClients;
  ASSERT_FALSE(start(limits));
  std::vector<HttpClient> clients;
  clients.reserve(kClients);
  for (std::size_t i = 0; i < kClients; ++i) {
    clients.emplace_back("127.0.0.1", port_);
    ASSERT_TRUE(clients.back().connected()) << i << ": " << clients.back().error();
  }
  for (std::size_t i = 0; i < kClients; ++i) {
    HttpClientResponse r = clients[i].request("GET", "/k" + std::to_string(i));
    ASSERT_EQ(r.status, 200) << i << ": " << r.error;
    ASSERT_EQ(r.body, "/k" + std::to_string(i));
  }
  EXPECT_EQ(loop_.call([&] { return max_open; }), kClients);
  EXPECT_EQ(stats().connections_rejected, 0u);
  for (auto& client : clients) EXPECT_EQ(client.connects(), 1);
  clients.clear();
  EXPECT_TRUE(wait_until([&] { return server_->open_connections() == 0; }));
}

TEST_F(HttpServerTest, GracefulCloseLetsTheRequestInFlightFinish) {
  handler_ = [this](HttpRequest&& request, HttpServer::Responder respond) {
    if (request.path == "/slow") {
      pending_.push_back(std::move(respond));
    } else {
      echo(std::move(request), std::move(respond));
    }
  };
  ASSERT_FALSE(start());
  HttpClient busy("127.0.0.1", port_);
  ASSERT_TRUE(busy.send_raw("GET /slow HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(wait_until([&] { return pending_.size() == 1; }));
  HttpClient idle("127.0.0.1", port_);
  ASSERT_EQ(idle.request("GET", "/fast").status, 200);

  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  loop_.post([this, done] { server_->close([done] { done->set_value(); }); });
  closed_ = true;

  EXPECT_TRUE(idle.wait_closed());  // idle: closed at once
  EXPECT_EQ(finished.wait_for(0s), std::future_status::timeout);
  HttpClient late("127.0.0.1", port_);  // no longer accepting
  EXPECT_FALSE(late.connected() && late.request("GET", "/late").status == 200);

  answer(0, text("finished"));
  HttpClientResponse r = busy.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "finished");
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_TRUE(busy.wait_closed());
  EXPECT_EQ(finished.wait_for(kGuard), std::future_status::ready);
}

TEST_F(HttpServerTest, ShutdownGraceBoundsAnUnansweredRequest) {
  HttpLimits limits;
  limits.shutdown_grace_ms = 100;
  park_requests();
  ASSERT_FALSE(start(limits));
  HttpClient a("127.0.0.1", port_);
  HttpClient b("127.0.0.1", port_);
  ASSERT_TRUE(a.send_raw("GET /a HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(b.send_raw("GET /b HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(wait_until([&] { return pending_.size() == 2; }));
  ASSERT_TRUE(close_server());
  EXPECT_TRUE(a.wait_closed());
  EXPECT_EQ(a.read_response().status, 0);
  // Answers after the connection closed, then after the server is gone: both dropped.
  answer(0, text("too late"));
  loop_.stop_and_join();
  server_.reset();
  pending_.at(1)(text("much too late"));
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

TEST_F(HttpServerTest, Http10ClosesUnlessKeepAliveAsked) {
  ASSERT_FALSE(start());
  {
    HttpClient client("127.0.0.1", port_);
    ASSERT_TRUE(client.send_raw("GET /old HTTP/1.0\r\n\r\n"));
    HttpClientResponse r = client.read_response();
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(*r.header("connection"), "close");
    EXPECT_TRUE(client.wait_closed());
  }
  {
    HttpClient client("127.0.0.1", port_);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(client.send_raw("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
      HttpClientResponse r = client.read_response();
      ASSERT_EQ(r.status, 200) << r.error;
      ASSERT_NE(r.header("connection"), nullptr);
      EXPECT_EQ(*r.header("connection"), "keep-alive");
    }
  }
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.send_raw(
      "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n"));
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_TRUE(client.wait_closed());
  EXPECT_EQ(client.read_response().status, 0);
  EXPECT_EQ(stats().requests, 1u);
}

TEST_F(HttpServerTest, Expect100Continue) {
  ASSERT_FALSE(start());
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.send_raw(
      "PUT /streams/e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  HttpClientResponse interim = client.read_response();
  ASSERT_EQ(interim.status, 100) << interim.error;
  ASSERT_TRUE(client.send_raw("hello"));
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "PUT /streams/e?\nhello");
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
