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
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace chunkd::io {

inline constexpr std::size_t kMqttMaxConnections = 64;  // config: mqtt.connections 1..64
inline constexpr std::size_t kMqttMaxClientIdBytes = 200;
inline constexpr int kMqttMinKeepaliveS = 5;  // config: mqtt.keepalive_s 5..3600
inline constexpr int kMqttMaxKeepaliveS = 3600;
inline constexpr std::size_t kMqttMaxQueuedBytes = std::size_t{4096}
                                                   << 20;  // config: mqtt.max_queued_mib 1..4096
inline constexpr int kMqttMaxQos = 1;                      // config: mqtt.qos 0..1

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
};

}  // namespace chunkd::io
