// Jobs reply encoding (docs/jobs.md "MQTT", protocol/jobs_reply.hpp): every message is parsed
// back with simdjson and its fields checked.
#include "protocol/jobs_reply.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "simdjson.h"

namespace chunkd::protocol {
namespace {

using simdjson::dom::element;

// Parses `json` (kept alive in the parser) or fails the test.
element parse(simdjson::dom::parser& parser, const std::string& json) {
  element doc;
  const auto error = parser.parse(json).get(doc);
  EXPECT_EQ(error, simdjson::SUCCESS) << json;
  return doc;
}

std::string text(element e, std::string_view pointer) {
  std::string_view v;
  EXPECT_EQ(e.at_pointer(pointer).get_string().get(v), simdjson::SUCCESS) << pointer;
  return std::string(v);
}

std::int64_t number(element e, std::string_view pointer) {
  std::int64_t v = -1;
  EXPECT_EQ(e.at_pointer(pointer).get_int64().get(v), simdjson::SUCCESS) << pointer;
  return v;
}

bool has(element e, std::string_view pointer) {
  return e.at_pointer(pointer).error() == simdjson::SUCCESS;
}

JobExecution execution(std::string job, ExecutionStatus status, std::int64_t queued_ms) {
  JobExecution e;
  e.job_id = std::move(job);
  e.thing = "dev-1";
  e.status = status;
  e.queued_at_ms = queued_ms;
  e.last_updated_at_ms = queued_ms + 1999;
  if (status != ExecutionStatus::Queued) e.started_at_ms = queued_ms + 1000;
  e.version_number = 3;
  e.execution_number = 1;
  return e;
}

constexpr std::string_view kDocument =
    R"({"afr_ota":{"protocols":["MQTT"],"streamname":"fw","files":[{"filepath":"/fw",)"
    R"("filesize":4096,"fileid":0,"certfile":"/c","sig-sha256-ecdsa":"MEUC"}]}})";
constexpr std::int64_t kNowMs = 1'700'000'000'999;

TEST(JobsReply, ExecutionAcceptedAsTheOtaAgentReadsIt) {
  JobExecution e = execution("fw-2", ExecutionStatus::InProgress, 1'600'000'000'000);
  e.status_details = {{"self_test", "ready"}, {"updatedBy", "0x10000"}};
  std::string out = "prefix:";  // appended to, never cleared
  encode_execution_accepted(out, std::string("7:dev-1"), kNowMs, &e, kDocument);
  ASSERT_TRUE(out.starts_with("prefix:"));
  simdjson::dom::parser parser;
  const std::string json = out.substr(7);
  const element doc = parse(parser, json);
  EXPECT_EQ(text(doc, "/clientToken"), "7:dev-1");
  EXPECT_EQ(number(doc, "/timestamp"), 1'700'000'000);  // seconds
  EXPECT_EQ(text(doc, "/execution/jobId"), "fw-2");
  EXPECT_EQ(text(doc, "/execution/thingName"), "dev-1");
  EXPECT_EQ(text(doc, "/execution/status"), "IN_PROGRESS");
  EXPECT_EQ(text(doc, "/execution/statusDetails/self_test"), "ready");
  EXPECT_EQ(text(doc, "/execution/statusDetails/updatedBy"), "0x10000");
  EXPECT_EQ(number(doc, "/execution/queuedAt"), 1'600'000'000);
  EXPECT_EQ(number(doc, "/execution/startedAt"), 1'600'000'001);
  EXPECT_EQ(number(doc, "/execution/lastUpdatedAt"), 1'600'000'001);
  EXPECT_EQ(number(doc, "/execution/versionNumber"), 3);
  EXPECT_EQ(number(doc, "/execution/executionNumber"), 1);
  // The document is an object, byte for byte.
  EXPECT_EQ(text(doc, "/execution/jobDocument/afr_ota/streamname"), "fw");
  EXPECT_NE(json.find(std::string(kDocument)), std::string::npos);
}

TEST(JobsReply, QueuedExecutionHasNoStartedAtAndEmptyDetails) {
  const JobExecution e = execution("fw", ExecutionStatus::Queued, 5'000);
  std::string out;
  encode_execution_accepted(out, std::nullopt, kNowMs, &e, std::nullopt);
  simdjson::dom::parser parser;
  const element doc = parse(parser, out);
  EXPECT_FALSE(has(doc, "/clientToken"));
  EXPECT_FALSE(has(doc, "/execution/startedAt"));
  EXPECT_FALSE(has(doc, "/execution/jobDocument"));
  EXPECT_EQ(number(doc, "/execution/queuedAt"), 5);
  simdjson::dom::object details;
  ASSERT_EQ(doc.at_pointer("/execution/statusDetails").get_object().get(details),
            simdjson::SUCCESS);
  EXPECT_EQ(details.size(), 0u);
}

TEST(JobsReply, NothingPendingHasNoExecution) {
  std::string out;
  encode_execution_accepted(out, std::string("c"), kNowMs, nullptr, kDocument);
  EXPECT_EQ(out, R"({"timestamp":1700000000,"clientToken":"c"})");
  out.clear();
  encode_notify_next(out, 2'000, nullptr, std::nullopt);
  EXPECT_EQ(out, R"({"timestamp":2})");
}

TEST(JobsReply, NotifyNext) {
  const JobExecution e = execution("fw", ExecutionStatus::Queued, 1'000);
  std::string out;
  encode_notify_next(out, kNowMs, &e, kDocument);
  simdjson::dom::parser parser;
  const element doc = parse(parser, out);
  EXPECT_EQ(number(doc, "/timestamp"), 1'700'000'000);
  EXPECT_EQ(text(doc, "/execution/jobId"), "fw");
  EXPECT_EQ(text(doc, "/execution/jobDocument/afr_ota/files/0/certfile"), "/c");
  EXPECT_FALSE(has(doc, "/clientToken"));
}

TEST(JobsReply, EscapesEveryText) {
  JobExecution e = execution("fw", ExecutionStatus::InProgress, 0);
  e.status_details = {{"k", "quote\" back\\ nl\n tab\t ctl\x01 del\x7f caf\xc3\xa9"},
                      {"bad", "\xff\xfe"}};
  const std::string token = "t\"\\\n\x1f";
  std::string out;
  encode_execution_accepted(out, token, 0, &e, std::nullopt);
  encode_jobs_rejected(out, JobsErrorCode::InvalidRequest, "m\"\n", token, 0);
  const std::string first = out.substr(0, out.find("}{") + 1);
  const std::string second = out.substr(first.size());
  simdjson::dom::parser parser;
  element doc = parse(parser, first);
  EXPECT_EQ(text(doc, "/clientToken"), token);
  EXPECT_EQ(text(doc, "/execution/statusDetails/k"),
            "quote\" back\\ nl\n tab\t ctl\x01 del\x7f caf\xc3\xa9");
  EXPECT_EQ(text(doc, "/execution/statusDetails/bad"), "\xef\xbf\xbd\xef\xbf\xbd");  // U+FFFD
  doc = parse(parser, second);
  EXPECT_EQ(text(doc, "/message"), "m\"\n");
  EXPECT_EQ(text(doc, "/clientToken"), token);
}

TEST(JobsReply, EveryRejectedCode) {
  const JobExecution state = [] {
    JobExecution e = execution("fw", ExecutionStatus::Succeeded, 0);
    e.status_details = {{"reason", "accepted v2"}};
    return e;
  }();
  for (int i = 0; i < kJobsErrorCodeCount; ++i) {
    const auto code = static_cast<JobsErrorCode>(i);
    std::string out;
    encode_jobs_rejected(out, code, "why", std::string("tok"), kNowMs, &state);
    simdjson::dom::parser parser;
    const element doc = parse(parser, out);
    EXPECT_EQ(text(doc, "/code"), to_string(code));
    EXPECT_EQ(text(doc, "/message"), "why");
    EXPECT_EQ(text(doc, "/clientToken"), "tok");
    EXPECT_EQ(number(doc, "/timestamp"), 1'700'000'000);
    const bool with_state =
        code == JobsErrorCode::InvalidStateTransition || code == JobsErrorCode::VersionMismatch;
    EXPECT_EQ(has(doc, "/executionState"), with_state) << to_string(code);
    if (with_state) {
      EXPECT_EQ(text(doc, "/executionState/status"), "SUCCEEDED");
      EXPECT_EQ(text(doc, "/executionState/statusDetails/reason"), "accepted v2");
      EXPECT_EQ(number(doc, "/executionState/versionNumber"), 3);
    }
  }
  std::string out;
  encode_jobs_rejected(out, JobsErrorCode::VersionMismatch, "", std::nullopt, 0, nullptr);
  EXPECT_EQ(out, R"({"code":"VersionMismatch","message":"","timestamp":0})");
}

TEST(JobsReply, GetPendingSplitsByStatus) {
  const std::vector<JobExecution> pending = {
      execution("a", ExecutionStatus::InProgress, 1'000),
      execution("b", ExecutionStatus::Queued, 2'000),
      execution("c", ExecutionStatus::Queued, 3'000),
      execution("done", ExecutionStatus::Succeeded, 4'000),
  };
  std::string out;
  encode_get_pending_accepted(out, std::string("t"), kNowMs, pending);
  simdjson::dom::parser parser;
  const element doc = parse(parser, out);
  EXPECT_EQ(text(doc, "/inProgressJobs/0/jobId"), "a");
  EXPECT_EQ(number(doc, "/inProgressJobs/0/startedAt"), 2);
  EXPECT_EQ(text(doc, "/queuedJobs/0/jobId"), "b");
  EXPECT_EQ(text(doc, "/queuedJobs/1/jobId"), "c");
  EXPECT_FALSE(has(doc, "/queuedJobs/0/startedAt"));
  EXPECT_FALSE(has(doc, "/queuedJobs/2"));
  EXPECT_FALSE(has(doc, "/queuedJobs/0/status"));  // a summary has no status
  EXPECT_EQ(number(doc, "/queuedJobs/1/versionNumber"), 3);
  EXPECT_EQ(number(doc, "/queuedJobs/1/executionNumber"), 1);
  EXPECT_EQ(number(doc, "/queuedJobs/1/lastUpdatedAt"), 4);
  EXPECT_EQ(text(doc, "/clientToken"), "t");
  out.clear();
  encode_get_pending_accepted(out, std::nullopt, 0, {});
  EXPECT_EQ(out, R"({"inProgressJobs":[],"queuedJobs":[],"timestamp":0})");
}

TEST(JobsReply, UpdateAccepted) {
  JobExecution e = execution("fw", ExecutionStatus::InProgress, 0);
  e.status_details = {{"receive", "3/40"}};
  std::string out;
  encode_update_accepted(out, std::string("t"), kNowMs, &e, kDocument);
  simdjson::dom::parser parser;
  const element doc = parse(parser, out);
  EXPECT_EQ(text(doc, "/executionState/status"), "IN_PROGRESS");
  EXPECT_EQ(text(doc, "/executionState/statusDetails/receive"), "3/40");
  EXPECT_EQ(number(doc, "/executionState/versionNumber"), 3);
  EXPECT_EQ(text(doc, "/jobDocument/afr_ota/protocols/0"), "MQTT");
  EXPECT_EQ(text(doc, "/clientToken"), "t");
  out.clear();
  encode_update_accepted(out, std::nullopt, kNowMs, nullptr, std::nullopt);
  EXPECT_EQ(out, R"({"timestamp":1700000000})");
  out.clear();
  encode_update_accepted(out, std::nullopt, 0, nullptr, R"({"a":1})");
  EXPECT_EQ(out, R"({"jobDocument":{"a":1},"timestamp":0})");
}

TEST(JobsReply, Notify) {
  std::vector<JobExecution> pending = {execution("a", ExecutionStatus::InProgress, 1'000)};
  for (int i = 0; i < 20; ++i) {
    pending.push_back(execution("q" + std::to_string(i), ExecutionStatus::Queued, 2'000 + i));
  }
  std::string out;
  encode_notify(out, kNowMs, pending);
  simdjson::dom::parser parser;
  const element doc = parse(parser, out);
  EXPECT_EQ(number(doc, "/timestamp"), 1'700'000'000);
  EXPECT_EQ(text(doc, "/jobs/IN_PROGRESS/0/jobId"), "a");
  EXPECT_EQ(text(doc, "/jobs/QUEUED/13/jobId"), "q13");
  EXPECT_FALSE(has(doc, "/jobs/QUEUED/14"));  // 15 listed in all
  out.clear();
  encode_notify(out, 0, std::span<const JobExecution>(pending).subspan(1, 1));
  EXPECT_EQ(out, R"({"timestamp":0,"jobs":{"QUEUED":[{"jobId":"q0","queuedAt":2,"lastUpdatedAt":3,)"
                 R"("versionNumber":3,"executionNumber":1}]}})");
  out.clear();
  encode_notify(out, 0, {});
  EXPECT_EQ(out, R"({"timestamp":0,"jobs":{}})");
}

TEST(JobsReply, NegativeTimesAreZero) {
  JobExecution e = execution("fw", ExecutionStatus::Queued, -5'000);
  e.last_updated_at_ms = -1;
  std::string out;
  encode_notify_next(out, -1, &e, std::nullopt);
  simdjson::dom::parser parser;
  const element doc = parse(parser, out);
  EXPECT_EQ(number(doc, "/timestamp"), 0);
  EXPECT_EQ(number(doc, "/execution/queuedAt"), 0);
  EXPECT_EQ(number(doc, "/execution/lastUpdatedAt"), 0);
}

}  // namespace
}  // namespace chunkd::protocol
