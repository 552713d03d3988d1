// The jobs policy in memory (engine/job_book.hpp): rollout rate, patterns that match things later,
// next pending order, completion, abort criteria, time-outs, cancel, delete and restore.
#include "engine/job_book.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace chunkd::engine {
namespace {

using protocol::ExecutionStatus;
using protocol::JobExecution;
using protocol::JobStatus;

constexpr std::int64_t kUnix = 1'798'000'000'000;

std::vector<std::string> names(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

JobPlan plan(const std::string& id, std::vector<std::string> targets) {
  JobPlan p;
  p.id = id;
  p.spec.targets = std::move(targets);
  p.spec.document = p.document = R"({"op":"x"})";
  p.created_at_ms = kUnix;
  return p;
}

class JobBookTest : public ::testing::Test {
 protected:
  // Moves `thing`'s execution of `id` to `to` as a device would.
  JobChanges device_sets(const std::string& thing, const std::string& id, ExecutionStatus to) {
    const JobExecution* e = book.execution(thing, id);
    EXPECT_NE(e, nullptr);
    JobExecution next = *e;
    next.status = to;
    next.version_number++;
    next.last_updated_at_ms = unix_ms;
    if (to == ExecutionStatus::InProgress && next.started_at_ms == 0) next.started_at_ms = unix_ms;
    return book.update(next, unix_ms);
  }
  void advance_s(std::uint64_t s) {
    now += s * 1000;
    unix_ms += static_cast<std::int64_t>(s) * 1000;
  }

  JobBook book;
  std::uint64_t now = 5000;
  std::int64_t unix_ms = kUnix;
};

TEST_F(JobBookTest, NamedTargetsWithoutLimitAreReleasedAtOnce) {
  auto changes = book.create(plan("j1", {"a", "b", "a"}), now, unix_ms);
  EXPECT_EQ(changes.released, 2u);
  EXPECT_EQ(changes.executions.size(), 2u);
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"a", "b"}));
  ASSERT_NE(book.next_pending("a"), nullptr);
  EXPECT_EQ(book.next_pending("a")->job_id, "j1");
  EXPECT_EQ(book.next_pending("a")->status, ExecutionStatus::Queued);
  EXPECT_EQ(book.next_pending("c"), nullptr);
  EXPECT_EQ(book.job("j1")->counts[0], 2u);
}

TEST_F(JobBookTest, RolloutNeverReleasesMoreThanTheRateInAnyMinute) {
  auto p = plan("j1", names("t", 25));
  p.spec.maximum_per_minute = 10;
  EXPECT_EQ(book.create(p, now, unix_ms).released, 10u);
  advance_s(30);
  EXPECT_EQ(book.tick(now, unix_ms).released, 0u);
  advance_s(29);
  EXPECT_EQ(book.tick(now, unix_ms).released, 0u);
  advance_s(1);  // 60 s after the first ten
  EXPECT_EQ(book.tick(now, unix_ms).released, 10u);
  advance_s(60);
  EXPECT_EQ(book.tick(now, unix_ms).released, 5u);
  EXPECT_EQ(book.executions(), 25u);
  EXPECT_EQ(book.next_pending("t24")->job_id, "j1");
}

TEST_F(JobBookTest, PatternsMatchThingsThatAppearLater) {
  book.thing_seen("sensor-1", now, unix_ms);
  auto changes = book.create(plan("j1", {"sensor-*"}), now, unix_ms);
  EXPECT_EQ(changes.released, 1u);
  changes = book.thing_seen("sensor-2", now, unix_ms);
  EXPECT_EQ(changes.released, 1u);
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"sensor-2"}));
  EXPECT_TRUE(book.thing_seen("sensor-2", now, unix_ms).empty());
  auto other = book.thing_seen("gateway-1", now, unix_ms);
  EXPECT_TRUE(other.executions.empty()) << "no pattern matches it";
  EXPECT_EQ(other.seen, (std::set<std::string>{"gateway-1"})) << "but it is remembered";
  device_sets("sensor-1", "j1", ExecutionStatus::Succeeded);
  device_sets("sensor-2", "j1", ExecutionStatus::Succeeded);
  EXPECT_EQ(book.job("j1")->status, JobStatus::InProgress) << "a pattern job waits for more";
}

TEST_F(JobBookTest, ThingsSeenAreToldAndRememberedOnesMatchNewPatterns) {
  EXPECT_EQ(book.thing_seen("sensor-1", now, unix_ms).seen, (std::set<std::string>{"sensor-1"}));
  JobBook restarted;
  restarted.remember("sensor-1");
  restarted.remember("gw-1");
  EXPECT_TRUE(restarted.known("gw-1"));
  auto changes = restarted.create(plan("j1", {"sensor-*"}), now, unix_ms);
  EXPECT_EQ(changes.released, 1u);
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"sensor-1"}));
  EXPECT_TRUE(restarted.thing_seen("sensor-1", now, unix_ms).empty()) << "already known";
}

TEST_F(JobBookTest, InProgressComesFirstThenQueueOrder) {
  book.create(plan("old", {"a"}), now, unix_ms);
  advance_s(1);
  book.create(plan("new", {"a"}), now, unix_ms);
  EXPECT_EQ(book.next_pending("a")->job_id, "old");
  auto changes = device_sets("a", "new", ExecutionStatus::InProgress);
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"a"}));
  EXPECT_EQ(book.next_pending("a")->job_id, "new");
  ASSERT_EQ(book.pending("a").size(), 2u);
  EXPECT_EQ(book.pending("a")[1]->job_id, "old");
  changes = device_sets("a", "new", ExecutionStatus::Succeeded);
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"a"}));
  EXPECT_EQ(book.next_pending("a")->job_id, "old");
  EXPECT_EQ(book.job("new")->status, JobStatus::Completed);
  EXPECT_EQ(book.job("new")->completed_at_ms, unix_ms);
}

TEST_F(JobBookTest, ProgressOfTheSameJobDoesNotNotify) {
  book.create(plan("j1", {"a"}), now, unix_ms);
  device_sets("a", "j1", ExecutionStatus::InProgress);
  auto changes = device_sets("a", "j1", ExecutionStatus::InProgress);
  EXPECT_TRUE(changes.notify_next.empty());
  EXPECT_EQ(changes.executions.size(), 1u);
}

TEST_F(JobBookTest, AbortWaitsForTheMinimumThenCancelsWhatRemains) {
  auto p = plan("j1", names("t", 10));
  p.spec.abort_criteria.push_back({protocol::AbortFailureType::Failed, 50.0, 4});
  book.create(p, now, unix_ms);
  device_sets("t0", "j1", ExecutionStatus::Failed);
  device_sets("t1", "j1", ExecutionStatus::Failed);
  device_sets("t2", "j1", ExecutionStatus::Failed);
  EXPECT_EQ(book.job("j1")->status, JobStatus::InProgress) << "3 executed, minimum 4";
  device_sets("t3", "j1", ExecutionStatus::InProgress);
  auto changes = device_sets("t4", "j1", ExecutionStatus::Succeeded);
  EXPECT_EQ(changes.aborted, (std::set<std::string>{"j1"}));
  const Job* job = book.job("j1");
  EXPECT_EQ(job->status, JobStatus::Canceled);
  EXPECT_EQ(job->reason_code, "ABORTED");
  EXPECT_NE(job->comment.find("3 of 4"), std::string::npos) << job->comment;
  EXPECT_NE(job->comment.find("threshold of 50%"), std::string::npos) << job->comment;
  EXPECT_EQ(book.execution("t3", "j1")->status, ExecutionStatus::InProgress);
  EXPECT_EQ(book.execution("t9", "j1")->status, ExecutionStatus::Canceled);
  EXPECT_EQ(job->counts[static_cast<int>(ExecutionStatus::Canceled)], 5u);
  EXPECT_TRUE(changes.notify_next.count("t9"));
}

TEST_F(JobBookTest, AbortCountsEveryFailureTypeForAll) {
  auto p = plan("j1", names("t", 4));
  p.spec.abort_criteria.push_back({protocol::AbortFailureType::All, 50.0, 1});
  book.create(p, now, unix_ms);
  device_sets("t0", "j1", ExecutionStatus::Succeeded);
  device_sets("t1", "j1", ExecutionStatus::Rejected);  // 1 of 2: at the threshold
  EXPECT_EQ(book.job("j1")->status, JobStatus::Canceled);
}

TEST_F(JobBookTest, StuckDevicesTimeOut) {
  auto p = plan("j1", {"a", "b"});
  p.spec.in_progress_timeout_minutes = 1;
  book.create(p, now, unix_ms);
  device_sets("a", "j1", ExecutionStatus::InProgress);
  advance_s(59);
  EXPECT_EQ(book.tick(now, unix_ms).timed_out, 0u);
  advance_s(1);
  auto changes = book.tick(now, unix_ms);
  EXPECT_EQ(changes.timed_out, 1u);
  EXPECT_EQ(book.execution("a", "j1")->status, ExecutionStatus::TimedOut);
  EXPECT_EQ(book.execution("b", "j1")->status, ExecutionStatus::Queued) << "never started";
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"a"}));
}

TEST_F(JobBookTest, AStepTimerTimesOutWhateverTheJobSays) {
  book.create(plan("j1", {"a", "b"}), now, unix_ms);
  JobExecution next = *book.execution("a", "j1");
  next.status = ExecutionStatus::InProgress;
  next.started_at_ms = unix_ms;
  next.step_deadline_ms = unix_ms + 30'000;
  next.version_number++;
  book.update(next, unix_ms);
  advance_s(29);
  EXPECT_EQ(book.tick(now, unix_ms).timed_out, 0u);
  advance_s(1);
  auto changes = book.tick(now, unix_ms);
  EXPECT_EQ(changes.timed_out, 1u);
  const JobExecution* e = book.execution("a", "j1");
  EXPECT_EQ(e->status, ExecutionStatus::TimedOut);
  EXPECT_EQ(e->step_deadline_ms, 0) << "a terminal execution has no timer";
  EXPECT_EQ(book.execution("b", "j1")->status, ExecutionStatus::Queued);
}

TEST_F(JobBookTest, CancelKeepsRunningDevicesUnlessForced) {
  book.create(plan("j1", {"a", "b"}), now, unix_ms);
  book.create(plan("j2", {"a", "b"}), now, unix_ms);
  device_sets("a", "j1", ExecutionStatus::InProgress);
  device_sets("a", "j2", ExecutionStatus::InProgress);
  auto changes = book.cancel("j1", "CANCELED", "bad image", false, unix_ms);
  ASSERT_TRUE(changes);
  EXPECT_EQ(book.execution("a", "j1")->status, ExecutionStatus::InProgress);
  EXPECT_EQ(book.execution("b", "j1")->status, ExecutionStatus::Canceled);
  EXPECT_FALSE(book.cancel("j1", "CANCELED", "", true, unix_ms)) << "already canceled";
  changes = book.cancel("j2", "CANCELED", "", true, unix_ms);
  ASSERT_TRUE(changes);
  EXPECT_EQ(book.execution("a", "j2")->status, ExecutionStatus::Canceled);
  EXPECT_EQ(book.job_using_stream(""), std::nullopt);
}

TEST_F(JobBookTest, RemoveForgetsExecutionsAndNotifies) {
  book.create(plan("j1", {"a"}), now, unix_ms);
  book.create(plan("j2", {"a"}), now + 1, unix_ms + 1);
  auto changes = book.remove("j1");
  EXPECT_EQ(changes.notify_next, (std::set<std::string>{"a"}));
  EXPECT_EQ(book.next_pending("a")->job_id, "j2");
  EXPECT_EQ(book.execution("a", "j1"), nullptr);
  EXPECT_EQ(book.executions(), 1u);
  EXPECT_TRUE(book.remove("j1").empty());
}

TEST_F(JobBookTest, StreamsOfUnfinishedJobsAreInUse) {
  auto p = plan("j1", {"a"});
  p.spec.ota = protocol::OtaSpec{};
  p.spec.ota->stream_id = "fw";
  book.create(p, now, unix_ms);
  EXPECT_EQ(book.job_using_stream("fw"), "j1");
  EXPECT_EQ(book.job_using_stream("other"), std::nullopt);
  device_sets("a", "j1", ExecutionStatus::Succeeded);
  EXPECT_EQ(book.job_using_stream("fw"), std::nullopt);
}

TEST_F(JobBookTest, RestoreKeepsTheRateAndReleasesTheRest) {
  auto p = plan("j1", names("t", 6));
  p.spec.maximum_per_minute = 4;
  book.create(p, now, unix_ms);
  Job stored = *book.job("j1");
  advance_s(20);
  JobBook restarted;
  restarted.restore(stored, now, unix_ms);
  EXPECT_EQ(restarted.executions(), 4u);
  EXPECT_EQ(restarted.tick(now, unix_ms).released, 0u) << "4 released 20 s ago";
  advance_s(40);
  EXPECT_EQ(restarted.tick(now, unix_ms).released, 2u);
  EXPECT_EQ(restarted.job("j1")->counts[0], 6u);
  EXPECT_EQ(restarted.next_pending("t5")->job_id, "j1");
}

TEST_F(JobBookTest, PagesJobsById) {
  for (const char* id : {"c", "a", "b"}) book.create(plan(id, {"x"}), now, unix_ms);
  auto first = book.page(std::nullopt, 2);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0]->plan.id, "a");
  auto rest = book.page(std::string_view("b"), 2);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0]->plan.id, "c");
}

}  // namespace
}  // namespace chunkd::engine
