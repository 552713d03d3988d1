// Per-stream device access: the thing-name pattern matcher (protocol/thing_pattern.hpp) and the
// allowedThings field of the create and update bodies and responses (protocol/control.hpp).
#include "protocol/thing_pattern.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"

namespace chunkd::protocol {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::Matcher;
using ::testing::Not;
using ::testing::Optional;

// --- the matcher -------------------------------------------------------------------------------

// Quadratic and obviously right: match[i][j] says whether pattern[i..] matches name[j..].
bool reference_match(std::string_view pattern, std::string_view name) {
  const std::size_t m = pattern.size();
  const std::size_t n = name.size();
  std::vector<std::vector<bool>> match(m + 1, std::vector<bool>(n + 1, false));
  match[m][n] = true;
  for (std::size_t i = m; i-- > 0;) {
    for (std::size_t j = n + 1; j-- > 0;) {
      if (pattern[i] == '*') {
        match[i][j] = match[i + 1][j] || (j < n && match[i][j + 1]);
      } else if (j < n && (pattern[i] == '?' || pattern[i] == name[j])) {
        match[i][j] = match[i + 1][j + 1];
      }
    }
  }
  return match[0][0];
}

TEST(ThingPattern, LiteralsMatchOnlyThemselves) {
  EXPECT_TRUE(thing_pattern_matches("gw-01", "gw-01"));
  EXPECT_FALSE(thing_pattern_matches("gw-01", "gw-010"));
  EXPECT_FALSE(thing_pattern_matches("gw-01", "gw-0"));
  EXPECT_FALSE(thing_pattern_matches("gw-01", "GW-01")) << "thing names are case-sensitive";
  EXPECT_TRUE(thing_pattern_matches("a:b_c-d", "a:b_c-d"));
}

TEST(ThingPattern, StarMatchesAnyRunIncludingNone) {
  EXPECT_TRUE(thing_pattern_matches("sensor-*", "sensor-"));
  EXPECT_TRUE(thing_pattern_matches("sensor-*", "sensor-42"));
  EXPECT_FALSE(thing_pattern_matches("sensor-*", "sensor"));
  EXPECT_FALSE(thing_pattern_matches("sensor-*", "my-sensor-1"));
  EXPECT_TRUE(thing_pattern_matches("*", "x"));
  EXPECT_TRUE(thing_pattern_matches("*-edge", "site-3-edge"));
  EXPECT_FALSE(thing_pattern_matches("*-edge", "site-3-edge2"));
  EXPECT_TRUE(thing_pattern_matches("a*b*c", "abc"));
  EXPECT_TRUE(thing_pattern_matches("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(thing_pattern_matches("a*b*c", "aXbYcZ"));
  EXPECT_TRUE(thing_pattern_matches("***", "anything"));
}

TEST(ThingPattern, QuestionMarkMatchesExactlyOneCharacter) {
  EXPECT_TRUE(thing_pattern_matches("gw-0?", "gw-07"));
  EXPECT_FALSE(thing_pattern_matches("gw-0?", "gw-0"));
  EXPECT_FALSE(thing_pattern_matches("gw-0?", "gw-071"));
  EXPECT_TRUE(thing_pattern_matches("?*", "a"));
  EXPECT_FALSE(thing_pattern_matches("??*", "a"));
  EXPECT_TRUE(thing_pattern_matches("*?x", "abx"));
}

// The backtracking cases a greedy matcher gets wrong when it forgets where its '*' started.
TEST(ThingPattern, BacktracksToTheLastStar) {
  EXPECT_TRUE(thing_pattern_matches("*ab", "aab"));
  EXPECT_TRUE(thing_pattern_matches("*aab", "aaab"));
  EXPECT_TRUE(thing_pattern_matches("a*a*a", "aaaa"));
  EXPECT_FALSE(thing_pattern_matches("a*a*a", "aa"));
  EXPECT_TRUE(thing_pattern_matches("*a?b", "xaaYb"));
}

// Hostile shapes (many stars against a long near-miss) still give the right answer; the match is
// a loop with one backtrack point, so there is no recursion to blow up.
TEST(ThingPattern, HostileShapesAgreeWithTheReference) {
  std::string many_stars;
  for (int i = 0; i < 63; ++i) many_stars += "a*";
  many_stars += "b";  // 127 characters
  const std::string near_miss(128, 'a');
  EXPECT_FALSE(thing_pattern_matches(many_stars, near_miss));
  EXPECT_EQ(thing_pattern_matches(many_stars, near_miss), reference_match(many_stars, near_miss));
  std::string hit = near_miss;
  hit.back() = 'b';
  EXPECT_TRUE(thing_pattern_matches(many_stars, hit));
  EXPECT_FALSE(thing_pattern_matches(std::string(128, '?'), std::string(127, 'x')));
  EXPECT_TRUE(thing_pattern_matches(std::string(128, '?'), std::string(128, 'x')));
}

// Every pattern and name over a small alphabet, against the reference.
TEST(ThingPattern, AgreesWithTheReferenceExhaustively) {
  const std::string pattern_alphabet = "ab*?";
  const std::string name_alphabet = "ab";
  auto all_strings = [](const std::string& alphabet, std::size_t max_len) {
    std::vector<std::string> out{""};
    for (std::size_t begin = 0, len = 0; len < max_len; ++len) {
      const std::size_t end = out.size();
      for (std::size_t i = begin; i < end; ++i) {
        for (char c : alphabet) out.push_back(out[i] + c);
      }
      begin = end;
    }
    return out;
  };
  std::size_t checked = 0;
  for (const std::string& p : all_strings(pattern_alphabet, 5)) {
    for (const std::string& n : all_strings(name_alphabet, 6)) {
      ASSERT_EQ(thing_pattern_matches(p, n), reference_match(p, n)) << p << " vs " << n;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 1365u * 127u);
}

// Random longer strings, where the exhaustive test cannot reach.
TEST(ThingPattern, AgreesWithTheReferenceOnRandomInput) {
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int round = 0; round < 20000; ++round) {
    std::string p(next() % 24, ' ');
    for (char& c : p) c = "ab*?"[next() % 4];
    std::string n(next() % 40, ' ');
    for (char& c : n) c = "ab"[next() % 2];
    ASSERT_EQ(thing_pattern_matches(p, n), reference_match(p, n)) << p << " vs " << n;
  }
}

TEST(ThingPattern, NoListAllowsEveryThingAndAListOnlyItsMatches) {
  EXPECT_TRUE(thing_allowed(std::nullopt, "anyone"));
  const AllowedThings list = std::vector<std::string>{"sensor-*", "gw-0?"};
  EXPECT_TRUE(thing_allowed(list, "sensor-1"));
  EXPECT_TRUE(thing_allowed(list, "gw-05"));
  EXPECT_FALSE(thing_allowed(list, "gw-15"));
  EXPECT_FALSE(thing_allowed(std::vector<std::string>{}, "anyone"));  // never stored; fails closed
}

TEST(ThingPattern, ValidationBoundsAndCharacters) {
  EXPECT_EQ(thing_pattern_problem("sensor-*"), std::nullopt);
  EXPECT_EQ(thing_pattern_problem("a:b_c-D9?*"), std::nullopt);
  EXPECT_EQ(thing_pattern_problem(std::string(128, 'x')), std::nullopt);
  EXPECT_THAT(thing_pattern_problem(""),
              Optional(std::string("must be between 1 and 128 characters")));
  EXPECT_THAT(thing_pattern_problem(std::string(129, 'x')),
              Optional(std::string("must be between 1 and 128 characters")));
  const std::vector<std::string_view> bads = {
      "a b", "a/b", "a+b", "a#b", "a.b", "caf\xc3\xa9", "a\nb", std::string_view("a\0b", 3),
      "[ab]"};
  for (std::string_view bad : bads) {
    EXPECT_THAT(thing_pattern_problem(bad), Optional(HasSubstr("must contain only"))) << bad;
  }
}

// --- allowedThings in bodies -------------------------------------------------------------------

Matcher<const FieldProblem&> Problem(const std::string& field, const std::string& problem) {
  return AllOf(Field(&FieldProblem::field, field), Field(&FieldProblem::problem, problem));
}

const std::string kCreatePrefix =
    R"({"files":[{"fileId":0,"s3Location":{"bucket":"fw","key":"a.bin"}}],)"
    R"("roleArn":"arn:aws:iam::123456789012:role/chunkd")";

std::string create_with(std::string_view allowed_json) {
  return kCreatePrefix + ",\"allowedThings\":" + std::string(allowed_json) + "}";
}

std::vector<FieldProblem> create_problems(std::string_view allowed_json) {
  auto r = parse_create_stream(create_with(allowed_json));
  EXPECT_FALSE(r.has_value()) << allowed_json;
  return r ? std::vector<FieldProblem>{} : r.error().details;
}

TEST(AllowedThingsBody, AbsentMeansEveryThingAndAListIsKeptInOrder) {
  auto none = parse_create_stream(kCreatePrefix + "}");
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->allowed_things, std::nullopt);
  auto some = parse_create_stream(create_with(R"(["sensor-*","gw-0?","exact"])"));
  ASSERT_TRUE(some.has_value()) << error_response(some.error());
  EXPECT_THAT(some->allowed_things, Optional(ElementsAre("sensor-*", "gw-0?", "exact")));
}

TEST(AllowedThingsBody, CountBounds) {
  EXPECT_THAT(create_problems("[]"),
              ElementsAre(Problem("allowedThings", "must have between 1 and 32 entries")));
  std::string list = "[";
  for (int i = 0; i < 33; ++i) list += (i ? ",\"t" : "\"t") + std::to_string(i) + "\"";
  list += "]";
  EXPECT_THAT(create_problems(list),
              ElementsAre(Problem("allowedThings", "must have between 1 and 32 entries")));
  list.erase(list.rfind(','));  // 32 entries
  list += "]";
  auto r = parse_create_stream(create_with(list));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->allowed_things->size(), kMaxAllowedThings);
}

TEST(AllowedThingsBody, EachPatternIsCheckedAndEveryProblemReported) {
  EXPECT_THAT(
      create_problems(R"(["ok-*","",7,"bad thing",null,"ok-*"])"),
      ElementsAre(Problem("allowedThings[1]", "must be between 1 and 128 characters"),
                  Problem("allowedThings[2]", "must be a string"),
                  Problem("allowedThings[3]",
                          "must contain only letters a-z A-Z, digits 0-9, ':', '_', '-' and the "
                          "wildcards '*' and '?'"),
                  Problem("allowedThings[4]", "must be a string"),
                  Problem("allowedThings[5]", "must be unique: allowedThings[0] already has it")));
  EXPECT_THAT(create_problems("[\"" + std::string(129, 'x') + "\"]"),
              ElementsAre(Problem("allowedThings[0]", "must be between 1 and 128 characters")));
}

TEST(AllowedThingsBody, WrongTypesAndNullInCreate) {
  EXPECT_THAT(create_problems(R"("sensor-*")"),
              ElementsAre(Problem("allowedThings", "must be an array")));
  EXPECT_THAT(create_problems(R"({"p":"x"})"),
              ElementsAre(Problem("allowedThings", "must be an array")));
  EXPECT_THAT(create_problems("null"), ElementsAre(Problem("allowedThings", "must be an array")));
  auto twice =
      parse_create_stream(kCreatePrefix + R"(,"allowedThings":["a"],"allowedThings":["b"]})");
  ASSERT_FALSE(twice.has_value());
  EXPECT_THAT(twice.error().details,
              ElementsAre(Problem("allowedThings", "is given more than once")));
}

TEST(AllowedThingsBody, UpdateSetsReplacesOrRemovesTheList) {
  auto set = parse_update_stream(R"({"allowedThings":["gw-*"]})");
  ASSERT_TRUE(set.has_value()) << error_response(set.error());
  EXPECT_TRUE(set->sets_allowed_things);
  EXPECT_THAT(set->allowed_things, Optional(ElementsAre("gw-*")));
  EXPECT_FALSE(set->description || set->files || set->role_arn);

  auto remove = parse_update_stream(R"({"allowedThings":null})");
  ASSERT_TRUE(remove.has_value()) << error_response(remove.error());
  EXPECT_TRUE(remove->sets_allowed_things);
  EXPECT_EQ(remove->allowed_things, std::nullopt);

  auto untouched = parse_update_stream(R"({"description":"d"})");
  ASSERT_TRUE(untouched.has_value());
  EXPECT_FALSE(untouched->sets_allowed_things);

  auto bad = parse_update_stream(R"({"allowedThings":[]})");
  ASSERT_FALSE(bad.has_value());
  EXPECT_THAT(bad.error().details,
              ElementsAre(Problem("allowedThings", "must have between 1 and 32 entries")));
}

// --- allowedThings in responses ----------------------------------------------------------------

StreamInfo gated_stream() {
  StreamInfo s;
  s.stream_id = "s";
  s.stream_arn = "arn";
  s.version = 1;
  s.created_at = "t0";
  s.updated_at = "t1";
  s.allowed_things = std::vector<std::string>{"sensor-*", "gw-0?"};
  return s;
}

TEST(AllowedThingsResponse, EverySummaryCarriesTheListWhenThereIsOne) {
  const std::string summary =
      R"("id":"s","streamId":"s","streamArn":"arn","streamVersion":1,"description":"",)"
      R"("created_at":"t0","allowedThings":["sensor-*","gw-0?"])";
  EXPECT_EQ(create_response(gated_stream(), {}),
            R"({"success":true,"data":{)" + summary + R"(,"updated_at":"t1"}})");
  EXPECT_EQ(list_response({gated_stream()}, std::nullopt),
            R"({"success":true,"data":{"streams":[{)" + summary + "}]}}");
  EXPECT_THAT(describe_response(gated_stream()), HasSubstr(summary + R"(,"updated_at":"t1",)"));
  StreamInfo open = gated_stream();
  open.allowed_things.reset();
  EXPECT_THAT(describe_response(open), Not(HasSubstr("allowedThings")));
  EXPECT_THAT(list_response({open}, std::nullopt), Not(HasSubstr("allowedThings")));
}

}  // namespace
}  // namespace chunkd::protocol
