// AmqpClient against a real RabbitMQ node (tests/support/rabbitmq.hpp), one node for the suite.
// Each test uses its own queue, so their requests never mix.
#include "io/amqp_client.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "io/amqp_internal.hpp"
#include "tests/support/loop.hpp"
#include "tests/support/net.hpp"
#include "tests/support/rabbitmq.hpp"

namespace {

using chunkd::io::AmqpClient;
using chunkd::io::AmqpClientOptions;
using chunkd::io::AmqpCommand;
using chunkd::io::AmqpDelivery;
using chunkd::io::AmqpFailure;
using chunkd::io::AmqpFailureReport;
using chunkd::test::RabbitNode;
using chunkd::test::run_until;

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

class AmqpClientTest : public ::testing::Test {
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
    if (!node_->running()) ASSERT_TRUE(node_->start()) << node_->error();
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }

  void TearDown() override {
    for (auto& c : clients_) stop(*c);
    clients_.clear();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  AmqpClientOptions options(const std::string& queue) {
    AmqpClientOptions o;
    o.uris = {node_->amqp_uri()};
    o.queue = queue;
    o.binding_keys = {"test." + queue + ".*"};
    o.prefetch = 16;
    o.heartbeat_s = 5;
    o.backoff_max_ms = 500;
    return o;
  }

  // options(queue) with a jobs queue `jobs_queue` bound with `jobs_key`.
  AmqpClientOptions with_jobs(const std::string& queue, const std::string& jobs_queue,
                              const std::string& jobs_key) {
    AmqpClientOptions o = options(queue);
    o.jobs_queue = jobs_queue;
    o.jobs_binding_keys = {jobs_key};
    return o;
  }

  AmqpClient& make(AmqpClientOptions o) {
    clients_.push_back(std::make_unique<AmqpClient>(
        &loop_, std::move(o), [this](AmqpDelivery&& d) { deliveries_.push_back(std::move(d)); },
        [this](bool up, std::string_view why) { states_.emplace_back(up, std::string(why)); }));
    clients_.back()->on_failure([this](const AmqpFailureReport& r) { failures_.push_back(r); });
    return *clients_.back();
  }

  // A user `name` with `password` and every right on vhost "/".
  void add_user(const std::string& name, const std::string& password) {
    std::string out;
    node_->ctl({"delete_user", name}, out);
    ASSERT_EQ(node_->ctl({"add_user", name, password}, out), 0) << out;
    ASSERT_EQ(node_->ctl({"set_permissions", "-p", "/", name, ".*", ".*", ".*"}, out), 0) << out;
  }
  std::string uri_of(const std::string& user, const std::string& host = "127.0.0.1",
                     const std::string& vhost = "%2f") {
    return "amqp://" + user + "@" + host + ":" + std::to_string(node_->amqp_port()) + "/" + vhost;
  }

  void stop(AmqpClient& c) {
    bool done = false;
    c.stop(2000, [&] { done = true; });
    EXPECT_TRUE(run_until(&loop_, [&] { return done; }));
  }

  // Column `column` of `rabbitmqctl list_queues` for `queue` ("" when absent).
  std::string queue_info(const std::string& queue, const std::string& column) {
    std::string out;
    node_->ctl({"list_queues", "-q", "--no-table-headers", "name", column}, out);
    const std::string prefix = queue + "\t";
    for (std::size_t at = 0; at < out.size();) {
      std::size_t end = out.find('\n', at);
      if (end == std::string::npos) end = out.size();
      const std::string line = out.substr(at, end - at);
      if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
      at = end + 1;
    }
    return {};
  }

  static RabbitNode* node_;
  static std::string start_error_;
  uv_loop_t loop_{};
  std::vector<std::unique_ptr<AmqpClient>> clients_;
  std::vector<AmqpDelivery> deliveries_;
  std::vector<std::pair<bool, std::string>> states_;
  std::vector<AmqpFailureReport> failures_;
};

RabbitNode* AmqpClientTest::node_ = nullptr;
std::string AmqpClientTest::start_error_;

TEST_F(AmqpClientTest, DeclaresAQuorumQueueBindsItAndConsumes) {
  AmqpClient& c = make(options("q.declare"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); })) << node_->log();
  EXPECT_EQ(queue_info("q.declare", "type"), "quorum");
  EXPECT_NE(queue_info("q.declare", "arguments").find("x-delivery-limit"), std::string::npos);
  // A publish on a bound key comes back as a delivery, with its key and body.
  ASSERT_EQ(c.publish("test.q.declare.a", {{bytes_of("hello")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 1; }));
  EXPECT_EQ(deliveries_[0].routing_key, "test.q.declare.a");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(deliveries_[0].body.data()),
                        deliveries_[0].body.size()),
            "hello");
  EXPECT_EQ(c.publish("other.key", {{bytes_of("x")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().confirms == 2; }));
  EXPECT_EQ(deliveries_.size(), 1u) << "an unbound key is not delivered";
}

// A delivery is acknowledged only once finished; one never finished is redelivered to the next
// consumer after its client went away.
TEST_F(AmqpClientTest, OnlyFinishedDeliveriesAreAcknowledged) {
  AmqpClient& a = make(options("q.ack"));
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return a.connected(); }));
  ASSERT_EQ(a.publish("test.q.ack.1", {{bytes_of("one")}}), AmqpClient::PublishResult::Ok);
  ASSERT_EQ(a.publish("test.q.ack.2", {{bytes_of("two")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 2; }));
  // The reply to "one", then its finish: acked once the reply is confirmed.
  ASSERT_EQ(a.publish("reply.1", {{bytes_of("r")}}), AmqpClient::PublishResult::Ok);
  a.finish(deliveries_[0].session, deliveries_[0].tag);
  ASSERT_TRUE(run_until(&loop_, [&] { return a.stats().acks == 1; }));
  EXPECT_EQ(a.stats().confirms, 3u) << "the ack waited for the reply's confirm";
  stop(a);
  clients_.clear();
  deliveries_.clear();
  AmqpClient& b = make(options("q.ack"));
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 1; }));
  EXPECT_EQ(deliveries_[0].routing_key, "test.q.ack.2");
  EXPECT_TRUE(deliveries_[0].redelivered);
  b.finish(deliveries_[0].session, deliveries_[0].tag);
  ASSERT_TRUE(run_until(&loop_, [&] { return b.stats().acks == 1; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return queue_info("q.ack", "messages") == "0"; }));
}

// The jobs queue is declared and bound at set-up and fills while nobody consumes it;
// consume_jobs(true) starts its consumer, consume_jobs(false) cancels it (a delivery handed over
// before is finished as usual, later publishes wait), and a new session keeps the wish.
TEST_F(AmqpClientTest, ConsumesTheJobsQueueOnlyOnDemand) {
  AmqpClient& c = make(with_jobs("q.requests", "q.jobs", "jobs.q.*.get"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); })) << node_->log();
  EXPECT_EQ(queue_info("q.jobs", "type"), "quorum");
  ASSERT_EQ(c.publish("jobs.q.a.get", {{bytes_of("1")}}), AmqpClient::PublishResult::Ok);
  ASSERT_EQ(c.publish("test.q.requests.x", {{bytes_of("r")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 1; }));
  EXPECT_EQ(deliveries_[0].routing_key, "test.q.requests.x");
  EXPECT_FALSE(deliveries_[0].jobs);
  ASSERT_TRUE(run_until(&loop_, [&] { return queue_info("q.jobs", "messages") == "1"; }));
  EXPECT_EQ(deliveries_.size(), 1u) << "nobody consumes the jobs queue yet";
  EXPECT_FALSE(c.stats().jobs_consuming);

  c.consume_jobs(true);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 2; }));
  EXPECT_EQ(deliveries_[1].routing_key, "jobs.q.a.get");
  EXPECT_TRUE(deliveries_[1].jobs);
  EXPECT_TRUE(c.stats().jobs_consuming);

  c.consume_jobs(false);
  ASSERT_TRUE(run_until(&loop_, [&] { return !c.stats().jobs_consuming; }));
  c.finish(deliveries_[1].session, deliveries_[1].tag);
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().acks == 1; }));
  ASSERT_EQ(c.publish("jobs.q.b.get", {{bytes_of("2")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return queue_info("q.jobs", "messages") == "1"; }));

  // A new session (the broker closes the connection) keeps the consumer off...
  std::string out;
  ASSERT_EQ(node_->ctl({"close_all_connections", "-p", "/", "test"}, out), 0) << out;
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().sessions == 2 && c.connected(); }));
  ASSERT_EQ(c.publish("test.q.requests.y", {{bytes_of("r")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 4; }))
      << "the unfinished request comes back, then the new one";
  EXPECT_FALSE(deliveries_[2].jobs);
  EXPECT_FALSE(deliveries_[3].jobs);
  EXPECT_EQ(queue_info("q.jobs", "messages"), "1");
  // ...and on: the waiting one arrives, and again after the next forced reconnect.
  c.consume_jobs(true);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 5; }));
  EXPECT_EQ(deliveries_[4].routing_key, "jobs.q.b.get");
  EXPECT_TRUE(deliveries_[4].jobs);
  ASSERT_EQ(node_->ctl({"close_all_connections", "-p", "/", "test"}, out), 0) << out;
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().sessions == 3 && c.connected(); }));
  ASSERT_TRUE(run_until(&loop_, [&] {
    return std::count_if(deliveries_.begin(), deliveries_.end(),
                         [](const AmqpDelivery& d) { return d.jobs; }) == 3;
  })) << "the jobs consumer is back in the new session";
  EXPECT_EQ(deliveries_.back().routing_key, "jobs.q.b.get");
  EXPECT_TRUE(deliveries_.back().redelivered);
  EXPECT_TRUE(c.stats().jobs_consuming);
}

// A jobs delivery handed back after the jobs consumer was cancelled (an instance that just lost
// the jobs lease) is rejected with requeue and goes to the consumer that serves jobs now, not
// back to the instance that handed it back.
TEST_F(AmqpClientTest, ARequeuedJobsDeliveryGoesToTheNextJobsConsumer) {
  const AmqpClientOptions o = with_jobs("q.requeue", "q.requeue.jobs", "jobs.requeue.*.get");
  AmqpClient& a = make(o);
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return a.connected(); })) << node_->log();
  a.consume_jobs(true);
  ASSERT_TRUE(run_until(&loop_, [&] { return a.stats().jobs_consuming; }));
  ASSERT_EQ(a.publish("jobs.requeue.t.get", {{bytes_of("1")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 1; }));
  ASSERT_TRUE(deliveries_[0].jobs);

  a.consume_jobs(false);
  a.requeue(deliveries_[0].session, deliveries_[0].tag);
  ASSERT_TRUE(run_until(&loop_, [&] { return a.stats().requeued == 1; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return queue_info("q.requeue.jobs", "messages") == "1"; }));
  EXPECT_EQ(deliveries_.size(), 1u) << "a cancelled its consumer before it handed the request back";
  EXPECT_EQ(a.stats().acks, 0u);

  AmqpClient& b = make(o);
  ASSERT_TRUE(b.start());
  b.consume_jobs(true);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 2; }));
  EXPECT_EQ(a.stats().deliveries, 1u);
  EXPECT_EQ(b.stats().deliveries, 1u);
  EXPECT_EQ(deliveries_[1].routing_key, "jobs.requeue.t.get");
  EXPECT_TRUE(deliveries_[1].jobs);
  EXPECT_TRUE(deliveries_[1].redelivered);
  b.finish(deliveries_[1].session, deliveries_[1].tag);
  ASSERT_TRUE(run_until(&loop_, [&] { return b.stats().acks == 1; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return queue_info("q.requeue.jobs", "messages") == "0"; }));
}

// Publishes reuse the buffers of those already written: a short body after a long one carries
// only its own bytes (and key), and the spares stay within max_queued_bytes.
TEST_F(AmqpClientTest, ReusedPublishBuffersCarryOnlyTheirOwnBytes) {
  AmqpClientOptions o = options("q.reuse");
  o.max_queued_bytes = 48 * 1024;
  AmqpClient& c = make(o);
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  const std::vector<std::string> bodies = {std::string(40000, 'a'), "b",
                                           std::string(30000, 'c'), "dd",
                                           std::string(20000, 'e'), std::string(20000, 'f')};
  auto key = [](std::size_t i) { return "test.q.reuse." + std::string(i % 2 == 0 ? 40 : 1, 'k'); };
  // One at a time: each reuses the buffer of the one before.
  for (std::size_t i = 0; i < 4; ++i) {
    ASSERT_EQ(c.publish(key(i), {{bytes_of(bodies[i])}}), AmqpClient::PublishResult::Ok);
    ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().confirms == i + 1; }));
    EXPECT_GT(c.stats().spare_bytes, 40000u);
  }
  // Two at once: the spare and, unless the session wrote the first meanwhile, a fresh buffer.
  ASSERT_EQ(c.publish(key(4), {{bytes_of(bodies[4])}}), AmqpClient::PublishResult::Ok);
  ASSERT_EQ(c.publish(key(5), {{bytes_of(bodies[5])}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().confirms == 6; }));
  EXPECT_LE(c.stats().spare_bytes, o.max_queued_bytes);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == bodies.size(); }));
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    const AmqpDelivery& d = deliveries_[i];
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.body.data()), d.body.size()), bodies[i])
        << i;
    EXPECT_EQ(d.routing_key, key(i)) << i;
  }
}

// The spares' bound, on the hand-off alone: what would pass max_queued_bytes is left to the
// session to free; the loop takes the most recently written first.
TEST(AmqpSpares, WrittenPublishesAreKeptWithinTheBoundLastFirst) {
  AmqpClient::Shared s;
  s.options.max_queued_bytes = 100000;
  std::vector<AmqpCommand> written(3);
  for (std::size_t i = 0; i < written.size(); ++i) written[i].body.reserve(40000 + i);
  s.give_spares(written);
  ASSERT_EQ(written.size(), 1u) << "the third is over the bound";
  EXPECT_EQ(written[0].body.capacity(), 40002u);
  EXPECT_EQ(s.spares.size(), 2u);
  EXPECT_LE(s.spare_bytes, s.options.max_queued_bytes);
  EXPECT_EQ(s.take_spare().body.capacity(), 40001u);
  EXPECT_EQ(s.take_spare().body.capacity(), 40000u);
  EXPECT_EQ(s.take_spare().body.capacity(), 0u) << "none spare: a new one";
  EXPECT_EQ(s.spare_bytes, 0u);
}

TEST_F(AmqpClientTest, FailsOverToTheNextUri) {
  AmqpClientOptions o = options("q.failover");
  const chunkd::test::ClosedPort closed;  // refuses every connection
  const std::uint16_t dead = closed.port();
  o.uris = {"amqp://guest@127.0.0.1:" + std::to_string(dead) + "/%2f", node_->amqp_uri()};
  AmqpClient& c = make(o);
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  EXPECT_EQ(c.stats().uri, node_->amqp_uri());
  EXPECT_GE(c.stats().connect_failures, 1u);
}

TEST_F(AmqpClientTest, RefusesBadOptionsAndOverlongKeys) {
  AmqpClientOptions bad = options("q.bad");
  bad.uris = {"http://example"};
  EXPECT_FALSE(make(bad).start());
  AmqpClient& c = make(options("q.keys"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  EXPECT_EQ(c.publish(std::string(256, 'k'), {{bytes_of("x")}}), AmqpClient::PublishResult::Error);
  EXPECT_EQ(c.publish(std::string(255, 'k'), {{bytes_of("x")}}), AmqpClient::PublishResult::Ok);
}

// An MQTT topic over 255 bytes is routed by RabbitMQ but cannot be delivered over AMQP: the
// broker closes the consumer's connection (541). The client comes back each time, the queue's
// delivery limit drops the message, and the queue serves on.
TEST_F(AmqpClientTest, AnOverlongTopicCostsReconnectsNotTheConsumer) {
  AmqpClientOptions o = options("q.long");
  o.binding_keys = {"long.#"};
  o.delivery_limit = 2;
  AmqpClient& c = make(o);
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  std::string error;
  ASSERT_TRUE(chunkd::test::mqtt_publish_raw(node_->mqtt_port(), "long/" + std::string(260, 't'),
                                             "poison", error))
      << error;
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().broker_internal_errors >= 1; }))
      << node_->log();
  ASSERT_TRUE(run_until(&loop_, [&] { return queue_info("q.long", "messages") == "0"; }));
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  ASSERT_TRUE(chunkd::test::mqtt_publish_raw(node_->mqtt_port(), "long/ok", "fine", error));
  ASSERT_TRUE(run_until(&loop_, [&] { return !deliveries_.empty(); }));
  EXPECT_EQ(deliveries_.back().routing_key, "long.ok");
  EXPECT_LE(c.stats().broker_internal_errors, 3u) << "the delivery limit ended it";
}

TEST_F(AmqpClientTest, ReconnectsAfterTheNodeRestarts) {
  AmqpClient& c = make(options("q.restart"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  node_->stop();
  ASSERT_TRUE(run_until(&loop_, [&] { return !c.connected(); }));
  EXPECT_EQ(c.publish("test.q.restart.x", {{bytes_of("x")}}),
            AmqpClient::PublishResult::NotConnected);
  ASSERT_TRUE(node_->start()) << node_->error();
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  EXPECT_EQ(c.stats().sessions, 2u);
  ASSERT_EQ(c.publish("test.q.restart.x", {{bytes_of("x")}}), AmqpClient::PublishResult::Ok);
  ASSERT_TRUE(run_until(&loop_, [&] { return deliveries_.size() == 1; }))
      << "the durable queue is consumed again";
}

// RabbitMQ 3.10 answers a wrong password with connection.close 403 (rabbitmq-c announces
// authentication_failure_close): a permanent verdict, reported once however often it is retried;
// the client keeps retrying and logs in once the password is right.
TEST_F(AmqpClientTest, ARefusedLoginIsReportedOnceAsPermanentAndRetried) {
  add_user("login-test", "right");
  AmqpClientOptions o = options("q.login");
  o.uris = {uri_of("login-test")};
  o.password = "wrong";
  o.backoff_max_ms = 100;
  AmqpClient& c = make(o);
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.stats().connect_failures >= 4; }));
  ASSERT_EQ(failures_.size(), 1u) << failures_.back().message;
  const AmqpFailureReport& r = failures_[0];
  EXPECT_EQ(r.cause, AmqpFailure::LoginRefused) << r.message;
  EXPECT_TRUE(r.permanent);
  EXPECT_EQ(r.uri, o.uris[0]);
  EXPECT_NE(r.message.find(o.uris[0] + ": the broker refused the login of user login-test (403 "),
            std::string::npos)
      << r.message;
  EXPECT_FALSE(c.connected());
  std::string out;
  ASSERT_EQ(node_->ctl({"change_password", "login-test", "wrong"}, out), 0) << out;
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected(); }));
  EXPECT_EQ(failures_.size(), 1u);
}

TEST_F(AmqpClientTest, AnUnknownVhostIsPermanent) {
  AmqpClientOptions o = options("q.vhost");
  o.uris = {uri_of("guest", "127.0.0.1", "no-such-vhost")};
  AmqpClient& c = make(o);
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return !failures_.empty(); }));
  EXPECT_EQ(failures_[0].cause, AmqpFailure::VhostRefused) << failures_[0].message;
  EXPECT_TRUE(failures_[0].permanent);
  EXPECT_NE(failures_[0].message.find("vhost \"no-such-vhost\""), std::string::npos)
      << failures_[0].message;
}

// A permanent verdict needs every URI to refuse: a node that refuses while another is only
// unreachable (it may come up and accept) is retried; when all refuse, the verdict is final.
TEST_F(AmqpClientTest, APermanentVerdictNeedsEveryUriToRefuse) {
  add_user("login-both", "right");
  const chunkd::test::ClosedPort closed;  // refuses every connection
  const std::uint16_t dead = closed.port();
  AmqpClientOptions mixed = options("q.mixed");
  mixed.uris = {"amqp://login-both@127.0.0.1:" + std::to_string(dead) + "/%2f",
                uri_of("login-both")};
  mixed.password = "wrong";
  mixed.backoff_max_ms = 100;
  AmqpClient& m = make(mixed);
  ASSERT_TRUE(m.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return m.stats().connect_failures >= 6; }));
  ASSERT_EQ(failures_.size(), 2u);
  for (const AmqpFailureReport& r : failures_) EXPECT_FALSE(r.permanent) << r.message;
  EXPECT_EQ(failures_[0].cause, AmqpFailure::Unreachable) << failures_[0].message;
  EXPECT_EQ(failures_[1].cause, AmqpFailure::LoginRefused) << failures_[1].message;
  stop(m);
  failures_.clear();

  AmqpClientOptions both = mixed;
  both.uris = {uri_of("login-both"), uri_of("login-both", "localhost")};
  AmqpClient& b = make(both);
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return b.stats().connect_failures >= 6; }));
  ASSERT_EQ(failures_.size(), 2u);
  EXPECT_FALSE(failures_[0].permanent) << "the other URI was not tried yet";
  EXPECT_TRUE(failures_[1].permanent) << failures_[1].message;
  EXPECT_NE(failures_[1].message.find(both.uris[1] + ": the broker refused the login"),
            std::string::npos)
      << failures_[1].message;
  EXPECT_NE(failures_[1].message.find("(and every other URI in amqp.uris)"), std::string::npos)
      << failures_[1].message;
}

}  // namespace
