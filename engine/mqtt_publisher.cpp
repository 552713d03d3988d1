#include "engine/mqtt_publisher.hpp"

#include <utility>

namespace chunkd::engine {

Publisher::Result MqttPublisher::map(io::PublishResult r) {
  switch (r) {
    case io::PublishResult::Ok:
      return Result::Ok;
    case io::PublishResult::Backpressure:
      return Result::Backpressure;
    case io::PublishResult::NotConnected:
      return Result::NotConnected;
    case io::PublishResult::Error:
      return Result::Error;
  }
  return Result::Error;
}

Publisher::Result MqttPublisher::publish(std::string_view key, std::string_view topic,
                                         std::span<const std::span<const std::byte>> parts,
                                         int qos) {
  return map(pool_.publish(pool_.connection_for(key), topic, parts, qos));
}

std::size_t MqttPublisher::bytes_in_flight() const { return pool_.total_queued_bytes(); }

void MqttPublisher::on_writable(std::function<void()> callback) {
  pool_.on_writable(std::move(callback));
}

}  // namespace chunkd::engine
