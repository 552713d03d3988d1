// Helpers for the control-plane tests (tests/protocol/control*_test.cpp): JSON bodies built from
// raw member values, the parse of a body or query that must fail, and a matcher for one
// FieldProblem of an ApiError's details. A test file takes them, and the gmock matchers the
// control tests use, with `using namespace test_control;`.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/control.hpp"

namespace chunkd::protocol::test_control {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::StartsWith;

inline ::testing::Matcher<const FieldProblem&> Problem(const std::string& field,
                                                       const std::string& problem) {
  return ::testing::AllOf(::testing::Field(&FieldProblem::field, field),
                          ::testing::Field(&FieldProblem::problem, problem));
}

inline std::string str(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

inline std::string repeat(std::string_view unit, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += unit;
  return out;
}

// A JSON object from raw member values: obj({{"a", "1"}, {"b", str("x")}}).
inline std::string obj(std::initializer_list<std::pair<std::string_view, std::string>> members) {
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

inline std::string arr(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += items[i];
  }
  out += ']';
  return out;
}

inline std::string file_entry(int id, std::string_view bucket = "fw",
                              std::string_view key = "a.bin") {
  return obj({{"fileId", std::to_string(id)},
              {"s3Location", obj({{"bucket", str(bucket)}, {"key", str(key)}})}});
}

inline std::string files_json(std::size_t n) {
  std::vector<std::string> items;
  for (std::size_t i = 0; i < n; ++i) items.push_back(file_entry(static_cast<int>(i)));
  return arr(items);
}

inline const std::string kRole = "arn:aws:iam::123456789012:role/chunkd";  // 37 characters

// A valid create body with `files` and `roleArn` replaced by raw JSON when given.
inline std::string create_body(std::string files = files_json(1), std::string role = str(kRole)) {
  return obj({{"files", std::move(files)}, {"roleArn", std::move(role)}});
}

inline ApiError create_error(std::string_view body) {
  auto r = parse_create_stream(body);
  EXPECT_FALSE(r.has_value()) << body;
  if (r.has_value()) return {};
  return r.error();
}

inline ApiError update_error(std::string_view body) {
  auto r = parse_update_stream(body);
  EXPECT_FALSE(r.has_value()) << body;
  if (r.has_value()) return {};
  return r.error();
}

inline ApiError query_error(std::string_view query) {
  auto r = parse_list_query(query);
  EXPECT_FALSE(r.has_value()) << query;
  if (r.has_value()) return {};
  return r.error();
}

inline bool valid_json(const std::string& text) {
  simdjson::dom::parser parser;
  simdjson::dom::element e;
  return parser.parse(text).get(e) == simdjson::SUCCESS;
}

}  // namespace chunkd::protocol::test_control
