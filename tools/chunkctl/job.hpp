// chunkctl job: the jobs of docs/jobs.md ("HTTP") from the command line.
//
//   chunkctl job create <jobId> --target T [--target T ...]
//       (--document FILE|- | --ota-stream S --ota-file-id N --ota-file-path P
//        --ota-signature-file SIGFILE --ota-cert-file C [--ota-file-type N] [--ota-attributes N])
//       [--description D] [--max-per-minute N] [--abort TYPE:PERCENT:MIN ...]
//       [--timeout-minutes N]
//   chunkctl job describe <jobId>
//   chunkctl job list [--max-results N] [--next-token T] [--descending] [--all]
//   chunkctl job things <jobId> [--status S] [--max-results N] [--next-token T] [--descending]
//                       [--all]
//   chunkctl job cancel <jobId> [--force] [--reason-code CODE] [--comment TEXT]
//   chunkctl job delete <jobId> [--force]
//   chunkctl job watch <jobId> [--interval-ms N] [--once]
//
// The global options (tools/chunkctl/common.hpp) may come before `job` or among its arguments.
// SIGFILE is the DER signature `openssl dgst -sha256 -sign` writes; chunkctl sends it base64
// encoded. Exit status as every command's (0, 1 refused, 2 usage or connection), except watch:
// 0 when the job COMPLETED with every execution SUCCEEDED, 1 when it ended otherwise (canceled,
// aborted, or an execution that did not succeed); with --once, 0 also while it is in progress.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/chunkctl/common.hpp"

namespace chunkctl {

int job_main(const Global& g, const std::vector<std::string>& args);

extern const char* const kJobUsage;

struct JobArgs {
  Global g;
  std::string command;
  std::string id;
  // create
  std::vector<std::string> targets;
  std::optional<std::string> document_file;  // "-": standard input
  std::optional<std::string> ota_stream, ota_file_id, ota_file_path, ota_signature_file,
      ota_cert_file, ota_file_type, ota_attributes;
  std::optional<std::string> description, max_per_minute, timeout_minutes;
  std::vector<std::string> aborts;  // TYPE:PERCENT:MIN
  // list, things
  std::optional<std::string> status, max_results, next_token;
  bool descending = false;
  bool all = false;
  // cancel, delete
  bool force = false;
  std::optional<std::string> reason_code, comment;
  // watch
  int interval_ms = 1000;
  bool once = false;
};

// The POST /jobs/{jobId} body of `a` (tools/chunkctl/job_create.cpp); usage_error on a bad flag.
std::string job_create_body(const JobArgs& a);

// A job's things by where they are: waiting for release (the rollout rate), then one count per
// execution status, from a describe answer's jobProcessDetails (tools/chunkctl/job_watch.cpp).
struct JobCounts {
  static constexpr std::size_t kWaiting = 0, kQueued = 1, kInProgress = 2, kSucceeded = 3;
  static constexpr std::size_t kKinds = 9;
  std::array<std::uint64_t, kKinds> n{};
  std::uint64_t total() const;
  bool operator==(const JobCounts&) const = default;
};
std::optional<JobCounts> job_counts(simdjson::dom::element describe_data);
// "10 things: waiting 3, queued 2, in progress 1, succeeded 4, failed 0, ..." (removed when > 0).
std::string counts_text(const JobCounts& c);

// The live view (tools/chunkctl/job_watch.cpp); returns the exit status.
int job_watch(const Client& client, const JobArgs& a);

}  // namespace chunkctl
