#include "tools/chunkload/options.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <iterator>
#include <string_view>

#include "protocol/request.hpp"

namespace chunkd::chunkload {
namespace {

using Error = chunkd::Unexpected<std::string>;

Error fail(std::string message) { return chunkd::unexpected<std::string>(std::move(message)); }

bool parse_u32(std::string_view text, std::uint32_t& out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

std::optional<std::string> parse_u32_in(std::string_view name, std::string_view text,
                                        std::uint32_t min, std::uint32_t max, std::uint32_t& out) {
  if (!parse_u32(text, out) || out < min || out > max) {
    return std::string(name) + " wants an integer in " + std::to_string(min) + ".." +
           std::to_string(max) + " (got '" + std::string(text) + "')";
  }
  return std::nullopt;
}

std::optional<std::string> parse_file_list(std::string_view text, std::vector<std::uint32_t>& out) {
  out.clear();
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    std::uint32_t id = 0;
    if (!parse_u32(item, id) || id > protocol::kMaxFileId) {
      return "--files wants file ids 0..255 separated by commas (got '" + std::string(item) + "')";
    }
    for (std::uint32_t seen : out) {
      if (seen == id) return "--files names file " + std::to_string(id) + " twice";
    }
    out.push_back(id);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
    if (text.empty()) return std::string("--files ends with a comma");
  }
  if (out.empty()) return std::string("--files wants at least one file id");
  return std::nullopt;
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::string(v) : std::string(fallback);
}

// --ota's rules: the job names the stream; the agent's request style; a certificate to check with.
std::optional<std::string> settle_ota(Options& o, bool have_stream, bool have_fail_percent,
                                      bool have_blocks_per_request) {
  if (!o.ota) {
    if (!o.ota_cert.empty() || have_fail_percent) {
      return std::string("--ota-cert and --fail-percent need --ota");
    }
    return std::nullopt;
  }
  if (have_stream) return std::string("--ota takes the stream from the job document: no --stream");
  if (o.ota_cert.empty()) return std::string("--ota needs --ota-cert (the signing certificate)");
  if (o.files) return std::string("--ota downloads the file the job names: no --files");
  if (o.engine == Engine::Raw) {
    return std::string(
        "--engine raw does not run --ota (its job flow is paho's): use --engine paho");
  }
  o.mode = Mode::Bitmap;
  o.verify = false;  // the signature is the check
  o.describe = false;
  if (!have_blocks_per_request) o.blocks_per_request = kOtaBlocksPerRequest;
  return std::nullopt;
}

// Auto: the raw engine wherever it can (plain TCP, no --ota).
std::optional<std::string> settle_engine(Options& o) {
  const bool tcp = o.uri.rfind("tcp://", 0) == 0 || o.uri.rfind("mqtt://", 0) == 0;
  if (o.engine == Engine::Raw && !tcp) {
    return "--engine raw speaks tcp:// and mqtt:// only (got '" + o.uri + "'): use --engine paho";
  }
  if (o.engine == Engine::Auto) o.engine = tcp && !o.ota ? Engine::Raw : Engine::Paho;
  return std::nullopt;
}

}  // namespace

const char* engine_name(Engine engine) {
  switch (engine) {
    case Engine::Auto:
      return "auto";
    case Engine::Paho:
      return "paho";
    case Engine::Raw:
      return "raw";
  }
  return "auto";
}

const char* usage_text() {
  return R"(usage: chunkload --stream ID [options]
       chunkload --ota --ota-cert CERT.pem [options]
Simulates a fleet of devices downloading a chunkd stream over MQTT and reports throughput.
With --ota, the devices behave as the OTA agent: they wait for a job on notify-next, download the
file it names, check its signature, report progress and the outcome on the job.

  --uri URI                  broker (default tcp://127.0.0.1:1883)
  --stream ID                stream to download (required)
  --devices N                simulated devices (default 1)
  --connections C            0: one MQTT connection per device (default); C>0: devices share
                             C connections (multiplex mode, for large fleets)
  --engine auto|raw|paho     raw: chunkload's own MQTT 3.1.1 over epoll (tcp://, mqtt://);
                             paho: paho.mqtt.c (ws://, --ota); auto (default): raw where it can
  --thing-prefix P           thing i is P<i> (default chunkload-<pid>-)
  --topic-prefix P           topic prefix (default $aws/things)
  --format cbor|json         request/reply format (default cbor)
  --block-size BYTES         l, 256..131072 (default 4096)
  --blocks-per-request N     n (default 0: leave n out, chunkd sends 131072/l blocks)
  --in-flight K              requests outstanding per device (default 1)
  --mode window|bitmap       window: o/n requests walking the file (default);
                             bitmap: OTA-agent style o + bitmap of all missing blocks
  --files LIST               file ids to download, e.g. 0,2 (default: every file)
  --timeout-ms T             re-request a request's missing blocks after T ms without
                             progress (default 2000)
  --max-retries R            fail a device after R re-requests without progress (default 20)
  --control-url URL          control API for digests (default $CHUNKD_URL or
                             http://127.0.0.1:8080)
  --token TOKEN              control API bearer token (default $CHUNKD_TOKEN)
  --no-verify                skip digest verification (sizes and block lengths still checked)
  --no-describe              skip DescribeStream; sizes and version come from the control API
  --qos 0|1                  subscription QoS (default 0)
  --client-token-prefix P    requests carry c = P<slot>.<generation> (default empty)
  --max-seconds S            overall bound (default 600)
  --ramp-ms MS               spread device starts over MS milliseconds (default 0)
  --json                     print the report as JSON on stdout
  --quiet                    no progress bar, no warnings on stderr
  -h, --help                 this text

OTA mode:
  --ota                      devices run the OTA agent's job flow (no --stream: the job names
                             it; bitmap mode, n = 8 unless --blocks-per-request is given)
  --ota-cert FILE            PEM certificate (EC P-256) that checks every image's signature
                             (required with --ota)
  --ota-reboot-ms MS         the simulated reboot after the self-test is ready (default 200)
  --fail-percent P           P% of the devices (spread evenly by index) report FAILED after the
                             download (default 0)

Exit status: 0 every device downloaded and verified every file (--ota: reported SUCCEEDED, or
FAILED on purpose); 1 a device failed; 2 usage error.
)";
}

Expected<Parsed, std::string> parse_options(int argc, const char* const* argv) {
  Parsed parsed;
  Options& o = parsed.options;
  o.thing_prefix = "chunkload-" + std::to_string(::getpid()) + "-";
  o.control_url = env_or("CHUNKD_URL", "http://127.0.0.1:8080");
  o.token = env_or("CHUNKD_TOKEN", "");
  bool have_stream = false;
  bool have_fail_percent = false;
  bool have_blocks_per_request = false;

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      parsed.status = ParseStatus::Help;
      return parsed;
    }
    if (arg.substr(0, 2) != "--") return fail("unexpected argument '" + std::string(arg) + "'");
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }

    // Flags without a value.
    auto flag = [&](bool& target, bool value) -> std::optional<std::string> {
      if (inline_value) return std::string(name) + " takes no value";
      target = value;
      return std::nullopt;
    };
    std::optional<std::string> err;
    if (name == "--json") {
      err = flag(o.json, true);
    } else if (name == "--quiet") {
      err = flag(o.quiet, true);
    } else if (name == "--no-verify") {
      err = flag(o.verify, false);
    } else if (name == "--describe") {
      err = flag(o.describe, true);
    } else if (name == "--no-describe") {
      err = flag(o.describe, false);
    } else if (name == "--ota") {
      err = flag(o.ota, true);
    } else {
      static constexpr std::string_view kValued[] = {"--uri",          "--stream",
                                                     "--devices",      "--thing-prefix",
                                                     "--topic-prefix", "--format",
                                                     "--block-size",   "--blocks-per-request",
                                                     "--in-flight",    "--mode",
                                                     "--files",        "--timeout-ms",
                                                     "--max-retries",  "--connections",
                                                     "--control-url",  "--token",
                                                     "--qos",          "--client-token-prefix",
                                                     "--max-seconds",  "--ramp-ms",
                                                     "--ota-cert",     "--ota-reboot-ms",
                                                     "--fail-percent", "--engine"};
      if (std::find(std::begin(kValued), std::end(kValued), name) == std::end(kValued)) {
        return fail("unknown option '" + std::string(name) + "'");
      }
      std::string_view value;
      if (inline_value) {
        value = *inline_value;
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return fail(std::string(name) + " needs a value");
      }
      if (name == "--uri") {
        // paho-mqtt3a speaks plain TCP and WebSockets; TLS would need the ssl variant.
        if (value.rfind("tcp://", 0) != 0 && value.rfind("mqtt://", 0) != 0 &&
            value.rfind("ws://", 0) != 0) {
          return fail("--uri wants tcp://host:port, mqtt://host:port or ws://host:port (got '" +
                      std::string(value) + "')");
        }
        o.uri = value;
      } else if (name == "--stream") {
        if (!protocol::valid_stream_id(value)) {
          return fail("--stream wants 1..128 of [a-zA-Z0-9_-] (got '" + std::string(value) + "')");
        }
        o.stream_id = value;
        have_stream = true;
      } else if (name == "--devices") {
        err = parse_u32_in(name, value, 1, kMaxDevices, o.devices);
      } else if (name == "--thing-prefix") {
        o.thing_prefix = value;
      } else if (name == "--topic-prefix") {
        if (!protocol::TopicCodec::valid_prefix(value)) {
          return fail("--topic-prefix must be non-empty, without '+', '#' or a trailing slash");
        }
        o.topic_prefix = value;
      } else if (name == "--format") {
        if (value == "cbor") {
          o.format = protocol::Format::Cbor;
        } else if (value == "json") {
          o.format = protocol::Format::Json;
        } else {
          return fail("--format wants cbor or json (got '" + std::string(value) + "')");
        }
      } else if (name == "--block-size") {
        err = parse_u32_in(name, value, protocol::kMinBlockSize, protocol::kMaxBlockSize,
                           o.block_size_bytes);
      } else if (name == "--blocks-per-request") {
        err = parse_u32_in(name, value, 0, protocol::kMaxBlockCount, o.blocks_per_request);
        have_blocks_per_request = true;
      } else if (name == "--in-flight") {
        err = parse_u32_in(name, value, 1, kMaxInFlight, o.in_flight);
      } else if (name == "--mode") {
        if (value == "window") {
          o.mode = Mode::Window;
        } else if (value == "bitmap") {
          o.mode = Mode::Bitmap;
        } else {
          return fail("--mode wants window or bitmap (got '" + std::string(value) + "')");
        }
      } else if (name == "--files") {
        std::vector<std::uint32_t> ids;
        err = parse_file_list(value, ids);
        if (!err) o.files = std::move(ids);
      } else if (name == "--timeout-ms") {
        err = parse_u32_in(name, value, 10, 3600000, o.timeout_ms);
      } else if (name == "--max-retries") {
        err = parse_u32_in(name, value, 0, 1000000, o.max_retries);
      } else if (name == "--connections") {
        err = parse_u32_in(name, value, 0, kMaxDevices, o.connections);
      } else if (name == "--engine") {
        if (value == "auto") {
          o.engine = Engine::Auto;
        } else if (value == "raw") {
          o.engine = Engine::Raw;
        } else if (value == "paho") {
          o.engine = Engine::Paho;
        } else {
          return fail("--engine wants auto, raw or paho (got '" + std::string(value) + "')");
        }
      } else if (name == "--control-url") {
        o.control_url = value;
      } else if (name == "--token") {
        o.token = value;
      } else if (name == "--qos") {
        std::uint32_t q = 0;
        err = parse_u32_in(name, value, 0, 1, q);
        o.qos = static_cast<int>(q);
      } else if (name == "--client-token-prefix") {
        if (value.size() > kMaxClientTokenPrefixBytes) {
          return fail("--client-token-prefix is longer than " +
                      std::to_string(kMaxClientTokenPrefixBytes) + " bytes");
        }
        o.client_token_prefix = value;
      } else if (name == "--max-seconds") {
        err = parse_u32_in(name, value, 1, 7 * 24 * 3600, o.max_seconds);
      } else if (name == "--ramp-ms") {
        err = parse_u32_in(name, value, 0, 24 * 3600 * 1000, o.ramp_ms);
      } else if (name == "--ota-cert") {
        o.ota_cert = value;
      } else if (name == "--ota-reboot-ms") {
        err = parse_u32_in(name, value, 0, 600000, o.ota_reboot_ms);
      } else if (name == "--fail-percent") {
        err = parse_u32_in(name, value, 0, 100, o.fail_percent);
        have_fail_percent = true;
      } else {
        return fail("unknown option '" + std::string(name) + "'");
      }
    }
    if (err) return fail(std::move(*err));
  }

  if (auto ota_err = settle_ota(o, have_stream, have_fail_percent, have_blocks_per_request)) {
    return fail(std::move(*ota_err));
  }
  if (auto engine_err = settle_engine(o)) return fail(std::move(*engine_err));
  if (!have_stream && !o.ota) return fail("--stream is required");
  // Every thing name must be valid; the longest is the last device's.
  std::string last_thing = o.thing_prefix + std::to_string(o.devices - 1);
  if (!protocol::valid_thing_name(last_thing)) {
    return fail("--thing-prefix gives invalid thing names like '" + last_thing +
                "' (want 1..128 of [a-zA-Z0-9:_-])");
  }
  if (o.connections > o.devices) o.connections = o.devices;
  return parsed;
}

}  // namespace chunkd::chunkload
