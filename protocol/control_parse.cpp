// Control-plane request parsing (SPEC.md §2): CreateStream/UpdateStream bodies and the streamId
// path segment (the list query is in control_query.cpp). Every problem found is reported as a
// FieldProblem (up to kMaxErrorDetails of them), never just the first. Pure: no I/O, no clock.
// simdjson is used only through its error-code API, so no exception leaves this file.
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/text.hpp"
#include "protocol/control.hpp"
#include "protocol/control_internal.hpp"
#include "protocol/thing_pattern.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {
namespace {

using namespace detail;

// Our bodies nest four levels (body → files → entry → s3Location); anything much deeper is junk.
constexpr std::size_t kMaxJsonDepth = 16;
// Unknown keys are echoed back in details; cut them so a hostile key cannot balloon the reply.
constexpr std::size_t kMaxEchoedKeyBytes = 64;
constexpr std::size_t kMaxBucketBytes = 255;
constexpr std::size_t kMaxKeyBytes = 1024;
constexpr std::size_t kMaxVersionChars = 128;

}  // namespace

// Shared with the other control-body parsers through control_internal.hpp.
namespace detail {

// --- UTF-8 -------------------------------------------------------------------------------------

bool has_control_char(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b < 0x20 || b == 0x7F;
  });
}

// At most `max_bytes` of `s`, cut at a UTF-8 boundary, with "..." appended when cut.
std::string echo_key(std::string_view s) {
  if (s.size() <= kMaxEchoedKeyBytes) return std::string(s);
  std::size_t cut = kMaxEchoedKeyBytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0u) == 0x80u) --cut;
  std::string out(s.substr(0, cut));
  out += "...";
  return out;
}

std::string index_path(std::string_view base, std::size_t i) {
  std::string out(base);
  out += '[';
  out += std::to_string(i);
  out += ']';
  return out;
}

std::string member_path(std::string_view base, std::string_view name) {
  std::string out(base);
  out += '.';
  out += name;
  return out;
}

ApiError body_error(std::string message) {
  return ApiError{ApiErrorCode::ValidationError, std::move(message), {}};
}

// --- JSON field checks -------------------------------------------------------------------------

// Each check reports its own problem and returns nullopt when the value is unusable.
std::optional<std::string_view> as_string(dom::element v, const std::string& field,
                                          Problems& problems) {
  std::string_view s;
  if (v.type() != dom::element_type::STRING || v.get_string().get(s) != simdjson::SUCCESS) {
    problems.add(field, "must be a string");
    return std::nullopt;
  }
  return s;
}

// Code points of `s`, reporting invalid UTF-8 (simdjson validates its input, so this is a guard).
std::optional<std::size_t> chars_of(std::string_view s, const std::string& field,
                                    Problems& problems) {
  auto n = base::utf8_code_points(s);
  if (!n) problems.add(field, "must be valid UTF-8");
  return n;
}

std::string between_chars(std::size_t lo, std::size_t hi) {
  return "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " characters";
}

std::optional<std::string> check_description(dom::element v, const std::string& field,
                                             Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  auto n = chars_of(*s, field, problems);
  if (!n) return std::nullopt;
  bool ok = true;
  if (*n > kMaxDescriptionChars) {
    problems.add(field, "must be at most " + std::to_string(kMaxDescriptionChars) + " characters");
    ok = false;
  }
  if (has_control_char(*s)) {
    problems.add(field, "must not contain control characters (U+0000-U+001F, U+007F)");
    ok = false;
  }
  if (!ok) return std::nullopt;
  return std::string(*s);
}

}  // namespace detail
namespace {

std::optional<std::string> check_role_arn(dom::element v, const std::string& field,
                                          Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  auto n = chars_of(*s, field, problems);
  if (!n) return std::nullopt;
  if (*n < kMinRoleArnChars || *n > kMaxRoleArnChars) {
    problems.add(field, between_chars(kMinRoleArnChars, kMaxRoleArnChars));
    return std::nullopt;
  }
  return std::string(*s);
}

// bucket / key: non-empty, bounded, no control characters (they become a file path).
std::optional<std::string> check_location_part(dom::element v, const std::string& field,
                                               std::size_t max_bytes, Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  if (s->empty()) {
    problems.add(field, "must not be empty");
    return std::nullopt;
  }
  if (s->size() > max_bytes) {
    problems.add(field, "must be at most " + std::to_string(max_bytes) + " bytes");
    return std::nullopt;
  }
  if (has_control_char(*s)) {
    problems.add(field, "must not contain control characters (U+0000-U+001F, U+007F)");
    return std::nullopt;
  }
  return std::string(*s);
}

std::optional<std::string> check_version(dom::element v, const std::string& field,
                                         Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  auto n = chars_of(*s, field, problems);
  if (!n) return std::nullopt;
  if (*n < 1 || *n > kMaxVersionChars) {
    problems.add(field, between_chars(1, kMaxVersionChars));
    return std::nullopt;
  }
  if (has_control_char(*s)) {
    problems.add(field, "must not contain control characters (U+0000-U+001F, U+007F)");
    return std::nullopt;
  }
  return std::string(*s);
}

}  // namespace
namespace detail {

std::optional<std::uint32_t> check_file_id(dom::element v, const std::string& field,
                                           Problems& problems) {
  const auto t = v.type();
  if (t == dom::element_type::UINT64) {  // only integers above INT64_MAX land here
    problems.add(field, "must be between 0 and 255");
    return std::nullopt;
  }
  std::int64_t n = 0;
  if (t != dom::element_type::INT64 || v.get_int64().get(n) != simdjson::SUCCESS) {
    problems.add(field, "must be an integer");
    return std::nullopt;
  }
  if (n < 0 || n > 255) {
    problems.add(field, "must be between 0 and 255");
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(n);
}

}  // namespace detail
namespace {

std::optional<S3Location> check_location(dom::element v, const std::string& field,
                                         Problems& problems) {
  dom::object obj;
  if (v.type() != dom::element_type::OBJECT || v.get_object().get(obj) != simdjson::SUCCESS) {
    problems.add(field, "must be an object");
    return std::nullopt;
  }
  static constexpr std::array<std::string_view, 3> kKnown{"bucket", "key", "version"};
  S3Location loc;
  bool ok = true;
  bool has_bucket = false;
  bool has_key = false;
  for_members(obj, kKnown, field, problems, [&](std::size_t idx, dom::element value) {
    const std::string path = member_path(field, kKnown[idx]);
    if (idx == 0) {
      has_bucket = true;
      auto s = check_location_part(value, path, kMaxBucketBytes, problems);
      if (s) loc.bucket = std::move(*s);
      ok = ok && s.has_value();
    } else if (idx == 1) {
      has_key = true;
      auto s = check_location_part(value, path, kMaxKeyBytes, problems);
      if (s) loc.key = std::move(*s);
      ok = ok && s.has_value();
    } else {
      auto s = check_version(value, path, problems);
      if (s) loc.version = std::move(*s);
      ok = ok && s.has_value();
    }
  });
  if (!has_bucket) problems.add(member_path(field, "bucket"), "is required");
  if (!has_key) problems.add(member_path(field, "key"), "is required");
  if (!ok || !has_bucket || !has_key) return std::nullopt;
  return loc;
}

std::optional<std::vector<StreamFileSpec>> check_files(dom::element v, Problems& problems) {
  const std::string base = "files";
  dom::array arr;
  if (v.type() != dom::element_type::ARRAY || v.get_array().get(arr) != simdjson::SUCCESS) {
    problems.add(base, "must be an array");
    return std::nullopt;
  }
  bool ok = true;
  const std::size_t count = arr.size();
  if (count < 1 || count > kMaxFilesPerStream) {
    problems.add(base,
                 "must have between 1 and " + std::to_string(kMaxFilesPerStream) + " entries");
    ok = false;
  }
  std::array<std::optional<std::size_t>, 256> first_use{};  // fileId → index of its first entry
  std::vector<StreamFileSpec> files;
  const bool entries_ok = for_each_object(
      arr, base, problems, [&](std::size_t i, const std::string& path, dom::object obj) {
        static constexpr std::array<std::string_view, 2> kKnown{"fileId", "s3Location"};
        StreamFileSpec spec;
        bool entry_ok = true;
        bool has_id = false;
        bool has_location = false;
        for_members(obj, kKnown, path, problems, [&](std::size_t idx, dom::element value) {
          const std::string field = member_path(path, kKnown[idx]);
          if (idx == 0) {
            has_id = true;
            auto id = check_file_id(value, field, problems);
            if (!id) {
              entry_ok = false;
              return;
            }
            auto& first = first_use[*id];
            if (first) {
              problems.add(field, "must be unique: " + index_path(base, *first) +
                                      " already uses fileId " + std::to_string(*id));
              entry_ok = false;
              return;
            }
            first = i;
            spec.file_id = *id;
          } else {
            has_location = true;
            auto loc = check_location(value, field, problems);
            if (loc) {
              spec.location = std::move(*loc);
            } else {
              entry_ok = false;
            }
          }
        });
        if (!has_id) problems.add(member_path(path, "fileId"), "is required");
        if (!has_location) problems.add(member_path(path, "s3Location"), "is required");
        if (!entry_ok || !has_id || !has_location) return false;
        files.push_back(std::move(spec));
        return true;
      });
  if (!ok || !entries_ok) return std::nullopt;
  return files;
}

std::optional<std::vector<Tag>> check_tags(dom::element v, Problems& problems) {
  const std::string base = "tags";
  dom::array arr;
  if (v.type() != dom::element_type::ARRAY || v.get_array().get(arr) != simdjson::SUCCESS) {
    problems.add(base, "must be an array");
    return std::nullopt;
  }
  bool ok = true;
  if (arr.size() > kMaxTags) {
    problems.add(base, "must have at most " + std::to_string(kMaxTags) + " entries");
    ok = false;
  }
  std::map<std::string, std::size_t, std::less<>> first_use;  // Key → index of its first entry
  std::vector<Tag> tags;
  const bool entries_ok = for_each_object(
      arr, base, problems, [&](std::size_t i, const std::string& path, dom::object obj) {
        static constexpr std::array<std::string_view, 2> kKnown{"Key", "Value"};
        Tag tag;
        bool entry_ok = true;
        bool has_key = false;
        for_members(obj, kKnown, path, problems, [&](std::size_t idx, dom::element value) {
          const std::string field = member_path(path, kKnown[idx]);
          const bool is_key = idx == 0;
          if (is_key) has_key = true;
          auto s = as_string(value, field, problems);
          auto n = s ? chars_of(*s, field, problems) : std::nullopt;
          if (!n) {
            entry_ok = false;
            return;
          }
          if (is_key) {
            if (*n < 1 || *n > kMaxTagKeyChars) {
              problems.add(field, between_chars(1, kMaxTagKeyChars));
              entry_ok = false;
              return;
            }
            auto [it, inserted] = first_use.try_emplace(std::string(*s), i);
            if (!inserted) {
              problems.add(field, "must be unique: " + index_path(base, it->second) +
                                      " already uses this Key");
              entry_ok = false;
              return;
            }
            tag.key = std::string(*s);
          } else {
            if (*n > kMaxTagValueChars) {
              problems.add(field, between_chars(0, kMaxTagValueChars));
              entry_ok = false;
              return;
            }
            tag.value = std::string(*s);
          }
        });
        if (!has_key) {
          problems.add(member_path(path, "Key"), "is required");
          entry_ok = false;
        }
        if (!entry_ok) return false;
        tags.push_back(std::move(tag));
        return true;
      });
  if (!ok || !entries_ok) return std::nullopt;
  return tags;
}

// 1..kMaxAllowedThings distinct thing-name patterns (protocol/thing_pattern.hpp).
std::optional<std::vector<std::string>> check_allowed_things(dom::element v, Problems& problems) {
  const std::string base = "allowedThings";
  dom::array arr;
  if (v.type() != dom::element_type::ARRAY || v.get_array().get(arr) != simdjson::SUCCESS) {
    problems.add(base, "must be an array");
    return std::nullopt;
  }
  bool ok = true;
  if (arr.size() < 1 || arr.size() > kMaxAllowedThings) {
    problems.add(base, "must have between 1 and " + std::to_string(kMaxAllowedThings) + " entries");
    ok = false;
  }
  std::map<std::string_view, std::size_t, std::less<>> first_use;  // pattern → its first index
  std::vector<std::string> patterns;
  std::size_t i = 0;
  for (dom::element entry : arr) {
    const std::string field = index_path(base, i);
    auto s = as_string(entry, field, problems);
    auto problem = s ? thing_pattern_problem(*s) : std::nullopt;
    if (s && !problem) {
      auto [it, inserted] = first_use.try_emplace(*s, i);
      if (!inserted)
        problem = "must be unique: " + index_path(base, it->second) + " already has it";
    }
    if (problem) problems.add(field, std::move(*problem));
    ok = ok && s && !problem;
    if (ok) patterns.emplace_back(*s);
    ++i;
  }
  if (!ok) return std::nullopt;
  return patterns;
}

// --- bodies ------------------------------------------------------------------------------------

enum class BodyKind { Create, Update };

struct BodyFields {
  std::optional<std::string> description;
  std::optional<std::vector<StreamFileSpec>> files;
  std::optional<std::string> role_arn;
  std::optional<std::vector<Tag>> tags;
  AllowedThings allowed_things;
  bool has_description = false;
  bool has_files = false;
  bool has_role_arn = false;
  bool has_allowed_things = false;
};

// Checks every member of the body object into `out`, then the keys the kind requires.
void check_body_fields(dom::object obj, BodyKind kind, BodyFields& out, Problems& problems) {
  static constexpr std::array<std::string_view, 5> kKnown{"description", "files", "roleArn", "tags",
                                                          "allowedThings"};
  for_members(obj, kKnown, "", problems, [&](std::size_t idx, dom::element value) {
    switch (idx) {
      case 0:
        out.has_description = true;
        out.description = check_description(value, "description", problems);
        break;
      case 1:
        out.has_files = true;
        out.files = check_files(value, problems);
        break;
      case 2:
        out.has_role_arn = true;
        out.role_arn = check_role_arn(value, "roleArn", problems);
        break;
      case 4:
        out.has_allowed_things = true;
        // An update's null removes the list; anywhere else null is a wrong type, as for every
        // other field.
        if (kind == BodyKind::Update && value.type() == dom::element_type::NULL_VALUE) break;
        out.allowed_things = check_allowed_things(value, problems);
        break;
      default:
        if (kind == BodyKind::Update) {
          problems.add("tags", "cannot be updated: tags are set at create time");
        } else {
          out.tags = check_tags(value, problems);
        }
        break;
    }
  });
  if (kind == BodyKind::Create) {
    if (!out.has_files) problems.add("files", "is required");
    if (!out.has_role_arn) problems.add("roleArn", "is required");
  } else if (!out.has_description && !out.has_files && !out.has_role_arn &&
             !out.has_allowed_things) {
    problems.add("body", "must set at least one of description, files, roleArn, allowedThings");
  }
}

Expected<BodyFields, ApiError> parse_body(std::string_view json, BodyKind kind) {
  dom::parser parser(kMaxControlBodyBytes);
  auto root = parse_json_object(json, parser);
  if (!root) return unexpected(std::move(root.error()));
  const dom::object obj = *root;

  BodyFields out;
  Problems problems;
  check_body_fields(obj, kind, out, problems);
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("request body", "invalid field"));
  }
  return out;
}

// --- streamId ----------------------------------------------------------------------------------

// The character rule of valid_stream_id (topic.hpp), to say which rule an invalid id broke.
bool stream_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

}  // namespace

namespace detail {

Expected<dom::object, ApiError> parse_json_object(std::string_view json, dom::parser& parser) {
  if (json.size() > kMaxControlBodyBytes) {
    return unexpected(
        ApiError{ApiErrorCode::PayloadTooLarge,
                 "request body is larger than " + std::to_string(kMaxControlBodyBytes) + " bytes",
                 {}});
  }
  if (auto err = parser.allocate(std::max<std::size_t>(json.size(), 64), kMaxJsonDepth);
      err != simdjson::SUCCESS) {
    return unexpected(ApiError{ApiErrorCode::InternalError, "cannot allocate the JSON parser", {}});
  }
  const simdjson::padded_string padded(json);
  dom::element root;
  if (auto err = parser.parse(padded).get(root); err != simdjson::SUCCESS) {
    if (err == simdjson::DEPTH_ERROR) {
      return unexpected(body_error("request body is not a JSON object: it nests deeper than " +
                                   std::to_string(kMaxJsonDepth) + " levels"));
    }
    if (err == simdjson::MEMALLOC) {
      return unexpected(ApiError{ApiErrorCode::InternalError, "out of memory parsing JSON", {}});
    }
    return unexpected(body_error(std::string("request body is not a JSON object: invalid JSON (") +
                                 simdjson::error_message(err) + ")"));
  }
  dom::object obj;
  if (root.type() != dom::element_type::OBJECT || root.get_object().get(obj) != simdjson::SUCCESS) {
    return unexpected(body_error("request body is not a JSON object"));
  }
  return obj;
}

}  // namespace detail

Expected<CreateStreamBody, ApiError> parse_create_stream(std::string_view json) {
  auto fields = parse_body(json, BodyKind::Create);
  if (!fields) return unexpected(std::move(fields.error()));
  CreateStreamBody body;
  body.description = std::move(fields->description).value_or("");
  body.files = std::move(fields->files).value_or(std::vector<StreamFileSpec>{});
  body.role_arn = std::move(fields->role_arn).value_or("");
  body.tags = std::move(fields->tags).value_or(std::vector<Tag>{});
  body.allowed_things = std::move(fields->allowed_things);
  return body;
}

Expected<UpdateStreamBody, ApiError> parse_update_stream(std::string_view json) {
  auto fields = parse_body(json, BodyKind::Update);
  if (!fields) return unexpected(std::move(fields.error()));
  UpdateStreamBody body;
  body.description = std::move(fields->description);
  body.files = std::move(fields->files);
  body.role_arn = std::move(fields->role_arn);
  body.sets_allowed_things = fields->has_allowed_things;
  body.allowed_things = std::move(fields->allowed_things);
  return body;
}

std::optional<ApiError> validate_stream_id(std::string_view stream_id) {
  if (valid_stream_id(stream_id)) return std::nullopt;
  ApiError error{ApiErrorCode::ValidationError, "invalid streamId", {}};
  if (stream_id.empty()) {
    error.details.push_back({"streamId", "must not be empty"});
    return error;
  }
  if (stream_id.size() > kMaxStreamIdBytes) {
    error.details.push_back(
        {"streamId", "must be at most " + std::to_string(kMaxStreamIdBytes) + " characters"});
  }
  if (!std::all_of(stream_id.begin(), stream_id.end(), stream_id_char)) {
    error.details.push_back(
        {"streamId", "must contain only letters a-z A-Z, digits 0-9, '_' and '-'"});
  }
  return error;
}

std::optional<std::string> stream_id_warning(std::string_view stream_id) {
  if (stream_id.size() <= kDeviceStreamIdBytes) return std::nullopt;
  return "streamId is longer than " + std::to_string(kDeviceStreamIdBytes) +
         " characters: device libraries that copy it into a " +
         std::to_string(kDeviceStreamIdBytes + 1) + "-byte buffer cannot download this stream";
}

}  // namespace chunkd::protocol
