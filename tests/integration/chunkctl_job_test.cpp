// tools/chunkctl's job commands against the real chunkd and a private Mosquitto (docs/jobs.md
// "HTTP"): create (an OTA job from a DER signature file, a plain job from a document file or
// standard input), describe, list, things, cancel, delete, and watch following a job to its
// outcome while a device (the OTA agent's side of the jobs MQTT API) reports progress: one line
// per change through a pipe, a view redrawn in place on a terminal.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <sstream>
#include <thread>

#include "protocol/base64.hpp"
#include "tests/integration/agent.hpp"
#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"
#include "tests/support/pty_process.hpp"

namespace chunkd::test {
namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

class ChunkctlJob : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(chunkctl_binary_path().c_str(), X_OK) != 0) GTEST_SKIP() << "no chunkctl";
    ASSERT_TRUE(stack.start());
    url = "http://127.0.0.1:" + std::to_string(stack.daemon().port());
    ASSERT_TRUE(stack.create_file_stream("fw2", test_bytes(12288, 7)));
    dir = stack.daemon().dir();
    signature = test_bytes(71, 3);  // a DER signature's size; nothing checks it here
    ASSERT_TRUE(write_file(dir + "/fw2.sig", signature));
  }

  ProcessResult ctl(std::vector<std::string> args) {
    args.insert(args.begin(), chunkctl_binary_path());
    return run_process(args, 120000, {{"CHUNKD_URL", url}, {"CHUNKD_TOKEN", ""}});
  }
  std::vector<std::string> ota_flags() {
    return {"--ota-stream",    "fw2",           "--ota-file-id",        "0",
            "--ota-file-path", "/fw/app.bin",   "--ota-signature-file", dir + "/fw2.sig",
            "--ota-cert-file", "/certs/ota.crt"};
  }
  ProcessResult create_ota(const std::string& id, std::vector<std::string> targets,
                           std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"job", "create", id};
    for (const auto& t : targets) args.insert(args.end(), {"--target", t});
    for (const auto& f : ota_flags()) args.push_back(f);
    args.insert(args.end(), more.begin(), more.end());
    return ctl(args);
  }

  Stack stack;
  std::string url, dir, signature;
};

#define EXPECT_EXIT_CODE(result, code) \
  EXPECT_EQ((result).exit_code, code) << "stdout: " << (result).out << "\nstderr: " << (result).err

TEST_F(ChunkctlJob, CreateDescribeListThingsCancelDelete) {
  auto c = create_ota("rollout-1", {"dev-1", "arn:aws:iot:eu-west-1:123456789012:thing/dev-2"},
                      {"--description", "firmware 2.0", "--max-per-minute", "1", "--abort",
                       "failed:12.5:4", "--abort", "ALL:50:10", "--timeout-minutes", "30"});
  EXPECT_EXIT_CODE(c, 0);
  EXPECT_NE(c.out.find("created job rollout-1, IN_PROGRESS"), std::string::npos) << c.out;

  auto d = ctl({"--json", "job", "describe", "rollout-1"});
  EXPECT_EXIT_CODE(d, 0);
  Json dj(d.out);
  ASSERT_TRUE(dj.ok()) << d.out;
  std::string b64(protocol::base64::encoded_length(signature.size()), '\0');
  protocol::base64::encode(as_bytes(signature), b64);
  EXPECT_EQ(dj.str("/ota/signature"), b64);
  EXPECT_EQ(dj.str("/document/afr_ota/files/0/sig-sha256-ecdsa"), b64);
  EXPECT_EQ(dj.u64("/document/afr_ota/files/0/filesize"), 12288u);
  EXPECT_EQ(dj.str("/targets/1"), "dev-2");
  EXPECT_EQ(dj.str("/description"), "firmware 2.0");
  EXPECT_EQ(dj.u64("/jobExecutionsRolloutConfig/maximumPerMinute"), 1u);
  EXPECT_EQ(dj.str("/abortConfig/criteriaList/0/failureType"), "FAILED");
  EXPECT_EQ(dj.u64("/abortConfig/criteriaList/1/minNumberOfExecutedThings"), 10u);
  EXPECT_EQ(dj.u64("/timeoutConfig/inProgressTimeoutInMinutes"), 30u);
  // One a minute: dev-1 is released, dev-2 waits.
  EXPECT_EQ(dj.u64("/jobProcessDetails/numberOfQueuedThings"), 1u) << d.out;
  EXPECT_EQ(dj.u64("/jobProcessDetails/numberOfWaitingThings"), 1u) << d.out;

  auto table = ctl({"job", "describe", "rollout-1"});
  EXPECT_EXIT_CODE(table, 0);
  for (const char* want : {"status      IN_PROGRESS", "targets     dev-1 dev-2",
                           "ota         stream fw2 file 0 to /fw/app.bin", "rollout     1 per",
                           "abort       when over 12.5% of at least 4 finished are FAILED",
                           "things      2 things: waiting 1, queued 1, in progress 0"}) {
    EXPECT_NE(table.out.find(want), std::string::npos) << want << "\n" << table.out;
  }

  ASSERT_EQ(ctl({"job", "create", "config-1", "--target", "dev-*", "--document", dir + "/doc.json"})
                .exit_code,
            2)
      << "no such file";
  ASSERT_TRUE(write_file(dir + "/doc.json", "{ \"op\" : \"reboot\" }\n"));
  EXPECT_EXIT_CODE(
      ctl({"job", "create", "config-1", "--target", "dev-*", "--document", dir + "/doc.json"}), 0);
  auto piped = run_process({"/bin/sh", "-c",
                            "printf '{\"op\":\"wipe\"}' | exec \"$0\" job create config-2 "
                            "--target dev-9 --document -",
                            chunkctl_binary_path()},
                           60000, {{"CHUNKD_URL", url}, {"CHUNKD_TOKEN", ""}});
  EXPECT_EXIT_CODE(piped, 0);
  EXPECT_EQ(Json(ctl({"--json", "job", "describe", "config-2"}).out).str("/document/op"), "wipe");

  auto list = ctl({"job", "list", "--all", "--max-results", "1"});
  EXPECT_EXIT_CODE(list, 0);
  EXPECT_EQ(lines(list.out).size(), 4u) << list.out;  // the header and three jobs
  auto page = ctl({"--json", "job", "list", "--max-results", "2", "--descending"});
  EXPECT_EXIT_CODE(page, 0);
  Json pj(page.out);
  EXPECT_EQ(pj.str("/jobs/0/jobId"), "rollout-1") << page.out;
  EXPECT_EQ(pj.str("/jobs/1/jobId"), "config-2") << page.out;
  ASSERT_TRUE(pj.str("/nextToken"));
  auto rest = ctl({"--json", "job", "list", "--descending", "--next-token", *pj.str("/nextToken")});
  EXPECT_EQ(Json(rest.out).str("/jobs/0/jobId"), "config-1") << rest.out;
  auto all = ctl({"job", "list", "--json", "--all", "--max-results", "1"});
  EXPECT_EQ(Json(all.out).array_size("/jobs"), 3u) << all.out;

  // The device starts; things shows its details, --status filters.
  Agent agent(stack.broker.uri(), "dev-1");
  ASSERT_TRUE(agent.start());
  ASSERT_EQ(agent.next_job(), "rollout-1");
  ASSERT_TRUE(agent.update_accepted(
      "rollout-1", R"({"status":"IN_PROGRESS","statusDetails":{"receive":"1/3"}})"));
  auto things = ctl({"job", "things", "rollout-1"});
  EXPECT_EXIT_CODE(things, 0);
  EXPECT_NE(things.out.find("IN_PROGRESS"), std::string::npos) << things.out;
  EXPECT_NE(things.out.find("receive=1/3"), std::string::npos) << things.out;
  auto queued = ctl({"--json", "job", "things", "rollout-1", "--status", "QUEUED"});
  EXPECT_EXIT_CODE(queued, 0);
  EXPECT_EQ(Json(queued.out).array_size("/executions"), 0u) << queued.out;
  auto running = ctl({"--json", "job", "things", "rollout-1", "--status", "IN_PROGRESS", "--all"});
  EXPECT_EQ(Json(running.out).str("/executions/0/statusDetails/receive"), "1/3") << running.out;
  EXPECT_EXIT_CODE(ctl({"job", "things", "rollout-1", "--status", "DONE"}), 1);

  // An in-progress job is deleted only with --force; cancel without it keeps dev-1 going.
  auto refused = ctl({"job", "delete", "rollout-1"});
  EXPECT_EXIT_CODE(refused, 1);
  EXPECT_NE(refused.err.find("ALREADY_EXISTS"), std::string::npos) << refused.err;
  auto cancel = ctl({"--json", "job", "cancel", "rollout-1", "--reason-code", "BAD_BUILD",
                     "--comment", "wrong image"});
  EXPECT_EXIT_CODE(cancel, 0);
  Json cj(cancel.out);
  EXPECT_EQ(cj.str("/status"), "CANCELED") << cancel.out;
  EXPECT_EQ(cj.str("/reasonCode"), "BAD_BUILD");
  EXPECT_EQ(cj.str("/comment"), "wrong image");
  EXPECT_EQ(cj.u64("/jobProcessDetails/numberOfInProgressThings"), 1u) << "not forced";
  EXPECT_EQ(cj.u64("/jobProcessDetails/numberOfWaitingThings"), 0u);
  EXPECT_EXIT_CODE(ctl({"job", "cancel", "rollout-1"}), 1);  // already canceled
  auto forced = ctl({"--json", "job", "cancel", "config-2", "--force"});
  EXPECT_EXIT_CODE(forced, 0);
  EXPECT_EQ(Json(forced.out).u64("/jobProcessDetails/numberOfCanceledThings"), 1u) << forced.out;

  EXPECT_EXIT_CODE(ctl({"job", "delete", "config-1"}), 1);
  auto del = ctl({"job", "delete", "config-1", "--force"});
  EXPECT_EXIT_CODE(del, 0);
  EXPECT_NE(del.out.find("deleted job config-1"), std::string::npos) << del.out;
  EXPECT_EXIT_CODE(ctl({"job", "delete", "rollout-1"}), 0);
  auto gone = ctl({"job", "describe", "rollout-1"});
  EXPECT_EXIT_CODE(gone, 1);
  EXPECT_NE(gone.err.find("NOT_FOUND"), std::string::npos) << gone.err;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(ChunkctlJob, UsageAndServerErrorsNameTheFlagOrField) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::string doc = dir + "/ok.json";
  ASSERT_TRUE(write_file(doc, "{}"));
  const std::vector<Case> usage = {
      {{"job"}, "job needs a command"},
      {{"job", "launch", "x"}, "unknown job command launch"},
      {{"job", "describe"}, "exactly one job id"},
      {{"job", "create", "x", "--document", "-"}, "--target"},
      {{"job", "create", "x", "--target", "a"}, "exactly one of --document"},
      {{"job", "create", "x", "--target", "a", "--ota-stream", "fw2"},
       "--ota-file-id, --ota-file-path, --ota-signature-file, --ota-cert-file"},
      {{"job", "create", "x", "--target", "a", "--ota-stream", "fw2", "--ota-file-id", "zero",
        "--ota-file-path", "p", "--ota-signature-file", "/nonexistent", "--ota-cert-file", "c"},
       "--ota-file-id wants a whole number"},
      {{"job", "create", "x", "--target", "a", "--document", doc, "--abort", "FAILED:10"},
       "--abort wants FAILURE_TYPE:PERCENT:MIN"},
      {{"job", "create", "x", "--target", "a", "--document", doc, "--abort", "LOST:1:1"},
       "--abort failure type"},
      {{"job", "create", "x", "--target", "a", "--document", "/dev/null"},
       "not hold a JSON object"},
      {{"job", "create", "x", "--target", "a", "--document", doc, "--max-per-minute", "-1"},
       "--max-per-minute wants a whole number"},
      {{"job", "describe", "x", "--force"}, "--force is for job cancel delete, not job describe"},
      {{"job", "watch", "x", "--interval-ms", "5"}, "--interval-ms"},
      {{"job", "list", "--bogus"}, "unknown option --bogus"},
  };
  for (const Case& c : usage) {
    auto r = ctl(c.args);
    EXPECT_EXIT_CODE(r, 2);
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.says << "\n" << r.err;
  }
  // What only chunkd can tell: exit 1 with the field named.
  std::vector<std::string> args = ota_flags();
  args[1] = "no-such-stream";
  args.insert(args.begin(), {"job", "create", "x", "--target", "a"});
  auto missing = ctl(args);
  EXPECT_EXIT_CODE(missing, 1);
  EXPECT_NE(missing.err.find("ota.streamId"), std::string::npos) << missing.err;
  auto rate = create_ota("x", {"a"}, {"--max-per-minute", "5000"});
  EXPECT_EXIT_CODE(rate, 1);
  EXPECT_NE(rate.err.find("jobExecutionsRolloutConfig.maximumPerMinute"), std::string::npos)
      << rate.err;
  auto bad_id = ctl({"job", "describe", "no.such"});
  EXPECT_EXIT_CODE(bad_id, 1);
  EXPECT_NE(bad_id.err.find("jobId"), std::string::npos) << bad_id.err;
  auto unreachable =
      run_process({chunkctl_binary_path(), "--url", "http://127.0.0.1:1", "job", "watch", "x"},
                  60000, {{"CHUNKD_TOKEN", ""}});
  EXPECT_EXIT_CODE(unreachable, 2);
}

// Through a pipe: one line per change of the counts, then the outcome; exit 0 only when every
// execution succeeded.
TEST_F(ChunkctlJob, WatchPrintsEachChangeAndTheOutcome) {
  EXPECT_EXIT_CODE(create_ota("w-1", {"dev-1", "dev-2"}), 0);
  auto once = ctl({"job", "watch", "w-1", "--once"});
  EXPECT_EXIT_CODE(once, 0);
  ASSERT_EQ(lines(once.out).size(), 1u) << once.out;
  EXPECT_NE(once.out.find(" job w-1 IN_PROGRESS 2 things: waiting 0, queued 2, in progress 0, "
                          "succeeded 0"),
            std::string::npos)
      << once.out;

  auto watch = std::async(std::launch::async, [&] {
    return ctl({"job", "watch", "w-1", "--interval-ms", "100"});
  });
  Agent one(stack.broker.uri(), "dev-1"), two(stack.broker.uri(), "dev-2");
  ASSERT_TRUE(one.start() && two.start());
  ASSERT_EQ(one.next_job(), "w-1");
  ASSERT_EQ(two.next_job(), "w-1");
  ASSERT_TRUE(
      one.update_accepted("w-1", R"({"status":"IN_PROGRESS","statusDetails":{"receive":"2/3"}})"));
  ASSERT_TRUE(one.update_accepted("w-1", R"({"status":"SUCCEEDED"})"));
  ASSERT_TRUE(two.update_accepted("w-1", R"({"status":"SUCCEEDED"})"));
  auto r = watch.get();
  EXPECT_EXIT_CODE(r, 0);
  auto out = lines(r.out);
  ASSERT_GE(out.size(), 2u) << r.out;
  for (std::size_t i = 0; i + 1 < out.size(); ++i) {
    EXPECT_NE(out[i].find(" job w-1 "), std::string::npos) << out[i];
    if (i > 0) EXPECT_NE(out[i].substr(out[i].find(' ')), out[i - 1].substr(out[i - 1].find(' ')));
  }
  EXPECT_NE(out[out.size() - 2].find("COMPLETED 2 things: waiting 0, queued 0, in progress 0, "
                                     "succeeded 2, failed 0"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(out.back(), "job w-1 COMPLETED: 2 of 2 succeeded") << r.out;

  // A device that fails: the job completes, watch says so and exits 1; --json prints the data.
  EXPECT_EXIT_CODE(create_ota("w-2", {"dev-3"}), 0);
  Agent three(stack.broker.uri(), "dev-3");
  ASSERT_TRUE(three.start());
  ASSERT_EQ(three.next_job(), "w-2");
  ASSERT_TRUE(
      three.update_accepted("w-2", R"({"status":"FAILED","statusDetails":{"reason":"sig"}})"));
  auto failed = ctl({"job", "watch", "w-2"});
  EXPECT_EXIT_CODE(failed, 1);
  EXPECT_EQ(lines(failed.out).back(), "job w-2 COMPLETED: 0 of 1 succeeded, 1 failed")
      << failed.out;
  auto json = ctl({"--json", "job", "watch", "w-2"});
  EXPECT_EXIT_CODE(json, 1);
  ASSERT_EQ(lines(json.out).size(), 1u) << json.out;
  EXPECT_EQ(Json(json.out).u64("/jobProcessDetails/numberOfFailedThings"), 1u) << json.out;

  // Canceled: exit 1, the reason in the outcome.
  EXPECT_EXIT_CODE(create_ota("w-3", {"dev-4"}), 0);
  EXPECT_EXIT_CODE(ctl({"job", "cancel", "w-3"}), 0);
  auto canceled = ctl({"job", "watch", "w-3"});
  EXPECT_EXIT_CODE(canceled, 1);
  EXPECT_EQ(lines(canceled.out).back(),
            "job w-3 CANCELED (canceled by the operator): 0 of 1 succeeded, 1 canceled")
      << canceled.out;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// chunkd killed and restarted under a watch: the watch says it lost chunkd once, carries on, and
// still reports the outcome.
TEST_F(ChunkctlJob, WatchOutlivesARestartOfChunkd) {
  EXPECT_EXIT_CODE(create_ota("r-1", {"dev-1"}), 0);
  const std::string out_file = dir + "/watch.out", err_file = dir + "/watch.err";
  auto watch = std::async(std::launch::async, [&] {
    return run_process(
        {"/bin/sh", "-c", "exec \"$0\" job watch r-1 --interval-ms 100 >\"$1\" 2>\"$2\"",
         chunkctl_binary_path(), out_file, err_file},
        120000, {{"CHUNKD_URL", url}, {"CHUNKD_TOKEN", ""}});
  });
  for (int i = 0; i < 300 && read_file(out_file).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(read_file(out_file).empty()) << "the watch never printed its first line";
  stack.daemon().kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a poll or more finds it gone
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  ASSERT_EQ(stack.daemon().port(), std::stoi(url.substr(url.rfind(':') + 1)));
  Agent agent(stack.broker.uri(), "dev-1");
  ASSERT_TRUE(agent.start());
  ASSERT_EQ(agent.next_job(), "r-1");
  ASSERT_TRUE(agent.update_accepted("r-1", R"({"status":"SUCCEEDED"})"));
  auto r = watch.get();
  const std::string out = read_file(out_file), err = read_file(err_file);
  EXPECT_EQ(r.exit_code, 0) << out << err;
  EXPECT_EQ(lines(out).back(), "job r-1 COMPLETED: 1 of 1 succeeded") << out;
  EXPECT_EQ(lines(err).size(), 1u) << "said once: " << err;
}

// On a terminal: the view is redrawn in place (cursor up, clear), with a bar per status and one
// per device in progress from its `receive` details, and ends with the outcome.
TEST_F(ChunkctlJob, WatchRedrawsOnATerminal) {
  EXPECT_EXIT_CODE(create_ota("tty-1", {"dev-1"}), 0);
  PtyProcess tty;
  ASSERT_TRUE(tty.start({chunkctl_binary_path(), "job", "watch", "tty-1", "--interval-ms", "100"},
                        {"CHUNKD_URL=" + url, "CHUNKD_TOKEN="}, 40, 100));
  Agent agent(stack.broker.uri(), "dev-1");
  bool started = agent.start() && agent.next_job() == "tty-1" &&
                 agent.update_accepted(
                     "tty-1", R"({"status":"IN_PROGRESS","statusDetails":{"receive":"1/3"}})");
  const std::string device_bar = "[##########....................] 1/3";
  for (int i = 0; i < 100 && tty.seen().find(device_bar) == std::string::npos; ++i) {
    tty.read_some(200);
  }
  bool finished = started && agent.update_accepted("tty-1", R"({"status":"SUCCEEDED"})");
  const int status = tty.finish(30000);
  const std::string& seen = tty.seen();
  ASSERT_TRUE(started && finished);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << seen;
  EXPECT_NE(seen.find("job tty-1  IN_PROGRESS  1 things"), std::string::npos) << seen;
  EXPECT_NE(seen.find("QUEUED       [..............................]      0/1"), std::string::npos)
      << seen;
  EXPECT_NE(seen.find("devices in progress:"), std::string::npos) << seen;
  EXPECT_NE(seen.find("dev-1"), std::string::npos) << seen;
  EXPECT_NE(seen.find(device_bar), std::string::npos) << seen;
  EXPECT_NE(seen.find("A\r\033[J"), std::string::npos) << "redrawn in place: " << seen;
  EXPECT_NE(seen.find("SUCCEEDED    [##############################]      1/1"), std::string::npos)
      << seen;
  EXPECT_NE(seen.find("job tty-1 COMPLETED: 1 of 1 succeeded"), std::string::npos) << seen;
}

}  // namespace
}  // namespace chunkd::test
