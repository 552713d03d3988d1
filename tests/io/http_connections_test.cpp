// HttpServer connections over their life, against the blocking test client
// (tests/io/http_test_fixture.hpp): idle and slow clients timed out (408), connections over the
// limit refused (503) when none is idle, a thousand keep-alive connections at once, and a graceful
// close with its shutdown grace.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "io/http_server.hpp"
#include "tests/io/http_test_fixture.hpp"
#include "tests/support/http_client.hpp"

namespace chunkd::io {
namespace {

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

}  // namespace
}  // namespace chunkd::io
