// libFuzzer target for the control-plane request parsers (protocol/control.hpp): the same bytes go
// through parse_create_stream, parse_update_stream and parse_list_query. Whatever they answer is
// re-encoded with the response functions and must come out as valid JSON (checked with simdjson),
// with the parsed strings surviving the round trip; parse results must respect the documented
// bounds, and a decoded nextToken must round-trip through encode_next_token. allowedThings must
// come out valid, bounded and distinct, and round-trip through describe and list. The matcher has
// its own target, thing_pattern_fuzz.
#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"
#include "protocol/thing_pattern.hpp"

namespace {

using namespace chunkd::protocol;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "control_body_fuzz: invariant failed: %s\n", what);
    std::abort();
  }
}

// One parser for the whole run: a parser allocates its buffers on first use, and building one per
// check made the allocation, not chunkd's parsers, most of the time spent per input.
simdjson::dom::parser& json_parser() {
  static simdjson::dom::parser parser;
  return parser;
}

// Parses `text` as JSON; aborts when it is not. The element lives until the next parse.
simdjson::dom::element must_parse(simdjson::dom::parser& parser, const std::string& text) {
  simdjson::dom::element root;
  const auto err = parser.parse(text).get(root);
  if (err != simdjson::SUCCESS) {
    std::fprintf(stderr, "control_body_fuzz: invalid JSON output (%s): %s\n",
                 simdjson::error_message(err), text.c_str());
    std::abort();
  }
  return root;
}

void check_error(const ApiError& e) {
  check(e.code == ApiErrorCode::ValidationError || e.code == ApiErrorCode::PayloadTooLarge,
        "parse errors are VALIDATION_ERROR or PAYLOAD_TOO_LARGE");
  check(e.details.size() <= kMaxErrorDetails, "details are capped");
  check(!e.message.empty(), "error has a message");
  auto& parser = json_parser();
  const std::string text = error_response(e);
  auto root = must_parse(parser, text);
  bool success = true;
  check(root["success"].get(success) == simdjson::SUCCESS && !success, "success is false");
  std::string_view message;
  check(root["error"]["message"].get(message) == simdjson::SUCCESS, "message is a string");
  check(message == e.message, "message round-trips");
}

void check_files(const std::vector<StreamFileSpec>& files) {
  check(!files.empty() && files.size() <= kMaxFilesPerStream, "1..50 files");
  std::vector<bool> seen(256, false);
  for (const auto& f : files) {
    check(f.file_id <= 255, "fileId 0..255");
    check(!seen[f.file_id], "fileIds unique");
    seen[f.file_id] = true;
    check(!f.location.bucket.empty() && !f.location.key.empty(), "bucket and key non-empty");
  }
}

void check_allowed_things(const AllowedThings& allowed) {
  if (!allowed) return;
  check(!allowed->empty() && allowed->size() <= kMaxAllowedThings, "1..32 allowedThings");
  for (std::size_t i = 0; i < allowed->size(); ++i) {
    check(!thing_pattern_problem((*allowed)[i]).has_value(), "each pattern is valid");
    for (std::size_t j = 0; j < i; ++j) check((*allowed)[i] != (*allowed)[j], "patterns distinct");
  }
}

// allowedThings as a response carries it: absent when `allowed` is nullopt, else equal.
void check_allowed_round_trip(simdjson::dom::element data, const AllowedThings& allowed,
                              const char* what) {
  simdjson::dom::array arr;
  const bool present = data["allowedThings"].get(arr) == simdjson::SUCCESS;
  check(present == allowed.has_value(), what);
  if (!present) return;
  check(arr.size() == allowed->size(), what);
  std::size_t i = 0;
  for (simdjson::dom::element e : arr) {
    std::string_view pattern;
    check(e.get(pattern) == simdjson::SUCCESS && pattern == (*allowed)[i++], what);
  }
}

StreamInfo stream_from(const std::string& description, const std::string& role_arn,
                       const std::vector<Tag>& tags, const std::vector<StreamFileSpec>& files,
                       const AllowedThings& allowed) {
  StreamInfo s;
  s.stream_id = "fuzz";
  s.stream_arn = "arn:chunkd:stream/fuzz";
  s.version = 1;
  s.description = description;
  s.role_arn = role_arn;
  s.tags = tags;
  for (const auto& f : files) {
    s.files.push_back(
        {f.file_id, f.location.bucket, f.location.key, 0, f.location.version.value_or("")});
  }
  s.created_at = "2024-01-01T00:00:00Z";
  s.updated_at = s.created_at;
  s.allowed_things = allowed;
  return s;
}

// Every response built from a parsed body is valid JSON and carries the body's strings back.
void check_responses(const StreamInfo& s) {
  auto& parser = json_parser();
  must_parse(parser, create_response(s, {"w"}));
  auto listed = must_parse(parser, list_response({s}, encode_next_token(s.stream_id)));
  check_allowed_round_trip(listed["data"]["streams"].at(0).value_unsafe(), s.allowed_things,
                           "list carries allowedThings");
  must_parse(parser, delete_response(s.stream_id));
  const std::string text = describe_response(s);
  auto root = must_parse(parser, text);
  check_allowed_round_trip(root["data"].value_unsafe(), s.allowed_things,
                           "describe carries allowedThings");
  std::string_view description;
  check(root["data"]["description"].get(description) == simdjson::SUCCESS &&
            description == s.description,
        "description round-trips");
  std::string_view role;
  check(root["data"]["roleArn"].get(role) == simdjson::SUCCESS && role == s.role_arn,
        "roleArn round-trips");
  simdjson::dom::array files;
  check(root["data"]["files"].get(files) == simdjson::SUCCESS && files.size() == s.files.size(),
        "files round-trip");
  std::size_t i = 0;
  for (simdjson::dom::element f : files) {
    std::string_view key;
    check(f["s3Location"]["key"].get(key) == simdjson::SUCCESS && key == s.files[i].key,
          "key round-trips");
    ++i;
  }
  simdjson::dom::array tags;
  check(root["data"]["tags"].get(tags) == simdjson::SUCCESS && tags.size() == s.tags.size(),
        "tags round-trip");
}

void fuzz_create(std::string_view input) {
  auto r = parse_create_stream(input);
  if (!r) {
    check_error(r.error());
    return;
  }
  check_files(r->files);
  check(r->tags.size() <= kMaxTags, "at most 50 tags");
  check(r->role_arn.size() >= kMinRoleArnChars, "roleArn at least 20 characters");
  check_allowed_things(r->allowed_things);
  check_responses(stream_from(r->description, r->role_arn, r->tags, r->files, r->allowed_things));
}

void fuzz_update(std::string_view input) {
  auto r = parse_update_stream(input);
  if (!r) {
    check_error(r.error());
    return;
  }
  check(r->description || r->files || r->role_arn || r->sets_allowed_things,
        "update sets at least one field");
  check(r->sets_allowed_things || !r->allowed_things, "allowedThings only when given");
  if (r->files) check_files(*r->files);
  check_allowed_things(r->allowed_things);
  check_responses(stream_from(r->description.value_or(""), r->role_arn.value_or(""), {},
                              r->files.value_or(std::vector<StreamFileSpec>{}), r->allowed_things));
}

void fuzz_list_query(std::string_view input) {
  auto r = parse_list_query(input);
  if (!r) {
    check_error(r.error());
    return;
  }
  check(r->max_results >= 1 && r->max_results <= kMaxListResults, "maxResults 1..250");
  if (r->after_id) {
    check(!validate_stream_id(*r->after_id).has_value(), "decoded id is a valid streamId");
    auto again = parse_list_query("nextToken=" + encode_next_token(*r->after_id));
    check(again.has_value() && again->after_id == r->after_id, "nextToken round-trips");
  }
}

void fuzz_stream_id(std::string_view input) {
  auto e = validate_stream_id(input);
  if (e) {
    check_error(*e);
    return;
  }
  auto& parser = json_parser();
  must_parse(parser, delete_response(input));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  fuzz_create(input);
  fuzz_update(input);
  fuzz_list_query(input);
  fuzz_stream_id(input);
  // Any bytes, escaped, make a valid JSON string.
  std::string text;
  append_json_string(text, input);
  auto& parser = json_parser();
  must_parse(parser, text);
  return 0;
}
