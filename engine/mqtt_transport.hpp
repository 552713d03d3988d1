// The MQTT transport: engine::Transport over io::MqttPool. A thing's replies go out on
// pool.connection_for(thing) (a stable hash, so they stay in order): a channel is a connection,
// writable once its queued bytes are below the pool's resume mark (half of max_queued_bytes, or
// none: io/mqtt_pool.hpp); requests are what the pool's subscriptions deliver; bytes in flight are
// the pool's queued bytes over every connection.
// Beyond Transport: on_failure hears why connection attempts fail (once per cause until the pool
// is ready again, io/mqtt_pool.hpp), and mqtt_stats() has the pool's counters by cause; the daemon
// decides what a failure means (engine/daemon.cpp).
//
// Thread: loop thread only.
#pragma once

#include <uv.h>

#include <memory>

#include "engine/transport.hpp"
#include "io/mqtt_pool.hpp"

namespace chunkd::engine {

class MqttTransport final : public Transport {
 public:
  MqttTransport(uv_loop_t* loop, io::MqttOptions options);
  ~MqttTransport() override;

  Expected<void> start(RequestHandler on_request, ReadyHandler on_ready) override;
  bool ready() const override;
  using Transport::send;
  SendResult send(std::string_view key, std::string_view topic,
                  std::span<const std::span<const std::byte>> parts, int qos) override;
  std::size_t channel_of(std::string_view key) const override;
  bool writable(std::size_t channel) const override;
  std::size_t bytes_in_flight() const override;
  void on_writable(std::function<void()> callback) override;
  TransportStats stats() const override;
  void stop(int flush_timeout_ms, std::function<void()> done) override;

  static SendResult map(io::PublishResult r);

  // Set before start(). Without it the pool logs each new cause as a warning.
  void on_failure(io::MqttPool::FailureHandler handler);
  const io::MqttStats& mqtt_stats() const;

 private:
  RequestHandler on_request_;
  ReadyHandler on_ready_;
  std::size_t max_queued_bytes_;  // per connection
  std::unique_ptr<io::MqttPool> pool_;
};

}  // namespace chunkd::engine
