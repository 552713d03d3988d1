// The pure jobs decisions (docs/jobs.md "MQTT", protocol/jobs_update.hpp): every branch of
// UpdateJobExecution, StartNextPendingJobExecution, $next selection and describe.
#include "protocol/jobs_update.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace chunkd::protocol {
namespace {

constexpr std::int64_t kQueuedMs = 1'000'000;
constexpr std::int64_t kNowMs = 9'000'000;

constexpr ExecutionStatus kAll[] = {
    ExecutionStatus::Queued,   ExecutionStatus::InProgress, ExecutionStatus::Succeeded,
    ExecutionStatus::Failed,   ExecutionStatus::Rejected,   ExecutionStatus::TimedOut,
    ExecutionStatus::Canceled, ExecutionStatus::Removed,
};

JobExecution execution(std::string job, ExecutionStatus status,
                       std::int64_t queued_ms = kQueuedMs) {
  JobExecution e;
  e.job_id = std::move(job);
  e.thing = "dev-1";
  e.status = status;
  e.queued_at_ms = queued_ms;
  e.last_updated_at_ms = queued_ms;
  e.version_number = 4;
  e.execution_number = 2;
  if (status != ExecutionStatus::Queued) e.started_at_ms = queued_ms + 1;
  e.status_details = {{"receive", "1/9"}};
  return e;
}

UpdateRequest update(ExecutionStatus status) {
  UpdateRequest r;
  r.status = status;
  return r;
}

TEST(JobsUpdate, ProgressReportReplacesDetails) {
  const JobExecution current = execution("fw", ExecutionStatus::InProgress);
  UpdateRequest r = update(ExecutionStatus::InProgress);
  r.status_details = StatusDetails{{"self_test", "ready"}, {"updatedBy", "0x2"}};
  const auto outcome = decide_update(current, r, kNowMs);
  ASSERT_TRUE(outcome.has_value());
  const JobExecution& e = outcome->execution;
  EXPECT_EQ(e.status, ExecutionStatus::InProgress);
  EXPECT_EQ(e.status_details, *r.status_details);  // replaced, not merged
  EXPECT_EQ(e.version_number, 5);
  EXPECT_EQ(e.last_updated_at_ms, kNowMs);
  EXPECT_EQ(e.started_at_ms, kQueuedMs + 1);  // kept
  EXPECT_EQ(e.queued_at_ms, kQueuedMs);
  EXPECT_EQ(e.job_id, "fw");
  EXPECT_EQ(e.thing, "dev-1");
  EXPECT_EQ(e.execution_number, 2);
  EXPECT_EQ(outcome->step_timer.action, StepTimer::Action::Keep);
}

TEST(JobsUpdate, AbsentDetailsAreKeptAndEmptyClears) {
  const JobExecution current = execution("fw", ExecutionStatus::InProgress);
  auto kept = decide_update(current, update(ExecutionStatus::InProgress), kNowMs);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->execution.status_details, current.status_details);
  UpdateRequest r = update(ExecutionStatus::InProgress);
  r.status_details = StatusDetails{};
  auto cleared = decide_update(current, r, kNowMs);
  ASSERT_TRUE(cleared.has_value());
  EXPECT_TRUE(cleared->execution.status_details.empty());
}

TEST(JobsUpdate, FirstStartSetsStartedAt) {
  for (ExecutionStatus to : {ExecutionStatus::InProgress, ExecutionStatus::Succeeded,
                             ExecutionStatus::Failed, ExecutionStatus::Rejected}) {
    const auto outcome =
        decide_update(execution("fw", ExecutionStatus::Queued), update(to), kNowMs);
    ASSERT_TRUE(outcome.has_value()) << to_string(to);
    EXPECT_EQ(outcome->execution.status, to);
    EXPECT_EQ(outcome->execution.started_at_ms, kNowMs) << to_string(to);
  }
}

TEST(JobsUpdate, OutcomesEndTheStepTimer) {
  for (ExecutionStatus to :
       {ExecutionStatus::Succeeded, ExecutionStatus::Failed, ExecutionStatus::Rejected}) {
    UpdateRequest r = update(to);
    r.step_timeout_minutes = 5;  // ignored: nothing can time out any more
    const auto outcome = decide_update(execution("fw", ExecutionStatus::InProgress), r, kNowMs);
    ASSERT_TRUE(outcome.has_value());
    EXPECT_EQ(outcome->step_timer.action, StepTimer::Action::Cancel) << to_string(to);
  }
}

TEST(JobsUpdate, StepTimeoutSetsOrCancels) {
  UpdateRequest r = update(ExecutionStatus::InProgress);
  r.step_timeout_minutes = 10;
  auto set = decide_update(execution("fw", ExecutionStatus::InProgress), r, kNowMs);
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->step_timer.action, StepTimer::Action::Set);
  EXPECT_EQ(set->step_timer.deadline_ms, kNowMs + 10 * 60'000);
  EXPECT_EQ(set->execution.step_deadline_ms, kNowMs + 10 * 60'000) << "the record carries it";
  r.step_timeout_minutes = kCancelStepTimeout;
  auto cancel = decide_update(set->execution, r, kNowMs);
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->step_timer.action, StepTimer::Action::Cancel);
  EXPECT_EQ(cancel->execution.step_deadline_ms, 0);
  r.step_timeout_minutes.reset();
  auto kept = decide_update(set->execution, r, kNowMs);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->execution.step_deadline_ms, kNowMs + 10 * 60'000) << "absent: kept";
  auto done = decide_update(set->execution, update(ExecutionStatus::Succeeded), kNowMs);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->execution.step_deadline_ms, 0) << "a terminal status cancels it";
}

TEST(JobsUpdate, VersionMismatch) {
  UpdateRequest r = update(ExecutionStatus::Succeeded);
  r.expected_version = 3;
  const auto outcome = decide_update(execution("fw", ExecutionStatus::InProgress), r, kNowMs);
  ASSERT_FALSE(outcome.has_value());
  EXPECT_EQ(outcome.error().code, JobsErrorCode::VersionMismatch);
  EXPECT_NE(outcome.error().message.find("4"), std::string::npos);
  r.expected_version = 4;
  EXPECT_TRUE(decide_update(execution("fw", ExecutionStatus::InProgress), r, kNowMs));
}

TEST(JobsUpdate, VersionIsCheckedBeforeTheStatus) {
  UpdateRequest r = update(ExecutionStatus::InProgress);
  r.expected_version = 1;
  const auto outcome = decide_update(execution("fw", ExecutionStatus::Succeeded), r, kNowMs);
  ASSERT_FALSE(outcome.has_value());
  EXPECT_EQ(outcome.error().code, JobsErrorCode::VersionMismatch);
}

TEST(JobsUpdate, TerminalExecutionIsAnInvalidStateTransition) {
  for (ExecutionStatus from : kAll) {
    if (!is_terminal(from)) continue;
    for (ExecutionStatus to : kAll) {
      const auto outcome = decide_update(execution("fw", from), update(to), kNowMs);
      ASSERT_FALSE(outcome.has_value()) << to_string(from) << "→" << to_string(to);
      EXPECT_EQ(outcome.error().code, JobsErrorCode::InvalidStateTransition);
      EXPECT_NE(outcome.error().message.find("terminal"), std::string::npos);
    }
  }
}

TEST(JobsUpdate, DeviceMayNotSetServiceStatuses) {
  for (ExecutionStatus from : {ExecutionStatus::Queued, ExecutionStatus::InProgress}) {
    for (ExecutionStatus to : {ExecutionStatus::Queued, ExecutionStatus::TimedOut,
                               ExecutionStatus::Canceled, ExecutionStatus::Removed}) {
      const auto outcome = decide_update(execution("fw", from), update(to), kNowMs);
      ASSERT_FALSE(outcome.has_value()) << to_string(from) << "→" << to_string(to);
      EXPECT_EQ(outcome.error().code, JobsErrorCode::InvalidStateTransition);
      EXPECT_NE(outcome.error().message.find(to_string(to)), std::string::npos);
    }
  }
}

TEST(JobsUpdate, WrongExecutionNumberIsNotFound) {
  UpdateRequest r = update(ExecutionStatus::Succeeded);
  r.execution_number = 1;
  r.expected_version = 1;  // also wrong: the execution number is checked first
  const auto outcome = decide_update(execution("fw", ExecutionStatus::InProgress), r, kNowMs);
  ASSERT_FALSE(outcome.has_value());
  EXPECT_EQ(outcome.error().code, JobsErrorCode::ResourceNotFound);
  r.execution_number = 2;
  r.expected_version = 4;
  EXPECT_TRUE(decide_update(execution("fw", ExecutionStatus::InProgress), r, kNowMs));
}

TEST(JobsUpdate, SelectNextPrefersInProgressThenOldest) {
  std::vector<JobExecution> list = {
      execution("done", ExecutionStatus::Succeeded, 1),
      execution("q-new", ExecutionStatus::Queued, 300),
      execution("q-old", ExecutionStatus::Queued, 100),
  };
  ASSERT_NE(select_next(list), nullptr);
  EXPECT_EQ(select_next(list)->job_id, "q-old");
  list.push_back(execution("running", ExecutionStatus::InProgress, 500));
  EXPECT_EQ(select_next(list)->job_id, "running");
  list.push_back(execution("a-running", ExecutionStatus::InProgress, 500));  // tie: by job id
  EXPECT_EQ(select_next(list)->job_id, "a-running");
  EXPECT_EQ(select_next({}), nullptr);
  const std::vector<JobExecution> finished = {execution("x", ExecutionStatus::Failed),
                                              execution("y", ExecutionStatus::Canceled)};
  EXPECT_EQ(select_next(finished), nullptr);
  EXPECT_TRUE(pending_before(list[2], list[0]));  // QUEUED before SUCCEEDED
}

TEST(JobsUpdate, StartNextStartsAQueuedExecution) {
  const JobExecution queued = execution("fw", ExecutionStatus::Queued);
  StartNextRequest r;
  r.status_details = StatusDetails{{"step", "download"}};
  r.step_timeout_minutes = 30;
  const StartNextOutcome outcome = decide_start_next(&queued, r, kNowMs);
  ASSERT_TRUE(outcome.execution);
  EXPECT_TRUE(outcome.changed);
  EXPECT_EQ(outcome.execution->status, ExecutionStatus::InProgress);
  EXPECT_EQ(outcome.execution->status_details, *r.status_details);
  EXPECT_EQ(outcome.execution->started_at_ms, kNowMs);
  EXPECT_EQ(outcome.execution->last_updated_at_ms, kNowMs);
  EXPECT_EQ(outcome.execution->version_number, 5);
  EXPECT_EQ(outcome.step_timer.action, StepTimer::Action::Set);
  EXPECT_EQ(outcome.step_timer.deadline_ms, kNowMs + 30 * 60'000);
  EXPECT_EQ(outcome.execution->step_deadline_ms, kNowMs + 30 * 60'000);
  const StartNextOutcome plain = decide_start_next(&queued, StartNextRequest{}, kNowMs);
  EXPECT_EQ(plain.execution->status_details, queued.status_details);  // absent: kept
  EXPECT_EQ(plain.step_timer.action, StepTimer::Action::Keep);
}

TEST(JobsUpdate, StartNextResumesAnInProgressExecution) {
  const JobExecution running = execution("fw", ExecutionStatus::InProgress);
  StartNextRequest r;
  r.status_details = StatusDetails{{"ignored", "yes"}};
  r.step_timeout_minutes = 30;
  const StartNextOutcome outcome = decide_start_next(&running, r, kNowMs);
  ASSERT_TRUE(outcome.execution);
  EXPECT_FALSE(outcome.changed);
  EXPECT_EQ(outcome.execution->version_number, 4);
  EXPECT_EQ(outcome.execution->status_details, running.status_details);
  EXPECT_EQ(outcome.step_timer.action, StepTimer::Action::Keep);
}

TEST(JobsUpdate, StartNextWithNothingPending) {
  const StartNextOutcome outcome = decide_start_next(nullptr, StartNextRequest{}, kNowMs);
  EXPECT_FALSE(outcome.execution);
  EXPECT_FALSE(outcome.changed);
}

TEST(JobsUpdate, Describe) {
  const JobExecution e = execution("fw", ExecutionStatus::Succeeded);
  EXPECT_FALSE(check_describe(e, DescribeRequest{}));
  DescribeRequest r;
  r.execution_number = 2;
  EXPECT_FALSE(check_describe(e, r));
  r.execution_number = 3;
  const auto rejection = check_describe(e, r);
  ASSERT_TRUE(rejection);
  EXPECT_EQ(rejection->code, JobsErrorCode::ResourceNotFound);
}

}  // namespace
}  // namespace chunkd::protocol
