// The jobs vocabulary (protocol/jobs.hpp): names, job ids, and who may move an execution where.
#include "protocol/jobs.hpp"

#include <gtest/gtest.h>

#include <string>

namespace chunkd::protocol {
namespace {

constexpr ExecutionStatus kAll[] = {
    ExecutionStatus::Queued,   ExecutionStatus::InProgress, ExecutionStatus::Succeeded,
    ExecutionStatus::Failed,   ExecutionStatus::Rejected,   ExecutionStatus::TimedOut,
    ExecutionStatus::Canceled, ExecutionStatus::Removed,
};

TEST(JobsTest, ExecutionStatusNamesRoundTrip) {
  for (ExecutionStatus s : kAll) {
    EXPECT_EQ(execution_status_from_string(to_string(s)), s) << to_string(s);
  }
  EXPECT_EQ(to_string(ExecutionStatus::InProgress), "IN_PROGRESS");
  EXPECT_EQ(to_string(ExecutionStatus::TimedOut), "TIMED_OUT");
  EXPECT_FALSE(execution_status_from_string("in_progress"));
  EXPECT_FALSE(execution_status_from_string(""));
  EXPECT_EQ(job_status_from_string("COMPLETED"), JobStatus::Completed);
  EXPECT_EQ(to_string(JobStatus::DeletionInProgress), "DELETION_IN_PROGRESS");
  EXPECT_FALSE(job_status_from_string("QUEUED"));
}

TEST(JobsTest, JobIds) {
  EXPECT_TRUE(valid_job_id("fw-2_0"));
  EXPECT_TRUE(valid_job_id(std::string(kMaxJobIdChars, 'a')));
  EXPECT_FALSE(valid_job_id(std::string(kMaxJobIdChars + 1, 'a')));
  EXPECT_FALSE(valid_job_id(""));
  EXPECT_FALSE(valid_job_id("a/b"));
  EXPECT_FALSE(valid_job_id("$next"));
  EXPECT_FALSE(valid_job_id("a.b"));
}

TEST(JobsTest, TerminalStatusesAreLeftByNobody) {
  for (ExecutionStatus from : kAll) {
    if (!is_terminal(from)) continue;
    for (ExecutionStatus to : kAll) {
      EXPECT_FALSE(device_may_set(from, to)) << to_string(from) << "→" << to_string(to);
      EXPECT_FALSE(service_may_set(from, to)) << to_string(from) << "→" << to_string(to);
    }
  }
  EXPECT_FALSE(is_terminal(ExecutionStatus::Queued));
  EXPECT_FALSE(is_terminal(ExecutionStatus::InProgress));
}

TEST(JobsTest, DeviceSetsProgressAndOutcomesOnly) {
  for (ExecutionStatus from : {ExecutionStatus::Queued, ExecutionStatus::InProgress}) {
    EXPECT_TRUE(device_may_set(from, ExecutionStatus::InProgress));
    EXPECT_TRUE(device_may_set(from, ExecutionStatus::Succeeded));
    EXPECT_TRUE(device_may_set(from, ExecutionStatus::Failed));
    EXPECT_TRUE(device_may_set(from, ExecutionStatus::Rejected));
    EXPECT_FALSE(device_may_set(from, ExecutionStatus::Queued));
    EXPECT_FALSE(device_may_set(from, ExecutionStatus::TimedOut));
    EXPECT_FALSE(device_may_set(from, ExecutionStatus::Canceled));
    EXPECT_FALSE(device_may_set(from, ExecutionStatus::Removed));
  }
}

TEST(JobsTest, ServiceSetsTimeOutsCancelsAndRemovals) {
  for (ExecutionStatus from : {ExecutionStatus::Queued, ExecutionStatus::InProgress}) {
    EXPECT_TRUE(service_may_set(from, ExecutionStatus::TimedOut));
    EXPECT_TRUE(service_may_set(from, ExecutionStatus::Canceled));
    EXPECT_TRUE(service_may_set(from, ExecutionStatus::Removed));
    EXPECT_FALSE(service_may_set(from, ExecutionStatus::Succeeded));
    EXPECT_FALSE(service_may_set(from, ExecutionStatus::InProgress));
  }
}

}  // namespace
}  // namespace chunkd::protocol
