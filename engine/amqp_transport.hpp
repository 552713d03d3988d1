// The AMQP transport: engine::Transport over io::AmqpClient (io/amqp_client.hpp), for several
// chunkd instances sharing one RabbitMQ cluster ([amqp] in the config; [mqtt] is then unused).
//
// Devices keep speaking MQTT to RabbitMQ's MQTT plugin, which routes every MQTT publish to the
// `exchange` (amq.topic) with the topic as routing key, '/' turned into '.' and nothing else
// changed (verified on RabbitMQ 3.10.8: "$aws/things/dev1/streams/s1/get/cbor" arrives as
// "$aws.things.dev1.streams.s1.get.cbor"; "a/b.c/d" as "a.b.c.d"; "a//b" as "a..b"; '$', '*', '#'
// and spaces pass as they are). A reply published to the exchange with routing key K reaches the
// MQTT subscribers of K with '.' turned back into '/'.
//   Requests: the quorum queue `queue` is bound with "<prefix>.*.streams.*.get.*" and
//     "<prefix>.*.streams.*.describe.*" (<prefix> = mqtt.topic_prefix with '/' → '.'), so
//     instances compete for requests; a delivery's key, '.' → '/', is the request topic.
//   Replies: topic '/' → '.' as the routing key, published with confirms.
//   Jobs requests (options.jobs): the quorum queue `jobs_queue` is bound with the jobs request
//     topics of protocol::JobsTopicCodec(prefix).subscriptions() as routing keys ('+' → '*';
//     never a '#', which would route chunkd's own …/accepted, …/rejected and notify topics back)
//     at every session set-up, and consumed only between consume_jobs(true) and (false), by the
//     one instance serving jobs; requests wait in it meanwhile. Its deliveries reach the same
//     RequestHandler (the topic tells a jobs request from a stream request).
// One channel (channel_of is always 0), writable while the client's queued publish bytes are
// below half of kMaxQueuedBytes; Backpressure past it, on_writable when it drained.
//
// Acknowledgement: each delivery gets a RequestTag; finished(tag) hands it back to the client,
// which acks it once every reply published before is confirmed (io/amqp_client.hpp). A lost
// session forgets its tags (the broker redelivers those requests, possibly to another instance).
//
// Refused (dropped and acknowledged at once, never requeued forever; counted in
// chunkd_amqp_refused_total{reason} with one log line per reason per 10 s):
//   reply_key_too_long: a request whose replies' routing keys could exceed 255 bytes (AMQP short
//     strings); a reply over it at send() too (SendResult::Error).
//   extra_level: a key with more levels than a request topic has (a '.' inside a level — the
//     bindings above do not route those, so only another binding brings them).
//   payload_too_large: a body over protocol::kMaxRequestPayloadBytes.
// Not refusable here: a request topic over 255 bytes cannot be delivered over AMQP at all —
// RabbitMQ closes the consumer's connection with 541 (counted as reason="broker_internal_error");
// the client reconnects and the queue's x-delivery-limit drops the message after that many tries.
//
// Metrics: chunkd_amqp_* (register_metrics), chunkd_amqp_jobs_consuming among them.
//
// Thread: loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/cluster_options.hpp"
#include "engine/metrics.hpp"
#include "engine/transport.hpp"
#include "io/amqp_client.hpp"

namespace chunkd::engine {

class AmqpTransport final : public Transport {
 public:
  static constexpr std::size_t kMaxQueuedBytes = 16u << 20;  // replies handed to the session

  enum class Refusal { ReplyKeyTooLong, ExtraLevel, PayloadTooLarge, Count };
  static const char* refusal_name(Refusal r);

  AmqpTransport(uv_loop_t* loop, AmqpOptions options);
  ~AmqpTransport() override;

  // The binding keys for `topic_prefix` (MQTT form), and an MQTT topic as a routing key.
  static std::string routing_key(std::string_view topic);
  static std::string binding_key(std::string_view topic_prefix, std::string_view verb);
  // The jobs queue's binding keys for `topic_prefix` (MQTT form).
  static std::vector<std::string> jobs_binding_keys(std::string_view topic_prefix);

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
  void finished(RequestTag tag) override;
  void requeue(RequestTag tag) override;
  void stop(int flush_timeout_ms, std::function<void()> done) override;
  // Starts (true) or cancels (false) the jobs queue's consumer (io::AmqpClient::consume_jobs);
  // nothing unless options.jobs.
  void consume_jobs(bool on);
  // Hears failed connection attempts (io::AmqpClient::on_failure); the daemon decides what a
  // permanent one means.
  void on_failure(io::AmqpClient::FailureHandler handler) {
    client_->on_failure(std::move(handler));
  }

  // chunkd_amqp_* (connection, fail-overs, unacked requests, confirms pending, refusals).
  void register_metrics(Metrics& metrics);
  std::uint64_t refused(Refusal r) const { return refused_[static_cast<std::size_t>(r)]; }
  std::size_t unacked_requests() const { return unacked_.size(); }
  io::AmqpStats amqp_stats() const { return client_->stats(); }
  const std::string& uris_text() const { return uris_text_; }

 private:
  struct Delivered {
    std::uint64_t session = 0;
    std::uint64_t tag = 0;
  };
  void on_delivery(io::AmqpDelivery&& d);
  void on_state(bool up, std::string_view why);
  void refuse(Refusal r, std::string_view detail);

  uv_loop_t* loop_;
  AmqpOptions options_;
  std::string uris_text_;  // for log lines
  std::size_t request_levels_ = 0;
  std::size_t jobs_levels_ = 0;  // <prefix>/<thing>/jobs/<api>; one more with a job id
  RequestHandler on_request_;
  ReadyHandler on_ready_;
  std::unique_ptr<io::AmqpClient> client_;
  std::unordered_map<RequestTag, Delivered> unacked_;
  RequestTag next_tag_ = 1;
  std::string topic_;  // scratch
  std::uint64_t received_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t refused_backpressure_ = 0;
  std::uint64_t refused_disconnected_ = 0;
  std::uint64_t refused_[static_cast<std::size_t>(Refusal::Count)] = {};
  std::uint64_t logged_ms_[static_cast<std::size_t>(Refusal::Count)] = {};
  bool logged_any_[static_cast<std::size_t>(Refusal::Count)] = {};
};

}  // namespace chunkd::engine
