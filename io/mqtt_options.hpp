// The MQTT pool's options and counters, shared by io/mqtt_pool.hpp and the connection it runs.
//
// The config loader (engine/config.cpp) validates every option once, with an actionable message;
// the pool only asserts them (CHUNKD_ASSERT) against the same bounds, written here:
// REQUIRES (checked by MqttPool::start):
//   - uri: parses with io::parse_mqtt_uri (a parse failure is still returned as an error)
//   - 1 <= connections <= kMqttMaxConnections
//   - client_id: 1..kMqttMaxClientIdBytes bytes
//   - kMqttMinKeepaliveS <= keepalive_s <= kMqttMaxKeepaliveS
//   - 1 <= reconnect_min_ms <= reconnect_max_ms
//   - 1 <= max_queued_bytes <= kMqttMaxQueuedBytes
//   - 0 <= subscribe_qos <= kMqttMaxQos; every subscription a valid topic filter
//   - a password only with a username; cert_file and key_file together; TLS files only with ssl://
//   - kMqttMinMaxPacketBytes <= max_packet_bytes <= kMqttMaxMaxPacketBytes
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/expected.hpp"
#include "io/mqtt_failure.hpp"

namespace chunkd::io {

inline constexpr std::size_t kMqttMaxConnections = 64;  // config: mqtt.connections 1..64
inline constexpr std::size_t kMqttMaxClientIdBytes = 200;
inline constexpr int kMqttMinKeepaliveS = 5;  // config: mqtt.keepalive_s 5..3600
inline constexpr int kMqttMaxKeepaliveS = 3600;
inline constexpr std::size_t kMqttMaxQueuedBytes = std::size_t{4096}
                                                   << 20;  // config: mqtt.max_queued_mib 1..4096
inline constexpr int kMqttMaxQos = 1;                      // config: mqtt.qos 0..1
// Bounds of MqttOptions::max_packet_bytes (MQTT 5's Maximum Packet Size is 1..2^28+4).
inline constexpr std::size_t kMqttMinMaxPacketBytes = 1024;
inline constexpr std::size_t kMqttMaxMaxPacketBytes = std::size_t{256} << 20;

// The MQTT version chunkd connects with (config: mqtt.protocol).
//   Auto: MQTT 5; a broker that refuses it (CONNACK "unsupported protocol version") gets 3.1.1
//         from then on, with one warning.
//   V5:   MQTT 5 only; a refusal is retried like any other.
//   V311: MQTT 3.1.1 only: no Maximum Packet Size; the broker's message_size_limit is the bound.
enum class MqttProtocol { Auto, V5, V311 };

struct MqttOptions {
  std::string uri = "tcp://127.0.0.1:1883";  // tcp://host:port or ssl://host:port
  std::string client_id = "chunkd";          // connection i uses "<client_id>-<i>"
  std::size_t connections = 2;
  std::string username;
  std::string password;
  std::string ca_file;  // ssl:// only
  std::string cert_file;
  std::string key_file;
  int keepalive_s = 30;
  int reconnect_min_ms = 100;
  int reconnect_max_ms = 10000;
  std::size_t max_queued_bytes = 8u << 20;  // per connection
  std::vector<std::string> subscriptions;   // filters subscribed on every connection... see below
  int subscribe_qos = 0;
  MqttProtocol protocol = MqttProtocol::Auto;
  // MQTT 5 CONNECT property Maximum Packet Size: the broker never sends chunkd a larger packet
  // (it drops the message for chunkd instead), so a huge publish to a request topic costs chunkd
  // nothing. chunkd only receives requests: a request's payload is at most 32 KiB (larger ones
  // are refused unparsed, protocol/request.hpp kMaxRequestMessageBytes) and its topic at most
  // ~1.3 KiB (prefix 1024 + thing 128 + stream 128 + verbs); 64 KiB leaves room for the header
  // and properties a broker adds. The config loader derives it from those protocol limits.
  std::size_t max_packet_bytes = 64u << 10;
};
// Subscriptions: each filter is subscribed on connection 0 only (a broker would otherwise deliver
// every request once per connection). Replies are spread over all connections by thing.

struct MqttStats {
  std::uint64_t messages_received = 0;
  std::uint64_t messages_published = 0;
  std::uint64_t bytes_published = 0;
  std::uint64_t publish_refused_backpressure = 0;
  std::uint64_t publish_refused_disconnected = 0;
  std::uint64_t reconnects = 0;
  std::uint64_t socket_writes = 0;  // sendmsg() calls of the pool's own QoS 0 path
  // Failed connection attempts by cause (index: MqttFailure), every attempt counted.
  std::array<std::uint64_t, kMqttFailureCount> connect_failures{};
};

// The REQUIRES of MqttPool::start: the config loader's bounds above; aborts (CHUNKD_ASSERT) when
// one is broken. `uri_tls`: the URI is ssl://.
void assert_mqtt_options(const MqttOptions& o, bool uri_tls);
// For an ssl:// URI: each TLS file given is readable now (the config loader checked them, but
// they may have changed since), the CA file holds a certificate and the key matches its
// certificate (io::check_tls_files). The error names the mqtt.* key.
Expected<void> check_mqtt_tls_files(const MqttOptions& o);

}  // namespace chunkd::io
