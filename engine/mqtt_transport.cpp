#include "engine/mqtt_transport.hpp"

#include <utility>

namespace chunkd::engine {

MqttTransport::MqttTransport(uv_loop_t* loop, io::MqttOptions options)
    : max_queued_bytes_(options.max_queued_bytes),
      pool_(std::make_unique<io::MqttPool>(
          loop, std::move(options),
          [this](std::string_view topic, std::span<const std::byte> payload) {
            if (on_request_) on_request_(topic, payload, kNoRequestTag);
          },
          [this](bool ready) {
            if (on_ready_) on_ready_(ready);
          })) {}

MqttTransport::~MqttTransport() = default;

Transport::SendResult MqttTransport::map(io::PublishResult r) {
  switch (r) {
    case io::PublishResult::Ok:
      return SendResult::Ok;
    case io::PublishResult::Backpressure:
      return SendResult::Backpressure;
    case io::PublishResult::NotConnected:
      return SendResult::NotConnected;
    case io::PublishResult::Error:
      return SendResult::Error;
  }
  return SendResult::Error;
}

Expected<void> MqttTransport::start(RequestHandler on_request, ReadyHandler on_ready) {
  on_request_ = std::move(on_request);
  on_ready_ = std::move(on_ready);
  return pool_->start();
}

bool MqttTransport::ready() const { return pool_->ready(); }

Transport::SendResult MqttTransport::send(std::string_view key, std::string_view topic,
                                          std::span<const std::span<const std::byte>> parts,
                                          int qos) {
  return map(pool_->publish(pool_->connection_for(key), topic, parts, qos));
}

std::size_t MqttTransport::channel_of(std::string_view key) const {
  return pool_->connection_for(key);
}

// The pool's resume mark: where it fires on_writable for a connection that refused.
bool MqttTransport::writable(std::size_t channel) const {
  if (channel >= pool_->connections()) return true;  // no such connection: nothing queued
  const std::size_t queued = pool_->queued_bytes(channel);
  return queued == 0 || queued < max_queued_bytes_ / 2;
}

std::size_t MqttTransport::bytes_in_flight() const { return pool_->total_queued_bytes(); }

void MqttTransport::on_writable(std::function<void()> callback) {
  pool_->on_writable(std::move(callback));
}

TransportStats MqttTransport::stats() const {
  const io::MqttStats& s = pool_->stats();
  TransportStats t;
  t.messages_received = s.messages_received;
  t.messages_sent = s.messages_published;
  t.socket_writes = s.socket_writes;
  t.reconnects = s.reconnects;
  t.refused_backpressure = s.publish_refused_backpressure;
  t.refused_disconnected = s.publish_refused_disconnected;
  return t;
}

void MqttTransport::on_failure(io::MqttPool::FailureHandler handler) {
  pool_->on_failure(std::move(handler));
}

const io::MqttStats& MqttTransport::mqtt_stats() const { return pool_->stats(); }

void MqttTransport::stop(int flush_timeout_ms, std::function<void()> done) {
  pool_->stop(flush_timeout_ms, std::move(done));
}

}  // namespace chunkd::engine
