// Scheduler flow control, reads, faults and shutdown (tests/engine/scheduler_fixture.hpp):
// transport backpressure and the bytes-in-flight bound pausing it, a full channel holding back only
// its things, a held-back job already sending not merged with its re-request, prefetch and the
// bound on extent reads, a corrupt or missing blob and a disconnected publisher ending a job,
// stop() finishing or dropping work, and destruction with reads in flight.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <string>

#include "engine/scheduler.hpp"
#include "tests/engine/scheduler_fixture.hpp"

namespace chunkd::engine {
namespace {

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
