// chunkd on AMQP ([amqp], engine/amqp_transport.hpp): devices speak MQTT to RabbitMQ's MQTT
// plugin, chunkd instances consume their requests from one quorum queue and publish the replies
// back through the exchange. One RabbitMQ node and one S3 server (the content bucket every shared
// config names) for the suite; each test has its own queue (deleted afterwards) and instances.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/api.hpp"
#include "tests/integration/device.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"
#include "tests/support/rabbitmq.hpp"
#include "tests/support/s3_server.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;

// One chunkd instance on the suite's RabbitMQ node, with its own data_dir and bucket "fw".
class Instance {
 public:
  Instance(const RabbitNode& node, const TestS3Server& s3, const std::string& credentials,
           const std::string& queue, const std::string& extra_amqp = "")
      : daemon_(node.mqtt_uri()) {  // [mqtt] is not used with [amqp]
    bucket_ = daemon_.add_bucket("fw");
    daemon_.set("storage", "content_bucket", "\"shared\"");
    daemon_.set_extra_toml(
        "[amqp]\nuris = [" + TestDaemon::quote(node.amqp_uri()) +
        "]\nqueue = " + TestDaemon::quote(queue) + "\n" + extra_amqp +
        "\n[buckets.shared]\ntype = \"s3\"\nendpoint = " + TestDaemon::quote(s3.endpoint()) +
        "\nregion = \"us-east-1\"\nbucket = \"content\"\ncredentials_file = " +
        TestDaemon::quote(credentials) + "\n");
  }
  TestDaemon& daemon() { return daemon_; }

  // Stream `id` of one file (fileId 0) with `bytes`, created through this instance's API.
  ::testing::AssertionResult create(const std::string& id, const std::string& bytes) {
    write_file(bucket_ + "/" + id + ".bin", bytes);
    HttpClient http = daemon_.http();
    auto r =
        http.request("POST", "/streams/" + id, create_body({{0, "fw", id + ".bin", std::nullopt}}),
                     {{"Content-Type", "application/json"}});
    if (r.status == 201 || r.status == 200) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "create " << id << ": " << r.status << " " << r.body << r.error << "\n"
           << daemon_.log();
  }
  double metric(const std::string& sample) {
    return chunkd::test::metric_value(daemon_.http().request("GET", "/metrics").body, sample);
  }

 private:
  TestDaemon daemon_;
  std::string bucket_;
};

class AmqpIntegration : public ::testing::Test {
 protected:
  struct Shared {
    RabbitNode node;
    TestS3Server s3;
    std::string dir;
    std::string credentials;
    std::string error;
  };
  static Shared* shared_;

  static void SetUpTestSuite() {
    if (!RabbitNode::available() || !TestS3Server::missing().empty()) return;
    shared_ = new Shared;
    Shared& s = *shared_;
    if (!s.node.start()) {
      s.error = s.node.error();
    } else if (!s.s3.start() || !s.s3.make_bucket("content")) {
      s.error = s.s3.error();
    } else if (s.dir = make_temp_dir("amqp-it", s.error); !s.dir.empty()) {
      s.credentials = s.dir + "/s3-credentials";
      write_file(s.credentials, s.s3.credentials_ini());
    }
  }
  static void TearDownTestSuite() {
    if (shared_ != nullptr && !shared_->dir.empty()) std::filesystem::remove_all(shared_->dir);
    delete shared_;
    shared_ = nullptr;
  }

  void SetUp() override {
    if (!RabbitNode::available()) GTEST_SKIP() << RabbitNode::missing();
    if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_NE(shared_, nullptr);
    ASSERT_TRUE(shared_->error.empty()) << shared_->error;
    queue_ = std::string("it.") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  void TearDown() override {
    instances_.clear();
    std::string out;
    shared_->node.ctl({"delete_queue", queue_}, out);
  }

  Instance& instance(const std::string& extra_amqp = "") {
    instances_.push_back(std::make_unique<Instance>(shared_->node, shared_->s3,
                                                    shared_->credentials, queue_, extra_amqp));
    return *instances_.back();
  }

  // `devices` devices download stream `id` (expected `bytes`) at once, each on its own thread.
  std::vector<DownloadResult> download_all(const std::string& id, int devices,
                                           std::atomic<std::uint64_t>* progress = nullptr) {
    std::vector<DownloadResult> results(static_cast<std::size_t>(devices));
    std::vector<std::thread> threads;
    for (int i = 0; i < devices; ++i) {
      threads.emplace_back([&, i] {
        DownloadResult& r = results[static_cast<std::size_t>(i)];
        Device d(shared_->node.mqtt_uri(), "dev" + std::to_string(i));
        if (!d.connect() || !d.watch(id)) {
          r.error = "device did not connect or subscribe: " + d.mqtt().error();
          return;
        }
        DownloadOptions o;
        o.progress = progress;
        o.idle_timeout_ms = 2000;
        r = d.download(id, i % 2 == 0 ? Format::Cbor : Format::Json, 0, o);
      });
    }
    for (auto& t : threads) t.join();
    return results;
  }

  std::string queue_;
  std::vector<std::unique_ptr<Instance>> instances_;
};

AmqpIntegration::Shared* AmqpIntegration::shared_ = nullptr;

TEST_F(AmqpIntegration, ADeviceOnRabbitMqDownloadsByteExactThroughChunkd) {
  Instance& a = instance();
  ASSERT_TRUE(a.daemon().start()) << a.daemon().error() << a.daemon().log();
  const std::string bytes = test_bytes(300 * 1024 + 7, 1);
  ASSERT_TRUE(a.create("fw1", bytes));
  auto results = download_all("fw1", 2);
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok) << r.error << a.daemon().log();
    EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
  }
  EXPECT_EQ(a.metric("chunkd_amqp_connected"), 1.0);
  EXPECT_GT(a.metric("chunkd_amqp_acks_total"), 0.0);
  EXPECT_GT(a.metric("chunkd_amqp_publishes_total"), 0.0);
  EXPECT_GE(a.metric("chunkd_amqp_queued_bytes"), 0.0);
  EXPECT_EQ(a.metric("chunkd_mqtt_ready"), -1.0) << "no MQTT connection to speak of";
  // Every request was finished and acknowledged once its replies were confirmed.
  for (int i = 0; i < 200 && a.metric("chunkd_amqp_unacked_requests") != 0.0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(a.metric("chunkd_amqp_unacked_requests"), 0.0);
  EXPECT_EQ(a.daemon().stop(), 0) << a.daemon().log();
}

TEST_F(AmqpIntegration, TwoInstancesShareTheRequestsOfTwentyDevices) {
  Instance& a = instance();
  Instance& b = instance();
  ASSERT_TRUE(a.daemon().start()) << a.daemon().error() << a.daemon().log();
  ASSERT_TRUE(b.daemon().start()) << b.daemon().error() << b.daemon().log();
  const std::string bytes = test_bytes(256 * 1024 + 3, 2);
  ASSERT_TRUE(a.create("fw2", bytes));  // the same file through each: the same digests
  ASSERT_TRUE(b.create("fw2", bytes));
  auto results = download_all("fw2", 20);
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
  }
  EXPECT_GT(a.metric("chunkd_amqp_acks_total"), 0.0) << "a served some requests";
  EXPECT_GT(b.metric("chunkd_amqp_acks_total"), 0.0) << "b served some requests";
}

// The instance that dies has requests delivered and not acknowledged: RabbitMQ hands them to the
// other one, so every device completes.
TEST_F(AmqpIntegration, KillNineOfOneInstanceMidDownloadLosesNoDevice) {
  Instance& a = instance();
  Instance& b = instance();
  // a serves slowly, so it holds requests (delivered, not acknowledged) when it dies.
  a.daemon().set("delivery", "per_thing_blocks_per_s", "20");
  ASSERT_TRUE(a.daemon().start()) << a.daemon().error() << a.daemon().log();
  ASSERT_TRUE(b.daemon().start()) << b.daemon().error() << b.daemon().log();
  const std::string bytes = test_bytes(2u << 20, 3);  // 512 blocks of 4 KiB per device
  ASSERT_TRUE(a.create("fw3", bytes));
  ASSERT_TRUE(b.create("fw3", bytes));
  constexpr int kDevices = 8;
  std::atomic<std::uint64_t> progress{0};
  std::vector<DownloadResult> results;
  std::thread fleet([&] { results = download_all("fw3", kDevices, &progress); });
  while (progress.load() < kDevices * 512 / 5) {  // a fifth of all blocks arrived
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double a_acks = a.metric("chunkd_amqp_acks_total");
  a.daemon().kill9();
  fleet.join();
  ASSERT_EQ(results.size(), static_cast<std::size_t>(kDevices));
  std::size_t rerequests = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok) << r.error << b.daemon().log();
    EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
    rerequests += r.rerequests;
  }
  // What a held was redelivered to b: no device had to ask again for it.
  EXPECT_EQ(rerequests, 0u);
  EXPECT_GT(a_acks, 0.0) << "a was serving when it died";
  EXPECT_GT(b.metric("chunkd_amqp_acks_total"), 0.0);
}

// A request topic over 255 bytes closes the consumer's connection (RabbitMQ cannot encode it)
// until the delivery limit drops it; one whose replies would be over 255 bytes is refused and
// acknowledged; a dotted thing name is not routed to the queue at all. None of them stops the
// instance serving.
TEST_F(AmqpIntegration, OverlongTopicsAndDottedNamesDoNotTakeTheConsumerDown) {
  Instance& a = instance("delivery_limit = 2\n");
  ASSERT_TRUE(a.daemon().start()) << a.daemon().error() << a.daemon().log();
  const std::string bytes = test_bytes(20000, 4);
  ASSERT_TRUE(a.create("fw4", bytes));
  const std::uint16_t mqtt = shared_->node.mqtt_port();
  std::string error;
  const std::string long_thing(128, 't');
  const std::string poison =
      "$aws/things/" + long_thing + "/streams/" + std::string(128, 's') + "/get/json";
  const std::string no_room =  // 252 bytes: its rejected/json reply would be 257
      "$aws/things/" + long_thing + "/streams/" + std::string(94, 's') + "/get/json";
  // The refusable one first, alone: one the poison's connection closes handed back could run
  // out of deliveries before it is refused.
  ASSERT_TRUE(mqtt_publish_raw(mqtt, no_room, "{}", error)) << error;
  const std::string refused = "chunkd_amqp_refused_total{reason=\"reply_key_too_long\"}";
  for (int i = 0; i < 600 && a.metric(refused) < 1.0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(a.metric(refused), 1.0) << a.daemon().log();
  ASSERT_TRUE(mqtt_publish_raw(mqtt, poison, "{}", error)) << error;
  ASSERT_TRUE(mqtt_publish_raw(mqtt, "$aws/things/dev.x/streams/fw4/get/json", "{}", error));
  auto results = download_all("fw4", 1);
  ASSERT_TRUE(results[0].ok) << results[0].error << a.daemon().log();
  EXPECT_TRUE(bytes_to_string(results[0].bytes) == bytes);
  EXPECT_GE(a.metric("chunkd_amqp_refused_total{reason=\"broker_internal_error\"}"), 1.0)
      << a.daemon().log();
  EXPECT_EQ(a.metric(refused), 1.0);
  EXPECT_EQ(a.metric("chunkd_amqp_connected"), 1.0);
  EXPECT_TRUE(a.daemon().running());
}

}  // namespace
}  // namespace chunkd::test
