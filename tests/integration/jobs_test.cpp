// Jobs end to end (docs/jobs.md): the real chunkd, a private Mosquitto, and a device that speaks
// the jobs MQTT API the way the OTA agent does (notify-next only, $next/get once, progress and
// self-test updates). The job survives a kill -9 with its statusDetails; a stream an unfinished
// job delivers cannot be deleted; a finished execution refuses updates; a wrong expectedVersion is
// refused with the execution's state.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

#include "tests/integration/agent.hpp"
#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

TEST(Jobs, AnOtaAgentUpdatesEndToEndAcrossARestart) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  ASSERT_TRUE(stack.create_file_stream("fw2", test_bytes(12288, 7)));
  auto created = stack.request("POST", "/jobs/rollout-1", ota_job_body("fw2", R"(["dev-1"])"));
  ASSERT_EQ(created.status, 201) << created.body;

  Agent agent(stack.broker.uri(), "dev-1");
  ASSERT_TRUE(agent.start());
  auto next = agent.next_get();
  ASSERT_TRUE(next && next->ok());
  EXPECT_EQ(next->str("/execution/jobId"), "rollout-1");
  EXPECT_EQ(next->str("/execution/status"), "QUEUED");
  EXPECT_EQ(next->str("/execution/jobDocument/afr_ota/streamname"), "fw2");
  EXPECT_EQ(next->u64("/execution/jobDocument/afr_ota/files/0/filesize"), 12288u);
  EXPECT_EQ(next->str("/execution/jobDocument/afr_ota/protocols/0"), "MQTT");

  ASSERT_TRUE(
      agent.update("rollout-1", R"({"status":"IN_PROGRESS","statusDetails":{"receive":"1/3"}})"));
  ASSERT_TRUE(agent.wait("/update/accepted"));
  auto deleted = stack.request("DELETE", "/streams/fw2");
  EXPECT_EQ(deleted.status, 409) << "an unfinished job delivers it: " << deleted.body;
  ASSERT_TRUE(agent.update(
      "rollout-1",
      R"({"status":"IN_PROGRESS","statusDetails":{"self_test":"ready","updatedBy":"0x1000000"}})"));
  ASSERT_TRUE(agent.wait("/update/accepted"));

  // The "reboot": chunkd is killed too; the execution and its details must survive.
  stack.daemon().kill9();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  stack.reset_http();
  next = agent.next_get();
  ASSERT_TRUE(next && next->ok());
  EXPECT_EQ(next->str("/execution/jobId"), "rollout-1");
  EXPECT_EQ(next->str("/execution/status"), "IN_PROGRESS");
  EXPECT_EQ(next->str("/execution/statusDetails/self_test"), "ready");
  EXPECT_EQ(next->u64("/execution/versionNumber"), 3u);

  ASSERT_TRUE(agent.update("rollout-1", R"({"status":"SUCCEEDED"})"));
  ASSERT_TRUE(agent.wait("/update/accepted"));
  Json job(stack.request("GET", "/jobs/rollout-1").body);
  EXPECT_EQ(job.str("/data/status"), "COMPLETED");
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfSucceededThings"), 1u);
  Json things(stack.request("GET", "/jobs/rollout-1/things").body);
  EXPECT_EQ(things.str("/data/executions/0/thingName"), "dev-1");
  EXPECT_EQ(things.str("/data/executions/0/status"), "SUCCEEDED");

  // A finished execution refuses updates; nothing is pending any more.
  ASSERT_TRUE(agent.update("rollout-1", R"({"status":"IN_PROGRESS","clientToken":"late"})"));
  auto refused = agent.wait("/update/rejected");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->str("/code"), "InvalidStateTransition");
  EXPECT_EQ(refused->str("/clientToken"), "late");
  next = agent.next_get();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has("/execution"));
  EXPECT_EQ(stack.request("DELETE", "/streams/fw2").status, 200) << "the job is finished";
}

// A device asks once, at start; a pattern job created after chunkd restarted must still reach it.
TEST(Jobs, APatternJobReachesAThingSeenBeforeARestart) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  Agent agent(stack.broker.uri(), "sensor-5");
  ASSERT_TRUE(agent.start());
  auto next = agent.next_get();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has("/execution")) << "nothing to do yet";
  stack.daemon().kill9();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  stack.reset_http();
  auto created = stack.request("POST", "/jobs/later-1",
                               R"({"targets":["sensor-*"],"document":{"op":"update"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  next = agent.wait("/jobs/notify-next");  // pushed: the device does not ask again
  ASSERT_TRUE(next);
  EXPECT_EQ(next->str("/execution/jobId"), "later-1");
}

// Reads are limited per thing; updates never are: an agent does not read update/rejected.
TEST(Jobs, ABurstOfUpdatesIsAcceptedWhileReadsAreThrottled) {
  Stack stack;
  stack.daemon().set("jobs", "thing_requests_per_s", "2");
  ASSERT_TRUE(stack.start());
  auto created = stack.request("POST", "/jobs/burst-1", R"({"targets":["dev-3"],"document":{}})");
  ASSERT_EQ(created.status, 201) << created.body;
  Agent agent(stack.broker.uri(), "dev-3");
  ASSERT_TRUE(agent.start());
  constexpr int kUpdates = 30;
  for (int i = 1; i <= kUpdates; ++i) {
    ASSERT_TRUE(agent.update("burst-1", R"({"status":"IN_PROGRESS","statusDetails":{"receive":")" +
                                            std::to_string(i) + R"(/30"}})"));
  }
  for (int i = 0; i < kUpdates; ++i) ASSERT_TRUE(agent.wait("/update/accepted")) << i;
  Json things(stack.request("GET", "/jobs/burst-1/things").body);
  EXPECT_EQ(things.u64("/data/executions/0/versionNumber"), 1u + kUpdates);
  EXPECT_EQ(things.str("/data/executions/0/statusDetails/receive"), "30/30");
  std::string metrics = stack.request("GET", "/metrics").body;
  EXPECT_EQ(metrics.find("result=\"RequestThrottled\""), std::string::npos) << metrics;
}

TEST(Jobs, AWrongExpectedVersionIsRefusedWithTheState) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  auto created = stack.request("POST", "/jobs/config-1",
                               R"({"targets":["dev-*"],"document":{"op":"reboot"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  Agent agent(stack.broker.uri(), "dev-9");
  ASSERT_TRUE(agent.start());
  auto next = agent.next_get();  // the pattern matches dev-9 as it first talks
  ASSERT_TRUE(next);
  EXPECT_EQ(next->str("/execution/jobId"), "config-1");
  EXPECT_EQ(next->str("/execution/jobDocument/op"), "reboot");
  ASSERT_TRUE(agent.update("config-1", R"({"status":"IN_PROGRESS","expectedVersion":7})"));
  auto refused = agent.wait("/update/rejected");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->str("/code"), "VersionMismatch");
  EXPECT_EQ(refused->str("/executionState/status"), "QUEUED");
  EXPECT_EQ(refused->u64("/executionState/versionNumber"), 1u);
  Json job(stack.request("GET", "/jobs/config-1").body);
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfQueuedThings"), 1u);
  EXPECT_EQ(stack.request("POST", "/jobs/config-1", R"({"targets":["x"],"document":{}})").status,
            409);
  EXPECT_EQ(stack.request("POST", "/jobs/config-1/cancel").status, 200);
  Json canceled(stack.request("GET", "/jobs/config-1").body);
  EXPECT_EQ(canceled.str("/data/status"), "CANCELED");
  EXPECT_EQ(canceled.u64("/data/jobProcessDetails/numberOfCanceledThings"), 1u);
}

}  // namespace
}  // namespace chunkd::test
