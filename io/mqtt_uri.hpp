// The one parser of an MQTT broker address: `tcp://host[:port]` (default port 1883) or
// `ssl://host[:port]` (default 8883); an IPv6 literal goes in brackets, `tcp://[::1]:1883`.
// The config loader uses it to validate `mqtt.uri` and the pool to connect, so both read a URI
// the same way.
//
// Refused, each with a detail naming the problem: another scheme, an empty host, a port that is
// not 1..65535, an unterminated `[`, anything after the host other than `:port` (a path, query,
// fragment or credentials: `/ ? # @`), spaces and control characters.
//
// Thread: any (pure function, no I/O).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/expected.hpp"

namespace chunkd::io {

struct MqttUri {
  bool tls = false;         // ssl://
  std::string host;         // without brackets
  std::uint16_t port = 0;   // 1..65535
  bool host_is_ip = false;  // an IPv4/IPv6 literal: no name resolution needed
};

// Errors: std::errc::invalid_argument with a detail such as "port must be a number from 1 to
// 65535".
Expected<MqttUri> parse_mqtt_uri(std::string_view uri);

}  // namespace chunkd::io
