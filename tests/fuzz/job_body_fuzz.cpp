// libFuzzer target for the HTTP side of jobs (protocol/job_control.hpp): the same bytes go through
// parse_create_job, parse_cancel_job, parse_job_list_query and parse_execution_list_query. An
// accepted create body must respect every documented bound, read back as the same spec from
// encode_job_spec, and give valid JSON in every response and in the afr_ota document (whose fields
// must carry the spec's values); a refused body must give a VALIDATION_ERROR or PAYLOAD_TOO_LARGE
// envelope that is valid JSON. A decoded nextToken must round-trip through encode_next_token.
#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"
#include "protocol/job_control.hpp"
#include "protocol/jobs.hpp"
#include "protocol/thing_pattern.hpp"
#include "protocol/topic.hpp"

namespace {

using namespace chunkd::protocol;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "job_body_fuzz: invariant failed: %s\n", what);
    std::abort();
  }
}

simdjson::dom::parser& json_parser() {
  static simdjson::dom::parser parser;
  return parser;
}

simdjson::dom::element must_parse(const std::string& text) {
  simdjson::dom::element root;
  const auto err = json_parser().parse(text).get(root);
  if (err != simdjson::SUCCESS) {
    std::fprintf(stderr, "job_body_fuzz: invalid JSON output (%s): %s\n",
                 simdjson::error_message(err), text.c_str());
    std::abort();
  }
  return root;
}

void check_error(const ApiError& e) {
  check(e.code == ApiErrorCode::ValidationError || e.code == ApiErrorCode::PayloadTooLarge,
        "errors are VALIDATION_ERROR or PAYLOAD_TOO_LARGE");
  check(e.details.size() <= kMaxErrorDetails, "details are capped");
  check(!e.message.empty(), "error has a message");
  must_parse(error_response(e));
}

void check_spec(const JobSpec& spec) {
  check(!spec.targets.empty() && spec.targets.size() <= kMaxJobTargets, "1..100 targets");
  for (std::size_t i = 0; i < spec.targets.size(); ++i) {
    check(!thing_pattern_problem(spec.targets[i]), "each target is a valid pattern");
    for (std::size_t j = 0; j < i; ++j) check(spec.targets[i] != spec.targets[j], "distinct");
  }
  check(spec.document.has_value() != spec.ota.has_value(), "exactly one of document and ota");
  if (spec.document) {
    check(spec.document->size() <= kMaxJobDocumentBytes, "document at most 32 KiB");
    check(must_parse(*spec.document).is_object(), "document is an object");
  }
  if (spec.ota) {
    check(valid_stream_id(spec.ota->stream_id), "ota.streamId valid");
    check(spec.ota->file_id <= 255, "ota.fileId 0..255");
    check(!spec.ota->file_path.empty() && !spec.ota->cert_file.empty(), "paths non-empty");
  }
  check(!spec.maximum_per_minute ||
            (*spec.maximum_per_minute >= 1 && *spec.maximum_per_minute <= kMaxRolloutPerMinute),
        "maximumPerMinute 1..1000");
  check(spec.abort_criteria.size() <= kMaxAbortCriteria, "at most 4 criteria");
  for (const AbortCriterion& c : spec.abort_criteria) {
    check(c.threshold_percentage > 0 && c.threshold_percentage <= 100, "0 < threshold <= 100");
    check(c.min_executed_things >= 1, "minNumberOfExecutedThings >= 1");
  }
  check(!spec.in_progress_timeout_minutes ||
            (*spec.in_progress_timeout_minutes >= 1 &&
             *spec.in_progress_timeout_minutes <= kMaxInProgressTimeoutMinutes),
        "inProgressTimeoutInMinutes 1..10080");
}

void check_ota_document(const OtaSpec& ota) {
  auto doc = build_ota_document(ota, 1u << 20);
  check(doc.has_value(), "a 1 MiB file makes a document");
  auto root = must_parse(*doc);
  std::string_view s;
  check(root["afr_ota"]["streamname"].get(s) == simdjson::SUCCESS && s == ota.stream_id,
        "streamname carries streamId");
  auto file = root["afr_ota"]["files"].at(0);
  check(file["filepath"].get(s) == simdjson::SUCCESS && s == ota.file_path, "filepath");
  check(file["certfile"].get(s) == simdjson::SUCCESS && s == ota.cert_file, "certfile");
  check(file["sig-sha256-ecdsa"].get(s) == simdjson::SUCCESS && s == ota.signature, "signature");
  std::uint64_t n = 0;
  check(file["fileid"].get(n) == simdjson::SUCCESS && n == ota.file_id, "fileid");
}

void fuzz_create(std::string_view input) {
  auto r = parse_create_job(input);
  if (!r) {
    check_error(r.error());
    return;
  }
  check_spec(*r);
  const std::string stored = encode_job_spec(*r);
  auto again = parse_create_job(stored);
  check(again.has_value() && *again == *r, "the stored spec reads back as the same spec");
  job_warnings(*r);

  JobInfo job;
  job.job_id = "fuzz";
  job.spec = *r;
  if (r->ota) {
    check_ota_document(*r->ota);
    job.document = *build_ota_document(*r->ota, 42);
  } else {
    job.document = *r->document;
  }
  job.created_at_ms = static_cast<std::int64_t>(input.size()) * 86'400'000;
  auto described = must_parse(job_describe_response(job));
  std::string_view description;
  check(described["data"]["description"].get(description) == simdjson::SUCCESS &&
            description == r->description,
        "description round-trips");
  must_parse(job_list_response({job}, encode_next_token("fuzz")));
  must_parse(job_create_response(job, job_warnings(*r)));
}

void fuzz_queries(std::string_view input) {
  if (auto q = parse_job_list_query(input); !q) {
    check_error(q.error());
  } else if (q->after_id) {
    check(valid_job_id(*q->after_id), "decoded id is a valid jobId");
    auto again = parse_job_list_query("nextToken=" + encode_next_token(*q->after_id));
    check(again.has_value() && again->after_id == q->after_id, "job token round-trips");
  }
  if (auto q = parse_execution_list_query(input); !q) {
    check_error(q.error());
  } else if (q->page.after_id) {
    check(valid_thing_name(*q->page.after_id), "decoded id is a valid thing name");
    auto again = parse_execution_list_query("nextToken=" + encode_next_token(*q->page.after_id));
    check(again.has_value() && again->page.after_id == q->page.after_id, "thing token round-trips");
  }
}

// Any bytes as a thing name and status details still make valid JSON.
void fuzz_executions(std::string_view input) {
  JobExecution e;
  e.thing = std::string(input.substr(0, input.size() / 2));
  e.status_details = {{std::string(input), std::string(input.substr(input.size() / 2))}};
  e.last_updated_at_ms = static_cast<std::int64_t>(input.size()) * -1'000'000'007;
  must_parse(job_executions_response({e}, std::nullopt));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  fuzz_create(input);
  fuzz_queries(input);
  fuzz_executions(input);
  if (auto cancel = parse_cancel_job(input); !cancel) {
    check_error(cancel.error());
  } else {
    check(cancel->reason_code.size() <= kMaxReasonCodeChars, "reasonCode bounded");
  }
  return 0;
}
