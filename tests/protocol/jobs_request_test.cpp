// Jobs request decoding (docs/jobs.md "MQTT", protocol/jobs_request.hpp): every field, limit and
// error of the four requests.
#include "protocol/jobs_request.hpp"

#include <gtest/gtest.h>

#include <span>
#include <string>

namespace chunkd::protocol {
namespace {

JobsPayload bytes(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

template <class T>
JobsRequestError error_of(const Expected<T, JobsRequestError>& result) {
  EXPECT_FALSE(result.has_value());
  return result ? JobsRequestError{JobsErrorCode::InternalError, "decoded", std::nullopt}
                : result.error();
}

std::string repeat(char c, std::size_t n) { return std::string(n, c); }

TEST(JobsRequest, ErrorCodeNames) {
  EXPECT_EQ(to_string(JobsErrorCode::InvalidTopic), "InvalidTopic");
  EXPECT_EQ(to_string(JobsErrorCode::InvalidJson), "InvalidJson");
  EXPECT_EQ(to_string(JobsErrorCode::InvalidRequest), "InvalidRequest");
  EXPECT_EQ(to_string(JobsErrorCode::InvalidStateTransition), "InvalidStateTransition");
  EXPECT_EQ(to_string(JobsErrorCode::ResourceNotFound), "ResourceNotFound");
  EXPECT_EQ(to_string(JobsErrorCode::VersionMismatch), "VersionMismatch");
  EXPECT_EQ(to_string(JobsErrorCode::TerminalStateReached), "TerminalStateReached");
  EXPECT_EQ(to_string(JobsErrorCode::RequestThrottled), "RequestThrottled");
  EXPECT_EQ(to_string(JobsErrorCode::InternalError), "InternalError");
}

TEST(JobsRequest, OtaAgentGetNext) {
  const auto r = decode_jobs_describe(bytes(R"({"clientToken":"12:dev-1"})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->client_token, "12:dev-1");
  EXPECT_FALSE(r->execution_number);
  EXPECT_TRUE(r->include_job_document);  // the default
}

TEST(JobsRequest, EmptyPayloadIsAnEmptyObject) {
  EXPECT_TRUE(decode_jobs_get_pending(bytes("")).has_value());
  EXPECT_TRUE(decode_jobs_start_next(bytes("")).has_value());
  const auto d = decode_jobs_describe(bytes(""));
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->include_job_document);
  const JobsRequestError e = error_of(decode_jobs_update(bytes("")));
  EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest);
  EXPECT_EQ(e.message, "status is required");
}

TEST(JobsRequest, DescribeFields) {
  const auto r = decode_jobs_describe(bytes(
      R"({"jobId":"x","thingName":"y","executionNumber":3,"includeJobDocument":false,"o":[1]})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->execution_number, 3);
  EXPECT_FALSE(r->include_job_document);
  EXPECT_FALSE(r->client_token);
}

TEST(JobsRequest, UpdateAsTheOtaAgentSendsIt) {
  const auto r = decode_jobs_update(
      bytes(R"({"status":"IN_PROGRESS","statusDetails":{"self_test":"ready","updatedBy":"0x1"}})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, ExecutionStatus::InProgress);
  ASSERT_TRUE(r->status_details);
  const StatusDetails want = {{"self_test", "ready"}, {"updatedBy", "0x1"}};
  EXPECT_EQ(*r->status_details, want);
  EXPECT_FALSE(r->expected_version);
  EXPECT_FALSE(r->include_job_execution_state);
  EXPECT_FALSE(r->include_job_document);
  EXPECT_FALSE(r->step_timeout_minutes);
}

TEST(JobsRequest, UpdateEveryField) {
  const auto r = decode_jobs_update(
      bytes(R"({"clientToken":"t","status":"SUCCEEDED","statusDetails":{},"expectedVersion":"7",)"
            R"("executionNumber":2,"includeJobExecutionState":true,"includeJobDocument":true,)"
            R"("stepTimeoutInMinutes":-1})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->client_token, "t");
  EXPECT_EQ(r->status, ExecutionStatus::Succeeded);
  ASSERT_TRUE(r->status_details);
  EXPECT_TRUE(r->status_details->empty());
  EXPECT_EQ(r->expected_version, 7);  // a quoted number, as the embedded jobs library sends it
  EXPECT_EQ(r->execution_number, 2);
  EXPECT_TRUE(r->include_job_execution_state);
  EXPECT_TRUE(r->include_job_document);
  EXPECT_EQ(r->step_timeout_minutes, kCancelStepTimeout);
}

TEST(JobsRequest, EveryStatusNameDecodes) {
  for (const char* name : {"QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT",
                           "CANCELED", "REMOVED"}) {
    const std::string body = std::string(R"({"status":")") + name + "\"}";
    const auto r = decode_jobs_update(bytes(body));
    ASSERT_TRUE(r.has_value()) << name;
    EXPECT_EQ(to_string(r->status), name);
  }
}

TEST(JobsRequest, StartNextFields) {
  const auto r = decode_jobs_start_next(
      bytes(R"({"clientToken":"c","statusDetails":{"a":"b"},"stepTimeoutInMinutes":10080,)"
            R"("status":"nonsense","expectedVersion":true})"));
  ASSERT_TRUE(r.has_value());  // status and expectedVersion are not start-next keys: ignored
  EXPECT_EQ(r->client_token, "c");
  EXPECT_EQ(r->step_timeout_minutes, kMaxStepTimeoutMinutes);
  ASSERT_TRUE(r->status_details);
  EXPECT_EQ(r->status_details->size(), 1u);
}

TEST(JobsRequest, GetPendingReadsOnlyTheToken) {
  const auto r = decode_jobs_get_pending(bytes(R"({"clientToken":"c","status":7})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->client_token, "c");
}

TEST(JobsRequest, NullIsAbsent) {
  const auto r = decode_jobs_update(
      bytes(R"({"clientToken":null,"status":"FAILED","statusDetails":null,"expectedVersion":null,)"
            R"("includeJobDocument":null,"stepTimeoutInMinutes":null})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->client_token);
  EXPECT_FALSE(r->status_details);
  EXPECT_FALSE(r->expected_version);
  EXPECT_FALSE(r->step_timeout_minutes);
}

TEST(JobsRequest, DuplicateKeysLastWins) {
  const auto r = decode_jobs_update(
      bytes(R"({"status":"FAILED","status":"SUCCEEDED","statusDetails":{"k":"1","k":"2"}})"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, ExecutionStatus::Succeeded);
  ASSERT_EQ(r->status_details->size(), 1u);
  EXPECT_EQ((*r->status_details)[0].second, "2");
  // A bad occurrence makes the request invalid even when a good one follows.
  EXPECT_FALSE(decode_jobs_update(bytes(R"({"status":"X","status":"FAILED"})")).has_value());
}

TEST(JobsRequest, ClientTokenLimits) {
  const std::string ok = R"({"clientToken":")" + repeat('a', 64) + "\"}";
  EXPECT_TRUE(decode_jobs_get_pending(bytes(ok)).has_value());
  const std::string escaped = R"({"clientToken":"\u00e9\n"})";  // unescaped: 3 bytes
  EXPECT_EQ(decode_jobs_get_pending(bytes(escaped))->client_token, "\xc3\xa9\n");
  for (const std::string& body :
       {R"({"clientToken":")" + repeat('a', 65) + "\"}", std::string(R"({"clientToken":5})"),
        std::string(R"({"clientToken":["a"]})")}) {
    const JobsRequestError e = error_of(decode_jobs_get_pending(bytes(body)));
    EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest) << body;
    EXPECT_NE(e.message.find("clientToken"), std::string::npos);
    EXPECT_FALSE(e.client_token);
  }
}

TEST(JobsRequest, InvalidRequestEchoesAValidToken) {
  const JobsRequestError e =
      error_of(decode_jobs_update(bytes(R"({"clientToken":"tok","status":"DONE"})")));
  EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest);
  EXPECT_EQ(e.client_token, "tok");
  EXPECT_NE(e.message.find("status must be one of"), std::string::npos);
}

TEST(JobsRequest, SyntaxErrorsAreInvalidJson) {
  for (std::string_view body :
       {"{", "[]", "\"x\"", "7", "null", "{\"status\":}", "{} {}", "{\"a\":1,}", " ",
        "{\"clientToken\":\"\xff\"}", "{\"n\":123456789012345678901234567890}"}) {
    const JobsRequestError e = error_of(decode_jobs_get_pending(bytes(body)));
    EXPECT_EQ(e.code, JobsErrorCode::InvalidJson) << body;
    EXPECT_FALSE(e.client_token);
  }
  std::string deep = R"({"clientToken":"t","x":)";
  deep += repeat('[', 40) + repeat(']', 40) + "}";
  const JobsRequestError e = error_of(decode_jobs_get_pending(bytes(deep)));
  EXPECT_EQ(e.code, JobsErrorCode::InvalidJson);
  EXPECT_FALSE(e.client_token);  // nothing of a syntax error is trusted
}

TEST(JobsRequest, OversizePayloadIsRejectedUnparsed) {
  std::string body = R"({"clientToken":"t","pad":")";
  body += repeat('x', kMaxJobsRequestBytes);
  body += "\"}";
  const JobsRequestError e = error_of(decode_jobs_describe(bytes(body)));
  EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest);
  EXPECT_FALSE(e.client_token);
  // Exactly at the limit, unknown fields are read past and ignored.
  std::string at_limit = R"({"pad":")";
  at_limit += repeat('x', kMaxJobsRequestBytes - at_limit.size() - 2) + "\"}";
  ASSERT_EQ(at_limit.size(), kMaxJobsRequestBytes);
  EXPECT_TRUE(decode_jobs_describe(bytes(at_limit)).has_value());
}

struct BadField {
  std::string body;
  std::string_view names;
};

TEST(JobsRequest, EveryFieldTypeIsChecked) {
  for (const BadField& c : std::initializer_list<BadField>{
           {R"({"status":5})", "status"},
           {R"({"status":"in_progress"})", "status"},
           {R"({"status":"FAILED","expectedVersion":-1})", "expectedVersion"},
           {R"({"status":"FAILED","expectedVersion":1.0})", "expectedVersion"},
           {R"({"status":"FAILED","expectedVersion":"1a"})", "expectedVersion"},
           {R"({"status":"FAILED","expectedVersion":" 1"})", "expectedVersion"},
           {R"({"status":"FAILED","expectedVersion":9223372036854775808})", "expectedVersion"},
           {R"({"status":"FAILED","expectedVersion":"9223372036854775808"})", "expectedVersion"},
           {R"({"status":"FAILED","expectedVersion":true})", "expectedVersion"},
           {R"({"status":"FAILED","executionNumber":0})", "executionNumber"},
           {R"({"status":"FAILED","executionNumber":{}})", "executionNumber"},
           {R"({"status":"FAILED","includeJobDocument":"true"})", "includeJobDocument"},
           {R"({"status":"FAILED","includeJobDocument":1})", "includeJobDocument"},
           {R"({"status":"FAILED","includeJobExecutionState":0})", "includeJobExecutionState"},
           {R"({"status":"FAILED","stepTimeoutInMinutes":0})", "stepTimeoutInMinutes"},
           {R"({"status":"FAILED","stepTimeoutInMinutes":10081})", "stepTimeoutInMinutes"},
           {R"({"status":"FAILED","stepTimeoutInMinutes":-2})", "stepTimeoutInMinutes"},
           {R"({"status":"FAILED","statusDetails":[]})", "statusDetails"},
           {R"({"status":"FAILED","statusDetails":"a=b"})", "statusDetails"},
       }) {
    const JobsRequestError e = error_of(decode_jobs_update(bytes(c.body)));
    EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest) << c.body;
    EXPECT_NE(e.message.find(c.names), std::string::npos) << c.body << " → " << e.message;
  }
  const BadField limits[] = {{R"({"stepTimeoutInMinutes":-1})", "stepTimeoutInMinutes"},
                             {R"({"stepTimeoutInMinutes":"x"})", "stepTimeoutInMinutes"}};
  for (const BadField& c : limits) {  // start-next: -1 is an update's only
    const JobsRequestError e = error_of(decode_jobs_start_next(bytes(c.body)));
    EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest) << c.body;
  }
  const JobsRequestError e = error_of(decode_jobs_describe(bytes(R"({"executionNumber":-3})")));
  EXPECT_NE(e.message.find("executionNumber"), std::string::npos);
}

TEST(JobsRequest, FirstViolationWins) {
  const JobsRequestError e = error_of(
      decode_jobs_update(bytes(R"({"expectedVersion":"x","status":"NOPE","clientToken":"c"})")));
  EXPECT_NE(e.message.find("expectedVersion"), std::string::npos);
  EXPECT_EQ(e.client_token, "c");
}

TEST(JobsRequest, StatusDetailsLimits) {
  auto details = [](const std::string& inner) {
    return R"({"status":"IN_PROGRESS","statusDetails":{)" + inner + "}}";
  };
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += (i ? "," : "") + ("\"k" + std::to_string(i) + "\":\"v\"");
  const auto ok = decode_jobs_update(bytes(details(ten)));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status_details->size(), kMaxStatusDetails);
  EXPECT_EQ((*ok->status_details)[9].first, "k9");  // the order received
  // A repeated key does not count twice.
  EXPECT_TRUE(decode_jobs_update(bytes(details(ten + R"(,"k0":"w")"))).has_value());

  const std::string key128 = "\"" + repeat('k', 128) + "\":\"v\"";
  EXPECT_TRUE(decode_jobs_update(bytes(details(key128))).has_value());
  const std::string value1024 = "\"k\":\"" + repeat('v', 1024) + "\"";
  EXPECT_TRUE(decode_jobs_update(bytes(details(value1024))).has_value());
  std::string wide;  // 1024 characters of two bytes each
  for (int i = 0; i < 1024; ++i) wide += "\xc3\xa9";
  EXPECT_TRUE(decode_jobs_update(bytes(details("\"k\":\"" + wide + "\""))).has_value());

  for (const std::string& inner :
       {ten + R"(,"k10":"v")", "\"" + repeat('k', 129) + "\":\"v\"",
        "\"k\":\"" + repeat('v', 1025) + "\"", std::string(R"("":"v")"),
        std::string(R"("a b":"v")"), std::string(R"("k":"")"), std::string(R"("k":"a\nb")"),
        std::string(R"("k":"a\u0000b")"), std::string(R"("k":"\u007f")"),
        std::string(R"("k":"\u0085")"), std::string(R"("k":1)"), std::string(R"("k":null)"),
        std::string(R"("k":{"x":"y"})")}) {
    const JobsRequestError e = error_of(decode_jobs_update(bytes(details(inner))));
    EXPECT_EQ(e.code, JobsErrorCode::InvalidRequest) << inner;
    EXPECT_NE(e.message.find("statusDetails"), std::string::npos) << inner;
  }
}

TEST(JobsRequest, StatusDetailPredicates) {
  EXPECT_TRUE(valid_status_detail_key("self_test"));
  EXPECT_TRUE(valid_status_detail_key("a:B-9_"));
  EXPECT_FALSE(valid_status_detail_key(""));
  EXPECT_FALSE(valid_status_detail_key("a.b"));
  EXPECT_TRUE(valid_status_detail_value("12/40"));
  EXPECT_TRUE(valid_status_detail_value("caf\xc3\xa9 \xe2\x9c\x93"));
  EXPECT_FALSE(valid_status_detail_value(""));
  EXPECT_FALSE(valid_status_detail_value("\xff"));
  EXPECT_FALSE(valid_status_detail_value("tab\there"));
  EXPECT_FALSE(valid_status_detail_value("\xc2\x9f"));
  EXPECT_TRUE(valid_status_detail_value("\xc2\xa0"));  // U+00A0 is no control character
}

}  // namespace
}  // namespace chunkd::protocol
