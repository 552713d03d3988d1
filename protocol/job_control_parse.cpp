// `POST /jobs/{jobId}` body parsing (protocol/job_control.hpp): every problem found is reported as
// a FieldProblem naming its path, with the helpers the streams bodies use (control_internal.hpp).
// Pure: no I/O, no clock. simdjson only through its error-code API.
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/base64.hpp"
#include "protocol/control_internal.hpp"
#include "protocol/job_control.hpp"
#include "protocol/thing_pattern.hpp"
#include "protocol/topic.hpp"

namespace chunkd::protocol {
namespace {

using namespace detail;

constexpr std::string_view kThingArnMarker = ":thing/";

std::string between(std::uint64_t lo, std::uint64_t hi) {
  return "must be between " + std::to_string(lo) + " and " + std::to_string(hi);
}

std::optional<dom::object> as_object(dom::element v, const std::string& field, Problems& problems) {
  dom::object obj;
  if (v.type() != dom::element_type::OBJECT || v.get_object().get(obj) != simdjson::SUCCESS) {
    problems.add(field, "must be an object");
    return std::nullopt;
  }
  return obj;
}

// An integer in lo..hi.
std::optional<std::uint32_t> check_uint(dom::element v, const std::string& field, std::uint32_t lo,
                                        std::uint32_t hi, Problems& problems) {
  const auto t = v.type();
  std::int64_t n = 0;
  if (t == dom::element_type::UINT64) {  // only integers above INT64_MAX land here
    problems.add(field, between(lo, hi));
    return std::nullopt;
  }
  if (t != dom::element_type::INT64 || v.get_int64().get(n) != simdjson::SUCCESS) {
    problems.add(field, "must be an integer");
    return std::nullopt;
  }
  if (n < lo || n > hi) {
    problems.add(field, between(lo, hi));
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(n);
}

// 1..max_chars characters, no control characters.
std::optional<std::string> check_text(dom::element v, const std::string& field,
                                      std::size_t max_chars, Problems& problems) {
  auto s = as_string(v, field, problems);
  auto n = s ? chars_of(*s, field, problems) : std::nullopt;
  if (!n) return std::nullopt;
  if (*n < 1 || *n > max_chars) {
    problems.add(field, between_chars(1, max_chars));
    return std::nullopt;
  }
  if (has_control_char(*s)) {
    problems.add(field, "must not contain control characters (U+0000-U+001F, U+007F)");
    return std::nullopt;
  }
  return std::string(*s);
}

// A thing name, a thing ARN (kept as the name after ":thing/") or a pattern.
std::optional<std::string> check_target(dom::element v, const std::string& field,
                                        Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  std::string_view target = *s;
  if (target.starts_with("arn:")) {
    const std::size_t at = target.rfind(kThingArnMarker);
    target = at == std::string_view::npos ? "" : target.substr(at + kThingArnMarker.size());
    if (!valid_thing_name(target)) {
      problems.add(field, "must be a thing ARN ending in thing/<thing name>");
      return std::nullopt;
    }
    return std::string(target);
  }
  if (auto problem = thing_pattern_problem(target)) {
    problems.add(field, "must be a thing name, a thing ARN or a pattern: " + *problem);
    return std::nullopt;
  }
  return std::string(target);
}

std::optional<std::vector<std::string>> check_targets(dom::element v, Problems& problems) {
  const std::string base = "targets";
  dom::array arr;
  if (v.type() != dom::element_type::ARRAY || v.get_array().get(arr) != simdjson::SUCCESS) {
    problems.add(base, "must be an array");
    return std::nullopt;
  }
  bool ok = true;
  if (arr.size() < 1 || arr.size() > kMaxJobTargets) {
    problems.add(base, "must have between 1 and " + std::to_string(kMaxJobTargets) + " entries");
    ok = false;
  }
  std::map<std::string, std::size_t, std::less<>> first_use;  // target → its first index
  std::vector<std::string> targets;
  std::size_t i = 0;
  for (dom::element entry : arr) {
    const std::string field = index_path(base, i);
    auto target = check_target(entry, field, problems);
    if (target) {
      auto [it, inserted] = first_use.try_emplace(*target, i);
      if (!inserted) {
        problems.add(field, "must be unique: " + index_path(base, it->second) + " already names " +
                                echo_key(*target));
        target.reset();
      }
    }
    ok = ok && target;
    if (ok) targets.push_back(std::move(*target));
    ++i;
  }
  if (!ok) return std::nullopt;
  return targets;
}

// Any JSON object, minified, at most kMaxJobDocumentBytes.
std::optional<std::string> check_document(dom::element v, Problems& problems) {
  if (!as_object(v, "document", problems)) return std::nullopt;
  std::string text = simdjson::minify(v);
  if (text.size() > kMaxJobDocumentBytes) {
    problems.add("document", "must be at most " + std::to_string(kMaxJobDocumentBytes) +
                                 " bytes (minified), is " + std::to_string(text.size()));
    return std::nullopt;
  }
  return text;
}

std::optional<std::string> check_signature(dom::element v, const std::string& field,
                                           Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  std::array<std::byte, kMaxOtaSignatureBytes> raw{};
  const auto bytes = s->size() > base64::encoded_length(kMaxOtaSignatureBytes)
                         ? std::nullopt
                         : base64::decode(*s, raw);
  if (!bytes || *bytes < kMinOtaSignatureBytes) {
    problems.add(field, "must be the base64 (standard alphabet, padded) of a " +
                            std::to_string(kMinOtaSignatureBytes) + " to " +
                            std::to_string(kMaxOtaSignatureBytes) + " byte DER signature");
    return std::nullopt;
  }
  return std::string(*s);
}

std::optional<std::string> check_ota_stream_id(dom::element v, const std::string& field,
                                               Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  if (auto error = validate_stream_id(*s)) {
    for (FieldProblem& d : error->details) problems.add(field, std::move(d.problem));
    return std::nullopt;
  }
  return std::string(*s);
}

// Moves a checked value into place, or records that the enclosing object is invalid.
template <class T, class U>
void take(std::optional<T>&& checked, U& into, bool& ok) {
  if (checked) {
    into = std::move(*checked);
  } else {
    ok = false;
  }
}

// ota: exactly streamId, fileId, filePath, signature, certFile, and optional fileType, attributes.
std::optional<OtaSpec> check_ota(dom::element v, Problems& problems) {
  static constexpr std::array<std::string_view, 7> kKnown{
      "streamId", "fileId", "filePath", "signature", "certFile", "fileType", "attributes"};
  auto obj = as_object(v, "ota", problems);
  if (!obj) return std::nullopt;
  OtaSpec ota;
  std::array<bool, kKnown.size()> given{};
  bool ok = true;
  for_members(*obj, kKnown, "ota", problems, [&](std::size_t idx, dom::element value) {
    const std::string field = member_path("ota", kKnown[idx]);
    given[idx] = true;
    switch (idx) {
      case 0:
        take(check_ota_stream_id(value, field, problems), ota.stream_id, ok);
        break;
      case 1:
        take(check_file_id(value, field, problems), ota.file_id, ok);
        break;
      case 2:
        take(check_text(value, field, kMaxOtaPathChars, problems), ota.file_path, ok);
        break;
      case 3:
        take(check_signature(value, field, problems), ota.signature, ok);
        break;
      case 4:
        take(check_text(value, field, kMaxOtaPathChars, problems), ota.cert_file, ok);
        break;
      case 5:
        take(check_uint(value, field, 0, UINT32_MAX, problems), ota.file_type, ok);
        break;
      default:
        take(check_uint(value, field, 0, UINT32_MAX, problems), ota.attributes, ok);
        break;
    }
  });
  for (std::size_t i = 0; i < 5; ++i) {  // the first five are required
    if (!given[i]) {
      problems.add(member_path("ota", kKnown[i]), "is required");
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return ota;
}

// An object holding exactly the one key `key`, an integer in lo..hi.
std::optional<std::uint32_t> check_single_uint(dom::element v, const std::string& base,
                                               std::string_view key, std::uint32_t lo,
                                               std::uint32_t hi, Problems& problems) {
  auto obj = as_object(v, base, problems);
  if (!obj) return std::nullopt;
  const std::array<std::string_view, 1> known{key};
  std::optional<std::uint32_t> out;
  bool given = false;
  for_members(*obj, known, base, problems, [&](std::size_t, dom::element value) {
    given = true;
    out = check_uint(value, member_path(base, key), lo, hi, problems);
  });
  if (!given) problems.add(member_path(base, key), "is required");
  return out;
}

std::optional<AbortFailureType> check_failure_type(dom::element v, const std::string& field,
                                                   Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  for (auto t : {AbortFailureType::Failed, AbortFailureType::Rejected, AbortFailureType::TimedOut,
                 AbortFailureType::All}) {
    if (*s == to_string(t)) return t;
  }
  problems.add(field, "must be one of FAILED, REJECTED, TIMED_OUT, ALL");
  return std::nullopt;
}

std::optional<double> check_percentage(dom::element v, const std::string& field,
                                       Problems& problems) {
  double x = 0;
  const auto t = v.type();
  const bool number = t == dom::element_type::DOUBLE || t == dom::element_type::INT64 ||
                      t == dom::element_type::UINT64;
  if (!number || v.get_double().get(x) != simdjson::SUCCESS) {
    problems.add(field, "must be a number");
    return std::nullopt;
  }
  if (!(x > 0 && x <= 100)) {
    problems.add(field, "must be greater than 0 and at most 100");
    return std::nullopt;
  }
  return x;
}

// One criteriaList entry: failureType, action (CANCEL), thresholdPercentage,
// minNumberOfExecutedThings, all required.
bool check_criterion(dom::object obj, const std::string& path, AbortCriterion& out,
                     Problems& problems) {
  static constexpr std::array<std::string_view, 4> kKnown{
      "failureType", "action", "thresholdPercentage", "minNumberOfExecutedThings"};
  std::array<bool, kKnown.size()> given{};
  bool ok = true;
  for_members(obj, kKnown, path, problems, [&](std::size_t idx, dom::element value) {
    const std::string field = member_path(path, kKnown[idx]);
    given[idx] = true;
    if (idx == 0) {
      take(check_failure_type(value, field, problems), out.failure_type, ok);
    } else if (idx == 1) {
      auto action = as_string(value, field, problems);
      if (action && *action != "CANCEL") problems.add(field, "must be CANCEL");
      ok = ok && action && *action == "CANCEL";
    } else if (idx == 2) {
      take(check_percentage(value, field, problems), out.threshold_percentage, ok);
    } else {
      take(check_uint(value, field, 1, UINT32_MAX, problems), out.min_executed_things, ok);
    }
  });
  for (std::size_t i = 0; i < kKnown.size(); ++i) {
    if (!given[i]) problems.add(member_path(path, kKnown[i]), "is required");
    ok = ok && given[i];
  }
  return ok;
}

std::optional<std::vector<AbortCriterion>> check_abort(dom::element v, Problems& problems) {
  const std::string base = "abortConfig";
  const std::string list = member_path(base, "criteriaList");
  auto obj = as_object(v, base, problems);
  if (!obj) return std::nullopt;
  static constexpr std::array<std::string_view, 1> kKnown{"criteriaList"};
  std::optional<dom::array> arr;
  bool given = false;
  for_members(*obj, kKnown, base, problems, [&](std::size_t, dom::element value) {
    given = true;
    dom::array a;
    if (value.type() != dom::element_type::ARRAY || value.get_array().get(a) != simdjson::SUCCESS) {
      problems.add(list, "must be an array");
    } else {
      arr = a;
    }
  });
  if (!arr) {
    if (!given) problems.add(list, "is required");
    return std::nullopt;
  }
  bool ok = true;
  if (arr->size() < 1 || arr->size() > kMaxAbortCriteria) {
    problems.add(list, "must have between 1 and " + std::to_string(kMaxAbortCriteria) + " entries");
    ok = false;
  }
  std::vector<AbortCriterion> criteria;
  const bool entries_ok = for_each_object(
      *arr, list, problems, [&](std::size_t, const std::string& path, dom::object entry) {
        AbortCriterion c;
        if (!check_criterion(entry, path, c, problems)) return false;
        for (const AbortCriterion& other : criteria) {
          if (other.failure_type == c.failure_type) {
            problems.add(
                member_path(path, "failureType"),
                "must be unique: " + std::string(to_string(c.failure_type)) + " is already used");
            return false;
          }
        }
        criteria.push_back(c);
        return true;
      });
  if (!ok || !entries_ok) return std::nullopt;
  return criteria;
}

struct JobFields {
  JobSpec spec;
  bool ok = true;
  bool has_targets = false;
  bool has_document = false;
  bool has_ota = false;
};

void check_job_fields(dom::object obj, JobFields& out, Problems& problems) {
  static constexpr std::array<std::string_view, 7> kKnown{
      "targets",     "document",     "ota", "description", "jobExecutionsRolloutConfig",
      "abortConfig", "timeoutConfig"};
  JobSpec& spec = out.spec;
  for_members(obj, kKnown, "", problems, [&](std::size_t idx, dom::element value) {
    switch (idx) {
      case 0:
        out.has_targets = true;
        take(check_targets(value, problems), spec.targets, out.ok);
        break;
      case 1:
        out.has_document = true;
        take(check_document(value, problems), spec.document, out.ok);
        break;
      case 2:
        out.has_ota = true;
        take(check_ota(value, problems), spec.ota, out.ok);
        break;
      case 3:
        take(check_description(value, "description", problems), spec.description, out.ok);
        break;
      case 4:
        take(check_single_uint(value, std::string(kKnown[idx]), "maximumPerMinute", 1,
                               kMaxRolloutPerMinute, problems),
             spec.maximum_per_minute, out.ok);
        break;
      case 5:
        take(check_abort(value, problems), spec.abort_criteria, out.ok);
        break;
      default:
        take(check_single_uint(value, std::string(kKnown[idx]), "inProgressTimeoutInMinutes", 1,
                               kMaxInProgressTimeoutMinutes, problems),
             spec.in_progress_timeout_minutes, out.ok);
        break;
    }
  });
  if (!out.has_targets) problems.add("targets", "is required");
  if (out.has_document == out.has_ota) {
    problems.add(out.has_ota ? "ota" : "document", "exactly one of document and ota is required");
  }
}

std::optional<std::string> check_reason_code(dom::element v, const std::string& field,
                                             Problems& problems) {
  auto s = as_string(v, field, problems);
  if (!s) return std::nullopt;
  const bool ok = s->size() <= kMaxReasonCodeChars && std::all_of(s->begin(), s->end(), [](char c) {
                    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
                  });
  if (!ok) {
    problems.add(field, "must be at most " + std::to_string(kMaxReasonCodeChars) +
                            " of the capital letters A-Z, digits 0-9 and '_'");
    return std::nullopt;
  }
  return std::string(*s);
}

void check_cancel_fields(dom::object obj, CancelJobBody& out, Problems& problems) {
  static constexpr std::array<std::string_view, 3> kKnown{"reasonCode", "comment", "force"};
  bool ignored = true;
  for_members(obj, kKnown, "", problems, [&](std::size_t idx, dom::element value) {
    if (idx == 0) {
      take(check_reason_code(value, "reasonCode", problems), out.reason_code, ignored);
    } else if (idx == 1) {
      take(check_description(value, "comment", problems), out.comment, ignored);
    } else if (value.type() != dom::element_type::BOOL || value.get_bool().get(out.force)) {
      problems.add("force", "must be true or false");
    }
  });
}

}  // namespace

Expected<CancelJobBody, ApiError> parse_cancel_job(std::string_view json) {
  CancelJobBody out;
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) return out;  // no body
  dom::parser parser(kMaxControlBodyBytes);
  auto root = parse_json_object(json, parser);
  if (!root) return unexpected(std::move(root.error()));
  Problems problems;
  check_cancel_fields(*root, out, problems);
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("request body", "invalid field"));
  }
  return out;
}

std::string_view to_string(AbortFailureType t) {
  static constexpr std::array<std::string_view, 4> kNames{"FAILED", "REJECTED", "TIMED_OUT", "ALL"};
  return kNames[static_cast<std::size_t>(t)];
}

bool is_target_pattern(std::string_view target) {
  return target.find_first_of("*?") != std::string_view::npos;
}

Expected<JobSpec, ApiError> parse_create_job(std::string_view json) {
  dom::parser parser(kMaxControlBodyBytes);
  auto root = parse_json_object(json, parser);
  if (!root) return unexpected(std::move(root.error()));
  JobFields fields;
  Problems problems;
  check_job_fields(*root, fields, problems);
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("request body", "invalid field"));
  }
  return std::move(fields.spec);
}

std::optional<ApiError> validate_job_id(std::string_view job_id) {
  if (valid_job_id(job_id)) return std::nullopt;
  ApiError error{ApiErrorCode::ValidationError, "invalid jobId", {}};
  error.details.push_back({"jobId", "must be 1 to " + std::to_string(kMaxJobIdChars) +
                                        " of the letters a-z A-Z, digits 0-9, '_' and '-'"});
  return error;
}

std::vector<std::string> job_warnings(const JobSpec& spec) {
  std::vector<std::string> out;
  if (!spec.ota) return out;
  if (auto w = stream_id_warning(spec.ota->stream_id)) out.push_back(std::move(*w));
  for (const std::string& target : spec.targets) {
    if (is_target_pattern(target)) continue;
    if (target.size() + spec.ota->stream_id.size() > kDeviceTopicNamesChars) {
      out.push_back("target '" + target + "': thing name and streamId together are longer than " +
                    std::to_string(kDeviceTopicNamesChars) +
                    " characters: devices with a small receive buffer drop the stream's blocks");
    }
  }
  return out;
}

// --- list queries ----------------------------------------------------------------------------

Expected<ListQuery, ApiError> parse_job_list_query(std::string_view query) {
  Problems problems;
  ListQuery out = detail::parse_list_query(query, valid_job_id, {}, problems);
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("query", "invalid parameter"));
  }
  return out;
}

Expected<ExecutionListQuery, ApiError> parse_execution_list_query(std::string_view query) {
  Problems problems;
  std::array<ExtraQueryParam, 1> extra{ExtraQueryParam{"status", {}, {}}};
  ExecutionListQuery out;
  out.page = detail::parse_list_query(query, valid_thing_name, extra, problems);
  if (extra[0].value) {
    out.status = execution_status_from_string(*extra[0].value);
    if (!out.status) {
      problems.add("status",
                   "must be one of QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, "
                   "CANCELED, REMOVED");
    }
  }
  if (problems.total() > 0) {
    return unexpected(std::move(problems).to_error("query", "invalid parameter"));
  }
  return out;
}

}  // namespace chunkd::protocol
