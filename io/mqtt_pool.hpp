// A pool of libmosquitto client connections driven by the libuv loop, with no library threads.
//
// Each connection's socket (mosquitto_socket) is watched by a uv_poll_t: readable always, writable
// only while mosquitto_want_write(); the loop calls mosquitto_loop_read/_write and a timer calls
// mosquitto_loop_misc (keep-alive). A lost connection is retried with exponential backoff on a
// libuv timer and resubscribes every filter on reconnect. TCP_NODELAY is set on every socket.
//
// QoS 0 publishes on a plain-TCP pool that subscribes at QoS 0 (chunkd's default) bypass
// libmosquitto: the pool encodes the PUBLISH packet itself, gathers one loop turn's packets per
// connection in its own buffer and writes them with one send() just before the loop blocks (a
// uv_prepare handle), or at once with sendmsg() from the caller's memory when a message is large
// or the buffer holds 64 KiB, copying only what the socket did not take. libmosquitto writes
// one packet per write(), mallocs and copies each one and pokes its internal socketpair per call;
// on loopback that was 60 % of chunkd's CPU per 4 KiB block (bench/README.md). The two writers
// never interleave: the pool writes only while libmosquitto's queue is empty and calls
// libmosquitto's writers (keep-alive, QoS 1/2, disconnect) only once its own buffer is drained.
// TLS pools, pools subscribing at QoS 1/2 and, from its first QoS 1/2 publish on, a pool publishing
// at QoS 1/2 use libmosquitto for every message.
//
// Bytes handed to publish() and not yet written to the socket are counted per connection;
// publish() refuses with PublishResult::Backpressure when a connection's queued bytes would exceed
// `max_queued_bytes`. on_writable() fires when queued bytes fall below half of that bound, so the
// caller can resume. A connection whose socket takes no byte for 1.5 keep-alive periods is closed
// and reconnected.
//
// Thread: everything (including the message callback) on the loop thread.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace chunkd::io {

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

enum class PublishResult { Ok, Backpressure, NotConnected, Error };

struct MqttStats {
  std::uint64_t messages_received = 0;
  std::uint64_t messages_published = 0;
  std::uint64_t bytes_published = 0;
  std::uint64_t publish_refused_backpressure = 0;
  std::uint64_t publish_refused_disconnected = 0;
  std::uint64_t reconnects = 0;
  std::uint64_t socket_writes = 0;  // send() calls of the pool's own QoS 0 path
};

class MqttPool {
 public:
  using MessageHandler =
      std::function<void(std::string_view topic, std::span<const std::byte> payload)>;
  // Called when the pool becomes ready (every connection up and the subscriber's SUBACK received)
  // or stops being ready.
  using ReadyHandler = std::function<void(bool ready)>;

  MqttPool(uv_loop_t* loop, MqttOptions options, MessageHandler on_message, ReadyHandler on_ready);
  ~MqttPool();
  MqttPool(const MqttPool&) = delete;
  MqttPool& operator=(const MqttPool&) = delete;

  // Validates options (URI scheme/host/port, TLS files readable) and starts connecting.
  std::error_code start();
  bool ready() const;

  // The connection that owns `key` (a thing name): a stable hash, so one thing's replies stay in
  // order on one connection.
  std::size_t connection_for(std::string_view key) const;
  // The payload is the concatenation of `parts`; none is referenced after the call returns.
  PublishResult publish(std::size_t connection, std::string_view topic,
                        std::span<const std::span<const std::byte>> parts, int qos);
  PublishResult publish(std::size_t connection, std::string_view topic,
                        std::span<const std::byte> payload, int qos);
  std::size_t queued_bytes(std::size_t connection) const;
  std::size_t total_queued_bytes() const;
  void on_writable(std::function<void()> callback);

  const MqttStats& stats() const;
  std::size_t connections() const;

  // Flushes what is queued (bounded by `flush_timeout_ms`), disconnects, closes every handle and
  // then calls `done` on the loop thread.
  void stop(int flush_timeout_ms, std::function<void()> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::io
