// The HTTP server's server-wide limits against the real server on loopback: pipelining held back
// while a response is unwritten, the byte budget (503), authorization before the body (401), the
// connection slots (the longest-idle connection makes room; 503 when none can), the per-client
// cap, and /healthz answering through idle floods and slowloris. Plus the pure helpers of
// io/http_limits.hpp. Assertions are on behaviour (statuses, counters, who is closed), not timings.
#include "io/http_limits.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/io/http_test_fixture.hpp"
#include "tests/support/http_client.hpp"

namespace chunkd::io {
namespace {

constexpr std::size_t kBigResponseBytes = 256 * 1024;

// A connection from another loopback address (127.0.0.0/8 is local on Linux), or a skip.
#define CONNECT_FROM(name, source)                    \
  HttpClient name("127.0.0.1", port_, 10000, source); \
  if (!name.connected()) GTEST_SKIP() << "cannot connect from " << source << ": " << name.error()

TEST_F(HttpServerTest, PipeliningClientIsNotReadWhileItsResponsesWait) {
  handler_ = [](HttpRequest&& request, HttpServer::Responder respond) {
    HttpResponse r = text(std::string(kBigResponseBytes, 'r'));
    r.headers.emplace_back("X-Path", request.path);
    respond(std::move(r));
  };
  ASSERT_FALSE(start());
  constexpr int kRequests = 200;  // 50 MiB of answers: far more than the socket buffers hold
  HttpClient client("127.0.0.1", port_);
  std::string batch;
  for (int i = 0; i < kRequests; ++i) batch += "GET /p" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
  ASSERT_TRUE(client.send_raw(batch));
  // The server fills the socket, then holds one response (not a queue) and parses nothing more.
  ASSERT_TRUE(wait_until([&] {
    const std::uint64_t held = server_->stats().buffered_bytes;
    return held > 0 && held <= kBigResponseBytes + 1024;
  }));
  EXPECT_LT(stats().requests, static_cast<std::uint64_t>(kRequests));
  EXPECT_EQ(open_connections(), 1u);
  // Once the client reads, every answer comes, in order, on the same connection.
  for (int i = 0; i < kRequests; ++i) {
    HttpClientResponse r = client.read_response();
    ASSERT_EQ(r.status, 200) << i << ": " << r.error;
    ASSERT_EQ(*r.header("x-path"), "/p" + std::to_string(i));
    ASSERT_EQ(r.body.size(), kBigResponseBytes);
  }
  EXPECT_EQ(stats().requests, static_cast<std::uint64_t>(kRequests));
  EXPECT_EQ(stats().write_overflows, 0u);
  EXPECT_TRUE(wait_until([&] { return server_->stats().buffered_bytes == 0; }));
}

// A response the kernel took at once is still held until its write callback, one loop turn later:
// a connection answering every request of a 64 KiB read of small pipelined requests in one turn
// held them all at once (a flood of 200 such clients took the daemon to 354 MiB). One response
// per connection is held at a time.
TEST_F(HttpServerTest, SmallPipelinedResponsesAreHeldOneAtATime) {
  constexpr std::size_t kResponseBytes = 4096;
  handler_ = [](HttpRequest&&, HttpServer::Responder respond) {
    respond(text(std::string(kResponseBytes, 's')));
  };
  ASSERT_FALSE(start());
  constexpr int kRequests = 1000;  // ~22 KB of requests: one read; ~4 MiB of answers
  HttpClient client("127.0.0.1", port_);
  std::string batch;
  for (int i = 0; i < kRequests; ++i) batch += "GET /s" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
  ASSERT_TRUE(client.send_raw(batch));
  for (int i = 0; i < kRequests; ++i) {
    HttpClientResponse r = client.read_response();
    ASSERT_EQ(r.status, 200) << i << ": " << r.error;
    ASSERT_EQ(r.body.size(), kResponseBytes);
  }
  const std::uint64_t peak = stats().buffered_bytes_peak;
  EXPECT_GT(peak, kResponseBytes);
  EXPECT_LE(peak, 2 * (kResponseBytes + 1024))
      << "responses held at once: " << peak / kResponseBytes;
}

TEST_F(HttpServerTest, BodyOverTheBudgetIs503BeforeItIsRead) {
  HttpLimits limits;
  limits.max_buffered_bytes = 64 * 1024;
  ASSERT_FALSE(start(limits));
  // A body half-sent holds its whole Content-Length in the budget.
  HttpClient holder("127.0.0.1", port_);
  ASSERT_TRUE(holder.send_raw("POST /a HTTP/1.1\r\nContent-Length: 40000\r\n\r\nxx"));
  ASSERT_TRUE(wait_until([&] { return server_->stats().buffered_bytes == 40000; }));
  // Another body does not fit: 503 on the headers alone.
  HttpClient refused("127.0.0.1", port_);
  ASSERT_TRUE(refused.send_raw("POST /b HTTP/1.1\r\nContent-Length: 30000\r\n\r\n"));
  HttpClientResponse r = refused.read_response();
  ASSERT_EQ(r.status, 503) << r.error;
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_NE(r.body.find("\"status\":503"), std::string::npos) << r.body;
  EXPECT_TRUE(refused.wait_closed());
  EXPECT_EQ(stats().bodies_refused_budget, 1u);
  // A request without a body still goes through; the holder finishes; the budget is back.
  HttpClient small("127.0.0.1", port_);
  EXPECT_EQ(small.request("GET", "/nobody").status, 200);
  ASSERT_TRUE(holder.send_raw(std::string(40000 - 2, 'y')));
  EXPECT_EQ(holder.read_response().status, 200);
  ASSERT_TRUE(wait_until([&] { return server_->stats().buffered_bytes == 0; }));
  HttpClient again("127.0.0.1", port_);
  EXPECT_EQ(again.request("POST", "/b", std::string(30000, 'z')).status, 200);
}

TEST_F(HttpServerTest, UnwrittenResponsesCountInTheBudget) {
  constexpr std::size_t kHuge = std::size_t{32} << 20;  // more than loopback socket buffers hold
  HttpLimits limits;
  limits.max_buffered_bytes = 1 << 20;
  limits.max_queued_write_bytes = 2 * kHuge;
  handler_ = [](HttpRequest&& request, HttpServer::Responder respond) {
    respond(text(request.path == "/huge" ? std::string(kHuge, 'h') : "ok"));
  };
  ASSERT_FALSE(start(limits));
  HttpClient slow_reader("127.0.0.1", port_);
  ASSERT_TRUE(slow_reader.send_raw("GET /huge HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(wait_until([&] { return server_->stats().buffered_bytes >= kHuge; }));
  HttpClient poster("127.0.0.1", port_);
  EXPECT_EQ(poster.request("POST", "/x", "body").status, 503);
  HttpClientResponse huge = slow_reader.read_response();
  ASSERT_EQ(huge.status, 200) << huge.error;
  EXPECT_EQ(huge.body.size(), kHuge);
  ASSERT_TRUE(wait_until([&] { return server_->stats().buffered_bytes == 0; }));
  EXPECT_EQ(poster.request("POST", "/x", "body").status, 200);
}

TEST_F(HttpServerTest, AuthorizeAnswers401BeforeTheBody) {
  authorize_ = [](const HttpRequest& head) -> std::optional<HttpResponse> {
    if (head.header("authorization") != nullptr || head.path == "/open") return std::nullopt;
    HttpResponse r = text("no token", 401);
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
  };
  int handled = 0;
  handler_ = [&](HttpRequest&& request, HttpServer::Responder respond) {
    ++handled;
    echo(std::move(request), std::move(respond));
  };
  ASSERT_FALSE(start());
  // A body is announced with Expect: the 401 comes instead of the 100, the body is never sent.
  HttpClient client("127.0.0.1", port_);
  ASSERT_TRUE(client.send_raw(
      "PUT /streams/s HTTP/1.1\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"));
  HttpClientResponse r = client.read_response();
  ASSERT_EQ(r.status, 401) << r.error;
  EXPECT_EQ(*r.header("www-authenticate"), "Bearer");
  EXPECT_EQ(*r.header("connection"), "close");
  EXPECT_TRUE(client.wait_closed());
  // Without Expect, the same: answered on the headers alone.
  HttpClient plain("127.0.0.1", port_);
  ASSERT_TRUE(plain.send_raw("POST /streams/s HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"));
  EXPECT_EQ(plain.read_response().status, 401);
  // Without a body the connection is kept.
  HttpClient get("127.0.0.1", port_);
  EXPECT_EQ(get.request("GET", "/streams").status, 401);
  EXPECT_EQ(get.request("GET", "/open").status, 200);
  EXPECT_EQ(get.connects(), 1);
  // With the token, Expect gets its 100 and the body goes to the handler.
  HttpClient ok("127.0.0.1", port_);
  ASSERT_TRUE(
      ok.send_raw("PUT /streams/s HTTP/1.1\r\nAuthorization: Bearer t\r\n"
                  "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  ASSERT_EQ(ok.read_response().status, 100);
  ASSERT_TRUE(ok.send_raw("hello"));
  EXPECT_EQ(ok.read_response().body, "PUT /streams/s?\nhello");
  EXPECT_EQ(loop_.call([&] { return handled; }), 2);
  EXPECT_EQ(stats().early_responses, 3u);
  EXPECT_EQ(stats().buffered_bytes, 0u);
}

TEST_F(HttpServerTest, LongestIdleConnectionMakesRoom) {
  HttpLimits limits;
  limits.max_connections = 3;
  ASSERT_FALSE(start(limits));
  std::vector<HttpClient> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back("127.0.0.1", port_);
    ASSERT_EQ(clients.back().request("GET", "/c" + std::to_string(i)).status, 200);
  }
  // Idle order now: 0, 2, 1 (1 was used last).
  ASSERT_EQ(clients[1].request("GET", "/again").status, 200);
  HttpClient newcomer("127.0.0.1", port_);
  HttpClientResponse r = newcomer.request("GET", "/new");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(clients[0].wait_closed());  // the longest idle one made room
  EXPECT_EQ(stats().connections_evicted, 1u);
  EXPECT_EQ(stats().connections_rejected, 0u);
  for (int i : {1, 2}) {
    EXPECT_EQ(clients[i].request("GET", "/still").status, 200);
    EXPECT_EQ(clients[i].connects(), 1) << i;
  }
}

TEST_F(HttpServerTest, ConnectionsPerClientAreCapped) {
  HttpLimits limits;
  limits.max_connections_per_client = 2;
  ASSERT_FALSE(start(limits));
  HttpClient a("127.0.0.1", port_);
  HttpClient b("127.0.0.1", port_);
  ASSERT_EQ(a.request("GET", "/a").status, 200);
  ASSERT_EQ(b.request("GET", "/b").status, 200);
  HttpClient c("127.0.0.1", port_);
  HttpClientResponse r = c.read_response();
  ASSERT_EQ(r.status, 503) << r.error;
  EXPECT_NE(r.body.find("max_connections_per_client"), std::string::npos) << r.body;
  EXPECT_TRUE(c.wait_closed());
  EXPECT_EQ(stats().connections_refused_per_client, 1u);
  CONNECT_FROM(other, "127.0.0.2");
  EXPECT_EQ(other.request("GET", "/other").status, 200);
  a.close();
  ASSERT_TRUE(wait_until([&] { return server_->open_connections() == 2; }));
  HttpClient d("127.0.0.1", port_);
  EXPECT_EQ(d.request("GET", "/d").status, 200);
}

TEST_F(HttpServerTest, HealthzAnswersThroughIdleFloodAndSlowloris) {
  HttpLimits limits;
  limits.max_connections = 16;
  limits.max_connections_per_client = 8;
  ASSERT_FALSE(start(limits));
  // Slowloris from one address: headers dribbled, never finished. Over its cap: 503.
  std::vector<HttpClient> slow;
  for (int i = 0; i < 12; ++i) {
    CONNECT_FROM(s, "127.0.0.2");
    ASSERT_TRUE(s.send_raw("GET /slow HTTP/1.1\r\nX-A: "));
    slow.push_back(std::move(s));
  }
  int slow_refused = 0;
  for (int i = 8; i < 12; ++i) slow_refused += slow[i].read_response().status == 503 ? 1 : 0;
  EXPECT_EQ(slow_refused, 4);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(slow[i].send_raw("a"));
  // Idle connections from two more addresses fill every other slot.
  std::vector<HttpClient> idle;
  for (const char* source : {"127.0.0.3", "127.0.0.4"}) {
    for (int i = 0; i < 4; ++i) {
      CONNECT_FROM(c, source);
      if (i % 2 == 0) ASSERT_EQ(c.request("GET", "/once").status, 200);  // the rest send nothing
      idle.push_back(std::move(c));
    }
  }
  ASSERT_TRUE(wait_until([&] { return server_->open_connections() == 16; }));
  // The well-behaved client is answered, on new connections and on a kept one.
  std::vector<HttpClient> good;  // kept open: each newcomer has to find room
  for (int i = 0; i < 3; ++i) {
    good.emplace_back("127.0.0.1", port_);
    HttpClientResponse r = good.back().request("GET", "/healthz");
    ASSERT_EQ(r.status, 200) << i << ": " << r.error;
    EXPECT_EQ(good.back().request("GET", "/healthz").status, 200);
    EXPECT_EQ(good.back().connects(), 1);
  }
  EXPECT_EQ(stats().connections_evicted, 3u);
  EXPECT_EQ(stats().connections_rejected, 0u);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(slow[i].connected()) << i;  // never evicted
}

// Every slot holds a slowloris (a request head begun, never finished) and none is idle: the
// oldest unfinished head is closed to make room, so a well-behaved client is still answered.
TEST_F(HttpServerTest, SlowHeadsMakeRoomWhenNoConnectionIsIdle) {
  HttpLimits limits;
  limits.max_connections = 4;
  limits.max_connections_per_client = 8;
  limits.slow_head_ms = 0;  // any unfinished head may go (the default waits 1 s)
  ASSERT_FALSE(start(limits));
  std::vector<HttpClient> slow;
  for (int i = 0; i < 4; ++i) {
    CONNECT_FROM(s, "127.0.0.2");
    ASSERT_TRUE(s.send_raw("GET /slow HTTP/1.1\r\nX-A: "));
    slow.push_back(std::move(s));
    // The server orders heads by when it read them: let it read this one before the next.
    ASSERT_TRUE(wait_until([&] { return server_->stats().unfinished_heads == slow.size(); }));
  }
  ASSERT_TRUE(wait_until([&] { return server_->open_connections() == 4; }));
  // The first client makes room by closing the oldest unfinished head; the next ones find the
  // slot the previous one left (each closes after its answer).
  for (int i = 0; i < 3; ++i) {
    HttpClient good("127.0.0.1", port_);
    HttpClientResponse r = good.request("GET", "/healthz");
    ASSERT_EQ(r.status, 200) << i << ": " << r.error;
  }
  EXPECT_EQ(stats().connections_rejected, 0u);
  EXPECT_EQ(stats().connections_evicted, 1u);
  EXPECT_TRUE(slow[0].wait_closed()) << "the oldest unfinished head goes first";
  EXPECT_TRUE(wait_until([&] { return server_->open_connections() == 3; }))
      << "the other slowloris connections stay until their request timeout";
}

TEST(HttpLimits, ByteBudgetReservesOnlyWhatFits) {
  detail::ByteBudget budget(100);
  EXPECT_TRUE(budget.try_reserve(60));
  EXPECT_FALSE(budget.try_reserve(41));
  EXPECT_TRUE(budget.try_reserve(40));
  budget.charge(50);  // a response: always charged
  EXPECT_EQ(budget.used_bytes(), 150u);
  EXPECT_FALSE(budget.try_reserve(1));
  budget.release(150);
  EXPECT_FALSE(budget.try_reserve(101));
  EXPECT_TRUE(budget.try_reserve(100));
}

TEST(HttpLimits, OneWarningPerAddressPerMinute) {
  detail::PeerWarnings warnings;
  EXPECT_TRUE(warnings.should_warn("10.0.0.1", 1000));
  EXPECT_FALSE(warnings.should_warn("10.0.0.1", 1001));
  EXPECT_FALSE(warnings.should_warn("10.0.0.1", 60999));
  EXPECT_TRUE(warnings.should_warn("10.0.0.2", 1002));
  EXPECT_TRUE(warnings.should_warn("10.0.0.1", 61000));
  // Bounded: many addresses never grow the table past its maximum.
  for (std::size_t i = 0; i < 3 * detail::PeerWarnings::kMaxAddresses; ++i) {
    warnings.should_warn("a" + std::to_string(i), 70000);
  }
  EXPECT_LE(warnings.size(), detail::PeerWarnings::kMaxAddresses);
}

TEST(HttpLimits, PeerAddressDropsThePort) {
  EXPECT_EQ(detail::peer_address("127.0.0.1:5000"), "127.0.0.1");
  EXPECT_EQ(detail::peer_address("[::1]:5000"), "[::1]");
  EXPECT_EQ(detail::peer_address("?"), "?");
}

}  // namespace
}  // namespace chunkd::io
