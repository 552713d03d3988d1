// Jobs topic parsing and formatting (docs/jobs.md "MQTT", protocol/jobs_topic.hpp).
#include "protocol/jobs_topic.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/jobs.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {
namespace {

using Status = ParsedJobsTopic::Status;

const JobsTopicCodec& codec() {
  static const JobsTopicCodec instance;
  return instance;
}

std::string jobs(std::string_view thing, std::string_view tail) {
  std::string out = "$aws/things/";
  out.append(thing).append("/jobs/").append(tail);
  return out;
}

// MQTT 3.1.1 §4.7 filter matching, for the subscription checks ('+' one level, '#' the rest).
bool matches(std::string_view filter, std::string_view topic) {
  while (true) {
    const std::size_t f_end = filter.find('/');
    const std::size_t t_end = topic.find('/');
    const std::string_view f = filter.substr(0, f_end);
    if (f == "#") return true;
    if (f != "+" && f != topic.substr(0, t_end)) return false;
    if (f_end == std::string_view::npos || t_end == std::string_view::npos) {
      return f_end == std::string_view::npos && t_end == std::string_view::npos;
    }
    filter.remove_prefix(f_end + 1);
    topic.remove_prefix(t_end + 1);
  }
}

TEST(JobsTopic, ParsesEveryRequestForm) {
  struct Case {
    std::string tail;
    JobsApi api;
    std::string_view job_id;
  };
  for (const Case& c :
       {Case{"get", JobsApi::GetPending, ""}, Case{"start-next", JobsApi::StartNext, ""},
        Case{"fw-2_0/get", JobsApi::Describe, "fw-2_0"},
        Case{"$next/get", JobsApi::Describe, "$next"},
        Case{"fw-2_0/update", JobsApi::Update, "fw-2_0"},
        Case{"notify/get", JobsApi::Describe, "notify"},
        Case{"get/update", JobsApi::Update, "get"}}) {
    const std::string t = jobs("dev:1_a-B", c.tail);
    const ParsedJobsTopic parsed = codec().parse(t);
    ASSERT_EQ(parsed.status, Status::Ok) << t;
    EXPECT_EQ(parsed.api, c.api) << t;
    EXPECT_EQ(parsed.thing, "dev:1_a-B");
    EXPECT_EQ(parsed.job_id, c.job_id) << t;
    EXPECT_EQ(parsed.next(), c.job_id == "$next") << t;
  }
}

TEST(JobsTopic, LongestValidNamesParse) {
  const std::string thing(kMaxThingNameBytes, 't');
  const std::string job(kMaxJobIdChars, 'j');
  const std::string t = jobs(thing, job + "/update");
  const ParsedJobsTopic parsed = codec().parse(t);
  ASSERT_EQ(parsed.status, Status::Ok);
  EXPECT_EQ(parsed.thing, thing);
  EXPECT_EQ(parsed.job_id, job);
}

TEST(JobsTopic, AddressableButUnknownIsInvalidTopic) {
  for (const char* tail : {"", "list", "GET", "get/", "start-next/x", "fw/delete", "fw/get/extra",
                           "fw/update/", "$next/update", "$next", "a.b/get", "a b/update", "/get",
                           "fw//get", "fw", "$NEXT/get", "x/y/z/get"}) {
    const std::string t = jobs("dev-1", tail);
    const ParsedJobsTopic parsed = codec().parse(t);
    EXPECT_EQ(parsed.status, Status::InvalidTopic) << t;
    EXPECT_EQ(parsed.thing, "dev-1") << t;
  }
  const std::string too_long_job(kMaxJobIdChars + 1, 'j');
  EXPECT_EQ(codec().parse(jobs("dev-1", too_long_job + "/get")).status, Status::InvalidTopic);
}

TEST(JobsTopic, OwnRepliesAndNotificationsAreDropped) {
  for (const char* tail :
       {"get/accepted", "get/rejected", "start-next/accepted", "fw/get/accepted",
        "$next/get/accepted", "$next/get/rejected", "fw/update/accepted", "fw/update/rejected",
        "notify", "notify-next", "fw/notify-namespace-x", "accepted", "rejected", "x/y/rejected"}) {
    const std::string t = jobs("dev-1", tail);
    EXPECT_EQ(codec().parse(t).status, Status::Drop) << t;
  }
}

TEST(JobsTopic, UnaddressableIsDropped) {
  std::vector<std::string> topics = {
      "",
      "$aws/things",
      "$aws/things/",
      "$aws/things/dev-1",
      "$aws/things/dev-1/",
      "$aws/things/dev-1/jobs",
      "$aws/things/dev-1/job/get",
      "$aws/things/dev-1/streams/s/get/json",
      "$aws/things/dev.1/jobs/get",
      "$aws/things//jobs/get",
      "$aws/thingsX/dev-1/jobs/get",
      "$aws/things-x/dev-1/jobs/get",
      "other/things/dev-1/jobs/get",
      jobs(std::string(kMaxThingNameBytes + 1, 't'), "get"),
      jobs("dev-1", std::string(kMaxJobsTopicTailBytes, 'x')),
  };
  constexpr char kWithNul[] = "$aws/things/dev-1/jobs/fw\0x/get";
  topics.emplace_back(kWithNul, sizeof kWithNul - 1);
  for (const std::string& t : topics) {
    EXPECT_EQ(codec().parse(t).status, Status::Drop) << t;
  }
}

TEST(JobsTopic, OtherPrefix) {
  const JobsTopicCodec other("chunkd/things");
  const ParsedJobsTopic parsed = other.parse("chunkd/things/dev-1/jobs/$next/get");
  ASSERT_EQ(parsed.status, Status::Ok);
  EXPECT_TRUE(parsed.next());
  EXPECT_EQ(other.parse("$aws/things/dev-1/jobs/get").status, Status::Drop);
}

TEST(JobsTopic, FormatsRequestReplyAndNotifyTopics) {
  std::string out = "stale";
  codec().request_topic(out, "dev-1", JobsApi::GetPending);
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/get");
  codec().request_topic(out, "dev-1", JobsApi::StartNext);
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/start-next");
  codec().request_topic(out, "dev-1", JobsApi::Describe, kNextJobId);
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/$next/get");
  codec().request_topic(out, "dev-1", JobsApi::Update, "fw");
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/fw/update");
  codec().reply_topic(out, "dev-1", JobsApi::Update, "fw", JobsReplyKind::Accepted);
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/fw/update/accepted");
  codec().reply_topic(out, "dev-1", JobsApi::Describe, "$next", JobsReplyKind::Rejected);
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/$next/get/rejected");
  codec().reply_topic(out, "dev-1", JobsApi::GetPending, {}, JobsReplyKind::Accepted);
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/get/accepted");
  codec().notify_topic(out, "dev-1");
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/notify");
  codec().notify_next_topic(out, "dev-1");
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/notify-next");
  JobsTopicCodec::invalid_topic_reply(out, "$aws/things/dev-1/jobs/list");
  EXPECT_EQ(out, "$aws/things/dev-1/jobs/list/rejected");
}

TEST(JobsTopic, FormattedRequestsParseBack) {
  std::string out;
  for (JobsApi api :
       {JobsApi::GetPending, JobsApi::StartNext, JobsApi::Describe, JobsApi::Update}) {
    codec().request_topic(out, "dev-1", api, "fw");
    const ParsedJobsTopic parsed = codec().parse(out);
    ASSERT_EQ(parsed.status, Status::Ok) << out;
    EXPECT_EQ(parsed.api, api);
    for (JobsReplyKind kind : {JobsReplyKind::Accepted, JobsReplyKind::Rejected}) {
      codec().reply_topic(out, "dev-1", api, "fw", kind);
      EXPECT_EQ(codec().parse(out).status, Status::Drop) << out;
    }
  }
}

TEST(JobsTopic, SubscriptionsMatchEveryRequestAndNoPublication) {
  const auto filters = codec().subscriptions();
  EXPECT_EQ(filters[0], "$aws/things/+/jobs/get");
  EXPECT_EQ(filters[1], "$aws/things/+/jobs/start-next");
  EXPECT_EQ(filters[2], "$aws/things/+/jobs/+/get");
  EXPECT_EQ(filters[3], "$aws/things/+/jobs/+/update");
  auto matched = [&](const std::string& topic) {
    int n = 0;
    for (const std::string& f : filters) n += matches(f, topic) ? 1 : 0;
    return n;
  };
  std::string out;
  for (std::string_view job : {"fw", "get", "update", "start-next", "notify", "$next"}) {
    for (JobsApi api :
         {JobsApi::GetPending, JobsApi::StartNext, JobsApi::Describe, JobsApi::Update}) {
      codec().request_topic(out, "dev-1", api, job);
      EXPECT_EQ(matched(out), 1) << out;  // each request reaches chunkd exactly once
      for (JobsReplyKind kind : {JobsReplyKind::Accepted, JobsReplyKind::Rejected}) {
        codec().reply_topic(out, "dev-1", api, job, kind);
        EXPECT_EQ(matched(out), 0) << out;
      }
    }
  }
  codec().notify_topic(out, "dev-1");
  EXPECT_EQ(matched(out), 0);
  codec().notify_next_topic(out, "dev-1");
  EXPECT_EQ(matched(out), 0);
  EXPECT_TRUE(matches("a/+/c", "a/b/c"));  // the matcher itself
  EXPECT_FALSE(matches("a/+/c", "a/b/c/d"));
}

}  // namespace
}  // namespace chunkd::protocol
