// MqttPool against a private Mosquitto broker (tests/io/mqtt_pool_fixture.hpp; the "device" side
// is a plain libmosquitto client): connecting, receiving only the subscribed topics, publishing in
// order, QoS 1 bytes released on the ack, backpressure and its bound, gathered writes, payloads in
// parts, and QoS 1 after buffered QoS 0 keeping order.
#include "io/mqtt_pool.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/io/mqtt_pool_fixture.hpp"

namespace {

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

TEST_F(MqttPoolTest, ConnectsByHostName) {
  MqttOptions o = options();
  o.uri = "tcp://localhost:" + std::to_string(broker_.port());
  MqttPool& pool = make_pool(o);
  ASSERT_TRUE(start_and_wait_ready(pool));
  ASSERT_TRUE(stop_pool(pool));
}

}  // namespace
