#include "engine/scheduler.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/block_server.hpp"
#include "engine/clock.hpp"
#include "engine/delivery_metrics.hpp"
#include "engine/metrics.hpp"
#include "protocol/device.hpp"
#include "protocol/error_code.hpp"
#include "tests/engine/fakes.hpp"

namespace chunkd::engine {
namespace {

using testing::FakeReader;
using testing::FakeTransport;
using testing::TempDir;

// A data reply's block index (the test jobs ask for JSON replies).
std::uint32_t block_of(const FakeTransport::Message& m) {
  auto d = protocol::decode_data_reply(protocol::Format::Json, m.payload);
  EXPECT_TRUE(d) << m.topic;
  return d ? d->block_index : UINT32_MAX;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    reader_ = std::make_unique<FakeReader>(&loop_);
    BlockCacheOptions co;
    co.data_dir = dir_.path();
    co.capacity_bytes = 4u << 20;
    cache_ = std::make_unique<BlockCache>(*reader_, metrics_, co);
    server_ = std::make_unique<BlockServer>(*cache_, transport_, delivery_metrics_, clock_, 0);
    stream_ = std::make_shared<io::StoredStream>();
    stream_->id = "s";
    stream_->version = 1;
  }

  void TearDown() override {
    if (scheduler_) {
      scheduler_->check_invariants();
      bool stopped = false;
      scheduler_->stop(0, [&] { stopped = true; });
      EXPECT_TRUE(testing::run_until(&loop_, [&] { return stopped; }));
      scheduler_.reset();
    }
    server_.reset();
    cache_->check_invariants();
    cache_.reset();
    bool closed = false;
    reader_->close([&] { closed = true; });
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return closed; }));
    reader_.reset();
    EXPECT_EQ(testing::drain_and_close(&loop_), 0);
  }

  const io::StoredFile& add_file(std::size_t size, std::uint32_t extent_bytes,
                                 std::uint32_t id = 0) {
    content_[id] = testing::pattern_bytes(size, id + 3);
    stream_->files.push_back(testing::make_blob(dir_.path(), content_[id], extent_bytes, id));
    return stream_->files.back();
  }

  Scheduler& make(SchedulerOptions o = {}) {
    scheduler_ = std::make_unique<Scheduler>(&loop_, *server_, transport_, clock_, metrics_, o);
    return *scheduler_;
  }

  // Things "a" then "b" each ask for `blocks` 1 KiB blocks (each reply is 4 + 1024 bytes here);
  // returns whose replies went out, in order.
  std::string serve_two_things(std::size_t quantum_bytes, std::uint32_t blocks) {
    add_file(64 * 1024, 16384);
    SchedulerOptions o;
    o.quantum_bytes = quantum_bytes;
    auto& s = make(o);
    EXPECT_EQ(s.submit(job("a", 0, 1024, 0, blocks)), Scheduler::Admit::Ok);
    EXPECT_EQ(s.submit(job("b", 0, 1024, 0, blocks)), Scheduler::Admit::Ok);
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
    std::string order;
    for (const auto& m : transport_.messages) order += m.key;
    return order;
  }

  BlockJob job(const std::string& thing, std::uint32_t file_id, std::uint32_t block_size,
               std::uint32_t first, std::uint32_t count) {
    BlockJob j;
    j.thing = thing;
    j.stream = stream_;
    for (auto& f : stream_->files) {
      if (f.file_id == file_id) j.file = &f;
    }
    j.block_size = block_size;
    for (std::uint32_t i = 0; i < count; ++i) j.blocks.push_back(first + i);
    j.data_topic = thing + "/data";
    j.rejected_topic = thing + "/rejected";
    j.received_ms = clock_.now_ms();
    return j;
  }

  // The payload bytes a block must carry.
  bool block_matches(const FakeTransport::Message& m, std::uint32_t file_id,
                     std::uint32_t block_size) {
    const auto& c = content_[file_id];
    auto d = protocol::decode_data_reply(protocol::Format::Json, m.payload);
    if (!d || d->file_id != file_id) return false;
    std::size_t off = std::size_t{d->block_index} * block_size;
    std::size_t n = std::min<std::size_t>(block_size, c.size() - off);
    return d->length == n && d->payload.size() == n &&
           std::memcmp(d->payload.data(), c.data() + off, n) == 0;
  }

  // GetStream jobs that ended with `outcome` (ok, aborted, dropped or a rejection code), as the
  // block server counts them.
  std::uint64_t ended(std::string_view outcome) {
    return metrics_.counter_value("chunkd_requests_total",
                                  R"(verb="get",outcome=")" + std::string(outcome) + "\"");
  }
  // Jobs that ended, however.
  std::uint64_t ended() {
    std::uint64_t n = ended("ok") + ended("aborted") + ended("dropped");
    for (int c = 0; c < protocol::kErrorCodeCount; ++c) {
      n += ended(protocol::to_string(static_cast<protocol::ErrorCode>(c)));
    }
    return n;
  }

  // A few loop turns with nothing more to do (reads complete on 0 ms timers).
  void settle(int turns = 300) {
    for (int i = 0; i < turns; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  }

  uv_loop_t loop_{};
  TempDir dir_;
  Metrics metrics_;
  ManualClock clock_;
  FakeTransport transport_;
  DeliveryMetrics delivery_metrics_{metrics_};
  std::unique_ptr<FakeReader> reader_;
  std::unique_ptr<BlockCache> cache_;
  std::unique_ptr<BlockServer> server_;
  std::unique_ptr<Scheduler> scheduler_;
  std::shared_ptr<io::StoredStream> stream_;
  std::map<std::uint32_t, std::vector<std::byte>> content_;
};

TEST_F(SchedulerTest, ServesAJobInOrderWithTheRightBytes) {
  add_file(10 * 1024 + 100, 4096);  // 11 blocks of 1 KiB, the last 100 bytes
  auto& s = make();
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 11)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  ASSERT_EQ(transport_.messages.size(), 11u);
  for (std::uint32_t i = 0; i < 11; ++i) {
    const auto& m = transport_.messages[i];
    EXPECT_EQ(m.key, "dev");
    EXPECT_EQ(m.topic, "dev/data");
    EXPECT_EQ(block_of(m), i);
    EXPECT_TRUE(block_matches(m, 0, 1024)) << "block " << i;
  }
  EXPECT_EQ(ended("ok"), 1u);
  EXPECT_EQ(metrics_.counter_value("chunkd_blocks_sent_total", R"(format="json")"), 11u);
  EXPECT_EQ(s.queued_requests(), 0u);
  EXPECT_EQ(s.active_things(), 0u);
}

TEST_F(SchedulerTest, BlocksSpanningExtentsAreStitched) {
  add_file(5 * 4096, 4096);
  make();
  // 3000-byte blocks straddle 4 KiB extents; 1 is 3000..5999 (extents 0 and 1).
  ASSERT_EQ(scheduler_->submit(job("dev", 0, 3000, 0, 7)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  ASSERT_EQ(transport_.messages.size(), 7u);
  for (const auto& m : transport_.messages) EXPECT_TRUE(block_matches(m, 0, 3000)) << block_of(m);
}

TEST_F(SchedulerTest, BlockLargerThanExtentsCoversSeveral) {
  add_file(64 * 1024, 4096);
  make();
  ASSERT_EQ(scheduler_->submit(job("dev", 0, 16384, 1, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  ASSERT_EQ(transport_.messages.size(), 2u);
  for (const auto& m : transport_.messages) EXPECT_TRUE(block_matches(m, 0, 16384));
}

TEST_F(SchedulerTest, RoundRobinDoesNotStarveSmallThings) {
  add_file(1 << 20, 256u << 10);  // 1024 blocks of 1 KiB
  SchedulerOptions o;
  o.per_thing_queue_requests = 16;
  auto& s = make(o);
  for (std::uint32_t k = 0; k < 8; ++k) {
    ASSERT_EQ(s.submit(job("big", 0, 1024, k * 128, 128)), Scheduler::Admit::Ok);
  }
  for (std::uint32_t i = 0; i < 100; ++i) {
    ASSERT_EQ(s.submit(job("small-" + std::to_string(i), 0, 1024, 900 + i, 1)),
              Scheduler::Admit::Ok);
  }
  EXPECT_EQ(s.active_things(), 101u);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 108; }));
  ASSERT_EQ(transport_.messages.size(), 1124u);

  std::set<std::string> small_served;
  std::uint32_t expect_big = 0;
  for (std::size_t i = 0; i < transport_.messages.size(); ++i) {
    const auto& m = transport_.messages[i];
    EXPECT_TRUE(block_matches(m, 0, 1024));
    if (m.key == "big") {
      EXPECT_EQ(block_of(m), expect_big++) << "a thing's blocks stay in order";
    } else {
      EXPECT_LT(i, 200u) << m.key << " waited behind the big download";
      small_served.insert(m.key);
    }
  }
  EXPECT_EQ(small_served.size(), 100u);
  EXPECT_EQ(expect_big, 1024u);
}

TEST_F(SchedulerTest, QueueBoundsThrottle) {
  add_file(8192, 4096);
  SchedulerOptions o;
  o.per_thing_queue_requests = 2;
  o.global_queue_requests = 4;
  auto& s = make(o);
  EXPECT_EQ(s.submit(job("a", 0, 1024, 0, 1)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.post("a", "a/description", {}), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("a", 0, 1024, 1, 1)), Scheduler::Admit::Throttled);  // per thing
  EXPECT_EQ(s.submit(job("b", 0, 1024, 0, 1)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("c", 0, 1024, 0, 1)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("d", 0, 1024, 0, 1)), Scheduler::Admit::Throttled);  // global
  EXPECT_EQ(s.queued_requests(), 4u);
  EXPECT_EQ(metrics_.gauge("chunkd_queue_requests", "").value(), 4.0);
  EXPECT_EQ(metrics_.gauge("chunkd_things_active", "").value(), 3.0);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.queued_requests() == 0; }));
  EXPECT_EQ(s.submit(job("d", 0, 1024, 0, 1)), Scheduler::Admit::Ok);  // room again
  EXPECT_EQ(metrics_.gauge("chunkd_things_active", "").value(), 1.0);
}

TEST_F(SchedulerTest, PerThingRateLimitFollowsTheClock) {
  add_file(64 * 1024, 16384);
  SchedulerOptions o;
  o.per_thing_blocks_per_s = 10;  // burst 10
  auto& s = make(o);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 30)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("other", 0, 1024, 0, 3)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 13; }));
  settle();
  auto count = [&](const std::string& key) {
    return std::count_if(transport_.messages.begin(), transport_.messages.end(),
                         [&](const auto& m) { return m.key == key; });
  };
  EXPECT_EQ(count("dev"), 10);
  EXPECT_EQ(count("other"), 3);
  clock_.advance_ms(500);
  s.wake();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return count("dev") >= 15; }));
  settle();
  EXPECT_EQ(count("dev"), 15);
  clock_.advance_ms(10'000);  // the bucket holds one second's worth at most
  s.wake();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return count("dev") >= 25; }));
  settle();
  EXPECT_EQ(count("dev"), 25);
  // Messages are not rate limited.
  ASSERT_EQ(s.post("dev", "dev/description", {}), Scheduler::Admit::Ok);
  settle();
  EXPECT_EQ(transport_.messages.size(), 28u) << "the description waits behind dev's blocks";
  clock_.advance_ms(500);
  s.wake();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.queued_requests() == 0; }));
  EXPECT_EQ(transport_.messages.back().topic, "dev/description");
}

TEST_F(SchedulerTest, PerThingBucketSurvivesBetweenRequests) {
  add_file(64 * 1024, 16384);
  SchedulerOptions o;
  o.per_thing_blocks_per_s = 4;
  auto& s = make(o);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 4)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 4, 4)), Scheduler::Admit::Ok);
  settle();
  EXPECT_EQ(transport_.messages.size(), 4u) << "a new request does not refill the bucket";
  clock_.advance_ms(1000);
  s.wake();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
  EXPECT_EQ(transport_.messages.size(), 8u);
}

TEST_F(SchedulerTest, GlobalRateLimitSharesTokens) {
  add_file(64 * 1024, 16384);
  SchedulerOptions o;
  o.global_blocks_per_s = 4;
  auto& s = make(o);
  ASSERT_EQ(s.submit(job("a", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("b", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 4; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 4u);
  clock_.advance_ms(500);
  s.wake();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 6; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 6u);
  std::size_t a = 0;
  for (const auto& m : transport_.messages) a += m.key == "a" ? 1u : 0u;
  EXPECT_EQ(a, 3u) << "the two things alternate";
}

// Each turn of a thing sends blocks until they add up to the quantum, then the next thing's turn.
TEST_F(SchedulerTest, ATurnServesAQuantumOfBlocks) {
  EXPECT_EQ(serve_two_things(3 * 1024, 7), "aaabbbaaabbbab");
  for (const char* thing : {"a", "b"}) {
    std::uint32_t next = 0;
    for (const auto& m : transport_.messages) {
      if (m.key == thing) EXPECT_EQ(block_of(m), next++);
    }
    EXPECT_EQ(next, 7u);
  }
}

TEST_F(SchedulerTest, ASmallQuantumAlternatesBlockByBlock) {
  EXPECT_EQ(serve_two_things(1, 3), "ababab");
}

TEST_F(SchedulerTest, BackpressurePausesAndResumesWithoutLoss) {
  add_file(40 * 1024, 8192);
  auto& s = make();
  transport_.accept_before_backpressure = 5;
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 40)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.held_back() > 0; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 5u);
  for (int round = 0; round < 3; ++round) {
    transport_.signal_writable();
    transport_.accept_before_backpressure = 7;
    ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.held_back() > 0; }));
  }
  transport_.signal_writable();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  ASSERT_EQ(transport_.messages.size(), 40u);
  for (std::uint32_t i = 0; i < 40; ++i) {
    EXPECT_EQ(block_of(transport_.messages[i]), i);
    EXPECT_TRUE(block_matches(transport_.messages[i], 0, 1024));
  }
  EXPECT_GE(metrics_.counter_value("chunkd_publish_refused_total", R"(reason="backpressure")"), 4u);
}

// A full broker connection holds back only the things routed to it.
TEST_F(SchedulerTest, AFullChannelHoldsBackOnlyItsThings) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  transport_.channels = {{"a", 0}, {"b", 1}, {"c", 0}, {"d", 2}};
  transport_.fill(0);
  for (const char* thing : {"a", "b", "c", "d"}) {
    ASSERT_EQ(s.submit(job(thing, 0, 1024, 0, 4)), Scheduler::Admit::Ok);
  }
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended("ok") == 2; }));
  settle();
  EXPECT_EQ(s.held_back(), 2u);
  EXPECT_FALSE(s.paused()) << "the other channels are served";
  ASSERT_EQ(transport_.messages.size(), 8u);
  for (const auto& m : transport_.messages) EXPECT_TRUE(m.key == "b" || m.key == "d") << m.key;
  EXPECT_EQ(transport_.refused, 1u) << "c waits without being offered to its full channel";
  // Things on a free channel are served while channel 0 stays full.
  ASSERT_EQ(s.submit(job("b", 0, 1024, 4, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended("ok") == 3; }));
  EXPECT_EQ(s.held_back(), 2u);
  transport_.drain(0);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended("ok") == 5; }));
  EXPECT_EQ(s.held_back(), 0u);
  ASSERT_EQ(transport_.messages.size(), 18u);
  std::map<std::string, std::uint32_t> next;
  for (const auto& m : transport_.messages) {
    EXPECT_EQ(block_of(m), next[m.key]++) << m.key;
    EXPECT_TRUE(block_matches(m, 0, 1024));
  }
  EXPECT_EQ(next["a"], 4u);
  EXPECT_EQ(next["c"], 4u);
  EXPECT_EQ(next["b"], 6u);
}

// A channel that stays full drains without a callback: the backstop timer re-checks it.
TEST_F(SchedulerTest, AHeldChannelIsReleasedByTheBackstopToo) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  transport_.channels = {{"a", 3}};
  transport_.fill(3);
  ASSERT_EQ(s.submit(job("a", 0, 1024, 0, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.held_back() == 1; }));
  transport_.full.clear();  // room again, no on_writable
  ASSERT_TRUE(testing::run_until(
      &loop_, [&] { return ended("ok") == 1; }, 2'000'000));
  EXPECT_EQ(transport_.messages.size(), 2u);
}

TEST_F(SchedulerTest, BytesInFlightBoundStopsEncoding) {
  add_file(8 * 1024, 8192);
  SchedulerOptions o;
  o.max_publish_bytes_in_flight = 1000;
  auto& s = make(o);
  transport_.in_flight = 1000;
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 8)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.paused(); }));
  settle();
  EXPECT_TRUE(transport_.messages.empty());
  EXPECT_EQ(transport_.attempts, 0u) << "nothing encoded or offered while over the bound";
  transport_.in_flight = 0;
  transport_.signal_writable();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  EXPECT_EQ(transport_.messages.size(), 8u);
}

TEST_F(SchedulerTest, MessagesStayInOrderWithBlocks) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  std::vector<std::byte> hello{std::byte{'h'}, std::byte{'i'}};
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 3)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.post("dev", "dev/description", hello), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 3, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.queued_requests() == 0; }));
  ASSERT_EQ(transport_.messages.size(), 6u);
  EXPECT_EQ(transport_.messages[3].topic, "dev/description");
  EXPECT_EQ(transport_.messages[3].payload, hello);
  EXPECT_EQ(block_of(transport_.messages[2]), 2u);
  EXPECT_EQ(block_of(transport_.messages[4]), 3u);
}

TEST_F(SchedulerTest, ReadFailureBecomesARejectionInPlace) {
  add_file(16 * 1024, 8192);
  auto& s = make();
  // The blob changed under the stream: every read of extent 0 mismatches its manifest.
  {
    std::string path = blob_path(dir_.path(), stream_->files[0].digest);
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "X", 1, 10), 1);
    ::close(fd);
  }
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 4)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 8, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
  ASSERT_EQ(transport_.messages.size(), 3u);
  EXPECT_EQ(transport_.messages[0].topic, "dev/rejected");
  EXPECT_EQ(ended("ETagMismatch"), 1u) << "a manifest mismatch";
  EXPECT_GE(metrics_.counter_value("chunkd_cache_manifest_mismatch_total"), 1u);
  EXPECT_EQ(ended("ok"), 1u);
  EXPECT_EQ(block_of(transport_.messages[1]), 8u);
}

TEST_F(SchedulerTest, AFailedPrefetchIsRetriedOnDemand) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  reader_->corrupt_next();  // a transient fault hits the prefetch made at submit time
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 8)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  EXPECT_EQ(ended("ok"), 1u);
  EXPECT_EQ(transport_.messages.size(), 8u);
  EXPECT_EQ(reader_->reads_started, 2u);
}

TEST_F(SchedulerTest, MissingBlobFailsTheJob) {
  add_file(4096, 4096);
  stream_->files[0].digest = "ffffffffffffffffffffffffffffffff";
  auto& s = make();
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  EXPECT_EQ(ended("InternalError"), 1u) << "the blob is missing (ENOENT)";
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() == 1; }));
  EXPECT_EQ(transport_.messages[0].topic, "dev/rejected");
}

TEST_F(SchedulerTest, DisconnectedPublisherDropsTheRestOfTheJob) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  transport_.fail_next(Transport::SendResult::NotConnected);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 8)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 2)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
  EXPECT_EQ(ended("aborted"), 1u);
  EXPECT_EQ(ended("ok"), 1u);
  EXPECT_EQ(transport_.messages.size(), 2u);
  EXPECT_EQ(metrics_.counter_value("chunkd_publish_refused_total", R"(reason="not_connected")"),
            1u);
}

TEST_F(SchedulerTest, PrefetchKeepsTheNextExtentInFlight) {
  add_file(4 * 8192, 8192);
  auto& s = make();
  reader_->hold = true;
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 32)), Scheduler::Admit::Ok);
  EXPECT_EQ(reader_->reads_started, 1u) << "a queued job's first extent is read at once";
  settle(10);
  ASSERT_TRUE(reader_->complete_one());
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() == 8; }));
  settle(10);
  EXPECT_EQ(transport_.messages.size(), 8u) << "waits for extent 1";
  EXPECT_EQ(reader_->reads_started, 2u) << "extent 1 was requested while extent 0 was served";
  EXPECT_TRUE(cache_->reading(stream_->files[0], 1));
  reader_->release();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 1; }));
  EXPECT_EQ(reader_->reads_started, 4u);
}

TEST_F(SchedulerTest, ExtentReadsInFlightAreBounded) {
  SchedulerOptions o;
  o.max_extent_reads = 3;
  o.max_prefetch_reads = 1;
  for (std::uint32_t f = 0; f < 10; ++f) add_file(4096, 4096, f);
  auto& s = make(o);
  reader_->hold = true;
  for (std::uint32_t f = 0; f < 10; ++f) {
    ASSERT_EQ(s.submit(job("t" + std::to_string(f), f, 1024, 0, 4)), Scheduler::Admit::Ok);
  }
  settle(20);
  EXPECT_LE(reader_->in_flight(), 3u);
  while (ended() < 10) {
    EXPECT_LE(reader_->in_flight(), 3u);
    reader_->complete_all();
    settle(5);
  }
  EXPECT_EQ(transport_.messages.size(), 40u);
}

TEST_F(SchedulerTest, StopFinishesStartedJobsAndDropsTheRest) {
  add_file(16 * 1024, 16384);
  auto& s = make();
  transport_.accept_before_backpressure = 1;
  ASSERT_EQ(s.submit(job("one", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("one", 0, 1024, 10, 2)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("two", 0, 1024, 0, 3)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.held_back() > 0; }));
  ASSERT_EQ(transport_.messages.size(), 1u);
  bool done = false;
  s.stop(60'000, [&] { done = true; });
  EXPECT_EQ(s.submit(job("three", 0, 1024, 0, 1)), Scheduler::Admit::Stopped);
  EXPECT_EQ(ended(), 2u);  // one's second job and two's job
  EXPECT_EQ(ended("dropped"), 2u);
  transport_.signal_writable();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return done; }));
  EXPECT_EQ(transport_.messages.size(), 10u);
  for (const auto& m : transport_.messages) EXPECT_EQ(m.key, "one");
  EXPECT_EQ(ended("ok"), 1u);
  EXPECT_EQ(ended(), 3u);
  EXPECT_EQ(metrics_.counter_value("chunkd_jobs_dropped_total"), 2u);
  scheduler_.reset();
}

TEST_F(SchedulerTest, StopTimeoutDropsWhatCannotFinish) {
  add_file(16 * 1024, 16384);
  auto& s = make();
  transport_.accept_before_backpressure = 1;
  ASSERT_EQ(s.submit(job("one", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.held_back() > 0; }));
  bool done = false;
  s.stop(1, [&] { done = true; });
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return done; }));
  EXPECT_EQ(ended("dropped"), 1u);
  EXPECT_EQ(ended(), 1u);
  EXPECT_EQ(s.queued_requests(), 0u);
  scheduler_.reset();
}

// ---- merged duplicates ----

TEST_F(SchedulerTest, ADuplicateReplacesTheQueuedCopyAndTheNewerTokenWins) {
  add_file(8 * 1024, 8192);
  SchedulerOptions o;
  o.per_thing_queue_requests = 2;
  auto& s = make(o);
  auto with_token = [&](std::uint32_t first, std::uint32_t count, const std::string& token) {
    BlockJob j = job("dev", 0, 1024, first, count);
    j.client_token = token;
    return j;
  };
  ASSERT_EQ(s.submit(with_token(0, 4, "t1")), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(with_token(0, 3, "t2")), Scheduler::Admit::Ok) << "another selection";
  // The queue is full: the re-request is merged, not throttled.
  EXPECT_EQ(s.submit(with_token(0, 4, "t3")), Scheduler::Admit::Merged);
  EXPECT_EQ(s.submit(with_token(0, 4, "t4")), Scheduler::Admit::Merged);
  EXPECT_EQ(s.submit(with_token(1, 4, "t5")), Scheduler::Admit::Throttled);
  EXPECT_EQ(s.queued_requests(), 2u);
  EXPECT_EQ(metrics_.counter_value("chunkd_requests_merged_total"), 2u);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
  ASSERT_EQ(transport_.messages.size(), 7u);
  for (std::size_t i = 0; i < 7; ++i) {
    auto d = protocol::decode_data_reply(protocol::Format::Json, transport_.messages[i].payload);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->client_token, i < 4 ? "t4" : "t2") << "message " << i;
    EXPECT_EQ(d->block_index, i < 4 ? i : i - 4);
  }
  EXPECT_EQ(ended("ok"), 2u);
}

TEST_F(SchedulerTest, OnlyAnIdenticalRequestOfTheSameThingMerges) {
  add_file(8 * 1024, 8192, 0);
  add_file(8 * 1024, 8192, 1);
  auto& s = make();
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 4)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("other", 0, 1024, 0, 4)), Scheduler::Admit::Ok) << "another thing";
  EXPECT_EQ(s.submit(job("dev", 1, 1024, 0, 4)), Scheduler::Admit::Ok) << "another file";
  EXPECT_EQ(s.submit(job("dev", 0, 2048, 0, 4)), Scheduler::Admit::Ok) << "another block size";
  BlockJob cbor = job("dev", 0, 1024, 0, 4);
  cbor.format = protocol::Format::Cbor;
  EXPECT_EQ(s.submit(std::move(cbor)), Scheduler::Admit::Ok) << "another format";
  BlockJob sparse = job("dev", 0, 1024, 0, 4);
  sparse.blocks = {0, 1, 3, 4};
  EXPECT_EQ(s.submit(std::move(sparse)), Scheduler::Admit::Ok) << "another bitmap";
  EXPECT_EQ(s.submit(job("dev", 0, 1024, 0, 4)), Scheduler::Admit::Merged);
  EXPECT_EQ(s.queued_requests(), 6u);
  EXPECT_EQ(metrics_.counter_value("chunkd_requests_merged_total"), 1u);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 6; }));
  EXPECT_EQ(ended("ok"), 6u);
}

// The merged job keeps its place: replies still follow the thing's other requests in order.
TEST_F(SchedulerTest, AMergedJobKeepsItsPlaceInTheQueue) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  std::vector<std::byte> hello{std::byte{'h'}};
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 2)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.post("dev", "dev/description", hello), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 4, 2)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 2)), Scheduler::Admit::Merged);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.queued_requests() == 0; }));
  ASSERT_EQ(transport_.messages.size(), 5u);
  EXPECT_EQ(block_of(transport_.messages[0]), 0u);
  EXPECT_EQ(block_of(transport_.messages[1]), 1u);
  EXPECT_EQ(transport_.messages[2].topic, "dev/description");
  EXPECT_EQ(block_of(transport_.messages[3]), 4u);
  EXPECT_EQ(block_of(transport_.messages[4]), 5u);
}

// A job already sending is not merged: the device may have missed its first blocks.
TEST_F(SchedulerTest, AJobAlreadySendingIsNotMerged) {
  add_file(8 * 1024, 8192);
  auto& s = make();
  transport_.accept_before_backpressure = 1;
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 4)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return s.held_back() > 0; }));
  ASSERT_EQ(transport_.messages.size(), 1u);
  EXPECT_EQ(s.submit(job("dev", 0, 1024, 0, 4)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.queued_requests(), 2u);
  EXPECT_EQ(metrics_.counter_value("chunkd_requests_merged_total"), 0u);
  transport_.signal_writable();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
  ASSERT_EQ(transport_.messages.size(), 8u);
  for (std::uint32_t i = 0; i < 8; ++i) EXPECT_EQ(block_of(transport_.messages[i]), i % 4);
}

// ---- set_limits (a config reload) ----

// Lowered bounds keep what is queued and apply to the next admission.
TEST_F(SchedulerTest, SetLimitsKeepsQueuedWorkAndBoundsNewAdmissions) {
  add_file(8192, 4096);
  SchedulerOptions o;
  o.per_thing_queue_requests = 4;
  o.global_queue_requests = 8;
  auto& s = make(o);
  for (std::uint32_t i = 0; i < 3; ++i) {
    ASSERT_EQ(s.submit(job("a", 0, 1024, i, 2)), Scheduler::Admit::Ok);
  }
  ASSERT_EQ(s.submit(job("b", 0, 1024, 0, 2)), Scheduler::Admit::Ok);
  o.per_thing_queue_requests = 1;
  o.global_queue_requests = 2;
  s.set_limits(o);
  EXPECT_EQ(s.queued_requests(), 4u);
  s.check_invariants();  // over the new bounds, within the old ones
  EXPECT_EQ(s.submit(job("a", 0, 1024, 0, 1)), Scheduler::Admit::Throttled);  // per thing
  EXPECT_EQ(s.submit(job("c", 0, 1024, 0, 1)), Scheduler::Admit::Throttled);  // global
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended("ok") == 4; }));
  EXPECT_EQ(transport_.messages.size(), 8u);
  EXPECT_EQ(s.submit(job("a", 0, 1024, 0, 1)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("a", 0, 1024, 1, 1)), Scheduler::Admit::Throttled);
  EXPECT_EQ(s.submit(job("b", 0, 1024, 0, 1)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("c", 0, 1024, 0, 1)), Scheduler::Admit::Throttled);
  // Raised again: room at once.
  o.per_thing_queue_requests = 16;
  o.global_queue_requests = 64;
  s.set_limits(o);
  EXPECT_EQ(s.submit(job("a", 0, 1024, 2, 1)), Scheduler::Admit::Ok);
  EXPECT_EQ(s.submit(job("c", 0, 1024, 0, 1)), Scheduler::Admit::Ok);
}

// A thing parked for tokens is served at once when its limit is lifted, without the clock moving.
TEST_F(SchedulerTest, SetLimitsLiftsARateLimitAtOnce) {
  add_file(64 * 1024, 16384);
  SchedulerOptions o;
  o.per_thing_blocks_per_s = 2;
  o.global_blocks_per_s = 3;
  auto& s = make(o);
  ASSERT_EQ(s.submit(job("dev", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 2; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 2u);
  o.per_thing_blocks_per_s = 0;
  s.set_limits(o);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 3; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 3u) << "the global limit still holds";
  o.global_blocks_per_s = 0;
  s.set_limits(o);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended("ok") == 1; }));
  EXPECT_EQ(transport_.messages.size(), 10u);
}

// Limits switched on while running apply to the blocks not yet sent.
TEST_F(SchedulerTest, SetLimitsAddsARateLimit) {
  add_file(64 * 1024, 16384);
  auto& s = make();
  SchedulerOptions o;
  o.global_blocks_per_s = 4;  // burst 4
  s.set_limits(o);
  ASSERT_EQ(s.submit(job("a", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 4; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 4u);
  o.global_blocks_per_s = 0;
  o.per_thing_blocks_per_s = 1;  // burst 1; the thing's bucket was full
  s.set_limits(o);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 5; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 5u);
  clock_.advance_ms(1000);
  s.wake();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.messages.size() >= 6; }));
  settle();
  EXPECT_EQ(transport_.messages.size(), 6u);
}

TEST_F(SchedulerTest, SetLimitsChangesTheQuantum) {
  add_file(64 * 1024, 16384);
  SchedulerOptions o;
  o.quantum_bytes = 1;
  auto& s = make(o);
  o.quantum_bytes = 3 * 1024;
  s.set_limits(o);
  ASSERT_EQ(s.submit(job("a", 0, 1024, 0, 7)), Scheduler::Admit::Ok);
  ASSERT_EQ(s.submit(job("b", 0, 1024, 0, 7)), Scheduler::Admit::Ok);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
  std::string order;
  for (const auto& m : transport_.messages) order += m.key;
  EXPECT_EQ(order, "aaabbbaaabbbab");
}

TEST_F(SchedulerTest, DestroyedWhileReadsAreInFlight) {
  add_file(16 * 1024, 16384);
  auto& s = make();
  reader_->hold = true;
  ASSERT_EQ(s.submit(job("one", 0, 1024, 0, 10)), Scheduler::Admit::Ok);
  settle(10);
  scheduler_.reset();
  reader_->release();
  settle(10);
  EXPECT_TRUE(transport_.messages.empty());
  EXPECT_FALSE(transport_.has_writable_callback());
}

}  // namespace
}  // namespace chunkd::engine
