// Jobs topic parsing and formatting (protocol/jobs_topic.hpp). Decisions, tested in
// tests/protocol/jobs_topic_test.cpp:
// - Only the exact request forms are requests; the API level is compared byte for byte.
// - Under a valid thing's "jobs/", a topic whose last level is one of chunkd's own (accepted,
//   rejected, notify, notify-next, notify-*) is dropped, never answered: an answer to a reply
//   could feed a loop through a broad subscription. Anything else there is InvalidTopic, as the
//   hosted service answers a topic in its jobs namespace that maps to no API.
// - The thing must be valid to answer at all: a reply to a topic naming no valid thing could
//   reach anyone.
#include "protocol/jobs_topic.hpp"

#include "base/assert.hpp"
#include "protocol/jobs.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {
namespace {

constexpr std::string_view kJobsLevel = "jobs/";
constexpr std::string_view kGet = "get";
constexpr std::string_view kStartNext = "start-next";
constexpr std::string_view kUpdate = "update";

bool is_own_level(std::string_view level) {
  return level == "accepted" || level == "rejected" || level == "notify" ||
         level.starts_with("notify-");
}

std::string_view last_level(std::string_view levels) {
  const std::size_t slash = levels.rfind('/');
  return slash == std::string_view::npos ? levels : levels.substr(slash + 1);
}

std::string_view reply_suffix(JobsReplyKind kind) {
  return kind == JobsReplyKind::Accepted ? "/accepted" : "/rejected";
}

// `levels` is what follows "<prefix>/<thing>/jobs/"; `result` already holds the thing and says
// InvalidTopic.
void classify(std::string_view levels, ParsedJobsTopic& result) {
  if (levels == kGet) {
    result.api = JobsApi::GetPending;
    result.status = ParsedJobsTopic::Status::Ok;
    return;
  }
  if (levels == kStartNext) {
    result.api = JobsApi::StartNext;
    result.status = ParsedJobsTopic::Status::Ok;
    return;
  }
  const std::size_t slash = levels.find('/');
  if (slash == std::string_view::npos) return;
  const std::string_view job_id = levels.substr(0, slash);
  const std::string_view api = levels.substr(slash + 1);
  if (api == kGet && (job_id == kNextJobId || valid_job_id(job_id))) {
    result.api = JobsApi::Describe;
  } else if (api == kUpdate && valid_job_id(job_id)) {
    result.api = JobsApi::Update;
  } else {
    return;  // unknown API, bad job id, "$next/update" or an extra level
  }
  result.job_id = job_id;
  result.status = ParsedJobsTopic::Status::Ok;
}

}  // namespace

JobsTopicCodec::JobsTopicCodec(std::string prefix) : prefix_(std::move(prefix)) {
  CHUNKD_ASSERT(TopicCodec::valid_prefix(prefix_));  // REQUIRES: the config loader checked it
}

ParsedJobsTopic JobsTopicCodec::parse(std::string_view topic) const {
  ParsedJobsTopic result;  // Drop
  if (topic.size() <= prefix_.size() || !topic.starts_with(prefix_) ||
      topic[prefix_.size()] != '/') {
    return result;
  }
  std::string_view rest = topic.substr(prefix_.size() + 1);
  if (rest.size() > kMaxJobsTopicTailBytes || rest.find('\0') != std::string_view::npos) {
    return result;
  }
  const std::size_t thing_end = rest.find('/');
  if (thing_end == std::string_view::npos) return result;
  const std::string_view thing = rest.substr(0, thing_end);
  if (!valid_thing_name(thing)) return result;
  rest.remove_prefix(thing_end + 1);
  if (!rest.starts_with(kJobsLevel)) return result;  // not the jobs namespace
  rest.remove_prefix(kJobsLevel.size());
  if (is_own_level(last_level(rest))) return result;

  result.status = ParsedJobsTopic::Status::InvalidTopic;
  result.thing = thing;
  classify(rest, result);
  return result;
}

std::array<std::string, 4> JobsTopicCodec::subscriptions() const {
  std::array<std::string, 4> filters;
  for (std::string& f : filters) append_jobs_base(f, "+");
  filters[0].append(kGet);
  filters[1].append(kStartNext);
  filters[2].append("+/").append(kGet);
  filters[3].append("+/").append(kUpdate);
  return filters;
}

void JobsTopicCodec::append_jobs_base(std::string& out, std::string_view thing) const {
  out.clear();
  out.append(prefix_).append(1, '/').append(thing).append(1, '/').append(kJobsLevel);
}

void JobsTopicCodec::request_topic(std::string& out, std::string_view thing, JobsApi api,
                                   std::string_view job_id) const {
  append_jobs_base(out, thing);
  switch (api) {
    case JobsApi::GetPending:
      out.append(kGet);
      break;
    case JobsApi::StartNext:
      out.append(kStartNext);
      break;
    case JobsApi::Describe:
      out.append(job_id).append(1, '/').append(kGet);
      break;
    case JobsApi::Update:
      out.append(job_id).append(1, '/').append(kUpdate);
      break;
  }
}

void JobsTopicCodec::reply_topic(std::string& out, std::string_view thing, JobsApi api,
                                 std::string_view job_id, JobsReplyKind kind) const {
  request_topic(out, thing, api, job_id);
  out.append(reply_suffix(kind));
}

void JobsTopicCodec::invalid_topic_reply(std::string& out, std::string_view request_topic) {
  out.assign(request_topic).append(reply_suffix(JobsReplyKind::Rejected));
}

void JobsTopicCodec::notify_topic(std::string& out, std::string_view thing) const {
  append_jobs_base(out, thing);
  out.append("notify");
}

void JobsTopicCodec::notify_next_topic(std::string& out, std::string_view thing) const {
  append_jobs_base(out, thing);
  out.append("notify-next");
}

}  // namespace chunkd::protocol
