// Publisher over the MQTT connection pool: a thing's replies go to pool.connection_for(thing)
// (a stable hash, so they stay in order); bytes in flight are the pool's queued bytes on every
// connection; on_writable is the pool's.
//
// Thread: loop thread only. The pool must outlive the publisher.
#pragma once

#include "engine/delivery.hpp"
#include "io/mqtt_pool.hpp"

namespace chunkd::engine {

class MqttPublisher final : public Publisher {
 public:
  explicit MqttPublisher(io::MqttPool& pool) : pool_(pool) {}

  using Publisher::publish;
  Result publish(std::string_view key, std::string_view topic,
                 std::span<const std::span<const std::byte>> parts, int qos) override;
  std::size_t bytes_in_flight() const override;
  void on_writable(std::function<void()> callback) override;

  static Result map(io::PublishResult r);

 private:
  io::MqttPool& pool_;
};

}  // namespace chunkd::engine
