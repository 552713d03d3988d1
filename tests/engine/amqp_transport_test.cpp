// AmqpTransport against a real RabbitMQ node with its MQTT plugin: request topics in, tags
// finished into acks, refusals. The whole engine over it: tests/integration/amqp_test.cpp.
#include "engine/amqp_transport.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "tests/support/loop.hpp"
#include "tests/support/rabbitmq.hpp"

namespace chunkd::engine {
namespace {

using test::RabbitNode;
using test::run_until;

TEST(AmqpTransportKeys, TopicsBecomeRoutingKeysAsRabbitMqsMqttPluginMakesThem) {
  EXPECT_EQ(AmqpTransport::routing_key("$aws/things/dev1/streams/s1/data/cbor"),
            "$aws.things.dev1.streams.s1.data.cbor");
  EXPECT_EQ(AmqpTransport::binding_key("$aws/things", "get"), "$aws.things.*.streams.*.get.*");
  EXPECT_EQ(AmqpTransport::binding_key("fleet/a/things", "describe"),
            "fleet.a.things.*.streams.*.describe.*");
}

struct Request {
  std::string topic;
  std::string payload;
  Transport::RequestTag tag = 0;
};

class AmqpTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!RabbitNode::available()) return;
    node_ = new RabbitNode();
    if (!node_->start()) start_error_ = node_->error();
  }
  static void TearDownTestSuite() {
    delete node_;
    node_ = nullptr;
  }

  void SetUp() override {
    if (!RabbitNode::available()) GTEST_SKIP() << RabbitNode::missing();
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }
  void TearDown() override {
    if (transport_) {
      bool done = false;
      transport_->stop(2000, [&] { done = true; });
      EXPECT_TRUE(run_until(&loop_, [&] { return done; }));
      transport_.reset();
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  AmqpTransport& start(const std::string& queue) {
    AmqpOptions o;
    o.enabled = true;
    o.uris = {node_->amqp_uri()};
    o.queue = queue;
    transport_ = std::make_unique<AmqpTransport>(&loop_, o);
    auto started = transport_->start(
        [this](std::string_view topic, std::span<const std::byte> payload,
               Transport::RequestTag tag) {
          requests_.push_back(
              {std::string(topic),
               std::string(reinterpret_cast<const char*>(payload.data()), payload.size()), tag});
        },
        [](bool) {});
    EXPECT_TRUE(started);
    EXPECT_TRUE(run_until(&loop_, [&] { return transport_->ready(); }));
    return *transport_;
  }

  void publish(const std::string& topic, const std::string& payload) {
    std::string error;
    ASSERT_TRUE(test::mqtt_publish_raw(node_->mqtt_port(), topic, payload, error)) << error;
  }

  static RabbitNode* node_;
  static std::string start_error_;
  uv_loop_t loop_{};
  std::unique_ptr<AmqpTransport> transport_;
  std::vector<Request> requests_;
};

RabbitNode* AmqpTransportTest::node_ = nullptr;
std::string AmqpTransportTest::start_error_;

TEST_F(AmqpTransportTest, ARequestArrivesAsItsTopicAndIsAckedOnceFinished) {
  AmqpTransport& t = start("t.requests");
  publish("$aws/things/dev1/streams/fw/get/json", "{}");
  publish("$aws/things/dev1/streams/fw/describe/cbor", "x");
  publish("$aws/things/dev1/streams/fw/data/json", "not a request: not bound");
  ASSERT_TRUE(run_until(&loop_, [&] { return requests_.size() == 2; }));
  EXPECT_EQ(requests_[0].topic, "$aws/things/dev1/streams/fw/get/json");
  EXPECT_EQ(requests_[0].payload, "{}");
  EXPECT_EQ(requests_[1].topic, "$aws/things/dev1/streams/fw/describe/cbor");
  EXPECT_NE(requests_[0].tag, requests_[1].tag);
  EXPECT_EQ(t.unacked_requests(), 2u);
  const std::string reply = "reply";
  const std::span<const std::byte> body{reinterpret_cast<const std::byte*>(reply.data()),
                                        reply.size()};
  ASSERT_EQ(t.send("dev1", "$aws/things/dev1/streams/fw/data/json", body, 0),
            Transport::SendResult::Ok);
  t.finished(requests_[0].tag);
  t.finished(requests_[0].tag);  // twice: the second is ignored
  EXPECT_EQ(t.unacked_requests(), 1u);
  ASSERT_TRUE(run_until(&loop_, [&] { return t.amqp_stats().acks == 1; }));
  EXPECT_GE(t.amqp_stats().confirms, 1u);
}

TEST_F(AmqpTransportTest, RefusesWhatItCannotAnswer) {
  AmqpTransport& t = start("t.refused");
  // 11 + 1 + 128 + 9 + 94 + 9 = 252 bytes: the request fits, its rejected/json reply would not.
  const std::string thing(128, 'd');
  const std::string stream(94, 's');
  publish("$aws/things/" + thing + "/streams/" + stream + "/get/json", "{}");
  publish("$aws/things/dev2/streams/fw/get/json", "{}");
  ASSERT_TRUE(run_until(&loop_, [&] { return requests_.size() == 1; }));
  EXPECT_EQ(requests_[0].topic, "$aws/things/dev2/streams/fw/get/json");
  EXPECT_EQ(t.refused(AmqpTransport::Refusal::ReplyKeyTooLong), 1u);
  EXPECT_EQ(t.unacked_requests(), 1u) << "the refused one was acknowledged, not handed on";
  ASSERT_TRUE(run_until(&loop_, [&] { return t.amqp_stats().acks == 1; }));
  const std::string reply = "r";
  const std::span<const std::byte> body{reinterpret_cast<const std::byte*>(reply.data()),
                                        reply.size()};
  EXPECT_EQ(t.send("x", "$aws/things/" + std::string(250, 'x') + "/data/json", body, 0),
            Transport::SendResult::Error);
  EXPECT_EQ(t.refused(AmqpTransport::Refusal::ReplyKeyTooLong), 2u);
}

TEST_F(AmqpTransportTest, RefusesAPrefixRabbitMqWouldSplit) {
  AmqpOptions o;
  o.enabled = true;
  o.uris = {node_->amqp_uri()};
  o.topic_prefix = "fleet.v2/things";
  AmqpTransport t(&loop_, o);
  EXPECT_FALSE(t.start([](auto, auto, auto) {}, [](bool) {}));
}

}  // namespace
}  // namespace chunkd::engine
