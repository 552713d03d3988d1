// The fixture of the HttpServer tests (http_server_test.cpp, http_protocol_test.cpp,
// http_connections_test.cpp, http_limits_test.cpp): the server's loop runs on its own thread
// (LoopThread); the test thread talks HTTP to it with the blocking test client and hands work to
// the loop thread with post()/call().
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <uv.h>

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

#include "io/http_server.hpp"
#include "tests/support/http_client.hpp"

namespace chunkd::io {
namespace {

using chunkd::test::HttpClient;
using chunkd::test::HttpClientResponse;
using namespace std::chrono_literals;

constexpr auto kGuard = 30s;  // failure guard only: nothing here is expected to take this long

// Runs a libuv loop on its own thread; the test thread hands it work with post() / call().
class LoopThread {
 public:
  LoopThread() {
    uv_loop_init(&loop_);
    uv_async_init(&loop_, &async_, &on_async);
    async_.data = this;
  }
  ~LoopThread() {
    if (thread_.joinable()) thread_.join();
  }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  uv_loop_t* loop() { return &loop_; }
  bool running() const { return thread_.joinable(); }
  void start() {
    thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
  }
  void post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(fn));
    }
    uv_async_send(&async_);
  }
  template <class F>
  auto call(F fn) -> decltype(fn()) {
    using R = decltype(fn());
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    post([&] {
      if constexpr (std::is_void_v<R>) {
        fn();
        promise.set_value();
      } else {
        promise.set_value(fn());
      }
    });
    return future.get();
  }
  // Last post: closes the wake-up handle; uv_run returns once every other handle is closed too.
  void stop_and_join() {
    if (running()) {
      post([this] { uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr); });
      thread_.join();
    } else if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) {
      uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
      uv_run(&loop_, UV_RUN_DEFAULT);
    }
  }
  int close_loop() { return uv_loop_close(&loop_); }

 private:
  static void on_async(uv_async_t* async) {
    auto* self = static_cast<LoopThread*>(async->data);
    std::deque<std::function<void()>> work;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      work.swap(self->queue_);
    }
    for (auto& fn : work) fn();
  }

  uv_loop_t loop_{};
  uv_async_t async_{};
  std::thread thread_;
  std::mutex mutex_;
  std::deque<std::function<void()>> queue_;
};

[[maybe_unused]] std::string error_json(int status, std::string_view message) {
  return "{\"status\":" + std::to_string(status) + ",\"message\":\"" + std::string(message) + "\"}";
}

[[maybe_unused]] void echo(HttpRequest&& request, HttpServer::Responder respond) {
  HttpResponse response;
  response.content_type = "text/plain";
  response.body = request.method + " " + request.path + "?" + request.query + "\n" + request.body;
  if (const std::string* tag = request.header("x-tag"))
    response.headers.emplace_back("X-Tag", *tag);
  response.headers.emplace_back("X-Peer", request.peer);
  respond(std::move(response));
}

[[maybe_unused]] HttpResponse text(std::string body, int status = 200) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/plain";
  response.body = std::move(body);
  return response;
}

// Answers `respond` from a libuv timer after `delay_ms` (loop thread only).
[[maybe_unused]] void respond_later(uv_loop_t* loop, HttpServer::Responder respond,
                                    HttpResponse response, int delay_ms) {
  struct Later {
    uv_timer_t timer;
    HttpServer::Responder respond;
    HttpResponse response;
  };
  auto* later = new Later{{}, std::move(respond), std::move(response)};
  uv_timer_init(loop, &later->timer);
  later->timer.data = later;
  uv_timer_start(
      &later->timer,
      [](uv_timer_t* timer) {
        auto* l = static_cast<Later*>(timer->data);
        l->respond(std::move(l->response));
        uv_close(reinterpret_cast<uv_handle_t*>(&l->timer),
                 [](uv_handle_t* handle) { delete static_cast<Later*>(handle->data); });
      },
      static_cast<std::uint64_t>(delay_ms), 0);
}

[[maybe_unused]] bool readable_now(const HttpClient& client) {
  pollfd p{client.fd(), POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

class HttpServerTest : public ::testing::Test {
 protected:
  // Creates the server, listens on an ephemeral port of `host`, starts the loop thread.
  std::error_code start(HttpLimits limits = {}, const std::string& host = "127.0.0.1") {
    server_ = std::make_unique<HttpServer>(
        loop_.loop(), limits,
        [this](HttpRequest&& request, HttpServer::Responder respond) {
          handler_(std::move(request), std::move(respond));
        },
        &error_json);
    if (authorize_) server_->set_authorize(authorize_);
    server_->set_refused_observer([this](int status) { refused_.push_back(status); });
    auto listening = server_->listen(host, 0);
    if (listening) port_ = server_->port();
    loop_.start();
    return listening ? std::error_code{} : listening.error().code;
  }

  void TearDown() override {
    if (server_ && !closed_) close_server();
    loop_.stop_and_join();
    server_.reset();
    pending_.clear();
    EXPECT_EQ(loop_.close_loop(), 0);
  }

  // close() on the loop thread; returns when `done` ran (or the guard expired: false).
  bool close_server() {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    loop_.post([this, done] { server_->close([done] { done->set_value(); }); });
    closed_ = true;
    return finished.wait_for(kGuard) == std::future_status::ready;
  }

  HttpServerStats stats() {
    return loop_.call([this] { return server_->stats(); });
  }
  std::size_t open_connections() {
    return loop_.call([this] { return server_->open_connections(); });
  }
  std::size_t pending_count() {
    return loop_.call([this] { return pending_.size(); });
  }
  // Polls `condition` on the loop thread until it holds (false if the guard expires).
  bool wait_until(const std::function<bool()>& condition) {
    auto deadline = std::chrono::steady_clock::now() + kGuard;
    while (std::chrono::steady_clock::now() < deadline) {
      if (loop_.call([&] { return condition(); })) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  // Answers the i-th parked request (loop thread).
  void answer(std::size_t i, HttpResponse response) {
    loop_.call([&] { pending_.at(i)(std::move(response)); });
  }
  // Handler that parks every request's Responder in pending_ (loop thread).
  void park_requests() {
    handler_ = [this](HttpRequest&& request, HttpServer::Responder respond) {
      paths_.push_back(request.path);
      pending_.push_back(std::move(respond));
    };
  }

  LoopThread loop_;
  std::unique_ptr<HttpServer> server_;
  std::uint16_t port_ = 0;
  bool closed_ = false;
  std::function<void(HttpRequest&&, HttpServer::Responder)> handler_ = &echo;
  std::vector<HttpServer::Responder> pending_;  // loop thread
  std::vector<std::string> paths_;              // loop thread
  std::vector<int> refused_;                    // loop thread: told by the refused observer
  HttpServer::Authorize authorize_;             // set before start()
};

}  // namespace
}  // namespace chunkd::io
