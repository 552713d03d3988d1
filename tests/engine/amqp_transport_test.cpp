// AmqpTransport against a real RabbitMQ node with its MQTT plugin: request topics in, tags
// finished into acks, refusals. The whole engine over it: tests/integration/amqp_test.cpp.
#include "engine/amqp_transport.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
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

TEST(AmqpTransportKeys, JobsRequestTopicsAreTheJobsQueuesKeysWithoutAHash) {
  EXPECT_EQ(AmqpTransport::jobs_binding_keys("$aws/things"),
            (std::vector<std::string>{"$aws.things.*.jobs.get", "$aws.things.*.jobs.start-next",
                                      "$aws.things.*.jobs.*.get", "$aws.things.*.jobs.*.update"}));
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

  AmqpOptions options(const std::string& queue) {
    AmqpOptions o;
    o.enabled = true;
    o.uris = {node_->amqp_uri()};
    o.queue = queue;
    return o;
  }
  AmqpTransport& start(const std::string& queue) { return start(options(queue)); }
  AmqpTransport& start(const AmqpOptions& o) {
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

  std::string messages(const std::string& queue) {
    std::string out;
    node_->ctl({"list_queues", "-q", "--no-table-headers", "name", "messages"}, out);
    const std::string prefix = queue + "\t";
    for (std::size_t at = out.find(prefix); at != std::string::npos;
         at = out.find(prefix, at + 1)) {
      if (at != 0 && out[at - 1] != '\n') continue;
      const std::size_t end = out.find('\n', at);
      return out.substr(at + prefix.size(),
                        end == std::string::npos ? end : end - at - prefix.size());
    }
    return {};
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

// Jobs requests travel the jobs queue, which fills while nobody consumes it; chunkd's own replies
// and notifications on jobs topics, and stream requests, never land in it.
TEST_F(AmqpTransportTest, JobsRequestsWaitInTheJobsQueueUntilConsumed) {
  AmqpOptions o = options("t.jobs.requests");
  o.jobs = true;
  o.jobs_queue = "t.jobs";
  AmqpTransport& t = start(o);
  Metrics metrics;
  t.register_metrics(metrics);
  const std::vector<std::string> jobs = {
      "$aws/things/dev1/jobs/get", "$aws/things/dev1/jobs/start-next",
      "$aws/things/dev1/jobs/j1/get", "$aws/things/dev1/jobs/j1/update"};
  for (const std::string& topic : jobs) publish(topic, "{}");
  publish("$aws/things/dev1/streams/fw/get/json", "{}");
  ASSERT_TRUE(run_until(&loop_, [&] { return requests_.size() == 1; }));
  EXPECT_EQ(requests_[0].topic, "$aws/things/dev1/streams/fw/get/json");
  ASSERT_TRUE(run_until(&loop_, [&] { return messages("t.jobs") == "4"; }));

  const std::string reply = "{}";
  const std::span<const std::byte> body{reinterpret_cast<const std::byte*>(reply.data()),
                                        reply.size()};
  for (const std::string& topic : jobs) {
    ASSERT_EQ(t.send("dev1", topic + "/accepted", body, 0), Transport::SendResult::Ok);
    ASSERT_EQ(t.send("dev1", topic + "/rejected", body, 0), Transport::SendResult::Ok);
  }
  ASSERT_EQ(t.send("dev1", "$aws/things/dev1/jobs/notify", body, 0), Transport::SendResult::Ok);
  ASSERT_EQ(t.send("dev1", "$aws/things/dev1/jobs/notify-next", body, 0),
            Transport::SendResult::Ok);
  t.finished(requests_[0].tag);  // acked once the 10 replies are confirmed
  ASSERT_TRUE(run_until(&loop_, [&] { return t.amqp_stats().acks == 1; }));
  EXPECT_EQ(t.amqp_stats().confirms, 10u);
  EXPECT_EQ(messages("t.jobs"), "4") << "a reply was routed back into the jobs queue";
  EXPECT_TRUE(run_until(&loop_, [&] { return messages("t.jobs.requests") == "0"; }));
  EXPECT_EQ(requests_.size(), 1u);
  EXPECT_NE(metrics.render().find("chunkd_amqp_jobs_consuming 0"), std::string::npos);

  t.consume_jobs(true);
  ASSERT_TRUE(run_until(&loop_, [&] { return requests_.size() == 5; }));
  std::vector<std::string> got;
  for (std::size_t i = 1; i < requests_.size(); ++i) got.push_back(requests_[i].topic);
  std::sort(got.begin(), got.end());
  std::vector<std::string> want = jobs;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  EXPECT_NE(metrics.render().find("chunkd_amqp_jobs_consuming 1"), std::string::npos);
  for (std::size_t i = 1; i < requests_.size(); ++i) t.finished(requests_[i].tag);
  ASSERT_TRUE(run_until(&loop_, [&] { return t.amqp_stats().acks == 5; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return messages("t.jobs") == "0"; }));

  t.consume_jobs(false);
  ASSERT_TRUE(run_until(&loop_, [&] { return !t.amqp_stats().jobs_consuming; }));
  publish("$aws/things/dev2/jobs/get", "{}");
  ASSERT_TRUE(run_until(&loop_, [&] { return messages("t.jobs") == "1"; }));
  EXPECT_EQ(requests_.size(), 5u);
}

// Without options.jobs there is no jobs queue, and consume_jobs does nothing.
TEST_F(AmqpTransportTest, NoJobsQueueUnlessJobsAreServed) {
  AmqpOptions o = options("t.nojobs.requests");
  o.jobs_queue = "t.nojobs";
  AmqpTransport& t = start(o);
  t.consume_jobs(true);
  publish("$aws/things/dev1/jobs/get", "{}");
  publish("$aws/things/dev1/streams/fw/get/json", "{}");
  ASSERT_TRUE(run_until(&loop_, [&] { return requests_.size() == 1; }));
  EXPECT_EQ(messages("t.nojobs"), "");
  EXPECT_FALSE(t.amqp_stats().jobs_consuming);
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
