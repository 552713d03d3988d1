// chunkd on a three-node RabbitMQ cluster: kill -9 of the node chunkd consumes through (where it
// declared the quorum queue) mid-download; chunkd fails over to the next URI, the queue elects a
// new leader, and the devices on the surviving nodes complete byte-exact. The slowest AMQP test
// (three nodes start and join: about a minute), so it is one test.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
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

TEST(AmqpCluster, KillNineOfOneNodeOfThreeLetsDevicesOnTheOthersComplete) {
  if (!RabbitNode::available()) GTEST_SKIP() << RabbitNode::missing();
  if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
  RabbitCluster cluster(3);
  ASSERT_TRUE(cluster.start()) << cluster.error();
  TestS3Server s3;
  ASSERT_TRUE(s3.start() && s3.make_bucket("content")) << s3.error();

  TestDaemon daemon(cluster.node(1).mqtt_uri());  // [mqtt] is not used with [amqp]
  const std::string bucket = daemon.add_bucket("fw");
  const std::string credentials = daemon.dir() + "/s3-credentials";
  write_file(credentials, s3.credentials_ini());
  daemon.set("storage", "content_bucket", "\"shared\"");
  daemon.set_extra_toml(
      "[amqp]\nuris = [" + TestDaemon::quote(cluster.node(0).amqp_uri()) + ", " +
      TestDaemon::quote(cluster.node(1).amqp_uri()) + ", " +
      TestDaemon::quote(cluster.node(2).amqp_uri()) +
      "]\nqueue = \"cluster.requests\"\n[buckets.shared]\ntype = \"s3\"\nendpoint = " +
      TestDaemon::quote(s3.endpoint()) +
      "\nregion = \"us-east-1\"\nbucket = \"content\"\ncredentials_file = " +
      TestDaemon::quote(credentials) + "\n");
  daemon.set("delivery", "per_thing_blocks_per_s", "100");  // downloads last a few seconds
  ASSERT_TRUE(daemon.start()) << daemon.error() << daemon.log();
  const std::string bytes = test_bytes(1u << 20, 5);  // 256 blocks of 4 KiB
  write_file(bucket + "/fw.bin", bytes);
  auto created =
      daemon.http().request("POST", "/streams/fw", create_body({{0, "fw", "fw.bin", std::nullopt}}),
                            {{"Content-Type", "application/json"}});
  ASSERT_EQ(created.status, 201) << created.body;

  constexpr int kDevices = 6;
  // Blocks received, per device. The node dies once EVERY device is mid-download. Seen on
  // RabbitMQ 3.10.8: a device that connected 0.2 s before the kill had none of its describes
  // (one every 3 s, for 60 s) reach the queue while chunkd answered every other device. The
  // broker's quorum-queue client of that MQTT connection sent them to the dead leader: a new
  // leader announces itself only to the publishers its state already holds, and the client
  // otherwise resends only after 32 unanswered publishes and a 10 s timer. A broker hazard for a
  // device that connects during a fail-over (it recovers by reconnecting), not chunkd's.
  std::vector<std::atomic<std::uint64_t>> progress(kDevices);
  std::vector<DownloadResult> results(kDevices);
  std::vector<std::thread> threads;
  for (int i = 0; i < kDevices; ++i) {
    threads.emplace_back([&, i] {
      Device d(cluster.node(1 + i % 2).mqtt_uri(), "dev" + std::to_string(i));
      DownloadResult& r = results[static_cast<std::size_t>(i)];
      if (!d.connect() || !d.watch("fw")) {
        r.error = "device did not connect or subscribe: " + d.mqtt().error();
        return;
      }
      DownloadOptions o;
      o.progress = &progress[static_cast<std::size_t>(i)];
      o.idle_timeout_ms = 2000;  // requests the broker lost while the queue moved are asked again
      r = d.download("fw", Format::Cbor, 0, o);
    });
  }
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto all_started = [&] {
    std::uint64_t total = 0;
    for (const auto& p : progress) {
      if (p.load() == 0) return false;
      total += p.load();
    }
    return total >= kDevices * 256 / 4;
  };
  while (!all_started() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto killed_at = std::chrono::steady_clock::now();
  cluster.node(0).kill9();
  for (auto& t : threads) t.join();
  const auto done_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - killed_at)
                           .count();
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok) << r.error << daemon.log();
    EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
  }
  const std::string m = daemon.http().request("GET", "/metrics").body;
  EXPECT_EQ(metric_value(m, "chunkd_amqp_connected"), 1.0);
  EXPECT_GE(metric_value(m, "chunkd_amqp_failovers_total"), 1.0) << "it moved to another node";
  std::fprintf(stderr, "devices completed %lld ms after the kill; chunkd's sessions: %.0f\n",
               static_cast<long long>(done_ms), metric_value(m, "chunkd_amqp_sessions_total"));
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace chunkd::test
