// Update bodies, stream ids and the list query (protocol/control.hpp, SPEC.md §2):
// parse_update_stream against the create rules, validate_stream_id and its device-limit warning,
// parse_list_query with its bounds, tokens and percent-decoding.
#include "protocol/control.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "tests/protocol/control_fixture.hpp"

namespace chunkd::protocol {
namespace {

using namespace test_control;

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

}  // namespace
}  // namespace chunkd::protocol
