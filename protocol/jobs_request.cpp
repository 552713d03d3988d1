// Jobs request decoding (rules in protocol/jobs_request.hpp). simdjson's DOM API with one parser
// per thread; it reads up to SIMDJSON_PADDING bytes past the document, so the payload is first
// copied into a padded buffer of fixed size (allocated once per thread).
#include "protocol/jobs_request.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <memory>

#include "base/text.hpp"
#include "protocol/request_internal.hpp"  // parse_decimal
#include "simdjson.h"

namespace chunkd::protocol {
namespace {

constexpr std::size_t kMaxJsonDepth = 32;
constexpr std::int64_t kMaxInteger = std::numeric_limits<std::int64_t>::max();

constexpr std::array<std::string_view, kJobsErrorCodeCount> kCodeNames = {
    "InvalidTopic",           "InvalidJson",      "InvalidRequest",
    "InvalidStateTransition", "ResourceNotFound", "VersionMismatch",
    "TerminalStateReached",   "RequestThrottled", "InternalError",
};

enum class Key : std::uint8_t {
  ClientToken,
  Status,
  StatusDetails,
  ExpectedVersion,
  ExecutionNumber,
  IncludeJobExecutionState,
  IncludeJobDocument,
  StepTimeout,
  Other,
};

struct KeyName {
  std::string_view name;
  Key key;
};
constexpr std::array<KeyName, 8> kKeys = {{
    {"clientToken", Key::ClientToken},
    {"status", Key::Status},
    {"statusDetails", Key::StatusDetails},
    {"expectedVersion", Key::ExpectedVersion},
    {"executionNumber", Key::ExecutionNumber},
    {"includeJobExecutionState", Key::IncludeJobExecutionState},
    {"includeJobDocument", Key::IncludeJobDocument},
    {"stepTimeoutInMinutes", Key::StepTimeout},
}};

Key key_of(std::string_view name) {
  for (const KeyName& k : kKeys) {
    if (k.name == name) return k.key;
  }
  return Key::Other;
}

constexpr std::uint32_t bit(Key k) { return 1u << static_cast<unsigned>(k); }

// The keys each request kind reads; any other key is ignored.
constexpr std::uint32_t kGetPendingKeys = bit(Key::ClientToken);
constexpr std::uint32_t kStartNextKeys =
    bit(Key::ClientToken) | bit(Key::StatusDetails) | bit(Key::StepTimeout);
constexpr std::uint32_t kDescribeKeys =
    bit(Key::ClientToken) | bit(Key::ExecutionNumber) | bit(Key::IncludeJobDocument);
constexpr std::uint32_t kUpdateKeys =
    bit(Key::ClientToken) | bit(Key::Status) | bit(Key::StatusDetails) | bit(Key::ExpectedVersion) |
    bit(Key::ExecutionNumber) | bit(Key::IncludeJobExecutionState) | bit(Key::IncludeJobDocument) |
    bit(Key::StepTimeout);

// Everything any request kind may carry, as read so far.
struct Fields {
  std::optional<std::string> token;
  std::optional<ExecutionStatus> status;
  std::optional<StatusDetails> details;
  std::optional<std::int64_t> expected_version, execution_number, step_timeout;
  std::optional<bool> include_state, include_document;
  std::optional<std::string> error;  // the first InvalidRequest message
  bool update = false;               // stepTimeoutInMinutes may be -1

  void fail(std::string_view message) {
    if (!error) error.emplace(message);
  }
};

using Element = simdjson::dom::element;

std::optional<std::int64_t> integer(Element value) {
  switch (value.type()) {
    case simdjson::dom::element_type::INT64:
      return value.get_int64().value_unsafe();
    case simdjson::dom::element_type::UINT64:
      return std::nullopt;  // above 2^63-1
    case simdjson::dom::element_type::STRING: {
      const auto digits = detail::parse_decimal(value.get_string().value_unsafe());
      if (!digits || *digits > static_cast<std::uint64_t>(kMaxInteger)) return std::nullopt;
      return static_cast<std::int64_t>(*digits);
    }
    default:
      return std::nullopt;
  }
}

void read_integer(Element value, std::int64_t min, std::int64_t max, bool allow_cancel,
                  std::string_view message, std::optional<std::int64_t>& out, Fields& f) {
  const auto v = integer(value);
  if (v && ((*v >= min && *v <= max) || (allow_cancel && *v == kCancelStepTimeout))) {
    out = *v;
  } else {
    f.fail(message);
  }
}

void read_bool(Element value, std::string_view message, std::optional<bool>& out, Fields& f) {
  bool b = false;
  if (value.get_bool().get(b) == simdjson::SUCCESS) {
    out = b;
  } else {
    f.fail(message);
  }
}

void read_token(Element value, Fields& f) {
  std::string_view text;
  if (value.get_string().get(text) == simdjson::SUCCESS && text.size() <= kMaxClientTokenChars) {
    f.token.emplace(text);
  } else {
    f.token.reset();
    f.fail("clientToken must be a string of at most 64 bytes");
  }
}

void read_status(Element value, Fields& f) {
  std::string_view text;
  std::optional<ExecutionStatus> status;
  if (value.get_string().get(text) == simdjson::SUCCESS) {
    status = execution_status_from_string(text);
  }
  if (status) {
    f.status = status;
  } else {
    f.fail(
        "status must be one of QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, "
        "CANCELED, REMOVED");
  }
}

void read_details(Element value, Fields& f) {
  simdjson::dom::object object;
  if (value.get_object().get(object) != simdjson::SUCCESS) {
    f.fail("statusDetails must be an object of string values");
    return;
  }
  StatusDetails details;
  for (simdjson::dom::key_value_pair entry : object) {
    std::string_view text;
    if (!valid_status_detail_key(entry.key)) {
      return f.fail("statusDetails keys must be 1 to 128 of [a-zA-Z0-9:_-]");
    }
    if (entry.value.get_string().get(text) != simdjson::SUCCESS) {
      return f.fail("statusDetails values must be strings");
    }
    if (!valid_status_detail_value(text)) {
      return f.fail("statusDetails values must be 1 to 1024 characters with no control characters");
    }
    auto same = [&](const auto& pair) { return pair.first == entry.key; };
    if (auto it = std::find_if(details.begin(), details.end(), same); it != details.end()) {
      it->second.assign(text);
    } else if (details.size() == kMaxStatusDetails) {
      return f.fail("statusDetails has more than 10 entries");
    } else {
      details.emplace_back(std::string(entry.key), std::string(text));
    }
  }
  f.details = std::move(details);
}

void read_field(Key key, Element value, Fields& f) {
  if (value.is_null()) {
    if (key == Key::ClientToken) f.token.reset();
    return;  // absent
  }
  switch (key) {
    case Key::ClientToken:
      return read_token(value, f);
    case Key::Status:
      return read_status(value, f);
    case Key::StatusDetails:
      return read_details(value, f);
    case Key::ExpectedVersion:
      return read_integer(value, 0, kMaxInteger, false,
                          "expectedVersion must be a non-negative integer", f.expected_version, f);
    case Key::ExecutionNumber:
      return read_integer(value, 1, kMaxInteger, false,
                          "executionNumber must be a positive integer", f.execution_number, f);
    case Key::StepTimeout:
      return read_integer(value, 1, kMaxStepTimeoutMinutes, f.update,
                          f.update ? "stepTimeoutInMinutes must be -1 or an integer from 1 to 10080"
                                   : "stepTimeoutInMinutes must be an integer from 1 to 10080",
                          f.step_timeout, f);
    case Key::IncludeJobExecutionState:
      return read_bool(value, "includeJobExecutionState must be true or false", f.include_state, f);
    case Key::IncludeJobDocument:
      return read_bool(value, "includeJobDocument must be true or false", f.include_document, f);
    case Key::Other:
      return;
  }
}

struct ParserState {
  simdjson::dom::parser parser{kMaxJobsRequestBytes};
  std::unique_ptr<char[]> buffer;
  bool ready = false;
};

JobsRequestError error(JobsErrorCode code, std::string message,
                       std::optional<std::string> token = std::nullopt) {
  return JobsRequestError{code, std::move(message), std::move(token)};
}

// Parses the payload and reads the keys in `keys` into a Fields; a syntax error or an oversize
// payload is returned as the error.
std::optional<JobsRequestError> walk(JobsPayload payload, std::uint32_t keys, Fields& f) {
  if (payload.size() > kMaxJobsRequestBytes) {
    return error(JobsErrorCode::InvalidRequest, "payload over 32768 bytes");
  }
  if (payload.empty()) return std::nullopt;  // read as {}
  thread_local ParserState state;
  if (!state.ready) {
    state.buffer = std::make_unique<char[]>(kMaxJobsRequestBytes + simdjson::SIMDJSON_PADDING);
    if (state.parser.allocate(kMaxJobsRequestBytes, kMaxJsonDepth) != simdjson::SUCCESS) {
      return error(JobsErrorCode::InternalError, "JSON parser out of memory");
    }
    state.ready = true;
  }
  std::memcpy(state.buffer.get(), payload.data(), payload.size());
  std::memset(state.buffer.get() + payload.size(), 0, simdjson::SIMDJSON_PADDING);
  Element document;
  const auto parsed = state.parser.parse(state.buffer.get(), payload.size(), false).get(document);
  if (parsed != simdjson::SUCCESS) {
    std::string message = "payload is not valid JSON: ";
    message.append(simdjson::error_message(parsed));
    return error(JobsErrorCode::InvalidJson, std::move(message));
  }
  simdjson::dom::object object;
  if (document.get_object().get(object) != simdjson::SUCCESS) {
    return error(JobsErrorCode::InvalidJson, "payload is not a JSON object");
  }
  for (simdjson::dom::key_value_pair field : object) {
    const Key key = key_of(field.key);
    if ((keys & bit(key)) != 0) read_field(key, field.value, f);
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(JobsErrorCode code) {
  const auto i = static_cast<std::size_t>(code);
  return i < kCodeNames.size() ? kCodeNames[i] : "InternalError";
}

bool valid_status_detail_key(std::string_view key) {
  if (key.empty() || key.size() > kMaxStatusDetailKeyChars) return false;
  for (const char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == ':' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool valid_status_detail_value(std::string_view value) {
  const auto code_points = base::utf8_code_points(value);
  if (!code_points || *code_points == 0 || *code_points > kMaxStatusDetailChars) return false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto b = static_cast<unsigned char>(value[i]);
    if (b < 0x20 || b == 0x7f) return false;
    // U+0080..U+009F are 0xC2 0x80..0x9F in UTF-8.
    if (b == 0xc2 && i + 1 < value.size() && static_cast<unsigned char>(value[i + 1]) <= 0x9f) {
      return false;
    }
  }
  return true;
}

namespace {

template <class T>
Expected<T, JobsRequestError> decode(JobsPayload payload, std::uint32_t keys, Fields& f) {
  if (auto syntax = walk(payload, keys, f)) return unexpected(std::move(*syntax));
  if (!f.error && f.update && !f.status) f.fail("status is required");
  if (f.error) {
    return unexpected(error(JobsErrorCode::InvalidRequest, std::move(*f.error), f.token));
  }
  return T{};
}

}  // namespace

Expected<GetPendingRequest, JobsRequestError> decode_jobs_get_pending(JobsPayload payload) {
  Fields f;
  auto result = decode<GetPendingRequest>(payload, kGetPendingKeys, f);
  if (result) result->client_token = std::move(f.token);
  return result;
}

Expected<StartNextRequest, JobsRequestError> decode_jobs_start_next(JobsPayload payload) {
  Fields f;
  auto result = decode<StartNextRequest>(payload, kStartNextKeys, f);
  if (result) {
    result->client_token = std::move(f.token);
    result->status_details = std::move(f.details);
    result->step_timeout_minutes = f.step_timeout;
  }
  return result;
}

Expected<DescribeRequest, JobsRequestError> decode_jobs_describe(JobsPayload payload) {
  Fields f;
  auto result = decode<DescribeRequest>(payload, kDescribeKeys, f);
  if (result) {
    result->client_token = std::move(f.token);
    result->execution_number = f.execution_number;
    result->include_job_document = f.include_document.value_or(true);
  }
  return result;
}

Expected<UpdateRequest, JobsRequestError> decode_jobs_update(JobsPayload payload) {
  Fields f;
  f.update = true;
  auto result = decode<UpdateRequest>(payload, kUpdateKeys, f);
  if (result) {
    result->client_token = std::move(f.token);
    result->status = *f.status;
    result->status_details = std::move(f.details);
    result->expected_version = f.expected_version;
    result->execution_number = f.execution_number;
    result->include_job_execution_state = f.include_state.value_or(false);
    result->include_job_document = f.include_document.value_or(false);
    result->step_timeout_minutes = f.step_timeout;
  }
  return result;
}

}  // namespace chunkd::protocol
