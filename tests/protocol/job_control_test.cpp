// The HTTP side of jobs (protocol/job_control.hpp): the create body with every field and every
// refusal naming its path, the stored spec round trip, the afr_ota document as the OTA agent
// parses it, the list queries and the responses.
#include "protocol/job_control.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"
#include "protocol/jobs.hpp"

namespace chunkd::protocol {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Matcher;
using ::testing::Not;
using ::testing::SizeIs;

// The DER of an ECDSA P-256 signature is 70..72 bytes; this is 70.
constexpr std::string_view kSig =
    "MEQCIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gAiAoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj9AQUJDREVGRw"
    "==";

Matcher<const FieldProblem&> Problem(const std::string& field, const std::string& problem) {
  return AllOf(Field(&FieldProblem::field, field), Field(&FieldProblem::problem, problem));
}
Matcher<const FieldProblem&> ProblemAt(const std::string& field) {
  return Field(&FieldProblem::field, field);
}

std::string ota_json(std::string_view extra = "") {
  return std::string(R"({"streamId":"fw-1","fileId":0,"filePath":"/ota/fw.bin","signature":")") +
         std::string(kSig) + R"(","certFile":"/certs/signer.pem")" + std::string(extra) + "}";
}

ApiError job_error(std::string_view body) {
  auto r = parse_create_job(body);
  EXPECT_FALSE(r.has_value()) << body;
  if (r.has_value()) return {};
  EXPECT_EQ(r.error().code, ApiErrorCode::ValidationError) << body;
  return r.error();
}

simdjson::dom::element must_parse(simdjson::dom::parser& parser, const std::string& text) {
  simdjson::dom::element root;
  EXPECT_EQ(parser.parse(text).get(root), simdjson::SUCCESS) << text;
  return root;
}

// --- create: success ---------------------------------------------------------------------------

TEST(JobCreate, MinimalDocumentBodyParsesAndMinifiesTheDocument) {
  auto r =
      parse_create_job(R"({"targets":["dev-1"],"document":{ "op" : "reboot", "n" : [1, 2] }})");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_THAT(r->targets, ElementsAre("dev-1"));
  EXPECT_EQ(r->document, R"({"op":"reboot","n":[1,2]})");
  EXPECT_FALSE(r->ota);
  EXPECT_EQ(r->description, "");
  EXPECT_FALSE(r->maximum_per_minute);
  EXPECT_THAT(r->abort_criteria, IsEmpty());
  EXPECT_FALSE(r->in_progress_timeout_minutes);
}

TEST(JobCreate, FullOtaBodyParsesEveryField) {
  const std::string body =
      R"({"targets":["dev-1","arn:aws:iot:eu-west-1:123456789012:thing/dev:2","dev-*","gw-??"],)"
      R"("ota":)" +
      ota_json(R"(,"fileType":2,"attributes":7)") +
      R"(,"description":"spring rollout","jobExecutionsRolloutConfig":{"maximumPerMinute":50},)"
      R"("abortConfig":{"criteriaList":[{"failureType":"FAILED","action":"CANCEL",)"
      R"("thresholdPercentage":12.5,"minNumberOfExecutedThings":10},{"failureType":"ALL",)"
      R"("action":"CANCEL","thresholdPercentage":50,"minNumberOfExecutedThings":1}]},)"
      R"("timeoutConfig":{"inProgressTimeoutInMinutes":30}})";
  auto r = parse_create_job(body);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_THAT(r->targets, ElementsAre("dev-1", "dev:2", "dev-*", "gw-??"));
  EXPECT_FALSE(r->document);
  ASSERT_TRUE(r->ota);
  EXPECT_EQ(r->ota->stream_id, "fw-1");
  EXPECT_EQ(r->ota->file_id, 0u);
  EXPECT_EQ(r->ota->file_path, "/ota/fw.bin");
  EXPECT_EQ(r->ota->signature, kSig);
  EXPECT_EQ(r->ota->cert_file, "/certs/signer.pem");
  EXPECT_EQ(r->ota->file_type, 2u);
  EXPECT_EQ(r->ota->attributes, 7u);
  EXPECT_EQ(r->description, "spring rollout");
  EXPECT_EQ(r->maximum_per_minute, 50u);
  ASSERT_THAT(r->abort_criteria, SizeIs(2));
  EXPECT_EQ(r->abort_criteria[0].failure_type, AbortFailureType::Failed);
  EXPECT_EQ(r->abort_criteria[0].threshold_percentage, 12.5);
  EXPECT_EQ(r->abort_criteria[0].min_executed_things, 10u);
  EXPECT_EQ(r->abort_criteria[1].failure_type, AbortFailureType::All);
  EXPECT_EQ(r->abort_criteria[1].threshold_percentage, 50.0);
  EXPECT_EQ(r->in_progress_timeout_minutes, 30u);
  EXPECT_TRUE(is_target_pattern("dev-*"));
  EXPECT_TRUE(is_target_pattern("gw-??"));
  EXPECT_FALSE(is_target_pattern("dev:2"));

  // The stored form reads back as the same spec, twice over.
  const std::string stored = encode_job_spec(*r);
  auto again = parse_create_job(stored);
  ASSERT_TRUE(again.has_value()) << again.error().message << "\n" << stored;
  EXPECT_EQ(*again, *r);
  EXPECT_EQ(encode_job_spec(*again), stored);
}

TEST(JobCreate, StoredSpecOfADocumentJobRoundTrips) {
  auto r = parse_create_job(
      R"({"targets":["a"],"document":{"x":"\u00e9\n","y":1.5e300},"description":"d\"q"})");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  auto again = parse_create_job(encode_job_spec(*r));
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(*again, *r);
}

TEST(JobCreate, LimitsAreInclusive) {
  std::string targets = "[";
  for (std::size_t i = 0; i < kMaxJobTargets; ++i) {
    targets += (i > 0 ? ",\"t" : "\"t") + std::to_string(i) + "\"";
  }
  targets += "]";
  const std::string body = R"({"targets":)" + targets + R"(,"document":{},"description":")" +
                           std::string(kMaxDescriptionChars, 'd') +
                           R"(","jobExecutionsRolloutConfig":{"maximumPerMinute":1000},)"
                           R"("timeoutConfig":{"inProgressTimeoutInMinutes":10080}})";
  auto r = parse_create_job(body);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_THAT(r->targets, SizeIs(kMaxJobTargets));
  const std::string big_doc = R"({"targets":["a"],"document":{"k":")" +
                              std::string(kMaxJobDocumentBytes - 8, 'x') + R"("}})";
  EXPECT_TRUE(parse_create_job(big_doc).has_value());  // {"k":"…"} is exactly 32 KiB
}

// --- create: refusals --------------------------------------------------------------------------

TEST(JobCreate, BodyMustBeAJsonObject) {
  EXPECT_EQ(job_error("[]").message, "request body is not a JSON object");
  EXPECT_THAT(job_error("{").message, HasSubstr("invalid JSON"));
  auto big = parse_create_job(std::string(kMaxControlBodyBytes + 1, ' '));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code, ApiErrorCode::PayloadTooLarge);
}

TEST(JobCreate, EmptyObjectNeedsTargetsAndOneKindOfDocument) {
  auto e = job_error("{}");
  EXPECT_THAT(e.details, ElementsAre(Problem("targets", "is required"),
                                     Problem("document",
                                             "exactly one of document and ota is "
                                             "required")));
  auto both = job_error(R"({"targets":["a"],"document":{},"ota":)" + ota_json() + "}");
  EXPECT_THAT(both.details, ElementsAre(Problem("ota",
                                                "exactly one of document and ota is "
                                                "required")));
}

TEST(JobCreate, UnknownAndRepeatedKeysAreRefused) {
  auto e = job_error(R"({"targets":["a"],"document":{},"documentSource":"s3://x","targets":[]})");
  EXPECT_THAT(e.details, ElementsAre(Problem("documentSource", "is not a known field"),
                                     Problem("targets", "is given more than once")));
}

TEST(JobCreate, BadTargetsNameTheirIndex) {
  auto e = job_error(
      R"({"document":{},"targets":["a","arn:aws:iot:r:1:thing/a","arn:aws:iot:r:1:policy/p",)"
      R"("has space",7,"arn:x:thing/"]})");
  EXPECT_THAT(
      e.details,
      ElementsAre(Problem("targets[1]", "must be unique: targets[0] already names a"),
                  Problem("targets[2]", "must be a thing ARN ending in thing/<thing name>"),
                  ProblemAt("targets[3]"), Problem("targets[4]", "must be a string"),
                  Problem("targets[5]", "must be a thing ARN ending in thing/<thing name>")));
  EXPECT_THAT(job_error(R"({"document":{},"targets":[]})").details,
              ElementsAre(Problem("targets", "must have between 1 and 100 entries")));
  EXPECT_THAT(job_error(R"({"document":{},"targets":"a"})").details,
              ElementsAre(Problem("targets", "must be an array")));
  std::string many = R"({"document":{},"targets":[)";
  for (std::size_t i = 0; i <= kMaxJobTargets; ++i)
    many += (i > 0 ? ",\"t" : "\"t") + std::to_string(i) + "\"";
  EXPECT_THAT(job_error(many + "]}").details,
              ElementsAre(Problem("targets", "must have between 1 and 100 entries")));
}

TEST(JobCreate, DocumentMustBeABoundedObject) {
  EXPECT_THAT(job_error(R"({"targets":["a"],"document":"{}"})").details,
              ElementsAre(Problem("document", "must be an object")));
  const std::string big = R"({"targets":["a"],"document":{"k":")" +
                          std::string(kMaxJobDocumentBytes - 7, 'x') + R"("}})";
  EXPECT_THAT(job_error(big).details,
              ElementsAre(Problem("document", "must be at most 32768 bytes (minified), is 32769")));
}

TEST(JobCreate, OtaTakesExactlyItsKeys) {
  auto e = job_error(R"({"targets":["a"],"ota":{"streamId":"fw","fileId":256,"signature":"%%%",)"
                     R"("certFile":"","fileType":-1,"attr":1}})");
  EXPECT_THAT(
      e.details,
      ElementsAre(Problem("ota.fileId", "must be between 0 and 255"), ProblemAt("ota.signature"),
                  Problem("ota.certFile", "must be between 1 and 1024 characters"),
                  Problem("ota.fileType", "must be between 0 and 4294967295"),
                  Problem("ota.attr", "is not a known field"),
                  Problem("ota.filePath", "is required")));
  EXPECT_THAT(
      job_error(R"({"targets":["a"],"ota":)" + ota_json(R"(,"streamId":"x")") + "}").details,
      ElementsAre(Problem("ota.streamId", "is given more than once")));
  EXPECT_THAT(job_error(R"({"targets":["a"],"ota":{"streamId":"no/slash"}})").details,
              Contains(Problem("ota.streamId",
                               "must contain only letters a-z A-Z, digits 0-9, '_' and '-'")));
}

TEST(JobCreate, SignatureMustBeBase64OfASaneLength) {
  auto with_sig = [](std::string_view sig) {
    return R"({"targets":["a"],"ota":{"streamId":"fw","fileId":1,"filePath":"p","certFile":"c",)"
           R"("signature":")" +
           std::string(sig) + "\"}}";
  };
  const std::string problem =
      "must be the base64 (standard alphabet, padded) of a 8 to 384 byte DER signature";
  EXPECT_THAT(job_error(with_sig("AAAAAAAAAA==")).details,  // 7 bytes
              ElementsAre(Problem("ota.signature", problem)));
  EXPECT_THAT(job_error(with_sig(std::string(516, 'A'))).details,  // 387 bytes
              ElementsAre(Problem("ota.signature", problem)));
  EXPECT_THAT(job_error(with_sig("MEQC IA==")).details,
              ElementsAre(Problem("ota.signature", problem)));
  EXPECT_TRUE(parse_create_job(with_sig(std::string(512, 'A'))).has_value());  // 384 bytes
}

TEST(JobCreate, RolloutAbortAndTimeoutAreBounded) {
  auto e = job_error(
      R"({"targets":["a"],"document":{},"jobExecutionsRolloutConfig":{"maximumPerMinute":0},)"
      R"("abortConfig":{"criteriaList":[{"failureType":"LOST","action":"DELETE",)"
      R"("thresholdPercentage":0,"minNumberOfExecutedThings":0},{"failureType":"FAILED"},)"
      R"({"failureType":"FAILED","action":"CANCEL","thresholdPercentage":100.5,)"
      R"("minNumberOfExecutedThings":1}]},"timeoutConfig":{"inProgressTimeoutInMinutes":10081}})");
  EXPECT_THAT(
      e.details,
      ElementsAre(
          Problem("jobExecutionsRolloutConfig.maximumPerMinute", "must be between 1 and 1000"),
          Problem("abortConfig.criteriaList[0].failureType",
                  "must be one of FAILED, REJECTED, TIMED_OUT, ALL"),
          Problem("abortConfig.criteriaList[0].action", "must be CANCEL"),
          Problem("abortConfig.criteriaList[0].thresholdPercentage",
                  "must be greater than 0 and at most 100"),
          Problem("abortConfig.criteriaList[0].minNumberOfExecutedThings",
                  "must be between 1 and 4294967295"),
          Problem("abortConfig.criteriaList[1].action", "is required"),
          Problem("abortConfig.criteriaList[1].thresholdPercentage", "is required"),
          Problem("abortConfig.criteriaList[1].minNumberOfExecutedThings", "is required"),
          Problem("abortConfig.criteriaList[2].thresholdPercentage",
                  "must be greater than 0 and at most 100"),
          Problem("timeoutConfig.inProgressTimeoutInMinutes", "must be between 1 and 10080")));
  EXPECT_THAT(job_error(R"({"targets":["a"],"document":{},"abortConfig":{},)"
                        R"("jobExecutionsRolloutConfig":{"rate":5}})")
                  .details,
              ElementsAre(Problem("abortConfig.criteriaList", "is required"),
                          Problem("jobExecutionsRolloutConfig.rate", "is not a known field"),
                          Problem("jobExecutionsRolloutConfig.maximumPerMinute", "is required")));
  const std::string twice =
      R"({"failureType":"REJECTED","action":"CANCEL","thresholdPercentage":5,)"
      R"("minNumberOfExecutedThings":2})";
  EXPECT_THAT(job_error(R"({"targets":["a"],"document":{},"abortConfig":{"criteriaList":[)" +
                        twice + "," + twice + "]}}")
                  .details,
              ElementsAre(Problem("abortConfig.criteriaList[1].failureType",
                                  "must be unique: REJECTED is already used")));
}

TEST(JobCreate, DescriptionIsBounded) {
  const std::string body = R"({"targets":["a"],"document":{},"description":")" +
                           std::string(kMaxDescriptionChars + 1, 'd') + "\"}";
  EXPECT_THAT(job_error(body).details,
              ElementsAre(Problem("description", "must be at most 2028 characters")));
}

TEST(JobCancel, EveryKeyIsOptional) {
  auto empty = parse_cancel_job("");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->reason_code, "");
  EXPECT_FALSE(empty->force);
  ASSERT_TRUE(parse_cancel_job(" \r\n{}").has_value());
  auto full =
      parse_cancel_job(R"({"reasonCode":"BAD_BUILD_2","comment":"bricks gw-7","force":true})");
  ASSERT_TRUE(full.has_value()) << full.error().message;
  EXPECT_EQ(full->reason_code, "BAD_BUILD_2");
  EXPECT_EQ(full->comment, "bricks gw-7");
  EXPECT_TRUE(full->force);
}

TEST(JobCancel, BadKeysAreNamed) {
  auto e = parse_cancel_job(R"({"reasonCode":"bad build","comment":7,"force":"yes","why":1})");
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(
      e.error().details,
      ElementsAre(Problem("reasonCode",
                          "must be at most 128 of the capital letters A-Z, digits 0-9 and '_'"),
                  Problem("comment", "must be a string"), Problem("force", "must be true or false"),
                  Problem("why", "is not a known field")));
  EXPECT_FALSE(parse_cancel_job(R"({"reasonCode":")" + std::string(129, 'A') + "\"}").has_value());
  EXPECT_TRUE(parse_cancel_job(R"({"reasonCode":")" + std::string(128, 'A') + "\"}").has_value());
  EXPECT_FALSE(parse_cancel_job("[]").has_value());
}

TEST(JobId, ValidatedWithItsRule) {
  EXPECT_FALSE(validate_job_id("fw-2026_1"));
  EXPECT_FALSE(validate_job_id(std::string(kMaxJobIdChars, 'j')));
  auto e = validate_job_id(std::string(kMaxJobIdChars + 1, 'j'));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, ApiErrorCode::ValidationError);
  EXPECT_THAT(e->details, ElementsAre(ProblemAt("jobId")));
  EXPECT_TRUE(validate_job_id("a:b"));
  EXPECT_TRUE(validate_job_id(""));
}

// --- the afr_ota document ----------------------------------------------------------------------

TEST(OtaDocument, HasTheKeysAndTypesTheAgentParses) {
  auto spec = parse_create_job(R"({"targets":["a"],"ota":)" + ota_json() + "}");
  ASSERT_TRUE(spec.has_value());
  auto doc = build_ota_document(*spec->ota, 2'500'000);
  ASSERT_TRUE(doc.has_value());
  EXPECT_EQ(*doc, std::string(R"({"afr_ota":{"protocols":["MQTT"],"streamname":"fw-1","files":[{)"
                              R"("filepath":"/ota/fw.bin","filesize":2500000,"fileid":0,)"
                              R"("certfile":"/certs/signer.pem","sig-sha256-ecdsa":")") +
                      std::string(kSig) + R"("}]}})");

  spec->ota->file_type = 0;
  spec->ota->attributes = 3;
  doc = build_ota_document(*spec->ota, 1);
  ASSERT_TRUE(doc.has_value());
  simdjson::dom::parser parser;
  auto root = must_parse(parser, *doc);
  auto file = root["afr_ota"]["files"].at(0);
  std::uint64_t n = 99;
  EXPECT_EQ(file["fileType"].get(n), simdjson::SUCCESS);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(file["attr"].get(n), simdjson::SUCCESS);
  EXPECT_EQ(n, 3u);
}

TEST(OtaDocument, RefusesAFileLargerThanTheAgentCanSay) {
  OtaSpec ota{"fw", 1, "p", std::string(kSig), "c", {}, {}};
  EXPECT_TRUE(build_ota_document(ota, UINT32_MAX).has_value());
  auto e = build_ota_document(ota, std::uint64_t{UINT32_MAX} + 1);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ApiErrorCode::ValidationError);
  EXPECT_THAT(e.error().details, ElementsAre(ProblemAt("ota.fileId")));
}

TEST(OtaDocument, WarnsAboutIdsDevicesCannotHold) {
  JobSpec spec;
  spec.targets = {"short", std::string(60, 't'), "pattern-*" + std::string(70, 'p')};
  spec.ota = OtaSpec{"fw-stream-1", 0, "p", std::string(kSig), "c", {}, {}};
  EXPECT_THAT(job_warnings(spec), ElementsAre(HasSubstr(std::string(60, 't'))));
  spec.ota->stream_id = std::string(kDeviceStreamIdBytes + 1, 's');
  // The stream id itself, then the long name (5 + 45 characters still fit).
  EXPECT_THAT(job_warnings(spec), ElementsAre(HasSubstr("streamId is longer than 44"),
                                              HasSubstr(std::string(60, 't'))));
  spec.ota.reset();
  spec.document = "{}";
  EXPECT_THAT(job_warnings(spec), IsEmpty());
}

// --- list queries ------------------------------------------------------------------------------

TEST(JobQuery, JobListTokenHoldsAJobId) {
  auto q = parse_job_list_query("maxResults=5&nextToken=" + encode_next_token("job-7"));
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->max_results, 5u);
  EXPECT_EQ(q->after_id, "job-7");
  auto bad = parse_job_list_query("nextToken=" + encode_next_token(std::string(65, 'j')));
  ASSERT_FALSE(bad.has_value());
  EXPECT_THAT(bad.error().details, ElementsAre(ProblemAt("nextToken")));
}

TEST(JobQuery, ExecutionListTakesAThingTokenAndAStatus) {
  auto q = parse_execution_list_query(
      "status=IN_PROGRESS&nextToken=" + encode_next_token("site:dev-1") + "&other=1");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->page.after_id, "site:dev-1");
  EXPECT_EQ(q->status, ExecutionStatus::InProgress);
  auto none = parse_execution_list_query("");
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->status);
  auto bad = parse_execution_list_query("status=in_progress&maxResults=0&status=%zz");
  ASSERT_FALSE(bad.has_value());
  EXPECT_THAT(bad.error().details,
              ElementsAre(Problem("maxResults", "must be between 1 and 250"),
                          Problem("status", "is not validly percent-encoded")));
  auto wrong = parse_execution_list_query("status=DONE");
  ASSERT_FALSE(wrong.has_value());
  EXPECT_THAT(wrong.error().details, ElementsAre(ProblemAt("status")));
}

// --- responses ---------------------------------------------------------------------------------

JobInfo sample_job() {
  JobInfo job;
  job.job_id = "fw-2026";
  job.status = JobStatus::Canceled;
  auto spec =
      parse_create_job(R"({"targets":["dev-*"],"description":"fw \"2\"","ota":)" + ota_json() +
                       R"(,"abortConfig":{"criteriaList":[{"failureType":"ALL",)"
                       R"("action":"CANCEL","thresholdPercentage":20,)"
                       R"("minNumberOfExecutedThings":5}]}})");
  EXPECT_TRUE(spec.has_value());
  job.spec = *spec;
  job.document = *build_ota_document(*job.spec.ota, 42);
  job.created_at_ms = 1795773600000;
  job.last_updated_at_ms = 1795773600000 + 61'000;
  job.completed_at_ms = job.last_updated_at_ms;
  job.reason_code = "ABORTED";
  job.comment = "20% of 5 executions failed";
  job.executions_by_status[static_cast<std::size_t>(ExecutionStatus::Failed)] = 2;
  job.executions_by_status[static_cast<std::size_t>(ExecutionStatus::Canceled)] = 7;
  job.waiting_things = 3;
  return job;
}

TEST(JobResponses, DescribeCarriesEverything) {
  const JobInfo job = sample_job();
  simdjson::dom::parser parser;
  auto data = must_parse(parser, job_describe_response(job))["data"];
  std::string_view s;
  EXPECT_EQ(data["jobId"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "fw-2026");
  EXPECT_EQ(data["status"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "CANCELED");
  EXPECT_EQ(data["description"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "fw \"2\"");
  EXPECT_EQ(data["createdAt"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "2026-11-27T10:00:00Z");
  EXPECT_EQ(data["completedAt"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "2026-11-27T10:01:01Z");
  EXPECT_EQ(data["reasonCode"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "ABORTED");
  EXPECT_EQ(data["document"]["afr_ota"]["streamname"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "fw-1");
  EXPECT_EQ(data["ota"]["certFile"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(data["abortConfig"]["criteriaList"].at(0)["failureType"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "ALL");
  EXPECT_EQ(data["targets"].at(0).get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "dev-*");
  simdjson::dom::object counts;
  ASSERT_EQ(data["jobProcessDetails"].get(counts), simdjson::SUCCESS);
  EXPECT_EQ(counts.size(), kExecutionStatusCount + 1);  // + numberOfWaitingThings
  std::uint64_t n = 0;
  EXPECT_EQ(counts["numberOfWaitingThings"].get(n), simdjson::SUCCESS);
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(counts["numberOfFailedThings"].get(n), simdjson::SUCCESS);
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(counts["numberOfCanceledThings"].get(n), simdjson::SUCCESS);
  EXPECT_EQ(n, 7u);
  EXPECT_EQ(counts["numberOfTimedOutThings"].get(n), simdjson::SUCCESS);
  EXPECT_EQ(n, 0u);
}

TEST(JobResponses, InProgressJobHasNoCompletionOrReason) {
  JobInfo job = sample_job();
  job.status = JobStatus::InProgress;
  job.completed_at_ms = 0;
  job.reason_code.clear();
  job.comment.clear();
  const std::string text = job_describe_response(job);
  EXPECT_THAT(text, Not(HasSubstr("completedAt")));
  EXPECT_THAT(text, Not(HasSubstr("reasonCode")));
  EXPECT_THAT(text, Not(HasSubstr("comment")));
  EXPECT_EQ(job_create_response(job, {"w"}),
            R"({"success":true,"data":{"jobId":"fw-2026","status":"IN_PROGRESS",)"
            R"("createdAt":"2026-11-27T10:00:00Z","warnings":["w"]}})");
}

TEST(JobResponses, ListAndExecutionsArePaginated) {
  simdjson::dom::parser parser;
  auto list = must_parse(parser, job_list_response({sample_job()}, encode_next_token("fw-2026")));
  std::string_view s;
  EXPECT_EQ(list["data"]["jobs"].at(0)["jobId"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(list["data"]["nextToken"].get(s), simdjson::SUCCESS);
  EXPECT_THAT(job_list_response({}, std::nullopt), Not(HasSubstr("nextToken")));

  JobExecution e;
  e.job_id = "fw-2026";
  e.thing = "dev-1";
  e.status = ExecutionStatus::InProgress;
  e.status_details = {{"receive", "12/40"}, {"self_test", "\"ready\""}};
  e.queued_at_ms = 1000;
  e.started_at_ms = 2000;
  e.last_updated_at_ms = 951782401234;
  e.version_number = 3;
  auto things = must_parse(parser, job_executions_response({e}, std::nullopt));
  auto first = things["data"]["executions"].at(0);
  EXPECT_EQ(first["thingName"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "dev-1");
  EXPECT_EQ(first["statusDetails"]["self_test"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "\"ready\"");
  EXPECT_EQ(first["startedAt"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "1970-01-01T00:00:02Z");
  EXPECT_EQ(first["lastUpdatedAt"].get(s), simdjson::SUCCESS);
  EXPECT_EQ(s, "2000-02-29T00:00:01Z");
  std::int64_t v = 0;
  EXPECT_EQ(first["versionNumber"].get(v), simdjson::SUCCESS);
  EXPECT_EQ(v, 3);
  e.started_at_ms = 0;
  EXPECT_THAT(job_executions_response({e}, std::nullopt), Not(HasSubstr("startedAt")));
}

TEST(JobResponses, TimesAreRfc3339Utc) {
  EXPECT_EQ(rfc3339_from_ms(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(rfc3339_from_ms(-1), "1969-12-31T23:59:59Z");
  EXPECT_EQ(rfc3339_from_ms(4102444799999), "2099-12-31T23:59:59Z");
  EXPECT_EQ(rfc3339_from_ms(951782401234), "2000-02-29T00:00:01Z");
}

}  // namespace
}  // namespace chunkd::protocol
