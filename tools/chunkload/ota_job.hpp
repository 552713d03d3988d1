// What an OTA device reads from and writes to the Jobs MQTT API (the hosted service's shapes, as
// the OTA agent uses them): the execution a `notify-next` carries with its `afr_ota` job document,
// and the payloads of `$next/get` and `<jobId>/update`. Pure: no I/O; any thread.
//
// Every byte is hostile: a message is bounded (kMaxNotifyBytes), every field is checked for type
// and range, and a document the agent could not use is reported as such (the device REJECTs the
// job) rather than guessed at.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/expected.hpp"
#include "protocol/jobs.hpp"

namespace chunkd::chunkload {

inline constexpr std::size_t kMaxNotifyBytes = 64u << 10;  // a 32 KiB document and its envelope
inline constexpr std::uint64_t kMaxOtaFileBytes = 4ull << 30;

// files[0] of the afr_ota document (the agent handles one file per job).
struct OtaFile {
  std::string filepath;
  std::uint64_t filesize = 0;
  std::uint32_t fileid = 0;
  std::string certfile;
  std::string signature;  // sig-sha256-ecdsa, base64 DER
  std::uint64_t file_type = 0;
};

struct OtaDocument {
  std::string stream;  // streamname
  OtaFile file;
};

struct NotifiedExecution {
  std::string job_id;
  std::string status;  // as sent, e.g. "QUEUED", "IN_PROGRESS"
  protocol::StatusDetails status_details;
  std::optional<OtaDocument> document;  // nullopt: `document_error` says why it is unusable
  std::string document_error;

  const std::string* detail(std::string_view key) const;
};

// A notify-next message: nullopt when it carries no `execution` (nothing to do); an error when
// it is not a JSON object or its execution has no valid jobId.
Expected<std::optional<NotifiedExecution>, std::string> parse_notify_next(std::string_view text);

// {"clientToken":"<counter>:<thing>"}
std::string next_get_payload(std::uint64_t counter, std::string_view thing);
// {"status":"<status>","statusDetails":{...}}
std::string update_payload(protocol::ExecutionStatus status,
                           const protocol::StatusDetails& details);

}  // namespace chunkd::chunkload
