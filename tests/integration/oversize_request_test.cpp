// A device that publishes a huge message to a request topic (Hardening, item 4): chunkd's memory
// stays bounded and other devices are still served. With MQTT 5 chunkd's CONNECT carries Maximum
// Packet Size (io/mqtt_options.hpp max_packet_bytes), so the broker drops the message for chunkd
// instead of sending it; with mqtt.protocol = "3.1.1" the broker's message_size_limit is the only
// bound (README, deployment notes) and this test would fail on its memory check.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;

constexpr std::size_t kHugeRequestBytes = 100u << 20;
// chunkd's peak RSS may grow by at most this much over its baseline while the huge message passes
// (it would grow by the message at least, twice in libmosquitto's buffers, if it arrived).
constexpr std::uint64_t kMaxGrowthKib = 48u << 10;

// A "VmRSS:"-style line of /proc/<pid>/status in KiB, 0 when missing.
std::uint64_t status_kib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    std::uint64_t kib = 0;
    fields >> kib;
    return kib;
  }
  return 0;
}

TEST(OversizeRequest, HugePublishToAGetTopicLeavesMemoryBoundedAndOthersServed) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  const std::string content = test_bytes(300 * 1024 + 17, 41);
  ASSERT_TRUE(stack.start());
  ASSERT_TRUE(stack.create_file_stream("fw1", content));

  auto other = stack.device("other-device", "fw1");
  ASSERT_TRUE(other);
  DownloadOptions opts;
  opts.block_size = 4096;
  // Warm up (catalog, cache, buffers) before the baseline.
  auto first = other->download("fw1", Format::Cbor, 0, opts);
  ASSERT_TRUE(first.ok) << first.error << stack.daemon().log();

  const pid_t pid = stack.daemon().pid();
  const std::uint64_t baseline_kib = status_kib(pid, "VmRSS");
  ASSERT_GT(baseline_kib, 0u);

  auto attacker = stack.device("huge-thing", "fw1");
  ASSERT_TRUE(attacker);
  const std::string huge(kHugeRequestBytes, '{');
  ASSERT_TRUE(attacker->send_raw("$aws/things/huge-thing/streams/fw1/get/json", as_bytes(huge)));
  // The broker handles one client's packets in order and forwards them to chunkd in order: once
  // this describe is answered, the huge message has been dealt with (sent to chunkd or dropped).
  // (Had chunkd received the huge message, its InvalidRequest rejection would come first.)
  ASSERT_TRUE(attacker->send_describe("fw1", Format::Json, "after-huge"));
  auto d = attacker->wait_for(protocol::ReplyKind::Description, 120000);
  ASSERT_TRUE(d) << "no description after the huge publish\n" << stack.daemon().log();

  // Another device is still served.
  auto second = other->download("fw1", Format::Json, 0, opts);
  ASSERT_TRUE(second.ok) << second.error << stack.daemon().log();
  EXPECT_EQ(bytes_to_string(second.bytes), content);

  ASSERT_TRUE(stack.daemon().running()) << stack.daemon().log();
  const std::uint64_t peak_kib = status_kib(pid, "VmHWM");
  RecordProperty("baseline_rss_kib", std::to_string(baseline_kib));
  RecordProperty("peak_rss_kib", std::to_string(peak_kib));
  std::printf("chunkd RSS: baseline %llu KiB, peak %llu KiB\n",
              static_cast<unsigned long long>(baseline_kib),
              static_cast<unsigned long long>(peak_kib));
  EXPECT_LT(peak_kib, baseline_kib + kMaxGrowthKib)
      << "chunkd's peak RSS grew by " << (peak_kib - baseline_kib) << " KiB\n"
      << stack.daemon().log();
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test
