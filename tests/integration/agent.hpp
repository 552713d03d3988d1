// A thing's jobs side as the OTA agent uses it (notify-next, $next/get, updates), and the body of
// an OTA job: for the jobs tests (jobs_test, cluster_test).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "tests/integration/api.hpp"

namespace chunkd::test {

inline const std::string kPrefix = "$aws/things/";

inline std::string ota_job_body(const std::string& stream, const std::string& targets) {
  return R"({"targets":)" + targets + R"(,"description":"firmware 2.0","ota":{"streamId":")" +
         stream +
         R"(","fileId":0,"filePath":"/fw/app.bin","signature":"MEUCIQDVgY6XlD2xVMuBAiEA0w==",)"
         R"("certFile":"ecdsa-signer.crt"}})";
}

// A thing's jobs side on its own connection, as the OTA agent uses it: asks $next/get, reports,
// listens to notify-next and to its updates' answers.
class Agent {
 public:
  Agent(const std::string& uri, std::string thing)
      : thing_(std::move(thing)), mqtt_(uri, "agent-" + thing_) {}

  bool start() {
    return mqtt_.connect() && mqtt_.subscribe({kPrefix + thing_ + "/jobs/notify-next",
                                               kPrefix + thing_ + "/jobs/+/update/rejected",
                                               kPrefix + thing_ + "/jobs/+/update/accepted"});
  }
  // Publishes $next/get and returns the notify-next that answers it.
  std::optional<Json> next_get() {
    if (!publish("$next/get", R"({"clientToken":"1:)" + thing_ + R"("})")) return std::nullopt;
    return wait("/jobs/notify-next");
  }
  // The id of the job next_get() says is pending, or "".
  std::string next_job() {
    auto next = next_get();
    return next ? next->str("/execution/jobId").value_or("") : "";
  }
  bool update(const std::string& job, const std::string& body) {
    return publish(job + "/update", body);
  }
  // An update, once chunkd accepted it.
  bool update_accepted(const std::string& job, const std::string& body) {
    return update(job, body) && wait("/update/accepted").has_value();
  }
  bool publish(const std::string& api, const std::string& body) {
    return mqtt_.publish(kPrefix + thing_ + "/jobs/" + api, as_bytes(body));
  }
  // The next message on a topic ending with `suffix` within `limit` (others are skipped).
  std::optional<Json> wait(const std::string& suffix,
                           std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      auto m = mqtt_.next(200);
      if (m && m->topic.ends_with(suffix)) return Json(to_string(m->payload));
    }
    return std::nullopt;
  }

 private:
  std::string thing_;
  MqttClient mqtt_;
};

}  // namespace chunkd::test
