#include "tools/chunkload/ota_job.hpp"

#include <simdjson.h>

#include "protocol/control.hpp"
#include "protocol/topic.hpp"

namespace chunkd::chunkload {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

constexpr std::size_t kMaxPathChars = 1024;

std::optional<std::string> string_at(object o, const char* key, std::size_t max_chars) {
  std::string_view v;
  if (o[key].get_string().get(v) != simdjson::SUCCESS || v.size() > max_chars) return std::nullopt;
  return std::string(v);
}

// The afr_ota document, or why the agent could not use it.
Expected<OtaDocument, std::string> parse_document(element job_document) {
  using Fail = chunkd::Unexpected<std::string>;
  auto fail = [](std::string why) -> Fail { return chunkd::unexpected<std::string>(why); };
  object doc, ota;
  if (job_document.get_object().get(doc) != simdjson::SUCCESS) {
    return fail("jobDocument is not a JSON object");
  }
  if (doc["afr_ota"].get_object().get(ota) != simdjson::SUCCESS) {
    return fail("jobDocument has no afr_ota object");
  }
  simdjson::dom::array protocols, files;
  bool mqtt = false;
  if (ota["protocols"].get_array().get(protocols) == simdjson::SUCCESS) {
    for (element p : protocols) {
      std::string_view name;
      if (p.get_string().get(name) == simdjson::SUCCESS && name == "MQTT") mqtt = true;
    }
  }
  if (!mqtt) return fail("afr_ota.protocols does not list MQTT");
  OtaDocument out;
  auto stream = string_at(ota, "streamname", 128);
  if (!stream || !protocol::valid_stream_id(*stream)) {
    return fail("afr_ota.streamname is not a valid stream id");
  }
  out.stream = std::move(*stream);
  object file;
  if (ota["files"].get_array().get(files) != simdjson::SUCCESS || files.size() == 0 ||
      files.at(0).get_object().get(file) != simdjson::SUCCESS) {
    return fail("afr_ota.files holds no file object");
  }
  OtaFile& f = out.file;
  auto path = string_at(file, "filepath", kMaxPathChars);
  auto cert = string_at(file, "certfile", kMaxPathChars);
  auto sig = string_at(file, "sig-sha256-ecdsa", 1024);
  if (!path || path->empty()) return fail("files[0].filepath is missing");
  if (!cert || cert->empty()) return fail("files[0].certfile is missing");
  if (!sig || sig->empty()) return fail("files[0].sig-sha256-ecdsa is missing");
  f.filepath = std::move(*path);
  f.certfile = std::move(*cert);
  f.signature = std::move(*sig);
  std::uint64_t id = 0;
  if (file["fileid"].get_uint64().get(id) != simdjson::SUCCESS || id > 255) {
    return fail("files[0].fileid is not a file id 0..255");
  }
  f.fileid = static_cast<std::uint32_t>(id);
  if (file["filesize"].get_uint64().get(f.filesize) != simdjson::SUCCESS ||
      f.filesize > kMaxOtaFileBytes) {
    return fail("files[0].filesize is not a size up to " + std::to_string(kMaxOtaFileBytes));
  }
  element type;
  if (file["fileType"].get(type) == simdjson::SUCCESS &&
      type.get_uint64().get(f.file_type) != simdjson::SUCCESS) {
    return fail("files[0].fileType is not a non-negative integer");
  }
  return out;
}

}  // namespace

const std::string* NotifiedExecution::detail(std::string_view key) const {
  for (const auto& [k, v] : status_details) {
    if (k == key) return &v;
  }
  return nullptr;
}

Expected<std::optional<NotifiedExecution>, std::string> parse_notify_next(std::string_view text) {
  using Result = Expected<std::optional<NotifiedExecution>, std::string>;
  auto fail = [](std::string why) -> Result { return chunkd::unexpected<std::string>(why); };
  if (text.size() > kMaxNotifyBytes) {
    return fail("notify-next larger than " + std::to_string(kMaxNotifyBytes) + " bytes");
  }
  simdjson::dom::parser parser;
  object root, execution;
  if (parser.parse(text.data(), text.size()).get_object().get(root) != simdjson::SUCCESS) {
    return fail("notify-next is not a JSON object");
  }
  element e;
  if (root["execution"].get(e) != simdjson::SUCCESS || e.is_null()) {
    return Result(std::optional<NotifiedExecution>{});
  }
  if (e.get_object().get(execution) != simdjson::SUCCESS) {
    return fail("notify-next: execution is not an object");
  }
  NotifiedExecution out;
  auto job_id = string_at(execution, "jobId", protocol::kMaxJobIdChars);
  if (!job_id || !protocol::valid_job_id(*job_id)) {
    return fail("notify-next: execution.jobId is not a valid job id");
  }
  out.job_id = std::move(*job_id);
  out.status = string_at(execution, "status", 32).value_or("");
  object details;
  if (execution["statusDetails"].get_object().get(details) == simdjson::SUCCESS) {
    for (auto [key, value] : details) {
      std::string_view v;
      if (out.status_details.size() == protocol::kMaxStatusDetails) break;
      if (value.get_string().get(v) != simdjson::SUCCESS) continue;
      if (key.size() > protocol::kMaxStatusDetailChars ||
          v.size() > protocol::kMaxStatusDetailChars) {
        continue;
      }
      out.status_details.emplace_back(std::string(key), std::string(v));
    }
  }
  element document;
  if (execution["jobDocument"].get(document) != simdjson::SUCCESS) {
    out.document_error = "execution has no jobDocument";
  } else if (auto doc = parse_document(document); doc) {
    out.document = std::move(*doc);
  } else {
    out.document_error = doc.error();
  }
  return Result(std::optional<NotifiedExecution>(std::move(out)));
}

std::string next_get_payload(std::uint64_t counter, std::string_view thing) {
  std::string out = "{\"clientToken\":";
  protocol::append_json_string(out, std::to_string(counter) + ":" + std::string(thing));
  return out + "}";
}

std::string update_payload(protocol::ExecutionStatus status,
                           const protocol::StatusDetails& details) {
  std::string out = "{\"status\":";
  protocol::append_json_string(out, protocol::to_string(status));
  out += ",\"statusDetails\":{";
  for (std::size_t i = 0; i < details.size(); ++i) {
    if (i > 0) out += ',';
    protocol::append_json_string(out, details[i].first);
    out += ':';
    protocol::append_json_string(out, details[i].second);
  }
  return out + "}}";
}

}  // namespace chunkd::chunkload
