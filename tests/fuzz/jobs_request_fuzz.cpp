// Fuzzes the jobs MQTT side end to end without I/O: the input is "<topic>\n<payload>". The topic
// goes through JobsTopicCodec::parse, the payload through all four request decoders, and every
// outcome is encoded as chunkd would publish it. Invariants: no crash or read out of bounds
// (ASan); an Ok topic formats back to the same bytes and its reply topics parse as Drop; a
// decoded request keeps every bound (token, statusDetails); errors are InvalidJson or
// InvalidRequest, a syntax error never carries a token; every encoded message is valid JSON whose
// clientToken echoes the request's byte for byte.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/jobs_reply.hpp"
#include "protocol/jobs_request.hpp"
#include "protocol/jobs_topic.hpp"
#include "protocol/jobs_update.hpp"
#include "protocol/topic.hpp"
#include "simdjson.h"

namespace {

using namespace chunkd::protocol;

constexpr std::string_view kDocument = R"({"afr_ota":{"streamname":"fw","files":[]}})";
constexpr std::int64_t kNowMs = 1'700'000'000'123;

void check(bool condition) {
  if (!condition) std::abort();
}

// `json` parses, and its clientToken (if `token`) is exactly `token`.
void check_json(const std::string& json, const std::optional<std::string>& token) {
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  check(parser.parse(json).get(doc) == simdjson::SUCCESS);
  std::string_view echoed;
  const bool has_token = doc["clientToken"].get_string().get(echoed) == simdjson::SUCCESS;
  check(has_token == token.has_value());
  check(!token || echoed == *token);
}

void check_details(const StatusDetails& details) {
  check(details.size() <= kMaxStatusDetails);
  for (const auto& [key, value] : details) {
    check(valid_status_detail_key(key) && valid_status_detail_value(value));
  }
}

void check_topic(const JobsTopicCodec& codec, std::string_view topic) {
  const ParsedJobsTopic parsed = codec.parse(topic);
  std::string scratch;
  if (parsed.status == ParsedJobsTopic::Status::Drop) return;
  check(valid_thing_name(parsed.thing));
  if (parsed.status == ParsedJobsTopic::Status::InvalidTopic) {
    JobsTopicCodec::invalid_topic_reply(scratch, topic);
    check(codec.parse(scratch).status == ParsedJobsTopic::Status::Drop);
    return;
  }
  codec.request_topic(scratch, parsed.thing, parsed.api, parsed.job_id);
  check(scratch == topic);
  for (JobsReplyKind kind : {JobsReplyKind::Accepted, JobsReplyKind::Rejected}) {
    codec.reply_topic(scratch, parsed.thing, parsed.api, parsed.job_id, kind);
    check(codec.parse(scratch).status == ParsedJobsTopic::Status::Drop);
  }
}

JobExecution sample(ExecutionStatus status) {
  JobExecution e;
  e.job_id = "fw-1";
  e.thing = "dev-1";
  e.status = status;
  e.queued_at_ms = 1'000;
  e.last_updated_at_ms = 2'000;
  e.status_details = {{"receive", "1/2"}};
  return e;
}

template <class T>
bool check_error(const chunkd::Expected<T, JobsRequestError>& result) {
  if (result) {
    check(!result->client_token || result->client_token->size() <= kMaxClientTokenChars);
    return true;
  }
  const JobsRequestError& e = result.error();
  check(e.code == JobsErrorCode::InvalidJson || e.code == JobsErrorCode::InvalidRequest);
  check(e.code != JobsErrorCode::InvalidJson || !e.client_token);
  std::string out;
  const JobExecution state = sample(ExecutionStatus::InProgress);
  encode_jobs_rejected(out, e.code, e.message, e.client_token, kNowMs, &state);
  check_json(out, e.client_token);
  return false;
}

void check_update(JobsPayload payload) {
  const auto r = decode_jobs_update(payload);
  if (!check_error(r)) return;
  if (r->status_details) check_details(*r->status_details);
  for (ExecutionStatus from :
       {ExecutionStatus::Queued, ExecutionStatus::InProgress, ExecutionStatus::Succeeded}) {
    const JobExecution current = sample(from);
    const auto outcome = decide_update(current, *r, kNowMs);
    std::string out;
    if (outcome) {
      check(outcome->execution.version_number == current.version_number + 1);
      encode_update_accepted(out, r->client_token, kNowMs, &outcome->execution, kDocument);
    } else {
      encode_jobs_rejected(out, outcome.error().code, outcome.error().message, r->client_token,
                           kNowMs, &current);
    }
    check_json(out, r->client_token);
  }
}

void check_start_next(JobsPayload payload) {
  const auto r = decode_jobs_start_next(payload);
  if (!check_error(r)) return;
  if (r->status_details) check_details(*r->status_details);
  const JobExecution queued = sample(ExecutionStatus::Queued);
  const StartNextOutcome outcome = decide_start_next(&queued, *r, kNowMs);
  check(outcome.execution && outcome.execution->status == ExecutionStatus::InProgress);
  std::string out;
  encode_execution_accepted(out, r->client_token, kNowMs, &*outcome.execution, kDocument);
  check_json(out, r->client_token);
  out.clear();
  encode_notify_next(out, kNowMs, &*outcome.execution, kDocument);
  check_json(out, std::nullopt);
  out.clear();
  encode_notify(out, kNowMs, std::span<const JobExecution>(&*outcome.execution, 1));
  check_json(out, std::nullopt);
}

void check_requests(JobsPayload payload) {
  if (const auto r = decode_jobs_get_pending(payload); check_error(r)) {
    const JobExecution pending[] = {sample(ExecutionStatus::InProgress),
                                    sample(ExecutionStatus::Queued)};
    std::string out;
    encode_get_pending_accepted(out, r->client_token, kNowMs, pending);
    check_json(out, r->client_token);
  }
  if (const auto r = decode_jobs_describe(payload); check_error(r)) {
    const JobExecution e = sample(ExecutionStatus::InProgress);
    std::string out;
    const JobDocument document = r->include_job_document ? JobDocument(kDocument) : std::nullopt;
    encode_execution_accepted(out, r->client_token, kNowMs, &e, document);
    check_json(out, r->client_token);
  }
  check_start_next(payload);
  check_update(payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string_view topic = input.substr(0, newline);
  const std::string_view payload =
      newline == std::string_view::npos ? std::string_view{} : input.substr(newline + 1);
  static const JobsTopicCodec codec;
  static const JobsTopicCodec other("chunkd/things");
  check_topic(codec, topic);
  check_topic(other, topic);
  check_requests(std::as_bytes(std::span<const char>(payload.data(), payload.size())));
  return 0;
}
