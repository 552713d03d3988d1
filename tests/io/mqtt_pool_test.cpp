// MqttPool against a private Mosquitto broker. The "device" side is a plain libmosquitto client
// on its own thread (RawClient), independent of the code under test.
#include "io/mqtt_pool.hpp"

#include <gtest/gtest.h>
#include <mosquitto.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/log.hpp"
#include "tests/support/broker.hpp"
#include "tests/support/loop.hpp"

namespace {

using chunkd::io::MqttOptions;
using chunkd::io::MqttPool;
using chunkd::io::PublishResult;
using chunkd::test::TestBroker;

constexpr int kGuardMs = 30000;  // failure guard only; nothing waits for it on success

// Runs the loop until `pred` holds or the guard expires (tests/support/loop.hpp).
bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, int guard_ms = kGuardMs) {
  return chunkd::test::run_until(loop, pred, guard_ms);
}

std::uint32_t seq_of(const std::string& payload) {
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

std::span<const std::byte> bytes_of(const std::string& s) {
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

TEST_F(MqttPoolTest, ConnectsAndBecomesReady) {
  MqttOptions o = options();
  o.connections = 3;
  o.subscriptions = {"chunkd/test/+/get"};
  MqttPool& pool = make_pool(o);
  EXPECT_FALSE(pool.ready());
  ASSERT_TRUE(start_and_wait_ready(pool)) << broker_.log_contents();
  ASSERT_TRUE(run_until(&loop_, [&] { return !transitions_.empty(); }));
  EXPECT_EQ(transitions_, std::vector<bool>{true});
  EXPECT_EQ(pool.connections(), 3u);
  EXPECT_EQ(pool.total_queued_bytes(), 0u);

  const std::string log = broker_.log_contents();
  for (const char* id : {"chunkd-test-0", "chunkd-test-1", "chunkd-test-2"}) {
    EXPECT_NE(log.find(id), std::string::npos) << id << " not in broker log:\n" << log;
  }

  ASSERT_TRUE(stop_pool(pool));
  EXPECT_EQ(transitions_, (std::vector<bool>{true, false}));
  EXPECT_FALSE(pool.ready());
}

TEST_F(MqttPoolTest, ReceivesOnlySubscribedTopics) {
  MqttOptions o = options();
  o.subscriptions = {"things/+/get", "things/+/describe"};
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));

  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  // One client, so the broker handles these in order: once the sentinel arrives, anything the
  // pool would wrongly receive has arrived too.
  ASSERT_TRUE(device.publish("things/a/get", "one"));
  ASSERT_TRUE(device.publish("things/b/other", "not subscribed"));
  ASSERT_TRUE(device.publish("elsewhere", "not subscribed"));
  ASSERT_TRUE(device.publish("things/c/describe", "two"));
  ASSERT_TRUE(device.publish("things/z/get", "sentinel"));
  ASSERT_TRUE(run_until(
      &loop_, [&] { return !received_.empty() && received_.back().payload == "sentinel"; }));

  ASSERT_EQ(received_.size(), 3u);
  EXPECT_EQ(received_[0].topic, "things/a/get");
  EXPECT_EQ(received_[0].payload, "one");
  EXPECT_EQ(received_[1].topic, "things/c/describe");
  EXPECT_EQ(received_[1].payload, "two");
  EXPECT_EQ(received_[2].topic, "things/z/get");
  EXPECT_EQ(pool.stats().messages_received, 3u);
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, PublishesArriveInOrder) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("out/#"));
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(start_and_wait_ready(pool));

  constexpr std::uint32_t kCount = 1000;
  constexpr std::size_t kSize = 4096;
  ASSERT_EQ(publish_sequence(pool, 1, "out/thing-1/data", 0, kCount, kSize), kCount);
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= kCount; }))
      << "received " << device.count();
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.total_queued_bytes() == 0; }));

  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), kCount);
  for (std::uint32_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(seq_of(messages[i].payload), i) << "out of order at " << i;
    ASSERT_EQ(messages[i].payload.size(), kSize);
    ASSERT_EQ(messages[i].topic, "out/thing-1/data");
  }
  EXPECT_EQ(pool.stats().messages_published, kCount);
  EXPECT_EQ(pool.stats().bytes_published, std::uint64_t{kCount} * kSize);
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, QosOneBytesReleasedOnAck) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("q1/#", 1));
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(start_and_wait_ready(pool));

  const std::string payload(1000, 'q');
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(pool.publish(0, "q1/thing", bytes_of(payload), 1), PublishResult::Ok);
  }
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= 50; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.queued_bytes(0) == 0; }));
  EXPECT_EQ(device.count(), 50u);
  ASSERT_TRUE(stop_pool(pool));
}

TEST_F(MqttPoolTest, BackpressureRefusesThenResumes) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("bp/#"));
  MqttOptions o = options();
  o.max_queued_bytes = 256 * 1024;
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));

  // A broker that stops reading: the kernel buffers fill, then libmosquitto's queue.
  broker_.pause();
  std::string payload(4096, 'b');
  std::uint32_t accepted = 0;
  bool refused = false;
  for (int i = 0; i < 100000 && !refused; ++i) {
    std::memcpy(payload.data(), &accepted, sizeof accepted);
    PublishResult r = pool.publish(0, "bp/thing", bytes_of(payload), 0);
    if (r == PublishResult::Ok) {
      ++accepted;
    } else {
      ASSERT_EQ(r, PublishResult::Backpressure);
      refused = true;
    }
  }
  ASSERT_TRUE(refused) << "no backpressure after " << accepted << " messages";
  EXPECT_LE(pool.queued_bytes(0), o.max_queued_bytes);
  EXPECT_GT(pool.queued_bytes(0), o.max_queued_bytes / 2);
  EXPECT_EQ(pool.stats().publish_refused_backpressure, 1u);
  EXPECT_EQ(writable_calls_, 0);

  broker_.resume();
  ASSERT_TRUE(run_until(&loop_, [&] { return writable_calls_ > 0; }));
  EXPECT_LT(pool.queued_bytes(0), o.max_queued_bytes / 2);

  // Resumes: more messages go out after the refused one.
  const std::uint32_t more = publish_sequence(pool, 0, "bp/thing", accepted, 200, 4096);
  ASSERT_EQ(more, 200u);
  const std::uint32_t total = accepted + more;
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= total; }))
      << "received " << device.count() << " of " << total;
  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), total);
  for (std::uint32_t i = 0; i < total; ++i) {
    ASSERT_EQ(seq_of(messages[i].payload), i) << "lost or reordered at " << i;
  }
  ASSERT_TRUE(stop_pool(pool));
}

// A bound smaller than one message: each message goes out alone on an idle connection.
TEST_F(MqttPoolTest, MessagesLargerThanTheBoundGoOutOneAtATime) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("big/#"));
  MqttOptions o = options();
  o.max_queued_bytes = 1;
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));
  ASSERT_EQ(publish_sequence(pool, 0, "big/thing", 0, 300, 32 * 1024), 300u);
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= 300; }));
  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), 300u);
  for (std::uint32_t i = 0; i < 300; ++i) ASSERT_EQ(seq_of(messages[i].payload), i);
  ASSERT_TRUE(stop_pool(pool));
}

// QoS 0 replies of one loop turn leave in few socket writes, not one write per message.
TEST_F(MqttPoolTest, GathersALoopTurnsMessagesIntoFewWrites) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("g/#"));
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(start_and_wait_ready(pool));
  const std::uint64_t writes_before = pool.stats().socket_writes;

  constexpr std::uint32_t kCount = 200;
  std::string payload(1000, 'g');
  for (std::uint32_t i = 0; i < kCount; ++i) {
    std::memcpy(payload.data(), &i, sizeof i);
    ASSERT_EQ(pool.publish(0, "g/thing", bytes_of(payload), 0), PublishResult::Ok);
  }
  // Each time 64 KiB wait they are written at once; the rest waits for the loop to turn.
  EXPECT_GT(pool.queued_bytes(0), 0u);
  EXPECT_LT(pool.queued_bytes(0), std::size_t{64} * 1024);
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= kCount; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.total_queued_bytes() == 0; }));
  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), kCount);
  for (std::uint32_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(seq_of(messages[i].payload), i);
    ASSERT_EQ(messages[i].payload.size(), payload.size());
  }
  // ~200 KiB: three writes at the 64 KiB mark and one for the rest, on an idle socket.
  const std::uint64_t writes = pool.stats().socket_writes - writes_before;
  EXPECT_GE(writes, 1u);
  EXPECT_LE(writes, 8u);
  ASSERT_TRUE(stop_pool(pool));
}

// A payload given in parts arrives as their concatenation, on the pool's own path (small and
// written-at-once sizes) and through libmosquitto (QoS 1).
TEST_F(MqttPoolTest, PayloadPartsArriveConcatenated) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("p/#", 1));
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(start_and_wait_ready(pool));

  std::string big(100 * 1024, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 3);
  const std::string head = "head:";
  const std::string tail = ":tail";
  std::vector<std::string> expected;
  for (int qos : {0, 1}) {
    for (std::size_t size : {std::size_t{0}, std::size_t{10}, big.size()}) {
      const std::span<const std::byte> parts[] = {bytes_of(head), bytes_of(big.substr(0, 0)),
                                                  bytes_of(big).first(size), bytes_of(tail)};
      ASSERT_EQ(pool.publish(1, "p/thing", parts, qos), PublishResult::Ok);
      expected.push_back(head + big.substr(0, size) + tail);
    }
  }
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= expected.size(); }));
  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(messages[i].payload == expected[i]) << "message " << i << " differs";
  }
  EXPECT_EQ(pool.stats().messages_published, expected.size());
  ASSERT_TRUE(stop_pool(pool));
}

// A QoS 1 message after QoS 0 ones still waiting in the pool's buffer leaves after them.
TEST_F(MqttPoolTest, QosOneAfterBufferedQosZeroKeepsOrder) {
  RawClient device;
  ASSERT_TRUE(device.connect(broker_.port()));
  ASSERT_TRUE(device.subscribe("o/#", 1));
  MqttPool& pool = make_pool(options());
  ASSERT_TRUE(start_and_wait_ready(pool));

  std::string payload(100, 'o');
  std::uint32_t seq = 0;
  auto send = [&](int qos) {
    std::memcpy(payload.data(), &seq, sizeof seq);
    PublishResult r = pool.publish(0, "o/thing", bytes_of(payload), qos);
    while (r == PublishResult::Backpressure) {
      const int before = writable_calls_;
      if (!run_until(&loop_, [&] { return writable_calls_ > before; })) break;
      r = pool.publish(0, "o/thing", bytes_of(payload), qos);
    }
    ASSERT_EQ(r, PublishResult::Ok);
    ++seq;
  };
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 10; ++i) send(0);
    send(1);
  }
  for (int i = 0; i < 10; ++i) send(0);
  ASSERT_TRUE(run_until(&loop_, [&] { return device.count() >= seq; }));
  const auto messages = device.messages();
  ASSERT_EQ(messages.size(), seq);
  for (std::uint32_t i = 0; i < seq; ++i) ASSERT_EQ(seq_of(messages[i].payload), i);
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.total_queued_bytes() == 0; }));
  ASSERT_TRUE(stop_pool(pool));
}

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

TEST_F(MqttPoolTest, ConnectsByHostName) {
  MqttOptions o = options();
  o.uri = "tcp://localhost:" + std::to_string(broker_.port());
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));
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

// ---- without a broker ---------------------------------------------------------------------

TEST(MqttPoolOptions, BadUrisFailAtStart) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  // Every refusal of io::parse_mqtt_uri (tests/io/mqtt_uri_test.cpp covers them all).
  for (const char* uri : {"", "http://127.0.0.1:1883", "tcp://:1883", "tcp://127.0.0.1:0",
                          "tcp://127.0.0.1:1883/path", "tcp://[::1"}) {
    MqttOptions o;
    o.uri = uri;
    MqttPool pool(&loop, o, nullptr, nullptr);
    auto started = pool.start();
    ASSERT_FALSE(started) << uri;
    EXPECT_EQ(started.error().code, std::errc::invalid_argument) << uri;
    EXPECT_NE(started.error().detail.find("mqtt.uri"), std::string::npos) << uri;
    bool done = false;
    pool.stop(0, [&] { done = true; });
    EXPECT_TRUE(done) << uri;
    EXPECT_FALSE(pool.ready());
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// Config can check a TLS file but not that it is still there when the pool starts.
TEST(MqttPoolOptions, UnreadableTlsFileFailsAtStart) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.uri = "ssl://127.0.0.1:8883";
    o.ca_file = "/nonexistent/chunkd/ca.pem";
    MqttPool pool(&loop, o, nullptr, nullptr);
    auto started = pool.start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().code, std::errc::no_such_file_or_directory);
    EXPECT_NE(started.error().message().find("mqtt.ca_file '/nonexistent/chunkd/ca.pem'"),
              std::string::npos)
        << started.error().message();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// Options are validated once, by the config loader; the pool asserts the same bounds
// (io/mqtt_options.hpp), so an out-of-bounds option is a bug that stops the process.
TEST(MqttPoolOptionsDeathTest, OptionsOutsideTheConfigBoundsAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto start_with = [](const std::function<void(MqttOptions&)>& change) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    MqttOptions o;
    o.uri = "tcp://127.0.0.1:1";
    change(o);
    MqttPool pool(&loop, o, nullptr, nullptr);
    (void)pool.start();
  };
  const std::pair<std::function<void(MqttOptions&)>, const char*> cases[] = {
      {[](MqttOptions& o) { o.connections = 0; }, "o.connections >= 1"},
      {[](MqttOptions& o) { o.connections = 65; }, "kMqttMaxConnections"},
      {[](MqttOptions& o) { o.client_id.clear(); }, "client_id"},
      {[](MqttOptions& o) { o.keepalive_s = 1; }, "keepalive_s"},
      {[](MqttOptions& o) { o.keepalive_s = 3601; }, "keepalive_s"},
      {[](MqttOptions& o) { o.reconnect_max_ms = 1; }, "reconnect_min_ms"},
      {[](MqttOptions& o) { o.max_queued_bytes = 0; }, "max_queued_bytes"},
      {[](MqttOptions& o) { o.subscriptions = {"a/#/b"}; }, "mosquitto_sub_topic_check"},
      {[](MqttOptions& o) { o.subscribe_qos = 3; }, "subscribe_qos"},
      {[](MqttOptions& o) { o.password = "secret"; }, "password"},
      {[](MqttOptions& o) { o.ca_file = "/etc/hostname"; }, "uri.tls"},
      {[](MqttOptions& o) {
         o.uri = "ssl://127.0.0.1:8883";
         o.cert_file = "/etc/hostname";
       },
       "key_file"},
  };
  for (const auto& [change, condition] : cases) {
    EXPECT_DEATH(start_with(change), std::string("invariant broken: .*") + condition) << condition;
  }
}

TEST(MqttPoolOptions, GoodUrisStartAndStop) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  // Nothing listens on port 1; the pool keeps retrying until stopped.
  for (const char* uri : {"tcp://127.0.0.1:1", "tcp://[::1]:1", "tcp://localhost:1"}) {
    MqttOptions o;
    o.uri = uri;
    o.reconnect_min_ms = 5;
    o.reconnect_max_ms = 20;
    MqttPool pool(&loop, o, nullptr, nullptr);
    EXPECT_TRUE(pool.start()) << uri;
    auto again = pool.start();
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, std::errc::operation_not_permitted);
    int spins = 0;  // let some connect attempts (and name lookups) happen before stopping
    run_until(&loop, [&] { return ++spins > 50; });
    EXPECT_FALSE(pool.ready());
    bool done = false;
    pool.stop(0, [&] { done = true; });
    EXPECT_TRUE(run_until(&loop, [&] { return done; })) << uri;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(MqttPoolOptions, TlsSetupWithReadableFiles) {
  const char* ca = "/etc/ssl/certs/ca-certificates.crt";
  if (::access(ca, R_OK) != 0) GTEST_SKIP() << "no system CA bundle";
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.uri = "ssl://127.0.0.1:1";
    o.ca_file = ca;
    MqttPool pool(&loop, o, nullptr, nullptr);
    EXPECT_TRUE(pool.start());
    bool done = false;
    pool.stop(0, [&] { done = true; });
    EXPECT_TRUE(run_until(&loop, [&] { return done; }));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// TLS end to end: a throwaway CA and broker certificate (for IP 127.0.0.1), a TLS listener.
TEST(MqttPoolTls, ConnectsOverTlsAndChecksTheBrokerCertificate) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl CLI";
  char dir_template[] = "/tmp/chunkd-tls-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string script =
      "cd " + dir +
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      " -keyout ca.key -out ca.crt -days 2 -subj /CN=chunkd-test-ca"
      " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      " -keyout server.key -out server.csr -subj /CN=127.0.0.1"
      " && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf"
      " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
      " -out server.crt -days 2 -extfile ext.cnf"
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      " -keyout other.key -out other.crt -days 2 -subj /CN=unrelated-ca";
  ASSERT_EQ(std::system(("(" + script + ") >/dev/null 2>&1").c_str()), 0) << script;

  {
    TestBroker broker("cafile " + dir + "/ca.crt\ncertfile " + dir + "/server.crt\nkeyfile " + dir +
                      "/server.key");
    ASSERT_TRUE(broker.start()) << broker.error();
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    auto options = [&](const std::string& ca) {
      MqttOptions o;
      o.uri = "ssl://127.0.0.1:" + std::to_string(broker.port());
      o.ca_file = ca;
      o.reconnect_min_ms = 20;
      o.reconnect_max_ms = 200;
      o.subscriptions = {"tls/+/get"};
      o.max_packet_bytes = 256u << 10;  // the 64 KiB message below must reach the pool
      return o;
    };
    {
      std::vector<std::string> topics;
      MqttPool pool(
          &loop, options(dir + "/ca.crt"),
          [&](std::string_view topic, std::span<const std::byte>) { topics.emplace_back(topic); },
          nullptr);
      ASSERT_TRUE(pool.start());
      ASSERT_TRUE(run_until(&loop, [&] { return pool.ready(); })) << broker.log_contents();
      // Over TLS the pool hears itself: publish on connection 1 to the filter of connection 0.
      const std::string big(64 * 1024, 'z');
      ASSERT_EQ(pool.publish(1, "tls/thing/get", bytes_of(big), 0), PublishResult::Ok);
      ASSERT_TRUE(run_until(&loop, [&] { return !topics.empty(); }));
      EXPECT_EQ(topics.front(), "tls/thing/get");
      bool done = false;
      pool.stop(5000, [&] { done = true; });
      ASSERT_TRUE(run_until(&loop, [&] { return done; }));
    }
    {
      // A CA that did not sign the broker's certificate: the handshake must fail, every time.
      MqttPool pool(&loop, options(dir + "/other.crt"), nullptr, nullptr);
      ASSERT_TRUE(pool.start());
      int spins = 0;
      run_until(&loop, [&] { return ++spins > 100 || pool.ready(); });
      EXPECT_FALSE(pool.ready());
      EXPECT_EQ(pool.publish(0, "tls/x", bytes_of("x"), 0), PublishResult::NotConnected);
      bool done = false;
      pool.stop(0, [&] { done = true; });
      ASSERT_TRUE(run_until(&loop, [&] { return done; }));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(MqttPoolHash, ConnectionForIsStableAndSpreads) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.connections = 4;
    MqttPool a(&loop, o, nullptr, nullptr);
    MqttPool b(&loop, o, nullptr, nullptr);
    std::vector<int> counts(4, 0);
    for (int i = 0; i < 4000; ++i) {
      const std::string thing = "thing-" + std::to_string(i);
      const std::size_t c = a.connection_for(thing);
      ASSERT_LT(c, 4u);
      EXPECT_EQ(c, a.connection_for(thing));
      EXPECT_EQ(c, b.connection_for(thing));
      ++counts[c];
    }
    for (int n : counts) EXPECT_GT(n, 800);  // 1000 expected each
    // FNV-1a 64 is fixed: a thing keeps its connection across restarts and versions.
    EXPECT_EQ(a.connection_for(""), 14695981039346656037ull % 4);
  }
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
