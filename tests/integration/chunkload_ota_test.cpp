// chunkload --ota against a real chunkd stream and a stand-in for the Jobs MQTT API: a small
// "jobs responder" in the test answers each thing's $next/get on notify-next (as the job service
// must, since the OTA agent never subscribes to $next/get/accepted), keeps every execution's
// status and statusDetails from its updates, and so carries the self-test round trip. The image
// is signed with the openssl tool (EC P-256 key, self-signed certificate).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "protocol/base64.hpp"
#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"

namespace chunkd::test {
namespace {

bool have_chunkload() { return ::access(chunkload_binary_path().c_str(), X_OK) == 0; }

constexpr const char* kJobId = "fw-rollout-1";
constexpr const char* kPrefix = "$aws/things/";

// Every execution the responder knows: one per thing that asked.
struct Execution {
  std::string status = "QUEUED";
  std::map<std::string, std::string> details;
  std::vector<std::string> updates;  // "<status> <key>=<value>,..." in arrival order
  int next_gets = 0;
};

class JobsResponder {
 public:
  JobsResponder(const std::string& uri, std::string document)
      : mqtt_(uri, "jobs-responder"), document_(std::move(document)) {}
  ~JobsResponder() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  ::testing::AssertionResult start() {
    if (!mqtt_.connect() ||
        !mqtt_.subscribe({"$aws/things/+/jobs/$next/get", "$aws/things/+/jobs/+/update"})) {
      return ::testing::AssertionFailure() << "jobs responder: " << mqtt_.error();
    }
    thread_ = std::thread([this] {
      while (!stop_) {
        if (auto m = mqtt_.next(50)) handle(*m);
      }
    });
    return ::testing::AssertionSuccess();
  }

  // Every execution, once `things` of them have a final status (or after 20 s: the test then
  // sees what arrived). chunkload may exit before this thread has read its last update.
  std::map<std::string, Execution> executions(std::size_t things) {
    for (int i = 0; i < 400; ++i) {
      {
        std::lock_guard lock(mu_);
        std::size_t final_ = 0;
        for (const auto& [thing, e] : executions_) {
          final_ += e.status == "SUCCEEDED" || e.status == "FAILED" || e.status == "REJECTED";
        }
        if (final_ >= things) return executions_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::lock_guard lock(mu_);
    return executions_;
  }

 private:
  void handle(const MqttMessage& m) {
    // $aws/things/<thing>/jobs/$next/get | $aws/things/<thing>/jobs/<jobId>/update
    std::string_view t = m.topic;
    t.remove_prefix(std::string_view(kPrefix).size());
    const std::string thing(t.substr(0, t.find('/')));
    std::lock_guard lock(mu_);
    Execution& e = executions_[thing];
    if (t.ends_with("/jobs/$next/get")) {
      ++e.next_gets;
      // paho refuses a publish while its queue is full (a burst of devices): wait for room.
      const std::string topic = kPrefix + thing + "/jobs/notify-next";
      const std::string payload = notify(thing, e);
      for (int tries = 0; !mqtt_.publish(topic, as_bytes(payload)) && tries < 1000; ++tries) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return;
    }
    Json j(to_string(m.payload));
    std::string line = j.str("/status").value_or("?");
    e.status = line;
    e.details.clear();
    if (auto d = j.at("/statusDetails")) {
      simdjson::dom::object o;
      if (d->get(o) == simdjson::SUCCESS) {
        for (auto [k, v] : o) {
          std::string_view s;
          if (v.get(s) != simdjson::SUCCESS) continue;
          e.details[std::string(k)] = std::string(s);
          line += " " + std::string(k) + "=" + std::string(s);
        }
      }
    }
    e.updates.push_back(line);
  }

  std::string notify(const std::string& thing, const Execution& e) const {
    if (e.status != "QUEUED" && e.status != "IN_PROGRESS") return "{\"timestamp\":1}";
    std::string details = "{";
    for (const auto& [k, v] : e.details) {
      if (details.size() > 1) details += ",";
      details += json_quote(k) + ":" + json_quote(v);
    }
    details += "}";
    return "{\"timestamp\":1,\"execution\":{\"jobId\":" + json_quote(kJobId) +
           ",\"thingName\":" + json_quote(thing) + ",\"status\":" + json_quote(e.status) +
           ",\"statusDetails\":" + details +
           ",\"versionNumber\":1,\"executionNumber\":1,\"jobDocument\":" + document_ + "}}";
  }

  MqttClient mqtt_;
  std::string document_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, Execution> executions_;
};

class ChunkloadOta : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_chunkload()) GTEST_SKIP() << "no " << chunkload_binary_path();
    std::string error;
    dir = make_temp_dir("chunkload-ota", error);
    ASSERT_FALSE(dir.empty()) << error;
    image = test_bytes(64u << 10, 13);
    ASSERT_TRUE(write_file(dir + "/image.bin", image));
    ASSERT_TRUE(write_file(dir + "/other.bin", image + "x"));
    openssl({"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", dir + "/key.pem"});
    openssl({"req", "-new", "-x509", "-key", dir + "/key.pem", "-out", dir + "/cert.pem", "-days",
             "2", "-subj", "/CN=chunkload-ota-test"});
    good_signature = sign(dir + "/image.bin");
    wrong_signature = sign(dir + "/other.bin");
    // The stand-in answers the jobs topics; chunkd's own jobs service would answer them too.
    stack.daemon().set("jobs", "enabled", real_jobs() ? "true" : "false");
    ASSERT_TRUE(stack.start());
    ASSERT_TRUE(stack.create_file_stream("ota-fw", image));
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }

  void openssl(const std::vector<std::string>& args) {
    std::string command = "exec openssl";  // through the shell: openssl from PATH
    for (const std::string& a : args) command += " '" + a + "'";
    auto r = run_process({"/bin/sh", "-c", command}, 30000);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  std::string sign(const std::string& file) {
    openssl({"dgst", "-sha256", "-sign", dir + "/key.pem", "-out", file + ".sig", file});
    const std::string der = read_file(file + ".sig");
    std::string b64(protocol::base64::encoded_length(der.size()), '\0');
    protocol::base64::encode(as_bytes(der), b64);
    return b64;
  }
  static std::string document(const std::string& signature, const std::string& extra = "",
                              const std::string& protocols = "[\"MQTT\"]") {
    return "{\"afr_ota\":{\"protocols\":" + protocols +
           ",\"streamname\":\"ota-fw\",\"files\":[{\"filepath\":\"/fw/image.bin\",\"filesize\":" +
           std::to_string(64u << 10) +
           ",\"fileid\":0,\"certfile\":\"/certs/ota.crt\",\"sig-sha256-ecdsa\":" +
           json_quote(signature) + extra + "}]}}";
  }
  ProcessResult chunkload(std::uint32_t devices, std::vector<std::string> more = {}) {
    std::vector<std::string> args{chunkload_binary_path(),
                                  "--ota",
                                  "--ota-cert",
                                  dir + "/cert.pem",
                                  "--uri",
                                  stack.broker.uri(),
                                  "--devices",
                                  std::to_string(devices),
                                  "--thing-prefix",
                                  "ota-dev-",
                                  "--block-size",
                                  "1024",
                                  "--max-seconds",
                                  "60",
                                  "--json"};
    args.insert(args.end(), more.begin(), more.end());
    return run_process(args, 120000, {{"CHUNKD_TOKEN", ""}, {"CHUNKD_URL", ""}});
  }

  virtual bool real_jobs() const { return false; }

  Stack stack;
  std::string dir, image, good_signature, wrong_signature;
};

// The same devices against chunkd's own jobs service.
class ChunkloadOtaWithChunkdJobs : public ChunkloadOta {
 protected:
  bool real_jobs() const override { return true; }
};

TEST_F(ChunkloadOtaWithChunkdJobs, ARolloutSucceedsOnEveryDeviceAtTheRate) {
  std::string body = R"({"targets":["ota-dev-*"],"ota":{"streamId":"ota-fw","fileId":0,)"
                     R"("filePath":"/fw/image.bin","certFile":"/certs/ota.crt","signature":)" +
                     json_quote(good_signature) +
                     R"(},"jobExecutionsRolloutConfig":{"maximumPerMinute":4}})";
  auto created = stack.request("POST", "/jobs/fw-rollout", body);
  ASSERT_EQ(created.status, 201) << created.body;
  auto r = chunkload(4);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << stack.daemon().log(8000);
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_EQ(j.u64("/ota/succeeded"), 4u) << r.out;
  Json job(stack.request("GET", "/jobs/fw-rollout").body);
  EXPECT_EQ(job.u64("/data/jobProcessDetails/numberOfSucceededThings"), 4u);
  EXPECT_EQ(job.str("/data/status"), "IN_PROGRESS") << "a pattern job waits for more things";
  Json things(stack.request("GET", "/jobs/fw-rollout/things?status=SUCCEEDED").body);
  EXPECT_EQ(things.array_size("/data/executions"), 4u);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

bool has_update(const Execution& e, const std::string& line) {
  return std::find(e.updates.begin(), e.updates.end(), line) != e.updates.end();
}

TEST_F(ChunkloadOta, SignedImageSucceedsAfterTheSelfTestRoundTrip) {
  JobsResponder jobs(stack.broker.uri(), document(good_signature));
  ASSERT_TRUE(jobs.start());
  auto r = chunkload(3);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << stack.daemon().log(8000);
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_EQ(j.u64("/ota/succeeded"), 3u) << r.out;
  EXPECT_EQ(j.u64("/ota/failed"), 0u) << r.out;
  EXPECT_EQ(j.u64("/devices_done"), 3u) << r.out;
  EXPECT_EQ(j.u64("/bytes"), 3u * image.size()) << r.out;
  EXPECT_EQ(j.u64("/ota/time_to_outcome_s/devices"), 3u) << r.out;
  auto executions = jobs.executions(3);
  ASSERT_EQ(executions.size(), 3u);
  for (const auto& [thing, e] : executions) {
    EXPECT_EQ(e.status, "SUCCEEDED") << thing;
    EXPECT_EQ(e.next_gets, 2) << thing << ": once at start, once after the reboot";
    EXPECT_TRUE(has_update(e, "IN_PROGRESS receive=32/64")) << thing;
    EXPECT_TRUE(has_update(e, "IN_PROGRESS receive=64/64")) << thing;
    ASSERT_GE(e.updates.size(), 2u);
    EXPECT_TRUE(e.updates[e.updates.size() - 2].starts_with("IN_PROGRESS self_test=ready"))
        << thing << ": " << e.updates[e.updates.size() - 2];
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(ChunkloadOta, ACorruptedSignatureReportsFailed) {
  JobsResponder jobs(stack.broker.uri(), document(wrong_signature));
  ASSERT_TRUE(jobs.start());
  auto r = chunkload(2);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_EQ(j.u64("/ota/failed"), 2u) << r.out;
  EXPECT_EQ(j.u64("/ota/succeeded"), 0u) << r.out;
  EXPECT_EQ(j.u64("/ota/simulated_failures"), 0u) << r.out;
  auto executions = jobs.executions(2);
  ASSERT_EQ(executions.size(), 2u);
  for (const auto& [thing, e] : executions) {
    EXPECT_EQ(e.status, "FAILED") << thing;
    EXPECT_EQ(e.details.count("reason"), 1u) << thing;
    EXPECT_EQ(e.next_gets, 1) << thing << ": no reboot after a bad image";
  }
}

TEST_F(ChunkloadOta, FailPercentFailsThatShareOnPurpose) {
  JobsResponder jobs(stack.broker.uri(), document(good_signature));
  ASSERT_TRUE(jobs.start());
  auto r = chunkload(4, {"--fail-percent", "50"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_EQ(j.u64("/ota/succeeded"), 2u) << r.out;
  EXPECT_EQ(j.u64("/ota/failed"), 2u) << r.out;
  EXPECT_EQ(j.u64("/ota/simulated_failures"), 2u) << r.out;
  int failed = 0;
  for (const auto& [thing, e] : jobs.executions(4)) {
    if (e.status == "FAILED") {
      ++failed;
      EXPECT_EQ(e.details.at("reason"), "simulated failure") << thing;
    } else {
      EXPECT_EQ(e.status, "SUCCEEDED") << thing;
    }
  }
  EXPECT_EQ(failed, 2);
}

TEST_F(ChunkloadOta, ANonFirmwareFileSucceedsWithoutAReboot) {
  JobsResponder jobs(stack.broker.uri(), document(good_signature, ",\"fileType\":2"));
  ASSERT_TRUE(jobs.start());
  auto r = chunkload(1);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto executions = jobs.executions(1);
  ASSERT_EQ(executions.size(), 1u);
  EXPECT_EQ(executions.begin()->second.status, "SUCCEEDED");
  EXPECT_EQ(executions.begin()->second.next_gets, 1);
}

TEST_F(ChunkloadOta, AJobWithoutMqttIsRejected) {
  JobsResponder jobs(stack.broker.uri(), document(good_signature, "", "[\"HTTP\"]"));
  ASSERT_TRUE(jobs.start());
  auto r = chunkload(1);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  Json j(r.out);
  EXPECT_EQ(j.u64("/ota/rejected"), 1u) << r.out;
  auto executions = jobs.executions(1);
  ASSERT_EQ(executions.size(), 1u);
  EXPECT_EQ(executions.begin()->second.status, "REJECTED");
  EXPECT_EQ(j.u64("/bytes"), 0u) << r.out;
}

TEST_F(ChunkloadOta, UsageErrors) {
  auto no_cert = run_process({chunkload_binary_path(), "--ota"});
  EXPECT_EQ(no_cert.exit_code, 2) << no_cert.err;
  auto with_stream = run_process(
      {chunkload_binary_path(), "--ota", "--ota-cert", dir + "/cert.pem", "--stream", "x"});
  EXPECT_EQ(with_stream.exit_code, 2) << with_stream.err;
  auto not_a_cert = run_process({chunkload_binary_path(), "--ota", "--ota-cert", dir + "/key.pem",
                                 "--uri", stack.broker.uri()});
  EXPECT_EQ(not_a_cert.exit_code, 2) << not_a_cert.err;
  EXPECT_NE(not_a_cert.err.find("certificate"), std::string::npos) << not_a_cert.err;
}

}  // namespace
}  // namespace chunkd::test
