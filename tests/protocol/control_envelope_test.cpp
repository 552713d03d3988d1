// Response envelopes and JSON escaping (protocol/control.hpp, SPEC.md §2): the create, describe,
// list, delete and error bodies against golden text, the error codes and HTTP statuses against
// docs/control-api.md, and append_json_string against RFC 8259.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <fstream>
#include <iterator>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "protocol/control.hpp"
#include "tests/protocol/control_fixture.hpp"

namespace chunkd::protocol {
namespace {

using namespace test_control;

// --- envelopes -------------------------------------------------------------------------------

StreamInfo sample_stream() {
  StreamInfo s;
  s.stream_id = "fw-1";
  s.stream_arn = "arn:chunkd:stream/fw-1";
  s.version = 3;
  s.description = "Firmware \"1.2\"";
  s.role_arn = "arn:aws:iam::123456789012:role/chunkd";
  s.tags = {{"team", "ota"}, {"env", ""}};
  s.files = {{0, "fw", "a.bin", 1048576, "00112233445566778899aabbccddeeff"},
             {255, "models", "m/x.tflite", 0, "ffeeddccbbaa99887766554433221100"}};
  s.created_at = "2024-05-01T12:00:00Z";
  s.updated_at = "2024-05-02T08:30:00Z";
  return s;
}

TEST(ControlEnvelope, CreateResponseGolden) {
  EXPECT_EQ(create_response(sample_stream(), {}),
            R"({"success":true,"data":{"id":"fw-1","streamId":"fw-1",)"
            R"("streamArn":"arn:chunkd:stream/fw-1","streamVersion":3,)"
            R"("description":"Firmware \"1.2\"","created_at":"2024-05-01T12:00:00Z",)"
            R"("updated_at":"2024-05-02T08:30:00Z"}})");
}

TEST(ControlEnvelope, CreateResponseWithWarnings) {
  StreamInfo s;
  s.stream_id = "s";
  s.stream_arn = "arn";
  s.version = 1;
  s.created_at = "t0";
  s.updated_at = "t0";
  EXPECT_EQ(create_response(s, {"w1", "line\nbreak"}),
            R"({"success":true,"data":{"id":"s","streamId":"s","streamArn":"arn",)"
            R"("streamVersion":1,"description":"","created_at":"t0","updated_at":"t0",)"
            R"("warnings":["w1","line\nbreak"]}})");
}

TEST(ControlEnvelope, DescribeResponseGolden) {
  EXPECT_EQ(describe_response(sample_stream()),
            R"({"success":true,"data":{"id":"fw-1","streamId":"fw-1",)"
            R"("streamArn":"arn:chunkd:stream/fw-1","streamVersion":3,)"
            R"("description":"Firmware \"1.2\"","created_at":"2024-05-01T12:00:00Z",)"
            R"("updated_at":"2024-05-02T08:30:00Z",)"
            R"("roleArn":"arn:aws:iam::123456789012:role/chunkd",)"
            R"("tags":[{"Key":"team","Value":"ota"},{"Key":"env","Value":""}],)"
            R"("files":[{"fileId":0,"s3Location":{"bucket":"fw","key":"a.bin"},)"
            R"("sizeBytes":1048576,"digest":"00112233445566778899aabbccddeeff"},)"
            R"({"fileId":255,"s3Location":{"bucket":"models","key":"m/x.tflite"},)"
            R"("sizeBytes":0,"digest":"ffeeddccbbaa99887766554433221100"}],"health":"ok"}})");
}

// A file fetched from an S3 bucket carries the version and ETag it got, in describe and in the
// create/update reply (which lists files only then); an unversioned object has no version.
TEST(ControlEnvelope, FilesFromS3CarryTheirVersionAndEtag) {
  StreamInfo s = sample_stream();
  s.files[0].source_etag = "\"9b2c\"";
  s.files[0].source_version = "3HL4k";
  s.files[1].source_etag = "\"77ab\"";
  const std::string files =
      R"("files":[{"fileId":0,"s3Location":{"bucket":"fw","key":"a.bin","version":"3HL4k"},)"
      R"("sizeBytes":1048576,"digest":"00112233445566778899aabbccddeeff",)"
      R"("source":{"etag":"\"9b2c\"","versionId":"3HL4k"}},)"
      R"({"fileId":255,"s3Location":{"bucket":"models","key":"m/x.tflite"},)"
      R"("sizeBytes":0,"digest":"ffeeddccbbaa99887766554433221100",)"
      R"("source":{"etag":"\"77ab\""}}])";
  const std::string described = describe_response(s);
  EXPECT_NE(described.find(files + R"(,"health":"ok"}})"), std::string::npos) << described;
  const std::string created = create_response(s, {});
  EXPECT_NE(created.find(R"("updated_at":"2024-05-02T08:30:00Z",)" + files + "}}"),
            std::string::npos)
      << created;
}

// While a create ingests, describe answers with its progress; an update's describe adds it.
TEST(ControlEnvelope, ProgressOfACreateAndOfAnUpdate) {
  const IngestProgressInfo creating{"CREATING", 1, 3, 1048576, 67108864};
  EXPECT_EQ(creating_response("fw-1", "arn:chunkd:stream/fw-1", creating),
            R"({"success":true,"data":{"id":"fw-1","streamId":"fw-1",)"
            R"("streamArn":"arn:chunkd:stream/fw-1","status":"CREATING",)"
            R"("progress":{"file":1,"files":3,"bytesDone":1048576,"bytesTotal":67108864}}})");
  StreamInfo s = sample_stream();
  s.progress = IngestProgressInfo{"UPDATING", 0, 1, 0, 0};
  const std::string body = describe_response(s);
  EXPECT_NE(body.find(R"("health":"ok","status":"UPDATING",)"
                      R"("progress":{"file":0,"files":1,"bytesDone":0,"bytesTotal":0}}})"),
            std::string::npos)
      << body;
}

TEST(ControlEnvelope, DescribeResponseNamesTheFileThatFailedVerification) {
  StreamInfo s = sample_stream();
  s.files.clear();
  s.health = {"corrupt", 255, 7, "manifest_mismatch"};
  const std::string body = describe_response(s);
  EXPECT_NE(body.find(R"("files":[],"health":"corrupt",)"
                      R"("healthDetail":{"fileId":255,"extent":7,"cause":"manifest_mismatch"}}})"),
            std::string::npos)
      << body;
}

TEST(ControlEnvelope, DescribeResponseEmptyListsAndMaxVersion) {
  StreamInfo s;
  s.stream_id = "x";
  s.version = 18446744073709551615u;
  EXPECT_EQ(describe_response(s),
            R"({"success":true,"data":{"id":"x","streamId":"x","streamArn":"",)"
            R"("streamVersion":18446744073709551615,"description":"","created_at":"",)"
            R"("updated_at":"","roleArn":"","tags":[],"files":[],"health":"ok"}})");
}

TEST(ControlEnvelope, ListResponseGolden) {
  StreamInfo a = sample_stream();
  StreamInfo b;
  b.stream_id = "b";
  b.stream_arn = "arn:b";
  b.version = 1;
  b.description = "";
  b.created_at = "2024-05-03T00:00:00Z";
  const std::string token = encode_next_token("b");
  EXPECT_EQ(list_response({a, b}, token),
            R"({"success":true,"data":{"streams":[)"
            R"({"id":"fw-1","streamId":"fw-1","streamArn":"arn:chunkd:stream/fw-1",)"
            R"("streamVersion":3,"description":"Firmware \"1.2\"",)"
            R"("created_at":"2024-05-01T12:00:00Z"},)"
            R"({"id":"b","streamId":"b","streamArn":"arn:b","streamVersion":1,)"
            R"("description":"","created_at":"2024-05-03T00:00:00Z"}],)"
            R"("nextToken":"djE6Yg"}})");
  EXPECT_EQ(list_response({b}, std::nullopt),
            R"({"success":true,"data":{"streams":[{"id":"b","streamId":"b","streamArn":"arn:b",)"
            R"("streamVersion":1,"description":"","created_at":"2024-05-03T00:00:00Z"}]}})");
  EXPECT_EQ(list_response({}, std::nullopt), R"({"success":true,"data":{"streams":[]}})");
}

TEST(ControlEnvelope, DeleteResponseGolden) {
  EXPECT_EQ(delete_response("fw-1"), R"({"success":true,"data":{"id":"fw-1"}})");
}

TEST(ControlEnvelope, ErrorResponseGolden) {
  EXPECT_EQ(error_response({ApiErrorCode::NotFound, "stream fw-1 not found", {}}),
            R"({"success":false,"error":{"code":"NOT_FOUND","message":"stream fw-1 not found"}})");
  EXPECT_EQ(error_response({ApiErrorCode::ValidationError,
                            "request body has 2 invalid fields",
                            {{"files[1].fileId", "must be between 0 and 255"},
                             {"description", "must be a \"string\""}}}),
            R"({"success":false,"error":{"code":"VALIDATION_ERROR",)"
            R"("message":"request body has 2 invalid fields","details":[)"
            R"({"field":"files[1].fileId","problem":"must be between 0 and 255"},)"
            R"({"field":"description","problem":"must be a \"string\""}]}})");
}

TEST(ControlEnvelope, ErrorOfParseIsValidJson) {
  // The echoed unknown key carries quotes, a backslash, a control character and a cut.
  std::string key = "we\"ird\\key\x01";
  key += repeat("k", 100);
  const auto r = parse_create_stream("{" + str(key) + ":1}");
  ASSERT_FALSE(r.has_value());
  const std::string text = error_response(r.error());
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  ASSERT_EQ(parser.parse(text).get(root), simdjson::SUCCESS) << text;
  std::string_view field;
  ASSERT_EQ(root["error"]["details"].at(0)["field"].get(field), simdjson::SUCCESS);
  EXPECT_EQ(field, key.substr(0, 64) + "...");
}

TEST(ControlEnvelope, CodesAndHttpStatuses) {
  const std::pair<ApiErrorCode, std::pair<std::string_view, int>> table[] = {
      {ApiErrorCode::ValidationError, {"VALIDATION_ERROR", 400}},
      {ApiErrorCode::Unauthorized, {"UNAUTHORIZED", 401}},
      {ApiErrorCode::NotFound, {"NOT_FOUND", 404}},
      {ApiErrorCode::MethodNotAllowed, {"METHOD_NOT_ALLOWED", 405}},
      {ApiErrorCode::RequestTimeout, {"REQUEST_TIMEOUT", 408}},
      {ApiErrorCode::AlreadyExists, {"ALREADY_EXISTS", 409}},
      {ApiErrorCode::LengthRequired, {"LENGTH_REQUIRED", 411}},
      {ApiErrorCode::PayloadTooLarge, {"PAYLOAD_TOO_LARGE", 413}},
      {ApiErrorCode::LimitExceeded, {"LIMIT_EXCEEDED", 422}},
      {ApiErrorCode::RateLimited, {"RATE_LIMITED", 429}},
      {ApiErrorCode::HeadersTooLarge, {"HEADERS_TOO_LARGE", 431}},
      {ApiErrorCode::InternalError, {"INTERNAL_ERROR", 500}},
      {ApiErrorCode::SourceAccessDenied, {"SOURCE_ACCESS_DENIED", 502}},
      {ApiErrorCode::ServiceUnavailable, {"SERVICE_UNAVAILABLE", 503}},
      {ApiErrorCode::HttpVersionNotSupported, {"HTTP_VERSION_NOT_SUPPORTED", 505}},
      {ApiErrorCode::StorageFull, {"STORAGE_FULL", 507}},
  };
  EXPECT_EQ(std::size(table), std::size(kApiErrors));
  for (const auto& [code, expected] : table) {
    EXPECT_EQ(to_string(code), expected.first);
    EXPECT_EQ(http_status(code), expected.second) << expected.first;
    EXPECT_EQ(api_error_for_status(expected.second), code) << expected.first;
  }
  EXPECT_EQ(error_response({ApiErrorCode::RateLimited, "slow down", {}}),
            R"({"success":false,"error":{"code":"RATE_LIMITED","message":"slow down"}})");
}

TEST(ControlEnvelope, OnlyErrorStatusesHaveACode) {
  for (int status : {0, 100, 200, 201, 204, 301, 399, 402, 403, 410, 418, 501, 504, 600}) {
    EXPECT_EQ(api_error_for_status(status), std::nullopt) << status;
  }
}

// docs/control-api.md's table of codes is the table in the code, row for row: every
// "| `CODE` | status |" row of the page, and nothing else.
TEST(ControlEnvelope, DocumentedTableIsTheCodeTable) {
  std::ifstream in(std::string(CHUNKD_SOURCE_DIR) + "/docs/control-api.md");
  ASSERT_TRUE(in) << "cannot read docs/control-api.md";
  const std::regex row(R"(^\| `([A-Z_]+)` \| (\d{3}) \|)");
  std::set<std::pair<std::string, int>> documented;
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      EXPECT_TRUE(documented.emplace(m[1].str(), std::stoi(m[2].str())).second) << line;
    }
  }
  std::set<std::pair<std::string, int>> in_code;
  for (const ApiErrorInfo& info : kApiErrors) {
    in_code.emplace(std::string(info.name), info.http_status);
  }
  EXPECT_EQ(documented, in_code);
}

// --- escaping --------------------------------------------------------------------------------

TEST(ControlJsonString, EscapesPerRfc8259) {
  EXPECT_EQ(str(""), R"("")");
  EXPECT_EQ(str("plain text"), R"("plain text")");
  EXPECT_EQ(str("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(str("a/b"), R"("a/b")");  // never "\/"
  EXPECT_EQ(str("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(str(std::string_view("\x00\x01\x1f\x7f", 4)), R"("\u0000\u0001\u001f\u007f")");
  EXPECT_EQ(str("\x0b\x1b"), R"("\u000b\u001b")");
}

TEST(ControlJsonString, PassesUtf8Through) {
  EXPECT_EQ(str("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc2\x80"),
            "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc2\x80\"");
}

TEST(ControlJsonString, ReplacesInvalidUtf8) {
  EXPECT_EQ(str("a\xff"
                "b"),
            R"("a\ufffdb")");
  EXPECT_EQ(str("\xc3"), R"("\ufffd")");                                // truncated sequence
  EXPECT_EQ(str("\xc0\xaf"), R"("\ufffd\ufffd")");                      // overlong '/'
  EXPECT_EQ(str("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");            // UTF-16 surrogate
  EXPECT_EQ(str("\xf4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");  // over U+10FFFF
  EXPECT_TRUE(valid_json(str("\x80\xbf\xfe\xff\xe2\x82")));
}

TEST(ControlJsonString, AppendsToExistingText) {
  std::string out = "x=";
  append_json_string(out, "y");
  EXPECT_EQ(out, R"(x="y")");
}

}  // namespace
}  // namespace chunkd::protocol
