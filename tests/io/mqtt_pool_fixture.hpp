// The fixture of the MqttPool tests (mqtt_pool_test.cpp, mqtt_pool_lifecycle_test.cpp,
// mqtt_pool_options_test.cpp): a private Mosquitto broker per test (TestBroker), the pool on the
// test's own libuv loop, and the "device" side as a plain libmosquitto client on its own thread
// (RawClient), independent of the code under test.
#pragma once

#include <gtest/gtest.h>
#include <mosquitto.h>
#include <uv.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "io/mqtt_pool.hpp"
#include "tests/support/broker.hpp"
#include "tests/support/loop.hpp"

namespace {

using chunkd::io::MqttOptions;
using chunkd::io::MqttPool;
using chunkd::io::PublishResult;
using chunkd::test::TestBroker;

constexpr int kGuardMs = 30000;  // failure guard only; nothing waits for it on success

// Runs the loop until `pred` holds or the guard expires (tests/support/loop.hpp).
[[maybe_unused]] bool run_until(uv_loop_t* loop, const std::function<bool()>& pred,
                                int guard_ms = kGuardMs) {
  return chunkd::test::run_until(loop, pred, guard_ms);
}

[[maybe_unused]] std::uint32_t seq_of(const std::string& payload) {
  std::uint32_t seq = 0;
  if (payload.size() >= sizeof seq) std::memcpy(&seq, payload.data(), sizeof seq);
  return seq;
}

// A libmosquitto client with its own network thread.
class RawClient {
 public:
  struct Message {
    std::string topic;
    std::string payload;
  };

  RawClient() {
    static const int init = mosquitto_lib_init();
    (void)init;
    mosq_ = mosquitto_new(nullptr, true, this);
    mosquitto_connect_callback_set(mosq_, [](mosquitto*, void* self, int rc) {
      auto* c = static_cast<RawClient*>(self);
      std::lock_guard lock(c->mu_);
      c->connected_ = rc == 0;
      c->cv_.notify_all();
    });
    mosquitto_subscribe_callback_set(mosq_, [](mosquitto*, void* self, int, int, const int*) {
      auto* c = static_cast<RawClient*>(self);
      std::lock_guard lock(c->mu_);
      ++c->subacks_;
      c->cv_.notify_all();
    });
    mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self, const mosquitto_message* m) {
      auto* c = static_cast<RawClient*>(self);
      std::lock_guard lock(c->mu_);
      c->messages_.push_back({m->topic, std::string(static_cast<const char*>(m->payload),
                                                    static_cast<std::size_t>(m->payloadlen))});
    });
  }

  ~RawClient() {
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, false);
    mosquitto_destroy(mosq_);
  }

  bool connect(std::uint16_t port) {
    if (mosquitto_connect(mosq_, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) return false;
    if (mosquitto_loop_start(mosq_) != MOSQ_ERR_SUCCESS) return false;
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(kGuardMs), [&] { return connected_; });
  }

  bool subscribe(const std::string& filter, int qos = 0) {
    int before = 0;
    {
      std::lock_guard lock(mu_);
      before = subacks_;
    }
    if (mosquitto_subscribe(mosq_, nullptr, filter.c_str(), qos) != MOSQ_ERR_SUCCESS) return false;
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(kGuardMs),
                        [&] { return subacks_ > before; });
  }

  bool publish(const std::string& topic, const std::string& payload) {
    return mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), 0, false) == MOSQ_ERR_SUCCESS;
  }

  std::size_t count() {
    std::lock_guard lock(mu_);
    return messages_.size();
  }

  std::vector<Message> messages() {
    std::lock_guard lock(mu_);
    return messages_;
  }

 private:
  mosquitto* mosq_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  int subacks_ = 0;
  std::vector<Message> messages_;
};

[[maybe_unused]] std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

class MqttPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    ASSERT_TRUE(broker_.start()) << broker_.error();
  }

  void TearDown() override {
    pool_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  MqttOptions options() {
    MqttOptions o;
    o.uri = broker_.uri();
    o.client_id = "chunkd-test";
    o.connections = 2;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 500;
    return o;
  }

  MqttPool& make_pool(MqttOptions o) {
    pool_ = std::make_unique<MqttPool>(
        &loop_, std::move(o),
        [this](std::string_view topic, std::span<const std::byte> payload) {
          received_.push_back(
              {std::string(topic),
               std::string(reinterpret_cast<const char*>(payload.data()), payload.size())});
        },
        [this](bool ready) { transitions_.push_back(ready); });
    pool_->on_writable([this] { ++writable_calls_; });
    return *pool_;
  }

  bool start_and_wait_ready(MqttPool& pool) {
    if (!pool.start()) return false;
    return run_until(&loop_, [&] { return pool.ready(); });
  }

  bool stop_pool(MqttPool& pool, int flush_timeout_ms = 10000) {
    bool done = false;
    pool.stop(flush_timeout_ms, [&] { done = true; });
    return run_until(&loop_, [&] { return done; });
  }

  // Publishes `count` messages of `size` bytes (first 4 bytes: sequence number from `first`) on
  // `conn`, waiting for on_writable whenever the pool pushes back.
  std::uint32_t publish_sequence(MqttPool& pool, std::size_t conn, const std::string& topic,
                                 std::uint32_t first, std::uint32_t count, std::size_t size) {
    std::string payload(size, 'x');
    std::uint32_t sent = 0;
    while (sent < count) {
      const std::uint32_t seq = first + sent;
      std::memcpy(payload.data(), &seq, sizeof seq);
      PublishResult r = pool.publish(conn, topic, bytes_of(payload), 0);
      if (r == PublishResult::Ok) {
        ++sent;
      } else if (r == PublishResult::Backpressure) {
        const int before = writable_calls_;
        if (!run_until(&loop_, [&] { return writable_calls_ > before; })) break;
      } else {
        ADD_FAILURE() << "publish failed with " << static_cast<int>(r);
        break;
      }
    }
    return sent;
  }

  uv_loop_t loop_{};
  TestBroker broker_;
  std::unique_ptr<MqttPool> pool_;
  std::vector<RawClient::Message> received_;
  std::vector<bool> transitions_;
  int writable_calls_ = 0;
};

}  // namespace
