// Group commit of job changes (engine/job_writer.hpp): answers wait for their batch and every
// earlier one, batches gather while one is written, failed writes are retried, deletes go first.
#include "engine/job_writer.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <string>
#include <system_error>
#include <vector>

namespace chunkd::engine {
namespace {

using protocol::ExecutionStatus;

constexpr std::int64_t kUnix = 1'798'000'000'000;

JobPlan plan(const std::string& id, std::vector<std::string> targets) {
  JobPlan p;
  p.id = id;
  p.spec.targets = std::move(targets);
  p.document = "{}";
  p.created_at_ms = kUnix;
  return p;
}

class JobWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop), 0);
    writer = std::make_unique<JobWriter>(
        &loop, book,
        [this](const JobBatch& batch, JobWriter::Done done) {
          batches.push_back(batch);
          pending.push_back(std::move(done));
        },
        4, nullptr);
  }
  void TearDown() override {
    bool closed = false;
    writer->close(0, [&] { closed = true; });
    while (!pending.empty()) finish_write();
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_TRUE(closed);
    writer.reset();
    EXPECT_EQ(uv_loop_close(&loop), 0);
  }
  void finish_write(std::error_code error = {}) {
    ASSERT_FALSE(pending.empty());
    auto done = std::move(pending.front());
    pending.erase(pending.begin());
    done(error);
  }

  uv_loop_t loop{};
  JobBook book;
  std::unique_ptr<JobWriter> writer;
  std::vector<JobBatch> batches;
  std::vector<JobWriter::Done> pending;
  std::vector<std::string> answered;
};

TEST_F(JobWriterTest, AnswersWaitForTheirWrite) {
  writer->record(book.create(plan("j1", {"a", "b"}), 1, kUnix), [&] { answered.push_back("1"); });
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].jobs.size(), 1u);
  EXPECT_EQ(batches[0].executions.size(), 2u);
  writer->record({}, [&] { answered.push_back("read"); });
  EXPECT_TRUE(answered.empty()) << "a read waits for the write it may have seen";
  finish_write();
  EXPECT_EQ(answered, (std::vector<std::string>{"1", "read"}));
  writer->record({}, [&] { answered.push_back("idle read"); });
  EXPECT_EQ(answered.back(), "idle read") << "nothing in flight: at once";
}

TEST_F(JobWriterTest, ChangesGatherWhileAWriteIsInFlight) {
  writer->record(book.create(plan("j1", {"a"}), 1, kUnix), [&] { answered.push_back("1"); });
  writer->record(book.create(plan("j2", {"a"}), 1, kUnix), [&] { answered.push_back("2"); });
  writer->record(book.create(plan("j3", {"a"}), 1, kUnix), [&] { answered.push_back("3"); });
  EXPECT_EQ(batches.size(), 1u);
  EXPECT_TRUE(writer->full() == false);
  finish_write();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1].jobs.size(), 2u) << "j2 and j3 in one transaction";
  EXPECT_EQ(answered, (std::vector<std::string>{"1"}));
  finish_write();
  EXPECT_EQ(answered, (std::vector<std::string>{"1", "2", "3"}));
}

TEST_F(JobWriterTest, AFailedWriteIsRetriedWithTheLatestState) {
  writer->record(book.create(plan("j1", {"a"}), 1, kUnix), [&] { answered.push_back("1"); });
  finish_write(std::make_error_code(std::errc::no_space_on_device));
  EXPECT_TRUE(writer->failing());
  protocol::JobExecution next = *book.execution("a", "j1");
  next.status = ExecutionStatus::InProgress;
  next.version_number = 2;
  writer->record(book.update(next, kUnix), [&] { answered.push_back("2"); });
  EXPECT_EQ(batches.size(), 1u) << "the failed batch goes first";
  uv_run(&loop, UV_RUN_ONCE);  // the retry timer
  ASSERT_EQ(batches.size(), 2u);
  ASSERT_EQ(batches[1].executions.size(), 1u);
  EXPECT_EQ(batches[1].executions[0].status, ExecutionStatus::Queued) << "the retried batch";
  EXPECT_TRUE(answered.empty());
  finish_write();
  EXPECT_FALSE(writer->failing());
  EXPECT_EQ(answered, (std::vector<std::string>{"1"}));
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[2].executions[0].status, ExecutionStatus::InProgress);
  finish_write();
  EXPECT_EQ(answered, (std::vector<std::string>{"1", "2"}));
}

TEST_F(JobWriterTest, ADeleteDropsTheJobsEarlierChangesInTheBatch) {
  writer->record(book.create(plan("j0", {"a"}), 1, kUnix), {});
  writer->record(book.create(plan("j1", {"a"}), 1, kUnix), {});
  writer->record(book.remove("j1"), {});
  writer->record(book.create(plan("j1", {"b"}), 1, kUnix), {});
  finish_write();
  ASSERT_EQ(batches.size(), 2u);
  const JobBatch& b = batches[1];
  EXPECT_EQ(b.deleted, (std::vector<std::string>{"j1"}));
  ASSERT_EQ(b.jobs.size(), 1u);
  EXPECT_EQ(b.jobs[0].plan.targets(), (std::vector<std::string>{"b"}));
  ASSERT_EQ(b.executions.size(), 1u);
  EXPECT_EQ(b.executions[0].thing, "b") << "the deleted job's execution for a is gone";
  finish_write();
}

TEST_F(JobWriterTest, NewThingsAreWrittenWithTheBatch) {
  writer->record(book.thing_seen("a", 1, kUnix), {});
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].things, (std::vector<std::string>{"a"}));
  finish_write();
}

TEST_F(JobWriterTest, FullCountsAnswersWaiting) {
  writer->record(book.create(plan("j1", {"a"}), 1, kUnix), [] {});
  for (int i = 0; i < 3; ++i) writer->record({}, [] {});
  EXPECT_TRUE(writer->full());
  finish_write();
  EXPECT_FALSE(writer->full());
}

}  // namespace
}  // namespace chunkd::engine
