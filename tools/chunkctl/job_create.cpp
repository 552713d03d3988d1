// The body of `chunkctl job create`: flags checked here only as far as the JSON needs (numbers are
// digits, files are readable, exactly one of --document and --ota-*); the server checks the rest
// and names the field.
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <span>

#include "protocol/base64.hpp"
#include "protocol/control.hpp"
#include "tools/chunkctl/job.hpp"

namespace chunkctl {
namespace {

constexpr std::size_t kMaxDocumentFileBytes = 1u << 20;  // the server keeps at most 32 KiB
constexpr std::size_t kMaxSignatureFileBytes = 4096;     // the server takes at most 384 bytes
constexpr std::size_t kMaxNumberDigits = 19;

[[noreturn]] void fail(const std::string& message) { usage_error(message, kJobUsage); }

// A whole number as the flag gave it; `fraction` also allows one '.'.
std::string number(const std::string& flag, const std::string& text, bool fraction = false) {
  bool ok =
      !text.empty() && text.size() <= kMaxNumberDigits && text.front() != '.' && text.back() != '.';
  int dots = 0;
  for (char c : text) {
    if (c == '.' && fraction) {
      ++dots;
    } else if (!std::isdigit(static_cast<unsigned char>(c))) {
      ok = false;
    }
  }
  if (!ok || dots > 1) {
    fail(flag + " wants " + (fraction ? "a number" : "a whole number") + ", got '" + text + "'");
  }
  return text;
}

// Up to `limit` bytes of `in`, and one more when there are more: never reads the rest.
std::string read_at_most(std::istream& in, std::size_t limit) {
  std::string bytes;
  char chunk[4096];
  while (bytes.size() <= limit && in) {
    in.read(chunk, static_cast<std::streamsize>(sizeof chunk));
    bytes.append(chunk, static_cast<std::size_t>(in.gcount()));
  }
  return bytes;
}

// At most `limit` bytes of `path` ("-": standard input).
std::string read_bounded(const std::string& flag, const std::string& path, std::size_t limit) {
  std::string bytes;
  if (path == "-") {
    bytes = read_at_most(std::cin, limit);
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(flag + ": cannot read " + path);
    bytes = read_at_most(in, limit);
  }
  if (bytes.size() > limit) {
    fail(flag + ": " + path + " is larger than " + std::to_string(limit) + " bytes");
  }
  return bytes;
}

std::string document_json(const std::string& path) {
  std::string text = read_bounded("--document", path, kMaxDocumentFileBytes);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(text).get(root) != simdjson::SUCCESS || !root.is_object()) {
    fail("--document: " + path + " does not hold a JSON object");
  }
  return simdjson::minify(root);
}

std::string signature_base64(const std::string& path) {
  std::string der = read_bounded("--ota-signature-file", path, kMaxSignatureFileBytes);
  if (der.empty()) fail("--ota-signature-file: " + path + " is empty");
  std::string out(chunkd::protocol::base64::encoded_length(der.size()), '\0');
  chunkd::protocol::base64::encode(std::as_bytes(std::span(der.data(), der.size())), out);
  return out;
}

void field(std::string& out, const char* key, const std::string& text) {
  out += out.back() == '{' ? "\"" : ",\"";
  out += key;
  out += "\":";
  chunkd::protocol::append_json_string(out, text);
}

void raw(std::string& out, const char* key, const std::string& json) {
  out += out.back() == '{' ? "\"" : ",\"";
  out += key;
  out += "\":";
  out += json;
}

std::string ota_json(const JobArgs& a) {
  std::vector<std::string> missing;
  if (!a.ota_stream) missing.push_back("--ota-stream");
  if (!a.ota_file_id) missing.push_back("--ota-file-id");
  if (!a.ota_file_path) missing.push_back("--ota-file-path");
  if (!a.ota_signature_file) missing.push_back("--ota-signature-file");
  if (!a.ota_cert_file) missing.push_back("--ota-cert-file");
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    fail("an OTA job also needs " + list);
  }
  std::string out = "{";
  field(out, "streamId", *a.ota_stream);
  raw(out, "fileId", number("--ota-file-id", *a.ota_file_id));
  field(out, "filePath", *a.ota_file_path);
  field(out, "signature", signature_base64(*a.ota_signature_file));
  field(out, "certFile", *a.ota_cert_file);
  if (a.ota_file_type) raw(out, "fileType", number("--ota-file-type", *a.ota_file_type));
  if (a.ota_attributes) raw(out, "attributes", number("--ota-attributes", *a.ota_attributes));
  return out + "}";
}

// TYPE:PERCENT:MIN → one abortConfig criterion.
std::string abort_json(const std::string& spec) {
  auto first = spec.find(':');
  auto second = first == std::string::npos ? first : spec.find(':', first + 1);
  if (second == std::string::npos) {
    fail("--abort wants FAILURE_TYPE:PERCENT:MIN (as FAILED:10:20), got '" + spec + "'");
  }
  std::string type = spec.substr(0, first);
  std::transform(type.begin(), type.end(), type.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (type != "FAILED" && type != "REJECTED" && type != "TIMED_OUT" && type != "ALL") {
    fail("--abort failure type must be FAILED, REJECTED, TIMED_OUT or ALL, got '" +
         spec.substr(0, first) + "'");
  }
  std::string out = "{";
  field(out, "failureType", type);
  field(out, "action", "CANCEL");
  raw(out, "thresholdPercentage",
      number("--abort percent", spec.substr(first + 1, second - first - 1), true));
  raw(out, "minNumberOfExecutedThings", number("--abort minimum", spec.substr(second + 1)));
  return out + "}";
}

}  // namespace

std::string job_create_body(const JobArgs& a) {
  if (a.targets.empty()) fail("job create needs at least one --target");
  bool ota = a.ota_stream || a.ota_file_id || a.ota_file_path || a.ota_signature_file ||
             a.ota_cert_file || a.ota_file_type || a.ota_attributes;
  if (ota == a.document_file.has_value()) {
    fail("job create needs exactly one of --document FILE and the --ota-... flags");
  }
  std::string out = "{";
  std::string targets = "[";
  for (const std::string& t : a.targets) {
    if (targets.size() > 1) targets += ',';
    chunkd::protocol::append_json_string(targets, t);
  }
  raw(out, "targets", targets + "]");
  if (a.document_file) raw(out, "document", document_json(*a.document_file));
  if (ota) raw(out, "ota", ota_json(a));
  if (a.description) field(out, "description", *a.description);
  if (a.max_per_minute) {
    raw(out, "jobExecutionsRolloutConfig",
        "{\"maximumPerMinute\":" + number("--max-per-minute", *a.max_per_minute) + "}");
  }
  if (!a.aborts.empty()) {
    std::string list = "[";
    for (const std::string& spec : a.aborts)
      list += (list.size() > 1 ? "," : "") + abort_json(spec);
    raw(out, "abortConfig", "{\"criteriaList\":" + list + "]}");
  }
  if (a.timeout_minutes) {
    raw(out, "timeoutConfig",
        "{\"inProgressTimeoutInMinutes\":" + number("--timeout-minutes", *a.timeout_minutes) + "}");
  }
  return out + "}";
}

}  // namespace chunkctl
