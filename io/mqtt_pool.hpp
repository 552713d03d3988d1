// MqttPool: a pool of MQTT connections to one broker, driven by the libuv loop with no library
// threads. What each part owns:
//   - io/mqtt_connection.hpp: one libmosquitto client, its socket's uv_poll_t, keep-alive,
//     reconnects with backoff, name lookup;
//   - io/mqtt_writer.hpp: the direct QoS 0 path that writes PUBLISH packets itself;
//   - this pool: routing (connection_for), the choice of path per publish, accounting of queued
//     bytes with backpressure, readiness, on_writable, and the stop barrier.
//
// Paths: QoS 0 publishes on a plain-TCP pool that subscribes at QoS 0 (chunkd's default) go
// through the direct writer, gathered per loop turn (a uv_prepare) into one sendmsg per
// connection; TLS pools, pools subscribing at QoS 1/2 and, from its first QoS 1/2 publish on, a
// pool publishing at QoS 1/2 use libmosquitto for every message (the writer's header says why).
//
// Backpressure: bytes handed to publish() and not yet written (or acknowledged, QoS 1/2) are
// counted per connection; publish() refuses with PublishResult::Backpressure when a connection's
// queued bytes would exceed `max_queued_bytes` (a larger message still goes out alone on an idle
// connection). on_writable() fires when queued bytes fall below half of that bound. A dropped
// connection forgets its queued bytes (libmosquitto frees them silently).
//
// Failures: a failed connection attempt is counted by cause (stats().connect_failures) and
// reported once per cause until the pool is ready again (io/mqtt_failure.hpp says what each
// cause means and whether a retry can help): to on_failure's handler when one is set (it decides
// what to log and whether to give up), else as one warning. The pool itself never gives up: it
// retries with backoff until stopped.
//
// Deferred work (ready transitions, failure reports, on_writable, the stop sequence) runs from a
// zero-delay timer,
// never inside a libmosquitto call, so callbacks may publish or call stop(). They must not destroy
// the pool: call stop() and destroy it from `done`. A callback that throws terminates the process
// (a bug, not an operating error).
//
// Thread: everything (including the callbacks) on the loop thread.
// REQUIRES: options as bounded in io/mqtt_options.hpp (the config loader validates them; start()
// asserts them); the loop outlives the pool and runs after its destruction so handles can close.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "io/mqtt_options.hpp"

namespace chunkd::io {

enum class PublishResult { Ok, Backpressure, NotConnected, Error };

class MqttPool {
 public:
  using MessageHandler =
      std::function<void(std::string_view topic, std::span<const std::byte> payload)>;
  // Called when the pool becomes ready (every connection up and the subscriber's SUBACK received)
  // or stops being ready.
  using ReadyHandler = std::function<void(bool ready)>;
  using FailureHandler = std::function<void(const MqttFailureReport& report)>;

  MqttPool(uv_loop_t* loop, MqttOptions options, MessageHandler on_message, ReadyHandler on_ready);
  ~MqttPool();
  MqttPool(const MqttPool&) = delete;
  MqttPool& operator=(const MqttPool&) = delete;

  // Starts connecting. Errors (std::errc / errno codes, with a detail naming the cause): a URI
  // io::parse_mqtt_uri refuses, a TLS file that is not readable or not usable (io::check_tls_files:
  // a CA file without a certificate, a key that does not match its certificate), libmosquitto
  // refusing a setting,
  // start() called twice. REQUIRES: options within io/mqtt_options.hpp's bounds (asserted).
  Expected<void> start();
  bool ready() const;

  // The connection that owns `key` (a thing name): a stable hash, so one thing's replies stay in
  // order on one connection.
  std::size_t connection_for(std::string_view key) const;
  // The payload is the concatenation of `parts`; none is referenced after the call returns.
  // Error: qos not 0..2, an empty or > 65535-byte topic, a payload over INT_MAX bytes, or before
  // start(). REQUIRES: connection < connections().
  PublishResult publish(std::size_t connection, std::string_view topic,
                        std::span<const std::span<const std::byte>> parts, int qos);
  PublishResult publish(std::size_t connection, std::string_view topic,
                        std::span<const std::byte> payload, int qos);
  // REQUIRES: connection < connections().
  std::size_t queued_bytes(std::size_t connection) const;
  std::size_t total_queued_bytes() const;
  void on_writable(std::function<void()> callback);
  // Replaces the warning the pool logs for each newly seen failure cause (see above).
  void on_failure(FailureHandler handler);

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
