// Scheduler serving jobs (tests/engine/scheduler_fixture.hpp: a real block server and cache, fake
// reader and transport): the right bytes in order, blocks across extents, round robin by quantum so
// small things are not starved, messages in order with blocks, and a re-request merged into its
// queued duplicate (the newer token wins, the merged job keeps its place; a job already sending is
// not merged: scheduler_flow_test.cpp).
#include "engine/scheduler.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "protocol/device.hpp"
#include "tests/engine/scheduler_fixture.hpp"

namespace chunkd::engine {
namespace {

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

}  // namespace
}  // namespace chunkd::engine
