// The rollout policy end to end (docs/jobs.md, engine/job_book.hpp): the real chunkd and a private
// Mosquitto, with chunkload --ota devices (the OTA agent's flow, docs/chunkload.md "OTA mode") or a
// test client speaking the jobs MQTT API. Counts and states are asserted, never durations: the
// one test that must span a rollout window (a minute) checks the rate and the in-progress
// time-out together.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "protocol/base64.hpp"
#include "tests/integration/agent.hpp"
#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"

namespace chunkd::test {
namespace {

using std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kImageSize = 32u << 10;

// The value of one sample line of /metrics (-1 when absent).
double metric(Stack& stack, const std::string& sample) {
  const std::string text = stack.request("GET", "/metrics").body;
  std::size_t at = 0;
  while ((at = text.find(sample + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + sample.size() + 1));
    at += sample.size();
  }
  return -1;
}

bool eventually(const std::function<bool()>& done, std::chrono::seconds limit) {
  for (auto end = steady_clock::now() + limit; steady_clock::now() < end;) {
    if (done()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return done();
}

// Executions of a job, over every status.
std::uint64_t executions_of(const Json& job) {
  std::uint64_t n = 0;
  for (const char* s : {"Queued", "InProgress", "Succeeded", "Failed", "Rejected", "TimedOut",
                        "Canceled", "Removed"}) {
    n += job.u64(std::string("/data/jobProcessDetails/numberOf") + s + "Things").value_or(0);
  }
  return n;
}

// "2026-11-27T10:00:00Z" → seconds since the epoch (-1 when malformed).
std::int64_t rfc3339_seconds(const std::string& text) {
  std::tm tm{};
  const char* end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') return -1;
  return static_cast<std::int64_t>(::timegm(&tm));
}

// The most queue times in any half-open 60 s window. Times are whole seconds, cut down: two
// releases at least 60 s apart are at least 60 apart here too.
std::size_t busiest_minute(std::vector<std::int64_t> times) {
  std::sort(times.begin(), times.end());
  std::size_t most = 0;
  for (std::size_t i = 0, j = 0; i < times.size(); ++i) {
    while (j < times.size() && times[j] < times[i] + 60) ++j;
    most = std::max(most, j - i);
  }
  return most;
}

// chunkload run on a thread of its own, joined before the test's objects go.
class Background {
 public:
  explicit Background(std::function<ProcessResult()> run)
      : thread_([this, run = std::move(run)] { result_ = run(); }) {}
  ~Background() { join(); }
  const ProcessResult& join() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }

 private:
  ProcessResult result_;
  std::thread thread_;
};

class JobsRollout : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(chunkload_binary_path().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "no " << chunkload_binary_path();
    }
    std::string error;
    dir_ = make_temp_dir("jobs-rollout", error);
    ASSERT_FALSE(dir_.empty()) << error;
    ASSERT_TRUE(write_file(dir_ + "/image.bin", test_bytes(kImageSize, 21)));
    openssl({"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", dir_ + "/key.pem"});
    openssl({"req", "-new", "-x509", "-key", dir_ + "/key.pem", "-out", dir_ + "/cert.pem", "-days",
             "2", "-subj", "/CN=jobs-rollout-test"});
    openssl({"dgst", "-sha256", "-sign", dir_ + "/key.pem", "-out", dir_ + "/image.sig",
             dir_ + "/image.bin"});
    const std::string der = read_file(dir_ + "/image.sig");
    signature_.assign(protocol::base64::encoded_length(der.size()), '\0');
    protocol::base64::encode(as_bytes(der), signature_);
    ASSERT_TRUE(stack.start());
    ASSERT_TRUE(stack.create_file_stream("ota-fw", read_file(dir_ + "/image.bin")));
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  void openssl(const std::vector<std::string>& args) {
    std::string command = "exec openssl";  // through the shell: openssl from PATH
    for (const std::string& a : args) command += " '" + a + "'";
    auto r = run_process({"/bin/sh", "-c", command}, 30000);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  // An OTA job body for the stream, with `more` (",\"key\":...") appended.
  std::string job_body(const std::string& targets, const std::string& more) const {
    return R"({"targets":)" + targets +
           R"(,"ota":{"streamId":"ota-fw","fileId":0,"filePath":"/fw/image.bin",)"
           R"("certFile":"/certs/ota.crt","signature":)" +
           json_quote(signature_) + "}" + more + "}";
  }

  ProcessResult chunkload(std::uint32_t devices, const std::string& prefix,
                          std::vector<std::string> more = {}) {
    std::vector<std::string> args{chunkload_binary_path(),
                                  "--ota",
                                  "--ota-cert",
                                  dir_ + "/cert.pem",
                                  "--uri",
                                  stack.broker.uri(),
                                  "--devices",
                                  std::to_string(devices),
                                  "--thing-prefix",
                                  prefix,
                                  "--block-size",
                                  "1024",
                                  "--connections",
                                  "10",
                                  "--json"};
    args.insert(args.end(), more.begin(), more.end());
    return run_process(args, 240000, {{"CHUNKD_TOKEN", ""}, {"CHUNKD_URL", ""}});
  }

  Json describe(const std::string& id) { return Json(stack.request("GET", "/jobs/" + id).body); }
  Json things(const std::string& id, const std::string& query = "") {
    return Json(stack.request("GET", "/jobs/" + id + "/things?maxResults=250" + query).body);
  }

  Stack stack;
  std::string dir_;
  std::string signature_;
};

// 200 things, 100 per minute: exactly 100 executions until the window moves, then all 200, and
// no 60 s of queue times holds more than 100. The minute also runs out the in-progress time-out
// of a device that reported IN_PROGRESS and went silent: TIMED_OUT, and it hears notify-next.
TEST_F(JobsRollout, AHundredPerMinuteReleaseTwoHundredThingsAndASilentDeviceTimesOut) {
  constexpr std::uint32_t kLoadDevices = 199;  // and "silent-1": 200 things
  const std::string describes = R"(chunkd_jobs_requests_total{api="describe",result="accepted"})";
  Background load([&] { return chunkload(kLoadDevices, "rate-dev-", {"--max-seconds", "200"}); });
  // The devices ask $next/get first (nothing yet): the job then matches all of them at once.
  ASSERT_TRUE(eventually([&] { return metric(stack, describes) >= kLoadDevices; }, 120s))
      << metric(stack, describes);

  const auto before_create = steady_clock::now();
  auto created = stack.request("POST", "/jobs/rate-1",
                               job_body(R"(["silent-1","rate-dev-*"])",
                                        R"(,"jobExecutionsRolloutConfig":{"maximumPerMinute":100},)"
                                        R"("timeoutConfig":{"inProgressTimeoutInMinutes":1})"));
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(executions_of(describe("rate-1")), 100u);
  EXPECT_EQ(things("rate-1").array_size("/data/executions"), 100u);

  // silent-1, a named target, was among the first 100: it starts and goes quiet.
  Agent silent(stack.broker.uri(), "silent-1");
  ASSERT_TRUE(silent.start());
  auto next = silent.next_get();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->str("/execution/jobId"), "rate-1");
  ASSERT_TRUE(silent.publish("rate-1/update", R"({"status":"IN_PROGRESS"})"));
  ASSERT_TRUE(silent.wait("/update/accepted"));

  std::this_thread::sleep_until(before_create + 50s);  // the first releases are younger than 50 s
  EXPECT_EQ(executions_of(describe("rate-1")), 100u) << "released before the window moved";
  EXPECT_EQ(metric(stack, "chunkd_jobs_released_total"), 100);

  const ProcessResult& r = load.join();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << stack.daemon().log(8000);
  EXPECT_EQ(Json(r.out).u64("/ota/succeeded"), kLoadDevices) << r.out;
  auto timed_out = silent.wait("/jobs/notify-next", 90s);
  ASSERT_TRUE(timed_out) << "silent-1 heard no notify-next";
  EXPECT_FALSE(timed_out->has("/execution")) << "nothing is pending for silent-1 any more";

  Json job = describe("rate-1");
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfSucceededThings"), kLoadDevices);
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfTimedOutThings"), 1u);
  EXPECT_EQ(executions_of(job), 200u);
  Json all = things("rate-1");
  ASSERT_EQ(all.array_size("/data/executions"), 200u);
  std::vector<std::int64_t> queued;
  for (std::size_t i = 0; i < 200; ++i) {
    const std::string at = "/data/executions/" + std::to_string(i);
    queued.push_back(rfc3339_seconds(all.str(at + "/queuedAt").value_or("")));
    if (all.str(at + "/thingName") == "silent-1") {
      EXPECT_EQ(all.str(at + "/status"), "TIMED_OUT");
    } else {
      EXPECT_EQ(all.str(at + "/status"), "SUCCEEDED") << all.str(at + "/thingName").value_or("");
    }
  }
  EXPECT_EQ(std::count(queued.begin(), queued.end(), -1), 0);
  EXPECT_EQ(busiest_minute(queued), 100u);
  EXPECT_EQ(metric(stack, "chunkd_jobs_released_total"), 200);
  EXPECT_EQ(metric(stack, "chunkd_jobs_timed_out_total"), 1);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log(8000);
}

// Six named things that never show up, four devices that all fail: at 4 executed and 100% failed
// (criterion: 50%, at least 4) the job is aborted and the six QUEUED executions are canceled.
TEST_F(JobsRollout, FailuresOverTheThresholdAbortTheJob) {
  auto created = stack.request(
      "POST", "/jobs/abort-1",
      job_body(R"(["ghost-1","ghost-2","ghost-3","ghost-4","ghost-5","ghost-6","fail-dev-*"])",
               R"(,"abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL",)"
               R"("thresholdPercentage":50,"minNumberOfExecutedThings":4}]})"));
  ASSERT_EQ(created.status, 201) << created.body;
  auto r = chunkload(4, "fail-dev-", {"--fail-percent", "100", "--max-seconds", "60"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r.out).u64("/ota/failed"), 4u) << r.out;

  Json job = describe("abort-1");
  EXPECT_EQ(job.str("/data/status"), "CANCELED");
  EXPECT_EQ(job.str("/data/reasonCode"), "ABORTED");
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfFailedThings"), 4u);
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfCanceledThings"), 6u);
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfQueuedThings"), 0u);
  Json canceled = things("abort-1", "&status=CANCELED");
  ASSERT_EQ(canceled.array_size("/data/executions"), 6u);
  EXPECT_EQ(canceled.str("/data/executions/0/thingName"), "ghost-1");
  EXPECT_EQ(things("abort-1", "&status=QUEUED").array_size("/data/executions"), 0u);
  EXPECT_EQ(metric(stack, "chunkd_jobs_aborted_total"), 1);

  Agent late(stack.broker.uri(), "ghost-1");  // shows up after the abort: nothing to do
  ASSERT_TRUE(late.start());
  auto next = late.next_get();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->has("/execution"));
}

// Many things' jobs side on one connection. Each reports a fixed sequence of updates, one at a
// time, with expectedVersion and includeJobExecutionState, and resends an update left unanswered
// for 3 s (chunkd may be down): a careful device. An answer is "accepted" when it says so, or when
// a VersionMismatch shows exactly the update's state one version on (its first send was applied
// and the answer lost). Anything else is a violation.
class ReportingFleet {
 public:
  struct Step {
    std::string status;
    std::string receive;
  };
  inline static const std::vector<Step> kSteps = {{"IN_PROGRESS", "1/4"},
                                                  {"IN_PROGRESS", "2/4"},
                                                  {"IN_PROGRESS", "3/4"},
                                                  {"IN_PROGRESS", "4/4"},
                                                  {"SUCCEEDED", "4/4"}};
  struct Thing {
    std::uint64_t version = 0;            // 0: no execution heard of yet
    std::size_t step = 0;                 // the update being reported
    std::vector<std::uint64_t> versions;  // the versions of the accepted updates, in order
    steady_clock::time_point sent;
  };

  ReportingFleet(const std::string& uri, std::string job, const std::vector<std::string>& things)
      : job_(std::move(job)), mqtt_(uri, "reporting-fleet") {
    for (const auto& t : things) things_[t];
  }

  bool start() {
    if (!mqtt_.connect() ||
        !mqtt_.subscribe({kPrefix + "+/jobs/notify-next", kPrefix + "+/jobs/+/update/accepted",
                          kPrefix + "+/jobs/+/update/rejected"})) {
      return false;
    }
    for (auto& [name, t] : things_) send(name, t);
    return true;
  }

  // Handles answers until `accepted` updates were accepted in all, or every thing is done, or
  // `limit` passed.
  void run(std::size_t accepted, std::chrono::seconds limit) {
    for (auto end = steady_clock::now() + limit; steady_clock::now() < end;) {
      if (accepted_ >= accepted || done() == things_.size()) return;
      if (auto m = mqtt_.next(100)) handle(*m);
      for (auto& [name, t] : things_) {
        if (t.step < kSteps.size() && steady_clock::now() - t.sent > 3s) {
          ++resent_;
          send(name, t);
        }
      }
    }
  }

  std::size_t done() const {
    return static_cast<std::size_t>(std::count_if(
        things_.begin(), things_.end(), [](auto& kv) { return kv.second.step == kSteps.size(); }));
  }
  std::size_t accepted() const { return accepted_; }
  std::size_t resent() const { return resent_; }
  const std::map<std::string, Thing>& things() const { return things_; }
  const std::vector<std::string>& violations() const { return violations_; }

 private:
  void send(const std::string& name, Thing& t) {
    t.sent = steady_clock::now();
    if (t.version == 0) {
      mqtt_.publish(kPrefix + name + "/jobs/$next/get", as_bytes("{}"));
      return;
    }
    const Step& s = kSteps[t.step];
    const std::string body = R"({"status":")" + s.status + R"(","statusDetails":{"receive":")" +
                             s.receive + R"("},"expectedVersion":)" + std::to_string(t.version) +
                             R"(,"includeJobExecutionState":true,"clientToken":")" + name + ":" +
                             std::to_string(t.step) + R"("})";
    mqtt_.publish(kPrefix + name + "/jobs/" + job_ + "/update", as_bytes(body));
  }

  void handle(const MqttMessage& m) {
    std::string_view rest = std::string_view(m.topic).substr(kPrefix.size());
    auto it = things_.find(std::string(rest.substr(0, rest.find('/'))));
    if (it == things_.end()) return;
    const std::string& name = it->first;
    Thing& t = it->second;
    Json j(to_string(m.payload));
    if (rest.ends_with("/notify-next")) {
      if (t.version == 0 && j.str("/execution/jobId") == job_) {
        t.version = j.u64("/execution/versionNumber").value_or(0);
        send(name, t);
      }
      return;
    }
    if (t.step == kSteps.size() || j.str("/clientToken") != name + ":" + std::to_string(t.step)) {
      return;  // the answer to an earlier send of an update since accepted
    }
    const Step& s = kSteps[t.step];
    const auto state_version = j.u64("/executionState/versionNumber");
    const bool applied = j.str("/executionState/status") == s.status &&
                         j.str("/executionState/statusDetails/receive") == s.receive &&
                         state_version == t.version + 1;
    const bool accepted = rest.ends_with("/update/accepted");
    if (!applied || (!accepted && j.str("/code") != "VersionMismatch")) {
      violations_.push_back(name + " step " + std::to_string(t.step) + " at version " +
                            std::to_string(t.version) + ": " + to_string(m.payload));
      t.step = kSteps.size();  // this thing stops
      return;
    }
    t.version = *state_version;
    t.versions.push_back(t.version);
    ++accepted_;
    if (++t.step < kSteps.size()) send(name, t);
  }

  std::string job_;
  MqttClient mqtt_;
  std::map<std::string, Thing> things_;
  std::size_t accepted_ = 0;
  std::size_t resent_ = 0;
  std::vector<std::string> violations_;
};

// chunkd killed -9 while 50 things report and started again: each thing keeps exactly one
// execution, every update a device saw accepted is in the final state, and resent updates are
// never applied twice (expectedVersion).
TEST(JobsRolloutRestart, AKill9WhileThingsReportLosesAndDuplicatesNothing) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  std::vector<std::string> names;
  std::string targets = "[";
  for (int i = 0; i < 50; ++i) {
    names.push_back("kd-" + std::to_string(100 + i));
    targets += (i ? ",\"" : "\"") + names.back() + "\"";
  }
  auto created = stack.request("POST", "/jobs/restart-1",
                               R"({"targets":)" + targets + R"(],"document":{"op":"apply"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  ReportingFleet fleet(stack.broker.uri(), "restart-1", names);
  ASSERT_TRUE(fleet.start());
  const std::size_t all = names.size() * ReportingFleet::kSteps.size();
  fleet.run(all * 2 / 5, 60s);
  ASSERT_EQ(fleet.accepted(), all * 2 / 5) << stack.daemon().log(8000);
  stack.daemon().kill9();  // with about one update per thing on its way
  fleet.run(all, 1s);      // answers sent before the kill lead to updates that reach no one
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  stack.reset_http();
  fleet.run(all, 90s);

  EXPECT_TRUE(fleet.violations().empty()) << fleet.violations().front();
  EXPECT_EQ(fleet.done(), names.size());
  EXPECT_GT(fleet.resent(), 0u) << "updates sent while chunkd was down must be sent again";
  const std::vector<std::uint64_t> versions{2, 3, 4, 5, 6};
  for (const auto& [name, t] : fleet.things()) EXPECT_EQ(t.versions, versions) << name;
  Json job(stack.request("GET", "/jobs/restart-1").body);
  EXPECT_EQ(job.str("/data/status"), "COMPLETED");
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfSucceededThings"), names.size());
  EXPECT_EQ(executions_of(job), names.size());
  Json page(stack.request("GET", "/jobs/restart-1/things?maxResults=250").body);
  ASSERT_EQ(page.array_size("/data/executions"), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string at = "/data/executions/" + std::to_string(i);
    EXPECT_EQ(page.str(at + "/thingName"), names[i]) << "one execution per thing, by name";
    EXPECT_EQ(page.str(at + "/status"), "SUCCEEDED");
    EXPECT_EQ(page.u64(at + "/versionNumber"), 6u) << "five updates, each applied once";
    EXPECT_EQ(page.u64(at + "/executionNumber"), 1u);
    EXPECT_EQ(page.str(at + "/statusDetails/receive"), "4/4");
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log(8000);
}

}  // namespace
}  // namespace chunkd::test
