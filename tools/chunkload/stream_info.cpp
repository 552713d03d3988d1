#include "tools/chunkload/stream_info.hpp"

#include <simdjson.h>

#include "base/text.hpp"
#include "tools/common/http_client.hpp"

namespace chunkd::chunkload {
namespace {

using Error = chunkd::Unexpected<std::string>;
Error fail(std::string message) { return chunkd::unexpected<std::string>(std::move(message)); }

std::string text_field(simdjson::dom::element e, const char* key) {
  std::string_view v;
  if (e[key].get_string().get(v) != simdjson::SUCCESS) return "";
  return std::string(v);
}

}  // namespace

const StreamFile* StreamInfo::find(std::uint32_t file_id) const {
  for (const StreamFile& f : files) {
    if (f.file_id == file_id) return &f;
  }
  return nullptr;
}

std::optional<Digest> parse_digest(std::string_view hex) {
  Digest d{};
  if (hex.size() != 2 * d.size()) return std::nullopt;
  for (std::size_t i = 0; i < d.size(); ++i) {
    int hi = base::hex_value(hex[2 * i]);
    int lo = base::hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    d[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return d;
}

std::string digest_hex(const Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * d.size());
  for (std::uint8_t b : d) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

Expected<StreamInfo, std::string> parse_stream_info(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size()).get(root) != simdjson::SUCCESS) {
    return fail("the control API answered with a body that is not JSON");
  }
  bool success = false;
  if (root["success"].get(success) != simdjson::SUCCESS || !success) {
    simdjson::dom::element err;
    if (root["error"].get(err) == simdjson::SUCCESS) {
      return fail("the control API answered " + text_field(err, "code") + ": " +
                  text_field(err, "message"));
    }
    return fail("the control API answered without success");
  }
  simdjson::dom::element data;
  if (root["data"].get(data) != simdjson::SUCCESS) return fail("the describe reply has no data");
  StreamInfo info;
  if (data["streamVersion"].get(info.version) != simdjson::SUCCESS) {
    return fail("the describe reply has no streamVersion");
  }
  simdjson::dom::array files;
  if (data["files"].get(files) != simdjson::SUCCESS) return fail("the describe reply has no files");
  for (simdjson::dom::element f : files) {
    StreamFile sf;
    std::uint64_t id = 0;
    if (f["fileId"].get(id) != simdjson::SUCCESS || id > 255) {
      return fail("the describe reply has a file without a valid fileId");
    }
    sf.file_id = static_cast<std::uint32_t>(id);
    if (f["sizeBytes"].get(sf.size_bytes) != simdjson::SUCCESS) {
      return fail("file " + std::to_string(id) + " has no sizeBytes in the describe reply");
    }
    std::string_view digest;
    if (f["digest"].get_string().get(digest) == simdjson::SUCCESS) {
      sf.digest = parse_digest(digest);
      if (!sf.digest) {
        return fail("file " + std::to_string(id) + " has a digest that is not 32 hex digits");
      }
    }
    info.files.push_back(sf);
  }
  return info;
}

Expected<StreamInfo, std::string> fetch_stream_info(const std::string& control_url,
                                                    const std::string& token,
                                                    const std::string& stream_id, int timeout_ms) {
  auto url = tools::parse_url(control_url);
  if (!url) return fail("--control-url: " + url.error());
  std::vector<std::pair<std::string, std::string>> headers;
  if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
  auto response = tools::http_request(*url, "GET", "/streams/" + tools::url_encode(stream_id), "",
                                      headers, timeout_ms);
  if (!response) return fail("control API " + control_url + ": " + response.error());
  auto info = parse_stream_info(response->body);
  if (!info) return fail(info.error() + " (HTTP " + std::to_string(response->status) + ")");
  return info;
}

}  // namespace chunkd::chunkload
