// Create bodies (protocol/control.hpp, SPEC.md §2): parse_create_stream on every field, its bounds
// and wrong types, unknown and duplicate keys, and every problem reported together.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/control.hpp"
#include "tests/protocol/control_fixture.hpp"

namespace chunkd::protocol {
namespace {

using namespace test_control;

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

}  // namespace
}  // namespace chunkd::protocol
