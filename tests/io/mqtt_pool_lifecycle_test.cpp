// MqttPool against a private Mosquitto broker, across its life (tests/io/mqtt_pool_fixture.hpp): a
// stalled socket given up after the keep-alive, reconnecting after a broker restart or when the
// broker first appears, stop() while reconnecting, with its flush and after its flush timeout,
// replies and stop() from inside the message handler, a throwing handler, the library's log at
// debug level, and destruction without stop().
#include <gtest/gtest.h>
#include <uv.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/log.hpp"
#include "io/mqtt_pool.hpp"
#include "tests/io/mqtt_pool_fixture.hpp"

namespace {

// A broker that takes no byte for 1.5 keep-alive periods is given up on and reconnected, even
// while the pool's own buffer keeps libmosquitto's keep-alive from running.
TEST_F(MqttPoolTest, StalledSocketIsReconnectedAfterKeepalive) {
  MqttOptions o = options();
  o.connections = 1;
  o.keepalive_s = 5;
  o.max_queued_bytes = 64u << 20;
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));
  ASSERT_TRUE(run_until(&loop_, [&] { return transitions_.size() == 1; }));

  broker_.pause();
  const std::string payload(64 * 1024, 's');
  // Fill the kernel's buffers until a write is refused and bytes stay queued in the pool.
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(pool.publish(0, "s/thing", bytes_of(payload), 0), PublishResult::Ok);
    run_until(&loop_, [] { return true; });
    if (pool.queued_bytes(0) > 4 * payload.size()) break;
  }
  ASSERT_GT(pool.queued_bytes(0), 4 * payload.size()) << "the socket never filled";
  ASSERT_TRUE(run_until(
      &loop_, [&] { return transitions_.size() >= 2; }, 20000));
  EXPECT_FALSE(transitions_[1]);
  EXPECT_EQ(pool.queued_bytes(0), 0u);  // the stalled bytes were dropped with the connection

  broker_.resume();
  ASSERT_TRUE(run_until(
      &loop_, [&] { return pool.ready(); }, 20000));
  EXPECT_GE(pool.stats().reconnects, 1u);
  EXPECT_EQ(pool.publish(0, "s/thing", bytes_of("again"), 0), PublishResult::Ok);
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, ReconnectsAfterBrokerRestart) {
  MqttOptions o = options();
  o.subscriptions = {"r/+/get"};
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));
  ASSERT_TRUE(run_until(&loop_, [&] { return transitions_.size() == 1; }));

  ASSERT_TRUE(broker_.restart()) << broker_.error();
  ASSERT_TRUE(run_until(&loop_, [&] { return transitions_.size() >= 3; }))
      << "transitions: " << transitions_.size();
  EXPECT_EQ(transitions_, (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(pool.ready());
  EXPECT_GE(pool.stats().reconnects, 2u);

  // Resubscribed: requests reach the pool again.
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("r/out"));
  ASSERT_TRUE(device.publish("r/thing/get", "again"));
  ASSERT_TRUE(run_until(&loop_, [&] { return !received_.empty(); }));
  EXPECT_EQ(received_.back().topic, "r/thing/get");
  EXPECT_EQ(received_.back().payload, "again");

  // And replies go out on every connection.
  for (std::size_t c = 0; c < pool.connections(); ++c) {
    ASSERT_EQ(pool.publish(c, "r/out", bytes_of("reply"), 0), PublishResult::Ok);
  }
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= pool.connections(); }));
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, NotConnectedUntilBrokerAppearsThenWritable) {
  broker_.stop();  // keep its port: nothing listens there now
  MqttOptions o = options();
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(pool.start());
  EXPECT_EQ(pool.publish(0, "n/thing", bytes_of("early"), 0), PublishResult::NotConnected);
  EXPECT_EQ(pool.stats().publish_refused_disconnected, 1u);
  EXPECT_FALSE(pool.ready());

  ASSERT_TRUE(broker_.restart()) << broker_.error();
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.ready(); }));
  ASSERT_TRUE(run_until(&loop_, [&] { return writable_calls_ > 0; }));
  EXPECT_EQ(pool.publish(0, "n/thing", bytes_of("now"), 0), PublishResult::Ok);
  EXPECT_EQ(pool.stats().reconnects, 0u);  // first connections, not reconnections
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, StopWhileReconnecting) {
  broker_.stop();
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(pool.start());
  int spins = 0;  // let a few attempts fail, so stop() meets connections between retries
  run_until(&loop_, [&] { return ++spins > 50; });
  ASSERT_TRUE(stop_pool(pool));
  EXPECT_TRUE(transitions_.empty());
}

TEST_F(MqttPoolTest, StopFlushesQueuedMessages) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("f/#"));
  MqttOptions o = options();
  o.max_queued_bytes = 64u << 20;
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));

  broker_.pause();
  std::string payload(4096, 'f');
  std::uint32_t accepted = 0;
  // Past 4 MiB queued, one sendmsg() cannot carry it all: the flush takes several.
  while (pool.queued_bytes(1) < (6u << 20) && accepted < 40000) {
    std::memcpy(payload.data(), &accepted, sizeof accepted);
    ASSERT_EQ(pool.publish(1, "f/thing", bytes_of(payload), 0), PublishResult::Ok);
    ++accepted;
  }
  ASSERT_GE(pool.queued_bytes(1), 6u << 20) << "the socket never filled";

  bool done = false;
  pool.stop(kGuardMs, [&] { done = true; });
  EXPECT_EQ(pool.publish(1, "f/thing", bytes_of(payload), 0), PublishResult::NotConnected);
  broker_.resume();
  ASSERT_TRUE(run_until(&loop_, [&] { return done; }));
  EXPECT_EQ(pool.total_queued_bytes(), 0u);

  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= accepted; }))
      << "received " << device.count() << " of " << accepted;
  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), accepted);
  for (std::uint32_t i = 0; i < accepted; ++i) ASSERT_EQ(seq_of(messages[i].payload), i);
}

TEST_F(MqttPoolTest, StopGivesUpAfterFlushTimeout) {
  MqttOptions o = options();
  o.max_queued_bytes = 64u << 20;
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));

  broker_.pause();
  const std::string payload(4096, 't');
  int accepted = 0;
  while (pool.queued_bytes(0) == 0 && accepted < 40000) {
    ASSERT_EQ(pool.publish(0, "t/thing", bytes_of(payload), 0), PublishResult::Ok);
    ++accepted;
  }
  ASSERT_GT(pool.queued_bytes(0), 0u);
  bool done = false;
  pool.stop(100, [&] { done = true; });
  ASSERT_TRUE(run_until(&loop_, [&] { return done; }));
  broker_.resume();
}

// The engine replies from inside the message handler: on the subscriber connection itself (in
// the middle of libmosquitto's read) and on another one.
TEST_F(MqttPoolTest, RepliesFromInsideTheMessageHandler) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("e/+/reply"));
  MqttOptions o = options();
  o.subscriptions = {"e/+/get"};
  PublishResult r0 = PublishResult::Error;
  PublishResult r1 = PublishResult::Error;
  pool_ = std::make_unique<MqttPool>(
      &loop_, o,
      [&](std::string_view, std::span<const std::byte> payload) {
        r0 = pool_->publish(0, "e/0/reply", payload, 0);
        r1 = pool_->publish(1, "e/1/reply", payload, 0);
      },
      nullptr);
  ASSERT_TRUE(start_and_wait_ready(*pool_));
  ASSERT_TRUE(device.publish("e/thing/get", "ping"));
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= 2; }));
  EXPECT_EQ(r0, PublishResult::Ok);
  EXPECT_EQ(r1, PublishResult::Ok);
  std::set<std::string> topics;
  for (const auto& m : device.messages()) {
    EXPECT_EQ(m.payload, "ping");
    topics.insert(m.topic);
  }
  EXPECT_EQ(topics, (std::set<std::string>{"e/0/reply", "e/1/reply"}));
  ASSERT_TRUE(run_until(&loop_, [&] { return pool_->total_queued_bytes() == 0; }));
  ASSERT_TRUE(stop_pool(*pool_));
}

TEST_F(MqttPoolTest, StopFromInsideTheMessageHandler) {
  MqttOptions o = options();
  o.subscriptions = {"s/+/get"};
  bool done = false;
  pool_ = std::make_unique<MqttPool>(
      &loop_, o,
      [&](std::string_view, std::span<const std::byte>) {
        pool_->stop(1000, [&] { done = true; });
      },
      nullptr);
  ASSERT_TRUE(start_and_wait_ready(*pool_));
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.publish("s/thing/get", "stop"));
  ASSERT_TRUE(run_until(&loop_, [&] { return done; }));
  EXPECT_FALSE(pool_->ready());
}

// A callback that throws is a bug: the exception is not swallowed but terminates the process
// (libstdc++ prints it), since the C trampolines that call the handlers are noexcept.
TEST_F(MqttPoolTest, HandlerExceptionTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  MqttOptions o = options();
  o.subscriptions = {"x/+/get"};
  EXPECT_DEATH(
      {
        pool_ = std::make_unique<MqttPool>(
            &loop_, o,
            [&](std::string_view, std::span<const std::byte>) {
              throw std::runtime_error("handler failure");
            },
            nullptr);
        if (!start_and_wait_ready(*pool_)) std::_Exit(3);
        RawClient device;
        if (!device.connect(broker_.port()) || !device.publish("x/a/get", "1")) std::_Exit(4);
        run_until(&loop_, [] { return false; });
        std::_Exit(5);  // not reached: the handler's exception terminates
      },
      "handler failure");
}

// At debug level libmosquitto's own log lines are forwarded (one per packet).
TEST_F(MqttPoolTest, DebugLevelForwardsLibraryLog) {
  chunkd::io::set_log_level(chunkd::io::LogLevel::Debug);
  MqttOptions o = options();
  o.connections = 1;
  MqttPool& pool = make_pool(o);
  const bool ready = start_and_wait_ready(pool);
  chunkd::io::set_log_level(chunkd::io::LogLevel::Info);
  ASSERT_TRUE(ready);
  EXPECT_EQ(pool.publish(0, "dbg/thing", bytes_of("x"), 0), PublishResult::Ok);
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, DestroyWithoutStopReleasesEverything) {
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(start_and_wait_ready(pool));
  ASSERT_EQ(pool.publish(0, "d/thing", bytes_of("bye"), 0), PublishResult::Ok);
  pool_.reset();  // TearDown runs the loop and checks that every handle closed
}

}  // namespace
