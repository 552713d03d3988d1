// fleet_ceiling: the broker's own ceiling for one bench/fleet scenario (bench/README.md, "##
// Fleet"). No MQTT client library: CONNECT, SUBSCRIBE and PUBLISH are written by hand to TCP
// sockets, and every data reply is pre-encoded once (protocol::encode_data_reply), so a publish
// costs the broker exactly what one of chunkd's costs and this process next to nothing.
//
//   --mode raw      (raw.cpp) the publisher and the receivers are both ours: the broker alone.
//                   Measures messages/s from the first connect to the last message received.
//   --mode devices  (devices.cpp) the other half of the comparison: raw-socket devices, with the
//                   receive cost of raw mode's subscribers, download from chunkd in window
//                   requests. Against raw mode, only the publisher differs: chunkd or a socket.
//   --mode respond  (respond.cpp) plays chunkd's part for a chunkload fleet: subscribes to the
//                   request topics, answers DescribeStream and GetStream with pre-encoded replies
//                   of the real file, written with writev. chunkload measures, exactly as it
//                   measures chunkd, so the two runs differ only in who publishes.
//   --mode amqp-respond  (amqp_respond.cpp) respond's part behind RabbitMQ: requests consumed from
//                   a quorum queue, pre-encoded replies published to amq.topic with publisher
//                   confirms, requests acked once confirmed: chunkd's AMQP transport minus chunkd.
//
// Output: one JSON line on stdout (respond mode: a line "ready" first, once subscribed). Exit 0
// on success, 1 on a timeout or error (the JSON still says how far it got), 2 on a usage error.
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>

#include "bench/ceiling/ceiling.hpp"
#include "protocol/request.hpp"

namespace {

using chunkd::ceiling::Mode;
using chunkd::ceiling::Options;

constexpr std::uint32_t kMaxDevices = 100000;

const char* kUsage = R"(usage: fleet_ceiling [--mode raw|devices|respond|amqp-respond] [options]
The broker's ceiling for a chunkd fleet scenario: pre-encoded MQTT PUBLISH packets of chunkd's
data-reply size written straight to sockets.

Every mode:
  --uri tcp://HOST:PORT   broker (default tcp://127.0.0.1:1883)
  --publishers P          publisher connections, device/thing on a fixed one (default 2)
  --format cbor|json      data reply format (default cbor)
  --block-size BYTES      256..131072 (default 4096)
  --topic-prefix P        (default $aws/things)
  --token T               client token in every data reply (default "0.1"; "" for none)
  --timeout-s S           give up after S seconds (default 300)
  --human                 also print a summary line on stderr
--mode raw (default): our own subscribers, paced by a per-device window
  --devices N             devices (default 1)
  --connections C         subscriber connections; 0 = one per device (default 0)
  --file-bytes BYTES      bytes per device (default 1048576); the last block is short
  --window W              messages in flight per device, 1..100000 (default 32)
  --thing-prefix P        thing i is P<i> (default ceiling-<pid>-)
  --stream ID             stream id in the topics (default fleet)
--mode devices: raw-socket devices downloading file 0 of --stream from chunkd
  --devices, --connections, --file-bytes, --thing-prefix, --stream as in raw mode
  --in-flight K           requests outstanding per device (default 1)
  --blocks-per-request N  n of every request (default 0: 131072 / block size)
--mode respond: answers the devices' requests (chunkload or --mode devices) for file 0 of any
  stream under --topic-prefix, in chunkd's place
  --file PATH             the file served (required)
  --version N             stream version in descriptions (default 1)
  --write-per-message     one write per PUBLISH (libmosquitto's pattern) instead of writev
                          batches of up to 256 KiB
  Runs until SIGTERM/SIGINT or --timeout-s, then prints its JSON line.
--mode amqp-respond: as respond, but consumes the requests from RabbitMQ (user guest, vhost /)
  --amqp-uri amqp://HOST:PORT   the node (required); --file, --version as in respond mode
  --queue NAME            quorum queue declared and bound for --topic-prefix (default fleet.ceiling)
  --prefetch N            unacknowledged requests, 1..65535 (default 256, chunkd's)
)";

bool parse_u64(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

template <class T>
bool parse_in(std::string_view text, std::uint64_t min, std::uint64_t max, T& out) {
  std::uint64_t v = 0;
  if (!parse_u64(text, v) || v < min || v > max) return false;
  out = static_cast<T>(v);
  return true;
}

bool parse_host_port(std::string_view uri, std::string_view scheme, std::string& host,
                     std::uint16_t& port) {
  if (uri.substr(0, scheme.size()) != scheme) return false;
  uri.remove_prefix(scheme.size());
  auto colon = uri.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  host = std::string(uri.substr(0, colon));
  return parse_in(uri.substr(colon + 1), 1, 65535, port);
}

// Returns an error message, or nullopt.
std::optional<std::string> parse_options(int argc, char** argv, Options& o, bool& help) {
  o.thing_prefix = "ceiling-" + std::to_string(getpid()) + "-";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      return std::nullopt;
    }
    if (arg == "--human") {
      o.human = true;
      continue;
    }
    if (arg == "--write-per-message") {
      o.write_per_message = true;
      continue;
    }
    std::string_view name = arg;
    std::string_view value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 >= argc) return std::string(arg) + " wants a value";
      value = argv[++i];
    }
    bool ok = true;
    if (name == "--mode") {
      if (value == "raw") {
        o.mode = Mode::Raw;
      } else if (value == "respond") {
        o.mode = Mode::Respond;
      } else if (value == "devices") {
        o.mode = Mode::Devices;
      } else if (value == "amqp-respond") {
        o.mode = Mode::AmqpRespond;
      } else {
        ok = false;
      }
    } else if (name == "--uri") {
      ok = parse_host_port(value, "tcp://", o.host, o.port);
    } else if (name == "--amqp-uri") {
      ok = parse_host_port(value, "amqp://", o.amqp_host, o.amqp_port);
    } else if (name == "--queue") {
      o.queue = std::string(value);
      ok = !o.queue.empty() && o.queue.size() <= 255;
    } else if (name == "--prefetch") {
      ok = parse_in(value, 1, 65535, o.prefetch);
    } else if (name == "--devices") {
      ok = parse_in(value, 1, kMaxDevices, o.devices);
    } else if (name == "--connections") {
      ok = parse_in(value, 0, kMaxDevices, o.connections);
    } else if (name == "--publishers") {
      ok = parse_in(value, 1, 64, o.publishers);
    } else if (name == "--format") {
      if (value == "cbor") {
        o.format = chunkd::protocol::Format::Cbor;
      } else if (value == "json") {
        o.format = chunkd::protocol::Format::Json;
      } else {
        ok = false;
      }
    } else if (name == "--block-size") {
      ok = parse_in(value, chunkd::protocol::kMinBlockSize, chunkd::protocol::kMaxBlockSize,
                    o.block_size);
    } else if (name == "--file-bytes") {
      ok = parse_in(value, 1, std::uint64_t{1} << 40, o.file_bytes);
    } else if (name == "--window") {
      ok = parse_in(value, 1, 100000, o.window);
    } else if (name == "--thing-prefix") {
      o.thing_prefix = std::string(value);
    } else if (name == "--topic-prefix") {
      o.topic_prefix = std::string(value);
      ok = chunkd::protocol::TopicCodec::valid_prefix(value);
    } else if (name == "--stream") {
      o.stream = std::string(value);
      ok = chunkd::protocol::valid_stream_id(value);
    } else if (name == "--token") {
      o.token = std::string(value);
      ok = o.token.size() <= chunkd::protocol::kMaxClientTokenBytes;
    } else if (name == "--timeout-s") {
      ok = parse_in(value, 1, 86400, o.timeout_s);
    } else if (name == "--in-flight") {
      ok = parse_in(value, 1, 256, o.in_flight);
    } else if (name == "--blocks-per-request") {
      ok = parse_in(value, 0, chunkd::protocol::kMaxBlockCount, o.blocks_per_request);
    } else if (name == "--file") {
      o.file_path = std::string(value);
      ok = !o.file_path.empty();
    } else if (name == "--version") {
      ok = parse_u64(value, o.version);
    } else {
      return "unknown option " + std::string(name);
    }
    if (!ok) return "bad value for " + std::string(name) + ": '" + std::string(value) + "'";
  }
  if ((o.mode == Mode::Respond || o.mode == Mode::AmqpRespond) && o.file_path.empty()) {
    return std::string("--mode respond and amqp-respond need --file");
  }
  if (o.mode == Mode::AmqpRespond && o.amqp_host.empty()) {
    return std::string("--mode amqp-respond needs --amqp-uri");
  }
  if (o.connections > o.devices) o.connections = o.devices;
  if (!chunkd::protocol::valid_thing_name(o.thing_prefix + std::to_string(o.devices - 1))) {
    return std::string("--thing-prefix makes invalid thing names");
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool help = false;
  if (auto e = parse_options(argc, argv, o, help)) {
    std::fprintf(stderr, "fleet_ceiling: %s\n%s", e->c_str(), kUsage);
    return 2;
  }
  if (help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  switch (o.mode) {
    case Mode::Raw:
      return chunkd::ceiling::run_raw(o);
    case Mode::Respond:
      return chunkd::ceiling::run_respond(o);
    case Mode::Devices:
      return chunkd::ceiling::run_devices(o);
    case Mode::AmqpRespond:
      return chunkd::ceiling::run_amqp_respond(o);
  }
  return 2;
}
