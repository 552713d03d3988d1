// The real chunkd binary when things go wrong around it: the broker restarts, chunkd restarts or
// is stopped mid-download, many devices download at once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;
using Clock = std::chrono::steady_clock;

// Waits (bounded) until `counter` reaches `value`.
bool wait_for_progress(const std::atomic<std::uint64_t>& counter, std::uint64_t value,
                       int timeout_ms = 120000) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (counter.load() < value) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

constexpr std::size_t kFileBytes = 4u << 20;  // 1024 blocks of 4096
constexpr std::uint32_t kBlockBytes = 4096;

// A stack whose deliveries are slowed down (blocks per second per thing) so that an event can
// be placed in the middle of a download.
class SlowStack : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(stack.start_broker());
    content = test_bytes(kFileBytes, 77);
    stack.put("big.bin", content);
    // 1024 blocks at 200 a second: about five seconds per download.
    stack.daemon().set("delivery", "per_thing_blocks_per_s", "200");
    ASSERT_TRUE(stack.start());
    ASSERT_TRUE(stack.create_file_stream("slow", content));
  }

  Stack stack;
  std::string content;
};

TEST_F(SlowStack, BrokerRestartMidDownloadIsSurvived) {
  auto dev = stack.device("survivor", "slow");
  ASSERT_TRUE(dev);
  std::atomic<std::uint64_t> progress{0};
  DownloadResult result;
  std::thread download([&] {
    DownloadOptions opts;
    opts.block_size = kBlockBytes;
    opts.progress = &progress;
    opts.idle_timeout_ms = 2000;
    result = dev->download("slow", Format::Cbor, 0, opts);
  });
  const std::uint64_t blocks = kFileBytes / kBlockBytes;
  ASSERT_TRUE(wait_for_progress(progress, blocks / 16)) << stack.daemon().log();
  stack.broker.stop();
  const std::uint64_t at_stop = progress.load();
  ASSERT_TRUE(stack.broker.restart()) << stack.broker.error();
  // The daemon reconnects and resubscribes by itself.
  EXPECT_TRUE(stack.daemon().wait_health(200)) << stack.daemon().log();
  download.join();
  ASSERT_TRUE(result.ok) << result.error << "\n" << stack.daemon().log();
  EXPECT_TRUE(bytes_to_string(result.bytes) == content);
  if (at_stop < blocks) {  // the broker really went away mid-download
    EXPECT_GE(dev->mqtt().reconnects(), 1);
    EXPECT_GE(result.rerequests, 1u);
  }
  // A new device after the restart is served too.
  auto late = stack.device("late", "slow");
  ASSERT_TRUE(late);
  auto d = late->describe("slow", Format::Json);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->kind, protocol::ReplyKind::Description);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(SlowStack, SigtermDuringADownloadExitsZeroAndTheRestartedDaemonFinishesIt) {
  auto dev = stack.device("patient", "slow");
  ASSERT_TRUE(dev);
  std::atomic<std::uint64_t> progress{0};
  DownloadResult result;
  std::thread download([&] {
    DownloadOptions opts;
    opts.block_size = kBlockBytes;
    opts.mode = DownloadMode::Bitmap;
    opts.bitmap_blocks_per_request = 32;
    opts.progress = &progress;
    opts.idle_timeout_ms = 2000;
    result = dev->download("slow", Format::Json, 0, opts);
  });
  const std::uint64_t blocks = kFileBytes / kBlockBytes;
  ASSERT_TRUE(wait_for_progress(progress, blocks / 16)) << stack.daemon().log();
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  download.join();
  ASSERT_TRUE(result.ok) << result.error << "\n" << stack.daemon().log();
  EXPECT_TRUE(bytes_to_string(result.bytes) == content);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(Resilience, RestartedDaemonServesItsStreamsAgain) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string a = test_bytes(300000, 5);
  const std::string b = test_bytes(4097, 6);
  ASSERT_TRUE(stack.create_file_stream("ra", a));
  ASSERT_TRUE(stack.create_file_stream("rb", b));
  auto dev = stack.device("returning", "ra");
  ASSERT_TRUE(dev);
  ASSERT_TRUE(dev->watch("rb"));
  DownloadOptions opts;
  opts.block_size = 2048;
  auto first = dev->download("ra", Format::Cbor, 0, opts);
  ASSERT_TRUE(first.ok) << first.error;

  // Clean restart, then kill -9 and restart: the same device (still connected to the broker)
  // and a new one are served both streams.
  for (bool clean : {true, false}) {
    SCOPED_TRACE(clean ? "after SIGTERM" : "after kill -9");
    if (clean) {
      ASSERT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
    } else {
      stack.daemon().kill9();
    }
    ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
    auto again = dev->download("ra", Format::Json, 0, opts);
    ASSERT_TRUE(again.ok) << again.error;
    EXPECT_TRUE(bytes_to_string(again.bytes) == a);
    auto other = dev->download("rb", Format::Cbor, 0, opts);
    ASSERT_TRUE(other.ok) << other.error;
    EXPECT_TRUE(bytes_to_string(other.bytes) == b);
    auto fresh = stack.device(clean ? "fresh-1" : "fresh-2", "rb");
    ASSERT_TRUE(fresh);
    auto f = fresh->download("rb", Format::Json, 0, opts);
    ASSERT_TRUE(f.ok) << f.error;
    EXPECT_TRUE(bytes_to_string(f.bytes) == b);
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(Resilience, NotReadyUntilTheBrokerIsThere) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  stack.broker.stop();  // the port is known; nothing listens on it
  const std::string bytes = test_bytes(10000, 8);
  stack.put("x.bin", bytes);
  ASSERT_TRUE(stack.daemon().start(/*wait_ready=*/false)) << stack.daemon().error();
  // The control API is up but not ready.
  auto h = stack.request("GET", "/healthz");
  EXPECT_EQ(h.status, 503) << h.body;
  Json j(h.body);
  EXPECT_EQ(j.str("/error/code"), "SERVICE_UNAVAILABLE") << h.body;
  // Streams can be managed meanwhile.
  ASSERT_EQ(stack.create("early", {{0, "fw", "x.bin", std::nullopt}}).status, 201);
  ASSERT_TRUE(stack.broker.restart()) << stack.broker.error();
  ASSERT_TRUE(stack.daemon().wait_health(200)) << stack.daemon().log();
  auto dev = stack.device("early-bird", "early");
  ASSERT_TRUE(dev);
  DownloadOptions opts;
  opts.block_size = 1024;
  auto r = dev->download("early", Format::Cbor, 0, opts);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
  // The broker goes away again: not ready; it comes back: ready.
  stack.broker.stop();
  EXPECT_TRUE(stack.daemon().wait_health(503)) << stack.daemon().log();
  ASSERT_TRUE(stack.broker.restart()) << stack.broker.error();
  EXPECT_TRUE(stack.daemon().wait_health(200)) << stack.daemon().log();
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(Resilience, TwoHundredDevicesAtOnce) {
  constexpr int kDevices = 200;
  constexpr std::size_t kBytes = 1u << 20;
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string content = test_bytes(kBytes, 200);
  ASSERT_TRUE(stack.create_file_stream("fleet", content));

  // Connect every device first, then start all downloads together.
  std::vector<std::unique_ptr<Device>> devices(kDevices);
  {
    std::vector<std::thread> connectors;
    std::atomic<int> failures{0};
    // Connecting is slow one at a time (paho notices a new socket only when its poll of the
    // others times out), so connect many at once.
    constexpr int kConnectors = 50;
    for (int t = 0; t < kConnectors; ++t) {
      connectors.emplace_back([&, t] {
        for (int i = t; i < kDevices; i += kConnectors) {
          auto d = std::make_unique<Device>(stack.broker.uri(), "fleet-" + std::to_string(i));
          if (!d->connect() || !d->watch("fleet")) {
            failures.fetch_add(1);
            continue;
          }
          devices[static_cast<std::size_t>(i)] = std::move(d);
        }
      });
    }
    for (auto& c : connectors) c.join();
    ASSERT_EQ(failures.load(), 0);
  }
  std::atomic<bool> go{false};
  std::vector<std::string> errors(kDevices);
  std::vector<std::thread> threads;
  const std::uint32_t block_sizes[] = {4096, 32768, 131072, 1024};
  for (int i = 0; i < kDevices; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      DownloadOptions opts;
      opts.block_size = block_sizes[i % 4];
      opts.mode = (i / 4) % 2 == 0 ? DownloadMode::Window : DownloadMode::Bitmap;
      opts.bitmap_blocks_per_request = protocol::kMaxRequestPayloadBytes / opts.block_size;
      opts.client_token = "dev" + std::to_string(i);
      opts.idle_timeout_ms = 10000;
      Format format = i % 2 == 0 ? Format::Cbor : Format::Json;
      auto r = devices[static_cast<std::size_t>(i)]->download("fleet", format, 0, opts);
      std::string& err = errors[static_cast<std::size_t>(i)];
      if (!r.ok) {
        err = r.error;
      } else if (bytes_to_string(r.bytes) != content) {
        err = "content differs";
      }
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  int failed = 0;
  for (int i = 0; i < kDevices; ++i) {
    if (!errors[static_cast<std::size_t>(i)].empty()) {
      ++failed;
      ADD_FAILURE() << "device " << i << ": " << errors[static_cast<std::size_t>(i)];
    }
  }
  EXPECT_EQ(failed, 0) << stack.daemon().log(8000);
  devices.clear();
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test
