// Control-plane bodies, list query, envelopes and escaping (protocol/control.hpp, SPEC.md §2).
#include "protocol/control.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstddef>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chunkd::protocol {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Matcher;
using ::testing::SizeIs;
using ::testing::StartsWith;

// --- helpers ---------------------------------------------------------------------------------

Matcher<const FieldProblem&> Problem(const std::string& field, const std::string& problem) {
  return AllOf(Field(&FieldProblem::field, field), Field(&FieldProblem::problem, problem));
}

std::string str(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

std::string repeat(std::string_view unit, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += unit;
  return out;
}

// A JSON object from raw member values: obj({{"a", "1"}, {"b", str("x")}}).
std::string obj(std::initializer_list<std::pair<std::string_view, std::string>> members) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : members) {
    if (!first) out += ',';
    first = false;
    out += str(k);
    out += ':';
    out += v;
  }
  out += '}';
  return out;
}

std::string arr(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += items[i];
  }
  out += ']';
  return out;
}

std::string file_entry(int id, std::string_view bucket = "fw", std::string_view key = "a.bin") {
  return obj({{"fileId", std::to_string(id)},
              {"s3Location", obj({{"bucket", str(bucket)}, {"key", str(key)}})}});
}

std::string files_json(std::size_t n) {
  std::vector<std::string> items;
  for (std::size_t i = 0; i < n; ++i) items.push_back(file_entry(static_cast<int>(i)));
  return arr(items);
}

const std::string kRole = "arn:aws:iam::123456789012:role/chunkd";  // 37 characters

// A valid create body with `files` and `roleArn` replaced by raw JSON when given.
std::string create_body(std::string files = files_json(1), std::string role = str(kRole)) {
  return obj({{"files", std::move(files)}, {"roleArn", std::move(role)}});
}

ApiError create_error(std::string_view body) {
  auto r = parse_create_stream(body);
  EXPECT_FALSE(r.has_value()) << body;
  if (r.has_value()) return {};
  return r.error();
}

ApiError update_error(std::string_view body) {
  auto r = parse_update_stream(body);
  EXPECT_FALSE(r.has_value()) << body;
  if (r.has_value()) return {};
  return r.error();
}

ApiError query_error(std::string_view query) {
  auto r = parse_list_query(query);
  EXPECT_FALSE(r.has_value()) << query;
  if (r.has_value()) return {};
  return r.error();
}

bool valid_json(const std::string& text) {
  simdjson::dom::parser parser;
  simdjson::dom::element e;
  return parser.parse(text).get(e) == simdjson::SUCCESS;
}

// --- create: success -------------------------------------------------------------------------

TEST(ControlCreate, MinimalBodyParses) {
  auto r = parse_create_stream(create_body());
  ASSERT_TRUE(r.has_value()) << error_response(r.error());
  EXPECT_EQ(r->description, "");
  EXPECT_EQ(r->role_arn, kRole);
  EXPECT_THAT(r->tags, IsEmpty());
  ASSERT_THAT(r->files, SizeIs(1));
  EXPECT_EQ(r->files[0].file_id, 0u);
  EXPECT_EQ(r->files[0].location.bucket, "fw");
  EXPECT_EQ(r->files[0].location.key, "a.bin");
  EXPECT_FALSE(r->files[0].location.version.has_value());
}

TEST(ControlCreate, FullBodyParsesEveryField) {
  const std::string body = R"({
    "description": "Firmware 1.2 \u00e9",
    "files": [
      {"fileId": 7, "s3Location": {"bucket": "firmware", "key": "dir/image.bin",
                                   "version": "0123456789abcdef0123456789abcdef"}},
      {"s3Location": {"key": "other.bin", "bucket": "models"}, "fileId": 255}
    ],
    "roleArn": "arn:aws:iam::123456789012:role/chunkd",
    "tags": [{"Key": "team", "Value": "ota"}, {"Key": "empty"}]
  })";
  auto r = parse_create_stream(body);
  ASSERT_TRUE(r.has_value()) << error_response(r.error());
  EXPECT_EQ(r->description, "Firmware 1.2 \xc3\xa9");
  ASSERT_THAT(r->files, SizeIs(2));
  EXPECT_EQ(r->files[0].file_id, 7u);
  EXPECT_EQ(r->files[0].location.bucket, "firmware");
  EXPECT_EQ(r->files[0].location.key, "dir/image.bin");
  EXPECT_EQ(r->files[0].location.version, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(r->files[1].file_id, 255u);
  EXPECT_EQ(r->files[1].location.bucket, "models");
  EXPECT_EQ(r->files[1].location.key, "other.bin");
  EXPECT_EQ(r->role_arn, kRole);
  ASSERT_THAT(r->tags, SizeIs(2));
  EXPECT_EQ(r->tags[0].key, "team");
  EXPECT_EQ(r->tags[0].value, "ota");
  EXPECT_EQ(r->tags[1].key, "empty");
  EXPECT_EQ(r->tags[1].value, "");
}

// --- create: body shape ----------------------------------------------------------------------

TEST(ControlCreate, BodyThatIsNotAnObjectIsRejected) {
  for (std::string_view body : {"[]", "\"x\"", "42", "null", "true", "[{\"files\":[]}]"}) {
    const ApiError e = create_error(body);
    EXPECT_EQ(e.code, ApiErrorCode::ValidationError) << body;
    EXPECT_EQ(e.message, "request body is not a JSON object") << body;
    EXPECT_THAT(e.details, IsEmpty());
  }
}

TEST(ControlCreate, InvalidJsonIsRejected) {
  for (std::string_view body :
       {"", " ", "{", "{\"files\":}", "{'a':1}", "{\"a\":1,}", "{\"a\":1} x", "{\"a\":\"\\ud800\"}",
        "{\"fileId\":99999999999999999999999}"}) {
    const ApiError e = create_error(body);
    EXPECT_EQ(e.code, ApiErrorCode::ValidationError) << body;
    EXPECT_THAT(e.message, StartsWith("request body is not a JSON object: invalid JSON")) << body;
    EXPECT_THAT(e.details, IsEmpty());
  }
}

TEST(ControlCreate, InvalidUtf8IsRejected) {
  const ApiError e = create_error("{\"description\":\"\xff\xfe\"}");
  EXPECT_EQ(e.code, ApiErrorCode::ValidationError);
  EXPECT_THAT(e.message, StartsWith("request body is not a JSON object: invalid JSON"));
  const ApiError overlong = create_error("{\"description\":\"\xc0\xaf\"}");
  EXPECT_THAT(overlong.message, StartsWith("request body is not a JSON object: invalid JSON"));
}

TEST(ControlCreate, DeepNestingIsRejected) {
  const std::string deep = "{\"description\":" + repeat("[", 40) + repeat("]", 40) + "}";
  const ApiError e = create_error(deep);
  EXPECT_EQ(e.code, ApiErrorCode::ValidationError);
  EXPECT_THAT(e.message, HasSubstr("nests deeper than"));
  // Our own shape (four levels) stays well inside the limit.
  EXPECT_TRUE(parse_create_stream(create_body()).has_value());
}

TEST(ControlCreate, OversizedBodyIsPayloadTooLarge) {
  std::string body = create_body();
  body.append(kMaxControlBodyBytes + 1 - body.size(), ' ');
  const ApiError e = create_error(body);
  EXPECT_EQ(e.code, ApiErrorCode::PayloadTooLarge);
  EXPECT_EQ(http_status(e.code), 413);
  // Exactly at the cap it is parsed (trailing whitespace is fine).
  body.pop_back();
  EXPECT_TRUE(parse_create_stream(body).has_value());
}

TEST(ControlCreate, EmptyObjectReportsBothRequiredFields) {
  const ApiError e = create_error("{}");
  EXPECT_EQ(e.code, ApiErrorCode::ValidationError);
  EXPECT_EQ(e.message, "request body has 2 invalid fields");
  EXPECT_THAT(e.details,
              ElementsAre(Problem("files", "is required"), Problem("roleArn", "is required")));
}

TEST(ControlCreate, UnknownKeysAreRejectedAtEveryLevel) {
  const std::string body = R"({"descripton":"x","files":[{"fileId":0,"fileID":1,
      "s3Location":{"bucket":"b","key":"k","versoin":"v"}}],"roleArn":")" +
                           kRole + R"(","tags":[{"Key":"k","value":"v"}]})";
  const ApiError e = create_error(body);
  EXPECT_EQ(e.message, "request body has 4 invalid fields");
  EXPECT_THAT(e.details, ElementsAre(Problem("descripton", "is not a known field"),
                                     Problem("files[0].fileID", "is not a known field"),
                                     Problem("files[0].s3Location.versoin", "is not a known field"),
                                     Problem("tags[0].value", "is not a known field")));
}

TEST(ControlCreate, LongUnknownKeyIsCutInDetails) {
  const std::string key = repeat("x", 63) + "\xc3\xa9" + repeat("y", 500);
  const ApiError e =
      create_error(obj({{key, "1"}, {"files", files_json(1)}, {"roleArn", str(kRole)}}));
  ASSERT_THAT(e.details, SizeIs(1));
  // Cut at 64 bytes, but not inside the two-byte character that straddles the cut.
  EXPECT_EQ(e.details[0].field, repeat("x", 63) + "...");
  EXPECT_EQ(e.details[0].problem, "is not a known field");
}

TEST(ControlCreate, DuplicateKeysAreRejected) {
  const std::string body = "{\"roleArn\":" + str(kRole) + ",\"files\":" + files_json(1) +
                           ",\"roleArn\":" + str(kRole) + "}";
  const ApiError e = create_error(body);
  EXPECT_THAT(e.details, ElementsAre(Problem("roleArn", "is given more than once")));
  const ApiError nested = create_error(
      create_body(R"([{"fileId":0,"fileId":1,"s3Location":{"bucket":"b","key":"k","key":"j"}}])"));
  EXPECT_THAT(nested.details,
              ElementsAre(Problem("files[0].fileId", "is given more than once"),
                          Problem("files[0].s3Location.key", "is given more than once")));
}

// --- create: wrong JSON types ----------------------------------------------------------------

TEST(ControlCreate, WrongTypesOfTopLevelFields) {
  const ApiError e =
      create_error(R"({"description":5,"files":{"fileId":0},"roleArn":null,"tags":"a=b"})");
  EXPECT_EQ(e.message, "request body has 4 invalid fields");
  EXPECT_THAT(
      e.details,
      ElementsAre(Problem("description", "must be a string"), Problem("files", "must be an array"),
                  Problem("roleArn", "must be a string"), Problem("tags", "must be an array")));
  EXPECT_THAT(create_error(create_body("\"a.bin\"")).details,
              ElementsAre(Problem("files", "must be an array")));
  EXPECT_THAT(create_error(create_body(files_json(1), "[\"x\"]")).details,
              ElementsAre(Problem("roleArn", "must be a string")));
}

TEST(ControlCreate, WrongTypesInsideFiles) {
  const std::string files = R"([
      5,
      {"fileId":"1","s3Location":"fw/a.bin"},
      {"fileId":true,"s3Location":{"bucket":1,"key":[],"version":3}},
      {"fileId":null,"s3Location":{"bucket":{},"key":false,"version":null}},
      {"fileId":[2],"s3Location":[]}
    ])";
  const ApiError e = create_error(create_body(files));
  EXPECT_EQ(e.message, "request body has 13 invalid fields");
  EXPECT_THAT(e.details, ElementsAre(Problem("files[0]", "must be an object"),
                                     Problem("files[1].fileId", "must be an integer"),
                                     Problem("files[1].s3Location", "must be an object"),
                                     Problem("files[2].fileId", "must be an integer"),
                                     Problem("files[2].s3Location.bucket", "must be a string"),
                                     Problem("files[2].s3Location.key", "must be a string"),
                                     Problem("files[2].s3Location.version", "must be a string"),
                                     Problem("files[3].fileId", "must be an integer"),
                                     Problem("files[3].s3Location.bucket", "must be a string"),
                                     Problem("files[3].s3Location.key", "must be a string"),
                                     Problem("files[3].s3Location.version", "must be a string"),
                                     Problem("files[4].fileId", "must be an integer"),
                                     Problem("files[4].s3Location", "must be an object")));
}

TEST(ControlCreate, WrongTypesInsideTags) {
  const ApiError e =
      create_error(obj({{"files", files_json(1)},
                        {"roleArn", str(kRole)},
                        {"tags", R"(["k=v",{"Key":1,"Value":false},{"Key":"a","Value":2}])"}}));
  EXPECT_THAT(e.details, ElementsAre(Problem("tags[0]", "must be an object"),
                                     Problem("tags[1].Key", "must be a string"),
                                     Problem("tags[1].Value", "must be a string"),
                                     Problem("tags[2].Value", "must be a string")));
}

// --- create: files ---------------------------------------------------------------------------

TEST(ControlCreate, FileCountBounds) {
  EXPECT_THAT(create_error(create_body("[]")).details,
              ElementsAre(Problem("files", "must have between 1 and 50 entries")));
  auto fifty = parse_create_stream(create_body(files_json(50)));
  ASSERT_TRUE(fifty.has_value()) << error_response(fifty.error());
  EXPECT_THAT(fifty->files, SizeIs(50));
  EXPECT_EQ(fifty->files[49].file_id, 49u);
  EXPECT_THAT(create_error(create_body(files_json(51))).details,
              ElementsAre(Problem("files", "must have between 1 and 50 entries")));
}

TEST(ControlCreate, FileIdBounds) {
  for (std::string_view ok : {"0", "255", "-0", "17"}) {
    auto r = parse_create_stream(create_body("[{\"fileId\":" + std::string(ok) +
                                             ",\"s3Location\":{\"bucket\":\"b\",\"key\":\"k\"}}]"));
    EXPECT_TRUE(r.has_value()) << ok;
  }
  const std::pair<std::string_view, std::string_view> bad[] = {
      {"256", "must be between 0 and 255"},
      {"-1", "must be between 0 and 255"},
      {"9223372036854775807", "must be between 0 and 255"},
      {"18446744073709551615", "must be between 0 and 255"},
      {"-9223372036854775808", "must be between 0 and 255"},
      {"1.5", "must be an integer"},
      {"1.0", "must be an integer"},
      {"1e2", "must be an integer"},
      {"\"1\"", "must be an integer"},
  };
  for (const auto& [value, problem] : bad) {
    const ApiError e =
        create_error(create_body("[{\"fileId\":" + std::string(value) +
                                 ",\"s3Location\":{\"bucket\":\"b\",\"key\":\"k\"}}]"));
    EXPECT_THAT(e.details, ElementsAre(Problem("files[0].fileId", std::string(problem)))) << value;
  }
}

TEST(ControlCreate, DuplicateFileIdsAreRejected) {
  const ApiError e = create_error(create_body(
      arr({file_entry(3), file_entry(4), file_entry(3), file_entry(4), file_entry(3)})));
  EXPECT_EQ(e.message, "request body has 3 invalid fields");
  EXPECT_THAT(
      e.details,
      ElementsAre(Problem("files[2].fileId", "must be unique: files[0] already uses fileId 3"),
                  Problem("files[3].fileId", "must be unique: files[1] already uses fileId 4"),
                  Problem("files[4].fileId", "must be unique: files[0] already uses fileId 3")));
}

TEST(ControlCreate, MissingFileMembers) {
  const ApiError e = create_error(create_body(
      R"([{}, {"fileId":1}, {"fileId":2,"s3Location":{}}, {"s3Location":{"key":"k"}}])"));
  EXPECT_THAT(e.details, ElementsAre(Problem("files[0].fileId", "is required"),
                                     Problem("files[0].s3Location", "is required"),
                                     Problem("files[1].s3Location", "is required"),
                                     Problem("files[2].s3Location.bucket", "is required"),
                                     Problem("files[2].s3Location.key", "is required"),
                                     Problem("files[3].s3Location.bucket", "is required"),
                                     Problem("files[3].fileId", "is required")));
}

TEST(ControlCreate, BucketAndKeyRules) {
  EXPECT_THAT(create_error(create_body(arr({file_entry(0, "", "")}))).details,
              ElementsAre(Problem("files[0].s3Location.bucket", "must not be empty"),
                          Problem("files[0].s3Location.key", "must not be empty")));
  EXPECT_TRUE(
      parse_create_stream(create_body(arr({file_entry(0, repeat("b", 255), repeat("k", 1024))})))
          .has_value());
  EXPECT_THAT(
      create_error(create_body(arr({file_entry(0, repeat("b", 256), repeat("k", 1025))}))).details,
      ElementsAre(Problem("files[0].s3Location.bucket", "must be at most 255 bytes"),
                  Problem("files[0].s3Location.key", "must be at most 1024 bytes")));
  EXPECT_THAT(
      create_error(create_body(arr({file_entry(0, "fw\n", std::string("a\0b", 3))}))).details,
      ElementsAre(Problem("files[0].s3Location.bucket",
                          "must not contain control characters (U+0000-U+001F, U+007F)"),
                  Problem("files[0].s3Location.key",
                          "must not contain control characters (U+0000-U+001F, U+007F)")));
}

TEST(ControlCreate, VersionRules) {
  auto with_version = [](const std::string& v) {
    return create_body(
        "[{\"fileId\":0,\"s3Location\":{\"bucket\":\"b\",\"key\":\"k\",\"version\":" + v + "}}]");
  };
  EXPECT_TRUE(parse_create_stream(with_version(str("v"))).has_value());
  auto max = parse_create_stream(with_version(str(repeat("a", 128))));
  ASSERT_TRUE(max.has_value());
  EXPECT_EQ(max->files[0].location.version, repeat("a", 128));
  EXPECT_THAT(
      create_error(with_version(str(""))).details,
      ElementsAre(Problem("files[0].s3Location.version", "must be between 1 and 128 characters")));
  EXPECT_THAT(
      create_error(with_version(str(repeat("a", 129)))).details,
      ElementsAre(Problem("files[0].s3Location.version", "must be between 1 and 128 characters")));
  EXPECT_THAT(create_error(with_version(str("a\tb"))).details,
              ElementsAre(Problem("files[0].s3Location.version",
                                  "must not contain control characters (U+0000-U+001F, U+007F)")));
}

// --- create: description ---------------------------------------------------------------------

std::string body_with_description(const std::string& description_json) {
  return obj(
      {{"description", description_json}, {"files", files_json(1)}, {"roleArn", str(kRole)}});
}

TEST(ControlCreate, DescriptionLengthCountsCodePoints) {
  for (std::string_view unit : {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"}) {
    auto ok = parse_create_stream(body_with_description(str(repeat(unit, 2028))));
    ASSERT_TRUE(ok.has_value()) << unit.size() << "-byte characters";
    EXPECT_EQ(ok->description, repeat(unit, 2028));
    EXPECT_THAT(create_error(body_with_description(str(repeat(unit, 2029)))).details,
                ElementsAre(Problem("description", "must be at most 2028 characters")))
        << unit.size() << "-byte characters";
  }
  // Escaped in the JSON: still counted after decoding (a surrogate pair is one character).
  EXPECT_TRUE(
      parse_create_stream(body_with_description("\"" + repeat("\\ud83d\\ude00", 2028) + "\""))
          .has_value());
  EXPECT_FALSE(parse_create_stream(body_with_description("\"" + repeat("\\u00e9", 2029) + "\""))
                   .has_value());
}

TEST(ControlCreate, DescriptionRejectsControlCharacters) {
  for (std::string_view escaped : {"\\u0000", "\\n", "\\t", "\\u001f", "\\u007f", "\\r"}) {
    const ApiError e = create_error(body_with_description("\"ok " + std::string(escaped) + "\""));
    EXPECT_THAT(e.details,
                ElementsAre(Problem("description",
                                    "must not contain control characters (U+0000-U+001F, U+007F)")))
        << escaped;
  }
  // U+0080 and above are not control characters here; an empty description is fine.
  EXPECT_TRUE(parse_create_stream(body_with_description("\"\\u0080 \\u00a0\"")).has_value());
  EXPECT_TRUE(parse_create_stream(body_with_description("\"\"")).has_value());
}

TEST(ControlCreate, DescriptionTooLongAndControlCharacterAreBothReported) {
  const ApiError e = create_error(body_with_description("\"" + repeat("a", 2029) + "\\n\""));
  EXPECT_EQ(e.message, "request body has 2 invalid fields");
  EXPECT_THAT(e.details,
              ElementsAre(Problem("description", "must be at most 2028 characters"),
                          Problem("description",
                                  "must not contain control characters (U+0000-U+001F, U+007F)")));
}

// --- create: roleArn -------------------------------------------------------------------------

TEST(ControlCreate, RoleArnLengthBounds) {
  const std::string problem = "must be between 20 and 2048 characters";
  EXPECT_THAT(create_error(create_body(files_json(1), str(repeat("r", 19)))).details,
              ElementsAre(Problem("roleArn", problem)));
  EXPECT_TRUE(parse_create_stream(create_body(files_json(1), str(repeat("r", 20)))).has_value());
  EXPECT_TRUE(parse_create_stream(create_body(files_json(1), str(repeat("r", 2048)))).has_value());
  EXPECT_THAT(create_error(create_body(files_json(1), str(repeat("r", 2049)))).details,
              ElementsAre(Problem("roleArn", problem)));
  EXPECT_THAT(create_error(create_body(files_json(1), str(""))).details,
              ElementsAre(Problem("roleArn", problem)));
  // Characters, not bytes: 19 two-byte characters are 38 bytes but still too short.
  EXPECT_THAT(create_error(create_body(files_json(1), str(repeat("\xc3\xa9", 19)))).details,
              ElementsAre(Problem("roleArn", problem)));
  EXPECT_TRUE(
      parse_create_stream(create_body(files_json(1), str(repeat("\xc3\xa9", 20)))).has_value());
  EXPECT_THAT(create_error(create_body(files_json(1), str(repeat("\xc3\xa9", 2049)))).details,
              ElementsAre(Problem("roleArn", problem)));
}

// --- create: tags ----------------------------------------------------------------------------

std::string body_with_tags(const std::string& tags_json) {
  return obj({{"files", files_json(1)}, {"roleArn", str(kRole)}, {"tags", tags_json}});
}

std::string tags_json(std::size_t n) {
  std::vector<std::string> items;
  for (std::size_t i = 0; i < n; ++i) {
    items.push_back(obj({{"Key", str("k" + std::to_string(i))}, {"Value", str("v")}}));
  }
  return arr(items);
}

TEST(ControlCreate, TagCountBounds) {
  EXPECT_TRUE(parse_create_stream(body_with_tags("[]")).has_value());
  auto fifty = parse_create_stream(body_with_tags(tags_json(50)));
  ASSERT_TRUE(fifty.has_value());
  EXPECT_THAT(fifty->tags, SizeIs(50));
  EXPECT_THAT(create_error(body_with_tags(tags_json(51))).details,
              ElementsAre(Problem("tags", "must have at most 50 entries")));
}

TEST(ControlCreate, TagKeyAndValueLengths) {
  auto tag = [](const std::string& key, const std::string& value) {
    return body_with_tags("[" + obj({{"Key", str(key)}, {"Value", str(value)}}) + "]");
  };
  EXPECT_TRUE(parse_create_stream(tag(repeat("k", 128), repeat("v", 256))).has_value());
  EXPECT_TRUE(parse_create_stream(tag("k", "")).has_value());
  EXPECT_TRUE(parse_create_stream(tag(repeat("\xe2\x82\xac", 128), repeat("\xe2\x82\xac", 256)))
                  .has_value());
  EXPECT_THAT(create_error(tag("", "v")).details,
              ElementsAre(Problem("tags[0].Key", "must be between 1 and 128 characters")));
  EXPECT_THAT(create_error(tag(repeat("k", 129), repeat("v", 257))).details,
              ElementsAre(Problem("tags[0].Key", "must be between 1 and 128 characters"),
                          Problem("tags[0].Value", "must be between 0 and 256 characters")));
  EXPECT_THAT(create_error(tag(repeat("\xe2\x82\xac", 129), "v")).details,
              ElementsAre(Problem("tags[0].Key", "must be between 1 and 128 characters")));
}

TEST(ControlCreate, TagKeyRequiredAndUnique) {
  const ApiError e = create_error(body_with_tags(
      R"([{"Key":"a","Value":"1"},{"Value":"2"},{"Key":"b"},{"Key":"a","Value":"3"},{"Key":"A"},{"Key":"b"}])"));
  EXPECT_THAT(e.details,
              ElementsAre(Problem("tags[1].Key", "is required"),
                          Problem("tags[3].Key", "must be unique: tags[0] already uses this Key"),
                          Problem("tags[5].Key", "must be unique: tags[2] already uses this Key")));
}

// --- create: many problems at once -----------------------------------------------------------

TEST(ControlCreate, EveryProblemIsReportedTogether) {
  const std::string body = R"({"description":"line\nbreak","files":[
      {"fileId":0,"s3Location":{"bucket":"fw","key":"a"}},
      {"fileId":300,"s3Location":{"bucket":"","key":"b"}},
      {"fileId":0,"s3Location":{"bucket":"fw","key":"c"}}],
    "roleArn":"short","tags":[{"Key":"","Value":"x"}],"extra":1})";
  const ApiError e = create_error(body);
  EXPECT_EQ(e.code, ApiErrorCode::ValidationError);
  EXPECT_EQ(e.message, "request body has 7 invalid fields");
  EXPECT_THAT(
      e.details,
      ElementsAre(
          Problem("description", "must not contain control characters (U+0000-U+001F, U+007F)"),
          Problem("files[1].fileId", "must be between 0 and 255"),
          Problem("files[1].s3Location.bucket", "must not be empty"),
          Problem("files[2].fileId", "must be unique: files[0] already uses fileId 0"),
          Problem("roleArn", "must be between 20 and 2048 characters"),
          Problem("tags[0].Key", "must be between 1 and 128 characters"),
          Problem("extra", "is not a known field")));
}

TEST(ControlCreate, SingleProblemMessageIsSingular) {
  EXPECT_EQ(create_error(create_body("[]")).message, "request body has 1 invalid field");
}

TEST(ControlCreate, DetailsAreCappedButCounted) {
  std::string body = "{\"files\":" + files_json(1) + ",\"roleArn\":" + str(kRole);
  for (int i = 0; i < 150; ++i) body += ",\"u" + std::to_string(i) + "\":0";
  body += "}";
  const ApiError e = create_error(body);
  EXPECT_THAT(e.details, SizeIs(kMaxErrorDetails));
  EXPECT_EQ(e.message, "request body has 150 invalid fields (first 100 listed)");
  EXPECT_THAT(e.details.front(), Problem("u0", "is not a known field"));
  EXPECT_THAT(e.details.back(), Problem("u99", "is not a known field"));
}

// --- update ----------------------------------------------------------------------------------

TEST(ControlUpdate, EachFieldAloneIsEnough) {
  auto d = parse_update_stream(R"({"description":"new"})");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->description, "new");
  EXPECT_FALSE(d->files.has_value());
  EXPECT_FALSE(d->role_arn.has_value());

  auto f = parse_update_stream("{\"files\":" + files_json(2) + "}");
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->description.has_value());
  ASSERT_TRUE(f->files.has_value());
  EXPECT_THAT(*f->files, SizeIs(2));
  EXPECT_FALSE(f->role_arn.has_value());

  auto r = parse_update_stream("{\"roleArn\":" + str(kRole) + "}");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->role_arn, kRole);
  EXPECT_FALSE(r->description.has_value());
  EXPECT_FALSE(r->files.has_value());

  auto empty_description = parse_update_stream(R"({"description":""})");
  ASSERT_TRUE(empty_description.has_value());
  EXPECT_EQ(empty_description->description, "");
}

TEST(ControlUpdate, AllFieldsTogether) {
  auto u = parse_update_stream(
      obj({{"description", str("d")}, {"files", files_json(3)}, {"roleArn", str(kRole)}}));
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->description, "d");
  EXPECT_THAT(*u->files, SizeIs(3));
  EXPECT_EQ(u->role_arn, kRole);
}

TEST(ControlUpdate, EmptyBodyNeedsAtLeastOneField) {
  const ApiError e = update_error("{}");
  EXPECT_EQ(e.code, ApiErrorCode::ValidationError);
  EXPECT_EQ(e.message, "request body has 1 invalid field");
  EXPECT_THAT(e.details,
              ElementsAre(Problem(
                  "body", "must set at least one of description, files, roleArn, allowedThings")));
}

TEST(ControlUpdate, TagsAreNotUpdatable) {
  EXPECT_THAT(update_error(R"({"description":"d","tags":[]})").details,
              ElementsAre(Problem("tags", "cannot be updated: tags are set at create time")));
  EXPECT_THAT(
      update_error(R"({"tags":[{"Key":"a"}]})").details,
      ElementsAre(
          Problem("tags", "cannot be updated: tags are set at create time"),
          Problem("body", "must set at least one of description, files, roleArn, allowedThings")));
}

TEST(ControlUpdate, PresentFieldsFollowCreateRules) {
  EXPECT_THAT(update_error(R"({"files":[]})").details,
              ElementsAre(Problem("files", "must have between 1 and 50 entries")));
  EXPECT_THAT(update_error("{\"files\":" + files_json(51) + "}").details,
              ElementsAre(Problem("files", "must have between 1 and 50 entries")));
  EXPECT_THAT(update_error(R"({"roleArn":"too short"})").details,
              ElementsAre(Problem("roleArn", "must be between 20 and 2048 characters")));
  EXPECT_THAT(update_error("{\"description\":" + str(repeat("\xc3\xa9", 2029)) + "}").details,
              ElementsAre(Problem("description", "must be at most 2028 characters")));
  EXPECT_THAT(
      update_error(R"({"description":1,"files":"x","roleArn":false})").details,
      ElementsAre(Problem("description", "must be a string"), Problem("files", "must be an array"),
                  Problem("roleArn", "must be a string")));
  EXPECT_THAT(
      update_error("{\"files\":" + arr({file_entry(1), file_entry(1, "", "k")}) + "}").details,
      ElementsAre(Problem("files[1].fileId", "must be unique: files[0] already uses fileId 1"),
                  Problem("files[1].s3Location.bucket", "must not be empty")));
}

TEST(ControlUpdate, UnknownKeysAndShapeErrors) {
  EXPECT_THAT(update_error(R"({"description":"d","streamVersion":2})").details,
              ElementsAre(Problem("streamVersion", "is not a known field")));
  EXPECT_EQ(update_error("[]").message, "request body is not a JSON object");
  EXPECT_THAT(update_error("").message, StartsWith("request body is not a JSON object"));
}

// --- streamId --------------------------------------------------------------------------------

TEST(ControlStreamId, ValidIds) {
  for (const std::string& id :
       {std::string("a"), std::string("Az09_-"), repeat("x", 128), std::string("firmware-v1_2")}) {
    EXPECT_FALSE(validate_stream_id(id).has_value()) << id;
  }
}

TEST(ControlStreamId, InvalidIds) {
  auto e = validate_stream_id("");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, ApiErrorCode::ValidationError);
  EXPECT_EQ(e->message, "invalid streamId");
  EXPECT_THAT(e->details, ElementsAre(Problem("streamId", "must not be empty")));

  e = validate_stream_id(repeat("x", 129));
  ASSERT_TRUE(e.has_value());
  EXPECT_THAT(e->details, ElementsAre(Problem("streamId", "must be at most 128 characters")));

  const std::string chars = "must contain only letters a-z A-Z, digits 0-9, '_' and '-'";
  for (std::string_view id : {"a/b", "a.b", "a b", "a:b", "\xc3\xa9", "a%2Fb", "+"}) {
    e = validate_stream_id(id);
    ASSERT_TRUE(e.has_value()) << id;
    EXPECT_THAT(e->details, ElementsAre(Problem("streamId", chars))) << id;
  }
  e = validate_stream_id(std::string_view("a\0b", 3));
  ASSERT_TRUE(e.has_value());

  e = validate_stream_id(repeat("x", 128) + "/");
  ASSERT_TRUE(e.has_value());
  EXPECT_THAT(e->details, ElementsAre(Problem("streamId", "must be at most 128 characters"),
                                      Problem("streamId", chars)));
}

TEST(ControlStreamId, WarningOnlyOverDeviceLimit) {
  EXPECT_FALSE(stream_id_warning(repeat("x", 44)).has_value());
  auto w = stream_id_warning(repeat("x", 45));
  ASSERT_TRUE(w.has_value());
  EXPECT_THAT(*w, HasSubstr("longer than 44 characters"));
  EXPECT_TRUE(stream_id_warning(repeat("x", 128)).has_value());
}

// --- list query ------------------------------------------------------------------------------

TEST(ControlListQuery, Defaults) {
  for (std::string_view q : {"", "&", "&&", "unknown=1", "foo&bar=baz"}) {
    auto r = parse_list_query(q);
    ASSERT_TRUE(r.has_value()) << q;
    EXPECT_EQ(r->max_results, kDefaultListResults);
    EXPECT_FALSE(r->after_id.has_value());
    EXPECT_TRUE(r->ascending);
  }
}

TEST(ControlListQuery, MaxResultsBounds) {
  EXPECT_EQ(parse_list_query("maxResults=1")->max_results, 1u);
  EXPECT_EQ(parse_list_query("maxResults=250")->max_results, 250u);
  EXPECT_EQ(parse_list_query("maxResults=0042")->max_results, 42u);
  for (std::string_view q :
       {"maxResults=0", "maxResults=251", "maxResults=99999999999999999999999"}) {
    EXPECT_THAT(query_error(q).details,
                ElementsAre(Problem("maxResults", "must be between 1 and 250")))
        << q;
  }
  for (std::string_view q :
       {"maxResults=abc", "maxResults=", "maxResults", "maxResults=-1", "maxResults=+5",
        "maxResults=1.0", "maxResults=1e2", "maxResults=5x"}) {
    EXPECT_THAT(query_error(q).details, ElementsAre(Problem("maxResults", "must be an integer")))
        << q;
  }
}

TEST(ControlListQuery, IsAscendingOrder) {
  EXPECT_TRUE(parse_list_query("isAscendingOrder=true")->ascending);
  EXPECT_FALSE(parse_list_query("isAscendingOrder=false")->ascending);
  EXPECT_FALSE(parse_list_query("isAscendingOrder=False")->ascending);
  EXPECT_TRUE(parse_list_query("isAscendingOrder=TRUE")->ascending);
  for (std::string_view q : {"isAscendingOrder=yes", "isAscendingOrder=", "isAscendingOrder=1",
                             "isAscendingOrder=+true", "isAscendingOrder=truee"}) {
    EXPECT_THAT(query_error(q).details,
                ElementsAre(Problem("isAscendingOrder", "must be true or false")))
        << q;
  }
}

TEST(ControlListQuery, TokenRoundTrip) {
  for (const std::string& id : {std::string("a"), std::string("ab"), std::string("abc"),
                                std::string("stream-1_X"), repeat("z", 127), repeat("Z", 128)}) {
    const std::string token = encode_next_token(id);
    EXPECT_EQ(
        token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos)
        << "token must be URL-safe: " << token;
    auto r = parse_list_query("nextToken=" + token);
    ASSERT_TRUE(r.has_value()) << id;
    EXPECT_EQ(r->after_id, id);
  }
  EXPECT_EQ(encode_next_token("abc"), "djE6YWJj");  // base64url("v1:abc")
}

TEST(ControlListQuery, ForgedTokensAreRejected) {
  const std::string problem = "is not a valid token (use the nextToken of a previous page)";
  for (const std::string& token : {
           std::string("garbage!"),
           std::string("dGVzdA"),      // "test": no version prefix
           std::string("djE6"),        // "v1:" with no id
           std::string("djE6YS9i"),    // "v1:a/b": not a stream id
           std::string("djI6YWJj"),    // "v2:abc"
           std::string("djE6YWJj=="),  // padding is not part of our tokens
           std::string("djE6YWJjZ"),   // dangling character (length % 4 == 1)
           std::string("djE6YWJjZB"),  // non-zero unused bits
           std::string("djE6YWJj+/"),  // standard alphabet, not URL-safe
           encode_next_token(repeat("a", 129)),
       }) {
    auto r = parse_list_query("nextToken=" + token);
    ASSERT_FALSE(r.has_value()) << token;
    EXPECT_THAT(r.error().details, ElementsAre(Problem("nextToken", problem))) << token;
  }
}

TEST(ControlListQuery, EmptyTokenMeansFirstPage) {
  auto r = parse_list_query("nextToken=&maxResults=5");
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->after_id.has_value());
  EXPECT_EQ(r->max_results, 5u);
}

TEST(ControlListQuery, PercentDecoding) {
  auto r = parse_list_query("max%52esults=%37&is%41scendingOrder=f%61lse&nextToken=" +
                            encode_next_token("s1"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->max_results, 7u);
  EXPECT_FALSE(r->ascending);
  EXPECT_EQ(r->after_id, "s1");
  EXPECT_THAT(query_error("maxResults=%3").details,
              ElementsAre(Problem("maxResults", "is not validly percent-encoded")));
  EXPECT_THAT(query_error("nextToken=%zz").details,
              ElementsAre(Problem("nextToken", "is not validly percent-encoded")));
  EXPECT_THAT(query_error("isAscendingOrder=%").details,
              ElementsAre(Problem("isAscendingOrder", "is not validly percent-encoded")));
  // '+' is a space: "max+Results" is an unknown key, so it is ignored.
  EXPECT_EQ(parse_list_query("max+Results=3")->max_results, kDefaultListResults);
  // An undecodable or unknown key is ignored, whatever its value.
  EXPECT_TRUE(parse_list_query("%zz=1&other=%").has_value());
}

TEST(ControlListQuery, LastDuplicateWins) {
  EXPECT_EQ(parse_list_query("maxResults=0&maxResults=5")->max_results, 5u);
  EXPECT_THAT(query_error("maxResults=5&maxResults=abc").details,
              ElementsAre(Problem("maxResults", "must be an integer")));
  EXPECT_TRUE(parse_list_query("isAscendingOrder=false&isAscendingOrder=true")->ascending);
  EXPECT_FALSE(parse_list_query("nextToken=bad!&nextToken=")->after_id.has_value());
}

TEST(ControlListQuery, EveryProblemIsReported) {
  const ApiError e = query_error("maxResults=0&isAscendingOrder=x&nextToken=zz&other=1");
  EXPECT_EQ(e.code, ApiErrorCode::ValidationError);
  EXPECT_EQ(e.message, "query has 3 invalid parameters");
  EXPECT_THAT(e.details,
              ElementsAre(Problem("maxResults", "must be between 1 and 250"),
                          Problem("nextToken",
                                  "is not a valid token (use the nextToken of a previous page)"),
                          Problem("isAscendingOrder", "must be true or false")));
  EXPECT_EQ(query_error("maxResults=x").message, "query has 1 invalid parameter");
}

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
