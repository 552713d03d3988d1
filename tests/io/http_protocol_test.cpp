// HttpServer holding clients to HTTP/1.x, against the blocking test client
// (tests/io/http_test_fixture.hpp): body and header limits (413 without reading the body, 431),
// garbage (400), chunked bodies (411), 100-continue, versions other than 1.0 and 1.1 (505),
// HTTP/1.0 and "Connection: close" ending the connection, HEAD without a body, and every request
// the server refuses itself reported once to the refused-request observer.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "io/http_server.hpp"
#include "tests/io/http_test_fixture.hpp"
#include "tests/support/http_client.hpp"

namespace chunkd::io {
namespace {

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

}  // namespace
}  // namespace chunkd::io
