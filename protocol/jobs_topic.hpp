// MQTT topics of the jobs API (docs/jobs.md "MQTT"), as the hosted service's Jobs API and the OTA
// agents that use it spell them:
//   <prefix>/<thing>/jobs/get                  GetPendingJobExecutions       (device → chunkd)
//   <prefix>/<thing>/jobs/start-next           StartNextPendingJobExecution  (device → chunkd)
//   <prefix>/<thing>/jobs/<jobId|$next>/get    DescribeJobExecution          (device → chunkd)
//   <prefix>/<thing>/jobs/<jobId>/update       UpdateJobExecution            (device → chunkd)
//   <request topic>/accepted | /rejected       the answer to each request   (chunkd → device)
//   <prefix>/<thing>/jobs/notify | notify-next pushed on changes            (chunkd → device)
// The default prefix "$aws/things" is byte-exact with what device libraries compare.
// Pure and thread-compatible; a JobsTopicCodec is immutable after construction.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace chunkd::protocol {

enum class JobsApi : std::uint8_t { GetPending, StartNext, Describe, Update };
enum class JobsReplyKind : std::uint8_t { Accepted, Rejected };

// The longest topic answered with InvalidTopic, after the prefix: a longer one is dropped, so a
// reply topic (request + "/rejected") always stays far below MQTT's 65535-byte limit.
inline constexpr std::size_t kMaxJobsTopicTailBytes = 512;
// The job id that names a thing's next pending execution in DescribeJobExecution.
inline constexpr std::string_view kNextJobId = "$next";

struct ParsedJobsTopic {
  enum class Status : std::uint8_t {
    Ok,            // a request: `api`, `thing` and, for Describe and Update, `job_id`
    InvalidTopic,  // under <prefix>/<thing>/jobs/ but no API: answer InvalidTopic on the
                   // request topic + "/rejected"
    Drop,          // cannot or must not be answered (bad thing name, other prefix, one of
                   // chunkd's own reply or notify topics): drop and count
  };
  Status status = Status::Drop;
  JobsApi api = JobsApi::GetPending;
  std::string_view thing;   // views into the parsed topic; valid unless status == Drop
  std::string_view job_id;  // Describe: a valid job id or "$next"; Update: a valid job id
  bool next() const { return job_id == kNextJobId; }
};

class JobsTopicCodec {
 public:
  // REQUIRES: TopicCodec::valid_prefix(prefix) (the config loader checks it).
  explicit JobsTopicCodec(std::string prefix = "$aws/things");

  const std::string& prefix() const { return prefix_; }

  // Ok only for exactly the four request forms above, with a valid thing name
  // (valid_thing_name) and job id (valid_job_id; "$next" for Describe only). With a valid thing
  // name, anything else under "jobs/" is InvalidTopic (unknown API, bad or over-long job id,
  // "$next/update", a missing, empty or extra level), except chunkd's own topics: a last level
  // "accepted", "rejected", "notify", "notify-next" or "notify-<anything>" is Drop, so a reply
  // never answers a reply. A topic over kMaxJobsTopicTailBytes after the prefix, or with a NUL,
  // is Drop too.
  ParsedJobsTopic parse(std::string_view topic) const;

  // The four filters chunkd subscribes to: "<prefix>/+/jobs/get", "<prefix>/+/jobs/start-next",
  // "<prefix>/+/jobs/+/get", "<prefix>/+/jobs/+/update". None matches a topic chunkd publishes.
  std::array<std::string, 4> subscriptions() const;

  // The topics below are written into `out` (cleared first; its capacity is reused).
  // REQUIRES: a valid thing name; `job_id` valid for Describe ("$next" allowed) and Update.
  void request_topic(std::string& out, std::string_view thing, JobsApi api,
                     std::string_view job_id = {}) const;
  // The request topic + "/accepted" or "/rejected".
  void reply_topic(std::string& out, std::string_view thing, JobsApi api, std::string_view job_id,
                   JobsReplyKind kind) const;
  // For an InvalidTopic: the topic as received + "/rejected" (REQUIRES: parse() said
  // InvalidTopic, so it is bounded and has no NUL).
  static void invalid_topic_reply(std::string& out, std::string_view request_topic);
  void notify_topic(std::string& out, std::string_view thing) const;
  void notify_next_topic(std::string& out, std::string_view thing) const;

 private:
  void append_jobs_base(std::string& out, std::string_view thing) const;

  std::string prefix_;
};

}  // namespace chunkd::protocol
