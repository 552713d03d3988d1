// MqttTransport's channels against a real broker (Mosquitto, started on a free loopback port):
// a channel is one pool connection, and a connection that refused stops being writable() until
// it drained to where the pool fires on_writable, while the other connections stay writable;
// and how the pool's publish results map to the transport's.
#include "engine/mqtt_transport.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "tests/support/broker.hpp"
#include "tests/support/loop.hpp"

namespace chunkd::engine {
namespace {

using chunkd::test::TestBroker;

constexpr int kGuardMs = 30000;  // failure guard only; nothing waits for it on success

// Runs the loop until `pred` holds or the guard expires (tests/support/loop.hpp).
bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, int guard_ms = kGuardMs) {
  return chunkd::test::run_until(loop, pred, guard_ms);
}

class MqttTransportChannels : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    ASSERT_TRUE(broker_.start()) << broker_.error();
    io::MqttOptions o;
    o.uri = broker_.uri();
    o.client_id = "chunkd-transport-test";
    o.connections = 2;
    o.max_queued_bytes = 256 * 1024;
    transport_ = std::make_unique<MqttTransport>(&loop_, o);
    transport_->on_writable([this] { ++writable_calls_; });
  }

  void TearDown() override {
    if (transport_) {
      bool done = false;
      transport_->stop(1000, [&] { done = true; });
      EXPECT_TRUE(run_until(&loop_, [&] { return done; }));
      transport_.reset();
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  uv_loop_t loop_{};
  TestBroker broker_;
  std::unique_ptr<MqttTransport> transport_;
  int writable_calls_ = 0;
};

TEST(MqttTransportTest, MapsEveryPoolResult) {
  using R = Transport::SendResult;
  EXPECT_EQ(MqttTransport::map(io::PublishResult::Ok), R::Ok);
  EXPECT_EQ(MqttTransport::map(io::PublishResult::Backpressure), R::Backpressure);
  EXPECT_EQ(MqttTransport::map(io::PublishResult::NotConnected), R::NotConnected);
  EXPECT_EQ(MqttTransport::map(io::PublishResult::Error), R::Error);
}

TEST_F(MqttTransportChannels, AFullConnectionIsTheOnlyChannelNotWritable) {
  ASSERT_TRUE(transport_->start([](auto, auto, auto) {}, [](bool) {}));
  ASSERT_TRUE(run_until(&loop_, [&] { return transport_->ready(); }));
  // Two things on different connections (the route is a stable hash of the name).
  std::string full_key = "thing-0";
  std::string other_key;
  for (int i = 1; i < 100 && other_key.empty(); ++i) {
    std::string k = "thing-" + std::to_string(i);
    if (transport_->channel_of(k) != transport_->channel_of(full_key)) other_key = k;
  }
  ASSERT_FALSE(other_key.empty()) << "every name on one connection";
  EXPECT_EQ(transport_->channel_of(full_key), transport_->channel_of(full_key));
  const std::size_t full = transport_->channel_of(full_key);
  const std::size_t other = transport_->channel_of(other_key);
  EXPECT_TRUE(transport_->writable(full));

  // A broker that stops reading: the kernel buffers fill, then the connection's queue.
  broker_.pause();
  std::string payload(4096, 'b');
  const auto bytes = std::as_bytes(std::span<const char>(payload.data(), payload.size()));
  bool refused = false;
  for (int i = 0; i < 100000 && !refused; ++i) {
    auto r = transport_->send(full_key, "bp/" + full_key, bytes, 0);
    if (r != Transport::SendResult::Ok) {
      ASSERT_EQ(r, Transport::SendResult::Backpressure);
      refused = true;
    }
  }
  ASSERT_TRUE(refused);
  EXPECT_FALSE(transport_->writable(full));
  EXPECT_TRUE(transport_->writable(other)) << "the other connection has room";
  EXPECT_EQ(transport_->send(other_key, "bp/" + other_key, bytes, 0), Transport::SendResult::Ok);

  broker_.resume();
  ASSERT_TRUE(run_until(&loop_, [&] { return writable_calls_ > 0; }));
  EXPECT_TRUE(transport_->writable(full)) << "writable when on_writable fired";
}

}  // namespace
}  // namespace chunkd::engine
