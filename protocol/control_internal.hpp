// Private to protocol/: what the control-plane parsers (control_parse.cpp for bodies and the
// streamId, control_query.cpp for the list query, job_control_parse.cpp for job bodies) share. Not
// part of any contract; do not include outside protocol/.
#pragma once

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/expected.hpp"
#include "protocol/control.hpp"

namespace chunkd::protocol::detail {

// Collects every problem found in one request: counts them all, keeps the first
// kMaxErrorDetails as details.
class Problems {
 public:
  void add(std::string field, std::string problem) {
    ++total_;
    if (details_.size() < kMaxErrorDetails) {
      details_.push_back(FieldProblem{std::move(field), std::move(problem)});
    }
  }
  std::size_t total() const { return total_; }

  // "request body has 3 invalid fields" (+ " (first 100 listed)" when capped).
  ApiError to_error(std::string_view subject, std::string_view noun) && {
    std::string message(subject);
    message += " has ";
    message += std::to_string(total_);
    message += ' ';
    message += noun;
    if (total_ != 1) message += 's';
    if (total_ > details_.size()) {
      message += " (first ";
      message += std::to_string(details_.size());
      message += " listed)";
    }
    return ApiError{ApiErrorCode::ValidationError, std::move(message), std::move(details_)};
  }

 private:
  std::size_t total_ = 0;
  std::vector<FieldProblem> details_;
};

namespace dom = simdjson::dom;

// --- shared by the list-query parsers (defined in control_query.cpp) ---------------------------

// Which ids a nextToken may hold (valid_stream_id, valid_job_id, valid_thing_name).
using IdRule = bool (*)(std::string_view);
// A query parameter other than maxResults/nextToken/isAscendingOrder that a route knows.
struct ExtraQueryParam {
  std::string_view name;
  std::optional<std::string_view> raw;  // out: as given, when given (the last one wins)
  std::optional<std::string> value;     // out: percent-decoded (a decoding failure is reported)
};
// parse_list_query with the token's id checked by `valid_id` and `extra` filled in; every
// problem is added to `problems` (the caller adds its own, then makes the error).
ListQuery parse_list_query(std::string_view query, IdRule valid_id,
                           std::span<ExtraQueryParam> extra, Problems& problems);

// --- shared by the body parsers (defined in control_parse.cpp) ---------------------------------

bool has_control_char(std::string_view s);  // U+0000-U+001F or U+007F
// A key as echoed in details: at most 64 bytes, cut at a UTF-8 boundary, "..." when cut.
std::string echo_key(std::string_view s);
std::string index_path(std::string_view base, std::size_t i);           // "files[3]"
std::string member_path(std::string_view base, std::string_view name);  // "files[3].fileId"
ApiError body_error(std::string message);                   // VALIDATION_ERROR with no details
std::string between_chars(std::size_t lo, std::size_t hi);  // "must be between lo and hi ..."

// Each check reports its own problem at `field` and returns nullopt when the value is unusable.
std::optional<std::string_view> as_string(dom::element v, const std::string& field,
                                          Problems& problems);
std::optional<std::size_t> chars_of(std::string_view s, const std::string& field,
                                    Problems& problems);  // code points; invalid UTF-8 reported
// At most kMaxDescriptionChars, no control characters.
std::optional<std::string> check_description(dom::element v, const std::string& field,
                                             Problems& problems);
std::optional<std::uint32_t> check_file_id(dom::element v, const std::string& field,
                                           Problems& problems);  // an integer 0..255

// The body as a JSON object: PAYLOAD_TOO_LARGE over kMaxControlBodyBytes, VALIDATION_ERROR for
// invalid JSON, nesting deeper than 16 levels or a root that is not an object. The object lives
// in `parser` until its next parse.
Expected<dom::object, ApiError> parse_json_object(std::string_view json, dom::parser& parser);

// Walks the members of an object: reports keys given twice and keys not in `known`, and calls
// `on_member(index_in_known, value)` for the first occurrence of each known key.
template <std::size_t N, class F>
void for_members(dom::object obj, const std::array<std::string_view, N>& known,
                 std::string_view base, Problems& problems, F&& on_member) {
  std::array<bool, N> seen{};
  for (dom::key_value_pair kv : obj) {
    const auto it = std::find(known.begin(), known.end(), kv.key);
    const std::string field = base.empty() ? echo_key(kv.key) : member_path(base, echo_key(kv.key));
    if (it == known.end()) {
      problems.add(field, "is not a known field");
      continue;
    }
    const auto idx = static_cast<std::size_t>(it - known.begin());
    if (seen[idx]) {
      problems.add(field, "is given more than once");
      continue;
    }
    seen[idx] = true;
    on_member(idx, kv.value);
  }
}

// Calls `each(index, path, obj)` for every element of the array `arr` at `base`; an element that
// is not an object is reported at its path. Returns false when an element was not an object or
// `each` returned false (it reports its own problems).
template <class F>
bool for_each_object(dom::array arr, std::string_view base, Problems& problems, F&& each) {
  bool ok = true;
  std::size_t i = 0;
  for (dom::element entry : arr) {
    const std::string path = index_path(base, i);
    dom::object obj;
    if (entry.type() != dom::element_type::OBJECT ||
        entry.get_object().get(obj) != simdjson::SUCCESS) {
      problems.add(path, "must be an object");
      ok = false;
    } else if (!each(i, path, obj)) {
      ok = false;
    }
    ++i;
  }
  return ok;
}

}  // namespace chunkd::protocol::detail
