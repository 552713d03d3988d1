// chunkload command line: every option, its default and its bounds (docs/chunkload.md is the
// user-facing reference). Parsing is pure apart from reading CHUNKD_URL / CHUNKD_TOKEN and the
// process id for the default thing prefix.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/expected.hpp"
#include "protocol/topic.hpp"

namespace chunkd::chunkload {

enum class Mode : std::uint8_t {
  Window,  // o/n requests walking the file
  Bitmap,  // OTA-agent style: o + bitmap of every block still wanted, n blocks per request
};

// Who speaks MQTT (docs/chunkload.md, "Engines"): Auto picks Raw for tcp:// and mqtt:// outside
// --ota, Paho otherwise; parse_options resolves Auto.
enum class Engine : std::uint8_t { Auto, Paho, Raw };

struct Options {
  std::string uri = "tcp://127.0.0.1:1883";
  std::string stream_id;  // required, except with --ota (the job names the stream)
  std::uint32_t devices = 1;
  std::string thing_prefix;  // default "chunkload-<pid>-"
  std::string topic_prefix = "$aws/things";
  protocol::Format format = protocol::Format::Cbor;
  std::uint32_t block_size_bytes = 4096;  // 256..131072
  std::uint32_t blocks_per_request = 0;   // 0: leave `n` out, chunkd sends 131072 / l
  std::uint32_t in_flight = 1;            // requests outstanding per device, 1..kMaxInFlight
  Mode mode = Mode::Window;
  std::optional<std::vector<std::uint32_t>> files;  // nullopt: every file the stream has
  std::uint32_t timeout_ms = 2000;
  std::uint32_t max_retries = 20;
  std::uint32_t connections = 0;  // 0: one MQTT connection per device
  Engine engine = Engine::Auto;   // never Auto after parse_options
  std::string control_url;        // default $CHUNKD_URL or http://127.0.0.1:8080
  std::string token;              // default $CHUNKD_TOKEN
  bool verify = true;
  bool describe = true;
  int qos = 0;                      // subscription QoS
  std::string client_token_prefix;  // requests carry c = prefix + "<slot>.<generation>"
  std::uint32_t max_seconds = 600;
  std::uint32_t ramp_ms = 0;
  bool json = false;
  bool quiet = false;
  // --ota: devices behave as the OTA agent (docs/chunkload.md, "OTA mode").
  bool ota = false;
  std::string ota_cert;  // PEM certificate whose key checks every image's signature
  std::uint32_t ota_reboot_ms = 200;
  std::uint32_t fail_percent = 0;  // share of devices that report FAILED on purpose
};

inline constexpr std::uint32_t kMaxInFlight = 256;
inline constexpr std::uint32_t kOtaBlocksPerRequest = 8;  // the OTA agent's n
inline constexpr std::uint32_t kMaxDevices = 100000;
// Longest token prefix that leaves room for "<slot>.<generation>" within the 64-byte token limit.
inline constexpr std::size_t kMaxClientTokenPrefixBytes = 40;

enum class ParseStatus : std::uint8_t { Run, Help };
struct Parsed {
  ParseStatus status = ParseStatus::Run;
  Options options;
};

// Parses argv; "--opt value" and "--opt=value" both work. An error is a one-line message for a
// usage error (exit code 2).
Expected<Parsed, std::string> parse_options(int argc, const char* const* argv);
const char* usage_text();
const char* engine_name(Engine engine);  // "auto", "paho", "raw"

}  // namespace chunkd::chunkload
