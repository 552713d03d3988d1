// Scheduler admission and rate limits (tests/engine/scheduler_fixture.hpp): queue bounds per thing
// and overall, per-thing and global token buckets on the manual clock, and set_limits (a config
// reload) lowering, lifting and adding bounds, limits and the quantum while work is queued.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "engine/scheduler.hpp"
#include "tests/engine/scheduler_fixture.hpp"

namespace chunkd::engine {
namespace {

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

}  // namespace
}  // namespace chunkd::engine
